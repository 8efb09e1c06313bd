"""When ghost text that nobody asked for stays quiet.

Editors ask for an inline suggestion after every keystroke (an *automatic* request);
the user asks for one with a key (an *invoked* request, or any completion request).
Only automatic requests are gated here; an invoked one always gets an answer:

- inside a comment or a string (`inCommentsAndStrings` false, the default): prose and
  literals are where a code model helps least and distracts most;
- when the text after the cursor on its line is longer than `maxLineSuffix`
  characters (trailing spaces not counted): the cursor sits in the middle of code
  already written, where a suggestion would only push it right.

Per-language enabling (`languages`, `disabledLanguages`) is `Settings.serves`, for
every request. Languages without a grammar cannot tell comments and strings apart and
are gated on the line's rest alone.
"""

from __future__ import annotations

import tree_sitter as ts

from lsp_server.documents import Snapshot
from lsp_server.positions import byte_offset
from lsp_server.settings import Settings

# Block comments the cursor is past once it stands after their closing mark.
_BLOCK_CLOSERS = ("*/", "-->", "-}", "]]")


def quiet(
    settings: Settings, snap: Snapshot, offset: int, tree: ts.Tree | None
) -> str | None:
    """Why an automatic suggestion at `offset` stays quiet, or None if it may answer."""
    line = snap.lines.line_of(offset)
    rest = snap.text[offset : snap.lines.ends[line]].rstrip()
    if len(rest) > settings.max_line_suffix:
        return (
            f"the rest of the line is {len(rest)} characters "
            f"(maxLineSuffix {settings.max_line_suffix})"
        )
    if not settings.in_comments_and_strings and tree is not None:
        inside = comment_or_string(tree, snap.text, offset)
        if inside:
            return f"the cursor is in a {inside}"
    return None


def comment_or_string(tree: ts.Tree, text: str, offset: int) -> str | None:
    """'comment' or 'string' if the cursor at `offset` is inside one, else None.

    The cursor is inside a string when it stands between its quotes, and inside a
    comment from just after its opening mark to its end; at the end of a line comment
    it is still inside it (what it types next joins the comment), past a block
    comment's closing mark it is not.
    """
    at = byte_offset(text, offset)
    if at == 0:
        return None
    node = tree.root_node.descendant_for_byte_range(at - 1, at)
    while node is not None:
        kind = node.type
        if "comment" in kind and node.start_byte < at <= node.end_byte:
            body = node.text.decode("utf-8", "replace") if node.text else ""
            if at < node.end_byte or not body.rstrip().endswith(_BLOCK_CLOSERS):
                return "comment"
        if _is_string(kind) and node.start_byte < at < node.end_byte:
            return "string"
        node = node.parent
    return None


def _is_string(kind: str) -> bool:
    # Grammars name them string, string_literal, template_string, raw_string_literal,
    # interpreted_string_literal, ...; `string_content` and friends sit inside them.
    return "string" in kind and not kind.endswith(("_start", "_end"))
