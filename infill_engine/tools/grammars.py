"""tree-sitter grammars by editor language id: parse a text, count its errors, and
check a fill the way the language server's gate does (no syntax error added to its
context; at a line end, none left on the line either, and what lands there:
`line_end_fill`). The server, `infill fill` and the evaluations share it; nothing that
fills imports it.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
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
    return errors_between(tree, 0, tree.root_node.end_byte) if tree else 0


def errors_between(tree: ts.Tree | None, start: int, end: int) -> int:
    """ERROR and MISSING nodes in a tree that touch bytes `start` to `end`."""
    if tree is None:
        return 0
    count, stack = 0, [tree.root_node]
    while stack:
        node = stack.pop()
        if node.end_byte < start or node.start_byte > end:
            continue
        if node.is_error or node.is_missing:
            count += 1
        stack.extend(c for c in node.children if c.has_error or c.is_missing)
    return count


def encloses_error(tree: ts.Tree | None, start: int, end: int) -> bool:
    """Whether an ERROR node spans past both ends of bytes `start` to `end`: the
    parse is broken around them whatever they hold (a context window that begins
    inside a string parses so)."""
    stack = [tree.root_node] if tree is not None else []
    while stack:
        node = stack.pop()
        if node.start_byte >= start or node.end_byte <= end:
            continue
        if node.is_error:
            return True
        stack.extend(c for c in node.children if c.has_error)
    return False


def fill_check(
    language_id: str,
    prefix: str,
    suffix: str,
    clean: Callable[[str], str] = lambda text: text,
    line_end: bool = False,
) -> Callable[[str], bool]:
    """A check of raw fills for one hole: True when `clean(raw)`, inserted between
    `prefix` and `suffix`, adds no syntax error to them. With `line_end` (a fill at the
    end of a line) it must also leave none from the cursor's line to the next line
    with code: a line that leaves its own statement broken fails even where the hole
    without it was already broken there, and an error elsewhere in the context does
    not count against it; where an error encloses that stretch before any fill (a
    context window begun inside a string), only the count applies. The hole without
    a fill is parsed once, here. Languages without a grammar (and texts too large to
    parse) accept every fill."""
    before = parse(language_id, prefix + suffix)
    if before is None:
        return lambda raw: True
    baseline = error_count(before)
    line_start = len(prefix[: prefix.rfind("\n") + 1].encode("utf-8", "surrogatepass"))
    following = len(_through_next_code_line(suffix).encode("utf-8", "surrogatepass"))
    cursor = len(prefix.encode("utf-8", "surrogatepass"))

    # Where the parse is broken around the line whatever it holds, only the count
    # says anything.
    line_end = line_end and not encloses_error(before, line_start, cursor + following)

    def parses_as_well(raw: str) -> bool:
        fill = clean(raw)
        after = parse(language_id, prefix + fill + suffix)
        if error_count(after) > baseline:
            return False
        if not line_end:
            return True
        end = cursor + len(fill.encode("utf-8", "surrogatepass")) + following
        return errors_between(after, line_start, end) == 0

    return parses_as_well


# Where a line may stop with the rest of its statement on the lines below.
LINE_BREAKS = "([{,"


def line_end_fill(passes: Callable[[str], bool], lines: Sequence[str]) -> str:
    """What lands at a line end, from its candidate lines (cleaned, best first) and
    the hole's check (`fill_check` with `line_end`): the first line that passes; else
    the longest cut of one, in the same order, after a bracket or a comma, that
    passes (the suffix already holds the rest: `f(a, b)` before a line `b)` is cut to
    `f(a,`); else nothing, rather than a line that leaves the code broken."""
    for line in lines:
        if line.strip() and passes(line):
            return line
    for line in lines:
        cuts = [i + 1 for i, c in enumerate(line.rstrip()) if c in LINE_BREAKS]
        for cut in reversed(cuts):
            piece = line[:cut]
            if piece.strip() and piece != line and passes(piece):
                return piece
    return ""


def _through_next_code_line(suffix: str) -> str:
    """`suffix` up to the end of its first line after the cursor's with code on it."""
    lines = suffix.split("\n")
    for n, line in enumerate(lines[1:], start=1):
        if line.strip():
            return "\n".join(lines[: n + 1])
    return suffix
