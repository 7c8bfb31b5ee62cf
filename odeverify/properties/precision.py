"""float32 against float64: the same solve in single precision stays within what its
tolerance and single-precision round-off allow."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import EPS32, as_numpy
from ..problems import Problem
from ..records import Record
from ._common import backend_label, run

#: allowed float32-float64 difference: FACTOR * (tol + steps * eps32), relative to max(1, |y|)
FACTOR = 10.0


def precision_agreement(problem: Problem, method: str, *, backend: str = "reference", library: str = "numpy",
                        rtol: float = 1e-5, atol: float = 1e-6, n_steps: int | None = None, **extra: Any) -> Record:
    """max |y32 - y64| / max(1, |y64|) against FACTOR * (rtol + steps * eps32)."""
    kw: dict[str, Any] = {"n_steps": n_steps} if n_steps else {"rtol": rtol, "atol": atol}
    kw.update(extra)
    a = run(problem, method, backend=backend, library=library, dtype="float64", **kw)
    b = run(problem, method, backend=backend, library=library, dtype="float32", **kw)
    common = dict(property="precision_agreement", method=method, problem=problem.name, dtype="float32",
                  backend=backend_label(backend, library), library=library)
    if not (a.success and b.success):
        return Record(measured=None, expected=None, verdict="error", status=b.status.code,
                      message=f"a solve failed: float64 {a.status.code}, float32 {b.status.code}", **common)
    ya, yb = as_numpy(a.ys), as_numpy(b.ys)
    steps = max(1, b.stats.accepted + b.stats.rejected)
    diff = float(np.max(np.abs(ya - yb)) / max(1.0, float(np.max(np.abs(ya)))))
    bound = FACTOR * ((0.0 if n_steps else rtol) + steps * EPS32)
    ok = diff <= bound
    return Record(measured=diff, expected=bound, verdict="pass" if ok else "fail",
                  message="" if ok else f"float32 differs by {diff:.3g}, but should be <= {bound:.3g}",
                  details={"steps": steps, "float64_stats": a.stats.to_dict(), "float32_stats": b.stats.to_dict()},
                  **common)
