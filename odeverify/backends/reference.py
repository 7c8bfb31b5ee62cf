"""The reference integrator as a backend (NumPy, PyTorch or JAX arrays)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _xp
from ..control import PIController
from ..integrate import solve
from ..problems import Problem
from ..solution import Solution
from ..solvers import SOLVERS
from .base import Backend, Capabilities, MethodInfo


class ReferenceBackend(Backend):
    """odeverify's own integrator; every option is honoured."""

    def __init__(self, library: str = "numpy") -> None:
        if library not in _xp.ARRAY_LIBRARIES:
            raise ValueError(f"library={library!r}; expected one of {', '.join(_xp.ARRAY_LIBRARIES)}")
        self.library = library
        self.name = "reference" if library == "numpy" else f"reference-{library}"
        self.install_hint = {"numpy": "", "torch": "pip install 'odeverify[torch]'",
                             "jax": "pip install 'odeverify[jax]'",
                             "array_api_strict": "pip install 'odeverify[test]'"}[library]

    def _import(self) -> Any:
        return _xp.get_namespace(self.library)

    def capabilities(self) -> Capabilities:
        methods = {}
        for name, s in SOLVERS.items():
            methods[name] = MethodInfo(name=name, order=s.order, adaptive=bool(s.adaptive), fixed=True, dense=True,
                                       dense_order=s.dense_order, embedded_order=s.embedded_order, tableau=name,
                                       error_order=s.error_order if s.adaptive else None)
        return Capabilities(methods=methods, dtypes=("float64", "float32"), devices=("cpu",),
                            options={}, per_sample=True,
                            notes="batch='shared' (default) or 'per-sample'; per_sample refers to the latter")

    def _solve(self, problem: Problem, method: MethodInfo, y0: np.ndarray | None, options: dict[str, Any],
               dtype: str, device: str) -> Solution:
        xp = _xp.get_namespace(self.library)
        dt = getattr(xp, dtype)
        f = problem.vector_field(xp, dt)
        y = problem.y0_array(xp, dt) if y0 is None else xp.asarray(y0, dtype=dt)
        ctrl_keys = {"safety": "safety", "factor_min": "factor_min", "factor_max": "factor_max"}
        ctrl_kwargs = {v: options.pop(k) for k, v in ctrl_keys.items() if options.get(k) is not None}
        for k in ctrl_keys:
            options.pop(k, None)
        controller = PIController(**ctrl_kwargs) if ctrl_kwargs else None
        kwargs = {k: v for k, v in options.items() if v is not None}
        return solve(f, y, problem.t_span, method=method.name, controller=controller, **kwargs)
