"""The training data pack: code in several languages, tokenised once, holes planned.

    python -m infill_engine.training.datapack [--data work-data] [--out DIR]
        [--tokenizer DIR]

A GPU's minutes go to training, not to tokenising: the pack is built once on a CPU and
read by the training process as it is (`DataPack`), no tokenizer in the loop.

Sources (each file keeps its package and SPDX licence, written to the manifest):

* Python: the corpus's train split (`infill_engine.data.corpus`: the standard library
  and pinned wheels);
* TypeScript, JavaScript, Go and Rust: `SOURCES`, pinned npm tarballs and Debian
  `golang-*-dev` / `librust-*-dev` source packages, none of them a package the
  held-out sets are cut from (`evals.polyglot.PACKAGES`, `rich`, `sortedcontainers`).

Exact copies (`corpus.deduplicate`) and near duplicates (`data.neardup`, MinHash) are
removed, within the training files and against every held-out file: a training file
close to a held-out one is dropped. Test, generated and minified files are left out.

Each training file is tokenised with the default model's trimmed tokenizer into one
`uint16` array, and holes are planned on it the way the engine lays out its canvas
(`holes.cut_hole`: the rest of a line from a random column, whole lines, syntax nodes
in Python, character ranges). A hole's start moves back to the start of the token it
falls in: the engine heals that piece, so the first span slot writes it whole
(mid-word holes after healing). The held-out Python files and the TS/JS/Go/Rust
held-out set get planned holes too (split `eval`), for the training run's held-out span
loss. Everything is written compressed (`pack.npz`) beside `manifest.json` (counts,
tokens and bytes per language, licences, sources).
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import random
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infill_engine.data import packages
from infill_engine.data.corpus import DEFAULT_DATA, SourceFile, deduplicate, load_split
from infill_engine.data.holes import KINDS, cut_hole, node_ranges
from infill_engine.data.neardup import NearDuplicates
from infill_engine.training.train import (
    KIND_WEIGHTS,
    Batch,
    Example,
    Ids,
    batches,
    layout_example,
)

# (registry, name, version, SPDX licence, folder of sources in the package)
SOURCES = (
    ("npm", "@trpc/server", "10.45.2", "MIT", "package/src/"),
    ("npm", "@tanstack/query-core", "5.59.0", "MIT", "package/src/"),
    ("npm", "effect", "3.10.0", "MIT", "package/src/"),
    ("npm", "lodash-es", "4.17.21", "MIT", "package/"),
    ("npm", "express", "4.21.1", "MIT", "package/lib/"),
    ("debian", "golang-github-spf13-cobra-dev", "1.6.1-1", "Apache-2.0", "usr/"),
    ("debian", "golang-github-sirupsen-logrus-dev", "1.9.0-1", "MIT", "usr/"),
    ("debian", "golang-github-gorilla-mux-dev", "1.8.0-1", "BSD-3-Clause", "usr/"),
    ("debian", "librust-anyhow-dev", "1.0.69-1", "MIT OR Apache-2.0", "usr/"),
    ("debian", "librust-serde-json-dev", "1.0.87-1", "MIT OR Apache-2.0", "usr/"),
    ("debian", "librust-bytes-dev", "1.2.1-1", "MIT", "usr/"),
    ("debian", "librust-log-dev", "0.4.17-3", "MIT OR Apache-2.0", "usr/"),
)
HOLE_EVERY = 64  # a planned hole per this many tokens of a file
MOST_HOLES = 256  # per file
LONGEST_MIDDLE = 95  # tokens; the trainers' largest span is 96
DEFAULT_OUT = DEFAULT_DATA / "datapack"
POLYGLOT = "polyglot"  # the held-out TS/JS/Go/Rust split (`evals.polyglot.SPLIT`)


def language_of(file: SourceFile) -> str:
    """A corpus file's language (Python unless its path says otherwise)."""
    return packages.language_of(file.origin) or "python"


def source_files(data: Path) -> tuple[list[SourceFile], list[SourceFile]]:
    """(training files, held-out files) in every language, fetched once into
    `data/packages`; the corpus is built when missing, and the held-out
    TS/JS/Go/Rust set must be (`python -m infill_engine.evals.polyglot`)."""
    from infill_engine.data import corpus

    if not (data / "corpus" / "train.jsonl").is_file():
        corpus.build(data)
    if not (data / "corpus" / f"{POLYGLOT}.jsonl").is_file():
        raise FileNotFoundError(
            f"{data / 'corpus' / POLYGLOT}.jsonl missing: run "
            "python -m infill_engine.evals.polyglot first (training files near a "
            "held-out file are dropped, so the held-out set comes first)"
        )
    train = load_split(data, "train")
    for registry, name, version, licence, folder in SOURCES:
        package = packages.fetch(registry, name, version, data / "packages")
        for origin, text in packages.package_sources(package, folder):
            train.append(SourceFile(f"{name}/{origin}", name, licence, text))
    heldout = [
        *load_split(data, "heldout"),
        *load_split(data, "independent"),
        *load_split(data, POLYGLOT),
    ]
    return train, heldout


