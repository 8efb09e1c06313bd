"""Which span to fill and which context to pin around it.

The span kind decides single-line vs multi-line: text after the cursor on its line makes
a `line` span (complete up to that text); a blank line, or a line ending in a block
opener, makes a `block` span; an open bracket or a syntax error around the cursor makes
an `expression` span. Prefix and suffix are cut to a character budget at syntax
boundaries (whole top-level statements, descending into the enclosing node, else whole
lines), keeping the context nearest the span.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import tree_sitter as ts

from infill_engine.core.spans import LINE_SPAN_LENGTHS
from lsp_server.documents import Snapshot
from lsp_server.positions import byte_offset
from lsp_server.syntax import line_comment

SpanKind = Literal["line", "next_line", "expression", "block", "selection", "hole"]
# Kinds whose fill ends at its first line break.
SINGLE_LINE_KINDS = ("line", "next_line", "expression")
# Suggestions denoise one row: a second span length adds to every step's work and
# matched no more held-out lines (`LINE_SPAN_LENGTHS`). Fill on save is not typed
# against, so a hole still tries two lengths and keeps the one that finished.
SPAN_LENGTHS: dict[str, tuple[int, ...]] = {
    "line": LINE_SPAN_LENGTHS,
    "next_line": LINE_SPAN_LENGTHS,
    "expression": (32,),
    "block": (64,),
    "hole": (48, 96),
}
PREFIX_CHARS = 6000
# The prefix budget starts on a grid of this many characters, so the prefix's first
# statement stays put while the cursor moves within a cell (the engine's prompt, and
# with it its cached prefill, then extends from one keystroke to the next).
PREFIX_STEP = 1024
SUFFIX_CHARS = 1500
_BLOCK_OPENERS = (":", "{", "=>", "->")
_OPEN, _CLOSE = "([{", ")]}"


@dataclass(frozen=True)
class InfillContext:
    """A span of one document snapshot and the text pinned around it.

    Attributes:
        prefix: text before the span, cut at a syntax boundary.
        suffix: text after the span, cut at a syntax boundary.
        start: document offset where the span starts.
        end: document offset where it ends (== start when inserting).
        kind: what sort of span this is; decides lengths and post-processing.
        indent: leading whitespace of the line the span starts on.
        span_lengths: span slots to try as one batch.
        header: text the fill must begin with (a hole's hint comment, the line break
            before a next line), or ''; it ends the prefix and starts the edit.
    """

    prefix: str
    suffix: str
    start: int
    end: int
    kind: SpanKind
    indent: str
    span_lengths: tuple[int, ...]
    header: str = ""

    @property
    def single_line(self) -> bool:
        """Whether only the fill's first line is used (`postprocess.clean`)."""
        return self.kind in SINGLE_LINE_KINDS


def span_kind(snap: Snapshot, offset: int, tree: ts.Tree | None) -> SpanKind:
    """Single-line, expression or block, from the cursor's line and the syntax tree."""
    line = snap.lines.line_of(offset)
    before = snap.text[snap.lines.starts[line] : offset]
    after = snap.text[offset : snap.lines.ends[line]]
    if after.strip() and after.strip()[0] not in _CLOSE:
        return "line"
    if not before.strip() or before.rstrip().endswith(_BLOCK_OPENERS):
        return "block"
    depth = sum(before.count(c) for c in _OPEN) - sum(before.count(c) for c in _CLOSE)
    if depth > 0 or after.strip() or _inside_error(tree, snap.text, offset):
        return "expression"
    return "line"


def at_cursor(
    snap: Snapshot, offset: int, tree: ts.Tree | None, span_size: int = 0
) -> InfillContext:
    """Context for a suggestion inserted at `offset`."""
    kind = span_kind(snap, offset, tree)
    lengths = (span_size,) if span_size else SPAN_LENGTHS[kind]
    return _make(snap, offset, offset, kind, tree, lengths)


def next_line(
    snap: Snapshot, offset: int, tree: ts.Tree | None, span_size: int = 0
) -> InfillContext:
    """Context for the line after the cursor's, the cursor at its line's end: the fill
    is that line (its indent written by the model), inserted after a line break the
    suggestion begins with (`header`)."""
    lengths = (span_size,) if span_size else SPAN_LENGTHS["next_line"]
    ctx = _make(snap, offset, offset, "next_line", tree, lengths)
    return InfillContext(
        ctx.prefix + "\n", ctx.suffix, offset, offset, "next_line", "", lengths, "\n"
    )


