"""Gradient checks on the problems where a backsolve adjoint loses the state (issue 15).

Strongly dissipative, long-horizon and chaotic problems (``conformance._hard_gradient_problems``):
every backend's continuous adjoint reports its reconstruction mismatch, the gradient that is
wrong by orders of magnitude comes out ``fail`` (a recorded ``deviation`` in a conformance run,
the reason naming the measured figures), never a silent pass, and the mismatch is in the
record's details and, above 1, in its message. diffrax compiles each gradient (10-30 s): its
tests are ``slow``.
"""
from __future__ import annotations

import fnmatch

import numpy as np
import pytest

from odeverify import backends, conformance, expectations
from odeverify.gradients import Loss
from odeverify.gradients._spec import UNSTABLE_MISMATCH, reconstruction_mismatch
from odeverify.problems.classic import linear_problem
from odeverify.properties import gradients as G

pytest.importorskip("torchdiffeq")

DISSIPATIVE = conformance.gradient_problem("linear_dissipative")


def _accuracy(problem, backend: str, mode: str, **kw):
    times = conformance.GRADIENT_LOSS_TIMES.get(problem.name, 2)
    loss = G.default_loss(problem, times=times)
    method = conformance.GRADIENT_METHODS.get(backend, conformance.DEFAULT_GRADIENT_METHODS)[0]
    return G.gradient_accuracy(problem, method, mode, backend=backend, loss=loss, **kw)


def test_reconstruction_mismatch_definition():
    """The worst over the segment ends of max|z_rec - z| / max(1, max|z|)."""
    assert reconstruction_mismatch([]) == 0.0
    pairs = [(np.array([1.0, 2.5]), np.array([1.0, 2.0])), (np.array([0.1]), np.array([0.3]))]
    assert reconstruction_mismatch(pairs) == pytest.approx(0.25)  # 0.5 / 2 beats 0.2 / 1
    assert reconstruction_mismatch([(np.array([np.nan]), np.array([1.0]))]) == np.inf


@pytest.mark.parametrize("backend,mode", [("torchdiffeq", "adjoint"), ("torchdiffeq", "adjoint_seminorm"),
                                          ("reference-torch", "backsolve")])
def test_backsolve_on_strongly_dissipative_problem_is_not_a_silent_pass(backend, mode):
    """Spectrum -50 ... -20 (and -1) over [0, 1]: the backsolve gradient is off by more than
    10 times its size (measured 12 and 21) and the reconstruction by hundreds (570, 978)."""
    r = _accuracy(DISSIPATIVE, backend, mode)
    assert r.verdict == "fail", r.describe()
    assert r.measured > 1.0
    assert r.details["adjoint_mismatch"] > UNSTABLE_MISMATCH
    own = r.message
    assert "not reliable" in own and f"{r.details['adjoint_mismatch']:.3g}" in own
    dev = expectations.apply(r)  # a conformance run records it as a deviation, its own message kept
    assert dev.verdict == "deviation" and own in dev.message, dev.describe()


@pytest.mark.parametrize("backend,mode", [("torchdiffeq", "backprop"), ("reference-torch", "interpolated")])
def test_modes_that_do_not_solve_z_backward_pass_there(backend, mode):
    r = _accuracy(DISSIPATIVE, backend, mode)
    assert r.verdict == "pass", r.describe()
    assert r.details["adjoint_mismatch"] is None


def test_one_loss_time_gives_the_headline_error():
    """With one output time nothing resets the reconstruction: the gradient is wrong by ~1e12
    (issue 15 reported 1e11 passing silently) and must fail, on both PyTorch backends."""
    p = linear_problem([-50.0, -20.0, -1.0], seed=0, t_span=(0.0, 1.0))
    loss = G.default_loss(p, times=1)
    for backend, mode in (("torchdiffeq", "adjoint"), ("reference-torch", "backsolve")):
        r = G.gradient_accuracy(p, "dopri5", mode, backend=backend, loss=loss, rtol=1e-6)
        assert r.verdict == "fail" and r.measured > 1e9, r.describe()
        assert r.details["adjoint_mismatch"] > 1e9 and "not reliable" in r.message


