"""Adapt the converted Gemma 3 to fill in the middle: a low-rank adapter, trained on
the engine's own canvas layout, forward and readout.

    python -m infill_engine.training.adapt [--minutes 60] [--out infill_engine/adapter]
        [--device cpu|cuda] [--workers N] [--rank 16] [--export DIR]

The base is the default model built without an adapter (`build.build(adapter=False)`,
made here under `work-data/adapt/base` if missing): Gemma 3 converted to DiffusionGemma,
reading slot i from position i - 1 (`readout_shift` 1) and noising slots with Gemma's
`<mask>` token. Each step (`train.span_loss`, the engine's `window_logits` forward):

1. Holes from the training split (`train.examples`), laid out by `plan_canvas` with the
   readout shift, span lengths that fit the canvas.
2. Each span slot becomes `<mask>` with probability t ~ U(0, 1).
3. The prompt's prefill runs without gradients: the compute goes to the canvas, where
   the span is. No self-conditioning: the converted block is a no-op and stays one.
4. Cross entropy on the masked slots (clean ones weighted 0.1); AdamW on the adapter
   alone, warmup then cosine over the time budget.

Resumable: `work-data/adapt/checkpoint.pt` holds the adapter, optimizer and counters,
written every `--save-minutes`, when the held-out span loss is measured. The adapter is
written to `--out` only when that loss is the best so far, so a shipped version changes
only when the eval improves.

On a GPU (`--device cuda`) batches are laid out by `--workers` processes, so the
tokenizer keeps up with the model. `--base-pack` builds the base from a `basepack`
(a machine without the base package). `--export DIR` writes the base with the best
adapter merged, a model directory the engine and `infill bench` load.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path
from typing import Any

import torch

from infill_engine.data.corpus import DEFAULT_DATA, load_split
from infill_engine.model.lora import add_adapter, save_adapter
from infill_engine.training.train import (
    add_noise,
    batches,
    examples,
    fixed_eval_batches,
    learning_rate,
    span_loss,
)

SPANS = (8, 16, 24, 32, 48)  # at most 3/4 of the 64-position canvas
BUCKETS = (1, 48, 160, 256)  # up to the engine's prompt cap
RANK = 16


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the adaptation run."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--base", type=Path, help="unadapted built model (default: build)")
    p.add_argument("--out", type=Path, default=Path("infill_engine/adapter"))
    p.add_argument("--minutes", type=float, default=60.0, help="budget of this run")
    p.add_argument("--save-minutes", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--rank", type=int, default=RANK)
    p.add_argument("--alpha", type=float, help="LoRA alpha (default 2 x rank)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--eval-batches", type=int, default=6)
    p.add_argument("--bf16", choices=("on", "off"), default="on")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=0, help="batch-making processes")
    p.add_argument("--work", type=Path, help="checkpoint folder (default DATA/adapt)")
    p.add_argument("--base-pack", type=Path, help="build the base from this basepack")
    p.add_argument("--export", type=Path, help="write the adapted model here")
    return p


def main(argv: list[str] | None = None) -> None:
    """Train (or resume) the adapter for `--minutes`."""
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    work = args.work or args.data / "adapt"
    work.mkdir(parents=True, exist_ok=True)
    base = args.base or work / "base"
    model, tokenizer = _base(base, args.base_pack)
    model.to(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    adapters = add_adapter(model, args.rank, args.alpha or 2.0 * args.rank)
    params = [p for lora in adapters.values() for p in (lora.lora_a, lora.lora_b)]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    canvas = int(model.config.canvas_length)
    shift, mask_id = model.config.readout_shift, model.config.mask_token_id
    state: dict[str, Any] = {"step": 0, "elapsed": 0.0, "tokens": 0, "span_tokens": 0}
    state["best"] = None
    checkpoint = work / "checkpoint.pt"
    if checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=False)
        for name, lora in adapters.items():
            lora.lora_a.data.copy_(saved["adapter"][f"{name}.lora_a"])
            lora.lora_b.data.copy_(saved["adapter"][f"{name}.lora_b"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        print(f"resumed at step {state['step']}", flush=True)
    vocab = len(tokenizer)
    rng = random.Random(args.seed + state["step"])
    gen = torch.Generator().manual_seed(args.seed + state["step"])
    train = load_split(args.data, "train")
    heldout = load_split(args.data, "heldout")
    fixed = fixed_eval_batches(
        heldout, tokenizer, canvas, args.eval_batches, args.batch_size,
        shift, mask_id, SPANS, BUCKETS,
    )  # fmt: skip
    fixed = [(b.to(device), x.to(device), hit.to(device)) for b, x, hit in fixed]
    layout = Layout(train, tokenizer, canvas, shift, args.batch_size)
    stream = layout.stream(args.workers, args.seed + state["step"], rng)
    if state["best"] is None or state.get("vocab") != vocab:
        # Losses over another vocabulary do not compare: measure both ends again.
        state["vocab"] = vocab
        state["first_eval"] = _eval_without(adapters, model, fixed, args)
        state["best"] = _eval(model, fixed, args) if state["step"] else None
        state["best"] = state["best"] or state["first_eval"]
        print(
            f"held-out span loss before training {state['first_eval']:.3f}, "
            f"now {state['best']:.3f}",
            flush=True,
        )
    total = state["elapsed"] + args.minutes * 60
    run_start, last_save = time.monotonic(), state["elapsed"]
    log = (work / "log.tsv").open("a")
    model.train()
    while state["elapsed"] < total:
        started = time.monotonic()
        batch = next(stream)
        noisy, noised = add_noise(batch, len(tokenizer), gen, 1.0, mask_id)
        span_tokens = int(batch.span_mask.sum())
        batch, noisy, noised = batch.to(device), noisy.to(device), noised.to(device)
        with _autocast(device, args):
            loss = span_loss(model, batch, noisy, noised, False, gen, 0.0, False)
        lr = learning_rate(
            state["step"], state["elapsed"] / total, args.lr, args.warmup
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        state["step"] += 1
        state["elapsed"] += time.monotonic() - started
        state["tokens"] += batch.prompt_ids.numel() + batch.target.numel()
        state["span_tokens"] += span_tokens
        if state["step"] % 10 == 0:
            log.write(
                f"{state['step']}\t{state['elapsed']:.1f}\t{lr:.2e}\t{loss:.4f}\n"
            )
            log.flush()
            rate = state["tokens"] / max(state["elapsed"], 1e-9)
            print(
                f"step {state['step']} {state['elapsed'] / 60:.1f} min "
                f"loss {float(loss):.3f} {rate:.0f} tok/s",
                flush=True,
            )
        done = state["elapsed"] >= total
        if done or state["elapsed"] - last_save >= args.save_minutes * 60:
            _save(model, adapters, optimizer, state, fixed, args, checkpoint)
            last_save = state["elapsed"]
    log.close()
    print(f"run took {(time.monotonic() - run_start) / 60:.1f} min", flush=True)
    if args.export:
        export(base, args.out / "adapter.safetensors", args.export)
        print(f"adapted model written to {args.export}", flush=True)


class Layout:
    """Endless training batches, laid out in this process or in `workers` others."""

    def __init__(
        self, files: Any, tokenizer: Any, canvas: int, shift: int, batch_size: int
    ) -> None:
        self.files, self.tokenizer, self.canvas = files, tokenizer, canvas
        self.shift, self.batch_size = shift, batch_size

    def batches(self, rng: random.Random) -> Any:
        """This process's endless batches."""
        holes = examples(
            self.files, self.tokenizer, self.canvas, rng, BUCKETS, self.shift, SPANS
        )
        return batches(holes, self.batch_size)

    def stream(self, workers: int, seed: int, rng: random.Random) -> Any:
        """Batches from `workers` processes (each seeded apart), or from this one."""
        if workers <= 0:
            return self.batches(rng)
        import os

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        loader = torch.utils.data.DataLoader(
            _Batches(self, seed),
            batch_size=None,
            num_workers=workers,
            prefetch_factor=8,
            persistent_workers=True,
            pin_memory=torch.cuda.is_available(),
        )
        return iter(loader)


