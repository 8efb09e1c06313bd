"""The remote backend's client: settings, what travels, and every way a backend fails,
against small HTTP servers run here (the real Ray Serve path is in test_team.py)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from infill_engine import DenoiseConfig, InfillRequest
from infill_engine.backends import wire
from infill_engine.backends.connect import connect
from infill_engine.backends.urls import parse_backend
from infill_engine.engine import Candidate, InfillResult, Timings
from lsp_server import settings


def test_backend_settings_are_checked():
    assert parse_backend("local") is None
    assert parse_backend("ray:http://h:8000/infill/") == ("ray", "http://h:8000/infill")
    for bad in ("vllm2:http://h", "ray:ftp://h", "ray:h:8000", "http://h:8000"):
        with pytest.raises(ValueError):
            parse_backend(bad)
    good, problems = settings.parse({"backend": "ray:http://gpu:8000/infill"})
    assert good.backend == "ray:http://gpu:8000/infill" and not problems
    bad, problems = settings.parse({"backend": "gpu:8000"})
    assert bad.backend == "local" and "infill.backend must be" in problems[0]


def test_a_request_and_a_result_travel_whole():
    config = DenoiseConfig(max_steps=5, greedy=True)
    request = InfillRequest(
        "a = ",
        "\n",
        [8, 16],
        config,
        validate=str.isidentifier,
        single_line=True,
        context="# b.py\ndef helper(): pass\n",
        context_tokens=64,
    )
    back = wire.request_from_json(json.loads(json.dumps(wire.request_json(request))))
    assert back.single_line
    assert (back.context, back.context_tokens) == (request.context, 64)
    assert (back.prefix, back.suffix, list(back.span_lengths), back.config) == (
        "a = ",
        "\n",
        [8, 16],
        config,
    )
    assert back.validate is None  # code does not travel
    result = InfillResult(
        "x",
        False,
        3,
        1.5,
        8,
        0.9,
        (
            Candidate("x", 8, 0.9, True, True, 2),
            Candidate("y y", 16, 0.5, True, True, 3),
        ),
        Timings(1.0, 2.0, 3.0, 4.0),
        7,
    )
    assert (
        wire.result_from_json(json.loads(json.dumps(wire.result_json(result))))
        == result
    )


def test_validate_ranks_the_returned_candidates_as_the_engine_would():
    result = InfillResult(
        "1x",
        False,
        3,
        1.0,
        8,
        0.9,
        (
            Candidate("1x", 8, 0.9, True, True, 2),
            Candidate("ok", 16, 0.5, True, True, 1),
        ),
    )
    ranked = wire.rank(result, str.isidentifier)
    assert ranked.text == "ok" and ranked.span_length == 16
    assert [c.valid for c in ranked.candidates] == [True, False]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prefix", 3, "must be strings"),
        ("span_lengths", [0], "positive integers"),
        ("config", {"max_step": 3}, "unknown config fields: max_step"),
    ],
)
def test_a_malformed_request_is_refused_with_its_reason(field, value, message):
    data = {"prefix": "a", "suffix": "b", field: value}
    with pytest.raises(ValueError, match=message):
        wire.request_from_json(data)


class Scripted(BaseHTTPRequestHandler):
    """Answers as `self.server.script` says: (status, body bytes, delay seconds)."""

    def do_GET(self):
        self.answer()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.answer()

    def answer(self):
        status, body, delay = self.server.script(self.path)
        time.sleep(delay)
        if delay:  # has the client closed its end meanwhile?
            self.connection.setblocking(False)
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    self.server.gone.append(self.path)
            except BlockingIOError:
                pass
            self.connection.setblocking(True)
        try:
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted_backend():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.gone = []
    health = {"model": "m", "device": "cpu/float32", "canvas_length": 64}
    health["config"] = {"max_steps": 4}
    server.script = lambda path: (200, json.dumps(health).encode(), 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"ray:http://127.0.0.1:{server.server_address[1]}/infill"
    server.shutdown()


def test_each_failure_is_one_line_naming_the_backend(scripted_backend):
    server, setting = scripted_backend
    engine = connect(setting, timeout_s=0.5)
    assert engine.config.max_steps == 4 and engine.canvas_length == 64
    request = InfillRequest("a", "b")
    cases = [
        ((500, b"Internal Server Error\ntrace", 0), "answered HTTP 500: Internal"),
        ((200, b"<html>", 0), "not JSON"),
        ((200, b"[1]", 0), "not an object"),
        ((200, b'{"text": 1}', 0), "no fill result"),
        ((200, b"{}", 2.0), "no answer from http://127.0.0.1:"),
    ]
    for answer, message in cases:
        server.script = lambda path, answer=answer: answer
        with pytest.raises(wire.BackendError, match=message) as caught:
            engine.fill(request)
        assert "\n" not in str(caught.value)


def test_a_refused_connection_and_a_foreign_health_answer_are_clear(scripted_backend):
    server, setting = scripted_backend
    server.script = lambda path: (200, b'{"hello": 1}', 0)
    with pytest.raises(wire.BackendError, match="not an infill backend"):
        connect(setting)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(wire.BackendError, match="cannot reach"):
        connect(f"ray:http://127.0.0.1:{port}/infill")


def test_a_cancelled_request_closes_its_connection(scripted_backend):
    server, setting = scripted_backend
    engine = connect(setting)
    server.script = lambda path: (200, b"{}", 1.0)
    flag = threading.Event()
    threading.Timer(0.1, flag.set).start()
    started = time.perf_counter()
    result = engine.fill(InfillRequest("a", "b"), cancel=flag)
    assert result.cancelled and time.perf_counter() - started < 0.5
    time.sleep(1.2)  # the server finds its client gone when it answers
    assert server.gone == ["/infill"]


async def test_the_editor_hears_once_that_the_backend_failed_and_once_that_it_is_back(
    scripted_backend,
):
    from lsprotocol import types

    from lsp_server.tools.client import Session

    server, setting = scripted_backend
    health = server.script("/infill/health")
    fill = InfillResult("total", False, 4, 1.0, 16, 0.9)
    answers = {"fill": (200, json.dumps(wire.result_json(fill)).encode(), 0)}
    server.script = lambda path: health if path.endswith("/health") else answers["fill"]
    s = Session()
    await s.start("--backend", setting)
    try:
        await s.wait_status("ready", timeout=30)
        s.open("file:///w/a.py", "x = 1\ny = \n")
        first = await s.inline("file:///w/a.py", 1, 4)
        assert [i.insert_text for i in first.items] == ["total"]
        answers["fill"] = (503, b"Service Unavailable", 0)
        for _ in range(3):
            assert not (await s.inline("file:///w/a.py", 1, 4)).items
        answers["fill"] = (200, json.dumps(wire.result_json(fill)).encode(), 0)
        back = await s.inline("file:///w/a.py", 1, 4)
        assert [i.insert_text for i in back.items] == ["total"]
        said = [(m.type, m.message) for m in s.messages]
        assert len(said) == 2, said
        assert said[0][0] == types.MessageType.Error and "HTTP 503" in said[0][1]
        assert said[1] == (types.MessageType.Info, "infill: the backend answers again")
        assert (await s.command("infill.status"))["state"] == "ready"
    finally:
        await s.stop()
