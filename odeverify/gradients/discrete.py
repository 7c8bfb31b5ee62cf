"""``discrete``: reverse-mode automatic differentiation through the solver's own operations.

PyTorch: autograd through :func:`odeverify.solve` (leaf tensors with ``requires_grad``, one
``backward()``). JAX: ``jax.vjp`` around the eager solve (through :func:`odeverify._xp.vjp`):
the solve's control decisions go through ``stop_gradient`` and ``to_numpy``, which work on
the concrete values JAX's eager VJP tracing carries, so no replay of the steps is needed.
``nfev_backward`` counts the evaluations of f whose VJP autograd computes (a hook on each
output, PyTorch); on JAX, every evaluation of the accepted steps (an upper bound).
Either way the result is the exact derivative of the computed solution (the "discretise
then optimise" gradient), with every stage held in memory.
"""
from __future__ import annotations

from typing import Any

from .. import _xp
from ._common import Clock, RecordingSolver, Setup, finish, nan_result, stored_memory
from ._modes import GradientMode, register


def _differentiate(s: Setup, loss_of: Any) -> tuple[Any, Any, dict[str, Any]]:
    """(L, dL/dy0, dL/dp) of ``loss_of(y0, p)`` by reverse mode in the setup's library."""
    if s.library == "torch":
        y0 = s.y0.detach().clone().requires_grad_(True)
        p = {k: v.detach().clone().requires_grad_(True) for k, v in s.params.items()}
        L = loss_of(y0, p)
        if L.requires_grad:
            L.backward()
        zeros = s.xp.zeros_like
        return L.detach(), (y0.grad if y0.grad is not None else zeros(s.y0)), {
            k: (v.grad if v.grad is not None else zeros(v)) for k, v in p.items()}
    L, (gy0, gp) = _xp.vjp(loss_of, (s.y0, s.params), s.xp.asarray(1.0, dtype=s.dtype, device=s.device))
    return L, gy0, dict(gp)


def _count_hook(box: list[int]) -> Any:
    def hook(grad: Any) -> None:
        box[0] += 1

    return hook


def settled(solver: Any) -> Any:
    """``solver`` as a discrete gradient needs it: implicit solvers never accept a Newton stage
    after one iteration (:meth:`odeverify.solvers.implicit.ImplicitBase.for_gradients` says
    why); explicit solvers as they are."""
    return solver.for_gradients() if hasattr(solver, "for_gradients") else solver


def run(s: Setup, **_: Any) -> Any:
    clock = Clock()
    rec = RecordingSolver(settled(s.solver))
    box: dict[str, Any] = {}

    traversed = [0]

    def field(p: Any) -> Any:
        inner = s.field(p)
        if s.library != "torch":
            return inner

        # count the evaluations autograd traverses: a hook on each output (a tensor method)
        def f(t: Any, y: Any) -> Any:
            out = inner(t, y)
            if out.requires_grad:
                out.register_hook(_count_hook(traversed))
            return out

        return f

    def loss_of(y0: Any, p: Any) -> Any:
        sol = s.solve(field(p), y0, s.t_span, t_eval=s.ts, solver=rec)
        box["sol"] = sol
        L = s.loss.value(s.xp, sol.ys)
        clock.mark("forward_s")
        return L

    L, gy0, gp = _differentiate(s, loss_of)
    clock.mark("backward_s")
    sol = box["sol"]
    if not sol.success:
        return nan_result(s, "discrete", sol.status, f"forward solve failed: {sol.message}",
                          nfev_forward=sol.stats.nfev, timing=clock.marks)
    if s.library == "torch":
        s.counter.backward = traversed[0]
    else:
        # JAX has no hooks: every evaluation of the accepted steps (all but the rejected tries
        # and the automatic initial step's extra evaluation, which only feeds a control
        # decision) — an upper bound that can exceed the traversed count by the evaluations
        # made after the last use of the state by the loss (the last step's FSAL stage)
        s.counter.backward = s.counter.forward - rec.rejected_nfev - (0 if s.fixed else 1)
    n_acc = sol.stats.accepted
    return finish(s, "discrete", loss=L, grad_y0=gy0, grad_params=gp, timing=clock.marks,
                  steps_forward=sol.stats.steps, steps_backward=n_acc,
                  memory=stored_memory(s, len(s.ts)),
                  details={"states_in_graph": n_acc + 1, "evaluations_in_graph": s.counter.backward,
                           "t_steps": sol.t_steps,
                           "memory_note": "the autodiff graph holds every state and stage of every accepted step and"
                                          " the intermediates of every evaluation of f: measured (PyTorch) in"
                                          " memory['saved_for_backward_bytes']; stored_bytes is the loss outputs"})


register(GradientMode(
    name="discrete", run=run, libraries=("torch", "jax"), exact_discrete=True,
    description="reverse-mode AD through the solver's own operations (discretise-then-optimise)",
    citation="Griewank & Walther, Evaluating Derivatives, 2nd ed., SIAM 2008; Chen et al., NeurIPS 2018 (direct"
             " backpropagation baseline)",
))
