"""Properties of neural CDEs (issue 12): the interpolations' own orders and knot conditions, the
solve's convergence given the interpolation's smoothness, reparametrisation invariance and the
gradients with respect to the field's parameters and the data values.

Oracles (none shares code with what it grades):

- interpolation order: the closed-form smooth path the data were sampled from
  (:class:`~odeverify.problems.cde.SmoothPath`, analytic derivatives) on a dense grid;
- knot conditions: one-sided limits of the pieces' own polynomials at every knot (X, X', X''),
  the data at the knots, ``X''`` at the ends (natural), the backward-difference slopes (Hermite);
- convergence: the closed form (product of matrix exponentials on piecewise-linear X, or
  ``expm(sum_j A_j (X_j(t) - X_j(t0)))`` for commuting fields), scipy's ``expm``;
- reparametrisation: the same CDE solved in ``s = phi(t)`` (``Y(s) = X(psi(s))``, ``dY/ds =
  X'(psi(s)) psi'(s)``, or the data re-timed at ``phi(t_k)`` where the path's image is what the
  interpolation keeps): the difference of the two solves must fall with the tolerance;
- gradients: complex steps (``h = 1e-20``, exact to round-off) of the loss through the closed form
  with complex data or parameters, checked against central differences at two steps (the second
  bounds the first's truncation error).

Theory of the convergence with kinks: X in C^k at its knots puts a jump in ``z^(k+1)``; a step that
contains the jump commits a local error O(h^(k+1)) (the quadrature of a jump in the ``k``-th
derivative of the integrand, Hairer, Nørsett & Wanner I, §II.6), and a fixed number of knots is
crossed whatever ``h``: the global error is O(h^(k+1)), so a method of order p converges at
``min(p, k + 1)`` without stops at the knots (1 for linear and rectilinear controls, 2 for Hermite
cubic, 3 for the natural spline) and at ``p`` with them.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import backends
from ..backends._cde_driver import cde_capabilities
from ..gradients import Loss
from ..metrics import loglog_slope
from ..problems import cde as cdep
from ..problems.cde import CDEProblem, Control, Warp
from ..records import Record
from .gradients import ACCURACY_FACTOR

EPS = float(np.finfo(np.float64).eps)
#: the interpolation-order sweep cuts every gap of the data's times into this many parts
ORDER_REFINEMENTS = (1, 2, 4, 8, 16, 32)
#: a fitted order must lie within this band of the claim (above it: inconclusive)
ORDER_BAND = 0.35
#: fixed step counts of the convergence sweep (powers of two: never on the named problems' knots)
CONV_STEPS = (8, 16, 32, 64, 128, 256, 512)
#: the band of the fitted order without stops (a kink's position in its step moves the constant)
KINK_BAND = 0.4
#: tolerances of the reparametrisation sweep (rtol; atol = rtol / 100)
REPARAM_TOLS = (1e-4, 1e-6, 1e-8, 1e-10)
#: the sweep of methods of order <= 3
REPARAM_TOLS_LOW = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
#: tolerance of the gradient solves
GRAD_RTOL = 1e-9
CS_STEP = 1e-20
FD_STEP = 1e-5


def _rec(prop: str, method: str, problem: str, measured: Any, expected: Any, verdict: str, *,
         backend: str = "reference", message: str = "", **details: Any) -> Record:
    return Record(property=prop, method=method, problem=problem, measured=measured, expected=expected,
                  verdict=verdict, backend=backend, message=message, details={"family": "cde", **details})


def _fit(hs: np.ndarray, errs: np.ndarray, floor: float, whole: bool = False) -> tuple[float | None, list[int]]:
    """Least-squares slope over the finest run (at most 4) of errors above ``floor``, or over every
    such error (``whole``: where the error constant wobbles from step to step, as a kink's position
    inside its step does, a longer lever arm averages it out)."""
    use = [i for i in range(len(errs)) if math.isfinite(errs[i]) and errs[i] > floor]
    if len(use) < 3:
        return None, use
    if whole:
        return loglog_slope(hs[use], errs[use]), use
    # the finest contiguous run above the floor (round-off bounds it from below)
    run = [use[-1]]
    for i in reversed(use[:-1]):
        if i == run[0] - 1:
            run.insert(0, i)
        else:
            break
    if len(run) < 3:
        return None, run
    run = run[-4:]
    return loglog_slope(hs[run], errs[run]), run


def _judge(slope: float | None, expected: float, band: float, what: str) -> tuple[str, str]:
    if slope is None:
        return "skip", f"inconclusive: fewer than 3 {what} errors above the round-off floor"
    if abs(slope - expected) <= band:
        return "pass", ""
    if slope > expected + band:
        return "skip", f"inconclusive: {what} slope {slope:.2f} above the claim {expected:g} + {band}"
    return "fail", f"{what} slope {slope:.2f}, but should be {expected:g} +- {band}"


# ----------------------------------------------------------------------------- interpolation
def cde_interpolation_order(problem: CDEProblem, interpolation: str | None = None, *, backend: str = "reference",
                            refinements: Sequence[int] = ORDER_REFINEMENTS,
                            build: Callable[[np.ndarray, np.ndarray], Control] | None = None) -> Record:
    """The error of ``interpolation`` (default the problem's) of the problem's smooth path, against
    its closed form on a dense grid (40 points per piece), as the data spacing h (the largest gap)
    shrinks (each gap of the problem's times cut into 1, 2, 4, ... equal parts): the fitted slope
    of the max error must be the interpolant's order (natural cubic: 4 where ``x''`` vanishes at
    both ends, 2 otherwise), and of ``dX/dt`` the derivative order.
    ``build(times, values)`` replaces the interpolation (planted faults)."""
    kind = cdep.check_interpolation(interpolation or problem.interpolation)
    name = problem.name
    if problem.path is None:
        return _rec("cde_interpolation_order", kind, name, None, None, "skip", backend=backend,
                    message="no closed-form path behind the data: nothing to measure the interpolation error against")
    if kind == "rectilinear":
        return _rec("cde_interpolation_order", kind, name, None, None, "skip", backend=backend,
                    message="rectilinear (lead-lag) is parametrised by the observation index, not time: it is not an"
                            " approximation of X(t) with an order (its CDE solution converges instead)")
    rule = (problem.times_rule or ("given",))[0]
    t0, t1 = problem.control.times[0], problem.control.times[-1]
    path = problem.path
    x2_ends = float(np.max(np.abs(path.derivative(np.array([t0, t1]), 2))))
    scale2 = max(float(np.max(np.abs(path.derivative(np.linspace(t0, t1, 64), 2)))), 1e-300)
    natural_ends = x2_ends / scale2 if x2_ends > 1e-12 * scale2 else 0.0
    make = build or (lambda t, v: cdep.make_control(t, v, kind))
    ctrl0 = make(problem.control.times, path(problem.control.times))
    expected = ctrl0.expected_order(natural_ends)
    d_expected = (1 if kind == "natural_cubic" and natural_ends else cdep.DERIVATIVE_ORDER[kind])
    hs, errs, derrs = [], [], []
    base = problem.control.times
    for m in refinements:
        # every gap of the problem's own irregular times cut into m equal parts: nested grids whose
        # largest gap halves exactly (fresh draws per size would move the largest gap at random)
        t = np.concatenate([base[:-1, None] + np.diff(base)[:, None] * np.arange(m)[None, :] / m,
                            base[-1:, None]], axis=None)
        ctrl = make(t, path(t))
        grid = np.concatenate([np.linspace(a, b, 41)[:-1] for a, b in zip(t[:-1], t[1:])])
        grid = grid[:: max(1, grid.size // 20000)]
        errs.append(float(np.max(np.abs(ctrl.evaluate(grid) - path(grid)))))
        derrs.append(float(np.max(np.abs(ctrl.derivative(grid) - path.derivative(grid, 1)))))
        hs.append(float(np.max(np.diff(t))))
    h, e, de = np.array(hs), np.array(errs), np.array(derrs)
    xs = float(np.max(np.abs(path(np.linspace(t0, t1, 64)))))
    floor = 1e3 * EPS * max(1.0, xs)
    dfloor = floor / max(min(hs), 1e-300)
    slope, used = _fit(h, e, floor)
    dslope, dused = _fit(h, de, dfloor)
    v1, m1 = _judge(slope, expected, ORDER_BAND, "value")
    v2, m2 = _judge(dslope, d_expected, ORDER_BAND, "derivative")
    verdict = "fail" if "fail" in (v1, v2) else ("skip" if "skip" in (v1, v2) else "pass")
    message = "; ".join(m for m in (m1, m2) if m)
    if kind == "natural_cubic" and natural_ends:
        message = (message + "; " if message else "") + (
            f"x'' = {x2_ends:.3g} at an end: the natural end condition costs order 2 there (interior order 4)")
    return _rec("cde_interpolation_order", kind, name, slope, float(expected), verdict, backend=backend,
                message=message, h=hs, errors=errs, derivative_errors=derrs, derivative_slope=dslope,
                derivative_expected=d_expected, fit_points=used, derivative_fit_points=dused, floor=floor,
                times_rule=rule, second_derivative_at_ends=x2_ends)


def knot_jumps(control: Control) -> dict[str, np.ndarray]:
    """One-sided differences ``limit from the right - limit from the left`` of X, X', X'' at every
    interior knot (shape (knots, c) each), from the pieces' own polynomials."""
    c = control.coeffs
    d = np.diff(control.breaks)[:-1, None]
    a0, b0, c0, d0 = (c[:-1, m] for m in range(4))
    left = [a0 + d * (b0 + d * (c0 + d * d0)), b0 + d * (2 * c0 + 3 * d * d0), 2 * c0 + 6 * d * d0]
    right = [c[1:, 0], c[1:, 1], 2 * c[1:, 2]]
    return {name: r - lft for name, r, lft in zip(("X", "dX", "d2X"), right, left)}


def cde_knot_conditions(problem: CDEProblem, interpolation: str | None = None, *, backend: str = "reference",
                        control: Control | None = None) -> Record:
    """The interpolation's conditions at its knots: the data interpolated exactly, the continuity
    class (the jumps of X, X', X'' measured, class = the highest k with no jump up to X^(k)), the
    natural spline's X'' = 0 at both ends, Hermite-bd's end slopes (the backward differences);
    ``control`` replaces the interpolation (planted faults)."""
    kind = cdep.check_interpolation(interpolation or problem.interpolation)
    base = problem.control
    raw = base.values[:, 1:] if base.include_time else base.values
    ctrl = control or cdep.make_control(base.times, raw, kind, include_time=base.include_time)
    jumps = knot_jumps(ctrl)
    scale = [max(1.0, float(np.max(np.abs(ctrl.derivative(ctrl.breaks[:-1], nu))))) if nu else
             max(1.0, float(np.max(np.abs(ctrl.values)))) for nu in range(3)]
    hmin = float(np.min(np.diff(ctrl.breaks)))
    tol = [1e3 * EPS * scale[0], 1e3 * EPS * max(scale[1], scale[0] / hmin),
           1e3 * EPS * max(scale[2], scale[0] / hmin ** 2)]
    sizes = {k: float(np.max(np.abs(v))) if v.size else 0.0 for k, v in jumps.items()}
    cls = -1
    for i, key in enumerate(("X", "dX", "d2X")):
        if sizes[key] <= tol[i]:
            cls = i
        else:
            break
    problems: list[str] = []
    expected = cdep.CONTINUITY[kind]
    if cls < expected:
        key = ("X", "dX", "d2X")[cls + 1]
        problems.append(f"continuity C{max(cls, -1)} (jump of {key} up to {sizes[key]:.3g}), but {kind} must be"
                        f" C{expected}")
    # the data at the knots
    if kind == "rectilinear":
        at = ctrl.evaluate(ctrl.breaks[::2])
    else:
        at = ctrl.evaluate(ctrl.breaks)
    data_err = float(np.max(np.abs(at - ctrl.values)))
    if data_err > tol[0]:
        problems.append(f"misses the data at the knots by {data_err:.3g}")
    extra: dict[str, Any] = {}
    if kind == "natural_cubic":
        ends = ctrl.derivative(np.array([ctrl.breaks[0], ctrl.breaks[-1] - 0.0]), 2)
        # the right end belongs to the last piece: evaluate that piece at its end
        last = ctrl.coeffs[-1]
        dlast = ctrl.breaks[-1] - ctrl.breaks[-2]
        ends[1] = 2 * last[2] + 6 * dlast * last[3]
        end_err = float(np.max(np.abs(ends)))
        extra["second_derivative_at_ends"] = ends.tolist()
        if end_err > tol[2]:
            problems.append(f"X'' = {end_err:.3g} at an end, but the natural spline has X'' = 0 at both ends")
    if kind == "hermite_cubic_bd":
        s = np.diff(ctrl.values, axis=0) / np.diff(ctrl.breaks)[:, None]
        left = np.concatenate([s[:1], s[:-1]], axis=0)
        slope_err = max(float(np.max(np.abs(ctrl.coeffs[:, 1] - left))),
                        float(np.max(np.abs(ctrl.derivative(ctrl.breaks[-1]) - s[-1]))))
        extra["slope_error"] = slope_err
        if slope_err > tol[1]:
            problems.append(f"end slopes differ from the backward differences by {slope_err:.3g}")
    verdict = "fail" if problems else "pass"
    return _rec("cde_knot_conditions", kind, problem.name, float(cls), float(expected), verdict, backend=backend,
                message="; ".join(problems), jumps=sizes, tolerances=tol, data_error=data_err, **extra)


# ----------------------------------------------------------------------------- solves
def solve_cde(problem: CDEProblem, method: str, *, backend: str = "reference", **options: Any) -> Any:
    """The backend's CDE solve (:meth:`Backend.solve_cde`)."""
    return backends.get(backend).solve_cde(problem, method, **options)


def _method_info(backend: str, method: str) -> Any:
    caps = cde_capabilities(backends.get(backend))
    if caps is None:
        raise ValueError(f"backend {backend!r} solves no CDEs")
    if method not in caps.methods:
        raise ValueError(f"{backend} has no CDE method {method!r}; it has {', '.join(caps.methods)}")
    return caps.methods[method]


def _final(sol: Any) -> np.ndarray:
    return np.asarray(sol.ys, dtype=np.float64)[-1]


def kink_steps(problem: CDEProblem, count: int = 5) -> list[int]:
    """Step counts for a sweep without stops: ``3 * 2^j + 1`` from the first whose step is at most
    half the smallest gap between knots (a step holds at most one kink), ``count`` of them. A knot
    at ``t0 + L a / (3 * 2^r)`` then sits at the same fraction ``frac(a / (3 * 2^r))`` of its step
    for every ``j >= r``, so the error's constant does not wobble from one step count to the next
    (the named problems' knots are such; drawn knots wobble, which KINK_BAND allows for)."""
    L = problem.t_span[1] - problem.t_span[0]
    gap = float(np.min(np.diff(problem.control.domain_breaks())))
    j = 1
    while L / (3 * 2 ** j + 1) > gap / 2:
        j += 1
    return [3 * 2 ** (j + i) + 1 for i in range(count)]


def jump_steps(problem: CDEProblem, count: int = len(CONV_STEPS)) -> list[int]:
    """Step counts for a sweep with stops on the knots: :data:`CONV_STEPS`, or powers of two from
    the first whose step is at most the median gap between knots when that is finer (a step longer
    than most pieces is cut by the knots anyway: the mesh would not shrink with it)."""
    L = problem.t_span[1] - problem.t_span[0]
    gap = float(np.median(np.diff(problem.control.domain_breaks())))
    n = CONV_STEPS[0]
    while L / n > gap:
        n *= 2
    return [n * 2 ** j for j in range(count)]


def cde_convergence(problem: CDEProblem, method: str, *, backend: str = "reference", knots: str = "jump",
                    steps: Sequence[int] | None = None) -> Record:
    """Fixed-step convergence of ``method`` on a closed-form CDE: with ``knots="jump"`` (steps end
    on the knots) the method's order p (``convergence.judge_slope``'s rule over ``steps``, default
    :data:`CONV_STEPS`); with ``knots="none"`` ``min(p, k + 1)`` for a control in C^k (module doc),
    fitted over the whole sweep of :func:`kink_steps`. The error is measured at ``t1`` against
    the closed form."""
    from .convergence import approaching, floor_for, judge_slope

    if steps is None:
        steps = jump_steps(problem) if knots != "none" else kink_steps(problem)
    info = _method_info(backend, method)
    label = f"{method}[knots={knots}]"
    if problem.exact_kind is None:
        return _rec("cde_convergence", label, problem.name, None, None, "skip", backend=backend,
                    message="no closed form for this CDE (a linear field on a piecewise-linear or commuting one is"
                            " needed)")
    p = int(info.order)
    k = problem.control.continuity
    expected = float(p if knots != "none" else min(p, k + 1))
    exact = problem.exact([problem.t_span[1]])[0]
    L = problem.t_span[1] - problem.t_span[0]
    hs, errs, statuses, nfev = [], [], [], []
    zscale = max(1.0, float(np.max(np.abs(exact))))  # errors relative to the solution's scale
    for n in steps:
        sol = solve_cde(problem, method, backend=backend, n_steps=int(n), knots=knots)
        statuses.append(str(sol.status.value if hasattr(sol.status, "value") else sol.status))
        ok = getattr(sol.status, "ok", True)
        errs.append(float(np.max(np.abs(_final(sol) - exact))) / zscale if ok else math.inf)
        hs.append(L / n)
        nfev.append(int(getattr(sol.stats, "nfev", -1)))
    h, e = np.array(hs), np.array(errs)
    # round-off grows with the steps: max(1e3, 20 n) eps |z| (convergence.floor_for's rule)
    floors = np.array([floor_for(np.abs(exact), "float64", int(n)) for n in steps]) / zscale
    floor = float(floors[-1])
    details: dict[str, Any] = {}
    if knots == "none":
        usable = np.isfinite(e) & (e < 0.1)
        slope, used = _fit(h[usable], e[usable], floor, whole=True)
        used = [int(np.flatnonzero(usable)[i]) for i in used]
        verdict, message = _judge(slope, expected, KINK_BAND, "error")
    else:
        slope, verdict, message = judge_slope(h, e, floors, expected, band=0.3, window=3,
                                              details=details)
        used = []
        window_local = [v for v in details.get("window", {}).get("leading_slopes", []) if v is not None]
        min_gap = float(np.min(np.diff(problem.control.domain_breaks())))
        finest = details.get("window", {}).get("h_min")
        if verdict == "fail" and finest is not None and finest > min_gap:
            # a piece shorter than a step is solved in one step of its own length: its error does not
            # shrink with h until h < that piece, so a sweep above the smallest gap is pre-asymptotic
            verdict, message = "skip", (f"inconclusive: the finest step of the window ({finest:.3g}) is not below the"
                                        f" smallest gap between knots ({min_gap:.3g}): pre-asymptotic ({message})")
        if verdict == "skip" and slope is not None and slope < expected - 1 and window_local and \
                max(window_local) < expected - 1 and not approaching(window_local, expected):
            # local slopes that alternate (a kink at alternating fractions of its step) are no
            # pre-asymptotic drift when the window's slope, and every local slope in it, is a whole
            # order short
            verdict, message = "fail", (f"order deficit of more than one: slope {slope:.2f} over the finest window,"
                                        f" expected {expected:g} ({message})")
    if knots == "none" and verdict == "skip" and slope is not None and slope > expected:
        message += (f" (the kinks should cost order: C{k} control; were the knots on the step grid?)")
    return _rec("cde_convergence", label, problem.name, slope, expected, verdict, backend=backend, message=message,
                n_steps=list(map(int, steps)), h=hs, errors=errs, statuses=statuses, nfev=nfev, fit_points=used,
                knots=knots, method_order=p, continuity=k, floor=floor, **details)


# ----------------------------------------------------------------------------- reparametrisation
def default_warp(problem: CDEProblem) -> Warp:
    t0, t1 = problem.t_span
    return cdep.exponential_warp(t0, t1, 1.5, s_span=(0.0, 2.0 * (t1 - t0)))


def cde_reparametrisation(problem: CDEProblem, method: str, *, backend: str = "reference", warp: Warp | None = None,
                          tols: Sequence[float] = REPARAM_TOLS, retime: bool | None = None) -> Record:
    """``z(T)`` is unchanged by a monotone change of time ``s = phi(t)``: the CDE solved in ``s``
    (``Y = X o psi``; with ``retime`` the data re-timed at ``phi(t_k)`` and interpolated again,
    where the interpolation keeps the path's image: linear) must end where the original does, to
    solver tolerance: at every rtol of the sweep within ``2 x 100 rtol |z|`` (each adaptive solve
    may be 100 rtol off, as gradient_accuracy allows, and the two errors add; a difference that
    does not scale with the tolerance crosses the bound as the sweep tightens). ``measured`` is
    the worst ratio to that bound (expected <= 1); the fitted exponent of the difference against
    rtol and each solve's error against the closed form (when there is one) are in the details.
    ``retime`` defaults to False on the reference (any interpolation, the warped control), True
    elsewhere (libraries interpolate the data they are given)."""
    info = _method_info(backend, method)
    if not info.adaptive:
        return _rec("cde_reparametrisation", method, problem.name, None, None, "skip", backend=backend,
                    message="fixed-step method: the tolerance sweep needs an adaptive one")
    if tols is REPARAM_TOLS and info.order is not None and info.order <= 3:
        # a low order reaches 1e-10 only in ~1e4-1e5 steps: sweep where it stays within max_steps
        tols = REPARAM_TOLS_LOW
    warp = warp or default_warp(problem)
    if retime is None:
        retime = not backend.startswith("reference")
    if retime:
        ctrl = problem.control
        if ctrl.kind != "linear":
            return _rec("cde_reparametrisation", method, problem.name, None, None, "skip", backend=backend,
                        message=f"re-timing {ctrl.kind} data changes the path's image (only linear interpolation keeps"
                                " it); the warped control needs the reference")
        new = cdep.make_control(np.asarray(warp.phi(ctrl.times), dtype=np.float64), ctrl.values, "linear")
        other = problem.with_control(new, name=f"{problem.name}@retimed")
    else:
        other = problem.warped(warp)
    exact = problem.exact([problem.t_span[1]])
    diffs, errs_t, errs_s, statuses = [], [], [], []
    zs = 1.0
    for tol in tols:
        a = solve_cde(problem, method, backend=backend, rtol=tol, atol=tol / 100)
        b = solve_cde(other, method, backend=backend, rtol=tol, atol=tol / 100)
        statuses.append([str(a.status.value), str(b.status.value)])
        if not (a.status.ok and b.status.ok):
            diffs.append(math.inf)
            continue
        za, zb = _final(a), _final(b)
        zs = max(1.0, float(np.max(np.abs(za))))
        diffs.append(float(np.max(np.abs(za - zb))) / zs)
        if exact is not None:
            errs_t.append(float(np.max(np.abs(za - exact[0]))) / zs)
            errs_s.append(float(np.max(np.abs(zb - exact[0]))) / zs)
    d = np.array(diffs)
    finite = np.isfinite(d) & (d > 1e3 * EPS)
    expo = loglog_slope(np.array(tols)[finite], d[finite]) if finite.sum() >= 2 else None
    # at every tolerance the two ends agree to 2 x 100 rtol (relative; plus round-off): each of the
    # two adaptive solves may be 100 rtol off (ACCURACY_FACTOR, measured), and their errors add; a
    # difference that does not scale with the tolerance crosses it as the sweep tightens
    bounds = np.array([2 * ACCURACY_FACTOR * tol + 1e3 * EPS for tol in tols])
    ratio = d / bounds
    msgs = []
    if not np.all(np.isfinite(d)):
        msgs.append(f"a solve failed: statuses {statuses}")
    over = [i for i in range(len(tols)) if np.isfinite(d[i]) and d[i] > bounds[i]]
    if over:
        msgs.append("|z_s(S) - z_t(T)| / |z| above 200 rtol: " + ", ".join(
            f"{d[i]:.2e} at rtol {tols[i]:g}" for i in over) + f" (fitted exponent against rtol: "
            + ("n/a" if expo is None else f"{expo:.2f}") + ")")
    verdict = "fail" if msgs else "pass"
    worst = float(np.max(ratio[np.isfinite(ratio)])) if np.any(np.isfinite(ratio)) else None
    return _rec("cde_reparametrisation", method, problem.name, worst, 1.0, verdict, backend=backend,
                message="; ".join(msgs), rtols=list(tols), differences=diffs, exponent=expo, warp=warp.name,
                retimed=bool(retime), errors_t=errs_t, errors_s=errs_s, statuses=statuses)


# ----------------------------------------------------------------------------- gradients
def default_loss(problem: CDEProblem, seed: int = 0) -> Loss:
    """``L = w . z(T) + 1/4 |z(T)|^2`` with seeded weights."""
    rng = np.random.default_rng(seed)
    return Loss(t_eval=(problem.t_span[1],), weights=rng.normal(0, 1, (1, problem.hidden)), quadratic=0.5)


def closed_form_loss(problem: CDEProblem, loss: Loss, *, values: Any = None, params: dict | None = None) -> Any:
    """The loss through the closed form, z0 held at ``problem.y0`` (complex inputs allowed)."""
    z = problem.exact([loss.t_eval[-1]], values=values, params=params, z0=problem.y0)[0]
    w = np.asarray(loss.weights)[-1]
    q = np.asarray(loss.quadratic, dtype=np.float64)
    return w @ z + 0.5 * np.sum(q * z * z)


def gradient_oracle(problem: CDEProblem, loss: Loss) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """dL/d(values) and dL/d(field params) with z0 fixed by complex steps through the closed form
    (for a commuting field's closed form, the values only: it holds only while the A_j commute),
    and for each group the largest gap to central differences at steps h and 2h (the truncation
    error of the finite difference, bounded by the second step: a wrong closed form shows here)."""
    out, err = {}, {}
    groups = {"values": problem.control.values, **{k: np.asarray(v) for k, v in problem.field.params.items()}}
    if problem.exact_kind == "commuting":
        # a perturbed A_j no longer commutes (nor does a bias keep the form): the data only
        groups = {"values": groups["values"]}
    for key, base in groups.items():
        g = np.zeros(base.shape)
        gap = 0.0
        for idx in np.ndindex(base.shape):
            def at(delta: complex, key: str = key, idx: tuple = idx, base: np.ndarray = base) -> Any:
                arr = base.astype(complex)
                arr[idx] += delta
                if key == "values":
                    return closed_form_loss(problem, loss, values=arr)
                return closed_form_loss(problem, loss, params={key: arr})
            g[idx] = float(np.imag(at(1j * CS_STEP)) / CS_STEP)
            h = FD_STEP * max(1.0, abs(float(base[idx])))
            fd1 = float(np.real(at(h) - at(-h))) / (2 * h)
            fd2 = float(np.real(at(2 * h) - at(-2 * h))) / (4 * h)
            gap = max(gap, abs(fd1 - g[idx]) - abs(fd1 - fd2) * 4 / 3)
        out[key] = g
        err[key] = max(gap, 0.0)
    return out, err


def compute_cde_gradient(problem: CDEProblem, method: str, mode: str, loss: Loss, *, backend: str, rtol: float) -> Any:
    """The gradient under test: the backend's CDE gradient mode, or (``mode`` ``ode:<name>``) the
    reference's ODE gradient mode on :meth:`CDEProblem.to_problem`, stopping at the knots
    (``value_and_grad(tstops=knots)``)."""
    if mode.startswith("ode:"):
        from ..gradients import value_and_grad

        return value_and_grad(problem.to_problem(), loss, mode=mode[4:], method=method, library="torch",
                              rtol=rtol, atol=rtol / 100, memory_accounting=False, tstops=problem.knots)
    return backends.get(backend).cde_gradient(problem, method, mode, loss, rtol=rtol, atol=rtol / 100)


def cde_gradient_accuracy(problem: CDEProblem, mode: str, *, backend: str = "reference", method: str = "dopri5",
                          rtol: float = GRAD_RTOL, loss: Loss | None = None) -> Record:
    """dL/dtheta (the field's parameters) and dL/d(data values), z0 fixed, by ``mode`` against the
    complex-step oracle: relative error (per group, to the group's largest entry) at most
    ``100 rtol`` plus the oracle's own error (as ``properties/gradients.gradient_accuracy``)."""
    label = f"{method}:{mode}"
    if problem.exact_kind is None:
        return _rec("cde_gradient_accuracy", label, problem.name, None, None, "skip", backend=backend,
                    message="no closed form to differentiate (a linear field is needed)")
    loss = loss or default_loss(problem)
    oracle, oerr = gradient_oracle(problem, loss)
    res = compute_cde_gradient(problem, method, mode, loss, backend=backend, rtol=rtol)
    status = str(getattr(res.status, "value", res.status))
    if not getattr(res.status, "ok", True):
        return _rec("cde_gradient_accuracy", label, problem.name, None, None, "error", backend=backend,
                    message=f"gradient failed: {status}", status=status)
    rel, gaps = {}, {}
    for key, g in oracle.items():
        got = res.grad_params.get(key)
        if got is None:
            rel[key] = math.inf
            continue
        s = max(float(np.max(np.abs(g))), 1e-300)
        rel[key] = float(np.max(np.abs(np.asarray(got) - g))) / s
        gaps[key] = oerr[key] / s
    bound = ACCURACY_FACTOR * rtol
    worst = max(rel.values())
    bad = [f"{k}: {v:.3g} > {bound + gaps.get(k, 0):.3g}" for k, v in rel.items() if not v <= bound + gaps.get(k, 0)]
    verdict = "fail" if bad else "pass"
    msg = ("relative gradient error above 100 rtol (+ oracle error): " + "; ".join(bad)) if bad else ""
    return _rec("cde_gradient_accuracy", label, problem.name, worst, bound, verdict, backend=backend, message=msg,
                relative_errors=rel, oracle_errors=gaps, rtol=rtol, mode=mode, status=status)


PROPERTIES = ("cde_interpolation_order", "cde_knot_conditions", "cde_convergence", "cde_reparametrisation",
              "cde_gradient_accuracy")

__all__ = ["PROPERTIES", "cde_convergence", "cde_gradient_accuracy", "cde_interpolation_order", "cde_knot_conditions",
           "cde_reparametrisation", "closed_form_loss", "compute_cde_gradient", "default_loss", "default_warp",
           "gradient_oracle", "knot_jumps", "solve_cde"]
