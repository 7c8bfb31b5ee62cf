"""The same reference code gives the same numbers on every array library."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import as_numpy, eps_of
from ..problems import Problem
from ..records import Record
from ._common import run

#: "a few ulps per step"
ULPS_PER_STEP = 4.0


def library_agreement(problem: Problem, method: str, *, library: str, baseline: str = "numpy",
                      dtype: str = "float64", n_steps: int | None = 32, rtol: float = 1e-6, atol: float = 1e-9,
                      t_eval: Any = None, bound: float = ULPS_PER_STEP) -> Record:
    """Difference between ``library`` and ``baseline`` trajectories, in ulps per step.

    Fixed-step when ``n_steps`` is given, else adaptive (then the step counts must match too).
    """
    kw: dict[str, Any] = {"n_steps": n_steps} if n_steps else {"rtol": rtol, "atol": atol}
    if t_eval is not None:
        kw["t_eval"] = t_eval
    a = run(problem, method, library=baseline, dtype=dtype, **kw)
    b = run(problem, method, library=library, dtype=dtype, **kw)
    ya, yb = as_numpy(a.ys), as_numpy(b.ys)
    steps = max(1, a.stats.accepted + a.stats.rejected)
    scale = max(1.0, float(np.max(np.abs(ya))))
    ulps = float(np.max(np.abs(ya - yb)) / (scale * eps_of(dtype) * steps))
    same_work = (a.stats.accepted, a.stats.rejected, a.stats.nfev) == (b.stats.accepted, b.stats.rejected, b.stats.nfev)
    details = {"baseline": baseline, "steps": steps, "max_abs_diff": float(np.max(np.abs(ya - yb))),
               "baseline_stats": a.stats.to_dict(), "stats": b.stats.to_dict(), "same_work": same_work}
    ok = ulps <= bound and same_work and a.success and b.success
    msg = ""
    if not same_work:
        msg = f"work differs: {b.stats.to_dict()} vs {baseline} {a.stats.to_dict()}"
    elif ulps > bound:
        msg = f"difference={ulps:.3g} ulps/step, but should be <= {bound}"
    return Record(property="library_agreement", method=method, problem=problem.name, library=library, dtype=dtype,
                  measured=ulps, expected=bound, verdict="pass" if ok else "fail", message=msg, details=details)
