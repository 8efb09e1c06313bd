"""The `ray` backend's client: the project's own engine as a Ray Serve deployment
(`infill serve`), with the same semantics as in-process (pinned suffix, floor decoding,
healing), reached over HTTP.

The language server calls it exactly as it calls the in-process engine: `fill`, `warm`,
`config` and `placement.describe()`. Any failure (refused, timed out, an error status,
a malformed answer) raises `wire.BackendError` with one line that names the backend;
the server shows it once and answers empty until the backend answers again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from infill_engine.backends.wire import (
    DEFAULT_TIMEOUT_S,
    BackendError,
    RemotePlacement,
    call,
    rank,
    request_json,
    result_from_json,
)
from infill_engine.core.config import DenoiseConfig
from infill_engine.engine import (
    CancelFlag,
    InfillRequest,
    InfillResult,
    Timings,
    cancel_check,
    retried,
)


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
        stale = cancel_check(cancel)
        config = request.config or self.config
        result = self._once(request, stale)
        # The check cannot travel: a floor fill that fails it asks again for the
        # alternatives (the greedy row comes back too, and is dropped as seen).
        wider = config.with_overrides(
            alternatives=config.fallback_alternatives, fallback_alternatives=1
        )
        return retried(
            result,
            request,
            config,
            lambda _: self._once(dataclasses.replace(request, config=wider), stale),
        )

    def _once(self, request: InfillRequest, stale: Callable[[], bool]) -> InfillResult:
        """One call of the backend, its candidates ranked by `request.validate`."""
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
