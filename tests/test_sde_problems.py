"""Every SDE problem's closed form, moments and Itô-Stratonovich correction, checked against
independent computations (issue 10).

The registry is parametrized automatically: a problem registered in
``odeverify.problems.sde`` is tested here without editing this file.

**Closed forms against Euler-Maruyama on the same path.** ``exact`` is compared with a fine
Euler-Maruyama (EM) solve of the Itô form (``as_calculus("ito")``) on the same
:class:`~odeverify.brownian.BrownianTree`. The bound is not a tuned number; it is the leading
term of EM's error, computed for the problem at hand (Kloeden & Platen 1992, §10.2, the
Itô-Taylor expansion): one EM step drops

    rho_k = ½ Σ_jl c_jl (ΔW_j ΔW_l - δ_jl h)                       (strong order 0.5 term)
          + ½ h Σ_j (L^j f + L^0 g_j) ΔW_j + ½ h² L^0 f             (order-1 terms; I_(j,0)
                                                                      replaced by E[I_(j,0) | ΔW])

with ``c_jl = L^j g_l = (∂g_l/∂x) g_j`` (commutative noise), and the global error obeys the
linearised recursion ``e_{k+1} = e_k + h (∂f) e_k + Σ_l (∂g_l) e_k ΔW_l - rho_k`` along the
exact path (the variational equation). The recursion is evaluated on the same Brownian
increments with central finite differences of ``f`` and ``g``, giving a *predicted* pathwise
error ``e_pred``; its root mean square ``R`` bounds the mean absolute error to leading order
(``E|e| <= sqrt(E e^2)``). The test asserts ``mean |EM - exact| <= 3 R + exact_accuracy``:
the factor 3 covers the neglected higher-order terms (relative size O(h^{1/2}) at most) and
the Monte-Carlo error of a 200-path mean (a few per cent). And it asserts the error *shrinks*
when the step is halved twice: ``err(h/4) / err(h) <= 1.4 * 4^{-p}`` with ``p`` EM's strong
order for the problem's noise class (0.5, or 1 for additive noise); 4^{-p} is the expected
ratio and 1.4 leaves over five Monte-Carlo standard deviations (each mean has a relative
standard deviation of ~5 % over 200 paths). A closed form off by a drift term ``delta t``
makes the error floor at ``|delta| T`` and the ratio tend to 1: the ratio check fails once
``|delta| T`` exceeds ~0.7 of EM's error at the coarser step (~1e-2 for the multiplicative
problems, ~1e-4 for the additive ones at 2^10 steps).
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from odeverify import _xp
from odeverify.brownian import BrownianTree
from odeverify.integrate import solve_sde
from odeverify.problems.sde import SDE_PROBLEMS
from odeverify.solvers.sde import SDE_METHODS

XP = _xp.get_namespace("numpy")
ALL = [SDE_PROBLEMS.get(name) for name in SDE_PROBLEMS.names()]
EXACT = [p for p in ALL if p.exact is not None]
MOMENTS = [p for p in ALL if p.moments is not None]
CORRECTION = [p for p in ALL if p.correction is not None]
PATHS = 200
#: z-test threshold: two-sided false-alarm probability 0.1 % per moment and component
Z_CRIT = stats.norm.isf(0.0005)
EPS = 1e-4  #: finite-difference step (central: truncation ~EPS^2, round-off ~1e-16/EPS)


def ids(problems):
    return [p.name for p in problems]


# ----------------------------------------------------------------------------- helpers
def full_g(problem, g):
    """The diffusion as a matrix (..., n, m) whatever the noise type."""
    g = np.asarray(g, dtype=np.float64)
    if problem.noise == "diagonal":
        return g[..., :, None] * np.eye(problem.n)
    return g


def directional(fun, t, x, v):
    """Central difference of ``fun(t, .)`` at ``x`` along ``v`` (rows of a batch), per row:
    (F(x + s v) - F(x - s v)) / (2 s) with s = EPS / |v|_inf (a zero direction gives 0)."""
    scale = np.max(np.abs(v), axis=-1, keepdims=True)
    s = EPS / np.maximum(scale, 1e-300)
    plus, minus = fun(t, x + s * v), fun(t, x - s * v)
    s = s.reshape(s.shape + (1,) * (plus.ndim - s.ndim))
    return (plus - minus) / (2.0 * s)


def second_directional(fun, t, x, v, f0):
    """(F(x + s v) - 2 F(x) + F(x - s v)) / s^2 along ``v``: v^T (∇^2 F) v."""
    scale = np.max(np.abs(v), axis=-1, keepdims=True)
    s = EPS * 10.0 / np.maximum(scale, 1e-300)  # a larger step: second differences lose more digits
    plus, minus = fun(t, x + s * v), fun(t, x - s * v)
    s = s.reshape(s.shape + (1,) * (plus.ndim - s.ndim))
    return (plus - 2.0 * f0 + minus) / (s * s)


def predicted_error(ito, grid, bm, x_exact):
    """The linearised EM error (module docstring) on ``grid``, along the exact path
    ``x_exact`` (shape (len(grid), M, n)); returns e_pred at every grid time."""
    f_np = ito.drift_field(XP)
    g_np = ito.diffusion_field(XP)

    def f(t, y):
        return np.asarray(f_np(XP.asarray(t), y))

    def G(t, y):
        return full_g(ito, g_np(XP.asarray(t), y))

    dw = bm.grid_increments(grid)  # (N, M, m)
    if dw.ndim == 2:
        dw = dw[:, None, :]
    m = dw.shape[-1]
    e = np.zeros_like(x_exact[0])
    out = [e]
    for k in range(grid.size - 1):
        t, h, x, dwk = float(grid[k]), float(grid[k + 1] - grid[k]), x_exact[k], dw[k]
        f0, g0 = f(t, x), G(t, x)  # (M, n), (M, n, m)
        rho = 0.5 * h * h * ((f(grid[k + 1], x + h * f0) - f0) / h)  # ½ h² (∂_t f + (∂f) f)
        lg0 = (G(grid[k + 1], x + h * f0) - g0) / h  # ∂_t g + (∂g) f, column j: L^0 g_j (less ½ tr)
        for j in range(m):
            gj = g0[..., j]
            dg = directional(G, t, x, gj)  # (M, n, m): column l is c_jl = (∂g_l/∂x) g_j
            for col in range(m):
                rho = rho + 0.5 * dg[..., col] * (dwk[:, j:j + 1] * dwk[:, col:col + 1] - (h if j == col else 0.0))
            # second-order parts of L^0: ½ g_j^T ∇² f g_j and ½ g_j^T ∇² g g_j
            rho = rho + 0.25 * h * h * second_directional(f, t, x, gj, f0)
            lg0 = lg0 + 0.5 * second_directional(G, t, x, gj, g0)
        for j in range(m):
            ljf = directional(f, t, x, g0[..., j])  # L^j f
            rho = rho + 0.5 * h * (ljf + lg0[..., j]) * dwk[:, j:j + 1]
        jf_e = directional(f, t, x, e)
        jg_e = directional(G, t, x, e)  # (M, n, m)
        e = e + h * jf_e + np.einsum("mnl,ml->mn", jg_e, dwk) - rho
        out.append(e)
    return np.stack(out)


def em_solve(ito, bm, n_steps, t_eval):
    sol = solve_sde(ito.drift_field(XP), ito.diffusion_field(XP), ito.y0_batch(bm.shape[0]), ito.t_span, bm=bm,
                    method="euler", noise=ito.noise, calculus="ito", commutative=ito.commutative,
                    n_steps=n_steps, t_eval=t_eval)
    assert sol.success, sol.message
    return np.asarray(sol.ys, dtype=np.float64)


def agreement(problem, steps_log2, paths, seed=20261207, bound_log2=None):
    """Mean abs errors of EM against ``exact`` at 2^(L-2), 2^(L-1), 2^L steps, and the bound."""
    ito = problem.as_calculus("ito")
    t0, t1 = problem.t_span
    bm = BrownianTree(t0, t1, problem.brownian_shape(paths), seed=seed)
    # the leading-order EM error, evaluated on a grid of 2^bound_log2 steps and scaled by h^p
    blev = steps_log2 if bound_log2 is None else bound_log2
    grid = t0 + (t1 - t0) * np.arange((1 << blev) + 1) / float(1 << blev)
    every = (1 << blev) // 8
    out_times = grid[::every]  # a grid of 9 times, dyadic (OU's path integral needs that)
    x_grid = problem.exact(grid, problem.y0_batch(paths), bm, problem.params)
    exact = x_grid[::every]
    errs = {}
    for lev in (steps_log2 - 2, steps_log2):
        ys = em_solve(ito, bm, 1 << lev, out_times)
        errs[lev] = np.mean(np.abs(ys - exact), axis=(1, 2))  # per output time
    pred = predicted_error(ito, grid, bm, x_grid)[::every]  # at out_times
    p = SDE_METHODS.get("euler").strong_order(problem.noise_class)
    rms = np.sqrt(np.mean(pred**2, axis=(1, 2))) * 2.0 ** (-p * (steps_log2 - blev))
    return errs, rms, p


def agreement_failures(problem, steps_log2, paths, bound_log2=None):
    """The closed-form checks' failures (empty: it agrees), and a line of figures."""
    errs, rms, p = agreement(problem, steps_log2, paths, bound_log2=bound_log2)
    fine, coarse = errs[steps_log2], errs[steps_log2 - 2]
    bound = 3.0 * rms + problem.exact_accuracy + 1e-12  # round-off where both are y0
    ratio = fine[1:].sum() / coarse[1:].sum()  # over the grid of times (t0 excluded: both 0)
    line = (f"{problem.name}: mean|EM - exact| at 2^{steps_log2} steps ({paths} paths): at T {fine[-1]:.3g}"
            f" (bound {bound[-1]:.3g}), max over 8 times {fine.max():.3g}; ratio h/4 : h {ratio:.3f}"
            f" (expected {4.0 ** -p:.3f})")
    print(line)
    failures = []
    if not np.all(fine <= bound):
        failures.append(f"{problem.name}: mean |EM - exact| {fine} exceeds the bound {bound}")
    if ratio > 1.4 * 4.0 ** (-p):
        failures.append(f"{problem.name}: the error did not shrink as EM's strong order {p} predicts when the step"
                        f" was quartered: {coarse} -> {fine}")
    return failures


