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
               "reversibility", "stiffness", "sde", "flows", "stability", "problems", "other-checks", "environment")


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
    # and the bytes do depend on the records (a few records: a cheaper page)
    doc["records"] = doc["records"][:4]
    before = render_html(doc)
    doc["records"][0]["message"] = "changed"
    assert render_html(doc) != before


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


# ----------------------------------------------------------------------------- analyst's tables
def test_cost_to_reach_interpolates_on_the_log_log_line_and_never_extrapolates():
    # a line of slope -1/4 in log-log (work = 10 err^(-1/4)): interpolation between any two of
    # its points lands on it exactly
    errors = [1e-2, 1e-4, None, 1e-8]  # the third solve failed: dropped, not a point
    work = [10 * e ** -0.25 if e else 999.0 for e in errors]
    for target in (1e-3, 1e-5, 1e-6, 1e-7):
        value, how = render.cost_to_reach(work, errors, target)
        assert how == "interpolated" and value == pytest.approx(10 * target ** -0.25, rel=1e-12), target
    assert render.cost_to_reach(work, errors, 1e-1) == (pytest.approx(work[0]), "bound")
    assert render.cost_to_reach(work, errors, 1e-9) == (None, "not reached")  # below the finest point
    assert render.cost_to_reach([], [], 1e-3) == (None, "not reached")
    # a non-monotone line: the first crossing in sweep order is taken
    value, how = render.cost_to_reach([10, 100, 1000], [1e-2, 1e-4, 1e-3], 1e-3)
    assert how == "interpolated" and value == pytest.approx(10 ** 1.5)


def _wp_record(backend: str, method: str, errors: list, nfev: list, wall: list) -> dict:
    pts = [{"rtol": 10.0 ** -(3 + i), "status": "success", "message": "", "abs_error": e, "scd": None,
            "nfev": n, "wall_s": w, "wall_min": w * 0.9, "wall_max": w * 1.2, "wall_repeats": 3, "load_1min": 1.5}
           for i, (e, n, w) in enumerate(zip(errors, nfev, wall))]
    return Record(property="work_precision", method=method, problem="toy", backend=backend, measured=None,
                  expected=None, verdict="pass", details={"points": pts}).to_dict()


def test_cost_table_marks_the_fastest_method_only_when_certain():
    fast = _wp_record("reference", "dop853", [1e-4, 1e-8, 1e-10], [100, 200, 300], [0.01, 0.02, 0.03])
    slow = _wp_record("scipy", "RK23", [1e-2, 1e-4, 1e-7], [100, 1000, 10000], [0.01, 0.1, 1.0])
    table = render.cost_table("toy", [fast, slow], scd=False)
    rows = {row[1]: row for row in table.rows}
    nfe_1e6 = table.header.index("NFE to 1e-06")
    assert rows["RK23"][nfe_1e6][0] == render.fmt(render.cost_to_reach([100, 1000, 10000],
                                                                       [1e-2, 1e-4, 1e-7], 1e-6)[0])
    assert "(fastest)" in rows["dop853"][nfe_1e6][0] and rows["dop853"][nfe_1e6][1] == "best"
    assert rows["RK23"][table.header.index("NFE to 1e-09")][0] == "not reached"
    # dop853 is already below 1e-3 at its loosest tolerance: a bound, and RK23's value at 1e-3
    # cannot be compared with a bound -> nobody is marked in that column
    # dop853 is below 1e-3 at its loosest tolerance already: at most 100 evaluations, fewer
    # than RK23's interpolated 316, so it is certainly the fastest
    col = table.header.index("NFE to 1e-03")
    assert rows["dop853"][col][0] == "<= 100 (fastest)"
    # a second method known only by a bound (<= 150) could be cheaper than 100: nobody is marked
    other = _wp_record("diffrax", "Tsit5", [1e-4, 1e-6, 1e-8], [150, 300, 600], [0.01, 0.02, 0.03])
    table = render.cost_table("toy", [fast, slow, other], scd=False)
    assert not any("(fastest)" in r[col][0] for r in table.rows)
    assert {r[col][0] for r in table.rows} >= {"<= 100", "<= 150"}


