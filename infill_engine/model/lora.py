"""A low-rank adapter over DiffusionGemma's shared encoder/decoder layers.

DiffusionGemma's encoder and decoder are separate modules tied to the same weights, so
an adapter must change both the same way: each adapted projection is one `LoRALinear`
placed in both trees (a library that wraps module by module would adapt the decoder
alone, and the merged weights would then differ from the trained forward). The
projections that the conversion scaled by tiny factors (`v_proj`, `o_proj`) are left
alone: an update at their scale would be lost or explode.

Saved as safetensors: per adapted projection `layers.{i}.{name}.lora_a` (r, in) and
`.lora_b` (out, r), with the scale in the metadata. `merge_adapter` adds
`scale * b @ a` to the base weights, which is what the build does.

`adapter_rows(mask)` limits every adapter to some rows of the input (the noised span
slots and the suffix, when training for the left-to-right floor: the rows the floor
reads stay the base's), and `without_adapter()` turns them all off (the prompt's
prefill under that training).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infill_engine.core import rows as adapter_row_mask
from infill_engine.core.rows import adapter_rows, without_adapter

__all__ = ["adapter_rows", "without_adapter"]

TARGETS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


class LoRALinear(nn.Module):
    """`base(x) + scale * x @ a.T @ b.T`; `b` starts at zero, so it starts as `base`."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1 (got {rank})")
        self.base = base
        self.scale = alpha / rank
        dtype, device = base.weight.dtype, base.weight.device
        self.lora_a = nn.Parameter(
            torch.randn(rank, base.in_features, dtype=dtype, device=device)
            / math.sqrt(base.in_features)
        )
        self.lora_b = nn.Parameter(
            torch.zeros(base.out_features, rank, dtype=dtype, device=device)
        )

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (code that reads a projection's weight sees the base)."""
        return self.base.weight

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = adapter_row_mask.current()
        if rows is adapter_row_mask.OFF:
            return self.base(x)
        low = (x.to(self.lora_a.dtype) @ self.lora_a.T) @ self.lora_b.T * self.scale
        if rows is not None:
            if tuple(rows.shape) != tuple(x.shape[:-1]):
                raise ValueError(
                    f"adapter rows {tuple(rows.shape)} do not fit an input "
                    f"{tuple(x.shape)}"
                )
            low = low * rows.unsqueeze(-1).to(low.dtype)
        return self.base(x) + low.to(x.dtype)

    def delta(self) -> torch.Tensor:
        """(out, in) the change this adapter makes to the base weight."""
        return (self.lora_b @ self.lora_a) * self.scale


def add_adapter(model: Any, rank: int, alpha: float) -> dict[str, LoRALinear]:
    """Wrap every `TARGETS` projection of every layer in one shared `LoRALinear`.

    Every other parameter is frozen. Returns the adapters by name
    (`layers.{i}.{target}`).
    """
    for param in model.parameters():
        param.requires_grad_(False)
    decoder = model.model.decoder.layers
    encoder = model.model.encoder.language_model.layers
    adapters: dict[str, LoRALinear] = {}
    for i, (dec, enc) in enumerate(zip(decoder, encoder, strict=True)):
        for target in TARGETS:
            parent, name = target.split(".")
            base = getattr(getattr(dec, parent), name)
            lora = LoRALinear(base, rank, alpha)
            setattr(getattr(dec, parent), name, lora)
            setattr(getattr(enc, parent), name, lora)
            adapters[f"layers.{i}.{target}"] = lora
    return adapters


def save_adapter(
    adapters: dict[str, LoRALinear], path: Path, meta: dict[str, Any]
) -> None:
    """Write the adapters (bfloat16) and `meta` (JSON) to a safetensors file."""
    from safetensors.torch import save_file

    tensors = {}
    for name, lora in adapters.items():
        tensors[f"{name}.lora_a"] = lora.lora_a.detach().to(torch.bfloat16).contiguous()
        tensors[f"{name}.lora_b"] = lora.lora_b.detach().to(torch.bfloat16).contiguous()
    scales = {lora.scale for lora in adapters.values()}
    metadata = {"scale": str(scales.pop()), "meta": json.dumps(meta)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)


@torch.no_grad()
def load_adapter(adapters: dict[str, LoRALinear], path: Path) -> dict[str, Any]:
    """Load a saved adapter into `adapters` (to resume training it); returns the
    metadata it was saved with.

    Raises:
        ValueError: the file does not fit these adapters.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        keys = set(handle.keys())
        want = {f"{n}.lora_{p}" for n in adapters for p in "ab"}
        if keys != want:
            raise ValueError(f"{path} holds other adapters than this model's")
        for name, lora in adapters.items():
            for part in ("a", "b"):
                param = getattr(lora, f"lora_{part}")
                saved = handle.get_tensor(f"{name}.lora_{part}")
                if saved.shape != param.shape:
                    raise ValueError(
                        f"{path}: {name}.lora_{part} is {tuple(saved.shape)}, "
                        f"the model's {tuple(param.shape)}"
                    )
                param.copy_(saved.to(param.dtype))
    scale = float(metadata.get("scale", "nan"))
    if any(abs(lora.scale - scale) > 1e-6 for lora in adapters.values()):
        raise ValueError(f"{path} was saved with scale {scale}, not this adapter's")
    return json.loads(metadata.get("meta", "{}"))


@torch.no_grad()
def merge_adapter(model: Any, path: Path) -> dict[str, Any]:
    """Add a saved adapter's `scale * b @ a` to the model's (tied) base weights.

    Returns the metadata it was saved with.

    Raises:
        ValueError: the file does not fit this model.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        scale = float(metadata.get("scale", "nan"))
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    layers = model.model.decoder.layers
    for key in sorted(k for k in tensors if k.endswith(".lora_a")):
        name = key[: -len(".lora_a")]
        _, index, parent, proj = name.split(".")
        if int(index) >= len(layers) or f"{parent}.{proj}" not in TARGETS:
            raise ValueError(f"{path}: {name} is not a layer of this model")
        weight = getattr(getattr(layers[int(index)], parent), proj).weight
        a, b = tensors[key].float(), tensors[f"{name}.lora_b"].float()
        if (b.shape[0], a.shape[1]) != tuple(weight.shape):
            raise ValueError(f"{path}: {name} has shape {(b.shape[0], a.shape[1])}")
        weight += (b @ a * scale).to(weight.dtype)
    return json.loads(metadata.get("meta", "{}"))
