"""Common holes: everyday shapes, written for this check and never trained on.

    python -m infill_engine.evals.shapes [--model DIR] [--steps N] [--greedy]
        [--json out.json]

Four kinds, four holes each: a `return` line, a call's arguments, a loop header and a
closing block (an indented body). Each is filled by the engine as the language server
would ask (its span lengths, the model's own denoising defaults) and scored: exact
match, edit similarity, whether the file parses with the fill in place, and whether the
fill has the expected shape (a `return` statement, balanced arguments, a `for`/`while`
header ending in `:`, an indented block). The fills are printed for a reader to judge.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from infill_engine import InfillEngine, InfillRequest
from infill_engine.evals.evaluate import parses

HOLE = "<HOLE>"


@dataclass(frozen=True)
class CommonHole:
    """`source` holds one `<HOLE>`; `expected` is what the author wrote there."""

    kind: str
    source: str
    expected: str
    span_lengths: tuple[int, ...]

    @property
    def prefix(self) -> str:
        return self.source.split(HOLE)[0]

    @property
    def suffix(self) -> str:
        return self.source.split(HOLE)[1]


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if depth < 0:
            return False
    return depth == 0


SHAPES: dict[str, Callable[[str], bool]] = {
    "return": lambda text: text.strip().startswith("return"),
    "arguments": lambda text: bool(text.strip()) and _balanced(text),
    "loop": lambda text: bool(re.match(r"\s*(for|while)\b.*:\s*$", text)),
    "closing": lambda text: (
        bool(text.strip())
        and all(
            line.startswith("    ")
            for line in text.strip("\n").split("\n")
            if line.strip()
        )
    ),
}

# The server's span lengths for these kinds (lsp_server.context.SPAN_LENGTHS).
LINE, ARGS, BLOCK = (16,), (32,), (64,)

HOLES = (
    CommonHole(
        "return",
        "def area(width, height):\n"
        '    """Area of a rectangle."""\n'
        f"    {HOLE}\n\n\nprint(area(2, 3))\n",
        "return width * height",
        LINE,
    ),
    CommonHole(
        "return",
        f"def is_even(n):\n    if n % 2 == 0:\n        {HOLE}\n    return False\n",
        "return True",
        LINE,
    ),
    CommonHole(
        "return",
        "def first(items, default=None):\n    for item in items:\n"
        f"        return item\n    {HOLE}\n",
        "return default",
        LINE,
    ),
    CommonHole(
        "return",
        f"def names(users):\n    {HOLE}\n\n\nprint(names([]))\n",
        "return [user.name for user in users]",
        LINE,
    ),
    CommonHole(
        "arguments",
        f"import os\n\n\ndef config_path(home):\n    return os.path.join({HOLE})\n",
        'home, ".config", "app.toml"',
        ARGS,
    ),
    CommonHole(
        "arguments",
        f"def greet(name):\n    print({HOLE})\n",
        'f"Hello, {name}!"',
        ARGS,
    ),
    CommonHole(
        "arguments",
        "import json\n\n\ndef save(data, path):\n"
        '    with open(path, "w") as handle:\n'
        f"        json.dump({HOLE})\n",
        "data, handle, indent=2",
        ARGS,
    ),
    CommonHole(
        "arguments",
        f"def squares(n):\n    return [i * i for i in range({HOLE})]\n",
        "n",
        ARGS,
    ),
    CommonHole(
        "loop",
        "def total(prices):\n    result = 0\n"
        f"    {HOLE}\n        result += price\n    return result\n",
        "for price in prices:",
        LINE,
    ),
    CommonHole(
        "loop",
        f"def show(mapping):\n    {HOLE}\n        print(key, value)\n",
        "for key, value in mapping.items():",
        LINE,
    ),
    CommonHole(
        "loop",
        f"def countdown(n):\n    {HOLE}\n        print(n)\n        n -= 1\n",
        "while n > 0:",
        LINE,
    ),
    CommonHole(
        "loop",
        "def index_of(lines, word):\n"
        f"    {HOLE}\n        if word in line:\n            return number\n"
        "    return -1\n",
        "for number, line in enumerate(lines):",
        LINE,
    ),
    CommonHole(
        "closing",
        "def safe_div(a, b):\n    try:\n        return a / b\n"
        f"    except ZeroDivisionError:\n{HOLE}\n\n\nprint(safe_div(1, 0))\n",
        "        return None",
        BLOCK,
    ),
    CommonHole(
        "closing",
        "def sign(x):\n    if x > 0:\n        return 1\n    elif x < 0:\n"
        f"        return -1\n    else:\n{HOLE}\n",
        "        return 0",
        BLOCK,
    ),
    CommonHole(
        "closing",
        "class Counter:\n    def __init__(self):\n        self.count = 0\n\n"
        f"    def increment(self):\n{HOLE}\n",
        "        self.count += 1\n        return self.count",
        BLOCK,
    ),
    CommonHole(
        "closing",
        "def read_lines(path):\n"
        f'    with open(path, encoding="utf-8") as handle:\n{HOLE}\n',
        "        return handle.read().splitlines()",
        BLOCK,
    ),
)


def fill_all(engine: InfillEngine) -> list[dict[str, Any]]:
    """Fill every common hole; one row of scores per hole."""
    rows = []
    for hole in HOLES:
        result = engine.fill(InfillRequest(hole.prefix, hole.suffix, hole.span_lengths))
        text = result.text
        if hole.kind != "closing":
            text = text.split("\n")[0]  # the server keeps one line for these spans
        rows.append(
            {
                "kind": hole.kind,
                "expected": hole.expected,
                "fill": text,
                "exact": text.strip() == hole.expected.strip(),
                "similarity": difflib.SequenceMatcher(
                    None, text.strip(), hole.expected.strip()
                ).ratio(),
                "parses": parses(hole.prefix + text + hole.suffix),
                "shape": SHAPES[hole.kind](text),
                "steps": result.steps,
                "ms": result.timings.total_ms,
            }
        )
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Shares per kind and overall."""
    out: dict[str, Any] = {}
    for kind in [*SHAPES, "all"]:
        group = [r for r in rows if kind in ("all", r["kind"])]
        out[kind] = {
            key: statistics.fmean(float(r[key]) for r in group)
            for key in ("exact", "similarity", "parses", "shape", "steps", "ms")
        }
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: fill the common holes, print each fill and the shares."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the default model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=None, help="override the model's")
    parser.add_argument("--greedy", action="store_true", help="argmax proposals")
    parser.add_argument(
        "--refresh-every", type=int, default=None, help="override the model's"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = InfillEngine.load(args.model, device="cpu")
    engine.config = engine.config.with_overrides(
        max_steps=args.steps,
        greedy=args.greedy or None,
        refresh_every=args.refresh_every,
    )
    rows = fill_all(engine)
    for r in rows:
        mark = "=" if r["exact"] else ("ok" if r["parses"] and r["shape"] else "--")
        print(f"{mark:>2} {r['kind']:<9} {r['fill']!r}  (expected {r['expected']!r})")
    report = summary(rows)
    for kind, m in report.items():
        print(
            f"{kind:<9} exact {m['exact']:.2f}  sim {m['similarity']:.2f}  "
            f"parses {m['parses']:.2f}  shape {m['shape']:.2f}  "
            f"steps {m['steps']:.1f}  {m['ms']:.0f} ms"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": report}, indent=2))


if __name__ == "__main__":
    main()
