"""The engine: text in, filled span out, with the model resident on its device.

    engine = InfillEngine.load("path/or/hub-id", device="auto")
    result = engine.fill(InfillRequest(prefix="def add(a, b):\\n    ", suffix="\\n"))
    print(result.text, result.steps, result.tokens_per_forward)

It knows nothing of editors: no LSP, no tree-sitter. Callers pass a cancel callable that
the loop checks between steps, and may pass a validity check to rank candidates.
`fill_batch` fills several requests at once, sharing each denoising step among those
whose canvases have one shape (a server batching its clients: `infill serve`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from infill_engine.core.canvas import (
    CanvasBatch,
    cut_at_end_of_span,
    plan_canvas,
    round_up,
)
from infill_engine.core.config import DenoiseConfig
from infill_engine.core.denoiser import DiffusionGemmaDenoiser, Stopped
from infill_engine.core.floor import check_shift
from infill_engine.core.healing import TokenHealing, unheal
from infill_engine.core.loop import StepView, decode_floor, denoise
from infill_engine.model import loader
from infill_engine.model.device import Placement, sync

DEFAULT_SPAN_LENGTHS = (32, 64)
# The encoder prompt is cut to this many tokens (nearest to the span kept).
DEFAULT_MAX_PROMPT_TOKENS = 1024
# Text beyond this many characters per token of budget is never tokenized.
_CHARS_PER_TOKEN = 8
# The far prefix is dropped this many characters, then tokens, at a time.
_CHAR_STEP = 256
_PROMPT_STEP = 32
# Floor decoding searches this much of the suffix for drafts; its rerank reads this
# much of it after each fill.
_DRAFT_CHARS = 2048
# A single-line floor fill may write this many tokens: it stops at its line break, so
# slots cost nothing until used (the left-to-right baseline writes up to 48 too).
FLOOR_LINE_TOKENS = 48
_RERANK_LINES = 2
_RERANK_CHARS = 120
# What a plan depends on: the prefix, the suffix and the span lengths asked for.
_PlanKey = tuple[str, int, str, str, tuple[int, ...]]


@dataclass(frozen=True)
class InfillRequest:
    """One hole to fill.

    Attributes:
        prefix: text before the hole.
        suffix: text after the hole.
        span_lengths: span slots to try as one batch; None uses the engine's default.
        config: per-request overrides of the denoising settings.
        validate: optional check of a candidate's text; valid candidates rank first.
        single_line: the fill ends at its first line break (a line span); floor
            decoding stops there instead of writing lines no one reads.
        context: text read before the prefix, from other files (the server's
            cross-file chunks): it opens the prompt, at most `context_tokens` tokens of
            it (its start is cut first), and the prefix fills the rest of the prompt.
        context_tokens: the most prompt tokens `context` may take; 0: half the
            engine's prompt.
    """

    prefix: str
    suffix: str
    span_lengths: Sequence[int] | None = None
    config: DenoiseConfig | None = None
    validate: Callable[[str], bool] | None = None
    single_line: bool = False
    context: str = ""
    context_tokens: int = 0


@dataclass(frozen=True)
class Candidate:
    """One row's result: a span length's, or in floor decoding an alternative's.

    `alternative`: which of the first slot's best tokens the row began with (0: the
    greedy line); `suffix_score`: the base's log-probability of the fill read on
    into the suffix's first lines, where a rerank computed it."""

    text: str
    span_length: int
    score: float
    complete: bool
    valid: bool
    tokens: int
    alternative: int = 0
    suffix_score: float | None = None


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent in each phase of a request."""

    tokenize_ms: float = 0.0
    prefill_ms: float = 0.0
    denoise_ms: float = 0.0
    decode_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        """Sum of all phases."""
        return self.tokenize_ms + self.prefill_ms + self.denoise_ms + self.decode_ms

    def plus(self, other: Timings) -> Timings:
        """Phase by phase, the time of this and `other` together."""
        return Timings(
            self.tokenize_ms + other.tokenize_ms,
            self.prefill_ms + other.prefill_ms,
            self.denoise_ms + other.denoise_ms,
            self.decode_ms + other.decode_ms,
        )


@dataclass(frozen=True)
class InfillResult:
    """The winning middle and how it was made.

    Attributes:
        text: the middle to insert ('' when cancelled).
        cancelled: the cancel flag stopped the loop; `text` is empty.
        steps: decoder forwards run.
        tokens_per_forward: winning row's tokens (its end-of-span included) per forward.
        span_length: the winning row's span slots.
        score: mean confidence of the winning row's tokens.
        candidates: every row's result, best first.
        timings: time per phase.
        prefilled_tokens: prompt tokens the encoder ran for this request (0: a stored
            prefill covered the whole prompt).
    """

    text: str
    cancelled: bool
    steps: int
    tokens_per_forward: float
    span_length: int
    score: float
    candidates: tuple[Candidate, ...] = ()
    timings: Timings = field(default_factory=Timings)
    prefilled_tokens: int = 0

    @classmethod
    def best_of(
        cls,
        candidates: Sequence[Candidate],
        steps: int,
        timings: Timings,
        prefilled_tokens: int = 0,
    ) -> InfillResult:
        """The result whose text is the first of ranked `candidates` (`ranked`)."""
        best = candidates[0]
        produced = best.tokens + (1 if best.complete else 0)
        return cls(
            text=best.text,
            cancelled=False,
            steps=steps,
            tokens_per_forward=produced / max(steps, 1),
            span_length=best.span_length,
            score=best.score,
            candidates=tuple(candidates),
            timings=timings,
            prefilled_tokens=prefilled_tokens,
        )

    @classmethod
    def stopped(
        cls, steps: int, timings: Timings, prefilled_tokens: int = 0
    ) -> InfillResult:
        """The empty result of a fill the cancel flag stopped after `steps` steps."""
        return cls("", True, steps, 0.0, 0, 0.0, (), timings, prefilled_tokens)


CancelFlag = Callable[[], bool] | threading.Event | None


def ranked(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Best first: valid, then complete, then confident; ties keep their order."""
    return sorted(
        candidates, key=lambda c: (c.valid, c.complete, c.score), reverse=True
    )


