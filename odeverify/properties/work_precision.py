"""Work-precision data: accuracy and cost of one method on one problem over a range of tolerances.

One :class:`~odeverify.records.Record` per (problem, method, backend, options): the points of
one curve of a work-precision diagram (Hairer & Wanner, *Solving ODEs II*, Sect. IV.10; the
Bari test set, Mazzia & Magherini 2008, plots scd against CPU time the same way).
``details["points"]`` holds one dict per tolerance, coarsest first:

=============  ==========================================================================
``rtol``       the relative tolerance passed to the solver
``atol``       the absolute tolerance passed (see :func:`default_atol`)
``status``     the solve's status code (``success``, ``max_steps``, ``dt_underflow`` ...)
``message``    the solver's message for a failed solve ('' on success)
``abs_error``  max_i |y_i - y_ref_i| at the final time (None when the solve failed)
``rel_error``  max_i |y_i - y_ref_i| / |y_ref_i| at the final time
``scd``        significant correct digits, :func:`odeverify.metrics.scd` (Bari convention)
``mescd``      mixed-error digits, :func:`odeverify.metrics.mescd` with this point's rtol, atol
``nfev``       vector-field calls (each backend counts them the same way, see backends.base)
``njev``       Jacobian evaluations, ``nlu`` LU decompositions (0 for explicit methods)
``accepted``   accepted steps, ``rejected`` rejected steps (-1 where the library hides it)
``wall_s``     median wall time of ``repeats`` solves (compile time excluded and kept in
               ``compile_s``); ``wall_repeats`` how many solves the median is over,
               ``wall_min``/``wall_max`` their spread, ``load_1min`` the machine's 1-minute
               load average when the point was measured (wall time scales with it)
=============  ==========================================================================

With ``output_times=K`` the same solve is also asked for K output times across the span and
for points between them, and each point adds (see :func:`output_grid`):

====================  ====================================================================
``max_abs_error``     max over the output times of max_i |y_i - y_ref_i|
``dense_abs_error``   the same at the points between the output times (the interpolant)
``max_mescd``         -log10 of the max over the output times of the mixed error
                      |y_i - y_ref_i| / (s + |y_ref_i|), s = ``default_atol(problem, 1)``
``dense_mescd``       the same at the points between the output times
====================  ====================================================================

The reference at those times is the closed form, else :func:`reference_trajectory` (a tight
scipy solve restarted at every time, so no value comes from its interpolant); its provenance
and its own error at t1 against the problem's reference are in ``details["trajectory"]``.
:func:`tightest_tolerance` says how far a sweep can go before the reference, not the solver,
limits the measured error.

A failed solve is a point with its status and message, never an exception. The record's
``measured`` is the best scd reached by a successful solve; ``verdict`` is ``pass`` when
every tolerance succeeded and ``error`` otherwise (``status`` then holds the first failure's
code and ``message`` lists every failure): the data is for a diagram, there is no expected
value to compare with.
"""
from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..metrics import BARI_MIN_VALUE, as_numpy, max_relative_error, mescd, scd
from ..problems import Problem
from ..records import Record
from ._common import backend_label, reference_final, run

#: the default tolerances: seven decades, coarse to fine
TOLERANCES = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)
#: a step limit so that no solve runs unbounded (an explicit method on a stiff problem
#: takes 10^6-10^8 steps); the point then records ``max_steps``
MAX_STEPS = 50_000
#: repeat a solve for the median wall time only while one solve is cheaper than this (s)
CHEAP_S = 0.2
#: the tightest tolerance of any sweep: below it float64 round-off, not the method, decides
TIGHTEST = 1e-13
#: the loosest "tightest tolerance": a reference too poor for 1e-6 still gets a sweep to here
LOOSEST_TIGHTEST = 1e-6
#: points between two output times at which the dense-output error is measured (fractions)
DENSE_FRACTIONS = (0.25, 0.5, 0.75)
#: a span from 0 past this end time is sampled log-spaced from :data:`LOG_GRID_START` (ROBER
#: and E5 run to 1e11 and 1e13, and all their transients happen before t = 1)
LOG_GRID_END = 1e4
LOG_GRID_START = 1e-4