def paths_for(problem, paths):
    """~``paths`` path-components: a Brownian path of noise dimension m counts m times
    (the tree's cost grows with paths x m)."""
    return max(25, paths // problem.noise_dim)


# ----------------------------------------------------------------------------- closed forms
def same_equation_as_earlier(problem):
    """The earlier problem of EXACT with the same Itô equation (drift and diffusion at random
    states), start, span and closed form (same values on a path): e.g. a Stratonovich twin
    registered with its Itô form. Its closed-form check would repeat that one's exactly."""
    rng = np.random.default_rng(0)
    t0, t1 = problem.t_span
    ito = problem.as_calculus("ito")
    y = np.asarray(problem.y0) + 0.1 * rng.standard_normal((4, problem.n))
    ts = np.array([t0, 0.5 * (t0 + t1), t1])

    def signature(q):
        qi = q.as_calculus("ito")
        tq = XP.asarray(0.5 * (t0 + t1))
        bm = BrownianTree(t0, t1, q.brownian_shape(2), seed=3)
        return [np.asarray(qi.drift_field(XP)(tq, y)), np.asarray(qi.diffusion_field(XP)(tq, y)),
                q.exact(ts, q.y0_batch(2), bm, q.params)]

    mine = signature(ito)
    for other in EXACT:
        if other is problem:
            return None
        if (other.n, other.noise, other.noise_dim, other.t_span, other.y0) != (
                problem.n, problem.noise, problem.noise_dim, problem.t_span, problem.y0):
            continue
        if all(np.array_equal(a, b) for a, b in zip(signature(other), mine)):
            return other.name
    return None


@pytest.mark.parametrize("problem", EXACT, ids=ids(EXACT))
def test_exact_agrees_with_euler_maruyama(problem):
    """2^12 steps, 200 paths; the bound's recursion on 2^7 steps, scaled by 32^-p (the O(h)
    terms of a multiplicative problem are then over-estimated: conservative)."""
    twin = same_equation_as_earlier(problem)
    if twin is not None:
        pytest.skip(f"the same Itô equation and closed form as {twin}, checked there")
    assert agreement_failures(problem, 12, paths_for(problem, PATHS), bound_log2=7) == []


@pytest.mark.slow
@pytest.mark.parametrize("problem", EXACT, ids=ids(EXACT))
def test_exact_agrees_with_euler_maruyama_thorough(problem):
    """2^14 steps, 400 path-components, the bound's recursion on 2^10 steps (on the finest grid
    itself it costs minutes: OU 127 s)."""
    assert agreement_failures(problem, 14, paths_for(problem, 400), bound_log2=10) == []


@pytest.mark.parametrize("problem", [p for p in EXACT if p.noise != "additive"][:1], ids=lambda p: p.name)
def test_predicted_error_is_pathwise(problem):
    """The recursion behind the bound predicts EM's error path by path (not just in size): on
    multiplicative noise the leading term is the same sum of ΔW^2 - h, so the residual is of
    higher order. A guard that the bound measures the right thing."""
    ito = problem.as_calculus("ito")
    t0, t1 = problem.t_span
    bm = BrownianTree(t0, t1, problem.brownian_shape(100), seed=5)
    grid = t0 + (t1 - t0) * np.arange(1025) / 1024.0
    x_grid = problem.exact(grid, problem.y0_batch(100), bm, problem.params)
    pred = predicted_error(ito, grid, bm, x_grid)[-1]
    err = em_solve(ito, bm, 1024, grid[[0, -1]])[-1] - x_grid[-1]
    resid = np.mean(np.abs(err - pred)) / np.mean(np.abs(err))
    print(f"{problem.name}: |EM error - predicted| / |EM error| = {resid:.3f}")
    assert resid < 0.5


def test_a_wrong_closed_form_is_caught():
    """The checks can fail (at 2^10 steps, to keep it cheap): GBM's closed form with its drift
    rate off by 2 % (exp(0.02 t)) breaks the shrinking test; one with the Itô correction
    dropped breaks the bound."""
    from dataclasses import replace

    gbm = SDE_PROBLEMS.get("gbm_ito")
    good = gbm.exact

    def drifted(ts, y0, bm, p):
        return good(ts, y0, bm, p) * np.exp(0.02 * (np.asarray(ts) - bm.t0))[:, None, None]

    failures = agreement_failures(replace(gbm, exact=drifted), 10, PATHS, bound_log2=7)
    assert any("did not shrink" in f for f in failures), failures
    strat = SDE_PROBLEMS.get("gbm_stratonovich").exact  # the Stratonovich solution for the Itô equation
    failures = agreement_failures(replace(gbm, exact=strat), 10, PATHS, bound_log2=7)
    assert any("exceeds the bound" in f for f in failures), failures


# ----------------------------------------------------------------------------- moments
def moment_paths(problem):
    # a closed form that is a path functional (OU's integral on 2^14 points) costs ~6 ms a path
    return 200 if problem.exact_accuracy > 0 else 20000


@pytest.mark.parametrize("problem", [p for p in MOMENTS if p.exact is not None],
                         ids=ids([p for p in MOMENTS if p.exact is not None]))
def test_moments_match_monte_carlo_of_exact(problem):
    """z = (sample mean - exact) / (sample sd / sqrt(M)) for E X_T and E X_T^2, each component:
    |z| <= 3.29 (two-sided false alarm 0.1 % per statistic, fixed seed). Power: a moment off by
    a relative delta is caught with probability >= 95 % when delta >= (3.29 + 1.64) cv / sqrt(M),
    cv the coefficient of variation of X_T (resp. X_T^2): with M = 20000 and cv ~ 1 (GBM's X^2:
    cv ~ 1.6), delta ~ 3.5 % (5.6 %); the moment formula's common slips (a missing factor
    e^{sigma^2 t}, sigma^2 t ~ 0.25-0.75 here) are many times larger."""
    M = moment_paths(problem)
    t0, t1 = problem.t_span
    bm = BrownianTree(t0, t1, problem.brownian_shape(M), seed=31)
    x = problem.exact(np.array([t1]), problem.y0_batch(M), bm, problem.params)[-1]
    mom = problem.moments(t1 - t0, np.asarray(problem.y0), problem.params)
    for key, sample in (("mean", x), ("second", x * x)):
        z = (sample.mean(axis=0) - mom[key]) / (sample.std(axis=0, ddof=1) / math.sqrt(M))
        print(f"{problem.name} {key}: z = {np.round(z, 2).tolist()}, p = {np.round(2 * stats.norm.sf(np.abs(z)), 3).tolist()}")
        assert np.all(np.abs(z) <= Z_CRIT), (problem.name, key, sample.mean(axis=0), mom[key], z)


# ----------------------------------------------------------------------------- correction
@pytest.mark.parametrize("problem", CORRECTION, ids=ids(CORRECTION))
def test_correction_is_half_sum_of_dg_g(problem):
    """c = ½ Σ_j (∂g_j/∂x) g_j, the derivative by central differences of the diffusion
    (error ~EPS^2 relative, ~1e-8), at random states and times."""
    rng = np.random.default_rng(11)
    t0, t1 = problem.t_span
    y = np.asarray(problem.y0) + 0.3 * rng.standard_normal((16, problem.n))
    if "nonlinear" in problem.tags and problem.n == 1:
        y = np.clip(y, -0.9, 0.9)  # inside tanh's range for the cubic problems
    g_fun = problem.diffusion_field(XP)
    for t in (t0, 0.5 * (t0 + t1), t1):
        def G(tt, yy):
            return full_g(problem, g_fun(XP.asarray(tt), yy))

        g0 = G(t, y)
        want = np.zeros_like(y)
        for j in range(problem.noise_dim):
            want = want + 0.5 * directional(G, t, y, g0[..., j])[..., j]
        got = np.asarray(problem.correction(XP, XP.asarray(t), y, problem.converted_params(XP)))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8, err_msg=problem.name)


