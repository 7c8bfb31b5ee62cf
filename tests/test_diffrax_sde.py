"""diffrax's SDE solvers through DiffraxBackend.solve_sde (odeverify/backends/diffrax_sde.py).

Compilation dominates the cost (2.5-4 s a program for the Brownian-increment methods, about
10 s for a method on diffrax's VirtualBrownianTree, on a 2-core machine, cold); each default
test compiles at most one program, and the sweeps are marked slow.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

pytest.importorskip("diffrax")

from odeverify import backends  # noqa: E402
from odeverify.backends import diffrax_sde  # noqa: E402
from odeverify.brownian import BrownianTree  # noqa: E402
from odeverify.problems.sde import SDE_PROBLEMS, SDEProblem  # noqa: E402
from odeverify.solution import Status  # noqa: E402
from odeverify.solvers.sde import NOISE_CLASSES, SDE_METHODS  # noqa: E402

#: the underdamped-Langevin solvers take a (x, v) state with Langevin terms, not dX = f dt + g dW
LANGEVIN_ONLY = {"ALIGN", "QUICSORT", "ShOULD"}

_CONVERTED: dict[tuple[str, str], SDEProblem] = {}


def problem(name: str, calculus: str) -> SDEProblem:
    """The registry problem in ``calculus``, converted once (a converted problem has new
    functions, so converting it again would compile again)."""
    p = SDE_PROBLEMS.get(name)
    if p.calculus == calculus:
        return p
    return _CONVERTED.setdefault((name, calculus), p.as_calculus(calculus))


@pytest.fixture(scope="module")
def dx():
    return backends.get("diffrax")


@pytest.fixture(scope="module")
def ref():
    return backends.get("reference")


# ---------------------------------------------------------------------------- capabilities
def test_capabilities_cover_every_sde_solver_of_the_installed_diffrax(dx):
    import diffrax

    caps = dx.capabilities()
    sde = caps.sde_methods
    classes = {s.cls for s in diffrax_sde._SPECS.values()}
    installed = {name for name, c in vars(diffrax).items()
                 if inspect.isclass(c) and not name.startswith("Abstract")
                 and issubclass(c, (diffrax.AbstractItoSolver, diffrax.AbstractStratonovichSolver))}
    assert installed - LANGEVIN_ONLY == classes, "a diffrax SDE solver is neither adapted nor listed as skipped"
    for name, info in sde.items():
        assert name == name.lower() and info.name == name
        assert info.calculus == ("ito" if info.rule in ("diffrax.Euler", "diffrax.ItoMilstein") else "stratonovich")
        assert set(info.strong) <= set(NOISE_CLASSES) and set(info.strong) == set(info.weak)
        if info.reference is not None:  # the reference rule with the same formula: same calculus and noise
            twin = SDE_METHODS.get(info.reference)
            assert twin.calculus == info.calculus
    # claims as diffrax's SDE solver table states them
    assert sde["shark"].strong == {"additive": 1.5} and sde["shark"].weak == {"additive": 2.0}
    assert sde["slow_rk"].strong_order("commutative") == 1.5 and sde["slow_rk"].strong_order("general") == 0.5
    assert sde["euler_heun"].strong_order("commutative") == 0.5 and sde["heun"].strong_order("commutative") == 1.0
    assert sde["reversible_heun"].reversible
    assert {n for n, i in sde.items() if i.reference} == {"euler", "euler_heun", "heun", "reversible_heun",
                                                          "ito_milstein", "stratonovich_milstein"}


# ---------------------------------------------------------------------------- pathwise agreement
def _agreement(dx, ref, method: str, name: str, paths: int = 5, n_steps: int = 8) -> None:
    info = dx.capabilities().sde_methods[method]
    p = problem(name, info.calculus)
    bm = BrownianTree(*p.t_span, p.brownian_shape(paths), seed=7)
    t_eval = np.linspace(*p.t_span, 5)
    sol = dx.solve_sde(p, method, bm=bm, n_steps=n_steps, t_eval=t_eval)
    want = ref.solve_sde(p, info.reference, bm=bm, n_steps=n_steps, t_eval=t_eval)
    assert sol.status is Status.SUCCESS, sol.message
    assert sol.ys.shape == (5, paths, p.n) and sol.ys.dtype == np.float64 and sol.brownian is None
    # the same formula on the same increments: round-off apart (measured at most 4e-15)
    np.testing.assert_allclose(sol.ys, want.ys, rtol=0, atol=1e-12 * max(1.0, float(np.max(np.abs(want.ys)))))
    spec = diffrax_sde._SPECS[method]
    assert (sol.stats.nfev, sol.stats.ngev) == (spec.drift * n_steps + spec.start,
                                                spec.diffusion * n_steps + spec.g_start)


def test_reversible_heun_agrees_pathwise_with_the_reference(dx, ref):
    # general (matrix) noise and a stateful method; the diagonal path is exercised below
    _agreement(dx, ref, "reversible_heun", "linear_commuting")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["euler", "euler_heun", "heun", "reversible_heun"])
@pytest.mark.parametrize("name", ["gbm_ito", "gbm_stratonovich", "kp_cubic", "ou", "linear_commuting"])
def test_pathwise_agreement_with_the_reference(dx, ref, method, name):
    _agreement(dx, ref, method, name)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ito_milstein", "stratonovich_milstein"])
def test_milstein_exact_derivative_against_central_differences(dx, ref, method):
    """diffrax's L^j g_k is a jvp, the reference's a central difference: identical where g is
    at most quadratic in y (kp_cubic), O(h) per step apart otherwise (kp_wave: cos^2)."""
    _agreement(dx, ref, method, "kp_cubic")
    info = dx.capabilities().sde_methods[method]
    p = problem("kp_wave", info.calculus)
    bm = BrownianTree(*p.t_span, p.brownian_shape(16), seed=3)
    gaps = []
    for n in (16, 64):
        a = dx.solve_sde(p, method, bm=bm, n_steps=n).ys
        b = ref.solve_sde(p, info.reference, bm=bm, n_steps=n).ys
        gaps.append(float(np.max(np.abs(a - b))))
    assert 1e-6 < gaps[1] < gaps[0] / 4  # measured 5.2e-3 -> 4.7e-4 (Itô), 1.0e-2 -> 1.9e-3 (Strat.)


# ---------------------------------------------------------------------------- Lévy-area methods
class _Mirrored:
    """``[W; -W]`` of a tree, declared antithetic in its spec (as odeverify's weak-order
    property builds it)."""

    def __init__(self, tree: BrownianTree) -> None:
        self.tree, self.t0, self.t1 = tree, tree.t0, tree.t1
        self.shape = (2 * tree.shape[0], tree.shape[1])

    def values(self, ts):
        w = self.tree.values(ts)
        return np.concatenate([w, -w], axis=1)

    def spec(self):
        return {**self.tree.spec(), "antithetic": True}


def _levy_errors(dx, method: str, p: SDEProblem, paths: int, steps: tuple[int, ...], seed: int, bm=None):
    bm = BrownianTree(*p.t_span, p.brownian_shape(paths), seed=seed) if bm is None else bm
    y0 = p.y0_batch(paths)
    errs, w_end = [], []
    for n in steps:
        sol = dx.solve_sde(p, method, bm=bm, n_steps=n)
        assert sol.status is Status.SUCCESS, sol.message
        assert sol.brownian.shape == (2, paths, p.noise_dim)
        path = diffrax_sde.SampledPath(sol.ts, sol.brownian)
        exact = p.exact(sol.ts, y0, path, p.params)
        errs.append(float(np.mean(np.max(np.abs(sol.ys[-1] - exact[-1]), axis=-1))))
        w_end.append(sol.brownian[-1])
        np.testing.assert_array_equal(sol.brownian[0], 0.0)
    return np.array(errs), np.array(w_end)


def test_levy_area_method_converges_on_its_own_brownian_path(dx):
    """ShARK on additive noise runs on diffrax's VirtualBrownianTree; Solution.brownian is W of
    that path, the same path for every step count, and the closed form evaluated on it is
    approached at (at least) the claimed strong order 1.5. Measured slope over seeds 0-9: 2.03
    to 2.06 (kp_additive's solution is a function of W(t) alone, so the step's Lévy-area term
    is exact); the bound 1.3 leaves 0.7 for sampling noise of 32 paths."""
    p = problem("kp_additive", "stratonovich")
    steps = (4, 8, 16, 32)
    errs, w_end = _levy_errors(dx, "shark", p, paths=32, steps=steps, seed=0)
    np.testing.assert_allclose(w_end, np.broadcast_to(w_end[0], w_end.shape), rtol=0, atol=1e-12)
    assert np.std(w_end[0]) > 0.3  # W(1) of 32 paths: a path, not zeros (std 1; P(std < 0.3) ~ 1e-10)
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert slope > 1.5 - 0.2, (slope, errs)
    assert np.all(np.diff(errs) < 0)
    # another seed, other trees; an antithetic path [W; -W] gets mirrored trees (same program)
    _, w_other = _levy_errors(dx, "shark", p, paths=32, steps=(4,), seed=1)
    assert np.min(np.abs(w_other[0] - w_end[0])) > 0
    mirrored = _Mirrored(BrownianTree(*p.t_span, p.brownian_shape(16), seed=0))
    _, w_anti = _levy_errors(dx, "shark", p, paths=32, steps=(4,), seed=0, bm=mirrored)
    np.testing.assert_array_equal(w_anti[0][16:], -w_anti[0][:16])


@pytest.mark.slow
def test_brownian_output_is_the_trees_path(dx):
    """Solution.brownian (read off the augmented state) equals VirtualBrownianTree.evaluate of
    the key the adapter uses, to round-off."""
    import diffrax
    import jax

    p = problem("gbm_stratonovich", "stratonovich")
    bm = BrownianTree(*p.t_span, p.brownian_shape(3), seed=5)
    ts = np.linspace(*p.t_span, 5)
    sol = dx.solve_sde(p, "general_shark", bm=bm, n_steps=16, t_eval=ts)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(0), 5), 3)
    for i in range(3):
        tree = diffrax.VirtualBrownianTree(0.0, 1.0, tol=2.0 ** -diffrax_sde.LEVY_TREE_DEPTH,
                                           shape=jax.ShapeDtypeStruct((1,), np.float64), key=keys[i],
                                           levy_area=diffrax.SpaceTimeLevyArea)
        want = np.stack([np.asarray(tree.evaluate(0.0, t)) for t in ts])
        np.testing.assert_allclose(sol.brownian[:, i], want, rtol=0, atol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("method, name", [("sra1", "kp_additive"), ("sea", "kp_additive"),
                                          ("slow_rk", "kp_cubic"), ("spark", "gbm_stratonovich")])
def test_levy_area_strong_order(dx, method, name):
    """Strong order on the method's own path, 200 paths, n_steps 16..128: measured (300 paths,
    16..256) SRA1 2.00, SEA 1.01 on kp_additive; SlowRK 1.87 on kp_cubic; SPaRK 1.01 on gbm."""
    info = dx.capabilities().sde_methods[method]
    p = problem(name, "stratonovich")
    steps = (16, 32, 64, 128)
    errs, _ = _levy_errors(dx, method, p, paths=200, steps=steps, seed=1)
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert slope > info.strong_order(p.noise_class) - 0.2, (slope, errs)


# ---------------------------------------------------------------------------- evaluation counts
@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(diffrax_sde._SPECS))
def test_evaluation_closed_forms_match_a_host_counter(dx, method):
    info = dx.capabilities().sde_methods[method]
    name = "kp_additive" if "commutative" not in info.strong else "linear_commuting"
    p = problem(name, info.calculus)
    spec = diffrax_sde._SPECS[method]
    for n in (4, 8):
        assert diffrax_sde.count_evaluations(dx, p, method, n_steps=n) == (spec.drift * n + spec.start,
                                                                           spec.diffusion * n + spec.g_start)


# ---------------------------------------------------------------------------- failures and bad input
def _blowup(xp, t, y, p):
    return 40.0 * y * y * y


def test_overflow_becomes_a_nonfinite_status(dx):
    p = SDEProblem(name="blowup", drift=_blowup, diffusion=lambda xp, t, y, p: 0.1 * y, y0=(3.0,), t_span=(0.0, 1.0),
                   noise="diagonal", noise_dim=1)
    sol = dx.solve_sde(p, "euler", paths=3, n_steps=8)
    assert sol.status is Status.NONFINITE and "non-finite" in sol.message
    assert sol.ys.shape == (2, 3, 1)


def test_a_library_error_becomes_a_status(dx):
    # general noise of dimension 2 whose diffusion returns one column: diffrax's ControlTerm
    # cannot contract it with the increment; the error is recorded, not raised
    p = SDEProblem(name="bad_shape", drift=lambda xp, t, y, p: -y, diffusion=lambda xp, t, y, p: y[..., None],
                   y0=(1.0,), t_span=(0.0, 1.0), noise="general", noise_dim=2)
    sol = dx.solve_sde(p, "euler", paths=2, n_steps=4)
    assert sol.status is Status.FAILED and sol.message
    assert np.all(np.isnan(sol.ys))


def test_bad_input_is_named(dx):
    gbm = SDE_PROBLEMS.get("gbm_ito")
    with pytest.raises(ValueError, match="no SDE method 'shrak'.*'shark'"):
        dx.solve_sde(gbm, "shrak", n_steps=4)
    with pytest.raises(ValueError, match=r"'heun' converges to the stratonovich.*as_calculus\('stratonovich'\)"):
        dx.solve_sde(gbm, "heun", n_steps=4)
    with pytest.raises(ValueError, match="'sra1' is not valid for commutative noise"):
        dx.solve_sde(problem("gbm_ito", "stratonovich"), "sra1", n_steps=4)
    with pytest.raises(ValueError, match="needs a fixed step"):
        dx.solve_sde(gbm, "euler")
    with pytest.raises(ValueError, match=r"t_eval has times \[0.3\] between steps"):
        dx.solve_sde(gbm, "euler", n_steps=4, t_eval=[0.0, 0.3, 1.0])


def test_sampled_path_refuses_unknown_times():
    path = diffrax_sde.SampledPath([0.0, 0.5, 1.0], np.zeros((3, 2, 1)))
    assert path.values([1.0, 0.0]).shape == (2, 2, 1)
    with pytest.raises(ValueError, match=r"asked at \[0.25\]"):
        path.values([0.25])
    with pytest.raises(ValueError, match="w has shape"):
        diffrax_sde.SampledPath([0.0, 1.0], np.zeros(3))
