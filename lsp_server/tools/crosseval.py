"""Does cross-file context pay? Exact line matches with and without it, one run.

    python -m lsp_server.tools.crosseval [--n 60] [--seed 0] [--model DIR] [--json F]

The set: packages of the held-out splits (`heldout`, `independent`, `polyglot`: Python,
TypeScript, JavaScript, Go, Rust; nothing here trains on them), each written out as a
workspace. In each file, the places where a name the file takes from another file of
its package is used (`crossfile.imports_of`, a definition found there) are holes: the
rest of the line from that name on, as when the cursor stands where the name is about
to be typed. Each hole is filled twice by the engine as the server asks for a line,
the second time with the context the server would read (`CrossFile.context`, imports
only: which files a user had open is not known here), within the server's default
token budget. Reported per language group: exact match (the fill's first line is the
rest of the line), empty answers, the context's size in characters and the median
latency of each, so the extra prefill is there too.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infill_engine.data.corpus import DEFAULT_DATA, SourceFile, load_split
from infill_engine.tools.progress import Phases
from lsp_server import crossfile, gate, syntax
from lsp_server.documents import Snapshot
from lsp_server.settings import Settings

SPLITS = ("heldout", "independent", "polyglot")
GROUPS = {"python": "python", "typescript": "ts/js", "javascript": "ts/js"}
GROUPS |= {"typescriptreact": "ts/js", "go": "go", "rust": "rust"}
PHASES = Phases(" fill")


@dataclass(frozen=True)
class CrossHole:
    """A line's rest from a name another file of the package defines."""

    group: str
    path: Path  # in the written-out workspace
    prefix: str
    suffix: str
    middle: str
    context: str


def packages(splits: Iterable[str], data: Path) -> dict[str, list[SourceFile]]:
    """The held-out files by package."""
    out: dict[str, list[SourceFile]] = defaultdict(list)
    for split in splits:
        for f in load_split(data, split):
            out[f.package].append(f)
    return out


def holes(
    root: Path, files: list[SourceFile], budget_chars: int, rng: random.Random
) -> list[CrossHole]:
    """Write a package out under `root`; every cross-file hole in it, one per line."""
    paths = []
    for f in files:
        path = root / f.origin
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.text, encoding="utf-8")
        paths.append(path)
    cross = crossfile.CrossFile()
    cross.set_folders([root.as_uri()])
    found = []
    for path in paths:
        language = crossfile._LANGUAGE_OF.get(path.suffix)
        group = GROUPS.get(language or "")
        if language is None or group is None:
            continue
        text = path.read_text(encoding="utf-8")
        tree = syntax.parse(language, text)
        if tree is None or tree.root_node.has_error:
            continue
        names: set[str] = set()
        for target, wanted in crossfile.imports_of(language, text, tree, path):
            if cross.relative(target) is None or target.resolve() == path.resolve():
                continue
            defined = {
                d.name for d in crossfile.definitions(language, target.read_text())
            }
            names |= defined if wanted is None else defined & set(wanted)
        names = {n for n in names if len(n) > 2}
        if not names:
            continue
        lines = text.split("\n")
        start = 0
        places = []
        for number, line in enumerate(lines):
            code = line.split("#", 1)[0] if language == "python" else line
            hits = [
                (code.find(n), n)
                for n in names
                if n in code and not line.lstrip().startswith(("import", "from", "use"))
            ]
            hits = [(col, n) for col, n in hits if col > len(line) - len(line.lstrip())]
            if hits and number > 0:
                col = min(hits)[0]
                if _word_start(line, col):
                    places.append(start + col)
            start += len(line) + 1
        places = [at for at in places if _in_code(tree, text, at)]
        for at in rng.sample(places, min(len(places), 8)):
            end = text.find("\n", at)
            end = len(text) if end < 0 else end
            middle = text[at:end]
            if not middle.strip():
                continue
            snap = Snapshot(path.as_uri(), 1, language, text[:at] + text[end:])
            hole_tree = syntax.parse(language, snap.text)
            context = cross.context(snap, at, hole_tree, budget_chars, ["imports"])
            found.append(
                CrossHole(group, path, text[:at], text[end:], middle.rstrip(), context)
            )
    return found