def valid_first(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Valid, then complete, candidates first; equals keep the order they came in
    (best first already: confidence for diffusion rows, the rerank's for floor
    alternatives)."""
    return sorted(candidates, key=lambda c: (c.valid, c.complete), reverse=True)


def retried(
    result: InfillResult,
    request: InfillRequest,
    config: DenoiseConfig,
    again: Callable[[DenoiseConfig], InfillResult],
) -> InfillResult:
    """`result`, or, when the request's validity check fails every candidate of a
    floor fill, those candidates followed by the alternatives' (`again`).

    `again(config)` fills the request once more with `config.fallback_alternatives`
    - `config.alternatives` rows, each starting with one of the first slot's
    next-best tokens after those already tried; the prompt's prefill is reused. The
    greedy line stays first whenever it is valid, so the fallback changes only
    fills that would add a syntax error: the suffix, through the check, decides
    them.
    """
    k = config.fallback_alternatives - config.alternatives
    if (
        k < 1
        or config.decoding != "floor"
        or request.validate is None
        or result.cancelled
        or any(c.valid for c in result.candidates)
    ):
        return result
    more = again(config.with_overrides(alternatives=k))
    if more.cancelled:
        return result
    seen = {c.text for c in result.candidates}
    fresh = [c for c in more.candidates if c.text not in seen]
    return InfillResult.best_of(
        valid_first([*result.candidates, *fresh]),
        result.steps + more.steps,
        result.timings.plus(more.timings),
        result.prefilled_tokens + more.prefilled_tokens,
    )


def plan_request(
    request: InfillRequest,
    encode: Callable[[str], list[int]],
    canvas_length: int,
    default_spans: Sequence[int],
    max_prompt_tokens: int,
    bos_pad: tuple[int, int],
    readout_shift: int = 0,
    heal: Callable[[list[int]], tuple[list[int], str]] | None = None,
    floor: bool = False,
) -> CanvasBatch:
    """Tokenize the texts around the hole and lay out one canvas per span length (the
    request's, else `default_spans`), as the engine does; a remote client that seeds
    a server's canvas (`backends.vllm_client`) lays it out the same way.

    `heal` takes the prefix's ids and returns the ids to pin and the text left off
    (`CanvasBatch.healed`). `floor`: lay it out for floor decoding (one row, the
    prefix's last token before the slots)."""
    # A span never takes more than 3/4 of the canvas: context must stay pinned.
    longest = canvas_length * 3 // 4
    spans = tuple(
        dict.fromkeys(min(s, longest) for s in request.span_lengths or default_spans)
    )
    # The far prefix is cut on grids counted from its first character and token,
    # not from the span, so typing at the span leaves the prompt's start in place
    # and each prompt extends the last: its prefill is reused.
    prefix = request.prefix
    prefix_chars = (max_prompt_tokens + canvas_length) * _CHARS_PER_TOKEN
    if len(prefix) > prefix_chars:
        prefix = prefix[round_up(len(prefix) - prefix_chars, _CHAR_STEP) :]
    suffix_ids = encode(request.suffix[: canvas_length * _CHARS_PER_TOKEN])
    context_ids = _context_ids(request, encode, max_prompt_tokens)
    max_prompt_tokens -= len(context_ids)
    prefix_ids, healed = encode(prefix), ""
    if heal is not None:
        prefix_ids, healed = heal(prefix_ids)
    if floor:
        # Floor decoding reads the prefix causally wherever it lies: all of it but
        # the last token goes to the prompt, whose prefill the store reuses from
        # keystroke to keystroke; the canvas holds that token and the slots.
        slots = max(request.span_lengths or default_spans)
        if request.single_line:
            slots = max(slots, FLOOR_LINE_TOKENS)
        batch = plan_canvas(
            prefix_ids,
            [],
            (slots,),
            slots + 1,
            bos_pad[0],
            bos_pad[1],
            max_prompt_tokens,
            _PROMPT_STEP,
            max(readout_shift, 1),
        )
        return _with_context(batch, context_ids, healed)
    batch = plan_canvas(
        prefix_ids,
        suffix_ids,
        spans,
        canvas_length,
        bos_pad[0],
        bos_pad[1],
        max_prompt_tokens,
        _PROMPT_STEP,
        readout_shift,
    )
    return _with_context(batch, context_ids, healed)


def _context_ids(
    request: InfillRequest, encode: Callable[[str], list[int]], max_prompt_tokens: int
) -> list[int]:
    """The request's cross-file context as prompt tokens, its end kept (the part
    nearest the prefix), within its budget and half the prompt at most."""
    if not request.context:
        return []
    cap = max_prompt_tokens // 2
    budget = min(request.context_tokens or cap, cap)
    text = request.context[-budget * _CHARS_PER_TOKEN :]
    return encode(text)[-budget:] if budget > 0 else []


def _with_context(
    batch: CanvasBatch, context_ids: list[int], healed: str
) -> CanvasBatch:
    """`batch` with `context_ids` right after the prompt's BOS, and `healed` set."""
    changes: dict[str, Any] = {"healed": healed} if healed else {}
    if context_ids:
        prompt = batch.prompt_ids
        ids = torch.tensor([context_ids], dtype=prompt.dtype)
        changes["prompt_ids"] = torch.cat([prompt[:, :1], ids, prompt[:, 1:]], dim=1)
    return replace(batch, **changes) if changes else batch


class InfillEngine:
    """A loaded model plus everything needed to fill spans with it.

    Args:
        model: a `DiffusionGemmaForBlockDiffusion` on its device, in eval mode.
        tokenizer: its tokenizer.
        placement: where the model lives.
        config: default denoising settings (checkpoint's generation config if None).
        span_lengths: default span slots tried per request.
        max_prompt_tokens: the encoder prompt (BOS included) keeps at most this many
            tokens, as in training; the prefix furthest from the span is dropped,
            32 tokens at a time, so the prompt's start stays put while typing.
        exact_self_conditioning: compute logits for the whole canvas at every step, as
            transformers' model does, instead of for the span slots only (slower; the
            same for positions in the span, close elsewhere).
        canvas_length: positions per canvas, at most the model's (None: the model's).
            A shorter canvas pins less text around the span and makes each step
            cheaper; the prefix that does not fit goes to the encoder as always.
        heal_last_token: token healing. The prefix's last token is left off the
            canvas and the first span slot may only hold a token that starts with its
            text; the fill is what follows that text. A hole cut mid-word (`ty|pe`)
            then reads as the model's tokenizer would have split the whole word.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        placement: Placement,
        config: DenoiseConfig | None = None,
        span_lengths: Sequence[int] = DEFAULT_SPAN_LENGTHS,
        max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
        exact_self_conditioning: bool = False,
        canvas_length: int | None = None,
        heal_last_token: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.placement = placement
        self.config = config or DenoiseConfig.from_generation_config(
            getattr(model, "generation_config", None)
        )
        self.span_lengths = tuple(span_lengths)
        self.max_prompt_tokens = max_prompt_tokens
        self.exact_self_conditioning = exact_self_conditioning
        trained = int(model.config.canvas_length)
        self.canvas_length = canvas_length or trained
        if not 16 <= self.canvas_length <= trained:
            raise ValueError(
                f"canvas_length must be in 16..{trained} (got {self.canvas_length})"
            )
        self.denoiser = DiffusionGemmaDenoiser(model)
        self.end_ids = _end_of_span_ids(model, tokenizer)
        self.bos_id = _special_id(tokenizer, model, "bos")
        self.pad_id = _special_id(tokenizer, model, "pad")
        self._line_breaks: set[int] | None = None
        self.heal_last_token = heal_last_token
        self._healing: TokenHealing | None = None
        if heal_last_token:  # 0.2 s for 32k tokens: at load, not at the first fill
            self._healing = self.healing
        self._lock = threading.Lock()
        self._last_plan: tuple[_PlanKey, CanvasBatch] | None = None

    @classmethod
    def load(
        cls,
        name_or_path: str | None = None,
        device: str = "auto",
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> InfillEngine:
        """Load a checkpoint (None: the default model) and build an engine around it.

        Defaults the checkpoint ships in `infill.json` apply unless `kwargs` sets them;
        its `denoise` object overrides the generation config's denoising settings.
        """
        loaded = loader.load(name_or_path, device, trust_remote_code)
        given = {key: value for key, value in kwargs.items() if value is not None}
        options = dict(loaded.engine_defaults) | given
        denoise_overrides = options.pop("denoise", {})
        if "config" not in options:
            options["config"] = DenoiseConfig.from_generation_config(
                getattr(loaded.model, "generation_config", None)
            ).with_overrides(**denoise_overrides)
        return cls(loaded.model, loaded.tokenizer, loaded.placement, **options)

    def fill(
        self,
        request: InfillRequest,
        cancel: CancelFlag = None,
        on_step: Callable[[StepView], None] | None = None,
    ) -> InfillResult:
        """Fill the span between `request.prefix` and `request.suffix`.

        Args:
            request: the texts around the hole and per-request settings.
            cancel: callable or Event checked between steps, and between layers by
                the model's denoiser; when set, the result is cancelled and empty.
            on_step: called after every step with the canvas (for live views).

        Returns:
            The best candidate, ranked by validity, completeness, then confidence.
        """
        t0 = time.perf_counter()
        batch = self._planned(request)
        planned = _Planned(
            request, batch, cancel_check(cancel), time.perf_counter() - t0
        )
        return self._fill_planned([planned], on_step)[0]

    def fill_batch(
        self, items: Sequence[tuple[InfillRequest, CancelFlag]]
    ) -> list[InfillResult]:
        """Fill several holes, sharing every denoising step among those that can.

        Requests whose canvases have the same shape (span start, span lengths and
        settings) run as one canvas batch, one row per span length of each, each row
        reading its own prompt (`prefill_many`); each request's rows are then ranked
        on their own, as `fill` ranks them. The others run one group after another.
        With greedy decoding a request's result is the one `fill` gives (up to float
        rounding); sampled, it draws from another generator stream.

        A request whose cancel flag is set gets a cancelled result; a batch stops
        early only when every request in it is cancelled. Timings and
        `prefilled_tokens` past planning are the whole batch's.

        Returns:
            One result per item, in order.
        """
        groups: dict[Any, list[tuple[int, _Planned]]] = {}
        for index, (request, cancel) in enumerate(items):
            t0 = time.perf_counter()
            batch = self.plan(request)
            planned = _Planned(
                request, batch, cancel_check(cancel), time.perf_counter() - t0
            )
            groups.setdefault(self._shape(planned), []).append((index, planned))
        results: list[InfillResult | None] = [None] * len(items)
        for key, members in groups.items():
            chunks = [members] if key is not None else [[m] for m in members]
            for chunk in chunks:
                done = self._fill_planned([planned for _, planned in chunk])
                for (index, _), result in zip(chunk, done, strict=True):
                    results[index] = result
        return [r for r in results if r is not None]

    def _shape(self, planned: _Planned) -> Any:
        """What requests must share to run as one batch; None: it runs alone."""
        batch = planned.batch
        fits = getattr(self.denoiser, "batchable", None)
        if fits is None or not fits(batch.prompt_ids.shape[1], self.canvas_length):
            return None
        config = planned.request.config or self.config
        return (batch.span_start, batch.span_lengths, config)

    def _fill_planned(
        self,
        group: list[_Planned],
        on_step: Callable[[StepView], None] | None = None,
    ) -> list[InfillResult]:
        """Denoise planned requests of one shape as one canvas batch."""
        config = group[0].request.config or self.config
        if config.decoding == "floor":
            done = self._fill_floor(group, config, on_step)
            return [
                retried(result, p.request, config, self._again(p, config.alternatives))
                for result, p in zip(done, group, strict=True)
            ]
        batch = _stacked([p.batch for p in group])
        is_cancelled = _all_cancelled(group)
        t1 = time.perf_counter()
        with self._lock, torch.inference_mode(), self._stoppable(is_cancelled):
            encoded = self._encoded()
            try:
                state = self._prefill(group)
            except Stopped:
                timings = [
                    Timings(p.plan_ms, _ms(t1, time.perf_counter())) for p in group
                ]
                return [InfillResult.stopped(0, t) for t in timings]
            encoded = self._encoded() - encoded
            sync(self.placement)
            t2 = time.perf_counter()
            window = self._window(batch)
            self.denoiser.condition_known = not self.exact_self_conditioning
            first_slot = self._first_slot(group)
            outcome = denoise(
                self.denoiser,
                state,
                batch,
                config,
                is_cancelled,
                on_step,
                window,
                first_slot,
            )
            sync(self.placement)
        t3 = time.perf_counter()
        results, first = [], 0
        for planned in group:
            rows = slice(first, first + len(planned.batch.span_lengths))
            first = rows.stop
            phases = (planned.plan_ms, _ms(t1, t2), _ms(t2, t3))
            if outcome.cancelled or outcome.logits is None or planned.cancel():
                results.append(
                    InfillResult.stopped(outcome.steps, Timings(*phases), encoded)
                )
                continue
            t4 = time.perf_counter()
            candidates = self._candidates(
                planned.batch,
                window,
                outcome.argmax[rows],
                outcome.logits[rows],
                planned.request,
            )
            took = Timings(*phases, _ms(t4, time.perf_counter()))
            results.append(
                InfillResult.best_of(candidates, outcome.steps, took, encoded)
            )
        return results

    def _fill_floor(
        self,
        group: list[_Planned],
        config: DenoiseConfig,
        on_step: Callable[[StepView], None] | None = None,
        first_rank: int = 0,
    ) -> list[InfillResult]:
        """Floor decoding (`loop.decode_floor`) of planned requests of one shape:
        `config.alternatives` rows each, then the suffix-aware rerank. Row j of a
        request starts with the first slot's (`first_rank` + j)-th best token."""
        check_shift(self.model)
        k = config.alternatives
        rows = [k] * len(group)
        slots = max(group[0].batch.span_lengths)
        is_cancelled = _all_cancelled(group)
        t1 = time.perf_counter()
        with self._lock, torch.inference_mode(), self._stoppable(is_cancelled):
            encoded = self._encoded()
            try:
                state = self._prefill(group, rows)
            except Stopped:
                took = [Timings(p.plan_ms, _ms(t1, time.perf_counter())) for p in group]
                return [InfillResult.stopped(0, t) for t in took]
            encoded = self._encoded() - encoded
            sync(self.placement)
            t2 = time.perf_counter()
            batch = _stacked([_first_row(p.batch, k) for p in group])
            suffixes = [self._encode(p.request.suffix[:_DRAFT_CHARS]) for p in group]
            try:
                outcome = decode_floor(
                    self.model,
                    state,
                    batch,
                    slots,
                    self.end_ids,
                    is_cancelled,
                    self._first_slot(group, rows),
                    list(range(first_rank, first_rank + k)) * len(group),
                    self.line_break_ids if group[0].request.single_line else None,
                    [s for s in suffixes for _ in range(k)],
                    config.draft_tokens,
                    [p.batch.prompt_ids[0].tolist() for p in group for _ in range(k)],
                    None if group[0].request.single_line else self._reached(group, k),
                    on_step,
                )
            except Stopped:
                outcome = None
            texts = (
                []
                if outcome is None or outcome.cancelled
                else self._texts(group, outcome.tokens, k)
            )
            scores = None
            if texts and k > 1 and config.rerank_margin is not None:
                scores = self._rerank(group, batch, outcome, texts)
            sync(self.placement)
        t3 = time.perf_counter()
        results = []
        for i, planned in enumerate(group):
            phases = (planned.plan_ms, _ms(t1, t2), _ms(t2, t3))
            if outcome is None or outcome.cancelled or planned.cancel():
                steps = 0 if outcome is None else outcome.steps
                results.append(InfillResult.stopped(steps, Timings(*phases), encoded))
                continue
            span = range(i * k, (i + 1) * k)
            order = list(span)
            if scores is not None:
                margin, weigh = float(config.rerank_margin or 0.0), scores
                order.sort(key=lambda b: -(weigh[b] + (margin if b == span[0] else 0)))
            seen, candidates = set(), []
            for b in order:
                if texts[b] in seen:
                    continue
                seen.add(texts[b])
                valid = (
                    planned.request.validate(texts[b])
                    if planned.request.validate
                    else True
                )
                candidates.append(
                    Candidate(
                        texts[b],
                        slots,
                        outcome.confidence[b],
                        outcome.complete[b],
                        bool(valid),
                        len(outcome.tokens[b]),
                        first_rank + b - i * k,
                        None if scores is None else scores[b],
                    )
                )
            results.append(
                InfillResult.best_of(
                    valid_first(candidates), outcome.steps, Timings(*phases), encoded
                )
            )
        return results

    def _again(
        self, planned: _Planned, tried: int
    ) -> Callable[[DenoiseConfig], InfillResult]:
        """A floor fill of `planned` alone whose rows start after the first slot's
        `tried` best tokens (`retried` calls it)."""
        return lambda config: self._fill_floor([planned], config, None, tried)[0]

    def _reached(
        self, group: list[_Planned], k: int
    ) -> Callable[[int, list[int]], bool]:
        """For multi-line floor fills: whether row b wrote a whole line that is the
        suffix's first line (the left-to-right base never stops by itself; the
        server drops the repeated line, `postprocess`)."""
        marks = [_first_code_line(p.request.suffix) for p in group]

        def reached(b: int, tokens: list[int]) -> bool:
            mark = marks[b // k]
            if not mark or not tokens:
                return False
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            return any(line.strip() == mark for line in text.split("\n")[:-1])

        return reached

    def _texts(
        self, group: list[_Planned], tokens: list[list[int]], k: int
    ) -> list[str]:
        """Each row's committed tokens as text, less the healed text it starts with."""
        out = []
        for b, ids in enumerate(tokens):
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            out.append(unheal(text, group[b // k].batch.healed))
        return out

    def _rerank(
        self,
        group: list[_Planned],
        batch: CanvasBatch,
        outcome: Any,
        texts: list[str],
    ) -> list[float]:
        """Per row, the base's log-probability of its fill read on with the suffix's
        first lines (`floor.score_text`)."""
        from infill_engine.core.floor import score_text

        tail = batch.span_start
        k = len(texts) // len(group)
        rows = []
        for b, text in enumerate(texts):
            request = group[b // k].request
            if request.single_line:
                text = text.split("\n", 1)[0]
            read = group[b // k].batch.healed + text + suffix_head(request.suffix)
            rows.append([int(batch.canvas[b, tail - 1]), *self._encode(read)])
        memory = outcome.memory.cut(tail - 1)
        return score_text(self.model, memory, rows, tail)

    def _first_slot(
        self, group: list[_Planned], rows: list[int] | None = None
    ) -> torch.Tensor | None:
        """(B, V) tokens the first span slot of each row may hold, None if free."""
        healed = [p.batch.healed for p in group]
        if not any(healed):
            return None
        rows = rows or [len(p.batch.span_lengths) for p in group]
        return self.healing.rows(healed, rows)

    def _prefill(self, group: list[_Planned], rows: list[int] | None = None) -> Any:
        """The denoiser's state for a group's rows: one prompt's, or several."""
        rows = rows or [len(p.batch.span_lengths) for p in group]
        if len(group) == 1:
            prompt = group[0].batch.prompt_ids
            return self.denoiser.prefill(prompt, rows[0], self.canvas_length)
        prompts = [p.batch.prompt_ids for p in group]
        return self.denoiser.prefill_many(prompts, rows, self.canvas_length)

    def warm(self, request: InfillRequest, cancel: CancelFlag = None) -> int:
        """Prefill the prompt `request` would have, and keep it for the request.

        A language server calls this when the document changes, in the time before the
        editor asks for a suggestion there; the `fill` that follows then finds its
        prompt encoded. Returns the prompt tokens encoded now (0 if `cancel` stopped
        it; nothing is kept then).
        """
        batch = self._planned(request)
        stop = self._stoppable(cancel_check(cancel))
        with self._lock, torch.inference_mode(), stop:
            before = self._encoded()
            try:
                self.denoiser.prefill(batch.prompt_ids, 1, self.canvas_length)
            except Stopped:
                return 0
            sync(self.placement)
            return self._encoded() - before

    def _stoppable(self, cancel: Callable[[], bool]) -> AbstractContextManager[Any]:
        """The denoiser's check of `cancel` between layers, where it has one."""
        stoppable = getattr(self.denoiser, "stoppable", None)
        return nullcontext() if stoppable is None else stoppable(cancel)

    def _planned(self, request: InfillRequest) -> CanvasBatch:
        """`plan`, kept for the last texts planned (a `warm`, then its `fill`)."""
        key = (
            request.context,
            request.context_tokens,
            request.prefix,
            request.suffix,
            tuple(request.span_lengths or ()),
        )
        last = self._last_plan
        if last is not None and last[0] == key:
            return last[1]
        batch = self.plan(request)
        self._last_plan = (key, batch)
        return batch

    def _encoded(self) -> int:
        """Prompt tokens the denoiser has encoded so far (0 if it does not count)."""
        return int(getattr(self.denoiser, "prefill_tokens_computed", 0))

    def plan(self, request: InfillRequest) -> CanvasBatch:
        """Tokenize the texts around the hole and lay out one canvas per span length."""
        return plan_request(
            request,
            self._encode,
            self.canvas_length,
            self.span_lengths,
            self.max_prompt_tokens,
            (self.bos_id, self.pad_id),
            getattr(self.denoiser, "readout_shift", 0),
            self.healing.heal if self.heal_last_token else None,
            (request.config or self.config).decoding == "floor",
        )

    @property
    def line_break_ids(self) -> set[int]:
        """Tokens whose text holds a line break (a single-line fill stops at one)."""
        if self._line_breaks is None:
            texts = self.healing.texts
            self._line_breaks = {i for i, t in enumerate(texts) if "\n" in t}
        return self._line_breaks

    @property
    def healing(self) -> TokenHealing:
        """The token texts `heal_last_token` matches against."""
        if self._healing is None:
            self._healing = TokenHealing(
                self.tokenizer, self.denoiser.vocab_size, self.end_ids
            )
        return self._healing

    def _candidates(
        self,
        batch: CanvasBatch,
        window: slice,
        argmax: torch.Tensor,
        logits: torch.Tensor,
        request: InfillRequest,
    ) -> list[Candidate]:
        confidence = torch.softmax(logits.float(), dim=-1).amax(-1).cpu()  # (B, W)
        offset = batch.span_start - window.start  # where the span starts in the window
        rows = argmax.cpu()
        out = []
        for row, span in enumerate(batch.span_lengths):
            ids = rows[row, batch.span_start : batch.span_start + span].tolist()
            kept = cut_at_end_of_span(ids, self.end_ids)
            complete = len(kept) < span
            counted = len(kept) + (1 if complete else 0)
            conf = confidence[row, offset : offset + counted]
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            text = unheal(text, batch.healed)
            valid = request.validate(text) if request.validate else True
            score = float(conf.mean())
            out.append(Candidate(text, span, score, complete, bool(valid), len(kept)))
        return ranked(out)

    def _window(self, batch: CanvasBatch) -> slice:
        if not self.exact_self_conditioning:
            return batch.window
        # With a readout shift, position i is read from i - shift: the first `shift`
        # positions (pinned prefix) have no logits of their own.
        return slice(getattr(self.denoiser, "readout_shift", 0), self.canvas_length)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class _Planned:
    """A request with its canvas laid out, its cancel check and the planning time."""

    request: InfillRequest
    batch: CanvasBatch
    cancel: Callable[[], bool]
    plan_seconds: float

    @property
    def plan_ms(self) -> float:
        return self.plan_seconds * 1000.0


def _stacked(batches: list[CanvasBatch]) -> CanvasBatch:
    """Canvases of one shape as one batch (the first one's prompt stands for all)."""
    if len(batches) == 1:
        return batches[0]
    return CanvasBatch(
        prompt_ids=batches[0].prompt_ids,
        canvas=torch.cat([b.canvas for b in batches]),
        pinned=torch.cat([b.pinned for b in batches]),
        span_start=batches[0].span_start,
        span_lengths=tuple(s for b in batches for s in b.span_lengths),
    )


def _all_cancelled(group: list[_Planned]) -> Callable[[], bool]:
    """The cancel check of a group: set once every request in it is cancelled."""
    if len(group) == 1:
        return group[0].cancel
    return lambda: all(p.cancel() for p in group)


def _first_row(batch: CanvasBatch, rows: int) -> CanvasBatch:
    """`rows` copies of the longest span's canvas row (floor decoding reads only the
    prefix tail, which every row shares)."""
    longest = batch.span_lengths.index(max(batch.span_lengths))
    return CanvasBatch(
        prompt_ids=batch.prompt_ids,
        canvas=batch.canvas[longest : longest + 1].repeat(rows, 1),
        pinned=batch.pinned[longest : longest + 1].repeat(rows, 1),
        span_start=batch.span_start,
        span_lengths=(max(batch.span_lengths),) * rows,
        healed=batch.healed,
    )


def _first_code_line(suffix: str) -> str:
    """The suffix's first line with anything on it after the span's own line."""
    lines = suffix.split("\n")[1:]
    return next((line.strip() for line in lines if line.strip()), "")


def suffix_head(suffix: str) -> str:
    """What a rerank reads after a fill: the rest of its line and the next one."""
    return "\n".join(suffix.split("\n")[:_RERANK_LINES])[:_RERANK_CHARS]


def cancel_check(cancel: CancelFlag) -> Callable[[], bool]:
    """A cancel flag (None, an Event or a callable) as a callable."""
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


def _ms(start: float, end: float) -> float:
    return (end - start) * 1000.0


def _end_of_span_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-span ids: the tokenizer's EOS plus the config's EOS ids."""
    ids: set[int] = set()
    for value in (
        getattr(tokenizer, "eos_token_id", None),
        getattr(model.config.get_text_config(), "eos_token_id", None),
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if not ids:
        raise ValueError("the tokenizer and config define no end-of-span (EOS) token")
    return ids


def _special_id(tokenizer: Any, model: Any, kind: str) -> int:
    value = getattr(tokenizer, f"{kind}_token_id", None)
    if value is None:
        value = getattr(model.config.get_text_config(), f"{kind}_token_id", None)
    if value is None:
        raise ValueError(f"the tokenizer and config define no {kind} token")
    return int(value[0] if isinstance(value, list) else value)
