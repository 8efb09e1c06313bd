import pytest
from hypothesis import given
from hypothesis import strategies as st
from lsprotocol.types import Position, PositionEncodingKind
from pygls.workspace.position_codec import PositionCodec

from lsp_server.positions import (
    LineIndex,
    PositionError,
    byte_offset,
    char_offset,
    to_offset,
    to_position,
)

UTF16 = PositionCodec(PositionEncodingKind.Utf16)
UTF8 = PositionCodec(PositionEncodingKind.Utf8)
TEXT = "x = 1\ns = '😀' + y\r\nlast"


def test_utf16_counts_an_emoji_as_two_units():
    index = LineIndex(TEXT)
    after_emoji = TEXT.index("'", TEXT.index("😀"))
    assert to_offset(index, Position(1, 7), UTF16) == after_emoji
    assert to_position(index, after_emoji, UTF16) == Position(1, 7)
    assert to_offset(index, Position(1, 9), UTF8) == after_emoji


def test_a_position_inside_a_surrogate_pair_is_rejected_or_clamped():
    index = LineIndex(TEXT)
    with pytest.raises(PositionError, match="surrogate"):
        to_offset(index, Position(1, 6), UTF16)
    assert to_offset(index, Position(1, 6), UTF16, clamp=True) == TEXT.index("😀")


def test_past_the_end_of_line_or_file():
    index = LineIndex(TEXT)
    with pytest.raises(PositionError, match="past the end of line"):
        to_offset(index, Position(0, 6), UTF16)
    with pytest.raises(PositionError, match="past the end of the document"):
        to_offset(index, Position(3, 0), UTF16)
    assert to_offset(index, Position(0, 99), UTF16, clamp=True) == 5
    assert to_offset(index, Position(9, 0), UTF16, clamp=True) == len(TEXT)


def test_crlf_and_cr_end_lines_but_form_feed_does_not():
    index = LineIndex("a\r\nb\rc\x0cd\ne")
    assert [index.line_text(i) for i in range(4)] == ["a", "b", "c\x0cd", "e"]


@given(st.text(alphabet=st.sampled_from("ab😀é\n\r\t"), max_size=40), st.data())
def test_offsets_round_trip(text, data):
    index = LineIndex(text)
    offset = data.draw(st.integers(0, len(text)))
    # offsets between \r and \n, or inside nothing, are not positions; skip those
    if 0 < offset < len(text) and text[offset - 1] == "\r" and text[offset] == "\n":
        return
    position = to_position(index, offset, UTF16)
    assert to_offset(index, position, UTF16) == offset


def test_byte_offsets_for_tree_sitter():
    text = "é😀x"
    assert byte_offset(text, 2) == 6
    assert char_offset(text.encode(), 6) == 2
