"""The fast explicit Runge–Kutta step (``solve(compiled=...)``): one jitted function per step
on JAX, fused stage combinations on PyTorch. It must take the NumPy reference's steps exactly
(same nfev, accepted, rejected) with values equal to a few ulps per step, and a tableau with
one perturbed weight must give the perturbed result however warm the compile cache is."""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from odeverify import _xp, solve
from odeverify.properties.agreement import ULPS_PER_STEP
from odeverify.solvers import SOLVERS
from odeverify.solvers.rk import CompiledJaxStep, ExplicitRK, FusedTorchStep

A = np.asarray([[-0.3, 1.2, 0.0], [-1.0, -0.1, 0.4], [0.2, -0.5, -0.7]])
Y0 = np.asarray([[0.7, -0.2, 1.1], [-0.4, 0.9, 0.3]])
T_EVAL = np.linspace(0.0, 4.0, 7)


def field(xp):
    """Nonlinear and time-dependent (a linear autonomous problem cannot tell RK methods of
    one order apart); written once against the Array API."""
    a = xp.asarray(A)

    def f(t, y):
        return xp.tanh(y @ xp.matrix_transpose(a)) * (1.0 + 0.5 * xp.sin(t)[..., None]) - 0.1 * y**3

    return f


def ulps_per_step(a, b) -> float:
    a, b = np.asarray(_xp.to_numpy(a)), np.asarray(_xp.to_numpy(b))
    return float(np.max(np.abs(a - b)) / (max(1.0, float(np.max(np.abs(b)))) * np.finfo(np.float64).eps))


def same_work(a, b) -> tuple:
    return ((a.stats.nfev, a.stats.accepted, a.stats.rejected, a.status),
            (b.stats.nfev, b.stats.accepted, b.stats.rejected, b.status))


def dense_amplification(method) -> float:
    """max over theta of sum_i |b_i(theta)|: how much the dense output can magnify a last-bit
    difference in the stages (1.66 for dopri5, 20.9 for dop853); 1 for a step end. A
    reordered sum rounds each stage differently in the last bit, and so does another
    library's tanh: the eager JAX path, too, is more than 4 ulps per step from NumPy at
    dop853's dense outputs on this problem."""
    s = SOLVERS.get(method) if isinstance(method, str) else method
    if not s.has_dense:
        return 1.0
    return max(1.0, float(np.abs(s.dense_weights(np.linspace(0.0, 1.0, 201))).sum(-1).max()))


def check_agrees(fast, ref, what: str, method) -> None:
    """Identical work; the end point (a step end: T_EVAL ends on t1) within ULPS_PER_STEP of
    NumPy, the dense outputs within ULPS_PER_STEP times the dense weights' amplification."""
    steps = max(1, ref.stats.accepted + ref.stats.rejected)
    wa, wb = same_work(fast, ref)
    assert wa == wb, f"{what}: (nfev, accepted, rejected, status) {wa} on the fast path, {wb} on NumPy"
    assert fast.t_steps is None or len(fast.t_steps) == len(ref.t_steps)
    u = ulps_per_step(fast.ys[-1], ref.ys[-1]) / steps
    assert u <= ULPS_PER_STEP, f"{what}: end point {u:.3g} ulps per step from NumPy (bound {ULPS_PER_STEP})"
    bound = ULPS_PER_STEP * dense_amplification(method)
    u = ulps_per_step(fast.ys, ref.ys) / steps
    assert u <= bound, f"{what}: dense outputs {u:.3g} ulps per step from NumPy (bound {bound:.3g})"


CASES = [("dopri5", {}), ("dop853", {}), ("rk4", {"n_steps": 40})]


@pytest.fixture(scope="module")
def numpy_solutions():
    f = field(_xp.get_namespace("numpy"))
    return {m: solve(f, Y0, (0.0, 4.0), method=m, t_eval=T_EVAL, rtol=1e-7, atol=1e-9, compiled=False, **kw)
            for m, kw in CASES}


# ----------------------------------------------------------------------------- JAX
@pytest.fixture(scope="module")
def jxp():
    pytest.importorskip("jax")
    return _xp.get_namespace("jax")


@pytest.fixture(scope="module")
def jf(jxp):
    """One JAX field object for the module: its compiled steps are cached across tests."""
    return field(jxp)


#: DOP853's compilations (two step variants, twelve stages) take ~10 s of CPU: slow
JAX_CASES = [pytest.param(m, kw, id=m, marks=pytest.mark.slow if m == "dop853" else ()) for m, kw in CASES]


