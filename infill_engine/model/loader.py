"""Load a DiffusionGemma checkpoint and its tokenizer once, with one clear error if not.

A local directory is checked before transformers sees it (config, weights, tokenizer),
so a missing, partial or corrupt directory gives a `ModelLoadError` that names the file
and the fix, instead of a long traceback.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infill_engine.core.config import DenoiseConfig
from infill_engine.model.device import Placement, resolve

# The default model: Gemma 3 270M converted and adapted by `infill model build`. Bump
# the version when the conversion or the shipped adapter changes: a new one is built.
DEFAULT_MODEL_NAME = "gemma3-270m-infill-v1"
BUILD_HINT = "run `infill model build` (`make setup` does)"
# Optional engine defaults shipped beside a checkpoint, e.g. the longest prompt it saw.
ENGINE_DEFAULTS_FILE = "infill.json"
ENGINE_DEFAULT_KEYS = {
    "max_prompt_tokens": int,
    "span_lengths": list,
    "denoise": dict,
    "canvas_length": int,
    "cpu_bf16": bool,  # read by the loader: bf16 on CPUs with AVX-512 BF16 too
    "heal_last_token": bool,
}
MODEL_CLASS = "DiffusionGemmaForBlockDiffusion"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what is wrong and how to fix
    it."""


@dataclass
class LoadedModel:
    """A model resident on its device, with its tokenizer."""

    model: Any
    tokenizer: Any
    placement: Placement
    source: str
    engine_defaults: dict[str, Any] = field(default_factory=dict)


