"""A stand-in for vLLM's OpenAI-compatible server with DiffusionGemma structured reads,
for the `vllm` backend's contract tests (vLLM itself does not run here).

    server = VllmTestServer(model, tokenizer, canvas_length=64).start()
    engine = connect(f"vllm:{server.url}?tokenizer=DIR&canvas=64")
    server.stop()

`POST /v1/completions` keeps vLLM's rules for what it reads:

* `prompt` is a non-empty list of token ids, taken as they are; `model`, when given,
  must be the served name (HTTP 404 otherwise, as vLLM answers).
* `vllm_xargs` is checked as vLLM's `validate_diffusion_sampling_params` checks it
  (`vllm/utils/diffusion.py`), with HTTP 400 and the reason on a violation: a
  `diffusion_canvas_length` is a positive int no larger than the served canvas; a
  `diffusion_seed_canvas` is a list of ids in the vocabulary, exactly the request's
  canvas long (unchecked when the server has no canvas length, as vLLM without
  --diffusion-config); `diffusion_pinned` is a list of positions inside the canvas
  (negative ones never are) and needs a seed; `diffusion_max_steps` is a positive
  int; `diffusion_read_only` is 0 or 1 and implies `ignore_eos`. JSON booleans arrive
  as 0/1, as vLLM's `vllm_xargs` narrows them.
* The answer runs the tiny DiffusionGemma: the prompt is prefilled, the canvas starts
  from the seed (random ids without one) and is denoised for the step cap; each step
  takes the argmax everywhere and puts the seed back at pinned positions. The emitted
  canvas is the last step's argmax at every position, pinned ones included, so what
  comes back there is the model's guess, not the seed (as vLLM emits it). Without
  `ignore_eos` the output ends at its first EOS (kept); it is cut to `max_tokens`.
* `choices[0].token_ids` with `return_token_ids`; `choices[0].logprobs` with `logprobs`
  (tokens as 'token_id:N' with `return_tokens_as_token_ids`, and their log-probs).

`legacy=True` is a build without the feature: it ignores every diffusion field and
answers from a random, unpinned canvas.

For the tests: `requests` holds every body received; `answer` (seed, pinned positions ->
canvas ids) replaces the model's output; `fail` = (status, body) answers that instead;
`delay` waits before answering; `gone` lists requests whose client had left by then;
`responses` holds every answer sent, `steps_run` the steps each denoising ran.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from infill_engine.core.denoiser import DiffusionGemmaDenoiser

SERVED_NAME = "tiny-diffusiongemma"
UNCONFIGURED_CANVAS = 32  # vLLM's canvas without --diffusion-config


class Refused(Exception):
    """A request vLLM would refuse: (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class VllmTestServer:
    """The server; `start` serves it on a free local port (`url`)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        canvas_length: int | None = 64,
        legacy: bool = False,
        default_steps: int = 8,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.canvas_length = canvas_length
        self.legacy = legacy
        self.default_steps = default_steps
        self.vocab_size = int(model.config.text_config.vocab_size)
        self.eos_id = int(tokenizer.eos_token_id)
        self.denoiser = DiffusionGemmaDenoiser(model)
        self.requests: list[Any] = []
        self.responses: list[dict[str, Any]] = []
        self.steps_run: list[int] = []
        self.answer: Callable[[list[int], list[int]], list[int]] | None = None
        self.fail: tuple[int, bytes] | None = None
        self.delay = 0.0
        self.gone: list[str] = []
        self._lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._http is not None, "not started"
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> VllmTestServer:
        handler = type("Handler", (_Handler,), {"app": self})
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def complete(self, body: Any) -> dict[str, Any]:
        """The answer to a `/v1/completions` body.

        Raises:
            Refused: what vLLM would refuse, with its status.
        """
        if not isinstance(body, dict):
            raise Refused(400, "the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != SERVED_NAME:
            raise Refused(404, f"The model `{model}` does not exist.")
        prompt = body.get("prompt")
        if not (
            isinstance(prompt, list)
            and prompt
            and all(_is_int(t) and 0 <= t < self.vocab_size for t in prompt)
        ):
            raise Refused(400, "prompt must be a non-empty list of token ids")
        max_tokens = body.get("max_tokens", 16)
        if not (_is_int(max_tokens) and max_tokens > 0):
            raise Refused(400, "max_tokens must be a positive integer")
        xargs = body.get("vllm_xargs") or {}
        if not isinstance(xargs, dict):
            raise Refused(400, "vllm_xargs must be an object")
        xargs = {key: _narrow(value) for key, value in xargs.items()}
        ignore_eos = bool(body.get("ignore_eos", False))
        if self.legacy:  # a build that does not know the fields ignores them
            width, seed, pinned = self.canvas_length or UNCONFIGURED_CANVAS, None, []
            steps = self.default_steps
        else:
            width, seed, pinned, steps, read_only = self.check(xargs)
            if read_only:
                ignore_eos = True
                max_tokens = min(max_tokens, width)
        if self.answer is not None:
            canvas = list(self.answer(list(seed or []), pinned))
            logprobs = [-0.1] * len(canvas)
        else:
            canvas, logprobs = self.denoise(prompt, width, seed, pinned, steps)
            self.steps_run.append(steps)
        emitted = canvas[:max_tokens]
        if not ignore_eos and self.eos_id in emitted:
            emitted = emitted[: emitted.index(self.eos_id) + 1]
        choice: dict[str, Any] = {
            "index": 0,
            "text": self.tokenizer.decode(emitted, skip_special_tokens=True),
            "finish_reason": "length" if len(emitted) == max_tokens else "stop",
        }
        if body.get("return_token_ids"):
            choice["token_ids"] = emitted
        if body.get("logprobs") is not None:
            as_ids = bool(body.get("return_tokens_as_token_ids"))
            choice["logprobs"] = {
                "tokens": [
                    f"token_id:{t}" if as_ids else self.tokenizer.decode([t])
                    for t in emitted
                ],
                "token_logprobs": logprobs[: len(emitted)],
            }
        return {
            "object": "text_completion",
            "model": SERVED_NAME,
            "choices": [choice],
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": len(emitted),
                "total_tokens": len(prompt) + len(emitted),
            },
        }

    def check(
        self, xargs: dict[str, Any]
    ) -> tuple[int, list[int] | None, list[int], int, bool]:
        """The diffusion fields, checked as vLLM checks them: (canvas width, seed,
        pinned positions, step cap, read only).

        Raises:
            Refused: HTTP 400 with the rule the request broke.
        """

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise Refused(400, message)

        width = xargs.get("diffusion_canvas_length")
        if width is not None:
            need(
                _is_int(width)
                and width > 0
                and (self.canvas_length is None or width <= self.canvas_length),
                "diffusion_canvas_length must be a positive integer no larger than "
                "the served canvas.",
            )
        expected = width or self.canvas_length
        seed = xargs.get("diffusion_seed_canvas")
        if seed is not None:
            need(
                isinstance(seed, list) and all(_is_int(t) for t in seed),
                "diffusion_seed_canvas must be a list of token ids.",
            )
            need(
                all(0 <= t < self.vocab_size for t in seed),
                f"diffusion_seed_canvas ids must be in [0, {self.vocab_size}).",
            )
            need(
                expected is None or len(seed) == expected,
                f"diffusion_seed_canvas must hold exactly {expected} ids, "
                f"got {len(seed)}.",
            )
        pins = xargs.get("diffusion_pinned")
        if pins is not None:
            need(
                isinstance(pins, list) and all(_is_int(p) for p in pins),
                "diffusion_pinned must be a list of canvas positions.",
            )
            need(seed is not None, "diffusion_pinned needs a diffusion_seed_canvas.")
            need(
                all(p >= 0 and (expected is None or p < expected) for p in pins),
                "diffusion_pinned positions must lie inside the canvas.",
            )
        steps = xargs.get("diffusion_max_steps")
        if steps is not None:
            need(
                _is_int(steps) and steps > 0,
                "diffusion_max_steps must be a positive integer.",
            )
        read_only = xargs.get("diffusion_read_only")
        if read_only is not None:
            need(
                _is_int(read_only) and read_only in (0, 1),
                "diffusion_read_only must be a boolean (or 0/1).",
            )
        canvas = expected or UNCONFIGURED_CANVAS
        if seed is not None and len(seed) != canvas:
            raise Refused(500, f"a seed canvas of {len(seed)} ids on a {canvas} canvas")
        return (
            canvas,
            seed,
            sorted(set(pins or [])),
            steps or self.default_steps,
            bool(read_only),
        )

    def denoise(
        self,
        prompt: list[int],
        width: int,
        seed: list[int] | None,
        pinned: list[int],
        steps: int,
    ) -> tuple[list[int], list[float]]:
        """The emitted canvas and each token's log-probability: `steps` argmax steps
        from the seed, pinned positions put back to the seed after each."""
        with self._lock, torch.inference_mode():
            if seed is None:
                gen = torch.Generator().manual_seed(len(self.requests))
                start = torch.randint(0, self.vocab_size, (1, width), generator=gen)
            else:
                start = torch.tensor([seed], dtype=torch.long)
            held = torch.zeros(1, width, dtype=torch.bool)
            held[0, pinned] = True
            state = self.denoiser.prefill(torch.tensor([prompt]), 1, width)
            canvas, logits = start.clone(), None
            window = slice(0, width)
            for _ in range(steps):
                logits = self.denoiser(canvas, logits, state, window)
                argmax = logits.argmax(-1)
                canvas = torch.where(held, start, argmax)
            assert logits is not None
            logp = torch.log_softmax(logits.float(), -1)
            chosen = logp.gather(-1, argmax[..., None])[0, :, 0]
            return argmax[0].tolist(), chosen.tolist()


class _Handler(BaseHTTPRequestHandler):
    app: VllmTestServer

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        app = self.app
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        app.requests.append(body)
        if app.delay:
            time.sleep(app.delay)
            if self._client_left():
                app.gone.append(self.path)
                return
        if app.fail is not None:
            self._send(*app.fail)
            return
        if self.path != "/v1/completions":
            self._send(404, b'{"detail": "Not Found"}')
            return
        try:
            answer = app.complete(body)
        except Refused as exc:
            kind = "NotFoundError" if exc.status == 404 else "BadRequestError"
            error = {"message": str(exc), "type": kind, "code": exc.status}
            self._send(exc.status, json.dumps({"error": error}).encode())
            return
        app.responses.append(answer)
        self._send(200, json.dumps(answer).encode())

    def _client_left(self) -> bool:
        self.connection.setblocking(False)
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            self.connection.setblocking(True)

    def _send(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: Any) -> None:
        pass


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _narrow(value: Any) -> Any:
    """vLLM's `vllm_xargs` typing: JSON booleans become 0/1."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list):
        return [_narrow(v) for v in value]
    return value
