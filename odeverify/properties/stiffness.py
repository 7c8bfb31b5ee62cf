"""Stiffness: how stiff a field is along a trajectory, and how methods cope with it.

- :func:`stiffness_estimate`: the spectral radius of df/dy and the stiffness ratio
  max|Re lambda| / min|Re lambda| (over eigenvalues with Re lambda < 0) at each state of a
  trajectory; tells a user that their (neural) field has become stiff.
- :func:`stiffness_handling`: work (steps, nfev) against the stiffness ratio of
  :func:`~odeverify.problems.stiff.stiff_linear_problem`. An explicit method's stability
  region is bounded, so once the fast mode is resolved its step is capped at ~C/|lambda_max|
  and its work grows linearly with the ratio; an A-stable (or A(alpha)-stable on the real
  axis) method's work stays bounded (Hairer & Wanner, *Solving ODEs II*, Sect. IV.1-IV.3).
- :func:`stiff_precision`: an implicit method on a Bari problem (HIRES, ROBER) at a tight
  tolerance (:func:`tight_rtol`): fails when the solve fails or reaches fewer significant
  correct digits than :func:`scd_floor` derives from the tolerance and the order.
- :func:`stiff_order`: the order of fixed-step solves on the Prothero-Robinson problem
  y' = lambda (y - g(t)) + g'(t) with lambda = -1e6 (Prothero & Robinson, Math. Comp. 28
  (1974) 145-162), where implicit Runge-Kutta methods show order reduction to their stage
  order (Hairer & Wanner II, Sect. IV.15): reported, not failed.

The warning for an explicit method on a problem tagged ``stiff`` lives in
:meth:`odeverify.backends.Backend.solve` (:func:`~odeverify.backends.base.warn_explicit_on_stiff`),
so every backend gives it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..backends.base import UnsupportedOption, fd_jacobian, is_implicit, jacobian_matrix, stiffness_ratio
from ..problems import Problem
from ..records import Record
from ..tableaus import TABLEAUS, theory
from ..tableaus.theory import stage_order
from ._common import backend_for, backend_label, method_info, run
from .convergence import judge_slope, order_sweep

#: eigenvalues are computed up to this dimension; above it, power iteration gives the spectral radius
EIG_MAX_N = 200
#: power-iteration steps (each one Jacobian-vector product by finite differences)
POWER_ITERATIONS = 60
#: a trajectory is called stiff when both the stiffness ratio and rho * |t1 - t0| reach this
#: (an explicit method then needs at least ~this many steps where an implicit one needs few)
STIFF_THRESHOLD = 1e3


# ---------------------------------------------------------------------------- estimate
def power_spectral_radius(f: Callable[[float, np.ndarray], np.ndarray], t: float, y: np.ndarray,
                          iterations: int = POWER_ITERATIONS, seed: int = 0) -> float:
    """|lambda_max| of df/dy by power iteration on finite-difference Jacobian-vector products
    (one evaluation each): ||J^k v||^(1/k) growth, reported as the last Rayleigh-free norm ratio.
    A lower bound that converges for a dominant eigenvalue (complex pairs make the ratio
    oscillate; the maximum over the last iterations is kept)."""
    rng = np.random.default_rng(seed)
    f0 = np.asarray(f(t, y), dtype=np.float64)
    v = rng.standard_normal(y.size)
    v /= np.linalg.norm(v)
    scale = math.sqrt(np.finfo(np.float64).eps) * max(1.0, float(np.linalg.norm(y)))
    ratios = []
    for _ in range(iterations):
        w = (np.asarray(f(t, y + scale * v), dtype=np.float64) - f0) / scale
        norm = float(np.linalg.norm(w))
        if norm == 0 or not math.isfinite(norm):
            return 0.0 if norm == 0 else math.inf
        ratios.append(norm)
        v = w / norm
    return max(ratios[-max(3, iterations // 10):])


def stiff_trajectory(problem: Problem, count: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``count`` states along the solution: the closed form, else a scipy Radau solve (rtol
    1e-8, the analytic Jacobian when there is one; an explicit solver would crawl on a stiff
    problem). Times are log-spaced when the span covers more than three decades from t0 = 0
    (ROBER to t = 1e11), else equally spaced."""
    t0, t1 = problem.t_span
    if t0 == 0 and t1 > 1e3:
        ts = np.concatenate([[0.0], np.logspace(-3, math.log10(t1), count - 1)[:-1], [t1]])
    else:
        ts = np.linspace(t0, t1, count)
    if problem.exact is not None:
        return np.asarray(problem.exact(ts), dtype=np.float64), ts
    sol = run(problem, "Radau", backend="scipy", t_eval=ts, rtol=1e-8, atol=1e-12,
              jac=True if getattr(problem, "jac", None) is not None else None)
    if not sol.success:
        raise RuntimeError(f"the trajectory of {problem.name!r} could not be computed: {sol.message}")
    return np.asarray(sol.ys, dtype=np.float64), ts


