"""``forward``: forward sensitivities, the augmented system solved forward with the integrator

    z' = f(t, z),    S' = df/dz S + df/dtheta,    S(t0) = [I_N | 0],

where S = dz/d(z0, theta) has N + P columns (N = y0.size, P = number of parameters); the
right-hand side takes df/d[z, theta] from N + P JVPs of f (forward-mode
:func:`odeverify._xp.jacobian`, vectorised by the library). The error norm
covers z and S (CVODES's default, full error control of the sensitivities), so the result
is exact to the tolerance: at tight tolerances it is the oracle for small problems. The
cost grows with N + P: one evaluation of the augmented field is N + P JVPs, counted in
``nfev_backward`` (``nfev_forward`` counts augmented-field evaluations).

Reference: Hairer, Nørsett & Wanner, Solving ODEs I (1993), §I.14 (variational equations);
A. C. Hindmarsh et al., SUNDIALS, ACM TOMS 31 (2005) (CVODES forward sensitivity analysis).
"""
from __future__ import annotations

from typing import Any

from .. import _xp
from ._common import Clock, Setup, array_bytes, finish, nan_result, stored_memory
from ._modes import GradientMode, register


def run(s: Setup, **_: Any) -> Any:
    clock = Clock()
    xp, N, P = s.xp, s.N, s.P
    M = N + P
    theta = s.flat_params(s.params)

    def aug(t: Any, st: Any) -> Any:
        s.counter.forward += 1
        z = st[:N]
        S = xp.reshape(st[N:], (N, M))
        fz = s.flat_field(t, z, s.params)
        # d f / d[z, theta] (N, N + P): N + P JVPs (forward mode, vectorised by the library)
        s.counter.backward += M
        J = _xp.jacobian(lambda w: s.flat_field(t, w[:N], s.unflat_params(w[N:])), xp.concat([z, theta]))
        dS = J[:, :N] @ S
        if P:
            dS = dS + xp.concat([xp.zeros((N, N), dtype=s.dtype, device=s.device), J[:, N:]], axis=1)
        return xp.concat([fz, xp.reshape(dS, (-1,))])

    z0 = xp.reshape(s.y0, (-1,))
    S0 = xp.concat([xp.eye(N, dtype=s.dtype, device=s.device), xp.zeros((N, P), dtype=s.dtype, device=s.device)],
                   axis=1)
    sol = s.solve(aug, xp.concat([z0, xp.reshape(S0, (-1,))]), s.t_span, t_eval=s.ts)
    clock.mark("forward_s")
    if not sol.success:
        return nan_result(s, "forward", sol.status, f"forward sensitivity solve failed: {sol.message}",
                          nfev_forward=s.counter.forward, nfev_backward=s.counter.backward, timing=clock.marks)
    T = len(s.ts)
    zs = xp.reshape(sol.ys[:, :N], (T,) + s.shape)
    Ss = xp.reshape(sol.ys[:, N:], (T, N, M))
    L = s.loss.value(xp, zs)
    cot = xp.reshape(s.cotangents(zs), (T, 1, N))
    g = xp.sum(xp.reshape(cot @ Ss, (T, M)), axis=0)  # sum_i cot_i^T S(t_i)
    clock.mark("backward_s")
    return finish(s, "forward", loss=L, grad_y0=xp.reshape(g[:N], s.shape), grad_params=s.unflat_params(g[N:]),
                  timing=clock.marks, steps_forward=sol.stats.steps,
                  memory=stored_memory(s, 0, extra_bytes=array_bytes(sol.ys)),  # [z, S] at the loss times
                  details={"stored_arrays": T, "augmented_size": N + N * M})


register(GradientMode(
    name="forward", run=run, libraries=("torch", "jax"), exact_discrete=False,
    description="forward sensitivities [z, S] with S' = f_z S + f_theta (JVPs), full error control",
    citation="Hairer, Nørsett & Wanner, Solving ODEs I (1993) §I.14; Hindmarsh et al., ACM TOMS 31 (2005) (CVODES)",
))
