"""A small LSP client (pygls's) that drives a real `infill-lsp` process over stdio.

The end-to-end tests and `infill bench` use it; it records what the server sends
(messages, `infill/status`, progress, applyEdit requests).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

CAPABILITIES = types.ClientCapabilities(
    general=types.GeneralClientCapabilities(
        position_encodings=[types.PositionEncodingKind.Utf16]
    ),
    window=types.WindowClientCapabilities(work_done_progress=True),
    workspace=types.WorkspaceClientCapabilities(
        apply_edit=True,
        workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True),
        did_change_configuration=types.DidChangeConfigurationClientCapabilities(),
    ),
    text_document=types.TextDocumentClientCapabilities(
        synchronization=types.TextDocumentSyncClientCapabilities(
            will_save_wait_until=True
        ),
        inline_completion=types.InlineCompletionClientCapabilities(),
        completion=types.CompletionClientCapabilities(),
        code_action=types.CodeActionClientCapabilities(
            resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"]),
            data_support=True,
        ),
    ),
)


class Session:
    """One server process and the client talking to it, recording what the server
    sends."""

    def __init__(self) -> None:
        self.client = LanguageClient("infill-tests", "1")
        self.messages: list[types.ShowMessageParams] = []
        self.statuses: list[dict[str, Any]] = []
        self.progress: list[Any] = []
        self.applied: list[types.ApplyWorkspaceEditParams] = []
        self.stderr: list[str] = []
        self.versions: dict[str, int] = {}
        c = self.client

        @c.feature(types.WINDOW_SHOW_MESSAGE)
        def show(params):
            self.messages.append(params)

        @c.feature("infill/status")
        def status(params):
            self.statuses.append(
                params if isinstance(params, dict) else params._asdict()
            )

        @c.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def create(params):
            return None

        @c.feature(types.PROGRESS)
        def progress(params):
            self.progress.append(params.value)

        @c.feature(types.WORKSPACE_APPLY_EDIT)
        def apply(params):
            self.applied.append(params)
            return types.ApplyWorkspaceEditResult(applied=True)

    async def start(
        self,
        *args: str,
        options: Any = None,
        program: Sequence[str] = ("-m", "lsp_server"),
        folders: Sequence[str] = (),
    ) -> types.InitializeResult:
        """Start `python -m lsp_server ARGS` (or `python PROGRAM ARGS`) and initialize
        it, with workspace `folders` (uris) if given."""
        await self.client.start_io(sys.executable, *program, *args)
        self._drain = asyncio.create_task(self._read_stderr())
        result = await self.client.initialize_async(
            types.InitializeParams(
                capabilities=CAPABILITIES,
                initialization_options=options,
                process_id=None,
                workspace_folders=[
                    types.WorkspaceFolder(uri=uri, name=uri.rsplit("/", 1)[-1])
                    for uri in folders
                ]
                or None,
            )
        )
        self.client.initialized(types.InitializedParams())
        return result

    @classmethod
    async def ready(
        cls, model: str, device: str, options: Any = None, folders: Sequence[str] = ()
    ) -> Session:
        """A started server (model "": the default) whose model has finished loading,
        with workspace `folders` (uris) if given."""
        session = cls()
        extra = ["--model", model] if model else []
        await session.start(
            *extra, "--device", device, options=options, folders=folders
        )
        await session.wait_status("ready", timeout=300)
        return session

    async def _read_stderr(self) -> None:
        server = self.client._server
        assert server is not None and server.stderr is not None
        while line := await server.stderr.readline():
            self.stderr.append(line.decode(errors="replace"))

    async def wait_status(self, state: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for an `infill/status` with this state."""
        for _ in range(int(timeout * 20)):
            for status in self.statuses:
                if status.get("state") == state:
                    return status
            await asyncio.sleep(0.05)
        raise AssertionError(f"no status {state!r}; got {self.statuses}")

    def open(self, uri: str, text: str, language: str = "python") -> None:
        self.versions[uri] = 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                types.TextDocumentItem(
                    uri=uri, language_id=language, version=1, text=text
                )
            )
        )

    def change(self, uri: str, rng: types.Range | None, text: str) -> None:
        self.versions[uri] += 1
        change: Any = (
            types.TextDocumentContentChangePartial(range=rng, text=text)
            if rng is not None
            else types.TextDocumentContentChangeWholeDocument(text=text)
        )
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(
                    uri=uri, version=self.versions[uri]
                ),
                [change],
            )
        )

    async def inline(self, uri: str, line: int, character: int, invoked: bool = False):
        """textDocument/inlineCompletion, automatic (as after a keystroke) unless
        `invoked` (as when the user asks for one)."""
        kind = types.InlineCompletionTriggerKind
        return await self.client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=line, character=character),
                context=types.InlineCompletionContext(
                    trigger_kind=kind.Invoked if invoked else kind.Automatic
                ),
            )
        )

    async def command(self, name: str, *args: Any) -> Any:
        """workspace/executeCommand."""
        return await self.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=list(args))
        )

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.client.shutdown_async(None), 10)
            self.client.exit(None)
        finally:
            await asyncio.wait_for(self.client.stop(), 10)