def stiffness_estimate(problem: Problem | Callable[[float, np.ndarray], np.ndarray], ys: Any = None,
                       ts: Any = None, *, count: int = 16, jac: Callable[[float, np.ndarray], np.ndarray] | None = None,
                       eig_max_n: int = EIG_MAX_N, threshold: float = STIFF_THRESHOLD) -> Record:
    """Spectral radius and stiffness ratio of df/dy at each state ``ys[i]`` (times ``ts[i]``).

    ``problem``: a :class:`Problem` (its analytic ``jac`` is used when present, else finite
    differences; without ``ys`` the trajectory is ``count`` points of :func:`stiff_trajectory`) or a NumPy
    field ``f(t, y)`` (then ``ys`` and ``ts`` are required; ``jac(t, y)`` optional).

    Up to ``eig_max_n`` components the eigenvalues are computed (and kept in details);
    above it only the spectral radius, by power iteration, and the stiffness ratio is None.
    ``measured`` is the largest stiffness ratio over the trajectory (or the largest
    rho * |T| when ratios are unknown). The verdict is ``pass`` (a measurement); the message
    says whether the trajectory is stiff: stiffness ratio and rho * |T| both >= ``threshold``.
    """
    if isinstance(problem, Problem):
        name = problem.name
        if ys is None:
            ys, ts = stiff_trajectory(problem, count)

        def jac_at(t: float, y: np.ndarray) -> np.ndarray:
            return jacobian_matrix(problem, t, y)

        from .. import _xp

        f_np = problem.vector_field(_xp.get_namespace("numpy"), np.float64)

        def field(t: float, y: np.ndarray) -> np.ndarray:
            return np.asarray(f_np(np.float64(t), y), dtype=np.float64)

        has_jac = getattr(problem, "jac", None) is not None
    elif callable(problem):
        name = getattr(problem, "__name__", "field")
        if ys is None or ts is None:
            raise ValueError("stiffness_estimate(f, ys, ts): a plain field needs the trajectory ys and its times ts")
        field = problem
        has_jac = jac is not None

        def jac_at(t: float, y: np.ndarray) -> np.ndarray:
            return np.asarray(jac(t, y), dtype=np.float64) if jac is not None else fd_jacobian(problem, t, y)
    else:
        raise TypeError(f"problem={problem!r}, but it must be a Problem or a callable f(t, y)")
    ys = np.asarray(ys, dtype=np.float64)
    ts = np.asarray(ts, dtype=np.float64)
    if ys.ndim != 2 or ts.shape != (ys.shape[0],):
        raise ValueError(f"ys has shape {ys.shape} and ts {ts.shape}; expected (T, n) and (T,)")
    span = float(ts.max() - ts.min()) if ts.size > 1 else 0.0
    n = ys.shape[1]
    rows: list[dict[str, Any]] = []
    with np.errstate(all="ignore"):
        for t, y in zip(ts, ys):
            if n <= eig_max_n:
                eig = np.linalg.eigvals(jac_at(float(t), y))
                rows.append({"t": float(t), "spectral_radius": float(np.max(np.abs(eig))),
                             "stiffness_ratio": stiffness_ratio(eig),
                             "max_neg_real": float(-np.min(np.real(eig), initial=0.0)),
                             "eigenvalues": [[float(v.real), float(v.imag)] for v in eig]})
            else:
                rows.append({"t": float(t), "spectral_radius": power_spectral_radius(field, float(t), y),
                             "stiffness_ratio": None})
    rho = max(r["spectral_radius"] for r in rows)
    ratios = [r["stiffness_ratio"] for r in rows if r["stiffness_ratio"] is not None]
    ratio = max(ratios) if ratios else None
    stiff = (ratio is None or ratio >= threshold) and rho * span >= threshold
    details = {"points": rows, "max_spectral_radius": rho, "max_stiffness_ratio": ratio, "rho_T": rho * span,
               "stiff": bool(stiff), "threshold": threshold,
               "jacobian": "analytic" if has_jac else ("finite differences" if n <= eig_max_n else
                                                       "power iteration on finite-difference products")}
    what = (f"stiffness ratio up to {ratio:.3g}, " if ratio is not None else "") + f"rho*|T| = {rho * span:.3g}"
    msg = (f"stiff: {what}; an explicit method needs ~rho*|T| steps" if stiff else f"not stiff: {what}")
    return Record(property="stiffness_estimate", method="-", problem=name,
                  measured=ratio if ratio is not None else rho * span, expected=None, verdict="pass",
                  message=msg, details=details)


