"""Remote backends: the engine served by another process, reached over HTTP.

    engine = remote.connect("ray:http://gpu-box:8000/infill")

The language server calls a backend exactly as it calls the in-process engine: `fill`,
`warm`, `config` and `placement.describe()` (`RemoteEngine`). A request travels as JSON
(`request_json`) and its result comes back as JSON (`result_from_json`). The one part
of a request that cannot travel, `validate` (a Python check of a candidate's text), is
applied here, to the candidates the backend returns, and ranks them as the engine would.

Kinds (`infill.backend` is `local` or `KIND:URL`):

* `ray`: the project's own engine as a Ray Serve deployment (`infill serve`), with the
  same semantics as in-process: pinned suffix, self-conditioning, readout shift.
* `vllm`: a DiffusionGemma checkpoint served by vLLM's OpenAI-compatible server, the
  canvas seeded and pinned by this client (`infill_engine.backends.vllm_client`).

Cancellation crosses the network: a stale request closes its connection, which Ray
Serve sees as a cancelled request; a request still queued there is dropped, and a
running one stops at its next denoising step. Any failure (refused, timed out, an error
status, a malformed answer) raises `BackendError` with one line that names the backend;
the language server shows it once and answers empty until the backend answers again.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from infill_engine.backends.urls import parse_backend
from infill_engine.core.config import DenoiseConfig
from infill_engine.engine import (
    CancelFlag,
    Candidate,
    InfillRequest,
    InfillResult,
    Timings,
    _as_callable,
)

if TYPE_CHECKING:
    from infill_engine.backends.vllm_client import VllmEngine

DEFAULT_TIMEOUT_S = 30.0
POLL_S = 0.01  # how often a waiting request looks at its cancel flag


class BackendError(Exception):
    """A remote backend failed; the message is one line, for the user."""


def request_json(request: InfillRequest) -> dict[str, Any]:
    """What travels of a request: its texts, span lengths and settings."""
    return {
        "prefix": request.prefix,
        "suffix": request.suffix,
        "span_lengths": (
            None if request.span_lengths is None else list(request.span_lengths)
        ),
        "config": None if request.config is None else asdict(request.config),
        "single_line": request.single_line,
    }


def request_from_json(data: dict[str, Any]) -> InfillRequest:
    """The request `request_json` wrote (no `validate`: it cannot travel).

    Raises:
        ValueError: a field is missing or has the wrong type.
    """
    try:
        prefix, suffix = data["prefix"], data["suffix"]
        spans = data.get("span_lengths")
        config = data.get("config")
    except (KeyError, TypeError) as exc:
        raise ValueError(f"a request needs prefix and suffix ({exc})") from None
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise ValueError("prefix and suffix must be strings")
    if spans is not None and not (
        isinstance(spans, list) and all(isinstance(s, int) and s > 0 for s in spans)
    ):
        raise ValueError("span_lengths must be a list of positive integers")
    if config is not None:
        if not isinstance(config, dict):
            raise ValueError("config must be an object")
        known = {f.name for f in fields(DenoiseConfig)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        config = DenoiseConfig(**config)
    single_line = data.get("single_line", False)
    if not isinstance(single_line, bool):
        raise ValueError("single_line must be true or false")
    return InfillRequest(prefix, suffix, spans, config, single_line=single_line)


def result_json(result: InfillResult) -> dict[str, Any]:
    """An engine result as JSON."""
    return asdict(result)


def result_from_json(data: dict[str, Any]) -> InfillResult:
    """The result `result_json` wrote.

    Raises:
        BackendError: the answer is not a result.
    """
    try:
        candidates = tuple(Candidate(**c) for c in data["candidates"])
        timings = Timings(**data["timings"])
        rest = {k: v for k, v in data.items() if k not in ("candidates", "timings")}
        return InfillResult(**rest, candidates=candidates, timings=timings)
    except (KeyError, TypeError) as exc:
        raise BackendError(f"the backend's answer is no fill result ({exc})") from None


def rank(result: InfillResult, validate: Callable[[str], bool] | None) -> InfillResult:
    """The result with `validate` applied to its candidates, ranked as the engine
    ranks them: validity, completeness, then the order they came in."""
    if validate is None or not result.candidates:
        return result
    # The candidates come best first; a stable sort keeps that order among equals
    # (confidence for diffusion rows, the rerank's for floor alternatives).
    checked = sorted(
        (replace(c, valid=bool(validate(c.text))) for c in result.candidates),
        key=lambda c: (c.valid, c.complete),
        reverse=True,
    )
    best = checked[0]
    return InfillResult(
        best.text,
        result.cancelled,
        result.steps,
        result.tokens_per_forward,
        best.span_length,
        best.score,
        tuple(checked),
        result.timings,
        result.prefilled_tokens,
    )


def call(
    url: str,
    body: dict[str, Any] | None,
    timeout_s: float,
    cancel: Callable[[], bool] = lambda: False,
) -> dict[str, Any] | None:
    """POST `body` (GET when None) as JSON and return the JSON answer; None when
    `cancel` became true first (the connection is closed, which the server sees).

    Raises:
        BackendError: refused, timed out, an error status or not JSON.
    """
    parts = urlsplit(url)
    factory = (
        http.client.HTTPSConnection
        if parts.scheme == "https"
        else http.client.HTTPConnection
    )
    conn = factory(parts.hostname or "", parts.port, timeout=timeout_s)
    path = parts.path or "/"
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            payload = None if body is None else json.dumps(body).encode("utf-8")
            headers = {"Content-Type": "application/json"} if payload else {}
            conn.request("GET" if body is None else "POST", path, payload, headers)
            response = conn.getresponse()
            outcome["status"] = response.status
            outcome["data"] = response.read()
        except Exception as exc:  # reported by the waiting thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True, name="infill-backend-call")
    worker.start()
    deadline = time.monotonic() + timeout_s + 1.0
    while worker.is_alive():
        worker.join(POLL_S)
        if cancel():
            _abort(conn)  # the server sees the client leave
            return None
        if time.monotonic() > deadline:
            _abort(conn)
            raise BackendError(f"no answer from {url} within {timeout_s:g} s")
    conn.close()
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, TimeoutError):
            raise BackendError(f"no answer from {url} within {timeout_s:g} s")
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise BackendError(f"cannot reach {url}: {reason}")
    status, data = outcome["status"], outcome["data"]
    text = data.decode("utf-8", "replace")
    if status != 200:
        first = text.strip().splitlines()[0][:200] if text.strip() else ""
        raise BackendError(f"{url} answered HTTP {status}: {first}")
    try:
        answer = json.loads(text)
    except ValueError:
        raise BackendError(f"{url} answered something that is not JSON") from None
    if not isinstance(answer, dict):
        raise BackendError(f"{url} answered JSON that is not an object")
    return answer


def _abort(conn: http.client.HTTPConnection) -> None:
    """Close a connection another thread is reading from. The socket's fd outlives
    `close` while the response reader holds it; `shutdown` ends it now, so the server
    sees the client leave."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    conn.close()


