"""The engine on a tiny random DiffusionGemma, with scripted denoisers where the answer
matters."""

import threading
from dataclasses import replace
from itertools import pairwise

import pytest
import torch
from helpers import ScriptedDenoiser

from infill_engine import DenoiseConfig, InfillEngine, InfillRequest
from infill_engine.model.device import resolve

REQUEST = InfillRequest(
    prefix="def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))\n"
)


def scripted(engine: InfillEngine, request: InfillRequest, middles: list[str]) -> None:
    """Make the engine's model 'know' one middle per span length."""
    batch = engine.plan(request)
    script = batch.canvas.clone()
    eos = min(engine.end_ids)
    for row, (span, middle) in enumerate(zip(batch.span_lengths, middles, strict=True)):
        ids = engine._encode(middle)[:span]
        ids += [eos] * (span - len(ids))
        script[row, batch.span_start : batch.span_start + span] = torch.tensor(ids)
    engine.denoiser = ScriptedDenoiser(script, engine.denoiser.vocab_size)


@pytest.fixture
def engine(tiny_model, tiny_tokenizer):
    return InfillEngine(
        tiny_model, tiny_tokenizer, resolve("cpu"), span_lengths=(8, 16)
    )


def test_loaded_checkpoint_matches_the_model_it_was_saved_from(
    engine, tiny_model_dir, monkeypatch
):
    monkeypatch.setenv("INFILL_CPU_DTYPE", "float32")  # the in-memory model's dtype
    loaded = InfillEngine.load(str(tiny_model_dir), device="cpu", span_lengths=(8, 16))
    a, b = engine.fill(REQUEST), loaded.fill(REQUEST)
    assert (a.text, a.steps, a.span_length) == (b.text, b.steps, b.span_length)
    assert a.steps > 0 and not a.cancelled


def test_same_request_same_result(tiny_engine):
    assert tiny_engine.fill(REQUEST).text == tiny_engine.fill(REQUEST).text


def test_eos_as_delete_and_no_special_tokens_in_text(engine):
    scripted(engine, REQUEST, ["a + b", "a + b"])
    result = engine.fill(REQUEST)
    assert result.text == "a + b"
    assert result.tokens_per_forward > 1
    assert all(c.complete for c in result.candidates)


def test_batched_lengths_prefer_a_row_that_finished(engine):
    request = InfillRequest(REQUEST.prefix, REQUEST.suffix, span_lengths=(2, 16))
    scripted(engine, request, ["a + b * 2", "a + b * 2"])
    result = engine.fill(request)
    assert result.span_length == 16 and result.text == "a + b * 2"
    short = [c for c in result.candidates if c.span_length == 2][0]
    assert not short.complete  # no room for its end-of-span: ranked last


def test_validity_check_picks_another_candidate(engine):
    request = InfillRequest(
        REQUEST.prefix,
        REQUEST.suffix,
        span_lengths=(8, 16),
        validate=lambda t: "(" not in t,
    )
    scripted(engine, request, ["a + b", "max((a, b)"])
    assert engine.fill(request).text == "a + b"


def test_cancelled_before_start_returns_empty(engine):
    flag = threading.Event()
    flag.set()
    result = engine.fill(REQUEST, cancel=flag)
    assert result.cancelled and result.text == "" and result.steps == 0


def test_request_config_overrides_steps(tiny_engine):
    config = tiny_engine.config.with_overrides(max_steps=3)
    result = tiny_engine.fill(
        InfillRequest(REQUEST.prefix, REQUEST.suffix, config=config)
    )
    assert result.steps <= 3


def test_long_prefix_goes_to_the_encoder_up_to_the_prompt_limit(tiny_engine):
    prefix = "".join(f"x{i} = {i}\n" for i in range(400))
    ids = tiny_engine._encode(prefix)
    batch = tiny_engine.plan(InfillRequest(prefix, ""))
    prompt = batch.prompt_ids[0].tolist()
    # BOS, then the prefix tokens right before the canvas tail, no more than allowed
    # (the far prefix goes 32 tokens at a time).
    assert tiny_engine.max_prompt_tokens - 32 < len(prompt)
    assert len(prompt) <= tiny_engine.max_prompt_tokens
    tail = batch.canvas[0, : batch.span_start].tolist()
    assert prompt[1:] + tail == ids[len(ids) - len(prompt) + 1 - len(tail) :]