# ---------------------------------------------------------------------------- handling
#: default stiffness ratios of the handling sweep
RATIOS = (1e1, 1e2, 1e3, 1e4, 1e5, 1e6)
#: work above this multiple of the least stiff problem's work counts as exploded
EXPLODE_FACTOR = 10.0
#: default step limit of the handling sweep: LIMIT_FACTOR x the baseline's steps, at least
#: MIN_LIMIT: twice the explosion threshold is enough to see an explosion, and an explicit
#: method with ~1 ms of overhead per step (torchdiffeq) would otherwise spend minutes per
#: ratio proving it
LIMIT_FACTOR = 20
MIN_LIMIT = 5000


def _stability_class(method: str, *, backend: str, library: str) -> tuple[str, str]:
    """('bounded' or 'grows', why) for the work on a stiff linear problem with real eigenvalues."""
    info = method_info(method, backend=backend, library=library)
    is_a_stable = getattr(theory, "is_a_stable", None)
    if info.tableau is not None and is_a_stable is not None and info.tableau in TABLEAUS.names():
        stable = bool(is_a_stable(TABLEAUS.get(info.tableau)))
        return ("bounded" if stable else "grows",
                f"tableau {info.tableau!r} is {'' if stable else 'not '}A-stable (theory.is_a_stable)")
    if is_implicit(info):
        return "bounded", (f"{method} is implicit (declared by the backend): stable on the negative real axis"
                           " (A-stable or A(alpha)-stable, like BDF up to order 5)")
    return "grows", f"{method} is explicit (declared by the backend): its stability region is bounded"


