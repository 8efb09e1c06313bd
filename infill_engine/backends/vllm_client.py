"""The `vllm` backend: a DiffusionGemma checkpoint served by vLLM, the canvas seeded
and pinned by this client.

    engine = connect("vllm:http://gpu-box:8000?tokenizer=/models/dg&canvas=256")

UNTESTED AGAINST A REAL vLLM: the tests run it against `tests/vllm_test_server.py`, a
stand-in that keeps vLLM's request rules with a tiny DiffusionGemma. It sends the
project's canvas (`canvas.plan_canvas`) as `diffusion_seed_canvas` with everything but
the span pinned (`diffusion_pinned`), one request per span length, and ranks the rows
as the engine does. It cannot heal the prefix's last token, and refuses floor decoding
(vLLM reads the whole canvas bidirectionally) with a `BackendError`. It probes the
server first and refuses one that ignores the pins. What it sends, what it reads back
and what it assumes without having seen it: docs/vllm.md.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from infill_engine.backends.urls import vllm_target
from infill_engine.backends.wire import (
    DEFAULT_TIMEOUT_S,
    BackendError,
    RemotePlacement,
    call,
    rank,
)
from infill_engine.core.canvas import CanvasBatch, cut_at_end_of_span
from infill_engine.core.config import DenoiseConfig
from infill_engine.engine import (
    DEFAULT_MAX_PROMPT_TOKENS,
    DEFAULT_SPAN_LENGTHS,
    CancelFlag,
    Candidate,
    InfillRequest,
    InfillResult,
    Timings,
    cancel_check,
    plan_request,
    ranked,
)

COMPLETIONS = "/v1/completions"
PROBE_TIMEOUT_S = 10.0
TOKEN_ID_PREFIX = "token_id:"  # vLLM's form with return_tokens_as_token_ids


class VllmEngine:
    """The engine's API, answered by a vLLM server with DiffusionGemma pinning.

    Args:
        url: the backend URL without its kind (`vllm_target` reads it).
        timeout_s: the longest a request waits for its answer.
        span_lengths: span slots tried when a request names none (cut to 3/4 of the
            canvas, as the engine cuts them).
        max_prompt_tokens: the prompt (BOS included) keeps at most this many tokens.

    Raises:
        ValueError: a malformed URL.
        BackendError: the tokenizer does not load, the server does not answer, or it
            does not support diffusion pinning.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        span_lengths: Sequence[int] = DEFAULT_SPAN_LENGTHS,
        max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
    ) -> None:
        target = vllm_target(url)
        self.kind, self.url, self.timeout_s = "vllm", target.root, timeout_s
        self.endpoint = target.root + COMPLETIONS
        self.model = target.model or ""
        self.canvas_length = target.canvas_length
        self.span_lengths = tuple(span_lengths)
        self.max_prompt_tokens = max_prompt_tokens
        self.tokenizer = load_tokenizer(target.tokenizer)
        config = _checkpoint_json(target.tokenizer, "config.json")
        text = config.get("text_config")
        text = text if isinstance(text, dict) else {}
        self.end_ids = _ids(self.tokenizer.eos_token_id, config.get("eos_token_id"))
        self.end_ids |= _ids(text.get("eos_token_id"))
        if not self.end_ids:
            raise BackendError(
                f"the tokenizer {target.tokenizer!r} defines no end-of-span (EOS) token"
            )
        self.bos_id = _first(self.tokenizer.bos_token_id, text.get("bos_token_id"), 2)
        self.pad_id = _first(self.tokenizer.pad_token_id, text.get("pad_token_id"), 0)
        vocab = text.get("vocab_size")
        self.vocab_size = len(self.tokenizer)
        if isinstance(vocab, int) and 0 < vocab < self.vocab_size:
            self.vocab_size = vocab  # noise ids must be ids the server accepts
        self.config = _denoise_defaults(target.tokenizer)
        served = target.model or "served model"
        self.placement = RemotePlacement(
            "vllm", target.root, f"{served}, canvas {self.canvas_length}"
        )
        self._probe()

    def _probe(self) -> None:
        """Refuse a server that would ignore the pins: a supporting one answers an
        impossible pinned position with HTTP 400."""
        xargs = {
            "diffusion_seed_canvas": [self.pad_id] * self.canvas_length,
            "diffusion_pinned": [-1],
        }
        body = self._body([self.bos_id], 1, xargs, read_canvas=False)
        try:
            call(self.endpoint, body, min(self.timeout_s, PROBE_TIMEOUT_S))
        except BackendError as exc:
            status, reason = _status_and_reason(str(exc))
            if status != 400:
                raise
            if "diffusion_pinned" in reason:
                return  # refused for the pin, as a supporting server does
            if "diffusion_seed_canvas" in reason:
                raise BackendError(
                    f"vllm at {self.url} does not serve a canvas of "
                    f"{self.canvas_length} positions ({reason}); set canvas=N in "
                    "infill.backend to the server's --diffusion-config canvas_length"
                ) from None
            raise BackendError(
                f"vllm at {self.url} refused the startup check: {reason}"
            ) from None
        raise BackendError(
            f"vllm at {self.url} does not support diffusion pinning: it ignored "
            "diffusion_pinned instead of refusing an impossible position. Serve the "
            "model with a vLLM build whose DiffusionGemma accepts "
            "diffusion_seed_canvas and diffusion_pinned in vllm_xargs"
        )

    def plan(self, request: InfillRequest) -> CanvasBatch:
        """The prompt and one seeded canvas row per span length, laid out as the
        engine lays them out (`engine.plan_request`), with no readout shift: vLLM's
        DiffusionGemma reads slot i at position i."""
        return plan_request(
            request,
            self._encode,
            self.canvas_length,
            self.span_lengths,
            self.max_prompt_tokens,
            (self.bos_id, self.pad_id),
        )

    def request_bodies(
        self, request: InfillRequest, batch: CanvasBatch | None = None
    ) -> list[dict[str, Any]]:
        """The `/v1/completions` bodies of a request, one per span length: the
        canvas row with noise in its span slots, and every other position pinned."""
        batch = batch if batch is not None else self.plan(request)
        config = request.config or self.config
        prompt = [int(t) for t in batch.prompt_ids[0].tolist()]
        bodies = []
        for row, span in enumerate(batch.span_lengths):
            seed = [int(t) for t in batch.canvas[row].tolist()]
            pinned = [bool(p) for p in batch.pinned[row].tolist()]
            noise = random.Random(config.seed * 1_000_003 + span)
            for i, held in enumerate(pinned):
                if not held:
                    seed[i] = noise.randrange(self.vocab_size)
            xargs = {
                "diffusion_seed_canvas": seed,
                "diffusion_pinned": [i for i, held in enumerate(pinned) if held],
                "diffusion_max_steps": config.max_steps,
            }
            bodies.append(self._body(prompt, self.canvas_length, xargs))
        return bodies

    def fill(
        self,
        request: InfillRequest,
        cancel: CancelFlag = None,
        on_step: Callable[[Any], None] | None = None,
    ) -> InfillResult:
        """Fill the hole on the server; an empty cancelled result when `cancel` was
        set before every answer came (the connections are closed)."""
        stale = cancel_check(cancel)
        config = request.config or self.config
        if config.decoding == "floor":
            raise BackendError(
                "vllm serves diffusion decoding only: floor decoding (committed "
                "rows read causally) needs the engine in-process or `infill serve`"
            )
        t0 = time.perf_counter()
        batch = self.plan(request)
        bodies = self.request_bodies(request, batch)
        t1 = time.perf_counter()
        answers = None if stale() else self._post_all(bodies, stale)
        t2 = time.perf_counter()
        if answers is None:
            return InfillResult.stopped(0, Timings(_ms(t0, t1), 0.0, _ms(t1, t2)))
        candidates = ranked(
            self._candidate(batch, row, answer) for row, answer in enumerate(answers)
        )
        timings = Timings(_ms(t0, t1), 0.0, _ms(t1, t2), _ms(t2, time.perf_counter()))
        result = InfillResult.best_of(candidates, config.max_steps, timings)
        return rank(result, request.validate)

    def warm(self, request: InfillRequest, cancel: CancelFlag = None) -> int:
        """Nothing: vLLM's own prefix cache keeps what it keeps."""
        return 0

    def _body(
        self,
        prompt: list[int],
        max_tokens: int,
        xargs: dict[str, Any],
        read_canvas: bool = True,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens}
        if self.model:
            body["model"] = self.model
        if read_canvas:
            body |= {
                "ignore_eos": True,
                "return_token_ids": True,
                "logprobs": 0,
                "return_tokens_as_token_ids": True,
            }
        body["vllm_xargs"] = xargs
        return body

    def _post_all(
        self, bodies: list[dict[str, Any]], stale: Callable[[], bool]
    ) -> list[dict[str, Any]] | None:
        """POST every body at once; None when `stale` became true first. The first
        failure closes the other connections and is raised."""
        answers: list[dict[str, Any] | None] = [None] * len(bodies)
        errors: list[Exception] = []
        failed = threading.Event()

        def stop() -> bool:
            return failed.is_set() or stale()

        def post(i: int) -> None:
            try:
                answers[i] = call(self.endpoint, bodies[i], self.timeout_s, stop)
            except Exception as exc:  # raised below, in the caller's thread
                errors.append(exc)
                failed.set()

        workers = [
            threading.Thread(target=post, args=(i,), daemon=True, name="infill-vllm")
            for i in range(1, len(bodies))
        ]
        for worker in workers:
            worker.start()
        post(0)
        for worker in workers:
            worker.join()
        if stale():
            return None
        if errors:
            raise errors[0]
        if any(answer is None for answer in answers):
            return None
        return [answer for answer in answers if answer is not None]

    def _candidate(
        self, batch: CanvasBatch, row: int, answer: dict[str, Any]
    ) -> Candidate:
        """The middle of one returned canvas: its span positions up to the first
        end-of-span token. What came back at pinned positions is not read."""
        span, start = batch.span_lengths[row], batch.span_start
        tokens, logprobs = canvas_tokens(answer, self.endpoint)
        window = tokens[start : start + span]
        kept = cut_at_end_of_span(window, self.end_ids)
        complete = len(kept) < len(window)
        if not complete and len(window) < span:
            raise BackendError(
                f"{self.endpoint} answered {len(tokens)} tokens, not a canvas of "
                f"{self.canvas_length}"
            )
        counted = len(kept) + (1 if complete else 0)
        score = 0.0
        if logprobs is not None and len(logprobs) >= start + counted:
            probs = [math.exp(lp) for lp in logprobs[start : start + counted]]
            score = sum(probs) / max(len(probs), 1)
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Candidate(text, span, score, complete, True, len(kept))

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def canvas_tokens(
    answer: dict[str, Any], url: str
) -> tuple[list[int], list[float] | None]:
    """The emitted token ids of a completion, and their log-probabilities where the
    answer has them: `choices[0].token_ids`, else the 'token_id:N' strings of
    `choices[0].logprobs.tokens`.

    Raises:
        BackendError: the answer holds no token ids.
    """
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict):
        raise BackendError(f"{url} answered no completion choice")
    logprobs = choice.get("logprobs")
    logprobs = logprobs if isinstance(logprobs, dict) else {}
    ids = choice.get("token_ids")
    if ids is None:
        strings = logprobs.get("tokens")
        if isinstance(strings, list) and all(
            isinstance(s, str) and s.startswith(TOKEN_ID_PREFIX) for s in strings
        ):
            try:
                ids = [int(s[len(TOKEN_ID_PREFIX) :]) for s in strings]
            except ValueError:
                ids = None
    if not isinstance(ids, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in ids
    ):
        raise BackendError(
            f"{url} answered no token ids (a server without return_token_ids?)"
        )
    values = logprobs.get("token_logprobs")
    scores = None
    if isinstance(values, list) and len(values) == len(ids):
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            scores = [float(v) for v in values]
    return ids, scores


