"""The left-to-right floor: floor decoding of a converted Gemma 3 is the base's own
greedy decoding with token healing, token for token; drafts and the rerank only add."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_gemma3

from infill_engine import InfillEngine, InfillRequest
from infill_engine.core import floor
from infill_engine.core.config import DenoiseConfig
from infill_engine.core.healing import TokenHealing, unheal
from infill_engine.core.loop import decode_floor
from infill_engine.engine import suffix_head
from infill_engine.model.convert import from_gemma3
from infill_engine.model.device import resolve

MASK = 3
PREFIXES = [
    "def mean(values):\n    total = 0\n    for value in values:\n        total +",
    "import os\n\n\ndef read(path):\n    with open(path) as handle:\n"
    "        return handle.re",
    "x",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.",
]
SUFFIX = "\n\n\nif __name__ == '__main__':\n    print(mean([1, 2, 3]))\n"


@pytest.fixture(scope="module")
def pair(tiny_tokenizer):
    """(causal Gemma 3, its exact conversion with shift 1 and a mask token)."""
    causal = tiny_gemma3(len(tiny_tokenizer), seed=1)
    ids = torch.randint(3, len(tiny_tokenizer), (1, 48))
    converted = from_gemma3(causal, ids, canvas_length=32)
    converted.config.readout_shift = 1
    converted.config.mask_token_id = MASK
    return causal, converted


def engine_for(converted, tok, **denoise) -> InfillEngine:
    config = DenoiseConfig(decoding="floor", greedy=True, **denoise)
    return InfillEngine(
        converted, tok, resolve("cpu"), config=config, heal_last_token=True
    )


def base_greedy(causal, tok, engine, prefix: str, slots: int) -> tuple[list[int], str]:
    """Gemma 3's greedy decoding from the prefix alone, healing its last token as the
    engine does: the tokens (up to an end of span) and the fill's text."""
    ids = tok(prefix, add_special_tokens=False)["input_ids"]
    healing = TokenHealing(tok, causal.config.vocab_size, engine.end_ids)
    kept, healed = healing.heal(ids)
    sequence = [tok.bos_token_id, *kept]
    out: list[int] = []
    with torch.no_grad():
        for i in range(slots):
            logits = causal(input_ids=torch.tensor([sequence])).logits[0, -1]
            if i == 0 and healed:
                logits = logits.masked_fill(~healing.allowed(healed), -1e4)
            token = int(logits.argmax())
            if token in engine.end_ids:
                break
            out.append(token)
            sequence.append(token)
    return out, unheal(tok.decode(out, skip_special_tokens=True), healed)


def fills_unlike_the_base(causal, tok, engine, slots: int = 12) -> int:
    """How many of `PREFIXES` the engine fills otherwise than the base's greedy."""
    differ = 0
    for prefix in PREFIXES:
        _, want = base_greedy(causal, tok, engine, prefix, slots)
        differ += engine.fill(InfillRequest(prefix, SUFFIX, (slots,))).text != want
    return differ


@pytest.mark.parametrize("slots", [5, 12])
@pytest.mark.parametrize("drafts", [0, 4])
def test_floor_fill_is_the_base_greedy_with_healing(
    pair, tiny_tokenizer, slots, drafts
):
    causal, converted = pair
    engine = engine_for(converted, tiny_tokenizer, draft_tokens=drafts)
    for prefix in PREFIXES:
        want_ids, want = base_greedy(causal, tiny_tokenizer, engine, prefix, slots)
        result = engine.fill(InfillRequest(prefix, SUFFIX, span_lengths=(slots,)))
        assert result.text == want, prefix
        assert result.candidates[0].tokens == len(want_ids)


