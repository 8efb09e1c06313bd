"""Results become LSP items and edits here, in pure functions.

Inline items keep their range on one line (the spec requires it) and carry multi-line
text in `insertText`. Rewrites and hole fills are `WorkspaceEdit`s pinned to the
document version they were computed for, so a client refuses them once the text moved
on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from lsprotocol import types
from pygls.workspace.position_codec import PositionCodec

from lsp_server.context import InfillContext
from lsp_server.documents import Snapshot
from lsp_server.positions import to_position, to_range

_SNIPPET_SPECIAL = re.compile(r"[\\$}]")


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
    snap: Snapshot,
    ctx: InfillContext,
    text: str,
    codec: PositionCodec,
    snippets: bool = False,
) -> types.CompletionList:
    """One completion item whose `textEdit` inserts the text at the cursor.

    A client that takes snippets (`snippetSupport`) gets one, escaped so that it
    inserts the text literally and whole: Neovim's `vim.lsp.completion` puts a plain
    text item's first word (0.11) or line (0.12) in the buffer and nothing more. Such
    clients indent the lines after the first like the cursor's line, so those lines go
    without that indentation, up to the first that starts left of it. Other clients get
    the text as it is, to insert as it is.
    """
    if snippets:
        text = within_indent(text, ctx.indent)
    if not text:
        return types.CompletionList(is_incomplete=True, items=[])
    at = to_position(snap.lines, ctx.start, codec)
    first = text.split("\n", 1)[0]
    if snippets:
        new_text = snippet_text(dedent_after_first(text, ctx.indent))
        text_format, mode = (
            types.InsertTextFormat.Snippet,
            types.InsertTextMode.AdjustIndentation,
        )
    else:
        new_text = text
        text_format, mode = types.InsertTextFormat.PlainText, types.InsertTextMode.AsIs
    item = types.CompletionItem(
        # whole, never shortened: Neovim inserts a snippet's label until the snippet
        # expands, and for good where nothing expands it (0.11's omnifunc without
        # vim.lsp.completion); menus shorten long labels themselves
        label=first or text.strip().split("\n", 1)[0],
        kind=types.CompletionItemKind.Snippet,
        detail="infill",
        documentation=types.MarkupContent(
            kind=types.MarkupKind.Markdown, value=f"```\n{text}\n```"
        ),
        text_edit=types.TextEdit(range=types.Range(at, at), new_text=new_text),
        insert_text_format=text_format,
        insert_text_mode=mode,
        sort_text="0",
        filter_text=snap.text[snap.lines.starts[at.line] : ctx.start].lstrip() + first,
    )
    return types.CompletionList(is_incomplete=True, items=[item])


def snippet_text(text: str) -> str:
    """`text` as an LSP snippet that inserts it literally: `\\`, `$` and `}` escaped."""
    return _SNIPPET_SPECIAL.sub(r"\\\g<0>", text)


def within_indent(text: str, indent: str) -> str:
    """`text` up to its first later line that starts left of `indent` (blank lines
    kept only between lines that stay)."""
    lines = text.split("\n")
    kept = lines[:1]
    for line in lines[1:]:
        if _blank(line) or line.startswith(indent):
            kept.append(line)
        else:
            break
    while len(kept) > 1 and _blank(kept[-1]):
        kept.pop()
    return "\n".join(kept)


def dedent_after_first(text: str, indent: str) -> str:
    """The lines after the first without `indent`, which all but blank ones start
    with; blank lines become empty."""
    lines = text.split("\n")
    rest = ["" if _blank(line) else line.removeprefix(indent) for line in lines[1:]]
    return "\n".join(lines[:1] + rest)


def _blank(line: str) -> bool:
    return not line.strip(" \t")


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

    def typed(self, text: str, starts: Sequence[int], offset: int) -> str | None:
        """What stands between where this suggestion was shown and `offset` in a
        document's `text` (its line starts `starts`), or None if the text before that
        place changed or `offset` is before it."""
        if self.line >= len(starts):
            return None
        start = starts[self.line]
        anchor = start + len(self.line_prefix)
        if offset < anchor or text[start:anchor] != self.line_prefix:
            return None
        return text[anchor:offset]


def continue_suggestion(last: LastSuggestion | None, typed: str | None) -> str | None:
    """The rest of the last suggestion if the user typed (or accepted a word or a
    line of) its first characters, `typed`; None once it is all there."""
    if (
        last is None
        or not typed
        or not last.text.startswith(typed)
        or len(typed) >= len(last.text)
    ):
        return None
    return last.text[len(typed) :]
