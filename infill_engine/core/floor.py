"""The left-to-right floor: committed canvas rows read the canvas causally, as the base.

A model converted from a left-to-right base (`convert.from_gemma3`) keeps what it knows
in the causal reading: the encoder computes exactly what the base computes. Here the
canvas rows that hold committed tokens (the pinned prefix tail, then span tokens
committed from the span's start) are run the encoder's way: its embedding, no
self-conditioning, attending only to the prompt and to earlier committed rows, never to
noise or to the suffix. Read through the readout shift, the last committed row then
gives the base's own next-token distribution for the first open slot: the floor.

Their keys and values never change once committed, so they are kept across steps like
an autoregressive cache (`CausalCanvas`), and a step runs only the rows that changed:
the last committed row, the drafts that follow it (checked against the base in the same
forward, `accept_drafts`), and optionally noise rows past them, which read everything
(prompt, committed rows, drafts, the suffix) as the diffusion decoder does.

`rows_forward` is that forward; `score_text` reads a text causally after the prefix
(the suffix-aware rerank of `loop.decode_floor` uses it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from infill_engine.core.denoiser import _KV, _head, on_append, readout_shift


@dataclass
class _Keys:
    """What the decoder's attention reads as its cache: per layer, the keys and values
    the rows being run attend to besides their own (`append_to_cache`)."""

    layers: list[_KV]
    is_compileable: bool = False


@dataclass
class CausalCanvas:
    """Per decoder layer, keys and values of the prompt, then of canvas positions
    [0, committed) for B rows, then (optionally) the suffix rows' from the first step.

    Attributes:
        prompt: per layer (B, kv, T_l, d); sliding layers may hold fewer keys.
        prompt_lengths: (B,) tokens of each row's prompt (left padding excluded).
        prompt_valid: (B, T) False on a shorter prompt's left padding, or None.
        canvas: per layer (B, kv, C, d), canvas positions [0, C).
        suffix: per layer (B, kv, S, d) for `suffix_positions`, or empty.
        suffix_positions: (S,) canvas positions of the suffix rows kept.
    """

    prompt: list[_KV]
    prompt_lengths: torch.Tensor
    prompt_valid: torch.Tensor | None
    canvas: list[_KV] = field(default_factory=list)
    suffix: list[_KV] = field(default_factory=list)
    suffix_positions: torch.Tensor | None = None

    @property
    def committed(self) -> int:
        """Canvas positions whose keys and values are kept."""
        return int(self.canvas[0].keys.shape[2]) if self.canvas else 0

    def cut(self, count: int) -> CausalCanvas:
        """A copy that keeps canvas positions [0, count) only."""
        canvas = [
            _KV(kv.keys[:, :, :count], kv.values[:, :, :count]) for kv in self.canvas
        ]
        return CausalCanvas(
            self.prompt, self.prompt_lengths, self.prompt_valid, canvas if count else []
        )

    def extend(self, rows: list[_KV], count: int) -> None:
        """Keep the first `count` rows of a forward as canvas positions."""
        if count <= 0:
            return
        cut = [_KV(kv.keys[:, :, :count], kv.values[:, :, :count]) for kv in rows]
        if not self.canvas:
            self.canvas = cut
            return
        self.canvas = [
            _KV(
                torch.cat([old.keys, new.keys], dim=2),
                torch.cat([old.values, new.values], dim=2),
            )
            for old, new in zip(self.canvas, cut, strict=True)
        ]


def causal_canvas(state: Any) -> CausalCanvas:
    """A `CausalCanvas` over a denoiser's prefill (`PrefillState`), no canvas kept."""
    cache = state.cache
    layers = [_KV(layer.keys, layer.values) for layer in cache.layers]
    lengths = state.positions[:, 0].expand(layers[0].keys.shape[0]).clone()
    valid = None
    if state.padding is not None:
        valid = state.padding[:, : layers[0].keys.shape[2]]
    return CausalCanvas(layers, lengths, valid)


