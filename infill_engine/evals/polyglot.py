"""A held-out set in TypeScript, JavaScript, Go and Rust, from packages nothing here
trains on (the training corpus is Python only), for `compare`.

    python -m infill_engine.evals.polyglot [--data work-data]

Sources are pinned packages of the registries this project reaches: npm tarballs
(`npm pack`) and Debian's `golang-*-dev` and `librust-*-dev` packages (`apt-get
download`, which ship their sources). Each file keeps its package and licence; test
files, generated and minified files are left out, and files are deduplicated as the
Python corpus is (`corpus.deduplicate`). The set is written to `corpus/polyglot.jsonl`
in the data folder and read with `corpus.load_split(data, "polyglot")`.

`parses(language, text)` is the check `compare` reports for these languages: the
tree-sitter grammar the language server uses finds no syntax error in the file.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from infill_engine.data.corpus import (
    DEFAULT_DATA,
    SourceFile,
    deduplicate,
)
from infill_engine.data.packages import fetch, language_of, package_sources
from infill_engine.tools import grammars

# (registry, name, version, SPDX licence, folder of sources in the package)
PACKAGES = (
    ("npm", "rxjs", "7.8.1", "Apache-2.0", "package/src/"),
    ("npm", "immer", "10.1.1", "MIT", "package/src/"),
    ("npm", "commander", "12.1.0", "MIT", "package/lib/"),
    ("debian", "golang-github-google-uuid-dev", "1.3.0-1", "BSD-3-Clause", "usr/"),
    ("debian", "golang-github-pkg-errors-dev", "0.9.1-2", "BSD-2-Clause", "usr/"),
    (
        "debian",
        "golang-github-spf13-pflag-dev",
        "1.0.6~git20210604-d5e0c0615ace-1",
        "BSD-3-Clause",
        "usr/",
    ),
    ("debian", "librust-itoa-dev", "1.0.1-2", "MIT OR Apache-2.0", "usr/"),
    ("debian", "librust-semver-dev", "1.0.14-1", "MIT OR Apache-2.0", "usr/"),
    ("debian", "librust-smallvec-dev", "1.9.0-1", "MIT OR Apache-2.0", "usr/"),
)
SPLIT = "polyglot"


def build(data: Path) -> dict[str, int]:
    """Fetch every package, write `polyglot.jsonl`; files per language."""
    files: list[SourceFile] = []
    for registry, name, version, licence, folder in PACKAGES:
        package = fetch(registry, name, version, data / "packages")
        for origin, text in package_sources(package, folder):
            files.append(SourceFile(f"{name}/{origin}", name, licence, text))
    kept = deduplicate(files)
    (data / "corpus").mkdir(parents=True, exist_ok=True)
    with (data / "corpus" / f"{SPLIT}.jsonl").open("w", encoding="utf-8") as out:
        for file in kept:
            out.write(json.dumps(asdict(file)) + "\n")
    counts: dict[str, int] = {}
    for file in kept:
        lang = language_of(file.origin) or "?"
        counts[lang] = counts.get(lang, 0) + 1
    return counts


def parses(language: str, text: str) -> bool:
    """Whether the language's tree-sitter grammar finds no syntax error in `text`."""
    tree = grammars.parse(language, text)
    return tree is not None and not tree.root_node.has_error


def main(argv: list[str] | None = None) -> None:
    """Command line: build the set and print its size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    for language, count in sorted(build(args.data).items()):
        print(f"{language}: {count} files")


if __name__ == "__main__":
    main()