def stiffness_handling(method: str, *, backend: str = "reference", library: str = "numpy",
                       ratios: Sequence[float] = RATIOS, rtol: float = 1e-4, atol: float = 1e-7,
                       explode_factor: float = EXPLODE_FACTOR, max_steps: int | None = None,
                       problem_factory: Callable[[float], Problem] | None = None) -> Record:
    """Steps and nfev against the stiffness ratio; the ratio where the work explodes.

    For each ratio (increasing) the method solves ``problem_factory(ratio)`` (default
    :func:`~odeverify.problems.stiff.stiff_linear_problem`: eigenvalues -1 ... -ratio on
    [0, 10]) at ``rtol``, ``atol`` (loose by default: the question is stability, not accuracy, and a
    low-order method at rtol 1e-6 takes ~1e4 steps before any stiffness). The work at the first
    ratio is the non-stiff baseline;
    the explosion ratio is the first one whose nfev exceeds ``explode_factor`` times it, or
    whose solve stops at ``max_steps`` (default: LIMIT_FACTOR x the baseline's steps, at least
    MIN_LIMIT, so an explicit method stops early; the least stiff solve itself runs under
    MIN_LIMIT, or ``max_steps``). After the explosion one more ratio is run
    (for the slope) and larger ones are not: they only cost more. Also fitted: the
    slope of log(steps) against log(ratio) over the ratios after the baseline.

    Verdict: ``pass`` when the behaviour matches the method's stability class (explicit or
    not A-stable: the work explodes within the sweep; A-stable or implicit: it never
    does), ``fail`` otherwise; ``measured`` is the explosion ratio (None when none).
    """
    if problem_factory is None:
        from ..problems.stiff import stiff_linear_problem as problem_factory
    rs = sorted(float(r) for r in ratios)
    if len(rs) < 2 or rs[0] < 1:
        raise ValueError(f"ratios={tuple(ratios)!r}, but they must be at least two numbers >= 1")
    expected, why = _stability_class(method, backend=backend, library=library)
    points: list[dict[str, Any]] = []
    base_nfev = None
    limit = max_steps
    exploded_at = None
    import warnings

    from ..backends.base import StiffnessWarning

    for r in rs:
        problem = problem_factory(r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StiffnessWarning)  # the sweep is about exactly that
            try:
                # the least stiff solve runs under MIN_LIMIT too: a jitted backend whose step limit
                # is static (diffrax) then compiles once for the whole sweep when the limit stays there
                sol = run(problem, method, backend=backend, library=library, rtol=rtol, atol=atol,
                          max_steps=MIN_LIMIT if limit is None else limit)
                if limit is None and max_steps is None and sol.status.code == "max_steps" and expected == "bounded":
                    # a stable method that needs more on the least stiff problem: the backend's own limit
                    sol = run(problem, method, backend=backend, library=library, rtol=rtol, atol=atol)
            except UnsupportedOption as exc:
                return Record(property="stiffness_handling", method=method, problem="stiff_linear",
                              backend=backend_label(backend, library), library=library, measured=None,
                              expected=None, verdict="skip", message=f"not applicable: {exc}")
        st = sol.stats
        points.append({"ratio": r, "status": sol.status.code, "nfev": st.nfev, "steps": st.steps,
                       "accepted": st.accepted, "rejected": st.rejected, "njev": st.njev, "nlu": st.nlu,
                       "wall_s": float(sol.timing.get("wall_s", math.nan))})
        if base_nfev is None:
            if not sol.success and expected == "grows" and sol.status.code == "max_steps":
                exploded_at = r  # unstable already on the least stiff problem (diffrax's ReversibleHeun)
                break
            if not sol.success:
                return Record(property="stiffness_handling", method=method, problem="stiff_linear",
                              backend=backend_label(backend, library), library=library, measured=None,
                              expected=None, verdict="error", status=sol.status.code,
                              message=f"the least stiff problem (ratio {r:g}) failed: {sol.message}",
                              details={"points": points})
            base_nfev = st.nfev
            if limit is None:
                limit = max(MIN_LIMIT, LIMIT_FACTOR * max(1, st.steps))
            continue
        if exploded_at is None and (not sol.success or st.nfev > explode_factor * base_nfev):
            exploded_at = r
        if not sol.success or (exploded_at is not None and r > exploded_at):
            # larger ratios only cost more: the explosion and one ratio beyond it give the slope
            break
    fit = [(p["ratio"], p["steps"]) for p in points[1:] if p["status"] == "success" and p["steps"] > 0]
    slope = (float(np.polyfit(np.log([a for a, _ in fit]), np.log([b for _, b in fit]), 1)[0])
             if len(fit) >= 2 else None)
    details = {"points": points, "stability_class": expected, "why": why, "explode_factor": explode_factor,
               "max_steps": limit, "rtol": rtol, "atol": atol, "steps_slope": slope}
    exploded = exploded_at is not None
    ok = exploded == (expected == "grows")
    if expected == "grows" and exploded_at == rs[0]:
        msg = (f"the least stiff problem (ratio {rs[0]:g}) already reached the step limit"
               f" ({MIN_LIMIT if max_steps is None else max_steps} steps): unstable at every ratio, as {why}")
    elif expected == "grows":
        msg = (f"work exploded at ratio {exploded_at:g} (> {explode_factor:g}x the ratio-{rs[0]:g} work), as an"
               f" explicit method's must ({why})" if exploded else
               f"work never exceeded {explode_factor:g}x its non-stiff value up to ratio {rs[-1]:g}, but {why}")
    else:
        msg = (f"work stayed within {explode_factor:g}x its non-stiff value up to ratio {rs[-1]:g} ({why})"
               if not exploded else f"work exploded at ratio {exploded_at:g}, but {why}")
    return Record(property="stiffness_handling", method=method, problem="stiff_linear",
                  backend=backend_label(backend, library), library=library, measured=exploded_at,
                  expected=None, verdict="pass" if ok else "fail", message=msg, details=details)


