"""Evaluate a checkpoint through the real engine on holes cut from files it never saw.

    python -m infill_engine.evals.evaluate --model DIR \
        --set heldout|independent --n 200 --json out.json

Holes are cut by the training kinds (`holes.KINDS`, cycled) and filled with
`InfillEngine.fill`, under three ways of handling the unknown middle length:

* oracle: one span exactly as long as the true middle (no end-of-span needed);
* eos: one generous span; the text ends at the first end-of-span token;
* batched: several span lengths in one batch; the engine picks the best row.

Reported per mode: exact match (single-line holes and all holes), edit similarity
(difflib ratio), the share of files that parse with the result inserted (`ast`),
steps, tokens per forward and latency.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import random
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from infill_engine import InfillEngine, InfillRequest
from infill_engine.data.corpus import DEFAULT_DATA, SourceFile, load_split
from infill_engine.data.holes import KINDS, Hole, cut_hole

GENEROUS_SPAN = 96
BATCHED_SPANS = (16, 32, 64)
MAX_MIDDLE_TOKENS = GENEROUS_SPAN - 1


def parses(source: str) -> bool:
    """Whether Python source parses."""
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def draw_holes(
    files: Sequence[SourceFile], tokenizer: Any, n: int, seed: int = 0
) -> list[Hole]:
    """`n` holes from parseable files, kinds cycled, middles that fit every mode."""
    rng = random.Random(seed)
    usable = [f for f in files if parses(f.text)]
    holes: list[Hole] = []
    while len(holes) < n:
        kind = KINDS[len(holes) % len(KINDS)]
        hole = cut_hole(rng.choice(usable).text, kind, rng)
        if hole is None:
            continue
        size = len(tokenizer(hole.middle, add_special_tokens=False)["input_ids"])
        if 0 < size <= MAX_MIDDLE_TOKENS:
            holes.append(hole)
    return holes


def span_lengths(
    mode: str, middle_tokens: int, batched: tuple[int, ...] | None = None
) -> tuple[int, ...]:
    """The span lengths a mode asks the engine for (`batched`: batched mode's)."""
    if mode == "oracle":
        return (middle_tokens,)
    if mode == "eos":
        return (GENEROUS_SPAN,)
    if mode == "batched":
        return batched or BATCHED_SPANS
    raise ValueError(f"mode must be oracle, eos or batched (got {mode!r})")


def score(hole: Hole, text: str) -> dict[str, float]:
    """Exact match, edit similarity and parse of one filled hole."""
    return {
        "exact": float(text == hole.middle),
        "similarity": difflib.SequenceMatcher(None, text, hole.middle).ratio(),
        "parses": float(parses(hole.prefix + text + hole.suffix)),
    }


def evaluate_mode(
    engine: InfillEngine,
    holes: Sequence[Hole],
    mode: str,
    batched: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Fill every hole under one length mode and average the metrics."""
    rows = []
    for hole in holes:
        size = len(engine.tokenizer(hole.middle, add_special_tokens=False)["input_ids"])
        result = engine.fill(
            InfillRequest(hole.prefix, hole.suffix, span_lengths(mode, size, batched))
        )
        row: dict[str, Any] = dict(score(hole, result.text))
        row.update(
            kind=hole.kind,
            steps=result.steps,
            tokens_per_forward=result.tokens_per_forward,
            latency_ms=result.timings.total_ms,
        )
        rows.append(row)
    lines = [r for r in rows if r["kind"] == "line"]
    mean = lambda key, rs=rows: statistics.fmean(r[key] for r in rs)  # noqa: E731
    return {
        "exact_line": mean("exact", lines) if lines else None,
        "exact_all": mean("exact"),
        "similarity": mean("similarity"),
        "parses": mean("parses"),
        "steps": mean("steps"),
        "tokens_per_forward": mean("tokens_per_forward"),
        "latency_ms_p50": statistics.median(r["latency_ms"] for r in rows),
        "similarity_by_kind": {
            kind: statistics.fmean(r["similarity"] for r in rows if r["kind"] == kind)
            for kind in KINDS
            if any(r["kind"] == kind for r in rows)
        },
    }


def decoder_step_ms(
    engine: InfillEngine, hole: Hole, spans: tuple[int, ...], repeats: int = 3
) -> float:
    """Median milliseconds per denoising step (one decoder forward) for `spans` rows."""
    config = engine.config.with_overrides(max_steps=16)
    engine.fill(InfillRequest(hole.prefix, hole.suffix, spans, config))  # warm-up
    times = []
    for _ in range(repeats):
        result = engine.fill(InfillRequest(hole.prefix, hole.suffix, spans, config))
        times.append(result.timings.denoise_ms / max(result.steps, 1))
    return statistics.median(times)


def markdown_table(report: dict[str, Any]) -> str:
    """The report's modes as a markdown table."""
    head = (
        "| set | mode | exact (line) | exact (all) | edit sim. | parses | steps "
        "| tok/fwd | p50 ms |\n|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for mode, m in report["modes"].items():
        rows.append(
            f"| {report['set']} | {mode} "
            f"| {m['exact_line']:.3f} | {m['exact_all']:.3f} "
            f"| {m['similarity']:.3f} | {m['parses']:.3f} | {m['steps']:.1f} "
            f"| {m['tokens_per_forward']:.2f} | {m['latency_ms_p50']:.0f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """Command line: evaluate one split in three length modes; print, save JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the default model")
    parser.add_argument("--set", choices=("heldout", "independent"), default="heldout")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--modes", default="oracle,eos,batched")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--max-steps", type=int, default=None, help="override the model's"
    )
    parser.add_argument("--entropy-bound", type=float, default=None)
    parser.add_argument("--greedy", action="store_true", help="argmax proposals")
    parser.add_argument("--schedule", choices=("entropy", "linear"), default=None)
    parser.add_argument("--canvas-length", type=int, default=None)
    parser.add_argument(
        "--refresh-every", type=int, default=None, help="override the model's"
    )
    parser.add_argument("--spans", default=None, help="batched mode's span lengths")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = InfillEngine.load(
        args.model, device="cpu", canvas_length=args.canvas_length
    )
    batched = tuple(int(s) for s in args.spans.split(",")) if args.spans else None
    engine.config = engine.config.with_overrides(
        max_steps=args.max_steps,
        entropy_bound=args.entropy_bound,
        schedule=args.schedule,
        greedy=args.greedy or None,
        refresh_every=args.refresh_every,
    )
    holes = draw_holes(
        load_split(args.data, args.set), engine.tokenizer, args.n, args.seed
    )
    report = {
        "model": args.model,
        "set": args.set,
        "n": len(holes),
        "kinds": {k: sum(h.kind == k for h in holes) for k in KINDS},
        "config": vars(engine.config),
        "decoder_step_ms": {
            f"{len(spans)} rows": decoder_step_ms(engine, holes[0], spans)
            for spans in ((32,), BATCHED_SPANS)
        },
        "modes": {
            mode: evaluate_mode(engine, holes, mode, batched)
            for mode in args.modes.split(",")
        },
    }
    print(markdown_table(report))
    print("decoder step ms:", report["decoder_step_ms"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
