"""What clients and the Ray Serve app share: a request and its result as JSON, one
HTTP call that a cancel flag can abort, the ranking of returned candidates, and the
one-line `BackendError` every backend raises.

The one part of a request that cannot travel, `validate` (a Python check of a
candidate's text), is applied by the client to the candidates a backend returns
(`rank`), as the engine would rank them. Cancellation crosses the network: a stale
request closes its connection, which the server sees as a cancelled request.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

from infill_engine.core.config import DenoiseConfig
from infill_engine.engine import (
    Candidate,
    InfillRequest,
    InfillResult,
    Timings,
    valid_first,
)

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
        "context": request.context,
        "context_tokens": request.context_tokens,
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
    context, context_tokens = data.get("context", ""), data.get("context_tokens", 0)
    if not isinstance(context, str):
        raise ValueError("context must be a string")
    if not isinstance(context_tokens, int) or context_tokens < 0:
        raise ValueError("context_tokens must be an integer >= 0")
    return InfillRequest(
        prefix,
        suffix,
        spans,
        config,
        single_line=single_line,
        context=context,
        context_tokens=context_tokens,
    )


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
    checked = valid_first(
        replace(c, valid=bool(validate(c.text))) for c in result.candidates
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
