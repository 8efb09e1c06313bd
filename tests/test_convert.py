"""Gemma 3 -> DiffusionGemma conversion, the readout shift, mask noise and the adapter,
on tiny random Gemma 3 models built here."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import tiny_gemma3
from transformers import (
    DiffusionGemmaForBlockDiffusion,
)

from infill_engine import InfillEngine, InfillRequest
from infill_engine.core.canvas import plan_canvas
from infill_engine.core.denoiser import (
    DiffusionGemmaDenoiser,
    read_window,
    window_logits,
)
from infill_engine.core.sampler import EntropyBoundSampler
from infill_engine.data.holes import Hole
from infill_engine.model import loader, lora
from infill_engine.model.convert import from_gemma3
from infill_engine.model.device import resolve
from infill_engine.training import train

MASK = 3


def encoder_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """The encoder's next-token logits for `ids` (the LM head over its states)."""
    with torch.no_grad():
        hidden = model.model.encoder.language_model(input_ids=ids)
        return model.lm_head(hidden.last_hidden_state)


@pytest.fixture(scope="module")
def pair(tiny_tokenizer):
    """(causal Gemma 3, its conversion with shift 1 and a mask token)."""
    causal = tiny_gemma3(len(tiny_tokenizer))
    ids = torch.randint(3, len(tiny_tokenizer), (1, 48))
    converted = from_gemma3(causal, ids, canvas_length=32)
    converted.config.readout_shift = 1
    converted.config.mask_token_id = MASK
    return causal, converted


def test_converted_encoder_reproduces_gemma3_logits(pair):
    causal, converted = pair
    ids = torch.randint(3, causal.config.vocab_size, (1, 40))  # past the window
    with torch.no_grad():
        expected = causal(input_ids=ids).logits
        hidden = converted.model.encoder.language_model(input_ids=ids)
        logits = converted.lm_head(hidden.last_hidden_state)
        cap = converted.final_logit_softcapping
        logits = torch.tanh(logits / cap) * cap
    assert converted.model.decoder.layers[5].self_attn.v_proj is not None
    torch.testing.assert_close(logits, expected, atol=2e-3, rtol=1e-3)


def test_shifted_first_slot_is_the_causal_next_token(pair):
    """Slot i is read from position i - 1: with the last prefix token alone on the
    canvas, the first slot's logits are Gemma 3's next-token prediction."""
    causal, converted = pair
    ids = torch.randint(3, causal.config.vocab_size, (1, 30))
    denoiser = DiffusionGemmaDenoiser(converted)
    denoiser.condition_known = False
    state = denoiser.prefill(ids[:, :-1], 1, 1)
    read = read_window(converted, slice(1, 2))
    assert read == slice(0, 1)
    with torch.no_grad():
        expected = causal(input_ids=ids).logits[:, -1]
        got = window_logits(
            converted, ids[:, -1:], None, state.cache, state.positions, read
        )
    torch.testing.assert_close(got[:, 0], expected, atol=2e-3, rtol=1e-3)


def test_readout_shift_needs_a_pinned_position_before_the_span(pair):
    with pytest.raises(ValueError, match="pinned position"):
        read_window(pair[1], slice(0, 4))


def test_plan_puts_bos_before_a_span_at_the_start_of_a_file():
    batch = plan_canvas([], [7, 8], [4], 16, bos_id=2, pad_id=0, readout_shift=1)
    assert batch.span_start == 1
    assert batch.canvas[0, 0] == 2 and bool(batch.pinned[0, 0])
    unshifted = plan_canvas([], [7, 8], [4], 16, bos_id=2, pad_id=0)
    assert unshifted.span_start == 0


def _shifted_batch(tokenizer, rng_seed: int = 0) -> train.Batch:
    hole = Hole(
        "def mean(values):\n    total = sum(values)\n    return ",
        "total / len(values)",
        "\n\n\nprint(mean([1, 2]))\n",
        "line",
    )
    rng = random.Random(rng_seed)
    example = train.make_example(
        tokenizer, hole, 16, 32, rng, buckets=(1,), shift=1, spans=(16,)
    )
    assert example is not None
    return train.Batch(
        example.prompt_ids[None], example.target[None], example.span_mask[None]
    )


