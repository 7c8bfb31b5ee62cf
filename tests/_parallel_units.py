"""Unit targets of tests/test_parallel.py, imported by the spawned workers: a light module (no
test framework, no backend), so that a worker starts quickly even on a loaded machine."""
from __future__ import annotations

import os
import time

from odeverify.records import Record


def unit_ok(n: int, delay: float = 0.0) -> dict:
    time.sleep(delay)
    return {"records": [Record(property="p", method=f"m{n}", problem="-", measured=float(n), expected=None,
                               verdict="pass")],
            "cases": [(f"key{n}", Record(property="p", method=f"m{n}", problem="-", measured=float(n), expected=None,
                                         verdict="pass"))]}


def unit_hang(stream: int = 0) -> dict:
    from odeverify.parallel import stream_case

    for n in range(stream):  # finished cases, handed to the parent before the hang
        stream_case(f"case{n}", Record(property="p", method="hang", problem=f"c{n}", measured=float(n), expected=None,
                                       verdict="pass"))
    time.sleep(120)
    return {"records": []}


def unit_die() -> dict:
    os._exit(7)


def unit_raise() -> dict:
    raise RuntimeError("planted failure")




def unit_clock(n: int) -> dict:
    """When it ran (the system-wide monotonic clock, comparable between processes)."""
    return {"records": [Record(property="p", method=f"m{n}", problem="-", measured=time.monotonic(), expected=None,
                               verdict="pass")]}
