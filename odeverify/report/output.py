"""Writing the report: the JSON records and the HTML page, each atomically (a temporary file
in the same directory, then ``os.replace``), so a crash leaves the previous report intact."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .. import __version__
from .collect import SCHEMA, collect, resolve_backends
from .plots import require_report_extra
from .render import render_html

HTML_NAME = "report.html"
RECORDS_NAME = "records.json"
#: where the records of a run whose rendering failed are kept (the previous report stays)
UNRENDERED_NAME = "records.unrendered.json"


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    records: Path
    n_records: int


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    """The output directory, created if missing, and proven writable by writing (and removing)
    a file there: permissions, a read-only file system or a full disk show up now, not after
    minutes of checks. A file in the way is an error naming ``--out``."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out={str(out)!r}, but that is a file; expected a directory (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out={str(out)!r}, but the directory cannot be created ({exc}); expected a writable"
                         " directory") from exc
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".odeverify-write-test.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"odeverify\n")
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"--out={str(out)!r}, but a test file could not be written there ({exc}); expected a"
                         " writable directory") from exc
    return path


def check_methods(backend_names: Sequence[str], methods: Sequence[str] | None) -> None:
    """Every name of ``--methods`` must be a method of one of the backends (case-insensitive,
    as the report selects them); else a ``ValueError`` naming it with the closest match."""
    if methods is None:
        return
    from .. import backends as _backends

    known: dict[str, str] = {}
    missing: list[str] = []
    for name in backend_names:
        b = _backends.get(name)
        if not b.available():
            missing.append(name)
            continue
        for m in b.capabilities().methods:
            known.setdefault(m.lower(), m)
    if not methods:
        raise ValueError("--methods names nothing; expected comma-separated method names")
    for m in methods:
        if m.lower() not in known:
            import difflib

            close = difflib.get_close_matches(m.lower(), list(known), n=1)
            hint = f"; did you mean {known[close[0]]!r}?" if close else ""
            also = f" ({', '.join(missing)} not installed: not searched)" if missing else ""
            raise ValueError(f"--methods={m!r}, but no backend of this report has that method{also}; expected a"
                             f" method name (odeverify list backends){hint}")


#: the journal of a report run, inside its output directory (removed once the report is written)
JOURNAL_NAME = "records.journal.jsonl"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dumps_document(doc: dict[str, Any]) -> str:
    """The document as stable JSON text (sorted keys; non-finite numbers are already strings)."""
    return json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n"


def load_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A document written by :func:`write_report`; another file is an error naming it."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--from-records={str(path)!r}: cannot read a JSON document ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"--from-records={str(path)!r}: schema {found!r}; expected {SCHEMA!r}")
    return doc


def write_report(doc: dict[str, Any], out: str | os.PathLike[str]) -> ReportPaths:
    """Render ``doc`` and write ``report.html`` and ``records.json`` into ``out``.

    The page is rendered from the JSON text of the records (what a reader of records.json
    gets), completely, before anything is replaced. If rendering fails, the previous
    report is left as it was and the new records are kept in ``records.unrendered.json``.
    """
    out_dir = check_out_dir(out)
    text = dumps_document(doc)
    try:
        html = render_html(json.loads(text))
    except Exception as exc:
        atomic_write_text(out_dir / UNRENDERED_NAME, text)
        exc.add_note(f"the records were kept in {out_dir / UNRENDERED_NAME}; the previous report is unchanged")
        raise
    atomic_write_text(out_dir / RECORDS_NAME, text)
    atomic_write_text(out_dir / HTML_NAME, html)
    return ReportPaths(out_dir / HTML_NAME, out_dir / RECORDS_NAME, len(doc.get("records", [])))


def report_run(backends: Sequence[str] | str | None, quick: bool, methods: Sequence[str] | None) -> dict[str, Any]:
    """What a report run asks for (the journal's header: ``--resume`` must ask the same)."""
    return {"command": "report", "backends": resolve_backends(backends), "quick": bool(quick),
            "methods": list(methods) if methods is not None else None, "version": __version__}


@dataclass
class ReportRun:
    """A report run whose options were all checked and whose journal is open
    (:func:`open_report_run`); :meth:`build` runs the checks and writes the report."""

    out_dir: Path
    run: dict[str, Any]
    journal: Any  #: odeverify.journal.Journal
    resumed: Any = None  #: the journal's contents when resumed (odeverify.journal.Contents)

    def build(self, *, progress: bool = True, stream: TextIO | None = None,
              parallel: dict[str, Any] | None = None) -> ReportPaths:
        """Run the checks (``parallel``: see :func:`odeverify.report.collect.collect`) and write
        the report."""
        doc = collect(backends=self.run["backends"], quick=self.run["quick"], methods=self.run["methods"],
                      progress=progress, stream=stream, journal=self.journal, resume=self.resumed,
                      parallel=parallel)
        paths = write_report(doc, self.out_dir)
        self.journal.discard()
        return paths


def open_report_run(out: str | os.PathLike[str] = "reports", *, backends: Sequence[str] | str | None = None,
                    quick: bool = False, methods: Sequence[str] | None = None, resume: bool = False,
                    stream: TextIO | None = None) -> ReportRun:
    """Check every option of ``odeverify report`` before any work: ``out`` (by a test write),
    the backends, the methods, the ``report`` extra (minutes of checks must not end in an
    ImportError or an OSError); then open the journal ``out/records.journal.jsonl``, resumed
    with ``resume`` (a note on ``stream``, stderr by default, says how many records it holds).
    A bad option, or a journal of another run, is a ``ValueError`` naming it."""
    from ..journal import Journal

    out_dir = check_out_dir(out)
    run = report_run(backends, quick, methods)
    check_methods(run["backends"], methods)
    for module in ("jinja2", "matplotlib"):
        require_report_extra(module)
    path = out_dir / JOURNAL_NAME
    contents = None
    if resume and path.exists():
        journal, contents = Journal.resume(path, run)
        note = f"resuming from {path}: {contents.n_records} records already done"
    else:
        note = f"--resume, but there is no journal at {path}; starting from the beginning" if resume else ""
        if not resume and path.exists():
            note = f"starting over; the journal of an interrupted run in {path} is discarded (--resume continues it)"
        journal = Journal(path, run)
    if note:
        print(f"odeverify report: {note}", file=stream if stream is not None else sys.stderr)
    return ReportRun(out_dir, run, journal, contents)


def build_report(out: str | os.PathLike[str] = "reports", *, backends: Sequence[str] | str | None = None,
                 quick: bool = False, methods: Sequence[str] | None = None, progress: bool = True,
                 stream: TextIO | None = None, resume: bool = False) -> ReportPaths:
    """``odeverify report``: :func:`open_report_run`, then :meth:`ReportRun.build`. Each
    finished task (and conformance case) is appended to the journal as it completes; with
    ``resume`` those already there are not run again. The journal is removed once the report
    is written."""
    return open_report_run(out, backends=backends, quick=quick, methods=methods, resume=resume,
                           stream=stream).build(progress=progress, stream=stream)
