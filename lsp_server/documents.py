"""Open documents as frozen snapshots that carry their version.

The server keeps its own copy of each document, applying incremental changes with the
same line rules as the LSP spec (see `positions`), so every request works on a snapshot
that cannot change under it, and results computed for an older version can be dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from lsprotocol import types
from pygls.workspace.position_codec import PositionCodec

from lsp_server.positions import LineIndex, to_offset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """One version of one document.

    `edit_end` is where the text inserted by the change that made this version ends
    (where a typist's cursor is), or None for an opened or wholly replaced document.
    """

    uri: str
    version: int
    language_id: str
    text: str
    edit_end: int | None = None
    lines: LineIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", LineIndex(self.text))


class DocumentStore:
    """The open documents, newest snapshot per uri."""

    def __init__(self) -> None:
        self._docs: dict[str, Snapshot] = {}

    def open(self, uri: str, language_id: str, version: int, text: str) -> Snapshot:
        """Record a newly opened document."""
        snap = Snapshot(uri, version, language_id, text)
        self._docs[uri] = snap
        return snap

    def change(
        self,
        uri: str,
        version: int,
        changes: Sequence[types.TextDocumentContentChangeEvent],
        codec: PositionCodec,
    ) -> Snapshot | None:
        """Apply content changes in order; None if the document is not open.

        Ranges past the end of a line or of the document are clamped to that end, as
        editors do, and logged: the document stays usable rather than being lost.
        """
        snap = self._docs.get(uri)
        if snap is None:
            log.warning("didChange for a document that is not open: %s", uri)
            return None
        text, lines, edit_end = snap.text, snap.lines, None
        for n, change in enumerate(changes):
            if (
                n
            ):  # positions of a later change refer to the text after the earlier ones
                lines = LineIndex(text)
            if isinstance(change, types.TextDocumentContentChangePartial):
                start = to_offset(lines, change.range.start, codec, clamp=True)
                end = to_offset(lines, change.range.end, codec, clamp=True)
                if end < start:
                    start, end = end, start
                text = text[:start] + change.text + text[end:]
                edit_end = start + len(change.text)
            else:
                text, edit_end = change.text, None
        # indexes the final text
        snap = Snapshot(uri, version, snap.language_id, text, edit_end)
        self._docs[uri] = snap
        return snap

    def close(self, uri: str) -> None:
        """Forget a closed document."""
        self._docs.pop(uri, None)

    def get(self, uri: str) -> Snapshot | None:
        """The newest snapshot, or None if the document is not open."""
        return self._docs.get(uri)

    def snapshots(self) -> list[Snapshot]:
        """The newest snapshot of every open document."""
        return list(self._docs.values())

    def __len__(self) -> int:
        return len(self._docs)
