"""Accuracy against the published reference values of the problem library."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..metrics import as_numpy, roundoff_floor, scaled_error
from ..problems import Problem
from ..records import Record
from ._common import backend_label, method_info, run

#: a backend may be this much less accurate than the reference running the same tableau at
#: the same tolerance (error constants of the controllers differ; a larger gap is a finding)
PARITY_FACTOR = 10.0


def default_tolerance(order: int) -> float:
    """Tight enough to test, loose enough that a low-order method finishes quickly."""
    return 1e-8 if order >= 5 else (1e-6 if order >= 3 else 1e-4)


def reference_accuracy(problem: Problem, method: str, *, backend: str = "reference", library: str = "numpy",
                       tol: float | None = None, factor: float = PARITY_FACTOR, **extra: Any) -> Record:
    """Error against the problem's published reference values, and parity with the reference.

    The global error of a sensitive problem (Arenstorf, Pleiades) is many times the
    tolerance whatever the solver (judge errors against a reference, not against
    rtol), so the verdict compares like with like: the backend's error must be within
    ``factor`` of the reference backend's error with the same tableau and tolerance (plus
    round-off). Methods without a shared tableau get their digits recorded (``skip``).
    """
    info = method_info(method, backend=backend, library=library)
    refs = [r for r in problem.references if r.kind == "published"]
    if not refs:
        raise ValueError(f"problem {problem.name!r} has no published reference value")
    tol = default_tolerance(info.order) if tol is None else tol
    times = sorted({problem.t_span[0], *[r.t for r in refs]})

    def worst_error(b: str, m: str, lib: str) -> tuple[float, Any]:
        sol = run(problem, m, backend=b, library=lib, rtol=tol, atol=tol, t_eval=times, **extra)
        if not sol.success:
            return math.inf, sol
        ys = as_numpy(sol.ys)
        return max(scaled_error(ys[times.index(r.t)], np.asarray(r.y)) for r in refs), sol

    err, sol = worst_error(backend, method, library)
    common = dict(property="reference_accuracy", method=method, problem=problem.name,
                  backend=backend_label(backend, library), library=library)
    if not sol.success:
        return Record(measured=None, expected=None, verdict="error", status=sol.status.code, message=sol.message,
                      **common)
    digits = math.inf if err == 0 else -math.log10(err)
    details: dict[str, Any] = {"tol": tol, "error": err, "digits": digits, "nfev": sol.stats.nfev,
                               "sources": sorted({r.source for r in refs})}
    if info.tableau is None or not method_info(info.tableau).adaptive:
        return Record(measured=err, expected=None, verdict="skip", details=details,
                      message=f"{digits:.1f} digits at tol {tol:g}; no adaptive reference method with the same"
                              " tableau to compare with", **common)
    ref_err, _ = worst_error("reference", info.tableau, "numpy")
    bound = factor * ref_err + roundoff_floor(np.asarray(refs[0].y))
    details.update({"reference_error": ref_err, "reference_method": info.tableau})
    ok = err <= bound
    return Record(measured=err, expected=bound, verdict="pass" if ok else "fail", details=details,
                  message=f"{digits:.1f} digits at tol {tol:g} (reference {info.tableau}: {ref_err:.2g})" if ok else
                  f"error={err:.3g}, but should be <= {factor:g} x the reference {info.tableau}'s {ref_err:.3g}",
                  **common)