@pytest.mark.parametrize("problem", ALL, ids=ids(ALL))
def test_declared_noise_commutativity_holds(problem):
    """Methods of strong order 1 trust the declaration: commutative noise needs
    L^j g_l = L^l g_j with L^j g_l = (∂g_l/∂x) g_j (Kloeden & Platen 1992, section 10.3). For
    diagonal noise that means g_i depends on y_i alone. Checked by central differences at
    random states; a problem declared non-commutative must really be."""
    rng = np.random.default_rng(4)
    y = np.asarray(problem.y0) + 0.2 * rng.standard_normal((8, problem.n))
    t = 0.5 * sum(problem.t_span)
    g_fun = problem.diffusion_field(XP)

    def G(tt, yy):
        return full_g(problem, g_fun(XP.asarray(tt), yy))

    g0 = G(t, y)
    c = np.stack([directional(G, t, y, g0[..., j]) for j in range(problem.noise_dim)], axis=-2)  # (M, n, j, l)
    asym = np.max(np.abs(c - np.swapaxes(c, -1, -2)))
    scale = 1e-6 * (1.0 + np.max(np.abs(c)))
    if problem.noise_class == "general":
        assert asym > 1e3 * scale, f"{problem.name} is declared non-commutative, but L^j g_l = L^l g_j"
    else:
        assert asym <= scale, f"{problem.name}: {problem.noise} noise declared commutative, but L^j g_l != L^l g_j ({asym:.2e})"


