"""The CDE part of the backend contract (issue 12): :meth:`Backend.solve_cde` and
:meth:`Backend.cde_gradient` validate here, the same way for every backend, before any library
runs, then hand the problem to the backend's CDE adapter (the module its ``_cde_adapter()``
returns: ``capabilities(backend)``, ``solve(...)``, ``gradient(...)``).

A CDE solve is ``dz = f_theta(z) dX(t)`` of an :class:`~odeverify.problems.cde.CDEProblem`, the
control ``X`` an interpolation (``interpolation=``, default the problem's) of the problem's data:
its observation times and its (filled) values, the time channel included where the problem has
one. Every adapter builds its library's interpolation from THESE arrays (the same data), so the
records compare libraries, not inputs.

Options (:data:`CDE_OPTIONS`):

- ``rtol``, ``atol`` (adaptive), or ``dt`` / ``n_steps`` (fixed steps), ``max_steps``, ``t_eval``;
- ``knots``: how the solver meets the interpolation's knots (where ``X`` is only piecewise smooth),
  one of :data:`KNOT_RULES`: ``"jump"`` (default; steps end on every knot and the field is
  evaluated afresh on the knot's right side: the reference's ``tstops``, torchdiffeq's
  ``jump_t`` (with ``perturb=True`` on fixed grids), diffrax's ``ClipStepSizeController(jump_ts=)``),
  ``"step"`` (steps end on every knot, but the library evaluates the field AT the knot, where
  torchcde and diffrax read the derivative of the piece on the knot's left, and first-same-as-last
  methods reuse that evaluation: torchdiffeq's ``step_t``, diffrax's ``step_ts``/``StepTo``), or
  ``"none"`` (the library is told nothing: the error control has to find the kinks);
- ``control``: ``"derivative"`` (default: the ODE ``dz/dt = f(z) dX/dt``, what every library
  does) or ``"increment"`` (diffrax's ``ControlTerm`` solved directly: each step contracts the
  field with the increment ``X(t_(k+1)) - X(t_k)``, as if ``X`` were linear over the step).

A backend refuses (``UnsupportedOption``) a knot rule, control form, interpolation or gradient
mode its adapter does not declare. Gradients (:meth:`Backend.cde_gradient`) are dL/dz0 (``grad_y0``,
z0 held fixed) and dL/dtheta with theta = :func:`cde_gradient_params`: ``"values"`` (the data, time
channel included: the partial derivative through the control ``X`` with z0 fixed; add
``CDEProblem.initial_gradient(grad_y0)["values"]`` for the total through ``z0 = zeta(X(t0))``) and
the field's parameters. A failure gives NaN gradients with the status, never zeros.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from ..gradients._spec import GradientResult, Loss
from ..solution import Solution, Status
from .base import MethodInfo, UnsupportedOption, _timed, classify_exception, failed_solution, validate_options

#: options every backend's ``solve_cde`` accepts (and honours or refuses)
CDE_OPTIONS = ("rtol", "atol", "dt", "n_steps", "max_steps", "t_eval", "knots", "control")
#: how a solve meets the interpolation's knots (see the module doc)
KNOT_RULES = ("jump", "step", "none")
#: how the control enters a step: dX/dt (the ODE) or the increment of X over the step
CONTROL_FORMS = ("derivative", "increment")
#: ``wrt`` of a CDE gradient: everything, z0 only, theta only (data and field), the data only
CDE_WRT = ("all", "y0", "params", "data")
#: options every backend's ``cde_gradient`` accepts
CDE_GRADIENT_OPTIONS = ("rtol", "atol", "dt", "n_steps", "max_steps", "knots", "wrt")


@dataclass(frozen=True)
class CDECapabilities:
    """What a backend's CDE adapter declares: its methods (the library's own names, with the
    orders it claims), interpolations, gradient modes (and the discrete ones: the derivative of
    the computed solution itself), knot rules and control forms."""

    methods: Mapping[str, MethodInfo]
    interpolations: tuple[str, ...]
    gradient_modes: tuple[str, ...] = ()
    discrete_gradient_modes: tuple[str, ...] = ()
    knots: tuple[str, ...] = ("jump",)
    controls: tuple[str, ...] = ("derivative",)
    #: which knot rule (and control form) each fixed-step / adaptive solve can honour, as reasons
    refusals: Mapping[str, str] = field(default_factory=dict)
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", MappingProxyType(dict(self.methods)))
        object.__setattr__(self, "refusals", MappingProxyType(dict(self.refusals)))


def _closest(value: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.4)
    return f"; did you mean {close[0]!r}?" if close else ""


def adapter_of(backend: Any) -> Any:
    """The backend's CDE adapter module; a backend without one raises ValueError saying so."""
    adapter = backend._cde_adapter()
    if adapter is None:
        raise ValueError(f"{backend.name} solves no CDEs (backends with CDE adapters: reference, torchcde, diffrax)")
    return adapter


