"""The denoising loop: one canvas batch in, the argmax canvas out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from infill_engine.core.canvas import CanvasBatch
from infill_engine.core.config import DenoiseConfig
from infill_engine.core.denoiser import Denoiser, Stopped
from infill_engine.core.floor import (
    accept_drafts,
    causal_canvas,
    lookup_drafts,
    rows_forward,
)
from infill_engine.core.sampler import (
    EntropyBoundSampler,
    LinearTemperature,
    token_entropy,
)
from infill_engine.core.stopping import StableAndConfident

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


@dataclass(frozen=True)
class FloorOutcome:
    """What `decode_floor` committed.

    Attributes:
        tokens: per row, the span tokens committed, up to and without an end-of-span
            token (EOS as delete), with a line break kept where a row stopped at one.
        complete: per row, whether it stopped before its slots ran out.
        confidence: per row, the mean probability the base gave its tokens.
        steps: forwards run.
        memory: the kept keys and values (`floor.CausalCanvas`), for a rerank.
        drafted, confirmed: draft tokens read, and those the base confirmed.
    """

    tokens: list[list[int]]
    complete: list[bool]
    confidence: list[float]
    steps: int
    cancelled: bool
    memory: Any = None
    drafted: int = 0
    confirmed: int = 0


def decode_floor(
    model: Any,
    state: Any,
    batch: CanvasBatch,
    slots: int,
    end_ids: set[int],
    cancel: Callable[[], bool] = lambda: False,
    first_slot: torch.Tensor | None = None,
    ranks: Sequence[int] | None = None,
    stop_ids: set[int] | None = None,
    suffixes: Sequence[Sequence[int]] = (),
    draft_tokens: int = 0,
    prompts: Sequence[Sequence[int]] | None = None,
    reached: Callable[[int, list[int]], bool] | None = None,
    on_step: Callable[[StepView], None] | None = None,
) -> FloorOutcome:
    """Commit span slots from the span's start, each the base's own next token.

    Every row's committed positions are read causally (`floor.rows_forward`), so each
    commit is the left-to-right base's greedy token with token healing: the floor. A
    step also reads up to `draft_tokens` drafts after the last committed token (what
    followed the same tokens earlier in the prefix or in the suffix) and commits those
    the base confirms, so a step may commit several tokens and never a different one.

    1. Keep the prompt's keys and values; nothing of the canvas is kept yet.
    2. Until every row has stopped or used its `slots`:
       a. Return a cancelled outcome if `cancel()` says so.
       b. Run, in one forward, each row's committed tokens not yet kept (the prefix
          tail at the first step) and its drafts, all read causally.
       c. Take the base's argmax after the last committed token (only `first_slot`'s
          tokens for the first slot; the `ranks[b]`-th best there for row b) and
          after each draft; commit it and every draft it confirms.
       d. Stop a row at an end-of-span token (dropped), a `stop_ids` token (kept), or
          once `reached` says it ran into the suffix.
       e. Keep the keys and values of positions every open row has confirmed.
       f. Draft each open row's next tokens from its prefix and `suffixes[b]`.
    3. Return the committed tokens.

    Args:
        model: a converted `DiffusionGemmaForBlockDiffusion` (readout shift 1).
        state: the denoiser's prefill for B rows (`DiffusionGemmaDenoiser.prefill`).
        batch: canvases of B rows; only the prefix tail (`span_start` positions) is
            read.
        slots: most tokens a row commits.
        end_ids: end-of-span tokens.
        cancel: checked between steps.
        first_slot: (B, V) the tokens the first slot may hold (token healing).
        ranks: per row, which of the first slot's best tokens it commits (0: the
            argmax); rows with rank > 0 are the alternatives a rerank weighs.
        stop_ids: tokens a row stops after (a line break, for a single-line span).
        suffixes: per row, the suffix's tokens, searched for drafts.
        draft_tokens: most drafts read per step (0: one token per forward).
        prompts: per row, the prompt's tokens (searched for drafts); default the
            batch's one prompt for every row.
        reached: `reached(b, tokens)` says row b's committed tokens have run into
            the text after the span (it then stops; the caller cuts what overlaps).
        on_step: called after every step with the batch's canvas: the prefix tail,
            the committed tokens, then the open slots.
    """
    rows, tail = batch.canvas.shape[0], batch.span_start
    device = state.positions.device
    ranks = list(ranks or [0] * rows)
    prompts = prompts or [batch.prompt_ids[0].tolist()] * rows
    prefix = [batch.canvas[b, :tail].tolist() for b in range(rows)]
    banned = None if first_slot is None else ~first_slot.to(device)  # (B, V)
    memory = causal_canvas(state)  # 1.
    committed: list[list[int]] = [[] for _ in range(rows)]
    logp = [0.0] * rows
    drafts: list[list[int]] = [[] for _ in range(rows)]
    open_rows = [True] * rows
    complete = [False] * rows
    steps = drafted = confirmed = 0
    while any(open_rows):
        if cancel():  # 2.a
            return FloorOutcome(committed, complete, [0.0] * rows, steps, True, memory)
        start = memory.committed
        inputs = [(prefix[b] + committed[b])[start:] + drafts[b] for b in range(rows)]
        width = max(len(r) for r in inputs)
        ids = torch.full((rows, width), batch.canvas[0, 0].item(), dtype=torch.long)
        for b, row in enumerate(inputs):
            ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        causal = torch.ones(rows, width, dtype=torch.bool, device=device)
        lasts = [tail + len(committed[b]) - 1 - start for b in range(rows)]
        first = min(lasts[b] for b in range(rows) if open_rows[b])
        logits, kv = rows_forward(
            model, memory, ids.to(device), start, causal, first
        )  # 2.b
        steps += 1
        logits = torch.log_softmax(logits.float(), dim=-1)  # (B, R - first, V)
        keep = None
        for b in range(rows):
            if not open_rows[b]:
                continue
            last = lasts[b] - first  # the last committed row, among those read
            read = logits[b, last : last + len(drafts[b]) + 1]  # (D + 1, V)
            if not committed[b] and banned is not None:
                read = read.clone()
                read[0] = read[0].masked_fill(banned[b], -1e4)
            predicted = read.argmax(-1).tolist()
            if not committed[b] and ranks[b]:  # 2.c an alternative first token
                predicted = [int(read[0].topk(ranks[b] + 1).indices[-1])]
                drafts[b] = []
            tokens, agreed = accept_drafts(predicted, drafts[b])
            drafted, confirmed = drafted + len(drafts[b]), confirmed + agreed
            for i, token in enumerate(tokens):
                if len(committed[b]) >= slots:
                    break
                if token in end_ids:  # 2.d
                    open_rows[b], complete[b] = False, True
                    break
                logp[b] += float(read[i, token])
                committed[b].append(token)
                if stop_ids and token in stop_ids:
                    open_rows[b], complete[b] = False, True
                    break
            if len(committed[b]) >= slots:
                open_rows[b] = False
            elif open_rows[b] and reached is not None and reached(b, committed[b]):
                open_rows[b], complete[b] = False, True
            if open_rows[b]:
                confirmed_end = tail + len(committed[b]) - 1
                keep = confirmed_end if keep is None else min(keep, confirmed_end)
        if keep is not None:
            memory.extend(kv, keep - start)  # 2.e
        if on_step is not None:
            on_step(_floor_view(steps, slots, batch, committed))
        for b in range(rows):  # 2.f
            drafts[b] = []
            if open_rows[b] and draft_tokens:
                room = slots - len(committed[b])
                history = [*prompts[b], *prefix[b], *committed[b]]
                sources = [history, *([suffixes[b]] if len(suffixes) > b else [])]
                drafts[b] = lookup_drafts(history, sources, min(draft_tokens, room))
    confidence = [
        float(torch.tensor(logp[b] / max(len(committed[b]), 1)).exp())
        for b in range(rows)
    ]
    return FloorOutcome(
        committed, complete, confidence, steps, False, memory, drafted, confirmed
    )  # 3.


def _floor_view(
    index: int, slots: int, batch: CanvasBatch, committed: list[list[int]]
) -> StepView:
    """A `StepView` of floor decoding: committed slots accepted, the rest open."""
    canvas = batch.canvas.clone()
    accepted = torch.zeros_like(batch.pinned)
    for b, tokens in enumerate(committed):
        n = min(len(tokens), canvas.shape[1] - batch.span_start)
        canvas[b, batch.span_start : batch.span_start + n] = torch.tensor(tokens[:n])
        accepted[b, batch.span_start : batch.span_start + n] = True
    return StepView(index, slots, canvas, canvas.clone(), accepted, batch.pinned)
