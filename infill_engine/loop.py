"""The denoising loop: one canvas batch in, the argmax canvas out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from infill_engine.canvas import CanvasBatch
from infill_engine.config import DenoiseConfig
from infill_engine.denoiser import Denoiser, Stopped
from infill_engine.sampler import EntropyBoundSampler, LinearTemperature, token_entropy
from infill_engine.stopping import StableAndConfident

# The logit of a token the first span slot may not hold: no probability at any
# temperature, and finite, so nothing downstream meets inf - inf.
_BANNED = -1e4


@dataclass(frozen=True)
class StepView:
    """What a per-step callback sees after step `index` (1-based).

    Attributes:
        index: steps done so far.
        max_steps: the step budget.
        canvas: (B, L) the canvas the next step will read (accepted tokens + noise).
        argmax: (B, L) the model's current best guess at every position.
        accepted: (B, L) span slots accepted at this step.
        pinned: (B, L) positions that never change.
    """

    index: int
    max_steps: int
    canvas: torch.Tensor
    argmax: torch.Tensor
    accepted: torch.Tensor
    pinned: torch.Tensor


@dataclass(frozen=True)
class LoopOutcome:
    """argmax: (B, L) final canvas; logits: (B, W, V) last processed window logits."""

    argmax: torch.Tensor
    logits: torch.Tensor | None
    steps: int
    cancelled: bool


def denoise(
    denoiser: Denoiser,
    state: Any,
    batch: CanvasBatch,
    config: DenoiseConfig,
    cancel: Callable[[], bool] = lambda: False,
    on_step: Callable[[StepView], None] | None = None,
    window: slice | None = None,
    first_slot: torch.Tensor | None = None,
) -> LoopOutcome:
    """Denoise the span slots of every canvas row; pinned positions never change.

    Logits are computed for `window` (default: the span slots of the batch); the
    sampler, stopping rule and self-conditioning all work on that window.
    `first_slot` (B, V) bool, if given, lists the tokens each row's first span slot
    may hold (token healing); the others get no probability.

    1. Initialise: span slots get noise (uniform ids, or the denoiser's `mask_id`);
       pinned positions hold their tokens.
    2. For cur_step = N..1, until every row has stopped:
       a. Return a cancelled outcome if `cancel()` says so (checked between steps,
          and within a step by a denoiser that raises `Stopped`).
       b. Run the denoiser with the previous step's logits (self-conditioning) and the
          known positions (pinned, and the slots accepted at the previous step): over
          the whole canvas, or the window only between refreshes (`refresh_every`).
       c. Scale the logits by the temperature for cur_step; take the argmax.
       d. Accept the lowest-entropy span slots within the bound (and, on the linear
          schedule, at least ceil(n * i / N) of a row's n slots at step i), draw their
          proposals; renoise the others.
       e. Freeze rows that stopped before; update the stopping rule.
       f. Keep the processed logits for self-conditioning; report the step.
    3. Return the argmax canvas of the last step.
    """
    device, w = denoiser.device, window or batch.window
    gen = torch.Generator(device=device).manual_seed(config.seed)
    sampler = EntropyBoundSampler(config.entropy_bound, greedy=config.greedy)
    temperature = LinearTemperature(config.t_max, config.t_min, config.max_steps)
    stopping = StableAndConfident(
        config.stability_threshold, config.confidence_threshold
    )
    known = batch.pinned.to(device).clone()  # (B, L): pinned, then also accepted
    pinned, span = known[:, w].clone(), batch.span_mask.to(device)[:, w]
    # 1. Initialise
    canvas = batch.canvas.to(device).clone()  # (B, L)
    none = torch.zeros_like(span)
    mask_id = getattr(denoiser, "mask_id", None)
    canvas[:, w] = sampler.renoise(
        canvas[:, w], none, span, denoiser.vocab_size, gen, mask_id
    )
    argmax, logits, done, steps = canvas[:, w], None, none[:, 0], 0  # (B, W)
    slots = span.sum(-1, keepdim=True)  # (B, 1)
    first = batch.span_start - w.start  # the first span slot, in the window
    banned = None if first_slot is None else ~first_slot.to(device)  # (B, V)
    previous_entropy = torch.zeros(span.shape, device=device)  # (B, W)
    for cur_step in range(config.max_steps, 0, -1):
        if cancel():  # 2.a
            return LoopOutcome(_place(canvas, w, argmax), logits, steps, cancelled=True)
        full = config.is_full(steps)
        try:
            raw = denoiser(canvas, logits, state, w, known, full=full)  # 2.b (B,W,V)
        except Stopped:  # the cancel flag, seen by the denoiser within the step
            return LoopOutcome(_place(canvas, w, argmax), logits, steps, cancelled=True)
        steps += 1
        if banned is not None:
            raw = raw.clone()
            raw[:, first] = raw[:, first].masked_fill(banned, _BANNED)
        processed = raw / temperature(cur_step)  # 2.c
        current = canvas[:, w]
        new_argmax = torch.where(pinned, current, processed.argmax(-1))
        floor = None
        if config.schedule == "linear":
            floor = (slots * steps + config.max_steps - 1) // config.max_steps
        entropy = token_entropy(processed)  # (B, W), shared by 2.d and 2.e
        accepted = sampler.accept(processed, span, floor, entropy)  # 2.d
        frozen = done[:, None]  # 2.e
        argmax = torch.where(frozen, argmax, new_argmax)
        if logits is not None:
            processed = torch.where(frozen[..., None], logits, processed)
            entropy = torch.where(frozen, previous_entropy, entropy)
        done = done | stopping(argmax, processed, span, entropy)
        if cur_step == 1 or bool(done.all()):
            # The last step: the result is the argmax, nothing is drawn or renoised.
            renoised = argmax
        else:
            proposal = sampler.draw(processed, accepted, gen)
            kept = torch.where(accepted, proposal, current)
            renoised = sampler.renoise(
                kept, accepted, span, denoiser.vocab_size, gen, mask_id
            )
        canvas[:, w] = torch.where(frozen, current, renoised)
        known[:, w] = torch.where(frozen, known[:, w], pinned | accepted)
        logits, previous_entropy = processed, entropy  # 2.f
        if on_step is not None:
            on_step(_view(steps, config.max_steps, canvas, argmax, accepted, batch, w))
        if bool(done.all()):
            break
    return LoopOutcome(_place(canvas, w, argmax), logits, steps, cancelled=False)  # 3.


def _place(canvas: torch.Tensor, w: slice, window_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) canvas with the window replaced by (B, W) ids."""
    out = canvas.clone()
    out[:, w] = window_ids
    return out


def _view(
    index: int,
    max_steps: int,
    canvas: torch.Tensor,
    argmax: torch.Tensor,
    accepted: torch.Tensor,
    batch: CanvasBatch,
    w: slice,
) -> StepView:
    full_accepted = torch.zeros_like(batch.pinned, device=canvas.device)
    full_accepted[:, w] = accepted
    return StepView(
        index,
        max_steps,
        canvas.clone(),
        _place(canvas, w, argmax),
        full_accepted,
        batch.pinned,
    )
