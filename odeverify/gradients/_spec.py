"""The contract every gradient computation meets: a loss given as data, and one result type.

A loss is data, not a callable, so that every library (the reference on PyTorch and JAX,
torchdiffeq, diffrax, a finite-difference or closed-form oracle) computes *the same* scalar
from the solution at the output times, and adjoint modes get its cotangent in closed form:

    L = sum_i [ w_i . y(t_i) + (q / 2) |y(t_i)|^2 ]      (summed over a batch too)

with output times ``t_i`` (``t_eval``), weights ``w_i`` (shape ``(T, n)``) and ``q >= 0``.
dL/dy(t_i) = w_i + q y(t_i).

Every gradient — any mode, any backend, any oracle — comes back as a :class:`GradientResult`
with dL/dy0, dL/dθ (one array per problem parameter), the loss value, the work done forward
and backward, wall times, peak memory and, for modes that reconstruct the state backward,
the adjoint mismatch |z_rec(t0) - z0|.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _xp
from ..solution import Status


@dataclass(frozen=True)
class Loss:
    """``L = sum_i [w_i . y(t_i) + 1/2 sum_j q_j y_j(t_i)^2]`` over output times ``t_eval``.

    ``weights`` has shape ``(T, n)`` (row ``i`` belongs to ``t_eval[i]``); a batch solution
    of shape ``(T, B, n)`` uses the same row for every sample and sums over the batch.
    ``quadratic`` is one float ``q`` (every ``q_j = q``: ``q/2 |y|^2``) or a read-only
    array of shape ``(n,)`` of per-component weights (a CNF's negative log-likelihood weights
    the state by the base density's precisions and leaves the log-density linear).
    """

    t_eval: tuple[float, ...]
    weights: np.ndarray
    quadratic: Any = 0.0

    def __post_init__(self) -> None:
        ts = np.asarray(self.t_eval, dtype=np.float64)
        if ts.ndim != 1 or ts.size == 0 or not np.all(np.isfinite(ts)):
            raise ValueError(f"t_eval={self.t_eval!r}, but it must be a non-empty 1-d sequence of finite times")
        w = np.asarray(self.weights, dtype=np.float64)
        if w.ndim != 2 or w.shape[0] != ts.size:
            raise ValueError(f"weights has shape {w.shape}, but it must be (len(t_eval), n) = ({ts.size}, n)")
        if not np.all(np.isfinite(w)):
            raise ValueError("weights contains non-finite values; every weight must be finite")
        if np.ndim(self.quadratic) == 0:
            q: Any = float(self.quadratic)
        else:
            q = np.array(self.quadratic, dtype=np.float64)
            if q.shape != (w.shape[1],):
                raise ValueError(f"quadratic has shape {q.shape}, but a per-component quadratic must be"
                                 f" (n,) = ({w.shape[1]},)")
            q.setflags(write=False)
        if not np.all(np.isfinite(q)) or np.any(q < 0):
            raise ValueError(f"quadratic={self.quadratic!r}, but it must be finite and >= 0")
        if not np.any(q) and not np.any(w):
            raise ValueError("the loss does not depend on the solution (all weights are 0 and quadratic=0);"
                             " a gradient of it would be silently zero")
        w.setflags(write=False)
        object.__setattr__(self, "t_eval", tuple(float(t) for t in ts))
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "quadratic", q)

    @property
    def diagonal(self) -> bool:
        """Whether the quadratic term has per-component weights (an array) rather than one float."""
        return not isinstance(self.quadratic, float)

    def _q(self, xp: Any, ys: Any) -> Any:
        if not self.diagonal:
            return self.quadratic
        return xp.asarray(np.array(self.quadratic), dtype=ys.dtype, device=_xp.device(ys))

    def quadratic_numpy(self, ys: np.ndarray) -> float:
        """``1/2 sum q_j y_j^2`` over every output time (and sample) of a NumPy solution."""
        ys = np.asarray(ys, dtype=np.float64)
        return float(0.5 * np.sum(self.quadratic * ys * ys))

    @classmethod
    def seeded(cls, t_eval: Any, n: int, *, seed: int = 0, quadratic: float = 0.5) -> Loss:
        """Weights drawn from N(0, 1) with ``numpy.random.default_rng(seed)``: reproducible."""
        ts = np.atleast_1d(np.asarray(t_eval, dtype=np.float64))
        w = np.random.default_rng(seed).standard_normal((ts.size, int(n)))
        return cls(t_eval=tuple(ts.tolist()), weights=w, quadratic=quadratic)

    @property
    def n(self) -> int:
        return int(self.weights.shape[1])

    def value(self, xp: Any, ys: Any) -> Any:
        """The loss (0-d array of ``xp``) of a solution ``ys`` of shape ``(T, n)`` or ``(T, B, n)``."""
        w = xp.asarray(np.array(self.weights), dtype=ys.dtype, device=_xp.device(ys))
        if ys.ndim == 3:
            w = xp.expand_dims(w, axis=1)
        out = xp.sum(w * ys)
        if self.diagonal:
            out = out + 0.5 * xp.sum(self._q(xp, ys) * ys * ys)
        elif self.quadratic:
            out = out + (self.quadratic / 2) * xp.sum(ys * ys)
        return out

    def cotangent(self, xp: Any, ys: Any) -> Any:
        """dL/dys, of the shape of ``ys``."""
        w = xp.asarray(np.array(self.weights), dtype=ys.dtype, device=_xp.device(ys))
        if ys.ndim == 3:
            w = xp.expand_dims(w, axis=1) + xp.zeros_like(ys)
        return w + self._q(xp, ys) * ys if np.any(self.quadratic) else w + xp.zeros_like(ys)

    def value_numpy(self, ys: np.ndarray) -> float:
        """The loss of a NumPy solution, float64 (for oracles)."""
        ys = np.asarray(ys, dtype=np.float64)
        w = self.weights[:, None, :] if ys.ndim == 3 else self.weights
        if self.diagonal:
            return float(np.sum(w * ys) + self.quadratic_numpy(ys))
        return float(np.sum(w * ys) + (self.quadratic / 2) * np.sum(ys * ys))


#: a reconstruction of the forward state off by more than this (relative to max(1, |z|)) has
#: lost the state altogether: the gradient built on it is not reliable
UNSTABLE_MISMATCH = 1.0


def reconstruction_mismatch(pairs: Any) -> float:
    """The adjoint mismatch of a backward solve (:class:`GradientResult`), from ``(z_rec, z)``
    pairs, one per point where the backward solve of z ends: ``max_i max|z_rec - z| / max(1,
    max|z|)``, the state's batch included in each max; 0.0 for no pair."""
    worst = 0.0
    for rec, ref in pairs:
        rec, ref = np.asarray(rec, dtype=np.float64), np.asarray(ref, dtype=np.float64)
        diff = float(np.max(np.abs(rec.reshape(ref.shape) - ref))) if ref.size else 0.0
        rel = diff / max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
        worst = max(worst, rel if math.isfinite(rel) else math.inf)
    return worst


def mismatch_message(mismatch: float | None) -> str:
    """The warning every backend attaches to a gradient whose reconstruction is lost ("" if not)."""
    if mismatch is None or mismatch <= UNSTABLE_MISMATCH:
        return ""
    return (f"the backward reconstruction of z is off by {mismatch:.3g} (relative to max(1, |z|)): the backward"
            " solve of z is unstable (a stiff or dissipative problem?); the gradient is not reliable: use a"
            " discrete mode or one that stores the forward solution")


@dataclass
class GradientResult:
    """dL/dy0 and dL/dθ from one gradient computation, with the work it took.

    ``grad_y0`` has y0's shape; ``grad_params`` maps each problem parameter name to an
    array of its shape (all NumPy float64 copies). ``nfev_forward``/``nfev_backward``
    count vector-field evaluations (a VJP or JVP of the field counts as one backward
    evaluation). ``timing``: ``forward_s``, ``backward_s`` (and ``compile_s`` for jitted
    backends). ``memory`` (bytes; the reference modes record the first four):

    - ``saved_for_backward_bytes``: every distinct tensor PyTorch autograd saved for a
      backward pass during the computation (``torch.autograd.graph.saved_tensors_hooks``,
      :func:`odeverify._xp.saved_tensor_bytes`); ``saved_for_backward_peak_bytes``: the most
      held at one time. ``discrete`` holds its whole graph (both grow with the steps); the
      VJP-per-step modes hold one step's residuals at a time (the peak is constant). None on
      JAX/NumPy, with ``details["saved_for_backward_reason"]``. VJPs inside a torch.func
      transform (the implicit solvers' autodiff Jacobian of an adjoint field) are not seen.
    - ``stored_bytes``: state-sized arrays the mode itself keeps, at its peak (outputs at
      the loss times, checkpoints, the dense forward/adjoint solution, the reversible
      augmented state); ``details["stored_arrays"]`` is their exact count.
    - ``step_record_bytes``: float64 host scalars kept per step (t_k, h_k: checkpoint,
      reversible_heun, the interpolating modes): O(steps) floats, not states.
    - ``peak_rss_bytes`` (and ``cuda_peak_bytes`` on a GPU): process-level, where measured.
 ``adjoint_mismatch``: for modes that reconstruct the forward state backward
    (backsolve, on every backend), the worst reconstruction error over the backward
    segments, :func:`reconstruction_mismatch`: ``max_i max|z_rec(t_i) - z(t_i)| / max(1,
    max|z(t_i)|)`` at every point where the backward solve of z ends (each earlier loss time,
    where z is reset to the forward value, and t0); None for modes that do not reconstruct.
    ``status`` is the forward solve's (a failure keeps NaN gradients, never zeros).
    """

    mode: str
    method: str
    backend: str
    library: str
    status: Status
    loss: float
    grad_y0: np.ndarray | None
    grad_params: dict[str, np.ndarray] = field(default_factory=dict)
    nfev_forward: int = 0
    nfev_backward: int = 0
    steps_forward: int = 0
    steps_backward: int = 0
    timing: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float | None] = field(default_factory=dict)
    adjoint_mismatch: float | None = None
    message: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.status.ok

    def flat(self) -> np.ndarray:
        """dL/dy0 and every dL/dθ (sorted by name) as one float64 vector, for comparisons."""
        parts = [] if self.grad_y0 is None else [np.ravel(self.grad_y0)]
        parts += [np.ravel(self.grad_params[k]) for k in sorted(self.grad_params)]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "method": self.method, "backend": self.backend, "library": self.library,
            "status": self.status.code, "loss": float(self.loss),
            "grad_y0": None if self.grad_y0 is None else np.asarray(self.grad_y0).tolist(),
            "grad_params": {k: np.asarray(v).tolist() for k, v in self.grad_params.items()},
            "nfev_forward": int(self.nfev_forward), "nfev_backward": int(self.nfev_backward),
            "steps_forward": int(self.steps_forward), "steps_backward": int(self.steps_backward),
            "timing": dict(self.timing), "memory": dict(self.memory),
            "adjoint_mismatch": self.adjoint_mismatch, "message": self.message,
        }
