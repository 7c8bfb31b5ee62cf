"""Writing the report: the JSON records and the HTML page, each atomically (a temporary file
in the same directory, then ``os.replace``), so a crash leaves the previous report intact."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .collect import SCHEMA, collect
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
    """The output directory, created if missing; a path that is a file is an error naming ``--out``."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out={str(out)!r} is a file; expected a directory (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out={str(out)!r}: cannot create the directory ({exc})") from exc
    return path


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


def build_report(out: str | os.PathLike[str] = "reports", *, backends: Sequence[str] | str | None = None,
                 quick: bool = False, methods: Sequence[str] | None = None, progress: bool = True,
                 stream: TextIO | None = None) -> ReportPaths:
    """``odeverify report``: check ``out`` and the ``report`` extra first (minutes of checks
    must not end in an ImportError), run the checks, write the report."""
    check_out_dir(out)
    for module in ("jinja2", "matplotlib"):
        require_report_extra(module)
    doc = collect(backends=backends, quick=quick, methods=methods, progress=progress, stream=stream)
    return write_report(doc, out)
