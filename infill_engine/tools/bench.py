"""Engine benchmarks: step overhead against a bare forward, and diffusion against
token-by-token autoregression on a causal model of the same size, each measured in one
run; `format_report` prints what `infill bench` measured as tables.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from infill_engine.engine import InfillEngine, InfillRequest
from infill_engine.model.device import sync

SAMPLE_PREFIX = '''"""Small statistics helpers."""


def mean(values):
    """Arithmetic mean of a non-empty list."""
    total = 0
    for value in values:
        total += value
    return total / len(values)


def variance(values):
    """Population variance."""
    m = mean(values)
    return '''
SAMPLE_SUFFIX = """


if __name__ == "__main__":
    print(mean([1, 2, 3]), variance([1, 2, 3]))
"""


def median_ms(fn: Callable[[], Any], repeats: int, sync_to: Any) -> float:
    """Median wall time of `fn` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(sync_to)
        start = time.perf_counter()
        fn()
        sync(sync_to)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def step_overhead(
    engine: InfillEngine, steps: int = 12, repeats: int = 5
) -> dict[str, Any]:
    """Per-step time of the full engine vs a bare transformers forward on the same
    canvas.

    The engine runs `steps` steps (stopping disabled); the bare forward is
    `DiffusionGemmaForBlockDiffusion.forward` over the same canvas batch and cache, with
    self-conditioning logits, as transformers' own loop calls it. The overhead ratio
    compares engine steps that are all full (every canvas position runs, as in the
    bare forward); `configured_step_ms` is the mean step with the engine's own
    `refresh_every` (window-only steps between full ones).
    """
    # Diffusion decoding's step: a floor step is measured by the race below.
    configured = engine.config.with_overrides(
        max_steps=steps, confidence_threshold=1e-12, decoding="diffusion"
    )
    config = configured.with_overrides(refresh_every=1)
    request = InfillRequest(
        SAMPLE_PREFIX, SAMPLE_SUFFIX, span_lengths=(32,), config=config
    )
    batch = engine.plan(request)
    state = engine.denoiser.prefill(batch.prompt_ids, 1, engine.canvas_length)
    canvas = batch.canvas.to(engine.placement.device)
    vocab = engine.model.config.text_config.vocab_size
    previous = torch.zeros(1, engine.canvas_length, vocab, device=canvas.device)

    def bare() -> None:
        with torch.inference_mode():
            engine.model(
                decoder_input_ids=canvas,
                self_conditioning_logits=previous,
                cache=state.cache,
                decoder_position_ids=state.positions,
            )

    def full(exact: bool, req: InfillRequest = request) -> Callable[[], Any]:
        def run() -> None:
            engine.exact_self_conditioning = exact
            try:
                engine.fill(req)
            finally:
                engine.exact_self_conditioning = False

        return run

    bare_ms = median_ms(bare, repeats, engine.placement)
    engine_ms = median_ms(full(False), repeats, engine.placement) / steps
    exact_ms = median_ms(full(True), repeats, engine.placement) / steps
    own = replace(request, config=configured)
    configured_ms = median_ms(full(False, own), repeats, engine.placement) / steps
    return {
        "bare_forward_ms": bare_ms,
        "engine_step_ms": engine_ms,
        "engine_step_exact_ms": exact_ms,
        "configured_step_ms": configured_ms,
        "refresh_every": configured.refresh_every,
        "overhead_ratio": engine_ms / bare_ms,
        "overhead_ratio_exact": exact_ms / bare_ms,
    }


