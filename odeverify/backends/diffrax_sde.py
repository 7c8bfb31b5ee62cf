"""diffrax's SDE solvers behind :meth:`DiffraxBackend.solve_sde` (issue 10, "Neural SDEs").

Facts this adapter relies on (diffrax 0.7.2, read from its source and its docs' SDE solver
table, ``docs/devdocs/SDE_solver_table.md``; measured figures as stated):

- Terms: ``MultiTerm(ODETerm(drift), ControlTerm(diffusion, path))``. Diagonal noise returns
  a ``lineax.DiagonalLinearOperator`` from the diffusion (diffrax 0.7.2 deprecates
  ``WeaklyDiagonalControlTerm`` in favour of exactly this); scalar, additive and general noise
  return the ``(n, m)`` matrix, contracted with the ``(m,)`` increment.
- The batch of ``M`` paths is ``jax.vmap`` over one solve per path (state ``(n,)``, its own
  slice of the Brownian array or its own key). One solve of an ``(M, n)`` state would need a
  ``(M, n, M, m)`` diffusion for ``ControlTerm`` (it contracts the whole control), and
  ItoMilstein's double-integral term would become ``(M m)^2``: vmap keeps every path the
  system the library documents.
- Fixed steps: ``ConstantStepSize`` with ``dt0 = span / N`` (``n_steps=N``, or a ``dt`` that
  divides the span), else ``StepTo`` on the reference grid (steps of ``dt``, last one
  shortened), as the ODE side does. Either way the step ends are the reference grid
  (:func:`odeverify.integrate.fixed_grid`) up to an ulp or two in t.
- odeverify's path drives the methods that need only Brownian increments (:class:`GridPath`:
  ``W`` of :class:`odeverify.brownian.BrownianTree` precomputed on the step grid, an increment
  located by nearest grid index, so an ulp of difference in diffrax's step times picks the
  same grid points). Those solves are compared pathwise with odeverify's reference.
- Methods that need space-time Lévy area ``H`` (SEA, SRA1, ShARK, SPaRK, GeneralShARK, SlowRK;
  diffrax's ``AbstractSRK.minimal_levy_area``) cannot take a path that has only values, so they
  run on diffrax's ``VirtualBrownianTree(levy_area=SpaceTimeLevyArea)``, keyed by the seed of
  the odeverify path and by path index (an antithetic path ``[W; -W]`` gets its first half's
  trees again, negated: :func:`_tree_keys`), with ``tol = span * 2**-LEVY_TREE_DEPTH`` for every step
  size (the step grids are dyadic, so every step end is a node of the tree and the coarse
  increments are sums of the fine ones). ``Solution.brownian`` holds ``W`` of that path at
  the output times, shape ``(T, M, m)``, so closed forms can be evaluated on it
  (:class:`SampledPath`). It is read off the solve itself: the state is augmented to
  ``(y, w)`` with ``dw = dW`` (drift 0, diffusion the identity), whose solution every one of
  these tableaus reproduces exactly (their weights sum to 1 on ``W`` and to 0 on ``H``: SEA,
  SRA1, ShARK ``b_W = 1, b_H = 0``; GeneralShARK ``(0, .4, .6)``, ``(0, 1.2, -1.2)``; SPaRK and
  SlowRK likewise), so ``w`` is the sum of the tree's increments over the steps, to round-off
  (checked against the tree's own ``evaluate`` in the tests). The ``y`` part of the solve is
  unchanged (its drift and diffusion do not see ``w``). Evaluating the tree separately would
  compile a second copy of its bisection (about 5 s more per program, measured).
- Additive noise: diffrax's additive-noise tableaus (SEA, SRA1, ShARK) refuse a diffusion
  whose ``jvp`` in ``y`` is not symbolically zero, and odeverify's additive problems are
  written ``sigma + 0 * y``; a problem that declares additive noise therefore has its diffusion
  evaluated at a constant zero state for every method (by the declaration it does not depend on
  the state).
- Evaluation counts (``nfev`` drift, ``ngev`` diffusion) are closed forms per method (``_SPECS``:
  evaluations per step plus start-up ones), read from the solvers' code and checked with a
  host callback in each field that counts every (t, y) it is evaluated at
  (:func:`count_evaluations`, ``tests/test_diffrax_sde.py``). They differ from the "VF
  evaluations" column of diffrax's docs table, which counts stages: ReversibleHeun evaluates
  the drift and the diffusion once per step plus once in ``init`` (table: 2 and 2); the
  general-noise SRKs (GeneralShARK, SPaRK, SlowRK) call the diffusion twice per stage, for its
  products with W and with H (6, 6 and 10 per step; XLA may merge the two identical
  evaluations of the compiled program, a host callback sees both); the additive-noise SRKs
  (SEA, SRA1, ShARK) evaluate g at both ends of each step, plus once in ``init`` (a ``jvp``
  checking that g does not depend on y). The Milstein methods take one forward-mode
  derivative of the diffusion per step (a ``jvp``, counted as one diffusion evaluation).
- Calculus: the library's (every method but Euler and ItoMilstein converges to the Stratonovich
  solution). For additive noise both calculi have the same solution, but odeverify's
  validation compares the calculus by name, so an Itô additive problem is solved by a
  Stratonovich method after ``problem.as_calculus("stratonovich")`` (a zero correction).
- Not adapted: ALIGN, QUICSORT and ShOULD solve underdamped Langevin diffusions only: they
  take ``UnderdampedLangevinDriftTerm`` / ``UnderdampedLangevinDiffusionTerm`` on a state
  ``(x, v)`` with friction ``gamma``, mass ``u`` and a potential gradient, not a general
  ``dX = f dt + g dW``.
- Compilation: one program per (drift, diffusion and their constant parameters, method, paths
  ``M``, ``n``, ``m``, step slots, output slots, dtype, device), cached on the backend
  with the problem kept alive (its functions' ids stay unique); y0, the Brownian values or
  keys, the step grid and the output times are traced arguments. Constant steps are padded
  to at least :data:`MIN_STEP_SLOTS` (then a power of two) and the output times to a power of
  two, so a convergence sweep over n_steps 16 ... 256 compiles once (measured: 2.5-4 s a
  program on this 2-core machine, cold). A problem converted with ``as_calculus`` has new
  functions each call: convert once and reuse it.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _xp
from ..solution import Solution, Stats, Status
from ..solvers.sde import SDEMethod

#: the VirtualBrownianTree of the Lévy-area methods resolves span / 2**LEVY_TREE_DEPTH
LEVY_TREE_DEPTH = 20
#: constant-step solves of up to this many steps share one compilation (then powers of two)
MIN_STEP_SLOTS = 256
#: compiled SDE solves kept per backend (oldest dropped first)
MAX_COMPILED = 64

_BM_ONLY = ("general", "commutative", "additive")


@dataclass(frozen=True)
class _Spec:
    cls: str  #: diffrax's class name
    calculus: str
    strong: dict[str, float]
    weak: dict[str, float]
    order: int  #: order without noise (diffrax's ``solver.order``; Milstein has none: 1)
    drift: int  #: drift evaluations per step
    diffusion: int  #: diffusion evaluations per step (each g(t, y) the step code asks for)
    start: int = 0  #: drift evaluations at start-up (``init``)
    g_start: int = 0  #: diffusion evaluations at start-up
    levy: bool = False  #: needs space-time Lévy area (runs on diffrax's VirtualBrownianTree)
    reference: str | None = None
    notes: str = ""


_FOSTER = "Foster, dos Reis & Strange, High order splitting methods for SDEs satisfying a commutativity condition (2023)"
_SPECS: dict[str, _Spec] = {
    "euler": _Spec("Euler", "ito", {"general": 0.5, "commutative": 0.5, "additive": 1.0},
                   {k: 1.0 for k in _BM_ONLY}, 1, 1, 1, reference="euler",
                   notes="Euler-Maruyama; same formula as the reference's 'euler'"),
    "euler_heun": _Spec("EulerHeun", "stratonovich", {"general": 0.5, "commutative": 0.5, "additive": 1.0},
                        {k: 1.0 for k in _BM_ONLY}, 1, 1, 2, reference="euler_heun",
                        notes="diffrax claims 0.5 for commutative noise; the reference (same formula) claims 1.0"),
    "heun": _Spec("Heun", "stratonovich", {"general": 0.5, "commutative": 1.0, "additive": 1.0},
                  {k: 1.0 for k in _BM_ONLY}, 2, 2, 2, reference="heun",
                  notes="explicit RK (Heun's tableau) on the MultiTerm: the stochastic Heun of the reference"),
    "midpoint": _Spec("Midpoint", "stratonovich", {"general": 0.5, "commutative": 1.0, "additive": 1.0},
                      {k: 1.0 for k in _BM_ONLY}, 2, 2, 2, notes="explicit midpoint RK on the MultiTerm"),
    "ralston": _Spec("Ralston", "stratonovich", {"general": 0.5, "commutative": 1.0, "additive": 1.0},
                     {k: 1.0 for k in _BM_ONLY}, 2, 2, 2, notes="Ralston's RK2 on the MultiTerm"),
    "ito_milstein": _Spec("ItoMilstein", "ito", {"general": 0.5, "commutative": 1.0, "additive": 1.0},
                          {k: 1.0 for k in _BM_ONLY}, 1, 1, 2, reference="milstein_ito",
                          notes="L^j g_k by a jvp of the diffusion (exact); the reference uses central"
                                " differences, O(h) apart per step. diffrax does not check commutativity"
                                " and drops the Lévy area: 0.5 on general noise"),
    "stratonovich_milstein": _Spec("StratonovichMilstein", "stratonovich",
                                   {"general": 0.5, "commutative": 1.0, "additive": 1.0},
                                   {k: 1.0 for k in _BM_ONLY}, 1, 1, 2, reference="milstein_strat",
                                   notes="as ito_milstein, without the -h term"),
    "reversible_heun": _Spec("ReversibleHeun", "stratonovich", {"general": 0.5, "commutative": 1.0, "additive": 1.0},
                             {k: 1.0 for k in _BM_ONLY}, 2, 1, 1, start=1, g_start=1, reference="reversible_heun",
                             notes="Kidger, Foster, Li & Lyons (NeurIPS 2021); one drift and one diffusion"
                                   " evaluation per step plus one of each at start (diffrax's table says 2/2)"),
    "sea": _Spec("SEA", "stratonovich", {"additive": 1.0}, {"additive": 1.0}, 1, 1, 2, g_start=1, levy=True,
                 notes=f"shifted Euler, additive noise only; {_FOSTER}, eq. (5.8)"),
    "sra1": _Spec("SRA1", "stratonovich", {"additive": 1.5}, {"additive": 2.0}, 2, 2, 2, g_start=1, levy=True,
                  notes="Rößler, SIAM J. Numer. Anal. 48 (2010); additive noise only"),
    "shark": _Spec("ShARK", "stratonovich", {"additive": 1.5}, {"additive": 2.0}, 2, 2, 2, g_start=1, levy=True,
                   notes=f"additive noise only; {_FOSTER}, eq. (6.1)"),
    "general_shark": _Spec("GeneralShARK", "stratonovich", {"general": 0.5, "commutative": 1.0, "additive": 1.5},
                           {"general": 1.0, "commutative": 1.0, "additive": 2.0}, 2, 2, 6, levy=True,
                           notes=f"{_FOSTER}, eq. (6.1)"),
    "spark": _Spec("SPaRK", "stratonovich", {"general": 0.5, "commutative": 1.0, "additive": 1.5},
                   {"general": 1.0, "commutative": 1.0, "additive": 2.0}, 2, 3, 6, levy=True,
                   notes="Foster, On the convergence of adaptive approximations of SDEs (2023), Def. 1.6;"
                         " has an embedded error estimate (unused: fixed steps)"),
    "slow_rk": _Spec("SlowRK", "stratonovich", {"general": 0.5, "commutative": 1.5, "additive": 1.5},
                     {"general": 1.0, "commutative": 2.0, "additive": 2.0}, 2, 2, 10, levy=True,
                     notes=f"{_FOSTER}, eq. (6.2)"),
}
_TABLE = "diffrax 0.7.2 docs, SDE solver table (docs/devdocs/SDE_solver_table.md)"


def sde_methods() -> dict[str, SDEMethod]:
    """One :class:`SDEMethod` per diffrax SDE solver, with the orders diffrax claims."""
    out = {}
    for name, s in _SPECS.items():
        evals = (f"evaluations: {s.drift} drift and {s.diffusion} diffusion per step"
                 + (f", {s.start} drift and {s.g_start} diffusion at start" if s.start or s.g_start else ""))
        path = ("needs space-time Lévy area: solved on diffrax's VirtualBrownianTree, W at the output times in"
                " Solution.brownian" if s.levy else "driven by odeverify's Brownian path")
        out[name] = SDEMethod(name=name, calculus=s.calculus, strong=s.strong, weak=s.weak, rule=f"diffrax.{s.cls}",
                              order=s.order, citation=f"diffrax.{s.cls}; orders as claimed in {_TABLE}",
                              notes=f"{s.notes}; {evals}; {path}", reversible=name == "reversible_heun",
                              reference=s.reference)
    return out


class SampledPath:
    """A Brownian path known at a few times (``Solution.brownian`` of a Lévy-area solve), with
    the interface the problems' closed forms use (``t0``, ``t1``, ``shape``, ``values``)."""

    def __init__(self, ts: Any, w: Any, t0: float | None = None) -> None:
        self.ts = np.asarray(ts, dtype=np.float64).reshape(-1)
        self.w = np.asarray(w, dtype=np.float64)
        if self.w.shape[:1] != self.ts.shape or self.w.ndim not in (2, 3):
            raise ValueError(f"SampledPath: w has shape {self.w.shape}, but it must be (T, m) or (T, M, m) with"
                             f" T = len(ts) = {self.ts.size}")
        self.t0 = float(self.ts[0] if t0 is None else t0)
        self.t1 = float(self.ts[-1])
        self.shape = self.w.shape[1:]

    def values(self, ts: Any) -> np.ndarray:
        q = np.asarray(ts, dtype=np.float64).reshape(-1)
        idx = np.clip(np.searchsorted(self.ts, q), 0, self.ts.size - 1)
        lower = np.maximum(idx - 1, 0)
        idx = np.where(np.abs(self.ts[lower] - q) < np.abs(self.ts[idx] - q), lower, idx)
        off = np.abs(self.ts[idx] - q) > 1e-12 * max(1.0, abs(self.t1 - self.t0))
        if np.any(off):
            raise ValueError(f"SampledPath knows W only at {self.ts.tolist()[:6]}...; asked at {q[off].tolist()[:4]}")
        return self.w[idx]

    def __repr__(self) -> str:
        return f"SampledPath(T={self.ts.size}, shape={self.shape})"


