"""Line fills on held-out code: the default model against baselines that cannot
flatter it, measured in one run on the same holes.

    python -m infill_engine.training.compare [--model DIR] [--previous DIR] [--n 100]
        [--seed 0] [--json compare.json]

On each held-out set (`heldout`: files never trained on, `rich` among them;
`independent`: `sortedcontainers`), `--n` single-line holes are cut by
`holes.cut_line`: the rest of a line from a random column, or the whole line after its
indent, as when the cursor is at the end of what has been typed. Each hole is filled by:

- **diffusion**: the model under test through the engine, seeing prefix and suffix,
  with the span slots the language server asks for a line (`LINE_SPAN_LENGTHS`);
- **left-to-right**: the same base, Gemma 3 270M as published (unconverted, no
  adapter), decoding greedily from the prefix alone to the end of the line, with as
  much prefix as the engine keeps;
- **left-to-right, healed**: the same, healing the prefix's last token as the engine
  does (`infill_engine.healing`). Without it a hole cut mid-word (`ty|pe`) leaves the
  base continuing a split it never saw; the engine heals, so the baseline does too;
- **previous** (with `--previous`): another checkpoint through the engine, e.g. the
  8M model that was the default before (in the history up to commit 16ee57f:
  `git worktree add /tmp/old 16ee57f`, then `--previous /tmp/old/infill_engine/model`).

Per system and set: exact match (the fill's first line, trailing space stripped, is
the rest of the line), parses (the file with that line inserted still parses), empty
(nothing before the line ends: no suggestion at a line end) and the median latency.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from infill_engine.training.corpus import DEFAULT_DATA, SourceFile, load_split
from infill_engine.training.holes import Hole, cut_line

MAX_LINE_TOKENS = 48
SETS = ("heldout", "independent")

Filler = Callable[[Hole], str]


def parses(source: str) -> bool:
    """Whether Python source parses."""
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def line_holes(files: Sequence[SourceFile], n: int, seed: int = 0) -> list[Hole]:
    """`n` line holes from files that parse, spread over the files."""
    rng = random.Random(seed)
    usable = [f for f in files if parses(f.text)]
    holes: list[Hole] = []
    while usable and len(holes) < n:
        hole = cut_line(rng.choice(usable).text, rng)
        if hole is not None and hole.middle.strip():
            holes.append(hole)
    return holes


def first_line(text: str) -> str:
    """What a fill puts on the cursor's line."""
    return text.split("\n", 1)[0].rstrip()


def score(holes: Sequence[Hole], fill: Filler) -> dict[str, Any]:
    """Exact match, parse and empty rates and latency of `fill` over `holes`."""
    exact = parsed = empty = 0
    latencies = []
    examples: list[dict[str, str]] = []
    for hole in holes:
        started = time.perf_counter()
        line = first_line(fill(hole))
        latencies.append((time.perf_counter() - started) * 1000)
        exact += line == hole.middle.rstrip()
        parsed += parses(hole.prefix + line + hole.suffix)
        empty += not line.strip()
        if len(examples) < 5:
            examples.append({"want": hole.middle.rstrip(), "got": line})
    n = len(holes)
    return {
        "holes": n,
        "exact_match": round(exact / n, 4),
        "parses": round(parsed / n, 4),
        "empty": round(empty / n, 4),
        "latency_ms_p50": round(statistics.median(latencies), 1),
        "examples": examples,
    }


def engine_filler(path: str) -> Filler:
    """Fills through the engine with the checkpoint at `path`, one line span."""
    from infill_engine import InfillEngine, InfillRequest
    from infill_engine.spans import LINE_SPAN_LENGTHS

    engine = InfillEngine.load(path, device="cpu")

    def fill(hole: Hole) -> str:
        request = InfillRequest(hole.prefix, hole.suffix, LINE_SPAN_LENGTHS)
        return engine.fill(request).text

    return fill


def load_unconverted_base() -> tuple[Any, Any]:
    """Gemma 3 270M as published (the pinned package), and its tokenizer."""
    from infill_engine.build import base_gguf, load_base

    with tempfile.TemporaryDirectory() as work:
        return load_base(base_gguf(Path(work)))