def test_cross_file_context_opens_the_prompt_and_the_prefix_fills_the_rest(
    tiny_engine,
):
    prefix = "".join(f"x{i} = {i}\n" for i in range(400))
    context = "# other.py\n" + "".join(f"def helper_{i}(): pass\n" for i in range(200))
    limit = tiny_engine.max_prompt_tokens
    for budget in (0, 40):
        request = InfillRequest(prefix, "", context=context, context_tokens=budget)
        batch = tiny_engine.plan(request)
        prompt = batch.prompt_ids[0].tolist()
        kept = budget or limit // 2
        context_ids = tiny_engine._encode(context)
        # BOS, the context's end within its budget, then the prefix as far as it fits
        assert prompt[1 : kept + 1] == context_ids[-kept:]
        assert limit - 32 < len(prompt) <= limit
        ids = tiny_engine._encode(prefix)
        tail = batch.canvas[0, : batch.span_start].tolist()
        head = prompt[kept + 1 :]
        assert head + tail == ids[len(ids) - len(head) - len(tail) :]


def test_typing_deep_in_a_long_file_reuses_the_prefill(tiny_engine):
    prefix = "".join(f"value_{i} = compute(alpha, {i}) + offset\n" for i in range(400))
    line = "total = compute(alpha, beta) + offset * scale - bias / count + 1"
    before = tiny_engine.denoiser.prefill_tokens_computed
    prompts = []
    for n in range(1, len(line) + 1):  # one keystroke at a time
        batch = tiny_engine.plan(InfillRequest(prefix + line[:n], "\n"))
        prompts.append(batch.prompt_ids[0].tolist())
        tiny_engine.denoiser.prefill(batch.prompt_ids, 1, tiny_engine.canvas_length)
    moved = sum(now[: len(last)] != last for last, now in pairwise(prompts))
    assert moved <= 4  # the prompt's first token moves only when a step is dropped
    computed = tiny_engine.denoiser.prefill_tokens_computed - before
    assert computed < (moved + 2) * max(len(p) for p in prompts)


def test_a_warmed_request_finds_its_prompt_encoded(tiny_engine):
    prefix = "".join(f"item_{i} = compute(alpha, {i})\n" for i in range(60))
    request = InfillRequest(prefix + "total = ", "\nprint(total)\n", (8,))
    assert tiny_engine.warm(request) > 0
    result = tiny_engine.fill(request)
    assert result.prefilled_tokens == 0 and result.steps > 0
    other = InfillRequest("x = 1\n" + prefix + "y = ", "\n", (8,))  # another start
    assert tiny_engine.fill(other).prefilled_tokens > 0


def test_short_prefix_is_kept_whole(tiny_engine):
    prefix = "x = 1\n" * 40
    total = len(tiny_engine._encode(prefix))
    assert total < tiny_engine.max_prompt_tokens
    batch = tiny_engine.plan(InfillRequest(prefix, ""))
    assert batch.prompt_ids.shape[1] - 1 + batch.span_start == total


def test_reused_prefill_gives_the_same_logits_as_a_fresh_one(
    tiny_model, tiny_tokenizer
):
    a = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"))
    b = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"))
    prompt = torch.tensor([[2] + list(range(10, 60))])
    longer = torch.tensor([[2] + list(range(10, 90))])
    a.denoiser.prefill(prompt, 1, 64)  # stored, then extended below
    reused = a.denoiser.prefill(longer, 2, 64)
    fresh = b.denoiser.prefill(longer, 2, 64)
    assert a.denoiser.prefill_tokens_computed == 51 + 30
    canvas = torch.randint(0, 300, (2, 64))
    whole = slice(0, 64)
    torch.testing.assert_close(
        a.denoiser(canvas, None, reused, whole), b.denoiser(canvas, None, fresh, whole)
    )


