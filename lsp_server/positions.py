"""The one place where LSP positions become string offsets and back.

LSP positions count code units of the negotiated encoding (UTF-16 unless the client
asked for another) on lines split at \\n, \\r\\n or \\r; Python strings index code
points;
tree-sitter counts UTF-8 bytes. Every conversion goes through this module, with the
unit counter of pygls's position codec.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from lsprotocol import types
from pygls.workspace.position_codec import PositionCodec

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class PositionError(ValueError):
    """A position that does not exist in the document."""


@dataclass(frozen=True)
class LineIndex:
    """Offsets of line starts in one text, built once per document version."""

    text: str
    starts: tuple[int, ...] = field(init=False)
    ends: tuple[int, ...] = field(init=False)  # offset of each line's break (or EOF)

    def __post_init__(self) -> None:
        starts, ends = [0], []
        for match in _LINE_BREAK.finditer(self.text):
            ends.append(match.start())
            starts.append(match.end())
        ends.append(len(self.text))
        object.__setattr__(self, "starts", tuple(starts))
        object.__setattr__(self, "ends", tuple(ends))

    def line_text(self, line: int) -> str:
        """Line `line` without its line break."""
        return self.text[self.starts[line] : self.ends[line]]

    def line_of(self, offset: int) -> int:
        """The line holding string offset `offset`."""
        return bisect.bisect_right(self.starts, offset) - 1


def to_offset(
    index: LineIndex,
    position: types.Position,
    codec: PositionCodec,
    clamp: bool = False,
) -> int:
    """String offset of an LSP position.

    Args:
        index: the document's line index.
        position: line and character in the codec's code units.
        codec: the negotiated position codec.
        clamp: move a position past the end of its line or file to that end instead
            of raising (what editors do for ranges in didChange).

    Raises:
        PositionError: past the end of the line or file, or inside a surrogate pair.
    """
    if position.line < 0 or position.character < 0:
        raise PositionError(f"negative position {position.line}:{position.character}")
    if position.line >= len(index.starts):
        if clamp:
            return len(index.text)
        raise PositionError(
            f"line {position.line} is past the end of the document "
            f"({len(index.starts)} lines)"
        )
    line = index.line_text(position.line)
    units, col = 0, 0
    for char in line:
        if units >= position.character:
            break
        units += codec.impl.code_units_for_char(char)
        col += 1
    if units < position.character:
        if clamp:
            return index.ends[position.line]
        raise PositionError(
            f"character {position.character} is past the end of line {position.line} "
            f"({units} code units)"
        )
    if units > position.character:
        if clamp:
            col -= 1
        else:
            raise PositionError(
                f"character {position.character} of line {position.line} splits a "
                "surrogate pair"
            )
    return index.starts[position.line] + col


def to_position(index: LineIndex, offset: int, codec: PositionCodec) -> types.Position:
    """LSP position of string offset `offset` (0..len(text))."""
    line = index.line_of(offset)
    start = index.starts[line]
    prefix = index.text[start : min(offset, index.ends[line])]
    return types.Position(line=line, character=codec.client_num_units(prefix))


def to_range(
    index: LineIndex, start: int, end: int, codec: PositionCodec
) -> types.Range:
    """LSP range of the string offsets [start, end)."""
    return types.Range(to_position(index, start, codec), to_position(index, end, codec))


def byte_offset(text: str, offset: int) -> int:
    """UTF-8 byte offset of string offset `offset`, for tree-sitter."""
    return len(text[:offset].encode("utf-8", "surrogatepass"))


def char_offset(data: bytes, offset: int) -> int:
    """String offset of UTF-8 byte offset `offset` (from tree-sitter)."""
    return len(data[:offset].decode("utf-8", "surrogatepass"))
