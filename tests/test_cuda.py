"""The engine and the adaptation step on a CUDA GPU, against the same model on the CPU.

These need a GPU and run only where torch sees one; everywhere else they are reported
as skipped, and the rest of the suite covers the same code on the CPU.
"""

from __future__ import annotations

import random

import pytest
import torch
from conftest import build_tiny_model

from infill_engine import InfillEngine, InfillRequest
from infill_engine.core.denoiser import DiffusionGemmaDenoiser
from infill_engine.model.lora import add_adapter
from infill_engine.training import train

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"
)

REQUEST = InfillRequest(
    prefix="def add(a, b):\n    total = a + b\n    return ",
    suffix="\n\nprint(add(1, 2))\n",
)


@pytest.fixture(scope="module")
def cuda_engine(tiny_model_dir):
    return InfillEngine.load(str(tiny_model_dir), device="cuda", span_lengths=(8, 16))


def test_the_engine_runs_resident_on_the_gpu_in_bf16(cuda_engine):
    assert cuda_engine.placement.device.type == "cuda"
    assert cuda_engine.placement.dtype == torch.bfloat16
    params = list(cuda_engine.model.parameters())
    assert all(p.is_cuda and p.dtype == torch.bfloat16 for p in params)
    result = cuda_engine.fill(REQUEST)
    assert result.candidates and result.steps > 0
    again = cuda_engine.fill(REQUEST)
    assert [c.text for c in again.candidates] == [c.text for c in result.candidates]


def test_a_cancelled_gpu_fill_is_empty(cuda_engine):
    result = cuda_engine.fill(REQUEST, cancel=lambda: True)
    assert result.cancelled and not result.candidates


def test_denoiser_logits_on_gpu_equal_the_cpu_ones(tiny_model, tiny_tokenizer):
    gpu_model = build_tiny_model(tiny_tokenizer).to("cuda")
    prompt = torch.tensor([[2, 50, 60, 70]])
    canvas = torch.randint(0, 300, (2, 64), generator=torch.Generator().manual_seed(0))
    vocab = tiny_model.config.text_config.vocab_size
    previous = torch.randn(2, 64, vocab, generator=torch.Generator().manual_seed(1))
    outs = []
    for model in (tiny_model, gpu_model):
        denoiser = DiffusionGemmaDenoiser(model, cache_entries=0)
        device = denoiser.device
        with torch.inference_mode():
            state = denoiser.prefill(prompt.to(device), 2, 64)
            first = denoiser(canvas.to(device), None, state, slice(10, 30))
            whole = denoiser(
                canvas.to(device), previous.to(device), state, slice(0, 64)
            )
        outs.append((first.float().cpu(), whole.float().cpu()))
    for gpu, cpu in zip(outs[1], outs[0], strict=True):
        torch.testing.assert_close(gpu, cpu, atol=2e-3, rtol=2e-3)


def test_an_adaptation_step_on_gpu_matches_the_cpu_loss(tiny_tokenizer):
    rng = random.Random(0)
    source = REQUEST.prefix + "a + b" + REQUEST.suffix
    files = [train.SourceFile("t.py", "t", "MIT", source * 4)]
    stream = train.batches(
        train.examples(files, tiny_tokenizer, 64, rng, (1, 16), 0, (8, 16)), 4
    )
    batch = next(stream)
    noisy, noised = train.add_noise(batch, len(tiny_tokenizer), torch.Generator())
    losses = []
    for device in ("cpu", "cuda"):
        model = build_tiny_model(tiny_tokenizer).to(device)
        adapters = add_adapter(model, 4, 8.0)
        gen = torch.Generator()
        moved = batch.to(device)
        loss = train.span_loss(
            model, moved, noisy.to(device), noised.to(device), False, gen, 0.0, False
        )
        loss.backward()
        grads = [lora.lora_a.grad for lora in adapters.values()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        losses.append(float(loss))
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)


def test_engine_benchmark_figures_on_gpu(cuda_engine):
    from infill_engine.tools import bench

    overhead = bench.step_overhead(cuda_engine, steps=3, repeats=1)
    race = bench.versus_autoregressive(cuda_engine, 8, repeats=1)
    assert overhead["bare_forward_ms"] > 0 and overhead["configured_step_ms"] > 0
    assert race["autoregressive_forwards"] == 8 and race["diffusion_steps"] > 0
