"""``checkpoint``: the discrete adjoint with stored step states and recomputation, under a
budget of ``checkpoints`` stored states.

The forward solve records only its accepted steps ``(t_k, h_k)`` and keeps ``y0``. The
reverse sweep is recursive bisection (Griewank 1992's simple recursive checkpointing; not
the binomially optimal *revolve* schedule of Griewank & Walther 2000): to reverse the steps
``a .. b-1`` from a stored ``y_a`` it recomputes ``y_m`` at the midpoint ``m``, stores it,
reverses ``m .. b-1``, releases ``y_m`` and reverses ``a .. m-1``. With no slot left it
recomputes every step from ``y_a`` (quadratic cost). One step is reversed by a VJP of the
step map as the integrator took it (same ``t_k``, ``h_k``, first stage ``f(t_k, y_k)``, dense
output for the loss times inside the step), so the result equals ``discrete`` to round-off.

``checkpoints`` counts stored states including ``y0`` (>= 1); the default
``ceil(log2(steps)) + 1`` makes bisection never need the quadratic branch. The peak number
held at once is recorded in ``details["peak_stored_states"]`` (transient states of a
recomputation are not checkpoints and are not counted, as in revolve);
``details["stored_arrays"]`` adds the forward outputs at the loss times.
"""
from __future__ import annotations

import math
from typing import Any

from .. import _xp
from ._common import (Clock, RecordingSolver, Setup, finish, nan_result, outputs_by_step, replay_step,
                      require_explicit, stored_memory)
from ._modes import GradientMode, register


def run(s: Setup, *, checkpoints: Any = None, **_: Any) -> Any:
    require_explicit(s, "checkpoint")
    clock = Clock()
    xp = s.xp
    rec = RecordingSolver(s.solver)
    f = s.field()
    sol = s.solve(f, s.y0, s.t_span, t_eval=s.ts, solver=rec)
    clock.mark("forward_s")
    if not sol.success:
        return nan_result(s, "checkpoint", sol.status, f"forward solve failed: {sol.message}",
                          nfev_forward=sol.stats.nfev, timing=clock.marks)
    t_steps = sol.t_steps
    steps = rec.accepted(t_steps)
    n = len(steps)
    if checkpoints is None:
        budget = max(1, math.ceil(math.log2(max(n, 1)))) + 1
    else:
        if isinstance(checkpoints, bool) or not isinstance(checkpoints, int) or checkpoints < 1:
            raise ValueError(f"checkpoints={checkpoints!r}, but it must be an int >= 1 (stored states, y0 included)")
        budget = checkpoints
    L = s.loss.value(xp, sol.ys)
    cot = s.cotangents(sol.ys)
    at_start, per_step = outputs_by_step(s.ts, t_steps)
    s.counter.phase = "backward"
    fb = s.field()
    held = {"now": 1, "peak": 1, "recomputed_steps": 0}  # y0 is stored
    grads = {k: xp.zeros_like(v) for k, v in s.params.items()}

    def advance(a: int, b: int, y: Any) -> Any:
        for k in range(a, b):
            y, _, _ = replay_step(s, fb, y, steps[k].t, steps[k].h, [], t_steps[k + 1])
            held["recomputed_steps"] += 1
        return y

    def step_vjp(k: int, y: Any, g: Any) -> Any:
        idx = per_step[k]
        t_out = [float(s.ts[i]) for i in idx]

        def fn(yy: Any, pp: Any) -> Any:
            y1, outs, _ = replay_step(s, s.field(pp), yy, steps[k].t, steps[k].h, t_out, t_steps[k + 1])
            return xp.stack([y1] + outs, axis=0)

        ct = xp.stack([g] + [cot[i] for i in idx], axis=0)
        _, (gy, gp) = _xp.metered_vjp(fn, (y, s.params), ct)
        for key in grads:
            grads[key] = grads[key] + gp[key]
        return gy

    def reverse(a: int, b: int, y_a: Any, g_b: Any, free: int) -> Any:
        if b - a == 1:
            return step_vjp(a, y_a, g_b)
        if free == 0:
            g = g_b
            for k in range(b - 1, a - 1, -1):
                g = step_vjp(k, advance(a, k, y_a), g)
            return g
        m = (a + b) // 2
        y_m = advance(a, m, y_a)
        held["now"] += 1
        held["peak"] = max(held["peak"], held["now"])
        g_m = reverse(m, b, y_m, g_b, free - 1)
        held["now"] -= 1
        return reverse(a, m, y_a, g_m, free)

    g_end = xp.zeros_like(s.y0)
    g0 = reverse(0, n, s.y0, g_end, budget - 1) if n else g_end
    for i in at_start:
        g0 = g0 + cot[i]
    clock.mark("backward_s")
    return finish(s, "checkpoint", loss=L, grad_y0=g0, grad_params=grads, timing=clock.marks,
                  steps_forward=sol.stats.steps, steps_backward=n + held["recomputed_steps"],
                  options={"checkpoints": budget},
                  memory=stored_memory(s, held["peak"] + len(s.ts), step_floats=2 * n),
                  details={"checkpoints": budget, "peak_stored_states": held["peak"],
                           "recomputed_steps": held["recomputed_steps"], "stored_arrays": held["peak"] + len(s.ts),
                           "schedule": "recursive bisection"})


register(GradientMode(
    name="checkpoint", run=run, libraries=("torch", "jax"), exact_discrete=True,
    description="discrete adjoint with recursive-bisection checkpointing under a budget of stored states",
    citation="A. Griewank, Achieving logarithmic growth of temporal and spatial complexity in reverse automatic"
             " differentiation, Optim. Methods Softw. 1 (1992) 35-54",
    options=("checkpoints",),
))
