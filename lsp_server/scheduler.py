"""Engine jobs run off the event loop; the newest job per document wins.

One worker thread owns the model (it is resident once). Submitting a job for a key sets
the cancel flag of the job before it with the same key, which the denoising loop checks
between steps, so a stale request returns within one step. A `background` job (work
done ahead of a request, in case it comes) is cancelled by any job submitted after it.
`$/cancelRequest` cancels the awaiting task; the flag is set then too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
Job = Callable[[Callable[[], bool]], T]


class Scheduler:
    """Runs jobs on one worker thread, newest per key."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="infill-engine"
        )
        self._current: dict[str, threading.Event] = {}
        self._background: set[threading.Event] = set()
        self.superseded = (
            0  # jobs cancelled because a newer one came, for the load test
        )

    async def run(self, key: str, job: Job[T], background: bool = False) -> T | None:
        """Run `job(is_cancelled)` on the worker; None if a newer job for `key` won
        (or, for a `background` job, any newer job).

        Args:
            key: what "newest wins" is counted per (a document uri, say).
            job: called with a function that returns True once the job is stale.
            background: work ahead of need, which any later job cancels.
        """
        for flag in self._background:
            flag.set()
        self._background.clear()
        previous = self._current.get(key)
        if previous is not None:
            previous.set()
            self.superseded += 1
        flag = threading.Event()
        self._current[key] = flag
        if background:
            self._background.add(flag)

        def work() -> T | None:
            return None if flag.is_set() else job(flag.is_set)

        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self._executor, work
            )
        except asyncio.CancelledError:
            flag.set()
            raise
        finally:
            if self._current.get(key) is flag:
                del self._current[key]
            self._background.discard(flag)
        return None if flag.is_set() else result

    def cancel_all(self) -> None:
        """Mark every pending and running job stale (shutdown, model reload)."""
        for flag in self._current.values():
            flag.set()

    def close(self) -> None:
        """Stop taking jobs; the running one ends at its next step."""
        self.cancel_all()
        self._executor.shutdown(wait=False, cancel_futures=True)
