"""The line-fill comparison's holes and scoring, with fillers of known answers."""

from __future__ import annotations

from infill_engine.training.compare import first_line, line_holes, score
from infill_engine.training.corpus import SourceFile

SOURCE = """def mean(values):
    total = sum(values)
    return total / len(values)


def spread(values):
    return max(values) - min(values)
"""


def _files() -> list[SourceFile]:
    return [SourceFile("x.py", "x", "MIT", SOURCE), SourceFile("y.py", "y", "MIT", "(")]


def test_holes_come_from_files_that_parse_and_rebuild_them():
    holes = line_holes(_files(), 20, seed=1)
    assert len(holes) == 20
    for hole in holes:
        assert hole.prefix + hole.middle + hole.suffix == SOURCE
        assert hole.middle.strip() and "\n" not in hole.middle


def test_score_counts_exact_parsed_and_empty_fills():
    holes = line_holes(_files(), 10, seed=2)
    right = score(holes, lambda h: h.middle + "\nextra line")
    assert right["exact_match"] == 1.0 and right["parses"] == 1.0
    assert right["empty"] == 0.0
    empty = score(holes, lambda h: "\n" + h.middle)
    assert empty["exact_match"] == 0.0 and empty["empty"] == 1.0
    broken = score(holes, lambda h: h.middle + " ((")
    assert broken["exact_match"] == 0.0 and broken["parses"] == 0.0


def test_first_line_is_what_lands_on_the_cursors_line():
    assert first_line("x + 1  \ny") == "x + 1"
    assert first_line("\nfoo") == ""