class _Batches(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """A `Layout`'s batches, one seed per worker process."""

    def __init__(self, layout: Layout, seed: int) -> None:
        self.layout, self.seed = layout, seed

    def __iter__(self) -> Any:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        torch.set_num_threads(1)
        return iter(self.layout.batches(random.Random(self.seed * 1009 + worker)))


def _base(path: Path, pack: Path | None = None) -> tuple[Any, Any]:
    """The unadapted built model (float32, CPU) and its tokenizer; built if missing
    (from `pack`, a `basepack` directory, when given)."""
    from transformers import AutoTokenizer

    if not (path / "config.json").is_file():
        from infill_engine.model.build import build

        if pack is None:
            build(path, adapter=False)
        else:
            from infill_engine.training.basepack import read_pack, unpack

            gguf = unpack(pack, path.parent / f".{path.name}.gguf")
            scales = read_pack(pack)["scales"]
            build(path, adapter=False, gguf=gguf, scales=scales)
            gguf.unlink()
    return _load(path).eval(), AutoTokenizer.from_pretrained(str(path))


def _load(path: Path) -> Any:
    """A built model (float32) exactly as the engine loads it: the full-attention
    value projections it keeps are restored (`loader.restore_full_attention_values`);
    transformers alone would drop them, and an adapter trained on that model would not
    fit the one it is merged into."""
    from transformers import DiffusionGemmaForBlockDiffusion

    from infill_engine.model.loader import restore_full_attention_values

    model = DiffusionGemmaForBlockDiffusion.from_pretrained(
        str(path), dtype=torch.float32
    )
    restore_full_attention_values(model, path)
    return model


def export(base: Path, adapter: Path, out: Path) -> Path:
    """Write `base` with `adapter` merged into `out`: a model directory (the base's
    tokenizer, engine settings and licence files beside the merged weights)."""
    import shutil

    from infill_engine.model.lora import merge_adapter

    model = _load(base)
    merge_adapter(model, adapter)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("*.safetensors"))
    model.save_pretrained(out)
    return out


