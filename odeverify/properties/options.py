"""Options that change a method: the order reached for each value of a maximum-order option.

A multistep or variable-order method's maximum order (``max_order``: the reference BDF, scipy's
LSODA (its Adams part), torchdiffeq's Adams methods; see ``METHOD_OPTIONS`` in
:mod:`odeverify.backends.base`) is passed through ``Backend.solve``. :func:`max_order_sweep`
measures the order each value gives on a smooth, nonlinear, time-dependent problem with a closed
form (``warped_real``: a real spectrum, inside the stability regions of BDF 1-5):

- a fixed-step method: the slope of log(error at t1) against log(h) over halving steps, fitted
  on the last :data:`WINDOW` errors above the round-off floor and below 0.1;
- an adaptive method: the slope of log(error) against log(accepted steps) over a tolerance
  sweep (an order-k solve's error falls like steps^-k), fitted the same way.

The expected order is the value itself, except where the method's construction says otherwise
(:func:`expected_order`: torchdiffeq's Adams methods run rk4 below max_order 4; from 4 on its
Adams-Bashforth uses max_order - 1 past values after lower-order start steps, so explicit_adams
has global order min(max_order - 1, 4) and implicit_adams (one more with its corrector) 4).
A value whose order is more than ``band`` below the expected one fails (the option does not
reach that order), one whose order is more than ``band + 1`` above fails too (the option is not
honoured: the method runs at a higher order than allowed), and so does a value whose solves
fail; in between a slope above the expected order is inconclusive.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..metrics import as_numpy
from ..problems import PROBLEMS, Problem
from ..records import Record
from ._common import backend_label, method_info, run

#: errors fitted per value (the finest ones above the floor)
WINDOW = 3
#: errors above this are not yet in the asymptotic range
RESOLVED = 0.1
#: fixed-step sweep: n = N_MIN, 2 N_MIN, ... N_MAX
N_MIN, N_MAX = 32, 1024
#: adaptive sweep: tolerances for orders <= 2 and above (atol = 1e-2 rtol)
LOW_ORDER_TOLS = (1e-3, 1e-4, 1e-5, 1e-6)
HIGH_ORDER_TOLS = (1e-6, 1e-7, 1e-8, 1e-9)
#: the largest value swept by default (higher orders reach round-off within the sweeps)
MAX_SWEPT = 5


def expected_order(backend: str, method: str, option: str, value: int) -> float:
    """The global order a method should have with ``option=value`` (see the module docstring)."""
    if backend == "torchdiffeq" and method.endswith("_adams") and option == "max_order":
        # torchdiffeq's AdamsBashforthMoulton: rk4 below 4 (_MIN_ORDER, with a warning); from 4
        # on, an Adams-Bashforth predictor with up to max_order - 1 past values (order
        # max_order - 1) after an rk4 start whose first Adams step uses 3 of them, so the start
        # limits the global order to 4; the Adams-Moulton corrector of implicit_adams adds one
        # order to the predictor's (4 at max_order 4)
        if value < 4 or method != "explicit_adams":
            return 4.0
        return float(min(value - 1, 4))
    return float(value)


def _slope(xs: Sequence[float], errs: Sequence[float], floor: float) -> tuple[float | None, list[int]]:
    """d log(err) / d log(xs) (xs: h, or 1 / accepted steps) over the last WINDOW points with floor < err < RESOLVED."""
    idx = [i for i, e in enumerate(errs) if math.isfinite(e) and floor < e < RESOLVED]
    idx = idx[-WINDOW:]
    if len(idx) < 2:
        return None, idx
    x = np.log(np.asarray([xs[i] for i in idx], dtype=np.float64))
    y = np.log(np.asarray([errs[i] for i in idx], dtype=np.float64))
    return float(np.polyfit(x, y, 1)[0]), idx


def _error(sol: Any, ref: np.ndarray, failures: list[str]) -> float:
    if not sol.success:
        failures.append(sol.message[:200])
        return math.inf
    y = as_numpy(sol.ys)[-1]
    return float(np.max(np.abs(y - ref))) if np.all(np.isfinite(y)) else math.inf


def max_order_sweep(problem: Problem | None, method: str, *, backend: str = "reference", library: str = "numpy",
                    option: str = "max_order", values: Sequence[int] | None = None, band: float = 0.5,
                    **options: Any) -> Record:
    """The order of ``method`` for each value of ``option`` (default: every value the method
    declares in ``MethodInfo.option_ranges``, up to :data:`MAX_SWEPT`); see the module docstring
    for the measurement and the verdicts. ``problem`` defaults to ``warped_real``; ``options``
    go to every solve. ``measured`` is the number of values whose order is confirmed."""
    problem = PROBLEMS.get("warped_real") if problem is None else problem
    info = method_info(method, backend=backend, library=library)
    label = backend_label(backend, library)
    common = dict(property="max_order_sweep", method=method, problem=problem.name, backend=label, library=library)
    ranges = {name: (lo, hi) for name, lo, hi in info.option_ranges}
    if option not in ranges:
        return Record(measured=None, expected=None, verdict="skip",
                      message=f"not applicable: {label} method {method!r} takes no option {option!r}", **common)
    lo, hi = ranges[option]
    vals = list(range(lo, min(hi, MAX_SWEPT) + 1)) if values is None else [int(v) for v in values]
    bad = [v for v in vals if not lo <= v <= hi]
    if not vals or bad:
        raise ValueError(f"values={values!r}, but {label} method {method!r} takes {option} in {lo} .. {hi}")
    ref = problem.final_reference()
    if ref is None:
        raise ValueError(f"problem {problem.name!r} has no closed form or reference at t1; the sweep needs one")
    floor = 1e3 * np.finfo(np.float64).eps * max(1.0, float(np.max(np.abs(ref))))
    rows: list[dict[str, Any]] = []
    for v in vals:
        xs, errs, failures = [], [], []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchdiffeq warns below max_order 4 and on slow corrector iterations
            if info.fixed:
                n = N_MIN
                while n <= N_MAX:
                    sol = run(problem, method, backend=backend, library=library, n_steps=n, **{option: v}, **options)
                    xs.append(1.0 / n)
                    errs.append(_error(sol, ref, failures))
                    n *= 2
            else:
                for tol in (LOW_ORDER_TOLS if v <= 2 else HIGH_ORDER_TOLS):
                    sol = run(problem, method, backend=backend, library=library, rtol=tol, atol=1e-2 * tol,
                              max_steps=50_000, **{option: v}, **options)
                    xs.append(1.0 / max(1, sol.stats.accepted))
                    errs.append(_error(sol, ref, failures))
        slope, used = _slope(xs, errs, floor)
        want = expected_order(label, method, option, v)
        if slope is None:
            verdict = "fail" if failures else "skip"
        elif slope < want - band:
            verdict = "fail"
        elif slope > want + band + 1.0:
            verdict = "fail"
        elif slope > want + band:
            verdict = "skip"
        else:
            verdict = "pass"
        rows.append({"value": v, "expected": want, "slope": slope, "verdict": verdict, "errors": errs,
                     "x": xs, "window": used, "failures": failures})
    details = {"option": option, "mode": "fixed" if info.fixed else "adaptive", "rows": rows, "band": band,
               "floor": floor, "options": dict(options)}
    text = ", ".join(f"{option}={r['value']}: "
                     + (f"solve failed ({r['failures'][0]})" if r["slope"] is None and r["failures"] else
                        f"{'-' if r['slope'] is None else format(r['slope'], '.2f')}")
                     + f" (expected {r['expected']:g})" for r in rows)
    failed = [r for r in rows if r["verdict"] == "fail"]
    unsure = [r for r in rows if r["verdict"] == "skip"]
    confirmed = float(sum(r["verdict"] == "pass" for r in rows))
    if failed:
        return Record(measured=confirmed, expected=float(len(rows)), verdict="fail", details=details,
                      message=f"orders {text}; wrong for {', '.join(str(r['value']) for r in failed)}"
                              f" (band {band})", **common)
    if unsure:
        return Record(measured=confirmed, expected=float(len(rows)), verdict="skip", details=details,
                      message=f"inconclusive for {', '.join(str(r['value']) for r in unsure)}: orders {text}",
                      **common)
    return Record(measured=confirmed, expected=float(len(rows)), verdict="pass", details=details,
                  message=f"orders {text}", **common)
