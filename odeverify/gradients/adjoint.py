"""Continuous adjoints ("optimise then discretise"): ``backsolve``, ``interpolated``, ``quadrature``.

All three integrate the adjoint a(t) = dL/dz(t) backward with the integrator
(:func:`odeverify.solve`, the same method unless ``adjoint_method`` is given),

    a' = -a^T df/dz,    a_theta' = -a^T df/dtheta,

from the last loss time to t0, restarting at each earlier loss time t_i with the loss
cotangent dL/dy(t_i) added to a. They differ in where z(t) comes from and how dL/dtheta is
accumulated:

- ``backsolve`` (Chen et al. 2018): z is solved backward too, in the augmented state
  [z, a, a_theta]; at each loss time z is reset to the stored forward value (as torchdiffeq
  does). ``seminorm`` (Kidger, Chen & Lyons 2021, "Hey, that's not an ODE") leaves a_theta
  out of the error norm, expressed with per-component tolerances: atol = 1e30 on the
  a_theta components (their scaled error is then ~1e-30, i.e. zero) and rtol, atol scaled
  by sqrt(2N / (2N + P)) on the [z, a] components, so that the RMS over all 2N + P
  components equals the RMS over [z, a] alone — exactly the seminorm.
  ``adjoint_mismatch`` (``_spec.reconstruction_mismatch``): the worst of max|z_rec - z| /
  max(1, max|z|) where each backward segment ends (an earlier loss time, before the reset,
  and t0), as torchdiffeq's and diffrax's backsolves are measured.
- ``interpolated`` (Daulbaev et al. 2020): z(t) is the forward solve's own dense output
  (start state and stages of every accepted step are stored), and [a, a_theta] is solved
  backward.
- ``quadrature`` (SciMLSensitivity's QuadratureAdjoint): only a is solved backward (z from
  the forward dense output); dL/dtheta = int a^T df/dtheta dt is then a Gauss–Legendre sum
  over each accepted adjoint step, with a(t) from the adjoint solve's dense output and
  ceil((p + 1) / 2) nodes for a method of order p (exact for polynomials of degree p).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _xp
from ..integrate import resolve_solver
from ._common import (Clock, DenseSolution, RecordingSolver, Setup, finish, nan_result, require_dense,
                      stored_memory)
from ._modes import GradientMode, register
from ._spec import UNSTABLE_MISMATCH, mismatch_message, reconstruction_mismatch  # noqa: F401 (re-exported)

#: atol of the components a seminorm leaves out of the error norm (see the module docstring)
SEMINORM_ATOL = 1e30


def _scalar_tol(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}, but adjoint modes need a scalar tolerance (pass {name}=<float>)") from None
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"{name}={value!r}, but it must be finite and > 0")
    return out


def adjoint_tolerances(s: Setup, adjoint_rtol: Any, adjoint_atol: Any, n_main: int, n_extra: int,
                       seminorm: bool) -> tuple[Any, Any]:
    """(rtol, atol) for an augmented state of n_main error-controlled and n_extra parameter
    components; with ``seminorm`` the parameter part is left out of the norm."""
    rtol = _scalar_tol("adjoint_rtol" if adjoint_rtol is not None else "rtol", s.rtol if adjoint_rtol is None else adjoint_rtol)
    atol = _scalar_tol("adjoint_atol" if adjoint_atol is not None else "atol", s.atol if adjoint_atol is None else adjoint_atol)
    if not seminorm or n_extra == 0:
        return rtol, atol
    c = math.sqrt(n_main / (n_main + n_extra))
    r = np.concatenate([np.full(n_main, rtol * c), np.full(n_extra, rtol)])
    a = np.concatenate([np.full(n_main, atol * c), np.full(n_extra, SEMINORM_ATOL)])
    return r, a


def _t_float(t: Any) -> float:
    # float() of the 0-d array (item()), not to_numpy: inside a torch.func transform (the
    # implicit solvers' autodiff Jacobian of the adjoint field) tensors have no storage to view
    return float(_xp.stop_gradient(t))


def _forward(s: Setup, keep: bool) -> tuple[Any, Any, Any]:
    rec = RecordingSolver(s.solver, keep=keep) if keep else None  # backsolve keeps no step record
    sol = s.solve(s.field(), s.y0, s.t_span, t_eval=s.ts, solver=rec)
    dense = DenseSolution(s, rec.accepted(sol.t_steps), sol.t_steps, s.field()) if keep and sol.success else None
    return sol, rec, dense


def _segments(s: Setup) -> list[tuple[int, float, float]]:
    """(loss index i, from t_i, to t_{i-1} or t0) for the backward sweep, last first; a
    segment of zero length (t_0 = t0) is left out."""
    out = []
    for i in range(len(s.ts) - 1, -1, -1):
        t_to = float(s.ts[i - 1]) if i > 0 else s.t_span[0]
        out.append((i, float(s.ts[i]), t_to))
    return out


def run_adjoint(s: Setup, mode: str, *, adjoint_rtol: Any = None, adjoint_atol: Any = None, seminorm: bool = False,
                adjoint_method: Any = None, **_: Any) -> Any:
    if not isinstance(seminorm, bool):
        raise ValueError(f"seminorm={seminorm!r}, but it must be a bool")
    backsolve, quadrature = mode == "backsolve", mode == "quadrature"
    if not backsolve:
        require_dense(s.solver, "method", mode)
    method = s.solver if adjoint_method is None else resolve_solver(adjoint_method)
    if quadrature:
        require_dense(method, "adjoint_method", mode)
    clock = Clock()
    xp, N, P = s.xp, s.N, s.P
    with_theta = P > 0 and not quadrature
    n_main = 2 * N if backsolve else N
    rtol, atol = adjoint_tolerances(s, adjoint_rtol, adjoint_atol, n_main, P if with_theta else 0, seminorm)
    sol, rec, dense = _forward(s, keep=not backsolve)
    clock.mark("forward_s")
    if not sol.success:
        return nan_result(s, mode, sol.status, f"forward solve failed: {sol.message}", nfev_forward=sol.stats.nfev,
                          timing=clock.marks)
    L = s.loss.value(xp, sol.ys)
    cot = xp.reshape(s.cotangents(sol.ys), (len(s.ts), N))
    zs = xp.reshape(sol.ys, (len(s.ts), N))
    s.counter.phase = "backward"


    def aug(t: Any, st: Any) -> Any:
        if backsolve:
            z, a = st[:N], st[N:2 * N]
        else:
            z, a = xp.reshape(dense(_t_float(t)), (-1,)), st[:N]
        fz, gz, gp = s.field_vjp(t, z, a, with_params=with_theta)
        parts = ([fz] if backsolve else []) + [-gz] + ([-gp] if with_theta else [])
        return xp.concat(parts)

    a = xp.zeros((N,), dtype=s.dtype, device=s.device)
    ath = xp.zeros((P,), dtype=s.dtype, device=s.device)
    reconstructed = []  # (z_rec, forward z) where each backward solve of z ends
    steps_b = 0
    quad_nodes = 0
    n_nodes = math.ceil((method.order + 1) / 2)
    xg, wg = np.polynomial.legendre.leggauss(n_nodes)
    xg, wg = (xg + 1) / 2, wg / 2
    stored_adjoint = stored_adjoint_steps = 0
    for i, t_from, t_to in _segments(s):
        a = a + cot[i]
        if t_from == t_to:
            continue
        parts = ([zs[i]] if backsolve else []) + [a] + ([ath] if with_theta else [])
        arec = RecordingSolver(method, keep=quadrature)
        bsol = s.solve(aug, xp.concat(parts), (t_from, t_to), solver=arec, rtol=rtol, atol=atol, backward=True)
        steps_b += bsol.stats.steps
        if not bsol.success:
            return nan_result(s, mode, bsol.status, f"backward (adjoint) solve from t={t_from} to t={t_to} failed:"
                              f" {bsol.message}", nfev_forward=s.counter.forward, nfev_backward=s.counter.backward,
                              timing=clock.marks, loss=float(_xp.to_numpy(L)))
        end = bsol.ys[-1]
        if backsolve:
            target = zs[i - 1] if i > 0 else xp.reshape(s.y0, (-1,))
            reconstructed.append((_xp.to_numpy(end[:N]), _xp.to_numpy(target)))
            a = end[N:2 * N]
        else:
            a = end[:N]
        if with_theta:
            ath = end[n_main:]
        if quadrature and P > 0:
            # dL/dtheta += int_{t_to}^{t_from} a^T df/dtheta dt, Gauss–Legendre on each adjoint step
            adj_steps = arec.accepted(bsol.t_steps)
            if sum(1 + len(st.res.ks) for st in adj_steps) + 1 > stored_adjoint:
                stored_adjoint = sum(1 + len(st.res.ks) for st in adj_steps) + 1
                stored_adjoint_steps = len(adj_steps)
            adense = DenseSolution(s, adj_steps, bsol.t_steps, aug, solver=method)
            for st in adj_steps:
                for x, w in zip(xg, wg):
                    tq = st.t + x * st.h
                    aq = adense(tq)[:N]
                    zq = xp.reshape(dense(tq), (-1,))
                    _, _, gp = s.field_vjp(s.time(tq), zq, aq, with_params=True)
                    ath = ath + (-w * st.h) * gp  # a_theta' = -a^T f_theta over the signed step h
                    quad_nodes += 1
    clock.mark("backward_s")
    gy0 = xp.reshape(a, s.shape)
    gp = s.unflat_params(ath) if P else {}
    mismatch = reconstruction_mismatch(reconstructed) if backsolve else None
    message = mismatch_message(mismatch)
    # state-sized arrays held at the peak: the forward outputs (one per loss time) and, but for
    # backsolve, the dense forward solution (start state and stages of every step), and
    # quadrature also the dense adjoint of one segment at a time (the largest segment)
    stored = len(s.ts) + (0 if dense is None else dense.stored_arrays())
    # the dense adjoint of quadrature holds stages of the adjoint [a] (N entries, the state's size)
    memory = stored_memory(s, stored + stored_adjoint,
                           step_floats=0 if dense is None else 2 * len(dense.steps) + 2 * stored_adjoint_steps)
    stored += stored_adjoint
    return finish(s, mode, loss=L, grad_y0=gy0, grad_params=gp, timing=clock.marks, steps_forward=sol.stats.steps,
                  steps_backward=steps_b, adjoint_mismatch=mismatch, message=message,
                  options={"seminorm": seminorm, "adjoint_rtol": adjoint_rtol, "adjoint_atol": adjoint_atol,
                           "adjoint_method": method.name},
                  memory=memory,
                  details={"stored_arrays": stored, "quadrature_nodes": quad_nodes, "t_steps": sol.t_steps,
                           "adjoint_tolerance": "seminorm" if (seminorm and with_theta) else "norm"})



def _register(name: str, description: str, citation: str) -> None:
    def run(s: Setup, **options: Any) -> Any:
        return run_adjoint(s, name, **options)

    register(GradientMode(name=name, run=run, libraries=("torch", "jax"), exact_discrete=False,
                          description=description, citation=citation,
                          options=("adjoint_rtol", "adjoint_atol", "seminorm", "adjoint_method")))


_register("backsolve", "continuous adjoint: [z, a, a_theta] solved backward, z reset at each loss time",
          "R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, Neural Ordinary Differential Equations,"
          " NeurIPS 2018; seminorm: P. Kidger, R. T. Q. Chen, T. Lyons, 'Hey, that's not an ODE': Faster ODE"
          " adjoints via seminorms, ICML 2021")
_register("interpolated", "continuous adjoint with z(t) from the stored forward dense output",
          "T. Daulbaev, A. Katrutsa, L. Markeeva, J. Gusak, A. Cichocki, I. Oseledets, Interpolation technique to"
          " speed up gradients propagation in neural ODEs, NeurIPS 2020")
_register("quadrature", "adjoint a(t) backward with interpolated z; dL/dtheta by Gauss-Legendre quadrature",
          "C. Rackauckas et al., Universal differential equations for scientific machine learning,"
          " arXiv:2001.04385 (2020); SciMLSensitivity.jl QuadratureAdjoint")