def test_torchdiffeq_and_reference_mismatch_agree_in_definition():
    """The same algorithm on a mild problem: both mismatches small, positive, and of one size."""
    p = linear_problem([-2.0, -1.0, complex(-0.1, 1.5), complex(-0.1, -1.5)], seed=0, t_span=(0.0, 4.0))
    loss = Loss.seeded([1.0, 4.0], p.n, seed=1)
    a = backends.get("torchdiffeq").gradient(p, "dopri5", "adjoint", loss, rtol=1e-8, atol=1e-11)
    b = backends.get("reference-torch").gradient(p, "dopri5", "backsolve", loss, rtol=1e-8, atol=1e-11)
    assert 0 < a.adjoint_mismatch < 1e-3 and 0 < b.adjoint_mismatch < 1e-3
    assert 0.01 < a.adjoint_mismatch / b.adjoint_mismatch < 100, (a.adjoint_mismatch, b.adjoint_mismatch)


def test_quick_gradient_check_flags_the_dissipative_problem():
    """odeverify check --gradients --quick: the dissipative problem is in it, and its backsolve
    records are deviations carrying the mismatch, never passes."""
    assert "linear_dissipative" in conformance.QUICK_GRADIENT_PROBLEMS
    recs = conformance.run_gradient_conformance("torchdiffeq", quick=True, modes="adjoint")
    hard = [r for r in recs if r.problem == "linear_dissipative"]
    assert hard and all(r.verdict == "deviation" for r in hard), [r.describe() for r in hard]
    assert all("not reliable" in r.message for r in hard)


def _gradient_entries():
    return [e for e in expectations.load() if e.property.startswith("gradient")]


@pytest.mark.parametrize("backend", ["torchdiffeq", "reference-torch",
                                     pytest.param("diffrax", marks=pytest.mark.slow)])
def test_gradient_expected_failures_are_not_stale(backend):
    """Every gradient entry of expected_failures.toml for this backend still excuses a failing
    record of run_gradient_conformance's hard problems."""
    b = backends.get(backend)
    if not b.available():
        pytest.skip(f"{backend} is not installed")
    method = conformance.GRADIENT_METHODS.get(backend, conformance.DEFAULT_GRADIENT_METHODS)[0]

    def modes_of(e):
        return [m for m in b.capabilities().gradient_modes if fnmatch.fnmatchcase(f"{method}/{m}", e.method)]

    entries = [e for e in _gradient_entries() if fnmatch.fnmatchcase(backend, e.backend) and modes_of(e)]
    assert entries, f"no gradient entry of expected_failures.toml applies to {backend}"
    for e in entries:
        modes = modes_of(e)
        problems = [p for p in conformance.HARD_GRADIENT_PROBLEMS if fnmatch.fnmatchcase(p, e.problem)]
        assert problems, f"{e} names no hard gradient problem"
        for mode in modes:
            for name in problems:
                r = _accuracy(conformance.gradient_problem(name), backend, mode, count_nfev=False)
                assert r.verdict == "fail" and e.matches(r), f"{e} no longer excuses a failure: {r.describe()}"


@pytest.mark.slow
def test_diffrax_backsolve_reports_its_mismatch():
    """diffrax's own backward solves, watched: the mismatch is that of the reference's
    definition, flags the dissipative problem, and is None for discrete modes; a batch is
    compared sample by sample with its forward states."""
    pytest.importorskip("diffrax")
    for mode in ("backsolve", "backsolve_seminorm"):
        r = _accuracy(DISSIPATIVE, "diffrax", mode, count_nfev=False)
        assert r.verdict == "fail" and r.details["adjoint_mismatch"] > UNSTABLE_MISMATCH, r.describe()
        assert "not reliable" in r.message
    d = _accuracy(DISSIPATIVE, "diffrax", "direct", count_nfev=False)
    assert d.verdict == "pass" and d.details["adjoint_mismatch"] is None
    p = linear_problem([-2.0, -1.0], seed=0, t_span=(0.0, 1.0))
    loss = Loss.seeded([0.5, 1.0], p.n, seed=0)
    b = backends.get("diffrax")
    single = b.gradient(p, "Dopri5", "backsolve", loss, rtol=1e-8, atol=1e-11, count_nfev=False)
    y0 = np.stack([np.asarray(p.y0), 3 * np.asarray(p.y0)])
    batch = b.gradient(p, "Dopri5", "backsolve", loss, y0=y0, rtol=1e-8, atol=1e-11, count_nfev=False)
    assert 0 < single.adjoint_mismatch < 1e-5 and 0 < batch.adjoint_mismatch < 1e-4
    ref = backends.get("reference-torch").gradient(p, "dopri5", "backsolve", loss, rtol=1e-8, atol=1e-11)
    assert 0.01 < single.adjoint_mismatch / ref.adjoint_mismatch < 100
