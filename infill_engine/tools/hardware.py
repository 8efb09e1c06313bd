"""Hardware mode of `infill bench`: a DiffusionGemma architecture with random weights.

No download is needed: the model is built from a config (transformers' default
`DiffusionGemmaConfig`, a checkpoint's `config.json`, or the tiny test config) with
random weights in the placement's dtype, directly on the device. One user, a whole
canvas to denoise (every position but the first is a span slot), a fixed number of
steps (random weights are never confident, so neither loop stops early). Measured in
one run:

* ours: ms per denoising step, and tokens per second (canvas tokens / time of the
  prefill and all denoising steps);
* the memory-bandwidth bound: bytes of weights one step touches (the decoder's dense
  weights, the LM head, and the experts the router actually picked), divided by the
  measured device-to-device copy bandwidth; the step time as a fraction of it;
* theirs: transformers' `generate` on the same model and prompt, the same number of
  steps (counted by a draft streamer), and the ratio of its time to ours.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from infill_engine.core.canvas import plan_canvas
from infill_engine.core.config import DenoiseConfig
from infill_engine.core.denoiser import DiffusionGemmaDenoiser
from infill_engine.core.loop import denoise
from infill_engine.model.device import Placement, sync

NEVER_CONFIDENT = 1e-30  # a confidence threshold no random model reaches


def load_config(name: str) -> Any:
    """'default' (transformers' DiffusionGemmaConfig()), 'tiny', or a config.json.

    Raises:
        ValueError: no such file, or a config that cannot be built (transformers 5.24's
            `DiffusionGemmaConfig()` leaves the experts unset).
    """
    from transformers import DiffusionGemmaConfig

    if name == "default":
        config = DiffusionGemmaConfig()
        if config.get_text_config().num_experts is None:
            raise ValueError(
                "transformers' default DiffusionGemmaConfig leaves the experts unset "
                "(num_experts None) and cannot be built: give 'tiny' or a "
                "checkpoint's config.json as the architecture"
            )
        return config
    if name == "tiny":
        from infill_engine.model.configs import tiny_config

        return tiny_config(8192, 256, 4, 4)
    path = Path(name)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"architecture must be default, tiny or a config.json: {name}")
    return DiffusionGemmaConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))


def random_model(config: Any, placement: Placement, seed: int = 0) -> Any:
    """The architecture with random weights, built on the device in its dtype."""
    from transformers import DiffusionGemmaForBlockDiffusion

    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(placement.dtype)
    try:
        with torch.device(placement.device):
            model = DiffusionGemmaForBlockDiffusion(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def copy_bandwidth(placement: Placement, mebibytes: int, repeats: int = 5) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), median of repeats."""
    count = mebibytes * 2**20 // 2
    src = torch.empty(count, dtype=torch.bfloat16, device=placement.device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        sync(placement)
        start = time.perf_counter()
        dst.copy_(src)
        sync(placement)
        times.append(time.perf_counter() - start)
    times.sort()
    return 2 * src.numel() * src.element_size() / times[len(times) // 2]


def _unique(tensors: Any) -> dict[int, torch.Tensor]:
    return {t.data_ptr(): t for t in tensors}


def bytes_touched(model: Any, step: Any) -> int:
    """Bytes of weights one call of `step()` reads: dense decoder weights, the LM
    head, and for each layer only the experts its router picked."""
    decoder = model.model.decoder
    dense = _unique(
        p for name, p in decoder.named_parameters() if ".experts." not in name
    )
    dense.update(_unique(model.lm_head.parameters()))
    hit: dict[int, set[int]] = {}
    hooks = []
    for index, layer in enumerate(decoder.layers):
        router = getattr(layer, "router", None)
        if router is None:
            continue

        def record(_module: Any, _inputs: Any, output: Any, index: int = index) -> None:
            hit.setdefault(index, set()).update(output[2].flatten().tolist())

        hooks.append(router.register_forward_hook(record))
    try:
        step()
    finally:
        for hook in hooks:
            hook.remove()
    total = sum(t.numel() * t.element_size() for t in dense.values())
    for index, experts in hit.items():
        mod = decoder.layers[index].experts
        per_expert = sum(
            w[0].numel() * w.element_size() for w in (mod.gate_up_proj, mod.down_proj)
        )
        total += len(experts) * per_expert
    return total


class StepCounter:
    """A draft streamer for `generate`: counts denoising steps."""

    def __init__(self) -> None:
        self.steps = 0

    def put(self, value: Any) -> None:
        pass

    def put_draft(self, **_: Any) -> None:
        self.steps += 1

    def end(self) -> None:
        pass


def run(
    config: Any,
    placement: Placement,
    steps: int = 16,
    prompt_tokens: int = 512,
    repeats: int = 3,
    bandwidth_mebibytes: int = 1024,
) -> dict[str, Any]:
    """Build the random model, time our loop and transformers' generate; see module."""
    model = random_model(config, placement)
    text = config.get_text_config()
    canvas_length = int(config.canvas_length)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(10, text.vocab_size, (1, prompt_tokens), generator=gen)
    bos, pad = int(text.bos_token_id), int(text.pad_token_id)
    batch = plan_canvas(
        prompt[0].tolist(), [], [canvas_length - 1], canvas_length, bos, pad
    )
    denoiser = DiffusionGemmaDenoiser(model, cache_entries=0)
    settings = DenoiseConfig(max_steps=steps, confidence_threshold=NEVER_CONFIDENT)

    def ours() -> int:
        with torch.inference_mode():
            sync(placement)
            start = time.perf_counter()
            state = denoiser.prefill(batch.prompt_ids, 1, canvas_length)
            sync(placement)
            prefilled = time.perf_counter()
            outcome = denoise(denoiser, state, batch, settings)
            sync(placement)
            timings.append((prefilled - start, time.perf_counter() - prefilled))
            return outcome.steps

    def one_step() -> None:
        with torch.inference_mode():
            state = denoiser.prefill(batch.prompt_ids, 1, canvas_length)
            canvas = batch.canvas.to(placement.device)
            denoiser(canvas, None, state, batch.window)

    counter = StepCounter()
    full_prompt = torch.cat([batch.prompt_ids, batch.canvas[:, :1]], dim=1)
    full_prompt = full_prompt.to(placement.device)

    def theirs() -> None:
        counter.steps = 0
        with torch.inference_mode():
            sync(placement)
            start = time.perf_counter()
            model.generate(
                input_ids=full_prompt,
                max_new_tokens=canvas_length,
                max_denoising_steps=steps,
                confidence_threshold=NEVER_CONFIDENT,
                streamer=counter,
            )
            sync(placement)
            reference.append(time.perf_counter() - start)

    timings: list[tuple[float, float]] = []
    reference: list[float] = []
    ours()  # warm-up
    our_steps = [ours() for _ in range(repeats)]
    theirs()  # warm-up
    for _ in range(repeats):
        theirs()
    touched = bytes_touched(model, one_step)
    bandwidth = copy_bandwidth(placement, bandwidth_mebibytes)
    measured = sorted(timings[1:], key=sum)[len(timings[1:]) // 2]
    our_s = sum(measured)  # prefill + denoising, as generate does both
    their_s = sorted(reference[1:])[len(reference[1:]) // 2]
    step_ms = measured[1] * 1000 / our_steps[-1]
    bound_ms = touched / bandwidth * 1000
    return {
        "device": placement.describe(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "canvas_length": canvas_length,
        "prompt_tokens": prompt_tokens,
        "steps": our_steps[-1],
        "prefill_ms": measured[0] * 1000,
        "ms_per_step": step_ms,
        "tokens_per_s": (canvas_length - 1) / our_s,
        "bytes_per_step": touched,
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "bandwidth_bound_ms_per_step": bound_ms,
        "fraction_of_bound": bound_ms / step_ms,
        "reference_steps": counter.steps,
        "reference_ms_per_step": their_s * 1000 / max(counter.steps, 1),
        "reference_tokens_per_s": canvas_length / their_s,
        "speedup_vs_reference": their_s / our_s,
    }
