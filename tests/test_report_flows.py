"""The report's flows section: it renders from a records document (synthetic records here, so
it is fast): the log-likelihood error against tolerance with its fitted exponent, Hutchinson's
RMS error against the number of probes with theory's 95% range, the fold step per method; flow
records stay out of the gradient, drift and other-checks sections; collect plans one flow task
per backend through ``conformance.run_flow_conformance``."""
from __future__ import annotations

import functools
import importlib
import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the report needs the 'report' extra (matplotlib)")
pytest.importorskip("jinja2", reason="the report needs the 'report' extra (jinja2)")

from odeverify import conformance  # noqa: E402
from odeverify.report import render, render_html  # noqa: E402
from tests.test_report_sde import _section  # noqa: E402

collect_mod = importlib.import_module("odeverify.report.collect")
RTOLS = [1e-3, 1e-4, 1e-5, 1e-6, 1e-7]
STEPS = [8, 16, 32, 64]
KS = [1, 2, 4, 8, 16]


def _rec(prop, meth, problem, verdict="pass", measured=None, expected=None, message="", backend="reference",
         **details):
    return {"property": prop, "backend": backend, "method": meth, "problem": problem, "measured": measured,
            "expected": expected, "verdict": verdict, "status": "success", "message": message, "details": details}


def flow_document() -> dict:
    var = 0.5
    records = [
        _rec("cnf_log_density", "dopri5", "cnf_linear2[jacobian]", "pass", 0.83, 0.8333,
             "log-density error tolerance exponent 0.83", rtols=RTOLS, tols=RTOLS,
             errors=[2e-3 * (t / 1e-3) ** 0.83 for t in RTOLS], fitted=RTOLS[1:], nfev=[20, 26, 38, 56, 86],
             oracle="closed form"),
        _rec("cnf_log_density", "rk4", "cnf_linear2[jacobian]", "fail", 2.1, 4.0,
             "log-density error order 2.10 (expected 4.00 +- 0.3)", n_steps=STEPS,
             errors=[1e-3 * (8 / n) ** 2.1 for n in STEPS], fitted=STEPS, oracle="closed form"),
        _rec("hutchinson_variance", "rk4", "cnf_mlp2[hutchinson_rademacher]", "pass", 0.49, var,
             "variance 0.49 vs theory 0.5: 0.3 standard errors", probe="rademacher", draws=4096,
             theory_variance=var, n_probes=KS, rms_error=[math.sqrt(var / k) * 1.01 for k in KS],
             predicted_rms=[math.sqrt(var / k) for k in KS]),
        _rec("hutchinson_variance", "rk4", "cnf_mlp2[hutchinson_gaussian]", "pass", 1.1, 1.0, probe="gaussian",
             draws=4096, theory_variance=1.0, n_probes=KS, rms_error=[math.sqrt(1.0 / k) for k in KS],
             predicted_rms=[math.sqrt(1.0 / k) for k in KS]),
        _rec("hutchinson_unbiased", "rk4", "cnf_mlp2[hutchinson_rademacher]", "pass", 0.7, 3.29,
             "mean -1.2 vs -tr M -1.21: 0.70 standard errors", probe="rademacher", draws=4096),
        _rec("flow_fold_step", "euler", "lin2", "pass", 0.52, 0.5, theory="linear field: h* = x*/max|mu|",
             h_times_lipschitz=1.6),
        _rec("flow_fold_step", "kutta3", "lin2", "fail", 2.9, 2.0, "folds late", theory="linear field",
             h_times_lipschitz=9.0),
        _rec("flow_fold_step", "rk4", "lin2", "pass", "inf", "inf", "no fold up to h_max=700", theory="linear field"),
        _rec("flow_fold_step", "rk4", "cnf_mlp1", "pass", 4.1, None, theory="no theory for a nonlinear field beyond"
             " Euler", h_times_lipschitz=3.3),
        _rec("cnf_liouville", "dopri5", "cnf_mlp2[jacobian]", "pass", 1e-9, 1e-7),
        _rec("trace_agreement", "-", "cnf_mlp2", "pass", 1e-15, 1e-12),
        _rec("augmented_negation", "dopri5", "rotation_pi", "pass", 1e-9, 1e-6),
        _rec("resnet_euler", "euler", "cnf_mlp2", "pass", 0.0, 1e-12),
        _rec("flow_orientation", "dopri5", "cnf_mlp2", "pass", 0.5, 0.0),
        _rec("cnf_gradient_accuracy", "dopri5/backsolve", "cnf_mlp2", "pass", 1e-6, 1e-4),
    ]
    return {"schema": collect_mod.SCHEMA, "version": "0", "quick": True, "elapsed_s": 1.0, "environment": {},
            "unavailable": {}, "records": records,
            "backends": [{"name": "reference", "available": True, "install_hint": "", "methods": ["dopri5", "rk4"],
                          "method_info": {"dopri5": {"tableau": "dopri5"}, "rk4": {"tableau": "rk4"}}}]}


