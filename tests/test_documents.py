from lsprotocol.types import (
    Position,
    PositionEncodingKind,
    Range,
    TextDocumentContentChangePartial,
    TextDocumentContentChangeWholeDocument,
)
from pygls.workspace.position_codec import PositionCodec

from lsp_server.documents import DocumentStore

UTF16 = PositionCodec(PositionEncodingKind.Utf16)


def edit(sl, sc, el, ec, text):
    return TextDocumentContentChangePartial(
        range=Range(Position(sl, sc), Position(el, ec)), text=text
    )


def test_incremental_changes_apply_in_order_and_bump_the_version():
    store = DocumentStore()
    store.open("u", "python", 1, "ab😀c\nline2\n")
    snap = store.change("u", 2, [edit(0, 4, 0, 4, "X"), edit(1, 0, 1, 4, "L")], UTF16)
    assert snap.text == "ab😀Xc\nL2\n" and snap.version == 2


def test_the_snapshot_knows_where_the_last_edit_ends():
    store = DocumentStore()
    assert store.open("u", "python", 1, "ab😀c\nline2\n").edit_end is None
    snap = store.change("u", 2, [edit(1, 0, 1, 4, "L"), edit(0, 4, 0, 4, "XY")], UTF16)
    assert (
        snap.text[: snap.edit_end] == "ab😀XY"
    )  # after the text the last change typed
    snap = store.change("u", 3, [edit(0, 0, 0, 2, "")], UTF16)  # a deletion
    assert snap.edit_end == 0
    whole = TextDocumentContentChangeWholeDocument(text="new")
    assert store.change("u", 4, [edit(0, 0, 0, 0, "z"), whole], UTF16).edit_end is None


def test_out_of_bounds_ranges_are_clamped_not_lost():
    store = DocumentStore()
    store.open("u", "python", 1, "abc\n")
    snap = store.change("u", 2, [edit(0, 2, 9, 9, "Z")], UTF16)
    assert snap.text == "abZ"


def test_whole_document_change_and_unknown_documents():
    store = DocumentStore()
    assert store.change("nope", 2, [], UTF16) is None
    store.open("u", "python", 1, "old")
    new = TextDocumentContentChangeWholeDocument(text="new")
    assert store.change("u", 2, [new], UTF16).text == "new"
    store.close("u")
    assert store.get("u") is None and len(store) == 0
