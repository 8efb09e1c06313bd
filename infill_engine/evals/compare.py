"""Line fills on held-out code: the default model against baselines that cannot
flatter it, measured in one run on the same holes.

    python -m infill_engine.evals.compare [--model DIR] [--n 100] [--seed 0]
        [--sets heldout,independent,polyglot] [--json compare.json]
    python -m infill_engine.evals.compare --tune-rerank [--n 150] [--seed 5]

The held-out sets: `heldout` (Python files never trained on, `rich` among them),
`independent` (`sortedcontainers`) and `polyglot` (TypeScript, JavaScript, Go and
Rust from npm and Debian packages, `evals.polyglot`, an equal share of holes per
language). `--n` single-line holes are cut per set by `holes.cut_line`: the rest of a
line from a random column, or the whole line after its indent, as when the cursor is
at the end of what has been typed. Each hole is filled by:

- **engine**: the model under test through the engine with its shipped settings,
  seeing prefix and suffix, as the language server asks for a line, and what the
  server would show of it (with the parse-check fallback on, at a line end: the
  first candidate that leaves the line parsing, a cut of one, or nothing);
- **floor**: the same engine decoding with the left-to-right floor alone (one row,
  no rerank, no fallback on a failed parse check, no line-end check: its greedy line
  as it is); the engine's own figures where its settings are that already;
- **left-to-right**: the same base, Gemma 3 270M as published (unconverted, no
  adapter, its whole vocabulary), decoding greedily from the prefix alone to the end
  of the line, with the last 576 prefix tokens;
- **left-to-right, healed**: the same, healing the prefix's last token as the
  engine does (`infill_engine.core.healing`); without it a hole cut mid-word
  (`ty|pe`) leaves the base continuing a split it never saw;
- **previous** (with `--previous`): another checkpoint through the engine.

Per system and set: exact match (the fill's first line, trailing space stripped, is
the rest of the line), parses (the file with that line inserted still parses, by
Python's parser or the language's tree-sitter grammar), parses of the fills shown
(the same, over the fills that are not empty), empty (nothing before the line ends:
no suggestion at a line end) and the median latency.

`--tune-rerank` measures the floor's suffix-aware rerank at several margins on line
holes of the *training* files, where its margin is chosen; the held-out sets are
never used to tune it.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from infill_engine.data.corpus import DEFAULT_DATA, SourceFile, load_split
from infill_engine.data.holes import Hole, cut_line
from infill_engine.evals.evaluate import parses
from infill_engine.tools.progress import Phases

MAX_LINE_TOKENS = 48
SETS = ("heldout", "independent", "polyglot")
# A bar per set and system on stderr; every filled hole steps it.
PHASES = Phases(" hole")

Filler = Callable[[Hole, str], str]  # (hole, its language's tree-sitter id) -> fill
Parses = Callable[[str], bool]


def line_holes(
    files: Sequence[SourceFile], n: int, seed: int = 0, check: Parses = parses
) -> list[Hole]:
    """`n` line holes from files that parse (`check`), spread over the files."""
    rng = random.Random(seed)
    usable = [f for f in files if check(f.text)]
    holes: list[Hole] = []
    while usable and len(holes) < n:
        hole = cut_line(rng.choice(usable).text, rng)
        if hole is not None and hole.middle.strip():
            holes.append(hole)
    return holes


def set_holes(data: Path, name: str, n: int, seed: int) -> list[tuple[Hole, str]]:
    """A set's holes, each with its language (a tree-sitter id: `parse_check`). The
    polyglot set (`polyglot`) gives each of its languages the same share of them."""
    files = load_split(data, name)
    if name != "polyglot":
        return [(hole, "python") for hole in line_holes(files, n, seed)]
    from infill_engine.evals import polyglot

    languages = sorted({polyglot.language_of(f.origin) or "" for f in files} - {""})
    out: list[tuple[Hole, str]] = []
    for i, language in enumerate(languages):
        share = n // len(languages) + (i < n % len(languages))
        mine = [f for f in files if polyglot.language_of(f.origin) == language]
        drawn = line_holes(mine, share, seed, parse_check(language))
        out += [(hole, language) for hole in drawn]
    return out


def parse_check(language: str) -> Parses:
    """Whether a whole file parses: by Python's own parser for Python, else by the
    language's tree-sitter grammar."""
    if language == "python":
        return parses
    from infill_engine.evals import polyglot

    return functools.partial(polyglot.parses, language)


def first_line(text: str) -> str:
    """What a fill puts on the cursor's line."""
    return text.split("\n", 1)[0].rstrip()