@functools.lru_cache(maxsize=1)
def flow_report() -> str:
    return render_html(flow_document())


def test_flows_section_shows_exponents_hutchinson_and_fold_steps():
    html = flow_report()
    sec = _section(html, "flows")
    assert "Continuous normalizing flows" in sec
    # the log-density table: fitted exponent against the method's, the verdict, the error at the tightest setting
    assert re.search(r"<td[^>]*>dopri5</td>\s*<td[^>]*>cnf_linear2</td>\s*<td[^>]*>jacobian</td>", sec)
    assert "0.83" in sec and "0.833" in sec and re.search(r'class="v-fail">FAIL<', sec)
    assert "log-density error order 2.10" in sec
    # Hutchinson's table names both probes; the fold-step table the measured/theory ratio
    assert "rademacher" in sec and "gaussian" in sec
    fold = sec[sec.index("Fold step per method"):]
    assert ">1.04<" in fold and ">1.45<" in fold and "no fold up to h_max=700" in fold
    assert "no theory for a nonlinear field beyond Euler" in fold
    # the other flow checks are listed here, not in the gradient, drift or other-checks sections
    assert "CNF gradients: each gradient mode" in sec
    for prop in ("cnf_liouville", "trace_agreement", "cnf_gradient_accuracy", "augmented_negation", "resnet_euler",
                 "flow_orientation"):
        assert prop in sec, prop
        for sid in ("gradients", "reversibility", "other-checks"):
            assert prop not in _section(html, sid), (prop, sid)
    assert "cnf_" not in _section(html, "convergence")
    assert "reference: methods x flow checks" in _section(html, "summary")


def test_flows_figures_are_valid_svg():
    sec = _section(flow_report(), "flows")
    svgs = re.findall(r"<svg class=\"figure\".*?</svg>", sec, flags=re.S)
    # log-likelihood error (adaptive and fixed panels) on cnf_linear2, Hutchinson (two probes), fold step
    assert len(svgs) == 3, len(svgs)
    for svg in svgs:
        ET.fromstring(svg)
    for label in ("rtol (atol = rtol / 100)", "fixed steps n", "dopri5 (reference, jacobian)",
                  "rk4 (reference, jacobian)"):
        assert f"<!-- {label} -->" in svgs[0], label
    for label in ("probes k", "cnf_mlp2: measured", "cnf_mlp2: theory"):
        assert f"<!-- {label} -->" in svgs[1], label
    for label in ("lin2: measured", "lin2: theory", "lin2: no fold found", "cnf_mlp1: measured", "euler", "kutta3",
                  "rk4", "fold step h* (one step stops being orientation preserving)"):
        assert f"<!-- {label} -->" in svgs[2], label
    assert "<!-- cnf_mlp1: theory -->" not in svgs[2]  # no theory beyond Euler on a nonlinear field


