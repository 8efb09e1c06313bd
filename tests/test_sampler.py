import pytest
import torch

from infill_engine.core.sampler import (
    EntropyBoundSampler,
    LinearTemperature,
    token_entropy,
)
from infill_engine.core.stopping import StableAndConfident


def peaked(tokens, vocab=8, sharp=20.0):
    """(1, L, V) logits with one peak per position; sharp=0 gives a flat row."""
    logits = torch.zeros(1, len(tokens), vocab)
    for i, (tok, s) in enumerate(tokens):
        logits[0, i, tok] = s
    return logits


def test_temperature_falls_linearly_from_t_max_to_t_min():
    t = LinearTemperature(0.8, 0.4, 4)
    assert [round(t(s), 3) for s in (4, 3, 2, 1)] == [0.8, 0.7, 0.6, 0.5]
    with pytest.raises(ValueError, match="t_min"):
        LinearTemperature(0.2, 0.4, 4)


def test_accepts_low_entropy_span_tokens_within_the_bound():
    logits = peaked([(1, 30.0), (2, 30.0), (3, 0.0), (3, 0.0), (4, 30.0)])
    span = torch.tensor([[True, True, True, True, False]])
    accepted = EntropyBoundSampler(0.1).accept(logits, span)[0].tolist()
    # sum(H) - max(H) <= bound: both confident slots plus one flat slot (the max is
    # subtracted), never the second flat one, never the pinned position
    assert accepted[:2] == [True, True]
    assert sum(accepted[2:4]) == 1
    assert accepted[4] is False


def test_always_accepts_at_least_one_span_token():
    logits = peaked([(0, 0.0)] * 5)
    span = torch.tensor([[False, True, True, True, False]])
    accepted = EntropyBoundSampler(0.01).accept(logits, span)
    assert int(accepted.sum()) == 1 and bool((accepted & ~span).sum() == 0)


def test_floor_accepts_the_lowest_entropy_span_slots_beyond_the_bound():
    # entropies rise left to right; position 0 is pinned
    logits = peaked([(1, 30.0), (1, 4.0), (2, 3.0), (3, 2.0), (4, 1.0), (5, 0.0)])
    span = torch.tensor([[False, True, True, True, True, True]])
    sampler = EntropyBoundSampler(0.01)
    assert sampler.accept(logits, span)[0].tolist() == [False, True] + [False] * 4
    floored = sampler.accept(logits, span, torch.tensor([[3]]))[0].tolist()
    assert floored == [False, True, True, True, False, False]
    every = sampler.accept(logits, span, torch.tensor([[9]]))[0].tolist()
    assert every == [False] + [True] * 5  # never more than the span, never pinned


def test_larger_bound_accepts_more():
    logits = peaked([(1, 2.0), (2, 2.5), (3, 3.0), (4, 3.5)])
    span = torch.ones(1, 4, dtype=torch.bool)
    small = EntropyBoundSampler(0.05).accept(logits, span).sum()
    large = EntropyBoundSampler(5.0).accept(logits, span).sum()
    assert small < large == 4


def test_renoise_touches_only_span_slots_not_kept():
    canvas = torch.arange(10).unsqueeze(0)
    span = torch.zeros(1, 10, dtype=torch.bool)
    span[0, 3:7] = True
    keep = torch.zeros_like(span)
    keep[0, 4] = True
    gen = torch.Generator().manual_seed(0)
    out = EntropyBoundSampler.renoise(canvas, keep, span, 1000, gen)
    changed = (out != canvas)[0].tolist()
    assert not any(changed[:3] + changed[7:]) and not changed[4]
    assert sum(changed) >= 2  # 3 slots renoised from 1000 ids: collisions are unlikely


def test_greedy_draw_is_argmax():
    logits = peaked([(5, 3.0), (6, 3.0)])
    used = torch.ones(1, 2, dtype=torch.bool)
    assert EntropyBoundSampler(0.1, greedy=True).draw(logits, used, None).tolist() == [
        [5, 6]
    ]


def test_draws_follow_the_softmax_at_the_used_positions():
    probs = torch.tensor([0.7, 0.2, 0.1])
    logits = probs.log().expand(1, 40_000, 3).clone()
    used = torch.zeros(1, 40_000, dtype=torch.bool)
    used[0, ::2] = True
    gen = torch.Generator().manual_seed(0)
    draws = EntropyBoundSampler(0.1).draw(logits, used, gen)[used]
    freq = torch.bincount(draws, minlength=3) / draws.numel()
    assert torch.allclose(freq, probs, atol=0.01)


def test_entropy_of_uniform_is_log_v():
    assert torch.allclose(
        token_entropy(torch.zeros(1, 1, 8)), torch.log(torch.tensor(8.0))
    )


def test_entropy_of_logits_spread_past_float32_underflow():
    # The last step's temperature spreads soft-capped logits over about 150 nats, so
    # most probabilities underflow float32; the entropy still matches float64's.
    gen = torch.Generator().manual_seed(0)
    logits = (torch.rand(4, 16, 8192, generator=gen) * 2 - 1) * 75
    logits[0, 0, 7] = 400.0  # all but certain: entropy ~0
    logp = torch.log_softmax(logits.double(), dim=-1)
    exact = -(logp.exp() * logp).sum(-1)
    got = token_entropy(logits)
    assert torch.allclose(got.double(), exact, rtol=1e-5, atol=1e-30)
    assert got[0, 0] < 1e-30


def test_stops_only_when_stable_and_confident():
    stop = StableAndConfident(stability_threshold=1, confidence_threshold=0.01)
    span = torch.tensor([[True, True, False]])
    sure = peaked([(1, 40.0), (2, 40.0), (0, 0.0)])
    argmax = torch.tensor([[1, 2, 7]])
    assert stop(argmax, sure, span).tolist() == [False]  # no history yet
    assert stop(argmax, sure, span).tolist() == [True]  # same argmax, confident
    changed = torch.tensor([[1, 3, 7]])
    assert stop(changed, sure, span).tolist() == [False]  # not stable
    unsure = peaked([(1, 1.0), (3, 1.0), (0, 0.0)])
    assert stop(changed, unsure, span).tolist() == [False]  # stable but not confident
    stop.reset()
    assert stop(changed, sure, span).tolist() == [False]


def test_pinned_positions_do_not_count_against_confidence():
    stop = StableAndConfident(stability_threshold=0, confidence_threshold=0.01)
    logits = peaked([(1, 40.0), (0, 0.0)])  # second position flat but pinned
    assert stop(
        torch.tensor([[1, 5]]), logits, torch.tensor([[True, False]])
    ).tolist() == [True]
