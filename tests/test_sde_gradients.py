"""SDE gradients (odeverify.gradients.sde) against oracles that share no code with them:
pathwise central differences of the NumPy solve on the same Brownian path, and the closed-form
derivatives of GBM's and K&P cubic's exact solutions.

Rates are least-squares slopes of log(error) against log(n_steps) on one fixed path
(BrownianTree seed 3, 4 paths): deterministic, so a band is a fixed check, not a statistical
one. The expected rate is the strong order of Heun / reversible Heun / Milstein on commuting
noise, 1; pathwise slopes over a decade or two of steps scatter about it (measured 0.83-1.22
on these cases), hence the band [0.7, 1.3]."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from odeverify.brownian import BrownianTree
from odeverify.gradients import Loss
from odeverify.gradients import sde as G
from odeverify.problems import sde as sde_problems

pytest.importorskip("torch")

SEED, PATHS = 3, 4
RATE_BAND = (0.7, 1.3)


def _setup(name: str, paths: int = PATHS, times: tuple[float, ...] = (0.5, 1.0)) -> tuple:
    p = sde_problems.get(name)
    bm = BrownianTree(0.0, 1.0, (paths, p.noise_dim), seed=SEED)
    return p, bm, Loss.seeded(list(times), p.n, seed=0, quadratic=0.5)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def _slope(ns: list[int], errors: list[float]) -> float:
    return float(-np.polyfit(np.log(ns), np.log(errors), 1)[0])


# ----------------------------------------------------------------------------- the oracles themselves
@pytest.mark.parametrize("name", G.CLOSED_FORM_PROBLEMS)
def test_closed_form_matches_differences_of_the_exact_solution(name: str) -> None:
    """The closed-form gradient against central differences of the problem's own exact
    solution (another code path): agreement to the differences' accuracy."""
    p, bm, loss = _setup(name)
    y0 = p.y0_batch(PATHS)
    ts = np.asarray(loss.t_eval)

    def value(yy: np.ndarray, params: dict) -> float:
        return loss.value_numpy(p.exact(ts, yy, bm, params))

    eps = 1e-6
    want = []
    for e in np.ndindex(y0.shape):
        hi, lo = y0.copy(), y0.copy()
        hi[e] += eps
        lo[e] -= eps
        want.append((value(hi, dict(p.params)) - value(lo, dict(p.params))) / (2 * eps))
    for k in sorted(p.params):
        hi, lo = {**p.params, k: p.params[k] + eps}, {**p.params, k: p.params[k] - eps}
        want.append((value(y0, hi) - value(y0, lo)) / (2 * eps))
    got = G.sde_closed_form_gradient(p, loss, bm=bm).flat()
    assert _rel(got, np.array(want)) < 1e-8, f"closed form={got}, but differences of the exact solution give {want}"


# ----------------------------------------------------------------------------- discrete
@pytest.mark.parametrize("name, method", [("gbm_stratonovich", "heun"), ("gbm_ito", "milstein_ito"),
                                          ("kp_cubic", "euler"), ("kp_cubic", "heun"),
                                          ("noncommutative", "euler"), ("noncommutative", "heun")])
def test_discrete_matches_finite_differences(name: str, method: str) -> None:
    """The derivative of the computed solution: equal to central differences of the NumPy
    solve on the same path, to the differences' accuracy (eps = 1e-6: round-off ~1e-10
    relative, truncation ~1e-12; measured 1e-10 .. 7e-10)."""
    p, bm, loss = _setup(name, paths=3)
    got = G.sde_value_and_grad(p, loss, mode="discrete", method=method, bm=bm, n_steps=16)
    fd = G.sde_fd_gradient(p, loss, method=method, bm=bm, n_steps=16)
    assert got.success, got.message
    assert abs(got.loss - fd.loss) <= 1e-12 * max(1.0, abs(fd.loss))
    assert got.grad_y0.shape == (3, p.n)
    assert sorted(got.grad_params) == sorted(fd.grad_params)
    assert _rel(got.flat(), fd.flat()) < 1e-8, f"discrete={got.flat()}, but finite differences give {fd.flat()}"