def default_atol(problem: Problem, rtol: float) -> float:
    """The absolute tolerance that goes with ``rtol`` on ``problem``: ``rtol * min(1, min_i |y_ref_i|)``
    over the components with |y_ref_i| >= BARI_MIN_VALUE (1e-200).

    The scd is a component-wise relative error at the final time; a component of size
    |y_i| is only controlled relatively when atol <= rtol * |y_i|. This rule picks the
    largest atol that asks for relative accuracy rtol on every nonzero component of the
    reference at t1 (ROBER at t = 1e11 has y_2 ~ 8e-14, so atol ~ 8e-14 rtol), and
    atol = rtol (the Bari test set's usual choice) when every component is of order 1 or
    larger. Components that are exactly 0 in the reference are left out (their relative
    error is undefined), and so are those below the Bari test set's ``min_value`` = 1e-200,
    which its scd judges by their absolute error (E5's y1(1e13) = 1.2e-291 would otherwise ask
    for atol ~ 1e-297, and scipy's Radau then fails with non-finite values).
    """
    ref = np.abs(reference_final(problem))
    nonzero = ref[ref >= BARI_MIN_VALUE]
    scale = min(1.0, float(nonzero.min())) if nonzero.size else 1.0
    return rtol * scale


def reference_accuracy(problem: Problem) -> tuple[float, str]:
    """(relative accuracy of the problem's reference at t1, where that number comes from).

    A closed form is exact (float64 round-off, 1e-16). A Bari problem's published value is
    good to the digits that ``problems.stiff.PUBLISHED_AGREEMENT`` records as reached (E5's y2,
    y3 to ``E5_AGREEMENT``, about 1e-3); another published value to its printed digits; a
    computed one to 10x its solver's rtol (the tolerance named in its source)."""
    if problem.exact is not None:
        return 1e-16, "closed form"
    from ..problems import stiff

    if problem.name in stiff.PUBLISHED_AGREEMENT:
        digits = stiff.PUBLISHED_AGREEMENT[problem.name][0]
        return 10.0 ** -digits, f"published; {digits:g} digits reached (problems.stiff.PUBLISHED_AGREEMENT)"
    if problem.name == "e5":
        return stiff.E5_AGREEMENT["y2_y3"], "published; y2, y3 determined to ~1e-3 (problems.stiff.E5_AGREEMENT)"
    t1 = problem.t_span[1]
    for ref in problem.references:
        if ref.t != t1:
            continue
        if ref.kind == "published":
            digits = ref.digits or 6
            return 10.0 ** -digits, f"published to {digits} digits"
        import re

        tols = [float(m) for m in re.findall(r"rtol\s*=?\s*([0-9.]+e-?[0-9]+)", ref.source)]
        return (10 * min(tols), f"computed at rtol {min(tols):g}") if tols else (1e-8, "computed (tolerance unknown)")
    return math.inf, "no reference at t1"


def tightest_tolerance(problem: Problem) -> float:
    """The tightest rtol worth sweeping on ``problem``: a decade at least 10x the reference's
    relative accuracy (:func:`reference_accuracy`), within [:data:`TIGHTEST`,
    :data:`LOOSEST_TIGHTEST`]. Closed forms and 16-digit published values give 1e-13; ROBER
    (11 digits reached) 1e-10; E5 (y2, y3 to 1e-3) 1e-6, where its scd saturates anyway."""
    acc, _ = reference_accuracy(problem)
    if not math.isfinite(acc):
        return LOOSEST_TIGHTEST
    tol = 10.0 ** math.ceil(math.log10(10 * acc) - 1e-9)
    return min(max(tol, TIGHTEST), LOOSEST_TIGHTEST)


def sweep_tolerances(problem: Problem, *, loosest: float = 1e-4, tightest: float | None = None,
                     step: int = 1) -> tuple[float, ...]:
    """Decades from ``loosest`` down to ``max(tightest, tightest_tolerance(problem))``, every
    ``step``-th decade (the tightest one always included)."""
    floor = tightest_tolerance(problem) if tightest is None else max(float(tightest), tightest_tolerance(problem))
    lo, hi = round(-math.log10(loosest)), round(-math.log10(floor))
    exps = list(range(lo, hi + 1, max(1, int(step))))
    if exps[-1] != hi:
        exps.append(hi)
    return tuple(10.0 ** -e for e in exps)