@dataclass(frozen=True)
class RemotePlacement:
    """Where a remote engine runs, as the status and benchmarks name it."""

    kind: str
    url: str
    device: str = ""

    def describe(self) -> str:
        """E.g. 'ray http://127.0.0.1:8000/infill (cpu/bfloat16)'."""
        where = f" ({self.device})" if self.device else ""
        return f"{self.kind} {self.url}{where}"


class RemoteEngine:
    """The engine's API, answered by an `infill serve` deployment at `url`."""

    def __init__(
        self, kind: str, url: str, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        """Connect: ask the backend's health endpoint what it serves.

        Raises:
            BackendError: the backend does not answer, or not as one of ours.
        """
        self.kind, self.url, self.timeout_s = kind, url, timeout_s
        health = call(f"{url}/health", None, min(timeout_s, 10.0))
        assert health is not None  # nothing cancels the health check
        try:
            self.config = DenoiseConfig(**health["config"])
            self.model = str(health.get("model", ""))
            self.canvas_length = int(health["canvas_length"])
            device = str(health.get("device", ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendError(
                f"{url}/health is not an infill backend's answer ({exc})"
            ) from None
        self.placement = RemotePlacement(kind, url, device)

    def fill(
        self,
        request: InfillRequest,
        cancel: CancelFlag = None,
        on_step: Callable[[Any], None] | None = None,
    ) -> InfillResult:
        """Fill the hole on the backend; an empty cancelled result when `cancel` was
        set before the answer came."""
        stale = _as_callable(cancel)
        started = time.perf_counter()
        answer = call(self.url, request_json(request), self.timeout_s, stale)
        if answer is None:
            elapsed = (time.perf_counter() - started) * 1000
            return InfillResult.stopped(0, Timings(denoise_ms=elapsed))
        return rank(result_from_json(answer), request.validate)

    def warm(self, request: InfillRequest, cancel: CancelFlag = None) -> int:
        """Nothing: the replica that would keep the prefill is not the one the next
        request is routed to, so a remote backend does not prefill ahead."""
        return 0


def connect(
    value: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> RemoteEngine | VllmEngine:
    """The remote engine `infill.backend` names (`KIND:URL`).

    Raises:
        ValueError: not a remote backend setting.
        BackendError: the backend does not answer.
    """
    parsed = parse_backend(value)
    if parsed is None:
        raise ValueError(f"{value!r} is the local engine, not a remote backend")
    kind, url = parsed
    if kind == "vllm":
        from infill_engine.backends.vllm_client import VllmEngine

        return VllmEngine(url, timeout_s)
    return RemoteEngine(kind, url, timeout_s)
