"""Faults a real process cannot be made to have: an engine that raises or runs out of
memory, requests while the model is still loading, a fill that goes stale while a
request waits on it; and what the server hands the engine and reports of its answers.
The server is built in-process with create_server and its request path is called
directly."""

import asyncio

import pytest
import torch
from pygls.workspace.position_codec import PositionCodec

from infill_engine import InfillEngine
from infill_engine.model.device import resolve
from lsp_server import context
from lsp_server.positions import to_position
from lsp_server.server import EarlyFill, InfillServer, create_server


class FlakyEngine(InfillEngine):
    """The tiny engine, made to fail the way a real one can, a set number of times."""

    def __init__(self, model, tokenizer, error: BaseException, failures: int = 1):
        super().__init__(model, tokenizer, resolve("cpu"), span_lengths=(8,))
        self.error, self.failures = error, failures

    def fill(self, request, cancel=None, on_step=None):
        if self.failures:
            self.failures -= 1
            raise self.error
        return super().fill(request, cancel, on_step)


def falling_back(engine_class, model, tokenizer):
    """An engine of `engine_class` whose model falls back on the parse check, as the
    default model's `infill.json` says."""
    from infill_engine.core.config import DenoiseConfig

    config = DenoiseConfig(fallback_alternatives=4)
    return engine_class(
        model, tokenizer, resolve("cpu"), config=config, span_lengths=(8,)
    )


def prepared(engine):
    server = create_server(engine=engine)
    shown = []
    server.show = lambda kind, message: shown.append(message)
    server.notify_status = lambda: None
    snap = server.store.open("file:///a.py", "python", 1, "def f(x):\n    return \n")
    ctx = context.at_cursor(snap, snap.text.index("return ") + 7, None)
    return server, snap, ctx, shown


@pytest.mark.parametrize(
    "error",
    [RuntimeError("kernel failed"), torch.OutOfMemoryError("CUDA out of memory")],
)
async def test_a_failing_request_answers_empty_and_the_next_one_works(
    tiny_model, tiny_tokenizer, error
):
    server, snap, ctx, shown = prepared(FlakyEngine(tiny_model, tiny_tokenizer, error))
    assert await server.infill(snap, ctx, key=snap.uri) is None
    assert isinstance(await server.infill(snap, ctx, key=snap.uri), str)
    if isinstance(error, torch.OutOfMemoryError):
        assert len(shown) == 1 and "out of GPU memory" in shown[0]
    server.scheduler.close()


async def test_oom_is_reported_once(tiny_model, tiny_tokenizer):
    engine = FlakyEngine(tiny_model, tiny_tokenizer, torch.OutOfMemoryError("oom"), 3)
    server, snap, ctx, shown = prepared(engine)
    for _ in range(3):
        assert await server.infill(snap, ctx, key=snap.uri) is None
    assert len(shown) == 1
    server.scheduler.close()


async def test_requests_while_the_model_loads_answer_empty_at_once():
    server, snap, ctx, _ = prepared(None)
    server.state = "loading"
    assert await asyncio.wait_for(server.infill(snap, ctx, key=snap.uri), 1) is None
    server.scheduler.close()


async def test_a_result_for_an_older_version_is_dropped(tiny_model, tiny_tokenizer):
    engine = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"), span_lengths=(8,))
    server, snap, ctx, _ = prepared(engine)
    real_fill = engine.fill

    def fill_then_user_types(request, cancel=None, on_step=None):
        result = real_fill(request, cancel, on_step)
        server.store.open(snap.uri, "python", 2, snap.text + "#")  # typed meanwhile
        return result

    engine.fill = fill_then_user_types
    assert await server.infill(snap, ctx, key=snap.uri) is None
    server.scheduler.close()


async def test_candidates_are_parse_checked_only_when_there_are_several(
    tiny_model, tiny_tokenizer
):
    seen = []

    class Recording(InfillEngine):
        def fill(self, request, cancel=None, on_step=None):
            seen.append(request)
            return super().fill(request, cancel, on_step)

    engine = Recording(tiny_model, tiny_tokenizer, resolve("cpu"))
    server, snap, line, _ = prepared(engine)
    hole = context.for_hole(snap, context.Hole(0, 0, ""), None)
    assert len(line.span_lengths) == 1 and len(hole.span_lengths) == 2
    for ctx in (line, hole):
        assert isinstance(await server.infill(snap, ctx, key=snap.uri), str)
    assert seen[0].validate is None  # one candidate: nothing to rank
    assert not seen[1].validate("(((")  # a fill that breaks the syntax ranks last
    server.scheduler.close()


