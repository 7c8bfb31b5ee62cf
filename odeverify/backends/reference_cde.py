"""The reference's CDE adapter: ``dz/dt = f(z) dX/dt`` (``CDEProblem.rhs``) through the one loop
(``integrate.solve``), stepping on the knots with ``tstops`` (``knots="jump"``: steps end on every
knot and the field is evaluated one ulp inside each step, on the step's own side of the knot) or
not at all (``knots="none"``). The loop has no "step on the knot but evaluate at it" mode, so
``knots="step"`` is refused, and it always uses dX/dt (``control="derivative"``).

Gradient mode ``discrete``: PyTorch autograd through that same loop (on the knots), with respect to
z0, the data values and the field's parameters (the NumPy reference differentiates on PyTorch,
as its ODE gradients do).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import _xp
from ..gradients._spec import GradientResult
from ..solution import Solution, Status
from ._cde_driver import CDECapabilities, cde_gradient_params, output_times

#: the methods a quick run and a full run grade by default (``_cde_driver.cde_methods``)
QUICK_METHODS = ("dopri5",)
DEFAULT_METHODS = ("dopri5", "tsit5", "bosh3", "dop853", "rk4", "heun")


def capabilities(backend: Any) -> CDECapabilities:
    from ..problems.cde import INTERPOLATIONS

    import importlib.util

    # find_spec, not an import: declaring the modes must not cost PyTorch's import
    modes = ("discrete",) if backend.library in ("numpy", "torch") and importlib.util.find_spec("torch") else ()
    return CDECapabilities(methods=backend.capabilities().methods, interpolations=INTERPOLATIONS,
                           gradient_modes=modes, discrete_gradient_modes=modes, knots=("jump", "none"),
                           controls=("derivative",),
                           refusals={"knots": "the one loop either lands on a knot and evaluates inside the step"
                                              " (tstops: 'jump') or ignores it ('none')",
                                     "control": "the reference solves the ODE dz/dt = f(z) dX/dt"},
                           notes="integrate.solve(..., tstops=knots) on CDEProblem.rhs")


def _params(problem: Any, xp: Any, dtype: Any, values: Any = None) -> dict[str, Any]:
    p: dict[str, Any] = {k: xp.asarray(np.asarray(v, dtype=np.float64), dtype=dtype)
                         for k, v in problem.field.params.items()}
    p["values"] = xp.asarray(problem.control.values, dtype=dtype) if values is None else values
    p["control"] = problem.control
    return p


def _solve(problem: Any, xp: Any, dt_: Any, method: str, options: dict[str, Any], p: dict[str, Any],
           y0: Any) -> Solution:
    from ..integrate import solve

    knots = options.pop("knots", None) or "jump"
    options.pop("control", None)
    kwargs = {k: v for k, v in options.items() if v is not None}

    def f(t: Any, y: Any) -> Any:
        return problem.rhs(xp, t, y, p)

    return solve(f, y0, problem.t_span, method=method, tstops=problem.knots if knots == "jump" else None, **kwargs)


def solve(backend: Any, problem: Any, info: Any, options: dict[str, Any], dtype: str, device: str) -> Solution:
    xp = _xp.get_namespace(backend.library)
    dt_ = getattr(xp, dtype)
    p = _params(problem, xp, dt_)
    sol = _solve(problem, xp, dt_, info.name, options, p, xp.asarray(problem.y0, dtype=dt_))
    if backend.library != "numpy":
        sol.ys = np.asarray(_xp.to_numpy(sol.ys), dtype=np.float64)
    return sol


def gradient(backend: Any, problem: Any, info: Any, mode: str, loss: Any, options: dict[str, Any], dtype: str,
             device: str) -> GradientResult:
    """``discrete``: autograd through the reference loop on PyTorch."""
    import torch

    xp = _xp.get_namespace("torch")
    dt_ = getattr(torch, dtype)
    theta = {k: torch.tensor(v, dtype=dt_, requires_grad=True) for k, v in cde_gradient_params(problem).items()}
    p = dict(theta)
    p["control"] = problem.control
    y0 = torch.tensor(problem.y0, dtype=dt_, requires_grad=True)
    opts = dict(options, t_eval=loss.t_eval)
    start = time.perf_counter()
    sol = _solve(problem, xp, dt_, info.name, opts, p, y0)
    mid = time.perf_counter()
    if not sol.status.ok:
        from ._cde_driver import failed_cde_gradient

        return failed_cde_gradient(problem, mode, info.name, backend.name, sol.status, sol.message)
    value = loss.value(xp, sol.ys)
    leaves = [y0, *theta.values()]
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]
    return GradientResult(mode=mode, method=info.name, backend=backend.name, library="torch", status=Status.SUCCESS,
                          loss=float(value.detach()), grad_y0=grads[0].detach().numpy().astype(np.float64),
                          grad_params={k: g.detach().numpy().astype(np.float64) for k, g in zip(theta, grads[1:])},
                          nfev_forward=sol.stats.nfev, steps_forward=sol.stats.accepted,
                          timing={"forward_s": mid - start, "backward_s": time.perf_counter() - mid},
                          options={k: v for k, v in options.items() if v is not None})


__all__ = ["capabilities", "gradient", "output_times", "solve"]
