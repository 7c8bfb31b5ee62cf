"""Agreement: the same method (same tableau, same steps) gives the same numbers in every
backend and on every array library, to near round-off."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import as_numpy, eps_of
from ..problems import Problem
from ..records import Record
from ._common import backend_label, method_info, run

#: "a few ulps per step": the same reference code on another array library
ULPS_PER_STEP = 4.0
#: another library with the same tableau sums the stages in its own order
CROSS_BACKEND_ULPS_PER_STEP = 64.0


def backend_agreement(problem: Problem, method: str, *, backend: str, library: str = "numpy",
                      baseline: str = "reference", baseline_method: str | None = None, dtype: str = "float64",
                      n_steps: int | None = 32, rtol: float = 1e-6, atol: float = 1e-9, t_eval: Any = None,
                      bound: float | None = None, final_only: bool = False) -> Record:
    """Difference between ``backend``/``method`` and ``baseline``/``baseline_method`` in ulps per step.

    Fixed-step when ``n_steps`` is given, else adaptive (then the step counts must match too).
    ``baseline_method`` defaults to the reference tableau the backend declares for ``method``.
    ``final_only`` compares only the value at t1: output times off the step grid are read off
    each library's own interpolant (torchdiffeq's fixed grid: linear), which need not agree
    to round-off, while the grid itself, which the output times shape, must.
    """
    if baseline_method is None:
        baseline_method = method_info(method, backend=backend, library=library).tableau or method
    if bound is None:
        bound = ULPS_PER_STEP if backend.startswith("reference") else CROSS_BACKEND_ULPS_PER_STEP
    kw: dict[str, Any] = {"n_steps": n_steps} if n_steps else {"rtol": rtol, "atol": atol}
    if t_eval is not None:
        kw["t_eval"] = t_eval
    a = run(problem, baseline_method, backend=baseline, dtype=dtype, **kw)
    b = run(problem, method, backend=backend, library=library, dtype=dtype, **kw)
    ya, yb = as_numpy(a.ys), as_numpy(b.ys)
    if final_only:
        ya, yb = ya[-1:], yb[-1:]
    steps = max(1, a.stats.accepted + a.stats.rejected)
    scale = max(1.0, float(np.max(np.abs(ya))))
    diff = float(np.max(np.abs(ya - yb))) if a.success and b.success else float("inf")
    ulps = diff / (scale * eps_of(dtype) * steps)
    same_work = (a.stats.accepted, a.stats.rejected) == (b.stats.accepted, b.stats.rejected)
    details = {"baseline": f"{baseline}/{baseline_method}", "steps": steps, "max_abs_diff": diff,
               "baseline_stats": a.stats.to_dict(), "stats": b.stats.to_dict(), "same_work": same_work,
               "status": [a.status.code, b.status.code]}
    ok = ulps <= bound and same_work and a.success and b.success
    msg = ""
    if not (a.success and b.success):
        msg = f"a solve failed: {a.status.code}, {b.status.code}"
    elif not same_work:
        msg = f"steps differ: {b.stats.to_dict()} vs {baseline} {a.stats.to_dict()}"
    elif ulps > bound:
        msg = f"difference={ulps:.3g} ulps/step, but should be <= {bound}"
    return Record(property="backend_agreement", method=method, problem=problem.name,
                  backend=backend_label(backend, library), library=library, dtype=dtype, measured=ulps,
                  expected=bound, verdict="pass" if ok else "fail", message=msg, details=details)


def library_agreement(problem: Problem, method: str, *, library: str, baseline: str = "numpy",
                      dtype: str = "float64", n_steps: int | None = 32, rtol: float = 1e-6, atol: float = 1e-9,
                      t_eval: Any = None, bound: float = ULPS_PER_STEP) -> Record:
    """The reference on ``library`` against the reference on ``baseline`` (NumPy)."""
    if baseline != "numpy":
        raise ValueError(f"baseline={baseline!r}; the reference baseline library is numpy")
    rec = backend_agreement(problem, method, backend="reference", library=library, baseline="reference",
                            baseline_method=method, dtype=dtype, n_steps=n_steps, rtol=rtol, atol=atol,
                            t_eval=t_eval, bound=bound)
    rec.property = "library_agreement"
    return rec
