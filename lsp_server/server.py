"""The language server: state on `InfillServer`, thin handlers built by `create_server`.

Each handler takes its params to a frozen snapshot, calls pure functions (context,
postprocess, edits) and the engine through the scheduler, and returns lsprotocol
results. A change to a document also starts work on the suggestion at its end, which
the editor asks for a little later (`InfillServer.prepare`). Nothing here raises to the
client for bad input: an empty result and a log line.

The engine's modules (and with them torch and transformers, seconds to import) are
imported where a model is loaded or asked, never at the top: the server answers
`initialize` at once and loads the model in the background.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from lsprotocol.converters import get_converter
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from infill_engine.backends.urls import parse_backend
from lsp_server import VERSION, context, crossfile, edits, gate, postprocess, settings
from lsp_server.context import InfillContext
from lsp_server.documents import DocumentStore, Snapshot
from lsp_server.positions import PositionError, to_offset
from lsp_server.scheduler import Scheduler
from lsp_server.syntax import SyntaxTrees

if TYPE_CHECKING:
    from infill_engine.engine import InfillEngine

log = logging.getLogger(__name__)
STATUS_NOTIFICATION = "infill/status"
CMD_REWRITE = "infill.rewriteSelection"
CMD_FILL_HOLES = "infill.fillHoles"
CMD_STATUS = "infill.status"
EngineFactory = Callable[[settings.Settings], "InfillEngine"]


def load_engine(s: settings.Settings) -> InfillEngine:
    """The default factory: the configured checkpoint, or the default model; or the
    remote backend `infill.backend` names, which answers the same calls."""
    from infill_engine.engine import InfillEngine

    if parse_backend(s.backend) is not None:
        from infill_engine.backends import connect as backends

        return backends.connect(s.backend)  # type: ignore[return-value]
    return InfillEngine.load(s.model or None, s.device)


class _ClientGoneWriter:
    """Ends the process quietly once the client has gone (a broken or closed pipe).

    Some clients quit without waiting for the reply to `shutdown`; nothing is left to
    answer then, and pygls would log a traceback for every message it still tries to
    send.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def write(self, data: bytes) -> Any:
        try:
            return self.inner.write(data)
        except (BrokenPipeError, ConnectionResetError, ValueError) as exc:
            if isinstance(exc, ValueError) and "closed" not in str(exc):
                raise
            log.info("client went away (%s); exiting", type(exc).__name__)
            logging.shutdown()
            os._exit(0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class InfillProtocol(LanguageServerProtocol):
    """Document sync goes to the server's own store, and nowhere else.

    pygls's built-in handlers keep a second copy of every document, and while applying a
    change its position codec clamps out-of-range positions by writing into the
    request's
    `Position` objects, so the server's handler would then see another range than the
    client sent and the two copies of the document would drift apart.
    """

    def set_writer(self, writer: Any, include_headers: bool = True) -> None:
        """Every transport gets the client-gone check."""
        super().set_writer(_ClientGoneWriter(writer), include_headers)

    def _to_user(self, method: str, params: Any):
        if (handler := self.fm.features.get(method)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        """Only the server's own store records the document."""
        yield from self._to_user(types.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        """Changes reach the server's handler exactly as the client sent them."""
        yield from self._to_user(types.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        """Only the server's own store forgets the document."""
        yield from self._to_user(types.TEXT_DOCUMENT_DID_CLOSE, params)


@dataclasses.dataclass(frozen=True)
class Fill:
    """The server's answer for one span: `text` to insert, or '' and `why` not."""

    text: str
    why: str = ""


@dataclasses.dataclass(frozen=True)
class HoleFills:
    """A buffer's hole fills: the edits, and how many holes were left as they were
    (the user has been told why)."""

    spans: list[tuple[int, int, str]]
    left: int = 0


@dataclasses.dataclass(frozen=True)
class EarlyFill:
    """A suggestion started when a change arrived: for `offset` in `version`."""

    version: int
    offset: int
    task: asyncio.Future
    ahead: bool = False  # computed before the change, for the text it made (`Ahead`)

    def serves(self, version: int, offset: int) -> bool:
        """Whether a request at `offset` of `version` can take this fill over: the
        same place, and not already ended without a result (superseded by a request
        elsewhere, say)."""
        if (self.version, self.offset) != (version, offset):
            return False
        task = self.task
        return not task.done() or (not task.cancelled() and task.result() is not None)


@dataclasses.dataclass(frozen=True)
class Ahead:
    """The next line's suggestion, computed while the one shown waits to be accepted:
    for the document `text` that accepting it makes, the cursor at `offset`."""

    text: str
    offset: int
    task: asyncio.Future


class InfillServer(LanguageServer):
    """All mutable server state lives here.

    Args:
        engine: an engine to use as is (tests pass a tiny one); None loads one.
        engine_factory: builds the engine from settings when it must be (re)loaded.
        base: settings before the client's own (from the command line).
    """

    def __init__(
        self,
        engine: InfillEngine | None = None,
        engine_factory: EngineFactory = load_engine,
        base: settings.Settings | None = None,
    ) -> None:
        super().__init__("infill-lsp", VERSION, protocol_cls=InfillProtocol)
        self.store = DocumentStore()
        self.trees = SyntaxTrees()
        self.settings = base or settings.Settings()
        self.base_model = self.settings.model  # from the command line
        self.engine = engine
        self.engine_factory = engine_factory
        self.state = "ready" if engine else "idle"
        self.state_message = ""
        self.scheduler = Scheduler()
        self.last: dict[str, edits.LastSuggestion] = {}
        self.last_latency_ms: float | None = None
        self.last_timings: dict[str, Any] = {}
        self._oom_reported = False
        self._backend_down: str | None = None  # why a remote backend stopped answering
        self._loader: asyncio.Task | None = None
        self._background: set[asyncio.Future] = set()
        # Documents the client asks inline suggestions for, and each one's suggestion
        # started at its last change (see `prepare`).
        self.asks: set[str] = set()
        self.early: dict[str, EarlyFill] = {}
        # Per document, the next line's suggestion computed ahead (`look_ahead`), and
        # the timings of the fill behind it.
        self.ahead: dict[str, Ahead] = {}
        self.ahead_timings: dict[str, dict[str, Any]] = {}
        self.crossfile = crossfile.CrossFile()

    @property
    def codec(self):
        """The negotiated position codec (UTF-16 unless the client chose another)."""
        return self.workspace.position_codec

    # -- settings and model ---------------------------------------------------------

    def apply_settings(self, raw: Any) -> bool:
        """Validate and apply client settings; True if the model must be reloaded."""
        new, problems = settings.parse(raw, self.settings)
        if not new.model:  # editors send every setting; "" means "no preference"
            new = dataclasses.replace(new, model=self.base_model)
        for problem in problems:
            self.show(types.MessageType.Warning, problem)
        where = lambda s: (s.model, s.device, s.backend)  # noqa: E731
        reload = where(new) != where(self.settings)
        self.settings = new
        return reload

    def start_loading(self) -> None:
        """Load (or reload) the engine in the background, reporting progress."""
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        self.scheduler.cancel_all()
        self._loader = asyncio.ensure_future(self._load())

    async def _load(self) -> None:
        token = str(uuid.uuid4())
        progress = self._progress_supported()
        self.engine, self.state = None, "loading"
        self.notify_status()
        try:
            progress = progress and await self._begin_progress(token)
            engine = await asyncio.get_running_loop().run_in_executor(
                None, self.engine_factory, self.settings
            )
            self.engine, self.state, self.state_message = engine, "ready", ""
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a model that fails to load must not take the server
            self.state, self.state_message = "error", str(exc)
            self.show(types.MessageType.Error, f"infill: model failed to load: {exc}")
        finally:
            if progress:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd())
            self.notify_status()

    async def _begin_progress(self, token: str) -> bool:
        """Start a work-done progress; False (and no progress) if the client refuses."""
        try:
            await self.work_done_progress.create_async(token)
        except Exception as exc:  # progress is a nicety: never fail a load over it
            log.info("client refused work-done progress: %s", exc)
            return False
        self.work_done_progress.begin(
            token, types.WorkDoneProgressBegin(title="infill: loading model")
        )
        return True

    def _progress_supported(self) -> bool:
        window = self.client_capabilities.window
        return bool(window and window.work_done_progress)

    def takes_snippets(self) -> bool:
        """Whether the client's completion items may be snippets (`snippetSupport`)."""
        text_document = self.client_capabilities.text_document
        completion = text_document and text_document.completion
        item = completion and completion.completion_item
        return bool(item and item.snippet_support)

    def status(self) -> dict[str, Any]:
        """Model state for clients' status bars."""
        engine = self.engine
        return {
            "state": self.state,
            "message": self.state_message,
            "model": self.settings.model or "default",
            "device": engine.placement.describe() if engine else self.settings.device,
            "latencyMs": self.last_latency_ms,
            "last": self.last_timings,
        }

    def backend_down(self, reason: str | None) -> None:
        """A remote backend stopped answering (`reason`) or answers again (None): say
        so once each way; suggestions answer empty meanwhile, the editor keeps
        working."""
        if reason is None:
            self._backend_down, self.state, self.state_message = None, "ready", ""
            self.show(types.MessageType.Info, "infill: the backend answers again")
        elif self._backend_down is None:
            self._backend_down, self.state = reason, "error"
            self.state_message = f"backend unreachable: {reason}"
            self.show(
                types.MessageType.Error,
                f"infill: the backend stopped answering ({reason}); suggestions are "
                "empty until it is back",
            )
        else:
            return
        self.notify_status()

    def notify_status(self) -> None:
        """Send `infill/status` to the client."""
        self.protocol.notify(STATUS_NOTIFICATION, self.status())

    def show(self, kind: types.MessageType, message: str) -> None:
        """window/showMessage plus a log line."""
        log.warning(message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    # -- requests -------------------------------------------------------------------

    def snapshot(self, uri: str) -> Snapshot | None:
        """The newest snapshot of an open document, or None (logged)."""
        snap = self.store.get(uri)
        if snap is None:
            log.info("request for a document that is not open: %s", uri)
        return snap

    def offset(self, snap: Snapshot, position: types.Position) -> int | None:
        """String offset of a client position, or None if it is not in the document."""
        try:
            return to_offset(snap.lines, position, self.codec)
        except PositionError as exc:
            log.info("bad position in %s: %s", snap.uri, exc)
            return None

    async def suggest(
        self, uri: str, position: types.Position, automatic: bool = False
    ) -> tuple[Snapshot, InfillContext, str] | None:
        """A suggestion at the cursor: typed-through if possible, else from the
        engine. An `automatic` request (one the user did not ask for) may stay quiet
        (`gate`)."""
        snap = self.snapshot(uri)
        if snap is None or not self.settings.serves(snap.language_id):
            return None
        offset = self.offset(snap, position)
        if offset is None:
            return None
        if automatic and (why := self.quiet(snap, offset)):
            log.debug("no automatic suggestion in %s: %s", uri, why)
            return None
        line_prefix = snap.text[snap.lines.starts[position.line] : offset]
        rest = self.typed_through(snap, offset)
        ctx = self.context_at(snap, offset)
        if rest is not None:
            return snap, ctx, rest
        early = self.early.get(uri)
        if early is not None and early.serves(snap.version, offset):
            # Started when the change arrived; shielded, as a second request for the
            # same place may be waiting on it too.
            began = time.perf_counter()
            text = await asyncio.shield(early.task)
            if text is not None:
                # What this request waited, not the whole job (the status bar shows
                # it). A fill that went stale answered nothing: it reports nothing.
                self.last_latency_ms = (time.perf_counter() - began) * 1000
                if early.ahead:  # the engine's figures, for the version it now serves
                    self.last_timings = self.ahead_timings.pop(uri, {}) | {
                        "version": snap.version,
                        "startedAhead": True,
                    }
                self.last_timings = self.last_timings | {
                    "serverMs": self.last_latency_ms,
                    "startedAtChange": True,
                }
        else:
            text = await self.infill(snap, ctx, key=uri)
        if text:
            self.last[uri] = edits.LastSuggestion(position.line, line_prefix, text)
            self.look_ahead(snap, offset, text)
        return (snap, ctx, text) if text is not None else None

    def look_ahead(self, snap: Snapshot, offset: int, text: str) -> None:
        """Start on the next line's suggestion as if `text`, shown at `offset`, were
        accepted, so that it is ready when it is: only for a one-line suggestion that
        ends its line. Any other engine job cancels it (`Scheduler`); `prepare` hands
        it to the request after the accept."""
        before = self.ahead.pop(snap.uri, None)
        line_end = snap.lines.ends[snap.lines.line_of(offset)]
        if (
            not self.settings.next_suggestion
            or self.engine is None
            or "\n" in text.lstrip("\n")
            or snap.text[offset:line_end].strip()
        ):
            return
        accepted = snap.text[:offset] + text + snap.text[offset:]
        at = offset + len(text)
        if before is not None and (before.text, before.offset) == (accepted, at):
            self.ahead[snap.uri] = before  # typed through: the same text, still on
            return
        future = Snapshot(snap.uri, snap.version, snap.language_id, accepted)
        # No syntax tree for a text that is not the document's yet: line-based context.
        ctx = context.next_line(future, at, None, self.settings.span_size)
        key = f"ahead:{snap.uri}"
        task = asyncio.ensure_future(self.infill(future, ctx, key, ahead=True))
        self.ahead[snap.uri] = Ahead(accepted, at, task)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def typed_through(self, snap: Snapshot, offset: int) -> str | None:
        """The rest of the document's last suggestion if the text before `offset`
        has typed through its start (else None)."""
        last = self.last.get(snap.uri)
        typed = (
            None if last is None else last.typed(snap.text, snap.lines.starts, offset)
        )
        return edits.continue_suggestion(last, typed)

    def refresh_folders(self) -> None:
        """The workspace folders the client named (its root if it named none): the
        only places cross-file context is read from."""
        folders = [f.uri for f in self.workspace.folders.values()]
        if not folders and self.workspace.root_uri:
            folders = [self.workspace.root_uri]
        self.crossfile.set_folders(folders)

    def cross_context(self, snap: Snapshot, ctx: InfillContext) -> Callable[[], str]:
        """What reads the cross-file context of a fill, to call on the engine's
        thread (it may read files): '' with `crossFile` off. The syntax tree and
        the open documents are taken here, on the event loop."""
        s = self.settings
        if not s.cross_file or not s.cross_file_tokens or not s.cross_file_sources:
            return lambda: ""
        tree = self.trees.tree(snap)
        texts = {}
        for open_snap in self.store.snapshots():
            path = crossfile.path_of(open_snap.uri)
            if path is not None:
                texts[path] = open_snap.text
        budget = s.cross_file_tokens * 4  # characters; the engine counts tokens
        sources = s.cross_file_sources

        def read() -> str:
            try:
                return self.crossfile.context(
                    snap, ctx.start, tree, budget, sources, texts
                )
            except Exception:  # context is a help: a fill never fails for it
                log.exception("cross-file context for %s", snap.uri)
                return ""

        return read

    def quiet(self, snap: Snapshot, offset: int) -> str | None:
        """Why an automatic suggestion at `offset` stays quiet, or None."""
        return gate.quiet(self.settings, snap, offset, self.trees.tree(snap))

    def context_at(self, snap: Snapshot, offset: int) -> InfillContext:
        """The infill context of a cursor at `offset`: the next line's, right after
        a suggestion that ends a line was accepted there (`just_accepted`)."""
        tree, size = self.trees.tree(snap), self.settings.span_size
        if self.settings.next_suggestion and self.just_accepted(snap, offset):
            return context.next_line(snap, offset, tree, size)
        return context.at_cursor(snap, offset, tree, size)

    def just_accepted(self, snap: Snapshot, offset: int) -> bool:
        """Whether the text before `offset` is the document's last suggestion, whole,
        where it was shown, with nothing but spaces after it on its line."""
        last = self.last.get(snap.uri)
        if last is None or not last.text:
            return False
        line_end = snap.lines.ends[snap.lines.line_of(offset)]
        return (
            last.typed(snap.text, snap.lines.starts, offset) == last.text
            and not snap.text[offset:line_end].strip()
        )

    def prepare(self, snap: Snapshot) -> None:
        """After an edit, before the editor asks for a suggestion at it: start on it.

        Editors ask for an inline suggestion a little after the keystroke (VS Code
        waits about 50 ms). Once the client has asked for inline suggestions in a
        document, the suggestion at the edit's end is computed from the change on, and
        the request for that place and version awaits it (`early`); before that, only
        its prompt is prefilled, so the first request finds it encoded. Queued under
        the document's key, either also stops the document's running request, whose
        result is for the older version and would be dropped.
        """
        engine, offset = self.engine, snap.edit_end
        if (
            engine is None
            or offset is None
            or not self.settings.serves(snap.language_id)
            or self.quiet(snap, offset)
        ):
            return
        if self.typed_through(snap, offset) is not None:
            return  # typed through the last suggestion: no engine needed
        ahead = self.ahead.pop(snap.uri, None)
        if ahead is not None and (ahead.text, ahead.offset) == (snap.text, offset):
            # the suggestion was accepted: the next line's is on its way already
            self.early[snap.uri] = EarlyFill(snap.version, offset, ahead.task, True)
            return
        ctx = self.context_at(snap, offset)
        if snap.uri in self.asks:
            fill = asyncio.ensure_future(self.infill(snap, ctx, key=snap.uri))
            self.early[snap.uri] = EarlyFill(snap.version, offset, fill)
            task: asyncio.Future = fill
        else:
            from infill_engine.engine import InfillRequest  # loaded with the engine

            request = InfillRequest(
                ctx.prefix,
                ctx.suffix,
                span_lengths=ctx.span_lengths,
                single_line=ctx.single_line,
            )
            read_context = self.cross_context(snap, ctx)
            tokens = self.settings.cross_file_tokens

            def warm(stale: Callable[[], bool]) -> int:
                extra = read_context()  # the same prompt the fill will have
                full = request
                if extra:
                    full = dataclasses.replace(
                        request, context=extra, context_tokens=tokens
                    )
                return engine.warm(full, stale)

            job = self.scheduler.run(snap.uri, warm)
            task = asyncio.ensure_future(_logged(job, f"prefill for {snap.uri}"))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def infill(
        self, snap: Snapshot, ctx: InfillContext, key: str, ahead: bool = False
    ) -> str | None:
        """Run the engine for one context; None if stale, cancelled, failed or no
        model. An `ahead` fill is for a text the document does not hold yet: no newer
        version makes it stale, any other engine job does."""
        fill = await self.fill_span(snap, ctx, key, ahead=ahead)
        if fill is None:
            return None
        return ctx.header + fill.text if fill.text else ""

    async def fill_span(
        self,
        snap: Snapshot,
        ctx: InfillContext,
        key: str,
        must_parse: bool = False,
        ahead: bool = False,
    ) -> Fill | None:
        """`infill`, with `must_parse` for an edit that lands unseen: the best candidate
        that parses in place, or no text and why none does."""
        engine = self.engine
        if engine is None:
            return None
        from infill_engine.engine import InfillRequest  # loaded with the engine

        line_end = falls_back(ctx, must_parse)
        config = engine.config.with_overrides(
            max_steps=self.settings.max_steps or None,
            fallback_alternatives=None if line_end else 1,
        )
        fallback = config.fallback_alternatives > config.alternatives
        check = None
        if (len(ctx.span_lengths) > 1 and not must_parse) or fallback:
            check = postprocess.validator(snap.language_id, ctx, line_end=fallback)
        read_context = self.cross_context(snap, ctx)
        request = InfillRequest(
            ctx.prefix,
            ctx.suffix,
            span_lengths=ctx.span_lengths,
            config=config,
            single_line=ctx.single_line,
            # The parse check ranks candidates (one span length: one candidate; an
            # unseen edit checks every candidate, `parsing_fill`), and a floor fill
            # that fails it tries the first slot's next-best tokens.
            validate=check,
        )
        started = time.perf_counter()
        began: list[float] = []  # when the worker took the job (after queued work)
        cross_chars: list[int] = []  # the cross-file context it read

        def job(stale: Callable[[], bool]) -> Any:
            began.append(time.perf_counter())
            extra = read_context()
            cross_chars.append(len(extra))
            full = request
            if extra:
                full = dataclasses.replace(
                    request,
                    context=extra,
                    context_tokens=self.settings.cross_file_tokens,
                )
            return engine.fill(full, stale)

        try:
            result = await self.scheduler.run(key, job, background=ahead)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the engine failing answers this request empty
            if _backend_failed(exc):
                self.backend_down(str(exc))
                return None
            if not _out_of_memory(exc):
                log.exception("engine failed on %s", snap.uri)
                return None
            # Free what the failed request held; tell the user once, keep serving.
            torch = sys.modules["torch"]
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if not self._oom_reported:
                self._oom_reported = True
                self.show(
                    types.MessageType.Error,
                    "infill: out of GPU memory; suggestions answer empty. Set "
                    "infill.device to cpu, choose a smaller model, or free GPU memory.",
                )
            return None
        if result is not None and not result.cancelled and self._backend_down:
            self.backend_down(None)  # it answered: say so once
        current = self.store.get(snap.uri)
        if result is None or result.cancelled or current is None:
            return None
        if current.version != snap.version and not ahead:
            return None  # computed for an older version: drop it
        finished = time.perf_counter()
        raw = [c.text for c in result.candidates] or [result.text]
        if must_parse:
            fill = Fill(*postprocess.parsing_fill(snap.language_id, ctx, raw))
        elif fallback and check is not None:
            fill = Fill(postprocess.line_end_fill(check, ctx, raw))
        else:
            fill = Fill(postprocess.clean(ctx, result.text))
        done = time.perf_counter()
        timings = {
            # Which document version the engine answered: a request answered without
            # it (typed through a suggestion) leaves an older one here.
            "uri": snap.uri,
            "version": snap.version,
            "kind": ctx.kind,
            "steps": result.steps,
            "tokensPerForward": result.tokens_per_forward,
            "spanLength": result.span_length,
            "tokenizeMs": result.timings.tokenize_ms,
            "prefillMs": result.timings.prefill_ms,
            "denoiseMs": result.timings.denoise_ms,
            "prefilledTokens": result.prefilled_tokens,
            "queueMs": (began[0] - started) * 1000 if began else 0.0,
            "decodeMs": result.timings.decode_ms,
            "postprocessMs": (done - finished) * 1000,
            "serverMs": (done - started) * 1000,
            "crossFileChars": cross_chars[0] if cross_chars else 0,
        }
        if ahead:  # reported when a request takes it (`suggest`)
            self.ahead_timings[snap.uri] = timings
            return fill
        self.last_latency_ms, self.last_timings = timings["serverMs"], timings
        self.notify_status()
        return fill

    async def fill_holes(self, snap: Snapshot) -> HoleFills | None:
        """Fill every hole marker of a snapshot in one job; None if it went stale.

        The user sees these edits only once they have landed, so each must parse where
        it lands: a hole no candidate fills that way is left as it was, and the user is
        told why (`report_left`).
        """
        tree = self.trees.tree(snap)
        holes = context.find_holes(snap, tree, self.settings.hole_marker)
        spans, left = [], []
        for hole in holes:
            ctx = context.for_hole(snap, hole, tree, self.settings.span_size)
            key = f"holes:{snap.uri}:{hole.start}"
            fill = await self.fill_span(snap, ctx, key, must_parse=True)
            if fill is None:
                return None
            if fill.text:
                spans.append((hole.start, hole.end, ctx.header + fill.text))
            else:
                left.append((snap.lines.line_of(hole.start) + 1, fill.why))
        if left:
            self.report_left(left)
        return HoleFills(spans, len(left))

    def report_left(self, left: list[tuple[int, str]]) -> None:
        """One line on the holes left as they were, given as (1-based line, why): a
        message, and the `message` of an `infill/status`."""
        rows = ", ".join(str(line) for line, _ in left)
        why = "; ".join(dict.fromkeys(reason for _, reason in left))
        if len(left) == 1:
            message = f"infill: the hole on line {rows} is left as it was: {why}"
        else:
            message = (
                f"infill: {len(left)} holes (lines {rows}) are left as they were: {why}"
            )
        self.show(types.MessageType.Warning, message)
        self.protocol.notify(STATUS_NOTIFICATION, self.status() | {"message": message})

    async def rewrite(
        self, snap: Snapshot, rng: types.Range
    ) -> types.WorkspaceEdit | None:
        """Re-denoise the selected range with everything around it pinned."""
        start, end = self.offset(snap, rng.start), self.offset(snap, rng.end)
        if start is None or end is None or end <= start:
            return None
        ctx = context.for_range(
            snap, start, end, self.trees.tree(snap), self.settings.span_size
        )
        text = await self.infill(snap, ctx, key=f"rewrite:{snap.uri}")
        if not text:
            log.info("rewrite of %s produced no usable text", snap.uri)
            return None
        return edits.replacement(snap, [(start, end, text)], self.codec)

    def apply_later(self, snap: Snapshot, job: asyncio.Future) -> None:
        """When a fill that missed the save deadline ends, apply it if still current."""

        def done(fut: asyncio.Future) -> None:
            self._background.discard(fut)
            fills = None if fut.cancelled() or fut.exception() else fut.result()
            spans = fills.spans if fills else []
            current = self.store.get(snap.uri)
            if not spans or current is None or current.version != snap.version:
                return
            edit = edits.replacement(snap, spans, self.codec)
            self.workspace_apply_edit(
                types.ApplyWorkspaceEditParams(edit=edit, label="infill")
            )

        self._background.add(job)
        job.add_done_callback(done)


def falls_back(ctx: InfillContext, must_parse: bool = False) -> bool:
    """Whether a fill for `ctx` may fall back on the parse check (the model's
    `fallback_alternatives`): a line with nothing after the cursor on its line, where
    it was measured (held-out line holes: no exact line lost, 0.7-8.7 points more
    fills that parse). There the check is the line-end one, and a line that leaves
    its statement broken is not shown (`postprocess.line_end_fill`). Elsewhere it is
    off: through the server (`infill bench`, 2-core CPU) it made mid-line fills 35 %
    slower at p50 and block fills 4 times slower at p95, with more empty answers in
    both, and an unseen edit has a deadline."""
    return (
        ctx.single_line and not must_parse and not ctx.suffix.split("\n", 1)[0].strip()
    )


def _backend_failed(exc: BaseException) -> bool:
    """Whether `exc` is a remote backend's failure (`wire.BackendError`)."""
    wire = sys.modules.get("infill_engine.backends.wire")
    return wire is not None and isinstance(exc, wire.BackendError)


def _out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is torch's out-of-memory error (never, if torch is not loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)


async def _logged(job: Any, what: str) -> None:
    """Await a background job; a failure is logged, never raised."""
    try:
        await job
    except asyncio.CancelledError:
        raise
    except Exception:  # background work must never take a handler down
        log.exception("%s failed", what)


def create_server(
    engine: InfillEngine | None = None,
    engine_factory: EngineFactory = load_engine,
    base: settings.Settings | None = None,
) -> InfillServer:
    """Build the server and register its handlers."""
    server = InfillServer(engine, engine_factory, base)
    converter = get_converter()

    @server.feature(types.INITIALIZE)
    def initialize(ls: InfillServer, params: types.InitializeParams) -> None:
        ls.apply_settings(params.initialization_options)

    @server.feature(types.INITIALIZED)
    def initialized(ls: InfillServer, params: types.InitializedParams) -> None:
        ls.refresh_folders()
        if ls.engine is None:
            ls.start_loading()
        else:
            ls.notify_status()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: InfillServer, params) -> None:
        if ls.apply_settings(params.settings):
            ls.start_loading()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: InfillServer, params: types.DidOpenTextDocumentParams) -> None:
        doc = params.text_document
        snap = ls.store.open(doc.uri, doc.language_id, doc.version, doc.text)
        ls.crossfile.saw(snap, None)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: InfillServer, params: types.DidChangeTextDocumentParams) -> None:
        doc = params.text_document
        snap = ls.store.change(doc.uri, doc.version, params.content_changes, ls.codec)
        if snap is not None:
            ls.crossfile.saw(snap, snap.edit_end)
            ls.prepare(snap)

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    def did_change_folders(ls: InfillServer, params) -> None:
        ls.refresh_folders()

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: InfillServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.store.close(params.text_document.uri)
        ls.trees.forget(params.text_document.uri)
        ls.last.pop(params.text_document.uri, None)
        ls.asks.discard(params.text_document.uri)
        ls.early.pop(params.text_document.uri, None)
        ls.ahead.pop(params.text_document.uri, None)
        ls.ahead_timings.pop(params.text_document.uri, None)

    @server.feature(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions()
    )
    async def inline_completion(ls: InfillServer, params: types.InlineCompletionParams):
        # An editor that asks for ghost text asks after every keystroke: from now on
        # the suggestion starts at the change (completion items are asked for only now
        # and then, so they do not count).
        ls.asks.add(params.text_document.uri)
        automatic = (
            params.context is None
            or params.context.trigger_kind
            == types.InlineCompletionTriggerKind.Automatic
        )
        found = await ls.suggest(params.text_document.uri, params.position, automatic)
        if found is None:
            return types.InlineCompletionList(items=[])
        return edits.to_inline_items(*found, ls.codec)

    # No trigger characters: a suggestion is asked for, never typed into. With them,
    # Neovim's completion autotrigger (and its default 'completeopt' "menu,popup")
    # inserted the lone item on `.` or `(` without a menu: `prices.get(` became
    # `prices.itemsget(`. Clients without ghost text ask with their completion key.
    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions())
    async def completion(ls: InfillServer, params: types.CompletionParams):
        found = await ls.suggest(params.text_document.uri, params.position)
        if found is None:
            return types.CompletionList(is_incomplete=True, items=[])
        return edits.to_completion_items(*found, ls.codec, snippets=ls.takes_snippets())

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(
            code_action_kinds=[types.CodeActionKind.RefactorRewrite],
            resolve_provider=True,
        ),
    )
    def code_action(ls: InfillServer, params: types.CodeActionParams):
        snap = ls.snapshot(params.text_document.uri)
        if snap is None or ls.engine is None:
            return []
        return _list_actions(ls, snap, params.range)

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def code_action_resolve(ls: InfillServer, action: types.CodeAction):
        data = action.data if isinstance(action.data, dict) else {}
        snap = ls.snapshot(str(data.get("uri", "")))
        if snap is None or snap.version != data.get("version"):
            return action  # the document moved on: no edit rather than a wrong one
        if data.get("kind") == "holes":
            fills = await ls.fill_holes(snap)
            spans = fills.spans if fills else None
            action.edit = edits.replacement(snap, spans, ls.codec) if spans else None
        else:
            rng = converter.structure(data.get("range"), types.Range)
            action.edit = await ls.rewrite(snap, rng)
        return action

    @server.command(CMD_REWRITE)
    async def rewrite_selection(ls: InfillServer, uri: str, rng: dict):
        snap = ls.snapshot(uri)
        edit = (
            await ls.rewrite(snap, converter.structure(rng, types.Range))
            if snap
            else None
        )
        if edit is None:
            return {"applied": False}
        result = await ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=edit)
        )
        return {"applied": bool(result and result.applied)}

    @server.command(CMD_FILL_HOLES)
    async def fill_holes(ls: InfillServer, uri: str):
        # `left`: holes left as they were, already said (window/showMessage), so a
        # client need not say that nothing was filled
        snap = ls.snapshot(uri)
        fills = await ls.fill_holes(snap) if snap else None
        if snap is None or fills is None or not fills.spans:
            return {"applied": False, "holes": 0, "left": fills.left if fills else 0}
        edit = edits.replacement(snap, fills.spans, ls.codec)
        result = await ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=edit)
        )
        applied = bool(result and result.applied)
        return {"applied": applied, "holes": len(fills.spans), "left": fills.left}

    @server.command(CMD_STATUS)
    def status(ls: InfillServer, *args):
        return ls.status()

    @server.feature(types.TEXT_DOCUMENT_WILL_SAVE_WAIT_UNTIL)
    async def will_save_wait_until(
        ls: InfillServer, params: types.WillSaveTextDocumentParams
    ):
        snap = ls.snapshot(params.text_document.uri)
        if snap is None or ls.engine is None or not ls.settings.fill_on_save:
            return []
        if params.reason != types.TextDocumentSaveReason.Manual:
            return []  # auto-save after a delay must not fill a half-typed hint
        if not context.find_holes(snap, None, ls.settings.hole_marker):
            return []
        job = asyncio.ensure_future(ls.fill_holes(snap))
        done, _ = await asyncio.wait({job}, timeout=ls.settings.save_deadline_ms / 1000)
        if job in done and not job.exception():
            fills = job.result()
            return edits.text_edits(snap, fills.spans if fills else [], ls.codec)
        ls.apply_later(snap, job)  # the save goes through untouched; fill right after
        return []

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: InfillServer, *args) -> None:
        ls.scheduler.close()

    @server.feature(types.EXIT)
    def exit_(ls: InfillServer, *args) -> None:
        # pygls's own exit raises SystemExit inside a handler and then fails to report
        # it on the closed stream; end here instead, engine work in flight included.
        logging.shutdown()
        os._exit(0 if ls.protocol._shutdown else 1)

    return server


def _list_actions(
    ls: InfillServer, snap: Snapshot, rng: types.Range
) -> list[types.CodeAction]:
    """Rewrite for a non-empty selection, fill for hole markers; no model work here."""
    actions = []
    base = {"uri": snap.uri, "version": snap.version}
    if rng.start != rng.end:
        actions.append(
            types.CodeAction(
                title="Rewrite selection (infill)",
                kind=types.CodeActionKind.RefactorRewrite,
                data=base
                | {"kind": "rewrite", "range": get_converter().unstructure(rng)},
            )
        )
    if context.find_holes(snap, None, ls.settings.hole_marker):
        actions.append(
            types.CodeAction(
                title="Fill holes (infill)",
                kind=types.CodeActionKind.RefactorRewrite,
                data=base | {"kind": "holes"},
            )
        )
    return actions
