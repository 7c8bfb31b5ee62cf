"""Irregularly sampled series (issue 12, "Latent ODEs and irregularly sampled series").

Everything here is data and plain Array-API arithmetic; the properties that grade it live in
``odeverify/properties/irregular.py``.

- **Observation times**: :func:`check_times` and :func:`check_series` refuse unsorted or
  duplicated times and data whose length differs from its times (``ValueError`` naming the
  parameter, the value and what is expected).
- **Irregular batches** (:class:`IrregularBatch`): a linear problem ``y' = A y`` with a closed
  form (:func:`odeverify.problems.classic.linear_problem`), a batch of initial states and, per
  sample, its own strictly increasing observation times (different counts, uneven spacing,
  near-duplicate pairs). :func:`union_times` is torchdiffeq's way of batching them (one solve
  to the sorted union, each sample reading its own times back with :func:`read_own_times`).
- **ODE-RNN** (Rubanova, Chen & Duvenaud 2019, "Latent ODEs for irregularly-sampled time
  series", NeurIPS): between observations the hidden state follows ``h' = tanh(W h + b)``;
  at each observation it predicts ``C h-`` and jumps to ``h+ = tanh(U h- + V x_k + c)``.
  ``properties.irregular.odernn_forward`` is the discrete computation (fixed steps per interval, so the same steps
  for every parameter value); the gradient modes are in the properties module.
- **Latent ODE** (same paper; the spiral of Chen et al. 2018, "Neural ordinary differential
  equations"): an RNN encoder run backward over a series gives ``q(z0|x) = N(mu, diag e^lv)``,
  ``z0 = mu + e^{lv/2} eps`` with a fixed ``eps``, ``z' = W2 tanh(W1 z + b1) + b2`` in latent
  space and a linear decoder ``x = D z + e``. The decoder is carried as part of the state
  (``u = [z, x]``, ``x' = D z'``, ``x(t0) = D z0 + e``), so the Gaussian log-likelihood at the
  observation times is a :class:`~odeverify.gradients.Loss` (weights ``-x_k / s^2`` on the
  decoded block, per-component quadratic ``1/s^2``) and every backend and gradient mode takes it
  unchanged (:func:`latent_problem`).
- **Synthetic data** that ships as a seeded generator (:func:`spiral_dataset`): damped
  oscillations sampled at random times, a different count per series.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _xp
from ._spec import Problem
from .classic import linear_problem


# ============================================================================ validation
def check_times(times: Any, *, name: str = "times", t_span: Sequence[float] | None = None) -> np.ndarray:
    """``times`` as a float64 1-d array that is finite and strictly increasing (inside
    ``t_span`` when given); otherwise ``ValueError`` naming ``name``, the value and what is expected."""
    try:
        t = np.asarray(_xp.to_numpy(times) if _xp.is_array(times) else times, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}={times!r}, but it must be a 1-d sequence of real times") from None
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"{name} has shape {t.shape}, but it must be a non-empty 1-d sequence of times")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"{name}={t.tolist()[:8]} contains non-finite values; every observation time must be"
                         " finite")
    d = np.diff(t)
    if np.any(d == 0):
        i = int(np.flatnonzero(d == 0)[0])
        raise ValueError(f"{name} has the duplicated time {float(t[i])!r} at positions {i} and {i + 1};"
                         " observation times must be strictly increasing (merge duplicated observations first)")
    if np.any(d < 0):
        i = int(np.flatnonzero(d < 0)[0])
        raise ValueError(f"{name} is not sorted: {float(t[i])!r} at position {i} is followed by"
                         f" {float(t[i + 1])!r}; observation times must be strictly increasing")
    if t_span is not None:
        lo, hi = min(t_span), max(t_span)
        if t[0] < lo or t[-1] > hi:
            raise ValueError(f"{name} runs from {float(t[0])!r} to {float(t[-1])!r}, outside t_span={tuple(t_span)};"
                             " every observation time must lie inside the span")
    return t


def check_series(times: Any, values: Any, *, name: str = "values",
                 times_name: str = "times") -> tuple[np.ndarray, np.ndarray]:
    """``(times, values)`` checked: times by :func:`check_times`, values finite of shape ``(K,)``
    or ``(K, m)`` with ``K = len(times)``."""
    t = check_times(times, name=times_name)
    x = np.asarray(_xp.to_numpy(values) if _xp.is_array(values) else values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] != t.size:
        raise ValueError(f"{name} has shape {x.shape}, but {times_name} has {t.size} times; {name} must have"
                         f" shape ({t.size},) or ({t.size}, m): one observation per time")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf); every observation must be finite")
    return t, x


def union_times(times: Sequence[Any]) -> tuple[np.ndarray, list[np.ndarray]]:
    """torchdiffeq's batching of per-sample times: the sorted union ``U`` of every sample's
    times, and per sample the positions of its own times in ``U`` (``U[pos[b]] == times[b]``)."""
    ts = [check_times(t, name=f"times[{b}]") for b, t in enumerate(times)]
    union = np.unique(np.concatenate(ts))
    return union, [np.searchsorted(union, t) for t in ts]


def read_own_times(ys: Any, positions: Sequence[np.ndarray]) -> list[Any]:
    """Sample ``b``'s outputs at its own times from a union solve ``ys`` of shape ``(T, B, n)``:
    ``ys[positions[b], b]`` (shape ``(K_b, n)``)."""
    return [ys[np.asarray(p), b] for b, p in enumerate(positions)]


# ============================================================================ irregular batches
@dataclass(frozen=True)
class IrregularBatch:
    """A batch of samples of one linear problem, each observed at its own times.

    ``problem`` is ``y' = A y`` with a closed form; ``y0s`` has shape ``(B, n)``; ``times[b]``
    are sample ``b``'s observation times (strictly increasing, inside ``problem.t_span``,
    starting after ``t0``). ``spec`` is the JSON that rebuilds it (:func:`from_irregular_spec`)."""

    name: str
    problem: Problem
    y0s: np.ndarray
    times: tuple[np.ndarray, ...]
    spec: str = ""

    def __post_init__(self) -> None:
        y0s = np.atleast_2d(np.asarray(self.y0s, dtype=np.float64))
        if y0s.shape != (len(self.times), self.problem.n):
            raise ValueError(f"y0s has shape {y0s.shape}, but it must be (len(times), n) ="
                             f" ({len(self.times)}, {self.problem.n})")
        ts = tuple(check_times(t, name=f"times[{b}]", t_span=self.problem.t_span) for b, t in enumerate(self.times))
        for t in ts:
            t.setflags(write=False)
        y0s.setflags(write=False)
        object.__setattr__(self, "y0s", y0s)
        object.__setattr__(self, "times", ts)

    @property
    def description(self) -> str:
        return (f"y' = A y (closed form), {self.samples} samples observed at {self.counts} irregular times on"
                f" {self.problem.t_span}")

    @property
    def samples(self) -> int:
        return len(self.times)

    @property
    def counts(self) -> list[int]:
        return [int(t.size) for t in self.times]

    def exact(self, b: int, t: Any = None) -> np.ndarray:
        """Sample ``b``'s closed form at ``t`` (default: its own times), shape ``(len(t), n)``."""
        t = self.times[b] if t is None else np.asarray(t, dtype=np.float64)
        p = self.problem
        # the problem's closed form is linear in y0: evaluate it on the unit vectors
        basis = np.stack([_exact_from(p, e, t) for e in np.eye(p.n)], axis=-1)  # (T, n, n)
        return basis @ self.y0s[b]

    def sample_problem(self, b: int) -> Problem:
        """Sample ``b`` alone: the problem from its ``y0`` on ``(t0, its last time)``."""
        import dataclasses
        return dataclasses.replace(self.problem, name=f"{self.name}[{b}]", y0=tuple(self.y0s[b]),
                                   t_span=(self.problem.t_span[0], float(self.times[b][-1])),
                                   exact=lambda t: self.exact(b, t), references=())


