"""The denoiser: one forward of DiffusionGemma's decoder over a canvas.

`Denoiser` is the protocol the loop speaks; `DiffusionGemmaDenoiser` implements it over
a `DiffusionGemmaForBlockDiffusion`. The prompt is encoded once into a KV cache (the
prefill); every denoising step reads that cache and never writes it, so a cached prefill
is reused, cut or extended, for the first tokens a later prompt shares with it.

A step computes logits only for a *window* of canvas positions (the span slots): the LM
head, its softcap and the self-conditioning soft embeddings cost vocabulary-sized work
per position, and pinned positions need none of it. Pinned positions outside the window
are self-conditioned on their own token (a one-hot distribution). With the window
covering the whole canvas, the forward is exactly transformers'
`DiffusionGemmaForBlockDiffusion`.

A step is either *full* (every canvas position runs through the decoder) or
*window-only*: only the window's positions run, and they attend to the keys and values
the positions outside the window had at the last full step (Fast-dLLM's dual cache).
Pinned positions are most of the canvas, so a window-only step of a line span costs
about a sixth of a full one; their keys are stale only in what they saw of the span's
noise. With the same canvas, a window-only step equals the full one.

A model converted from Gemma 3 is also trained with a mask token as its noise
(`mask_token_id` in its config) instead of uniform random ids: the loop then noises
slots with that token.

A model may read its slots with a *readout shift* (`readout_shift`, from its config):
slot i's logits come from canvas position i - shift. DiffusionGemma predicts token i at
position i (shift 0); a model converted from a left-to-right Gemma 3 keeps what it knows
in the shifted readout, where position i - 1 predicts token i (shift 1), the last
prefix token pinned just before the first slot. The denoiser and training both read
through `read_window`, so they agree.

Nothing is computed that no one reads. The last layer's output matters only where the
head reads it, so in a full step that layer runs the window's positions alone, against
keys and values computed for the others (all they give the window); in a prefill it
only computes and stores its keys and values, since the decoder reads the cache and
never the encoder's output. Both are exact: a quarter of the prefill and most of a
quarter of a full step were work for nothing.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from transformers.cache_utils import DynamicCache
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import (
    apply_rotary_pos_emb,
)

from infill_engine.core import rows as adapter_rows


def readout_shift(model: Any) -> int:
    """Canvas positions between a slot and the position its logits are read from:
    the model config's `readout_shift`, 0 where it has none (DiffusionGemma)."""
    shift = getattr(model.config, "readout_shift", 0) or 0
    if not isinstance(shift, int) or shift < 0:
        raise ValueError(f"readout_shift must be an integer >= 0 (got {shift!r})")
    return shift


def noise_token(model: Any) -> int | None:
    """The token a model's noised slots hold: its config's `mask_token_id`, or None
    for uniform random ids (DiffusionGemma)."""
    token = getattr(model.config, "mask_token_id", None)
    if token is not None and not 0 <= token < model.config.text_config.vocab_size:
        raise ValueError(f"mask_token_id {token} is outside the vocabulary")
    return token


def read_window(model: Any, window: slice) -> slice:
    """The canvas positions whose logits give the slots of `window`."""
    shift = readout_shift(model)
    if window.start < shift:
        raise ValueError(
            f"a readout shift of {shift} needs {shift} pinned position(s) before "
            f"the first slot (the window starts at {window.start})"
        )
    return slice(window.start - shift, window.stop - shift)


class Stopped(Exception):
    """Raised between two layers of a forward whose cancel flag was set
    (`DiffusionGemmaDenoiser.stoppable`)."""


@dataclass
class PrefillState:
    """What a denoising step needs from the prefill.

    Attributes:
        cache: encoder KV cache, batch size B.
        positions: (1, L) decoder position ids, continuing after the prompt; (B, L)
            when rows hold different prompts.
        context: keys and values for window-only steps, from the last full step.
        padding: (B, P + L) False on the cache slots a row must not attend to: the
            left padding of a shorter prompt among several (`prefill_many`); None
            when every row reads one prompt.
    """

    cache: Any
    positions: torch.Tensor
    context: ContextCache | None = None
    padding: torch.Tensor | None = None


@dataclass
class _KV:
    keys: torch.Tensor  # (B, heads, T, head_dim)
    values: torch.Tensor


