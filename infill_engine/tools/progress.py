"""A progress bar per phase of a long measurement, on stderr (tqdm), so that stdout
keeps only the results. Hidden when stderr is not a terminal, as in CI logs."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class Phases:
    """One bar at a time: `start` ends the last phase's bar and opens the next."""

    def __init__(self, unit: str = " step") -> None:
        self.unit = unit
        self.bar: Any = None

    def start(self, name: str, total: int | None = None) -> None:
        """Open the bar of phase `name`, of `total` steps (None: counted as they go)."""
        self.close()
        self.bar = tqdm(
            total=total, desc=name, unit=self.unit, file=sys.stderr, disable=None
        )

    def step(self, n: int = 1) -> None:
        """`n` more steps of the current phase are done."""
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        """End the current bar, filled if its phase had a total."""
        if self.bar is not None:
            if self.bar.total is not None and self.bar.n < self.bar.total:
                self.bar.update(self.bar.total - self.bar.n)
            self.bar.close()
            self.bar = None
