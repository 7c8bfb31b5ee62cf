"""Brownian motion as data: a seeded path that answers W(t), and W(t) - W(s), at any times.

The control of an SDE's diffusion term is a Brownian path. odeverify keeps it as a value, not
a side effect of a random-number generator, so that one path can be replayed at every step
size, in every library and in every process:

:class:`BrownianTree` is a virtual Brownian tree (Gaines & Lyons 1997; Li, Wong, Chen &
Duvenaud 2020, "Scalable gradients for stochastic differential equations", section 4). On
``[t0, t1]``, ``W(t0) = 0`` and ``W(t1) = sqrt(t1 - t0) Z_root``; the value at the midpoint of
a dyadic interval ``[a, b]`` of level ``l`` is the Brownian bridge draw

    W(m) = (W(a) + W(b)) / 2 + sqrt(b - a) / 2 * Z(l, i)

where ``Z(l, i)`` is a standard normal that is a *pure function* of (seed, level, node index,
path, component): a SplitMix64 hash of those integers turned into a normal by Box-Muller. No
generator state exists, so ``W(t)`` is the same number whatever was asked before, in whatever
order, in whatever process. Every dyadic time ``t0 + k (t1 - t0) / 2^l`` with ``l <= depth``
is exact Brownian motion (the bridge construction of Lévy); a time between two dyadic points
of the finest level gets the bridge draw between them, keyed by the time's bits (its
distribution given the two ends is exact; two such times inside one finest interval are
drawn independently, an error of order ``(t1 - t0) / 2^depth`` in their covariance).

Increments are differences of values, so a sum of increments over any grid telescopes to
the coarse increment up to round-off, whatever the query order.

The path is batched: ``shape = (M, m)`` holds ``M`` independent paths of an ``m``-dimensional
Brownian motion (``shape = (m,)`` for one path). Components and paths are independent
because their normals are hashed from different keys.

Values are NumPy float64 arrays; :meth:`BrownianTree.increment` converts to the caller's
array library, dtype and device (``like=``). Queries are cached per time, so a solver that
asks for ``W(t_k)`` at each step boundary pays one descent per new time, and
:meth:`BrownianTree.prefetch` descends for a whole grid in one vectorised pass.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _xp

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
#: the "level" keying the bridge draws of times that are not dyadic points
_OFF_GRID_LEVEL = 10_000
_MAX_CACHE = 1 << 16


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014): a bijective 64-bit hash."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        return z ^ (z >> _S31)


def hashed_normals(seed: int, level: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """Standard normals, shape ``(len(level), size)``: entry ``[q, e]`` is a pure function of
    (seed, level[q], index[q], e). Box-Muller on the two 32-bit halves of one 64-bit hash (the
    uniforms are (k + 1/2) / 2^32, so no draw is infinite; |Z| <= 6.7)."""
    level = np.asarray(level, dtype=np.uint64).reshape(-1, 1)
    index = np.asarray(index, dtype=np.uint64).reshape(-1, 1)
    elem = np.arange(size, dtype=np.uint64).reshape(1, -1)
    with np.errstate(over="ignore"):
        key = _mix(_mix(_mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF)) ^ level) ^ index)
        h = _mix(key ^ (elem * _GOLDEN))
    hi = (h >> np.uint64(32)).astype(np.float64)
    lo = (h & np.uint64(0xFFFFFFFF)).astype(np.float64)
    u1 = (hi + 0.5) / 4294967296.0
    u2 = (lo + 0.5) / 4294967296.0
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


def _time_bits(t: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(t, dtype=np.float64).view(np.uint64)


class BrownianTree:
    """A seeded, batched Brownian path on ``[t0, t1]`` (a virtual Brownian tree).

    Parameters
    ----------
    t0, t1 : float
        The interval (``t0 < t1``); queries outside it raise.
    shape : tuple of int
        ``(m,)`` for one ``m``-dimensional path, ``(M, m)`` for ``M`` independent paths.
    seed : int
        Any non-negative int; the whole path is a function of it.
    depth : int
        Dyadic levels of exact Brownian motion (default 24: points ``(t1 - t0) / 2^24`` apart).
    """

    def __init__(self, t0: float, t1: float, shape: Sequence[int], seed: int = 0, depth: int = 24) -> None:
        t0f, t1f = float(t0), float(t1)
        if not (math.isfinite(t0f) and math.isfinite(t1f)) or not t0f < t1f:
            raise ValueError(f"BrownianTree interval (t0, t1)=({t0!r}, {t1!r}), but it must be finite with t0 < t1")
        shape_t = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        if len(shape_t) not in (1, 2) or any(s < 1 for s in shape_t):
            raise ValueError(f"BrownianTree shape={shape!r}, but it must be (m,) or (M, m) with positive sizes")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"BrownianTree seed={seed!r}, but it must be a non-negative int")
        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or not 1 <= depth <= 48:
            raise ValueError(f"BrownianTree depth={depth!r}, but it must be an int in 1 .. 48")
        self.t0, self.t1 = t0f, t1f
        self.shape = shape_t
        self.seed = int(seed)
        self.depth = int(depth)
        self._size = int(np.prod(shape_t))
        self._root = math.sqrt(t1f - t0f) * hashed_normals(self.seed, np.zeros(1), np.zeros(1), self._size)[0]
        self._cache: dict[float, np.ndarray] = {t0f: np.zeros(self._size), t1f: self._root}

    def __repr__(self) -> str:
        return f"BrownianTree(t0={self.t0}, t1={self.t1}, shape={self.shape}, seed={self.seed}, depth={self.depth})"

    @property
    def m(self) -> int:
        """The dimension of the Brownian motion (the noise dimension)."""
        return self.shape[-1]

    def _check_times(self, ts: np.ndarray) -> None:
        if not np.all(np.isfinite(ts)):
            raise ValueError(f"Brownian query times {ts.tolist()} must be finite")
        bad = (ts < self.t0) | (ts > self.t1)
        if np.any(bad):
            raise ValueError(f"Brownian query at t={ts[bad].tolist()[:4]} is outside the path's interval"
                             f" [{self.t0}, {self.t1}]")

    def _descend(self, ts: np.ndarray) -> np.ndarray:
        """W at each time of ``ts`` (1-d, inside the interval): shape ``(len(ts), size)``."""
        q = ts.size
        span = self.t1 - self.t0
        out = np.empty((q, self._size))
        todo = np.arange(q)
        a = np.full(q, self.t0)
        b = np.full(q, self.t1)
        wa = np.zeros((q, self._size))
        wb = np.broadcast_to(self._root, (q, self._size)).copy()
        idx = np.zeros(q, dtype=np.int64)
        at0 = ts == self.t0
        at1 = ts == self.t1
        out[at0] = 0.0
        out[at1] = self._root
        live = ~(at0 | at1)
        todo, a, b, wa, wb, idx, t = todo[live], a[live], b[live], wa[live], wb[live], idx[live], ts[live]
        for level in range(1, self.depth + 1):
            if todo.size == 0:
                return out
            node = 2 * idx + 1
            mid = self.t0 + span * (node / float(1 << level))
            # queries share the upper nodes: hash each node once
            uniq, inv = np.unique(node, return_inverse=True)
            z = hashed_normals(self.seed, np.full(uniq.size, level), uniq, self._size)[inv]
            wm = 0.5 * (wa + wb) + (0.5 * np.sqrt(b - a))[:, None] * z
            hit = t == mid
            out[todo[hit]] = wm[hit]
            left = t < mid
            b = np.where(left, mid, b)
            wb = np.where(left[:, None], wm, wb)
            a = np.where(left, a, mid)
            wa = np.where(left[:, None], wa, wm)
            idx = np.where(left, 2 * idx, 2 * idx + 1)
            keep = ~hit
            todo, a, b, wa, wb, idx, t = todo[keep], a[keep], b[keep], wa[keep], wb[keep], idx[keep], t[keep]
        if todo.size:
            # between two finest dyadic points: the Brownian bridge draw at t, keyed by t's bits
            z = hashed_normals(self.seed, np.full(todo.size, _OFF_GRID_LEVEL), _time_bits(t), self._size)
            frac = (t - a) / (b - a)
            std = np.sqrt(np.maximum((t - a) * (b - t) / (b - a), 0.0))
            out[todo] = wa + frac[:, None] * (wb - wa) + std[:, None] * z
        return out

    def prefetch(self, ts: Sequence[float] | np.ndarray) -> None:
        """Compute W at every time of ``ts`` in one vectorised descent and cache it."""
        arr = np.unique(np.asarray(ts, dtype=np.float64).reshape(-1))
        self._check_times(arr)
        new = np.array([t for t in arr.tolist() if t not in self._cache], dtype=np.float64)
        if new.size == 0:
            return
        if len(self._cache) + new.size > _MAX_CACHE:
            # keep the ends and the times of this query already cached: values() reads them next
            keep = {self.t0, self.t1, *(t for t in arr.tolist() if t in self._cache)}
            self._cache = {t: self._cache[t] for t in keep}
        vals = self._descend(new)
        for t, v in zip(new.tolist(), vals):
            self._cache[t] = v

    def values(self, ts: Sequence[float] | np.ndarray) -> np.ndarray:
        """W at each time: shape ``(len(ts),) + shape`` (NumPy float64)."""
        arr = np.asarray(ts, dtype=np.float64).reshape(-1)
        self.prefetch(arr)
        return np.stack([self._cache[t] for t in arr.tolist()]).reshape((arr.size,) + self.shape)

    def __call__(self, t: float) -> np.ndarray:
        """W(t), shape ``shape``."""
        return self.values([t])[0]

    def increment(self, s: float, t: float, like: Any = None) -> Any:
        """W(t) - W(s) (``t < s`` allowed: the negative), shape ``shape``; as an array of ``like``'s
        library, dtype and device when given, else NumPy float64."""
        w = self.values([s, t])
        out = w[1] - w[0]
        if like is None:
            return out
        xp = _xp.namespace(like)
        return xp.asarray(out, dtype=like.dtype, device=_xp.device(like))

    def grid_increments(self, ts: Sequence[float] | np.ndarray) -> np.ndarray:
        """The increments over consecutive times of ``ts``: shape ``(len(ts) - 1,) + shape``."""
        w = self.values(ts)
        return np.diff(w, axis=0)

    def spec(self) -> dict[str, Any]:
        """The JSON-able description this path is rebuilt from (:meth:`from_spec`)."""
        return {"t0": self.t0, "t1": self.t1, "shape": list(self.shape), "seed": self.seed, "depth": self.depth}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> BrownianTree:
        return cls(spec["t0"], spec["t1"], tuple(spec["shape"]), seed=spec["seed"], depth=spec["depth"])


__all__ = ["BrownianTree", "hashed_normals"]
