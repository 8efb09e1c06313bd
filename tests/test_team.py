"""Team setup, for real: `infill serve` starts a local Ray with two replicas that batch
up to 4 requests each, and the real `infill-lsp` reaches it through `infill.backend`,
with every feature, several editors at once, and a backend that stops."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import build_decisive_model, checkpoint
from lsprotocol import types
from test_lsp_e2e import SOURCE

from infill_engine import DenoiseConfig, InfillEngine, InfillRequest
from infill_engine.backends import wire
from infill_engine.backends.connect import connect
from lsp_server.tools.client import Session

pytestmark = pytest.mark.slow

URI = "file:///work/team.py"
HOLES = "def scale(xs, k):\n    # <fill> multiply each item\n    return out\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    """Decoded greedily, a fill depends on its request alone, not on the batch it
    shared, so batched answers can be checked."""
    model = build_decisive_model(tiny_tokenizer, seed=5)
    return checkpoint(model, tiny_tokenizer, tmp_path_factory.mktemp("team-model"))


@pytest.fixture(scope="module")
def backend(model_dir):
    """`infill serve` with 2 replicas of the tiny model, batching up to 4 requests
    each; yields (backend setting, process). The last test of this module stops it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infill_engine", "serve", "--model", str(model_dir)]
        + ["--device", "cpu", "--replicas", "2", "--max-batch", "4"]
        + ["--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = []
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if line.startswith("serving at"):
            break
    else:
        pytest.fail("infill serve did not start:\n" + "".join(lines[-30:]))
    assert lines and lines[-1].startswith("serving at"), "".join(lines[-30:])
    url = f"http://127.0.0.1:{port}/infill"
    yield f"ray:{url}", proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


async def editor(setting: str) -> Session:
    s = Session()
    await s.start("--backend", setting, options={"maxSteps": 8})
    await s.wait_status("ready", timeout=60)
    return s


def test_a_remote_fill_is_the_local_engines_fill(backend, model_dir):
    setting, _ = backend
    engine = connect(setting)
    local = InfillEngine.load(str(model_dir), device="cpu")
    assert engine.config == local.config
    assert engine.placement.describe().startswith("ray http://127.0.0.1:")
    request = InfillRequest("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n")
    there, here = engine.fill(request), local.fill(request)
    assert there.text == here.text and there.steps == here.steps
    assert [c.text for c in there.candidates] == [c.text for c in here.candidates]
    # validate cannot travel: it ranks the returned candidates here, as locally
    check = lambda text: text == here.candidates[-1].text  # noqa: E731
    ranked = engine.fill(InfillRequest(request.prefix, request.suffix, validate=check))
    assert (
        ranked.text
        == local.fill(
            InfillRequest(request.prefix, request.suffix, validate=check)
        ).text
    )


def test_concurrent_requests_share_batches_and_each_gets_its_own_fill(
    backend, model_dir
):
    setting, _ = backend
    greedy = DenoiseConfig(max_steps=6, greedy=True, schedule="linear")
    lines = SOURCE.splitlines(keepends=True)
    requests = [
        InfillRequest(
            "".join(lines[:i]) + f"v{i} = ", "\n" + "".join(lines[i:]), config=greedy
        )
        for i in range(len(lines))
    ] * 2
    engine = connect(setting)
    with ThreadPoolExecutor(len(requests)) as pool:
        there = list(pool.map(engine.fill, requests))
    local = InfillEngine.load(str(model_dir), device="cpu")
    here = [local.fill(r) for r in requests]
    assert [r.text for r in there] == [r.text for r in here]
    assert [r.span_length for r in there] == [r.span_length for r in here]
    health = setting.removeprefix("ray:") + "/health"
    largest = max(wire.call(health, None, 10.0)["largest_batch"] for _ in range(8))
    assert largest > 1  # requests did run together


def test_a_superseded_remote_request_comes_back_cancelled_at_once(backend):
    engine = connect(backend[0])
    started = time.perf_counter()
    result = engine.fill(InfillRequest("x = ", "\n"), cancel=lambda: True)
    assert result.cancelled and not result.text
    assert time.perf_counter() - started < 1.0


async def test_every_feature_works_through_the_backend(backend):
    s = await editor(backend[0])
    try:
        status = await s.command("infill.status")
        assert status["device"].startswith("ray http://")
        s.open(URI, SOURCE)
        inline = await s.inline(URI, 1, 11)
        for item in inline.items:
            assert item.range.start == item.range.end == types.Position(1, 11)
        completion = await s.client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(URI),
                position=types.Position(1, 11),
            )
        )
        assert all(
            i.text_edit.range.start == types.Position(1, 11) for i in completion.items
        )
        assert (await s.command("infill.status"))["last"]["steps"] > 0  # it computed
        selection = types.Range(types.Position(3, 8), types.Position(3, 22))
        actions = await s.client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(URI),
                range=selection,
                context=types.CodeActionContext(diagnostics=[]),
            )
        )
        rewrite = [a for a in actions if a.title.startswith("Rewrite selection")]
        resolved = await s.client.code_action_resolve_async(rewrite[0])
        if resolved.edit is not None:
            edits = resolved.edit.document_changes[0].edits
            assert [e.range for e in edits] == [selection]
        holes = "file:///work/holes.py"
        s.open(holes, HOLES)
        saved = await s.client.text_document_will_save_wait_until_async(
            types.WillSaveTextDocumentParams(
                types.TextDocumentIdentifier(holes), types.TextDocumentSaveReason.Manual
            )
        )
        hole = types.Range(types.Position(1, 4), types.Position(1, 31))
        assert all(e.range == hole for e in saved or [])
        filled = await s.command("infill.fillHoles", holes)
        assert filled["holes"] + filled["left"] == 1  # the one hole: filled or said
    finally:
        await s.stop()
    assert not any("Traceback" in line for line in s.stderr), "".join(s.stderr)


