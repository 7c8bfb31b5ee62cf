"""Neural vector fields: seeded multilayer perceptrons f(t, y) = MLP([y, t]).

The weights come from ``numpy.random.default_rng(seed)`` and are stored as NumPy parameters,
so the same field is built bit-identically in NumPy, PyTorch and JAX (parameters are
converted by :meth:`Problem.converted_params`). The initialisation is scaled (weights
N(0, 1/fan_in), biases N(0, 0.1^2)) so that |f| = O(1) and the dynamics stay O(1) over
t in [0, 1], as in a freshly initialised Neural ODE.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import register
from ._reference_data import with_computed_references
from ._spec import Problem
from .classic import _time

#: problems whose references come from make_references (base problems, no computed refs)
COMPUTED_TARGETS: list[Problem] = []

ACTIVATIONS = ("tanh", "softplus")

CITATION = (
    "R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, Neural Ordinary Differential"
    " Equations, NeurIPS 2018 (MLP vector field; seeded random weights, odeverify)"
)


def _check_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an int >= {minimum}")
    return int(value)


def _make_rhs(depth: int, activation: str, time_dependent: bool, batch: int | None, state: int):
    def act(xp, z):
        if activation == "tanh":
            return xp.tanh(z)
        return xp.logaddexp(z, xp.zeros_like(z))  # softplus, overflow-free

    def rhs(xp, t, y, p):
        x = y
        if batch is not None:
            x = xp.reshape(y, tuple(y.shape[:-1]) + (batch, state))
        z = x @ xp.matrix_transpose(p["W0"]) + p["b0"]
        if time_dependent:
            # t is the last input feature: W0_full = [W0 | w_t]
            tt = _time(xp, t, y)
            tt = xp.expand_dims(tt, axis=-1)
            if batch is not None:
                tt = xp.expand_dims(tt, axis=-1)
            z = z + tt * p["w_t"]
        h = act(xp, z)
        for k in range(1, depth):
            h = act(xp, h @ xp.matrix_transpose(p[f"W{k}"]) + p[f"b{k}"])
        out = h @ xp.matrix_transpose(p["W_out"]) + p["b_out"]
        if batch is not None:
            out = xp.reshape(out, tuple(y.shape))
        return out

    return rhs


def mlp_field(
    state: int = 2,
    hidden: int = 16,
    depth: int = 2,
    activation: str = "tanh",
    time_dependent: bool = False,
    seed: int = 0,
    batch: int | None = None,
    *,
    name: str | None = None,
    t_span: tuple[float, float] = (0.0, 1.0),
) -> Problem:
    """A Neural-ODE vector field: an MLP with ``depth`` hidden layers of width ``hidden``.

    ``f(t, y) = W_out a(... a(W0 [y; t] + b0) ...) + b_out`` with ``a`` = tanh or softplus;
    the time input exists only if ``time_dependent``. Weights are drawn from
    ``numpy.random.default_rng(seed)`` in the order W0 (with the t column last), b0, W1, b1,
    ..., W_out, b_out, then y0 (standard normal). With ``batch=B`` the problem is the batch
    of B independent copies solved as one system of size ``B * state`` (the way a Neural
    ODE solves a mini-batch: one shared step size); ``y0`` is then
    ``mlp_batch_y0(..., B, seed)`` flattened. The returned problem is not registered.
    """
    state = _check_int(state, "state")
    hidden = _check_int(hidden, "hidden")
    depth = _check_int(depth, "depth")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} must be one of {', '.join(ACTIVATIONS)}")
    if not isinstance(time_dependent, bool):
        raise ValueError(f"time_dependent={time_dependent!r} must be a bool")
    seed = _check_int(seed, "seed", minimum=0)
    if batch is not None:
        batch = _check_int(batch, "batch")

    rng = np.random.default_rng(seed)
    fan0 = state + (1 if time_dependent else 0)
    w0_full = rng.standard_normal((hidden, fan0)) / math.sqrt(fan0)
    params: dict[str, Any] = {"W0": np.ascontiguousarray(w0_full[:, :state])}
    if time_dependent:
        params["w_t"] = np.ascontiguousarray(w0_full[:, state])
    params["b0"] = 0.1 * rng.standard_normal(hidden)
    for k in range(1, depth):
        params[f"W{k}"] = rng.standard_normal((hidden, hidden)) / math.sqrt(hidden)
        params[f"b{k}"] = 0.1 * rng.standard_normal(hidden)
    params["W_out"] = rng.standard_normal((state, hidden)) / math.sqrt(hidden)
    params["b_out"] = 0.1 * rng.standard_normal(state)
    y0 = rng.standard_normal(state)
    params["state_dim"] = state
    params["batch"] = batch

    if batch is not None:
        y0 = _batch_y0(state, batch, seed).reshape(-1)

    default = f"mlp_{activation}_{state}x{hidden}_d{depth}{'_t' if time_dependent else ''}"
    default += (f"_b{batch}" if batch is not None else "") + f"_s{seed}"
    tags = {"neural", "nonstiff", "nonlinear", "time_dependent" if time_dependent else "autonomous"}
    return Problem(
        name=name if name is not None else default,
        rhs=_make_rhs(depth, activation, time_dependent, batch, state),
        y0=tuple(y0),
        t_span=t_span,
        params=params,
        tags=tags,
        citation=CITATION,
        description=(
            f"MLP vector field: state {state}, {depth} hidden {activation} layer(s) of width"
            f" {hidden}{', time as an input feature' if time_dependent else ''}"
            f"{f', batch of {batch} copies' if batch is not None else ''}, weights from"
            f" default_rng({seed}) (N(0, 1/fan_in)), t in [{t_span[0]:g}, {t_span[1]:g}]."
        ),
    )


def _batch_y0(state: int, batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 1]).standard_normal((batch, state))


def mlp_batch_y0(problem: Problem, batch: int, seed: int) -> np.ndarray:
    """A batch of initial conditions for an MLP problem: shape ``(batch, state)``, standard
    normal from ``numpy.random.default_rng([seed, 1])`` (float64)."""
    if "state_dim" not in problem.params:
        raise ValueError(f"problem={problem.name!r} is not an MLP field (made by mlp_field)")
    batch = _check_int(batch, "batch")
    seed = _check_int(seed, "seed", minimum=0)
    return _batch_y0(int(problem.params["state_dim"]), batch, seed)


def _register(problem: Problem) -> Problem:
    COMPUTED_TARGETS.append(problem)
    return register(with_computed_references(problem))


_register(mlp_field(2, 16, 2, "tanh", seed=0, name="mlp_tanh_2x16"))
_register(mlp_field(4, 32, 2, "softplus", time_dependent=True, seed=1, name="mlp_softplus_4x32_t"))
_register(mlp_field(32, 128, 2, "tanh", seed=2, name="mlp_tanh_32x128"))
