"""torchcde (``cdeint`` over its interpolation coefficients) as a backend for CDEs only.

Like torchsde for SDEs, torchcde solves nothing else: ``Capabilities.methods`` is empty and its
methods are CDE methods (:meth:`Backend.solve_cde`, ``backends/_cde_driver.py``): torchdiffeq's
solvers, which ``torchcde.cdeint`` calls (torchcde 0.2.5, ``solver.py``: ``cdeint`` wraps
``X.derivative(t)`` and the field into ``_VectorField`` and calls ``torchdiffeq.odeint``, or
``odeint_adjoint`` when ``adjoint=True``).

The control is torchcde's interpolation of THE SAME data as odeverify's (the problem's observation
times and filled values, time channel included):

- ``linear``: ``linear_interpolation_coeffs(x, t)`` -> ``LinearInterpolation(coeffs, t)``;
- ``rectilinear``: ``linear_interpolation_coeffs(x, rectilinear=0)`` (time must be channel 0) ->
  ``LinearInterpolation(coeffs)`` over torchcde's index parameter ``0, 1, ..., 2K``, which is
  odeverify's parameter for rectilinear too;
- ``natural_cubic``: ``natural_cubic_coeffs(x, t)`` -> ``CubicSpline(coeffs, t)``;
- ``hermite_cubic_bd``: ``hermite_cubic_coefficients_with_backward_differences(x, t)`` ->
  ``CubicSpline(coeffs, t)``.

**Knots** (read from torchcde 0.2.5 and torchdiffeq 0.2.5): ``cdeint`` passes nothing about the
knots to torchdiffeq; its README tells users of linear interpolation to pass
``options=dict(jump_t=X.grid_points)``. torchcde locates ``t`` with
``torch.bucketize(t, grid).sub(1)`` (right=False), so AT a knot ``t_k`` ``X.derivative`` is the
derivative of the piece on the LEFT of ``t_k`` (the piece ending there); a step starting at ``t_k``
sees the wrong piece in its first stage unless the solver perturbs ``t`` (torchdiffeq's
``jump_t``: the last stage of a step at ``nextafter(t1, -inf)``, and after a jump the first stage
re-evaluated at ``nextafter(t_k, +inf)``; on fixed grids ``perturb=True`` does the same for every
step). ``knots="jump"`` passes ``jump_t`` (adaptive) or a grid with the knots plus
``perturb=True`` (fixed); ``knots="step"`` passes ``step_t`` (adaptive: the step lands on the knot
but the FSAL stage evaluated at ``t_k``, on the left piece, is reused as the next step's first
stage) or the grid with the knots and no perturbation; ``knots="none"`` passes nothing.

**Counting**: ``nfev`` is every call of the field (torchcde's ``_check_compatability`` calls it
once at ``t0`` before solving, counted too); torchdiffeq's step callbacks are looked up on the
function ``odeint`` receives, torchcde's ``_VectorField``, which has none, so adaptive steps are
not observable (``accepted = rejected = -1``); a fixed grid's steps are its intervals.
``max_steps`` becomes torchdiffeq's ``max_num_steps``, which counts per output interval.

**Gradients** (:meth:`Backend.cde_gradient`): ``backprop`` (autograd through ``cdeint(adjoint=False)``,
discrete) and ``adjoint`` (``cdeint(adjoint=True)``: torchdiffeq's ``odeint_adjoint`` with
``adjoint_params`` = the field's parameters and the coefficients, as torchcde's warning asks; the
coefficients' gradient flows back to the data through the coefficient function), with respect to
z0, the data values and the field's parameters.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import _xp
from ..gradients._spec import GradientResult
from ..problems import Problem
from ..solution import Solution, Stats, Status
from ._cde_driver import CDECapabilities, cde_gradient_params, fixed_grid_with_knots, output_times
from .base import Backend, Capabilities, MethodInfo, UnsupportedOption

#: torchdiffeq methods cdeint runs here (the Adams methods are left out: their fixed grid takes
#: no perturbation, so they cannot meet a knot on its right side)
METHODS = ("dopri5", "bosh3", "fehlberg2", "adaptive_heun", "dopri8", "euler", "midpoint", "heun2", "heun3", "rk4")
GRADIENT_MODES = ("backprop", "adjoint")


class TorchcdeBackend(Backend):
    """torchcde 0.2.5: CDE methods only (``solve_cde``, ``cde_gradient``)."""

    name = "torchcde"
    install_hint = "pip install 'odeverify[torch]' (torchcde==0.2.5)"

    def _import(self) -> Any:
        import torch
        import torchcde

        return torch, torchcde

    def capabilities(self) -> Capabilities:
        return Capabilities(methods={}, dtypes=("float64", "float32"), devices=("cpu",),
                            notes="CDE methods only (solve_cde): torchcde.cdeint over torchdiffeq's solvers")

    def _solve(self, problem: Problem, method: MethodInfo, y0: np.ndarray | None, options: dict[str, Any],
               dtype: str, device: str) -> Solution:  # pragma: no cover - no ODE method to reach it
        raise NotImplementedError("torchcde solves CDEs only (solve_cde)")

    def _cde_adapter(self) -> Any:
        import sys

        return sys.modules[__name__]

#: the methods a quick run and a full run grade by default (``_cde_driver.cde_methods``)
QUICK_METHODS = ("dopri5",)
DEFAULT_METHODS = ("dopri5", "bosh3", "rk4", "euler")


def capabilities(backend: Any) -> CDECapabilities:
    from ..problems.cde import INTERPOLATIONS
    from .torchdiffeq_backend import TorchdiffeqBackend

    known = TorchdiffeqBackend().capabilities().methods
    return CDECapabilities(methods={m: known[m] for m in METHODS if m in known}, interpolations=INTERPOLATIONS,
                           gradient_modes=GRADIENT_MODES, discrete_gradient_modes=("backprop",),
                           knots=("jump", "step", "none"), controls=("derivative",),
                           refusals={"control": "cdeint always solves dz/dt = f(z) dX/dt (X.derivative)"},
                           notes="torchcde.cdeint (torchdiffeq backend); knots by jump_t / step_t / perturb")


# ----------------------------------------------------------------------------- the control
def _check_plain(problem: Any) -> None:
    if problem.control.warp is not None:
        raise UnsupportedOption(f"torchcde interpolates data at observation times; problem {problem.name!r} has a"
                                " warped control X(psi(s)), which no torchcde coefficient function builds")


def control_path(problem: Any, values: Any = None, dtype: str = "float64") -> tuple[Any, Any]:
    """``(X, coeffs)``: torchcde's interpolation of the problem's data (``values``: a tensor that
    replaces the data, e.g. one that records gradients)."""
    import torch
    import torchcde

    _check_plain(problem)
    ctrl = problem.control
    dt_ = getattr(torch, dtype)
    t = torch.tensor(ctrl.times, dtype=dt_)
    x = torch.tensor(ctrl.values, dtype=dt_) if values is None else values
    return _coefficients(torchcde, ctrl.kind, t, x)


def _coefficients(torchcde: Any, kind: str, t: Any, x: Any) -> tuple[Any, Any]:
    if kind == "linear":
        coeffs = torchcde.linear_interpolation_coeffs(x, t=t)
        return torchcde.LinearInterpolation(coeffs, t=t), coeffs
    if kind == "rectilinear":
        coeffs = torchcde.linear_interpolation_coeffs(x, rectilinear=0)
        return torchcde.LinearInterpolation(coeffs), coeffs
    if kind == "natural_cubic":
        coeffs = torchcde.natural_cubic_coeffs(x, t=t)
        return torchcde.CubicSpline(coeffs, t=t), coeffs
    if kind == "hermite_cubic_bd":
        coeffs = torchcde.hermite_cubic_coefficients_with_backward_differences(x, t=t)
        return torchcde.CubicSpline(coeffs, t=t), coeffs
    raise ValueError(f"interpolation={kind!r} has no torchcde coefficients")  # pragma: no cover


def interpolant(problem: Any, ts: Any, *, values: Any = None, kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """torchcde's ``X(t)`` and ``X.derivative(t)`` (float64, shapes ``(m, c)``) at the parameter
    values ``ts``, of the problem's data, or of ``values`` (NumPy, NaN allowed: torchcde's own
    handling of missing values) with the interpolation ``kind`` (default the problem's)."""
    import torch
    import torchcde

    _check_plain(problem)
    ctrl = problem.control
    t = torch.tensor(ctrl.times, dtype=torch.float64)
    x = torch.tensor(ctrl.values if values is None else np.asarray(values, dtype=np.float64), dtype=torch.float64)
    X, _ = _coefficients(torchcde, kind or ctrl.kind, t, x)
    q = torch.tensor(np.asarray(ts, dtype=np.float64), dtype=torch.float64)
    return (X.evaluate(q).detach().numpy().astype(np.float64),
            X.derivative(q).detach().numpy().astype(np.float64))


# ----------------------------------------------------------------------------- solving
def _module(problem: Any, dtype: str, requires_grad: bool = False) -> Any:
    import torch

    xp = _xp.get_namespace("torch")
    dt_ = getattr(torch, dtype)
    matrix = problem.field.matrix

    class _Func(torch.nn.Module):
        """f_theta(z) -> (hidden, channels), counting its calls."""

        def __init__(self) -> None:
            super().__init__()
            self.theta = torch.nn.ParameterDict({k: torch.nn.Parameter(torch.tensor(np.asarray(v), dtype=dt_),
                                                                      requires_grad=requires_grad)
                                                 for k, v in problem.field.params.items()})
            self.nfev = 0

        def forward(self, t: Any, z: Any) -> Any:
            self.nfev += 1
            return matrix(xp, z, dict(self.theta))

    return _Func()


def _kwargs(problem: Any, info: MethodInfo, options: dict[str, Any], dtype: str) -> tuple[dict[str, Any], int]:
    """cdeint's keyword arguments for the options, and the fixed grid's step count (-1: adaptive)."""
    import torch

    knots = options.get("knots") or "jump"
    fixed = options.get("dt") is not None or options.get("n_steps") is not None
    kw: dict[str, Any] = {"method": info.name}
    opts: dict[str, Any] = {}
    inner = torch.tensor(problem.knots, dtype=getattr(torch, dtype))
    steps = -1
    if fixed:
        grid = fixed_grid_with_knots(problem, options, knots)
        steps = grid.size - 1
        if options.get("max_steps") is not None and steps > options["max_steps"]:
            raise RuntimeError(f"max_steps={options['max_steps']} is fewer than the {steps} steps of the fixed grid")
        gt = torch.tensor(grid, dtype=getattr(torch, dtype))
        opts["grid_constructor"] = lambda f, y0, t: gt
        opts["perturb"] = knots == "jump"
    else:
        for key in ("rtol", "atol"):
            if options.get(key) is not None:
                kw[key] = options[key]
        if knots == "jump" and inner.numel():
            opts["jump_t"] = inner
        elif knots == "step" and inner.numel():
            opts["step_t"] = inner
        if options.get("max_steps") is not None:
            opts["max_num_steps"] = int(options["max_steps"])
    kw["options"] = opts
    return kw, steps


def _times(problem: Any, ts: np.ndarray, dtype: str) -> tuple[Any, bool]:
    """cdeint's ``t`` (it starts at ``t[0]``): ``t0`` prepended when the output times start later."""
    import torch

    t0 = problem.t_span[0]
    lead = not (ts.size and ts[0] == t0)
    full = np.concatenate([[t0], ts]) if lead else ts
    return torch.tensor(full, dtype=getattr(torch, dtype)), lead


def solve(backend: Any, problem: Any, info: MethodInfo, options: dict[str, Any], dtype: str, device: str) -> Solution:
    import torch
    import torchcde

    _check_plain(problem)
    ts = output_times(problem, options)
    func = _module(problem, dtype)
    X, _ = control_path(problem, dtype=dtype)
    kw, steps = _kwargs(problem, info, options, dtype)
    t, lead = _times(problem, ts, dtype)
    z0 = torch.tensor(problem.y0, dtype=getattr(torch, dtype))
    start = time.perf_counter()
    with torch.no_grad():
        out = torchcde.cdeint(X=X, func=func, z0=z0, t=t, adjoint=False, **kw)
    ys = out.numpy().astype(np.float64)[1:] if lead else out.numpy().astype(np.float64)
    status = Status.SUCCESS if np.all(np.isfinite(ys)) else Status.NONFINITE
    stats = Stats(nfev=func.nfev, accepted=steps, rejected=0 if steps >= 0 else -1)
    return Solution(ts=ts, ys=ys, status=status, stats=stats, method=info.name,
                    message="" if status.ok else "torchcde returned non-finite values",
                    timing={"wall_s": time.perf_counter() - start, "compile_s": 0.0})


def gradient(backend: Any, problem: Any, info: MethodInfo, mode: str, loss: Any, options: dict[str, Any], dtype: str,
             device: str) -> GradientResult:
    import torch
    import torchcde

    _check_plain(problem)
    xp = _xp.get_namespace("torch")
    dt_ = getattr(torch, dtype)
    ts = np.asarray(loss.t_eval, dtype=np.float64)
    func = _module(problem, dtype, requires_grad=True)
    values = torch.tensor(problem.control.values, dtype=dt_, requires_grad=True)
    X, coeffs = control_path(problem, values=values, dtype=dtype)
    kw, steps = _kwargs(problem, info, options, dtype)
    if mode == "adjoint":
        kw["adjoint_params"] = tuple(func.parameters()) + (coeffs,)
        for key in ("rtol", "atol"):
            if key in kw:
                kw[f"adjoint_{key}"] = kw[key]
        if "options" in kw:
            kw["adjoint_options"] = {k: v for k, v in kw["options"].items() if k in ("jump_t", "step_t",
                                                                                     "max_num_steps")}
    t, lead = _times(problem, ts, dtype)
    z0 = torch.tensor(problem.y0, dtype=dt_, requires_grad=True)
    start = time.perf_counter()
    out = torchcde.cdeint(X=X, func=func, z0=z0, t=t, adjoint=mode == "adjoint", **kw)
    ys = out[1:] if lead else out
    value = loss.value(xp, ys)
    nf = func.nfev
    mid = time.perf_counter()
    names = list(func.theta.keys())
    leaves = [z0, values, *[func.theta[k] for k in names]]
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]
    gp = {"values": grads[1].detach().numpy().astype(np.float64)}
    gp.update({k: g.detach().numpy().astype(np.float64) for k, g in zip(names, grads[2:])})
    order = list(cde_gradient_params(problem))
    return GradientResult(mode=mode, method=info.name, backend=backend.name, library="torchcde",
                          status=Status.SUCCESS if np.isfinite(float(value.detach())) else Status.NONFINITE,
                          loss=float(value.detach()), grad_y0=grads[0].detach().numpy().astype(np.float64),
                          grad_params={k: gp[k] for k in order if k in gp}, nfev_forward=nf,
                          nfev_backward=func.nfev - nf, steps_forward=steps,
                          timing={"forward_s": mid - start, "backward_s": time.perf_counter() - mid},
                          options={k: v for k, v in options.items() if v is not None})


__all__ = ["GRADIENT_MODES", "METHODS", "TorchcdeBackend", "capabilities", "control_path", "gradient", "interpolant",
           "solve"]
