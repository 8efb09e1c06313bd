"""Adaptive stopping: stop a row once its span is stable and the model is confident.

Mirrors DiffusionGemma's `StableAndConfidentStoppingCriteria`, measured over span slots
only (pinned positions say nothing about whether the span is done).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from infill_engine.core.sampler import token_entropy


@dataclass
class StableAndConfident:
    """Stable: the argmax span was identical for `stability_threshold` previous steps.
    Confident: the mean entropy over span slots is below `confidence_threshold`.
    """

    stability_threshold: int
    confidence_threshold: float
    _history: deque = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if self.stability_threshold < 0:
            raise ValueError(
                f"stability_threshold must be >= 0 (got {self.stability_threshold})"
            )
        if self.confidence_threshold <= 0:
            raise ValueError(
                f"confidence_threshold must be > 0 (got {self.confidence_threshold})"
            )

    def reset(self) -> None:
        """Forget the history; call before each new canvas."""
        self._history.clear()

    def __call__(
        self,
        argmax: torch.Tensor,
        logits: torch.Tensor,
        span_mask: torch.Tensor,
        entropy: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L) argmax, (B, L, V) processed logits, (B, L) span mask -> (B,) bool.

        `entropy` is `token_entropy(logits)`, (B, L), when the caller has it already.
        """
        stable = torch.ones(argmax.shape[0], dtype=torch.bool, device=argmax.device)
        if self.stability_threshold:
            if len(self._history) < self.stability_threshold:
                stable &= False
            for past in self._history:
                stable &= ((past == argmax) | ~span_mask).all(-1)
            self._history.append(argmax)
            while len(self._history) > self.stability_threshold:
                self._history.popleft()
        if entropy is None:
            entropy = token_entropy(logits)
        entropy = entropy * span_mask
        mean = entropy.sum(-1) / span_mask.sum(-1).clamp(min=1)
        return stable & (mean < self.confidence_threshold)
