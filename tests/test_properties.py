"""Adaptive-step properties, cross-library agreement and the expected-failures file."""
from __future__ import annotations

import pytest

from odeverify import SOLVERS, expectations
from odeverify import conformance
from odeverify.conformance import run_conformance
from odeverify.problems import PROBLEMS
from odeverify.properties import embedded_estimate_bound, library_agreement, tolerance_proportionality
from odeverify.records import Record

from .conftest import namespace_or_skip

ADAPTIVE = [m for m in SOLVERS.names() if SOLVERS.get(m).adaptive]
# the variable-order BDF has no fixed-step mode to compare and no single tolerance exponent
# (tolerance_proportionality records "skip"); tests/test_bdf.py checks both its exponent and libraries
FIXED_ORDER = [m for m in SOLVERS.names() if not getattr(SOLVERS.get(m), "variable_order", False)]
PROBLEM = "warped_oscillatory"


def judged(rec: Record) -> Record:
    return expectations.apply(rec)


@pytest.mark.parametrize("method", [m for m in ADAPTIVE if m in FIXED_ORDER])
def test_tolerance_proportionality(method):
    rec = judged(tolerance_proportionality(PROBLEMS.get(PROBLEM), method))
    assert rec.verdict in ("pass", "deviation"), rec.describe()
    # the work grows as the tolerance shrinks
    nfev = rec.details["nfev"]
    assert all(b >= a for a, b in zip(nfev, nfev[1:])), nfev


@pytest.mark.parametrize("method", ADAPTIVE)
def test_embedded_estimate_bounds_true_local_error(method):
    rec = judged(embedded_estimate_bound(PROBLEMS.get(PROBLEM), method))
    assert rec.verdict in ("pass", "deviation"), rec.describe()


@pytest.mark.parametrize("method", FIXED_ORDER)
@pytest.mark.parametrize("lib", ["array_api_strict", "torch", "jax"])
def test_same_numbers_on_every_library_fixed_step(method, lib):
    namespace_or_skip(lib)
    rec = library_agreement(PROBLEMS.get(PROBLEM), method, library=lib, n_steps=32, t_eval=[0.0, 1.1, 3.0])
    assert rec.verdict == "pass", rec.describe()


@pytest.mark.parametrize("method", ["dopri5", "dop853", "bosh3"])
@pytest.mark.parametrize("lib", ["torch", "jax"])
def test_same_numbers_and_same_steps_adaptive(method, lib):
    namespace_or_skip(lib)
    rec = library_agreement(PROBLEMS.get(PROBLEM), method, library=lib, n_steps=None, rtol=1e-7, atol=1e-9)
    assert rec.verdict == "pass", rec.describe()
    assert rec.details["same_work"]


def test_float32_agrees_with_float64_to_float32_precision():
    from odeverify.metrics import as_numpy
    from odeverify.properties._common import run

    p = PROBLEMS.get(PROBLEM)
    a = run(p, "dopri5", dtype="float64", rtol=1e-5, atol=1e-6)
    b = run(p, "dopri5", dtype="float32", rtol=1e-5, atol=1e-6)
    assert b.ys.dtype.name == "float32"
    diff = abs(as_numpy(a.ys[-1]) - as_numpy(b.ys[-1])).max()
    assert diff < 1e-4, f"float32 vs float64 difference={diff:.2e}, but should be < 1e-4 at rtol 1e-5"


def test_expected_failures_are_not_stale():
    """Every entry of expected_failures.toml still matches a record that fails without it."""
    import fnmatch

    from odeverify import backends

    entries = expectations.load()
    assert all(e.reason for e in entries)
    # gradient properties come from run_gradient_conformance: tests/test_gradients_hard.py checks those;
    # the tight Bari solves and the max_order sweeps are not in a quick run: tests/test_conformance_stiff.py
    # (slow) and tests/test_options.py check that their entries still excuse a failing record
    # entries found by `odeverify explore` carry their shrunk case: tests/test_explore.py replays those
    # SDE entries: tests/test_sde_conformance.py
    # event entries (check --events, not run_conformance): tests/test_event_backends.py; the other check
    # families' entries (cde_*: tests/test_cde_backends.py) likewise come from their own runs
    from odeverify.families import FAMILIES

    family_props = {p for name in FAMILIES.names() for p in FAMILIES.get(name).properties}
    entries = [e for e in entries if not e.case and not e.property.startswith("gradient")
               and e.property not in ("stiff_precision", "max_order_sweep") and not e.property.startswith("sde_")
               and e.property != "ito_stratonovich_consistency" and not e.property.startswith("event_")
               and e.property not in family_props]
    by_backend: dict[str, list] = {}
    for e in entries:
        # a pattern ("*", "reference*") is checked on the NumPy reference, the cheapest match
        by_backend.setdefault("reference" if e.backend in ("*", "reference*") else e.backend, []).append(e)
    for name, group in by_backend.items():
        b = backends.get(name)
        if not b.available():
            continue
        methods = sorted({m for e in group for m in b.capabilities().methods if fnmatch.fnmatchcase(m, e.method)})
        quick_problems = (*conformance.QUICK_ORDER_PROBLEMS, conformance.DENSE_PROBLEM,
                          conformance.TOLERANCE_PROBLEM, conformance.AGREEMENT_PROBLEM,
                          *conformance.QUICK_PUBLISHED_PROBLEMS)
        quick = all(any(fnmatch.fnmatchcase(p, e.problem) for p in quick_problems) for e in group)
        records = run_conformance(backend=name, quick=quick, methods=methods)
        for e in group:
            hits = [r for r in records if e.matches(r) and r.verdict == "deviation"]
            assert hits, f"expected failure {e} excuses no failing record: remove it or fix the pattern"


def test_records_serialise_to_json():
    rec = tolerance_proportionality(PROBLEMS.get(PROBLEM), "dopri5")
    text = rec.to_json()
    assert '"property": "tolerance_proportionality"' in text
    with pytest.raises(ValueError, match="verdict='maybe'"):
        Record(property="x", method="m", problem="p", measured=None, expected=None, verdict="maybe")
