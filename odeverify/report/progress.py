"""A plain-text progress bar with an ETA for long runs (no dependency).

On a terminal the bar redraws one line in place (``\\r``). Anywhere else (a log file, CI) it
prints a whole line at most every ``interval`` seconds, and always for the last task, so
logs stay short but show that the run is alive. :meth:`Progress.heartbeat` keeps the
elapsed time moving during a long task (a daemon thread; writes are serialised by a lock).

:meth:`Progress.write_above` prints a finished item (a record of ``odeverify check``) on its
own line above the bar, which is then redrawn below it; :attr:`Progress.status` (counts so
far) is shown after the bar.

The ETA assumes the remaining tasks cost what the finished ones did per unit of weight:
``eta = elapsed * remaining_weight / done_weight``. Tasks carry weights because they differ
by orders of magnitude (a diffrax method compiles; a scipy method does not).
"""
from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO


def format_seconds(seconds: float) -> str:
    """``75.4 -> '1:15'``, ``3700 -> '1:01:40'``; ``'?'`` when unknown."""
    if seconds != seconds or seconds < 0:  # NaN or negative: unknown
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Progress of ``total`` units of weight, written to ``stream`` (stderr by default).

    ``tty`` defaults to ``stream.isatty()``. ``clock`` is injectable for tests.
    """

    def __init__(self, total: float, *, stream: TextIO | None = None, tty: bool | None = None,
                 interval: float = 10.0, width: int = 28, label: str = "odeverify report",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not total > 0:
            raise ValueError(f"total={total!r}; expected a positive amount of work")
        self.total = float(total)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(self.stream.isatty()) if tty is None else tty
        self.interval = interval
        self.width = width
        self.label = label
        self.clock = clock
        self.done = 0.0
        self.count = 0
        self.start = clock()
        self._last_print = -float("inf")
        self._last_len = 0
        self._what = ""
        self.status = ""  #: shown after the counts, e.g. verdicts so far
        self.unit = "tasks"
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def eta(self) -> float:
        """Seconds left, extrapolated from the finished weight (NaN before any is done)."""
        if self.done <= 0:
            return float("nan")
        elapsed = self.clock() - self.start
        return elapsed * max(self.total - self.done, 0.0) / self.done

    def line(self, what: str = "") -> str:
        frac = min(self.done / self.total, 1.0)
        elapsed = self.clock() - self.start
        head = f"{self.label}: {100 * frac:3.0f}% ({self.count} {self.unit}) elapsed {format_seconds(elapsed)}" \
               f" eta {format_seconds(self.eta())}" + (f" | {self.status}" if self.status else "")
        if self.tty:
            filled = int(round(frac * self.width))
            head = f"[{'#' * filled}{'.' * (self.width - filled)}] " + head
        return head + (f"  {what}" if what else "")

    def update(self, what: str = "", *, weight: float = 0.0) -> None:
        """Record ``weight`` more units done and show ``what`` (the task now running)."""
        with self._lock:
            self._update(what, weight)

    def write_above(self, text: str, out: TextIO | None = None) -> None:
        """Print ``text`` as a line of ``out`` (stdout by default); on a terminal the bar is
        cleared first and redrawn below it, so the two never share a line."""
        out = out if out is not None else sys.stdout
        with self._lock:
            if self.tty and self._last_len:
                self.stream.write("\r" + " " * self._last_len + "\r")
                self.stream.flush()
                self._last_len = 0
            out.write(text + "\n")
            out.flush()
            if self.tty:
                self._update(self._what, 0.0)

    def heartbeat(self) -> threading.Thread:
        """Redraw (terminal) or print (log, at most every ``interval`` s) while a task runs;
        stopped by :meth:`close`."""

        def beat() -> None:
            while not self._stop.wait(min(self.interval, 1.0) if self.tty else self.interval / 2):
                with self._lock:
                    self._update(self._what, 0.0)

        thread = threading.Thread(target=beat, name="odeverify-progress", daemon=True)
        thread.start()
        return thread

    def _update(self, what: str, weight: float) -> None:
        self._what = what
        self.done += weight
        if weight:
            self.count += 1
        now = self.clock()
        finished = self.done >= self.total
        if self.tty:
            # one screen line, or the carriage return redraws only its last part
            text = self.line(what)[: max(shutil.get_terminal_size().columns - 1, 20)]
            pad = max(self._last_len - len(text), 0)
            self.stream.write("\r" + text + " " * pad)
            self._last_len = len(text)
            self.stream.flush()
        elif finished or now - self._last_print >= self.interval:
            self.stream.write(self.line(what) + "\n")
            self.stream.flush()
            self._last_print = now

    def close(self, message: str = "") -> None:
        """End the bar (a newline on a terminal) and print ``message`` on its own line."""
        self._stop.set()
        if self.tty and self._last_len:
            self.stream.write("\n")
            self._last_len = 0
        if message:
            self.stream.write(message + "\n")
        self.stream.flush()
