"""Several requests in one canvas batch: each row reads its own prompt, so a batched
fill is the fill the request would get alone."""

import threading
from dataclasses import replace

import pytest
import torch
from conftest import build_decisive_model

from infill_engine import DenoiseConfig, InfillEngine, InfillRequest
from infill_engine.model.device import resolve

SOURCE = '''import os


def total(values):
    """Sum the values."""
    result = 0
    for value in values:
        result += value
    return result


def mean(values):
    if not values:
        return 0.0
    return total(values) / len(values)


class Counter:
    def __init__(self):
        self.count = 0

    def bump(self, by=1):
        self.count += by
        return self.count
'''

GREEDY = DenoiseConfig(max_steps=4, greedy=True, schedule="linear")


def holes(count: int) -> list[InfillRequest]:
    """Line holes at different depths of SOURCE: prompts of different lengths."""
    lines = SOURCE.splitlines(keepends=True)
    picks = [5, 9, 14, 19, 23][:count]
    return [
        InfillRequest(
            prefix="".join(lines[:i]) + "    ",
            suffix="\n" + "".join(lines[i + 1 :]),
            span_lengths=[8],
        )
        for i in picks
    ]


@pytest.fixture(scope="module")
def masked_engine(tiny_tokenizer):
    """Decoded greedily, a fill is a function of the request alone, whatever else
    shares its batch."""
    model = build_decisive_model(tiny_tokenizer, seed=3)
    return InfillEngine(
        model,
        tiny_tokenizer,
        resolve("cpu"),
        config=GREEDY,
        span_lengths=(8,),
        max_prompt_tokens=96,
        canvas_length=32,
    )


def test_rows_with_their_own_prompts_give_each_prompt_s_logits(masked_engine):
    requests = holes(3)
    batches = [masked_engine.plan(r) for r in requests]
    assert len({b.prompt_ids.shape[1] for b in batches}) == 3  # padding is exercised
    denoiser = masked_engine.denoiser
    canvas = torch.cat([b.canvas for b in batches])
    window = batches[0].window
    known = torch.cat([b.pinned for b in batches])
    with torch.inference_mode():
        state = denoiser.prefill_many(
            [b.prompt_ids for b in batches], [1, 1, 1], masked_engine.canvas_length
        )
        together = denoiser(canvas, None, state, window, known, full=True)
        again = denoiser(canvas, together, state, window, known, full=False)
        for row, b in enumerate(batches):
            alone = denoiser.prefill(b.prompt_ids, 1, masked_engine.canvas_length)
            first = denoiser(b.canvas, None, alone, window, b.pinned, full=True)
            second = denoiser(b.canvas, first, alone, window, b.pinned, full=False)
            torch.testing.assert_close(together[row], first[0], atol=1e-3, rtol=1e-4)
            torch.testing.assert_close(again[row], second[0], atol=1e-3, rtol=1e-4)


def test_a_batched_fill_is_the_fill_each_request_gets_alone(masked_engine):
    requests = holes(4)
    alone = [masked_engine.fill(r) for r in requests]
    together = masked_engine.fill_batch([(r, None) for r in requests])
    assert [r.text for r in together] == [r.text for r in alone]
    assert len({r.text for r in alone}) > 1  # the holes are told apart
    for mine, own in zip(together, alone, strict=True):
        # the same candidates; scores agree up to float rounding
        assert [replace(c, score=0.0) for c in mine.candidates] == [
            replace(c, score=0.0) for c in own.candidates
        ]
        assert [c.score for c in mine.candidates] == pytest.approx(
            [c.score for c in own.candidates], abs=1e-5
        )
    assert all(not r.cancelled and r.steps == GREEDY.max_steps for r in together)


