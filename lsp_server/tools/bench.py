"""End-to-end benchmark through LSP: the real server process, a real client over stdio.

Inline-completion requests at many cursor positions of real Python files (single-line
and multi-line spans, asked for as a user asks in the middle of a line), rewrite
actions, and lines retyped keystroke by keystroke (each keystroke a didChange and an
automatic inline request, as an editor sends them), in the short example file and deep
in a long module (there also with the editor's debounce between the two, and typed
fast, a key every 100 ms without waiting for answers, timed at the end of each word);
first keystrokes at new places of that module, asked for after the debounce; the next
line after a suggestion is accepted at a line's end (computed ahead, against pressing
Enter for it with that off); and lines of a file of this repository asked for with
context from its other files and without. Per request kind: the empty answers,
p50/p95/max latency as the client sees it, steps, tokens per forward, and the split
into queue (waiting for the engine's thread), prefill, denoise, post-processing and
protocol (client latency minus time in the server's handler). A request whose
suggestion was started when its change arrived waited only for the rest: its split is
the whole job's. Prints JSON on stdout. Run as `python -m lsp_server.tools.bench`;
`infill bench` calls it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lsprotocol import types

from infill_engine.tools.progress import Phases
from lsp_server.context import PREFIX_CHARS
from lsp_server.tools.client import Session

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# A file of this repository with local imports, for the cost of cross-file context;
# the repository is the bench's workspace folder.
CROSS_FILE = ROOT / "lsp_server" / "server.py"
# Typing in the long file starts this far in: past the server's prefix budget, so the
# context window moves with the cursor, as it does in most real files.
LONG_FILE_AFTER = PREFIX_CHARS + 2000
# A bar per phase on stderr; every measured request steps it.
PHASES = Phases(" req")
# VS Code asks for an inline suggestion about this long after a keystroke.
EDITOR_DEBOUNCE_S = 0.05
# A fast typist: a key every 100 ms (120 words a minute), a pause after each word.
FAST_KEY_S = 0.1
WORD_PAUSE_S = 0.4
# How long a user looks at a suggestion before accepting it.
READ_S = 1.0


def workload_files() -> list[Path]:
    """Real Python: the project's example and a few standard-library modules."""
    stdlib = Path(json.__file__).resolve().parent.parent
    files = [EXAMPLES / "stats.py"] + [
        stdlib / name for name in ("textwrap.py", "statistics.py", "colorsys.py")
    ]
    return [f for f in files if f.is_file()]


