"""Live terminal view of the canvas while it denoises (`infill fill --visual`).

Pinned tokens are dim, tokens accepted at the current step bright, noise shown as '░'
blocks, and end-of-span slots as '·'. On a terminal each step redraws the previous
frame;
elsewhere one status line per step is written.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from infill_engine.canvas import CanvasBatch
from infill_engine.loop import StepView

DIM, BRIGHT, NOISE, RESET = "\x1b[2m", "\x1b[1;32m", "\x1b[2;35m", "\x1b[0m"


class CanvasView:
    """A per-step callback that draws row `row` of the canvas batch.

    Args:
        tokenizer: turns single token ids into text.
        batch: the canvas batch being denoised.
        end_ids: end-of-span token ids.
        stream: where to draw (stderr by default, so stdout stays the middle alone).
        row: which canvas row (span length) to draw.
    """

    def __init__(
        self,
        tokenizer: Any,
        batch: CanvasBatch,
        end_ids: set[int],
        stream: TextIO | None = None,
        row: int = -1,
    ) -> None:
        self.tokenizer = tokenizer
        self.batch = batch
        self.end_ids = end_ids
        self.stream = stream or sys.stderr
        self.row = row if row >= 0 else len(batch.span_lengths) - 1
        self.live = self.stream.isatty()
        self._lines = 0

    def __call__(self, view: StepView) -> None:
        """Draw the canvas after one step."""
        accepted = int(view.accepted[self.row].sum())
        header = (
            f"step {view.index}/{view.max_steps}  accepted {accepted}  "
            f"span {self.batch.span_lengths[self.row]}"
        )
        if not self.live:
            self.stream.write(header + "\n")
            return
        frame = header + "\n" + self.render(view) + "\n"
        if self._lines:
            self.stream.write(f"\x1b[{self._lines}F\x1b[J")
        self.stream.write(frame)
        self.stream.flush()
        self._lines = frame.count("\n")

    def render(self, view: StepView) -> str:
        """The row as coloured text: pinned dim, accepted bright, noise as blocks."""
        ids = view.canvas[self.row].tolist()
        pinned = view.pinned[self.row].tolist()
        accepted = view.accepted[self.row].tolist()
        argmax = view.argmax[self.row].tolist()
        parts = []
        for pos, token in enumerate(ids):
            if pinned[pos]:
                text = self.tokenizer.decode([token], skip_special_tokens=True)
                parts.append(DIM + text + RESET)
            elif argmax[pos] in self.end_ids and accepted[pos]:
                parts.append(DIM + "·" + RESET)
            elif accepted[pos]:
                parts.append(BRIGHT + self.tokenizer.decode([token]) + RESET)
            else:
                parts.append(NOISE + "░" + RESET)
        return "".join(parts)