def cde_capabilities(backend: Any) -> CDECapabilities | None:
    """What ``backend`` declares for CDEs, or None when it solves none."""
    adapter = backend._cde_adapter()
    return None if adapter is None else adapter.capabilities(backend)


def cde_methods(backend: Any, quick: bool = False) -> list[str]:
    """The CDE methods a run grades on ``backend`` by default: its adapter's ``QUICK_METHODS`` or
    ``DEFAULT_METHODS`` (else every method it declares); none where it solves no CDEs."""
    adapter = backend._cde_adapter()
    if adapter is None:
        return []
    names = getattr(adapter, "QUICK_METHODS" if quick else "DEFAULT_METHODS", None)
    return list(names) if names is not None else list(adapter.capabilities(backend).methods)


def check_method(backend: Any, method: Any) -> None:
    """ValueError naming ``method`` (with the closest match) if ``backend`` has no such CDE method."""
    _method(adapter_of(backend).capabilities(backend), method, backend.name)


def cde_gradient_params(problem: Any) -> dict[str, np.ndarray]:
    """theta of a CDE gradient: ``"values"`` (the control's data, shape ``(K+1, c)``) and every
    float array of the field's parameters, as NumPy float64 copies."""
    out = {"values": np.array(problem.control.values, dtype=np.float64)}
    for key, value in problem.field.params.items():
        arr = np.asarray(value)
        if np.issubdtype(arr.dtype, np.floating):
            out[key] = np.array(arr, dtype=np.float64)
    return out


def with_interpolation(problem: Any, interpolation: Any) -> Any:
    """``problem`` with its control rebuilt as ``interpolation`` of the same (filled) data; the
    problem itself when ``interpolation`` is None or already its own. A warped control cannot be
    re-interpolated (ValueError)."""
    from ..problems import cde

    if interpolation is None or interpolation == problem.interpolation:
        return problem
    kind = cde.check_interpolation(interpolation)
    ctrl = problem.control
    if ctrl.warp is not None:
        raise ValueError(f"interpolation={kind!r}, but problem {problem.name!r} has a warped control; build the"
                         " warped problem from a problem with that interpolation")
    raw = ctrl.values[:, 1:] if ctrl.include_time else ctrl.values
    if kind == "rectilinear" and not ctrl.include_time:
        raise ValueError(f"interpolation='rectilinear' needs time as a channel, but problem {problem.name!r} has"
                         " none (build it with include_time=True)")
    if problem.interpolation == "rectilinear":
        raise ValueError(f"problem {problem.name!r} is parametrised by rectilinear's index, not time: it cannot"
                         f" be re-interpolated as {kind!r}")
    new = cde.make_control(ctrl.times, raw, kind, include_time=ctrl.include_time)
    return problem.with_control(new, name=f"{problem.name}[{kind}]")


def _method(caps: CDECapabilities, method: Any, backend: str) -> MethodInfo:
    if not isinstance(method, str):
        raise TypeError(f"method={method!r}, but it must be a str naming one of {backend}'s CDE methods")
    if method not in caps.methods:
        raise ValueError(f"{backend} has no CDE method {method!r}{_closest(method, caps.methods)} Choices:"
                         f" {', '.join(caps.methods) or 'none'}")
    return caps.methods[method]


