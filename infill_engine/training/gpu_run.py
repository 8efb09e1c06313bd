"""One command for a GPU machine: train the adapter against a deadline, judge it, bench.

    python -m infill_engine.training.gpu_run --minutes 8 --out "$OUT"
        [--pack work-data/datapack] [--base-pack DIR] [--adapter FILE] [--work DIR]
    python -m infill_engine.training.gpu_run --smoke --out DIR   # CPU rehearsal

Everything fits one time budget (`--minutes`, start to end):

1. **Check** the GPU (name, bf16, memory) and load the data pack (`datapack`), built on
   a CPU beforehand: the loop reads token arrays, no tokenizer runs in it.
2. **Base**: the default model built without its adapter, from a carried base pack
   (`--base-pack`, `training.basepack`) when the machine lacks the base package.
3. **Resume** from this run's last checkpoint in `--work`, else from `--adapter` (the
   shipped adapter by default), else from zero.
4. **Train** the low-rank adapter for the left-to-right floor: it changes only the
   canvas rows that hold noise or the suffix (`train.floor_rows`), and the prompt's
   prefill runs without it, so every row the floor reads stays the base's and
   training can only add to the floor. bf16 autocast, SDPA attention, fused AdamW,
   TF32. `--compile` runs the step through `torch.compile` (eager if it fails); off
   by default, since as written the step recompiles for each prompt and window shape
   and past dynamo's limit (rehearsed on the CPU: one step took 3.5 minutes).
   The prefill runs without gradients; the backward covers the canvas only.
   A checkpoint every `--checkpoint-minutes` (into `--work`, and the adapter into
   `--out`), so a run cut off still returns its last minute.
5. **Judge**, in the same run on the pack's held-out holes: the span loss of the base
   alone, of the adapter it resumed from and of the new one. `improved` in
   `summary.json` says whether the new adapter beats the one it resumed from.
6. With the time left, on CUDA: the CUDA engine tests (`tests/test_cuda.py`), `infill
   bench --device cuda` (hardware mode on the full-size architecture), and `compare`
   on the held-out sets (`--compare-n`; needs `work-data/corpus`).

Everything it brings back is under `--out`: `adapter.safetensors` (split into
`adapter.safetensors.part-N` pieces of 15 MiB when larger; `cat` joins them), `log.tsv`
(step, minutes, learning rate, loss, tokens/s), `summary.json` (tokens seen, tokens/s,
model FLOP utilisation, losses, GPU, minutes), `cuda_tests.log`, `bench.json`,
`compare.json`.

`--smoke` runs the same path on the CPU in seconds: a tiny DiffusionGemma with a
tokenizer trained in-process, a data pack built from this project's own sources, a
deadline of `--minutes`, resume from `--work` on a second call.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from infill_engine.core.rows import without_adapter
from infill_engine.data.corpus import DEFAULT_DATA
from infill_engine.model.lora import add_adapter, load_adapter, save_adapter
from infill_engine.training.datapack import (
    DEFAULT_OUT,
    DataPack,
    fixed_batches,
    tokenizer_fingerprint,
)
from infill_engine.training.train import (
    Ids,
    add_noise,
    floor_rows,
    learning_rate,
    span_loss,
)

SPANS = (8, 16, 24, 32, 48)  # the adapter's spans (at most 3/4 of a 64-slot canvas)
BUCKETS = (1, 48, 160, 256)  # prompt lengths, up to the engine's prompt cap
SHIPPED = Path(__file__).resolve().parent.parent / "adapter" / "adapter.safetensors"
PIECE = 15 * 2**20  # what comes back from a lent machine: files of at most 16 MiB
# Dense bf16 tensor-core peak, FLOP/s, for the utilisation estimate.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=8.0, help="the whole run's budget")
    p.add_argument("--out", type=Path, required=True, help="what comes back")
    p.add_argument("--pack", type=Path, default=DEFAULT_OUT, help="data pack")
    p.add_argument("--base-pack", type=Path, help="build the base from this basepack")
    p.add_argument("--adapter", type=Path, help="resume from (default: shipped)")
    p.add_argument("--work", type=Path, help="checkpoints (default DATA/gpu-run)")
    p.add_argument("--batch-size", type=int, default=96)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument(
        "--rank", type=int, help="adapter rank (default: the resumed adapter's, or 16)"
    )
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu rehearses the real path slowly (--smoke: a tiny one, fast)",
    )
    p.add_argument("--checkpoint-minutes", type=float, default=1.0)
    p.add_argument(
        "--after-minutes",
        type=float,
        default=3.0,
        help="kept for judging, tests and bench after training",
    )
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--compare-n", type=int, default=50, help="holes per set (0: no)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the step (off: as written it recompiles per shape)",
    )
    p.add_argument("--max-steps", type=int, default=0, help="stop sooner (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny model on the CPU")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the command; returns the summary it writes."""
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    deadline = started + args.minutes * 60
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or DEFAULT_DATA / ("gpu-run-smoke" if args.smoke else "gpu-run")
    work.mkdir(parents=True, exist_ok=True)
    log = _Log(out / "run.log")
    device = _device(args, log)
    if args.smoke:
        model, tokenizer, pack = _smoke_setup(work, log)
        args.adapter = args.adapter or work / "shipped.safetensors"
        args.batch_size = min(args.batch_size, 4)
        args.eval_batches = min(args.eval_batches, 2)
    else:
        from infill_engine.training.adapt import _base

        pack = DataPack.load(args.pack)
        model, tokenizer = _base(work / "base", args.base_pack)
        args.adapter = args.adapter or SHIPPED
    if pack.manifest.get("tokenizer_sha256") != tokenizer_fingerprint(tokenizer):
        raise SystemExit(
            "the data pack was tokenised with another vocabulary than the model's: "
            "rebuild it (python -m infill_engine.training.datapack)"
        )
    log(f"data pack: {_pack_line(pack)}")
    model.config._attn_implementation = "sdpa"
    model.to(device)
    checkpoint = work / "checkpoint.pt"
    saved = torch.load(checkpoint, weights_only=False) if checkpoint.is_file() else None
    rank, alpha = _shape_of(saved, args.adapter, args.rank)
    adapters = add_adapter(model, rank, alpha)
    params = [p for lora in adapters.values() for p in (lora.lora_a, lora.lora_b)]
    optimizer = torch.optim.AdamW(
        params, lr=args.lr, weight_decay=0.0, fused=device.type == "cuda"
    )
    state: dict[str, Any] = {"step": 0, "elapsed": 0.0, "tokens": 0, "span_tokens": 0}
    resumed_from = _resume(saved, args.adapter, adapters, optimizer, state, log)
    del saved
    start_tensors = _tensors(adapters)
    canvas = int(model.config.canvas_length)
    layout = dict(
        ids=Ids(tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id),
        canvas_length=canvas,
        buckets=BUCKETS,
        shift=int(getattr(model.config, "readout_shift", 0)),
        spans=SPANS,
    )
    mask_id = getattr(model.config, "mask_token_id", None)
    vocab = len(tokenizer)
    fixed = fixed_batches(
        pack, args.eval_batches, args.batch_size, vocab, mask_id, **layout
    )
    fixed = [(b.to(device), x.to(device), hit.to(device)) for b, x, hit in fixed]
    rng = random.Random(args.seed + state["step"])
    gen = torch.Generator().manual_seed(args.seed + state["step"])
    stream = pack.batches("train", args.batch_size, rng=rng, **layout)
    step = _Step(model, params, optimizer, device, args.compile, log)
    train_until = deadline - args.after_minutes * 60
    phase_start = state["elapsed"]
    run_tokens = run_flops = run_seconds = 0.0
    n_params = sum(p.numel() for p in model.parameters())
    curve: list[tuple[int, float]] = []
    next_save = time.monotonic() + args.checkpoint_minutes * 60
    tsv = (out / "log.tsv").open("a")
    stopped = "deadline"
    while time.monotonic() < train_until:
        tick = time.monotonic()
        batch = next(stream)
        noisy, noised = add_noise(batch, vocab, gen, 1.0, mask_id)
        rows = floor_rows(batch.span_mask, noised)
        tokens = batch.prompt_ids.numel() + batch.target.numel()
        batch, noisy, noised = batch.to(device), noisy.to(device), noised.to(device)
        progress = (tick - started) / max(train_until - started, 1e-9)
        lr = learning_rate(state["step"], progress, args.lr, args.warmup)
        loss = step(batch, noisy, noised, rows.to(device), lr, gen)
        seconds = time.monotonic() - tick
        state["step"] += 1
        state["elapsed"] += seconds
        state["tokens"] += tokens
        state["span_tokens"] += int(batch.span_mask.sum())
        if state["step"] > 2:  # the first steps compile: not the trained rate
            run_tokens += tokens
            # forward over the prompt, forward and backward over the canvas
            run_flops += n_params * (2 * batch.prompt_ids.numel() + 4 * noisy.numel())
            run_seconds += seconds
        if state["step"] % 10 == 0 or state["step"] <= 3:
            rate = run_tokens / max(run_seconds, 1e-9)
            curve.append((state["step"], loss))
            tsv.write(
                f"{state['step']}\t{(time.monotonic() - started) / 60:.2f}\t"
                f"{lr:.2e}\t{loss:.4f}\t{rate:.0f}\n"
            )
            tsv.flush()
            log(f"step {state['step']} loss {loss:.3f} {rate:,.0f} tokens/s")
        if time.monotonic() >= next_save:
            _checkpoint(checkpoint, adapters, optimizer, state, out, resumed_from)
            next_save = time.monotonic() + args.checkpoint_minutes * 60
        if args.max_steps and state["step"] >= args.max_steps:
            stopped = "max steps"
            break
    tsv.close()
    _checkpoint(checkpoint, adapters, optimizer, state, out, resumed_from)
    rate = run_tokens / max(run_seconds, 1e-9)
    summary: dict[str, Any] = {
        "device": _hardware(device),
        "stopped": stopped,
        "resumed_from": resumed_from,
        "steps": state["step"],
        "train_minutes_this_run": round((state["elapsed"] - phase_start) / 60, 2),
        "tokens_seen": state["tokens"],
        "span_tokens_seen": state["span_tokens"],
        "tokens_per_s": round(rate),
        "mfu": _utilisation(device, run_flops / max(run_seconds, 1e-9)),
        "compiled": step.compiled,
        "batch_size": args.batch_size,
        "loss_curve": curve,
    }
    summary["heldout_span_loss"] = _judge(model, adapters, start_tensors, fixed)
    losses = summary["heldout_span_loss"]
    summary["improved"] = losses["new"] < losses["resumed"]
    log(f"held-out span loss: {losses}; improved: {summary['improved']}")
    if device.type == "cuda":
        summary["after"] = _after(args, work, out, deadline, log)
    else:
        summary["after"] = {"skipped": "no CUDA device: tests, bench, compare not run"}
    summary["minutes"] = round((time.monotonic() - started) / 60, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"done in {summary['minutes']} min; {out}")
    return summary