def test_training_and_engine_read_the_same_shifted_logits(pair, tiny_tokenizer):
    """The training loss is the cross entropy of exactly the logits the engine's
    denoiser computes for the same canvas (both read through the readout shift)."""
    _, converted = pair
    batch = _shifted_batch(tiny_tokenizer)
    gen = torch.Generator().manual_seed(0)
    noisy, noised = train.add_noise(batch, len(tiny_tokenizer), gen, 1.0, MASK)
    assert bool((noisy[noised] == MASK).all()) and bool(noised.any())
    with torch.no_grad():
        loss = train.span_loss(converted, batch, noisy, noised, False, gen)
        denoiser = DiffusionGemmaDenoiser(converted)
        state = denoiser.prefill(batch.prompt_ids, 1, noisy.shape[1])
        window = train.batch_window(batch.span_mask)
        logits = denoiser(noisy, None, state, window, ~noised)
    ce = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), batch.target[:, window], reduction="none"
    )
    hidden, clean = noised[:, window], (batch.span_mask & ~noised)[:, window]
    expected = (ce * hidden).sum() / hidden.sum() + train.CLEAN_WEIGHT * (
        ce * clean
    ).sum() / clean.sum().clamp(min=1)
    torch.testing.assert_close(loss, expected)


def test_mask_noise_fills_every_unkept_slot():
    canvas = torch.tensor([[5, 6, 7, 8]])
    span = torch.tensor([[False, True, True, True]])
    keep = torch.tensor([[False, False, True, False]])
    out = EntropyBoundSampler.renoise(canvas, keep, span, 100, None, mask_id=MASK)
    assert out.tolist() == [[5, MASK, 7, MASK]]


def test_engine_fills_with_a_converted_model(pair, tiny_tokenizer):
    """The whole engine path with shift 1 and mask noise: BOS is pinned before a span
    at the start of a file, and the slots not accepted hold the mask token."""
    _, converted = pair
    engine = InfillEngine(converted, tiny_tokenizer, resolve("cpu"))
    views = []
    request = InfillRequest("", "\nprint(x)\n", span_lengths=[8])
    result = engine.fill(request, on_step=views.append)
    assert not result.cancelled and views
    first = views[0]
    assert int(first.canvas[0, 0]) == tiny_tokenizer.bos_token_id
    assert bool(first.pinned[0, 0])
    open_slots = ~first.accepted[0, 1:9]
    assert bool(open_slots.any())
    assert bool((first.canvas[0, 1:9][open_slots] == MASK).all())


def test_loader_restores_the_full_attention_values(pair, tiny_tokenizer, tmp_path):
    _, converted = pair
    converted.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    ids = torch.randint(3, len(tiny_tokenizer), (1, 20))
    logits = lambda model: encoder_logits(model, ids)  # noqa: E731
    loaded = loader.load(str(tmp_path), "cpu").model
    torch.testing.assert_close(logits(loaded), logits(converted))
    assert loaded.config.readout_shift == 1 and loaded.config.mask_token_id == MASK
    stock = DiffusionGemmaForBlockDiffusion.from_pretrained(tmp_path).eval()
    assert not torch.allclose(logits(stock), logits(converted), atol=1e-3)