def test_a_shorter_or_diverging_prompt_reuses_the_shared_start(
    tiny_model, tiny_tokenizer
):
    a = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"))
    b = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"))
    a.denoiser.prefill(torch.tensor([[2] + list(range(10, 90))]), 1, 64)
    # Text deleted at the span (a shorter prompt), then a different last token.
    for prompt, computed in (
        ([2] + list(range(10, 70)), 0),
        ([2] + list(range(10, 69)) + [300], 1),
    ):
        ids = torch.tensor([prompt])
        before = a.denoiser.prefill_tokens_computed
        reused = a.denoiser.prefill(ids, 2, 64)
        assert a.denoiser.prefill_tokens_computed - before == computed
        fresh = b.denoiser.prefill(ids, 2, 64)
        canvas = torch.randint(0, 300, (2, 64))
        whole = slice(0, 64)
        torch.testing.assert_close(
            a.denoiser(canvas, None, reused, whole),
            b.denoiser(canvas, None, fresh, whole),
        )
    # The stored long prefill was cut in a copy, not in place.
    longest = max(a.denoiser._store, key=len)
    assert a.denoiser._store[longest].get_seq_length() == len(longest) == 81


def test_prefills_as_long_as_the_sliding_window_are_not_cut(tiny_model, tiny_tokenizer):
    engine = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"))
    window = tiny_model.config.get_text_config().sliding_window
    long = [2] + [10 + i % 200 for i in range(window + 10)]
    engine.denoiser.prefill(torch.tensor([long]), 1, 64)
    before = engine.denoiser.prefill_tokens_computed
    engine.denoiser.prefill(torch.tensor([long[:100]]), 1, 64)
    assert engine.denoiser.prefill_tokens_computed - before == 100


def test_whole_canvas_window_is_exactly_the_transformers_forward(
    tiny_model, tiny_tokenizer
):
    engine = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"))
    state = engine.denoiser.prefill(torch.tensor([[2, 50, 60, 70]]), 2, 64)
    canvas = torch.randint(0, 300, (2, 64))
    previous = torch.randn(2, 64, tiny_model.config.text_config.vocab_size)
    with torch.no_grad():
        reference = tiny_model(
            decoder_input_ids=canvas,
            self_conditioning_logits=previous,
            cache=state.cache,
            decoder_position_ids=state.positions,
        ).logits
    ours = engine.denoiser(canvas, previous, state, slice(0, 64))
    torch.testing.assert_close(ours, reference)
    # a span window gives the same logits where it has them at the first step
    first = engine.denoiser(canvas, None, state, slice(10, 30))
    torch.testing.assert_close(
        first, engine.denoiser(canvas, None, state, slice(0, 64))[:, 10:30]
    )


class WindowSpy:
    """Passes calls through to a denoiser, recording the window of each."""

    def __init__(self, real):
        self.real, self.windows, self.full = real, [], []
        self.vocab_size, self.device = real.vocab_size, real.device

    def prefill(self, *args):
        return self.real.prefill(*args)

    def __call__(self, canvas, self_cond, state, window, pinned=None, full=True):
        self.windows.append(window)
        self.full.append(full)
        return self.real(canvas, self_cond, state, window, pinned, full)


def test_exact_mode_computes_the_whole_canvas_and_window_mode_the_span(
    tiny_model, tiny_tokenizer
):
    for exact in (True, False):
        engine = InfillEngine(
            tiny_model, tiny_tokenizer, resolve("cpu"), exact_self_conditioning=exact
        )
        spy = engine.denoiser = WindowSpy(engine.denoiser)
        result = engine.fill(REQUEST)
        batch = engine.plan(REQUEST)
        expected = slice(0, engine.canvas_length) if exact else batch.window
        assert spy.windows and all(w == expected for w in spy.windows)
        assert result.steps > 0 and len(result.candidates) == 2
        assert all(0 < c.score <= 1 for c in result.candidates)