def score(
    holes: Sequence[Hole], fill: Filler, languages: Sequence[str] | None = None
) -> dict[str, Any]:
    """Exact match, parse and empty rates and latency of `fill` over `holes`, and the
    parse rate of the fills that are not empty (what a user is shown);
    `languages[i]` is hole i's language (default: all Python)."""
    exact = parsed = empty = shown_parsing = 0
    latencies = []
    examples: list[dict[str, str]] = []
    for i, hole in enumerate(holes):
        language = languages[i] if languages is not None else "python"
        check = parse_check(language)
        started = time.perf_counter()
        line = first_line(fill(hole, language))
        latencies.append((time.perf_counter() - started) * 1000)
        exact += line == hole.middle.rstrip()
        parses = check(hole.prefix + line + hole.suffix)
        parsed += parses
        empty += not line.strip()
        shown_parsing += parses and bool(line.strip())
        if len(examples) < 5:
            examples.append({"want": hole.middle.rstrip(), "got": line})
        PHASES.step()
    n = len(holes)
    return {
        "holes": n,
        "exact_match": round(exact / n, 4),
        "parses": round(parsed / n, 4),
        "parses_shown": round(shown_parsing / max(n - empty, 1), 4),
        "empty": round(empty / n, 4),
        "latency_ms_p50": round(statistics.median(latencies), 1),
        "examples": examples,
    }


def engine_filler(path: str, **overrides: Any) -> Filler:
    """Fills through the engine with the checkpoint at `path`, a line span;
    `overrides` change its denoising settings (e.g. the floor alone). Where those
    settings fall back on a failed parse check (`fallback_alternatives`), the request
    carries the language server's check, and what lands is what the server shows: at
    a line end, the first candidate that leaves the line parsing, a cut of one, or
    nothing (`grammars.line_end_fill`)."""
    from infill_engine import InfillRequest
    from infill_engine.core.spans import LINE_SPAN_LENGTHS
    from infill_engine.tools import grammars

    engine = _engine(path)
    config = engine.config.with_overrides(**overrides) if overrides else None
    settings = config or engine.config
    checked = settings.fallback_alternatives > settings.alternatives

    def fill(hole: Hole, language: str) -> str:
        line_end = not hole.suffix.split("\n", 1)[0].strip()
        validate = None
        if checked:
            validate = grammars.fill_check(
                language, hole.prefix, hole.suffix, first_line, line_end=line_end
            )
        request = InfillRequest(
            hole.prefix,
            hole.suffix,
            LINE_SPAN_LENGTHS,
            config,
            validate=validate,
            single_line=True,
        )
        result = engine.fill(request)
        if validate is None or not line_end:
            return result.text
        lines = [first_line(c.text) for c in result.candidates] or [result.text]
        return grammars.line_end_fill(validate, lines)

    return fill


_ENGINES: dict[str, Any] = {}


def _engine(path: str) -> Any:
    """One loaded engine per checkpoint, shared by the systems that use it."""
    from infill_engine import InfillEngine

    if path not in _ENGINES:
        _ENGINES[path] = InfillEngine.load(path, device="cpu")
    return _ENGINES[path]


def rerank_table(
    data: Path,
    model: str,
    n: int,
    seed: int,
    split: str = "train",
    alternatives: int = 4,
    margins: Sequence[float] = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0),
) -> dict[str, Any]:
    """Exact match of the floor's rerank at each margin, on `n` line holes of
    `split` (the training files by default: margins are tuned there, never on the
    held-out sets). Every hole is filled once with `alternatives` rows; each margin
    is then applied to the same candidates."""
    from infill_engine import InfillRequest
    from infill_engine.core.spans import LINE_SPAN_LENGTHS

    engine = _engine(model)
    config = engine.config.with_overrides(alternatives=alternatives, rerank_margin=0.0)
    holes = line_holes(load_split(data, split), n, seed)
    hits = dict.fromkeys(margins, 0)
    oracle = 0
    for hole in holes:
        request = InfillRequest(
            hole.prefix, hole.suffix, LINE_SPAN_LENGTHS, config, single_line=True
        )
        want = hole.middle.rstrip()
        candidates = engine.fill(request).candidates
        oracle += any(first_line(c.text) == want for c in candidates)
        for margin in margins:
            best = max(
                candidates,
                key=lambda c: (
                    (c.suffix_score or 0.0) + (margin if c.alternative == 0 else 0.0)
                ),
            )
            hits[margin] += first_line(best.text) == want
    return {
        "split": split,
        "holes": len(holes),
        "alternatives": alternatives,
        "exact_by_margin": {str(m): round(h / len(holes), 4) for m, h in hits.items()},
        "some_alternative_exact": round(oracle / len(holes), 4),
    }


