"""``reversible_heun`` and ``mali``: gradients of algebraically reversible schemes with O(1)
memory in the state.

The forward pass keeps only the final augmented state (and the outputs at the loss times).
The backward pass walks the steps in reverse: it reconstructs the state at t_k from the
state at t_{k+1} with the scheme's exact inverse (:mod:`odeverify.solvers.reversible`, one
evaluation of f), then pulls the cotangent back through the forward step map at the
reconstructed state (one VJP). The result is the discrete gradient of the forward steps (the
derivative of the computed solution), up to the round-off of the reconstruction, which is
reported as ``adjoint_mismatch`` = max|y0_rec - y0| / max(1, max|y0|).

``reversible_heun`` runs on the one time loop, :func:`odeverify.solve`, with the stateful
solver :class:`~odeverify.solvers.reversible.ReversibleHeun` (its ``y_hat`` is the solver
state, ``f(t, y_hat)`` the first-stage slot), so it takes fixed steps (``dt``/``n_steps``)
or adaptive ones (``rtol``/``atol``, error estimate ``h/2 (f1 - f0)`` as diffrax's). The
forward pass records each accepted step's start time and signed step ``(t_k, h_k)`` as
float64 host scalars: the reverse pass replays exactly those floats, so the algebraic
inverse undoes exactly the forward arithmetic. That record is O(steps) floats (16 bytes a
step, ``memory["step_record_bytes"]``), not O(steps) states. Loss times inside a step are
the integrator's dense output (cubic Hermite, differentiable in the states at both ends of
the step), pulled back inside that step's VJP.

``mali`` is fixed-step on a plain loop over a grid with the loss times inserted as grid
points (a grid point closer than 1e-9 of the span to a loss time is replaced by it): its
state ``(z, v)`` has no first-stage slot in the integrator's step contract (``v`` is not
``f(t, z)``, and the loop would recompute ``f(t, z)`` every step), so this loop is the
documented exception to "integrate.py is the only time loop".
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _xp
from ..solvers.base import TimeContext
from ..solvers.reversible import MALI, ReversibleHeun
from ..solvers.rk import hermite
from ..solution import Status
from ._common import (Clock, RecordingSolver, Setup, finish, nan_result, outputs_by_step, stored_memory)
from ._modes import GradientMode, register


def step_grid(s: Setup) -> tuple[np.ndarray, list[int]]:
    """The fixed-step grid with the loss times inserted, and the grid index of each loss time."""
    t0, t1 = s.t_span
    span = abs(t1 - t0)
    if s.n_steps is not None:
        base = t0 + (t1 - t0) * np.arange(s.n_steps + 1) / s.n_steps
    else:
        count = math.ceil(span / float(s.dt) * (1 - 1e-12))
        base = t0 + math.copysign(float(s.dt), t1 - t0) * np.arange(count + 1, dtype=np.float64)
    base[-1] = t1
    keep = [t for t in base if np.min(np.abs(s.ts - t)) > 1e-9 * span]
    direction = 1.0 if t1 > t0 else -1.0
    grid = np.asarray(sorted(set(keep) | set(s.ts.tolist()) | {t0, t1}, key=lambda v: direction * v))
    index = [int(np.flatnonzero(grid == t)[0]) for t in s.ts]
    return grid, index


def make_scheme(mode: str, eta: Any) -> Any:
    """The fixed-grid scheme of the hand loop (MALI)."""
    if mode != "mali":
        raise ValueError(f"mode={mode!r}: only mali runs on the fixed-grid loop (reversible_heun uses odeverify.solve)")
    return MALI(eta)


def forward_outputs(s: Setup, scheme: Any, grid: np.ndarray, index: list[int], y0: Any, p: Any
                    ) -> tuple[Any, tuple[Any, ...]]:
    """The forward pass: outputs at the loss times (stacked, shape (T,) + y0.shape) and the final
    augmented state. Functional, so it can be differentiated whole (the "AD through the same
    steps" reference of the tests)."""
    tc = TimeContext(xp=s.xp, dtype=s.dtype, device=s.device, per_sample=False, t=float(grid[0]))
    f = s.field(p)
    state = scheme.init(f, tc, float(grid[0]), y0)
    outs: dict[int, Any] = {0: y0}
    for k in range(len(grid) - 1):
        state = scheme.step(f, tc, float(grid[k]), float(grid[k + 1]), state)
        outs[k + 1] = scheme.output(state)
    return s.xp.stack([outs[i] for i in index], axis=0), state


def _run(s: Setup, mode: str, eta: float = 1.0, **_: Any) -> Any:
    xp = s.xp
    scheme = make_scheme(mode, eta)
    grid, index = step_grid(s)
    clock = Clock()
    ys, state = forward_outputs(s, scheme, grid, index, s.y0, s.params)
    clock.mark("forward_s")
    finite = all(bool(np.all(np.isfinite(_xp.to_numpy(x)))) for x in state)
    if not finite:
        return nan_result(s, mode, Status.NONFINITE, "the forward solve blew up (non-finite state)",
                          nfev_forward=s.counter.forward, timing=clock.marks)
    L = s.loss.value(xp, ys)
    cot = s.cotangents(ys)
    s.counter.phase = "backward"
    tc = TimeContext(xp=xp, dtype=s.dtype, device=s.device, per_sample=False, t=float(grid[0]))
    f = s.field()
    cot_at = {}
    for i, k in enumerate(index):
        cot_at[k] = cot[i] if k not in cot_at else cot_at[k] + cot[i]
    zero = xp.zeros_like(s.y0)
    g = [zero] * scheme.state_size
    grads = {k: xp.zeros_like(v) for k, v in s.params.items()}

    def add_params(gp: Any) -> None:
        for key in grads:
            grads[key] = grads[key] + gp[key]

    n = len(grid) - 1
    for k in range(n, 0, -1):
        if k in cot_at:
            g[0] = g[0] + cot_at[k]
        t, t_next = float(grid[k - 1]), float(grid[k])
        prev = scheme.inverse(f, tc, t, t_next, state)  # reconstruct the state at t_k

        def step_map(st: Any, pp: Any, t: float = t, t_next: float = t_next) -> Any:
            parts = tuple(st[j] for j in range(scheme.state_size))
            return xp.stack(scheme.step(s.field(pp), tc, t, t_next, parts), axis=0)

        _, (gs, gp) = _xp.metered_vjp(step_map, (xp.stack(prev, axis=0), s.params), xp.stack(g, axis=0))
        g = [gs[j] for j in range(scheme.state_size)]
        add_params(gp)
        state = prev
    if 0 in cot_at:
        g[0] = g[0] + cot_at[0]
    y0_rec = state[0]

    def init_map(yy: Any, pp: Any) -> Any:
        return xp.stack(scheme.init(s.field(pp), tc, float(grid[0]), yy), axis=0)

    _, (gy0, gp) = _xp.metered_vjp(init_map, (y0_rec, s.params), xp.stack(g, axis=0))
    add_params(gp)
    clock.mark("backward_s")
    y0n = np.asarray(_xp.to_numpy(s.y0))
    mismatch = float(np.max(np.abs(np.asarray(_xp.to_numpy(y0_rec)) - y0n)) / max(1.0, float(np.max(np.abs(y0n)))))
    return finish(s, mode, loss=L, grad_y0=gy0, grad_params=grads, timing=clock.marks, steps_forward=n,
                  steps_backward=n, adjoint_mismatch=mismatch, options={"eta": eta} if mode == "mali" else {},
                  memory=stored_memory(s, scheme.state_size + len(s.ts)),
                  details={"stored_arrays": scheme.state_size + len(s.ts), "reconstruction_error": mismatch,
                           "grid_steps": n})


class _LastStep(RecordingSolver):
    """A :class:`RecordingSolver` that also keeps the last attempt's result (its state and
    ``fsal``): after a successful solve, the final augmented state, and nothing older."""

    last: Any = None

    def step(self, f: Any, tc: TimeContext, y: Any, h: Any, k1: Any, *, estimate: bool, **kw: Any) -> Any:
        self.last = super().step(f, tc, y, h, k1, estimate=estimate, **kw)
        return self.last


def step_outputs(s: Setup, scheme: ReversibleHeun, f: Any, t: float, h: float, state: tuple[Any, ...],
                 t_out: list[float], t_next: float) -> tuple[tuple[Any, ...], list[Any]]:
    """One accepted step of the solve as the integrator took it, and its outputs at ``t_out``
    (in (t, t_next]): the end state when a time is the step's end, else the integrator's cubic
    Hermite dense output with slopes ``k1 = f(t, y_hat)`` and ``fsal = f(t + h, y_hat1)``."""
    tc = TimeContext(xp=s.xp, dtype=s.dtype, device=s.device, per_sample=False, t=t)
    new = scheme.advance(f, tc, t, h, state)
    outs = []
    for to in t_out:
        if to == t_next:
            outs.append(new[0])
        else:
            outs.append(hermite(tc, state[0], new[0], state[2], new[2], h, np.asarray((to - t) / h)))
    return new, outs


def run_reversible_heun(s: Setup, **_: Any) -> Any:
    xp = s.xp
    scheme = ReversibleHeun()
    clock = Clock()
    rec = _LastStep(scheme)
    sol = s.solve(s.field(), s.y0, s.t_span, t_eval=s.ts, solver=rec)
    clock.mark("forward_s")
    if not sol.success:
        return nan_result(s, "reversible_heun", sol.status, f"forward solve failed: {sol.message}",
                          nfev_forward=sol.stats.nfev, timing=clock.marks)
    t_steps = sol.t_steps
    steps = [(st.t, st.h) for st in rec.accepted(t_steps)]  # the O(steps) float record
    n = len(steps)
    last = rec.last
    state = (last.y1, last.state["pending"], last.fsal)  # the final augmented state
    rec.attempts, rec.last = [], None  # nothing else of the forward pass is kept
    L = s.loss.value(xp, sol.ys)
    cot = s.cotangents(sol.ys)
    at_start, per_step = outputs_by_step(s.ts, t_steps)
    s.counter.phase = "backward"
    f = s.field()
    zero = xp.zeros_like(s.y0)
    g = [zero] * scheme.state_size
    grads = {k: xp.zeros_like(v) for k, v in s.params.items()}
    for k in range(n - 1, -1, -1):
        t, h = steps[k]
        tc = TimeContext(xp=xp, dtype=s.dtype, device=s.device, per_sample=False, t=t)
        prev = scheme.inverse(f, tc, t, h, state)  # reconstruct the augmented state at t_k
        idx = per_step[k]
        t_out = [float(s.ts[i]) for i in idx]

        def step_map(st: Any, pp: Any, t: float = t, h: float = h, k: int = k, t_out: list = t_out) -> Any:
            new, outs = step_outputs(s, scheme, s.field(pp), t, h, tuple(st[j] for j in range(3)), t_out,
                                     float(t_steps[k + 1]))
            return xp.stack(list(new) + outs, axis=0)

        ct = xp.stack(g + [cot[i] for i in idx], axis=0)
        _, (gs, gp) = _xp.metered_vjp(step_map, (xp.stack(prev, axis=0), s.params), ct)
        g = [gs[j] for j in range(3)]
        for key in grads:
            grads[key] = grads[key] + gp[key]
        state = prev
    for i in at_start:
        g[0] = g[0] + cot[i]
    y0_rec = state[0]
    tc = TimeContext(xp=xp, dtype=s.dtype, device=s.device, per_sample=False, t=float(t_steps[0]))

    def init_map(yy: Any, pp: Any) -> Any:
        return xp.stack(scheme.init(s.field(pp), tc, float(t_steps[0]), yy), axis=0)

    _, (gy0, gp) = _xp.metered_vjp(init_map, (y0_rec, s.params), xp.stack(g, axis=0))
    for key in grads:
        grads[key] = grads[key] + gp[key]
    clock.mark("backward_s")
    y0n = np.asarray(_xp.to_numpy(s.y0))
    mismatch = float(np.max(np.abs(np.asarray(_xp.to_numpy(y0_rec)) - y0n)) / max(1.0, float(np.max(np.abs(y0n)))))
    return finish(s, "reversible_heun", loss=L, grad_y0=gy0, grad_params=grads, timing=clock.marks,
                  steps_forward=sol.stats.steps, steps_backward=n, adjoint_mismatch=mismatch,
                  memory=stored_memory(s, scheme.state_size + len(s.ts), step_floats=2 * n),
                  details={"stored_arrays": scheme.state_size + len(s.ts), "reconstruction_error": mismatch,
                           "grid_steps": n, "t_steps": t_steps, "rejected_steps": sol.stats.rejected})


register(GradientMode(
    name="reversible_heun", run=run_reversible_heun, libraries=("torch", "jax"), exact_discrete=True,
    description="reversible Heun (fixed or adaptive steps): exact algebraic inverse, discrete gradient in O(1)"
                " memory in the state",
    citation="P. Kidger, J. Foster, X. Li, T. Lyons, Efficient and Accurate Gradients for Neural SDEs, NeurIPS 2021"))


def _register(name: str, description: str, citation: str, options: tuple[str, ...] = ()) -> None:
    def run(s: Setup, **kw: Any) -> Any:
        return _run(s, name, **kw)

    register(GradientMode(name=name, run=run, libraries=("torch", "jax"), exact_discrete=True,
                          description=description, citation=citation, fixed_step=True, options=options))


_register("mali", "MALI: asynchronous leapfrog (damping eta), exact inverse, discrete gradient in O(1) memory",
          "J. Zhuang, N. C. Dvornek, S. Tatikonda, J. S. Duncan, MALI: A memory efficient and reverse accurate"
          " integrator for Neural ODEs, ICLR 2021", options=("eta",))