def test_matrix_cell_is_ok_only_when_every_problem_passed():
    assert render.matrix_verdict(["pass", "pass"]) == "pass"
    assert render.matrix_verdict(["pass", "skip"]) == "skip"  # shown as "~", never "ok"
    assert render.matrix_verdict(["skip", "deviation", "pass"]) == "deviation"
    assert render.matrix_verdict(["skip", "fail"]) == "fail"
    recs = [Record(property="convergence_order", method="tsit5", problem=p, backend="reference", measured=5.0,
                   expected=5.0, verdict=v).to_dict() for p, v in (("warped_fast", "pass"),
                                                                   ("warped_oscillatory", "skip"))]
    doc = {"schema": collect_mod.SCHEMA, "version": "0", "quick": True, "records": recs, "environment": {},
           "backends": [{"name": "reference", "available": True, "methods": ["tsit5"]}], "elapsed_s": 0.0}
    html = render_html(doc)
    assert '<td class="v-skip">~</td>' in html and '<td class="v-pass">ok</td>' not in html
    assert "<b>~</b> at least one was inconclusive" in html  # "~" is explained on the page


def test_header_and_backend_table_count_the_same_backends():
    from odeverify.records import VERDICTS

    if "unavailable" not in VERDICTS:
        pytest.skip("the 'unavailable' verdict is not in odeverify.records.VERDICTS yet")
    recs = [Record(property="convergence_order", method="dopri5", problem="p", backend="reference", measured=5.0,
                   expected=5.0, verdict="pass").to_dict(),
            Record(property="gradient_accuracy", method="dopri5/discrete", problem="p", backend="reference-torch",
                   measured=1e-9, expected=1e-6, verdict="pass").to_dict(),
            Record(property="available", method="*", problem="-", backend="diffrax", measured=None, expected=None,
                   verdict="unavailable", status="unavailable", message="diffrax is not installed",
                   details={"install_hint": "pip install 'odeverify[jax]'"}).to_dict()]
    doc = {"schema": collect_mod.SCHEMA, "version": "0", "quick": True, "records": recs, "environment": {},
           "backends": [{"name": "reference", "available": True, "methods": ["dopri5"]},
                        {"name": "diffrax", "available": True, "methods": []}], "elapsed_s": 0.0}
    html = render_html(doc)
    assert "of 3 backend(s)\n(2 available)" in html
    assert '<span class="v-unavailable">unavailable: 1</span>' in html
    assert '<span class="v-error">ERROR: 0</span>' in html and '<span class="v-fail">FAIL: 0</span>' in html
    assert "no: pip install &#39;odeverify[jax]&#39;" in html  # beside the backend, not an error row
    table = html[html.index("Verdicts per backend"):html.index("</table>", html.index("Verdicts per backend"))]
    assert table.count("<tr>") == 1 + 3


def test_bdf_stability_angles_are_computed():
    # Hairer & Wanner II, Table V.2.3 (A(alpha) of BDF, degrees); BDF6 is not in the report's check
    printed = {1: 90.0, 2: 90.0, 3: 86.03, 4: 73.35, 5: 51.84, 6: 17.84}
    for k, alpha in printed.items():
        assert collect_mod.bdf_stability_angle(k) == pytest.approx(alpha, abs=0.006), k
    assert all(r.verdict == "pass" for r in collect_mod.stability_angle_records())
    with pytest.raises(ValueError, match="k=7"):
        collect_mod.bdf_stability_angle(7)


def test_bdf_region_is_the_outside_of_its_root_locus():
    import numpy as np

    from odeverify.report import plots

    z = np.array([-1.0 + 0j, 0.5 + 0j, 3.0 + 0j, 10.0 + 0j])
    # BDF1 is backward Euler: |1/(1 - z)|
    assert plots.bdf_amplification(1, z) == pytest.approx(np.abs(1 / (1 - z)))
    # on the locus of BDF3 one root has modulus 1
    theta = np.linspace(0.3, 3.0, 7)
    assert plots.bdf_amplification(3, collect_mod.bdf_boundary(3, theta)) == pytest.approx(np.ones(7), abs=1e-9)


def test_work_precision_measures_the_error_along_the_solution():
    import importlib

    from odeverify.problems import PROBLEMS

    wp = importlib.import_module("odeverify.properties.work_precision")
    rec = wp.work_precision(PROBLEMS.get("warped_oscillatory"), "dopri5", tolerances=(1e-4, 1e-7), repeats=2,
                            output_times=4)
    pts = rec.details["points"]
    assert rec.details["trajectory"]["source"] == "closed form"
    assert len(rec.details["trajectory"]["output_times"]) == 4
    for p in pts:
        # t1 is one of the output times: the maximum over them includes the final-time error
        assert p["max_abs_error"] >= p["abs_error"] > 0 and p["dense_abs_error"] > 0
        assert p["wall_min"] <= p["wall_s"] <= p["wall_max"] and 1 <= p["wall_repeats"] <= 2
    assert pts[1]["max_abs_error"] < pts[0]["max_abs_error"] / 10
    assert pts[1]["dense_abs_error"] < pts[0]["dense_abs_error"] / 10
    # and without output_times the record is as before
    plain = wp.work_precision(PROBLEMS.get("warped_oscillatory"), "dopri5", tolerances=(1e-4,), repeats=1)
    assert "max_abs_error" not in plain.details["points"][0] and "trajectory" not in plain.details
    with pytest.raises(ValueError, match="output_times=0"):
        wp.output_grid(PROBLEMS.get("warped_oscillatory"), 0)


