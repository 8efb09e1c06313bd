"""`infill-lsp` with a scripted engine: every request gets the same candidates.

    python tests/scripted_server.py '["try", "return xs[0]"]' [DELAY_S]

The real server, protocol and post-processing, in a real process; only the model's
answer is fixed, so what the server does with a given answer can be checked exactly.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

from infill_engine.core.config import DenoiseConfig
from infill_engine.engine import Candidate, InfillResult
from lsp_server.server import create_server


class ScriptedPlacement:
    """What the status reports as the device."""

    def describe(self) -> str:
        return "scripted"


class ScriptedEngine:
    """Answers every fill with `texts` as its candidates, ranked as the engine ranks:
    those the request's check accepts first, else in the given order. A text
    `{context}` answers with the paths the request's cross-file context names (its
    comment headers), space-separated."""

    def __init__(self, texts: list[str], delay_s: float = 0.0) -> None:
        self.texts, self.delay_s = texts, delay_s
        self.config = DenoiseConfig()
        self.placement = ScriptedPlacement()

    def fill(self, request: Any, cancel: Any = None, on_step: Any = None) -> Any:
        time.sleep(self.delay_s)
        check = request.validate or (lambda text: True)
        headers = re.findall(r"^(?:#|//) (\S+\.\w+)$", request.context, re.MULTILINE)
        paths = " ".join(headers)
        texts = [paths if t == "{context}" else t for t in self.texts]
        candidates = sorted(
            (Candidate(text, 16, 0.9, True, bool(check(text)), 4) for text in texts),
            key=lambda c: c.valid,
            reverse=True,
        )
        best = candidates[0]
        return InfillResult(best.text, False, 1, 4.0, 16, 0.9, tuple(candidates))

    def warm(self, request: Any, cancel: Any = None) -> int:
        return 0


if __name__ == "__main__":
    texts = json.loads(sys.argv[1])
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    create_server(engine=ScriptedEngine(texts, delay)).start_io()  # type: ignore[arg-type]