def load_tokenizer(path: str) -> Any:
    """The served model's tokenizer, from a checkpoint directory or tokenizer path.

    Raises:
        BackendError: it does not load.
    """
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # any failure to load is the setting's, said in one line
        text = str(exc).strip()
        reason = text.splitlines()[0][:200] if text else type(exc).__name__
        raise BackendError(
            f"vllm backend: cannot load the tokenizer {path!r}: {reason}"
        ) from None


def _checkpoint_json(path: str, name: str) -> dict[str, Any]:
    """A JSON file of a local checkpoint directory; {} where there is none."""
    file = Path(path).expanduser() / name
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _denoise_defaults(path: str) -> DenoiseConfig:
    """Denoising defaults from the checkpoint's generation config, as the in-process
    engine takes them; DenoiseConfig's own where it has none (or a bad one)."""
    data = _checkpoint_json(path, "generation_config.json")
    sampler = data.get("sampler_config")
    if isinstance(sampler, dict):
        data = data | {"sampler_config": SimpleNamespace(**sampler)}
    try:
        return DenoiseConfig.from_generation_config(SimpleNamespace(**data))
    except (TypeError, ValueError):
        return DenoiseConfig()


def _ids(*values: Any) -> set[int]:
    """The ints among `values` (each an int, a list of ints or None)."""
    out: set[int] = set()
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            out.add(value)
        elif isinstance(value, list | tuple):
            out.update(v for v in value if isinstance(v, int))
    return out


def _first(*values: Any) -> int:
    """The first int among `values` (the last is the fallback)."""
    for value in values:
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise ValueError("no id")


def _status_and_reason(message: str) -> tuple[int | None, str]:
    """The status and the server's own words in a `wire.call` error ("URL answered
    HTTP 400: BODY"): a JSON error body's message where it has one."""
    head, sep, body = message.partition(" answered HTTP ")
    if not sep:
        return None, message
    code, _, text = body.partition(": ")
    try:
        status = int(code)
    except ValueError:
        return None, message
    try:
        data = json.loads(text)
    except ValueError:
        return status, text
    error = data.get("error", data) if isinstance(data, dict) else None
    reason = error.get("message") if isinstance(error, dict) else None
    return status, str(reason) if reason else text


def _ms(start: float, end: float) -> float:
    return (end - start) * 1000.0