def _exact_from(p: Problem, y0: np.ndarray, t: np.ndarray) -> np.ndarray:
    from scipy.linalg import expm

    A = np.asarray(p.params["A"], dtype=np.float64)
    return np.stack([expm(A * (ti - p.t_span[0])) @ y0 for ti in np.atleast_1d(t)])


def draw_times(rng: np.random.Generator, count: int, t_span: tuple[float, float], *,
               near_duplicates: int = 0, gap: float = 1e-6) -> np.ndarray:
    """``count`` sorted uniform times in ``(t0, t1]`` (the last one at ``t1`` for the first
    sample only if drawn so), of which ``near_duplicates`` are placed ``gap * (t1 - t0)`` after
    another time: uneven spacing as irregular data has."""
    t0, t1 = t_span
    if count < 1:
        raise ValueError(f"count={count!r}, but it must be >= 1")
    base = count - min(near_duplicates, count // 2)
    t = np.sort(rng.uniform(t0, t1, size=base))
    t = t[t > t0]
    extra = t[rng.choice(t.size, size=count - base, replace=False)] + gap * (t1 - t0) if count > base else []
    t = np.unique(np.concatenate([t, np.minimum(extra, t1)]))
    while t.size < count:  # a collision (vanishingly rare): draw the rest again
        t = np.unique(np.concatenate([t, rng.uniform(t0, t1, size=count - t.size)]))
    return t


def irregular_batch(*, samples: int = 4, counts: Sequence[int] | int = 50, seed: int = 0,
                    eigenvalues: Sequence[complex] = (-0.1 + 2j, -0.1 - 2j), t_span: tuple[float, float] = (0.0, 10.0),
                    near_duplicates: int = 2, name: str | None = None,
                    times: Sequence[Sequence[float]] | None = None) -> IrregularBatch:
    """A seeded :class:`IrregularBatch` of a linear problem with the given spectrum: sample
    ``b`` has ``counts[b]`` (or ``counts``) times drawn by :func:`draw_times` and a unit
    random ``y0`` (``numpy.random.default_rng(seed)``). ``times`` (one sequence per sample)
    gives the times instead (``samples`` and ``counts`` then follow from it): a drawn case's
    spec lists them, so hypothesis shrinks the times themselves."""
    if times is not None:
        times = [check_times(t, name=f"times[{b}]", t_span=t_span).tolist() for b, t in enumerate(times)]
        samples, counts = len(times), [len(t) for t in times]
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"samples={samples!r}, but it must be an int >= 1")
    cs = [int(counts)] * samples if np.ndim(counts) == 0 else [int(c) for c in counts]
    if len(cs) != samples or min(cs) < 1:
        raise ValueError(f"counts={counts!r}, but it must be an int >= 1 or {samples} ints >= 1 (one per sample)")
    lam = [complex(v) for v in eigenvalues]
    data: dict[str, Any] = {"kind": "irregular", "samples": samples, "counts": cs, "seed": int(seed),
                            "eigenvalues": [[v.real, v.imag] for v in lam], "t_span": list(map(float, t_span)),
                            "near_duplicates": int(near_duplicates)}
    if times is not None:
        data["times"] = times
    spec = json.dumps(data, sort_keys=True)
    name = name or f"irregular_{len(lam)}d_{samples}x{max(cs)}_s{seed}"
    p = linear_problem(lam, seed=seed, name=name, t_span=tuple(map(float, t_span)))
    rng = np.random.default_rng([seed, 12])
    y0s = rng.standard_normal((samples, p.n))
    y0s /= np.linalg.norm(y0s, axis=1, keepdims=True)
    drawn = tuple(draw_times(rng, c, p.t_span, near_duplicates=near_duplicates) for c in cs)
    chosen = drawn if times is None else tuple(np.asarray(t, dtype=np.float64) for t in times)
    return IrregularBatch(name=name, problem=p, y0s=y0s, times=chosen, spec=spec)