def test_batched_rows_each_read_their_own_prompt(pair, tiny_tokenizer):
    """Several requests of one shape run as one batch with left-padded prompts; each
    row is still its own base greedy line, and an alternative row does not disturb
    the greedy one."""
    causal, converted = pair
    engine = engine_for(converted, tiny_tokenizer, draft_tokens=3, alternatives=2)
    long = [p * 3 for p in PREFIXES[:2]] + [PREFIXES[0] * 2]
    requests = [(InfillRequest(p, SUFFIX * 3, span_lengths=(6,)), None) for p in long]
    starts = {engine.plan(r).span_start for r, _ in requests}
    assert len(starts) == 1  # one shape: one batch
    results = engine.fill_batch(requests)
    for (request, _), result in zip(requests, results, strict=True):
        _, want = base_greedy(causal, tiny_tokenizer, engine, request.prefix, 6)
        assert result.text == want
        assert len(result.candidates) >= 1


def test_a_causal_row_that_reads_ahead_breaks_the_floor(
    pair, tiny_tokenizer, monkeypatch
):
    """The test above can fail: rows that see the rows after them (a bidirectional
    mask) give other tokens than the base."""
    causal, converted = pair
    engine = engine_for(converted, tiny_tokenizer, draft_tokens=4)
    real = floor._mask

    def leaky(memory, kind, offsets, causal_rows, dtype, text):
        return real(memory, kind, offsets, causal_rows & False, dtype, text)

    monkeypatch.setattr(floor, "_mask", leaky)
    assert fills_unlike_the_base(causal, tiny_tokenizer, engine)


def test_weights_changed_in_committed_rows_break_the_floor(pair, tiny_tokenizer):
    """An adapter merged into the weights changes what committed rows compute: the
    floor is then no longer the base's (which is why the build leaves it unmerged)."""
    causal, converted = pair
    import copy

    adapted = copy.deepcopy(converted)
    with torch.no_grad():
        for layer in adapted.model.decoder.layers:
            proj = layer.mlp.up_proj.weight
            proj.add_(torch.randn_like(proj) * proj.std())
    engine = engine_for(adapted, tiny_tokenizer)
    assert fills_unlike_the_base(causal, tiny_tokenizer, engine)


def test_drafts_commit_several_tokens_a_forward_and_the_same_text(pair, tiny_tokenizer):
    """A prefix that repeats itself lets the drafts run ahead of the base: fewer
    forwards for the same tokens."""
    _, converted = pair
    text = "value = compute(alpha, beta)\n" * 6 + "value = comp"
    plain = engine_for(converted, tiny_tokenizer).fill(InfillRequest(text, "", (12,)))
    drafted = engine_for(converted, tiny_tokenizer, draft_tokens=6).fill(
        InfillRequest(text, "", (12,))
    )
    assert drafted.text == plain.text
    assert plain.steps >= plain.candidates[0].tokens
    assert drafted.steps <= plain.steps


def test_the_rerank_reads_the_suffix_and_takes_the_best_read(pair, tiny_tokenizer):
    """Alternatives are weighed by how the base reads each fill on into the suffix:
    the weights move with the suffix, and the fill given is the best-weighed one."""
    _, converted = pair
    engine = engine_for(converted, tiny_tokenizer, alternatives=4, rerank_margin=0.0)
    seen = []
    rerank = engine._rerank

    def spy(group, batch, outcome, texts):
        scores = rerank(group, batch, outcome, texts)
        seen.append((texts, scores))
        return scores

    engine._rerank = spy
    for suffix in ["\nreturn total\n", ")\n"]:
        result = engine.fill(InfillRequest(PREFIXES[0], suffix, (6,)))
        texts, scores = seen[-1]
        assert result.text == texts[max(range(len(texts)), key=scores.__getitem__)]
    assert seen[0][0] == seen[1][0]  # the same alternatives
    assert seen[0][1] != seen[1][1]  # weighed otherwise after another suffix


