"""The denoiser: one forward of DiffusionGemma's decoder over a canvas.

`Denoiser` is the protocol the loop speaks; `DiffusionGemmaDenoiser` implements it over
a
`DiffusionGemmaForBlockDiffusion`. The prompt is encoded once into a KV cache (the
prefill); every denoising step reads that cache and never writes it, so a cached prefill
is reused across requests whose prompt starts with the same tokens.

A step computes logits only for a *window* of canvas positions (the span slots): the LM
head, its softcap and the self-conditioning soft embeddings cost vocabulary-sized work
per
position, and pinned positions need none of it. Pinned positions outside the window are
self-conditioned on their own token (a one-hot distribution). With the window covering
the whole canvas, the forward is exactly transformers'
`DiffusionGemmaForBlockDiffusion`.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers.cache_utils import DynamicCache


@dataclass
class PrefillState:
    """What a denoising step needs from the prefill.

    Attributes:
        cache: encoder KV cache, batch size B.
        positions: (1, L) decoder position ids, continuing after the prompt.
    """

    cache: Any
    positions: torch.Tensor


class Denoiser(Protocol):
    """A model that turns a noisy canvas into logits for every position."""

    vocab_size: int
    device: torch.device

    def prefill(self, prompt_ids: torch.Tensor, batch: int, canvas_length: int) -> Any:
        """Encode (1, P) prompt ids; return the state for `batch` canvas rows."""
        ...

    def __call__(
        self,
        canvas: torch.Tensor,
        self_cond: torch.Tensor | None,
        state: Any,
        window: slice,
        known: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L) canvas, optional (B, W, V) previous logits -> (B, W, V) logits.

        `known` (B, L) marks positions whose token is known (pinned or accepted)."""
        ...