@dataclass
class ContextCache:
    """Per decoder layer: the prompt's keys/values, then those of the canvas positions
    outside `window`, as a full step computed them.

    It is read the way the decoder reads the encoder cache (`layers[i].keys`), so the
    window's positions attend to the prompt, the rest of the canvas and themselves.
    """

    window: slice
    layers: list[_KV] = field(default_factory=list)
    is_compileable: bool = False
    masks: dict[str, torch.Tensor | None] = field(default_factory=dict)


class Denoiser(Protocol):
    """A model that turns a noisy canvas into logits for every position.

    `mask_id`: the token noised slots hold, for a model trained with one; None means
    uniform random ids (DiffusionGemma's noise)."""

    vocab_size: int
    device: torch.device
    mask_id: int | None

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
        full: bool = True,
    ) -> torch.Tensor:
        """(B, L) canvas, optional (B, W, V) previous logits -> (B, W, V) logits.

        `known` (B, L) marks positions whose token is known (pinned or accepted).
        `full`: run every canvas position; False lets a denoiser run only the window
        against what it kept of the rest from its last full step."""
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
        self.readout_shift = readout_shift(model)
        self.mask_id = noise_token(model)
        # A self-conditioning block whose output projection is zero adds nothing (a
        # converted model's, until trained): its soft embeddings, a vocabulary-sized
        # product per slot, are then skipped. The result is the same.
        block = model.model.decoder.self_conditioning
        self.self_conditions = bool(block.down_proj.weight.any())
        self.device = next(model.parameters()).device
        self._store: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._entries = cache_entries
        self.prefill_tokens_computed = 0  # tokens actually encoded, for the benchmark

    @torch.no_grad()
    def prefill(
        self, prompt_ids: torch.Tensor, batch: int, canvas_length: int
    ) -> PrefillState:
        """Encode the prompt, reusing the stored prefill that shares most of its start.

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
            encoder = self.model.model.encoder
            with _keys_only(encoder.language_model):
                out = encoder(input_ids=new, cache=cache, position_ids=positions)
            cache = out.cache
            self.prefill_tokens_computed += len(key) - done
        self._remember(key, cache)
        rows = _shallow_copy(cache)
        if batch > 1:
            rows.batch_repeat_interleave(batch)
        start = len(key)
        positions = torch.arange(start, start + canvas_length, device=self.device)
        return PrefillState(cache=rows, positions=positions.unsqueeze(0))

    def batchable(self, prompt_length: int, canvas_length: int) -> bool:
        """Whether a prompt of this length can share a step with other prompts: its
        cache and canvas fit in the sliding window, so no layer dropped a key that
        the left-padded layout would need."""
        text = self.model.config.get_text_config()
        window = getattr(text, "sliding_window", None)
        return window is None or prompt_length + canvas_length <= window

    @torch.no_grad()
    def prefill_many(
        self, prompts: list[torch.Tensor], rows: list[int], canvas_length: int
    ) -> PrefillState:
        """One state for several prompts: `rows[i]` canvas rows read `prompts[i]`.

        Each prompt is encoded (or found in the store) on its own, as `prefill` does;
        the caches are then padded on the left to the longest and stacked, with a
        padding mask so no row attends to another's padding. Positions are each
        row's own, continuing after its prompt; keys keep the positions they were
        encoded at. Every prompt must be `batchable`.
        """
        caches = [self.prefill(p, 1, canvas_length).cache for p in prompts]
        lengths = [int(p.shape[1]) for p in prompts]
        longest = max(lengths)
        merged = _shallow_copy(caches[0])
        for i, layer in enumerate(merged.layers):
            parts = [
                (c.layers[i], longest - n, r)
                for c, n, r in zip(caches, lengths, rows, strict=True)
            ]
            layer.keys = torch.cat([_left_pad(c.keys, pad, r) for c, pad, r in parts])
            layer.values = torch.cat(
                [_left_pad(c.values, pad, r) for c, pad, r in parts]
            )
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = longest
        padding = torch.cat(
            [
                torch.arange(longest + canvas_length).expand(r, -1) >= longest - n
                for n, r in zip(lengths, rows, strict=True)
            ]
        ).to(self.device)
        offsets = torch.tensor(
            [n for n, r in zip(lengths, rows, strict=True) for _ in range(r)],
            device=self.device,
        )
        positions = offsets[:, None] + torch.arange(canvas_length, device=self.device)
        return PrefillState(merged, positions, padding=padding)

    @torch.no_grad()
    def __call__(
        self,
        canvas: torch.Tensor,
        self_cond: torch.Tensor | None,
        state: PrefillState,
        window: slice,
        known: torch.Tensor | None = None,
        full: bool = True,
    ) -> torch.Tensor:
        """One decoder forward, logits for the window only (read through the
        model's readout shift).

        Args:
            canvas: (B, L) token ids.
            self_cond: (B, W, V) the previous step's logits for the window, or None at
                the first step.
            state: the prefill.
            window: the canvas positions that get logits.
            known: (B, L) positions whose token is known (pinned or accepted), or
                None.
            full: run the whole canvas and keep the keys/values outside the window
                in `state`; False runs the window only against them (a full step
                when `state` has none for this window).

        Returns:
            (B, W, V) float32 logits, soft-capped as the model's own head does.
        """
        known = known if self.condition_known else None
        self_cond = self_cond if self.self_conditions else None
        read = read_window(self.model, window)
        context = state.context
        if full or context is None or context.window != read:
            context = ContextCache(read)
            logits = window_logits(
                self.model,
                canvas,
                self_cond,
                state.cache,
                state.positions,
                read,
                known,
                record=context,
                padding=state.padding,
            )
            state.context = context
            return logits
        return window_only_logits(
            self.model, canvas, self_cond, context, state.positions, read, known
        )

    @contextmanager
    def stoppable(self, cancel: Callable[[], bool]) -> Iterator[None]:
        """While active, every encoder and decoder layer checks `cancel` first and
        raises `Stopped` if it is set.

        A stale job then stops within a layer, not at the end of its step or prefill
        (a full step or a cold prefill takes tens of milliseconds on CPU), and the job
        after it starts that much sooner. Nothing half-computed is kept: a prefill is
        stored and a full step's context recorded only once their forward is done.
        """

        def check(_module: Any, _args: Any) -> None:
            if cancel():
                raise Stopped

        inner = self.model.model
        layers = [*inner.encoder.language_model.layers, *inner.decoder.layers]
        handles = [layer.register_forward_pre_hook(check) for layer in layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _nearest(self, key: tuple[int, ...]) -> tuple[Any, int]:
        """A copy of the stored cache sharing the longest start with `key`, cut to it.

        The encoder is causal, so a cache cut to the first n tokens is exactly their
        prefill: a prompt that shrank (text deleted at the span, the cursor moved up a
        line) reuses a longer one. Caches as long as the sliding window are only
        extended, never cut (their layers may have dropped what a cut would need).
        """
        best, best_len, best_stored = None, 0, 0
        for stored, cache in self._store.items():
            n = _common_start(stored, key)
            if n < len(stored) and not self._cuttable(len(stored)):
                continue
            if n > best_len:
                best, best_len, best_stored = cache, n, len(stored)
        if best is None:
            text_config = self.model.config.get_text_config(decoder=True)
            return DynamicCache(config=text_config), 0
        cache = _shallow_copy(best)
        if best_len < best_stored:
            cache.crop(best_len - best_stored)  # a negative count: drop the last ones
        return cache, best_len

    def _cuttable(self, length: int) -> bool:
        window = getattr(self.model.config.get_text_config(), "sliding_window", None)
        return window is None or length < window

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
    record: ContextCache | None = None,
    padding: torch.Tensor | None = None,
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
        record: filled, when given, with every layer's prompt keys/values followed by
            those of the canvas positions outside the window (for
            `window_only_logits`), and with the attention masks.
        padding: (B, P + L) False on cache slots a row must not attend to
            (`PrefillState.padding`), or None.

    Returns:
        (B, W, V) float32 logits, soft-capped as the model's own head does.
    """
    dec = model.model.decoder
    embed = dec.embed_tokens
    embeds = embed(canvas)  # (B, L, H), scaled
    if self_cond is None:
        soft = torch.zeros_like(embeds)
    else:
        # One-hot self-conditioning outside the window: a position's own embedding.
        soft = torch.cat(
            [
                embeds[:, : window.start],
                _soft_embeddings(embed, self_cond, embeds.dtype),
                embeds[:, window.stop :],
            ],
            dim=1,
        )
    if known is not None:
        soft = torch.where(known[..., None], embeds, soft)
    hidden = dec.self_conditioning(embeds, soft)
    masks = dec.create_diffusion_decoder_attention_mask(
        config=dec.text_config,
        inputs_embeds=hidden,
        cache=cache,
        decoder_attention_mask=padding,
    )
    if record is not None:
        record.masks = masks
    layers = dec.layers[: dec.text_config.num_hidden_layers]
    last_type = dec.text_config.layer_types[len(layers) - 1]
    whole = window.start == 0 and window.stop >= canvas.shape[1]
    # The last layer on the window alone needs no mask (what window-only steps assume).
    rows = None if whole or masks[last_type] is not None else window
    recorded = layers if rows is None else layers[:-1]
    with nullcontext() if record is None else _recording(recorded, record):
        hidden = _run_layers(dec, hidden, positions, cache, masks, rows, record)
    return _head(model, hidden if rows is not None else hidden[:, window])


def window_only_logits(
    model: Any,
    canvas: torch.Tensor,
    self_cond: torch.Tensor | None,
    context: ContextCache,
    positions: torch.Tensor,
    window: slice,
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """`window_logits` with only the window's positions run through the decoder.

    The window attends to `context` (the prompt and the rest of the canvas, from a
    full forward) and to itself; every other part of the decoder is per position.
    Arguments are those of `window_logits`; returns (B, W, V) float32 logits.
    """
    dec = model.model.decoder
    embed = dec.embed_tokens
    embeds = embed(canvas[:, window])  # (B, W, H), scaled
    if self_cond is None:
        soft = torch.zeros_like(embeds)
    else:
        soft = _soft_embeddings(embed, self_cond, embeds.dtype)
    if known is not None:
        soft = torch.where(known[:, window, None], embeds, soft)
    hidden = dec.self_conditioning(embeds, soft)
    # A window position attends to every key but the padding: the keys are the
    # prompt's, then the canvas's in another order, so the full step's mask
    # holds for the window's rows.
    masks = {
        t: None if m is None else m[:, :, window]
        for t, m in (context.masks or dict.fromkeys(dec.unique_layer_types)).items()
    }
    return _head(model, _run_layers(dec, hidden, positions[:, window], context, masks))


def _run_layers(
    dec: Any,
    hidden: torch.Tensor,
    positions: torch.Tensor,
    cache: Any,
    masks: Any,
    rows: slice | None = None,
    record: ContextCache | None = None,
) -> torch.Tensor:
    """The decoder layers over (B, L, H) hidden states.

    `rows`: the positions whose output is read; the last layer then runs those alone,
    and returns (B, len(rows), H). The other positions' keys and values for it are
    appended to `record` when given (the hooks of `_recording` see the other layers).
    """
    layer_types = dec.text_config.layer_types
    rope = {t: dec.rotary_emb(hidden, positions, t) for t in dec.unique_layer_types}
    layers = dec.layers[: dec.text_config.num_hidden_layers]
    for i, layer in enumerate(layers):
        if rows is not None and i == len(layers) - 1:
            return _last_layer_rows(
                layer, hidden, positions, rope[layer_types[i]], cache, rows, record
            )
        hidden = layer(
            hidden,
            position_embeddings=rope[layer_types[i]],
            attention_mask=masks[layer_types[i]],
            position_ids=positions,
            cache=cache,
        )
    return hidden


def _last_layer_rows(
    layer: Any,
    hidden: torch.Tensor,
    positions: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    cache: Any,
    rows: slice,
    record: ContextCache | None,
) -> torch.Tensor:
    """`layer`'s output at `rows` only: those positions attend to the prompt, to the
    keys and values of the other positions (computed, nothing more) and to their own."""
    attn = layer.self_attn
    cos, sin = rope
    with adapter_rows.narrowed(lambda mask: _outside(mask, rows)):
        keys, values = _keys_values(
            attn,
            layer.input_layernorm(_outside(hidden, rows)),
            (_outside(cos, rows), _outside(sin, rows)),
        )
    prompt = cache.layers[attn.layer_idx]
    kv = _KV(
        torch.cat([prompt.keys, keys], dim=-2),
        torch.cat([prompt.values, values], dim=-2),
    )
    if record is not None:
        record.layers.append(kv)
    context = ContextCache(rows, [kv] * (attn.layer_idx + 1))  # read at layer_idx
    with adapter_rows.narrowed(lambda mask: mask[:, rows]):
        return layer(
            hidden[:, rows],
            position_embeddings=(cos[:, rows], sin[:, rows]),
            attention_mask=None,
            position_ids=positions[:, rows],
            cache=context,
        )


def _outside(t: torch.Tensor, rows: slice) -> torch.Tensor:
    """(B, L, ...) -> the positions of dim 1 outside `rows`, in order."""
    return torch.cat([t[:, : rows.start], t[:, rows.stop :]], dim=1)


def _keys_values(
    attn: Any, normed: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys and values DiffusionGemma's attention `attn` makes of its normed
    (B, T, H) input, as its forward does before attending: (B, kv_heads, T, head_dim).

    Layers without a value projection use the raw keys as values (full attention)."""
    shape = (*normed.shape[:-1], -1, attn.head_dim)
    keys = attn.k_proj(normed).view(shape)
    values = attn.v_proj(normed).view(shape) if attn.v_proj is not None else keys
    keys = apply_rotary_pos_emb(attn.k_norm(keys), *rope, unsqueeze_dim=2)
    return keys.transpose(1, 2), attn.v_norm(values).transpose(1, 2)


@contextmanager
def _keys_only(text_model: Any) -> Iterator[None]:
    """While active, the encoder's last layer only computes and caches its keys and
    values, and passes its input through: a prefill's output is never read."""
    layer = text_model.layers[text_model.config.num_hidden_layers - 1]

    def forward(
        hidden_states: torch.Tensor,
        position_embeddings: Any = None,
        cache: Any = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        keys, values = _keys_values(
            layer.self_attn, layer.input_layernorm(hidden_states), position_embeddings
        )
        cache.update(keys, values, layer.self_attn.layer_idx)
        return hidden_states

    layer.forward = forward
    try:
        yield
    finally:
        del layer.forward


def _left_pad(t: torch.Tensor, pad: int, rows: int) -> torch.Tensor:
    """(1, heads, T, d) -> (rows, heads, pad + T, d): zeros in front, rows copies."""
    if pad:
        t = torch.cat([t.new_zeros(*t.shape[:2], pad, t.shape[3]), t], dim=2)
    return t.expand(rows, -1, -1, -1)


def _soft_embeddings(
    embed: Any, logits: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """(B, W, V) logits -> (B, W, H) expected embedding under their softmax, scaled."""
    probs = logits.softmax(dim=-1, dtype=torch.float32).to(embed.weight.dtype)
    return (probs @ embed.weight) * embed.embed_scale.to(dtype)


def _head(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Final norm, LM head and softcap of (B, W, H) hidden states (all per position)."""
    logits = model.lm_head(model.model.decoder.norm(hidden)).float()  # (B, W, V)
    cap = model.final_logit_softcapping
    if not cap:
        return logits
    # cap * tanh(x / cap) written as 2 cap * sigmoid(2 x / cap) - cap: the same
    # function, and on CPU torch's sigmoid takes half the time of its tanh. In place
    # when no gradient is recorded (nothing else holds these logits).
    if logits.requires_grad:
        return torch.sigmoid(logits * (2 / cap)) * (2 * cap) - cap
    return logits.mul_(2 / cap).sigmoid_().mul_(2 * cap).sub_(cap)


@contextmanager
def _recording(layers: Any, record: ContextCache) -> Iterator[None]:
    """Fill `record` with each layer's prompt and outside-window canvas keys/values."""
    w = record.window

    def keep(attn: Any, c: Any, k: torch.Tensor, v: torch.Tensor) -> None:
        prompt = c.layers[attn.layer_idx]
        record.layers.append(
            _KV(
                torch.cat([prompt.keys, k[:, :, : w.start], k[:, :, w.stop :]], dim=-2),
                torch.cat(
                    [prompt.values, v[:, :, : w.start], v[:, :, w.stop :]], dim=-2
                ),
            )
        )

    with on_append(layers, keep):
        yield


@contextmanager
def on_append(
    layers: Any, seen: Callable[[Any, Any, torch.Tensor, torch.Tensor], None]
) -> Iterator[None]:
    """While active, each layer's attention hands `seen(attn, cache, keys, values)`
    the canvas keys and values (normed, rotated) it appends to the cache it reads."""
    attentions = [layer.self_attn for layer in layers]
    for attn in attentions:

        def append(c: Any, k: torch.Tensor, v: torch.Tensor, attn: Any = attn) -> Any:
            seen(attn, c, k, v)
            return type(attn).append_to_cache(attn, c, k, v)

        attn.append_to_cache = append
    try:
        yield
    finally:
        for attn in attentions:
            del attn.append_to_cache


def _common_start(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return next(i for i in range(n) if a[i] != b[i])


def _shallow_copy(cache: Any) -> Any:
    """A cache whose layers can be extended or repeated without touching the original.

    Cache layers replace their tensors (torch.cat, repeat_interleave) rather than
    writing into them, so copying the layer objects is enough.
    """
    clone = copy.copy(cache)
    clone.layers = [copy.copy(layer) for layer in cache.layers]
    return clone