# ---------------------------------------------------------------------------- tight tolerance
#: the Bari problems of the tight-tolerance check (full run; the quick run takes the first)
TIGHT_PROBLEMS = ("hires", "rober")
#: the step limit of a tight-tolerance solve (work_precision's)
TIGHT_MAX_STEPS = 50_000


def tight_rtol(order: int) -> float:
    """The tight tolerance of an order-p method: max(1e-10, 10^-(2p + 2)), i.e. 1e-10 for p >= 4,
    1e-8 for p = 3, 1e-6 for p = 2 and 1e-4 for p = 1 (an order-p method's steps grow like
    rtol^(-1/(p+1)): a first-order method at 1e-10 would need ~1e5 times the steps of one at 1e-4)."""
    return max(1e-10, 10.0 ** -(2 * int(order) + 2))


def scd_floor(rtol: float, order: int) -> float:
    """The fewest significant correct digits an order-p solve at ``rtol`` may reach:
    p/(p+1) * (-log10 rtol) - 1. Error-per-step control makes the global error ~ rtol^(p/(p+1))
    (Hairer, Norsett & Wanner I, Sect. II.4; the exponent tolerance_proportionality checks),
    and one digit is left for the error constant and the accumulation over the span."""
    p = int(order)
    return p / (p + 1) * -math.log10(rtol) - 1.0