def test_hutchinson_bars_are_the_95_percent_range_of_an_rms_over_the_groups():
    """sd of an RMS over m groups ~ sqrt(var/k) / sqrt(2 m) (normal approximation), m = draws // k."""
    rec = flow_document()["records"][2]
    measured, theory = render._hutchinson_series(rec, "#000000", "o")
    ks = np.asarray(KS, dtype=float)
    pred = np.sqrt(0.5 / ks)
    np.testing.assert_allclose(theory["yerr"], render.Z95 * pred / np.sqrt(2 * np.floor(4096 / ks)), rtol=1e-12)
    np.testing.assert_allclose(theory["y"], pred, rtol=1e-12)
    np.testing.assert_allclose(measured["y"], 1.01 * pred, rtol=1e-12)
    broken = dict(rec, details=dict(rec["details"], rms_error=[1.0]))
    assert render._hutchinson_series(broken, "#000000", "o") == []


def test_log_density_fit_goes_through_the_fitted_points_with_the_measured_exponent():
    doc = flow_document()
    style = render.Style(doc)
    kind, s = render._log_density_series(doc["records"][0], style)
    assert kind == "adaptive" and s["fit"]["slope"] == 0.83
    assert s["fit"]["x_min"] == pytest.approx(1e-7) and s["fit"]["x_max"] == pytest.approx(1e-4)
    kind, s = render._log_density_series(doc["records"][1], style)
    assert kind == "fixed" and s["fit"]["slope"] == -2.1  # error ~ n^-order


def test_flows_section_without_records_says_why():
    doc = dict(flow_document(), records=[], unavailable={"flows": "no flows records: not part of this run"})
    assert '<p class="empty">no flows records: not part of this run</p>' in _section(render_html(doc), "flows")


def test_collect_plans_one_flow_task_per_backend(monkeypatch):
    """kinds=["flows"]: one task per backend with ODE methods, calling run_flow_conformance with the
    report's quick flag (and the named methods the backend has; none: no task)."""
    calls = []
    monkeypatch.setattr(conformance, "run_flow_conformance",
                        lambda **kw: calls.append(kw) or [], raising=False)
    tasks, _, missing = collect_mod.plan(["reference", "scipy"], quick=True, kinds=["flows"])
    assert [(t.backend, t.kind) for t in tasks] == [("reference", "flows"), ("scipy", "flows")]
    assert "flows" not in missing and "sde" in missing
    for t in tasks:
        t.run()
    assert calls == [{"backend": "reference", "quick": True}, {"backend": "scipy", "quick": True}]
    calls.clear()
    tasks, _, _ = collect_mod.plan(["reference", "scipy"], quick=False, methods=["rk4", "RK45"], kinds=["flows"])
    for t in tasks:
        t.run()
    assert calls == [{"backend": "reference", "quick": False, "methods": ["rk4"]},
                     {"backend": "scipy", "quick": False, "methods": ["RK45"]}]
    tasks, _, _ = collect_mod.plan(["scipy"], quick=True, methods=["rk4"], kinds=["flows"])
    assert tasks == []


def test_a_crashed_flow_task_is_an_error_in_the_flows_section(monkeypatch):
    def boom(**kw):
        raise RuntimeError("no flows today")

    monkeypatch.setattr(conformance, "run_flow_conformance", boom, raising=False)
    tasks, _, _ = collect_mod.plan(["reference"], quick=True, kinds=["flows"])
    records = [r.to_dict() for r in collect_mod.run_tasks(tasks)]
    assert [r["verdict"] for r in records] == ["error"] and "no flows today" in records[0]["message"]
    doc = dict(flow_document(), records=records)
    assert "no flows today" in _section(render_html(doc), "flows")


@pytest.mark.slow
def test_report_flows_from_a_real_quick_run():
    if not hasattr(conformance, "run_flow_conformance"):
        pytest.skip("conformance.run_flow_conformance is not there yet")
    doc = collect_mod.collect(backends=["reference"], quick=True, kinds=["flows"])
    props = {r["property"] for r in doc["records"]}
    assert {"cnf_log_density", "hutchinson_variance"} <= props, props
    sec = _section(render_html(doc), "flows")
    assert len(re.findall(r"<svg class=\"figure\"", sec)) >= 2
