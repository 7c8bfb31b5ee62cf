"""Neural CDEs across libraries (issue 12, "Backends"): the same data and problem given to
torchcde and diffrax, each library's interpolant, solution and gradients graded against
odeverify's, whose code they share none of.

Oracles:

- interpolants: :class:`odeverify.problems.cde.Control` (piecewise-cubic coefficients from
  odeverify's own maps of the data, ``problems/cde.py``), evaluated at interior points of every
  piece (values and dX/dt) and at the knots (values; the one-sided derivative the library takes
  there is recorded in ``details["knot_side"]``);
- solutions: the closed form (``CDEProblem.exact``: products of matrix exponentials on
  piecewise-linear controls, expm of the path increment for commuting fields), else the
  reference loop stepping on the knots at rtol 1e-12;
- gradients: directional derivatives ``g . v`` along a seeded random direction ``v`` per
  parameter group (z0, the data values, each field parameter), by a complex step through the
  closed form (exact to round-off), else by Richardson-extrapolated central differences of the
  reference solve at rtol 1e-12. A random direction catches an error in any component with
  probability 1 (a dropped channel, a wrong coefficient).

Bounds (stated; none widened to pass): interpolants agree to round-off, ``1e3 eps S`` for values
and ``1e3 eps max(S / h_min, D)`` for derivatives (S, D the largest |X|, |dX/dt|, h_min the
smallest gap: a cubic's coefficients carry 1/h); a solution within ``100 (rtol |z| + atol)`` of
the oracle (plus the oracle's own error); a gradient within ``100 rtol`` relative (plus the
oracle's error), as ``properties/gradients.gradient_accuracy`` allows.

Where a library has no such scheme (diffrax has no natural cubic spline), the record measures how
far its cubic is from odeverify's (a ``deviation``, not a failure). Missing values: each
library's documented NaN handling against odeverify's named fill rules, the difference recorded.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..backends import get as get_backend
from ..backends._cde_driver import cde_capabilities
from ..gradients._spec import Loss
from ..problems import cde as cde_problems
from ..records import Record

EPS = float(np.finfo(np.float64).eps)
#: the libraries (backend names) these records compare, with the module of their interpolant
LIBRARIES = ("torchcde", "diffrax")
#: interior sample points of each piece (fractions of the gap)
FRACTIONS = (0.13, 0.37, 0.5, 0.71, 0.93)
#: default methods: the same Dormand-Prince pair in each library
METHOD = {"torchcde": "dopri5", "diffrax": "Dopri5", "reference": "dopri5"}
SOLUTION_RTOL = 1e-10
ORACLE_RTOL = 1e-12
KNOT_RTOL = 1e-8
#: a library stepping on the knots as jumps stays within this factor of the reference's error
KNOT_FACTOR = 10.0
#: fixed-step counts of the knot-order sweep, and how many of the finest errors the order is fitted on
#: (the coarsest grids are mostly knots: pre-asymptotic)
FIXED_STEPS = (16, 32, 64, 128)
FIT_POINTS = 3
#: a fitted order at most this far below the method's passes; one below LOST_ORDER is the order lost
#: at the knots (a deviation); in between the fit is inconclusive (skip)
ORDER_SLACK = 0.5
LOST_ORDER = 1.5
PROPERTIES = ("cde_library_interpolant", "cde_library_solution", "cde_library_knots", "cde_library_fixed_order",
              "cde_library_gradient", "cde_library_missing")


def _module(backend: str) -> Any:
    if backend == "torchcde":
        from ..backends import torchcde_backend as mod
    elif backend == "diffrax":
        from ..backends import diffrax_cde as mod
    else:
        raise ValueError(f"backend={backend!r}, but library records compare one of {', '.join(LIBRARIES)}")
    return mod


def _record(prop: str, backend: str, problem: Any, method: str, measured: Any, expected: Any, verdict: str,
            message: str, details: dict[str, Any], status: str = "success") -> Record:
    return Record(property=prop, method=method, problem=problem.name, measured=measured, expected=expected,
                  verdict=verdict, backend=backend, library=backend, status=status, message=message,
                  details=dict(details, family="cde", interpolation=problem.interpolation))


def _unavailable(prop: str, backend: str, problem: Any, method: str) -> Record | None:
    b = get_backend(backend)
    if b.available():
        return None
    return _record(prop, backend, problem, method, None, None, "unavailable",
                   f"{backend} is not installed; install with: {b.install_hint}", {"install_hint": b.install_hint},
                   status="unavailable")


def _ready(prop: str, backend: str, problem: Any, method: str) -> tuple[Record | None, Any]:
    """``(record, caps)``: an ``unavailable`` or ``skip`` record when the library cannot take the
    problem (not installed, no such interpolation), else ``(None, its CDE capabilities)``."""
    off = _unavailable(prop, backend, problem, method)
    if off is not None:
        return off, None
    caps = cde_capabilities(get_backend(backend))
    if problem.interpolation not in caps.interpolations:
        return _record(prop, backend, problem, method, None, None, "skip",
                       f"{backend} has no {problem.interpolation!r} interpolation", {}), None
    return None, caps


def _interpolation_case(prop: str, backend: str, problem: Any, interpolation: str | None) -> tuple[Any, Any, Any]:
    """``(problem as interpolation, unavailable record or None, the library's CDE capabilities)``."""
    from ..backends._cde_driver import with_interpolation

    problem = with_interpolation(problem, interpolation)
    off = _unavailable(prop, backend, problem, problem.interpolation)
    return problem, off, None if off is not None else cde_capabilities(get_backend(backend))


# ----------------------------------------------------------------------------- interpolants
def sample_points(control: Any) -> tuple[np.ndarray, np.ndarray]:
    """Interior points of every piece (:data:`FRACTIONS` of its gap) and the inner knots."""
    b = control.breaks
    gaps = np.diff(b)
    inner = (b[:-1, None] + gaps[:, None] * np.asarray(FRACTIONS)[None, :]).reshape(-1)
    return inner, b[1:-1].copy()


def left_derivative(control: Any, knots: np.ndarray) -> np.ndarray:
    """dX/dt of the piece ending at each knot (the piece on the knot's left)."""
    p = np.searchsorted(control.breaks, knots, side="left") - 1
    u = (knots - control.breaks[p])[:, None]
    a, b, c, d = (control.coeffs[p, m] for m in range(4))
    return b + u * (2 * c + 3 * u * d)


def interpolant_bounds(control: Any, values: np.ndarray, ders: np.ndarray) -> tuple[float, float]:
    S = max(1.0, float(np.max(np.abs(values))))
    D = float(np.max(np.abs(ders)))
    h = float(np.min(np.diff(control.breaks)))
    return 1e3 * EPS * S, 1e3 * EPS * max(S / h, D)


def cde_library_interpolant(problem: Any, interpolation: str | None = None, *, backend: str = "torchcde",
                            interpolant: Callable[..., Any] | None = None) -> Record:
    """The library's interpolant of the problem's data (``interpolation``, default the problem's)
    against odeverify's: values and dX/dt at interior points of every piece, values at the knots;
    ``interpolant`` replaces the library's (tests plant faults with it)."""
    prop = "cde_library_interpolant"
    problem, off, caps = _interpolation_case(prop, backend, problem, interpolation)
    if off is not None:
        return off
    kind = problem.interpolation
    mod = _module(backend)
    ctrl = problem.control
    substitute = None
    if kind not in caps.interpolations:
        substitute = "hermite_cubic_bd" if kind == "natural_cubic" else None
        if substitute is None:
            return _record(prop, backend, problem, kind, None, None, "skip", f"{backend} has no {kind!r}"
                           " interpolation", {})
    fn = interpolant or mod.interpolant
    inner, knots = sample_points(ctrl)
    got_v, got_d = fn(problem, inner, kind=substitute or kind)
    at_v, at_d = fn(problem, knots, kind=substitute or kind)
    want_v, want_d = ctrl.evaluate(inner), ctrl.derivative(inner)
    bound_v, bound_d = interpolant_bounds(ctrl, want_v, want_d)
    err_v = max(float(np.max(np.abs(got_v - want_v))), float(np.max(np.abs(at_v - ctrl.evaluate(knots))))
                if knots.size else 0.0)
    err_d = float(np.max(np.abs(got_d - want_d)))
    side = "none"
    if knots.size:
        right, left = ctrl.derivative(knots), left_derivative(ctrl, knots)
        dl, dr = float(np.max(np.abs(at_d - left))), float(np.max(np.abs(at_d - right)))
        jump = float(np.max(np.abs(right - left)))
        side = "both (C1 at the knots)" if jump <= bound_d else ("left" if dl <= bound_d else
                                                                  "right" if dr <= bound_d else "neither")
    details = {"points": int(inner.size), "knots": int(knots.size), "value_error": err_v, "derivative_error": err_d,
               "value_bound": bound_v, "derivative_bound": bound_d, "knot_side": side,
               "errors_by_piece": np.max(np.abs(got_v - want_v).reshape(-1, len(FRACTIONS), ctrl.channels),
                                         axis=(1, 2)).tolist()}
    measured = max(err_v / bound_v, err_d / bound_d)
    if substitute is not None:
        rel = err_v / max(1.0, float(np.max(np.abs(want_v))))
        details["substitute"] = substitute
        return _record(prop, backend, problem, kind, rel, None, "deviation",
                       f"{backend} has no {kind} spline: its {substitute} interpolant of the same data differs from"
                       f" the natural cubic spline by {err_v:.3g} in X ({rel:.3g} relative) and {err_d:.3g} in dX/dt"
                       " (a different scheme, not an error)", details)
    ok = err_v <= bound_v and err_d <= bound_d
    what = (f"X off by {err_v:.3g} (bound {bound_v:.3g}), dX/dt off by {err_d:.3g} (bound {bound_d:.3g}) at"
            f" {inner.size} interior points and {knots.size} knots; at a knot {backend} takes the {side} derivative")
    if ok:
        return _record(prop, backend, problem, kind, measured, 1.0, "pass",
                       f"{backend}'s {kind} interpolant equals odeverify's to round-off: {what}", details)
    worst = int(np.argmax(details["errors_by_piece"]))
    return _record(prop, backend, problem, kind, measured, 1.0, "fail",
                   f"{backend}'s {kind} interpolant of the same data is not odeverify's: {what}; the worst piece is"
                   f" {worst} ([{ctrl.breaks[worst]:.4g}, {ctrl.breaks[worst + 1]:.4g}]): check the coefficient"
                   " function's formula and the channel order", details)


# ----------------------------------------------------------------------------- solutions
def output_times(problem: Any, count: int = 5) -> np.ndarray:
    t0, t1 = problem.t_span
    return np.linspace(t0, t1, count + 1)[1:]


def exact(problem: Any, ts: np.ndarray, **overrides: Any) -> np.ndarray | None:
    """``CDEProblem.exact`` at ``ts`` (one row per time), as an array, or None."""
    ex = problem.exact(ts, **overrides)
    return None if ex is None else np.asarray(ex)


def oracle_solution(problem: Any, ts: np.ndarray) -> tuple[np.ndarray, float, str]:
    """``(z(ts), its error estimate, kind)``: the closed form, else the reference loop on the
    knots at rtol :data:`ORACLE_RTOL` (error taken as 100 (rtol |z| + atol))."""
    ex = exact(problem, ts)
    if ex is not None:
        return np.asarray(ex, dtype=np.float64), 1e3 * EPS * max(1.0, float(np.max(np.abs(ex)))), "closed form"
    sol = get_backend("reference").solve_cde(problem, "dop853", rtol=ORACLE_RTOL, atol=ORACLE_RTOL * 1e-2,
                                             t_eval=ts)
    if not sol.status.ok:
        raise RuntimeError(f"the reference oracle failed on {problem.name}: {sol.status.code} {sol.message}")
    ys = np.asarray(sol.ys, dtype=np.float64)
    return ys, 100 * (ORACLE_RTOL * float(np.max(np.abs(ys))) + ORACLE_RTOL * 1e-2), "reference dop853 rtol 1e-12"


def cde_library_solution(problem: Any, method: str | None = None, *, backend: str = "torchcde",
                         rtol: float = SOLUTION_RTOL, knots: str = "jump") -> Record:
    """The library's solve (``knots``, default stepping on them as a jump) against the oracle at
    five output times."""
    prop = "cde_library_solution"
    method = method or METHOD[backend]
    skip, _ = _ready(prop, backend, problem, method)
    if skip is not None:
        return skip
    ts = output_times(problem)
    ref, ref_err, kind = oracle_solution(problem, ts)
    atol = rtol * 1e-2
    sol = get_backend(backend).solve_cde(problem, method, rtol=rtol, atol=atol, t_eval=ts, knots=knots)
    details = {"rtol": rtol, "atol": atol, "knots": knots, "oracle": kind, "oracle_error": ref_err,
               "nfev": sol.stats.nfev, "accepted": sol.stats.accepted, "ts": ts.tolist()}
    if not sol.status.ok:
        return _record(prop, backend, problem, method, None, None, "fail",
                       f"{backend} {method} failed on {problem.name}: {sol.status.code} {sol.message}", details,
                       status=sol.status.code)
    err = np.max(np.abs(sol.ys - ref), axis=-1)
    bound = 100 * (rtol * float(np.max(np.abs(ref))) + atol) + ref_err
    details.update(errors=err.tolist(), bound=bound)
    e = float(np.max(err))
    verdict = "pass" if e <= bound else "fail"
    msg = (f"max |z - z_oracle| = {e:.3g} over {ts.size} times against the bound 100 (rtol |z| + atol) + oracle"
           f" error = {bound:.3g} ({kind})")
    if verdict == "fail":
        msg += (f"; the worst time is t = {ts[int(np.argmax(err))]:.4g}: check how {backend} reads X (the same"
                " data? its derivative at the knots?) and whether its steps meet the knots")
    return _record(prop, backend, problem, method, e / bound, 1.0, verdict, msg, details)


def cde_library_knots(problem: Any, method: str | None = None, *, backend: str = "torchcde",
                      rtol: float = KNOT_RTOL) -> Record:
    """How the library's knot handling costs accuracy and work: one adaptive solve per knot rule it
    has, at ``rtol``, against the reference's own solve with the same Dormand-Prince pair stepping on
    the knots (``tstops``) at the same tolerances: ``jump`` must stay within
    ``max(KNOT_FACTOR x the reference's error, rtol |z|)`` (plus the oracle's error), and another
    rule that misses it is a recorded ``deviation`` (the libraries document ``jump`` for
    piecewise-linear controls). The reference's error at the same tolerance is the yardstick (not
    ``100 rtol``): jump times misplaced by a fifth of a gap stayed within ``100 (rtol |z| + atol)``."""
    prop = "cde_library_knots"
    method = method or METHOD[backend]
    skip, caps = _ready(prop, backend, problem, method)
    if skip is not None:
        return skip
    b = get_backend(backend)
    ts = output_times(problem, 1)
    ref, ref_err, kind = oracle_solution(problem, ts)
    atol = rtol * 1e-2
    mine = get_backend("reference").solve_cde(problem, "dopri5", rtol=rtol, atol=atol, t_eval=ts, knots="jump")
    mine_err = float(np.max(np.abs(mine.ys - ref))) if mine.status.ok else float("inf")
    bound = max(KNOT_FACTOR * mine_err, rtol * float(np.max(np.abs(ref)))) + ref_err
    rules: dict[str, dict[str, Any]] = {}
    for rule in caps.knots:
        sol = b.solve_cde(problem, method, rtol=rtol, atol=atol, t_eval=ts, knots=rule)
        err = float(np.max(np.abs(sol.ys - ref))) if sol.status.ok else float("nan")
        rules[rule] = {"error": err, "nfev": sol.stats.nfev, "accepted": sol.stats.accepted,
                       "status": sol.status.code}
    details = {"rtol": rtol, "atol": atol, "bound": bound, "oracle": kind, "rules": rules,
               "reference": {"error": mine_err, "nfev": mine.stats.nfev, "accepted": mine.stats.accepted}}
    jump = rules.get("jump", {}).get("error", float("nan"))
    if not np.isfinite(jump) or jump > bound:
        return _record(prop, backend, problem, method, jump / bound if np.isfinite(jump) else None, 1.0, "fail",
                       f"with the knots as jumps {backend} {method} misses the bound: error {jump:.3g} > {bound:.3g}"
                       f" (the reference's dopri5 on the knots at the same tolerances: {mine_err:.3g}, {mine.stats.nfev}"
                       " evaluations); does the library step to every knot, and restart on its right side?", details)
    worse = {r: v for r, v in rules.items() if r != "jump" and not v["error"] <= bound}
    text = "; ".join(f"knots={r}: error {v['error']:.3g} ({v['error'] / max(jump, 1e-300):.3g}x the jump solve's),"
                     f" {v['nfev'] if v['nfev'] >= 0 else v['accepted']} {'evaluations' if v['nfev'] >= 0 else 'steps'}"
                     for r, v in rules.items() if r != "jump")
    if worse:
        return _record(prop, backend, problem, method, max(v["error"] for v in worse.values()) / bound, 1.0,
                       "deviation", f"{backend} {method} at rtol {rtol:g}: knots=jump error {jump:.3g} (bound"
                       f" {bound:.3g}); {text}. Without jump times the library evaluates dX/dt at a knot on the"
                       " wrong side or lets the error control find the kink", details)
    return _record(prop, backend, problem, method, jump / bound, 1.0, "pass",
                   f"{backend} {method} at rtol {rtol:g}: knots=jump error {jump:.3g} (bound {bound:.3g}, the"
                   f" reference's {mine_err:.3g}); {text}", details)


def cde_library_fixed_order(problem: Any, method: str | None = None, *, backend: str = "torchcde",
                            knots: str = "jump", control: str = "derivative",
                            steps: tuple[int, ...] = FIXED_STEPS) -> Record:
    """The observed order of a fixed-step solve whose grid holds the knots (``knots``: ``jump``
    perturbs the evaluations into the step, ``step`` evaluates at the knots), fitted over
    ``steps`` (the finest :data:`FIT_POINTS` errors above round-off, against the largest step of
    each grid); expected the method's order where X is smooth between the knots. A fit below
    :data:`LOST_ORDER` is a deviation (the library evaluates dX/dt on the wrong side of a knot, or takes
    the increment of a curved control); one between that and the claim less :data:`ORDER_SLACK` is
    inconclusive (``skip``)."""
    from ..metrics import loglog_slope

    prop = "cde_library_fixed_order"
    method = method or {"torchcde": "rk4", "diffrax": "Tsit5"}[backend]
    skip, caps = _ready(prop, backend, problem, method)
    if skip is not None:
        return skip
    b = get_backend(backend)
    info = caps.methods[method]
    ts = output_times(problem, 1)
    ref, ref_err, kind = oracle_solution(problem, ts)
    from ..backends._cde_driver import fixed_grid_with_knots

    errs, hs = [], []
    for n in steps:
        sol = b.solve_cde(problem, method, n_steps=n, t_eval=ts, knots=knots, control=control)
        errs.append(float(np.max(np.abs(sol.ys - ref))) if sol.status.ok else float("nan"))
        # the largest step of the grid the solve took (the knots cut the coarse grids' steps)
        hs.append(float(np.max(np.diff(fixed_grid_with_knots(problem, {"n_steps": n}, knots)))))
    e, h = np.asarray(errs), np.asarray(hs)
    floor = 1e3 * EPS * max(1.0, float(np.max(np.abs(ref)))) + ref_err
    use = np.isfinite(e) & (e > 10 * floor)
    use &= np.cumsum(use[::-1])[::-1] <= FIT_POINTS  # the finest FIT_POINTS errors above round-off
    details = {"steps": list(steps), "errors": errs, "max_steps": hs, "knots": knots, "control": control,
               "oracle": kind, "floor": floor}
    if use.sum() < 2:
        return _record(prop, backend, problem, method, None, float(info.order), "skip",
                       f"fewer than two errors above round-off ({floor:.3g}): no order to fit", details)
    slope = float(loglog_slope(h[use], e[use]))
    details["fitted_on"] = np.flatnonzero(use).tolist()
    verdict = "pass" if slope >= info.order - ORDER_SLACK else "deviation" if slope < LOST_ORDER else "skip"
    msg = (f"{backend} {method} on a fixed grid with the knots (knots={knots}, control={control}): order {slope:.2f},"
           f" claimed {info.order}; errors {', '.join(f'{x:.3g}' for x in errs)} at n = {', '.join(map(str, steps))}")
    if verdict == "deviation":
        msg += (": the order is lost at the knots (the library evaluates dX/dt at a knot from the piece on its left,"
                " or contracts the field with the increment of a curved control)")
    elif verdict == "skip":
        msg += (f": inconclusive, between first order ({LOST_ORDER} and below: lost at the knots) and the claim"
                f" less {ORDER_SLACK}; the union of the grid and the knots does not halve its steps evenly, so"
                " finer grids would settle it")
    return _record(prop, backend, problem, method, slope, float(info.order), verdict, msg, details)


# ----------------------------------------------------------------------------- gradients
def gradient_loss(problem: Any, count: int = 3, seed: int = 0) -> Loss:
    return Loss.seeded(output_times(problem, count), problem.hidden, seed=seed, quadratic=0.5)


def directions(problem: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """One seeded N(0, 1) direction per parameter group: ``y0`` and each of θ."""
    from ..backends._cde_driver import cde_gradient_params

    rng = np.random.default_rng(seed + 4242)
    out = {"y0": rng.standard_normal(problem.hidden)}
    for k, v in cde_gradient_params(problem).items():
        out[k] = rng.standard_normal(np.shape(v))
    return out


def _loss_value(loss: Loss, ys: np.ndarray) -> Any:
    w = loss.weights
    return np.sum(w * ys) + 0.5 * np.sum(loss.quadratic * ys * ys)


def oracle_directional(problem: Any, loss: Loss, dirs: dict[str, np.ndarray]) -> tuple[dict[str, float], float, str]:
    """``{group: dL/d(group) . v}`` by a complex step through the closed form (step 1e-30) where
    the closed form holds for every value of the group (a piecewise-linear control: every group;
    the commuting form ``expm(sum_j A_j dX_j)``: z0 and the data only, since a perturbed ``A`` no
    longer commutes and a bias ``B`` breaks it), else by central differences of the reference at
    rtol 1e-12 with Richardson extrapolation (step 1e-3 and 5e-4); with the oracle's error estimate
    and what it was."""
    import dataclasses

    from ..backends._cde_driver import cde_gradient_params

    ts = np.asarray(loss.t_eval)
    theta = cde_gradient_params(problem)
    base_p = {k: v for k, v in theta.items() if k != "values"}
    kind = problem.exact_kind
    complex_groups = set(dirs) if kind == "piecewise_linear" else {"y0", "values"} if kind == "commuting" else set()
    ref = get_backend("reference")

    def by_complex_step(g: str) -> float:
        h = 1e-30
        vals = theta["values"] + (1j * h * dirs[g] if g == "values" else 0)
        params = {k: p + (1j * h * dirs[g] if g == k else 0) for k, p in base_p.items()}
        z0 = problem.y0 + (1j * h * dirs[g] if g == "y0" else 0)
        return float(np.imag(_loss_value(loss, exact(problem, ts, values=vals, params=params, z0=z0))) / h)

    def L(g: str, eps: float) -> float:
        prob = problem
        if g == "values":  # the data moved with z0 held fixed (the partial derivative through X)
            ctrl = problem.control.with_values(theta["values"] + eps * dirs[g])
            t0 = problem.t_span[0]
            shift = problem.zeta_W @ (ctrl.evaluate(t0) - problem.control.evaluate(t0))
            prob = dataclasses.replace(problem.with_control(ctrl, problem.name), zeta_b=problem.zeta_b - shift)
        elif g == "y0":
            prob = dataclasses.replace(problem, zeta_b=problem.zeta_b + eps * dirs[g])
        else:
            params = dict(problem.field.params, **{g: base_p[g] + eps * dirs[g]})
            prob = dataclasses.replace(problem, field=dataclasses.replace(problem.field, params=params))
        sol = ref.solve_cde(prob, "dop853", rtol=ORACLE_RTOL, atol=ORACLE_RTOL * 1e-2, t_eval=ts)
        return float(_loss_value(loss, np.asarray(sol.ys)))

    def by_differences(g: str) -> float:
        h = 1e-3
        d1 = (L(g, h) - L(g, -h)) / (2 * h)
        d2 = (L(g, h / 2) - L(g, -h / 2)) / h
        return (4 * d2 - d1) / 3

    out = {g: by_complex_step(g) if g in complex_groups else by_differences(g) for g in dirs}
    if complex_groups == set(dirs):
        return out, 1e3 * EPS, "complex step through the closed form"
    if complex_groups:
        return out, 1e-7, (f"complex step through the closed form ({', '.join(sorted(complex_groups))}), Richardson"
                           " central differences of the reference at rtol 1e-12 (the rest)")
    return out, 1e-7, "Richardson central differences of the reference at rtol 1e-12"


def cde_library_gradient(problem: Any, method: str | None = None, *, backend: str = "torchcde",
                         mode: str | None = None, rtol: float = SOLUTION_RTOL) -> Record:
    """The library's dL/dz0 and dL/dθ (data values and field parameters) along one seeded
    direction per group against the oracle (:func:`oracle_directional`)."""
    prop = "cde_library_gradient"
    method = method or METHOD[backend]
    mode = mode or {"torchcde": "backprop", "diffrax": "recursive_checkpoint"}[backend]
    label = f"{method}/{mode}"
    skip, _ = _ready(prop, backend, problem, label)
    if skip is not None:
        return skip
    b = get_backend(backend)
    loss = gradient_loss(problem)
    dirs = directions(problem)
    want, oracle_err, kind = oracle_directional(problem, loss, dirs)
    res = b.cde_gradient(problem, method, mode, loss, rtol=rtol, atol=rtol * 1e-2)
    details: dict[str, Any] = {"mode": mode, "rtol": rtol, "oracle": kind, "oracle_error": oracle_err}
    if not res.status.ok:
        return _record(prop, backend, problem, label, None, None, "fail",
                       f"{backend} {mode} gradient failed: {res.status.code} {res.message}", details,
                       status=res.status.code)
    got = {"y0": float(np.sum(res.grad_y0 * dirs["y0"]))}
    got.update({k: float(np.sum(res.grad_params[k] * dirs[k])) for k in dirs if k != "y0"})
    errors = {}
    for g in dirs:
        grad = res.grad_y0 if g == "y0" else res.grad_params[g]
        scale = max(abs(want[g]), float(np.sum(np.abs(grad * dirs[g]))), 1e-300)
        errors[g] = abs(got[g] - want[g]) / scale
    bound = 100 * rtol + oracle_err
    details.update(library=got, expected=want, relative_errors=errors, bound=bound)
    worst = max(errors, key=lambda k: errors[k])
    e = errors[worst]
    msg = (f"{backend} {mode} gradient along a random direction per group: worst relative error {e:.3g}"
           f" ({worst}) against the bound 100 rtol + oracle error = {bound:.3g} ({kind})")
    if e > bound:
        return _record(prop, backend, problem, label, e / bound, 1.0, "fail",
                       msg + f"; dL/d{worst} . v = {got[worst]:.6g}, the oracle's {want[worst]:.6g}", details)
    return _record(prop, backend, problem, label, e / bound, 1.0, "pass", msg, details)


# ----------------------------------------------------------------------------- missing values
def missing_data(problem: Any, frac: float = 0.3, seed: int = 0) -> np.ndarray:
    """The problem's data with a seeded fraction of the non-time entries set to NaN (never row 0
    nor the last row: a rule that holds the first/last observation is then not exercised)."""
    v = np.array(problem.control.values, dtype=np.float64)
    lo = 1 if problem.control.include_time else 0
    mask = np.random.default_rng(seed + 99).random(v.shape) < frac
    mask[0] = mask[-1] = False
    mask[:, :lo] = False
    v[mask] = np.nan
    return v


def cde_library_missing(problem: Any, interpolation: str | None = None, *, backend: str = "torchcde",
                        frac: float = 0.3) -> Record:
    """The library's interpolant of data with missing values (its documented NaN handling) against
    odeverify's fill rules (``linear``, ``forward``) of the same data: which rule it matches, or
    how far it is from both (a ``deviation``: a different documented rule). A library that
    raises, or returns NaN, is recorded as such."""
    prop = "cde_library_missing"
    problem, off, caps = _interpolation_case(prop, backend, problem, interpolation)
    if off is not None:
        return off
    kind = problem.interpolation
    if kind not in caps.interpolations or kind == "rectilinear":
        return _record(prop, backend, problem, kind, None, None, "skip",
                       f"{backend} {kind}: no NaN handling to compare (rectilinear fills forward by construction)"
                       if kind == "rectilinear" else f"{backend} has no {kind!r} interpolation", {})
    data = missing_data(problem, frac)
    ctrl = problem.control
    raw = data[:, 1:] if ctrl.include_time else data
    inner, _ = sample_points(ctrl)
    details: dict[str, Any] = {"missing": int(np.isnan(data).sum()), "entries": int(data.size), "frac": frac}
    try:
        got_v, _ = _module(backend).interpolant(problem, inner, values=data, kind=kind)
    except Exception as exc:  # noqa: BLE001 - the library's reaction to NaN is the finding
        return _record(prop, backend, problem, kind, None, None, "deviation",
                       f"{backend} raised on data with {details['missing']} missing values: {type(exc).__name__}:"
                       f" {exc}"[:400], details)
    nan_out = int(np.isnan(got_v).sum())
    diffs = {}
    for rule in cde_problems.FILLS:
        mine = cde_problems.make_control(ctrl.times, raw, kind, include_time=ctrl.include_time, fill=rule)
        diffs[rule] = float(np.nanmax(np.abs(got_v - mine.evaluate(inner)))) if nan_out < got_v.size else float("nan")
    scale = max(1.0, float(np.nanmax(np.abs(ctrl.values))))
    details.update(differences=diffs, nan_outputs=nan_out)
    bound = 1e3 * EPS * scale * max(1.0, float(np.max(np.diff(ctrl.breaks)) / np.min(np.diff(ctrl.breaks))))
    matches = [r for r, d in diffs.items() if d <= bound]
    if nan_out:
        return _record(prop, backend, problem, kind, float(nan_out), 0.0, "deviation",
                       f"{backend}'s {kind} interpolant of data with {details['missing']} missing values returns NaN at"
                       f" {nan_out} of {got_v.size} sample values (it leaves NaN where odeverify's fill rules give a"
                       " value)", details)
    if matches:
        return _record(prop, backend, problem, kind, diffs[matches[0]] / scale, 0.0, "pass",
                       f"{backend}'s {kind} interpolant of data with {details['missing']} missing values equals"
                       f" odeverify's fill={matches[0]!r} to round-off ({diffs[matches[0]]:.3g})", details)
    best = min(diffs, key=lambda r: diffs[r])
    return _record(prop, backend, problem, kind, diffs[best] / scale, 0.0, "deviation",
                   f"{backend}'s {kind} interpolant of data with {details['missing']} missing values follows its own"
                   f" rule: {diffs[best]:.3g} from odeverify's nearest fill ({best!r}),"
                   f" {', '.join(f'{r}: {d:.3g}' for r, d in diffs.items())}", details)


# ----------------------------------------------------------------------------- a run's records
#: the problems of a quick run (one per interpolation with a closed form) and of a full run
QUICK_PROBLEMS = ("cde_linear_pl", "cde_commuting_hermite_cubic_bd")
FULL_PROBLEMS = ("cde_linear_pl", "cde_rectilinear", "cde_commuting_natural_cubic", "cde_commuting_hermite_cubic_bd",
                 "cde_partial", "cde_neural")


def library_cases(backend: str, quick: bool = False) -> list[tuple[Callable[..., Record], tuple, dict[str, Any]]]:
    """The cases of :func:`cde_library_records` as ``(property, (problem, method or interpolation),
    kwargs)``, so a family's run can pass each through its own ``_safe``."""
    names = QUICK_PROBLEMS if quick else FULL_PROBLEMS
    b = get_backend(backend)
    modes = [None] if quick or not b.available() else list(cde_capabilities(b).gradient_modes)
    method = METHOD[backend]
    fixed = {"torchcde": "rk4", "diffrax": "Tsit5"}[backend]
    rules = {"torchcde": (("jump", "derivative"), ("step", "derivative")),
             "diffrax": (("step", "derivative"), ("step", "increment"))}[backend]
    kw = {"backend": backend}
    cases: list[tuple[Callable[..., Record], tuple, dict[str, Any]]] = []
    for i, name in enumerate(names):
        p = cde_problems.get(name)
        if i == 0:  # every interpolation of the first problem's data
            for kind in ("linear", "natural_cubic", "hermite_cubic_bd"):
                cases.append((cde_library_interpolant, (p, kind), kw))
                if not quick:
                    cases.append((cde_library_missing, (p, kind), kw))
        elif p.interpolation == "rectilinear":
            cases.append((cde_library_interpolant, (p, "rectilinear"), kw))
        cases.append((cde_library_solution, (p, method), kw))
        if p.interpolation in ("linear", "rectilinear"):
            cases.append((cde_library_knots, (p, method), kw))
            if not quick:
                for rule, form in rules:
                    cases.append((cde_library_fixed_order, (p, fixed), dict(kw, knots=rule, control=form)))
        for mode in modes:
            cases.append((cde_library_gradient, (p, method), dict(kw, mode=mode)))
    return cases


def cde_library_records(backend: str, quick: bool = False) -> list[Record]:
    """Every library record of ``backend`` (torchcde or diffrax) for a run: interpolants (and their
    missing-value handling in a full run), solutions, knot handling and gradients, known deviations
    marked (``data/expected_failures.toml``); an uninstalled library gives one ``unavailable``
    record. Each case's exception becomes an ``error`` record."""
    b = get_backend(backend)
    if not b.available():
        from ..records import unavailable_record

        return [unavailable_record(backend, b.install_hint, property="cde_library_solution")]
    from .. import expectations

    out = []
    for fn, args, kwargs in library_cases(backend, quick):
        try:
            out.append(expectations.apply(fn(*args, **kwargs)))
        except Exception as exc:  # noqa: BLE001 - a case's failure is a record, never a crash
            out.append(Record(property=fn.__name__, method=str(args[1]), problem=args[0].name, measured=None,
                              expected=None, verdict="error", backend=backend, library=backend, status="failed",
                              message=f"{type(exc).__name__}: {exc}"[:500], details={"family": "cde"}))
    return out


__all__ = ["FIXED_STEPS", "FULL_PROBLEMS", "LIBRARIES", "PROPERTIES", "QUICK_PROBLEMS", "cde_library_fixed_order",
           "cde_library_gradient", "cde_library_interpolant", "cde_library_knots", "cde_library_missing",
           "cde_library_records", "directions", "gradient_loss", "library_cases", "missing_data", "oracle_directional",
           "oracle_solution", "sample_points"]