def test_sweeps_go_as_tight_as_the_reference_allows():
    import importlib

    from odeverify.problems import PROBLEMS

    wp = importlib.import_module("odeverify.properties.work_precision")
    assert wp.tightest_tolerance(PROBLEMS.get("warped_oscillatory")) == 1e-13  # closed form
    assert wp.tightest_tolerance(PROBLEMS.get("pleiades")) == 1e-13  # 16 published digits
    assert wp.tightest_tolerance(PROBLEMS.get("rober")) == 1e-10  # 11 digits reached
    assert wp.tightest_tolerance(PROBLEMS.get("e5")) == 1e-6  # y2, y3 known to ~1e-3 only
    assert min(wp.sweep_tolerances(PROBLEMS.get("vdpol"))) == 1e-12
    # ROBER's span runs to 1e11: its output times are log-spaced, its transient is sampled
    out, between = wp.output_grid(PROBLEMS.get("rober"), 10)
    assert out[0] == pytest.approx(1e-4) and out[-1] == 1e11 and between.min() < 1e-3
    info = next(i for i in backends_infos("reference") if i.name == "dop853")
    assert min(collect_mod.nonstiff_tolerances(info, "pleiades", quick=False)) == pytest.approx(1e-13)
    assert min(collect_mod.nonstiff_tolerances(info, "pleiades", quick=True)) == collect_mod.QUICK_TIGHTEST_TOL


def backends_infos(name: str):
    from odeverify import backends

    return list(backends.get(name).capabilities().methods.values())


def test_quick_stiff_work_precision_covers_the_implicit_solvers():
    tasks, _, _ = collect_mod.plan(["reference", "scipy", "diffrax"], quick=True, kinds=("work_precision",))
    stiff = {(t.backend, t.method, t.label.rsplit(" on ", 1)[1]) for t in tasks
             if t.label.rsplit(" on ", 1)[1] in ("hires", "rober")}
    wanted = ["radau_iia5", "bdf", "kvaerno3", "kvaerno4", "kvaerno5"]
    for problem in ("hires", "rober"):
        for m in wanted:
            assert ("reference", m, problem) in stiff, (m, problem)
        for m in ("Radau", "BDF", "LSODA"):
            assert ("scipy", m, problem) in stiff, (m, problem)
    from odeverify import backends

    if backends.get("diffrax").available():
        for m in ("Kvaerno3", "Kvaerno4", "Kvaerno5"):
            assert ("diffrax", m, "hires") in stiff and ("diffrax", m, "rober") in stiff, m
    full, _, _ = collect_mod.plan(["reference"], quick=False, methods=["radau_iia5"], kinds=("work_precision",))
    covered = {t.label.rsplit(" on ", 1)[1] for t in full}
    assert {"rober", "hires", "orego", "vdpol", "vdpol_mu1000", "pollution", "e5"} <= covered


def test_diffrax_reversible_heun_drift_gets_its_fixed_steps(monkeypatch):
    """Regression: a full report's drift task called reversibility_drift without n_steps, which
    diffrax's ReversibleHeun (reconstructed through its inverse step) refuses."""
    pytest.importorskip("diffrax")
    from odeverify.backends import diffrax_gradients

    seen = []

    def reconstruction(problem, n_steps, **kw):  # the compiled reconstruction, without the compile
        seen.append(n_steps)
        return 1e-15

    monkeypatch.setattr(diffrax_gradients, "reversible_reconstruction", reconstruction)
    tasks, _, _ = collect_mod.plan(["diffrax"], quick=False, methods=["ReversibleHeun"], kinds=("drift",))
    tasks = [t for t in tasks if t.method == "ReversibleHeun"]
    assert tasks
    recs = collect_mod.run_tasks(tasks)
    assert recs and all(r.verdict == "pass" for r in recs), [r.message for r in recs]
    assert seen and set(seen) == {collect_mod.DRIFT_N_STEPS}


def test_problems_section_gives_definitions_and_provenance():
    html = small_report()
    section = html[html.index('id="problems"'):html.index('id="other-checks"')]
    assert "Robertson" in section and "published at t = 1e+11" in section and "Mazzia" in section
    assert "closed form" in section  # warped_oscillatory
