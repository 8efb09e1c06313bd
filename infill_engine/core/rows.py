"""Which canvas rows a low-rank adapter may change, set for a block of code.

Training for the left-to-right floor limits the adapter to the rows that hold noise or
the suffix: the rows the floor reads stay the base's own (`model.lora.LoRALinear`
reads the mask set here). The denoiser runs its last layer on a few rows only and
narrows the mask to them (`narrowed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

OFF = torch.zeros(0, dtype=torch.bool)  # no row: the base's own forward
_ROWS: ContextVar[torch.Tensor | None] = ContextVar("adapter_rows", default=None)


def current() -> torch.Tensor | None:
    """The (B, L) mask in force, `OFF`, or None (every row)."""
    return _ROWS.get()


@contextmanager
def adapter_rows(mask: torch.Tensor) -> Iterator[None]:
    """Within this block an adapter changes only the rows where `mask` (B, L) is
    true, of inputs (B, L, features); an input of another shape is an error."""
    token = _ROWS.set(mask)
    try:
        yield
    finally:
        _ROWS.reset(token)


@contextmanager
def without_adapter() -> Iterator[None]:
    """Within this block every adapter is off: the base's own forward."""
    token = _ROWS.set(OFF)
    try:
        yield
    finally:
        _ROWS.reset(token)


@contextmanager
def narrowed(select: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within this block the mask in force (if any) is `select(mask)`: the rows of
    an input that holds only some of the canvas's positions."""
    mask = _ROWS.get()
    if mask is None or mask is OFF:
        yield
        return
    token = _ROWS.set(select(mask))
    try:
        yield
    finally:
        _ROWS.reset(token)