def left_to_right_filler(
    model: Any, tokenizer: Any, prefix_tokens: int, heal: bool = False
) -> Filler:
    """Greedy decoding of a causal model from the prefix alone, to the line's end; it
    keeps the last `prefix_tokens` tokens of the prefix. With `heal`, it heals the
    prefix's last token as the engine does (`infill_engine.healing`): the first token
    it writes may rewrite that token, when it ends in a word character."""
    from infill_engine.healing import TokenHealing, unheal

    newline = {i for t, i in tokenizer.get_vocab().items() if "\n" in t}
    stop = newline | {tokenizer.eos_token_id}
    vocab = model.config.get_text_config().vocab_size
    healing = TokenHealing(tokenizer, vocab, stop) if heal else None

    @torch.no_grad()
    def fill(hole: Hole) -> str:
        ids = tokenizer(hole.prefix[-prefix_tokens * 8 :], add_special_tokens=False)
        kept, healed = ids["input_ids"][-prefix_tokens:], ""
        if healing is not None:
            kept, healed = healing.heal(kept)
        prompt = torch.tensor([[tokenizer.bos_token_id, *kept]])
        out = model(input_ids=prompt, logits_to_keep=1)
        logits = out.logits[0, -1]
        if healing is not None and healed:
            logits = logits.masked_fill(~healing.allowed(healed), float("-inf"))
        written: list[int] = []
        for _ in range(MAX_LINE_TOKENS):
            token = int(logits.argmax())
            written.append(token)
            if token in stop:
                break
            out = model(
                input_ids=torch.tensor([[token]]),
                cache=out.past_key_values,
                logits_to_keep=1,
            )
            logits = out.logits[0, -1]
        return unheal(tokenizer.decode(written, skip_special_tokens=True), healed)

    return fill


def compare(
    data: Path,
    model: str | None,
    previous: str | None,
    n: int,
    prefix_tokens: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Every system on the same holes of every held-out set (`seed` draws them)."""
    from infill_engine.loader import default_model

    model = model or default_model()
    systems: dict[str, Filler] = {"diffusion": engine_filler(model)}
    base, tokenizer = load_unconverted_base()
    systems["left_to_right"] = left_to_right_filler(base, tokenizer, prefix_tokens)
    systems["left_to_right_healed"] = left_to_right_filler(
        base, tokenizer, prefix_tokens, heal=True
    )
    if previous:
        systems["previous"] = engine_filler(previous)
    report: dict[str, Any] = {"model": model, "seed": seed, "sets": {}}
    for name in SETS:
        holes = line_holes(load_split(data, name), n, seed)
        report["sets"][name] = {
            system: score(holes, fill) for system, fill in systems.items()
        }
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as a table: one row per set and system."""
    header = "| set | system | exact match | parses | empty | p50 ms |"
    rows = [header, "|---" * 6 + "|"]
    for name, systems in report["sets"].items():
        for system, r in systems.items():
            rows.append(
                f"| {name} ({r['holes']}) | {system} | {r['exact_match']:.0%} | "
                f"{r['parses']:.0%} | {r['empty']:.0%} | {r['latency_ms_p50']:.0f} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """Command line: run the comparison, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", help="checkpoint (default: the built default)")
    parser.add_argument("--previous", help="another checkpoint to compare with")
    parser.add_argument("--n", type=int, default=100, help="holes per set")
    parser.add_argument(
        "--seed", type=int, default=0, help="which holes are drawn (another draw)"
    )
    parser.add_argument(
        "--prefix-tokens",
        type=int,
        default=576,
        help="prefix the left-to-right baseline keeps (default 576: more than the "
        "default model's 256-token prompt plus its 64-position canvas, so the "
        "baseline is not starved of context)",
    )
    parser.add_argument("--json", type=Path, default=Path("compare.json"))
    args = parser.parse_args(argv)
    report = compare(
        args.data, args.model, args.previous, args.n, args.prefix_tokens, args.seed
    )
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
