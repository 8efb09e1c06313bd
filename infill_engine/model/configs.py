"""Model configurations of the DiffusionGemma class used by this project.

`tiny_config` builds a small `DiffusionGemmaConfig` (a few layers, a few experts, a tiny
vision tower). The tests build their random models from it and the shipped model is
trained from it, so both exercise the same architecture as the 26B checkpoint.
"""

from __future__ import annotations

from transformers import DiffusionGemmaConfig


def tiny_config(
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_experts: int = 4,
    canvas_length: int = 256,
) -> DiffusionGemmaConfig:
    """A small DiffusionGemma config whose special ids match `tokenizer.SPECIAL_TOKENS`.

    Args:
        vocab_size: vocabulary size of the tokenizer the model is paired with.
        hidden_size: model width; heads are `hidden_size // 4` wide.
        num_layers: decoder (and encoder) layers; the last one uses full attention.
        num_experts: MoE experts per layer (two are active per token).
        canvas_length: positions of the denoising canvas.
    """
    if hidden_size % 4 or hidden_size < 16:
        raise ValueError(
            f"hidden_size must be a multiple of 4 and >= 16 (got {hidden_size})"
        )
    head_dim = hidden_size // 4
    text = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        global_head_dim=head_dim,
        num_global_key_value_heads=2,
        num_experts=num_experts,
        top_k_experts=2,
        moe_intermediate_size=hidden_size,
        sliding_window=512,
        max_position_embeddings=16384,
        layer_types=["sliding_attention"] * (num_layers - 1) + ["full_attention"],
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    vision = dict(
        model_type="gemma4_vision",
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        patch_size=4,
        position_embedding_size=64,
    )
    return DiffusionGemmaConfig(
        text_config=text,
        vision_config=vision,
        canvas_length=canvas_length,
        boi_token_id=3,
        eoi_token_id=4,
        image_token_id=5,
    )
