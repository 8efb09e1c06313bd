"""Cut a hole in a source file: prefix + middle + suffix == the file.

Four kinds, the shapes an editor asks for:

* line: the rest of one line from a random column;
* block: one to six whole lines;
* node: a syntax node from Python's `ast` (an expression, the inside of a call's
  brackets, or the body of an indented block);
* chars: a random character range.
"""

from __future__ import annotations

import ast
import random
from dataclasses import dataclass

KINDS = ("line", "block", "node", "chars")
MAX_BLOCK_LINES = 6
MAX_NODE_CHARS = 400
MAX_CHARS_HOLE = 200


@dataclass(frozen=True)
class Hole:
    """A file split around a hole; `prefix + middle + suffix` is the file."""

    prefix: str
    middle: str
    suffix: str
    kind: str


def _split(text: str, start: int, end: int, kind: str) -> Hole | None:
    if not 0 <= start < end <= len(text) or not text[start:end].strip():
        return None
    return Hole(text[:start], text[start:end], text[end:], kind)


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for index, char in enumerate(text):
        if char == "\n":
            starts.append(index + 1)
    return starts


def cut_line(text: str, rng: random.Random) -> Hole | None:
    """The rest of a non-blank line from a random column (at or after its indent)."""
    starts = _line_starts(text)
    lines = text.split("\n")
    choices = [i for i, line in enumerate(lines) if len(line.strip()) >= 2]
    if not choices:
        return None
    i = rng.choice(choices)
    line = lines[i].rstrip()
    indent = len(line) - len(line.lstrip())
    column = indent if rng.random() < 0.3 else rng.randint(indent, len(line) - 1)
    return _split(text, starts[i] + column, starts[i] + len(line), "line")


def cut_block(text: str, rng: random.Random) -> Hole | None:
    """One to six whole lines; half the time the prefix keeps the first indent."""
    starts = _line_starts(text)
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    j = min(len(lines), i + rng.randint(1, MAX_BLOCK_LINES))
    first = lines[i]
    start = starts[i] + (len(first) - len(first.lstrip()) if rng.random() < 0.5 else 0)
    end = starts[j - 1] + len(lines[j - 1].rstrip())
    return _split(text, start, end, "block")


def node_ranges(text: str) -> list[tuple[int, int]]:
    """Character ranges of syntax nodes worth filling; empty if it does not parse."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    starts = _line_starts(text)
    lines = text.split("\n")

    def offset(lineno: int, col: int) -> int:
        line = lines[lineno - 1]
        if not line.isascii():  # ast columns count UTF-8 bytes
            col = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
        return starts[lineno - 1] + col

    ranges = []
    for node in ast.walk(tree):
        if isinstance(node, ast.expr) and node.end_lineno is not None:
            ranges.append(
                (
                    offset(node.lineno, node.col_offset),
                    offset(node.end_lineno, node.end_col_offset or 0),
                )
            )
            if isinstance(node, ast.Call) and (node.args or node.keywords):
                func_end = offset(
                    node.func.end_lineno or 1, node.func.end_col_offset or 0
                )
                ranges.append((func_end + 1, ranges[-1][1] - 1))  # inside the brackets
        body = getattr(node, "body", None)
        if isinstance(node, ast.stmt) and isinstance(body, list) and body:
            last = body[-1]
            ranges.append(
                (
                    offset(body[0].lineno, body[0].col_offset),
                    offset(last.end_lineno or last.lineno, last.end_col_offset or 0),
                )
            )
    return [(s, e) for s, e in ranges if 0 < e - s <= MAX_NODE_CHARS]


def cut_node(
    text: str, rng: random.Random, ranges: list[tuple[int, int]] | None = None
) -> Hole | None:
    """A random syntax node (pass precomputed `node_ranges` to skip re-parsing)."""
    ranges = node_ranges(text) if ranges is None else ranges
    if not ranges:
        return None
    start, end = rng.choice(ranges)
    return _split(text, start, end, "node")


def cut_chars(text: str, rng: random.Random) -> Hole | None:
    """A random character range of 1..200 characters."""
    if len(text) < 2:
        return None
    start = rng.randrange(len(text) - 1)
    return _split(
        text, start, min(len(text), start + rng.randint(1, MAX_CHARS_HOLE)), "chars"
    )


def cut_hole(
    text: str,
    kind: str,
    rng: random.Random,
    ranges: list[tuple[int, int]] | None = None,
) -> Hole | None:
    """A hole of the given kind, or None when the file has no such place."""
    if kind == "line":
        return cut_line(text, rng)
    if kind == "block":
        return cut_block(text, rng)
    if kind == "node":
        return cut_node(text, rng, ranges)
    if kind == "chars":
        return cut_chars(text, rng)
    raise ValueError(f"kind must be one of {', '.join(KINDS)} (got {kind!r})")