def stiff_precision(problem: Problem, method: str, *, backend: str = "reference", library: str = "numpy",
                    rtol: float | None = None, max_steps: int = TIGHT_MAX_STEPS, **options: Any) -> Record:
    """An implicit method on a Bari problem at a tight tolerance (:func:`tight_rtol` of its
    order unless ``rtol`` is given; atol by :func:`~odeverify.properties.work_precision.default_atol`),
    through :func:`~odeverify.properties.work_precision.work_precision`: ``fail`` when the solve
    fails (its status: ``max_steps`` at ``max_steps`` steps, a Newton failure ...) or reaches
    fewer significant correct digits than :func:`scd_floor`; ``measured`` is the scd,
    ``expected`` the floor. The analytic Jacobian is passed where the backend takes one.
    Explicit methods are ``skip`` (a stiff problem at a tight tolerance takes them 10^6+ steps)."""
    from .work_precision import work_precision

    info = method_info(method, backend=backend, library=library)
    common = dict(property="stiff_precision", method=method, problem=problem.name,
                  backend=backend_label(backend, library), library=library)
    if not is_implicit(info):
        return Record(measured=None, expected=None, verdict="skip",
                      message=f"not applicable: {method} is explicit", **common)
    if not info.adaptive:
        return Record(measured=None, expected=None, verdict="skip",
                      message=f"not applicable: {method} has no adaptive mode", **common)
    tol = tight_rtol(info.order) if rtol is None else float(rtol)
    floor = scd_floor(tol, info.order)
    opts = dict(options)
    caps = backend_for(backend, library).capabilities()
    if "jac" not in opts and getattr(problem, "jac", None) is not None and caps.options.get("jac", True) is True:
        opts["jac"] = True
    wp = work_precision(problem, method, backend=backend, library=library, tolerances=(tol,), repeats=1,
                        max_steps=max_steps, **opts)
    pt = wp.details["points"][0]
    details = {"point": pt, "rtol": tol, "atol": pt["atol"], "floor": floor, "order": info.order,
               "max_steps": max_steps, "options": wp.details["options"], "atol_rule": wp.details["atol_rule"]}
    work = f"nfev {pt['nfev']}, {pt['accepted']} accepted / {pt['rejected']} rejected steps"
    if pt["status"] != "success":
        return Record(measured=None, expected=floor, verdict="fail", status=pt["status"], details=details,
                      message=f"rtol={tol:g}: the solve ended with {pt['status']} ({work}): {pt['message'][:300]}",
                      **common)
    scd_v = pt["scd"]
    ok = scd_v is not None and math.isfinite(scd_v) and scd_v >= floor
    msg = (f"scd {scd_v:.2f} at rtol={tol:g} ({work}); floor {floor:.2f} = p/(p+1) * {-math.log10(tol):g} - 1"
           f" with p = {info.order}")
    return Record(measured=scd_v, expected=floor, verdict="pass" if ok else "fail",
                  message=msg if ok else f"too few digits: {msg}", details=details, **common)


# ---------------------------------------------------------------------------- order
def prothero_robinson(lam: float = -1e6, t_span: tuple[float, float] = (0.0, 1.0)) -> Problem:
    """y' = lam (y - g(t)) + g'(t), g(t) = sin(t + pi/4), y(t0) = g(t0): exact solution g.

    Prothero & Robinson (1974). With |h lam| >> 1 an implicit Runge-Kutta method's global
    error behaves like h^q / |lam|, q the stage order, instead of h^p (Hairer & Wanner II,
    Sect. IV.15; see :func:`_stiff_expectation`)."""
    if not (math.isfinite(lam) and lam < 0):
        raise ValueError(f"lam={lam!r}, but it must be finite and < 0")
    phase = math.pi / 4

    def rhs(xp: Any, t: Any, y: Any, p: Any) -> Any:
        return p["lam"] * (y - xp.sin(t + phase)) + xp.cos(t + phase)

    def exact(t: np.ndarray) -> np.ndarray:
        return np.sin(np.asarray(t, dtype=np.float64) + phase)[:, None]

    def jac(xp: Any, t: Any, y: Any, p: Any) -> Any:
        return xp.zeros(tuple(y.shape) + (1,), dtype=y.dtype) + p["lam"]

    y0 = (math.sin(t_span[0] + phase),)
    return Problem(name=f"prothero_robinson_{lam:g}", rhs=rhs, y0=y0, t_span=t_span, params={"lam": float(lam)},
                   exact=exact, jac=jac, tags={"stiff", "linear", "time_dependent", "has_exact", "scalar"},
                   citation="A. Prothero, A. Robinson, Math. Comp. 28 (1974) 145-162",
                   description="y' = lam (y - sin(t + pi/4)) + cos(t + pi/4)")


