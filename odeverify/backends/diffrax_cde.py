"""diffrax's CDE solving behind :meth:`DiffraxBackend.solve_cde` / ``cde_gradient`` (issue 12).

Facts this adapter relies on (diffrax 0.7.2, read from ``_global_interpolation.py``, ``_term.py``
and ``_step_size_controller/clip.py``; measured figures as stated in docs/cde.md):

- The control is diffrax's interpolation of THE SAME data as odeverify's (observation times and
  filled values, time channel included), built inside the compiled solve from the traced arrays
  (so gradients reach the data): ``linear``: ``LinearInterpolation(ts, ys)``; ``rectilinear``:
  ``rectilinear_interpolation(ts, ys)`` of the non-time channels (time taken from the data's
  channel 0), stacked with its repeated times as channel 0, then ``LinearInterpolation`` over the
  index ``0, 1, ..., 2K`` (diffrax's documented recipe, and odeverify's parameter for rectilinear);
  ``hermite_cubic_bd``: ``CubicInterpolation(ts, backward_hermite_coefficients(ts, ys))``.
  diffrax has no natural cubic spline (``CubicInterpolation`` takes any coefficients, but diffrax
  computes only backward-Hermite ones), so ``natural_cubic`` is refused (``UnsupportedOption``);
  the agreement records measure how far diffrax's cubic is from the natural spline instead.
- The term: ``ControlTerm(vf, X).to_ode()`` (``control="derivative"``: ``dz/dt = f(z) dX/dt``,
  ``X.derivative(t)`` with diffrax's default ``left=True``, so AT a knot the derivative of the piece
  on the knot's left), or ``ControlTerm(vf, X)`` itself (``control="increment"``: each stage's
  field is contracted with the increment ``X(t_(k+1)) - X(t_k)`` of the whole step, exact for a
  control linear over the step, first order in the control's curvature otherwise).
- Knots: adaptive solves use ``PIDController(rtol, atol)`` wrapped in
  ``ClipStepSizeController(jump_ts=knots)`` (``"jump"``: diffrax steps to ``prevbefore(t_k)``
  and restarts at ``nextafter(t_k)``, re-evaluating FSAL), ``step_ts=knots`` (``"step"``), or
  unwrapped (``"none"``). Fixed steps use ``StepTo(ts=grid)`` with the knots added (``"step"``)
  or not (``"none"``); StepTo has no jump times, so fixed-step ``"jump"`` is refused.
- Compilation: one program per (the field's function and its parameters' shapes, interpolation,
  data shape, hidden size, method, adaptive/fixed grid size, knot rule, control form, output
  slots, max_steps, dtype, gradient mode); the data, z0, the field's parameters, tolerances, the
  fixed grid and the output times are traced. Output times are padded as the ODE adapter pads
  them. JAX's persistent cache (``backends/_jax_cache.py``) is enabled first and the programs are
  traced under ``cacheable_checks``.
- Counting: ``accepted``/``rejected`` are diffrax's ``num_accepted_steps``/``num_rejected_steps``;
  ``nfev`` is not counted (-1): the ODE adapter's closed form per method does not hold once jump
  times force re-evaluations, and a host-callback counter would keep the program out of JAX's
  persistent cache.
- Gradients: the ODE adapter's mode names (``backends/diffrax_gradients.py``):
  ``recursive_checkpoint`` (``RecursiveCheckpointAdjoint``), ``direct`` (``DirectAdjoint``),
  both discrete, and ``backsolve`` (``BacksolveAdjoint`` with the forward tolerances), with
  respect to z0, the data values and the field's parameters, by ``jax.value_and_grad``.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np

from .. import _xp
from ..gradients._spec import GradientResult
from ..solution import Solution, Stats, Status
from ._cde_driver import CDECapabilities, fixed_grid_with_knots, output_times
from .base import MethodInfo, UnsupportedOption

#: explicit diffrax methods for CDEs
METHODS = ("Euler", "Heun", "Midpoint", "Ralston", "Bosh3", "Tsit5", "Dopri5", "Dopri8")
INTERPOLATIONS = ("linear", "rectilinear", "hermite_cubic_bd")
GRADIENT_MODES = ("recursive_checkpoint", "direct", "backsolve")
DISCRETE_MODES = ("recursive_checkpoint", "direct")
#: default max_steps of a CDE solve
MAX_STEPS = 100_000
#: compiled CDE programs kept (least recently used dropped first)
MAX_COMPILED = 64
_CACHE: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()

#: the methods a quick run and a full run grade by default (``_cde_driver.cde_methods``)
QUICK_METHODS = ("Dopri5",)
DEFAULT_METHODS = ("Dopri5", "Tsit5", "Bosh3", "Heun", "Euler")


def capabilities(backend: Any) -> CDECapabilities:
    known = backend.capabilities().methods
    return CDECapabilities(
        methods={m: known[m] for m in METHODS if m in known}, interpolations=INTERPOLATIONS,
        gradient_modes=GRADIENT_MODES, discrete_gradient_modes=DISCRETE_MODES, knots=("jump", "step", "none"),
        controls=("derivative", "increment"),
        refusals={"fixed_jump": "StepTo has no jump times (pass knots='step' or 'none'); ClipStepSizeController"
                                " wraps adaptive controllers only",
                  "interpolation": "diffrax has no natural cubic spline (only backward_hermite_coefficients)"},
        notes="ControlTerm(vf, X).to_ode() (control='derivative') or ControlTerm itself ('increment')")


def _check(problem: Any) -> None:
    if problem.control.warp is not None:
        raise UnsupportedOption(f"diffrax interpolates data at observation times; problem {problem.name!r} has a"
                                " warped control X(psi(s)), which no diffrax interpolation builds")


def _path(diffrax: Any, jnp: Any, kind: str, times: Any, values: Any) -> Any:
    if kind == "linear":
        return diffrax.LinearInterpolation(ts=times, ys=values)
    if kind == "rectilinear":
        new_ts, new_ys = diffrax.rectilinear_interpolation(values[:, 0], values[:, 1:])
        data = jnp.concatenate([new_ts[:, None], new_ys], axis=1)
        return diffrax.LinearInterpolation(ts=jnp.arange(data.shape[0], dtype=values.dtype), ys=data)
    if kind == "hermite_cubic_bd":
        return diffrax.CubicInterpolation(ts=times, coeffs=diffrax.backward_hermite_coefficients(times, values))
    raise UnsupportedOption(f"diffrax has no {kind!r} interpolation")


def interpolant(problem: Any, ts: Any, *, values: Any = None, kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """diffrax's ``X(t)`` and ``X.derivative(t)`` (float64, shapes ``(m, c)``; at a knot the left
    derivative, diffrax's default) at the parameter values ``ts``, of the problem's data or of
    ``values`` (NumPy; NaN allowed for ``hermite_cubic_bd``, whose coefficient function documents
    its NaN handling; ``linear`` data with NaN is first filled by ``diffrax.linear_interpolation``)."""
    import diffrax
    import jax
    import jax.numpy as jnp

    _check(problem)
    _setup()
    ctrl = problem.control
    kind = kind or ctrl.kind
    v = jnp.asarray(ctrl.values if values is None else np.asarray(values, dtype=np.float64))
    t = jnp.asarray(ctrl.times)
    if kind == "linear" and values is not None and np.isnan(np.asarray(values)).any():
        v = diffrax.linear_interpolation(t, v)
    X = _path(diffrax, jnp, kind, t, v)
    q = jnp.asarray(np.asarray(ts, dtype=np.float64))
    vals = jax.vmap(X.evaluate)(q)
    ders = jax.vmap(X.derivative)(q)
    return np.asarray(vals, dtype=np.float64), np.asarray(ders, dtype=np.float64)


def _setup() -> None:
    import jax

    from . import _jax_cache

    jax.config.update("jax_enable_x64", True)
    _jax_cache.enable()


def _key(problem: Any, info: MethodInfo, options: dict[str, Any], dtype: str, grid_size: int, slots: int,
         mode: str | None, loss_key: Any = None) -> tuple:
    f = problem.field
    return (id(f.matrix), tuple((k, np.shape(v)) for k, v in sorted(f.params.items())), problem.interpolation,
            problem.control.values.shape, f.hidden, info.name, grid_size, options.get("knots") or "jump",
            options.get("control") or "derivative", slots, int(options.get("max_steps") or MAX_STEPS), dtype, mode,
            loss_key)


def _build(problem: Any, info: MethodInfo, options: dict[str, Any], fixed: bool, mode: str | None,
           loss: Any = None) -> Any:
    import diffrax
    import jax
    import jax.numpy as jnp

    xp = _xp.get_namespace("jax")
    matrix = problem.field.matrix
    kind = problem.interpolation
    knots = options.get("knots") or "jump"
    form = options.get("control") or "derivative"
    max_steps = int(options.get("max_steps") or MAX_STEPS)
    solver = getattr(diffrax, info.name)()

    def vf(t: Any, z: Any, theta: Any) -> Any:
        return matrix(xp, z, theta)

    def run(a: dict[str, Any], values: Any, z0: Any, theta: Any, adjoint: Any) -> Any:
        X = _path(diffrax, jnp, kind, a["times"], values)
        term = diffrax.ControlTerm(vf, X)
        term = term.to_ode() if form == "derivative" else term
        if fixed:
            controller: Any = diffrax.StepTo(ts=a["grid"])
            dt0 = None
        else:
            controller = diffrax.PIDController(rtol=a["rtol"], atol=a["atol"])
            if knots == "jump":
                controller = diffrax.ClipStepSizeController(controller, jump_ts=a["knots"])
            elif knots == "step":
                controller = diffrax.ClipStepSizeController(controller, step_ts=a["knots"])
            dt0 = None
        kw = {} if adjoint is None else {"adjoint": adjoint}
        return diffrax.diffeqsolve(term, solver, a["t0"], a["t1"], dt0, z0, args=theta,
                                   saveat=diffrax.SaveAt(ts=a["ts"]), stepsize_controller=controller,
                                   max_steps=max_steps, throw=False, **kw)

    if mode is None:
        def fn(a: dict[str, Any]) -> dict[str, Any]:
            sol = run(a, a["values"], a["z0"], a["theta"], None)
            return {"ys": sol.ys, "result": sol.result._value, "accepted": sol.stats["num_accepted_steps"],
                    "rejected": sol.stats["num_rejected_steps"]}
        return jax.jit(fn)

    if mode == "recursive_checkpoint":
        adjoint: Any = diffrax.RecursiveCheckpointAdjoint()
    elif mode == "direct":
        adjoint = diffrax.DirectAdjoint()
    else:
        ctrl: Any = diffrax.PIDController(rtol=float(options.get("rtol") or 1e-6),
                                          atol=float(options.get("atol") or 1e-9))
        adjoint = diffrax.BacksolveAdjoint(solver=solver, stepsize_controller=ctrl)
    w = jnp.asarray(np.asarray(loss.weights))
    q = jnp.asarray(np.asarray(loss.quadratic, dtype=np.float64))
    T = w.shape[0]

    def value(z0: Any, values: Any, theta: Any, a: dict[str, Any]) -> Any:
        sol = run(a, values, z0, theta, adjoint)
        ys = sol.ys[:T]
        return jnp.sum(w * ys) + 0.5 * jnp.sum(q * ys * ys), (sol.result._value, sol.stats["num_accepted_steps"])

    def gfn(a: dict[str, Any]) -> Any:
        (val, aux), grads = jax.value_and_grad(value, argnums=(0, 1, 2), has_aux=True)(
            a["z0"], a["values"], a["theta"], a)
        return val, aux, grads

    return jax.jit(gfn)


def _compiled(problem: Any, info: MethodInfo, options: dict[str, Any], dtype: str, fixed: bool, grid_size: int,
              slots: int, mode: str | None = None, loss: Any = None) -> Any:
    from . import _jax_cache

    lkey = None if loss is None else (loss.weights.shape, np.shape(loss.quadratic))
    key = _key(problem, info, options, dtype, grid_size, slots, mode, lkey)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key][0]
    with _jax_cache.cacheable_checks():
        fn = _build(problem, info, options, fixed, mode, loss)
    _CACHE[key] = (fn, problem.field)  # keep the field alive: its function's id stays unique
    while len(_CACHE) > MAX_COMPILED:
        _CACHE.popitem(last=False)
    return fn


def _args(problem: Any, options: dict[str, Any], ts: np.ndarray, dtype: str) -> tuple[dict[str, Any], bool, int]:
    import jax.numpy as jnp

    from .diffrax_backend import _padded_times

    dt_ = getattr(jnp, dtype)
    fixed = options.get("dt") is not None or options.get("n_steps") is not None
    knots = options.get("knots") or "jump"
    t0, t1 = problem.t_span
    a: dict[str, Any] = {"times": jnp.asarray(problem.control.times, dtype=dt_),
                         "values": jnp.asarray(problem.control.values, dtype=dt_),
                         "z0": jnp.asarray(problem.y0, dtype=dt_),
                         "theta": {k: jnp.asarray(np.asarray(v, dtype=np.float64), dtype=dt_)
                                   for k, v in problem.field.params.items()},
                         "t0": jnp.asarray(t0, dtype=dt_), "t1": jnp.asarray(t1, dtype=dt_),
                         "ts": jnp.asarray(_padded_times(ts), dtype=dt_)}
    grid_size = 0
    if fixed:
        grid = fixed_grid_with_knots(problem, options, knots)
        grid_size = grid.size
        a["grid"] = jnp.asarray(grid, dtype=dt_)
    else:
        a["rtol"] = jnp.asarray(float(options.get("rtol") or 1e-6), dtype=dt_)
        a["atol"] = jnp.asarray(float(options.get("atol") or 1e-9), dtype=dt_)
        inner = problem.knots if problem.knots.size else np.asarray([t1])  # no inner knot: the end
        a["knots"] = jnp.asarray(inner, dtype=dt_)
    return a, fixed, grid_size


def _status(code: int, finite: bool) -> tuple[Status, str]:
    from .diffrax_backend import _STATUS_OF, _result_name

    name = _result_name(int(code))
    status = _STATUS_OF.get(name, Status.FAILED)
    if status.ok and not finite:
        return Status.NONFINITE, "diffrax returned non-finite values"
    return status, "" if status.ok else f"diffrax result: {name}"


def solve(backend: Any, problem: Any, info: MethodInfo, options: dict[str, Any], dtype: str, device: str) -> Solution:
    _check(problem)
    _setup()
    ts = output_times(problem, options)
    a, fixed, grid_size = _args(problem, options, ts, dtype)
    start = time.perf_counter()
    fn = _compiled(problem, info, options, dtype, fixed, grid_size, int(a["ts"].shape[0]))
    out = fn(a)
    ys = np.asarray(out["ys"], dtype=np.float64)[: ts.size]
    status, message = _status(int(out["result"]), bool(np.all(np.isfinite(ys))))
    stats = Stats(nfev=-1, accepted=int(out["accepted"]), rejected=int(out["rejected"]))
    return Solution(ts=ts, ys=ys, status=status, stats=stats, method=info.name, message=message,
                    timing={"wall_s": time.perf_counter() - start, "compile_s": 0.0})


def gradient(backend: Any, problem: Any, info: MethodInfo, mode: str, loss: Any, options: dict[str, Any], dtype: str,
             device: str) -> GradientResult:
    _check(problem)
    _setup()
    ts = np.asarray(loss.t_eval, dtype=np.float64)
    a, fixed, grid_size = _args(problem, options, ts, dtype)
    if mode == "backsolve" and fixed:
        raise UnsupportedOption("diffrax CDE gradient mode 'backsolve' is adaptive here (its backward solve uses a"
                                " PIDController); pass rtol/atol")
    start = time.perf_counter()
    fn = _compiled(problem, info, options, dtype, fixed, grid_size, int(a["ts"].shape[0]), mode, loss)
    val, (code, accepted), (g0, gv, gt) = fn(a)
    status, message = _status(int(code), bool(np.isfinite(float(val))))
    names = list(problem.field.params)
    gp = {"values": np.asarray(gv, dtype=np.float64)}
    gp.update({k: np.asarray(gt[k], dtype=np.float64) for k in names})
    return GradientResult(mode=mode, method=info.name, backend=backend.name, library="diffrax", status=status,
                          loss=float(val), grad_y0=np.asarray(g0, dtype=np.float64), grad_params=gp,
                          steps_forward=int(accepted), message=message,
                          timing={"forward_s": time.perf_counter() - start, "backward_s": 0.0},
                          options={k: v for k, v in options.items() if v is not None})


__all__ = ["DISCRETE_MODES", "GRADIENT_MODES", "INTERPOLATIONS", "METHODS", "capabilities", "gradient",
           "interpolant", "solve"]