def _tree_keys(bm: Any, paths: int) -> tuple[Any, np.ndarray]:
    """The VirtualBrownianTree keys and signs of the paths: keyed by the odeverify path's seed
    (by a hash of its W(t1) where it has none), so one seed gives one set of trees and another
    seed others; an antithetic path (``spec()["antithetic"]``: rows ``[W; -W]``) gets the trees
    of its first half again, negated (W and H change sign together)."""
    import jax

    spec = bm.spec() if hasattr(bm, "spec") else {}
    seed = spec.get("seed")
    if seed is None:
        digest = hashlib.sha1(np.ascontiguousarray(bm.values([bm.t1]), dtype=np.float64).tobytes()).digest()
        seed = int.from_bytes(digest[:4], "little")
    base = jax.random.fold_in(jax.random.key(0), int(seed) & 0x7FFFFFFF)
    if spec.get("antithetic") and paths % 2 == 0:
        half = jax.random.split(base, paths // 2)
        keys = jax.numpy.concatenate([half, half])
        return keys, np.repeat([1.0, -1.0], paths // 2)
    return jax.random.split(base, paths), np.ones(paths)


def _path_classes() -> tuple[type, type]:
    """:class:`GridPath` and the signed tree of the Lévy-area methods, defined on first use
    (diffrax is optional)."""
    global GridPath, SignedTree
    if GridPath is not None:
        return GridPath, SignedTree
    import diffrax
    import equinox as eqx
    import jax.numpy as jnp

    class _GridPath(diffrax.AbstractBrownianPath):
        """W known on the step grid (``w[k] = W(grid[k])``, shape ``(N + 1, m)``); an increment
        ``W(s) - W(r)`` is ``w[k(s)] - w[k(r)]`` with ``k`` the nearest grid index, so a step
        time an ulp away from the grid point picks that point. Traceable (searchsorted)."""

        t0: Any
        t1: Any
        grid: Any
        w: Any
        levy_area: type = eqx.field(static=True, default=diffrax.BrownianIncrement)

        def _index(self, t: Any) -> Any:
            n = self.grid.shape[0]
            j = jnp.clip(jnp.searchsorted(self.grid, t), 1, n - 1)
            return jnp.where(jnp.abs(self.grid[j] - t) <= jnp.abs(self.grid[j - 1] - t), j, j - 1)

        def evaluate(self, t0: Any, t1: Any = None, left: bool = True, use_levy: bool = False) -> Any:
            del left
            if t1 is None:
                out = self.w[self._index(t0)]
                dt = t0 - self.t0
            else:
                out = self.w[self._index(t1)] - self.w[self._index(t0)]
                dt = t1 - t0
            if use_levy:
                return diffrax.BrownianIncrement(dt=dt, W=out)
            return out

    class _SignedTree(diffrax.AbstractBrownianPath):
        """``sign * W`` of a VirtualBrownianTree (its space-time Lévy area scaled alike)."""

        tree: Any
        sign: Any
        levy_area: type = eqx.field(static=True, default=diffrax.SpaceTimeLevyArea)

        @property
        def t0(self) -> Any:
            return self.tree.t0

        @property
        def t1(self) -> Any:
            return self.tree.t1

        def evaluate(self, t0: Any, t1: Any = None, left: bool = True, use_levy: bool = False) -> Any:
            out = self.tree.evaluate(t0, t1, left, use_levy)
            if use_levy:
                return diffrax.SpaceTimeLevyArea(dt=out.dt, W=self.sign * out.W, H=self.sign * out.H)
            return self.sign * out

    GridPath, SignedTree = _GridPath, _SignedTree
    return GridPath, SignedTree


GridPath: Any = None
SignedTree: Any = None


# ---------------------------------------------------------------------------- solve
def _params_key(problem: Any) -> tuple:
    def fp(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return (v.shape, str(v.dtype), hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest())
        return repr(v)

    return tuple((k, fp(v)) for k, v in sorted(problem.params.items()))


def _step_grid(problem: Any, options: dict[str, Any]) -> tuple[np.ndarray, str]:
    """The reference step grid and the controller that reproduces it."""
    from ..integrate import fixed_grid

    t0, t1 = problem.t_span
    dt, n_steps = options.get("dt"), options.get("n_steps")
    if dt is not None and n_steps is not None:
        raise ValueError("give either dt or n_steps, not both")
    grid = fixed_grid(t0, t1, None if dt is None else float(dt), None if n_steps is None else int(n_steps))
    uniform = n_steps is not None or abs((t1 - t0) / float(dt) - (grid.size - 1)) <= 1e-12 * (grid.size - 1)
    return grid, "constant" if uniform else "step_to"


def _output_times(options: dict[str, Any], grid: np.ndarray) -> np.ndarray:
    """The output times, snapped to the grid (a time between steps raises: no dense output)."""
    from ..integrate import snap_to_grid

    t_eval = options.get("t_eval")
    return grid[[0, -1]].copy() if t_eval is None else snap_to_grid(grid, t_eval)


def solve_sde(backend: Any, problem: Any, method: SDEMethod, bm: Any, y0: np.ndarray, options: dict[str, Any],
              dtype: str, device: str, count: list[int] | None = None) -> Solution:
    """Solve ``problem`` with diffrax's ``method`` on the path ``bm`` (rows of ``y0`` = paths);
    see the module docstring. ``count``: a two-item list that receives the drift and diffusion
    evaluations counted by a host callback (a separate, uncached compilation)."""
    import jax
    import jax.numpy as jnp

    from . import _jax_cache

    backend._import()
    _jax_cache.enable()
    spec = _SPECS[method.name]
    grid, controller = _step_grid(problem, options)
    ts = _output_times(options, grid)
    y0 = np.asarray(y0, dtype=np.float64)
    paths, n = y0.shape
    m = problem.noise_dim
    jdt = jnp.float64 if dtype == "float64" else jnp.float32
    nsteps = grid.size - 1
    # constant steps: the grid (and W on it) padded with repeats of its end to a bucket of
    # steps, so that a convergence sweep (n_steps 16 ... 256) shares one compilation; the
    # padding is never stepped to (diffrax stops at t1) and a lookup at t1 finds the same value
    bucket = max(MIN_STEP_SLOTS, 1 << (nsteps - 1).bit_length()) if controller == "constant" else nsteps
    grid_run = np.concatenate([grid, np.full(bucket - nsteps, grid[-1])])
    slots = 1 << max(ts.size - 1, 0).bit_length()  # output slots: a power of two, padded with repeats
    ts_run = np.concatenate([ts, np.full(slots - ts.size, ts[-1])])
    key = (id(problem.drift), id(problem.diffusion), _params_key(problem), problem.noise, method.name, controller,
           paths, n, m, bucket, slots, dtype, device)
    cache = backend.__dict__.setdefault("_sde_cache", {})
    entry = None if count is not None else cache.get(key)
    args: dict[str, Any] = {"y0": y0, "grid": grid_run, "ts": ts_run, "dt0": (grid[-1] - grid[0]) / nsteps}
    if spec.levy:
        args["keys"], args["sign"] = _tree_keys(bm, paths)
    else:
        w = np.asarray(bm.values(grid), dtype=np.float64).reshape(grid.size, paths, m)  # (N + 1, M, m)
        w = np.concatenate([w, np.repeat(w[-1:], bucket - nsteps, axis=0)])
        args["w"] = np.moveaxis(w, 1, 0)  # (M, bucket + 1, m)
    jdev = jax.devices("gpu" if device == "gpu" else "cpu")[0]
    args = {k: (v if k == "keys" else jnp.asarray(v, dtype=jdt)) for k, v in args.items()}
    args = jax.device_put(args, jdev)
    compile_s = 0.0
    if entry is None:
        fn = _build(problem, spec, controller, bucket, jdt, m, count)
        start = time.perf_counter()
        with _jax_cache.cacheable_checks():
            compiled = jax.jit(fn).lower(args).compile()
        compile_s = time.perf_counter() - start
        if count is None:
            if len(cache) >= MAX_COMPILED:
                cache.pop(next(iter(cache)))
            cache[key] = (compiled, problem)  # keeps the problem's functions alive: their ids stay unique
    else:
        compiled = entry[0]
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(args))
    wall = time.perf_counter() - start
    if count is not None:
        jax.effects_barrier()
    return _to_solution(out, ts, method, spec, nsteps, problem, bm, options, wall, compile_s)


def _build(problem: Any, spec: _Spec, controller: str, max_steps: int, jdt: Any, m: int, count: list[int] | None):
    """The function to jit: args -> {"ys": (T, M, n), "result": (M,), "w": (T, M, m) or absent}."""
    import diffrax
    import jax
    import jax.numpy as jnp

    xp = _xp.get_namespace("jax")
    drift_f = problem.drift_field(xp, jdt)
    diff_f = problem.diffusion_field(xp, jdt)
    noise = problem.noise
    n = problem.n

    def tick(i: int) -> Any:
        def bump(t: Any) -> None:
            count[i] += int(np.size(t))  # a call vmapped over several times evaluates at each
        return bump

    # Lévy-area methods solve the augmented state (y, w) with dw = dW (see the module docstring)
    augment = spec.levy

    def drift(t: Any, y: Any, args: Any) -> Any:
        if count is not None:
            jax.debug.callback(tick(0), t, ordered=False)
        if augment:
            return jnp.concatenate([drift_f(t, y[:n]), jnp.zeros((m,), dtype=jdt)])
        return drift_f(t, y)

    def diffusion(t: Any, y: Any, args: Any) -> Any:
        if count is not None:
            jax.debug.callback(tick(1), t, ordered=False)
        if noise == "additive":  # declared independent of the state (see the module docstring)
            y = jnp.zeros((n,), dtype=jdt)
        g = diff_f(t, y[:n])
        if augment:
            g = jnp.diag(g) if noise == "diagonal" else g
            return jnp.concatenate([g, jnp.eye(m, dtype=jdt)], axis=0)  # (n + m, m)
        if noise == "diagonal":
            import lineax

            return lineax.DiagonalLinearOperator(g)
        return g

    solver = getattr(diffrax, spec.cls)()

    def one(a: dict[str, Any], y0: Any, noise_in: Any) -> dict[str, Any]:
        t0, t1 = a["grid"][0], a["grid"][-1]  # the padding repeats t1
        if spec.levy:
            tol = (t1 - t0) * 2.0 ** -LEVY_TREE_DEPTH
            tree = diffrax.VirtualBrownianTree(t0, t1, tol=tol, shape=jax.ShapeDtypeStruct((m,), jdt),
                                               key=noise_in[0], levy_area=diffrax.SpaceTimeLevyArea)
            path = _path_classes()[1](tree=tree, sign=noise_in[1])
        else:
            path = _path_classes()[0](t0=t0, t1=t1, grid=a["grid"], w=noise_in)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, path))
        if controller == "constant":
            ctrl: Any = diffrax.ConstantStepSize()
            dt0 = a["dt0"]
        else:
            ctrl = diffrax.StepTo(ts=a["grid"])
            dt0 = None
        y_init = jnp.concatenate([y0, jnp.zeros((m,), dtype=jdt)]) if augment else y0
        sol = diffrax.diffeqsolve(terms, solver, t0, t1, dt0, y_init, saveat=diffrax.SaveAt(ts=a["ts"]),
                                  stepsize_controller=ctrl, max_steps=max_steps + 2, throw=False)
        res = {"ys": sol.ys[:, :n], "result": sol.result._value, "accepted": sol.stats["num_accepted_steps"]}
        if augment:
            res["w"] = sol.ys[:, n:]
        return res

    def fn(a: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in a.items() if k not in ("y0", "w", "keys", "sign")}
        noise_in = (a["keys"], a["sign"]) if spec.levy else a["w"]
        out = jax.vmap(lambda y, z: one(rest, y, z))(a["y0"], noise_in)
        out["ys"] = jnp.moveaxis(out["ys"], 0, 1)  # (M, T, n) -> (T, M, n)
        if spec.levy:
            out["w"] = jnp.moveaxis(out["w"], 0, 1)
        return out

    return fn


