"""Fuzz the real server process through a real client: random documents, edits and
positions, thousands of requests. The server must answer every request, never print a
traceback, and keep its copy of each document identical to the client's: checked by
fill-on-save, whose edits must land exactly on the hole comments of the client's
text."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lsprotocol import types
from pygls.workspace.position_codec import PositionCodec

from lsp_server import context
from lsp_server.documents import DocumentStore, Snapshot
from lsp_server.positions import to_range
from lsp_server.tools.client import Session

UTF16 = PositionCodec(types.PositionEncodingKind.Utf16)
PIECES = [
    "x = 1",
    "\n",
    "    ",
    "def f(a):",
    "# <fill>",
    "# <fill> hint",
    "(",
    ")",
    "😀",
    "é",
    "\r\n",
    "\x00",
    "return a",
    " ",
    "'s'",
    "{",
    "}",
]
texts = st.lists(st.sampled_from(PIECES), max_size=25).map("".join)
positions = st.builds(
    types.Position, line=st.integers(0, 8), character=st.integers(0, 30)
)
ops = st.one_of(
    st.tuples(st.just("change"), st.integers(0, 2), positions, positions, texts),
    st.tuples(st.just("inline"), st.integers(0, 2), positions),
    st.tuples(st.just("completion"), st.integers(0, 2), positions),
    st.tuples(st.just("action"), st.integers(0, 2), positions, positions),
    st.tuples(st.just("save"), st.integers(0, 2)),
    st.tuples(st.just("reopen"), st.integers(0, 2), texts),
)
LANGS = ["python", "python", "zig"]


class Fuzzer:
    def __init__(self, session: Session):
        self.s = session
        self.mirror = DocumentStore()  # the client's copy, same change rules
        self.requests = 0
        self.rewrites = 0  # resolved rewrites that carried an edit

    def uri(self, i: int) -> str:
        return f"file:///fuzz/{i}.{'py' if LANGS[i] == 'python' else 'zig'}"

    async def op(self, op) -> None:
        kind, i = op[0], op[1]
        uri = self.uri(i)
        if self.mirror.get(uri) is None or kind == "reopen":
            text = op[2] if kind == "reopen" else ""
            self.s.client.text_document_did_close(
                types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri))
            ) if self.mirror.get(uri) else None
            self.mirror.open(uri, LANGS[i], 1, text)
            self.s.open(uri, text, LANGS[i])
            return
        doc = types.TextDocumentIdentifier(uri=uri)
        self.requests += 1
        if kind == "change":
            start, end, text = op[2], op[3], op[4]
            rng = types.Range(start, end)
            version = self.mirror.get(uri).version + 1
            change = types.TextDocumentContentChangePartial(range=rng, text=text)
            self.mirror.change(uri, version, [change], UTF16)
            self.s.versions[uri] = version - 1
            self.s.change(uri, rng, text)
        elif kind == "inline":
            result = await self.s.inline(uri, op[2].line, op[2].character)
            for item in result.items:
                assert item.range.start.line == item.range.end.line == op[2].line
        elif kind == "completion":
            await self.s.client.text_document_completion_async(
                types.CompletionParams(text_document=doc, position=op[2])
            )
        elif kind == "action":
            rng = types.Range(op[2], op[3])
            actions = await self.s.client.text_document_code_action_async(
                types.CodeActionParams(doc, rng, types.CodeActionContext([]))
            )
            for action in actions or ():
                if action.title.startswith("Rewrite"):
                    await self.check_rewrite(action, rng)
        elif kind == "save":
            edits = await self.s.client.text_document_will_save_wait_until_async(
                types.WillSaveTextDocumentParams(
                    doc, types.TextDocumentSaveReason.Manual
                )
            )
            snap: Snapshot = self.mirror.get(uri)
            holes = context.find_holes(snap, None, "<fill>")
            allowed = [to_range(snap.lines, h.start, h.end, UTF16) for h in holes]
            for edit in edits or ():
                assert edit.range in allowed, (snap.text, edit)

    async def check_rewrite(self, action: types.CodeAction, rng: types.Range) -> None:
        """A resolved rewrite replaces exactly the selection, at the current version."""
        resolved = await self.s.client.code_action_resolve_async(action)
        if resolved.edit is None:
            return
        change = resolved.edit.document_changes[0]
        snap = self.mirror.get(change.text_document.uri)
        assert change.text_document.version == snap.version
        assert [e.range for e in change.edits] == [rng]
        self.rewrites += 1


def test_fuzz_thousands_of_requests(tiny_model_dir):
    loop = asyncio.new_event_loop()
    session = Session()
    options = {"maxSteps": 1, "spanSize": 4, "saveDeadlineMs": 3000, "languages": ["*"]}
    loop.run_until_complete(
        session.start(
            "--model", str(tiny_model_dir), "--device", "cpu", options=options
        )
    )
    loop.run_until_complete(session.wait_status("ready"))
    fuzzer = Fuzzer(session)

    @settings(
        max_examples=320,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,  # the same examples every run: CI stays reproducible
    )
    @given(st.lists(ops, min_size=8, max_size=20))
    def run(sequence):
        for op in sequence:
            loop.run_until_complete(asyncio.wait_for(fuzzer.op(op), 30))

    try:
        run()
        assert fuzzer.requests >= 2000, fuzzer.requests
        assert fuzzer.rewrites > 0, "no rewrite carried an edit: that check went unused"
        alive = loop.run_until_complete(session.command("infill.status"))
        assert alive["state"] == "ready"
    finally:
        loop.run_until_complete(session.stop())
        loop.close()
    assert not any("Traceback" in line for line in session.stderr), "".join(
        session.stderr
    )