def from_irregular_spec(spec: str | dict[str, Any]) -> IrregularBatch:
    """The batch a spec of :func:`irregular_batch` (JSON or dict) rebuilds, exactly."""
    d = json.loads(spec) if isinstance(spec, str) else dict(spec)
    if d.get("kind") != "irregular":
        raise ValueError(f"spec kind={d.get('kind')!r}; expected 'irregular'")
    return irregular_batch(samples=d["samples"], counts=d["counts"], seed=d["seed"],
                           eigenvalues=[complex(a, b) for a, b in d["eigenvalues"]], t_span=tuple(d["t_span"]),
                           near_duplicates=d.get("near_duplicates", 0), times=d.get("times"))


#: the named batches of the conformance run: (samples, counts, seed, eigenvalues, span)
IRREGULAR_BATCHES = {
    "rotation_4x50": dict(samples=4, counts=(50, 20, 35, 8), seed=1),
    "rotation_16x100": dict(samples=16, counts=100, seed=2),
    "decay_8x30": dict(samples=8, counts=(30, 5, 12, 30, 2, 18, 25, 9), seed=3,
                       eigenvalues=(-0.5, -2.0, -0.2 + 1j, -0.2 - 1j), t_span=(0.0, 6.0)),
}


def named_batch(name: str) -> IrregularBatch:
    """One of :data:`IRREGULAR_BATCHES` by name (ValueError naming the choices otherwise)."""
    if name not in IRREGULAR_BATCHES:
        raise ValueError(f"irregular batch {name!r} is unknown; expected one of {sorted(IRREGULAR_BATCHES)}")
    return irregular_batch(name=name, **IRREGULAR_BATCHES[name])


