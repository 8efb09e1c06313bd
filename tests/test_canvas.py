from itertools import pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from infill_engine.core.canvas import cut_at_end_of_span, plan_canvas, span_targets

BOS, PAD, EOS = 2, 0, 1
ids = st.lists(st.integers(min_value=6, max_value=99), max_size=200)


@settings(max_examples=200, deadline=None)
@given(
    prefix=ids,
    suffix=ids,
    spans=st.lists(st.integers(1, 60), min_size=1, max_size=4),
    length=st.sampled_from([64, 128, 256]),
)
def test_layout_keeps_prefix_whole_and_suffix_head_in_order(
    prefix, suffix, spans, length
):
    batch = plan_canvas(prefix, suffix, spans, length, BOS, PAD)
    assert batch.canvas.shape == (len(spans), length)
    prompt = batch.prompt_ids[0].tolist()
    assert prompt[0] == BOS
    for row, span in enumerate(spans):
        canvas = batch.canvas[row].tolist()
        start = batch.span_start
        # nothing of the prefix is lost: prompt head + canvas tail == prefix
        assert prompt[1:] + canvas[:start] == prefix
        # span slots are exactly the unpinned positions
        pinned = batch.pinned[row].tolist()
        assert [not p for p in pinned] == [
            start <= i < start + span for i in range(length)
        ]
        # the suffix head follows the span, in order, then padding
        after = canvas[start + span :]
        n = min(len(suffix), len(after))
        assert after[:n] == suffix[:n]
        assert all(t == PAD for t in after[n:])


@settings(max_examples=200, deadline=None)
@given(
    prefix=ids,
    suffix=ids,
    span=st.integers(1, 40),
    cap=st.integers(1, 120),
    step=st.integers(1, 40),
)
def test_prompt_limit_drops_only_the_far_prefix(prefix, suffix, span, cap, step):
    whole = plan_canvas(prefix, suffix, [span], 64, BOS, PAD)
    batch = plan_canvas(prefix, suffix, [span], 64, BOS, PAD, cap, step)
    prompt = batch.prompt_ids[0].tolist()
    assert prompt[0] == BOS and len(prompt) <= cap
    kept = prompt[1:] + batch.canvas[0, : batch.span_start].tolist()
    assert kept == prefix[len(prefix) - len(kept) :]
    dropped = len(prefix) - len(kept)
    assert dropped % step == 0 or not kept
    if whole.prompt_ids.shape[1] <= cap:
        assert torch.equal(batch.canvas, whole.canvas)
        assert torch.equal(batch.prompt_ids, whole.prompt_ids)


def test_typing_at_the_span_extends_the_prompt_until_a_step_is_dropped():
    suffix = list(range(6, 80))
    prompts = []
    for typed in range(64):  # one token typed at a time in front of the span
        prefix = list(range(10, 300)) + [7] * typed
        batch = plan_canvas(prefix, suffix, [16], 64, BOS, PAD, 100, 32)
        prompts.append(batch.prompt_ids[0].tolist())
    extended = sum(now[: len(before)] == before for before, now in pairwise(prompts))
    assert extended == 63 - 2  # the first token moves twice: 32 tokens each time
    assert all(68 < len(p) <= 100 for p in prompts)


def test_short_suffix_gives_the_prefix_more_room():
    batch = plan_canvas(list(range(10, 200)), [7], [16], 64, BOS, PAD)
    assert batch.span_start == 64 - 16 - 1


def test_bad_span_lengths_are_rejected():
    with pytest.raises(ValueError, match="span lengths"):
        plan_canvas([6], [7], [64], 64, BOS, PAD)
    with pytest.raises(ValueError, match="empty"):
        plan_canvas([6], [7], [], 64, BOS, PAD)
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        plan_canvas([6], [7], [8], 64, BOS, PAD, max_prompt_tokens=0)
    with pytest.raises(ValueError, match="prompt_step"):
        plan_canvas([6], [7], [8], 64, BOS, PAD, prompt_step=0)


def test_targets_put_middle_then_end_of_span():
    batch = plan_canvas([10, 11], [12], [4, 6], 16, BOS, PAD)
    target = span_targets(batch, [20, 21], EOS)
    s = batch.span_start
    assert target[0, s : s + 4].tolist() == [20, 21, EOS, EOS]
    assert target[1, s : s + 6].tolist() == [20, 21, EOS, EOS, EOS, EOS]
    assert torch.equal(target[batch.pinned], batch.canvas[batch.pinned])


def test_eos_as_delete_cuts_everything_from_the_first_end_token():
    assert cut_at_end_of_span([5, 6, 1, 7, 1], {1}) == [5, 6]
    assert cut_at_end_of_span([1, 5], {1}) == []
    assert cut_at_end_of_span([5, 6], {1}) == [5, 6]