def positions(text: str, per_kind: int) -> dict[str, list[tuple[int, int]]]:
    """Cursor positions: mid-line (single-line spans) and after block openers
    (multi-line)."""
    lines = text.split("\n")
    single, multi = [], []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", '"', "'")):
            continue
        if stripped.endswith(":") and i + 1 < len(lines):
            multi.append((i, len(line)))
        elif " = " in line:
            single.append((i, line.index(" = ") + 3))
    step_s = max(1, len(single) // per_kind)
    step_m = max(1, len(multi) // per_kind)
    return {
        "single-line": single[::step_s][:per_kind],
        "multi-line": multi[::step_m][:per_kind],
    }


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p95/max latency and mean splits of one request kind.

    Splits and steps average over the requests the engine ran for (typing through a
    suggestion is answered without it).
    """
    if not samples:
        return {"requests": 0}
    ran = [s for s in samples if s.get("engine", True)]
    lat = sorted(s["latency_ms"] for s in samples)

    def mean(key: str) -> float:
        values = [s[key] for s in ran if s.get(key) is not None]
        return statistics.fmean(values) if values else 0.0

    return {
        "requests": len(samples),
        "engine_runs": len(ran),
        "empty": sum(1 for s in samples if not s.get("items")),
        "p50_ms": statistics.median(lat),
        "p95_ms": lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))],
        "max_ms": lat[-1],
        "steps": mean("steps"),
        "tokens_per_forward": mean("tokensPerForward"),
        "queue_ms": mean("queueMs"),
        "prefill_ms": mean("prefillMs"),
        "denoise_ms": mean("denoiseMs"),
        "postprocess_ms": mean("postprocessMs") + mean("decodeMs") + mean("tokenizeMs"),
        "protocol_ms": mean("protocol_ms"),
        "cross_file_chars": mean("crossFileChars"),
    }


async def measure(
    session: Session, kind: str | None, request: Any, uri: str | None = None
) -> dict[str, Any]:
    """Time one request (an un-awaited coroutine), then read the server's split."""
    start = time.perf_counter()
    result = await request
    latency = (time.perf_counter() - start) * 1000
    return await sample(session, kind, latency, result, uri)


async def sample(
    session: Session,
    kind: str | None,
    latency: float,
    result: Any,
    uri: str | None = None,
) -> dict[str, Any]:
    """One answered request's figures: its latency and the server's split of it.

    `kind` names the figures' row; None names it by the span kind the server chose
    (line, expression, block, selection).

    With `uri` (a request for that document's current version), `engine` says whether
    the server's last engine answer is for that version. It is not after an answer
    typed through a suggestion, which leaves the split of an older version there: that
    split must not count.
    """
    last = dict((await session.command("infill.status")).get("last") or {})
    row = kind or last.get("kind") or "no engine answer yet"
    figures = {**last, "kind": row, "latency_ms": latency}
    if uri is not None:
        answered = (last.get("uri"), last.get("version"))
        figures["engine"] = answered == (uri, session.versions[uri])
    server = last.get("serverMs")
    figures["protocol_ms"] = latency - server if server is not None else None
    if isinstance(result, types.CodeAction):  # a resolved rewrite: an edit or none
        figures["items"] = int(result.edit is not None)
    else:
        figures["items"] = len(getattr(result, "items", ()) or ()) if result else 0
    PHASES.step()
    return figures


def typing_lines(text: str, count: int, after: int = 0) -> list[int]:
    """Indented statement lines of at least 20 characters, spread over the file from
    character `after` on."""
    lines = text.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    found = [
        i
        for i, line in enumerate(lines)
        if starts[i] >= after
        and line.startswith("    ")
        and len(line.strip()) >= 20
        and not line.strip().startswith(("#", '"', "'"))
    ]
    step = max(1, len(found) // max(count, 1))
    return found[::step][:count]


def cleared_lines(
    session: Session, count: int, path: Path, kind: str, after: int
) -> Iterator[tuple[str, int, str, int]]:
    """Open `path` as a new document; then, one at a time, clear each of `count` typing
    lines (from character `after` on) after its indent, and yield (uri, line, the line's
    text, its indent) for it to be retyped."""
    uri, text = open_copy(session, path, kind)
    lines = text.split("\n")
    for line in typing_lines(text, count, after):
        full = lines[line]
        indent = len(full) - len(full.lstrip())
        cut = types.Range(
            types.Position(line=line, character=indent),
            types.Position(line=line, character=len(full)),
        )
        session.change(uri, cut, "")
        yield uri, line, full, indent


async def typing(
    session: Session,
    count: int,
    path: Path,
    kind: str,
    after: int = 0,
    pause: float = 0.0,
) -> list[dict[str, Any]]:
    """Retype `count` lines of `path` (from character `after` on) one character at a
    time.

    Each keystroke is a didChange and, `pause` seconds later (an editor's debounce),
    an inline request, awaited before the next keystroke (a typist slower than the
    server). Consecutive prompts extend each other, so the prefill is mostly reused;
    keystrokes that type through the last suggestion are answered without the engine.
    Samples carry `engine` (whether the engine ran).
    """
    samples: list[dict[str, Any]] = []
    for uri, line, full, indent in cleared_lines(session, count, path, kind, after):
        for column in range(indent, len(full)):
            at = types.Position(line=line, character=column)
            session.change(uri, types.Range(at, at), full[column])
            if pause:
                await asyncio.sleep(pause)
            request = session.inline(uri, line, column + 1)
            samples.append(await measure(session, kind, request, uri))
    return samples


async def typing_fast(
    session: Session, count: int, path: Path, kind: str, after: int = 0
) -> list[dict[str, Any]]:
    """Retype `count` lines of `path` (from character `after` on) word by word, a key
    every `FAST_KEY_S` seconds, as a fast typist does, without waiting for answers.

    As an editor does, each keystroke is a didChange and, the debounce later, an inline
    request; a newer keystroke makes the older request stale (the server answers it
    empty). After each word the typist pauses: the sample is the word's last request,
    the suggestion the user sees, timed from when it was sent.
    """
    samples: list[dict[str, Any]] = []
    for uri, line, full, indent in cleared_lines(session, count, path, kind, after):
        pending: list[asyncio.Future] = []
        for column in range(indent, len(full)):
            at = types.Position(line=line, character=column)
            session.change(uri, types.Range(at, at), full[column])
            await asyncio.sleep(EDITOR_DEBOUNCE_S)
            sent = time.perf_counter()
            pending.append(asyncio.ensure_future(session.inline(uri, line, column + 1)))
            if full[column] != " " and column + 1 < len(full):
                await asyncio.sleep(FAST_KEY_S - EDITOR_DEBOUNCE_S)
                continue
            result = await pending.pop()
            latency = (time.perf_counter() - sent) * 1000
            await asyncio.gather(*pending)  # answered empty: superseded
            pending.clear()
            samples.append(await sample(session, kind, latency, result, uri))
            await asyncio.sleep(WORD_PAUSE_S)
    return samples


async def first_keystrokes(
    session: Session, count: int, path: Path, kind: str
) -> list[dict[str, Any]]:
    """At `count` new places of `path` (from `LONG_FILE_AFTER` on), open a line below
    one (Enter and its indent, one didChange), wait the editor's debounce, then ask for
    a suggestion on the new line; undo, and pause as a user moving on would.

    The latency is the request's, as the editor sees it after its own debounce.
    """
    uri, text = open_copy(session, path, kind)
    lines = text.split("\n")
    samples: list[dict[str, Any]] = []
    for line in typing_lines(text, count, LONG_FILE_AFTER):
        end, indent = await open_line_below(session, uri, lines, line)
        request = session.inline(uri, line + 1, len(indent))
        samples.append(await measure(session, kind, request, uri))
        new_line_end = types.Position(line=line + 1, character=len(indent))
        session.change(uri, types.Range(end, new_line_end), "")
        await asyncio.sleep(0.5)
    return samples


def open_copy(session: Session, path: Path, kind: str) -> tuple[str, str]:
    """Open `path` as a document of its own for the `kind` of request; its uri and
    text."""
    text = path.read_text(encoding="utf-8")
    uri = f"file:///bench/{kind}/{path.name}"
    session.open(uri, text)
    return uri, text


def configure(session: Session, **values: Any) -> None:
    """Change server settings, as an editor does."""
    session.client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"infill": values})
    )


