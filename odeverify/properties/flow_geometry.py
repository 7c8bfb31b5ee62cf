"""The geometry of the flow map: what a time-T flow can and cannot do, and where a fixed-step
discretisation (a ResNet) stops being a flow.

The time-T map ``phi`` of an ODE ``z' = f(t, z)`` with ``f`` Lipschitz is a diffeomorphism
isotopic to the identity (``phi_s`` for ``s`` in [0, T] joins it to ``phi_0 = id``), so
``det D phi > 0`` everywhere (Liouville: ``det D phi = exp(int tr Df) > 0``), and on the line
it is strictly increasing: two trajectories cannot cross, since they would then coincide by
uniqueness. Hence some maps are *unreachable* by any flow, the simplest being ``x -> -x`` on
the line; one extra dimension makes it reachable (a rotation by ``pi`` in the plane,
E. Dupont, A. Doucet, Y. W. Teh, Augmented Neural ODEs, NeurIPS 2019, Sec. 3 and Prop. 1).

A numerical map is only a flow map where it keeps these properties. An explicit Runge-Kutta
step ``z -> z + h sum b_i k_i`` on ``f = lambda z`` is ``z -> R(h lambda) z`` with ``R`` the
stability polynomial, so it reverses orientation once ``R(h lambda) <= 0``: Euler at
``h |lambda| = 1``. The forward Euler loop with shared weights is exactly a residual network
(E. Haber, L. Ruthotto, Stable architectures for deep neural networks, Inverse Problems 34
(2017) 014004; W. E, A proposal on machine learning via dynamical systems, Commun. Math. Stat.
5 (2017) 1-11; R. T. Q. Chen et al., Neural ODEs, NeurIPS 2018), which can represent the
negation the ODE cannot: ``h lambda = -2`` gives ``z -> -z`` in one step.

Properties (each returns a :class:`~odeverify.records.Record`):

- :func:`flow_orientation` (1-D): sorted points keep their order under the numerical map;
- :func:`flow_injectivity` (n-D): ``det`` of the numerical map's Jacobian (central
  differences) > 0 at sampled points, no segment's image reverses direction, no two images meet;
- :func:`flow_fold_step`: the fixed step ``h*`` at which one step of a method stops being an
  orientation-preserving diffeomorphism, against ``x*/|lambda|`` on linear fields;
- :func:`flow_unreachable_negation`: ``max(|phi(-a) - a|, |phi(a) + a|) >= a`` for 1-D flows,
  also along a random search aimed at the negation;
- :func:`augmented_negation`: the augmented rotation maps ``x`` to ``-x``; convergence of the
  projected output; gradients of a projected loss against a complex-step oracle;
- :func:`resnet_euler`: a plain residual loop equals the reference Euler solve bit for bit and
  converges at order 1.

Why the Jacobian sign is the detector: a fold of a smooth map (two sheets meeting along a
crease) makes ``det D phi`` change sign across the crease, so ``det < 0`` on an *open* set that
a sample of points hits with positive probability, whereas a collision of two sampled points
(an exact failure of injectivity) has probability zero. The pair and segment checks are kept
because they need no derivative and read the failure directly.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import _xp
from ..backends.base import gradient_params
from ..gradients import Loss, value_and_grad
from ..integrate import solve
from ..metrics import as_numpy, loglog_slope
from ..problems.flows import ANODE, NODE, FlowField, augmented_problem, linear_field, project, rotation_field
from ..records import Record
from ..solvers import SOLVERS
from ..tableaus.theory import _first_sign_change, stability_function
from ._common import backend_label, run, solver_order
from .convergence import ORDER_BAND
from .gradients import ACCURACY_FACTOR
from .tolerance import EXPONENT_BAND, MIN_STEPS, expected_exponent

EPS = float(np.finfo(np.float64).eps)
#: central-difference step, relative: eps^(1/3) balances truncation h^2 against round-off eps/h
FD_STEP = EPS ** (1.0 / 3.0)
RESNET = ("E. Haber, L. Ruthotto, Stable architectures for deep neural networks, Inverse Problems 34 (2017);"
          " W. E, A proposal on machine learning via dynamical systems, Commun. Math. Stat. 5 (2017)")
#: reference of the tight solves that stand in for a flow without a closed form
TIGHT = dict(method="dop853", rtol=1e-12, atol=1e-14)


# ============================================================================ validation
def _field(fld: Any, name: str = "field", dim: int | None = None) -> FlowField:
    if not isinstance(fld, FlowField):
        raise ValueError(f"{name}={fld!r}, but it must be a FlowField (odeverify.problems.flows)")
    if dim is not None and fld.dim != dim:
        raise ValueError(f"{name}={fld.name!r} has dim={fld.dim}, but this property needs a {dim}-D field")
    return fld


def _positive(value: Any, name: str, *, allow_inf: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}, but it must be a positive number") from None
    if isinstance(value, bool) or not v > 0 or (math.isinf(v) and not allow_inf) or math.isnan(v):
        raise ValueError(f"{name}={value!r}, but it must be a finite number > 0")
    return v


def _count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}, but it must be an int >= {minimum}")
    return int(value)


def _span(t_span: Any) -> tuple[float, float]:
    try:
        t0, t1 = (float(t) for t in t_span)
    except (TypeError, ValueError):
        raise ValueError(f"t_span={t_span!r}, but it must be a pair (t0, t1) of finite times") from None
    if not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1:
        raise ValueError(f"t_span={t_span!r}, but it must be a pair of distinct finite times")
    return t0, t1


def _points(points: Any, dim: int, name: str = "points") -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if dim == 1 and p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2 or p.shape[1] != dim or p.shape[0] < 1 or not np.all(np.isfinite(p)):
        raise ValueError(f"{name} has shape {p.shape}, but it must be finite, of shape (B, dim) = (B, {dim})")
    return p


def _solve_options(rtol: Any, atol: Any, n_steps: Any) -> dict[str, Any]:
    if n_steps is not None:
        return {"n_steps": _count(n_steps, "n_steps")}
    return {"rtol": _positive(rtol, "rtol"), "atol": _positive(atol, "atol")}


# ============================================================================ the numerical map
def flow_map(fld: FlowField, points: Any, method: Any, *, t_span: Sequence[float] = (0.0, 1.0),
             backend: str = "reference", library: str = "numpy", rtol: float = 1e-6, atol: float = 1e-9,
             n_steps: int | None = None) -> tuple[np.ndarray | None, Any]:
    """The numerical time-``t_span`` map of ``fld`` at ``points`` (shape ``(B, dim)``), solved as
    one batch (``(B, dim)`` NumPy float64, or None when the solve failed) and the Solution.

    A batch shares its steps (the reference's ``batch="shared"``), so every point of one call is
    moved by the same map; central differences taken inside one batch differentiate that map."""
    pts = _points(points, fld.dim)
    problem = fld.ode(np.zeros(fld.dim), _span(t_span))
    sol = run(problem, method, backend=backend, library=library, y0=pts, **_solve_options(rtol, atol, n_steps))
    if not sol.success:
        return None, sol
    return as_numpy(sol.ys)[-1].reshape(pts.shape), sol


def map_jacobian(fmap: Callable[[np.ndarray], np.ndarray | None], points: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """``(phi(points), D phi(points))`` by central differences of ``fmap`` with the relative step
    ``eps^(1/3) max(1, |x_j|)``; the points and all their stencils go through ``fmap`` as one
    batch. ``D phi`` has shape ``(B, dim, dim)``; None when ``fmap`` fails."""
    B, n = points.shape
    d = FD_STEP * np.maximum(1.0, np.abs(points))
    stencil = [points]
    for j in range(n):
        e = np.zeros_like(points)
        e[:, j] = d[:, j]
        stencil += [points + e, points - e]
    Y = fmap(np.concatenate(stencil))
    if Y is None or not np.all(np.isfinite(Y)):
        return None
    J = np.empty((B, n, n))
    for j in range(n):
        J[:, :, j] = (Y[(1 + 2 * j) * B:(2 + 2 * j) * B] - Y[(2 + 2 * j) * B:(3 + 2 * j) * B]) / (2 * d[:, j:j + 1])
    return Y[:B], J


def variational_jacobian(fld: FlowField, points: Any, method: Any, *, t_span: Sequence[float] = (0.0, 1.0),
                         rtol: float = 1e-6, atol: float = 1e-9, n_steps: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray] | None:
    """``(phi(points), D phi(points))`` from one reference solve (NumPy) of the variational system
    ``z' = f(t, z), Z' = Df(t, z) Z, Z(t0) = I``. With fixed steps an explicit Runge-Kutta method
    commutes with differentiation, so ``Z`` is the Jacobian of the numerical map itself, to
    round-off; with adaptive steps the controller also sees ``Z``, so its steps differ from a
    plain solve's. None when the solve fails."""
    pts = _points(points, fld.dim)
    n, B = fld.dim, pts.shape[0]
    xp = _xp.get_namespace("numpy")
    f, jvp, jac = fld.bound(xp, np.float64)

    def rhs(t: Any, y: np.ndarray) -> np.ndarray:
        z, Z = y[:, :n], y[:, n:].reshape(B, n, n)
        if jac is not None:
            dZ = np.asarray(jac(t, z)) @ Z
        else:  # column j of Df Z is the JVP with column j of Z
            dZ = np.transpose(np.asarray(jvp(t, z, np.transpose(Z, (2, 0, 1)))), (1, 2, 0))
        return np.concatenate([np.asarray(f(t, z)), dZ.reshape(B, n * n)], axis=1)

    y0 = np.concatenate([pts, np.broadcast_to(np.eye(n).reshape(1, n * n), (B, n * n))], axis=1)
    sol = solve(rhs, y0, _span(t_span), method=method, **_solve_options(rtol, atol, n_steps))
    if not sol.success or not np.all(np.isfinite(sol.ys[-1])):
        return None
    end = np.asarray(sol.ys[-1])
    return end[:, :n], end[:, n:].reshape(B, n, n)


def field_jacobian(fld: FlowField, t: float, points: np.ndarray) -> np.ndarray:
    """``df/dz`` at ``(t, points)`` (``(B, dim, dim)``) from the field's analytic ``jac``, else
    from its ``jvp`` with the unit vectors (NumPy, float64)."""
    xp = _xp.get_namespace("numpy")
    _, jvp, jac = fld.bound(xp, np.float64)
    if jac is not None:
        return np.asarray(jac(float(t), points), dtype=np.float64)
    eye = np.eye(fld.dim)[:, None, :] + np.zeros((fld.dim,) + points.shape)
    cols = np.asarray(jvp(float(t), points, eye))  # (dim, B, dim): column j is J e_j
    return np.transpose(cols, (1, 2, 0))


def _base(prop: str, method: Any, problem: str, backend: str, library: str, **details: Any) -> dict[str, Any]:
    return dict(property=prop, method=str(getattr(method, "name", method)), problem=problem,
                backend=backend_label(backend, library), library=library, details=dict(details))


# ============================================================================ 1. orientation
def flow_orientation(field: FlowField, method: Any = "dopri5", *, points: Any = None,
                     t_span: Sequence[float] = (0.0, 1.0), backend: str = "reference", library: str = "numpy",
                     rtol: float = 1e-6, atol: float = 1e-9, n_steps: int | None = None) -> Record:
    """Theorem: the time-T map of a 1-D ODE with a Lipschitz field is strictly increasing
    (two solutions that met would coincide by uniqueness, so ``x1 < x2`` forces
    ``phi(x1) < phi(x2)``; Chen et al. 2018 and Dupont et al. 2019, Prop. 1, use this to show
    what Neural ODEs cannot represent).

    Sorted ``points`` (default 33 points on [-3, 3]) are solved as one batch by ``method``
    (adaptive at ``rtol``/``atol``, or ``n_steps`` fixed steps). Measured: the smallest
    ``(phi(x_{i+1}) - phi(x_i)) / (x_{i+1} - x_i)``; expected: the same ratio of the closed-form
    flow when there is one. Fails when the ratio is <= 0 (order broken) or not finite."""
    fld = _field(field, dim=1)
    x = _points(np.linspace(-3.0, 3.0, 33) if points is None else points, 1)[:, 0]
    if x.size < 2 or not np.all(np.diff(x) > 0):
        raise ValueError(f"points={points!r}, but they must be at least two strictly increasing values")
    t0, t1 = _span(t_span)
    phi, sol = flow_map(fld, x[:, None], method, t_span=(t0, t1), backend=backend, library=library, rtol=rtol,
                        atol=atol, n_steps=n_steps)
    common = _base("flow_orientation", method, f"{fld.name}_T{t1 - t0:g}", backend, library,
                   points=x.size, span=[t0, t1], n_steps=n_steps, rtol=None if n_steps else rtol,
                   steps=sol.stats.accepted)
    if phi is None:
        return Record(measured=None, expected=None, verdict="error", status=sol.status.code,
                      message=f"the batch solve failed: {sol.message}", **common)
    ratios = np.diff(phi[:, 0]) / np.diff(x)
    expected = None
    if fld.flow is not None:
        exact = fld.flow(x[:, None], t0, t1)[:, 0]
        expected = float(np.min(np.diff(exact) / np.diff(x)))
        common["details"]["max_error_vs_exact"] = float(np.max(np.abs(phi[:, 0] - exact)))
    measured = float(np.min(ratios)) if np.all(np.isfinite(ratios)) else math.nan
    common["details"]["ratios"] = ratios.tolist()
    ok = measured > 0
    msg = "" if ok else (f"order broken between x={x[int(np.argmin(ratios))]:.6g} and"
                         f" x={x[int(np.argmin(ratios)) + 1]:.6g}: ratio {measured:.3g}; no flow map does this")
    return Record(measured=measured, expected=expected, verdict="pass" if ok else "fail", message=msg, **common)


# ============================================================================ 2. injectivity
def _segments(rng: np.random.Generator, dim: int, count: int, k: int, radius: float, length: float) -> np.ndarray:
    starts = rng.uniform(-radius, radius, (count, dim))
    u = rng.standard_normal((count, dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    s = np.linspace(0.0, length, k)
    return starts[:, None, :] + s[None, :, None] * u[:, None, :]  # (count, k, dim)


def flow_injectivity(field: FlowField, method: Any = "dopri5", *, points: Any = None, n_points: int = 32,
                     radius: float = 2.0, segments: int = 8, segment_points: int = 9, segment_length: float = 0.5,
                     seed: int = 0, t_span: Sequence[float] = (0.0, 1.0), backend: str = "reference",
                     library: str = "numpy", rtol: float = 1e-6, atol: float = 1e-9,
                     n_steps: int | None = None, jacobian: str = "fd") -> Record:
    """Theorem: a time-T flow map is a diffeomorphism with ``det D phi = exp(int_0^T tr Df) > 0``
    (Liouville's formula; Chen et al. 2018, Theorem 1, is its log-density form).

    What is tested, on one batch solve (so every point moves by the same numerical map):

    - ``det D phi > 0`` at ``n_points`` seeded points in the cube ``[-radius, radius]^dim``
      (or ``points``) and at every segment point, ``D phi`` by central differences of the
      numerical map (``jacobian="fd"``) or by the variational equation solved alongside
      (``jacobian="variational"``, :func:`variational_jacobian`: the reference on NumPy; exact
      for fixed steps). A fold makes ``det < 0`` on an open set, so this is the robust detector;
    - ``segments`` seeded straight segments of ``segment_points`` points and length
      ``segment_length``: consecutive image steps ``d_k = phi(p_{k+1}) - phi(p_k)`` must not
      reverse (``d_k . d_{k+1} > 0``). An exact flow's image of a short segment turns by
      ``O(|D^2 phi| delta / |D phi|)`` per spacing ``delta``, far below 90 degrees here;
    - no two images meet: the smallest ``|phi(x_i) - phi(x_j)| / |x_i - x_j|`` over all pairs
      of sampled points is > 0.

    Measured: the smallest det; expected: the smallest closed-form det
    ``exp(log_det)`` when the field has one (its agreement is in details)."""
    fld = _field(field)
    if jacobian not in ("fd", "variational"):
        raise ValueError(f"jacobian={jacobian!r}, but it must be 'fd' (central differences) or 'variational'")
    if jacobian == "variational" and (backend != "reference" or library != "numpy"):
        raise ValueError(f"jacobian='variational' runs the reference on NumPy, but backend={backend!r},"
                         f" library={library!r}")
    n_points, segments = _count(n_points, "n_points"), _count(segments, "segments", 0)
    segment_points = _count(segment_points, "segment_points", 3)
    radius, segment_length = _positive(radius, "radius"), _positive(segment_length, "segment_length")
    seed = _count(seed, "seed", 0)
    t0, t1 = _span(t_span)
    rng = np.random.default_rng([seed, 11])
    pts = (rng.uniform(-radius, radius, (n_points, fld.dim)) if points is None else _points(points, fld.dim))
    segs = _segments(rng, fld.dim, segments, segment_points, radius, segment_length)
    everything = np.concatenate([pts, segs.reshape(-1, fld.dim)])
    sols: list[Any] = []

    def fmap(z: np.ndarray) -> np.ndarray | None:
        y, sol = flow_map(fld, z, method, t_span=(t0, t1), backend=backend, library=library, rtol=rtol, atol=atol,
                          n_steps=n_steps)
        sols.append(sol)
        return y

    common = _base("flow_injectivity", method, f"{fld.name}_T{t1 - t0:g}", backend, library, points=len(pts),
                   segments=segments, segment_points=segment_points, seed=seed, span=[t0, t1], n_steps=n_steps,
                   rtol=None if n_steps else rtol)
    common["details"]["jacobian"] = jacobian
    if jacobian == "variational":
        out = variational_jacobian(fld, everything, method, t_span=(t0, t1), rtol=rtol, atol=atol, n_steps=n_steps)
        if out is None:
            return Record(measured=None, expected=None, verdict="error", status="error",
                          message="the variational solve failed or was not finite", **common)
        sols.append(None)
    else:
        out = map_jacobian(fmap, everything)
        if out is None:
            return Record(measured=None, expected=None, verdict="error", status=sols[-1].status.code,
                          message=f"the batch solve failed or was not finite: {sols[-1].message}", **common)
    phi, J = out
    det = np.linalg.det(J)
    d = common["details"]
    d["steps"] = sols[-1].stats.accepted if sols[-1] is not None else None
    d["det_min"], d["det_median"], d["det_max"] = float(det.min()), float(np.median(det)), float(det.max())
    expected = None
    if fld.log_det is not None:
        exact_det = np.exp(fld.log_det(everything, t0, t1))
        expected = float(exact_det.min())
        d["det_max_rel_error_vs_exact"] = float(np.max(np.abs(det - exact_det) / exact_det))
    # segments: consecutive image steps keep their direction
    img = phi[len(pts):].reshape(segs.shape)
    steps = np.diff(img, axis=1)
    dots = np.sum(steps[:, 1:] * steps[:, :-1], axis=-1)
    reversals = int(np.sum(dots <= 0))
    d["segment_reversals"] = reversals
    # pairs: no two images meet
    P, X = phi[:len(pts)], pts
    iu = np.triu_indices(len(X), 1)
    num = np.linalg.norm(P[:, None] - P[None], axis=-1)[iu]
    den = np.linalg.norm(X[:, None] - X[None], axis=-1)[iu]
    keep = den > 0
    d["min_pair_ratio"] = float(np.min(num[keep] / den[keep])) if np.any(keep) else None
    measured = float(det.min())
    problems = []
    if not measured > 0:
        where = everything[int(np.argmin(det))]
        problems.append(f"det D phi = {measured:.3g} <= 0 at z={np.round(where, 6).tolist()}: the map folds")
    if reversals:
        problems.append(f"{reversals} segment image step(s) reverse direction")
    if d["min_pair_ratio"] is not None and not d["min_pair_ratio"] > 0:
        problems.append("two sampled points are mapped onto each other")
    return Record(measured=measured, expected=expected, verdict="fail" if problems else "pass",
                  message="; ".join(problems), **common)


# ============================================================================ 3. fold step
def fold_root(method: Any) -> float | None:
    """``x*``: the smallest ``u > 0`` at which the stability polynomial ``R(-u)`` of an explicit
    method changes sign (``inf`` when it never does, e.g. every even-degree Taylor polynomial of
    ``exp``: RK4, midpoint); None for a method without an explicit tableau."""
    solver = SOLVERS.get(method) if isinstance(method, str) else method
    tableau = getattr(solver, "tableau", None)
    if tableau is None or not tableau.explicit:
        return None
    num, _ = stability_function(tableau)
    return _first_sign_change(tuple(c * (-1) ** k for k, c in enumerate(num)))


def explicit_methods() -> list[str]:
    """Every explicit Runge-Kutta method in ``SOLVERS`` (each runs in fixed-step mode)."""
    return [n for n in SOLVERS.names() if getattr(getattr(SOLVERS.get(n), "tableau", None), "explicit", False)]


def _real_negative_top(eigs: np.ndarray) -> tuple[float, bool] | None:
    """The largest ``|mu|`` of the real negative eigenvalues and whether it is simple."""
    real = eigs.real[(np.abs(eigs.imag) <= 1e-12 * np.maximum(1.0, np.abs(eigs))) & (eigs.real < 0)]
    if real.size == 0:
        return None
    top = float(np.max(-real))
    return top, int(np.sum(np.abs(-real - top) <= 1e-9 * top)) == 1


def fold_theory(fld: FlowField, method: Any, points: np.ndarray, t0: float = 0.0) -> tuple[float | None, str]:
    """The fold step theory predicts for one step of ``method`` from ``t0``, and why.

    - An autonomous linear field ``A z + b`` (``alpha = 0``): the step's Jacobian is ``R(hA)``,
      ``det = prod R(h mu_i)``; conjugate pairs give ``|R|^2 >= 0``, so the sign first changes
      at ``h* = x*/|mu|`` for the real negative eigenvalue ``mu`` of largest modulus (when it is
      simple) and never when ``A`` has none.
    - Euler on any field: the step's Jacobian is ``I + h Df(t0, z)``, so the same argument with
      ``x* = 1`` at every point gives ``h* = min_z 1/|mu(z)|``; in 1-D neighbours ``x_i < x_j``
      swap at ``h = (x_j - x_i) / -(f(x_j) - f(x_i))``, the same formula with the secant slope.
    """
    x_star = fold_root(method)
    if x_star is None:
        return None, "no explicit tableau"
    solver = SOLVERS.get(method) if isinstance(method, str) else method
    linear = "linear" in fld.tags and "A" in fld.params and float(fld.params.get("alpha", 0.0)) == 0.0
    if linear:
        eig_sets = [np.linalg.eigvals(np.asarray(fld.params["A"], dtype=np.float64))]
        why = "linear field: h* = x*/max|mu|, R(h mu) changes sign at the first real root x* of R(-u)"
    elif solver.name == "euler":
        eig_sets = list(np.linalg.eigvals(field_jacobian(fld, t0, points)))
        why = "Euler: det(I + h Df) first vanishes at h* = min over points of 1/max|mu|"
        if fld.dim == 1:  # and the order of neighbours x_i < x_j breaks at h = -(x_j - x_i)/(f(x_j) - f(x_i))
            x = np.sort(points[:, 0])
            fx = np.asarray(fld.bound(_xp.get_namespace("numpy"), np.float64)[0](float(t0), x[:, None]))[:, 0]
            secants = np.diff(fx) / np.diff(x)
            eig_sets += [np.array([s]) for s in secants]
            why += ", or 1/|secant slope of f| between sorted neighbours (the order check)"
    else:
        return None, "no theory for a nonlinear field beyond Euler"
    best = math.inf
    for eigs in eig_sets:
        top = _real_negative_top(eigs)
        if top is None:
            continue
        if not top[1]:
            return None, "the largest real negative eigenvalue is repeated: det may touch 0 without a sign change"
        best = min(best, x_star / top[0])
    return best, why


def _folded(fld: FlowField, method: Any, h: float, points: np.ndarray, t0: float, backend: str,
            library: str) -> tuple[bool, float]:
    """Whether one step of size ``h`` from ``t0`` folds on ``points``: det <= 0 somewhere (or, in
    1-D, the order of the sorted points broken), with the smallest det."""
    out = map_jacobian(lambda z: flow_map(fld, z, method, t_span=(t0, t0 + h), backend=backend, library=library,
                                          n_steps=1)[0], points)
    if out is None:
        return True, math.nan
    phi, J = out
    det = np.linalg.det(J)
    broken = fld.dim == 1 and bool(np.any(np.diff(phi[np.argsort(points[:, 0]), 0]) <= 0))
    return bool(np.any(det <= 0)) or broken, float(det.min())


def flow_fold_step(field: FlowField, method: Any = "euler", *, points: Any = None, n_points: int = 32,
                   radius: float = 2.0, seed: int = 0, t0: float = 0.0, h_max: float | None = None,
                   rel_tol: float = 1e-6, backend: str = "reference", library: str = "numpy") -> Record:
    """The smallest fixed step ``h`` at which one step of ``method`` (from ``t0``) stops being an
    orientation-preserving diffeomorphism on the sample: ``det D Phi_h <= 0`` at some point
    (central differences), or in 1-D the order of the sorted points broken. A time-T flow is
    orientation preserving (Liouville), so beyond ``h*`` the layer ``z -> Phi_h(z)`` (a residual
    block, Haber & Ruthotto 2017; E 2017) is no flow map of any field; a composition of steps
    is one whenever each step is.

    Search: a geometric grid ``h = 2^(k/4) / (16 L)`` (``L`` = the largest ``|Df|_2`` over the
    sample) up to ``h_max`` (default ``2048 / L``), then bisection between the last unfolded
    and the first folded grid step to ``rel_tol``. A fold that opens and closes again inside one
    grid cell (a factor 2^(1/4)) would be missed.

    Theory (:func:`fold_theory`): on ``f = A z + b`` the step is ``z -> R(hA) z + c`` and folds
    at ``h* = x*/|lambda|`` for the real negative eigenvalue of largest modulus, ``x*`` the first
    negative real root of the stability polynomial (Euler 1, kutta3 1.596; methods whose ``R``
    stays > 0 on the real line, classical RK4 among them, never fold on linear fields); Euler on
    any field folds at ``min_z 1/|mu(Df(t0, z))|``. The verdict compares measured with theory
    to the bisection's ``rel_tol``; without a theory (other methods on MLP fields) the fold step
    and ``h* L`` (the ResNet regime ``h L ~ 1``) are reported."""
    fld = _field(field)
    rel_tol = _positive(rel_tol, "rel_tol")
    if rel_tol >= 0.1:
        raise ValueError(f"rel_tol={rel_tol!r}, but it must be < 0.1 (the grid cell is a factor 2^(1/4))")
    t0 = float(t0)
    if not math.isfinite(t0):
        raise ValueError(f"t0={t0!r}, but it must be finite")
    rng = np.random.default_rng([_count(seed, "seed", 0), 13])
    radius = _positive(radius, "radius")
    if points is None:
        pts = (np.linspace(-radius, radius, _count(n_points, "n_points", 2))[:, None] if fld.dim == 1 else
               rng.uniform(-radius, radius, (_count(n_points, "n_points"), fld.dim)))
    else:
        pts = _points(points, fld.dim)
    lip = float(np.max(np.linalg.norm(field_jacobian(fld, t0, pts), ord=2, axis=(-2, -1))))
    if not lip > 0:
        raise ValueError(f"field={fld.name!r} has Df = 0 on the sample: every step is a translation, nothing folds")
    h_max = 2048.0 / lip if h_max is None else _positive(h_max, "h_max")
    expected, why = fold_theory(fld, method, pts, t0)
    x_star = fold_root(method)
    common = _base("flow_fold_step", method, fld.name, backend, library, lipschitz_sample=lip, h_max=h_max,
                   x_star=x_star, theory=why, points=len(pts), t0=t0, rel_tol=rel_tol)
    d = common["details"]
    h, lo, hi, scanned = 1.0 / (16 * lip), None, None, 0
    while h <= h_max * (1 + 1e-12):
        scanned += 1
        folded, _ = _folded(fld, method, h, pts, t0, backend, library)
        if folded:
            hi = h
            break
        lo = h
        h = min(h * 2 ** 0.25, h_max) if h < h_max else h_max * 2
    d["grid_steps"] = scanned
    if hi is None:
        measured = math.inf
        ok = expected is None or expected > h_max * (1 - rel_tol)
        msg = (f"no fold up to h_max={h_max:.4g} (h L = {h_max * lip:.4g})" +
               ("" if ok else f", but theory puts it at {expected:.6g}"))
        return Record(measured=measured, expected=expected, verdict="pass" if ok else "fail", message=msg, **common)
    if lo is None:
        d["folded_at_first_grid_step"] = True
        lo = 0.0
    bisections = 0
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        if _folded(fld, method, mid, pts, t0, backend, library)[0]:
            hi = mid
        else:
            lo = mid
        bisections += 1
    measured = 0.5 * (lo + hi)
    d["bisections"], d["bracket"], d["h_times_lipschitz"] = bisections, [lo, hi], measured * lip
    d["det_min_just_past"] = _folded(fld, method, hi, pts, t0, backend, library)[1]
    if expected is None:
        return Record(measured=measured, expected=None, verdict="pass",
                      message=f"folds at h* = {measured:.6g} (h* L = {measured * lip:.4g}); {why}", **common)
    # the bracket [lo, hi] holds the fold to rel_tol of hi; expected's own root is exact to 1e-15
    ok = math.isfinite(expected) and abs(measured - expected) <= rel_tol * hi
    msg = "" if ok else f"folds at h* = {measured:.8g}, theory {expected:.8g} ({why})"
    return Record(measured=measured, expected=expected, verdict="pass" if ok else "fail", message=msg, **common)


def fold_step_table(fields: Sequence[FlowField], methods: Sequence[str] | None = None, **kwargs: Any
                    ) -> list[Record]:
    """:func:`flow_fold_step` for every explicit method of ``SOLVERS`` (or ``methods``) on every
    field (``benchmarks/fold_steps.py`` prints the table of ``docs/flow_geometry.md``)."""
    return [flow_fold_step(f, m, **kwargs) for f in fields for m in (methods or explicit_methods())]


# ============================================================================ 4. unreachable negation
def negation_error(phi_minus: float, phi_plus: float, a: float) -> float:
    """``max(|phi(-a) - a|, |phi(a) + a|)``: how far a map is from ``x -> -x`` on ``{-a, a}``."""
    return max(abs(phi_minus - a), abs(phi_plus + a))


def euler_negation(a: float = 1.0) -> dict[str, Any]:
    """The contrast: one fixed Euler step on ``f = lambda z`` with ``h lambda = -2`` is
    ``z -> (1 + h lambda) z = -z``, exactly in floating point (``a - 2a = -a``): the
    discretisation (a one-block ResNet) represents what no flow can."""
    fld = linear_field(np.array([[-2.0]]), name="linear_lambda-2")
    phi, _ = flow_map(fld, np.array([[-a], [a]]), "euler", n_steps=1)
    return {"field": "f = -2 z", "method": "euler", "n_steps": 1, "h_lambda": -2.0,
            "phi": phi[:, 0].tolist(), "error": negation_error(phi[0, 0], phi[1, 0], a)}


def _perturbed(fld: FlowField, rng: np.random.Generator, sigma: float) -> FlowField:
    params = {k: (v + sigma * rng.standard_normal(v.shape) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
              for k, v in fld.params.items()}
    return dataclasses.replace(fld, params=params, flow=None, log_det=None, lipschitz=None)


def flow_unreachable_negation(field: FlowField, method: Any = "dopri5", *, a: float = 1.0,
                              t_span: Sequence[float] = (0.0, 1.0), backend: str = "reference",
                              library: str = "numpy", rtol: float = 1e-6, atol: float = 1e-9,
                              n_steps: int | None = None, search_steps: int = 0, sigma: float = 0.3,
                              seed: int = 0) -> Record:
    """Theorem: no time-T flow of a 1-D field maps ``x -> -x``; quantitatively, for every flow
    map ``phi`` and ``a > 0``, ``E = max(|phi(-a) - a|, |phi(a) + a|) >= a``.

    Proof: ``phi`` is strictly increasing (:func:`flow_orientation`), so ``u = phi(-a) <
    v = phi(a)``. Then ``E >= ((a - u) + (v + a)) / 2 = a + (v - u) / 2 > a``. The bound is
    approached by flows that squeeze ``[-a, a]`` to a point (``v - u -> 0``), never passed
    (Dupont et al. 2019, Sec. 3; Chen et al. 2018). The same argument holds for any
    order-preserving map, so ``E < a`` certifies that a numerical map reversed ``-a`` and ``a``.

    Measured: ``E`` of ``method``'s map on ``{-a, a}`` (one batch), and with ``search_steps > 0``
    the smallest ``E`` over a (1+1) random search on the field's float parameters aimed at the
    negation (Gaussian steps of scale ``sigma``, halved after 10 failures in a row, from
    ``default_rng(seed)``). Expected: ``a``. An adaptive solve may miss by its error, so the
    verdict fails below ``a - (rtol a + atol)``; a fixed-step map (``n_steps``) gets no slack.
    ``details["euler_contrast"]``: fixed-step Euler with ``h lambda = -2`` maps ``x -> -x``
    exactly (:func:`euler_negation`)."""
    fld = _field(field, dim=1)
    a = _positive(a, "a")
    search_steps = _count(search_steps, "search_steps", 0)
    sigma = _positive(sigma, "sigma")
    t0, t1 = _span(t_span)
    opts = _solve_options(rtol, atol, n_steps)
    slack = 0.0 if n_steps is not None else opts["rtol"] * a + opts["atol"]
    pair = np.array([[-a], [a]])

    def error_of(f: FlowField) -> tuple[float, np.ndarray | None, Any]:
        phi, sol = flow_map(f, pair, method, t_span=(t0, t1), backend=backend, library=library, **opts)
        if phi is None or not np.all(np.isfinite(phi)):
            return math.nan, None, sol
        return negation_error(phi[0, 0], phi[1, 0], a), phi[:, 0], sol

    err, phi, sol = error_of(fld)
    common = _base("flow_unreachable_negation", method, f"{fld.name}_a{a:g}_T{t1 - t0:g}", backend, library,
                   a=a, slack=slack, n_steps=n_steps, rtol=None if n_steps is not None else opts["rtol"],
                   euler_contrast=euler_negation(a))
    d = common["details"]
    if phi is None:
        return Record(measured=None, expected=a, verdict="error", status=sol.status.code,
                      message=f"the solve failed: {sol.message}", **common)
    d["phi"], d["lower_bound_order_preserving"] = phi.tolist(), a + (phi[1] - phi[0]) / 2
    exact = (fld.flow(pair, t0, t1)[:, 0] if fld.flow is not None else
             flow_map(fld, pair, TIGHT["method"], t_span=(t0, t1), rtol=TIGHT["rtol"], atol=TIGHT["atol"])[0])
    if exact is not None:
        exact = np.ravel(exact)
        d["error_vs_flow"] = float(np.max(np.abs(phi - exact)))
        d["flow_negation_error"] = negation_error(exact[0], exact[1], a)
    best, failed_solves = err, 0
    if search_steps:
        rng = np.random.default_rng([_count(seed, "seed", 0), 17])
        current, cur_err, s, misses, trace = fld, err, sigma, 0, []
        for i in range(search_steps):
            cand = _perturbed(current, rng, s)
            e, _, _ = error_of(cand)
            if math.isnan(e):
                failed_solves += 1
            elif e < cur_err:
                current, cur_err, misses = cand, e, 0
            else:
                misses += 1
                if misses >= 10:
                    s, misses = s / 2, 0
            best = min(best, cur_err)
            if (i + 1) % max(1, search_steps // 10) == 0:
                trace.append([i + 1, cur_err / a])
        d.update(search_steps=search_steps, search_trace_error_over_a=trace, search_failed_solves=failed_solves,
                 search_final_sigma=s)
    ok = best >= a - slack
    msg = (f"E/a = {best / a:.6g}" if ok else
           f"E = {best:.6g} < a - slack = {a - slack:.6g}: the numerical map reversed -a and a, which no flow does")
    return Record(measured=best, expected=a, verdict="pass" if ok else "fail", message=msg, **common)


# ============================================================================ 5. augmented negation
def _augmented_rotation(angle: float = math.pi) -> FlowField:
    """The rotation field with ``alpha`` as a 0-d float array, so gradients see it as a parameter."""
    fld = rotation_field(angle)
    return dataclasses.replace(fld, params={**fld.params, "alpha": np.array(float(fld.params["alpha"]))})


def projected_loss(d: int, extra: int, t1: float, *, weight: float = 0.8, quadratic: float = 1.0) -> Loss:
    """``L = w . x(t1) + q/2 |x(t1)|^2`` on the projected output (the first ``d`` components);
    the augmented components carry no weight."""
    w = np.concatenate([np.full(d, weight), np.zeros(extra)])[None, :]
    return Loss(t_eval=(t1,), weights=w, quadratic=np.concatenate([np.full(d, quadratic), np.zeros(extra)]))


def closed_form_loss(A: Any, b: Any, alpha: Any, y0: Any, t1: float, loss: Loss) -> Any:
    """The loss of the affine flow ``z' = (1 + alpha t)(A z + b)`` from 0 to ``t1`` by the
    block exponential ``expm(S [[A, b], [0, 0]])``, ``S = t1 + alpha t1^2 / 2``: analytic in
    every input, so complex arguments give the complex-step derivative."""
    from scipy.linalg import expm

    A, b, y0 = np.asarray(A), np.asarray(b), np.asarray(y0)
    n = A.shape[0]
    M = np.zeros((n + 1, n + 1), dtype=np.result_type(A, b, alpha, complex))
    M[:n, :n], M[:n, n] = A, b
    E = expm((t1 + alpha * t1 * t1 / 2) * M)
    z = E[:n, :n] @ y0 + E[:n, n]
    return loss.weights[0] @ z + 0.5 * np.sum(np.asarray(loss.quadratic) * z * z)


def complex_step_gradient(params: dict[str, np.ndarray], y0: np.ndarray, t1: float, loss: Loss,
                          step: float = 1e-30) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(dL/dy0, {name: dL/dparam})`` of :func:`closed_form_loss` by the complex step
    ``Im L(x + i s e_k) / s`` (Squire & Trapp 1998): no subtraction, so exact to round-off."""
    base = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    base["y0"] = np.asarray(y0, dtype=np.float64)
    grads: dict[str, np.ndarray] = {}
    for name, value in base.items():
        g = np.zeros(value.shape)
        for idx in np.ndindex(value.shape):
            args = {k: v.astype(complex) for k, v in base.items()}
            args[name][idx] += 1j * step
            g[idx] = closed_form_loss(args["A"], args["b"], args["alpha"][()], args["y0"], t1, loss).imag / step
        grads[name] = g
    return grads.pop("y0"), grads


def augmented_negation(method: Any = "dopri5", *, x: Any = (0.7,), tols: Sequence[float] | None = None,
                       n_steps: Sequence[int] | None = None, modes: Sequence[str] = ("discrete", "backsolve",
                                                                                      "checkpoint", "forward"),
                       grad_rtol: float = 1e-8, library: str = "torch", backend: str = "reference") -> Record:
    """Theorem (Dupont et al. 2019, Sec. 4): with one augmented dimension the negation is a
    flow: ``f(x, y) = pi (-y, x)`` for time 1 is the rotation by ``pi``, so ``project(phi(x, 0))
    = -x`` exactly (closed form ``expm``; ``rotation_field`` and ``augmented_problem``).

    Three checks, one record:

    1. the closed form itself: ``|project(phi(x, 0)) + x| <= 8 n eps |A| |x|`` (the forward
       error of a scaling-and-squaring ``expm`` of a normal matrix, 8 for the squarings);
    2. convergence: with ``n_steps`` (a sequence) the augmented state's error must fall at the
       method's order against ``h`` (within ``ORDER_BAND``), otherwise over ``tols`` at
       :func:`expected_exponent` against ``rtol`` (within ``EXPONENT_BAND``, solves of fewer than
       ``max(MIN_STEPS, 2p)`` steps left out), and the projected output's error at least as
       fast. It can be faster: at the angle ``pi`` the projection ``-x cos(delta)`` is stationary
       in the phase error ``delta``, so only the amplitude error shows (RK4: slope 5, not 4);
    3. gradients through the augmentation of ``L = w . x(1) + q/2 |x(1)|^2`` (projected): each
       of ``modes`` by ``odeverify.gradients.value_and_grad`` (``library``, rtol ``grad_rtol``)
       against the complex-step derivative of the closed form, with respect to ``x`` (and the
       augmented zero), ``A``, ``b`` and ``alpha``; each part's error over the norm of the whole
       gradient <= ``ACCURACY_FACTOR * grad_rtol`` (adaptive control bounds local, not global,
       error), or with ``n_steps`` ``ACCURACY_FACTOR`` times the relative error of the finest
       fixed-step solution (its gradients are taken at that step count). ``dL/dalpha = 0`` here:
       the projected output is stationary in the rotation angle at ``pi``.

    Measured: the projected error at the finest setting; expected 0."""
    xv = np.atleast_1d(np.asarray(x, dtype=np.float64))
    if xv.shape != (1,) or not np.all(np.isfinite(xv)) or xv[0] == 0:
        raise ValueError(f"x={x!r}, but it must be one finite non-zero number (the 1-D input)")
    grad_rtol = _positive(grad_rtol, "grad_rtol")
    fld = _augmented_rotation()
    problem = augmented_problem(fld, xv, extra=1)
    t1 = problem.t_span[1]
    common = _base("augmented_negation", method, problem.name, backend, "numpy", x=xv.tolist(),
                   citation=f"{ANODE}; {NODE}")
    d = common["details"]
    problems: list[str] = []
    # 1. the closed form
    y0 = np.array([xv[0], 0.0])
    closed = fld.flow(y0, 0.0, t1)
    d["closed_form_error"] = float(abs(project(closed, 1)[0] + xv[0]))
    bound = 8 * 2 * EPS * float(np.linalg.norm(fld.params["A"], 2)) * abs(xv[0])
    d["closed_form_bound"] = bound
    if not d["closed_form_error"] <= bound:
        problems.append(f"closed form misses -x by {d['closed_form_error']:.3g} > {bound:.3g}")
    # 2. convergence: the whole state at the method's rate, the projected output at least as fast
    target = np.array([-xv[0], 0.0])
    if n_steps is not None:
        ns = [_count(n, "n_steps") for n in n_steps]
        if len(ns) < 3:
            raise ValueError(f"n_steps={n_steps!r}, but a slope needs at least 3 step counts")
        sweep, xs, label = [{"n_steps": n} for n in ns], [1.0 / n for n in ns], "h"
        expected_rate: float | None = float(solver_order(method, backend=backend))
    else:
        tol_list = [_positive(t, "tols") for t in (tols or (1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10))]
        sweep, xs, label = [{"rtol": t, "atol": t * 1e-2} for t in tol_list], tol_list, "rtol"
        expected_rate = expected_exponent(method, backend=backend)
    errs, full, steps = [], [], []
    for opts in sweep:
        sol = run(problem, method, backend=backend, **opts)
        y = as_numpy(sol.ys)[-1] if sol.success else np.full(2, math.nan)
        errs.append(float(abs(y[0] - target[0])))
        full.append(float(np.max(np.abs(y - target))))
        steps.append(sol.stats.accepted)
    floor = 1e3 * EPS * abs(xv[0])
    min_steps = 0 if n_steps is not None else max(MIN_STEPS, 2 * solver_order(method, backend=backend))
    use = [i for i in range(len(sweep)) if math.isfinite(full[i]) and errs[i] > floor and full[i] > floor
           and steps[i] >= min_steps]
    band = ORDER_BAND if n_steps is not None else EXPONENT_BAND
    d.update(sweep=label, values=xs, errors=errs, state_errors=full, steps=steps, expected_rate=expected_rate,
             band=band)
    if len(use) < 3 or expected_rate is None:
        problems.append(f"no slope: {len(use)} usable solves (above round-off {floor:.2g}, >= {min_steps} steps),"
                        f" expected rate {expected_rate}")
    else:
        xa = np.array([xs[i] for i in use])
        d["state_slope"] = loglog_slope(xa, np.array([full[i] for i in use]))
        d["slope"] = loglog_slope(xa, np.array([errs[i] for i in use]))
        if abs(d["state_slope"] - expected_rate) > band:
            problems.append(f"state error ~ {label}^{d['state_slope']:.3g}, expected {label}^{expected_rate:.3g}")
        if d["slope"] < expected_rate - band:
            problems.append(f"projected error ~ {label}^{d['slope']:.3g}, slower than {label}^{expected_rate:.3g}")
    measured = errs[-1]
    # 3. gradients through the augmentation
    loss = projected_loss(1, 1, t1)
    params = gradient_params(problem)
    g_y0, g_p = complex_step_gradient(params, y0, t1, loss)
    value = float(closed_form_loss(params["A"], params["b"], float(params["alpha"]), y0, t1, loss).real)
    d["oracle"] = {"kind": "complex_step_closed_form", "loss": value, "grad_x": g_y0[:1].tolist(),
                   "grad_y0": g_y0.tolist(), **{k: v.tolist() for k, v in g_p.items()}}
    if n_steps is not None:  # fixed steps: the gradient is as accurate as the solution it differentiates
        grad_opts: dict[str, Any] = {"n_steps": max(ns)}
        limit = ACCURACY_FACTOR * max(full[int(np.argmax(ns))] / abs(xv[0]), EPS)
    else:
        grad_opts = {"rtol": grad_rtol, "atol": grad_rtol * 1e-2}
        limit = ACCURACY_FACTOR * grad_rtol
    # every part is measured against the norm of the whole gradient: dL/dalpha is 0 here (the
    # projected output is stationary in the rotation angle at pi), so no relative error of its own
    scale = float(np.linalg.norm(np.concatenate([g_y0.ravel()] + [v.ravel() for v in g_p.values()])))
    d["gradient_limit"], d["gradient_scale"], d["gradient_library"], d["gradients"] = limit, scale, library, {}
    if modes:
        _xp.require(library)
    for mode in modes:
        res = value_and_grad(problem, loss, mode=mode, method=method, library=library, memory_accounting=False,
                             **grad_opts)
        if not res.status.ok:
            d["gradients"][mode] = {"status": res.status.code}
            problems.append(f"gradient mode {mode!r} failed: {res.status.code}")
            continue
        rel = {"x": _rel(res.grad_y0[:1], g_y0[:1], scale), "y0": _rel(res.grad_y0, g_y0, scale),
               **{k: _rel(res.grad_params[k], g_p[k], scale) for k in sorted(g_p)}}
        rel["loss"] = abs(res.loss - value) / max(1.0, abs(value))
        d["gradients"][mode] = rel
        worst = max(rel.values())
        if not worst <= limit:
            problems.append(f"{mode}: relative gradient error {worst:.3g} > {limit:.3g}"
                            f" (worst in {max(rel, key=rel.get)})")
    return Record(measured=measured, expected=0.0, verdict="fail" if problems else "pass",
                  message="; ".join(problems), **common)


def _rel(g: Any, ref: np.ndarray, scale: float) -> float:
    g = np.asarray(g, dtype=np.float64)
    if not np.all(np.isfinite(g)):
        return math.inf
    return float(np.linalg.norm(g - ref) / max(scale, EPS))


# ============================================================================ 6. ResNet = Euler
def resnet_forward(fld: FlowField, h0: Any, n_layers: int, t_span: Sequence[float] = (0.0, 1.0)) -> Any:
    """A residual network with shared weights: ``h_{k+1} = h_k + dt_k f(t_k, h_k)`` over
    ``n_layers`` layers at the layer times ``t_k = t0 + (t1 - t0) k / n_layers``, ``dt_k =
    t_{k+1} - t_k`` (``= 1/N`` exactly on [0, 1] when N is a power of two; otherwise the
    rounded layer times, since ``1/N`` and ``t_{k+1} - t_k`` differ by an ulp). Written as the
    loop a user would write, in ``h0``'s array library."""
    n_layers = _count(n_layers, "n_layers")
    t0, t1 = _span(t_span)
    xp = _xp.namespace(h0)
    f, _, _ = fld.bound(xp, h0.dtype, _xp.device(h0))
    ts = [t0 + (t1 - t0) * k / n_layers for k in range(n_layers + 1)]
    h = h0
    for k in range(n_layers):
        h = h + (ts[k + 1] - ts[k]) * f(xp.asarray(ts[k], dtype=h0.dtype, device=_xp.device(h0)), h)
    return h


def resnet_euler(field: FlowField, *, y0: Any = None, n_layers: int = 16, ns: Sequence[int] = (16, 32, 64, 128, 256),
                 t_span: Sequence[float] = (0.0, 1.0), library: str = "numpy") -> Record:
    """Theorem (Haber & Ruthotto 2017; E 2017; Chen et al. 2018): a residual network with shared
    weights ``h_{k+1} = h_k + (1/N) f(t_k, h_k)`` *is* forward Euler with ``N`` steps, so

    1. :func:`resnet_forward` equals ``solve(method="euler", n_steps=N)`` bit for bit
       (``max |diff| == 0``). On PyTorch the reference's update is the fused ``torch.add(y, k,
       alpha=h)`` (one rounding) and the loop's ``y + h * k`` rounds ``h * k`` first; they agree
       bit for bit when ``h * k`` is exact (``h`` a power of two: the default ``N = 16`` on
       [0, 1]). Otherwise a difference within one rounding per layer
       (``N eps max|y|``) is a ``deviation`` (explained), more is a failure;
    2. the network converges to the flow at order 1: the slope of its error against ``1/N``
       over ``ns`` is 1 within ``ORDER_BAND``; the flow is the closed form, else a DOP853 solve
       at rtol 1e-12.

    ``y0``: a batch ``(B, dim)`` (default 8 seeded points). Measured: ``max |diff|``."""
    fld = _field(field)
    n_layers = _count(n_layers, "n_layers")
    ns = [_count(n, "ns") for n in ns]
    if len(ns) < 3:
        raise ValueError(f"ns={ns!r}, but a slope needs at least 3 layer counts")
    t0, t1 = _span(t_span)
    pts = np.random.default_rng(5).uniform(-1.5, 1.5, (8, fld.dim)) if y0 is None else _points(y0, fld.dim, "y0")
    xp = _xp.get_namespace(library)
    h0 = xp.asarray(pts, dtype=xp.float64)
    net = as_numpy(resnet_forward(fld, h0, n_layers, (t0, t1)))
    f, _, _ = fld.bound(xp, xp.float64)
    ref = as_numpy(solve(f, h0, (t0, t1), method="euler", n_steps=n_layers).ys[-1])
    diff = float(np.max(np.abs(net - ref)))
    common = _base("resnet_euler", "euler", fld.name, "reference", library, n_layers=n_layers, span=[t0, t1],
                   batch=len(pts), citation=f"{RESNET}; {NODE}")
    d = common["details"]
    problems, deviation = [], ""
    if diff != 0:
        h = (t1 - t0) / n_layers
        fused = library == "torch" and math.frexp(abs(h))[0] != 0.5
        rounding = n_layers * EPS * float(np.max(np.abs(ref)))
        if fused and diff <= rounding:
            deviation = (f"|diff| = {diff:.3g} <= N eps max|y| = {rounding:.3g}: torch's fused update rounds once,"
                         f" y + h*k twice (h = {h:.6g} is not a power of two)")
        else:
            problems.append(f"the residual loop differs from solve(method='euler', n_steps={n_layers}) by {diff:.3g}")
    exact = (fld.flow(pts, t0, t1) if fld.flow is not None else
             flow_map(fld, pts, TIGHT["method"], t_span=(t0, t1), rtol=TIGHT["rtol"], atol=TIGHT["atol"])[0])
    errs = [float(np.max(np.abs(as_numpy(resnet_forward(fld, h0, n, (t0, t1))) - exact))) for n in ns]
    slope = loglog_slope(np.array([1.0 / n for n in ns]), np.array(errs))
    d.update(ns=ns, errors=errs, slope=slope, oracle="closed form" if fld.flow is not None else "dop853 rtol 1e-12")
    if abs(slope - 1.0) > ORDER_BAND:
        problems.append(f"the network converges at order {slope:.3g}, expected 1")
    verdict = "fail" if problems else ("deviation" if deviation else "pass")
    return Record(measured=diff, expected=0.0, verdict=verdict, message="; ".join(problems) or deviation, **common)


#: the flow-geometry properties (registered in :data:`odeverify.properties.PROPERTIES`)
FLOW_GEOMETRY = (flow_orientation, flow_injectivity, flow_fold_step, flow_unreachable_negation, augmented_negation,
                 resnet_euler)

__all__ = ["FLOW_GEOMETRY", "augmented_negation", "closed_form_loss", "complex_step_gradient", "euler_negation",
           "explicit_methods", "field_jacobian", "flow_fold_step", "flow_injectivity", "flow_map",
           "flow_orientation", "flow_unreachable_negation", "fold_root", "fold_step_table", "fold_theory",
           "map_jacobian", "negation_error", "variational_jacobian", "projected_loss", "resnet_euler", "resnet_forward"]