@pytest.mark.parametrize(
    ("refresh_every", "expected"),
    [(1, [True] * 5), (0, [True] + [False] * 4), (2, [True, False] * 2 + [True])],
)
def test_refresh_every_sets_which_steps_run_the_whole_canvas(
    tiny_model, tiny_tokenizer, refresh_every, expected
):
    engine = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"))
    spy = engine.denoiser = WindowSpy(engine.denoiser)
    config = DenoiseConfig(max_steps=5, schedule="linear", refresh_every=refresh_every)
    result = engine.fill(replace(REQUEST, config=config))
    assert result.steps == 5 and spy.full == expected


def test_config_defaults_come_from_the_generation_config():
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        DiffusionGemmaGenerationConfig,
        EntropyBoundSamplerConfig,
    )

    gen = DiffusionGemmaGenerationConfig(
        max_denoising_steps=12, sampler_config=EntropyBoundSamplerConfig(0.3), t_max=0.9
    )
    config = DenoiseConfig.from_generation_config(gen)
    assert (config.max_steps, config.entropy_bound, config.t_max, config.t_min) == (
        12,
        0.3,
        0.9,
        0.4,
    )
    with pytest.raises(ValueError, match="max_steps must be > 0"):
        DenoiseConfig(max_steps=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_steps": 0}, "max_steps must be > 0"),
        ({"max_steps": 2.5}, "max_steps must be an integer"),
        ({"entropy_bound": 0.0}, "entropy_bound must be > 0"),
        ({"t_min": 0.9}, "t_min <= t_max"),
        ({"stability_threshold": -1}, "stability_threshold must be >= 0"),
        ({"confidence_threshold": 0.0}, "confidence_threshold must be > 0"),
        ({"refresh_every": -1}, "refresh_every must be an integer >= 0"),
    ],
)
def test_bad_denoise_settings_are_rejected_with_a_clear_message(change, message):
    with pytest.raises(ValueError, match=message):
        DenoiseConfig(**change)


def test_the_prefill_caches_what_the_whole_encoder_caches(tiny_model, tiny_tokenizer):
    # The prefill skips all of the encoder's last layer but its keys and values.
    engine = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"))
    prompt = torch.tensor([[2] + list(range(10, 50))])
    ours = engine.denoiser.prefill(prompt, 1, 64).cache
    with torch.no_grad():
        theirs = tiny_model.model.encoder(input_ids=prompt).cache
    assert len(ours.layers) == len(theirs.layers)
    for a, b in zip(ours.layers, theirs.layers, strict=True):
        torch.testing.assert_close(a.keys, b.keys)
        torch.testing.assert_close(a.values, b.values)


class CancelAt:
    """A cancel flag that turns on at its `at`-th check (the loop checks it before
    each step, the denoiser before each layer)."""

    def __init__(self, at: int):
        self.at, self.checks = at, 0

    def __call__(self) -> bool:
        self.checks += 1
        return self.checks >= self.at


def test_a_cancel_seen_inside_the_prefill_stops_it_and_stores_nothing(
    tiny_model, tiny_tokenizer
):
    engine = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"))
    cancel = CancelAt(2)  # before the encoder's second layer
    result = engine.fill(REQUEST, cancel)
    assert result.cancelled and result.text == "" and result.steps == 0
    assert cancel.checks == 2  # no layer ran after the flag was seen
    assert not engine.denoiser._store and engine.denoiser.prefill_tokens_computed == 0
    fresh = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"))
    assert engine.fill(REQUEST).text == fresh.fill(REQUEST).text
    assert engine.warm(REQUEST, CancelAt(1)) == 0


def test_a_cancel_seen_inside_a_step_stops_it_there(tiny_model, tiny_tokenizer):
    engine = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"))
    layers = tiny_model.config.text_config.num_hidden_layers
    # The prefill's layers, the loop's check before step 1, then the decoder's
    # second layer of step 1.
    cancel = CancelAt(layers + 1 + 2)
    result = engine.fill(REQUEST, cancel)
    assert result.cancelled and result.steps == 0
    assert cancel.checks == layers + 3
    # Without the flag the hooks are gone: the same request runs to the end.
    assert not engine.fill(REQUEST).cancelled
    assert all(
        not layer._forward_pre_hooks for layer in tiny_model.model.decoder.layers
    )
