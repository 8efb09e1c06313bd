"""Results become LSP items and edits here, in pure functions.

Inline items keep their range on one line (the spec requires it) and carry multi-line
text in `insertText`. Rewrites and hole fills are `WorkspaceEdit`s pinned to the
document version they were computed for, so a client refuses them once the text moved
on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lsprotocol import types
from pygls.workspace.position_codec import PositionCodec

from lsp_server.context import InfillContext
from lsp_server.documents import Snapshot
from lsp_server.positions import to_position, to_range

LABEL_CHARS = 60


def to_inline_items(
    snap: Snapshot, ctx: InfillContext, text: str, codec: PositionCodec
) -> types.InlineCompletionList:
    """Ghost text at the cursor: an empty range on the cursor's line."""
    if not text:
        return types.InlineCompletionList(items=[])
    at = to_position(snap.lines, ctx.start, codec)
    item = types.InlineCompletionItem(insert_text=text, range=types.Range(at, at))
    return types.InlineCompletionList(items=[item])


def to_completion_items(
    snap: Snapshot, ctx: InfillContext, text: str, codec: PositionCodec
) -> types.CompletionList:
    """One completion item whose `textEdit` inserts the text at the cursor."""
    if not text:
        return types.CompletionList(is_incomplete=True, items=[])
    at = to_position(snap.lines, ctx.start, codec)
    first = text.split("\n", 1)[0]
    label = first if len(first) <= LABEL_CHARS else first[: LABEL_CHARS - 1] + "…"
    item = types.CompletionItem(
        label=label or text.strip().split("\n", 1)[0][:LABEL_CHARS],
        kind=types.CompletionItemKind.Snippet,
        detail="infill",
        documentation=types.MarkupContent(
            kind=types.MarkupKind.Markdown, value=f"```\n{text}\n```"
        ),
        text_edit=types.TextEdit(range=types.Range(at, at), new_text=text),
        insert_text_format=types.InsertTextFormat.PlainText,
        sort_text="0",
        filter_text=snap.text[snap.lines.starts[at.line] : ctx.start].lstrip() + first,
    )
    return types.CompletionList(is_incomplete=True, items=[item])


def replacement(
    snap: Snapshot, spans: Sequence[tuple[int, int, str]], codec: PositionCodec
) -> types.WorkspaceEdit:
    """Replace each [start, end) of this snapshot, valid only for its version."""
    edits = [
        types.TextEdit(range=to_range(snap.lines, start, end, codec), new_text=text)
        for start, end, text in spans
    ]
    doc = types.OptionalVersionedTextDocumentIdentifier(
        uri=snap.uri, version=snap.version
    )
    return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(doc, edits)])


def text_edits(
    snap: Snapshot, spans: Sequence[tuple[int, int, str]], codec: PositionCodec
) -> list[types.TextEdit]:
    """Plain text edits (for willSaveWaitUntil, which is tied to the saved version)."""
    return [
        types.TextEdit(range=to_range(snap.lines, start, end, codec), new_text=text)
        for start, end, text in spans
    ]


@dataclass(frozen=True)
class LastSuggestion:
    """The suggestion last shown in a document, to serve typed-through requests."""

    line: int
    line_prefix: str
    text: str


def continue_suggestion(
    last: LastSuggestion | None, line: int, line_prefix: str
) -> str | None:
    """The rest of the last suggestion if the user typed its first characters."""
    if (
        last is None
        or line != last.line
        or not line_prefix.startswith(last.line_prefix)
    ):
        return None
    typed = line_prefix[len(last.line_prefix) :]
    if not typed or not last.text.startswith(typed) or len(typed) >= len(last.text):
        return None
    return last.text[len(typed) :]
