"""Shared fixtures: a tiny DiffusionGemma and tokenizer built in-process, never
downloaded."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

# One thread per process: the suite runs beside other work on two cores, and servers the
# end-to-end tests start read the same variable.
os.environ["INFILL_THREADS"] = "1"
torch.set_num_threads(1)

from infill_engine.model import configs, tokenizer  # noqa: E402


def _corpus() -> list[str]:
    """Real code to train the test tokenizer on: this project's own engine sources."""
    import infill_engine

    root = Path(inspect.getfile(infill_engine)).parent
    return [p.read_text(encoding="utf-8") for p in sorted(root.glob("*.py"))]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE with a few hundred tokens."""
    return tokenizer.train_tokenizer(_corpus(), vocab_size=400)


def build_tiny_model(tok, seed: int = 0, canvas_length: int = 64):
    """A randomly initialised two-layer DiffusionGemma with four experts."""
    torch.manual_seed(seed)
    from transformers import DiffusionGemmaForBlockDiffusion

    config = configs.tiny_config(len(tok), hidden_size=32, canvas_length=canvas_length)
    return DiffusionGemmaForBlockDiffusion(config).eval()


def build_decisive_model(tok, seed: int = 0):
    """A tiny model whose fill depends on its request alone, so batched fills can be
    checked against fills made alone: noised with a mask token (no random ids), and
    with sharp distributions. A random model's are nearly flat, so float rounding
    between batch shapes could swap two slots' entropy order (1 text of 120 differed;
    sharpened, 0 of 120). Decode it greedily."""
    model = build_tiny_model(tok, seed)
    model.config.mask_token_id = 5
    with torch.no_grad():
        model.model.decoder.norm.weight.mul_(50.0)
    return model


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    return build_tiny_model(tiny_tokenizer)


def checkpoint(model, tok, path: Path) -> Path:
    """`model` and `tok` saved with save_pretrained in `path`, a checkpoint dir."""
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, tiny_tokenizer) -> Path:
    """The tiny model as a checkpoint dir."""
    return checkpoint(tiny_model, tiny_tokenizer, tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    from infill_engine import InfillEngine

    return InfillEngine.load(str(tiny_model_dir), device="cpu", span_lengths=(8, 16))


def tiny_gemma3(vocab: int, seed: int = 0) -> Gemma3ForCausalLM:
    """Five sliding layers and a full one; norms away from their zero init, and token
    embeddings of one RMS, as the pretrained Gemma 3's nearly are (1.031 +- 0.0005)."""
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        sliding_window=16,
        max_position_embeddings=1024,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    config._attn_implementation = "eager"
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0, 0.5)
        emb = model.model.embed_tokens.weight
        emb.mul_(0.2 / emb.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-9))
    return model
