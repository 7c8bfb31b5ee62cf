"""The progress display of long commands: records printed above a bar redrawn in place on a
terminal, plain lines elsewhere, and the counts so far beside the ETA."""
from __future__ import annotations

import io

from odeverify.report.progress import Progress


class Clock:
    """A hand-set clock: ``clock.now`` is what the bar reads."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_finished_item_is_printed_above_the_bar_which_is_redrawn(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    err, out = io.StringIO(), io.StringIO()
    clock = Clock()
    bar = Progress(2, stream=err, tty=True, label="odeverify check", clock=clock)
    bar.unit = "methods"
    clock.now = 2.0
    bar.update("rk4", weight=1.0)
    bar.status = "3 pass, 1 inconclusive"
    bar.write_above("pass  convergence_order  rk4", out)
    assert out.getvalue() == "pass  convergence_order  rk4\n"
    drawn = err.getvalue().split("\r")
    # drawn, wiped with blanks of its own length, then drawn again with the counts so far
    assert drawn[1].startswith("[") and "50% (1 methods)" in drawn[1] and "rk4" in drawn[1]
    assert drawn[2] == " " * len(drawn[1])
    assert "| 3 pass, 1 inconclusive" in drawn[-1] and "eta 0:02" in drawn[-1]
    bar.close()
    assert err.getvalue().endswith("\n")


def test_the_bar_fits_a_narrow_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    err = io.StringIO()
    bar = Progress(1, stream=err, tty=True, clock=Clock())
    bar.update("a task with a long description " * 4)
    assert max(len(part) for part in err.getvalue().split("\r")) <= 59


def test_without_a_terminal_items_are_plain_lines_and_the_bar_is_periodic():
    err, out = io.StringIO(), io.StringIO()
    clock = Clock()
    bar = Progress(3, stream=err, tty=False, interval=10.0, clock=clock)
    clock.now = 1.0
    bar.update("a", weight=1.0)  # printed: the first line
    bar.write_above("a record", out)
    clock.now = 3.0
    bar.update("b", weight=1.0)  # 2 s after the last line: not printed
    clock.now = 4.0
    bar.update("c", weight=1.0)  # finished: printed
    assert out.getvalue() == "a record\n"
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue() and len(lines) == 2
    assert "33%" in lines[0] and "100%" in lines[1]