# ============================================================================ synthetic data
@dataclass(frozen=True)
class Series:
    """One irregularly sampled series: strictly increasing ``times`` (K,) and ``values`` (K, m)."""

    times: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        t, x = check_series(self.times, self.values)
        t.setflags(write=False)
        x.setflags(write=False)
        object.__setattr__(self, "times", t)
        object.__setattr__(self, "values", x)


#: the seed of the shipped synthetic data set
SPIRAL_SEED = 2019


def spiral_dataset(n_series: int = 8, *, seed: int = SPIRAL_SEED, min_count: int = 8, max_count: int = 24,
                   t_end: float = 6.0, noise: float = 0.05) -> tuple[Series, ...]:
    """Damped oscillations ``r e^{-g t} [cos(w t + p), sin(w t + p)]`` (a spiral, as Chen et al.
    2018's example) with per-series ``r in [0.8, 1.2]``, ``g in [0.1, 0.3]``, ``w in [0.8, 1.2]``,
    phase ``p``, sampled at a random count in ``[min_count, max_count]`` of uniform random times in
    ``(0, t_end]`` with Gaussian noise ``noise``: every number from
    ``numpy.random.default_rng(seed)`` (this generator is the shipped data set; the tests pin
    its first values)."""
    if n_series < 1 or min_count < 1 or max_count < min_count:
        raise ValueError(f"n_series={n_series!r}, min_count={min_count!r}, max_count={max_count!r}: expected"
                         " n_series >= 1 and 1 <= min_count <= max_count")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_series):
        r, g, w, p = rng.uniform(0.8, 1.2), rng.uniform(0.1, 0.3), rng.uniform(0.8, 1.2), rng.uniform(0, 2 * np.pi)
        k = int(rng.integers(min_count, max_count + 1))
        t = np.unique(rng.uniform(0.0, t_end, size=k))
        t = t[t > 0]
        x = r * np.exp(-g * t)[:, None] * np.stack([np.cos(w * t + p), np.sin(w * t + p)], axis=1)
        out.append(Series(times=t, values=x + noise * rng.standard_normal(x.shape)))
    return tuple(out)