async def open_line_below(
    session: Session, uri: str, lines: list[str], line: int
) -> tuple[types.Position, str]:
    """Enter and the indent at the end of `line` (one didChange), then the editor's
    debounce; the end of that line and the indent."""
    full = lines[line]
    indent = full[: len(full) - len(full.lstrip())]
    end = types.Position(line=line, character=len(full))
    session.change(uri, types.Range(end, end), "\n" + indent)
    await asyncio.sleep(EDITOR_DEBOUNCE_S)
    return end, indent


async def next_lines(
    session: Session, count: int, path: Path, kind: str, ready: bool
) -> list[dict[str, Any]]:
    """At `count` places of `path`, open a line below one and take its suggestion
    after `READ_S` (one change, as Tab makes); then the wait for the next line's:
    with `nextSuggestion` (`ready`), asked for at once at the end of the accepted
    line; without it, after Enter and the editor's debounce on the line below. Places
    whose first suggestion is empty are skipped; everything is undone after each."""
    configure(session, nextSuggestion=ready)
    uri, text = open_copy(session, path, kind)
    lines = text.split("\n")
    samples: list[dict[str, Any]] = []
    for line in typing_lines(text, count, LONG_FILE_AFTER):
        end, indent = await open_line_below(session, uri, lines, line)
        shown = await session.inline(uri, line + 1, len(indent))
        first = shown.items[0].insert_text if shown.items else ""
        if first and "\n" not in first:
            await asyncio.sleep(READ_S)
            at = types.Position(line=line + 1, character=len(indent))
            session.change(uri, types.Range(at, at), first)
            row, col = line + 1, len(indent) + len(first)
            if not ready:
                at = types.Position(line=row, character=col)
                session.change(uri, types.Range(at, at), "\n" + indent)
                row, col = row + 1, len(indent)
            await asyncio.sleep(EDITOR_DEBOUNCE_S)
            request = session.inline(uri, row, col)
            samples.append(await measure(session, kind, request, uri))
        else:
            row, col = line + 1, len(indent)
        session.change(uri, types.Range(end, types.Position(row, col)), "")
        await asyncio.sleep(0.5)
    return samples