def for_range(
    snap: Snapshot, start: int, end: int, tree: ts.Tree | None, span_size: int = 0
) -> InfillContext:
    """Context for rewriting the text in [start, end) with everything around it
    pinned."""
    chars = end - start
    n = min(max(chars // 3 + 8, 16), 160)
    lengths = (span_size,) if span_size else (n, min(n * 3 // 2, 200))
    return _make(snap, start, end, "selection", tree, lengths)


@dataclass(frozen=True)
class Hole:
    """A hole marker comment: [start, end) is the comment, `hint` the text after it."""

    start: int
    end: int
    hint: str


def find_holes(snap: Snapshot, tree: ts.Tree | None, marker: str) -> list[Hole]:
    """Every hole marker comment (`# <fill>`, `// <fill> hint`) in the document.

    With a syntax tree, a match counts only inside a comment node (never in a string).
    """
    comment = line_comment(snap.language_id)
    pattern = re.compile(
        rf"{re.escape(comment)}[ \t]*{re.escape(marker)}(?P<hint>[^\r\n]*)"
    )
    holes = []
    for match in pattern.finditer(snap.text):
        if tree is not None and not _in_comment(tree, snap.text, match.start()):
            continue
        holes.append(Hole(match.start(), match.end(), match.group("hint").strip()))
    return holes


def for_hole(
    snap: Snapshot, hole: Hole, tree: ts.Tree | None, span_size: int = 0
) -> InfillContext:
    """Context for filling one hole; its hint stays as a comment the fill begins
    with."""
    lengths = (span_size,) if span_size else SPAN_LENGTHS["hole"]
    ctx = _make(snap, hole.start, hole.end, "hole", tree, lengths)
    if not hole.hint:
        return ctx
    header = f"{line_comment(snap.language_id)} {hole.hint}\n{ctx.indent}"
    return InfillContext(
        ctx.prefix + header,
        ctx.suffix,
        ctx.start,
        ctx.end,
        "hole",
        ctx.indent,
        lengths,
        header,
    )


def _make(
    snap: Snapshot,
    start: int,
    end: int,
    kind: SpanKind,
    tree: ts.Tree | None,
    lengths: tuple[int, ...],
) -> InfillContext:
    text = snap.text
    line_start = snap.lines.starts[snap.lines.line_of(start)]
    line = text[line_start:start]
    indent = line[: len(line) - len(line.lstrip())]
    # Rounded up to the grid, as the engine's `canvas.round_up` (which needs torch).
    budget_start = -(-max(0, start - PREFIX_CHARS) // PREFIX_STEP) * PREFIX_STEP
    budget_stop = min(len(text), end + SUFFIX_CHARS)
    cut = _prefix_cut(snap, tree, budget_start)
    stop = _suffix_cut(snap, tree, budget_stop)
    # A single line longer than the budget (minified code): cut inside it.
    cut = cut if cut <= start else budget_start
    stop = stop if stop >= end else budget_stop
    return InfillContext(
        text[cut:start], text[end:stop], start, end, kind, indent, lengths
    )


def _prefix_cut(snap: Snapshot, tree: ts.Tree | None, cut: int) -> int:
    """The earliest statement start at or after `cut` (a line start without a tree)."""
    if cut == 0:
        return 0
    line = snap.lines.line_of(cut)
    fallback = snap.lines.starts[min(line + 1, len(snap.lines.starts) - 1)]
    if tree is None:
        return max(fallback, cut)

    def earliest(node: ts.Node, depth: int) -> int | None:
        for child in node.named_children:
            if _row_start(snap, child) >= cut and _whole_lines(snap, child):
                return _row_start(snap, child)
            if _row_end(snap, child) > cut and depth < 32:
                inner = earliest(child, depth + 1)
                if inner is not None:
                    return inner
        return None

    found = earliest(tree.root_node, 0)
    return found if found is not None else max(fallback, cut)


def _suffix_cut(snap: Snapshot, tree: ts.Tree | None, stop: int) -> int:
    """The latest statement end at or before `stop` (a line end without a tree)."""
    if stop >= len(snap.text):
        return len(snap.text)
    line = snap.lines.line_of(stop)
    fallback = snap.lines.ends[max(line - 1, 0)]
    if tree is None:
        return min(fallback, stop)

    def latest(node: ts.Node, depth: int) -> int | None:
        best = None
        for child in node.named_children:
            if _row_end(snap, child) <= stop:
                best = _row_end(snap, child) if _whole_lines(snap, child) else best
            elif _row_start(snap, child) < stop:
                inner = latest(child, depth + 1) if depth < 32 else None
                return inner if inner is not None else best
            else:
                break
        return best

    found = latest(tree.root_node, 0)
    return found if found is not None else min(fallback, stop)


def _whole_lines(snap: Snapshot, node: ts.Node) -> bool:
    """A statement-like node: nothing but indentation before it or space after it."""
    rows = len(snap.lines.starts)
    if node.start_point.row >= rows or node.end_point.row >= rows:
        return False
    first = snap.lines.line_text(node.start_point.row)
    last = snap.lines.line_text(node.end_point.row)
    indent = len(first) - len(first.lstrip())
    return node.start_point.column == indent and node.end_point.column == len(
        last.rstrip().encode("utf-8", "surrogatepass")
    )


def _row_start(snap: Snapshot, node: ts.Node) -> int:
    row = min(node.start_point.row, len(snap.lines.starts) - 1)
    return snap.lines.starts[row]


def _row_end(snap: Snapshot, node: ts.Node) -> int:
    row = min(node.end_point.row, len(snap.lines.ends) - 1)
    return snap.lines.ends[row]


def _inside_error(tree: ts.Tree | None, text: str, offset: int) -> bool:
    if tree is None:
        return False
    at = byte_offset(text, offset)
    node = tree.root_node.descendant_for_byte_range(max(at - 1, 0), at)
    while node is not None:
        if node.is_error or node.is_missing:
            return True
        node = node.parent
    return False


def _in_comment(tree: ts.Tree, text: str, offset: int) -> bool:
    at = byte_offset(text, offset)
    node = tree.root_node.descendant_for_byte_range(at, at + 1)
    while node is not None:
        if "comment" in node.type:
            return True
        node = node.parent
    return False