def test_with_a_large_margin_the_greedy_line_stays_first(pair, tiny_tokenizer):
    _, converted = pair
    plain = engine_for(converted, tiny_tokenizer)
    ranked = engine_for(converted, tiny_tokenizer, alternatives=3, rerank_margin=1e9)
    for prefix in PREFIXES:
        request = InfillRequest(prefix, "\nreturn total\n", (6,))
        assert ranked.fill(request).text == plain.fill(request).text


def test_a_single_line_fill_stops_at_its_line_break(pair, tiny_tokenizer):
    _, converted = pair
    engine = engine_for(converted, tiny_tokenizer)
    for prefix in PREFIXES:
        whole = engine.fill(InfillRequest(prefix, SUFFIX, (24,)))
        line = engine.fill(InfillRequest(prefix, SUFFIX, (24,), single_line=True))
        assert line.text.split("\n")[0] == whole.text.split("\n")[0]
        assert line.text.count("\n") <= 1 and line.steps <= whole.steps


def test_a_cancelled_floor_fill_is_empty(pair, tiny_tokenizer):
    _, converted = pair
    engine = engine_for(converted, tiny_tokenizer)
    result = engine.fill(InfillRequest(PREFIXES[0], SUFFIX, (8,)), lambda: True)
    assert result.cancelled and result.text == ""


def test_accept_drafts_keeps_only_what_the_base_confirms():
    assert floor.accept_drafts([5], []) == ([5], 0)
    assert floor.accept_drafts([5, 6, 7], [5, 6]) == ([5, 6, 7], 2)
    assert floor.accept_drafts([5, 9, 7], [5, 6]) == ([5, 9], 1)
    assert floor.accept_drafts([4, 6, 7], [5, 6]) == ([4], 0)


def test_lookup_drafts_follow_the_latest_repeat():
    history = [1, 2, 3, 4, 9, 1, 2, 3, 5, 1, 2]
    assert floor.lookup_drafts(history, [history], 2) == [3, 5]
    assert floor.lookup_drafts([7, 8], [[7, 8]], 3) == []  # nothing after it
    assert floor.lookup_drafts([6, 7], [[6, 7], [0, 6, 7, 8, 9]], 3) == [8, 9]
    assert floor.lookup_drafts(history, [history], 0) == []


def test_floor_decoding_refuses_a_model_without_the_readout_shift(tiny_engine):
    with pytest.raises(ValueError, match="readout shift"):
        floor.check_shift(tiny_engine.model)


def test_suffix_head_is_the_rest_of_the_line_and_the_next():
    assert suffix_head(")\n    b = 2\n    c = 3\n") == ")\n    b = 2"
    assert suffix_head("") == ""


def test_a_row_that_reaches_the_suffix_stops(pair, tiny_tokenizer):
    """`reached` ends a row (a multi-line fill that wrote the suffix's first line)."""
    _, converted = pair
    engine = engine_for(converted, tiny_tokenizer)
    request = InfillRequest(PREFIXES[0], SUFFIX, (12,))
    batch = engine.plan(request)
    state = engine.denoiser.prefill(batch.prompt_ids, 1, engine.canvas_length)
    with torch.inference_mode():
        out = decode_floor(
            converted, state, batch, 12, engine.end_ids, reached=lambda b, t: len(t) > 2
        )
    assert len(out.tokens[0]) == 3 and out.complete == [True]


def test_a_multi_line_fill_has_reached_the_suffix_once_it_wrote_its_first_line(
    pair, tiny_tokenizer
):
    """The base writes on past a hole; a fill stops once one of its whole lines is
    the suffix's first line with code on it (the server drops that line)."""
    _, converted = pair
    engine = engine_for(converted, tiny_tokenizer)
    group = [
        _planned(engine, InfillRequest("x = 0\n", "\n\n    b = 2\n    c = 3\n", (24,)))
    ]
    reached = engine._reached(group, 1)
    ids = lambda text: tiny_tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert reached(0, ids("a = 1\n    b = 2\nc"))
    assert not reached(0, ids("a = 1\n    b = 3\nc"))
    assert not reached(0, ids("a = 1\n    b = 2"))  # that line is not done yet


