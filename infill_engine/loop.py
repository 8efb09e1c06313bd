"""The denoising loop: one canvas batch in, the argmax canvas out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from infill_engine.canvas import CanvasBatch
from infill_engine.config import DenoiseConfig
from infill_engine.denoiser import Denoiser
from infill_engine.sampler import EntropyBoundSampler, LinearTemperature
from infill_engine.stopping import StableAndConfident


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
    """argmax: (B, L) final canvas; logits: (B, L, V) last processed logits."""

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
) -> LoopOutcome:
    """Denoise the span slots of every canvas row; pinned positions never change.

    1. Initialise: span slots get uniform noise; pinned positions hold their tokens.
    2. For cur_step = N..1, until every row has stopped:
       a. Return a cancelled outcome if `cancel()` says so (checked between steps).
       b. Run the denoiser with the previous step's logits (self-conditioning).
       c. Scale the logits by the temperature for cur_step; draw proposals and argmax.
       d. Accept the lowest-entropy span slots within the bound; renoise the others.
       e. Freeze rows that stopped before; update the stopping rule.
       f. Keep the processed logits for self-conditioning; report the step.
    3. Return the argmax canvas of the last step.
    """
    device = denoiser.device
    gen = torch.Generator(device=device).manual_seed(config.seed)
    sampler = EntropyBoundSampler(config.entropy_bound, greedy=config.greedy)
    temperature = LinearTemperature(config.t_max, config.t_min, config.max_steps)
    stopping = StableAndConfident(
        config.stability_threshold, config.confidence_threshold
    )
    pinned, span = batch.pinned.to(device), batch.span_mask.to(device)
    # 1. Initialise
    none = torch.zeros_like(span)
    canvas = sampler.renoise(
        batch.canvas.to(device), none, span, denoiser.vocab_size, gen
    )
    argmax, logits, done, steps = canvas, None, none[:, 0], 0
    for cur_step in range(config.max_steps, 0, -1):
        if cancel():  # 2.a
            return LoopOutcome(argmax, logits, steps, cancelled=True)
        raw = denoiser(canvas, logits, state)  # 2.b  (B, L, V)
        steps += 1
        processed = raw / temperature(cur_step)  # 2.c
        proposal = torch.where(pinned, canvas, sampler.draw(processed, gen))
        new_argmax = torch.where(pinned, canvas, processed.argmax(-1))
        accepted = sampler.accept(processed, span)  # 2.d
        new_canvas = sampler.renoise(
            torch.where(accepted, proposal, canvas),
            accepted,
            span,
            denoiser.vocab_size,
            gen,
        )
        frozen = done[:, None]  # 2.e
        argmax = torch.where(frozen, argmax, new_argmax)
        canvas = torch.where(frozen, canvas, new_canvas)
        if logits is not None:
            processed = torch.where(frozen[..., None], logits, processed)
        done = done | stopping(argmax, processed, span)
        logits = processed  # 2.f
        if on_step is not None:
            on_step(StepView(steps, config.max_steps, canvas, argmax, accepted, pinned))
        if bool(done.all()):
            break
    return LoopOutcome(argmax, logits, steps, cancelled=False)  # 3.
