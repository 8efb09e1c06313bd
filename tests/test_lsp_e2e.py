"""End to end: the real `infill-lsp` process, a real LSP client, JSON-RPC over stdio."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from infill_engine.model.device import cpu_dtype
from lsp_server import syntax
from lsp_server.tools.client import Session

CPU_DTYPE = str(cpu_dtype()).removeprefix("torch.")  # what this machine runs on

URI = "file:///work/example.py"
SOURCE = (
    "def mean(values):\n"
    "    total = 0\n"
    "    for value in values:\n"
    "        total += value\n"
    "    return total / len(values)\n"
    "\n"
    "print(mean([1, 2]))\n"
)
HOLES = (
    "def scale(xs, k):\n"
    "    # <fill> multiply each item\n"
    "    return out\n"
    "\n"
    "def first(xs):\n"
    "    # <fill>\n"
)


@pytest.fixture
async def session(tiny_model_dir):
    s = Session()
    # few steps keep the suite fast; tests that need a long request raise it
    await s.start(
        "--model", str(tiny_model_dir), "--device", "cpu", options={"maxSteps": 8}
    )
    await s.wait_status("ready")
    yield s
    await s.stop()
    assert not any("Traceback" in line for line in s.stderr), "".join(s.stderr)


def configure(session: Session, **values) -> None:
    session.client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"infill": values})
    )


def doc(uri: str = URI) -> types.TextDocumentIdentifier:
    return types.TextDocumentIdentifier(uri=uri)


def apply(text: str, edits: list[types.TextEdit]) -> str:
    """Apply LSP edits (ASCII text, so characters == UTF-16 units)."""
    lines = text.split("\n")
    starts = [sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines))]

    def off(p):
        return starts[p.line] + p.character

    for e in sorted(edits, key=lambda e: off(e.range.start), reverse=True):
        text = text[: off(e.range.start)] + e.new_text + text[off(e.range.end) :]
    return text


async def test_initialize_advertises_features_and_reports_loading(tiny_model_dir):
    s = Session()
    # editors send every setting: an empty model keeps the command line's
    options = {"model": "", "device": "cpu"}
    result = await s.start(
        "--model", str(tiny_model_dir), "--device", "cpu", options=options
    )
    caps = result.capabilities
    assert caps.inline_completion_provider
    assert caps.completion_provider is not None
    # asked for, never started by typing: a client may insert a lone item unasked
    assert not caps.completion_provider.trigger_characters
    assert caps.code_action_provider.resolve_provider
    assert "infill.rewriteSelection" in caps.execute_command_provider.commands
    assert caps.text_document_sync.will_save_wait_until
    assert caps.position_encoding == types.PositionEncodingKind.Utf16
    status = await s.wait_status("ready")
    assert status["device"] == f"cpu/{CPU_DTYPE}"
    assert status["model"] == str(tiny_model_dir)
    kinds = [p["kind"] if isinstance(p, dict) else p.kind for p in s.progress]
    assert kinds[0] == "begin" and kinds[-1] == "end"
    await s.stop()


async def test_inline_completion_is_ghost_text_on_the_cursor_line(session):
    session.open(URI, SOURCE)
    for line, char in [(1, 11), (5, 0), (6, 6)]:
        result = await session.inline(URI, line, char)
        for item in result.items:
            assert item.range.start == item.range.end == types.Position(line, char)
            assert "<eos>" not in item.insert_text and "<pad>" not in item.insert_text


LONG = "".join(f"value_{i} = compute({i}, 'x')\n" for i in range(80))
# Typing at the end of LONG's line 40 (typing mid-line would be gated, `gate`).
AT_40 = types.Position(40, len("value_40 = compute(40, 'x')"))
TYPED = " + total"
AFTER_40 = AT_40.character + len(TYPED)
END_70 = len("value_70 = compute(70, 'x')")
TWIN = "file:///work/twin.py"


async def last_status(session: Session) -> dict:
    return (await session.command("infill.status"))["last"]


async def test_an_edit_prefills_the_prompt_of_a_suggestion_at_it(session):
    session.open(URI, LONG)
    session.open(TWIN, "import os\n" + LONG)
    await session.inline(TWIN, 70, END_70)
    assert (await last_status(session))["prefilledTokens"] > 0  # cold
    at = AT_40
    session.change(URI, types.Range(at, at), TYPED)
    await asyncio.sleep(1.0)  # the editor's pause before it asks
    await session.inline(URI, 40, AFTER_40)
    assert (await last_status(session))["prefilledTokens"] == 0  # done at the change


async def test_once_asked_the_suggestion_starts_at_the_change(session):
    session.open(URI, LONG)
    session.open(TWIN, LONG)
    await session.inline(
        URI, 70, END_70
    )  # the client asks here: later changes start fills
    at = AT_40
    for uri in (URI, TWIN):
        session.change(uri, types.Range(at, at), TYPED)
    await asyncio.sleep(2.0)
    early = await session.inline(URI, 40, AFTER_40)
    assert (await last_status(session)).get("startedAtChange") is True
    late = await session.inline(
        TWIN, 40, AFTER_40
    )  # no request there before the change
    assert (await last_status(session)).get("startedAtChange") is None
    assert [i.insert_text for i in early.items] == [i.insert_text for i in late.items]


async def test_completion_requests_alone_only_prefill_at_changes(session):
    session.open(URI, LONG)
    await session.client.text_document_completion_async(
        types.CompletionParams(text_document=doc(), position=types.Position(70, END_70))
    )
    at = AT_40
    session.change(URI, types.Range(at, at), TYPED)
    await asyncio.sleep(1.0)
    await session.inline(URI, 40, AFTER_40)
    last = await last_status(session)
    assert last.get("startedAtChange") is None and last["prefilledTokens"] == 0


async def test_completion_items_carry_a_text_edit(session):
    session.open(URI, SOURCE)
    result = await session.client.text_document_completion_async(
        types.CompletionParams(text_document=doc(), position=types.Position(1, 11))
    )
    for item in result.items:
        assert item.text_edit.range.start == types.Position(1, 11)
        assert item.text_edit.new_text


async def test_rewrite_action_is_listed_instantly_and_resolved_within_the_selection(
    session,
):
    session.open(URI, SOURCE)
    selection = types.Range(types.Position(3, 8), types.Position(3, 22))
    actions = await session.client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=doc(),
            range=selection,
            context=types.CodeActionContext(diagnostics=[]),
        )
    )
    rewrite = [a for a in actions if a.title.startswith("Rewrite selection")]
    assert len(rewrite) == 1 and rewrite[0].edit is None  # computed lazily
    resolved = await session.client.code_action_resolve_async(rewrite[0])
    if resolved.edit is not None:  # a random model may produce nothing usable
        change = resolved.edit.document_changes[0]
        assert change.text_document.version == 1
        assert [e.range for e in change.edits] == [selection]


async def test_will_save_fills_holes_and_touches_nothing_else(session):
    session.open(URI, HOLES)
    configure(session, saveDeadlineMs=5000)
    edits = await session.client.text_document_will_save_wait_until_async(
        types.WillSaveTextDocumentParams(doc(), types.TextDocumentSaveReason.Manual)
    )
    hole_ranges = [
        types.Range(types.Position(1, 4), types.Position(1, 31)),
        types.Range(types.Position(5, 4), types.Position(5, 12)),
    ]
    assert all(e.range in hole_ranges for e in edits)
    after = apply(HOLES, edits)
    # outside the holes, the text is exactly what it was
    kept = [line for i, line in enumerate(HOLES.split("\n")) if i not in (1, 5)]
    for line in kept:
        assert line in after


async def test_save_past_the_deadline_answers_empty_then_applies_the_fill(session):
    session.open(URI, HOLES)
    configure(session, saveDeadlineMs=50, maxSteps=120)
    await asyncio.sleep(0.2)
    before = len(session.statuses)
    loop = asyncio.get_running_loop()
    started = loop.time()
    edits = await session.client.text_document_will_save_wait_until_async(
        types.WillSaveTextDocumentParams(doc(), types.TextDocumentSaveReason.Manual)
    )
    assert not edits and loop.time() - started < 2.0
    # each hole's fill ends with a status notification; the late edit follows them
    for _ in range(600):
        if len(session.statuses) >= before + 2:
            break
        await asyncio.sleep(0.05)
    assert len(session.statuses) >= before + 2, "the fill did not finish after the save"
    await asyncio.sleep(0.5)
    for params in session.applied:  # a random model may fill nothing; if it does:
        change = params.edit.document_changes[0]
        assert change.text_document.version == 1
        holes = {(1, 4, 1, 31), (5, 4, 5, 12)}
        for e in change.edits:
            r = e.range
            assert (
                r.start.line,
                r.start.character,
                r.end.line,
                r.end.character,
            ) in holes


async def test_bad_positions_and_unknown_documents_answer_empty(session):
    session.open(URI, "x = '😀'\n")
    for line, char in [(0, 99), (9, 0), (0, 6)]:  # past line, past file, inside 😀
        assert (await session.inline(URI, line, char)).items == ()
    assert (await session.inline("file:///never-opened.py", 0, 0)).items == ()
    session.open("file:///notes.zig", "const x = 1;\n", language="zig")
    assert isinstance((await session.inline("file:///notes.zig", 0, 10)).items, tuple)


async def test_invalid_settings_are_shown_and_defaults_used(session):
    session.client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"infill": {"maxSteps": "many", "device": 3}}
        )
    )
    for _ in range(100):
        if len(session.messages) >= 2:
            break
        await asyncio.sleep(0.05)
    text = " ".join(m.message for m in session.messages)
    assert "infill.maxSteps" in text and "infill.device" in text
    session.open(URI, SOURCE)
    assert isinstance((await session.inline(URI, 1, 11)).items, tuple)


async def test_a_model_that_fails_to_load_keeps_the_server_answering(tmp_path):
    s = Session()
    await s.start("--model", str(tmp_path / "missing"), "--device", "cpu")
    await s.wait_status("error")
    assert any(m.type == types.MessageType.Error for m in s.messages)
    s.open(URI, SOURCE)
    assert (await s.inline(URI, 1, 11)).items == ()
    await s.stop()


async def test_newest_request_per_document_wins(session):
    session.client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"infill": {"maxSteps": 400}})
    )
    session.open(URI, SOURCE)
    first = asyncio.ensure_future(session.inline(URI, 1, 11))
    await asyncio.sleep(0.3)
    configure(session, maxSteps=4)
    second = asyncio.ensure_future(session.inline(URI, 2, 24))
    a, b = await asyncio.gather(first, second)
    assert a.items == ()  # superseded by the newer request, cancelled between steps
    assert isinstance(b.items, tuple)


async def test_cancel_request_is_honoured(session):
    session.client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"infill": {"maxSteps": 400}})
    )
    session.open(URI, SOURCE)
    future = session.client.protocol.send_request_async(
        types.TEXT_DOCUMENT_INLINE_COMPLETION,
        types.InlineCompletionParams(
            text_document=doc(),
            position=types.Position(1, 11),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Invoked
            ),
        ),
    )
    await asyncio.sleep(0.3)
    msg_id = max(session.client.protocol._request_futures, default=None)
    session.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
    session.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=999999))
    with pytest.raises(JsonRpcException):  # answered with RequestCancelled
        await asyncio.wait_for(future, 20)
    configure(session, maxSteps=4)
    assert isinstance((await session.inline(URI, 2, 24)).items, tuple)


async def test_a_10_mb_file_is_served_and_edited(session):
    big = "".join(
        f"value_{i} = compute({i}, 'x')  # padding padding\n" for i in range(220_000)
    )
    assert len(big) > 10_000_000
    uri = "file:///work/big.py"
    session.open(uri, big)
    last = big.count("\n")
    session.change(
        uri, types.Range(types.Position(last, 0), types.Position(last, 0)), "y = "
    )
    result = await asyncio.wait_for(session.inline(uri, last, 4), 60)
    assert isinstance(result.items, tuple)
    assert (await session.command("infill.status"))["state"] == "ready"


async def test_shutdown_with_a_request_in_flight_exits_promptly(tiny_model_dir):
    s = Session()
    await s.start(
        "--model", str(tiny_model_dir), "--device", "cpu", options={"maxSteps": 500}
    )
    await s.wait_status("ready")
    s.open(URI, SOURCE)
    asyncio.ensure_future(s.inline(URI, 1, 11))
    await asyncio.sleep(0.3)
    started = asyncio.get_running_loop().time()
    await s.stop()
    assert s.client._server.returncode == 0
    assert asyncio.get_running_loop().time() - started < 10


async def test_auto_save_does_not_fill_holes(session):
    session.open(URI, HOLES)
    configure(session, saveDeadlineMs=5000)
    for reason in (
        types.TextDocumentSaveReason.AfterDelay,
        types.TextDocumentSaveReason.FocusOut,
    ):
        edits = await session.client.text_document_will_save_wait_until_async(
            types.WillSaveTextDocumentParams(doc(), reason)
        )
        assert not edits


async def test_server_exits_quietly_when_the_client_vanishes(tiny_model_dir):
    s = Session()
    await s.start("--model", str(tiny_model_dir), "--device", "cpu")
    await s.wait_status("ready")
    process = s.client._server
    process._transport.get_pipe_transport(1).close()  # stop reading the server
    s.open(URI, SOURCE)
    asyncio.ensure_future(s.inline(URI, 1, 11))  # its answer meets a closed pipe
    assert await asyncio.wait_for(process.wait(), 30) == 0
    await asyncio.sleep(0.2)
    assert not any("Traceback" in line for line in s.stderr), "".join(s.stderr)


SCRIPTED = Path(__file__).with_name("scripted_server.py")
FIRST = "def first(xs):\n    # <fill>\n"
FIRST_HOLE = types.Range(types.Position(1, 4), types.Position(1, 12))


@pytest.fixture
async def scripted():
    """Start servers whose engine answers every fill with the given candidates."""
    started: list[Session] = []

    async def start(*texts: str, delay_s: float = 0.0) -> Session:
        s = Session()
        started.append(s)
        await s.start(json.dumps(texts), str(delay_s), program=[str(SCRIPTED)])
        await s.wait_status("ready")
        return s

    yield start
    for s in started:
        await s.stop()
        assert not any("Traceback" in line for line in s.stderr), "".join(s.stderr)


async def fill_holes_by(how: str, s: Session) -> list[types.TextEdit]:
    """Fill the holes of URI as `how` does; the edits that reached the document."""
    if how in ("save", "late save"):
        configure(s, saveDeadlineMs=50 if how == "late save" else 5000)
        await asyncio.sleep(0.2)
        saved = await s.client.text_document_will_save_wait_until_async(
            types.WillSaveTextDocumentParams(doc(), types.TextDocumentSaveReason.Manual)
        )
        if saved:
            return list(saved)
    elif how == "command":
        await s.command("infill.fillHoles", URI)
    else:
        actions = await s.client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=doc(),
                range=types.Range(types.Position(0, 0), types.Position(0, 0)),
                context=types.CodeActionContext(diagnostics=[]),
            )
        )
        (fill,) = [a for a in actions if a.title == "Fill holes (infill)"]
        resolved = await s.client.code_action_resolve_async(fill)
        if resolved.edit is not None:
            return list(resolved.edit.document_changes[0].edits)
    for _ in range(100):  # a late fill and the command apply with workspace/applyEdit
        if s.applied or any("left as" in m.message for m in s.messages):
            break
        await asyncio.sleep(0.05)
    return [e for p in s.applied for e in p.edit.document_changes[0].edits]


@pytest.mark.parametrize("how", ["save", "late save", "command", "code action"])
async def test_a_hole_no_fill_parses_for_is_left_as_it_was_and_said_why(scripted, how):
    # the engine's only fill is a `try` without its colon
    s = await scripted("try", delay_s=0.3)
    s.open(URI, FIRST)
    assert await fill_holes_by(how, s) == []
    said = [m.message for m in s.messages]
    assert len(said) == 1 and "line 2" in said[0] and "parses" in said[0], said
    assert "\n" not in said[0]
    # the status notification follows the message; the client may not have read it yet
    for _ in range(100):
        if any("line 2" in st["message"] for st in s.statuses):
            break
        await asyncio.sleep(0.05)
    assert [st["message"] for st in s.statuses if "line 2" in st["message"]] == said


async def test_the_fill_holes_command_counts_the_holes_it_left_and_said(scripted):
    # a client need not add "nothing filled" to the server's message on why
    s = await scripted("try")
    s.open(URI, FIRST + "\n\ndef second(xs):\n    # <fill>\n")
    result = await s.command("infill.fillHoles", URI)
    assert result == {"applied": False, "holes": 0, "left": 2}
    assert len(s.messages) == 1 and "lines 2, 6" in s.messages[0].message


async def test_a_hole_gets_the_best_fill_that_parses(scripted):
    s = await scripted("try", "return xs[0]")
    s.open(URI, FIRST)
    configure(s, saveDeadlineMs=5000)
    edits = await fill_holes_by("save", s)
    assert edits == [types.TextEdit(FIRST_HOLE, "return xs[0]")]
    assert not syntax.parse("python", apply(FIRST, edits)).root_node.has_error
    assert not s.messages


GATED = "def mean(xs):\n    # the mean of\n    total = compute(xs, weights)\n"


async def test_automatic_ghost_text_stays_quiet_in_comments_and_mid_line(scripted):
    s = await scripted("value")
    s.open(URI, GATED)
    comment, mid_line = (1, 17), (2, 12)  # "...mean of|", "total = |compute(..."
    for line, char in (comment, mid_line):
        assert (await s.inline(URI, line, char)).items == ()
        asked = await s.inline(URI, line, char, invoked=True)
        assert [i.insert_text for i in asked.items] == ["value"]
        items = await s.client.text_document_completion_async(
            types.CompletionParams(
                text_document=doc(), position=types.Position(line, char)
            )
        )
        assert [i.text_edit.new_text for i in items.items] == ["value"]
    configure(s, inCommentsAndStrings=True, maxLineSuffix=100)
    await asyncio.sleep(0.2)
    for line, char in (comment, mid_line):
        assert [i.insert_text for i in (await s.inline(URI, line, char)).items] == [
            "value"
        ]
    configure(s, disabledLanguages=["python"])
    await asyncio.sleep(0.2)
    assert (await s.inline(URI, 1, 17, invoked=True)).items == ()


NEXT = "def mean(xs):\n    total = \n    return total / len(xs)\n"


@pytest.mark.parametrize("ready", [True, False])
async def test_after_an_accept_the_next_line_is_ready(scripted, ready):
    s = await scripted("    count = len(xs)", delay_s=0.5)
    s.open(URI, NEXT)
    configure(s, nextSuggestion=ready)
    await asyncio.sleep(0.2)
    first = await s.inline(URI, 1, 12)
    (item,) = first.items
    # the client accepts it: the text lands where it was shown
    at = types.Position(1, 12)
    s.change(URI, types.Range(at, at), item.insert_text)
    await asyncio.sleep(1.0)  # the engine works while the user reads the line
    end = 12 + len(item.insert_text)
    (after,) = (await s.inline(URI, 1, end)).items
    last = await last_status(s)
    if ready:
        assert after.insert_text == "\n    count = len(xs)"
        # computed while the first suggestion waited to be accepted
        assert last.get("startedAhead") is True and last.get("kind") == "next_line"
        # accepted again: the chain goes on, a line at a time
        s.change(URI, after.range, after.insert_text)
        await asyncio.sleep(1.0)
        (third,) = (await s.inline(URI, 2, 19)).items
        assert third.insert_text == "\n    count = len(xs)"
    else:
        assert "\n" not in after.insert_text


async def test_other_workspace_files_reach_the_prompt_and_nothing_outside(tmp_path):
    ws = tmp_path / "ws"
    (ws / "pkg").mkdir(parents=True)
    (ws / "pkg" / "models.py").write_text(
        "def make_invoice(total):\n    return total\n"
    )
    app = ws / "pkg" / "app.py"
    app.write_text("from .models import make_invoice\n\nbill = make_invoice(")
    outside = tmp_path / "outside.py"
    outside.write_text("secret_token = 'x'\n")
    s = Session()
    await s.start(
        json.dumps(["{context}"]),
        program=[str(SCRIPTED)],
        folders=[ws.as_uri()],
        options={"crossFile": True},
    )
    await s.wait_status("ready")
    try:
        s.open((ws / "notes.py").as_uri(), "recent_name = 1\n")  # open, not imported
        s.open(outside.as_uri(), outside.read_text())  # open, outside the workspace
        s.open(app.as_uri(), app.read_text())
        (item,) = (await s.inline(app.as_uri(), 2, 20, invoked=True)).items
        assert item.insert_text.split() == ["notes.py", "pkg/models.py"]
        configure(s, crossFileSources=["imports"])
        await asyncio.sleep(0.2)
        (item,) = (await s.inline(app.as_uri(), 2, 20, invoked=True)).items
        assert item.insert_text == "pkg/models.py"
        configure(s, crossFile=False)
        await asyncio.sleep(0.2)
        assert (await s.inline(app.as_uri(), 2, 20, invoked=True)).items == ()
    finally:
        await s.stop()
    assert not any("Traceback" in line for line in s.stderr), "".join(s.stderr)
