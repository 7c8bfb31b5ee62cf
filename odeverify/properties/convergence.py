"""Empirical convergence order of fixed-step solves, swept from coarse to fine steps."""
from __future__ import annotations

import math

import numpy as np

from ..metrics import as_numpy, loglog_slope, roundoff_floor, scaled_error
from ..problems import Problem
from ..records import Record
from ._common import backend_label, reference_final, run, solver_order, spectral_radius_bound

#: default tolerance band around the claimed order
ORDER_BAND = 0.15
#: a solution counts as resolved below this scaled error: growth of the error is a finding
#: there, and only resolved points enter the order fit
RESOLVED = 0.1


def stable_n_min(problem: Problem) -> int:
    """Fewest power-of-two steps with h * rho <= 1 (rho: spectral radius of df/dy along the solution)."""
    span = abs(problem.t_span[1] - problem.t_span[0])
    rho = spectral_radius_bound(problem)
    return 2 ** max(0, math.ceil(math.log2(max(rho * span, 1.0))))


def floor_for(y_scale: np.ndarray, dtype: str, n: int) -> float:
    """Round-off floor of an n-step solve: max(1e3, 20 n) * eps * max(1, |y|).

    Rounding errors accumulate over the steps; keeping the errors that enter a fit above
    this keeps round-off from bending the local slopes (above 1e3 eps |y|).
    """
    return roundoff_floor(y_scale, dtype, factor=max(1e3, 20.0 * n))


def check_times(problem: Problem, n_min: int) -> np.ndarray:
    """Where the error is measured: up to 16 equally spaced grid times common to every n >= n_min
    (the maximum over a trajectory cannot hit a zero of the principal error function the way the
    error at t1 alone can); only t1 when the problem has no closed form."""
    t0, t1 = problem.t_span
    if problem.exact is None:
        return np.asarray([t1])
    m = min(n_min, 16)
    return t0 + (t1 - t0) * np.arange(1, m + 1) / m


def order_sweep(problem: Problem, method: str, *, backend: str = "reference", library: str = "numpy",
                dtype: str = "float64", n_min: int | None = None,
                n_max: int = 4096) -> tuple[list[int], list[float], np.ndarray]:
    """Errors of fixed-step solves with n = n_min, 2 n_min, ... steps.

    The error of a solve is the largest scaled error over :func:`check_times`. The sweep runs
    from coarse to fine and stops one step after the error reaches the round-off floor, or at
    ``n_max``. ``n_min`` defaults to :func:`stable_n_min`. Returns (ns, errors, floors).
    """
    if n_min is None:
        n_min = stable_n_min(problem)
    times = check_times(problem, n_min)
    if problem.exact is not None:
        refs = np.asarray(problem.exact(times))
    else:
        refs = reference_final(problem)[None, :]
    ns: list[int] = []
    errs: list[float] = []
    floors: list[float] = []
    n = n_min
    while n <= n_max:
        sol = run(problem, method, backend=backend, library=library, dtype=dtype, n_steps=n,
                  t_eval=times if times.size > 1 else None)
        ys = as_numpy(sol.ys) if sol.success else None
        if ys is not None and times.size == 1:
            ys = ys[-1:]
        err = max(scaled_error(ys[i], refs[i]) for i in range(len(refs))) if sol.success else math.inf
        ns.append(n)
        errs.append(err)
        floors.append(floor_for(refs, dtype, n))
        if err < floors[-1]:
            break
        n *= 2
    return ns, errs, np.asarray(floors)


def fit_window(hs: np.ndarray, errs: np.ndarray, floor: float | np.ndarray, window: int) -> tuple[int, int] | None:
    """The finest ``window`` consecutive resolved points above the round-off floor (at least 3).

    Usable points have errors below :data:`RESOLVED` and above ``floor`` (a number, or one
    per point). The finest points are the most asymptotic; round-off bounds them from below.
    Returns (start, stop) indices into the sweep, or None when fewer than 3 usable points.
    """
    usable = np.isfinite(errs) & (errs > floor) & (errs < RESOLVED)
    idx = np.flatnonzero(usable)
    if idx.size < 3:
        return None
    # the last contiguous run of usable points
    stop = idx[-1] + 1
    start = stop
    while start > 0 and usable[start - 1]:
        start -= 1
    if stop - start < 3:
        return None
    return max(start, stop - window), stop


#: an error this far above the solution's scale means the numerical solution blew up
BLOWUP = 1e3


def growth_findings(ns: list[int], errs: list[float], floors: np.ndarray, factor: float = 1.0) -> list[str]:
    """Places where the error grew while the step shrank: instability at moderate step sizes.

    Growth counts in the resolved range (errors below :data:`RESOLVED`, above round-off),
    and wherever the solution blows up (error above :data:`BLOWUP`, or non-finite after a
    finite coarser error). Between the two, an unresolved solution (orbit phases wrapping
    around, for example) may move either way without saying anything about the method.
    """
    out = []
    for i in range(len(errs) - 1):
        a, b = errs[i], errs[i + 1]
        resolved = math.isfinite(b) and floors[i + 1] < b < RESOLVED and b > factor * a
        blowup = (b > BLOWUP and b > factor * a) if math.isfinite(a) else False
        if resolved or blowup:
            out.append(f"error grew from {a:.3e} (n={ns[i]}) to {b:.3e} (n={ns[i + 1]}) as the step shrank")
    return out


