"""The stiff part of the conformance run: Bari problems at a tight tolerance for every backend's
implicit methods (stiff_precision), and stiffness_handling on diffrax (one compilation per method:
the stiffness ratio's matrix is a traced argument)."""
from __future__ import annotations

import pytest

from odeverify import backends, conformance, expectations
from odeverify.backends.base import is_implicit
from odeverify.problems import PROBLEMS
from odeverify.problems.stiff import stiff_linear_problem
from odeverify.properties import PROPERTIES, stiff_precision
from odeverify.properties.stiffness import TIGHT_PROBLEMS, scd_floor, tight_rtol
from odeverify.records import Record

from .conftest import backend_or_skip


def test_tight_tolerance_and_floor_follow_the_order():
    assert PROPERTIES.get("stiff_precision") is stiff_precision
    assert [tight_rtol(p) for p in (1, 2, 3, 4, 5, 12)] == [1e-4, 1e-6, 1e-8, 1e-10, 1e-10, 1e-10]
    assert scd_floor(1e-10, 5) == pytest.approx(5 / 6 * 10 - 1)
    assert scd_floor(1e-4, 1) == pytest.approx(1.0)
    assert TIGHT_PROBLEMS == ("hires", "rober")


def test_a_peer_stiff_solver_passes_at_a_tight_tolerance_and_a_failed_solve_fails():
    backend_or_skip("scipy")
    hires = PROBLEMS.get("hires")
    rec = stiff_precision(hires, "LSODA", backend="scipy")
    assert rec.verdict == "pass", rec.message
    assert rec.details["rtol"] == 1e-10 and rec.details["options"]["jac"] is True
    assert rec.measured >= rec.expected == pytest.approx(scd_floor(1e-10, 12))
    short = stiff_precision(hires, "BDF", backend="scipy", max_steps=200)
    assert short.verdict == "fail" and short.status == "max_steps" and "max_steps" in short.message
    loose = stiff_precision(hires, "BDF", backend="scipy", rtol=1e-3)  # 1e-3 reaches ~2 digits, floor 1.5
    assert loose.details["floor"] == pytest.approx(scd_floor(1e-3, 5))
    assert stiff_precision(hires, "RK45", backend="scipy").verdict == "skip"


def test_conformance_runs_the_tight_check_and_diffrax_handling(monkeypatch):
    """Which checks _stiff_records asks for (the properties are stubbed: no solve, no compile)."""
    calls = []

    def stub(name):
        def fn(*args, **kwargs):
            problem = args[0].name if args and hasattr(args[0], "name") else "-"
            calls.append((name, kwargs.get("method", args[1] if len(args) > 1 else None), problem))
            return Record(property=name, method="m", problem=problem, measured=None, expected=None, verdict="pass")
        fn.__name__ = name
        return fn

    for name in ("stiff_precision", "stiffness_handling", "stiff_order"):
        monkeypatch.setattr(conformance, name, stub(name))
    b = backend_or_skip("diffrax")
    info = b.capabilities().method("Kvaerno5")
    conformance._stiff_records(b, info, {"backend": "diffrax"}, quick=False)
    assert ("stiff_precision", "Kvaerno5", "hires") in calls and ("stiff_precision", "Kvaerno5", "rober") in calls
    assert ("stiffness_handling", "Kvaerno5", "-") in calls
    calls.clear()
    conformance._stiff_records(b, info, {"backend": "diffrax"}, quick=True)
    assert [c for c in calls if c[0] == "stiff_precision"] == [("stiff_precision", "Kvaerno5", "hires")]
    assert not [c for c in calls if c[0] == "stiffness_handling"]


def test_diffrax_shares_one_compilation_across_stiffness_ratios():
    backend_or_skip("diffrax")
    from odeverify.backends.diffrax_backend import _field_key, _traced_params

    keys = {_field_key(stiff_linear_problem(r)) for r in (1e1, 1e3, 1e6)}
    assert len(keys) == 1
    assert set(_traced_params(stiff_linear_problem(10.0))) == {"A"}
    assert _field_key(PROBLEMS.get("hires")) != _field_key(PROBLEMS.get("rober"))


def test_handling_an_unstable_method_failing_on_the_least_stiff_problem_has_exploded():
    """An explicit method stopped by the step limit on the least stiff problem has exploded there
    (diffrax's ReversibleHeun, stable only on the imaginary axis); an A-stable one is an error."""
    rec = conformance.stiffness_handling("heun", max_steps=20)
    assert rec.verdict == "pass" and rec.measured == 10.0, rec.message
    assert "already reached the step limit (20 steps)" in rec.message
    stable = conformance.stiffness_handling("radau_iia5", max_steps=3)
    assert stable.verdict == "error" and stable.status == "max_steps"


@pytest.mark.slow
def test_diffrax_stiffness_handling_compiles_once_per_method():
    b = backend_or_skip("diffrax")
    before = b.compiles
    rec = conformance.stiffness_handling("Kvaerno5", backend="diffrax")
    assert rec.verdict == "pass", rec.message
    assert b.compiles - before == 1
    assert len(rec.details["points"]) == 6  # every ratio, up to 1e6, bounded work
    explicit = conformance.stiffness_handling("Tsit5", backend="diffrax")
    assert explicit.verdict == "pass" and explicit.measured is not None, explicit.message
    reversible = conformance.stiffness_handling("ReversibleHeun", backend="diffrax")
    assert reversible.verdict == "pass" and reversible.measured == 10.0, reversible.message


@pytest.mark.slow
@pytest.mark.parametrize("name", ["scipy", "reference", "diffrax"])
def test_every_implicit_method_passes_the_tight_bari_check_or_is_a_documented_deviation(name):
    b = backend_or_skip(name)
    bad, records = [], []
    for info in b.capabilities().methods.values():
        if not (is_implicit(info) and info.adaptive):
            continue
        for pname in TIGHT_PROBLEMS:
            rec = expectations.apply(conformance._safe(stiff_precision, PROBLEMS.get(pname), info.name, label=b.name,
                                                       backend=b.name))
            records.append(rec)
            if rec.verdict in ("fail", "error"):
                bad.append(rec.describe())
    assert not bad, "\n".join(bad)
    # every stiff_precision entry of expected_failures.toml for this backend still excuses a failure
    for e in expectations.load():
        if e.property == "stiff_precision" and e.backend == name:
            assert any(e.matches(r) and r.verdict == "deviation" for r in records), f"stale: {e}"