# ============================================================================ ODE-RNN
def init_odernn(*, hidden: int = 3, obs: int = 2, seed: int = 0, scale: float = 0.5) -> dict[str, np.ndarray]:
    """Seeded parameters of the ODE-RNN: the field ``W (d, d), b (d,)``, the jump ``U (d, d),
    V (d, m), c (d,)`` and the read-out ``C (m, d)``."""
    rng = np.random.default_rng(seed)
    d, m = hidden, obs
    shapes = {"W": (d, d), "b": (d,), "U": (d, d), "V": (d, m), "c": (d,), "C": (m, d)}
    return {k: scale * rng.standard_normal(s) for k, s in shapes.items()}


ODERNN_FIELD = ("W", "b")
ODERNN_JUMP = ("U", "V", "c")


def odernn_field(xp: Any, h: Any, p: dict[str, Any]) -> Any:
    """``h' = tanh(W h + b)`` (autonomous)."""
    return xp.tanh(h @ xp.matrix_transpose(p["W"]) + p["b"])


def odernn_jump(xp: Any, h: Any, x: Any, p: dict[str, Any]) -> Any:
    """The update at an observation: ``h+ = tanh(U h- + V x + c)``."""
    return xp.tanh(h @ xp.matrix_transpose(p["U"]) + x @ xp.matrix_transpose(p["V"]) + p["c"])


def odernn_steps(times: np.ndarray, t0: float, dt: float) -> list[int]:
    """Fixed steps per interval ``[t_{k-1}, t_k]`` (``t_{-1} = t0``): ``max(1, ceil(len / dt))``,
    the same for every parameter value (so finite differences see the same discrete computation)."""
    edges = np.concatenate([[t0], times])
    return [max(1, math.ceil((b - a) / dt * (1 - 1e-12))) for a, b in zip(edges[:-1], edges[1:])]


# ============================================================================ latent ODE
def init_latent_ode(*, latent: int = 2, obs: int = 2, hidden: int = 8, enc_hidden: int = 6, seed: int = 0,
                    scale: float = 0.4) -> dict[str, np.ndarray]:
    """Seeded parameters of the latent ODE: encoder RNN ``Ue (e, e), Ve (e, m + 1), ce (e,)``
    and read-out ``Oe (2 l, e), oe (2 l,)``; latent field ``W1 (h, l), b1 (h,), W2 (l, h), b2 (l,)``;
    decoder ``D (m, l), e (m,)``."""
    rng = np.random.default_rng(seed)
    E, L, M, H = enc_hidden, latent, obs, hidden
    shapes = {"Ue": (E, E), "Ve": (E, M + 1), "ce": (E,), "Oe": (2 * L, E), "oe": (2 * L,),
              "W1": (H, L), "b1": (H,), "W2": (L, H), "b2": (L,), "D": (M, L), "e": (M,)}
    return {k: scale * rng.standard_normal(s) for k, s in shapes.items()}


LATENT_FIELD = ("W1", "b1", "W2", "b2", "D")
LATENT_ENCODER = ("Ue", "Ve", "ce", "Oe", "oe")


def _latent_rhs(xp: Any, t: Any, u: Any, p: dict[str, Any]) -> Any:
    L = p["W1"].shape[1]
    z = u[..., :L]
    dz = xp.tanh(z @ xp.matrix_transpose(p["W1"]) + p["b1"]) @ xp.matrix_transpose(p["W2"]) + p["b2"]
    return xp.concat([dz, dz @ xp.matrix_transpose(p["D"])], axis=-1)