def approaching(slopes: list[float], target: float, step: float = 0.02) -> bool:
    """Local slopes that move monotonically towards ``target``, by at least ``step`` per
    halving (a pre-asymptotic approach; a settled slope does not move)."""
    d = [abs(s - target) for s in slopes]
    return len(d) >= 2 and all(b < a - step for a, b in zip(d, d[1:]))


def judge_slope(hs: np.ndarray, errs: np.ndarray, floors: np.ndarray, expected: float, *, band: float,
                window: int, details: dict, findings: list[str] = ()) -> tuple[float | None, str, str]:
    """The one rule that turns an error sweep into (slope, verdict, message); see
    :func:`convergence_order` for the verdicts. Fills ``details`` with the window used."""
    e = np.asarray(errs, dtype=np.float64)
    local = [
        math.log(e[i] / e[i + 1]) / math.log(2.0)
        if (math.isfinite(e[i]) and e[i + 1] > 0 and math.isfinite(e[i + 1]) and e[i] > 0) else None
        for i in range(len(e) - 1)
    ]
    details["local_slopes"] = local
    details["findings"] = list(findings)
    win = fit_window(hs, e, floors, window)
    if win is None and findings:
        return None, "fail", "; ".join(findings)
    if win is None:
        return None, "skip", (f"inconclusive: fewer than 3 errors between the round-off floor and {RESOLVED}:"
                              " no asymptotic window")
    a, b = win
    slope = loglog_slope(hs[a:b], e[a:b])
    lead = [v for v in local[max(0, a - 2):b - 1] if v is not None]
    # a deficit is only "stable" when the slopes leading into the window agree too
    settled = [v for v in local[max(0, a - 2):b - 1] if v is not None]
    spread = max(settled) - min(settled) if len(settled) >= 3 else math.inf
    details["window"] = {"h_max": float(hs[a]), "h_min": float(hs[b - 1]), "leading_slopes": lead,
                         "local_slope_spread": spread}
    if findings:
        return slope, "fail", "; ".join(findings)
    if abs(slope - expected) <= band:
        return slope, "pass", ""
    msg = f"slope={slope:.3f}, but should be {expected:g} +- {band} over h={hs[a]:.3g}..{hs[b - 1]:.3g}"
    if slope > expected + band:
        return slope, "skip", (f"inconclusive: slope above the order, local slopes {[round(v, 2) for v in lead]}:"
                               f" higher-order terms still dominate where round-off begins ({msg})")
    if spread > 2 * band or approaching(lead, expected):
        return slope, "skip", f"inconclusive: local slopes {[round(v, 2) for v in lead]} still drift ({msg})"
    return slope, "fail", msg


def convergence_order(problem: Problem, method: str, *, backend: str = "reference", library: str = "numpy",
                      dtype: str = "float64", n_min: int | None = None, n_max: int = 4096, window: int = 3,
                      band: float = ORDER_BAND) -> Record:
    """Least-squares order of the global error over the asymptotic window.

    The sweep starts where h * rho <= 1 and goes to finer steps; the window is the finest
    ``window`` resolved points above the round-off floor. Verdicts:

    - ``pass``: the fitted slope is within ``band`` of the method's order and the error never
      grew as the step shrank in the resolved range;
    - ``fail``: the error grew as the step shrank (instability), or a stable order deficit:
      the slope is below ``order - band`` while the window's local slopes and the two
      leading into it (three or more) agree within ``2 * band`` (what a wrong coefficient
      produces);
    - ``skip`` (inconclusive): no window between round-off and :data:`RESOLVED`; or a slope
      above ``order + band`` (higher-order terms still dominate where round-off begins: the
      order conditions prove the order is not higher than claimed; Tsit5
      approaches its order from above); or a deficit whose local slopes still drift.
    """
    p = solver_order(method, backend=backend, library=library)
    ns, errs, floors = order_sweep(problem, method, backend=backend, library=library, dtype=dtype, n_min=n_min,
                                   n_max=n_max)
    span = abs(problem.t_span[1] - problem.t_span[0])
    hs = np.asarray([span / n for n in ns])
    details = {"n": ns, "h": hs.tolist(), "error": errs, "floors": floors.tolist(), "band": band}
    findings = growth_findings(ns, errs, floors)
    slope, verdict, msg = judge_slope(hs, np.asarray(errs), floors, float(p), band=band, window=window,
                                      details=details, findings=findings)
    return Record(property="convergence_order", method=method, problem=problem.name, expected=float(p),
                  backend=backend_label(backend, library), library=library, dtype=dtype, details=details,
                  measured=slope, verdict=verdict, message=msg)
