import asyncio
import threading

from lsp_server.edits import LastSuggestion, continue_suggestion
from lsp_server.scheduler import Scheduler
from lsp_server.settings import Settings, parse


def test_settings_accept_both_shapes_and_report_bad_values():
    s, problems = parse({"infill": {"maxSteps": 12, "holeMarker": "TODO-FILL"}})
    assert (s.max_steps, s.hole_marker, problems) == (12, "TODO-FILL", [])
    s, problems = parse({"maxSteps": "x", "device": "tpu", "enable": 1, "bogus": 2})
    assert (s.max_steps, s.device, s.enable) == (0, "auto", True)
    assert len(problems) == 4 and any("infill.bogus" in p for p in problems)
    assert parse({"infill": []}) == (Settings(), [])  # Neovim's empty table
    assert parse([]) == (Settings(), [])
    s, problems = parse([1, 2])
    assert s == Settings() and "must be an object" in problems[0]


def test_languages_gate_suggestions():
    s, _ = parse({"languages": ["python"]})
    assert s.serves("python") and not s.serves("go")
    assert Settings().serves("anything")
    assert not parse({"enable": False})[0].serves("python")


def test_typing_the_start_of_the_suggestion_serves_the_rest():
    last = LastSuggestion(line=3, line_prefix="    x = ", text="compute(a, b)")
    assert continue_suggestion(last, 3, "    x = comp") == "ute(a, b)"
    assert continue_suggestion(last, 3, "    x = cx") is None
    assert continue_suggestion(last, 4, "    x = comp") is None
    assert continue_suggestion(last, 3, "    x = compute(a, b)") is None
    assert continue_suggestion(None, 3, "x") is None


async def test_newest_job_per_key_wins_and_older_returns_within_a_step():
    scheduler = Scheduler()
    started = threading.Event()
    steps = []

    def slow(stale):
        started.set()
        for i in range(500):
            if stale():
                steps.append(i)
                return "cancelled"
            threading.Event().wait(0.002)
        return "finished"

    first = asyncio.ensure_future(scheduler.run("doc", slow))
    while not started.is_set():
        await asyncio.sleep(0.001)
    second = asyncio.ensure_future(scheduler.run("doc", lambda stale: "second"))
    assert await first is None and await second == "second"
    assert steps and steps[0] < 500 and scheduler.superseded == 1
    assert await scheduler.run("other", lambda stale: 7) == 7
    scheduler.close()


async def test_cancelling_the_awaiting_task_sets_the_flag():
    scheduler = Scheduler()
    seen = threading.Event()

    def job(stale):
        while not stale():
            threading.Event().wait(0.002)
        seen.set()

    task = asyncio.ensure_future(scheduler.run("doc", job))
    await asyncio.sleep(0.05)
    task.cancel()
    for _ in range(200):
        if seen.is_set():
            break
        await asyncio.sleep(0.01)
    assert seen.is_set()
    scheduler.close()


async def test_an_early_fill_serves_its_place_unless_it_ended_empty():
    from lsp_server.server import EarlyFill

    loop = asyncio.get_running_loop()
    running = EarlyFill(3, 10, loop.create_future())
    assert running.serves(3, 10)
    assert not running.serves(4, 10) and not running.serves(3, 11)
    done, empty, cancelled = (loop.create_future() for _ in range(3))
    done.set_result("x = 1")
    empty.set_result(None)  # superseded by a request elsewhere
    cancelled.cancel()
    assert EarlyFill(3, 10, done).serves(3, 10)
    assert not EarlyFill(3, 10, empty).serves(3, 10)
    assert not EarlyFill(3, 10, cancelled).serves(3, 10)