def test_merged_adapter_equals_the_trained_forward(tiny_tokenizer, tmp_path):
    """An adapter applied to the tied weights gives what the training forward gave,
    encoder and decoder both."""
    vocab = len(tiny_tokenizer)
    ids = torch.randint(3, vocab, (1, 12))

    def convert():
        return from_gemma3(tiny_gemma3(vocab, seed=1), ids, canvas_length=32)

    def outputs(model):
        with torch.no_grad():
            hidden = model.model.encoder.language_model(input_ids=ids)
            cache = train.encode_prompt(model, ids[:, :6])[0]
            positions = train.decoder_positions(6, 6)
            dec = window_logits(model, ids[:, 6:], None, cache, positions, slice(0, 6))
            return model.lm_head(hidden.last_hidden_state), dec

    trained = convert()
    adapters = lora.add_adapter(trained, rank=4, alpha=8.0)
    torch.manual_seed(3)
    for module in adapters.values():
        torch.nn.init.normal_(module.lora_b, std=0.05)
        # bfloat16 is what is saved: compare against what the file holds
        module.lora_a.data = module.lora_a.data.bfloat16().float()
        module.lora_b.data = module.lora_b.data.bfloat16().float()
    expected = outputs(trained)
    lora.save_adapter(adapters, tmp_path / "a.safetensors", {"steps": 1})
    merged = convert()
    before = outputs(merged)
    meta = lora.merge_adapter(merged, tmp_path / "a.safetensors")
    after = outputs(merged)
    assert meta == {"steps": 1}
    assert not torch.allclose(before[0], expected[0], atol=1e-3)
    torch.testing.assert_close(after[0], expected[0], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(after[1], expected[1], atol=1e-3, rtol=1e-3)


def test_whole_canvas_logits_work_with_a_readout_shift(pair, tiny_tokenizer):
    """`exact_self_conditioning` computes the whole canvas; with shift 1 the first
    position has no position before it to read from. Regression: every such fill
    raised. The span's logits are the window's, so the text is the same."""
    _, converted = pair
    request = InfillRequest("def f(x):\n    ", "\nprint(x)\n", span_lengths=[8])
    window = InfillEngine(converted, tiny_tokenizer, resolve("cpu")).fill(request)
    exact = InfillEngine(
        converted, tiny_tokenizer, resolve("cpu"), exact_self_conditioning=True
    ).fill(request)
    assert not exact.cancelled
    assert exact.text == window.text


def test_conversion_with_scales_measured_on_the_whole_base_ignores_zeroed_rows(
    tiny_tokenizer,
):
    from infill_engine.model.convert import conversion_scales

    causal = tiny_gemma3(len(tiny_tokenizer))
    ids = torch.randint(3, 60, (1, 48), generator=torch.Generator().manual_seed(0))
    scales = conversion_scales(causal, ids)
    torch.manual_seed(1)  # the blocks the conversion leaves at their init
    reference = from_gemma3(causal, ids, canvas_length=32).state_dict()
    with torch.no_grad():  # what a base pack restores: dropped rows are zero
        causal.model.embed_tokens.weight[100:] = 0
    assert conversion_scales(causal, ids) != scales
    torch.manual_seed(1)
    again = from_gemma3(causal, ids, canvas_length=32, scales=scales).state_dict()
    vocab = len(tiny_tokenizer)
    for name, value in reference.items():
        if value.shape[0] == vocab:  # the embeddings and the head tied to them
            torch.testing.assert_close(again[name][:100], value[:100], rtol=0, atol=0)
        else:
            torch.testing.assert_close(again[name], value, rtol=0, atol=0)


def test_training_loads_a_built_model_as_the_engine_does(
    pair, tiny_tokenizer, tmp_path
):
    # The adapter trained on a GPU loaded its base with transformers alone, which drops
    # the full-attention value projections the engine restores: it learned another
    # model than the one it was merged into, and its fills fell from 13 % to 6 % exact.
    from infill_engine.training.adapt import _load

    _, converted = pair
    converted.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    ids = torch.randint(3, len(tiny_tokenizer), (1, 20))
    engine_model = loader.load(str(tmp_path), "cpu").model
    torch.testing.assert_close(
        encoder_logits(_load(tmp_path), ids), encoder_logits(engine_model, ids)
    )


def test_detached_value_projections_give_diffusiongemmas_own_layout(pair, tmp_path):
    import copy

    from infill_engine.model.convert import detach_full_attention_values

    _, converted = pair
    converted.save_pretrained(tmp_path)
    stock = DiffusionGemmaForBlockDiffusion.from_pretrained(tmp_path).eval()
    detached = copy.deepcopy(converted)
    detach_full_attention_values(detached)
    ids = torch.randint(3, 100, (1, 20))
    with torch.no_grad():
        a = detached.model.encoder.language_model(input_ids=ids).last_hidden_state
        b = stock.model.encoder.language_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(a, b)
    detached.save_pretrained(tmp_path / "again")
    assert not any(
        "self_attn.v_proj" in k and f"layers.{i}." in k
        for k in detached.state_dict()
        for i, kind in enumerate(detached.config.text_config.layer_types)
        if kind == "full_attention"
    )


def test_switched_off_experts_are_skipped_without_changing_a_bit(
    pair, tiny_model, tiny_tokenizer
):
    import copy

    from infill_engine.model.convert import skip_switched_off_experts

    _, converted = pair
    fast = copy.deepcopy(converted)
    layers = len(converted.model.decoder.layers)
    assert skip_switched_off_experts(fast) == 2 * layers  # encoder and decoder
    ids = torch.randint(3, 100, (1, 20), generator=torch.Generator().manual_seed(2))
    canvas = torch.randint(3, 100, (1, 32), generator=torch.Generator().manual_seed(3))
    outs = []
    for model in (converted, fast):
        cache, _ = train.encode_prompt(model, ids)
        with torch.no_grad():
            out = model(
                decoder_input_ids=canvas,
                cache=cache,
                decoder_position_ids=train.decoder_positions(20, 32),
            )
        outs.append((encoder_logits(model, ids), out.logits))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    live = copy.deepcopy(tiny_model)  # random experts: they add something, keep them
    assert skip_switched_off_experts(live) == 0