def test_conversion_round_trip():
    """as_calculus adds the correction one way and removes it the other."""
    for problem in CORRECTION:
        other = "ito" if problem.calculus == "stratonovich" else "stratonovich"
        back = problem.as_calculus(other).as_calculus(problem.calculus)
        y = np.asarray(problem.y0)[None] * 0.9
        t = XP.asarray(problem.t_span[0])
        p = problem.converted_params(XP)
        np.testing.assert_allclose(np.asarray(back.drift(XP, t, y, p)), np.asarray(problem.drift(XP, t, y, p)),
                                   rtol=1e-12, atol=1e-14, err_msg=problem.name)


# ----------------------------------------------------------------------------- registry and libraries
def test_registry_shapes_and_metadata():
    for problem in ALL:
        assert problem.citation and problem.description, problem.name
        M = 3
        y = problem.y0_batch(M)
        t = XP.asarray(problem.t_span[0])
        f = np.asarray(problem.drift_field(XP)(t, y))
        g = np.asarray(problem.diffusion_field(XP)(t, y))
        assert f.shape == (M, problem.n), problem.name
        want = (M, problem.n) if problem.noise == "diagonal" else (M, problem.n, problem.noise_dim)
        assert g.shape == want, (problem.name, g.shape, want)
        if problem.noise == "additive":
            g2 = np.asarray(problem.diffusion_field(XP)(t, y + 1.0))
            np.testing.assert_array_equal(g, g2, err_msg=f"{problem.name}: additive noise must not depend on y")
        if problem.exact is not None:
            bm = BrownianTree(*problem.t_span, problem.brownian_shape(M), seed=1)
            ts = np.array([problem.t_span[0], problem.t_span[1]])
            x = problem.exact(ts, y, bm, problem.params)
            assert x.shape == (2, M, problem.n), problem.name
            np.testing.assert_allclose(x[0], y, rtol=1e-12, atol=1e-12, err_msg=f"{problem.name}: exact at t0 != y0")