def output_grid(problem: Problem, intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """(output times, points between them) of the trajectory error measures: ``intervals``
    equal intervals of the span, or log-spaced ones from :data:`LOG_GRID_START` when the span
    starts at 0 and ends past :data:`LOG_GRID_END` (ROBER, E5); the points between sit at
    :data:`DENSE_FRACTIONS` of each interval (of its logarithm on a log grid). The output
    times end at t1."""
    if isinstance(intervals, bool) or not isinstance(intervals, int) or intervals < 1:
        raise ValueError(f"output_times={intervals!r}, but it must be a positive int (the number of intervals)")
    t0, t1 = problem.t_span
    log = t0 == 0.0 and t1 >= LOG_GRID_END
    if log:
        grid = np.geomspace(LOG_GRID_START, t1, intervals + 1)
        lg = np.log(grid)
        between = np.exp(np.concatenate([lg[:-1] + f * np.diff(lg) for f in DENSE_FRACTIONS]))
        out = grid
    else:
        grid = np.linspace(t0, t1, intervals + 1)
        between = np.concatenate([grid[:-1] + f * np.diff(grid) for f in DENSE_FRACTIONS])
        out = grid[1:]
    return out, np.sort(between)


_TRAJECTORIES: dict[tuple, tuple[np.ndarray, dict[str, Any]]] = {}


def reference_trajectory(problem: Problem, ts: Sequence[float], *, rtol: float | None = None
                         ) -> tuple[np.ndarray, dict[str, Any]]:
    """The solution at ``ts`` (increasing, after t0) and its provenance.

    The closed form where there is one. Otherwise a scipy solve, restarted from every time to
    the next so that every value is a step end (never the interpolant): DOP853 (rtol 1e-13 by
    default) for non-stiff problems, Radau with the analytic Jacobian (rtol 1e-12 by default)
    for stiff ones, the tolerances ``make_references`` uses; a sweep that stops at a looser
    tolerance passes a looser ``rtol`` (Radau at 1e-12 on ROBER takes ~10 s). Its own error at t1 against the problem's
    reference is kept as ``error_at_t1`` (mixed, as ``max_mescd``): errors near it measure
    the reference. Cached per problem and times for the process."""
    ts = np.asarray(ts, dtype=np.float64)
    if problem.exact is not None:
        return np.asarray(problem.exact(ts), dtype=np.float64), {"source": "closed form", "error_at_t1": 0.0}
    stiff = "stiff" in problem.tags
    rtol = (1e-12 if stiff else 1e-13) if rtol is None else float(rtol)
    key = (problem.name, problem.y0, problem.t_span, tuple(ts.tolist()), rtol)
    if key in _TRAJECTORIES:
        return _TRAJECTORIES[key]
    from scipy.integrate import solve_ivp

    from .. import _xp

    xp = _xp.get_namespace("numpy")
    f = problem.vector_field(xp, np.float64)
    atol = default_atol(problem, rtol)
    kw: dict[str, Any] = {"method": "Radau" if stiff else "DOP853", "rtol": rtol, "atol": atol}
    jf = problem.jacobian_field(xp, np.float64)
    if stiff and jf is not None:
        kw["jac"] = lambda t, y: np.asarray(jf(np.asarray(t), np.asarray(y)))
    t1 = problem.t_span[1]
    times = np.unique(np.concatenate([ts, [t1]]))
    y = np.asarray(problem.y0, dtype=np.float64)
    t = problem.t_span[0]
    values = {}
    for target in times:
        if target > t:
            sol = solve_ivp(lambda s, z: np.asarray(f(np.asarray(s), np.asarray(z))), (t, float(target)), y, **kw)
            if not sol.success:
                raise ValueError(f"reference_trajectory: scipy {kw['method']} failed on {problem.name!r} at"
                                 f" t={sol.t[-1]:.6g}: {sol.message}")
            y, t = sol.y[:, -1], float(target)
        values[float(target)] = y
    ys = np.asarray([values[float(v)] for v in ts])
    scale = default_atol(problem, 1.0)
    err = 10.0 ** -float(mescd(values[float(t1)], reference_final(problem), rtol=1.0, atol=scale))
    info = {"source": f"scipy {kw['method']} rtol={rtol:g} atol={atol:.3g}"
                      f"{' with the analytic Jacobian' if 'jac' in kw else ''}, restarted at every time",
            "error_at_t1": err}
    _TRAJECTORIES[key] = (ys, info)
    return ys, info


AtolRule = float | str | Callable[[Problem, float], float] | None


def _atol_for(problem: Problem, rtol: float, atol: AtolRule) -> tuple[float, str]:
    """(atol, description of the rule) for one tolerance."""
    if atol is None:
        return default_atol(problem, rtol), "rtol * min(1, min_i |y_ref_i(t1)|) (default_atol)"
    if isinstance(atol, str):
        if atol != "rtol":
            raise ValueError(f"atol={atol!r}, but a string atol must be 'rtol' (atol = rtol); give a number,"
                             " a callable (problem, rtol) -> atol, or None for default_atol")
        return rtol, "atol = rtol"
    if callable(atol):
        return float(atol(problem, rtol)), f"{getattr(atol, '__name__', 'callable')}(problem, rtol)"
    value = float(atol)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"atol={atol!r}, but it must be finite and > 0")
    return value, f"atol = {value:g} (fixed)"