async def test_four_editors_at_once_get_their_own_answers(backend):
    sessions = await asyncio.gather(*(editor(backend[0]) for _ in range(4)))
    try:
        docs = [f"file:///work/e{i}.py" for i in range(4)]
        for s, uri, i in zip(sessions, docs, range(4), strict=True):
            s.open(uri, SOURCE.replace("values", f"values_{i}"))
        answers = await asyncio.gather(
            *(s.inline(uri, 1, 11) for s, uri in zip(sessions, docs, strict=True))
        )
        for s, uri, answer in zip(sessions, docs, answers, strict=True):
            last = (await s.command("infill.status"))["last"]
            assert last["uri"] == uri and last["steps"] > 0  # answered for its own file
            for item in answer.items:
                assert item.range.start == types.Position(1, 11)
    finally:
        await asyncio.gather(*(s.stop() for s in sessions))


async def test_a_backend_that_is_not_there_is_said_once_and_the_editor_works(backend):
    setting, proc = backend
    s = await editor(setting)
    try:
        s.open(URI, SOURCE)
        await s.inline(URI, 1, 11)
        os.killpg(proc.pid, signal.SIGTERM)  # the backend stops
        proc.wait(60)
        for line in (1, 2, 4):
            answer = await s.inline(URI, line, 4, invoked=True)  # mid-line: asked
            assert answer is None or not answer.items
        down = [m for m in s.messages if "stopped answering" in m.message]
        assert len(down) == 1 and down[0].type == types.MessageType.Error
        status = await s.command("infill.status")
        assert status["state"] == "error" and "backend unreachable" in status["message"]
        s.change(URI, None, SOURCE + "x = 1\n")  # the editor keeps working
        assert await s.command("infill.status")
    finally:
        await s.stop()
    assert not any("Traceback" in line for line in s.stderr), "".join(s.stderr)
    nobody = Session()
    await nobody.start("--backend", f"ray:http://127.0.0.1:{free_port()}/infill")
    try:
        await nobody.wait_status("error", timeout=30)
        assert any("cannot reach" in m.message for m in nobody.messages)
    finally:
        await nobody.stop()