def cache_dir() -> Path:
    """Where built models live: $INFILL_CACHE, else diffusion-infill in the XDG cache
    folder ($XDG_CACHE_HOME, else ~/.cache)."""
    if os.environ.get("INFILL_CACHE"):
        return Path(os.environ["INFILL_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec: a relative path is invalid and is ignored.
    root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return root / "diffusion-infill"


def default_model() -> str:
    """The directory `infill model build` writes the default model to."""
    return str(cache_dir() / DEFAULT_MODEL_NAME)


def load(
    name_or_path: str | None = None,
    device: str = "auto",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a `DiffusionGemmaForBlockDiffusion` and its tokenizer from a directory or
    hub id.

    Args:
        name_or_path: local directory or hub id; None means the default model
            (built by `infill model build`).
        device: 'auto', 'cuda' or 'cpu'.
        trust_remote_code: allow code from the checkpoint to run (off unless asked).

    Raises:
        ModelLoadError: with one message naming what is missing or broken.
    """
    source, path = locate(name_or_path)
    local = path.is_dir()
    defaults = engine_defaults(path) if local else {}
    try:
        placement = resolve(device, prefer_bf16=defaults.pop("cpu_bf16", False))
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion
    from transformers.utils import logging as hf_logging

    # Progress bars and load reports go to stderr, which editors show as the server log.
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(path) if local else source, trust_remote_code=trust_remote_code
        )
        model = DiffusionGemmaForBlockDiffusion.from_pretrained(
            str(path) if local else source,
            dtype=placement.dtype,
            trust_remote_code=trust_remote_code,
        )
    except (
        Exception
    ) as exc:  # transformers raises many types; the user needs one message
        first = (
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        )
        where = "directory" if local else "hub id (no network? pass a local directory)"
        raise ModelLoadError(
            f"could not load model from {where} '{source}': {first}"
        ) from exc
    if local:
        restore_full_attention_values(model, path)
    from infill_engine.model.convert import skip_switched_off_experts

    skip_switched_off_experts(model)  # the default model's: exactly zero, not free
    model.to(placement.device).eval()  # type: ignore[arg-type]
    return LoadedModel(model, tokenizer, placement, source, defaults)


def locate(name_or_path: str | None) -> tuple[str, Path]:
    """The model a name means, (source, local path), checked before anything loads:
    None is the default model; a directory must hold a complete checkpoint; anything
    else not shaped like a path is a hub id.

    Raises:
        ModelLoadError: the default model is not built, or the directory is missing or
            incomplete.
    """
    source = name_or_path or default_model()
    path = Path(source).expanduser()
    if not name_or_path and not (path / "config.json").is_file():
        raise ModelLoadError(f"the default model is not built yet: {BUILD_HINT}")
    if path.is_dir():
        check_directory(path)
    elif _looks_like_path(source):
        raise ModelLoadError(f"model directory not found: {source}")
    return source, path


def engine_defaults(path: Path) -> dict[str, Any]:
    """Engine settings a checkpoint ships in `infill.json`; unknown keys are errors."""
    file = path / ENGINE_DEFAULTS_FILE
    if not file.is_file():
        return {}
    raw = _json_object(file)
    for key, value in raw.items():
        kind = ENGINE_DEFAULT_KEYS.get(key)
        if kind is None or not isinstance(value, kind):
            raise ModelLoadError(
                f"{file}: {key!r} is not one of {sorted(ENGINE_DEFAULT_KEYS)} "
                "with the right type"
            )
    try:  # denoising overrides are checked by the config that will hold them
        DenoiseConfig(**raw.get("denoise", {}))
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{file}: 'denoise': {exc}") from None
    return raw


def restore_full_attention_values(model: Any, path: Path) -> None:
    """Load the value projections a converted checkpoint keeps for its full-attention
    layers (`convert.attach_full_attention_values`); transformers' loader skips them,
    since DiffusionGemma's full-attention layers have none of their own."""
    import torch
    from safetensors import safe_open

    from infill_engine.model.convert import (
        attach_full_attention_values,
        full_attention_value_keys,
    )

    wanted = set(full_attention_value_keys(model))
    found: dict[str, Any] = {}
    for shard in _weight_files(path):
        with safe_open(str(shard), framework="pt") as handle:
            for key in wanted & set(handle.keys()):
                found[key] = handle.get_tensor(key)
    if not found:
        return
    if found.keys() != wanted:
        raise ModelLoadError(
            f"{path} has value projections for some full-attention layers only "
            f"(missing {sorted(wanted - found.keys())[0]})"
        )
    attach_full_attention_values(model)
    with torch.no_grad():
        for key, tensor in found.items():
            model.get_parameter(key).copy_(tensor)


def check_directory(path: Path) -> None:
    """Raise `ModelLoadError` unless `path` holds a complete DiffusionGemma
    checkpoint."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path} has no config.json: not a model directory")
    config = _json_object(config_file)
    kinds = [config.get("model_type")] + list(config.get("architectures") or [])
    if "diffusion_gemma" not in kinds and MODEL_CLASS not in kinds:
        raise ModelLoadError(
            f"{path} holds a '{config.get('model_type')}' model; "
            f"this engine needs a {MODEL_CLASS} checkpoint"
        )
    for shard in _weight_files(path):
        _check_safetensors(shard)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{path} has no tokenizer (expected one of {', '.join(TOKENIZER_FILES)})"
        )


def _json_object(file: Path) -> dict[str, Any]:
    """A JSON object read from `file`, or `ModelLoadError` saying what is wrong."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{file} does not hold a JSON object")
    return value


def _weight_files(path: Path) -> list[Path]:
    single = path / "model.safetensors"
    index = path / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{index} is not a valid index: {exc}") from None
        shards = sorted({path / name for name in weight_map.values()})
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise ModelLoadError(
                f"{path} is missing weight shards: {', '.join(missing)}"
            )
        return shards
    raise ModelLoadError(f"{path} has no weights (model.safetensors or its index)")


def _check_safetensors(file: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            handle.keys()
    except Exception as exc:
        raise ModelLoadError(
            f"{file} is truncated or corrupt ({exc}); copy or download it again"
        ) from None


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "~", "/")) or os.sep in name and name.count("/") != 1