def _stiff_expectation(method: str, *, backend: str, library: str) -> tuple[float | None, dict[str, Any]]:
    """Order expected for |h lam| >> 1: min(p, q), q the stage order.

    On Prothero-Robinson the stage errors E solve (I - h lam A) E = e0 1 - d with stage
    defects d = O(h^(q+1)), so for |h lam| >> 1, E ~ -(h lam A)^(-1) d = O(h^q / |lam|): the
    global error drops to order q (times 1/|lam|), whatever the classical order (Hairer &
    Wanner II, Sect. IV.15; Prothero & Robinson 1974). A stiffly accurate method takes its
    last stage; others add h b^T (lam E + g') = O(h^q) as well."""
    info = method_info(method, backend=backend, library=library)
    out: dict[str, Any] = {"classical_order": info.order, "tableau": info.tableau}
    if info.tableau is None or info.tableau not in TABLEAUS.names():
        return None, out
    tab = TABLEAUS.get(info.tableau)
    q = stage_order(tab)
    sa = bool(getattr(tab, "stiffly_accurate", False))
    out.update({"stage_order": q, "stiffly_accurate": sa})
    return float(min(info.order, q)), out


def stiff_order(method: str, *, backend: str = "reference", library: str = "numpy", dtype: str = "float64",
                lam: float = -1e6, n_min: int = 4, n_max: int = 1024, window: int = 3,
                band: float = 0.3) -> Record:
    """Fixed-step order on Prothero-Robinson with ``lam`` (|h lam| >= 1e3 over the whole sweep
    for the defaults): measured slope, classical order, stage order, and the order reduction.

    Expected: min(p, q) for a method of stage order q (see :func:`_stiff_expectation`), when a
    reference tableau gives q; ``pass`` within ``band`` of it (or above
    it, up to the classical order), ``fail`` for a stable slope below it (see
    :func:`~odeverify.properties.convergence.judge_slope`). Without a tableau the slope and
    the reduction are recorded with verdict ``skip``. Explicit methods and backends without
    a fixed-step mode are ``skip`` (not applicable)."""
    info = method_info(method, backend=backend, library=library)
    problem = prothero_robinson(lam)
    common = dict(property="stiff_order", method=method, problem=problem.name,
                  backend=backend_label(backend, library), library=library, dtype=dtype)
    if not is_implicit(info):
        return Record(measured=None, expected=None, verdict="skip", message=f"not applicable: {method} is explicit"
                      " (unstable for |h lam| > its stability interval)", **common)
    if not info.fixed:
        return Record(measured=None, expected=None, verdict="skip",
                      message=f"not applicable: {method} has no fixed-step mode", **common)
    expected, details = _stiff_expectation(method, backend=backend, library=library)
    try:
        ns, errs, floors = order_sweep(problem, method, backend=backend, library=library, dtype=dtype, n_min=n_min,
                                       n_max=n_max)
    except UnsupportedOption as exc:  # e.g. an IMEX method without a split of the field
        return Record(measured=None, expected=expected, verdict="skip", message=f"not applicable: {exc}",
                      details=details, **common)
    span = abs(problem.t_span[1] - problem.t_span[0])
    hs = np.asarray([span / n for n in ns])
    details.update({"n": ns, "h": hs.tolist(), "error": errs, "floors": floors.tolist(), "lam": lam, "band": band,
                    "h_lam_min": float(abs(lam) * hs[-1])})
    target = expected if expected is not None else float(info.order)
    slope, verdict, msg = judge_slope(hs, np.asarray(errs), floors, target, band=band, window=window,
                                      details=details)
    if slope is not None:
        details["order_reduction"] = float(info.order) - slope
        if expected is not None and verdict == "skip" and expected < slope <= info.order + band:
            verdict, msg = "pass", f"slope {slope:.2f} between the stiff bound {expected:g} and order {info.order}"
        if expected is None and verdict != "pass":
            verdict = "skip"
            msg = (f"slope {slope:.2f} against classical order {info.order} (reduction {info.order - slope:.2f});"
                   " no reference tableau, so no stage order to judge it by")
        elif expected is None:
            verdict, msg = "skip", f"slope {slope:.2f} = classical order {info.order}; no stage order known"
    return Record(measured=slope, expected=expected, verdict=verdict, message=msg, details=details, **common)