def _check_tolerances(tolerances: Sequence[float]) -> list[float]:
    tols = [float(t) for t in tolerances]
    if not tols or not all(math.isfinite(t) and 0 < t < 1 for t in tols):
        raise ValueError(f"tolerances={tuple(tolerances)!r}, but they must be a non-empty sequence of numbers"
                         " in (0, 1)")
    return tols


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _point(problem: Problem, method: str, ref: np.ndarray, rtol: float, atol: float, *, backend: str,
           library: str, dtype: str, repeats: int, options: dict[str, Any],
           grid: tuple[np.ndarray, np.ndarray, Callable[[], np.ndarray]] | None = None) -> dict[str, Any]:
    """One solve (repeated for timing while cheap) -> one point of the diagram. ``grid`` is
    (output times, points between them, a function giving the reference at both, stacked)."""
    if grid is not None:
        ts_all = np.unique(np.concatenate([grid[0], grid[1], [problem.t_span[1]]]))
        options = {**options, "t_eval": ts_all.tolist()}
    load = _load()
    sol = run(problem, method, backend=backend, library=library, dtype=dtype, rtol=rtol, atol=atol, **options)
    walls = [float(sol.timing.get("wall_s", math.nan))]
    point: dict[str, Any] = {"rtol": rtol, "atol": atol, "status": sol.status.code,
                             "message": "" if sol.success else sol.message, **sol.stats.to_dict(),
                             "compile_s": float(sol.timing.get("compile_s", 0.0))}
    point.pop("sample_accepted", None)
    point.pop("sample_rejected", None)
    if sol.success:
        while len(walls) < repeats and sum(walls) < CHEAP_S * repeats and walls[-1] < CHEAP_S:
            again = run(problem, method, backend=backend, library=library, dtype=dtype, rtol=rtol, atol=atol,
                        **options)
            walls.append(float(again.timing.get("wall_s", math.nan)))
        ys = as_numpy(sol.ys)
        y = ys[-1]
        finite = bool(np.all(np.isfinite(y)))
        point.update({"abs_error": float(np.max(np.abs(y - ref))) if finite else math.inf,
                      "rel_error": max_relative_error(y, ref), "scd": scd(y, ref) if finite else -math.inf,
                      "mescd": mescd(y, ref, rtol=rtol, atol=atol) if finite else -math.inf})
        if grid is not None:
            point.update(_trajectory_errors(problem, ts_all, ys, grid))
    else:
        point.update({"abs_error": None, "rel_error": None, "scd": None, "mescd": None})
        if grid is not None:
            point.update({k: None for k in ("max_abs_error", "dense_abs_error", "max_mescd", "dense_mescd")})
    point["wall_s"] = statistics.median(walls)
    point["wall_repeats"] = len(walls)
    point["wall_min"], point["wall_max"] = min(walls), max(walls)
    point["load_1min"] = load
    return point


def _trajectory_errors(problem: Problem, ts_all: np.ndarray, ys: np.ndarray,
                       grid: tuple[np.ndarray, np.ndarray, Callable[[], np.ndarray]]) -> dict[str, float]:
    out_t, between, reference = grid
    ref = reference()
    ref_t = np.concatenate([out_t, between])
    order = np.argsort(ref_t, kind="stable")
    ref_sorted = ref[order]
    rows = {float(t): i for i, t in enumerate(ts_all)}
    scale = default_atol(problem, 1.0)
    res: dict[str, float] = {}
    for name, times in (("max", out_t), ("dense", between)):
        idx = [rows[float(t)] for t in times]
        mine = ys[idx]
        want = ref_sorted[np.searchsorted(ref_t[order], times)]
        if not np.all(np.isfinite(mine)):
            res[f"{name}_abs_error"], res[f"{name}_mescd"] = math.inf, -math.inf
            continue
        res[f"{name}_abs_error"] = float(np.max(np.abs(mine - want)))
        res[f"{name}_mescd"] = float(np.min(mescd(mine, want, rtol=1.0, atol=scale)))
    return res


