"""Known deviations, recorded with their reasons instead of hidden (``data/expected_failures.toml``).

A record matching an entry turns from ``fail``/``error`` into ``deviation``; the reason is
kept in its message, so reports list each deviation and the test suite stays green. An entry
that no longer fails is reported as stale by the tests, so the file cannot rot.
"""
from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .records import Record


@dataclass(frozen=True)
class Expectation:
    property: str
    method: str = "*"
    problem: str = "*"
    backend: str = "*"
    library: str = "*"
    dtype: str = "*"
    reason: str = ""
    #: the shrunk case (a JSON line) that ``odeverify explore`` found it with: the tests
    #: replay it (``odeverify explore --replay``) to keep the entry from going stale
    case: str = ""

    def matches(self, r: Record) -> bool:
        pairs = [(self.property, r.property), (self.method, r.method), (self.problem, r.problem),
                 (self.backend, r.backend), (self.library, r.library), (self.dtype, r.dtype)]
        return all(fnmatch.fnmatchcase(value, pattern) for pattern, value in pairs)


@lru_cache(maxsize=1)
def load() -> tuple[Expectation, ...]:
    text = resources.files("odeverify.data").joinpath("expected_failures.toml").read_text()
    data = tomllib.loads(text)
    out = []
    for i, entry in enumerate(data.get("deviation", [])):
        if "property" not in entry or not entry.get("reason"):
            raise ValueError(f"expected_failures.toml: entry {i} needs 'property' and a non-empty 'reason'")
        out.append(Expectation(**entry))
    return tuple(out)


def apply(record: Record) -> Record:
    """Mark a failing record as an expected deviation when an entry matches it."""
    if record.verdict not in ("fail", "error"):
        return record
    for e in load():
        if e.matches(record):
            record.verdict = "deviation"
            record.message = f"expected deviation: {e.reason}" + (f" [{record.message}]" if record.message else "")
            break
    return record
