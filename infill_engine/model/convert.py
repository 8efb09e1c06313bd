"""Gemma 3 (causal, left to right) -> `DiffusionGemmaForBlockDiffusion`, weight
for weight.

The default model starts from a pretrained Gemma 3. DiffusionGemma's encoder is Gemma
3's architecture with other conventions, so the converted encoder computes what Gemma 3
computes (tests hold it to `Gemma3ForCausalLM`'s logits); the decoder shares the
encoder's layers and reads the canvas bidirectionally, which is what fine-tuning then
teaches it to use. Where the conventions differ:

- Norms: Gemma 3 multiplies by `1 + w`, DiffusionGemma by `w`.
- Attention scale: DiffusionGemma's is 1; Gemma 3's `query_pre_attn_scalar ** -0.5`
  goes into the `q_norm` weight.
- Values: DiffusionGemma normalises them without a scale (`v_norm`), Gemma 3 does not.
  `v_proj` is scaled by a tiny `c`, so values stay where that norm is linear
  (x / sqrt(eps)), and `o_proj` by sqrt(eps) / c.
- Full-attention layers have no `v_proj` in DiffusionGemma (keys are the values). The
  converted model gives them one (`attach_full_attention_values`), which makes it
  exact; a checkpoint that has them is loaded with them by the engine's loader.
- Feed-forward: DiffusionGemma adds a mixture-of-experts branch as
  `post_ff(post_ff_1(mlp) + post_ff_2(experts))`. `post_ff_2` = 0 removes the experts;
  `post_ff_1` = a tiny k with `post_ff` scaled by sqrt(eps) / k keeps Gemma 3's single
  `post_ff(mlp)` (MLP outputs can be smaller than eps, so weight 1 would not).
- The final logit softcap is always applied: `SOFTCAP` is large enough to be nearly the
  identity on real logits, small enough for float32 to resolve them.
- Self-conditioning starts as a no-op (`down_proj` = 0).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

SOFTCAP = 1000.0
# The tiny scales sit this far below the linear range of an RMS norm with eps.
LINEAR_MARGIN = 1e-3
EXPERT_SIZE = 8  # the one expert is switched off; any size constructs
# A vision tower DiffusionGemma requires and text never uses: as small as constructs.
VISION_CONFIG = {
    "model_type": "gemma4_vision",
    "hidden_size": 8,
    "intermediate_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
    "head_dim": 8,
    "patch_size": 1,
    "position_embedding_size": 1,
    "pooling_kernel_size": 1,
}


def diffusion_config(
    gemma: Any, vocab_size: int | None = None, canvas_length: int = 256
) -> Any:
    """A `DiffusionGemmaConfig` with the text dimensions of a `Gemma3TextConfig`.

    Args:
        gemma: the causal model's text config.
        vocab_size: the converted vocabulary (default: Gemma 3's).
        canvas_length: positions of a denoising canvas.
    """
    from transformers import DiffusionGemmaConfig

    rope = gemma.rope_parameters
    text = {
        "vocab_size": vocab_size or gemma.vocab_size,
        "hidden_size": gemma.hidden_size,
        "intermediate_size": gemma.intermediate_size,
        "num_hidden_layers": gemma.num_hidden_layers,
        "num_attention_heads": gemma.num_attention_heads,
        "num_key_value_heads": gemma.num_key_value_heads,
        "head_dim": gemma.head_dim,
        "global_head_dim": gemma.head_dim,
        "num_global_key_value_heads": gemma.num_key_value_heads,
        "hidden_activation": gemma.hidden_activation,
        "max_position_embeddings": gemma.max_position_embeddings,
        "rms_norm_eps": gemma.rms_norm_eps,
        "pad_token_id": gemma.pad_token_id,
        "eos_token_id": gemma.eos_token_id,
        "bos_token_id": gemma.bos_token_id,
        "tie_word_embeddings": True,
        "sliding_window": gemma.sliding_window,
        "layer_types": list(gemma.layer_types),
        "rope_parameters": {
            kind: {"rope_type": "default", "rope_theta": rope[kind]["rope_theta"]}
            for kind in ("sliding_attention", "full_attention")
        },
        "final_logit_softcapping": SOFTCAP,
        "num_experts": 1,
        "top_k_experts": 1,
        "moe_intermediate_size": EXPERT_SIZE,
    }
    # Image ids must exist in the vocabulary; text never uses them (Gemma's unused).
    return DiffusionGemmaConfig(
        text_config=text,
        vision_config=dict(VISION_CONFIG),
        canvas_length=canvas_length,
        boi_token_id=6,
        eoi_token_id=7,
        image_token_id=8,
        tie_word_embeddings=True,
    )


@torch.no_grad()
def conversion_scales(causal: Any, calibration_ids: torch.Tensor) -> dict[str, Any]:
    """What the conversion measures on the base: the embeddings' median RMS over the
    whole vocabulary and, per layer, the largest value RMS on the calibration text."""
    return {
        "embedding_rms": _embedding_rms(causal.model.embed_tokens),
        "value_rms": _value_rms(causal, calibration_ids),
    }


@torch.no_grad()
def from_gemma3(
    causal: Any,
    calibration_ids: torch.Tensor,
    canvas_length: int = 256,
    scales: dict[str, Any] | None = None,
) -> Any:
    """Convert a `Gemma3ForCausalLM` into a `DiffusionGemmaForBlockDiffusion`.

    Args:
        causal: the pretrained causal model (float32, on CPU).
        calibration_ids: (1, T) token ids of real text: the largest value RMS seen on
            them sets how small the value scale must be.
        canvas_length: positions of a denoising canvas.
        scales: `conversion_scales` measured before (a base whose dropped vocabulary
            rows are zero measures other ones); None measures them here.

    Returns:
        The converted model in eval mode, float32, with `v_proj` on every layer.
    """
    from transformers import DiffusionGemmaForBlockDiffusion

    gemma = causal.config
    model = DiffusionGemmaForBlockDiffusion(
        diffusion_config(gemma, None, canvas_length)
    )
    attach_full_attention_values(model)
    scales = scales or conversion_scales(causal, calibration_ids)
    value_rms = scales["value_rms"]
    eps = gemma.rms_norm_eps
    k_ff = LINEAR_MARGIN * math.sqrt(eps)
    scale_q = gemma.query_pre_attn_scalar**-0.5
    src, dec = causal.model, model.model.decoder
    # The decoder's input passes a scale-free norm (self-conditioning's `post_norm`),
    # which brings every embedding to RMS 1. Gemma 3's scaled embeddings all have
    # nearly one RMS (1.031 +- 0.0005 for the 270M), so the whole residual stream is
    # divided by it instead: the embeddings and every norm that writes into the stream
    # by `rms`, the final norm times it (the LM head reads the divided embeddings).
    # The encoder then computes exactly what Gemma 3 does, and the decoder nearly so.
    rms = scales["embedding_rms"]
    dec.embed_tokens.weight.copy_(src.embed_tokens.weight / rms)
    dec.norm.weight.copy_((1 + src.norm.weight) * rms)
    for i, (old, new) in enumerate(zip(src.layers, dec.layers, strict=True)):
        a, b = old.self_attn, new.self_attn
        c = LINEAR_MARGIN * math.sqrt(eps) / max(value_rms[i], 1e-6)
        b.q_proj.weight.copy_(a.q_proj.weight)
        b.k_proj.weight.copy_(a.k_proj.weight)
        b.v_proj.weight.copy_(a.v_proj.weight * c)
        b.o_proj.weight.copy_(a.o_proj.weight * (math.sqrt(eps) / c))
        b.q_norm.weight.copy_((1 + a.q_norm.weight) * scale_q)
        b.k_norm.weight.copy_(1 + a.k_norm.weight)
        for name in ("gate_proj", "up_proj", "down_proj"):
            getattr(new.mlp, name).weight.copy_(getattr(old.mlp, name).weight)
        for name in ("input_layernorm", "pre_feedforward_layernorm"):
            getattr(new, name).weight.copy_(1 + getattr(old, name).weight)
        new.post_attention_layernorm.weight.copy_(
            (1 + old.post_attention_layernorm.weight) / rms
        )
        new.post_feedforward_layernorm.weight.copy_(
            (1 + old.post_feedforward_layernorm.weight) * (math.sqrt(eps) / k_ff / rms)
        )
        new.post_feedforward_layernorm_1.weight.fill_(k_ff)
        new.post_feedforward_layernorm_2.weight.zero_()
        new.pre_feedforward_layernorm_2.weight.fill_(1.0)
        new.router.proj.weight.zero_()
        new.experts.gate_up_proj.zero_()  # uninitialised memory could hold NaNs
        new.experts.down_proj.zero_()
        new.layer_scalar.fill_(1.0)
    sc = dec.self_conditioning
    sc.pre_norm.weight.fill_(1.0)
    sc.down_proj.weight.zero_()  # a no-op until trained; gate/up keep their init
    model.tie_weights()
    return model.eval()


def attach_full_attention_values(model: Any) -> None:
    """Give every full-attention layer a `v_proj`, shared by encoder and decoder.

    DiffusionGemma's full-attention layers use their keys as values; with a `v_proj`
    its attention code uses the projection instead (it checks for one). Layers that
    already have one keep it.
    """
    text = model.config.text_config
    decoder = model.model.decoder.layers
    encoder = model.model.encoder.language_model.layers
    for dec_layer, enc_layer in zip(decoder, encoder, strict=True):
        attn = dec_layer.self_attn
        if attn.v_proj is not None:
            continue
        kv_heads = attn.k_proj.out_features // attn.head_dim
        proj = nn.Linear(
            text.hidden_size,
            kv_heads * attn.head_dim,
            bias=text.attention_bias,
            device=attn.k_proj.weight.device,
            dtype=attn.k_proj.weight.dtype,
        )
        attn.v_proj = proj
        enc_layer.self_attn.v_proj = proj


def detach_full_attention_values(model: Any) -> None:
    """Undo `attach_full_attention_values`: full-attention layers use their keys as
    values again, DiffusionGemma's own layout (what transformers loads)."""
    text = model.config.text_config
    decoder = model.model.decoder.layers
    encoder = model.model.encoder.language_model.layers
    for kind, dec_layer, enc_layer in zip(
        text.layer_types, decoder, encoder, strict=True
    ):
        if kind == "full_attention":
            dec_layer.self_attn.v_proj = None
            enc_layer.self_attn.v_proj = None


class _NoRouter(nn.Module):
    """Stands in for a switched-off layer's router: routes nothing."""

    def forward(self, hidden: torch.Tensor) -> tuple[None, None, None]:
        return None, None, None


class _NoExperts(nn.Module):
    """Stands in for a switched-off layer's experts: their output, zero."""

    def forward(self, hidden: torch.Tensor, index: Any, weights: Any) -> torch.Tensor:
        return torch.zeros_like(hidden)


def skip_switched_off_experts(model: Any) -> int:
    """For inference: skip the mixture-of-experts branch of every layer whose output
    norm (`post_feedforward_layernorm_2`) is all zero, as the conversion leaves it.
    Such a branch adds exactly zero, yet costs a router, the experts and, on a GPU, a
    host sync in every layer (transformers' experts loop reads which experts were hit).
    The result is unchanged to the bit (tests check it); on 2 CPU cores a denoising
    step of the default model took 57 instead of 68 ms. Returns how many layers skip.

    Not for a model that will be trained or saved: the stand-ins hold no weights.
    """
    layers = [*model.model.decoder.layers, *model.model.encoder.language_model.layers]
    skipped = 0
    for layer in layers:
        norm = getattr(layer, "post_feedforward_layernorm_2", None)
        if norm is None or not hasattr(layer, "experts") or bool(norm.weight.any()):
            continue
        layer.router, layer.experts = _NoRouter(), _NoExperts()
        skipped += 1
    return skipped


def full_attention_value_keys(model: Any) -> list[str]:
    """State-dict keys of the `v_proj` weights `attach_full_attention_values` adds."""
    text = model.config.text_config
    return [
        f"model.decoder.layers.{i}.self_attn.v_proj.weight"
        for i, kind in enumerate(text.layer_types)
        if kind == "full_attention"
    ]


def _embedding_rms(embed: Any) -> float:
    """The median RMS of Gemma 3's scaled token embeddings."""
    scaled = embed.weight * embed.embed_scale.to(embed.weight.dtype)  # (V, H)
    return float(scaled.pow(2).mean(-1).sqrt().median())


def _value_rms(causal: Any, ids: torch.Tensor) -> list[float]:
    """Per layer, the largest per-head RMS of Gemma 3's values on `ids`."""
    seen: list[float] = [0.0] * len(causal.model.layers)
    hooks = []
    for i, layer in enumerate(causal.model.layers):
        head_dim = layer.self_attn.head_dim

        def keep(
            _m: Any, _args: Any, out: torch.Tensor, i: int = i, d: int = head_dim
        ) -> None:
            heads = out.view(*out.shape[:-1], -1, d)  # (B, T, kv, d)
            seen[i] = max(seen[i], float(heads.pow(2).mean(-1).sqrt().max()))

        hooks.append(layer.self_attn.v_proj.register_forward_hook(keep))
    try:
        causal(input_ids=ids)
    finally:
        for hook in hooks:
            hook.remove()
    return seen
