"""Live terminal view of the canvas while it denoises (`infill fill --visual`).

On a terminal each step draws a frame over the last one: every canvas row (one per
span length), the pinned context dim, the span slots accepted at this step bright,
noise as '░' and end-of-span slots as '·'; a legend under the frame says so. Frames
are paced (`pace` seconds at least between two) so that a person can follow the steps,
and at the end one more frame shows the row whose middle is the answer, as it was
kept. Frames are laid out for the terminal's width and height and wrapped here, not by
the terminal, so each redraw knows how many lines to go back over at any size.
Elsewhere (a pipe, a file) one status line per step is written and nothing waits.
"""

from __future__ import annotations

import os
import sys
import time
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from infill_engine.core.canvas import CanvasBatch
from infill_engine.core.loop import StepView

DIM, BRIGHT, NOISE, RESET = "\x1b[2m", "\x1b[1;32m", "\x1b[2;35m", "\x1b[0m"
NOISE_MARK, END_MARK = "░", "·"
TAB = "    "
# (text, style, on a span slot): one token's piece of a frame.
Cell = tuple[str, str, bool]
# The styled characters of one terminal line, and whether a span slot is on it.
Line = tuple[list[tuple[str, str]], bool]
# What the styles and marks mean, entry by entry; a frame shows it under the rows.
STEP_LEGEND: tuple[tuple[Cell, ...], ...] = (
    (("pinned context", DIM, False),),
    (("accepted", BRIGHT, False), (" at this step", "", False)),
    ((NOISE_MARK, NOISE, False), (" noise", "", False)),
    (
        (END_MARK, DIM, False),
        (" end of span (the middle stops at the first)", "", False),
    ),
)
FINAL_LEGEND: tuple[tuple[Cell, ...], ...] = (
    STEP_LEGEND[0],
    (("the middle", BRIGHT, False),),
    ((END_MARK, DIM, False), (" after the end of span: cut", "", False)),
)


class CanvasView:
    """A per-step callback that draws the canvas batch, then the row that was kept.

    Args:
        tokenizer: turns single token ids into text.
        batch: the canvas batch being denoised.
        end_ids: end-of-span token ids.
        stream: where to draw (stderr by default, so stdout stays the middle alone).
        pace: least seconds between two frames on a terminal (0: no waiting).
    """

    def __init__(
        self,
        tokenizer: Any,
        batch: CanvasBatch,
        end_ids: set[int],
        stream: TextIO | None = None,
        pace: float = 0.0,
    ) -> None:
        if pace < 0:
            raise ValueError(f"pace must be >= 0 (got {pace})")
        self.tokenizer = tokenizer
        self.batch = batch
        self.end_ids = end_ids
        self.stream = stream or sys.stderr
        self.pace = pace
        self.live = self.stream.isatty()
        self.waited_s = 0.0  # paced between steps: inside the fill's timings
        self._last: StepView | None = None
        self._lines = 0  # terminal lines of the frame on screen
        self._drawn_at: float | None = None

    def __call__(self, view: StepView) -> None:
        """Draw every row after one step."""
        self._last = view
        spans = self.batch.span_lengths
        counts = [int(view.accepted[row].sum()) for row in range(len(spans))]
        if not self.live:
            rows = "  ".join(
                f"span {s}: {n} accepted" for s, n in zip(spans, counts, strict=True)
            )
            self.stream.write(f"step {view.index}/{view.max_steps}  {rows}\n")
            return
        rows_cells = [
            (
                f"span {span}: {count} of {span} slots accepted",
                self.cells(view, row, final=False),
            )
            for row, (span, count) in enumerate(zip(spans, counts, strict=True))
        ]
        self.waited_s += self._draw(
            f"step {view.index}/{view.max_steps}", rows_cells, STEP_LEGEND
        )

    def finish(self, kept_span: int) -> None:
        """After the fill: the row of `kept_span` slots as it ended, alone."""
        view, spans = self._last, self.batch.span_lengths
        if view is None or kept_span not in spans:
            return
        if not self.live:
            self.stream.write(f"kept: span {kept_span}\n")
            return
        cells = self.cells(view, spans.index(kept_span), final=True)
        title = f"done after {view.index} steps: span {kept_span} kept"
        self._draw(title, [(f"span {kept_span}: the answer", cells)], FINAL_LEGEND)

    def cells(self, view: StepView, row: int, final: bool) -> list[Cell]:
        """One row as cells: pinned dim, accepted bright, noise as blocks.

        `final` draws the model's last guess (what the middle is cut from) instead of
        the canvas the next step would read: every slot up to the first end-of-span.
        """
        ids = (view.argmax if final else view.canvas)[row].tolist()
        pinned = view.pinned[row].tolist()
        accepted = view.accepted[row].tolist()
        cells: list[Cell] = []
        ended = False
        for pos, token in enumerate(ids):
            if pinned[pos]:
                text = self.tokenizer.decode([token], skip_special_tokens=True)
                cells.append((text, DIM, False))
            elif not (final or accepted[pos]):
                cells.append((NOISE_MARK, NOISE, True))
            elif ended or token in self.end_ids:
                ended = final  # the middle is cut at the first: all after it is gone
                cells.append((END_MARK, DIM, True))
            else:
                cells.append((self.tokenizer.decode([token]), BRIGHT, True))
        return cells

    def _draw(
        self,
        title: str,
        rows: Sequence[tuple[str, list[Cell]]],
        legend: Sequence[Sequence[Cell]],
    ) -> float:
        """Wait out the pace, then replace the frame on screen with a new one.

        Returns the seconds waited.
        """
        delay = 0.0
        if self._drawn_at is not None:
            delay = max(0.0, self._drawn_at + self.pace - time.monotonic())
            time.sleep(delay)
        columns, height = terminal_size(self.stream)
        frame = layout(title, rows, legend, columns, height)
        if self._lines:
            # Back to the first line of the last frame, and clear it and all below.
            self.stream.write(f"\x1b[{self._lines}F\x1b[J")
        self.stream.write(frame)
        self.stream.flush()
        self._lines = frame.count("\n")
        self._drawn_at = time.monotonic()
        return delay


