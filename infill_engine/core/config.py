"""Denoising settings, validated once; defaults come from the checkpoint when it has
them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from infill_engine.core.sampler import EntropyBoundSampler, LinearTemperature
from infill_engine.core.stopping import StableAndConfident

# DiffusionGemma's published defaults (transformers' DiffusionGemmaGenerationConfig).
DEFAULT_STEPS = 48
DEFAULT_ENTROPY_BOUND = 0.1
DEFAULT_T_MAX = 0.8
DEFAULT_T_MIN = 0.4
DEFAULT_STABILITY = 1
DEFAULT_CONFIDENCE = 0.005
DEFAULT_REFRESH_EVERY = 1  # every step is full: transformers' forward exactly
SCHEDULES = ("entropy", "linear")
# 'diffusion': every slot denoised in parallel (DiffusionGemma's loop); 'floor': slots
# committed from the span's start, each the base's own next token (`loop.decode_floor`).
DECODINGS = ("diffusion", "floor")


@dataclass(frozen=True)
class DenoiseConfig:
    """How one canvas is denoised.

    Attributes:
        max_steps: upper bound on denoising steps (forwards of the decoder).
        entropy_bound: the sampler accepts tokens while sum(H) - max(H) stays below it.
        t_max: temperature at the first step; falls linearly to `t_min` at the last.
        t_min: temperature at the last step.
        stability_threshold: steps the argmax span must stay unchanged before stopping.
        confidence_threshold: mean span entropy under which a stable span stops.
        greedy: take the argmax as each step's proposal instead of sampling.
        seed: seeds the noise and the sampling, so equal requests give equal results.
        schedule: 'entropy' (DiffusionGemma's: at least one slot is accepted per step)
            or 'linear' (also at least ceil(n * i / max_steps) of a row's n span slots
            by step i, so every slot is committed within the step budget; the budget
            then bounds latency and sets a floor on tokens per forward).
        refresh_every: every this many steps (from the first) the whole canvas runs
            through the decoder; the steps between run only the span's window against
            the keys and values the rest of the canvas had at the last full step.
            1: every step is full (exact); 0: only the first.
        decoding: 'diffusion' (DiffusionGemma's loop over the whole span) or 'floor'
            (commit from the span's start, each token the left-to-right base's own:
            a model converted from such a base never falls below it).
        draft_tokens: floor decoding: most draft tokens (what followed the same
            tokens in the prefix or the suffix) the base checks per forward.
        alternatives: floor decoding: rows per request, each starting with another of
            the first slot's best tokens (1: the greedy line alone).
        rerank_margin: floor decoding with alternatives: an alternative replaces the
            greedy line only when the base gives it, read on with the suffix's first
            lines, this many nats more; None keeps the greedy line first.
        fallback_alternatives: floor decoding: when a request's validity check (a
            parse in place) fails every row, rows up to this many in all are tried,
            each starting with another of the first slot's best tokens, and the first
            valid one is taken (1 or less: never).
    """

    max_steps: int = DEFAULT_STEPS
    entropy_bound: float = DEFAULT_ENTROPY_BOUND
    t_max: float = DEFAULT_T_MAX
    t_min: float = DEFAULT_T_MIN
    stability_threshold: int = DEFAULT_STABILITY
    confidence_threshold: float = DEFAULT_CONFIDENCE
    greedy: bool = False
    seed: int = 0
    schedule: str = "entropy"
    refresh_every: int = DEFAULT_REFRESH_EVERY
    decoding: str = "diffusion"
    draft_tokens: int = 0
    alternatives: int = 1
    rerank_margin: float | None = None
    fallback_alternatives: int = 1

    def __post_init__(self) -> None:
        if self.decoding not in DECODINGS:
            raise ValueError(
                f"decoding must be one of {', '.join(DECODINGS)} "
                f"(got {self.decoding!r})"
            )
        if not isinstance(self.draft_tokens, int) or self.draft_tokens < 0:
            raise ValueError(
                f"draft_tokens must be an integer >= 0 (got {self.draft_tokens!r})"
            )
        if not isinstance(self.alternatives, int) or self.alternatives < 1:
            raise ValueError(
                f"alternatives must be an integer >= 1 (got {self.alternatives!r})"
            )
        if not isinstance(self.fallback_alternatives, int):
            raise ValueError(
                "fallback_alternatives must be an integer "
                f"(got {self.fallback_alternatives!r})"
            )
        if not isinstance(self.max_steps, int):
            raise ValueError(f"max_steps must be an integer (got {self.max_steps!r})")
        if not isinstance(self.refresh_every, int) or self.refresh_every < 0:
            raise ValueError(
                f"refresh_every must be an integer >= 0 (got {self.refresh_every!r})"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {', '.join(SCHEDULES)} "
                f"(got {self.schedule!r})"
            )
        # The loop's own objects validate their parts: one rule, one place.
        LinearTemperature(self.t_max, self.t_min, self.max_steps)
        EntropyBoundSampler(self.entropy_bound, self.greedy)
        StableAndConfident(self.stability_threshold, self.confidence_threshold)

    @classmethod
    def from_generation_config(cls, gen: Any) -> DenoiseConfig:
        """Defaults from a checkpoint's `generation_config`, where it sets them."""
        values: dict[str, Any] = {}
        sampler = getattr(gen, "sampler_config", None)
        pairs = {
            "max_steps": getattr(gen, "max_denoising_steps", None),
            "entropy_bound": getattr(sampler, "entropy_bound", None),
            "t_max": getattr(gen, "t_max", None),
            "t_min": getattr(gen, "t_min", None),
            "stability_threshold": getattr(gen, "stability_threshold", None),
            "confidence_threshold": getattr(gen, "confidence_threshold", None),
        }
        for name, value in pairs.items():
            if value is not None:
                values[name] = value
        return cls(**values)

    def is_full(self, step: int) -> bool:
        """Whether 0-based `step` runs the whole canvas (see `refresh_every`)."""
        if step == 0 or self.refresh_every == 1:
            return True
        return self.refresh_every > 1 and step % self.refresh_every == 0

    def with_overrides(self, **changes: Any) -> DenoiseConfig:
        """A copy with the given fields changed; `None` values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