def validate_cde(problem: Any, info: MethodInfo, options: Mapping[str, Any], caps: CDECapabilities,
                 backend: str, allowed: tuple[str, ...] = CDE_OPTIONS) -> None:
    """Bad arguments of a CDE solve raise here (ValueError/TypeError), the same way for every
    backend; what this backend cannot honour raises ``UnsupportedOption`` naming the reason."""
    from ..problems.cde import CDEProblem

    if not isinstance(problem, CDEProblem):
        raise TypeError(f"problem={problem!r}, but solve_cde takes a CDEProblem (odeverify.problems.cde)")
    for key in options:
        if key not in allowed:
            raise ValueError(f"unknown CDE option {key!r}{_closest(key, allowed)} Expected one of {', '.join(allowed)}")
    knots = options.get("knots")
    if knots is not None and knots not in KNOT_RULES:
        raise ValueError(f"knots={knots!r}, but it must be one of {', '.join(KNOT_RULES)}{_closest(knots, KNOT_RULES)}")
    control = options.get("control")
    if control is not None and control not in CONTROL_FORMS:
        raise ValueError(f"control={control!r}, but it must be one of {', '.join(CONTROL_FORMS)}"
                         f"{_closest(control, CONTROL_FORMS)}")
    validate_options(problem.to_problem(), {k: v for k, v in options.items()
                                            if k in ("rtol", "atol", "dt", "n_steps", "max_steps", "t_eval")})
    if problem.interpolation not in caps.interpolations:
        raise UnsupportedOption(f"{backend} has no {problem.interpolation!r} interpolation; it has"
                                f" {', '.join(caps.interpolations)}")
    if (knots or "jump") not in caps.knots:
        raise UnsupportedOption(f"{backend} cannot honour knots={knots!r}: it has {', '.join(caps.knots)}"
                                + (f" ({caps.refusals['knots']})" if "knots" in caps.refusals else ""))
    if (control or "derivative") not in caps.controls:
        raise UnsupportedOption(f"{backend} cannot honour control={control!r}: it has {', '.join(caps.controls)}"
                                + (f" ({caps.refusals['control']})" if "control" in caps.refusals else ""))
    fixed = options.get("dt") is not None or options.get("n_steps") is not None
    if fixed and not info.fixed:
        raise UnsupportedOption(f"{backend} CDE method {info.name!r} has no fixed-step mode")
    if not fixed and not info.adaptive:
        raise ValueError(f"{backend} CDE method {info.name!r} is fixed-step only: pass dt or n_steps")
    if fixed and (knots or "jump") == "jump" and "fixed_jump" in caps.refusals:
        raise UnsupportedOption(f"{backend} cannot honour knots='jump' with fixed steps: {caps.refusals['fixed_jump']}")


def solve_cde(backend: Any, problem: Any, method: str, interpolation: Any, options: dict[str, Any], dtype: str,
              device: str) -> Solution:
    ts = np.asarray(options["t_eval"] if options.get("t_eval") is not None else getattr(problem, "t_span", (0, 1)),
                    dtype=np.float64)
    n = getattr(getattr(problem, "field", None), "hidden", 1)
    if not backend.available():
        sol = failed_solution(_Shape(n), method, ts, None, Status.UNAVAILABLE,
                              f"{backend.name} is not installed: {backend.install_hint}")
        return sol
    adapter = adapter_of(backend)
    caps = adapter.capabilities(backend)
    info = _method(caps, method, backend.name)
    backend._check_dtype_device(backend.capabilities(), dtype, device)
    problem = with_interpolation(problem, interpolation)
    validate_cde(problem, info, options, caps, backend.name)
    return _timed(lambda: adapter.solve(backend, problem, info, dict(options), dtype, device), _Shape(n), method,
                  ts, None)


@dataclass(frozen=True)
class _Shape:
    """What ``failed_solution`` reads of a problem: its state dimension."""

    n: int


def failed_cde_gradient(problem: Any, mode: str, method: str, backend: str, status: Status, message: str,
                        wrt: str | None = None) -> GradientResult:
    """A failed CDE gradient: NaN of the right shapes (never zeros) and the status."""
    wrt = wrt or "all"
    grad_y0 = None if wrt in ("params", "data") else np.full((problem.field.hidden,), np.nan)
    params = {} if wrt == "y0" else {k: np.full(v.shape, np.nan) for k, v in cde_gradient_params(problem).items()
                                     if wrt != "data" or k == "values"}
    return GradientResult(mode=mode, method=method, backend=backend, library="-", status=status, loss=float("nan"),
                          grad_y0=grad_y0, grad_params=params, message=message)


def keep_wrt(res: GradientResult, wrt: str | None) -> GradientResult:
    """``res`` with only the part of the gradient that ``wrt`` asks for."""
    wrt = wrt or "all"
    if wrt in ("params", "data"):
        res.grad_y0 = None
    if wrt == "y0":
        res.grad_params = {}
    if wrt == "data":
        res.grad_params = {k: v for k, v in res.grad_params.items() if k == "values"}
    return res


