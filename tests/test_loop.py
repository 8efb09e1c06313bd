import threading

import pytest
import torch
from helpers import RandomDenoiser, ScriptedDenoiser
from hypothesis import given, settings
from hypothesis import strategies as st

from infill_engine.core.canvas import plan_canvas
from infill_engine.core.config import DenoiseConfig
from infill_engine.core.loop import denoise

V = 50


@settings(max_examples=60, deadline=None)
@given(
    prefix=st.lists(st.integers(6, V - 1), max_size=40),
    suffix=st.lists(st.integers(6, V - 1), max_size=40),
    spans=st.lists(st.integers(1, 20), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_pinned_tokens_never_change_on_any_step(prefix, suffix, spans, seed):
    batch = plan_canvas(prefix, suffix, spans, 32, 2, 0)
    seen = []
    denoise(
        RandomDenoiser(V, seed),
        None,
        batch,
        DenoiseConfig(max_steps=6, seed=seed),
        on_step=lambda view: seen.append((view.canvas.clone(), view.argmax.clone())),
    )
    assert len(seen) == 6
    for canvas, argmax in seen:
        assert torch.equal(canvas[batch.pinned], batch.canvas[batch.pinned])
        assert torch.equal(argmax[batch.pinned], batch.canvas[batch.pinned])


def test_a_sure_model_fills_the_span_in_few_steps_and_stops_early():
    batch = plan_canvas([10, 11, 12], [13, 14], [6], 16, 2, 0)
    script = batch.canvas.clone()
    s = batch.span_start
    script[0, s : s + 6] = torch.tensor([20, 21, 22, 1, 1, 1])
    model = ScriptedDenoiser(script, V)
    out = denoise(model, None, batch, DenoiseConfig(max_steps=48, entropy_bound=1.0))
    assert out.argmax[0, s : s + 6].tolist() == [20, 21, 22, 1, 1, 1]
    assert out.steps <= 3 and model.calls == out.steps and not out.cancelled


def test_cancel_returns_within_one_step():
    batch = plan_canvas([10], [11], [8], 16, 2, 0)
    flag = threading.Event()
    model = RandomDenoiser(V)

    def on_step(view):
        if view.index == 2:
            flag.set()

    out = denoise(model, None, batch, DenoiseConfig(max_steps=40), flag.is_set, on_step)
    assert out.cancelled and out.steps == 2 and model.calls == 2


def test_same_seed_same_result_different_seed_different_noise():
    batch = plan_canvas([10], [11], [12], 32, 2, 0)

    def run(seed, greedy):
        config = DenoiseConfig(max_steps=5, seed=seed, greedy=greedy)
        canvases = []
        denoise(
            RandomDenoiser(V, 1),
            None,
            batch,
            config,
            on_step=lambda v: canvases.append(v.canvas),
        )
        return torch.stack(canvases)

    for greedy in (False, True):
        assert torch.equal(run(3, greedy), run(3, greedy))
    assert not torch.equal(run(3, False), run(4, False))


def test_linear_schedule_commits_the_span_within_the_step_budget():
    batch = plan_canvas([10], [11], [16, 7], 40, 2, 0)
    counts = []
    config = DenoiseConfig(max_steps=4, schedule="linear", entropy_bound=1e-6)
    out = denoise(
        RandomDenoiser(V, 5),
        None,
        batch,
        config,
        on_step=lambda view: counts.append(view.accepted.sum(-1).tolist()),
    )
    # a model with no idea: the bound alone accepts one slot a step; the floor
    # accepts ceil(n * i / 4) of each row's n slots at step i, all at the last
    assert out.steps == 4
    assert counts == [[4, 2], [8, 4], [12, 6], [16, 7]]
    entropy_only = []
    denoise(
        RandomDenoiser(V, 5),
        None,
        batch,
        DenoiseConfig(max_steps=4, entropy_bound=1e-6),
        on_step=lambda view: entropy_only.append(view.accepted.sum(-1).tolist()),
    )
    assert entropy_only == [[1, 1]] * 4


def test_unknown_schedule_is_a_clear_error():
    with pytest.raises(ValueError, match="schedule must be one of"):
        DenoiseConfig(schedule="cosine")


def test_the_last_step_leaves_the_argmax_on_the_canvas():
    # nothing is drawn or renoised after the last step: the canvas is the result
    batch = plan_canvas([10], [11], [12, 5], 32, 2, 0)
    views = []
    out = denoise(
        RandomDenoiser(V, 2),
        None,
        batch,
        DenoiseConfig(max_steps=3, entropy_bound=1e-6),
        on_step=views.append,
    )
    assert out.steps == 3
    assert torch.equal(views[-1].canvas, views[-1].argmax)
    assert torch.equal(views[-1].argmax, out.argmax)
    assert not torch.equal(views[0].canvas, views[0].argmax)  # earlier steps renoise


class KnownSpy(RandomDenoiser):
    """Random logits; records the known mask of every call."""

    def __init__(self, vocab_size):
        super().__init__(vocab_size, 4)
        self.known = []

    def __call__(self, canvas, self_cond, state, window, known=None, full=True):
        self.known.append(known.clone())
        return super().__call__(canvas, self_cond, state, window)


def test_known_positions_are_the_pinned_ones_then_also_the_accepted_slots():
    batch = plan_canvas([10, 11], [12], [6], 16, 2, 0)
    spy, accepted = KnownSpy(V), []
    denoise(
        spy,
        None,
        batch,
        DenoiseConfig(max_steps=3, entropy_bound=1e-6, schedule="linear"),
        on_step=lambda view: accepted.append(view.accepted.clone()),
    )
    assert torch.equal(spy.known[0], batch.pinned)
    for step in (1, 2):
        assert torch.equal(spy.known[step], batch.pinned | accepted[step - 1])
        assert int(accepted[step - 1].sum()) == 2 * step  # the floor: ceil(6 * i / 3)
