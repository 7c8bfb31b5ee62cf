"""Stiff solvers of the peer libraries and the stiffness properties.

Cheap by default (NumPy reference and scipy; diffrax compiles ~3-8 s per method and mode
on the shared machine, so only Kvaerno3 in adaptive mode is compiled by default); the
diffrax order checks, its nfev-versus-callback check, the backward-Euler agreement and the
work-precision sweep are marked slow.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import odeverify
from odeverify import backends
from odeverify.backends import UnsupportedOption
from odeverify.backends.base import StiffnessWarning, is_implicit, stiffness_ratio
from odeverify.problems import PROBLEMS, Problem
from odeverify.problems.stiff import stiff_linear_problem
from odeverify.properties import (
    PROPERTIES,
    convergence_order,
    stiff_order,
    stiffness_estimate,
    stiffness_handling,
    work_precision,
)
from odeverify.properties.stiffness import prothero_robinson, stage_order
from odeverify.properties.work_precision import default_atol
from odeverify.solution import Status

HIRES = PROBLEMS.get("hires")
STIFF_1E6 = stiff_linear_problem(1e6)
POINT_FIELDS = {"rtol", "atol", "status", "message", "abs_error", "rel_error", "scd", "mescd", "nfev", "njev", "nlu",
                "accepted", "rejected", "wall_s", "wall_repeats", "compile_s"}


@pytest.fixture(autouse=True)
def _quiet_stiffness_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StiffnessWarning)
        yield


def test_properties_registered():
    for name in ("work_precision", "stiffness_estimate", "stiffness_handling", "stiff_order"):
        assert name in PROPERTIES.names()


# ---------------------------------------------------------------------------- work-precision
def test_work_precision_record_fields_and_monotone_digits():
    rec = work_precision(HIRES, "Radau", backend="scipy", tolerances=(1e-4, 1e-7), jac=True, repeats=2)
    assert rec.property == "work_precision" and rec.backend == "scipy" and rec.verdict == "pass"
    pts = rec.details["points"]
    assert [p["rtol"] for p in pts] == [1e-4, 1e-7]
    for p in pts:
        assert POINT_FIELDS <= set(p)
        assert p["status"] == "success" and p["nfev"] > 0 and p["njev"] > 0 and p["nlu"] > 0
        assert p["atol"] == pytest.approx(default_atol(HIRES, p["rtol"]))
        # the error is the one against the published reference, recomputed here independently
    assert pts[1]["scd"] > pts[0]["scd"] + 2  # three decades of tolerance buy > 2 digits
    assert pts[1]["nfev"] > pts[0]["nfev"]
    assert rec.measured == max(p["scd"] for p in pts)
    assert rec.to_json()  # JSON-safe


def test_work_precision_error_matches_reference():
    rec = work_precision(HIRES, "BDF", backend="scipy", tolerances=(1e-6,), repeats=1)
    sol = backends.get("scipy").solve(HIRES, "BDF", rtol=1e-6, atol=rec.details["points"][0]["atol"],
                                      max_steps=50_000)
    ref = np.asarray(HIRES.final_reference())
    err = np.abs(np.asarray(sol.ys[-1]) - ref)
    p = rec.details["points"][0]
    assert p["abs_error"] == pytest.approx(err.max(), rel=1e-12)
    assert p["scd"] == pytest.approx(-math.log10((err / np.abs(ref)).max()), rel=1e-12)


def test_default_atol_rule():
    ref = np.abs(np.asarray(HIRES.final_reference()))
    assert default_atol(HIRES, 1e-6) == pytest.approx(1e-6 * min(1.0, ref[ref > 0].min()))
    big = PROBLEMS.get("orego")  # components 1 ... 1e3 at t1: atol = rtol
    assert default_atol(big, 1e-6) == pytest.approx(1e-6 * min(1.0, np.abs(big.final_reference()).min()))
    e5 = np.abs(np.asarray(PROBLEMS.get("e5").final_reference()))  # y1 ~ 1e-291, y4 = 0: left out
    assert default_atol(PROBLEMS.get("e5"), 1e-6) == pytest.approx(1e-6 * e5[e5 >= 1e-200].min())


def test_work_precision_failure_is_a_point_not_an_exception():
    rec = work_precision(STIFF_1E6, "dopri5", tolerances=(1e-4, 1e-6), max_steps=300, repeats=1)
    assert rec.verdict == "error" and rec.status == "max_steps" and rec.measured is None
    assert [p["status"] for p in rec.details["points"]] == ["max_steps", "max_steps"]
    assert all(p["scd"] is None and p["message"] for p in rec.details["points"])


@pytest.mark.parametrize("kwargs, match", [({"tolerances": ()}, "tolerances"), ({"tolerances": (2.0,)}, "tolerances"),
                                           ({"atol": "abs"}, "atol"), ({"atol": -1.0}, "atol"),
                                           ({"repeats": 0}, "repeats")])
def test_work_precision_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        work_precision(HIRES, "Radau", backend="scipy", **kwargs)


def test_scipy_radau_hires_ten_digits_with_jac():
    rec = work_precision(HIRES, "Radau", backend="scipy", tolerances=(1e-10,), jac=True, repeats=1)
    assert rec.verdict == "pass", rec.message
    assert rec.details["points"][0]["scd"] >= 10


# ---------------------------------------------------------------------------- scipy jac option
@pytest.mark.parametrize("method", ["Radau", "BDF"])
def test_scipy_jac_option_honoured(method):
    """jac=True: no finite-difference columns (our nfev == scipy's); jac=False: each Jacobian
    costs n extra calls, plus a few where scipy's num_jac re-evaluates columns whose
    differences lost precision (our nfev - scipy's nfev >= n * njev)."""
    b = backends.get("scipy")
    analytic = b.solve(HIRES, method, rtol=1e-6, atol=1e-10, jac=True)
    fd = b.solve(HIRES, method, rtol=1e-6, atol=1e-10, jac=False)
    assert analytic.success and fd.success
    assert analytic.options["scipy_kwargs"]["jac"] == "analytic" and "jac" not in fd.options["scipy_kwargs"]
    assert analytic.stats.nfev == analytic.options["scipy_nfev"]
    assert 2 * HIRES.n * fd.stats.njev > fd.stats.nfev - fd.options["scipy_nfev"] >= HIRES.n * fd.stats.njev > 0
    np.testing.assert_allclose(np.asarray(analytic.ys[-1]), np.asarray(fd.ys[-1]), rtol=1e-4)


def test_scipy_jac_analytic_in_batch():
    b = backends.get("scipy")
    y0 = np.stack([HIRES.y0, 1.1 * np.asarray(HIRES.y0)])
    batch = b.solve(HIRES, "Radau", y0=y0, rtol=1e-6, atol=1e-10, jac=True)
    assert batch.success and batch.stats.nfev == batch.options["scipy_nfev"]


def test_bad_jac_values_rejected_with_named_errors():
    b = backends.get("scipy")
    with pytest.raises(ValueError, match="jac='yes'"):
        b.solve(HIRES, "Radau", jac="yes")
    no_jac = PROBLEMS.get("harmonic")
    assert no_jac.jac is None
    with pytest.raises(ValueError, match="no analytic Jacobian"):
        b.solve(no_jac, "Radau", jac=True)
    with pytest.raises(UnsupportedOption, match="explicit.*jac=True"):
        b.solve(HIRES, "RK45", jac=True)
    assert b.solve(no_jac, "RK45", jac=False).success  # jac=False: nothing to honour
    with pytest.raises(UnsupportedOption, match="explicit"):
        backends.get("torchdiffeq").solve(HIRES, "dopri5", jac=True)


def test_scipy_methods_declared_implicit():
    caps = backends.get("scipy").capabilities()
    assert {m for m, i in caps.methods.items() if i.implicit} == {"Radau", "BDF", "LSODA"}
    assert "nfev" in caps.methods["Radau"].notes and "finite differences" in caps.methods["Radau"].notes


# ---------------------------------------------------------------------------- explicit on stiff
def test_explicit_on_stiff_hits_max_steps_implicit_does_not():
    ref = backends.get("reference")
    explicit = ref.solve(STIFF_1E6, "dopri5", max_steps=2000)
    implicit = ref.solve(STIFF_1E6, "radau_iia5", max_steps=2000)
    assert explicit.status is Status.MAX_STEPS and explicit.stats.steps == 2000
    assert implicit.status is Status.SUCCESS and implicit.stats.steps < 500
    np.testing.assert_allclose(np.asarray(implicit.ys[-1]), STIFF_1E6.final_reference(), atol=1e-6)


def test_torchdiffeq_explicit_on_stiff_ends_with_a_status():
    pytest.importorskip("torchdiffeq")
    sol = backends.get("torchdiffeq").solve(STIFF_1E6, "dopri5", max_steps=200)
    assert sol.status is Status.MAX_STEPS and sol.stats.steps == 200


def test_stiffness_warning_for_explicit_methods_only():
    assert "stiff" in HIRES.tags
    with warnings.catch_warnings():
        warnings.simplefilter("error", StiffnessWarning)
        backends.get("scipy").solve(HIRES, "Radau", rtol=1e-3)  # implicit: no warning
        backends.get("reference").solve(HIRES, "kvaerno3", rtol=1e-3)  # implicit by its tableau
    with pytest.warns(StiffnessWarning, match=r"'hires' is tagged stiff.*'RK45' is explicit.*stiffness ratio"):
        backends.get("scipy").solve(HIRES, "RK45", max_steps=10)


def test_is_implicit_from_tableau_or_declaration():
    ref = backends.get("reference").capabilities()
    assert is_implicit(ref.methods["radau_iia5"]) and is_implicit(ref.methods["backward_euler"])
    assert not is_implicit(ref.methods["dopri5"])


# ---------------------------------------------------------------------------- estimate
def test_stiffness_estimate_returns_known_eigenvalues():
    ratio, n = 1e4, 4
    problem = stiff_linear_problem(ratio, n=n)
    rec = stiffness_estimate(problem, count=3)
    expected = -np.logspace(0, 4, n)  # the construction's spectrum: -1 ... -ratio, log-spaced
    for point in rec.details["points"]:
        eig = np.sort(np.asarray(point["eigenvalues"])[:, 0])
        np.testing.assert_allclose(eig, np.sort(expected), rtol=1e-9)
        assert np.all(np.asarray(point["eigenvalues"])[:, 1] == 0)
    assert rec.measured == pytest.approx(ratio, rel=1e-9)
    assert rec.details["jacobian"] == "analytic" and rec.details["stiff"]
    assert rec.details["max_spectral_radius"] == pytest.approx(ratio, rel=1e-9)


def test_stiffness_estimate_plain_field_fd_and_power_iteration():
    lam = np.array([-2.0, -50.0, -3000.0])

    def f(t, y):
        return lam * y

    ys, ts = np.ones((2, 3)), np.array([0.0, 1.0])
    fd = stiffness_estimate(f, ys, ts)
    assert fd.details["jacobian"] == "finite differences"
    assert fd.measured == pytest.approx(1500.0, rel=1e-6)
    power = stiffness_estimate(f, ys, ts, eig_max_n=0)
    assert power.details["max_stiffness_ratio"] is None
    assert power.details["max_spectral_radius"] == pytest.approx(3000.0, rel=1e-3)
    assert not stiffness_estimate(lambda t, y: -y, ys, ts).details["stiff"]
    with pytest.raises(ValueError, match="ys"):
        stiffness_estimate(f)


def test_stiffness_ratio_ignores_zero_eigenvalues():
    # ROBER conserves y1 + y2 + y3: one eigenvalue is 0 up to round-off
    assert stiffness_ratio(np.array([-1e-20, -1.0, -1e4])) == pytest.approx(1e4)
    assert stiffness_ratio(np.array([1.0, -3.0])) == 1.0


def test_stiffness_estimate_rober_is_stiff():
    rec = stiffness_estimate(PROBLEMS.get("rober"), count=8)
    assert rec.details["stiff"] and rec.measured > 1e6


# ---------------------------------------------------------------------------- handling
def test_stiffness_handling_explicit_explodes_linearly():
    rec = stiffness_handling("dopri5", ratios=(1e1, 1e2, 1e3, 1e4))
    assert rec.verdict == "pass", rec.message
    assert rec.details["stability_class"] == "grows"
    assert rec.measured in (1e2, 1e3)
    assert 0.7 < rec.details["steps_slope"] < 1.3  # steps ~ ratio once the fast mode is stiff


@pytest.mark.parametrize("method, backend", [("radau_iia5", "reference"), ("BDF", "scipy")])
def test_stiffness_handling_implicit_bounded(method, backend):
    rec = stiffness_handling(method, backend=backend)
    assert rec.verdict == "pass" and rec.measured is None, rec.message
    nfev = [p["nfev"] for p in rec.details["points"]]
    assert len(nfev) == 6 and max(nfev) < 10 * nfev[0]
    assert rec.details["steps_slope"] < 0.2


def test_stiffness_handling_detects_a_mismatch():
    """An explicit method whose sweep never leaves the non-stiff range cannot show its class: fail."""
    rec = stiffness_handling("dopri5", ratios=(1.5, 2.0, 3.0))
    assert rec.verdict == "fail" and rec.measured is None


# ---------------------------------------------------------------------------- stiff order
@pytest.mark.parametrize("tableau, q", [("backward_euler", 1), ("trapezoid", 2), ("kvaerno3", 2), ("kvaerno5", 2),
                                        ("radau_iia5", 3), ("dopri5", 1)])
def test_stage_order(tableau, q):
    """Stage orders from the literature: Radau IIA (s = 3) has 3, ESDIRKs with an explicit first
    stage 2, explicit methods 1 (Hairer & Wanner II, Sect. IV.5 and IV.15)."""
    assert stage_order(odeverify.TABLEAUS.get(tableau)) == q


@pytest.mark.parametrize("method, expected", [("radau_iia5", 3), ("kvaerno4", 2), ("backward_euler", 1)])
def test_stiff_order_reduction_to_stage_order(method, expected):
    rec = stiff_order(method)
    assert rec.verdict == "pass", rec.message
    assert rec.expected == expected and abs(rec.measured - expected) < 0.3
    assert rec.details["order_reduction"] == pytest.approx(rec.details["classical_order"] - rec.measured)
    assert rec.details["h_lam_min"] > 900  # |h lam| >> 1 over the whole sweep


def test_stiff_order_not_applicable():
    assert stiff_order("dopri5").verdict == "skip"
    assert "fixed-step" in stiff_order("Radau", backend="scipy").message


def test_prothero_robinson_exact():
    p = prothero_robinson(-10.0)
    f = p.vector_field(odeverify._xp.get_namespace("numpy"), np.float64)
    ts = np.linspace(0, 1, 5)
    y = p.exact(ts)
    h = 1e-6
    dy = (p.exact(ts + h) - p.exact(ts - h)) / (2 * h)
    np.testing.assert_allclose([f(t, yi) for t, yi in zip(ts, y)], dy, atol=1e-8)
    with pytest.raises(ValueError, match="lam"):
        prothero_robinson(1.0)


# ---------------------------------------------------------------------------- diffrax
@pytest.fixture(scope="module")
def diffrax_backend():
    pytest.importorskip("diffrax")
    return backends.get("diffrax")


def test_diffrax_implicit_declarations(diffrax_backend):
    caps = diffrax_backend.capabilities()
    assert {m: caps.methods[m].tableau for m in ("Kvaerno3", "Kvaerno4", "Kvaerno5", "ImplicitEuler")} == {
        "Kvaerno3": "kvaerno3", "Kvaerno4": "kvaerno4", "Kvaerno5": "kvaerno5", "ImplicitEuler": "backward_euler"}
    for m in ("Kvaerno3", "Kvaerno4", "Kvaerno5"):
        info = caps.methods[m]
        tab = odeverify.TABLEAUS.get(info.tableau)
        assert info.order == tab.order and info.embedded_order == info.order - 1 and info.implicit


PR_1E4 = prothero_robinson(-1e4)


def test_diffrax_kvaerno3_adaptive_counts_and_accuracy(diffrax_backend):
    sol = diffrax_backend.solve(PR_1E4, "Kvaerno3", rtol=1e-6, atol=1e-9)
    assert sol.success, sol.message
    assert abs(float(np.asarray(sol.ys[-1])[0]) - PR_1E4.exact(np.asarray([1.0]))[0, 0]) < 1e-6
    assert sol.stats.njev == sol.stats.nlu == sol.stats.steps > 0
    # every step costs at least its 3 implicit stages, each one Jacobian-free Newton evaluation or more
    assert sol.stats.nfev >= 3 * sol.stats.steps
    again = diffrax_backend.solve(PR_1E4, "Kvaerno3", rtol=1e-6, atol=1e-9)
    assert again.timing["compile_s"] == 0.0 and again.stats.nfev == sol.stats.nfev  # counter reset per run


@pytest.mark.slow
def test_diffrax_implicit_nfev_equals_callback_count(diffrax_backend):
    sol = diffrax_backend.solve(PR_1E4, "Kvaerno3", rtol=1e-6, atol=1e-9)
    assert sol.stats.nfev == diffrax_backend.count_nfev(PR_1E4, "Kvaerno3", rtol=1e-6, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["Kvaerno3", "Kvaerno4", "Kvaerno5"])
def test_diffrax_kvaerno_fixed_order(diffrax_backend, method):
    rec = convergence_order(PROBLEMS.get("warped_fast"), method, backend="diffrax")
    assert rec.verdict == "pass", rec.message


@pytest.mark.slow
def test_diffrax_implicit_euler_agrees_with_backward_euler(diffrax_backend):
    problem = PROBLEMS.get("warped_oscillatory")
    ours = diffrax_backend.solve(problem, "ImplicitEuler", n_steps=40)
    ref = backends.get("reference").solve(problem, "backward_euler", n_steps=40)
    assert ours.success and ref.success
    np.testing.assert_allclose(np.asarray(ours.ys[-1]), np.asarray(ref.ys[-1]), rtol=1e-8, atol=1e-10)


def test_diffrax_jac_and_imex_refused(diffrax_backend):
    with pytest.raises(UnsupportedOption, match="autodiff"):
        diffrax_backend.solve(HIRES, "Kvaerno5", jac=True)
    with pytest.raises(UnsupportedOption, match="split"):
        diffrax_backend.solve(HIRES, "KenCarp4")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["Kvaerno3", "Kvaerno5"])
def test_diffrax_stiff_order_slow(diffrax_backend, method):
    rec = stiff_order(method, backend="diffrax")
    assert rec.verdict == "pass" and rec.expected == 2, rec.message


@pytest.mark.slow
def test_work_precision_sweep_slow():
    for method, backend, kw in [("Radau", "scipy", {"jac": True}), ("BDF", "scipy", {}), ("radau_iia5", "reference", {}),
                                ("Kvaerno5", "diffrax", {})]:
        rec = work_precision(HIRES, method, backend=backend, tolerances=(1e-4, 1e-6, 1e-8), repeats=1, **kw)
        assert rec.verdict == "pass", (method, rec.message)
        scds = [p["scd"] for p in rec.details["points"]]
        assert scds[-1] > scds[0], (method, scds)