def rows_forward(
    model: Any,
    memory: CausalCanvas,
    ids: torch.Tensor,
    start: int,
    causal: torch.Tensor,
    read_from: int = 0,
) -> tuple[torch.Tensor, list[_KV]]:
    """Run canvas rows [start, start + R) against what `memory` keeps.

    A causal row reads the prompt, the kept canvas positions and the causal rows of
    this forward at or before it, as the base reads a sequence; a noise row reads
    every key (kept suffix rows included), as the diffusion decoder does.

    Args:
        model: a converted `DiffusionGemmaForBlockDiffusion`.
        memory: the prompt's and committed positions' keys and values; `start` must
            equal `memory.committed`.
        ids: (B, R) tokens of the rows.
        start: the canvas position of the first row.
        causal: (B, R) rows read causally (committed tokens and drafts).
        read_from: the first row whose logits are read (the LM head is a tenth of
            a row's work; rows before it are run for their keys and values).

    Returns:
        (B, R - read_from, V) float32 logits (row j's predict canvas position
        j + 1) and, per layer, the rows' keys and values (B, kv, R, d).
    """
    if start != memory.committed:
        raise ValueError(f"rows start at {start}, the canvas keeps {memory.committed}")
    dec = model.model.decoder
    text = dec.text_config
    embeds = dec.embed_tokens(ids)  # (B, R, H), the encoder's embedding
    noisy = dec.self_conditioning(embeds, torch.zeros_like(embeds))
    hidden = torch.where(causal[..., None], embeds, noisy)
    rows = ids.shape[1]
    offsets = torch.arange(start, start + rows, device=ids.device)
    positions = memory.prompt_lengths[:, None] + offsets  # (B, R)
    masks = {
        kind: _mask(memory, kind, offsets, causal, hidden.dtype, text)
        for kind in dec.unique_layer_types
    }
    rope = {t: dec.rotary_emb(hidden, positions, t) for t in dec.unique_layer_types}
    recorded: list[_KV] = []
    layers = dec.layers[: text.num_hidden_layers]
    keys = _Keys([_context(memory, j) for j in range(len(layers))])
    with on_append(layers, lambda _a, _c, k, v: recorded.append(_KV(k, v))):
        for i, layer in enumerate(layers):
            kind = text.layer_types[i]
            hidden = layer(
                hidden,
                position_embeddings=rope[kind],
                attention_mask=masks[kind],
                position_ids=positions,
                cache=keys,
            )
    return _head(model, hidden[:, read_from:]), recorded


def _context(memory: CausalCanvas, layer: int) -> _KV:
    """Layer `layer`'s keys: prompt, kept canvas positions, kept suffix rows."""
    parts = [memory.prompt[layer]]
    if memory.canvas:
        parts.append(memory.canvas[layer])
    if memory.suffix:
        parts.append(memory.suffix[layer])
    if len(parts) == 1:
        return parts[0]
    return _KV(
        torch.cat([p.keys for p in parts], dim=2),
        torch.cat([p.values for p in parts], dim=2),
    )


