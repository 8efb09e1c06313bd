"""The benchmark's phase bars: on a terminal's stderr only, one per phase."""

import io
import sys

from infill_engine.tools.progress import Phases


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_each_phase_gets_its_own_bar_on_a_terminal(monkeypatch):
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    phases = Phases(" req")
    phases.start("step overhead", 1)
    phases.start("LSP requests in stats.py", 3)
    phases.step()
    phases.close()
    shown = screen.getvalue()
    assert "step overhead: 100%" in shown and "1/1" in shown
    assert "LSP requests in stats.py: 100%" in shown and "3/3" in shown


def test_nothing_is_drawn_into_a_log(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    phases = Phases()
    phases.start("step overhead", 1)
    phases.step()
    phases.close()
    assert log.getvalue() == ""
