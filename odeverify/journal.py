"""A run's journal: records appended as they complete, so an interrupted run keeps its work.

A journal is a text file of JSON lines. The first line describes the run (``{"journal":
"odeverify.journal/1", "run": {...}}``): what was asked (command, backend, quick, methods,
...), so that a resumed run is refused when it asks for something else. Every other line is
one finished unit of work::

    {"kind": "case", "key": "...", "record": {...}}       one property on one method and problem
    {"kind": "task", "key": "...", "records": [{...}], "info": {...}}
                                                          a task of the report, all its records
                                                          (info: its timing and warnings)

Each line is written with one ``write``, flushed and fsynced before the next case starts, so a
crash or Ctrl-C loses at most the case that was running. A torn last line (the process died
inside the write) is ignored on reading and cut off before the next append.

Case keys (:func:`case_key`) name what was computed: the backend, the property, the method,
the problem and the options of the call, as canonical JSON. The journal knows nothing about
how keys are made or what a run is; :mod:`odeverify.conformance` and the report decide that.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import Record

SCHEMA = "odeverify.journal/1"


def case_key(**fields: Any) -> str:
    """Canonical text of ``fields`` (sorted keys; values that are not JSON by their ``str``)."""
    return json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))


@dataclass
class Contents:
    """What a journal holds: the run it describes, finished cases and finished tasks."""

    run: dict[str, Any]
    cases: dict[str, Record] = field(default_factory=dict)
    tasks: dict[str, list[Record]] = field(default_factory=dict)
    task_info: dict[str, dict[str, Any]] = field(default_factory=dict)  #: what the run said about each task
    torn: bool = False  #: the last line was incomplete (ignored)
    loose: int = 0  #: cases written after the last task (a task's cases come before the task)

    @property
    def n_records(self) -> int:
        """Records kept: those of the finished tasks, and the cases written since the last task
        (the cases of an unfinished task; with no tasks, every case)."""
        return sum(len(v) for v in self.tasks.values()) + self.loose


def read(path: str | os.PathLike[str]) -> Contents:
    """The contents of the journal at ``path``. A torn last line is ignored; a file that is
    not a journal, or a damaged line before the last, is a ``ValueError`` naming the file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"journal={str(path)!r}: cannot read it ({exc})") from exc
    lines = data.split(b"\n")
    # every line is written with its newline in one write: text after the last newline is a
    # write that a crash cut short
    complete, torn = lines[:-1], lines[-1] != b""
    if not complete:
        raise ValueError(f"journal={str(path)!r} is empty; expected an odeverify journal ({SCHEMA})")
    try:
        head = json.loads(complete[0])
    except ValueError as exc:
        raise ValueError(f"journal={str(path)!r}: the first line is not JSON; expected a header ({SCHEMA})") from exc
    if not isinstance(head, dict) or head.get("journal") != SCHEMA:
        raise ValueError(f"journal={str(path)!r}: header {head!r:.120}; expected {{'journal': {SCHEMA!r}, ...}}")
    out = Contents(run=dict(head.get("run", {})), torn=torn)
    for i, raw in enumerate(complete[1:], start=2):
        try:
            entry = json.loads(raw)
            if entry["kind"] == "case":
                out.cases[entry["key"]] = Record.from_dict(entry["record"])
                out.loose += 1
            elif entry["kind"] == "task":
                out.tasks[entry["key"]] = [Record.from_dict(r) for r in entry["records"]]
                out.task_info[entry["key"]] = dict(entry.get("info") or {})
                out.loose = 0
            else:
                raise KeyError(entry["kind"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"journal={str(path)!r}: line {i} is damaged ({type(exc).__name__}: {exc})") from exc
    return out


class Journal:
    """Appends finished cases and tasks to ``path``.

    ``Journal(path, run)`` starts a new journal (replacing any file there). ``Journal.resume(path,
    run)`` continues an existing one: its header must describe the same ``run``, and a torn last
    line is cut off first. ``Journal.discard()`` removes the file (the run finished and its
    results were written elsewhere)."""

    def __init__(self, path: str | os.PathLike[str], run: Mapping[str, Any], *, _append: bool = False) -> None:
        self.path = Path(path)
        self.run = dict(run)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab" if _append else "wb")  # noqa: SIM115 - closed by close()
        self.written = 0
        if not _append:
            self._write({"journal": SCHEMA, "run": self.run})

    @classmethod
    def resume(cls, path: str | os.PathLike[str], run: Mapping[str, Any]) -> tuple[Journal, Contents]:
        """The journal at ``path`` opened for appending, and what it holds. A journal of
        another run is a ``ValueError`` naming the first field that differs."""
        contents = read(path)
        want = json.loads(json.dumps(dict(run), default=str))
        for k in sorted(set(want) | set(contents.run)):
            if want.get(k) != contents.run.get(k):
                raise ValueError(f"journal={str(path)!r} was written by another run: {k}={contents.run.get(k)!r}"
                                 f" there, but {k}={want.get(k)!r} now; expected the same options (or start"
                                 " anew without --resume)")
        if contents.torn:
            _cut_torn_line(Path(path))
        return cls(path, run, _append=True), contents

    def _write(self, entry: Mapping[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True, allow_nan=False, default=str) + "\n"
        self._fh.write(line.encode("utf-8"))  # one write per line: a crash tears at most this one
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def case(self, key: str, record: Record) -> None:
        """Append one finished case."""
        self._write({"kind": "case", "key": key, "record": record.to_dict()})
        self.written += 1

    def task(self, key: str, records: Iterable[Record], info: Mapping[str, Any] | None = None) -> None:
        """Append one finished task with all its records (and ``info``: JSON the run keeps
        about it, such as its timing)."""
        records = list(records)
        self._write({"kind": "task", "key": key, "records": [r.to_dict() for r in records], "info": dict(info or {})})
        self.written += len(records)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def discard(self) -> None:
        """Close and remove the journal."""
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _cut_torn_line(path: Path) -> None:
    """Truncate ``path`` after its last newline (the torn line a crash left)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    with open(path, "r+b") as fh:
        fh.truncate(end)
        fh.flush()
        os.fsync(fh.fileno())
