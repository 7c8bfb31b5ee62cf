"""diffrax's event location (``diffrax.Event``) under the event driver.

What diffrax 0.7.2 does (``diffrax/_event.py``, ``diffrax/_integrate.py``): after each step it
compares the sign of every real-valued ``cond_fn`` at the step's two ends (``Event.direction``
``None``: any change, ``True``: ``sign(old) <= 0 < sign(new)``, ``False``: ``sign(old) > 0 >=
sign(new)``), stops the solve at the first step where one changed (events are always
terminal), and, with a ``root_finder``, solves ``cond_fn(t, interp(t)) = 0`` on that step's
interpolation (``optx.root_find`` started at the step's end, bracket ``[tprev, tnext]``);
``SaveAt(t1=True)`` then holds the event time and the interpolated state, and
``Solution.event_mask`` which function fired. The root finder here is ``optx.Newton`` with
tolerances :data:`ROOT_TOL` (far below the solver's, so the event time's error is the
interpolation's). The event time is differentiable: ``optx.root_find``'s implicit adjoint
gives ``dt*/d.`` through ``cond_fn`` (its own parameters included) and through the
interpolant, which diffrax differentiates as the rest of the solve
(``RecursiveCheckpointAdjoint``: the discrete derivative), the only mode here.

One compiled program per (vector field, event functions, directions, method, fixed grid or
not): the start, the state, the end, tolerances and the float parameters are traced, so
every restart of a solve and every tolerance of a sweep shares it. A fixed grid (``n_steps``)
is ``ClipStepSizeController(PIDController(dtmax=h), step_ts=grid)``: steps land on the grid
points (the grazing problems are reproduced exactly, so no step is rejected).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from ..solution import Status
from ._event_driver import (EventGradient, Segment, failed_gradient, fixed_grid, float_params, flow_slope,
                            passes_direction)

METHODS = ("Tsit5", "Dopri5", "Dopri8", "Bosh3", "Heun")
DEFAULT_METHODS = ("Tsit5", "Dopri5", "Dopri8")
GRADIENT_MODES = ("recursive_checkpoint",)
UNSUPPORTED_GRADIENT = ""
#: the Newton root finder's tolerances on the event time (rtol, atol)
ROOT_TOL = (1e-14, 1e-14)
MAX_STEPS = 16384
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 32


def _program(event_problem: Any, method: str, fixed: bool, direction_filter: bool) -> Any:
    """The compiled segment solve (cached)."""
    prob = event_problem.problem
    key = (prob.rhs, tuple((ev.g, ev.direction) for ev in event_problem.events), method, fixed, direction_filter,
           tuple(sorted(k for k in prob.params)), prob.n)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    import diffrax
    import jax
    import jax.numpy as jnp
    import optimistix as optx

    from .. import _xp

    xp = _xp.get_namespace("jax")
    rhs = prob.rhs
    events = event_problem.events

    def vf(t: Any, y: Any, args: Any) -> Any:
        return rhs(xp, t, y, args)

    def cond(i: int) -> Any:
        g = events[i].g

        def fn(t: Any, y: Any, args: Any, **kw: Any) -> Any:
            # the restart guard: before args["_until"], event i reads as args["_skip"][i] * |g|
            val = g(xp, t, y, args)
            sign = args["_skip"][i]
            return jnp.where((t < args["_until"]) & (sign != 0), sign * (jnp.abs(val) + 1e-300), val)

        return fn

    conds = tuple(cond(i) for i in range(len(events)))
    directions = tuple(None if (ev.direction == 0 or not direction_filter) else bool(ev.direction > 0)
                       for ev in events)
    solver = getattr(diffrax, method)()

    def run(t0: Any, y0: Any, t_end: Any, rtol: Any, atol: Any, dtmax: Any, grid: Any, args: Any) -> Any:
        event = diffrax.Event(conds, root_finder=optx.Newton(rtol=ROOT_TOL[0], atol=ROOT_TOL[1]),
                              direction=directions)
        ctrl: Any = diffrax.PIDController(rtol=rtol, atol=atol, dtmax=dtmax)
        if fixed:
            ctrl = diffrax.ClipStepSizeController(ctrl, step_ts=grid)
        sol = diffrax.diffeqsolve(diffrax.ODETerm(vf), solver, t0, t_end, None if not fixed else dtmax, y0,
                                  args=args, event=event, stepsize_controller=ctrl,
                                  saveat=diffrax.SaveAt(t1=True), max_steps=MAX_STEPS, throw=False)
        mask = jnp.stack([jnp.asarray(m) for m in sol.event_mask]) if sol.event_mask is not None else None
        return {"t": sol.ts[-1], "y": sol.ys[-1], "mask": mask, "result": sol.result._value,
                "steps": sol.stats["num_accepted_steps"], "rejected": sol.stats["num_rejected_steps"]}

    fn = jax.jit(run)
    _CACHE[key] = (fn, run)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return _CACHE[key]


class _Ctx:
    def __init__(self, event_problem: Any, method: str, options: dict[str, Any], direction_filter: bool) -> None:
        import jax.numpy as jnp

        from .. import _xp
        from ._jax_cache import enable

        enable()
        prob = event_problem.problem
        self.jnp = jnp
        self.ep = event_problem
        self.method = method
        self.options = options
        n_steps = options.get("n_steps")
        t0, t1 = prob.t_span
        self.fixed = n_steps is not None
        self.grid = fixed_grid(t0, t1, int(n_steps)) if self.fixed else np.array([t0, t1])
        self.dtmax = abs(t1 - t0) / int(n_steps) if self.fixed else abs(t1 - t0)
        self.direction_filter = direction_filter
        self.fn, self.raw = _program(event_problem, method, self.fixed, direction_filter)
        self.args = {k: jnp.asarray(v, dtype=jnp.float64) if isinstance(v, (float, int, np.floating, np.ndarray))
                     and not isinstance(v, bool) else v for k, v in prob.converted_params(_xp.get_namespace("jax"),
                                                                                          jnp.float64).items()}
        self.p_np = prob.converted_params(np)
        self.rhs_np = prob.vector_field(np, np.float64)
        spec = _spec(method)
        self.nfe = spec.nfe if spec is not None else None

    def tolerances(self) -> tuple[float, float]:
        if self.fixed:
            return 1e-3, float(self.options["atol"])
        return float(self.options["rtol"]), float(self.options["atol"])


def _spec(method: str) -> Any:
    from .diffrax_backend import _SPECS

    return _SPECS.get(method)


def prepare(event_problem: Any, method: str, options: dict[str, Any], *, direction_filter: bool = True) -> _Ctx:
    """``direction_filter=False`` passes no direction to diffrax (a planted fault)."""
    return _Ctx(event_problem, method, options, direction_filter)


def time_tolerance(ctx: _Ctx, t: float) -> float:
    return ROOT_TOL[1] + ROOT_TOL[0] * abs(t) + 8.0 * np.finfo(np.float64).eps * (1.0 + abs(t))


def segment(ctx: _Ctx, t0: float, y0: np.ndarray, t_end: float, stops: list[bool], skip: Any = None) -> Segment:
    from .diffrax_backend import _result_name

    jnp = ctx.jnp
    rtol, atol = ctx.tolerances()
    out = ctx.fn(jnp.asarray(t0, dtype=jnp.float64), jnp.asarray(y0, dtype=jnp.float64),
                 jnp.asarray(t_end, dtype=jnp.float64), rtol, atol, ctx.dtmax,
                 jnp.asarray(ctx.grid, dtype=jnp.float64), {**ctx.args, **_skip_args(ctx, skip)})
    name = _result_name(int(out["result"]))
    steps = int(out["steps"])
    nfev = ctx.nfe[0] * (steps + int(out["rejected"])) + ctx.nfe[1] if ctx.nfe else 0
    te, ye = float(out["t"]), np.asarray(out["y"], dtype=np.float64)
    if name not in ("successful", "event_occurred"):
        status = Status.MAX_STEPS if name == "max_steps_reached" else Status.FAILED
        import diffrax

        text = diffrax.RESULTS._index_to_message[int(out["result"])] if hasattr(diffrax.RESULTS,
                                                                                "_index_to_message") else name
        return Segment([], [], [], [], t_stop=te, y_stop=ye, stopped=None, nfev=nfev, steps=steps, status=status,
                       message=f"diffrax from t = {t0:.17g}: {text or name}"[:300])
    mask = np.asarray(out["mask"]) if out["mask"] is not None else np.zeros(0, dtype=bool)
    if name == "successful" or not mask.any():
        return Segment([], [], [], [], t_stop=t_end, y_stop=ye, stopped=None, nfev=nfev, steps=steps)
    k = int(np.argmax(mask))
    # the crossing: the event's own direction where diffrax filtered by it (crossings the other
    # way may lie between the segment's start and the event), else against g's sign at the start
    g0 = skip[1] if skip is not None and skip[0] == k else float(
        ctx.ep.events[k].g(np, np.float64(t0), np.asarray(y0, dtype=np.float64), ctx.p_np))
    if ctx.direction_filter and ctx.ep.events[k].direction:
        crossing = int(ctx.ep.events[k].direction)
    else:
        crossing = -int(np.sign(g0)) if g0 != 0 else flow_slope(ctx.ep.events[k], ctx.rhs_np, ctx.p_np, te, ye)
    return Segment([te], [ye], [k], [crossing], t_stop=te, y_stop=ye, stopped=k, nfev=nfev, steps=steps)


def _skip_args(ctx: _Ctx, skip: Any) -> dict[str, Any]:
    jnp = ctx.jnp
    signs = np.zeros(len(ctx.ep.events))
    until = -np.inf
    if skip is not None:
        signs[skip[0]] = skip[1]
        until = skip[2]
    return {"_skip": jnp.asarray(signs, dtype=jnp.float64), "_until": jnp.asarray(until, dtype=jnp.float64)}


def gradient(event_problem: Any, method: str, mode: str, options: dict[str, Any]) -> EventGradient:
    """d t*/d (y0, params) and d y(t*)/d (y0, params) of the first event: ``jax.jacrev``
    through the compiled segment (the root finder's implicit adjoint for t*)."""
    import jax
    import jax.numpy as jnp

    prob = event_problem.problem
    ctx = _Ctx(event_problem, method, options, True)
    names = list(float_params(prob))
    rtol, atol = ctx.tolerances()
    t0, t_end = (float(v) for v in prob.t_span)
    grid = jnp.asarray(ctx.grid, dtype=jnp.float64)

    def first(y0: Any, theta: Any) -> Any:
        args = {**ctx.args, **_skip_args(ctx, None), **theta}
        out = ctx.raw(jnp.asarray(t0), y0, jnp.asarray(t_end), rtol, atol, ctx.dtmax, grid, args)
        return jnp.concatenate([out["t"][None], out["y"]]), out

    y0 = jnp.asarray(prob.y0, dtype=jnp.float64)
    theta = {k: jnp.asarray(float_params(prob)[k], dtype=jnp.float64) for k in names}
    seg = segment(ctx, t0, np.asarray(prob.y0, dtype=np.float64), t_end, [True])
    if not seg.status.ok or seg.stopped is None:
        return failed_gradient(event_problem, mode, method, "diffrax",
                               seg.status if not seg.status.ok else Status.FAILED,
                               seg.message or f"no event before t_end = {t_end}")
    if not passes_direction(event_problem.events[seg.stopped].direction, seg.crossing[0]):
        return failed_gradient(event_problem, mode, method, "diffrax", Status.FAILED,
                               "the first event is against its direction")
    jac_y0, jac_th = jax.jit(jax.jacrev(lambda a, b: first(a, b)[0], argnums=(0, 1)))(y0, theta)
    jac_y0 = np.asarray(jac_y0, dtype=np.float64)
    return EventGradient(mode=mode, method=method, backend="diffrax", status=Status.SUCCESS, t_event=seg.t_stop,
                         y_event=seg.y_stop, dt_dy0=jac_y0[0],
                         dt_dparams={k: float(jac_th[k][0]) for k in names}, dy_dy0=jac_y0[1:],
                         dy_dparams={k: np.asarray(jac_th[k][1:], dtype=np.float64) for k in names})

