"""`odeverify report`: deterministic bytes, atomic writes, every section, JSON round trip,
bad input, progress output. The browser checks are in test_report_browser.py."""
from __future__ import annotations

import atexit
import functools
import importlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the report needs the 'report' extra (matplotlib)")
pytest.importorskip("jinja2", reason="the report needs the 'report' extra (jinja2)")

from odeverify import cli  # noqa: E402
from odeverify.records import Record  # noqa: E402
from odeverify.report import (  # noqa: E402
    Progress,
    collect,
    dumps_document,
    load_document,
    render_html,
    write_report,
)
from odeverify.report import output, render  # noqa: E402

# the package exports the function collect(); the module of the same name holds the plumbing
collect_mod = importlib.import_module("odeverify.report.collect")

SECTION_IDS = ("summary", "work-precision", "convergence", "tolerance", "dense-output", "gradients",
               "reversibility", "stiffness", "stability", "other-checks", "environment")


@functools.lru_cache(maxsize=1)
def small_document_text() -> str:
    """A small real run (reference backend; dopri5, plus radau_iia5 for the stiff diagram),
    as JSON text; shared with the browser test."""
    doc = collect(backends=["reference"], methods=["dopri5"], quick=True, progress=False,
                  kinds=("conformance", "work_precision", "drift", "stability"))
    return dumps_document(doc)


@functools.lru_cache(maxsize=1)
def small_report() -> str:
    return render_html(json.loads(small_document_text()))