def test_healed_and_plain_requests_batch_as_they_fill_alone(masked_engine):
    # Half the holes cut mid-word: their first slot is held to the healed token.
    requests = [
        replace(r, prefix=r.prefix + "re") if i % 2 else r
        for i, r in enumerate(holes(4))
    ]
    engine = InfillEngine(
        masked_engine.model,
        masked_engine.tokenizer,
        masked_engine.placement,
        config=GREEDY,
        span_lengths=(8,),
        max_prompt_tokens=96,
        canvas_length=32,
        heal_last_token=True,
    )
    planned = [engine.plan(r) for r in requests]
    assert [bool(b.healed) for b in planned] == [False, True, False, True]
    assert len({(b.span_start, b.span_lengths) for b in planned}) == 1  # one batch
    alone = [engine.fill(r) for r in requests]
    together = engine.fill_batch([(r, None) for r in requests])
    assert [r.text for r in together] == [r.text for r in alone]
    for mine, own in zip(together, alone, strict=True):
        assert [c.score for c in mine.candidates] == pytest.approx(
            [c.score for c in own.candidates], abs=1e-5
        )


def test_requests_of_other_shapes_run_apart_and_keep_their_order(masked_engine):
    short, long = holes(2)
    long = InfillRequest(long.prefix, long.suffix, span_lengths=[12])
    steps = DenoiseConfig(max_steps=2, greedy=True, schedule="linear")
    fewer = InfillRequest(short.prefix, short.suffix, span_lengths=[8], config=steps)
    requests = [short, long, fewer]
    together = masked_engine.fill_batch([(r, None) for r in requests])
    assert [r.span_length for r in together] == [8, 12, 8]
    assert [r.steps for r in together] == [4, 4, 2]
    assert [r.text for r in together] == [masked_engine.fill(r).text for r in requests]


def test_a_cancelled_request_comes_back_empty_and_the_others_do_not(masked_engine):
    requests = holes(3)
    stale = threading.Event()
    stale.set()
    results = masked_engine.fill_batch(
        [(requests[0], None), (requests[1], stale), (requests[2], None)]
    )
    assert results[1].cancelled and results[1].text == ""
    assert not results[0].cancelled and not results[2].cancelled
    assert results[0].text == masked_engine.fill(requests[0]).text
    assert results[2].text == masked_engine.fill(requests[2]).text


def test_a_batch_whose_requests_are_all_cancelled_stops(masked_engine):
    stale = threading.Event()
    stale.set()
    results = masked_engine.fill_batch([(r, stale) for r in holes(2)])
    assert all(r.cancelled and r.steps == 0 for r in results)


def test_each_request_is_ranked_by_its_own_validity_check(masked_engine):
    engine = InfillEngine(
        masked_engine.model,
        masked_engine.tokenizer,
        masked_engine.placement,
        config=GREEDY,
        span_lengths=(4, 8),
        max_prompt_tokens=96,
        canvas_length=32,
    )
    first, second = holes(2)
    picky = [
        InfillRequest(first.prefix, first.suffix, validate=lambda t: len(t) % 2 == 0),
        InfillRequest(second.prefix, second.suffix, validate=lambda t: len(t) % 2 == 1),
    ]
    together = engine.fill_batch([(r, None) for r in picky])
    for request, result in zip(picky, together, strict=True):
        alone = engine.fill(request)
        assert result.text == alone.text
        assert [c.valid for c in result.candidates] == [
            c.valid for c in alone.candidates
        ]


def test_prompts_past_the_sliding_window_are_not_padded_together(
    masked_engine, monkeypatch
):
    denoiser = masked_engine.denoiser
    window = masked_engine.model.config.get_text_config().sliding_window
    assert denoiser.batchable(window - 32, 32)
    assert not denoiser.batchable(window - 31, 32)
    calls = []
    monkeypatch.setattr(denoiser, "batchable", lambda *a: False)
    original = denoiser.prefill_many
    monkeypatch.setattr(
        denoiser, "prefill_many", lambda *a: calls.append(a) or original(*a)
    )
    requests = holes(2)
    together = masked_engine.fill_batch([(r, None) for r in requests])
    assert calls == []
    assert [r.text for r in together] == [masked_engine.fill(r).text for r in requests]
