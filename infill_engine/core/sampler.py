"""Temperature schedule and entropy-bound sampler, aware of pinned positions.

Both follow DiffusionGemma's recipe (transformers'
`LinearTemperatureScheduleLogitsProcessor`
and `EntropyBoundSampler`), with one change for infilling: only span slots compete for
acceptance and only span slots are renoised, so pinned tokens never change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Entropy given to pinned positions so they sort after every span slot.
_NEVER = 1e9
# Smallest log-probability `token_entropy` uses: exp(-87) is float32's smallest normal
# number, about 1.2e-38.
_LOG_TINY = -87.0


@dataclass(frozen=True)
class LinearTemperature:
    """t = t_min + (t_max - t_min) * cur_step / max_steps; cur_step counts down N..1."""

    t_max: float
    t_min: float
    max_steps: int

    def __post_init__(self) -> None:
        if not 0 < self.t_min <= self.t_max:
            raise ValueError(
                f"need 0 < t_min <= t_max (got {self.t_min}, {self.t_max})"
            )
        if self.max_steps <= 0:
            raise ValueError(f"max_steps must be > 0 (got {self.max_steps})")

    def __call__(self, cur_step: int) -> float:
        """Temperature for the step with `cur_step` steps remaining."""
        return self.t_min + (self.t_max - self.t_min) * cur_step / self.max_steps


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's distribution: (B, L, V) -> (B, L).

    Log-probabilities below -87 count as -87. torch's CPU exp took 10-30 times longer
    on inputs whose result underflows (9 ms against 1.4 for a 64-slot window at the last
    step's temperature), and with the clamp all those terms together add under 1.5e-32
    (8,192 of them at 1.4e-36 at most) to an entropy that the sampler and the stop
    compare with thresholds (by default 0.1 and 0.005).
    """
    logp = torch.log_softmax(logits.float(), dim=-1).clamp_(min=_LOG_TINY)
    return -(logp.exp() * logp).sum(-1)


@dataclass(frozen=True)
class EntropyBoundSampler:
    """Accept the lowest-entropy span tokens while sum(H) - max(H) <= entropy_bound.

    At least one span token is accepted per row per step. Tokens not accepted are
    renoised
    with uniform random ids, including tokens accepted at an earlier step: that is how a
    later step may revise an earlier choice.
    """

    entropy_bound: float
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.entropy_bound <= 0:
            raise ValueError(f"entropy_bound must be > 0 (got {self.entropy_bound})")

    def draw(
        self,
        logits: torch.Tensor,
        used: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Denoiser proposals: (B, W, V) logits -> (B, W) ids; argmax when greedy.

        Only positions in `used` (B, W) need a proposal (the accepted slots; the rest
        is renoised). On CPU only those rows are sampled: drawing a random number for
        every vocabulary entry of every slot cost a quarter of a step. On CUDA the whole
        window is sampled by an exponential race (argmax of p / E, E ~ Exp(1), the same
        law as multinomial), which needs no host sync. Elsewhere the result is
        meaningless.
        """
        if self.greedy:
            return logits.argmax(-1)
        if logits.device.type == "cuda":
            probs = torch.softmax(logits.float(), dim=-1)
            race = torch.empty_like(probs).exponential_(generator=generator)
            return (probs / race).argmax(-1)
        out = torch.zeros(used.shape, dtype=torch.long, device=logits.device)
        rows = logits[used]  # (k, V)
        if rows.numel():
            # Inverse CDF: one uniform per row. torch.multinomial draws an exponential
            # per vocabulary entry and cost 4 ms a step here.
            cdf = torch.softmax(rows.float(), dim=-1).cumsum_(-1)  # (k, V)
            u = torch.rand(len(cdf), 1, generator=generator) * cdf[:, -1:]
            picked = torch.searchsorted(cdf, u, right=True).clamp_(
                max=cdf.shape[-1] - 1
            )
            out[used] = picked.squeeze(-1)
        return out

    def accept(
        self,
        logits: torch.Tensor,
        span_mask: torch.Tensor,
        floor: torch.Tensor | None = None,
        entropy: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Which span slots take the proposal this step.

        Args:
            logits: (B, L, V) processed logits.
            span_mask: (B, L) the slots that may be accepted.
            floor: (B, 1) accept at least this many of each row's lowest-entropy span
                slots, whatever the bound says (the linear schedule's guarantee).
            entropy: (B, L) `token_entropy(logits)`, when the caller has it already.

        Returns:
            (B, L) bool.
        """
        if entropy is None:
            entropy = token_entropy(logits)
        entropy = entropy.masked_fill(~span_mask, _NEVER)  # (B, L)
        sorted_h, order = torch.sort(entropy, dim=-1)
        chosen = (torch.cumsum(sorted_h, dim=-1) - sorted_h) <= self.entropy_bound
        if floor is not None:
            rank = torch.arange(chosen.shape[-1], device=chosen.device)
            chosen = chosen | (rank < floor)
        accepted = torch.zeros_like(chosen).scatter(-1, order, chosen)
        return accepted & span_mask

    @staticmethod
    def renoise(
        canvas: torch.Tensor,
        keep: torch.Tensor,
        span_mask: torch.Tensor,
        vocab_size: int,
        generator: torch.Generator | None,
        mask_id: int | None = None,
    ) -> torch.Tensor:
        """Noise on span slots not kept: (B, L) -> (B, L).

        Uniform random ids (DiffusionGemma's noise), or `mask_id` on every such slot
        for a model trained with a mask token."""
        if mask_id is not None:
            return canvas.masked_fill(span_mask & ~keep, mask_id)
        noise = torch.randint(
            0, vocab_size, canvas.shape, generator=generator, device=canvas.device
        )
        return torch.where(span_mask & ~keep, noise, canvas)
