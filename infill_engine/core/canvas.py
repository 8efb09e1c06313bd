"""The canvas: pinned prefix tail | span slots | pinned suffix head | pinned padding.

A canvas has `canvas_length` positions. The prefix that does not fit in front of the
span
goes to the encoder as its prompt (one prefill fills the KV cache), so nothing of the
prefix is dropped. Several span lengths share one prompt: the prefix tail has the same
length in every row and the suffix head absorbs the difference. Training builds its
examples with the same `plan_canvas`, so the model sees the layout the engine uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CanvasBatch:
    """One prompt and one canvas row per span length.

    Attributes:
        prompt_ids: (1, P) encoder prompt: BOS then the prefix head that did not fit.
        canvas: (B, L) pinned tokens in place; span slots hold `pad_id` placeholders.
        pinned: (B, L) True where the sampler must never change the token.
        span_start: first span position (the same in every row).
        span_lengths: span slots of each row.
        healed: the text of the prefix's last token, left off the canvas so that the
            first span slot writes it again, possibly as a longer token (token
            healing); every row's fill starts with it. Empty: nothing was left off.
    """

    prompt_ids: torch.Tensor
    canvas: torch.Tensor
    pinned: torch.Tensor
    span_start: int
    span_lengths: tuple[int, ...]
    healed: str = ""

    @property
    def span_mask(self) -> torch.Tensor:
        """(B, L) True on span slots."""
        return ~self.pinned

    @property
    def window(self) -> slice:
        """The positions that hold a span slot in any row."""
        return slice(self.span_start, self.span_start + max(self.span_lengths))


def plan_canvas(
    prefix_ids: Sequence[int],
    suffix_ids: Sequence[int],
    span_lengths: Sequence[int],
    canvas_length: int,
    bos_id: int,
    pad_id: int,
    max_prompt_tokens: int | None = None,
    prompt_step: int = 1,
    readout_shift: int = 0,
) -> CanvasBatch:
    """Lay out prefix, span slots and suffix for each span length.

    The context budget is `canvas_length - max(span_lengths)`; the prefix tail gets up
    to half of it (more when the suffix is short), the suffix head the rest of its row.

    Args:
        prefix_ids: token ids of the text before the span.
        suffix_ids: token ids of the text after the span.
        span_lengths: span slots to try, one canvas row each.
        canvas_length: positions per canvas (the model's `canvas_length`).
        bos_id: first token of every encoder prompt.
        pad_id: placeholder for span slots and filler after a short suffix.
        max_prompt_tokens: the prompt (BOS included) keeps at most this many tokens:
            the prefix tokens furthest from the span are dropped. None keeps all.
        prompt_step: prefix tokens are dropped in multiples of this many, counted
            from the first. While text is typed at the span, the prompt's first token
            then stays put for `prompt_step` tokens and each prompt extends the one
            before, so its prefill is reused.
        readout_shift: the model reads slot i from position i - shift, so at least
            this many positions before the span are pinned: a shorter prefix gets
            BOS in front of it on the canvas.

    Returns:
        The batch of canvases, B = len(span_lengths).
    """
    if max_prompt_tokens is not None and max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be >= 1 (got {max_prompt_tokens})")
    if prompt_step < 1:
        raise ValueError(f"prompt_step must be >= 1 (got {prompt_step})")
    if len(prefix_ids) < readout_shift:
        prefix_ids = [bos_id] * (readout_shift - len(prefix_ids)) + list(prefix_ids)
    # Dropping prefix tokens can move the tail/suffix split when little prefix is left,
    # so re-plan until the prompt fits; every pass drops at least one step.
    limit = max_prompt_tokens or len(prefix_ids) + 1
    while True:
        batch = _plan(
            prefix_ids, suffix_ids, span_lengths, canvas_length, bos_id, pad_id
        )
        excess = batch.prompt_ids.shape[1] - limit
        if excess <= 0:
            return batch
        prefix_ids = prefix_ids[round_up(excess, prompt_step) :]


def _plan(
    prefix_ids: Sequence[int],
    suffix_ids: Sequence[int],
    span_lengths: Sequence[int],
    canvas_length: int,
    bos_id: int,
    pad_id: int,
) -> CanvasBatch:
    if not span_lengths:
        raise ValueError("span_lengths must not be empty")
    longest = max(span_lengths)
    if min(span_lengths) <= 0 or longest >= canvas_length:
        raise ValueError(
            f"span lengths must be in 1..{canvas_length - 1} (got {list(span_lengths)})"
        )
    budget = canvas_length - longest
    suffix_share = min(len(suffix_ids), max(budget // 2, budget - len(prefix_ids)))
    tail = min(len(prefix_ids), budget - suffix_share)
    head = list(prefix_ids[: len(prefix_ids) - tail])
    prefix_tail = list(prefix_ids[len(prefix_ids) - tail :])

    rows, pins = [], []
    for span in span_lengths:
        suffix_head = list(suffix_ids[: canvas_length - tail - span])
        filler = canvas_length - tail - span - len(suffix_head)
        rows.append(prefix_tail + [pad_id] * span + suffix_head + [pad_id] * filler)
        pins.append(
            [True] * tail + [False] * span + [True] * (len(suffix_head) + filler)
        )
    return CanvasBatch(
        prompt_ids=torch.tensor([[bos_id, *head]], dtype=torch.long),
        canvas=torch.tensor(rows, dtype=torch.long),
        pinned=torch.tensor(pins, dtype=torch.bool),
        span_start=tail,
        span_lengths=tuple(span_lengths),
    )


def round_up(value: int, step: int) -> int:
    """The smallest multiple of `step` that is >= `value`."""
    return -(-value // step) * step


def span_targets(
    batch: CanvasBatch, middle_ids: Sequence[int], eos_id: int
) -> torch.Tensor:
    """The clean canvas the model should produce: the middle, then end-of-span tokens.

    Args:
        batch: canvases from `plan_canvas`.
        middle_ids: the true middle; longer than a row's span, it is cut to fit.
        eos_id: the end-of-span token that fills the slots after the middle.

    Returns:
        (B, L) targets; pinned positions keep their pinned tokens.
    """
    target = batch.canvas.clone()
    for row, span in enumerate(batch.span_lengths):
        fill = list(middle_ids[:span]) + [eos_id] * max(0, span - len(middle_ids))
        target[row, batch.span_start : batch.span_start + span] = torch.tensor(fill)
    return target


def cut_at_end_of_span(ids: Sequence[int], end_ids: set[int]) -> list[int]:
    """EOS as delete: everything from the first end-of-span token on is removed."""
    out: list[int] = []
    for token in ids:
        if token in end_ids:
            break
        out.append(token)
    return out
