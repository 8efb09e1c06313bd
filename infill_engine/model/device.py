"""Device, dtype and CPU threads, decided once.

bf16 on CUDA. On CPU, bf16 where the processor has AMX tiles (its bf16 matrix units:
one decoder step of the earlier 8M model took 25 ms in bf16 against 37 ms in float32 on
such a CPU), float32 elsewhere. INFILL_CPU_DTYPE (float32 or bfloat16) overrides the
choice.

CPUs with AVX-512 BF16 dot products but no AMX stay on float32 by default, for memory:
there bf16 is faster (on an AMD EPYC, whole line fills took 69 against 96 ms, with 41 of
42 fills the same), but oneDNN, which runs bf16 matrix products, keeps compiled kernels
for every matrix shape it meets, and prompts and expert batches come in every length.
Prefilling prompts of random lengths grew the process from 400 to 1,009 MiB before it
levelled off (float32: 400 throughout); capping oneDNN's caches to keep it at 439 MiB
lost most of the speed (line fills 63-79 ms, float32 69-77).

A checkpoint whose weights dominate its time and memory asks for bf16 there itself
(`cpu_bf16` in its `infill.json`), and whenever the CPU runs bf16 oneDNN's caches are
capped (`cap_kernel_caches`), which costs such a model nothing. The default model does:
on this AMD EPYC its cold line fills took 0.64 s in bf16 against 2.2 s in float32, and
its language server held 760 MiB through 12 load-test bursts (float32: 960). A user who
would rather spend memory on a small model's speed sets INFILL_CPU_DTYPE=bfloat16 and
raises ONEDNN_PRIMITIVE_CACHE_CAPACITY and LRU_CACHE_CAPACITY, which the cap leaves
alone.

On CPU, glibc is told to keep freed blocks for reuse (`keep_freed_memory`): each
denoising step allocates and frees temporaries of window x vocabulary floats, and by
default glibc hands those back to the system and faults fresh pages in for the next
one (alternating runs of whole fills, medians of 3 pairs: block spans 142 -> 127 ms,
lines 82 -> 79 ms).

On CPU the model runs with half the cores (at least one) by default: an editor, its
language server and the model share the machine, and small models lose far more to
threads waiting on a busy core than they gain from a second one (measured: one decoder
step of a tiny model took 3 ms on one thread and 150 ms on two with the other core
busy).

torch is imported inside the functions that use it: the command lines offer
DEVICE_CHOICES as they parse their flags, and `--help` must not wait seconds for torch.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cuda", "cpu")
# glibc's mallopt parameters (malloc.h) and the values set for them.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 64 << 20  # blocks up to this size come from the heap
TRIM_THRESHOLD_BYTES = 256 << 20  # the heap keeps up to this much free memory
CPU_DTYPES = ("float32", "bfloat16")  # names of torch dtypes
KERNEL_CACHE_CAPACITY = 64


@dataclass(frozen=True)
class Placement:
    """Where the model lives and in which dtype."""

    device: torch.device
    dtype: torch.dtype
    threads: int = 0  # CPU intra-op threads (0 on CUDA)

    def describe(self) -> str:
        """A short label for logs and benchmark output, e.g. 'cpu/float32'."""
        import torch

        name = self.device.type
        if name == "cuda":
            name = f"cuda:{torch.cuda.get_device_name(self.device)}"
        return f"{name}/{str(self.dtype).removeprefix('torch.')}"


def default_threads() -> int:
    """Half the CPU cores, at least one; INFILL_THREADS overrides."""
    env = os.environ.get("INFILL_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 2) // 2)


def has_amx() -> bool:
    """Whether the CPU has AMX tiles (bf16 matrix units)."""
    import torch

    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def has_bf16_dot_products() -> bool:
    """Whether the CPU has bf16 dot products (AVX-512 BF16) or AMX tiles."""
    import torch

    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    return bool(avx512_bf16()) or has_amx()


def cpu_dtype(prefer_bf16: bool = False) -> torch.dtype:
    """bf16 on CPUs with AMX tiles, else float32; INFILL_CPU_DTYPE overrides.

    `prefer_bf16` (a checkpoint's `cpu_bf16`): bf16 also on CPUs with AVX-512 BF16.

    Raises:
        ValueError: INFILL_CPU_DTYPE names another dtype.
    """
    import torch

    env = os.environ.get("INFILL_CPU_DTYPE", "")
    if env:
        if env not in CPU_DTYPES:
            raise ValueError(
                f"INFILL_CPU_DTYPE must be one of {', '.join(CPU_DTYPES)} (got {env!r})"
            )
        dtype: torch.dtype = getattr(torch, env)
        return dtype
    bf16 = has_bf16_dot_products() if prefer_bf16 else has_amx()
    return torch.bfloat16 if bf16 else torch.float32


def cap_kernel_caches() -> None:
    """Cap oneDNN's caches of compiled bf16 kernels (`KERNEL_CACHE_CAPACITY` entries),
    unless the environment sets them: uncapped, the default model's language server
    grew from 651 to 1,280 MiB over 12 load-test bursts, still growing; capped it
    stayed at 745-767 MiB, and line fills were as fast (cold 642 against 692 ms).
    oneDNN reads these when it first runs, so this must happen before any bf16 work.
    """
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(name, str(KERNEL_CACHE_CAPACITY))


def keep_freed_memory() -> bool:
    """Have glibc serve blocks of up to 64 MiB from its heap and keep up to 256 MiB
    of freed memory there, instead of mapping fresh pages for each block and unmapping
    them when it is freed. Returns whether it applied (False without glibc's
    `mallopt`)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mapped = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    return bool(mapped and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def resolve(
    device: str = "auto", threads: int | None = None, prefer_bf16: bool = False
) -> Placement:
    """Turn 'auto' | 'cuda' | 'cpu' (or 'cuda:N') into a placement.

    On CPU this also sets torch's intra-op threads (`threads`, or `default_threads()`)
    and keeps freed memory for reuse (`keep_freed_memory`); `prefer_bf16` goes to
    `cpu_dtype`.

    Raises:
        ValueError: unknown name, or CUDA asked for where none is available.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
        return Placement(torch.device(device), torch.bfloat16)
    if device == "cpu":
        count = threads or default_threads()
        torch.set_num_threads(count)
        keep_freed_memory()
        dtype = cpu_dtype(prefer_bf16)
        if dtype == torch.bfloat16:
            cap_kernel_caches()
        return Placement(torch.device("cpu"), dtype, count)
    raise ValueError(
        f"device must be one of {', '.join(DEVICE_CHOICES)} (got {device!r})"
    )


def sync(placement: Placement) -> None:
    """Wait for queued GPU work, so timings measure work done rather than launched."""
    if placement.device.type == "cuda":
        import torch

        torch.cuda.synchronize(placement.device)