async def cross_file(session: Session, count: int, path: Path) -> list[dict[str, Any]]:
    """At `count` mid-line places of `path`, a file of the workspace that imports from
    others, a line asked for with context from other files (`crossFile`), then at the
    same places without it: the difference is what the context costs."""
    uri = path.resolve().as_uri()
    text = path.read_text(encoding="utf-8")
    session.open(uri, text)
    places = positions(text, count)["single-line"]
    samples: list[dict[str, Any]] = []
    for on, kind in (
        (True, "line, cross-file context"),
        (False, "line, same, without"),
    ):
        configure(session, crossFile=on)
        await asyncio.sleep(0.1)
        for line, char in places:
            request = session.inline(uri, line, char, invoked=True)
            samples.append(await measure(session, kind, request, uri))
    return samples


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, drive the workload, return the figures."""
    session = await Session.ready(
        args.model, args.device, {"maxSteps": args.steps}, folders=[ROOT.as_uri()]
    )
    samples: list[dict[str, Any]] = []
    for n, path in enumerate(workload_files()):
        uri = f"file:///bench/{n}/{path.name}"
        text = path.read_text(encoding="utf-8")
        session.open(uri, text)
        spots = positions(text, args.per_kind)
        requests = sum(map(len, spots.values()))
        requests += len(spots["single-line"][: args.rewrites])
        PHASES.start(f"LSP requests in {path.name}", requests)
        for places in spots.values():
            for line, char in places:
                request = session.inline(uri, line, char, invoked=True)
                samples.append(await measure(session, None, request, uri))
        lines = text.split("\n")
        for line, char in spots["single-line"][: args.rewrites]:
            selection = {
                "start": {"line": line, "character": char},
                "end": {"line": line, "character": len(lines[line])},
            }
            action = types.CodeAction(
                title="Rewrite selection (infill)",
                data={"uri": uri, "version": 1, "kind": "rewrite", "range": selection},
            )
            request = session.client.code_action_resolve_async(action)
            samples.append(await measure(session, None, request, uri))
    PHASES.start("LSP typing, keystroke by keystroke")
    samples += await typing(session, args.typing, EXAMPLES / "stats.py", "typing")
    # Deep in a long module, where the prefix is longer than the context budget.
    long_file = max(workload_files(), key=lambda f: f.stat().st_size)
    samples += await typing(
        session, args.typing, long_file, "typing, long file", after=LONG_FILE_AFTER
    )
    samples += await typing(
        session,
        args.typing,
        long_file,
        "typing, long file, 50 ms debounce",
        after=LONG_FILE_AFTER,
        pause=EDITOR_DEBOUNCE_S,
    )
    samples += await typing_fast(
        session,
        args.typing,
        long_file,
        "typing fast, long file (after a word)",
        after=LONG_FILE_AFTER,
    )
    PHASES.start("LSP first keystrokes", args.per_kind)
    samples += await first_keystrokes(
        session, args.per_kind, long_file, "first keystroke, long file"
    )
    if CROSS_FILE.is_file():
        PHASES.start("LSP cross-file context", 2 * args.per_kind)
        samples += await cross_file(session, args.per_kind, CROSS_FILE)
    PHASES.start("LSP next line after an accept", 2 * args.per_kind)
    samples += await next_lines(
        session, args.per_kind, long_file, "next line after an accept (ready)", True
    )
    samples += await next_lines(
        session, args.per_kind, long_file, "next line after an accept, Enter", False
    )
    PHASES.close()
    await session.stop()
    kinds = sorted({s["kind"] for s in samples})
    return {
        "lsp": {k: summarize([s for s in samples if s["kind"] == k]) for k in kinds}
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m lsp_server.tools.bench`."""
    parser = argparse.ArgumentParser(
        prog="python -m lsp_server.tools.bench", description=__doc__
    )
    parser.add_argument(
        "--model", default="", help="checkpoint (default: the default model)"
    )
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--per-kind", type=int, default=12, help="positions per kind per file"
    )
    parser.add_argument(
        "--rewrites", type=int, default=3, help="rewrite actions per file"
    )
    parser.add_argument(
        "--steps", type=int, default=0, help="maxSteps setting (0: model's)"
    )
    parser.add_argument(
        "--typing",
        type=int,
        default=3,
        help="lines retyped keystroke by keystroke, per file",
    )
    args = parser.parse_args(argv)
    json.dump(asyncio.run(run(args)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