@pytest.mark.parametrize("name, method", [("gbm_stratonovich", "heun"), ("gbm_ito", "milstein_ito")])
def test_discrete_converges_to_the_closed_form(name: str, method: str) -> None:
    """The discrete gradient approaches the exact solution's derivative at the method's
    strong order (1 here; measured slopes 0.94 and 1.0)."""
    p, bm, loss = _setup(name)
    exact = G.sde_closed_form_gradient(p, loss, bm=bm).flat()
    ns = [16, 64, 256]
    errors = [_rel(G.sde_value_and_grad(p, loss, mode="discrete", method=method, bm=bm, n_steps=n).flat(), exact)
              for n in ns]
    rate = _slope(ns, errors)
    assert RATE_BAND[0] <= rate <= RATE_BAND[1], f"rate={rate:.2f}, but should be about 1 (errors {errors})"


# ----------------------------------------------------------------------------- reversible Heun
@pytest.mark.parametrize("name", ["gbm_stratonovich", "kp_cubic", "noncommutative", "linear_commuting"])
def test_reversible_heun_backward_equals_discrete(name: str) -> None:
    """The exact backward pass: the discrete gradient of the same reversible Heun solve to
    round-off, with a reconstruction of y0 off by round-off only (measured <= 4e-15)."""
    p, bm, loss = _setup(name, paths=3, times=(0.25, 0.5, 1.0))
    rh = G.sde_value_and_grad(p, loss, mode="reversible_heun", method="reversible_heun", bm=bm, n_steps=32)
    ref = G.sde_value_and_grad(p, loss, mode="discrete", method="reversible_heun", bm=bm, n_steps=32)
    assert rh.success, rh.message
    assert _rel(rh.flat(), ref.flat()) < 1e-12, f"reversible_heun={rh.flat()}, but discrete gives {ref.flat()}"
    assert rh.adjoint_mismatch is not None and rh.adjoint_mismatch < 1e-13
    assert rh.memory["stored_bytes"] < ref.details["states_in_graph"] * 3 * p.n * 8


@pytest.mark.parametrize("name", sde_problems.SDE_PROBLEMS.names())
def test_reversible_heun_on_every_problem(name: str) -> None:
    """Every registered SDE problem: the exact backward pass equals the discrete gradient up to
    the reconstruction error it reports (round-off where the inverse is well conditioned; a
    stiff problem amplifies the inverse's round-off, and the mismatch shows it)."""
    p = sde_problems.get(name)
    t0, t1 = p.t_span
    bm = BrownianTree(t0, t1, (2, p.noise_dim), seed=SEED)
    loss = Loss.seeded([t0, t0 + (t1 - t0) / 2, t1], p.n, seed=0, quadratic=0.5)
    rh = G.sde_value_and_grad(p, loss, mode="reversible_heun", method="reversible_heun", bm=bm, n_steps=8)
    ref = G.sde_value_and_grad(p, loss, mode="discrete", method="reversible_heun", bm=bm, n_steps=8)
    assert rh.success and ref.success, (rh.message, ref.message)
    assert sorted(rh.grad_params) == sorted(k for k, v in p.params.items()
                                          if isinstance(v, float) or getattr(v, "dtype", np.int8).kind == "f")
    bound = 1e-12 + 100 * rh.adjoint_mismatch
    assert _rel(rh.flat(), ref.flat()) <= bound, (f"reversible_heun={rh.flat()}, but discrete gives {ref.flat()}"
                                                  f" (mismatch {rh.adjoint_mismatch:.1e})")


