"""The concurrency benchmark's bookkeeping, on engines whose timing is known."""

from __future__ import annotations

import threading
import time

from infill_engine.engine import InfillResult
from infill_engine.tools import concurrency
from lsp_server.context import SPAN_LENGTHS


class OneAtATime:
    """Answers after `delay` s, one request at a time (as one shared engine does);
    every third request fails, and answers alternate between text and empty."""

    def __init__(self, delay: float, fail_every: int = 0) -> None:
        self.delay, self.fail_every = delay, fail_every
        self.lock, self.calls = threading.Lock(), 0

    def fill(self, request):
        with self.lock:
            self.calls += 1
            calls = self.calls
            time.sleep(self.delay)
        if self.fail_every and calls % self.fail_every == 0:
            raise ConnectionError("backend gone")
        return InfillResult("x" if calls % 2 else " ", False, 1, 1.0, 16, 1.0)


def test_a_shared_engine_queues_clients_and_the_table_says_so():
    rows = concurrency.measure({"one": OneAtATime(0.05)}, [1, 4], per_client=2)
    single, four = rows
    assert (single["clients"], four["clients"]) == (1, 4)
    assert four["answered"] == four["requests"] == 8 and four["errors"] == 0
    assert four["empty"] == 4  # every other answer is blank: counted, not timed apart
    assert four["p95_vs_fewest"] > 2.5  # four waiting on one engine
    assert 10 < four["throughput_rps"] < 25  # one request per 50 ms at best
    assert "| one | 4 | 8/8 | 0 | 4 |" in concurrency.table(rows)


def test_failures_are_errors_not_latencies():
    row = concurrency.run(
        OneAtATime(0.0, fail_every=3), 2, 3, concurrency.line_requests(6)
    )
    assert row["errors"] == 2 and row["answered"] == 4


def test_holes_are_the_same_every_run_and_one_line_each():
    first, again = concurrency.line_requests(12), concurrency.line_requests(12)
    assert [(r.prefix, r.suffix) for r in first] == [
        (r.prefix, r.suffix) for r in again
    ]
    # what the language server asks for at a line
    assert all(r.span_lengths == SPAN_LENGTHS["line"] for r in first)
    assert concurrency.percentile([5.0, 1.0, 3.0], 0.5) == 3.0