def encode(xp: Any, p: dict[str, Any], times: Any, values: Any) -> tuple[Any, Any]:
    """``(mu, log_var)`` of ``q(z0 | x)``: the RNN ``h <- tanh(Ue h + Ve [x_k, dt_k] + ce)`` run
    backward over the observations (``dt_k = t_{k+1} - t_k``, 0 for the last), read out by
    ``Oe h + oe``."""
    E, L = p["Ue"].shape[0], p["Oe"].shape[0] // 2
    t = np.asarray(times, dtype=np.float64)
    gaps = np.concatenate([np.diff(t), [0.0]])
    h = xp.zeros((E,), dtype=p["Ue"].dtype)
    for k in range(t.size - 1, -1, -1):
        inp = xp.concat([values[k], xp.asarray([gaps[k]], dtype=p["Ue"].dtype)])
        h = xp.tanh(h @ xp.matrix_transpose(p["Ue"]) + inp @ xp.matrix_transpose(p["Ve"]) + p["ce"])
    out = h @ xp.matrix_transpose(p["Oe"]) + p["oe"]
    return out[:L], out[L:]


def latent_problem(p: dict[str, np.ndarray], z0: np.ndarray, t_end: float, *, name: str = "latent_ode") -> Problem:
    """The latent ODE with the decoder carried in the state: ``u = [z, x]``, ``z' = W2 tanh(W1 z
    + b1) + b2``, ``x' = D z'``, ``u(0) = [z0, D z0 + e]``, parameters :data:`LATENT_FIELD`."""
    z0 = np.asarray(z0, dtype=np.float64)
    u0 = np.concatenate([z0, p["D"] @ z0 + p["e"]])
    return Problem(name=name, rhs=_latent_rhs, y0=tuple(u0), t_span=(0.0, float(t_end)),
                   params={k: np.asarray(p[k], dtype=np.float64) for k in LATENT_FIELD},
                   tags=frozenset({"nonlinear", "autonomous", "neural"}),
                   citation="Rubanova, Chen & Duvenaud (2019), NeurIPS", description="latent ODE with a linear decoder")


@dataclass(frozen=True)
class LatentSetup:
    """Fixed parts of the latent-ODE objective: the data, the observation noise ``sigma`` and the
    reparametrisation noise ``eps`` (one row per series, drawn once from ``seed``)."""

    data: tuple[Series, ...]
    sigma: float = 0.1
    seed: int = 0
    eps: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ValueError(f"sigma={self.sigma!r}, but it must be finite and > 0")
        if self.eps is None:
            object.__setattr__(self, "eps", np.random.default_rng([self.seed, 7]).standard_normal((len(self.data), 2)))


def latent_gaussian_nll_constant(series: Series, sigma: float) -> float:
    """The part of ``-log N(x_k; xhat_k, sigma^2)`` summed over the series that does not depend on
    the model: ``sum |x_k|^2 / (2 sigma^2) + K m / 2 log(2 pi sigma^2)``."""
    x = series.values
    return float(0.5 * np.sum(x * x) / sigma**2 + 0.5 * x.size * math.log(2 * math.pi * sigma**2))


def latent_loss_spec(series: Series, sigma: float, latent: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights (K, l + m), quadratic (l + m,)) of the Loss whose value plus
    :func:`latent_gaussian_nll_constant` is the negative log-likelihood of the decoded block."""
    K, m = series.values.shape
    w = np.zeros((K, latent + m))
    w[:, latent:] = -series.values / sigma**2
    q = np.concatenate([np.zeros(latent), np.full(m, 1.0 / sigma**2)])
    return w, q


__all__ = ["check_times", "check_series", "union_times", "read_own_times", "IrregularBatch", "irregular_batch",
           "from_irregular_spec", "draw_times", "IRREGULAR_BATCHES", "named_batch", "Series", "spiral_dataset",
           "SPIRAL_SEED", "init_odernn", "odernn_field", "odernn_jump", "odernn_steps",
           "ODERNN_FIELD", "ODERNN_JUMP", "init_latent_ode", "encode", "latent_problem", "LatentSetup",
           "latent_gaussian_nll_constant", "latent_loss_spec", "LATENT_FIELD", "LATENT_ENCODER"]
