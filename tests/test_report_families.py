"""The report's sections of the check families without a section of their own (CDEs, events,
irregular times, plug-ins): built from the document alone (``doc["families"]``)."""
from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("jinja2")

from odeverify.report import render_html, sections  # noqa: E402
from odeverify.report.collect import KINDS, REPORT_FAMILIES, family_descriptions  # noqa: E402


def _rec(prop, method, verdict, **details):
    return {"property": prop, "method": method, "problem": "p", "backend": "reference", "measured": 1.0,
            "expected": 1.0, "verdict": verdict, "status": "success", "message": f"{prop} says {verdict}",
            "details": details}


DOC = {
    "backends": [{"name": "reference", "available": True, "install_hint": "", "methods": ["dopri5"]}],
    "families": {"toyfam": {"title": "Toy family", "help": "grade toys", "properties": ["toy_a", "toy_b"],
                            "doc": "docs/toy.md"}},
    "records": [
        _rec("toy_a", "dopri5", "pass", plot={"title": "error vs step", "xlabel": "h", "ylabel": "error",
                                              "series": [{"label": "dopri5", "x": [0.1, 0.01], "y": [1e-3, 1e-8]}]}),
        _rec("toy_b", "dopri5", "fail"),
        _rec("convergence_order", "dopri5", "pass"),
    ],
}


def test_a_family_gets_its_own_section_matrix_and_figures():
    secs = {s.id: s for s in sections(DOC)}
    sec = secs["family-toyfam"]
    assert sec.title == "Toy family" and "grade toys" in sec.intro and "check --toyfam</code>: grade toys" in sec.intro
    (matrix, table) = sec.tables
    assert matrix.header == ["method", "toy_a", "toy_b"]
    assert matrix.rows[0][1:] == [("ok", "v-pass"), ("FAIL", "v-fail")]
    assert len(table.rows) == 2 and not table.collapsed
    (fig,) = sec.figures
    assert "<svg" in fig["svg"] and "error vs step" in fig["caption"]
    # the family's records are not repeated among "all other checks", and the summary has its matrix
    assert all(row[1] not in ("toy_a", "toy_b") for t in secs["other-checks"].tables for row in t.rows)
    assert any("toyfam checks" in t.caption for t in secs["summary"].tables)
    assert "Toy family" in render_html(DOC)


def test_a_record_with_a_step_sweep_gets_an_error_figure():
    rec = _rec("toy_b", "rk4", "pass", h=[0.1, 0.05, 0.025, 0.0125], error=[1e-4, 6.25e-6, float("nan"), 2.4e-8])
    doc = dict(DOC, records=[rec, _rec("toy_a", "rk4", "pass", h=[0.1], error=[1e-3])])
    (fig,) = {s.id: s for s in sections(doc)}["family-toyfam"].figures  # one point: no figure
    assert "toy_b: rk4 on p" in fig["caption"] and "<svg" in fig["svg"]


def test_a_family_without_records_says_so():
    doc = dict(DOC, records=[])
    sec = {s.id: s for s in sections(doc)}["family-toyfam"]
    assert sec.empty and "toyfam" in sec.empty


def test_every_registered_family_is_a_report_kind_with_a_description():
    descs = family_descriptions()
    assert set(descs) == set(REPORT_FAMILIES) and set(REPORT_FAMILIES) <= set(KINDS)
    for d in descs.values():
        assert d["title"] and d["help"] and d["properties"]