def test_scalar_noise_system_is_registered():
    scalar = [p for p in ALL if p.noise == "scalar" and p.n >= 2 and p.exact is not None]
    assert scalar, "a scalar-noise system (n >= 2) with a closed form"


def test_neural_sde():
    neural = [p for p in ALL if "neural" in p.tags]
    assert neural
    for p in neural:
        assert p.exact is None and p.n == 3 and p.noise == "diagonal"
        assert all(v.dtype == np.float64 for v in p.params.values() if isinstance(v, np.ndarray))
        y = p.y0_batch(64) + np.random.default_rng(0).standard_normal((64, 3)) * 3.0
        g = np.asarray(p.diffusion_field(XP)(XP.asarray(0.5), y))
        assert np.all(g > 0) and np.all(g < p.params["scale"]), "the diffusion is bounded by its scale"


@pytest.mark.parametrize("lib", ["array_api_strict", "torch", pytest.param("jax", marks=pytest.mark.slow)])
def test_fields_agree_across_array_libraries(lib):
    pytest.importorskip(lib)
    xp = _xp.get_namespace(lib)
    rng = np.random.default_rng(2)
    for problem in ALL:
        y_np = np.asarray(problem.y0) + 0.1 * rng.standard_normal((5, problem.n))
        t_np = 0.5 * sum(problem.t_span)
        ref = [np.asarray(field(XP)(XP.asarray(t_np), y_np)) for field in (problem.drift_field, problem.diffusion_field)]
        y = xp.asarray(y_np, dtype=xp.float64)
        t = xp.asarray(t_np, dtype=xp.float64)
        got = [np.asarray(_xp.to_numpy(field(xp, dtype=xp.float64)(t, y)))
               for field in (problem.drift_field, problem.diffusion_field)]
        for r, g_ in zip(ref, got):
            np.testing.assert_allclose(g_, r, rtol=1e-12, atol=1e-14, err_msg=f"{problem.name} on {lib}")
        if problem.correction is not None:
            c = problem.correction(xp, t, y, problem.converted_params(xp, dtype=xp.float64))
            c_ref = problem.correction(XP, XP.asarray(t_np), y_np, problem.converted_params(XP))
            np.testing.assert_allclose(np.asarray(_xp.to_numpy(c)), np.asarray(c_ref), rtol=1e-12, atol=1e-14)


def test_neural_sde_solves_on_torch():
    torch = pytest.importorskip("torch")
    problem = next(p for p in ALL if "neural" in p.tags)
    xp = _xp.get_namespace("torch")
    bm = BrownianTree(*problem.t_span, problem.brownian_shape(8), seed=3)
    start = time.perf_counter()
    sol_t = solve_sde(problem.drift_field(xp, dtype=torch.float64), problem.diffusion_field(xp, dtype=torch.float64),
                      problem.y0_batch(8, xp), problem.t_span, bm=bm, method="euler", noise="diagonal",
                      calculus="ito", n_steps=64)
    sol_n = em_solve(problem, bm, 64, None)
    print(f"neural_sde EM on torch: {time.perf_counter() - start:.2f} s")
    np.testing.assert_allclose(np.asarray(_xp.to_numpy(sol_t.ys))[-1], sol_n[-1], rtol=1e-10, atol=1e-12)