def layout(
    title: str,
    rows: Sequence[tuple[str, list[Cell]]],
    legend: Sequence[Sequence[Cell]],
    columns: int,
    height: int,
) -> str:
    """A frame that fits `columns` x `height`: title, each row under its label, legend.

    Lines stop one column short of the edge, so that no terminal wraps them on its
    own; rows keep the lines around their span slots that fit in the height.
    """
    width = max(columns - 1, 20)
    head = wrap([(title, "", False)], width)
    key = wrap(entries(legend, width), width)
    labels = [wrap([(label, "", False)], width) for label, _ in rows]
    # One line is left free for the cursor under the frame: a frame that filled the
    # screen would scroll its first line out of reach of the next redraw.
    room = height - 1 - len(head) - len(key) - sum(len(x) for x in labels)
    budget = max(1, room // max(len(rows), 1))
    lines = list(head)
    for label, (_, cells) in zip(labels, rows, strict=True):
        lines += label + around_span(wrap(cells, width), budget)
    lines += key
    return "".join(styled(chars) + "\n" for chars, _ in lines)


def wrap(cells: Iterable[Cell], width: int) -> list[Line]:
    """Cells in lines of at most `width` columns: broken at newlines and the width."""
    lines: list[Line] = []
    chars: list[tuple[str, str]] = []
    used, on_span = 0, False
    for text, style, span in cells:
        for ch in text:
            if ch == "\n":
                lines.append((chars, on_span or span))
                chars, used, on_span = [], 0, False
                continue
            shown, cols = printable(ch)
            if used + cols > width:
                lines.append((chars, on_span))
                chars, used, on_span = [], 0, False
            chars.append((shown, style))
            used += cols
            on_span = on_span or span
    lines.append((chars, on_span))
    return lines


def entries(legend: Sequence[Sequence[Cell]], width: int) -> list[Cell]:
    """Legend entries two spaces apart, a newline where the next would not fit."""
    cells: list[Cell] = []
    used = 0
    for entry in legend:
        size = sum(len(text) for text, _, _ in entry)
        if used and used + 2 + size > width:
            cells.append(("\n", "", False))
            used = 0
        elif used:
            cells.append(("  ", "", False))
            used += 2
        cells += entry
        used += size
    return cells


def around_span(lines: list[Line], budget: int) -> list[Line]:
    """At most `budget` lines: those with span slots, then the context nearest to
    them, half before and half after (the odd line before)."""
    marked = [i for i, (_, span) in enumerate(lines) if span]
    if not marked:
        return lines[:budget]
    first, last = marked[0], marked[-1]
    room = budget - (last - first + 1)
    if room <= 0:
        return lines[first : first + budget]
    after = min(len(lines) - 1 - last, room // 2)
    before = min(first, room - after)
    after = min(len(lines) - 1 - last, room - before)
    return lines[first - before : last + 1 + after]


def printable(ch: str) -> tuple[str, int]:
    """What a terminal is sent for `ch`, and the columns it takes there."""
    if ch == "\t":
        return TAB, len(TAB)
    category = unicodedata.category(ch)
    if category in ("Mn", "Me"):
        return ch, 0  # combining marks sit on the character before
    if category == "Cc" or category == "Cs":
        return "\ufffd", 1  # control characters would move the cursor
    return ch, 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def styled(chars: list[tuple[str, str]]) -> str:
    """Characters with their styles as escape sequences, one per run of a style."""
    out, current = [], ""
    for ch, style in chars:
        if style != current:
            out.append(RESET if current else "")
            out.append(style)
            current = style
        out.append(ch)
    if current:
        out.append(RESET)
    return "".join(out)


def terminal_size(stream: TextIO) -> tuple[int, int]:
    """Columns and lines of the terminal `stream` writes to (80 x 24 if unknown);
    COLUMNS and LINES override them, as for `shutil.get_terminal_size`."""
    try:
        size = os.get_terminal_size(stream.fileno())
        columns, lines = size.columns or 80, size.lines or 24
    except (AttributeError, ValueError, OSError):
        columns, lines = 80, 24
    return _env_int("COLUMNS") or columns, _env_int("LINES") or lines


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else 0
