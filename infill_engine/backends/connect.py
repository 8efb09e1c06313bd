"""Which engine answers: `connect("KIND:URL")` returns the remote backend the
`infill.backend` setting names, as a `Backend` the language server calls the way it
calls the in-process `InfillEngine`.

    engine = connect("ray:http://gpu-box:8000/infill")

Kinds: `ray` (`infill serve`, `ray_client`) and `vllm` (a DiffusionGemma checkpoint
served by vLLM, `vllm_client`). Only this module knows both clients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from infill_engine.backends.ray_client import RemoteEngine
from infill_engine.backends.urls import parse_backend
from infill_engine.backends.vllm_client import VllmEngine
from infill_engine.backends.wire import DEFAULT_TIMEOUT_S, BackendError
from infill_engine.core.config import DenoiseConfig
from infill_engine.engine import CancelFlag, InfillRequest, InfillResult

__all__ = ["Backend", "BackendError", "connect"]


class Placement(Protocol):
    """Where an engine runs, as the status and benchmarks name it."""

    def describe(self) -> str: ...


class Backend(Protocol):
    """What the language server calls: `InfillEngine` and every remote client."""

    config: DenoiseConfig

    @property
    def placement(self) -> Placement: ...

    def fill(
        self,
        request: InfillRequest,
        cancel: CancelFlag = None,
        on_step: Callable[[Any], None] | None = None,
    ) -> InfillResult: ...

    def warm(self, request: InfillRequest, cancel: CancelFlag = None) -> int: ...


def connect(value: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Backend:
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
        return VllmEngine(url, timeout_s)
    return RemoteEngine(kind, url, timeout_s)
