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
               ``compile_s``); ``wall_repeats`` how many solves the median is over
=============  ==========================================================================

A failed solve is a point with its status and message, never an exception. The record's
``measured`` is the best scd reached by a successful solve; ``verdict`` is ``pass`` when
every tolerance succeeded and ``error`` otherwise (``status`` then holds the first failure's
code and ``message`` lists every failure): the data is for a diagram, there is no expected
value to compare with.
"""
from __future__ import annotations

import math
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


def _point(problem: Problem, method: str, ref: np.ndarray, rtol: float, atol: float, *, backend: str,
           library: str, dtype: str, repeats: int, options: dict[str, Any]) -> dict[str, Any]:
    """One solve (repeated for timing while cheap) -> one point of the diagram."""
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
        y = as_numpy(sol.ys)[-1]
        finite = bool(np.all(np.isfinite(y)))
        point.update({"abs_error": float(np.max(np.abs(y - ref))) if finite else math.inf,
                      "rel_error": max_relative_error(y, ref), "scd": scd(y, ref) if finite else -math.inf,
                      "mescd": mescd(y, ref, rtol=rtol, atol=atol) if finite else -math.inf})
    else:
        point.update({"abs_error": None, "rel_error": None, "scd": None, "mescd": None})
    point["wall_s"] = statistics.median(walls)
    point["wall_repeats"] = len(walls)
    return point


def work_precision(problem: Problem, method: str, *, backend: str = "reference",
                   tolerances: Sequence[float] = TOLERANCES, library: str = "numpy", dtype: str = "float64",
                   atol: AtolRule = None, repeats: int = 3, max_steps: int | None = MAX_STEPS,
                   **options: Any) -> Record:
    """Error (max abs, max rel, scd) at the final time and work (nfev, njev, nlu, steps, time)
    for each tolerance in ``tolerances``; see the module docstring for the fields.

    ``atol``: None (:func:`default_atol`), ``"rtol"`` (atol = rtol), a number, or a callable
    ``(problem, rtol) -> atol``. ``options`` go to the backend's ``solve`` unchanged (for
    example ``jac=True`` for the problem's analytic Jacobian). ``max_steps`` bounds every
    solve (None: the backend's own default). The error is measured against the problem's
    closed form or reference value at ``t_span[1]``; a problem with neither raises
    ``ValueError``. Bad arguments raise; a failed solve is a recorded point.
    """
    tols = _check_tolerances(tolerances)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r}, but it must be a positive int")
    ref = reference_final(problem)
    opts = dict(options)
    if max_steps is not None:
        opts["max_steps"] = max_steps
    points, rule = [], ""
    for rtol in tols:
        a, rule = _atol_for(problem, rtol, atol)
        points.append(_point(problem, method, ref, rtol, a, backend=backend, library=library, dtype=dtype,
                             repeats=repeats, options=opts))
    failures = [p for p in points if p["status"] != "success"]
    scds = [p["scd"] for p in points if p["scd"] is not None and math.isfinite(p["scd"])]
    details = {"points": points, "atol_rule": rule, "options": {k: v for k, v in opts.items()},
               "error_at": float(problem.t_span[1])}
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