class DiffusionGemmaDenoiser:
    """`Denoiser` over a `DiffusionGemmaForBlockDiffusion`, with a prefix-cache store.

    Args:
        model: the loaded model, in eval mode, on its device.
        cache_entries: prefills kept for reuse (least recently used dropped first).
    """

    def __init__(self, model: Any, cache_entries: int = 4) -> None:
        self.model = model
        # Self-condition known positions on their own token at every step (see
        # `window_logits`); off reproduces transformers' forward exactly.
        self.condition_known = True
        self.vocab_size = int(model.config.text_config.vocab_size)
        self.device = next(model.parameters()).device
        self._store: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._entries = cache_entries
        self.prefill_tokens_computed = 0  # tokens actually encoded, for the benchmark

    @torch.no_grad()
    def prefill(
        self, prompt_ids: torch.Tensor, batch: int, canvas_length: int
    ) -> PrefillState:
        """Encode the prompt, reusing the longest stored prefill it extends.

        Args:
            prompt_ids: (1, P) token ids.
            batch: canvas rows that will read the cache.
            canvas_length: positions of each canvas row.
        """
        key = tuple(prompt_ids[0].tolist())
        cache, done = self._nearest(key)
        if done < len(key):
            new = prompt_ids[:, done:].to(self.device)
            positions = torch.arange(done, len(key), device=self.device).unsqueeze(0)
            out = self.model.model.encoder(
                input_ids=new, cache=cache, position_ids=positions
            )
            cache = out.cache
            self.prefill_tokens_computed += len(key) - done
        self._remember(key, cache)
        rows = _shallow_copy(cache)
        if batch > 1:
            rows.batch_repeat_interleave(batch)
        start = len(key)
        positions = torch.arange(start, start + canvas_length, device=self.device)
        return PrefillState(cache=rows, positions=positions.unsqueeze(0))

    @torch.no_grad()
    def __call__(
        self,
        canvas: torch.Tensor,
        self_cond: torch.Tensor | None,
        state: PrefillState,
        window: slice,
        known: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One decoder forward, logits for the window only.

        Args:
            canvas: (B, L) token ids.
            self_cond: (B, W, V) the previous step's logits for the window, or None at
                the first step.
            state: the prefill.
            window: the canvas positions that get logits.
            known: (B, L) positions whose token is known (pinned or accepted), or
                None.

        Returns:
            (B, W, V) float32 logits, soft-capped as the model's own head does.
        """
        return window_logits(
            self.model,
            canvas,
            self_cond,
            state.cache,
            state.positions,
            window,
            known if self.condition_known else None,
        )

    def _nearest(self, key: tuple[int, ...]) -> tuple[Any, int]:
        """The stored cache for the longest stored prompt that `key` starts with."""
        best, best_len = None, 0
        for stored, cache in self._store.items():
            n = len(stored)
            if best_len < n <= len(key) and key[:n] == stored:
                best, best_len = cache, n
        if best is None:
            text_config = self.model.config.get_text_config(decoder=True)
            return DynamicCache(config=text_config), 0
        return _shallow_copy(best), best_len

    def _remember(self, key: tuple[int, ...], cache: Any) -> None:
        self._store[key] = cache
        self._store.move_to_end(key)
        while len(self._store) > self._entries:
            self._store.popitem(last=False)


def window_logits(
    model: Any,
    canvas: torch.Tensor,
    self_cond: torch.Tensor | None,
    cache: Any,
    positions: torch.Tensor,
    window: slice,
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """DiffusionGemma's decoder forward with logits for a window of positions only.

    The engine's step and the training loss both call this, so the model is trained on
    exactly the forward it is served with. Gradients flow when the caller allows them.

    Args:
        model: a `DiffusionGemmaForBlockDiffusion`.
        canvas: (B, L) token ids.
        self_cond: (B, W, V) the previous pass's logits for the window, or None (no
            self-conditioning, as at the first step).
        cache: the encoder KV cache of the prompt (read, never written).
        positions: (1, L) decoder position ids.
        window: the canvas positions that get logits.
        known: (B, L) positions whose token is known: pinned context and the slots
            accepted at the previous step. They are self-conditioned on their own
            token (one-hot), the first step included, so the model can tell context
            and kept tokens from noise (uniform noise has no mask token); other slots
            get the previous logits, or nothing at the first step. None: only
            positions outside the window are (transformers' behaviour).

    Returns:
        (B, W, V) float32 logits, soft-capped as the model's own head does.
    """
    dec = model.model.decoder
    embed = dec.embed_tokens
    embeds = embed(canvas)  # (B, L, H), scaled
    if self_cond is None:
        soft = torch.zeros_like(embeds)
    else:
        probs = self_cond.softmax(dim=-1, dtype=torch.float32).to(embed.weight.dtype)
        window_soft = (probs @ embed.weight) * embed.embed_scale.to(embeds.dtype)
        # One-hot self-conditioning outside the window: a position's own embedding.
        soft = torch.cat(
            [embeds[:, : window.start], window_soft, embeds[:, window.stop :]], dim=1
        )
    if known is not None:
        soft = torch.where(known[..., None], embeds, soft)
    hidden = dec.self_conditioning(embeds, soft)
    masks = dec.create_diffusion_decoder_attention_mask(
        config=dec.text_config, inputs_embeds=hidden, cache=cache
    )
    layer_types = dec.text_config.layer_types
    rope = {t: dec.rotary_emb(hidden, positions, t) for t in dec.unique_layer_types}
    for i, layer in enumerate(dec.layers[: dec.text_config.num_hidden_layers]):
        hidden = layer(
            hidden,
            position_embeddings=rope[layer_types[i]],
            attention_mask=masks[layer_types[i]],
            position_ids=positions,
            cache=cache,
        )
    hidden = dec.norm(hidden[:, window])  # (B, W, H): the norm is per position
    logits = model.lm_head(hidden).float()  # (B, W, V)
    cap = model.final_logit_softcapping
    return torch.tanh(logits / cap) * cap if cap else logits


def _shallow_copy(cache: Any) -> Any:
    """A cache whose layers can be extended or repeated without touching the original.

    Cache layers replace their tensors (torch.cat, repeat_interleave) rather than
    writing
    into them, so copying the layer objects is enough.
    """
    clone = copy.copy(cache)
    clone.layers = [copy.copy(layer) for layer in cache.layers]
    return clone