class _Log:
    """Lines to stdout and to a file under --out, with the run's clock."""

    def __init__(self, path: Path) -> None:
        self.path, self.start = path, time.monotonic()

    def __call__(self, line: str) -> None:
        text = f"[{(time.monotonic() - self.start) / 60:5.2f} min] {line}"
        print(text, flush=True)
        with self.path.open("a") as handle:
            handle.write(text + "\n")


def _device(args: argparse.Namespace, log: _Log) -> torch.device:
    """The CUDA device, checked; the CPU for `--smoke`."""
    if args.smoke or args.device == "cpu":
        log("smoke run on the CPU" if args.smoke else "the real path, on the CPU")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this command is for a GPU machine (--smoke)")
    props = torch.cuda.get_device_properties(0)
    log(
        f"{props.name}, {props.total_memory / 2**30:.0f} GiB, bf16 "
        f"{torch.cuda.is_bf16_supported()}, torch {torch.__version__}"
    )
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda")


def _smoke_setup(work: Path, log: _Log) -> tuple[Any, Any, DataPack]:
    """A tiny model, tokenizer and data pack from this project's own sources."""
    from transformers import DiffusionGemmaForBlockDiffusion

    from infill_engine.data.corpus import SourceFile
    from infill_engine.model import configs
    from infill_engine.model import tokenizer as tokenizers
    from infill_engine.training import datapack

    root = Path(__file__).resolve().parent.parent
    texts = {p: p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.py"))}
    tok = tokenizers.train_tokenizer(list(texts.values()), vocab_size=400)
    files = [
        SourceFile(str(p), "infill_engine", "Apache-2.0", t) for p, t in texts.items()
    ]
    pack_dir = work / "pack"
    if not (pack_dir / "pack.npz").is_file():
        datapack.build(files[4:], files[:4], tok, pack_dir, show_progress=False)
    torch.manual_seed(0)
    config = configs.tiny_config(len(tok), hidden_size=32, canvas_length=64)
    config.readout_shift, config.mask_token_id = 1, tok.pad_token_id
    model = DiffusionGemmaForBlockDiffusion(config)
    log(f"tiny model, {sum(p.numel() for p in model.parameters()):,} parameters")
    return model, tok, DataPack.load(pack_dir)


def _pack_line(pack: DataPack) -> str:
    splits = pack.manifest["splits"]
    return ", ".join(
        f"{name} {s['files']} files, {s['tokens']:,} tokens, {s['holes']:,} holes"
        for name, s in splits.items()
    )


def _resume(
    saved: dict[str, Any] | None,
    adapter: Path | None,
    adapters: dict[str, Any],
    optimizer: Any,
    state: dict[str, Any],
    log: _Log,
) -> str:
    """Load the last checkpoint (`saved`, as read), else the adapter file, else
    nothing; what it was."""
    if saved is not None:
        _restore(adapters, saved["adapter"])
        optimizer.load_state_dict(saved["optimizer"])
        state.update(saved["state"])
        log(f"resumed from the checkpoint at step {state['step']}")
        return f"checkpoint at step {state['step']}"
    if adapter is not None and adapter.is_file():
        meta = load_adapter(adapters, adapter)
        log(f"resumed from {adapter} ({meta.get('tokens_seen', '?')} tokens seen)")
        return str(adapter)
    log("no checkpoint or adapter: training from zero")
    return "zero"


def _shape_of(
    saved: dict[str, Any] | None, adapter: Path | None, rank: int | None
) -> tuple[int, float]:
    """(rank, alpha) of the adapter a run resumes: the checkpoint's (`saved`), else
    the adapter file's, else `rank` (16) with alpha twice it."""
    if saved is not None:
        return int(saved["rank"]), float(saved["alpha"])
    if adapter is not None and adapter.is_file():
        from safetensors import safe_open

        with safe_open(str(adapter), framework="pt") as handle:
            first = next(k for k in sorted(handle.keys()) if k.endswith(".lora_a"))
            found = int(handle.get_slice(first).get_shape()[0])
            scale = float((handle.metadata() or {}).get("scale", "2.0"))
        if rank is not None and rank != found:
            raise SystemExit(f"--rank {rank}, but {adapter} has rank {found}")
        return found, scale * found
    rank = rank or 16
    return rank, 2.0 * rank


@torch.no_grad()
def _restore(adapters: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Set every adapter to `tensors` (as `_tensors` took them)."""
    for name, lora in adapters.items():
        lora.lora_a.copy_(tensors[f"{name}.lora_a"])
        lora.lora_b.copy_(tensors[f"{name}.lora_b"])


def _tensors(adapters: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {
        f"{name}.lora_{part}": getattr(lora, f"lora_{part}").detach().clone()
        for name, lora in adapters.items()
        for part in "ab"
    }


class _Step:
    """One optimiser step on the span loss, the adapter limited to floor rows;
    through `torch.compile` when asked and it compiles."""

    def __init__(
        self,
        model: Any,
        params: list[torch.nn.Parameter],
        optimizer: Any,
        device: torch.device,
        compile_step: bool,
        log: _Log,
    ) -> None:
        self.model, self.params, self.optimizer = model, params, optimizer
        self.device, self.log = device, log
        self.loss_fn: Any = span_loss
        self.compiled = False
        if compile_step:
            try:
                self.loss_fn = torch.compile(span_loss, dynamic=True)
                self.compiled = True
            except Exception as error:  # noqa: BLE001 - eager is the fallback
                log(f"torch.compile unavailable ({error}); eager steps")

    def __call__(
        self,
        batch: Any,
        noisy: torch.Tensor,
        noised: torch.Tensor,
        rows: torch.Tensor,
        lr: float,
        gen: torch.Generator,
    ) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        ):
            try:
                loss = self.loss_fn(
                    self.model, batch, noisy, noised, False, gen, 0.0, False, rows
                )
            except Exception as error:  # noqa: BLE001 - a compile failure at first call
                if not self.compiled:
                    raise
                self.log(f"compiled step failed ({type(error).__name__}); eager steps")
                self.loss_fn, self.compiled = span_loss, False
                loss = span_loss(
                    self.model, batch, noisy, noised, False, gen, 0.0, False, rows
                )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss is {value}: stopping before it spreads")
        return value


def _checkpoint(
    checkpoint: Path,
    adapters: dict[str, Any],
    optimizer: Any,
    state: dict[str, Any],
    out: Path,
    resumed_from: str,
) -> None:
    """The resumable checkpoint in --work, the adapter (in pieces if large) in --out."""
    first = next(iter(adapters.values()))
    torch.save(
        {
            "adapter": _tensors(adapters),
            "optimizer": optimizer.state_dict(),
            "state": state,
            "rank": int(first.lora_a.shape[0]),
            "alpha": first.scale * int(first.lora_a.shape[0]),
        },
        checkpoint.with_suffix(".tmp"),
    )
    checkpoint.with_suffix(".tmp").replace(checkpoint)
    meta = {
        "steps": state["step"],
        "tokens_seen": state["tokens"],
        "span_tokens_seen": state["span_tokens"],
        "resumed_from": resumed_from,
        "rows": "noise and suffix (left-to-right floor)",
    }
    whole = checkpoint.parent / "adapter.safetensors"
    save_adapter(adapters, whole, meta)
    split_for_transfer(whole, out)


def split_for_transfer(path: Path, out: Path, piece: int = PIECE) -> list[Path]:
    """Copy `path` into `out`, as `name.part-N` pieces of at most `piece` bytes when
    it is larger (`cat name.part-*` joins them); stale pieces are removed."""
    data = path.read_bytes()
    for old in out.glob(f"{path.name}*"):
        old.unlink()
    if len(data) <= piece:
        target = out / path.name
        target.write_bytes(data)
        return [target]
    parts = []
    for number, begin in enumerate(range(0, len(data), piece)):
        target = out / f"{path.name}.part-{number}"
        target.write_bytes(data[begin : begin + piece])
        parts.append(target)
    return parts


def _judge(
    model: Any,
    adapters: dict[str, Any],
    start: dict[str, torch.Tensor],
    fixed: Any,
) -> dict[str, float]:
    """Held-out span loss of the base alone, the adapter resumed from, the new one;
    the adapter limited to floor rows as in training."""
    device = next(model.parameters()).device

    def loss(limited: bool) -> float:
        values = []
        with (
            torch.no_grad(),
            torch.autocast(
                device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
            ),
        ):
            for batch, noisy, noised in fixed:
                rows = floor_rows(batch.span_mask, noised) if limited else None
                gen = torch.Generator().manual_seed(0)
                value = span_loss(
                    model, batch, noisy, noised, False, gen, 0.0, False, rows
                )
                values.append(float(value))
        return round(sum(values) / len(values), 4)

    model.eval()
    result = {"new": loss(True)}
    now = _tensors(adapters)
    _restore(adapters, start)
    result["resumed"] = loss(True)
    with without_adapter():  # measured as the other two, the adapter off
        result["base"] = loss(False)
    _restore(adapters, now)
    return result


def _after(
    args: argparse.Namespace, work: Path, out: Path, deadline: float, log: _Log
) -> dict[str, Any]:
    """CUDA tests, bench and compare, each while time is left; what each did."""
    python = sys.executable
    jobs = [
        ("cuda_tests", [python, "-m", "pytest", "-q", "tests/test_cuda.py"]),
        (
            "bench",
            [
                python, "-m", "infill_engine", "bench", "--device", "cuda",
                "--model", str(work / "base"), "--skip-lsp",
                "--json-out", str(out / "bench.json"),
            ],
        ),
    ]  # fmt: skip
    if args.compare_n > 0:
        jobs.append(
            (
                "compare",
                [
                    python, "-m", "infill_engine.evals.compare",
                    "--model", str(work / "base"), "--n", str(args.compare_n),
                    "--json", str(out / "compare.json"),
                ],
            )
        )  # fmt: skip
    done: dict[str, Any] = {}
    for name, command in jobs:
        left = deadline - time.monotonic()
        if left < 20:
            done[name] = "not run: out of time"
            continue
        log(f"{name}: {' '.join(command[1:])} ({left:.0f} s left)")
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=left - 5
            )
            (out / f"{name}.log").write_text(
                result.stdout[-200_000:] + result.stderr[-50_000:]
            )
            done[name] = f"exit {result.returncode}"
        except subprocess.TimeoutExpired:
            done[name] = "cut off at the deadline"
        log(f"{name}: {done[name]}")
    return done


def _utilisation(device: torch.device, flops_per_s: float) -> float | None:
    """Model FLOP utilisation estimate: 2 x parameters per prompt token (a forward)
    and 4 x per canvas token (a forward and the backward through activations: the
    base is frozen), per second, over the GPU's dense bf16 peak."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return None if peak is None else round(flops_per_s / peak, 4)


def _hardware(device: torch.device) -> str:
    from infill_engine.training.adapt import _hardware as describe

    return describe(device)


if __name__ == "__main__":
    main()
