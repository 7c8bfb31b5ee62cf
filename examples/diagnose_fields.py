"""Seeded 32-dimensional PyTorch vector fields for ``odeverify diagnose``'s worked example and tests.

Each field is an ``nn.Module`` with ``forward(t, z)`` for a batch ``z`` of shape ``(B, 32)`` in
float64, deterministic given its seed, and a known dynamical character:

- ``mlp``: an untrained MLP field ``W2 tanh(W1 z + t c + b1) + b2`` with the usual
  ``1/sqrt(fan_in)`` weight scale: what a Neural ODE starts training from.
- ``dissipative``: ``-z + 0.5 MLP(z)`` with both weight matrices scaled to spectral norm 1,
  so the logarithmic norm of ``df/dz`` is at most ``-1 + 0.5 = -0.5``: every Lyapunov exponent
  is <= -0.5 and every singular value of the flow map is <= exp(-0.5 t) (healthy, contracting).
- ``stiff``: ``-diag(d) z + 0.5 MLP(z)`` with ``d`` log-spaced from 1 to ``ratio`` (1e4): a
  stiffness ratio of about 1e4 on the span (0, 1), where an explicit method needs ~1e4 steps.
- ``chaotic``: the Lorenz system (sigma 10, rho 28, beta 8/3) in 3 of the 32 coordinates,
  the other 29 decaying at rate 1 while driven by the Lorenz ones (a skew product), the whole
  time-scaled by ``speed`` (10) and rotated by a seeded orthogonal matrix. Its Jacobian is
  block triangular in the rotated frame, so its Lyapunov spectrum is exactly ``speed`` times
  Lorenz's (0.9056, 0, -14.5723; Sprott, *Chaos and Time-Series Analysis*, 2003, Table A.1)
  together with ``-speed`` (29 times): largest exponent 9.056 per time unit.

``FIELDS[name](seed=...)`` builds a field, ``initial_states(name, batch, seed)`` a batch of
initial states, ``SPANS[name]`` the time span of the example, ``KNOWN_LARGEST_EXPONENT`` the
exponents known in closed form; ``make_<name>()`` are factories and every field has a ``dim``
attribute, so ``odeverify diagnose examples.diagnose_fields:make_chaotic --z0 normal:256
--t-span 0,1`` works from the repository root.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

DIM = 32
HIDDEN = 64
#: Lorenz's parameters and its largest exponent (Sprott 2003, Table A.1)
SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
LORENZ_LARGEST = 0.9056
#: the chaotic field's time scale
SPEED = 10.0


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _normal(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _unit_spectral(w: torch.Tensor) -> torch.Tensor:
    return w / torch.linalg.matrix_norm(w, ord=2)


def _orthogonal(g: torch.Generator, n: int) -> torch.Tensor:
    q, r = torch.linalg.qr(_normal(g, n, n))
    return q * torch.sign(torch.diagonal(r))


class MLPField(nn.Module):
    """``f(t, z) = scale * (W2 tanh(W1 z + t c + b1) + b2)``; weights ``N(0, 1/fan_in)`` (or of
    spectral norm 1 with ``unit_norm``)."""

    def __init__(self, dim: int = DIM, hidden: int = HIDDEN, seed: int = 0, scale: float = 1.0,
                 unit_norm: bool = False):
        super().__init__()
        self.dim = dim
        g = _generator(seed)
        w1 = _normal(g, hidden, dim) / math.sqrt(dim)
        w2 = _normal(g, dim, hidden) / math.sqrt(hidden)
        if unit_norm:
            w1, w2 = _unit_spectral(w1), _unit_spectral(w2)
        self.w1 = nn.Parameter(w1)
        self.w2 = nn.Parameter(w2)
        self.b1 = nn.Parameter(0.1 * _normal(g, hidden))
        self.b2 = nn.Parameter(0.1 * _normal(g, dim))
        self.c = nn.Parameter(0.1 * _normal(g, hidden))
        self.scale = scale

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=z.dtype)
        t = t.reshape(-1, 1) if t.ndim == 1 else t  # one time per sample
        h = torch.tanh(z @ self.w1.T + t * self.c + self.b1)
        return self.scale * (h @ self.w2.T + self.b2)


class DissipativeField(nn.Module):
    """``-z + 0.5 MLP(z)`` with unit spectral norms: logarithmic norm <= -0.5 everywhere."""

    def __init__(self, dim: int = DIM, seed: int = 1):
        super().__init__()
        self.dim = dim
        self.mlp = MLPField(dim, seed=seed, scale=0.5, unit_norm=True)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -z + self.mlp(t, z)


class StiffField(nn.Module):
    """``-diag(d) z + 0.5 MLP(z)``, ``d`` log-spaced in ``[1, ratio]``."""

    def __init__(self, dim: int = DIM, seed: int = 2, ratio: float = 1e4):
        super().__init__()
        self.dim = dim
        self.register_buffer("rates", torch.logspace(0.0, math.log10(ratio), dim, dtype=torch.float64))
        self.mlp = MLPField(dim, seed=seed, scale=0.5, unit_norm=True)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -self.rates * z + self.mlp(t, z)


class ChaoticField(nn.Module):
    """Lorenz in a rotated 3-d subspace (state scaled by 1/10), 29 driven decaying coordinates,
    time-scaled by ``speed``: Lyapunov spectrum ``speed * (0.9056, 0, -14.5723)`` and ``-speed``."""

    def __init__(self, dim: int = DIM, seed: int = 3, speed: float = SPEED):
        super().__init__()
        if dim < 3:
            raise ValueError(f"dim={dim!r}, but the chaotic field needs dim >= 3")
        self.dim = dim
        g = _generator(seed)
        self.register_buffer("rotation", _orthogonal(g, dim))
        self.register_buffer("coupling", _normal(g, dim - 3, 3))
        self.speed = speed

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        w = z @ self.rotation  # coordinates in the frame where the field is a skew product
        x, y, s = (10.0 * w[:, i] for i in range(3))
        lorenz = torch.stack([SIGMA * (y - x), x * (RHO - s) - y, x * y - BETA * s], dim=1) / 10.0
        rest = -w[:, 3:] + 0.5 * torch.tanh(w[:, :3] @ self.coupling.T)
        return self.speed * torch.cat([lorenz, rest], dim=1) @ self.rotation.T


FIELDS = {"mlp": MLPField, "dissipative": DissipativeField, "stiff": StiffField, "chaotic": ChaoticField}
SPANS = {"mlp": (0.0, 1.0), "dissipative": (0.0, 1.0), "stiff": (0.0, 1.0), "chaotic": (0.0, 1.0)}
#: the largest Lyapunov exponent known in closed form (per time unit), by field
KNOWN_LARGEST_EXPONENT = {"chaotic": SPEED * LORENZ_LARGEST}


def initial_states(name: str, batch: int = 256, seed: int = 0, dim: int = DIM) -> torch.Tensor:
    """A seeded batch ``(batch, dim)`` of initial states for the field ``name``: standard normal,
    and for ``chaotic`` Lorenz points near the attractor (x, y ~ N(0, 8^2), z ~ 25 + N(0, 8^2),
    scaled by 1/10, the other coordinates N(0, 0.1^2)) in the field's rotated frame."""
    if name not in FIELDS:
        raise ValueError(f"name={name!r}; expected one of {sorted(FIELDS)}")
    g = _generator(10_000 + seed)
    z = _normal(g, batch, dim)
    if name != "chaotic":
        return z
    w = 0.1 * z
    w[:, :3] = torch.stack([8 * z[:, 0], 8 * z[:, 1], 25 + 8 * z[:, 2]], dim=1) / 10.0
    return w @ FIELDS[name]().rotation.T


