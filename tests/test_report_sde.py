"""The report's SDE section: it renders from a records document (synthetic records here, so
it is fast), its tables name verdicts, intervals and the paths that would settle an
inconclusive order, its figures are valid SVG; SDE-only libraries get no ODE tasks."""
from __future__ import annotations

import importlib
import re
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("matplotlib", reason="the report needs the 'report' extra (matplotlib)")
pytest.importorskip("jinja2", reason="the report needs the 'report' extra (jinja2)")

from odeverify import backends  # noqa: E402
from odeverify.report import render, render_html  # noqa: E402

collect_mod = importlib.import_module("odeverify.report.collect")
H = [0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625]


def _strong(backend, method, problem, verdict, slope, ci, message=""):
    fit = {"slope": slope, "ci": ci, "mean_error": [0.1 * h ** slope / H[0] ** slope for h in H]}
    return {"property": "sde_strong_order", "backend": backend, "method": method, "problem": problem,
            "measured": slope, "expected": 0.5, "verdict": verdict, "status": "success", "message": message,
            "details": {"h": H, "n_steps": [16, 32, 64, 128, 256], "paths": 400, "noise_class": "commutative",
                        "at_t1": fit, "max_over_grid": dict(fit, slope=slope - 0.01)}}


def _weak(backend, method, problem, verdict, message="", unresolved=False):
    bias = [0.9 * h / H[0] for h in H]
    se = [0.01] * 5
    second = ({"slope": None, "ci": [None, None], "unresolved": True, "paths_needed": 90879, "bias": bias,
               "standard_error": [1.0] * 5, "resolved": [False] * 5} if unresolved else
              {"slope": 0.98, "ci": [0.93, 1.06], "bias": bias, "standard_error": se, "resolved": [True] * 5})
    return {"property": "sde_weak_order", "backend": backend, "method": method, "problem": problem,
            "measured": second["slope"], "expected": 1.0, "verdict": verdict, "status": "success",
            "message": message, "details": {"h": H, "paths": 4000, "noise_class": "commutative",
                                            "estimator": "control variate", "second_moment": second,
                                            "mean": {"slope": 0.996, "ci": [0.923, 1.101], "bias": bias,
                                                     "standard_error": se, "resolved": [True] * 5}}}


def sde_document() -> dict:
    records = [
        _strong("reference", "euler", "gbm_ito", "pass", 0.618, [0.568, 0.663]),
        _weak("reference", "euler", "gbm_ito", "pass"),
        _strong("torchsde", "euler", "gbm_ito", "fail", 0.2, [0.15, 0.25], "the interval lies below the claim"),
        _strong("torchsde", "heun", "gbm_ito[stratonovich]", "skip", 0.9, [0.2, 1.6],
                "inconclusive: E|error(T)| slope 0.9 is too wide; about 1234 paths would settle it"),
        _weak("torchsde", "euler", "kp_cubic", "skip", "inconclusive: fewer than 3 step sizes", unresolved=True),
        {"property": "sde_pathwise_agreement", "backend": "torchsde", "method": "euler", "problem": "gbm_ito",
         "measured": 0.0, "expected": 64.0, "verdict": "pass", "status": "success", "message": "", "details": {}},
        {"property": "sde_reversibility", "backend": "reference", "method": "reversible_heun", "problem": "gbm_ito",
         "measured": 1e-15, "expected": None, "verdict": "pass", "status": "success", "message": "", "details": {}},
    ]
    return {"schema": collect_mod.SCHEMA, "version": "0", "quick": True, "elapsed_s": 1.0, "environment": {},
            "unavailable": {}, "records": records,
            "backends": [{"name": "reference", "available": True, "install_hint": "", "methods": [],
                          "sde_methods": ["euler"], "sde_method_info": {"euler": {"rule": "euler"}}},
                         {"name": "torchsde", "available": True, "install_hint": "", "methods": [],
                          "sde_methods": ["euler", "heun"],
                          "sde_method_info": {"euler": {"rule": "euler"}, "heun": {"rule": "heun"}}}]}


def _section(html: str, sid: str) -> str:
    i = html.index(f'<section id="{sid}">')
    return html[i:html.index("</section>", i)]


def test_sde_section_names_verdicts_intervals_and_paths_to_settle():
    html = render_html(sde_document())
    sec = _section(html, "sde")
    for caption in ("reference: strong order", "reference: weak order", "torchsde: strong order",
                    "torchsde: weak order"):
        assert caption in sec, caption
    assert "0.618 [0.568, 0.663]" in sec and "0.98 [0.93, 1.06]" in sec
    assert re.search(r'class="v-fail">FAIL<', sec)
    # an inconclusive strong order gives the message's count, a weak one its fit's paths_needed
    assert "inconclusive: ~1,234 paths would settle it" in sec
    assert "inconclusive: ~90,879 paths would settle it" in sec and "unresolved (~90,879 paths)" in sec
    # the other SDE checks are listed here, not in the gradient, drift or other-checks sections
    assert "sde_pathwise_agreement" in sec and "sde_reversibility" in sec
    for sid in ("reversibility", "gradients", "other-checks"):
        assert "sde_" not in _section(html, sid), sid
    # the summary has an SDE matrix per backend
    assert "torchsde: SDE methods x SDE checks" in _section(html, "summary")


