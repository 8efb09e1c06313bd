import asyncio
import threading

import pytest
from lsprotocol import types
from pygls.workspace.position_codec import PositionCodec

from lsp_server import context
from lsp_server.documents import Snapshot
from lsp_server.edits import (
    LastSuggestion,
    continue_suggestion,
    snippet_text,
    to_completion_items,
)
from lsp_server.scheduler import Scheduler
from lsp_server.settings import Settings, parse
from lsp_server.syntax import parse as parse_code

UTF16 = PositionCodec(types.PositionEncodingKind.Utf16)


def test_settings_accept_both_shapes_and_report_bad_values():
    s, problems = parse({"infill": {"maxSteps": 12, "holeMarker": "TODO-FILL"}})
    assert (s.max_steps, s.hole_marker, problems) == (12, "TODO-FILL", [])
    s, problems = parse({"maxSteps": "x", "device": "tpu", "enable": 1, "bogus": 2})
    assert (s.max_steps, s.device, s.enable) == (0, "auto", True)
    assert len(problems) == 4 and any("infill.bogus" in p for p in problems)
    assert parse({"infill": []}) == (Settings(), [])  # Neovim's empty table
    assert parse([]) == (Settings(), [])
    s, problems = parse([1, 2])
    assert s == Settings() and "must be an object" in problems[0]


def test_languages_gate_suggestions():
    s, _ = parse({"languages": ["python"]})
    assert s.serves("python") and not s.serves("go")
    assert Settings().serves("anything")
    assert not parse({"enable": False})[0].serves("python")


def test_typing_the_start_of_the_suggestion_serves_the_rest():
    last = LastSuggestion(line=3, line_prefix="    x = ", text="compute(a, b)")
    doc = "a\nb\nc\n    x = compute(a, b)\n"
    starts = [0, 2, 4, 6]

    def rest(typed_to: str, text: str = doc) -> str | None:
        offset = text.index(typed_to) + len(typed_to)
        return continue_suggestion(last, last.typed(text, starts, offset))

    assert rest("    x = comp") == "ute(a, b)"
    assert rest("    x = cx", doc.replace("comp", "cx")) is None
    assert rest("    y = comp", doc.replace("x =", "y =")) is None  # moved on
    assert rest("    x = compute(a, b)") is None  # all of it is there
    assert last.typed(doc, starts[:3], 10) is None  # the line is gone
    assert continue_suggestion(None, "x") is None
    # a suggestion that starts with a line break, accepted a word at a time
    below = LastSuggestion(line=0, line_prefix="a", text="\n    total = 0")
    text = "a\n    total\n"
    typed = below.typed(text, [0, 2], text.index("total") + len("total"))
    assert continue_suggestion(below, typed) == " = 0"


def read_snippet(body: str) -> str:
    """The text a snippet of text alone inserts, by the LSP grammar: a backslash
    escapes `$`, `}` and itself; a bare `$` or `}` would be snippet syntax."""
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\" and body[i + 1 : i + 2] in ("$", "}", "\\"):
            out.append(body[i + 1])
            i += 2
            continue
        assert body[i] not in "$}", f"bare {body[i]!r} at {i} in {body!r}"
        out.append(body[i])
        i += 1
    return "".join(out)


@pytest.mark.parametrize(
    "text",
    [
        "p.price * p.count + p.shipping",
        'f"${total:.2f}\\t{name}" or "$0 }"',
        "${1:x} $TM_FILENAME \\$ \\\\}",
        "\\",
        "$",
        "",
    ],
)
def test_snippet_text_inserts_the_text_literally(text):
    assert read_snippet(snippet_text(text)) == text


BODY = "def scale(xs, k):\n    out = []\n    \n    return out\n"


def completion_item(text: str, snippets: bool) -> types.CompletionItem:
    """The item for `text` suggested on BODY's blank, indented third line."""
    snap = Snapshot("file:///t.py", 1, "python", BODY)
    offset = BODY.index("    \n") + 4
    ctx = context.at_cursor(snap, offset, parse_code("python", BODY))
    (item,) = to_completion_items(snap, ctx, text, UTF16, snippets=snippets).items
    assert item.text_edit.range.start == item.text_edit.range.end
    assert item.text_edit.range.start == types.Position(2, 4)
    return item


def test_a_snippet_client_gets_the_text_escaped_and_indented_like_the_cursor_line():
    text = "for x in $xs:\n        if x:\n\n            out.append(x * k)"
    item = completion_item(text, snippets=True)
    assert item.insert_text_format == types.InsertTextFormat.Snippet
    assert item.insert_text_mode == types.InsertTextMode.AdjustIndentation
    # the client puts the cursor line's indentation back before each later line
    body = read_snippet(item.text_edit.new_text)
    assert body == "for x in $xs:\n    if x:\n\n        out.append(x * k)"
    assert item.label == "for x in $xs:"
    assert item.documentation.value == f"```\n{text}\n```"