def _planned(engine, request):
    from infill_engine.engine import _Planned

    return _Planned(request, engine.plan(request), lambda: False, 0.0)


def test_the_benchmark_runs_on_a_floor_engine(pair, tiny_tokenizer):
    """`infill bench` on the default model's decoding: its diffusion step figures and
    the per-token race (a floor plan's canvas is not the diffusion canvas)."""
    from infill_engine.tools import bench

    _, converted = pair
    engine = engine_for(converted, tiny_tokenizer, draft_tokens=4)
    overhead = bench.step_overhead(engine, steps=2, repeats=1)
    race = bench.versus_autoregressive(engine, 8, repeats=1)
    assert overhead["configured_step_ms"] > 0 and race["diffusion_ms_per_token"] > 0


def test_a_fill_that_fails_the_check_falls_back_to_the_alternatives(
    pair, tiny_tokenizer
):
    """With `fallback_alternatives`, a greedy line the check rejects is replaced by
    the first alternative it accepts, the rows `alternatives=4` would have written;
    a line it accepts stays, and costs no extra forward."""
    _, converted = pair
    request = InfillRequest(PREFIXES[0], SUFFIX, (6,))
    wide = engine_for(converted, tiny_tokenizer, alternatives=4).fill(request)
    greedy = next(c.text for c in wide.candidates if c.alternative == 0)
    others = {c.alternative: c.text for c in wide.candidates if c.text != greedy}
    assert others, "the tiny model gave no alternative other than its greedy line"
    wanted = others[min(others)]
    engine = engine_for(converted, tiny_tokenizer, fallback_alternatives=4)

    def checked(check):
        return engine.fill(dataclasses.replace(request, validate=check))

    kept = checked(lambda text: True)
    assert kept.text == greedy and kept.steps == engine.fill(request).steps
    fell = checked(lambda text: text != greedy)
    assert fell.text == wanted and fell.candidates[0].valid
    assert [c.text for c in fell.candidates].count(greedy) == 1  # tried once
    assert fell.steps > kept.steps
    none = checked(lambda text: False)  # nothing passes: the greedy line leads
    assert none.text == greedy and not any(c.valid for c in none.candidates)


def test_compare_fills_with_the_servers_check_where_the_fallback_is_on(
    pair, tiny_tokenizer, monkeypatch
):
    """`compare`'s engine rows ask as the server asks: with the fallback on, the
    request carries the parse check of the hole's language (the line-end check at a
    line end), and a line it rejects is replaced; with the fallback off, no check is
    built."""
    from infill_engine.data.holes import Hole
    from infill_engine.evals import compare
    from infill_engine.tools import grammars

    _, converted = pair
    hole = Hole(PREFIXES[0], " value", SUFFIX, "line")
    plain = engine_for(converted, tiny_tokenizer)
    monkeypatch.setitem(compare._ENGINES, "plain", plain)
    greedy = compare.first_line(compare.engine_filler("plain")(hole, "go"))
    asked: list[tuple[str, bool]] = []

    def fill_check(language, prefix, suffix, clean, line_end=False):
        asked.append((language, line_end))
        assert (prefix, suffix) == (hole.prefix, hole.suffix)
        return lambda raw: clean(raw) != greedy

    monkeypatch.setattr(grammars, "fill_check", fill_check)
    assert compare.first_line(compare.engine_filler("plain")(hole, "go")) == greedy
    assert asked == []
    falling = engine_for(converted, tiny_tokenizer, fallback_alternatives=4)
    monkeypatch.setitem(compare._ENGINES, "falling", falling)
    assert compare.first_line(compare.engine_filler("falling")(hole, "go")) != greedy
    assert asked == [("go", not SUFFIX.split("\n", 1)[0].strip())]