def _to_solution(out: dict[str, Any], ts: np.ndarray, method: SDEMethod, spec: _Spec, nsteps: int, problem: Any,
                 bm: Any, options: dict[str, Any], wall: float, compile_s: float) -> Solution:
    from .diffrax_backend import _STATUS_OF, _result_name

    T = ts.size
    ys = np.asarray(out["ys"], dtype=np.float64)[:T]
    codes = np.atleast_1d(np.asarray(out["result"]))
    names = sorted({_result_name(int(c)) for c in codes} - {"successful"})
    status = Status.SUCCESS if not names else _STATUS_OF.get(names[0], Status.FAILED)
    message = "; ".join(f"diffrax: {nm}" for nm in names)
    if status.ok and not np.all(np.isfinite(ys)):
        status = Status.NONFINITE
        bad = int(np.sum(~np.all(np.isfinite(ys), axis=(0, 2))))
        message = f"{bad} of {ys.shape[1]} paths non-finite"
    stats = Stats(nfev=spec.drift * nsteps + spec.start, ngev=spec.diffusion * nsteps + spec.g_start,
                  accepted=int(np.max(np.asarray(out["accepted"]))))
    sol_options = {k: v for k, v in options.items() if v is not None}
    sol_options.update({"noise": problem.noise, "calculus": method.calculus})
    brownian = None
    if spec.levy:
        brownian = np.asarray(out["w"], dtype=np.float64)[:T]
        sol_options["brownian"] = {"diffrax": "VirtualBrownianTree", "levy_area": "SpaceTimeLevyArea",
                                   "seed": int(getattr(bm, "seed", 0)), "tol": f"span * 2**-{LEVY_TREE_DEPTH}"}
    else:
        sol_options["brownian"] = getattr(bm, "spec", dict)()
    return Solution(ts=ts, ys=ys, status=status, stats=stats, method=method.name, t_final=float(ts[-1]),
                    message=message, options=sol_options, timing={"wall_s": wall, "compile_s": compile_s},
                    brownian=brownian)


def count_evaluations(backend: Any, problem: Any, method: str, *, n_steps: int, paths: int = 1,
                      seed: int = 0) -> tuple[int, int]:
    """(drift, diffusion) evaluations of one solve, counted by a host callback in each field
    (a separate compilation); with ``paths > 1`` each vmapped call counts once per path.
    Checks the closed forms in ``Solution.stats``."""
    from ..brownian import BrownianTree

    info = sde_methods()[method]
    bm = BrownianTree(*problem.t_span, problem.brownian_shape(paths), seed=seed)
    counter = [0, 0]
    solve_sde(backend, problem, info, bm, problem.y0_batch(paths), {"n_steps": n_steps}, "float64", "cpu",
              count=counter)
    return counter[0], counter[1]


__all__ = ["LEVY_TREE_DEPTH", "SampledPath", "count_evaluations", "sde_methods", "solve_sde"]