def cde_gradient(backend: Any, problem: Any, method: str, mode: str, loss: Any, interpolation: Any,
                 options: dict[str, Any], dtype: str, device: str) -> GradientResult:
    wrt = options.get("wrt")
    if wrt is not None and wrt not in CDE_WRT:
        raise ValueError(f"wrt={wrt!r}, but it must be one of {', '.join(CDE_WRT)}{_closest(wrt, CDE_WRT)}")
    if not backend.available():
        return failed_cde_gradient(problem, mode, method, backend.name, Status.UNAVAILABLE,
                                   f"{backend.name} is not installed: {backend.install_hint}", wrt)
    adapter = adapter_of(backend)
    caps = adapter.capabilities(backend)
    info = _method(caps, method, backend.name)
    backend._check_dtype_device(backend.capabilities(), dtype, device)
    if mode not in caps.gradient_modes:
        raise ValueError(f"{backend.name} has no CDE gradient mode {mode!r}{_closest(mode, caps.gradient_modes)}"
                         f" Choices: {', '.join(caps.gradient_modes) or 'none'}")
    problem = with_interpolation(problem, interpolation)
    if not isinstance(loss, Loss):
        raise TypeError(f"loss={loss!r}, but it must be an odeverify.gradients.Loss")
    if loss.n != problem.field.hidden:
        raise ValueError(f"loss has weights of shape {loss.weights.shape} (n={loss.n}), but CDE problem"
                         f" {problem.name!r} has hidden dimension {problem.field.hidden}")
    solve_opts = {k: v for k, v in options.items() if k != "wrt"}
    validate_cde(problem, info, dict(solve_opts, t_eval=loss.t_eval), caps, backend.name,
                 allowed=CDE_GRADIENT_OPTIONS + ("t_eval",))
    try:
        res = adapter.gradient(backend, problem, info, mode, loss, dict(solve_opts), dtype, device)
    except UnsupportedOption:
        raise
    except Exception as exc:  # noqa: BLE001 - a library's failure becomes a status
        return failed_cde_gradient(problem, mode, method, backend.name, classify_exception(exc),
                                   f"{type(exc).__name__}: {exc}"[:500], wrt)
    res = keep_wrt(res, wrt)
    if res.status.ok and not np.all(np.isfinite(res.flat())):
        res.status = Status.NONFINITE
        res.message = ("non-finite gradient from a finite solve: the field or the control is not differentiable"
                       " along the trajectory (or its derivative overflows)")
    return res


def output_times(problem: Any, options: Mapping[str, Any]) -> np.ndarray:
    """The output times of a CDE solve: ``t_eval``, else both ends of the span."""
    if options.get("t_eval") is not None:
        return np.asarray(options["t_eval"], dtype=np.float64)
    return np.asarray(problem.t_span, dtype=np.float64)


def fixed_grid_with_knots(problem: Any, options: Mapping[str, Any], knots: str) -> np.ndarray:
    """The fixed-step grid of a CDE solve (odeverify's ``fixed_grid`` of ``dt``/``n_steps``), with
    the knots added as extra step boundaries unless ``knots == "none"``."""
    from ..integrate import fixed_grid

    t0, t1 = problem.t_span
    grid = np.asarray(fixed_grid(t0, t1, options.get("dt"), options.get("n_steps")), dtype=np.float64)
    if knots == "none":
        return grid
    inner = problem.knots[(problem.knots > t0) & (problem.knots < t1)]
    merged = np.unique(np.concatenate([grid, inner]))
    # a grid point within round-off of a knot is the knot (no step of an ulp)
    keep = np.concatenate([[True], np.diff(merged) > 1e-12 * max(1.0, abs(t1 - t0))])
    merged = merged[keep]
    merged[-1] = t1
    return merged


__all__ = ["CDE_OPTIONS", "CDE_GRADIENT_OPTIONS", "CDE_WRT", "CONTROL_FORMS", "KNOT_RULES", "CDECapabilities",
           "adapter_of", "cde_capabilities", "cde_gradient", "cde_gradient_params", "cde_methods", "check_method",
           "failed_cde_gradient", "fixed_grid_with_knots", "keep_wrt", "output_times", "solve_cde", "validate_cde", "with_interpolation"]