def work_precision(problem: Problem, method: str, *, backend: str = "reference",
                   tolerances: Sequence[float] = TOLERANCES, library: str = "numpy", dtype: str = "float64",
                   atol: AtolRule = None, repeats: int = 3, max_steps: int | None = MAX_STEPS,
                   output_times: int | None = None, **options: Any) -> Record:
    """Error (max abs, max rel, scd) at the final time and work (nfev, njev, nlu, steps, time)
    for each tolerance in ``tolerances``; see the module docstring for the fields.

    ``atol``: None (:func:`default_atol`), ``"rtol"`` (atol = rtol), a number, or a callable
    ``(problem, rtol) -> atol``. ``options`` go to the backend's ``solve`` unchanged (for
    example ``jac=True`` for the problem's analytic Jacobian). ``max_steps`` bounds every
    solve (None: the backend's own default). The error is measured against the problem's
    closed form or reference value at ``t_span[1]``; a problem with neither raises
    ``ValueError``. Bad arguments raise; a failed solve is a recorded point.

    ``output_times=K`` adds the error over K output times and at the points between them
    (the dense output), against :func:`reference_trajectory`; see the module docstring.
    """
    tols = _check_tolerances(tolerances)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r}, but it must be a positive int")
    ref = reference_final(problem)
    opts = dict(options)
    if max_steps is not None:
        opts["max_steps"] = max_steps
    grid, lazy = None, {}
    if output_times is not None:
        out_t, between = output_grid(problem, output_times)
        # two decades below the tightest tolerance swept, and never looser than 1e-10
        floor = 1e-12 if "stiff" in problem.tags else 1e-13
        ref_rtol = min(max(min(tols) * 1e-2, floor), 1e-10)

        def reference() -> np.ndarray:  # computed at the first successful solve only
            if "ys" not in lazy:
                lazy["ys"], lazy["info"] = reference_trajectory(problem, np.concatenate([out_t, between]),
                                                                rtol=ref_rtol)
            return lazy["ys"]

        grid = (out_t, between, reference)
    points, rule = [], ""
    for rtol in tols:
        a, rule = _atol_for(problem, rtol, atol)
        points.append(_point(problem, method, ref, rtol, a, backend=backend, library=library, dtype=dtype,
                             repeats=repeats, options=opts, grid=grid))
    failures = [p for p in points if p["status"] != "success"]
    scds = [p["scd"] for p in points if p["scd"] is not None and math.isfinite(p["scd"])]
    acc, acc_source = reference_accuracy(problem)
    details = {"points": points, "atol_rule": rule, "options": {k: v for k, v in opts.items()},
               "error_at": float(problem.t_span[1]),
               "reference": {"relative_accuracy": acc, "source": acc_source,
                             "tightest_tolerance": tightest_tolerance(problem)}}
    if grid is not None:
        details["trajectory"] = {**lazy.get("info", {"source": "not computed (no solve succeeded)",
                                                     "error_at_t1": None}),
                                 "output_times": grid[0].tolist(), "between": grid[1].tolist(),
                                 "dense_fractions": list(DENSE_FRACTIONS)}
    common = dict(property="work_precision", method=method, problem=problem.name,
                  backend=backend_label(backend, library), library=library, dtype=dtype, details=details,
                  measured=max(scds) if scds else None, expected=None)
    if failures:
        text = "; ".join(f"rtol={p['rtol']:g}: {p['status']}" for p in failures)
        return Record(verdict="error", status=failures[0]["status"],
                      message=f"{len(failures)} of {len(points)} solves failed ({text})", **common)
    return Record(verdict="pass", message=f"best scd {max(scds):.2f}" if scds else "", **common)


def points_table(record: Record) -> list[tuple]:
    """The points of a work-precision record as rows (rtol, status, scd, nfev, njev, nlu, accepted,
    rejected, wall_s), for printing."""
    return [(p["rtol"], p["status"], p["scd"], p["nfev"], p["njev"], p["nlu"], p["accepted"], p["rejected"],
             p["wall_s"]) for p in record.details["points"]]