def _autocast(device: torch.device, args: argparse.Namespace) -> Any:
    """bf16 autocast on the training device (`--bf16`)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16 == "on")


def _eval(model: Any, fixed: Any, args: argparse.Namespace) -> float:
    from infill_engine.training.train import heldout_loss

    device = next(model.parameters()).device
    with _autocast(device, args):
        return heldout_loss(model, fixed)


def _eval_without(
    adapters: dict[str, Any], model: Any, fixed: Any, args: argparse.Namespace
) -> float:
    """The held-out loss of the base alone (every adapter's update set to zero)."""
    kept = {name: lora.lora_b.detach().clone() for name, lora in adapters.items()}
    for lora in adapters.values():
        lora.lora_b.data.zero_()
    try:
        return _eval(model, fixed, args)
    finally:
        for name, lora in adapters.items():
            lora.lora_b.data.copy_(kept[name])


def _save(
    model: Any,
    adapters: dict[str, Any],
    optimizer: Any,
    state: dict[str, Any],
    fixed: Any,
    args: argparse.Namespace,
    checkpoint: Path,
) -> None:
    """Measure the held-out loss, keep a resumable checkpoint, ship the adapter if it
    is the best so far."""
    value = _eval(model, fixed, args)
    model.train()
    state["heldout"] = value
    tensors = {}
    for name, lora in adapters.items():
        tensors[f"{name}.lora_a"] = lora.lora_a.detach().clone()
        tensors[f"{name}.lora_b"] = lora.lora_b.detach().clone()
    improved = value < state["best"]
    if improved:
        state["best"] = value
    torch.save(
        {"adapter": tensors, "optimizer": optimizer.state_dict(), "state": state},
        checkpoint,
    )
    print(
        f"step {state['step']}: held-out span loss {value:.3f} "
        f"(before training {state['first_eval']:.3f})"
        + (", adapter written" if improved else ""),
        flush=True,
    )
    if improved:
        meta = {
            "steps": state["step"],
            "train_minutes": round(state["elapsed"] / 60, 1),
            "tokens_seen": state["tokens"],
            "span_tokens_seen": state["span_tokens"],
            "heldout_span_loss": round(value, 4),
            "heldout_span_loss_before": round(state["first_eval"], 4),
            "rank": args.rank,
            "alpha": args.alpha or 2.0 * args.rank,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "spans": SPANS,
            "prompt_buckets": BUCKETS,
            "hardware": _hardware(next(model.parameters()).device),
        }
        save_adapter(adapters, args.out / "adapter.safetensors", meta)
        (args.out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")


def _hardware(device: torch.device) -> str:
    """Where the adapter was trained, for its record."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return (
        f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}"
    )


if __name__ == "__main__":
    main()