def test_sde_figures_are_valid_svg_with_a_panel_per_order():
    sec = _section(render_html(sde_document()), "sde")
    svgs = re.findall(r"<svg class=\"figure\".*?</svg>", sec, flags=re.S)
    # (reference, gbm_ito), (torchsde, gbm_ito with its Stratonovich form), (torchsde, kp_cubic)
    assert len(svgs) == 3
    for svg in svgs:
        ET.fromstring(svg)  # well-formed XML
        for label in ("step size h", "mean error at T", "bias of the second moment"):
            assert f"<!-- {label} -->" in svg, label
    assert "<!-- heun (torchsde) on [stratonovich] -->" in svgs[1]


def test_sde_section_without_records_says_why():
    doc = dict(sde_document(), records=[], unavailable={"sde": "no sde records: not part of this run"})
    assert '<p class="empty">no sde records: not part of this run</p>' in _section(render_html(doc), "sde")


def test_paths_to_settle_takes_the_largest_count():
    rec = {"message": "about 12 paths would settle it; about 340 paths would resolve the finest",
           "details": {"mean": {"paths_needed": 56}}}
    assert render.paths_to_settle(rec) == 340
    assert render.paths_to_settle({"message": "", "details": {}}) is None


def test_sde_only_backend_gets_sde_tasks_and_no_ode_tasks():
    """torchsde has SDE methods and no ODE methods: only SDE tasks; scipy (no SDE methods) gets
    none; --quick keeps Euler-Maruyama and stochastic Heun."""
    if not backends.get("torchsde").available():
        pytest.skip("torchsde is not installed")
    assert backends.get("torchsde").capabilities().methods == {}
    tasks, rows, _ = collect_mod.plan(["torchsde", "scipy", "reference"], quick=True)
    mine = [t for t in tasks if t.backend == "torchsde"]
    assert mine and {t.kind for t in mine} == {"sde"}, [(t.label, t.kind) for t in mine]
    assert {t.method for t in mine} == {"euler", "heun"}
    assert not [t for t in tasks if t.backend == "scipy" and t.kind == "sde"]
    ref = [t for t in tasks if t.backend == "reference" and t.kind == "sde"]
    assert {t.method for t in ref} == {"euler", "heun", "*"}  # "*": the shared records, once
    labels = [t.label for t in tasks]
    assert len(labels) == len(set(labels)), "task labels must be unique (journal, parallel units)"
    full, _, _ = collect_mod.plan(["torchsde"], quick=False, kinds=("sde",))
    assert {t.method for t in full} == set(backends.get("torchsde").capabilities().sde_methods)


def test_sde_tasks_run_as_parallel_units_with_the_serial_records():
    """A task of the plan runs through run_unit (the -j path) with the same records as in-process."""
    if not backends.get("torchsde").available():
        pytest.skip("torchsde is not installed")
    kwargs = {"backends": ["torchsde"], "quick": True, "methods": ["euler"], "kinds": ["sde"]}
    tasks, _, _ = collect_mod.plan(["torchsde"], quick=True, methods=["euler"], kinds=["sde"])
    assert [t.label for t in tasks] == ["torchsde: euler SDE"]
    # the gradient records carry their wall times in their details: compare the verdicts and figures
    def key(r):
        return (r.property, r.method, r.problem, r.verdict, r.measured, r.expected)

    serial = [key(r) for r in tasks[0].run()]
    unit = [key(r) for r in collect_mod.run_unit(**kwargs, label=tasks[0].label)["records"]]
    assert serial == unit and {k[0] for k in serial} >= {"sde_strong_order", "sde_weak_order"}


@pytest.mark.slow
def test_report_quick_with_torchsde_registered_does_not_crash(tmp_path):
    from odeverify import cli

    assert cli.main(["report", "--quick", "--backends", "reference,torchsde", "--out", str(tmp_path)]) == 0
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "torchsde: strong order" in _section(html, "sde")


def test_strong_error_bars_are_drawn_where_the_record_has_standard_errors():
    """slope_interval records no per-step standard error today; where a record has one, the
    strong panel draws +- 1.96 SE bars (the figure changes), and none otherwise."""
    style = render.Style(sde_document())
    plain = _strong("reference", "euler", "gbm_ito", "pass", 0.618, [0.568, 0.663])
    bars = _strong("reference", "euler", "gbm_ito", "pass", 0.618, [0.568, 0.663])
    bars["details"]["at_t1"]["standard_error"] = [0.004] * 5
    assert render._sde_series(plain, style, False)["yerr"] is None
    yerr = render._sde_series(bars, style, False)["yerr"]
    assert list(yerr) == pytest.approx([render.Z95 * 0.004] * 5)