@pytest.mark.parametrize("method,kw", JAX_CASES)
def test_jax_compiled_takes_the_numpy_steps(jxp, jf, numpy_solutions, method, kw):
    """FSAL (dopri5), non-FSAL with two estimates and lazy first stages (dop853), fixed step
    without an estimate (rk4); output times between steps read the compiled stages."""
    f = jf
    traces = CompiledJaxStep.stats["traces"]
    sol = solve(f, jxp.asarray(Y0), (0.0, 4.0), method=method, t_eval=T_EVAL, rtol=1e-7, atol=1e-9,
                compiled=True, **kw)
    assert CompiledJaxStep.stats["traces"] > traces, "the compiled path did not run"
    check_agrees(sol, numpy_solutions[method], f"{method} on JAX, compiled", method)
    # the same field again: the cached step, no new compilation
    traces = CompiledJaxStep.stats["traces"]
    again = solve(f, jxp.asarray(Y0), (0.0, 4.0), method=method, t_eval=T_EVAL, rtol=1e-7, atol=1e-9,
                  compiled=True, **kw)
    assert CompiledJaxStep.stats["traces"] == traces
    np.testing.assert_array_equal(np.asarray(again.ys), np.asarray(sol.ys))


def perturbed(name: str, weight: int, delta: Fraction) -> ExplicitRK:
    """The tableau of ``name`` with b[weight] moved by delta and b[weight + 1] by -delta (the
    weights still sum to 1, so the step stays consistent: a quiet, first-order fault)."""
    tab = SOLVERS.get(name).tableau
    b = list(tab.b)
    b[weight] += delta
    b[weight + 1] -= delta
    return ExplicitRK(dataclasses.replace(tab, name=f"{name}_planted", b=tuple(b)))


def test_a_planted_weight_is_not_hidden_by_the_cache(jxp, jf):
    f = jf
    y0 = jxp.asarray(Y0)
    kw = dict(t_eval=T_EVAL, n_steps=40)
    true = solve(f, y0, (0.0, 4.0), method="rk4", compiled=True, **kw)  # warms the cache for this field
    bad = perturbed("rk4", 1, Fraction(1, 1000))
    assert bad.coefficient_key() != SOLVERS.get("rk4").coefficient_key()
    got = solve(f, y0, (0.0, 4.0), method=bad, compiled=True, **kw)
    eager = solve(f, y0, (0.0, 4.0), method=bad, compiled=False, **kw)
    assert ulps_per_step(got.ys, eager.ys) / 40 <= ULPS_PER_STEP * dense_amplification(bad)
    shift = float(np.max(np.abs(np.asarray(got.ys) - np.asarray(true.ys))))
    assert shift > 1e-6, f"the planted weight moved the solution by only {shift:.2e}"


def test_auto_mode_compiles_a_field_from_its_second_solve(jxp, monkeypatch):
    """A fresh closure per solve (the backends make one) never pays a compilation in the
    default mode; a field solved again does; ODEVERIFY_COMPILED=0 and compiled=False never."""
    monkeypatch.delenv("ODEVERIFY_COMPILED", raising=False)
    f = field(jxp)  # a field of its own: not solved before
    y0 = jxp.asarray(Y0[0])
    run = lambda **kw: solve(f, y0, (0.0, 2.0), method="rk4", n_steps=10, **kw)  # noqa: E731
    before = dict(CompiledJaxStep.stats)
    first = run(compiled=None)
    assert CompiledJaxStep.stats["traces"] == before["traces"]
    assert run(compiled=False).stats.nfev == first.stats.nfev
    assert CompiledJaxStep.stats["traces"] == before["traces"]
    monkeypatch.setenv("ODEVERIFY_COMPILED", "0")
    run(compiled=None)
    assert CompiledJaxStep.stats["traces"] == before["traces"]
    monkeypatch.setenv("ODEVERIFY_COMPILED", "1")
    second = run(compiled=None)
    assert CompiledJaxStep.stats["traces"] > before["traces"]
    check_agrees(second, first, "rk4 on JAX, compiled from the second solve", "rk4")


def test_a_field_jax_cannot_trace_runs_eagerly(jxp):
    calls = []

    def f(t, y):
        calls.append(1)
        if float(t) > 1.0:  # Python control flow on a value: untraceable
            return -y
        return -2.0 * y

    y0 = jxp.asarray([1.0, 0.5])
    failures = CompiledJaxStep.stats["failures"]
    sol = solve(f, y0, (0.0, 2.0), method="dopri5", rtol=1e-8, atol=1e-10, compiled=True)
    assert CompiledJaxStep.stats["failures"] == failures + 1
    assert len(calls) == sol.stats.nfev + 1  # one failed trace, then every evaluation eager
    ref = solve(f, y0, (0.0, 2.0), method="dopri5", rtol=1e-8, atol=1e-10, compiled=False)
    assert sol.success and same_work(sol, ref)[0] == same_work(sol, ref)[1]
    np.testing.assert_array_equal(np.asarray(sol.ys), np.asarray(ref.ys))


