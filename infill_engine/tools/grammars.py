"""tree-sitter grammars by editor language id: parse a text, count its errors, and
check a fill the way the language server's gate does (no syntax error added to its
context). The server, `infill fill` and the evaluations share it; nothing that fills
imports it.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path

import tree_sitter as ts

# language id (as editors send it) -> grammar name
GRAMMARS = {
    "python": "python",
    "javascript": "javascript",
    "javascriptreact": "javascript",
    "typescript": "typescript",
    "typescriptreact": "tsx",
    "go": "go",
    "rust": "rust",
}
# file extension -> language id, for a file named on the command line
EXTENSIONS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascriptreact",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "typescriptreact",
    ".go": "go",
    ".rs": "rust",
}
MAX_PARSE_BYTES = 2_000_000


def language_of_path(path: str | Path) -> str | None:
    """The language id of a file by its extension, None for one without a grammar."""
    return EXTENSIONS.get(Path(path).suffix.lower())


@functools.cache
def grammar(language_id: str) -> ts.Language | None:
    """The tree-sitter language for an editor language id, or None."""
    name = GRAMMARS.get(language_id)
    if name is None:
        return None
    if name in ("typescript", "tsx"):
        module = importlib.import_module("tree_sitter_typescript")
        return ts.Language(getattr(module, f"language_{name}")())
    return ts.Language(importlib.import_module(f"tree_sitter_{name}").language())


def parse(language_id: str, text: str) -> ts.Tree | None:
    """Parse `text` from scratch; None without a grammar or when too large."""
    lang = grammar(language_id)
    data = text.encode("utf-8", "surrogatepass")
    if lang is None or len(data) > MAX_PARSE_BYTES:
        return None
    return ts.Parser(lang).parse(data)


def error_count(tree: ts.Tree | None) -> int:
    """ERROR and MISSING nodes in a tree (0 for no tree)."""
    if tree is None:
        return 0
    count, stack = 0, [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            count += 1
        stack.extend(c for c in node.children if c.has_error or c.is_missing)
    return count


def fill_check(
    language_id: str,
    prefix: str,
    suffix: str,
    clean: Callable[[str], str] = lambda text: text,
) -> Callable[[str], bool]:
    """A check of raw fills for one hole: True when `clean(raw)`, inserted between
    `prefix` and `suffix`, adds no syntax error to them. The hole without a fill is
    parsed once, here. Languages without a grammar (and texts too large to parse)
    accept every fill."""
    before = parse(language_id, prefix + suffix)
    if before is None:
        return lambda raw: True
    baseline = error_count(before)

    def parses_as_well(raw: str) -> bool:
        after = parse(language_id, prefix + clean(raw) + suffix)
        return error_count(after) <= baseline

    return parses_as_well