# ----------------------------------------------------------------------------- stochastic adjoint
@pytest.mark.parametrize("name, ns", [("gbm_stratonovich", [8, 32, 128]), ("kp_cubic", [16, 64, 256])])
def test_adjoint_converges_to_discrete(name: str, ns: list[int]) -> None:
    """The stochastic adjoint differs from the discrete gradient by a discretisation error
    that falls at Heun's strong order (1; measured slopes 0.98 on gbm, 0.83 on kp_cubic, an
    Itô problem converted to Stratonovich), and its reconstruction mismatch falls with it."""
    p, bm, loss = _setup(name)
    errors, mismatches = [], []
    for n in ns:
        adj = G.sde_value_and_grad(p, loss, mode="adjoint", method="heun", bm=bm, n_steps=n)
        ref = G.sde_value_and_grad(p, loss, mode="discrete", method="heun", bm=bm, n_steps=n)
        assert adj.success, adj.message
        assert adj.loss == ref.loss
        errors.append(_rel(adj.flat(), ref.flat()))
        mismatches.append(adj.adjoint_mismatch)
    rate = _slope(ns, errors)
    assert RATE_BAND[0] <= rate <= RATE_BAND[1], f"rate={rate:.2f}, but should be about 1 (errors {errors})"
    assert errors[-1] > 1e-8, f"the adjoint equals the discrete gradient ({errors}): it should differ by O(h)"
    assert mismatches[-1] < mismatches[0] / 4, f"mismatches={mismatches}, but should fall with the step"
    assert 0 < mismatches[-1] < 1e-2