def clean(
    train: Sequence[SourceFile], heldout: Sequence[SourceFile]
) -> tuple[list[SourceFile], dict[str, int]]:
    """Training files without exact or near duplicates, among themselves or of a
    held-out file; and how many each rule dropped."""
    kept = deduplicate(list(train))
    dropped = {"exact or unfit": len(train) - len(kept)}
    index = NearDuplicates()
    for file in heldout:
        index.add(f"heldout:{file.origin}", file.text)
    out, near_heldout, near_train = [], 0, 0
    for file in kept:
        found = index.add(file.origin, file.text)
        if found is None:
            out.append(file)
        elif found.startswith("heldout:"):
            near_heldout += 1
        else:
            near_train += 1
    dropped["near a held-out file"] = near_heldout
    dropped["near another training file"] = near_train
    return out, dropped


def plan_holes(
    text: str, starts: Sequence[int], language: str, rng: random.Random
) -> list[tuple[int, int, int]]:
    """(start, end, kind) token ranges of holes cut in `text`, whose tokens begin at
    character offsets `starts`: a hole starts at the token its first character falls
    in (healed) and ends before the first token at or after its last character."""
    count = min(MOST_HOLES, max(1, len(starts) // HOLE_EVERY))
    kinds, weights = list(KINDS), list(KIND_WEIGHTS)
    if language != "python":  # `node` holes come from Python's own parser
        weights[KINDS.index("node")] = 0.0
    ranges = node_ranges(text) if language == "python" else []
    planned: set[tuple[int, int, int]] = set()
    for _ in range(count * 2):
        if len(planned) >= count:
            break
        kind = rng.choices(kinds, weights)[0]
        hole = cut_hole(text, kind, rng, ranges)
        if hole is None:
            continue
        begin, end = len(hole.prefix), len(hole.prefix) + len(hole.middle)
        first = bisect.bisect_right(starts, begin) - 1
        last = bisect.bisect_left(starts, end)
        if 0 <= first < last and last - first <= LONGEST_MIDDLE:
            planned.add((first, last, KINDS.index(kind)))
    return sorted(planned)


def pack_files(
    files: Sequence[SourceFile], tokenizer: Any, rng: random.Random, progress: Any
) -> dict[str, np.ndarray]:
    """Tokens, file offsets and planned holes of `files`, as arrays."""
    if len(tokenizer) > 65_536:
        raise ValueError(f"a vocabulary of {len(tokenizer)} does not fit uint16")
    tokens: list[np.ndarray] = []
    offsets, holes, languages = [0], [], []
    names = sorted({language_of(f) for f in files} | {"python"})
    for number, file in enumerate(files):
        enc = tokenizer(
            file.text, add_special_tokens=False, return_offsets_mapping=True
        )
        ids = enc["input_ids"]
        starts = [a for a, _ in enc["offset_mapping"]]
        language = language_of(file)
        for first, last, kind in plan_holes(file.text, starts, language, rng):
            holes.append((number, first, last, kind))
        tokens.append(np.asarray(ids, dtype=np.uint16))
        offsets.append(offsets[-1] + len(ids))
        languages.append(names.index(language))
        progress(1)
    return {
        "tokens": np.concatenate(tokens) if tokens else np.zeros(0, np.uint16),
        "offsets": np.asarray(offsets, dtype=np.int64),
        "holes": np.asarray(holes, dtype=np.int32).reshape(-1, 4),
        "languages": np.asarray(languages, dtype=np.uint8),
        "language_names": np.asarray(names),
    }


def build(
    train: Sequence[SourceFile],
    heldout: Sequence[SourceFile],
    tokenizer: Any,
    out: Path,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Write `out/pack.npz` and `out/manifest.json` from the files; the manifest."""
    from tqdm import tqdm

    started = time.monotonic()
    kept, dropped = clean(train, heldout)
    eval_files = deduplicate(list(heldout))
    rng = random.Random(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, files in (("train", kept), ("eval", eval_files)):
        with tqdm(
            total=len(files), desc=f"tokenise {split}", disable=not show_progress
        ) as bar:
            for key, value in pack_files(files, tokenizer, rng, bar.update).items():
                arrays[f"{split}_{key}"] = value
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "pack.npz", allow_pickle=False, **arrays)
    manifest = {
        "vocab_size": len(tokenizer),
        "tokenizer_sha256": tokenizer_fingerprint(tokenizer),
        "seed": seed,
        "dropped": dropped,
        "splits": {
            split: _summary(arrays, split, files)
            for split, files in (("train", kept), ("eval", eval_files))
        },
        "sources": [
            {"package": p, "licence": lic}
            for p, lic in sorted({(f.package, f.license) for f in kept})
        ],
        "pack_bytes": (out / "pack.npz").stat().st_size,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of the tokenizer's vocabulary (text to id): a pack's token ids mean
    something only to a tokenizer with the same one."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()


def _summary(
    arrays: dict[str, np.ndarray], split: str, files: Sequence[SourceFile]
) -> dict[str, Any]:
    names = [str(n) for n in arrays[f"{split}_language_names"]]
    languages = arrays[f"{split}_languages"]
    offsets = arrays[f"{split}_offsets"]
    lengths = np.diff(offsets)
    holes = arrays[f"{split}_holes"]
    per: dict[str, dict[str, int]] = {}
    for i, name in enumerate(names):
        chosen = languages == i
        if not chosen.any():
            continue
        per[name] = {
            "files": int(chosen.sum()),
            "tokens": int(lengths[chosen].sum()),
            "holes": int(np.isin(holes[:, 0], np.flatnonzero(chosen)).sum()),
        }
    kinds = Counter(KINDS[k] for k in holes[:, 3].tolist())
    return {
        "files": len(files),
        "tokens": int(offsets[-1]),
        "holes": int(len(holes)),
        "hole_kinds": dict(sorted(kinds.items())),
        "languages": per,
    }


@dataclass
class DataPack:
    """A built pack, read into memory; `batches` lays out training batches from it."""

    arrays: dict[str, np.ndarray]
    manifest: dict[str, Any]

    @classmethod
    def load(cls, directory: Path) -> DataPack:
        """The pack in `directory`, with a clear error when it is missing or torn."""
        npz, manifest = directory / "pack.npz", directory / "manifest.json"
        if not npz.is_file() or not manifest.is_file():
            raise FileNotFoundError(
                f"no data pack in {directory}: build it with "
                "python -m infill_engine.training.datapack"
            )
        try:
            with np.load(npz) as loaded:
                arrays = {key: loaded[key] for key in loaded.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"{npz} is not a readable data pack: {error}") from error
        return cls(arrays, json.loads(manifest.read_text()))

    def files(self, split: str) -> int:
        """Files in a split."""
        return len(self.arrays[f"{split}_offsets"]) - 1

    def hole(self, split: str, index: int) -> tuple[np.ndarray, int, int]:
        """(the file's tokens, start, end) of one planned hole."""
        number, first, last, _ = self.arrays[f"{split}_holes"][index].tolist()
        offsets = self.arrays[f"{split}_offsets"]
        tokens = self.arrays[f"{split}_tokens"][offsets[number] : offsets[number + 1]]
        return tokens, first, last

    def examples(
        self,
        split: str,
        ids: Ids,
        canvas_length: int,
        rng: random.Random,
        buckets: Sequence[int],
        shift: int,
        spans: Sequence[int],
    ) -> Iterator[Example]:
        """Endless examples from random planned holes, laid out as the engine does."""
        count = len(self.arrays[f"{split}_holes"])
        if count == 0:
            raise ValueError(f"the data pack's {split} split has no holes")
        prompt = max(buckets) + canvas_length
        while True:
            tokens, first, last = self.hole(split, rng.randrange(count))
            example = layout_example(
                tokens[max(0, first - prompt) : first].tolist(),
                tokens[first:last].tolist(),
                tokens[last : last + canvas_length].tolist(),
                ids,
                None,
                canvas_length,
                rng,
                buckets,
                shift,
                spans,
            )
            if example is not None:
                yield example

    def batches(self, split: str, batch_size: int, **layout: Any) -> Iterator[Batch]:
        """Endless batches of equal prompt length (`examples`' arguments)."""
        return batches(self.examples(split, **layout), batch_size)


def fixed_batches(
    pack: DataPack,
    count: int,
    size: int,
    vocab_size: int,
    mask_id: int | None,
    **layout: Any,
) -> list[tuple[Batch, torch.Tensor, torch.Tensor]]:
    """Held-out batches and their noise, fixed by seed: a loss that compares."""
    from infill_engine.training.train import add_noise

    stream = pack.batches("eval", size, rng=random.Random(1234), **layout)
    gen = torch.Generator().manual_seed(1234)
    out = []
    for _ in range(count):
        batch = next(stream)
        out.append((batch, *add_noise(batch, vocab_size, gen, 1.0, mask_id)))
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: fetch the sources, build the pack, print its manifest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--tokenizer",
        type=Path,
        help="tokenizer directory (default: the built default model's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="hole draw")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    if args.tokenizer is None:
        from infill_engine.model.build import built_model_dir

        args.tokenizer = built_model_dir()
    if not (args.tokenizer / "tokenizer.json").is_file():
        parser.error(f"no tokenizer in {args.tokenizer}: run make setup first")
    tokenizer = AutoTokenizer.from_pretrained(str(args.tokenizer))
    train, heldout = source_files(args.data)
    manifest = build(train, heldout, tokenizer, args.out, args.seed)
    print(json.dumps(manifest["splits"], indent=2))
    print(f"dropped: {manifest['dropped']}")
    print(f"{args.out / 'pack.npz'}: {manifest['pack_bytes'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
