"""tree-sitter for the server: incrementally re-parsed trees per document, line
comments; the grammars and error counts are `infill_engine.tools.grammars`'.

Trees are kept per document and edited between versions rather than re-parsed from
scratch. Languages without a grammar (and documents larger than `MAX_PARSE_BYTES`) get
no tree, and the callers fall back to line-based context.
"""

from __future__ import annotations

from dataclasses import dataclass

import tree_sitter as ts

from infill_engine.tools.grammars import (  # noqa: F401 (the server's names for them)
    GRAMMARS,
    MAX_PARSE_BYTES,
    error_count,
    grammar,
    parse,
)
from lsp_server.documents import Snapshot

LINE_COMMENT = {
    "python": "#",
    "shellscript": "#",
    "ruby": "#",
    "yaml": "#",
    "toml": "#",
}
DEFAULT_LINE_COMMENT = "//"


def line_comment(language_id: str) -> str:
    """The line-comment prefix of a language ('#' or '//')."""
    return LINE_COMMENT.get(language_id, DEFAULT_LINE_COMMENT)


@dataclass
class _Parsed:
    version: int
    text: str
    data: bytes
    tree: ts.Tree


class SyntaxTrees:
    """One tree per open document, brought up to date incrementally."""

    def __init__(self) -> None:
        self._trees: dict[str, _Parsed] = {}

    def tree(self, snap: Snapshot) -> ts.Tree | None:
        """The tree of this snapshot; re-parses only what changed since the last one."""
        lang = grammar(snap.language_id)
        if lang is None:
            return None
        old = self._trees.get(snap.uri)
        if old is not None and old.version == snap.version and old.text is snap.text:
            return old.tree
        data = snap.text.encode("utf-8", "surrogatepass")
        if len(data) > MAX_PARSE_BYTES:
            self._trees.pop(snap.uri, None)
            return None
        parser = ts.Parser(lang)
        if old is None:
            tree = parser.parse(data)
        else:
            _edit(old.tree, old.data, data)
            tree = parser.parse(data, old.tree)
        self._trees[snap.uri] = _Parsed(snap.version, snap.text, data, tree)
        return tree

    def forget(self, uri: str) -> None:
        """Drop the tree of a closed document."""
        self._trees.pop(uri, None)


def _edit(tree: ts.Tree, old: bytes, new: bytes) -> None:
    """Tell `tree` which single byte range changed between `old` and `new`."""
    start = _common_prefix(old, new)
    tail = _common_prefix(old[start:][::-1], new[start:][::-1])
    old_end, new_end = len(old) - tail, len(new) - tail
    tree.edit(
        start_byte=start,
        old_end_byte=old_end,
        new_end_byte=new_end,
        start_point=_point(old, start),
        old_end_point=_point(old, old_end),
        new_end_point=_point(new, new_end),
    )


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the common prefix, by binary search over slice comparisons (in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _point(data: bytes, offset: int) -> tuple[int, int]:
    row = data.count(b"\n", 0, offset)
    return row, offset - (data.rfind(b"\n", 0, offset) + 1)
