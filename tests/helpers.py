"""Test doubles that are not the thing under test: denoisers with known outputs."""

from __future__ import annotations

import torch


class ScriptedDenoiser:
    """Returns logits that put `sharpness` on `script[b][pos]` at every position.

    The loop and engine under test see a model that knows the answer, so what they do
    with the answer (accept, stop, cut at end-of-span, rank) can be checked exactly.
    """

    def __init__(self, script: torch.Tensor, vocab_size: int, sharpness: float = 30.0):
        self.script = script  # (B, L)
        self.vocab_size = vocab_size
        self.device = torch.device("cpu")
        self.sharpness = sharpness
        self.calls = 0

    def prefill(self, prompt_ids, batch, canvas_length):
        return None

    def __call__(self, canvas, self_cond, state, window, pinned=None, full=True):
        self.calls += 1
        script = self.script[:, window]
        logits = torch.zeros(*script.shape, self.vocab_size)
        logits.scatter_(-1, script[..., None], self.sharpness)
        return logits


class RandomDenoiser:
    """Seeded random logits: a model with no idea, for invariants that must always
    hold."""

    def __init__(self, vocab_size: int, seed: int = 0):
        self.vocab_size = vocab_size
        self.device = torch.device("cpu")
        self.gen = torch.Generator().manual_seed(seed)
        self.calls = 0

    def prefill(self, prompt_ids, batch, canvas_length):
        return None

    def __call__(self, canvas, self_cond, state, window, pinned=None, full=True):
        self.calls += 1
        width = len(range(*window.indices(canvas.shape[1])))
        return (
            torch.randn(canvas.shape[0], width, self.vocab_size, generator=self.gen) * 3
        )