def _mask(
    memory: CausalCanvas,
    kind: str,
    offsets: torch.Tensor,
    causal: torch.Tensor,
    dtype: torch.dtype,
    text: Any,
) -> torch.Tensor:
    """(B, 1, R, T + R) additive mask of one layer type (see `rows_forward`)."""
    index = text.layer_types.index(kind)
    prompt_keys = memory.prompt[index].keys.shape[2]
    batch, rows = causal.shape
    device = causal.device
    lengths = memory.prompt_lengths[:, None]  # (B, 1)
    # Key positions: the prompt's last `prompt_keys` tokens (a sliding layer may keep
    # fewer), the kept canvas positions, the kept suffix rows, then the rows.
    prompt_pos = lengths - prompt_keys + torch.arange(prompt_keys, device=device)
    canvas_pos = lengths + torch.arange(memory.committed, device=device)
    parts = [prompt_pos, canvas_pos.expand(batch, -1)]
    clean = [torch.ones(batch, prompt_keys + memory.committed, dtype=torch.bool)]
    valid = [prompt_pos >= 0, torch.ones_like(canvas_pos, dtype=torch.bool)]
    if memory.prompt_valid is not None:
        valid[0] = valid[0] & memory.prompt_valid[:, -prompt_keys:]
    if memory.suffix:
        assert memory.suffix_positions is not None
        parts.append(lengths + memory.suffix_positions)
        clean.append(torch.zeros(batch, len(memory.suffix_positions), dtype=torch.bool))
        valid.append(torch.ones(batch, len(memory.suffix_positions), dtype=torch.bool))
    row_pos = lengths + offsets
    parts.append(row_pos)
    clean.append(causal.cpu())
    valid.append(torch.ones(batch, rows, dtype=torch.bool))
    key_pos = torch.cat([p.expand(batch, -1) for p in parts], dim=1)  # (B, K)
    key_clean = torch.cat(clean, dim=1).to(device)
    key_valid = torch.cat([v.expand(batch, -1).to(device) for v in valid], dim=1)
    q_pos = row_pos[:, :, None]  # (B, R, 1)
    seen = key_clean[:, None, :] & (key_pos[:, None, :] <= q_pos)
    window = getattr(text, "sliding_window", None)
    if kind == "sliding_attention" and window:
        seen = seen & (q_pos - key_pos[:, None, :] < window)
    allowed = key_valid[:, None, :] & torch.where(causal[..., None], seen, True)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def accept_drafts(
    predicted: Sequence[int], drafts: Sequence[int]
) -> tuple[list[int], int]:
    """Speculative acceptance, exact: the base's tokens while the drafts agree.

    Args:
        predicted: the base's argmax after the last committed token, then after each
            draft (len(drafts) + 1 of them, or fewer where rows ran out).
        drafts: the tokens that were read after the last committed token.

    Returns:
        The tokens to commit (at least one) and how many drafts they confirm (whose
        keys and values, read with the right token, can be kept).
    """
    out = [predicted[0]]
    for i, draft in enumerate(drafts):
        if draft != out[-1] or i + 1 >= len(predicted):
            return out, i
        out.append(predicted[i + 1])
    return out, len(drafts)


def lookup_drafts(
    history: Sequence[int],
    sources: Sequence[Sequence[int]],
    count: int,
    min_match: int = 2,
    max_match: int = 4,
) -> list[int]:
    """Tokens that followed the longest recent repeat of `history`'s end (prompt
    lookup): the prefix and the suffix of a file often spell what comes next.

    Args:
        history: every token before the open slot (prefix, then committed).
        sources: token sequences to search (the history itself, the suffix).
        count: most tokens to propose.
        min_match, max_match: the shortest and longest end of `history` matched.

    Returns:
        Up to `count` draft tokens; none when nothing matches.
    """
    if count <= 0 or len(history) < min_match:
        return []
    for n in range(min(max_match, len(history)), min_match - 1, -1):
        tail = list(history[-n:])
        for source in sources:
            found = _last_occurrence(source, tail)
            if found is not None:
                follow = list(source[found + n : found + n + count])
                if follow:
                    return follow
    return []


def _last_occurrence(seq: Sequence[int], tail: list[int]) -> int | None:
    """The start of the last occurrence of `tail` in `seq` that something follows
    (so `history`'s own end is never its own repeat)."""
    n = len(tail)
    first = tail[0]
    for i in range(len(seq) - n - 1, -1, -1):
        if seq[i] == first and list(seq[i : i + n]) == tail:
            return i
    return None


@torch.no_grad()
def score_text(
    model: Any, memory: CausalCanvas, rows: Sequence[Sequence[int]], start: int
) -> list[float]:
    """Log-probability the base gives each row of tokens read after canvas position
    `start` - 1 (B rows, the same prompt and kept positions as `memory`).

    Row b's first token is scored from the logits of the kept position before it,
    which `rows_forward` does not return: the caller passes `memory` kept up to
    `start` - 1 and the token at `start` - 1 first in every row.
    """
    longest = max(len(r) for r in rows)
    device = memory.prompt[0].keys.device
    ids = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(list(row), dtype=torch.long)
    causal = torch.ones_like(ids, dtype=torch.bool)
    logits, _ = rows_forward(model, memory, ids, start - 1, causal)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, R-1, V)
    picked = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, R-1)
    out = []
    for b, row in enumerate(rows):
        out.append(float(picked[b, : len(row) - 1].sum()))
    return out


def check_shift(model: Any) -> None:
    """The floor reads slot i from position i - 1: the model must have that shift."""
    if readout_shift(model) != 1:
        raise ValueError(
            "floor decoding needs a model read with a readout shift of 1 (one "
            f"converted from a left-to-right base); this one has {readout_shift(model)}"
        )