def causal_twin(engine: InfillEngine) -> Any:
    """A Llama-style causal LM with the engine model's width, depth, heads and
    vocabulary.

    Its MLP is as wide as the DiffusionGemma layer's dense MLP plus its active experts,
    so
    both models do about the same work per token.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tc = engine.model.config.text_config
    active = tc.intermediate_size + (tc.top_k_experts or 0) * (
        tc.moe_intermediate_size or 0
    )
    config = LlamaConfig(
        vocab_size=tc.vocab_size,
        hidden_size=tc.hidden_size,
        intermediate_size=active,
        num_hidden_layers=tc.num_hidden_layers,
        num_attention_heads=tc.num_attention_heads,
        num_key_value_heads=tc.num_key_value_heads,
        head_dim=tc.head_dim,
        max_position_embeddings=4096,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    model = LlamaForCausalLM(config)
    model.to(engine.placement.device, engine.placement.dtype)  # type: ignore[arg-type]
    return model.eval()


def versus_autoregressive(
    engine: InfillEngine, new_tokens: int = 32, repeats: int = 3
) -> dict[str, Any]:
    """Time per token written: the engine filling a span of `new_tokens` slots vs
    greedy decoding of `new_tokens` tokens with a KV cache (transformers
    `generate`) on a causal model of the same size, same prompt."""
    request = InfillRequest(SAMPLE_PREFIX, SAMPLE_SUFFIX, span_lengths=(new_tokens,))
    batch = engine.plan(request)
    prompt = torch.cat([batch.prompt_ids, batch.canvas[:, : batch.span_start]], dim=1)
    prompt = prompt.to(engine.placement.device)
    twin = causal_twin(engine)

    def autoregressive() -> None:
        with torch.inference_mode():
            twin.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                use_cache=True,
            )

    results = []

    def diffusion() -> None:
        results.append(engine.fill(request))

    ar_ms = median_ms(autoregressive, repeats, engine.placement)
    diffusion_ms = median_ms(diffusion, repeats, engine.placement)
    last = results[-1]
    # A floor fill may stop before its slots run out (it reached the suffix): the
    # two are compared per token written, not per call.
    written = max(last.candidates[0].tokens if last.candidates else 0, 1)
    return {
        "new_tokens": new_tokens,
        "autoregressive_ms": ar_ms,
        "autoregressive_forwards": new_tokens,
        "autoregressive_ms_per_token": ar_ms / new_tokens,
        "diffusion_ms": diffusion_ms,
        "diffusion_tokens": written,
        "diffusion_ms_per_token": diffusion_ms / written,
        "diffusion_steps": last.steps,
        "diffusion_tokens_per_forward": last.tokens_per_forward,
        "speedup": (ar_ms / new_tokens) / (diffusion_ms / written),
    }


def versus_llama_cpp(
    engine: InfillEngine, new_tokens: int = 32, lines: int = 12
) -> dict[str, Any]:
    """The peer a CPU user would pick instead: llama.cpp (llama-cpp-python) running
    the same base GGUF left to right, on the same prompt, against this engine, in
    one run: ms per token written and ms for the fill; then, on `lines` line holes
    (`concurrency.line_requests`), ms per line, each side cold (`line_race`).

    Returns `{"skipped": reason}` when llama-cpp-python is not installed (it is an
    extra: `pip install llama-cpp-python`, built from its sdist) or the base package
    is missing.
    """
    try:
        from llama_cpp import Llama
    except ImportError:
        return {"skipped": "llama-cpp-python is not installed"}
    import tempfile
    from pathlib import Path

    from infill_engine.model.build import base_gguf
    from infill_engine.model.loader import ModelLoadError

    request = InfillRequest(SAMPLE_PREFIX, SAMPLE_SUFFIX, span_lengths=(new_tokens,))
    threads = engine.placement.threads or 1
    with tempfile.TemporaryDirectory() as work:
        try:
            gguf = base_gguf(Path(work))
        except ModelLoadError as exc:
            return {"skipped": str(exc)}
        llm = Llama(str(gguf), n_ctx=2048, n_threads=threads, verbose=False)
        prompt = llm.tokenize(SAMPLE_PREFIX.encode("utf-8"), add_bos=True)

        def generate() -> None:
            llm.reset()  # no prompt cache carried over: a cold fill, as the engine's
            made = 0
            for _ in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
                made += 1
                if made >= new_tokens:
                    break

        llama_ms = median_ms(generate, 3, engine.placement)
        per_line = line_race(engine, llm, lines)
    results = []

    def fill() -> None:
        engine.denoiser._store.clear()  # cold, like the llama.cpp run
        results.append(engine.fill(request))

    engine_ms = median_ms(fill, 3, engine.placement)
    written = max(results[-1].candidates[0].tokens if results[-1].candidates else 0, 1)
    return {
        "threads": threads,
        "prompt_tokens": len(prompt),
        "new_tokens": new_tokens,
        "llama_cpp_ms": llama_ms,
        "llama_cpp_ms_per_token": llama_ms / new_tokens,
        "engine_ms": engine_ms,
        "engine_tokens": written,
        "engine_ms_per_token": engine_ms / written,
        "ratio_per_token": (engine_ms / written) / (llama_ms / new_tokens),
        "lines": per_line,
    }


def line_race(engine: InfillEngine, llm: Any, count: int) -> dict[str, Any]:
    """Line fills, cold, by the engine (its settings, prefix and suffix) and by
    llama.cpp greedy from the prefix alone to its first line break, the way a base
    without infill tokens runs there (its last 576 tokens, about what the engine's
    prompt keeps). Per side: the median ms of a line, the tokens a line took, and
    the lines that came back empty, counted apart (an empty answer is not a fast
    one)."""
    from infill_engine.tools.concurrency import line_requests

    requests = line_requests(count)
    sides: dict[str, dict[str, list[float]]] = {
        side: {"ms": [], "tokens": [], "empty": []} for side in ("llama_cpp", "engine")
    }
    for request in requests:
        text = request.prefix[-576 * 8 :].encode("utf-8")
        prompt = llm.tokenize(text, add_bos=True)
        prompt = prompt[:1] + prompt[1:][-576:]
        llm.reset()
        started = time.perf_counter()
        written = b""
        made = 0
        for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            made += 1
            if token == llm.token_eos():
                break
            written += llm.detokenize([token])
            if b"\n" in written or made >= 48:
                break
        sides["llama_cpp"]["ms"].append((time.perf_counter() - started) * 1000)
        sides["llama_cpp"]["tokens"].append(made)
        line = written.decode("utf-8", "replace").split("\n", 1)[0]
        sides["llama_cpp"]["empty"].append(not line.strip())
        engine.denoiser._store.clear()
        sync(engine.placement)
        started = time.perf_counter()
        result = engine.fill(request)
        sync(engine.placement)
        sides["engine"]["ms"].append((time.perf_counter() - started) * 1000)
        best = result.candidates[0] if result.candidates else None
        sides["engine"]["tokens"].append(best.tokens if best else 0)
        sides["engine"]["empty"].append(not result.text.split("\n", 1)[0].strip())
    out: dict[str, Any] = {"lines": len(requests)}
    for side, got in sides.items():
        out[side] = {
            "p50_ms": statistics.median(got["ms"]),
            "mean_tokens": statistics.fmean(got["tokens"]),
            "empty": int(sum(got["empty"])),
        }
    out["ratio_p50"] = out["engine"]["p50_ms"] / out["llama_cpp"]["p50_ms"]
    return out


def format_report(report: dict) -> str:
    """The benchmark as Markdown tables."""
    o, ar = report["overhead"], report["vs_autoregressive"]
    lines = [
        "| engine | ms |",
        "| --- | --- |",
        f"| bare forward (transformers, whole canvas) | {o['bare_forward_ms']:.1f} |",
        f"| engine step, full (span window) | {o['engine_step_ms']:.1f} |",
        "| engine step, full (whole-canvas window) | "
        f"{o['engine_step_exact_ms']:.1f} |",
        f"| engine step as configured (refresh every {o['refresh_every']}) "
        f"| {o['configured_step_ms']:.1f} |",
        f"| overhead ratio, engine / bare | {o['overhead_ratio']:.2f} "
        f"(whole canvas {o['overhead_ratio_exact']:.2f}) |",
        "",
        f"| span of {ar['new_tokens']} | tokens | ms | ms/token | forwards "
        "| tokens/forward |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| autoregressive (causal twin, KV cache) | {ar['new_tokens']} "
        f"| {ar['autoregressive_ms']:.0f} | {ar['autoregressive_ms_per_token']:.1f} "
        f"| {ar['autoregressive_forwards']} | 1.00 |",
        f"| this engine | {ar['diffusion_tokens']} | {ar['diffusion_ms']:.0f} "
        f"| {ar['diffusion_ms_per_token']:.1f} | {ar['diffusion_steps']} "
        f"| {ar['diffusion_tokens_per_forward']:.2f} |",
        f"| speed-up per token, AR / engine | {ar['speedup']:.2f} | | | | |",
    ]
    lc = report.get("vs_llama_cpp", {})
    if "skipped" in lc:
        lines += ["", f"llama.cpp side by side skipped: {lc['skipped']}"]
    elif lc:
        lines += [
            "",
            f"| same base, prompt of {lc['prompt_tokens']} tokens, cold, "
            f"{lc['threads']} thread(s) | tokens | ms | ms/token |",
            "| --- | --- | --- | --- |",
            f"| llama.cpp, left to right | {lc['new_tokens']} "
            f"| {lc['llama_cpp_ms']:.0f} | {lc['llama_cpp_ms_per_token']:.1f} |",
            f"| this engine | {lc['engine_tokens']} | {lc['engine_ms']:.0f} "
            f"| {lc['engine_ms_per_token']:.1f} |",
            f"| engine / llama.cpp per token | {lc['ratio_per_token']:.2f} | | |",
        ]
        race = lc.get("lines")
        if race:
            lines += [
                "",
                f"| {race['lines']} line holes, cold, 1 line each | p50 ms "
                "| tokens a line | empty |",
                "| --- | --- | --- | --- |",
            ]
            for side, label in (
                ("llama_cpp", "llama.cpp, left to right, prefix only"),
                ("engine", "this engine, prefix and suffix"),
            ):
                r = race[side]
                lines.append(
                    f"| {label} | {r['p50_ms']:.0f} | {r['mean_tokens']:.1f} "
                    f"| {r['empty']} |"
                )
            lines.append(
                f"| engine / llama.cpp per line | {race['ratio_p50']:.2f} | | |"
            )
    line = report.get("lsp", {}).get("single-line", {})
    if line.get("requests"):
        tokens = line["steps"] * line["tokens_per_forward"]
        twin = tokens * ar["autoregressive_ms_per_token"]
        lines += [
            "",
            "| single-line request through LSP | ms |",
            "| --- | --- |",
            f"| p50, this engine ({tokens:.1f} tokens on average) "
            f"| {line['p50_ms']:.0f} |",
            f"| the causal twin writing as many tokens | {twin:.0f} |",
        ]
    if "hardware" in report:
        h = report["hardware"]
        lines += [
            "",
            f"| hardware mode: {h['architecture']}, {h['parameters'] / 1e9:.2f}B "
            f"random weights, {h['device']}, {h['steps']} steps | value |",
            "| --- | --- |",
            f"| ms per denoising step | {h['ms_per_step']:.2f} |",
            f"| tokens/s (one {h['canvas_length']}-token canvas, prefill included) "
            f"| {h['tokens_per_s']:.0f} |",
            f"| weights touched per step | {h['bytes_per_step'] / 1e9:.2f} GB |",
            f"| copy bandwidth | {h['copy_bandwidth_gb_s']:.0f} GB/s |",
            f"| bandwidth bound per step | {h['bandwidth_bound_ms_per_step']:.2f} ms |",
            f"| step time as a fraction of the bound | {h['fraction_of_bound']:.2f} |",
            f"| transformers generate: ms per step ({h['reference_steps']} steps) "
            f"| {h['reference_ms_per_step']:.2f} |",
            f"| transformers generate: tokens/s | {h['reference_tokens_per_s']:.0f} |",
            f"| ours / generate speed-up | {h['speedup_vs_reference']:.2f} |",
        ]
    if "lsp" in report:
        lines += ["", *format_lsp(report["lsp"])]
    return "\n".join(lines)


def format_lsp(lsp: dict) -> list[str]:
    """The LSP part of the benchmark: one Markdown table row per request kind."""
    lines = [
        "| LSP request | n (engine ran, empty) | p50 ms | p95 ms | max ms | steps "
        "| tok/fwd | queue | prefill | denoise | post | protocol |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, r in lsp.items():
        if not r.get("requests"):
            continue
        lines.append(
            f"| {kind} | {r['requests']} ({r.get('engine_runs', r['requests'])}, "
            f"{r.get('empty', 0)}) "
            f"| {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
            f"{r['max_ms']:.0f} | {r['steps']:.1f} | "
            f"{r['tokens_per_forward']:.2f} | {r.get('queue_ms', 0.0):.0f} | "
            f"{r['prefill_ms']:.0f} | {r['denoise_ms']:.0f} | "
            f"{r['postprocess_ms']:.0f} | {r['protocol_ms']:.0f} |"
        )
    return lines
