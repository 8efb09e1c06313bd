"""The live view's layout: pure functions on hand-built cells, no model."""

import re

from infill_engine.tools.visual import (
    BRIGHT,
    DIM,
    NOISE,
    STEP_LEGEND,
    around_span,
    layout,
    wrap,
)

ESCAPES = re.compile(r"\x1b\[[0-9;]*m")


def visible(line: str) -> str:
    return ESCAPES.sub("", line)


def columns(text: str) -> int:
    return sum(2 if ch == "界" else 1 for ch in text)


def test_wrap_breaks_at_newlines_and_width_and_marks_span_lines():
    cells = [("ab\ncdefg", DIM, False), ("░░", NOISE, True), ("\tz界", BRIGHT, True)]
    lines = wrap(cells, width=4)
    text = ["".join(ch for ch, _ in chars) for chars, _ in lines]
    assert text == ["ab", "cdef", "g░░", "    ", "z界"]
    assert [span for _, span in lines] == [False, False, True, True, True]


def test_around_span_keeps_the_span_and_the_nearest_context():
    lines = [([(str(i), "")], 4 <= i <= 5) for i in range(10)]
    kept = [chars[0][0] for chars, _ in around_span(lines, budget=5)]
    assert kept == ["2", "3", "4", "5", "6"]  # the odd line goes before the span
    assert [c[0][0] for c, _ in around_span(lines, budget=1)] == ["4"]
    at_start = [([(str(i), "")], i == 0) for i in range(10)]
    assert [c[0][0] for c, _ in around_span(at_start, budget=3)] == ["0", "1", "2"]


def test_a_frame_fits_the_terminal_at_any_size():
    row = [("x = " * 40 + "\n", DIM, False)] * 30 + [("░", NOISE, True)] * 64
    rows = [("span 32: 1 of 32 slots accepted", row), ("span 64", row)]
    for width, height in ((60, 24), (200, 50), (30, 12)):
        frame = layout("step 1/4", rows, STEP_LEGEND, width, height)
        lines = frame.split("\n")[:-1]
        assert len(lines) <= height - 1
        assert max(columns(visible(line)) for line in lines) <= width - 1
        assert visible(frame).count("░") > 0 and "end of span" in visible(frame)