def make_mlp() -> MLPField:
    """The untrained 32-d MLP field (seed 0)."""
    return MLPField()


def make_dissipative() -> DissipativeField:
    """The healthy contracting 32-d field (seed 1)."""
    return DissipativeField()


def make_stiff() -> StiffField:
    """The deliberately stiff 32-d field (seed 2, ratio 1e4)."""
    return StiffField()


def make_chaotic() -> ChaoticField:
    """The chaotic 32-d field (seed 3, Lorenz at 10x speed)."""
    return ChaoticField()


def numpy_pair(module: nn.Module) -> tuple:
    """``(f, jac)``: NumPy float64 callables of a batch ``(B, n)`` for a field module: values,
    and per-sample Jacobians ``(B, n, n)`` by ``torch.func.jacrev`` under ``vmap``."""
    def f(t, z):
        with torch.no_grad():
            t = torch.as_tensor(np.asarray(t, dtype=np.float64))
            return module(t, torch.from_numpy(np.asarray(z, dtype=np.float64))).numpy()

    def single(t, row):
        return module(t, row[None, :])[0]

    jac_one = torch.func.vmap(torch.func.jacrev(single, argnums=1), in_dims=(None, 0))

    def jac(t, z):
        with torch.no_grad():
            return jac_one(torch.as_tensor(float(t), dtype=torch.float64), torch.from_numpy(np.asarray(z))).numpy()

    return f, jac
