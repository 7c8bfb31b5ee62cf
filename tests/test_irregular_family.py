"""The ``irregular`` check family: its run, its method validation and its explorations."""
from __future__ import annotations

import json

import pytest

families = pytest.importorskip("odeverify.families")
if not hasattr(families, "register_family"):
    pytest.skip("odeverify.families has no registry yet", allow_module_level=True)

from odeverify import explore  # noqa: E402
from odeverify.families import irregular as F  # noqa: E402
from odeverify.problems.irregular import irregular_batch  # noqa: E402


def test_run_on_scipy_grades_the_union_and_skips_the_gradients():
    records = F.run_irregular_conformance(backend="scipy", quick=True)
    props = [r.property for r in records]
    assert props == ["union_times_cost", "irregular_gradient_accuracy"]
    assert records[0].verdict == "pass" and records[1].verdict == "skip"
    assert "no gradient modes" in records[1].message


def test_methods_and_validation():
    assert F.irregular_methods("reference", True) == ["dopri5"]
    with pytest.raises(ValueError, match="dopri5"):
        F.validate_irregular("reference", "dopri55")
    with pytest.raises(ValueError, match="fixed-step"):
        F.validate_irregular("reference", "rk4")
    with pytest.raises(ValueError, match="rk4"):
        F.run_irregular_conformance(backend="reference", methods="rk4")


def test_explorations_are_registered_and_a_case_replays():
    for name in ("union_times_cost", "dense_vs_stepped_output"):
        assert explore.EXPLORATIONS.get(name).family == "irregular"
    spec = irregular_batch(times=[[0.5, 0.5 + 1e-9, 2.0], [1.0]], t_span=(0.0, 4.0), seed=3).spec
    case = explore.make_case("union_times_cost", "reference", "dopri5", spec, {"rtol": 1e-6})
    r = explore.run_case(json.dumps(case))
    assert r.verdict == "pass", r.message
    assert r.details["union_times"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["reference", "torchdiffeq"])
def test_quick_run_passes(backend):
    """``check --irregular --quick`` on the reference (20 s) and torchdiffeq (24 s): every record
    passes (the reference's: union, dense vs stepped, 4 gradient modes x 2 problems, the ODE-RNN)."""
    from odeverify import backends
    if not backends.get(backend).available():
        pytest.skip(f"{backend} is not installed")
    records = F.run_irregular_conformance(backend=backend, quick=True)
    assert records and all(r.verdict == "pass" for r in records), [r.describe() for r in records
                                                                   if r.verdict != "pass"]
