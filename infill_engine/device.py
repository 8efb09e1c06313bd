"""Device and dtype, decided once: bf16 on CUDA, float32 on CPU."""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEVICE_CHOICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class Placement:
    """Where the model lives and in which dtype."""

    device: torch.device
    dtype: torch.dtype

    def describe(self) -> str:
        """A short label for logs and benchmark output, e.g. 'cpu/float32'."""
        name = self.device.type
        if name == "cuda":
            name = f"cuda:{torch.cuda.get_device_name(self.device)}"
        return f"{name}/{str(self.dtype).removeprefix('torch.')}"


def resolve(device: str = "auto") -> Placement:
    """Turn 'auto' | 'cuda' | 'cpu' (or 'cuda:N') into a placement.

    Raises:
        ValueError: unknown name, or CUDA asked for where none is available.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
        return Placement(torch.device(device), torch.bfloat16)
    if device == "cpu":
        return Placement(torch.device("cpu"), torch.float32)
    raise ValueError(
        f"device must be one of {', '.join(DEVICE_CHOICES)} (got {device!r})"
    )


def sync(placement: Placement) -> None:
    """Wait for queued GPU work, so timings measure work done rather than launched."""
    if placement.device.type == "cuda":
        torch.cuda.synchronize(placement.device)