@functools.lru_cache(maxsize=1)
def small_report_dir() -> Path:
    """The small report written once (report.html, records.json); shared with the browser test."""
    out = Path(tempfile.mkdtemp(prefix="odeverify-report-test-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    write_report(json.loads(small_document_text()), out)
    return out


@pytest.fixture
def doc() -> dict:
    return json.loads(small_document_text())


def test_same_records_give_identical_bytes(doc):
    a = small_report()
    assert render_html(json.loads(dumps_document(doc))) == a
    # written to disk by write_report in another call: the same bytes again
    assert (small_report_dir() / "report.html").read_bytes() == a.encode("utf-8")
    assert (small_report_dir() / "records.json").read_text(encoding="utf-8") == small_document_text()
    # and the bytes do depend on the records
    doc["records"][0]["message"] = "changed"
    assert render_html(doc) != a


def test_page_is_self_contained():
    html = small_report()
    assert re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html) is None
    assert "<script" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    figures = re.findall(r'<svg class="figure"', html)
    assert len(figures) >= 5
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "element ids must be unique across the inline SVGs"


def test_every_section_is_present():
    html = small_report()
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in html, sid
    # axes name their quantities (matplotlib keeps each text as a comment beside its glyphs)
    for label in ("step size h", "function evaluations (NFE)", "wall time [s]", "max abs error at t1",
                  "tolerance (rtol = atol)", "Re(h λ)", "significant correct digits (scd)",
                  "horizon T (multiples of the span)"):
        assert f"<!-- {label} -->" in html, label


def test_sections_without_records_say_so():
    empty = {"schema": collect_mod.SCHEMA, "version": "0", "quick": True, "backends": [], "records": [],
             "unavailable": {"gradients": "no gradient records: odeverify.gradients not available"},
             "environment": {}, "elapsed_s": 0.0}
    html = render_html(empty)
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in html, sid
    lines = re.findall(r'<p class="empty">([^<]*)</p>', html)
    assert "no gradient records: odeverify.gradients not available" in lines
    # every section except the footer says why it is empty
    assert len(lines) == len(SECTION_IDS) - 1


def test_records_round_trip(doc):
    loaded = load_document(small_report_dir() / "records.json")
    assert loaded == doc
    for d in loaded["records"]:
        assert Record(**d).to_dict() == d


def test_a_crash_while_rendering_leaves_the_previous_report(tmp_path, monkeypatch):
    for name in ("report.html", "records.json"):
        shutil.copy(small_report_dir() / name, tmp_path / name)
    before = ((tmp_path / "report.html").read_bytes(), (tmp_path / "records.json").read_bytes())

    def boom(*args, **kwargs):
        raise RuntimeError("rendering failed midway")

    # the stability section comes after several figures have been drawn
    monkeypatch.setattr(render, "stability_section", boom)
    changed = json.loads(small_document_text())
    changed["records"][0]["message"] = "new run"
    with pytest.raises(RuntimeError, match="midway"):
        write_report(changed, tmp_path)
    assert ((tmp_path / "report.html").read_bytes(), (tmp_path / "records.json").read_bytes()) == before
    kept = json.loads((tmp_path / output.UNRENDERED_NAME).read_text())
    assert kept["records"][0]["message"] == "new run"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_atomic_write_survives_a_failed_replace(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    target.write_text("previous")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(output.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        output.atomic_write_text(target, "new")
    assert target.read_text() == "previous"
    assert os.listdir(tmp_path) == ["report.html"]


def test_out_that_is_a_file_is_a_named_error(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert cli.main(["report", "--out", str(f), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "file.txt" in err and "is a file" in err


def test_unknown_backend_is_a_named_error(tmp_path, capsys):
    assert cli.main(["report", "--out", str(tmp_path), "--backends", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--backends" in err and "'nope'" in err and "reference" in err
    assert not (tmp_path / "report.html").exists()


def test_records_of_another_schema_are_a_named_error(tmp_path, capsys):
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"schema": "odeverify.check/1", "records": []}))
    assert cli.main(["report", "--out", str(tmp_path), "--from-records", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "--from-records" in err and "odeverify.check/1" in err


def test_cli_renders_saved_records(tmp_path, capsys):
    assert cli.main(["report", "--out", str(tmp_path), "--from-records",
                     str(small_report_dir() / "records.json")]) == 0
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == small_report()
    assert "wrote" in capsys.readouterr().out


def test_a_failing_task_becomes_an_error_record():
    def broken():
        raise ZeroDivisionError("library exploded")

    tasks = [collect_mod.Task("fake: broken", 1.0, broken, "fake", "m1", "conformance"),
             collect_mod.Task("stability regions", 1.0, lambda: [], "reference", "*", "stability")]
    recs = collect_mod.run_tasks(tasks)
    assert len(recs) == 1
    assert recs[0].verdict == "error" and "ZeroDivisionError: library exploded" in recs[0].message
    assert recs[0].backend == "fake" and recs[0].method == "m1"


def test_progress_lines_with_eta_when_not_a_tty():
    now = [0.0]
    out = io.StringIO()
    bar = Progress(4.0, stream=out, tty=False, interval=10.0, clock=lambda: now[0])
    bar.update("task a")
    now[0] = 5.0
    bar.update("task a", weight=1.0)  # 5 s after the first line: not printed yet
    now[0] = 12.0
    bar.update("task b", weight=1.0)  # 2 of 4 done in 12 s: 12 s left
    now[0] = 20.0
    bar.update("task c", weight=2.0)  # finished: always printed
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "50%" in lines[1] and "eta 0:12" in lines[1] and "task b" in lines[1]
    assert "100%" in lines[2] and "eta 0:00" in lines[2]
    assert "\r" not in out.getvalue()


def test_progress_bar_redraws_in_place_on_a_tty():
    out = io.StringIO()
    bar = Progress(2.0, stream=out, tty=True, clock=lambda: 1.0)
    bar.update("first", weight=1.0)
    bar.update("second", weight=1.0)
    bar.close("done")
    text = out.getvalue()
    assert text.count("\r") == 2 and "[" in text and "#" * 28 in text and text.endswith("done\n")


def test_heartbeat_prints_during_a_long_task():
    import time

    out = io.StringIO()
    bar = Progress(1.0, stream=out, tty=False, interval=0.2)
    bar.heartbeat()
    bar.update("a long task")
    time.sleep(1.0)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and all("a long task" in line for line in lines)


def test_collect_reports_progress(capsys):
    stream = io.StringIO()
    doc = collect(backends=["scipy"], methods=["RK23"], quick=True, progress=True, stream=stream,
                  kinds=("conformance",))
    text = stream.getvalue()
    assert "100%" in text and "eta" in text and "records from" in text
    assert any(r["property"] == "tolerance_proportionality" for r in doc["records"])


def test_real_stability_interval_matches_the_literature():
    # Hairer & Wanner II, Sect. IV.2: explicit Euler [-2, 0]; classical RK4 about [-2.785, 0]
    recs = {r.method: r for r in collect_mod.stability_records()}
    assert recs["euler"].measured == pytest.approx(-2.0, abs=1e-9)
    assert recs["rk4"].measured == pytest.approx(-2.785, abs=1e-3)
    assert recs["backward_euler"].measured == float("-inf")


def test_quick_selects_explicit_adaptive_methods_of_order_at_least_3():
    from odeverify import backends

    infos = backends.get("reference").capabilities().methods.values()
    names = [i.name for i in collect_mod.select_methods(infos, quick=True, methods=None)]
    assert "dopri5" in names and "dop853" in names
    assert "rk4" not in names and "heun" not in names and "radau_iia5" not in names


def test_a_missing_report_extra_is_named_before_any_check_runs(tmp_path, monkeypatch):
    """Without jinja2 the run stops at once with the extra to install, not after minutes of checks."""
    import sys

    from odeverify._xp import MissingDependencyError
    from odeverify.report import build_report

    ran = []
    monkeypatch.setitem(sys.modules, "jinja2", None)  # "import jinja2" now raises ImportError
    monkeypatch.setattr("odeverify.report.output.collect", lambda **kw: ran.append(kw))
    with pytest.raises(MissingDependencyError, match=r"odeverify\[report\]"):
        build_report(tmp_path / "out", quick=True, progress=False)
    assert not ran, "the checks ran before the missing extra was reported"