def test_adjoint_theta_products_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-path a^T dg/dθ by forward mode (P products) and by reverse mode per path and
    noise column (M m products) give the same adjoint to round-off (linear_commuting: P = 16)."""
    p, bm, loss = _setup("linear_commuting", paths=2)
    out = {}
    for how in ("jvp", "vjp"):
        monkeypatch.setattr(G._AdjointSystem, "theta_products", how)
        out[how] = G.sde_value_and_grad(p, loss, mode="adjoint", method="heun", bm=bm, n_steps=8)
    assert out["jvp"].details["theta_products"] == "jvp"
    assert out["vjp"].details["theta_products"] == "vjp per path"
    assert _rel(out["jvp"].flat(), out["vjp"].flat()) < 1e-13


# ----------------------------------------------------------------------------- shapes, wrt, calculi
@pytest.mark.parametrize("mode, method", [("discrete", "heun"), ("adjoint", "heun"),
                                          ("reversible_heun", "reversible_heun")])
def test_loss_at_t0_only_is_exact(mode: str, method: str) -> None:
    """A loss at t0 alone does not see the solve: dL/dy0 = w + q y0 and dL/dθ = 0 exactly, in
    every mode (the cotangent at the start of the span is added, not pulled back)."""
    p, bm, _ = _setup("kp_cubic", paths=2)
    loss = Loss(t_eval=(0.0,), weights=np.array([[0.7]]), quadratic=0.5)
    res = G.sde_value_and_grad(p, loss, mode=mode, method=method, bm=bm, n_steps=4)
    assert np.array_equal(res.grad_y0, 0.7 + 0.5 * p.y0_batch(2)), res.grad_y0
    assert res.grad_params["a"] == 0.0


def test_wrt_selects_and_one_path_has_y0_shape() -> None:
    p, bm, loss = _setup("gbm_stratonovich", paths=1)
    full = G.sde_value_and_grad(p, loss, mode="discrete", method="heun", bm=bm, n_steps=8)
    assert full.grad_params["mu"].shape == () and full.grad_params["sigma"].shape == ()
    only_sigma = G.sde_value_and_grad(p, loss, mode="adjoint", method="heun", bm=bm, n_steps=8, wrt="sigma")
    assert only_sigma.grad_y0 is None and sorted(only_sigma.grad_params) == ["sigma"]
    only_y0 = G.sde_value_and_grad(p, loss, mode="reversible_heun", method="reversible_heun", bm=bm, n_steps=8,
                                   wrt="y0")
    assert only_y0.grad_params == {} and only_y0.grad_y0.shape == (1, 1)
    one = BrownianTree(0.0, 1.0, (1,), seed=SEED)  # the same path, unbatched: row 0 of bm
    single = G.sde_value_and_grad(p, loss, mode="discrete", method="heun", bm=one, n_steps=8)
    assert single.grad_y0.shape == (1,)
    assert _rel(single.flat(), full.flat()) < 1e-14


def test_ito_problem_is_converted_for_a_stratonovich_method() -> None:
    """gbm_ito with a Stratonovich method is the same process: its gradient converges to the
    Itô closed form."""
    p, bm, loss = _setup("gbm_ito")
    exact = G.sde_closed_form_gradient(p, loss, bm=bm).flat()
    res = G.sde_value_and_grad(p, loss, mode="adjoint", method="heun", bm=bm, n_steps=64)
    assert res.details["calculus"] == "stratonovich" and "converted" in res.details["converted"]
    strat = G.sde_closed_form_gradient(sde_problems.get("gbm_stratonovich"), loss, bm=bm).flat()
    assert _rel(res.flat(), exact) < 0.05 < _rel(res.flat(), strat)


@pytest.mark.parametrize("mode, method", [("discrete", "heun"), ("reversible_heun", "reversible_heun"),
                                          # slow: eager JAX compiles each new operation (~4.5 s here)
                                          pytest.param("adjoint", "heun", marks=pytest.mark.slow)])
def test_jax_agrees_with_torch(mode: str, method: str) -> None:
    pytest.importorskip("jax")
    p, bm, _ = _setup("gbm_stratonovich", paths=2)
    loss = Loss.seeded([1 / 3, 1.0], 1, seed=0, quadratic=0.5)
    t = G.sde_value_and_grad(p, loss, mode=mode, method=method, bm=bm, n_steps=3, library="torch")
    j = G.sde_value_and_grad(p, loss, mode=mode, method=method, bm=bm, n_steps=3, library="jax")
    assert j.success, j.message
    assert _rel(j.flat(), t.flat()) < 1e-13, f"{mode}: jax={j.flat()}, but torch gives {t.flat()}"


# ----------------------------------------------------------------------------- bad input
def test_bad_input_gets_clear_errors() -> None:
    p, bm, loss = _setup("gbm_stratonovich", paths=2)
    kw = dict(method="heun", bm=bm, n_steps=8)
    with pytest.raises(ValueError, match=r"unknown SDE gradient mode 'backsolve'.*Choices: adjoint, discrete,"
                                         r" reversible_heun"):
        G.sde_value_and_grad(p, loss, mode="backsolve", **kw)
    bare = dataclasses.replace(p, name="no_params", params={}, drift=lambda xp, t, y, q: 0.5 * y,
                               diffusion=lambda xp, t, y, q: 0.3 * y)
    with pytest.raises(ValueError, match=r"wrt='params', but SDE problem 'no_params' has no float parameters"):
        G.sde_value_and_grad(bare, loss, mode="discrete", wrt="params", **kw)
    with pytest.raises(ValueError, match=r"wrt names 'theta', but SDE problem 'gbm_stratonovich' has the float"
                                         r" parameters \['mu', 'sigma'\]"):
        G.sde_value_and_grad(p, loss, mode="discrete", wrt=["y0", "theta"], **kw)
    with pytest.raises(ValueError, match=r"loss.weights has n=2 columns, but the state .* has n=1"):
        G.sde_value_and_grad(p, Loss.seeded([1.0], 2), mode="discrete", **kw)
    with pytest.raises(ValueError, match=r"loss.t_eval has times \[0.3\] between steps"):
        G.sde_value_and_grad(p, Loss.seeded([0.3, 1.0], 1), mode="discrete", **kw)
    with pytest.raises(ValueError, match=r"library='numpy' has no automatic differentiation.*sde_fd_gradient"):
        G.sde_value_and_grad(p, loss, mode="discrete", library="numpy", **kw)
    with pytest.raises(ValueError, match=r"method='euler' is an ito method, but the stochastic adjoint"):
        G.sde_value_and_grad(p, loss, mode="adjoint", method="euler", bm=bm, n_steps=8)
    with pytest.raises(ValueError, match=r"method='heun', but mode 'reversible_heun'"):
        G.sde_value_and_grad(p, loss, mode="reversible_heun", **kw)
    with pytest.raises(ValueError, match=r"adjoint_method='euler', but"):
        G.sde_value_and_grad(p, loss, mode="adjoint", adjoint_method="euler", **kw)
    with pytest.raises(ValueError, match=r"n_steps=0, but it must be a positive int"):
        G.sde_value_and_grad(p, loss, mode="discrete", method="heun", bm=bm, n_steps=0)
    with pytest.raises(ValueError, match=r"y0 has shape \(3, 1\), but it must be \(2, 1\)"):
        G.sde_value_and_grad(p, loss, mode="discrete", y0=np.ones((3, 1)), **kw)
    with pytest.raises(ValueError, match=r"paths=3, but bm has shape \(2, 1\)"):
        G.sde_value_and_grad(p, loss, mode="discrete", paths=3, **kw)
    with pytest.warns(UserWarning, match=r"mode 'discrete' ignores the option adjoint_method"):
        G.sde_value_and_grad(p, loss, mode="discrete", adjoint_method="heun", **kw)
    with pytest.raises(ValueError, match=r"closed-form gradients are known for"):
        G.sde_closed_form_gradient(sde_problems.get("ou"), loss, bm=bm)


def test_registry_describes_each_mode() -> None:
    assert sorted(G.SDE_GRADIENT_MODES.names()) == ["adjoint", "discrete", "reversible_heun"]
    for _, mode in G.SDE_GRADIENT_MODES.items():
        assert mode.description and mode.citation and mode.libraries == ("torch", "jax")
    assert G.SDE_GRADIENT_MODES.get("adjoint").exact_discrete is False
    assert "Li" in G.SDE_GRADIENT_MODES.get("adjoint").citation


# ----------------------------------------------------------------------------- the figures (slow)
@pytest.mark.slow
@pytest.mark.parametrize("name", ["gbm_stratonovich", "kp_cubic"])
def test_figures_error_against_n_steps(name: str) -> None:
    """The table of the report: each mode's error against the exact gradient, the adjoint's
    distance to the discrete gradient and its mismatch, for n_steps = 16 .. 1024 (run with -s
    to print it). Every slope is about Heun's strong order 1."""
    p, bm, loss = _setup(name)
    exact = G.sde_closed_form_gradient(p, loss, bm=bm).flat()
    ns = [16, 64, 256, 1024]
    rows: dict[str, list[float]] = {k: [] for k in ("discrete-exact", "reversible_heun-exact", "adjoint-exact",
                                                    "adjoint-discrete", "adjoint mismatch")}
    for n in ns:
        d = G.sde_value_and_grad(p, loss, mode="discrete", method="heun", bm=bm, n_steps=n)
        rh = G.sde_value_and_grad(p, loss, mode="reversible_heun", method="reversible_heun", bm=bm, n_steps=n)
        a = G.sde_value_and_grad(p, loss, mode="adjoint", method="heun", bm=bm, n_steps=n)
        rows["discrete-exact"].append(_rel(d.flat(), exact))
        rows["reversible_heun-exact"].append(_rel(rh.flat(), exact))
        rows["adjoint-exact"].append(_rel(a.flat(), exact))
        rows["adjoint-discrete"].append(_rel(a.flat(), d.flat()))
        rows["adjoint mismatch"].append(a.adjoint_mismatch)
    print(f"\n{name}, {PATHS} paths, seed {SEED}, n_steps {ns}")
    for key, errors in rows.items():
        rate = _slope(ns, errors)
        print(f"  {key:22s} " + " ".join(f"{e:.2e}" for e in errors) + f"  slope {rate:.2f}")
        assert RATE_BAND[0] <= rate <= RATE_BAND[1], f"{key}: rate={rate:.2f}, but should be about 1 ({errors})"