def load_unconverted_base() -> tuple[Any, Any]:
    """Gemma 3 270M as published (the pinned package), and its tokenizer."""
    from infill_engine.model.build import base_gguf, load_base

    with tempfile.TemporaryDirectory() as work:
        return load_base(base_gguf(Path(work)))


def left_to_right_filler(
    model: Any, tokenizer: Any, prefix_tokens: int, heal: bool = False
) -> Filler:
    """Greedy decoding of a causal model from the prefix alone, to the line's end; it
    keeps the last `prefix_tokens` tokens of the prefix. With `heal`, it heals
    the prefix's last token as the engine does (`infill_engine.core.healing`): the
    first token it writes may rewrite that token, unless it holds a line break."""
    from infill_engine.core.healing import TokenHealing, unheal

    newline = {i for t, i in tokenizer.get_vocab().items() if "\n" in t}
    stop = newline | {tokenizer.eos_token_id}
    vocab = model.config.get_text_config().vocab_size
    healing = TokenHealing(tokenizer, vocab, stop) if heal else None

    @torch.no_grad()
    def fill(hole: Hole, language: str = "python") -> str:
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
    sets: Sequence[str] = SETS,
) -> dict[str, Any]:
    """Every system on the same holes of every held-out set (`seed` draws them).

    "floor" is the engine with one row, no rerank and no fallback; where its own
    settings are that already, its figures are the engine's (one run, not two)."""
    from infill_engine.model.loader import default_model

    model = model or default_model()
    systems: dict[str, Filler] = {"engine": engine_filler(model)}
    shipped = _engine(model).config
    floor_alone = (
        shipped.decoding == "floor"
        and (shipped.alternatives == 1 or shipped.rerank_margin is None)
        and shipped.fallback_alternatives <= shipped.alternatives
    )
    if not floor_alone:
        systems["floor"] = engine_filler(
            model,
            decoding="floor",
            alternatives=1,
            rerank_margin=None,
            fallback_alternatives=1,
        )
    base, tokenizer = load_unconverted_base()
    systems["left_to_right"] = left_to_right_filler(base, tokenizer, prefix_tokens)
    systems["left_to_right_healed"] = left_to_right_filler(
        base, tokenizer, prefix_tokens, heal=True
    )
    if previous:
        systems["previous"] = engine_filler(previous)
    report: dict[str, Any] = {"model": model, "seed": seed, "sets": {}}
    for name in sets:
        drawn = set_holes(data, name, n, seed)
        holes, languages = [h for h, _ in drawn], [lang for _, lang in drawn]
        report["sets"][name] = {}
        for system, fill in systems.items():
            PHASES.start(f"{name}: {system}", len(holes))
            report["sets"][name][system] = score(holes, fill, languages)
        PHASES.close()
        if floor_alone:
            report["sets"][name]["floor"] = report["sets"][name]["engine"]
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as a table: one row per set and system."""
    header = "| set | system | exact match | parses | parses, shown | empty | p50 ms |"
    rows = [header, "|---" * 7 + "|"]
    for name, systems in report["sets"].items():
        for system, r in systems.items():
            rows.append(
                f"| {name} ({r['holes']}) | {system} | {r['exact_match']:.0%} | "
                f"{r['parses']:.0%} | {r['parses_shown']:.0%} | {r['empty']:.0%} | "
                f"{r['latency_ms_p50']:.0f} |"
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
        help="prefix the left-to-right baseline keeps (default 576: as much as "
        "the default model's 608-token prompt keeps at least, cut 32 tokens at a "
        "time)",
    )
    parser.add_argument("--json", type=Path, default=Path("compare.json"))
    parser.add_argument(
        "--sets",
        default=",".join(SETS),
        help=f"comma-separated held-out sets (default {','.join(SETS)}; polyglot "
        "needs `python -m infill_engine.evals.polyglot` first)",
    )
    parser.add_argument(
        "--tune-rerank",
        action="store_true",
        help="instead: exact match of the floor's rerank at several margins, on "
        "line holes of the training files",
    )
    args = parser.parse_args(argv)
    if args.tune_rerank:
        from infill_engine.model.loader import default_model

        table = rerank_table(
            args.data, args.model or default_model(), args.n, args.seed
        )
        args.json.write_text(json.dumps(table, indent=2) + "\n")
        print(json.dumps(table, indent=2))
        return
    report = compare(
        args.data,
        args.model,
        args.previous,
        args.n,
        args.prefix_tokens,
        args.seed,
        args.sets.split(","),
    )
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