def test_jax_gradients_through_solve_use_the_eager_step(jxp, jf):
    """Inside jax.grad the state is traced: the loop runs eagerly and differentiates."""
    import jax

    f = jf
    y0 = jxp.asarray(Y0[0])

    def loss(y):
        return jxp.sum(solve(f, y, (0.0, 1.0), method="rk4", n_steps=3, compiled=True).ys[-1])

    g = jax.grad(loss)(y0)
    eps = 1e-6
    e0 = jxp.asarray([1.0, 0.0, 0.0])
    fd = (loss(y0 + eps * e0) - loss(y0 - eps * e0)) / (2 * eps)
    assert abs(float(g[0]) - float(fd)) < 1e-6


# ----------------------------------------------------------------------------- PyTorch
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("batch", ["shared", "per-sample"])
@pytest.mark.parametrize("method,kw", CASES, ids=[c[0] for c in CASES])
def test_torch_fused_takes_the_numpy_steps(torch, numpy_solutions, method, kw, batch, monkeypatch):
    used = []
    real = FusedTorchStep.__call__
    monkeypatch.setattr(FusedTorchStep, "__call__", lambda self, *a: used.append(1) or real(self, *a))
    f = field(_xp.get_namespace("torch"))
    sol = solve(f, torch.asarray(Y0), (0.0, 4.0), method=method, t_eval=T_EVAL, rtol=1e-7, atol=1e-9,
                compiled=True, batch=batch, **kw)
    assert used, "the fused step did not run"
    if batch == "shared":
        check_agrees(sol, numpy_solutions[method], f"{method} on PyTorch, fused", method)
    else:
        fn = field(_xp.get_namespace("numpy"))
        ref = solve(fn, Y0, (0.0, 4.0), method=method, t_eval=T_EVAL, rtol=1e-7, atol=1e-9, batch=batch, **kw)
        check_agrees(sol, ref, f"{method} on PyTorch, fused, per sample", method)
        np.testing.assert_array_equal(sol.stats.sample_accepted, ref.stats.sample_accepted)


def test_torch_planted_weight_and_autograd(torch):
    f = field(_xp.get_namespace("torch"))
    y0 = torch.asarray(Y0)
    bad = perturbed("rk4", 1, Fraction(1, 1000))
    got = solve(f, y0, (0.0, 4.0), method=bad, n_steps=40, compiled=True)
    eager = solve(f, y0, (0.0, 4.0), method=bad, n_steps=40, compiled=False)
    true = solve(f, y0, (0.0, 4.0), method="rk4", n_steps=40, compiled=True)
    assert ulps_per_step(got.ys, eager.ys) / 40 <= ULPS_PER_STEP * dense_amplification(bad)
    assert float((got.ys - true.ys).abs().max()) > 1e-6
    # autograd records: the eager (functional) step runs, and the gradient matches it
    y = y0.clone().requires_grad_(True)
    sol = solve(f, y, (0.0, 1.0), method="dopri5", rtol=1e-8, atol=1e-10, compiled=True)
    (g,) = torch.autograd.grad(sol.ys[-1].sum(), y)
    y2 = y0.clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(solve(f, y2, (0.0, 1.0), method="dopri5", rtol=1e-8, atol=1e-10,
                                      compiled=False).ys[-1].sum(), y2)
    torch.testing.assert_close(g, g2, rtol=0, atol=0)


def test_bad_compiled_value_is_named():
    f = field(_xp.get_namespace("numpy"))
    with pytest.raises(TypeError, match=r"compiled='yes', but it must be True, False or None"):
        solve(f, Y0[0], (0.0, 1.0), compiled="yes")


def test_numpy_and_implicit_solvers_ignore_compiled():
    """Only explicit tableau steps have a fast path; NumPy and implicit methods run as before."""
    f = field(_xp.get_namespace("numpy"))
    for method in ("dopri5", "kvaerno3"):
        a = solve(f, Y0[0], (0.0, 1.0), method=method, rtol=1e-6, atol=1e-9, compiled=True)
        b = solve(f, Y0[0], (0.0, 1.0), method=method, rtol=1e-6, atol=1e-9, compiled=False)
        np.testing.assert_array_equal(a.ys, b.ys)
        assert a.stats == b.stats and math.isfinite(float(a.ys[-1][0]))
