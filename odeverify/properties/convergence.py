"""Empirical convergence order of fixed-step solves, swept from coarse to fine steps."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..metrics import as_numpy, loglog_slope, roundoff_floor, scaled_error
from ..problems import Problem
from ..records import Record
from ..tableaus import TABLEAUS, theory
from ._common import backend_label, jacobian_eigenvalues, method_info, reference_final, run, solver_order

#: default tolerance band around the claimed order
ORDER_BAND = 0.15
#: a solution counts as resolved below this scaled error: growth of the error is a finding
#: there, and only resolved points enter the order fit
RESOLVED = 0.1


#: the largest spurious linear amplification over the span that a sweep may start with
AMPLIFICATION_LIMIT = 10.0


def stability_function(method: Any, *, backend: str = "reference", library: str = "numpy"
                       ) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """R(z) of a method, and where it comes from: the exact stability function of the
    tableau it shares with the reference (a solver object: its own tableau), else the
    degree-p Taylor polynomial of exp(z), which every explicit method of order p <= 4 with p
    stages has (and an approximation of higher-order ones near the origin)."""
    tab = getattr(method, "tableau", None) if not isinstance(method, str) else None
    if tab is None:
        info = method_info(method, backend=backend, library=library)
        if info.tableau is not None and info.tableau in TABLEAUS.names():
            tab = TABLEAUS.get(info.tableau)
        p = info.order
    else:
        p = tab.order
    if tab is not None:
        return (lambda z: theory.stability_value(tab, z)), f"tableau {tab.name}"
    coeffs = [1.0 / math.factorial(k) for k in range(p, -1, -1)]
    return (lambda z: np.polyval(coeffs, np.asarray(z, dtype=np.complex128))), f"Taylor polynomial of degree {p}"


def linear_amplification(R: Callable[[np.ndarray], np.ndarray], eigenvalues: np.ndarray, span: float,
                         n: int) -> float:
    """max over the eigenvalues of (max(1, |R(h lam)|) / max(1, |exp(h lam)|))^n, h = span/n:
    how much n steps of the method amplify a linearised mode beyond the exact flow."""
    z = np.asarray(eigenvalues, dtype=np.complex128) * (span / n)
    r = np.maximum(1.0, np.abs(R(z))) / np.maximum(1.0, np.abs(np.exp(z)))
    with np.errstate(over="ignore"):
        return float(np.max(r) ** n)


def stable_n_min(problem: Problem, method: Any = None, *, backend: str = "reference", library: str = "numpy",
                 n_cap: int = 4096, info: dict | None = None) -> int:
    """Fewest power-of-two steps inside the method's stability region on this problem.

    First h * rho <= 1 (rho: spectral radius of df/dy along the solution); then, given a
    method, doubled until its linearised spurious amplification over the span
    (:func:`linear_amplification` with :func:`stability_function`) is at most
    :data:`AMPLIFICATION_LIMIT`: Euler on an oscillatory problem needs h * rho well below 1.
    A blow-up from there on is the method's fault, never the sweep's. ``info`` (a dict)
    receives how the start was chosen.
    """
    span = abs(problem.t_span[1] - problem.t_span[0])
    eigs = jacobian_eigenvalues(problem)
    rho = float(np.max(np.abs(eigs)))
    n = 2 ** max(0, math.ceil(math.log2(max(rho * span, 1.0))))
    if info is not None:
        info.update({"rho": rho, "h_rho_n": n})
    if method is None:
        return n
    R, source = stability_function(method, backend=backend, library=library)
    while n < n_cap and linear_amplification(R, eigs, span, n) > AMPLIFICATION_LIMIT:
        n *= 2
    if info is not None:
        info.update({"n": n, "stability_function": source,
                     "amplification": linear_amplification(R, eigs, span, n)})
    return n


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
    times = t0 + (t1 - t0) * np.arange(1, m + 1) / m
    times[-1] = t1  # t0 + (t1 - t0) rounds past t1 on some spans (1.44 -> 0.44 gave 0.43999999999999995)
    return times


def order_sweep(problem: Problem, method: str, *, backend: str = "reference", library: str = "numpy",
                dtype: str = "float64", n_min: int | None = None,
                n_max: int = 4096, statuses: list[str] | None = None) -> tuple[list[int], list[float], np.ndarray]:
    """Errors of fixed-step solves with n = n_min, 2 n_min, ... steps.

    The error of a solve is the largest scaled error over :func:`check_times`. The sweep runs
    from coarse to fine and stops one step after the error reaches the round-off floor, or at
    ``n_max``. ``n_min`` defaults to :func:`stable_n_min` for the method. Returns (ns, errors, floors);
    the solver status of each solve is appended to ``statuses`` when a list is given.
    """
    if n_min is None:
        n_min = stable_n_min(problem, method, backend=backend, library=library, n_cap=n_max)
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
        if statuses is not None:
            statuses.append(sol.status.code)
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


def growth_findings(ns: list[int], errs: list[float], floors: np.ndarray, factor: float = 1.0,
                    statuses: list[str] | None = None) -> list[str]:
    """What the sweep says against the method, whatever the fit: instability and growth.

    - Instability: any error far above the solution's scale (> :data:`BLOWUP`) or a failed
      solve, anywhere in the sweep. The sweep starts inside the method's stability region
      (:func:`stable_n_min`), so a blow-up there is never inconclusive: the finding names
      the coarsest and finest unstable step counts and where the error is back below
      :data:`RESOLVED`.
    - Growth: the error grew while the step shrank in the resolved range (errors below
      :data:`RESOLVED`, above round-off). Between the two, an unresolved solution (orbit
      phases wrapping around, for example) may move either way without saying anything
      about the method.
    """
    out = []
    bad = [i for i, e in enumerate(errs) if not (math.isfinite(e) and e <= BLOWUP)]
    if bad:
        worst = max((errs[i] for i in bad), key=lambda e: e if math.isfinite(e) else math.inf)
        status = ""
        if statuses is not None:
            failed = sorted({statuses[i] for i in bad if statuses[i] not in ("success", "")})
            status = f", solver status {', '.join(failed)}" if failed else ""
        fine = [i for i, e in enumerate(errs) if i > bad[-1] and math.isfinite(e) and e < RESOLVED]
        recovered = f"; resolved again from n={ns[fine[0]]}" if fine else "; never resolved again in the sweep"
        out.append(f"unstable: error {worst:.3e} (above {BLOWUP:g} times the solution's scale{status}) at n="
                   f"{', '.join(str(ns[i]) for i in bad)} inside the step range where the method must be"
                   f" stable{recovered}")
    for i in range(len(errs) - 1):
        a, b = errs[i], errs[i + 1]
        if math.isfinite(b) and floors[i + 1] < b < RESOLVED and b > factor * a:
            out.append(f"error grew from {a:.3e} (n={ns[i]}) to {b:.3e} (n={ns[i + 1]}) as the step shrank")
    return out


def approaching(slopes: list[float], target: float, step: float = 0.02) -> bool:
    """Local slopes that move monotonically towards ``target``, by at least ``step`` per
    halving (a pre-asymptotic approach; a settled slope does not move)."""
    d = [abs(s - target) for s in slopes]
    return len(d) >= 2 and all(b < a - step for a, b in zip(d, d[1:]))


def receding(slopes: list[float], target: float, step: float = 0.02) -> bool:
    """Local slopes that move monotonically away from ``target`` as the step shrinks, by at
    least ``step`` per halving: the signature of an error term of lower order taking over
    (a wrong coefficient), never of a pre-asymptotic approach."""
    d = [abs(s - target) for s in slopes]
    return len(d) >= 2 and all(b > a + step for a, b in zip(d, d[1:]))


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
    # below the order: the finest resolved local slopes decide (they are the most asymptotic)
    inner = [v for v in local[a:b - 1] if v is not None]
    finest = inner[-2:]
    shown = [round(v, 2) for v in lead]
    if len(finest) == 2 and all(v < expected - band for v in finest) and abs(finest[1] - finest[0]) <= band / 3:
        return slope, "fail", (f"stable order deficit: the finest resolved local slopes {[round(v, 2) for v in finest]}"
                               f" agree with each other and lie below {expected:g} - {band} ({msg})")
    if receding(lead, expected) and lead[-1] < expected - band:
        return slope, "fail", (f"order deficit: local slopes {shown} fall away from {expected:g} as the step"
                               f" shrinks (a lower-order error term takes over; {msg})")
    if spread > 2 * band or approaching(lead, expected):
        return slope, "skip", f"inconclusive: local slopes {shown} still drift ({msg})"
    return slope, "fail", msg


def convergence_order(problem: Problem, method: str, *, backend: str = "reference", library: str = "numpy",
                      dtype: str = "float64", n_min: int | None = None, n_max: int = 4096, window: int = 3,
                      band: float = ORDER_BAND) -> Record:
    """Least-squares order of the global error over the asymptotic window.

    The sweep starts where h * rho <= 1 and goes to finer steps; the window is the finest
    ``window`` resolved points above the round-off floor. Verdicts:

    - ``pass``: the fitted slope is within ``band`` of the method's order and the error never
      grew as the step shrank in the resolved range;
    - ``fail``: instability (an error above :data:`BLOWUP` times the solution's scale, or a
      failed solve, anywhere in the sweep, which starts inside the stability region; or
      the error grew as the step shrank in the resolved range), or an order deficit: the
      slope is below ``order - band`` and either the two finest resolved local slopes agree
      within ``band / 3`` below ``order - band`` (a stable deficit), or the local slopes fall
      away from the order as the step shrinks (a lower-order term taking over: what a wrong
      coefficient produces), or the window's local slopes and the two leading into it agree
      within ``2 * band``;
    - ``skip`` (inconclusive): no window between round-off and :data:`RESOLVED`; or a slope
      above ``order + band`` (higher-order terms still dominate where round-off begins: the
      order conditions prove the order is not higher than claimed; Tsit5 approaches its
      order from above); or a deficit whose local slopes still move towards the order.
    """
    p = solver_order(method, backend=backend, library=library)
    statuses: list[str] = []
    start: dict = {}
    if n_min is None:
        n_min = stable_n_min(problem, method, backend=backend, library=library, n_cap=n_max, info=start)
    ns, errs, floors = order_sweep(problem, method, backend=backend, library=library, dtype=dtype, n_min=n_min,
                                   n_max=n_max, statuses=statuses)
    span = abs(problem.t_span[1] - problem.t_span[0])
    hs = np.asarray([span / n for n in ns])
    details = {"n": ns, "h": hs.tolist(), "error": errs, "floors": floors.tolist(), "band": band,
               "status": statuses, "start": start}
    findings = growth_findings(ns, errs, floors, statuses=statuses)
    slope, verdict, msg = judge_slope(hs, np.asarray(errs), floors, float(p), band=band, window=window,
                                      details=details, findings=findings)
    return Record(property="convergence_order", method=method, problem=problem.name, expected=float(p),
                  backend=backend_label(backend, library), library=library, dtype=dtype, details=details,
                  measured=slope, verdict=verdict, message=msg)
