"""The `vllm` backend's client against `vllm_test_server.py`, a stand-in that keeps
vLLM's request rules for DiffusionGemma structured reads and answers with a tiny model:
the setting, the startup check, what a fill sends, how the middle is cut from what
comes back, and every way the server fails. (vLLM itself does not run here.)"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from lsprotocol import types
from vllm_test_server import SERVED_NAME, VllmTestServer

from infill_engine import DenoiseConfig, InfillRequest
from infill_engine.backends import wire
from infill_engine.backends.connect import connect
from infill_engine.backends.urls import parse_backend, vllm_target
from infill_engine.backends.vllm_client import VllmEngine
from infill_engine.core.canvas import cut_at_end_of_span
from lsp_server import settings
from lsp_server.tools.client import Session

PREFIX = (
    "def mean(values):\n"
    '    """The arithmetic mean of a list of numbers, or zero for none."""\n'
    "    if not values:\n"
    "        return 0.0\n"
    "    total = 0\n"
    "    for value in values:\n"
    "        "
)
SUFFIX = (
    "\n    return total / len(values)\n\n\n"
    "def median(values):\n"
    "    ordered = sorted(values)\n"
    "    middle = len(ordered) // 2\n"
    "    return ordered[middle]\n"
)


@pytest.fixture
def server(tiny_model, tiny_tokenizer):
    """The stand-in serving a 64-position canvas."""
    srv = VllmTestServer(tiny_model, tiny_tokenizer, canvas_length=64).start()
    yield srv
    srv.stop()


def setting_for(srv, model_dir, canvas=64, model=SERVED_NAME) -> str:
    value = f"vllm:{srv.url}?tokenizer={model_dir}&canvas={canvas}"
    return value + (f"&model={model}" if model else "")


@pytest.fixture
def engine(server, tiny_model_dir):
    return connect(setting_for(server, tiny_model_dir), timeout_s=5.0)


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_setting_names_the_server_the_model_and_the_tokenizer():
    value = "vllm:http://gpu:8000/?tokenizer=/m/dg%26x+y&model=google/dg&canvas=256"
    kind, url = parse_backend(value)
    assert kind == "vllm"
    target = vllm_target(url)
    assert (target.root, target.tokenizer, target.model, target.canvas_length) == (
        "http://gpu:8000",
        "/m/dg&x+y",  # percent-decoded, and a plus stays a plus
        "google/dg",
        256,
    )
    plain = vllm_target(parse_backend("vllm:https://h/vllm?tokenizer=/m")[1])
    assert (plain.root, plain.model, plain.canvas_length) == (
        "https://h/vllm",
        None,
        32,
    )
    for bad, why in [
        ("vllm:http://h:8000", "needs the served model's tokenizer"),
        ("vllm:http://h:8000?tokenizer=", "needs the served model's tokenizer"),
        ("vllm:http://h?tokenizer=/m&canvas=abc", "canvas must be an integer"),
        ("vllm:http://h?tokenizer=/m&canvas=8", "canvas must be an integer >= 16"),
        ("vllm:http://h?tokenizer=/m&steps=3", "option 'steps' is unknown"),
        ("vllm:http://h?tokenizer=/m&tokenizer=/n", "'tokenizer' is given twice"),
        ("vllm:ftp://h?tokenizer=/m", "must be http"),
        ("vllm:h:8000?tokenizer=/m", "must be http"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_backend(bad)
    good, problems = settings.parse({"backend": value})
    assert good.backend == value and not problems
    bad, problems = settings.parse({"backend": "vllm:http://h:8000"})
    assert bad.backend == "local" and "infill.backend must be" in problems[0]


def test_a_supporting_server_passes_the_startup_check(server, tiny_model_dir):
    engine = connect(setting_for(server, tiny_model_dir))
    assert isinstance(engine, VllmEngine)
    assert engine.canvas_length == 64 and engine.config == DenoiseConfig()
    assert engine.placement.describe() == (
        f"vllm {server.url} ({SERVED_NAME}, canvas 64)"
    )
    # The check: a full seed canvas and an impossible pin, which the server refused.
    (probe,) = server.requests
    assert probe["vllm_xargs"]["diffusion_pinned"] == [-1]
    assert len(probe["vllm_xargs"]["diffusion_seed_canvas"]) == 64
    assert probe["model"] == SERVED_NAME and not server.responses


def test_a_server_that_ignores_the_pins_is_refused_with_the_reason(
    tiny_model, tiny_tokenizer, tiny_model_dir
):
    legacy = VllmTestServer(tiny_model, tiny_tokenizer, legacy=True).start()
    try:
        with pytest.raises(wire.BackendError) as caught:
            connect(setting_for(legacy, tiny_model_dir))
        message = str(caught.value)
        assert "does not support diffusion pinning" in message
        assert "diffusion_pinned in vllm_xargs" in message and "\n" not in message
        assert len(legacy.responses) == 1  # it answered the check as if it were fine
    finally:
        legacy.stop()


def test_the_canvas_length_must_be_the_served_one(server, tiny_model_dir):
    with pytest.raises(wire.BackendError) as caught:
        connect(setting_for(server, tiny_model_dir, canvas=32))
    message = str(caught.value)
    assert "does not serve a canvas of 32 positions" in message
    assert "exactly 64 ids" in message and "canvas_length" in message
    with pytest.raises(wire.BackendError, match="HTTP 404.*does not exist"):
        connect(setting_for(server, tiny_model_dir, model="other"))


def test_a_server_without_a_canvas_setting_serves_the_default_32(
    tiny_model, tiny_tokenizer, tiny_model_dir
):
    srv = VllmTestServer(tiny_model, tiny_tokenizer, canvas_length=None).start()
    try:
        engine = connect(f"vllm:{srv.url}?tokenizer={tiny_model_dir}")
        assert engine.canvas_length == 32
        result = engine.fill(InfillRequest(PREFIX, SUFFIX, [8, 64]))
        sent = srv.requests[1:]
        assert [len(b["vllm_xargs"]["diffusion_seed_canvas"]) for b in sent] == [32, 32]
        assert "model" not in sent[0]  # the server's only model answers
        # A span never takes more than 3/4 of the canvas.
        assert [c.span_length for c in result.candidates] in ([8, 24], [24, 8])
    finally:
        srv.stop()


def test_a_fill_sends_the_prefix_tail_and_suffix_head_pinned_around_noise(
    server, engine, tiny_tokenizer
):
    config = DenoiseConfig(max_steps=3, seed=7)
    engine.fill(InfillRequest(PREFIX, SUFFIX, [8], config))
    body = server.requests[-1]
    xargs = body["vllm_xargs"]
    seed, pinned = xargs["diffusion_seed_canvas"], xargs["diffusion_pinned"]
    assert len(seed) == 64 and body["max_tokens"] == 64
    free = sorted(set(range(64)) - set(pinned))
    assert len(free) == 8 and free == list(range(free[0], free[0] + 8))
    tail = free[0]
    prefix_ids, suffix_ids = ids(tiny_tokenizer, PREFIX), ids(tiny_tokenizer, SUFFIX)
    assert tail > 8 and len(prefix_ids) > tail  # the prefix head went to the prompt
    assert body["prompt"] == [tiny_tokenizer.bos_token_id] + prefix_ids[:-tail]
    assert seed[:tail] == prefix_ids[-tail:]  # the prefix tail, pinned
    head = seed[tail + 8 :]
    assert head == suffix_ids[: len(head)]  # the suffix head, pinned
    noise = seed[tail : tail + 8]
    assert all(0 <= t < len(tiny_tokenizer) for t in noise)
    assert len(set(noise)) > 1  # noise, not placeholders
    assert body["ignore_eos"] is True and body["return_token_ids"] is True
    # The same request sends the same noise; another seed other noise.
    engine.fill(InfillRequest(PREFIX, SUFFIX, [8], config))
    assert server.requests[-1]["vllm_xargs"] == xargs
    engine.fill(InfillRequest(PREFIX, SUFFIX, [8], DenoiseConfig(max_steps=3)))
    other = server.requests[-1]["vllm_xargs"]["diffusion_seed_canvas"]
    assert other[tail : tail + 8] != noise and other[:tail] == seed[:tail]


def test_a_short_text_is_padded_and_the_padding_pinned(server, engine, tiny_tokenizer):
    engine.fill(InfillRequest("x = ", "\n", [16]))
    xargs = server.requests[-1]["vllm_xargs"]
    seed, pinned = xargs["diffusion_seed_canvas"], set(xargs["diffusion_pinned"])
    free = [i for i in range(64) if i not in pinned]
    assert len(free) == 16
    pad = tiny_tokenizer.pad_token_id
    after = seed[free[-1] + 1 :]
    suffix_ids = ids(tiny_tokenizer, "\n")
    assert after[: len(suffix_ids)] == suffix_ids
    assert set(after[len(suffix_ids) :]) == {pad} and len(after) > 30


def test_max_steps_becomes_the_servers_step_cap(server, engine):
    result = engine.fill(InfillRequest(PREFIX, SUFFIX, [8], DenoiseConfig(max_steps=5)))
    assert server.requests[-1]["vllm_xargs"]["diffusion_max_steps"] == 5
    assert server.steps_run[-1] == 5 and result.steps == 5
    engine.fill(InfillRequest(PREFIX, SUFFIX, [8]))  # the checkpoint's default
    assert server.requests[-1]["vllm_xargs"]["diffusion_max_steps"] == 48


def test_the_middle_is_cut_from_the_span_positions_of_the_returned_canvas(
    server, engine, tiny_tokenizer
):
    eos = tiny_tokenizer.eos_token_id
    middle = ids(tiny_tokenizer, "total += value")

    def answer(seed, pinned):
        # End-of-span at every pinned position: a client that read from the start, or
        # took what came back at pinned positions, would return nothing or noise.
        canvas = [eos] * len(seed)
        first = min(set(range(len(seed))) - set(pinned))
        canvas[first : first + len(middle)] = middle
        return canvas

    server.answer = answer
    result = engine.fill(InfillRequest(PREFIX, SUFFIX, [16]))
    assert result.text == "total += value" and not result.cancelled
    (best,) = result.candidates
    assert best.complete and best.tokens == len(middle) and best.span_length == 16


def test_a_span_without_an_end_is_incomplete_and_kept_whole(
    server, engine, tiny_tokenizer
):
    word = ids(tiny_tokenizer, " value")[-1]
    server.answer = lambda seed, pinned: [word] * len(seed)
    result = engine.fill(InfillRequest(PREFIX, SUFFIX, [8]))
    (best,) = result.candidates
    assert not best.complete and best.tokens == 8
    assert best.text == tiny_tokenizer.decode([word] * 8)


def test_the_models_own_answer_is_read_at_the_span_not_at_the_pins(
    server, engine, tiny_tokenizer
):
    result = engine.fill(InfillRequest(PREFIX, SUFFIX, [8, 16]))
    assert len(result.candidates) == 2 and len(server.responses) == 2
    end = {tiny_tokenizer.eos_token_id}
    for body, answer in zip(server.requests[-2:], server.responses, strict=True):
        xargs = body["vllm_xargs"]
        seed, pinned = xargs["diffusion_seed_canvas"], xargs["diffusion_pinned"]
        emitted = answer["choices"][0]["token_ids"]
        assert len(emitted) == 64
        # As vLLM does, the server emits its argmax at pinned positions, not the seed.
        assert any(emitted[p] != seed[p] for p in pinned)
        free = sorted(set(range(64)) - set(pinned))
        kept = cut_at_end_of_span(emitted[free[0] : free[-1] + 1], end)
        (candidate,) = [c for c in result.candidates if c.span_length == len(free)]
        assert candidate.text == tiny_tokenizer.decode(kept, skip_special_tokens=True)
        assert candidate.tokens == len(kept) and 0.0 < candidate.score <= 1.0


def test_rows_rank_complete_first_then_by_check(server, engine, tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id

    def answer_for(texts):
        def answer(seed, pinned):
            span = len(seed) - len(pinned)
            first = min(set(range(len(seed))) - set(pinned))
            canvas = list(seed)
            text_ids = ids(tiny_tokenizer, texts[span])
            canvas[first : first + span] = (text_ids + [eos] * span)[:span]
            return canvas

        return answer

    server.answer = answer_for({8: "1x", 16: "ok"})
    assert engine.fill(InfillRequest("a = ", "\n", [8, 16])).text == "1x"  # first
    checked = engine.fill(
        InfillRequest("a = ", "\n", [8, 16], validate=str.isidentifier)
    )
    assert checked.text == "ok" and [c.valid for c in checked.candidates] == [
        True,
        False,
    ]
    server.answer = answer_for({8: "x " * 20, 16: "done"})  # the 8 slots never end
    result = engine.fill(InfillRequest("a = ", "\n", [8, 16]))
    assert result.text == "done" and result.candidates[0].complete


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, b"Internal Server Error\ntrace", "answered HTTP 500: Internal"),
        (400, b'{"error": {"message": "prompt too long"}}', "HTTP 400: .*too long"),
        (200, b"not json", "not JSON"),
        (200, b'{"choices": []}', "no completion choice"),
        (200, b'{"choices": [{"text": "x"}]}', "no token ids"),
        (200, b'{"choices": [{"token_ids": [1, 2]}]}', "2 tokens, not a canvas"),
    ],
)
def test_each_failure_is_one_line(server, engine, status, body, message):
    server.fail = (status, body)
    with pytest.raises(wire.BackendError, match=message) as caught:
        engine.fill(InfillRequest(PREFIX, SUFFIX, [8, 16]))
    assert "\n" not in str(caught.value)


def test_a_slow_server_times_out_and_a_gone_one_is_unreachable(server, tiny_model_dir):
    engine = connect(setting_for(server, tiny_model_dir), timeout_s=0.5)
    server.delay = 2.0
    started = time.perf_counter()
    with pytest.raises(wire.BackendError, match="no answer from .* within 0.5 s"):
        engine.fill(InfillRequest(PREFIX, SUFFIX, [8, 16]))
    assert time.perf_counter() - started < 2.0
    server.delay = 0.0
    server.stop()
    with pytest.raises(wire.BackendError, match="cannot reach") as caught:
        engine.fill(InfillRequest(PREFIX, SUFFIX))
    assert "\n" not in str(caught.value)
    nowhere = f"vllm:http://127.0.0.1:{free_port()}?tokenizer={tiny_model_dir}"
    with pytest.raises(wire.BackendError, match="cannot reach"):
        connect(nowhere)
    with pytest.raises(wire.BackendError, match="cannot load the tokenizer"):
        connect(f"vllm:http://127.0.0.1:{free_port()}?tokenizer=/no/such/dir")


def test_a_cancelled_fill_comes_back_empty_at_once_and_closes_its_requests(
    server, engine
):
    server.delay = 1.0
    flag = threading.Event()
    threading.Timer(0.1, flag.set).start()
    started = time.perf_counter()
    result = engine.fill(InfillRequest(PREFIX, SUFFIX, [8, 16]), cancel=flag)
    assert result.cancelled and result.text == "" and not result.candidates
    assert time.perf_counter() - started < 0.5
    time.sleep(1.3)  # the server finds both clients gone when it would answer
    assert server.gone == ["/v1/completions", "/v1/completions"]
    before = len(server.requests)
    stale = engine.fill(InfillRequest(PREFIX, SUFFIX), cancel=lambda: True)
    assert stale.cancelled and len(server.requests) == before  # nothing was sent


async def test_the_language_server_fills_through_a_vllm_backend(server, tiny_model_dir):
    s = Session()
    await s.start(
        "--backend", setting_for(server, tiny_model_dir), options={"maxSteps": 4}
    )
    try:
        await s.wait_status("ready", timeout=60)
        status = await s.command("infill.status")
        assert status["device"] == f"vllm {server.url} ({SERVED_NAME}, canvas 64)"
        uri = "file:///work/vllm.py"
        s.open(uri, PREFIX + "\n" + SUFFIX)
        answer = await s.inline(uri, 6, 8)
        for item in answer.items if answer else []:
            assert item.range.start == types.Position(6, 8)
        fills = [b for b in server.requests[1:] if isinstance(b, dict)]
        assert fills and all(b["vllm_xargs"]["diffusion_max_steps"] == 4 for b in fills)
        assert (await s.command("infill.status"))["last"]["steps"] == 4
    finally:
        await s.stop()
    assert not any("Traceback" in line for line in s.stderr), "".join(s.stderr)


def test_what_travels_is_json_and_nothing_else(server, engine):
    engine.fill(InfillRequest(PREFIX, SUFFIX, [8]))
    body = server.requests[-1]
    assert json.loads(json.dumps(body)) == body
    assert set(body) == {
        "model",
        "prompt",
        "max_tokens",
        "ignore_eos",
        "return_token_ids",
        "logprobs",
        "return_tokens_as_token_ids",
        "vllm_xargs",
    }
    assert set(body["vllm_xargs"]) == {
        "diffusion_seed_canvas",
        "diffusion_pinned",
        "diffusion_max_steps",
    }


def test_floor_decoding_is_refused_with_the_reason(server, tiny_model_dir):
    """vLLM reads the canvas bidirectionally: it cannot give the floor, and says so
    instead of answering with another decoding."""
    engine = connect(setting_for(server, tiny_model_dir))
    asked = len(server.requests)
    floor = DenoiseConfig(decoding="floor")
    with pytest.raises(wire.BackendError, match="floor decoding"):
        engine.fill(InfillRequest("a = ", "\n", [8], floor))
    assert len(server.requests) == asked  # nothing was sent
