"""``value_and_grad``: one entry point for every gradient mode."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .. import _xp
from ..problems import Problem
from ..solution import Status
from ._common import nan_result, prepare
from ._modes import GRADIENT_MODES
from ._spec import GradientResult, Loss


def value_and_grad(problem: Problem, loss: Loss, *, mode: str, method: Any = "dopri5", library: str = "torch",
                   dtype: str = "float64", y0: Any = None, params: Any = None, rtol: Any = 1e-6, atol: Any = 1e-9,
                   dt: Any = None, n_steps: Any = None, max_steps: int = 100_000, adjoint_rtol: Any = None,
                   adjoint_atol: Any = None, seminorm: bool = False, checkpoints: Any = None,
                   adjoint_method: Any = None, eta: float = 1.0, device: Any = None,
                   memory_accounting: bool = True, tstops: Any = None) -> GradientResult:
    """The loss and its gradient with respect to ``y0`` and every array parameter of ``problem``.

    Parameters
    ----------
    problem : Problem
        The initial-value problem; its ``t_span`` is the span of the forward solve.
    loss : Loss
        ``L = sum_i [w_i . y(t_i) + q/2 |y(t_i)|^2]`` at ``loss.t_eval`` (inside ``t_span``).
    mode : str
        A name in ``GRADIENT_MODES`` (discrete, backsolve, checkpoint, interpolated,
        quadrature, forward, reversible_heun, mali).
    method, rtol, atol, dt, n_steps, max_steps
        The forward solve, as in :func:`odeverify.solve`.
    library : {"torch", "jax"}; dtype : {"float64", "float32"}
    y0 : NumPy array (n,) or (B, n), optional; params : dict of NumPy arrays, optional
        Overrides of ``problem.y0`` and ``problem.params``.
    adjoint_rtol, adjoint_atol, seminorm, adjoint_method
        The backward solve of the continuous adjoints (default: the forward's tolerances
        and method; ``seminorm`` leaves dL/dtheta out of its error norm).
    checkpoints : int, optional
        ``checkpoint`` mode: stored states, y0 included.
    eta : float
        ``mali`` mode: the damping of the asynchronous leapfrog (1 = none).
    device : optional
        The library's device for every array (e.g. ``"cuda"`` on PyTorch); default its default.
    tstops : 1-d sequence, optional
        Times where the field may be discontinuous (a piecewise control's knots), as in
        :func:`odeverify.solve`: the forward solve, the backward solves of the continuous
        adjoints and the replayed steps of checkpointing and interpolation all land on them
        and evaluate f on each step's own side.
    memory_accounting : bool
        Meter the tensors PyTorch autograd saves for backward (``memory["saved_for_backward_*"]``,
        see :class:`GradientResult`). The saved-tensor hooks cost time (measured: +28% wall
        time of ``discrete`` on a 4-32-32-4 MLP field, dopri5, rtol 1e-8): pass False for
        timing runs (the saved bytes are then None, with the reason in ``details``).

    Returns
    -------
    GradientResult
        A failed forward or backward solve keeps NaN gradients and its status; a non-finite
        gradient of a successful solve gets status ``nonfinite`` and a message.
    """
    if not isinstance(mode, str):
        raise TypeError(f"mode={mode!r}, but it must be a gradient mode name (str)")
    gm = GRADIENT_MODES.get(mode)
    s = prepare(problem, loss, method=method, library=library, dtype=dtype, y0=y0, params=params, rtol=rtol,
                atol=atol, dt=dt, n_steps=n_steps, max_steps=max_steps, device=device, tstops=tstops)
    if library not in gm.libraries:
        raise ValueError(f"library={library!r} is not supported by mode {mode!r}; expected one of {gm.libraries}")
    if tstops is not None and mode in ("reversible_heun", "mali"):
        raise ValueError(f"tstops={tstops!r}, but mode {mode!r} inverts its own fixed steps and does not stop at"
                         " given times; expected tstops=None, or a mode that solves through odeverify.solve")
    if gm.fixed_step and not s.fixed:
        raise ValueError(f"mode {mode!r} is fixed-step: pass dt=... or n_steps=...")
    given = {"adjoint_rtol": adjoint_rtol, "adjoint_atol": adjoint_atol, "seminorm": seminorm or None,
             "checkpoints": checkpoints, "adjoint_method": adjoint_method, "eta": None if eta == 1.0 else eta}
    ignored = [k for k, v in given.items() if v is not None and k not in gm.options]
    if ignored:
        warnings.warn(f"mode {mode!r} ignores the option(s) {', '.join(ignored)}", stacklevel=2)
    options = {k: v for k, v in {"adjoint_rtol": adjoint_rtol, "adjoint_atol": adjoint_atol, "seminorm": seminorm,
                                 "checkpoints": checkpoints, "adjoint_method": adjoint_method, "eta": eta}.items()
               if k in gm.options}
    if not isinstance(memory_accounting, bool):
        raise ValueError(f"memory_accounting={memory_accounting!r}, but it must be a bool")
    with _xp.saved_tensor_bytes(library if memory_accounting else "off") as meter:
        try:
            res = gm.run(s, **options)
        except (ValueError, TypeError):
            raise  # bad input: the error names the parameter
        except (ArithmeticError, RuntimeError, np.linalg.LinAlgError) as exc:
            res = nan_result(s, mode, Status.FAILED, f"{type(exc).__name__}: {exc}")
    res.memory.update(saved_for_backward_bytes=meter.total_bytes, saved_for_backward_peak_bytes=meter.peak_bytes)
    if meter.reason:
        res.details["saved_for_backward_reason"] = ("not measured (memory_accounting=False)" if not memory_accounting
                                                    else meter.reason)
    return res