async def test_the_status_names_the_version_the_engine_answered(
    tiny_model, tiny_tokenizer
):
    engine = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"), span_lengths=(8,))
    server, snap, ctx, _ = prepared(engine)
    assert isinstance(await server.infill(snap, ctx, key=snap.uri), str)
    last = server.status()["last"]
    assert (last["uri"], last["version"]) == (snap.uri, 1)
    server.scheduler.close()


async def test_a_request_whose_early_fill_went_stale_leaves_the_status_alone(
    tiny_model, tiny_tokenizer, monkeypatch
):
    # No client initialised this server: give it the default position encoding.
    monkeypatch.setattr(InfillServer, "codec", PositionCodec())
    engine = InfillEngine(tiny_model, tiny_tokenizer, resolve("cpu"), span_lengths=(8,))
    server, snap, ctx, _ = prepared(engine)
    await server.infill(snap, ctx, key=snap.uri)
    before = server.status()
    stale = asyncio.get_running_loop().create_future()
    server.early[snap.uri] = EarlyFill(snap.version, ctx.start, stale)
    position = to_position(snap.lines, ctx.start, server.codec)
    waiting = asyncio.ensure_future(server.suggest(snap.uri, position))
    await asyncio.sleep(0.05)
    stale.set_result(None)  # superseded by a newer change: it answers nothing
    assert await waiting is None
    assert server.status() == before
    server.scheduler.close()


async def test_only_a_line_at_the_end_of_its_line_falls_back_on_the_parse_check(
    tiny_model, tiny_tokenizer
):
    """The model's `fallback_alternatives` reaches the engine, with the check, for a
    single-line fill with nothing after the cursor on its line; mid-line, for a
    block and for an unseen edit it is turned off and nothing is checked."""
    seen = []

    class Recording(InfillEngine):
        def fill(self, request, cancel=None, on_step=None):
            seen.append(request)
            return super().fill(request, cancel, on_step)

    server, *_ = prepared(falling_back(Recording, tiny_model, tiny_tokenizer))
    text = "def f(x):\n    y = x + 1\n    return y\n\n\nclass A:\n"
    snap = server.store.open("file:///a.py", "python", 1, text)
    at_end = context.at_cursor(snap, text.index("x + 1") + 5, None)
    mid_line = context.at_cursor(snap, text.index("x + 1"), None)
    block = context.at_cursor(snap, len(text), None)
    assert at_end.single_line and mid_line.single_line and not block.single_line
    for ctx in (at_end, mid_line, block):
        await server.infill(snap, ctx, key=snap.uri)
    await server.fill_span(snap, at_end, snap.uri, must_parse=True)
    fallbacks = [r.config.fallback_alternatives for r in seen]
    assert fallbacks == [4, 1, 1, 1]
    assert seen[0].validate is not None and not seen[0].validate("(((")
    assert all(r.validate is None for r in seen[1:])
    server.scheduler.close()


async def test_a_line_end_shows_no_line_that_leaves_its_statement_broken(
    tiny_model, tiny_tokenizer
):
    """At a line end (where the model falls back on the parse check) a candidate
    that leaves its line broken is not shown, and the first that passes is; mid-line,
    where nothing is checked, the engine's first candidate is shown as it was."""
    from infill_engine.engine import Candidate, InfillResult, Timings

    lines: list[tuple[str, ...]] = []

    class Fixed(InfillEngine):
        def fill(self, request, cancel=None, on_step=None):
            texts = lines[-1]
            rows = [
                Candidate(t, 8, 0.0, True, False, 2, i) for i, t in enumerate(texts)
            ]
            return InfillResult.best_of(rows, 1, Timings())

    server, *_ = prepared(falling_back(Fixed, tiny_model, tiny_tokenizer))
    text = "def f(x):\n    y = x + \n    return y\n"  # being typed
    snap = server.store.open("file:///a.py", "python", 1, text)
    at_end = context.at_cursor(snap, text.index("x + ") + 4, None)  # `y = x + |`
    mid_line = context.at_cursor(snap, text.index("x + "), None)  # `y = |x + `
    lines.append(("2 +",))
    assert await server.infill(snap, at_end, key=snap.uri) == ""
    lines.append(("2 +", "[", "2"))
    assert await server.infill(snap, at_end, key=snap.uri) == "2"
    lines.append(("2 +",))
    assert await server.infill(snap, mid_line, key=snap.uri) == "2 +"
    server.scheduler.close()
