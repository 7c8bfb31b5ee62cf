"""Gradients through events and jumps (issue 12): dL/dtheta of a solve with events, where
the event times depend on theta.

The loss of an :class:`~odeverify.problems.events.EventProblem` solve is
``L = sum_k c_k t_k + w . y(T)`` (event times ``t_k``, the final state: at the horizon, or at
the terminal event that ended the solve, where it moves with the event time). Two modes:

- ``discrete``: automatic differentiation through the one loop
  (:func:`odeverify.integrate.solve_with_jumps`): each root is found without the graph, then
  one Newton correction with the graph attached gives ``dt_k/dtheta`` by the implicit function
  theorem, ``-(dg/dtheta at fixed t_k) / (dg/dt along the solution)`` (the trick of
  torchdiffeq's ``odeint_event``, Chen, Amos & Nickel 2021).
- ``adjoint``: the continuous adjoint ``a' = -a^T f_y``, ``a_theta' = -a^T f_theta`` solved
  backward segment by segment from the stored event states, with the adjoint's jump
  condition at each event (Stewart & Anitescu 2010; Chen, Amos & Nickel 2021, "Learning
  neural event functions for ordinary differential equations", ICLR, eq. 8): crossing an
  event backward, ``a- = J_y^T a+ + g_y (a+ . (f+ - J_y f-) - c_k) / gdot`` and
  ``a_theta += J_theta^T a+ + g_theta (a+ . (f+ - J_y f-) - c_k) / gdot`` with
  ``gdot = g_t + g_y . f-`` (for an event without a jump, ``J`` is the identity and
  ``f+ = f-``: only the event time's own term remains).

Both run on PyTorch (the vector-Jacobian products of ``f``, ``g`` and the jump).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import _xp
from ..integrate import solve, solve_with_jumps
from ..solution import Status

#: the modes of :func:`event_value_and_grad`
EVENT_GRADIENT_MODES = ("discrete", "adjoint")


def _weights(ep: Any, n_events: int, time_weights: Sequence[float] | None, state_weights: Sequence[float] | None
             ) -> tuple[np.ndarray, np.ndarray]:
    c = np.ones(n_events) if time_weights is None else np.asarray(time_weights, dtype=np.float64)
    w = np.ones(ep.problem.n) if state_weights is None else np.asarray(state_weights, dtype=np.float64)
    if c.shape != (n_events,):
        raise ValueError(f"time_weights has shape {c.shape}, but the solve has {n_events} events: it must be"
                         f" ({n_events},)")
    if w.shape != (ep.problem.n,):
        raise ValueError(f"state_weights has shape {w.shape}, but it must be ({ep.problem.n},)")
    return c, w


def end_time(ep: Any, ex: Any) -> float:
    """Where a solve of ``ep`` ends, by the closed form ``ex``: at the last event when it is the
    terminal occurrence of an event no jump applies to (the solve stops there), else at the
    horizon."""
    T = ep.problem.t_span[1]
    if not len(ex.times):
        return T
    ev = ep.events[int(ex.which[-1])]
    count = ev.terminal_count
    jumps = ep.jump is not None and ep.jump.applies(ev.name)
    if count is None or jumps:
        return T
    occurrences = int(sum(1 for i in ex.which if int(i) == int(ex.which[-1])))
    return float(ex.times[-1]) if occurrences >= count else T


def exact_value_and_grad(ep: Any, time_weights: Sequence[float] | None = None,
                         state_weights: Sequence[float] | None = None) -> tuple[float, np.ndarray, float]:
    """The oracle: ``(L, dL/dtheta, error estimate)`` from the closed forms alone (no solver
    code): ``dt_k/dtheta`` from the problem's ``time_gradient``, and the final state's derivative
    by complex steps of its closed-form ``state`` (exact to round-off; the end time moves with
    theta when a terminal event ends the solve). Central differences of the state failed here:
    a ball with restitution 0.3 had flights shorter than the difference step needed, so the
    impact count before the horizon changed inside the stencil (explore: an oracle error of 0.95)."""
    keys = list(ep.theta)
    ex = ep.exact_events()
    c, w = _weights(ep, len(ex.times), time_weights, state_weights)
    t_end = end_time(ep, ex)
    at_event = len(ex.times) > 0 and t_end == float(ex.times[-1]) and t_end != ep.problem.t_span[1]
    L = float(c @ ex.times + w @ np.real(ep.state(t_end, ep.theta)))
    dt = ep.time_gradient(ep.theta) if len(ex.times) else np.zeros((0, len(keys)))
    grad = c @ dt if len(ex.times) else np.zeros(len(keys))
    eps = 1e-30
    for j, key in enumerate(keys):
        th = {k: complex(v) for k, v in ep.theta.items()}
        th[key] += 1j * eps
        t_c = t_end + 1j * eps * (dt[-1, j] if at_event else 0.0)
        grad[j] += float(np.imag(w @ ep.state(t_c, th))) / eps
    return L, grad, 1e-13 * max(1.0, float(np.max(np.abs(grad))) if len(grad) else 1.0)


def _torch_theta(ep: Any) -> tuple[Any, Any, list[str]]:
    torch = _xp.require("torch")
    keys = list(ep.theta)
    vec = torch.tensor([float(ep.theta[k]) for k in keys], dtype=torch.float64, requires_grad=False)
    return torch, vec, keys


def _split(xp: Any, vec: Any, keys: list[str]) -> dict[str, Any]:
    return {k: vec[i] for i, k in enumerate(keys)}


def discrete_value_and_grad(ep: Any, method: Any = "dopri5", *, time_weights: Sequence[float] | None = None,
                            state_weights: Sequence[float] | None = None, **options: Any) -> dict[str, Any]:
    """``discrete`` mode: autograd through :func:`solve_with_jumps` (PyTorch)."""
    torch, vec, keys = _torch_theta(ep)
    vec = vec.clone().requires_grad_(True)
    xp = _xp.namespace(vec)
    y0, params = ep.parametrize(xp, _split(xp, vec, keys))
    sol = solve_with_jumps(ep, method, y0=y0, params=params, **options)
    if not sol.success:
        return {"status": sol.status, "message": sol.message, "grad": np.full(len(keys), np.nan), "value": math.nan}
    n_ev = len(sol.t_events)
    c, w = _weights(ep, n_ev, time_weights, state_weights)
    # the final state: at the horizon, or at the terminal event that ended the solve (with the IFT
    # correction: it moves with the event time)
    y_end = sol.y_events[-1] if sol.status is Status.EVENT and n_ev else sol.ys[-1]
    L = (xp.sum(sol.event_times * torch.tensor(c)) if n_ev else 0.0) + xp.sum(y_end * torch.tensor(w))
    (g,) = torch.autograd.grad(L, vec)
    return {"status": sol.status, "message": sol.message, "grad": g.detach().numpy(), "value": float(L.detach()),
            "t_events": sol.t_events, "nfev": sol.stats.nfev}


def adjoint_value_and_grad(ep: Any, method: Any = "dopri5", *, time_weights: Sequence[float] | None = None,
                           state_weights: Sequence[float] | None = None, rtol: float = 1e-10, atol: float = 1e-12,
                           jump_condition: bool = True, **options: Any) -> dict[str, Any]:
    """``adjoint`` mode: the continuous adjoint with the jump condition at each event.
    ``jump_condition=False`` keeps only ``J_y^T a+`` at an event (the planted fault that
    forgets the event time's dependence on the state)."""
    torch, vec, keys = _torch_theta(ep)
    xp = _xp.namespace(vec)
    prob = ep.problem
    n, P = prob.n, len(keys)

    def params_of(th: Any) -> dict[str, Any]:
        return ep.parametrize(xp, _split(xp, th, keys))[1]

    def y0_of(th: Any) -> Any:
        return ep.parametrize(xp, _split(xp, th, keys))[0]

    y0, params = ep.parametrize(xp, _split(xp, vec, keys))
    fwd = solve_with_jumps(ep, method, y0=y0, params=params, implicit_gradient=False, rtol=rtol, atol=atol,
                           **options)
    if not fwd.success:
        return {"status": fwd.status, "message": f"forward solve: {fwd.message}", "grad": np.full(P, np.nan),
                "value": math.nan}
    n_ev = len(fwd.t_events)
    c, w = _weights(ep, n_ev, time_weights, state_weights)
    T = prob.t_span[1]
    ended = fwd.status is Status.EVENT and n_ev > 0  # a terminal event without a jump ended the solve
    y_end = fwd.y_events[-1] if ended else fwd.ys[-1]
    value = float(c @ fwd.t_events + np.asarray(w) @ _xp.to_numpy(y_end))

    def f(t: Any, y: Any, th: Any) -> Any:
        return prob.rhs(xp, t, y, params_of(th))

    def tt(s: float) -> Any:
        return torch.tensor(s, dtype=torch.float64)

    def aug(t: Any, z: Any) -> Any:
        y, a = z[:n], z[n:2 * n]
        fy, (vy, vth) = _xp.vjp(lambda yy, th: f(t, yy, th), (y, vec), a)
        return torch.cat([fy, -vy, -vth])

    nfev = [fwd.stats.nfev]

    def backward(y_hi: Any, a: Any, ath: Any, t_hi: float, t_lo: float) -> tuple[Any, Any, dict | None]:
        # the adjoint from t_hi down to t_lo, the state restarted from the forward one at t_hi
        bsol = solve(aug, torch.cat([y_hi, a, ath]), (t_hi, t_lo), method=method, rtol=rtol, atol=atol)
        nfev[0] += bsol.stats.nfev
        if not bsol.success:
            return a, ath, {"status": bsol.status, "message": f"adjoint solve {t_hi}->{t_lo}: {bsol.message}",
                            "grad": np.full(P, np.nan), "value": value}
        return bsol.ys[-1][n:2 * n], bsol.ys[-1][2 * n:], None

    a = torch.tensor(w, dtype=torch.float64)
    ath = torch.zeros(P, dtype=torch.float64)
    y_hi = y_end
    t_hi = float(fwd.t_events[-1]) if ended else T
    for k in range(n_ev - 1, -1, -1):
        t_k = float(fwd.t_events[k])
        y_minus = fwd.y_events[k]
        ev = ep.events[int(fwd.event_index[k])]
        jumps = ep.jump is not None and ep.jump.applies(ev.name) and ev.terminal is not False
        last = ended and k == n_ev - 1
        y_plus = ep.jump.map(xp, tt(t_k), y_minus, params) if jumps else y_minus
        # backward over (t_k, t_hi] from the state at t_hi (forward-stored), then cross the event
        if t_hi != t_k:
            a, ath, failed = backward(y_hi, a, ath, t_hi, t_k)
            if failed:
                return failed
        g_fun = lambda yy, th: ev.g(xp, tt(t_k), yy, params_of(th))  # noqa: E731
        _, (g_y, g_th) = _xp.vjp(g_fun, (y_minus, vec), torch.tensor(1.0, dtype=torch.float64))
        eps = 1e-6 * max(1.0, abs(t_k))
        g_t = float(ev.g(xp, tt(t_k + eps), y_minus, params) - ev.g(xp, tt(t_k - eps), y_minus, params)) / (2 * eps)
        f_minus = f(tt(t_k), y_minus, vec)
        gdot = g_t + float(torch.dot(g_y, f_minus))
        if jumps:
            j_fun = lambda yy, th: ep.jump.map(xp, tt(t_k), yy, params_of(th))  # noqa: E731
            _, (aJy, aJth) = _xp.vjp(j_fun, (y_minus, vec), a)
            _, Jf = _xp.jvp(lambda yy: j_fun(yy, vec), (y_minus,), (f_minus,))
            f_plus = f(tt(t_k), y_plus, vec)
            shift = float(torch.dot(a, f_plus - Jf)) if jump_condition else 0.0
        elif last:
            # the solve ends here: no flow after the event (f+ = 0), so L's w . y(t_K) moves with t_K
            aJy, aJth = a, torch.zeros(P, dtype=torch.float64)
            shift = -float(torch.dot(a, f_minus)) if jump_condition else 0.0
        else:
            aJy, aJth, shift = a, torch.zeros(P, dtype=torch.float64), 0.0
        coef = (shift - float(c[k])) / gdot
        a = aJy + g_y * coef
        ath = ath + aJth + g_th * coef
        y_hi, t_hi = y_minus, t_k
    t0 = prob.t_span[0]
    if t_hi != t0:
        a, ath, failed = backward(y_hi, a, ath, t_hi, t0)
        if failed:
            return failed
    _, (gy0,) = _xp.vjp(y0_of, (vec,), a)
    grad = (ath + gy0).detach().numpy()
    return {"status": Status.SUCCESS, "message": "", "grad": grad, "value": value, "t_events": fwd.t_events,
            "nfev": nfev[0]}


def event_value_and_grad(ep: Any, method: Any = "dopri5", mode: str = "discrete", **options: Any) -> dict[str, Any]:
    """``{"grad": dL/dtheta (in ep.theta's order), "value", "status", "message", ...}`` by
    ``mode`` (one of :data:`EVENT_GRADIENT_MODES`)."""
    if mode not in EVENT_GRADIENT_MODES:
        import difflib

        close = difflib.get_close_matches(str(mode), EVENT_GRADIENT_MODES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"mode={mode!r}, but it must be one of {EVENT_GRADIENT_MODES}{hint}")
    if ep.parametrize is None or not ep.theta:
        raise ValueError(f"event problem {ep.name!r} has no differentiable parameters (theta/parametrize)")
    run = discrete_value_and_grad if mode == "discrete" else adjoint_value_and_grad
    return run(ep, method, **options)


__all__ = ["EVENT_GRADIENT_MODES", "event_value_and_grad", "exact_value_and_grad", "discrete_value_and_grad",
           "adjoint_value_and_grad", "fd_value_and_grad"]


def fd_value_and_grad(ep: Any, method: Any = "rk4", *, time_weights: Sequence[float] | None = None,
                      state_weights: Sequence[float] | None = None, rel_step: float = 1e-6,
                      **options: Any) -> dict[str, Any]:
    """Central differences of the same discrete computation (NumPy, no autodiff):
    ``L(theta)`` by :func:`solve_with_jumps` at ``theta +- h e_j``. Meaningful on a fixed step
    (``dt=...``): an adaptive solve's step sequence changes with theta and so does L, in jumps
    of the tolerance's size."""
    keys = list(ep.theta)

    def loss(th: Mapping[str, float]) -> float:
        y0, params = ep.parametrize(np, th)
        sol = solve_with_jumps(ep, method, y0=np.asarray(y0, dtype=np.float64), params=params,
                               implicit_gradient=False, **options)
        c, w = _weights(ep, len(sol.t_events), time_weights, state_weights)
        return float(c @ sol.t_events + w @ np.asarray(sol.ys[-1]))

    grad = np.zeros(len(keys))
    for j, key in enumerate(keys):
        h = rel_step * max(1.0, abs(ep.theta[key]))
        grad[j] = (loss({**ep.theta, key: ep.theta[key] + h}) - loss({**ep.theta, key: ep.theta[key] - h})) / (2 * h)
    return {"grad": grad, "value": loss(dict(ep.theta))}