def test_a_snippet_ends_before_a_line_left_of_the_cursor_line():
    # no snippet can say "less indented than the cursor's line": stop before it
    item = completion_item("out.append(k)\n\nprint(scale([1], 2))", snippets=True)
    assert read_snippet(item.text_edit.new_text) == "out.append(k)"
    assert item.documentation.value == "```\nout.append(k)\n```"


def test_a_client_without_snippets_gets_the_text_as_it_is():
    text = "out.append(k)\n\nprint(scale([1, $2], 2))"
    item = completion_item(text, snippets=False)
    assert item.insert_text_format == types.InsertTextFormat.PlainText
    assert item.insert_text_mode == types.InsertTextMode.AsIs
    assert item.text_edit.new_text == text


def test_a_long_label_is_kept_whole():
    text = "total = " + " + ".join(f"values[{i}]" for i in range(20))
    assert completion_item(text, snippets=True).label == text


async def test_newest_job_per_key_wins_and_older_returns_within_a_step():
    scheduler = Scheduler()
    started = threading.Event()
    steps = []

    def slow(stale):
        started.set()
        for i in range(500):
            if stale():
                steps.append(i)
                return "cancelled"
            threading.Event().wait(0.002)
        return "finished"

    first = asyncio.ensure_future(scheduler.run("doc", slow))
    while not started.is_set():
        await asyncio.sleep(0.001)
    second = asyncio.ensure_future(scheduler.run("doc", lambda stale: "second"))
    assert await first is None and await second == "second"
    assert steps and steps[0] < 500 and scheduler.superseded == 1
    assert await scheduler.run("other", lambda stale: 7) == 7
    scheduler.close()


async def test_a_background_job_gives_way_to_any_later_job():
    scheduler = Scheduler()
    started = threading.Event()

    def ahead(stale):
        started.set()
        while not stale():
            threading.Event().wait(0.002)
        return "cancelled"

    first = asyncio.ensure_future(scheduler.run("ahead:a", ahead, background=True))
    while not started.is_set():
        await asyncio.sleep(0.001)
    # another key: a foreground job would leave it running, a background one gives way
    assert await scheduler.run("b", lambda stale: "b") == "b"
    assert await first is None
    done = await scheduler.run("ahead:a", lambda stale: "kept", background=True)
    assert done == "kept"  # nothing came after it
    scheduler.close()


async def test_cancelling_the_awaiting_task_sets_the_flag():
    scheduler = Scheduler()
    seen = threading.Event()

    def job(stale):
        while not stale():
            threading.Event().wait(0.002)
        seen.set()

    task = asyncio.ensure_future(scheduler.run("doc", job))
    await asyncio.sleep(0.05)
    task.cancel()
    for _ in range(200):
        if seen.is_set():
            break
        await asyncio.sleep(0.01)
    assert seen.is_set()
    scheduler.close()


async def test_an_early_fill_serves_its_place_unless_it_ended_empty():
    from lsp_server.server import EarlyFill

    loop = asyncio.get_running_loop()
    running = EarlyFill(3, 10, loop.create_future())
    assert running.serves(3, 10)
    assert not running.serves(4, 10) and not running.serves(3, 11)
    done, empty, cancelled = (loop.create_future() for _ in range(3))
    done.set_result("x = 1")
    empty.set_result(None)  # superseded by a request elsewhere
    cancelled.cancel()
    assert EarlyFill(3, 10, done).serves(3, 10)
    assert not EarlyFill(3, 10, empty).serves(3, 10)
    assert not EarlyFill(3, 10, cancelled).serves(3, 10)


def test_every_server_setting_is_in_both_clients_with_its_default():
    import json
    from pathlib import Path

    from lsp_server import settings as server_settings

    root = Path(__file__).resolve().parents[1] / "editor-clients"
    manifest = json.loads((root / "vscode" / "package.json").read_text())
    properties = manifest["contributes"]["configuration"]["properties"]
    help_text = (root / "neovim" / "doc" / "infill.txt").read_text()
    defaults = Settings()
    for key, (name, _, _, _) in server_settings._RULES.items():
        prop = properties.get(f"infill.{key}")
        assert prop is not None, f"infill.{key} is not in the VS Code manifest"
        want = getattr(defaults, name)
        assert prop["default"] == (list(want) if isinstance(want, tuple) else want), key
        assert f"\n  {key}" in help_text, f"{key} is not in :help infill-settings"