_IMPORTS = (
    "import_statement",
    "import_from_statement",
    "import_declaration",
    "use_declaration",
    "export_statement",
)


def _in_code(tree: Any, text: str, offset: int) -> bool:
    """Not in a comment or a string, nor in an import (the name is there already)."""
    if gate.comment_or_string(tree, text, offset + 1):
        return False
    at = len(text[:offset].encode("utf-8"))
    node = tree.root_node.descendant_for_byte_range(at, at + 1)
    while node is not None:
        if node.type in _IMPORTS and not (
            node.type == "export_statement"
            and node.child_by_field_name("source") is None
        ):
            return False
        node = node.parent
    return True


def _word_start(line: str, col: int) -> bool:
    return col == 0 or not (line[col - 1].isalnum() or line[col - 1] == "_")


def run(n: int, seed: int, model: str | None, data: Path) -> dict[str, Any]:
    """Both fills of `n` holes per language group (fewer where fewer exist)."""
    from infill_engine import InfillEngine, InfillRequest
    from infill_engine.core.spans import LINE_SPAN_LENGTHS
    from infill_engine.model.loader import default_model

    rng = random.Random(seed)
    tokens = Settings().cross_file_tokens
    by_group: dict[str, list[CrossHole]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as work:
        for name, files in sorted(packages(SPLITS, data).items()):
            root = Path(work) / name
            for hole in holes(root, files, tokens * 4, rng):
                if hole.context:
                    by_group[hole.group].append(hole)
    engine = InfillEngine.load(model or default_model(), device="cpu")
    report: dict[str, Any] = {"seed": seed, "context_tokens": tokens, "groups": {}}
    chosen = {g: rng.sample(hs, min(n, len(hs))) for g, hs in sorted(by_group.items())}
    PHASES.start(
        "cross-file holes, without and with context", 2 * sum(map(len, chosen.values()))
    )
    for group, picked in chosen.items():
        rows: dict[str, dict[str, list]] = {
            "without": defaultdict(list),
            "with": defaultdict(list),
        }
        for hole in picked:
            for system, context in (("without", ""), ("with", hole.context)):
                request = InfillRequest(
                    hole.prefix,
                    hole.suffix,
                    LINE_SPAN_LENGTHS,
                    single_line=True,
                    context=context,
                    context_tokens=tokens,
                )
                started = time.perf_counter()
                text = engine.fill(request).text.split("\n", 1)[0].rstrip()
                row = rows[system]
                row["ms"].append((time.perf_counter() - started) * 1000)
                row["exact"].append(text == hole.middle)
                row["empty"].append(not text.strip())
                PHASES.step()
        report["groups"][group] = {
            "holes": len(picked),
            "context_chars_mean": round(
                statistics.fmean(len(h.context) for h in picked), 1
            ),
            **{
                system: {
                    "exact_match": round(sum(r["exact"]) / len(picked), 4),
                    "empty": round(sum(r["empty"]) / len(picked), 4),
                    "latency_ms_p50": round(statistics.median(r["ms"]), 1),
                }
                for system, r in rows.items()
            },
        }
    PHASES.close()
    return report


def markdown(report: dict[str, Any]) -> str:
    """One table row per group and system."""
    out = [
        "| group (holes) | context | exact match | empty | p50 ms | context chars |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for group, r in report["groups"].items():
        for system in ("without", "with"):
            s = r[system]
            out.append(
                f"| {group} ({r['holes']}) | {system} | {s['exact_match']:.1%} | "
                f"{s['empty']:.1%} | {s['latency_ms_p50']:.0f} | "
                f"{r['context_chars_mean'] if system == 'with' else 0:.0f} |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lsp_server.tools.crosseval",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--n", type=int, default=60, help="holes per language group")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="checkpoint (default model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, default=None, help="write the report")
    args = parser.parse_args(argv)
    report = run(args.n, args.seed, args.model, args.data)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
