"""Flows: vector fields that carry their Jacobian, continuous normalizing flows (CNFs) on the
augmented state ``[z, log p]``, the trace estimators that drive them, and augmented Neural ODEs.

A continuous normalizing flow transports a base density ``p0`` by ``dz/dt = f(t, z)``; the
log-density along a trajectory obeys the instantaneous change of variables

    d log p(z(t)) / dt = -tr(df/dz)(t, z(t))

(Chen et al. 2018, Theorem 1; Grathwohl et al. 2019, FFJORD). odeverify solves the augmented
state ``y = [z, l]`` with ``dl/dt = -tr`` as an ordinary :class:`~odeverify.problems.Problem`,
so every solver, backend and gradient mode takes it unchanged. The trace comes from one of
:data:`TRACE_ESTIMATORS`:

``jacobian``
    the full Jacobian, from the field's analytic ``jac`` (a product of the layers' matrices);
``jvp``
    ``n`` Jacobian-vector products with the unit vectors, from the field's analytic ``jvp``;
``autodiff``
    ``n`` forward-mode products by the array library's own autodiff (PyTorch, JAX), the
    brute-force exact trace of FFJORD's code, independent of the hand-written products;
``hutchinson``
    ``mean_k v_k^T J v_k`` over ``k`` probes ``v_k`` (Rademacher or Gaussian) drawn once per
    solve from a seed and held fixed across the solve, as FFJORD does (Hutchinson 1989).

The oracles that grade these (closed forms, Liouville's formula by the variational equation,
normalisation of the pushed-forward density, invertibility) live in
:mod:`odeverify.properties.flows` and share no code with the trace path.

Directions: the *density* problem starts at a data point ``x`` at ``t1`` with ``l = 0`` and
runs backward to ``t0``, where ``log p1(x) = log p0(z(t0)) - l(t0)``; the *sample* problem
starts at ``z0`` at ``t0`` with ``l = log p0(z0)`` and runs forward, ending at
``[x, log p1(x)]``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from .. import _xp
from .._registry import Registry
from ._spec import KNOWN_TAGS, Problem, convert_params

#: the trace estimators of a CNF's log-density (see the module docstring)
TRACE_ESTIMATORS = ("jacobian", "jvp", "autodiff", "hutchinson")
#: Hutchinson's probe distributions: Rademacher (+-1 with equal probability) and standard normal
PROBES = ("rademacher", "gaussian")
ACTIVATIONS = ("tanh", "softplus")

FFJORD = ("W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, FFJORD: Free-form"
          " continuous dynamics for scalable reversible generative models, ICLR 2019")
NODE = ("R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, Neural Ordinary Differential Equations,"
        " NeurIPS 2018, Theorem 1 (instantaneous change of variables)")
ANODE = "E. Dupont, A. Doucet, Y. W. Teh, Augmented Neural ODEs, NeurIPS 2019"


def _int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}, but it must be an int >= {minimum}")
    return int(value)


def _time(xp: Any, t: Any, z: Any) -> Any:
    if isinstance(t, (int, float)):
        return xp.asarray(float(t), dtype=z.dtype, device=_xp.device(z))
    return xp.astype(t, z.dtype)


@dataclass(frozen=True)
class FlowField:
    """A vector field ``f(t, z)`` on R^dim with its Jacobian, written once against the Array API.

    ``rhs(xp, t, z, p)``: ``z`` of shape ``(..., dim)``, ``t`` 0-d or of shape ``z.shape[:-1]``.
    ``jvp(xp, t, z, v, p)``: ``J v`` with ``J = df/dz`` at ``(t, z)``; ``v`` of shape
    ``(k,) + z.shape`` or ``z.shape`` (a stack of tangents shares the point).
    ``jac(xp, t, z, p)``: the Jacobian, shape ``(..., dim, dim)``, ``J[..., i, j] = df_i/dz_j``.
    ``flow(z0, s, t)`` and ``log_det(z0, s, t)`` (NumPy, float64, ``z0`` of shape ``(..., dim)``):
    the exact flow map from time ``s`` to time ``t`` and ``log |det d flow / d z0|``, or None.
    ``lipschitz``: a bound on ``|df/dz|_2`` over the state space when one is known (else None).
    """

    name: str
    dim: int
    rhs: Callable[..., Any]
    jvp: Callable[..., Any]
    jac: Callable[..., Any] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    flow: Callable[[np.ndarray, float, float], np.ndarray] | None = None
    log_det: Callable[[np.ndarray, float, float], np.ndarray] | None = None
    lipschitz: float | None = None
    tags: frozenset[str] = frozenset()
    description: str = ""
    citation: str = ""

    def __post_init__(self) -> None:
        _int(self.dim, "dim")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "tags", frozenset(self.tags))
        unknown = self.tags - KNOWN_TAGS
        if unknown:
            raise ValueError(f"flow field {self.name!r}: unknown tags {sorted(unknown)}; known: {sorted(KNOWN_TAGS)}")

    @property
    def has_exact(self) -> bool:
        return self.flow is not None and self.log_det is not None

    def check(self, t: float = 0.0) -> None:
        """Evaluate ``rhs``, ``jvp`` and ``jac`` once (NumPy, a batch of two points) and raise a
        ``ValueError`` naming the function, the shape it returned and the shape expected, or
        the non-finite values: a field that maps R^dim elsewhere, or a non-square Jacobian,
        is refused before any solve."""
        n = self.dim
        xp = _xp.get_namespace("numpy")
        z = np.full((2, n), 0.1) + np.arange(2)[:, None] * 0.05
        v = np.ones((3, 2, n))
        p = convert_params(self.params, xp)
        tt = xp.asarray(float(t))
        checks = [("rhs", lambda: self.rhs(xp, tt, z, p), (2, n)), ("jvp", lambda: self.jvp(xp, tt, z, v, p), (3, 2, n))]
        if self.jac is not None:
            checks.append(("jac", lambda: self.jac(xp, tt, z, p), (2, n, n)))
        for what, fun, shape in checks:
            out = np.asarray(fun())
            if out.shape != shape:
                raise ValueError(f"flow field {self.name!r}: {what} returned shape {out.shape} for a state of shape"
                                 f" {z.shape}, but it must be {shape}" + (" (a square Jacobian: dim x dim)"
                                                                          if what == "jac" else ""))
            if not np.all(np.isfinite(out)):
                raise ValueError(f"flow field {self.name!r}: {what} returned non-finite values at t={t:g}")

    def bound(self, xp: Any, dtype: Any = None, device: Any = None) -> tuple[Callable, Callable, Callable | None]:
        """``(f(t, z), jvp(t, z, v), jac(t, z) or None)`` with the parameters converted once."""
        p = convert_params(self.params, xp, dtype, device)
        jac = None if self.jac is None else (lambda t, z: self.jac(xp, t, z, p))
        return (lambda t, z: self.rhs(xp, t, z, p)), (lambda t, z, v: self.jvp(xp, t, z, v, p)), jac

    def ode(self, y0: Any, t_span: tuple[float, float] = (0.0, 1.0), *, name: str | None = None) -> Problem:
        """The plain ODE ``dz/dt = f(t, z)`` from ``y0`` (no log-density)."""
        y0 = np.asarray(y0, dtype=np.float64).reshape(-1)
        if y0.size != self.dim:
            raise ValueError(f"y0 has {y0.size} components, but flow field {self.name!r} has dim={self.dim}")
        exact = None
        if self.flow is not None:
            flow, t0 = self.flow, float(t_span[0])

            def exact(ts: np.ndarray) -> np.ndarray:
                return np.stack([flow(y0, t0, float(t)) for t in np.atleast_1d(ts)])
        return Problem(name=name or f"{self.name}_ode", rhs=self.rhs, y0=tuple(y0), t_span=t_span,
                       params=dict(self.params), exact=exact,
                       tags=self.tags | ({"has_exact"} if exact is not None else set()),
                       jac=self.jac, citation=self.citation, description=self.description)


# ----------------------------------------------------------------------------- trace estimators
def _check_estimator(trace: Any, probe: Any, n_probes: Any) -> None:
    if trace not in TRACE_ESTIMATORS:
        raise ValueError(f"trace={trace!r}, but it must be one of {', '.join(TRACE_ESTIMATORS)}")
    if trace == "hutchinson":
        if probe not in PROBES:
            raise ValueError(f"probe={probe!r}, but it must be one of {', '.join(PROBES)}")
        if isinstance(n_probes, bool) or not isinstance(n_probes, (int, np.integer)) or n_probes < 1:
            raise ValueError(f"n_probes={n_probes!r}, but a Hutchinson estimate needs an int >= 1 of probes")


def draw_probes(probe: str, n_probes: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """``n_probes`` probes of shape ``shape`` (``(dim,)`` or ``(B, dim)``), float64, from
    ``numpy.random.default_rng(seed)``: Rademacher signs or standard normal draws."""
    _check_estimator("hutchinson", probe, n_probes)
    rng = np.random.default_rng(seed)
    size = (int(n_probes),) + tuple(shape)
    if probe == "rademacher":
        return rng.integers(0, 2, size=size).astype(np.float64) * 2.0 - 1.0
    return rng.standard_normal(size)


def _eye_stack(xp: Any, z: Any, n: int) -> Any:
    """The unit vectors as a stack of tangents ``(n,) + (1,)*(z.ndim-1) + (n,)``."""
    eye = xp.eye(n, dtype=z.dtype, device=_xp.device(z))
    return xp.reshape(eye, (n,) + (1,) * (z.ndim - 1) + (n,))


def trace_function(fld: FlowField, trace: str) -> Callable[..., Any]:
    """``tr(xp, t, z, p) -> (...)``: the trace (or its estimate) of ``df/dz`` at ``(t, z)``."""
    _check_estimator(trace, "rademacher", 1)
    n = fld.dim
    if trace == "jacobian":
        if fld.jac is None:
            raise ValueError(f"trace='jacobian', but flow field {fld.name!r} has no analytic jac")

        def tr(xp, t, z, p):
            J = fld.jac(xp, t, z, p)
            eye = xp.eye(n, dtype=z.dtype, device=_xp.device(z))
            return xp.sum(J * eye, axis=(-2, -1))
    elif trace == "jvp":
        def tr(xp, t, z, p):
            V = _eye_stack(xp, z, n)
            return xp.sum(xp.sum(fld.jvp(xp, t, z, V, p) * V, axis=-1), axis=0)
    elif trace == "autodiff":
        def tr(xp, t, z, p):
            total = None
            for i in range(n):
                e = xp.zeros_like(z)
                e = e + xp.reshape(xp.eye(n, dtype=z.dtype, device=_xp.device(z))[i, :], (1,) * (z.ndim - 1) + (n,))
                _, Je = _xp.jvp(lambda zz: fld.rhs(xp, t, zz, p), (z,), (e,))
                total = Je[..., i] if total is None else total + Je[..., i]
            return total
    else:  # hutchinson: probes are the parameter "_probes", shape (k,) + z.shape
        def tr(xp, t, z, p):
            P = p["_probes"]
            return xp.mean(xp.sum(P * fld.jvp(xp, t, z, P, p), axis=-1), axis=0)
    return tr


def augmented_rhs(fld: FlowField, trace: str) -> Callable[..., Any]:
    """``rhs(xp, t, y, p)`` of the augmented state ``y = [z, l]``: ``[f(t, z), -tr]``."""
    tr = trace_function(fld, trace)
    n = fld.dim

    def rhs(xp, t, y, p):
        z = y[..., :n]
        f = fld.rhs(xp, t, z, p)
        # + 0 * z[..., :1]: a trace that does not depend on z (a linear field) still gets the batch shape
        return xp.concat([f, -xp.expand_dims(tr(xp, t, z, p), axis=-1) + 0.0 * z[..., :1]], axis=-1)

    return rhs


# ----------------------------------------------------------------------------- base densities
@dataclass(frozen=True)
class DiagonalGaussian:
    """The base density N(mean, diag(std^2)) on R^dim."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        m = np.asarray(self.mean, dtype=np.float64)
        s = np.asarray(self.std, dtype=np.float64)
        if m.ndim != 1 or s.shape != m.shape:
            raise ValueError(f"mean has shape {m.shape} and std {s.shape}; both must be (dim,)")
        if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s)) and np.all(s > 0)):
            raise ValueError(f"mean={self.mean} must be finite and std={self.std} finite and > 0")
        object.__setattr__(self, "mean", tuple(m.tolist()))
        object.__setattr__(self, "std", tuple(s.tolist()))

    @classmethod
    def standard(cls, dim: int) -> DiagonalGaussian:
        return cls(mean=(0.0,) * dim, std=(1.0,) * dim)

    @property
    def dim(self) -> int:
        return len(self.mean)

    def logpdf(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        if z.shape[-1] != self.dim:
            raise ValueError(f"z has {z.shape[-1]} components, but the base density has dim={self.dim}")
        m, s = np.asarray(self.mean), np.asarray(self.std)
        u = (z - m) / s
        return -0.5 * np.sum(u * u, axis=-1) - np.sum(np.log(s)) - 0.5 * self.dim * math.log(2 * math.pi)

    def sample(self, size: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return np.asarray(self.mean) + np.asarray(self.std) * rng.standard_normal((int(size), self.dim))


# ----------------------------------------------------------------------------- CNF problems
@dataclass(frozen=True)
class CNFProblem:
    """A continuous normalizing flow: a :class:`FlowField` on ``t_span`` pushing ``base``
    forward, and seeded data points ``data`` (shape ``(B, dim)``) at which densities are
    evaluated. ``exact_log_density`` exists when the field's flow map is known."""

    name: str
    field: FlowField
    base: DiagonalGaussian
    t_span: tuple[float, float] = (0.0, 1.0)
    data: np.ndarray = field(default_factory=lambda: np.zeros((1, 1)))
    tags: frozenset[str] = frozenset()
    description: str = ""

    def __post_init__(self) -> None:
        if self.base.dim != self.field.dim:
            raise ValueError(f"base has dim={self.base.dim}, but flow field {self.field.name!r} has"
                             f" dim={self.field.dim}; the base density must live in the field's space")
        data = np.asarray(self.data, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise ValueError(f"data has shape {data.shape}, but it must be (B, dim) = (B, {self.dim})")
        if not np.all(np.isfinite(data)):
            raise ValueError(f"data of CNF problem {self.name!r} contains non-finite values")
        self.field.check(float(self.t_span[0]))
        data.setflags(write=False)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "t_span", (float(self.t_span[0]), float(self.t_span[1])))
        object.__setattr__(self, "tags", frozenset(self.tags) | self.field.tags)

    @property
    def dim(self) -> int:
        return self.field.dim

    @property
    def has_exact(self) -> bool:
        return self.field.has_exact

    # ---- closed forms (NumPy, float64)
    def exact_log_density(self, x: np.ndarray) -> np.ndarray:
        """log p1(x) = log p0(phi^-1(x)) - log|det dphi/dz0| at phi^-1(x), from the closed form."""
        if not self.has_exact:
            raise ValueError(f"CNF problem {self.name!r} has no closed-form flow map")
        t0, t1 = self.t_span
        z0 = self.field.flow(np.asarray(x, dtype=np.float64), t1, t0)
        return self.base.logpdf(z0) - self.field.log_det(z0, t0, t1)

    def log_likelihood(self, end: np.ndarray) -> np.ndarray:
        """log p1(x) from the end ``[z(t0), l(t0)]`` of a density solve (shape ``(..., dim+1)``)."""
        end = np.asarray(end, dtype=np.float64)
        if not np.all(np.isfinite(end)):
            raise ValueError(f"the density solve of {self.name!r} ended with non-finite values; no log-density"
                             " can be read from it")
        return self.base.logpdf(end[..., :self.dim]) - end[..., self.dim]

    # ---- the augmented problems
    def _params(self, trace: str, probe: str, n_probes: int, seed: int, batch: int | None) -> dict[str, Any]:
        _check_estimator(trace, probe, n_probes)
        params = dict(self.field.params)
        if trace == "hutchinson":
            shape = ((batch,) if batch is not None else ()) + (self.dim,)
            params["_probes"] = draw_probes(probe, n_probes, shape, seed)
        return params

    def _name(self, trace: str, probe: str, n_probes: int, seed: int, direction: str) -> str:
        est = trace if trace != "hutchinson" else f"hutchinson_{probe}{n_probes}_s{seed}"
        return f"{self.name}_{direction}_{est}"

    def density_problem(self, trace: str = "jacobian", *, x: Any = None, probe: str = "rademacher",
                        n_probes: int = 1, seed: int = 0, batch: int | None = None) -> Problem:
        """``[z, l]`` from ``[x, 0]`` at ``t1`` back to ``t0`` (``x``: default the first data
        point). With ``batch=B`` the Hutchinson probes have shape ``(k, B, dim)`` for a batch
        ``y0`` of :meth:`density_y0`; the problem's own ``y0`` stays the single point."""
        x = self.data[0] if x is None else np.asarray(x, dtype=np.float64).reshape(-1)
        if x.size != self.dim:
            raise ValueError(f"x has {x.size} components, but CNF problem {self.name!r} has dim={self.dim}")
        t0, t1 = self.t_span
        exact = None
        if self.has_exact:
            flow, log_det = self.field.flow, self.field.log_det

            def exact(ts: np.ndarray) -> np.ndarray:
                rows = []
                for t in np.atleast_1d(np.asarray(ts, dtype=np.float64)):
                    z = flow(x, t1, float(t))
                    rows.append(np.concatenate([z, [float(log_det(z, float(t), t1))]]))
                return np.stack(rows)
        return Problem(
            name=self._name(trace, probe, n_probes, seed, "density"), rhs=augmented_rhs(self.field, trace),
            y0=tuple(np.concatenate([x, [0.0]])), t_span=(t1, t0),
            params=self._params(trace, probe, n_probes, seed, batch), exact=exact,
            tags=(self.tags | ({"has_exact"} if exact is not None else set())) - {"linear"},
            citation=f"{NODE}; {FFJORD}",
            description=f"density evaluation of {self.description or self.name}: [z, log-density change] from"
                        f" t={t1:g} back to t={t0:g}, trace: {trace}.")

    def density_y0(self, x: Any = None) -> np.ndarray:
        """The batch ``[x, 0]`` (shape ``(B, dim+1)``) of a density solve (default: ``data``)."""
        x = self.data if x is None else np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x has shape {x.shape}, but it must be (B, dim) = (B, {self.dim})")
        return np.concatenate([x, np.zeros((x.shape[0], 1))], axis=1)

    def sample_problem(self, trace: str = "jacobian", *, z0: Any = None, probe: str = "rademacher",
                       n_probes: int = 1, seed: int = 0, batch: int | None = None) -> Problem:
        """``[z, l]`` from ``[z0, log p0(z0)]`` at ``t0`` forward to ``t1`` (ends at ``[x, log p1(x)]``)."""
        z0 = self.base.sample(1, seed=12345)[0] if z0 is None else np.asarray(z0, dtype=np.float64).reshape(-1)
        if z0.size != self.dim:
            raise ValueError(f"z0 has {z0.size} components, but CNF problem {self.name!r} has dim={self.dim}")
        t0, t1 = self.t_span
        lp0 = float(self.base.logpdf(z0))
        exact = None
        if self.has_exact:
            flow, log_det = self.field.flow, self.field.log_det

            def exact(ts: np.ndarray) -> np.ndarray:
                return np.stack([np.concatenate([flow(z0, t0, float(t)), [lp0 - float(log_det(z0, t0, float(t)))]])
                                 for t in np.atleast_1d(np.asarray(ts, dtype=np.float64))])
        return Problem(
            name=self._name(trace, probe, n_probes, seed, "sample"), rhs=augmented_rhs(self.field, trace),
            y0=tuple(np.concatenate([z0, [lp0]])), t_span=(t0, t1),
            params=self._params(trace, probe, n_probes, seed, batch), exact=exact,
            tags=(self.tags | ({"has_exact"} if exact is not None else set())) - {"linear"},
            citation=f"{NODE}; {FFJORD}",
            description=f"sampling of {self.description or self.name}: [z, log-density] from t={t0:g} to t={t1:g},"
                        f" trace: {trace}.")

    def nll_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The negative log-likelihood on the end ``[z(t0), l(t0)]`` of a density solve, up to
        :meth:`nll_constant`, as the ``(weights (1, dim+1), quadratic (dim+1,))`` of a
        :class:`~odeverify.gradients.Loss` at ``t0``: ``sum_i (z_i^2 - 2 m_i z_i) / (2 s_i^2) + l``
        (``odeverify.properties.flows.nll_loss`` builds it)."""
        m, s = np.asarray(self.base.mean), np.asarray(self.base.std)
        return np.concatenate([-m / s**2, [1.0]])[None, :], np.concatenate([1.0 / s**2, [0.0]])

    def nll_constant(self) -> float:
        """What :meth:`nll_weights` leaves out: ``sum log std + sum m^2/(2 s^2) + dim/2 log 2 pi``."""
        m, s = np.asarray(self.base.mean), np.asarray(self.base.std)
        return float(np.sum(np.log(s)) + np.sum(m**2 / (2 * s**2)) + 0.5 * self.dim * math.log(2 * math.pi))


CNF_PROBLEMS: Registry[CNFProblem] = Registry("CNF problem")


def register_cnf(problem: CNFProblem) -> CNFProblem:
    CNF_PROBLEMS.register(problem.name, problem)
    return problem


# ----------------------------------------------------------------------------- fields
def _sigmoid(xp: Any, x: Any) -> Any:
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def linear_field(A: Any, b: Any = None, *, alpha: float = 0.0, name: str | None = None) -> FlowField:
    """``f(t, z) = s(t) (A z + b)`` with ``s(t) = 1 + alpha t``: its flow is
    ``expm(S [[A, b], [0, 0]])`` with ``S = int s``, and ``log|det| = S tr A``, exactly."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A has shape {A.shape}, but it must be square (dim, dim)")
    n = A.shape[0]
    b = np.zeros(n) if b is None else np.asarray(b, dtype=np.float64)
    if b.shape != (n,):
        raise ValueError(f"b has shape {b.shape}, but it must be (dim,) = ({n},)")
    alpha = float(alpha)

    def scale(xp, t, z, p):
        return xp.expand_dims(1.0 + p["alpha"] * _time(xp, t, z), axis=-1)

    def rhs(xp, t, z, p):
        return scale(xp, t, z, p) * (z @ xp.matrix_transpose(p["A"]) + p["b"])

    def jvp(xp, t, z, v, p):
        return scale(xp, t, z, p) * (v @ xp.matrix_transpose(p["A"]))

    def jac(xp, t, z, p):
        s = xp.expand_dims(scale(xp, t, z, p), axis=-1)
        return s * p["A"] + xp.zeros(tuple(z.shape) + (n,), dtype=z.dtype, device=_xp.device(z))

    def S(s: float, t: float) -> float:
        return (t - s) + alpha * (t * t - s * s) / 2

    def flow(z0: np.ndarray, s: float, t: float) -> np.ndarray:
        from scipy.linalg import expm

        M = np.zeros((n + 1, n + 1))
        M[:n, :n], M[:n, n] = A, b
        E = expm(S(s, t) * M)
        return np.asarray(z0) @ E[:n, :n].T + E[:n, n]

    def log_det(z0: np.ndarray, s: float, t: float) -> np.ndarray:
        return np.full(np.shape(z0)[:-1], S(s, t) * float(np.trace(A)))

    return FlowField(
        name=name or f"linear{n}", dim=n, rhs=rhs, jvp=jvp, jac=jac,
        params={"A": A, "b": b, "alpha": alpha}, flow=flow, log_det=log_det,
        lipschitz=float(np.linalg.norm(A, 2)) * max(1.0, 1.0 + alpha),
        tags={"linear", "has_exact", "time_dependent" if alpha else "autonomous"},
        description=f"affine field (1 + {alpha:g} t)(A z + b) on R^{n}",
        citation="closed form: the flow of a scalar-rescaled affine field is a matrix exponential")


def sine_field(a: float = 1.5, *, name: str | None = None) -> FlowField:
    """``f(z) = a sin z`` on the line: ``tan(phi/2) = tan(z0/2) e^{a t}`` on each cell
    ``(2k-1) pi < z0 < (2k+1) pi``, and ``phi' = e^{at} / (cos^2(w/2) + sin^2(w/2) e^{2at})``."""
    a = float(a)

    def rhs(xp, t, z, p):
        return p["a"] * xp.sin(z)

    def jvp(xp, t, z, v, p):
        return p["a"] * xp.cos(z) * v

    def jac(xp, t, z, p):
        return xp.expand_dims(p["a"] * xp.cos(z), axis=-1)

    def _split(z0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.round(np.asarray(z0, dtype=np.float64) / (2 * np.pi))
        return k, np.asarray(z0) - 2 * np.pi * k

    def flow(z0: np.ndarray, s: float, t: float) -> np.ndarray:
        k, w = _split(z0)
        return 2 * np.pi * k + 2 * np.arctan(np.tan(w / 2) * np.exp(a * (t - s)))

    def log_det(z0: np.ndarray, s: float, t: float) -> np.ndarray:
        _, w = _split(z0)
        e = np.exp(a * (t - s))
        return (np.log(e) - np.log(np.cos(w / 2) ** 2 + np.sin(w / 2) ** 2 * e * e))[..., 0]

    return FlowField(name=name or f"sine_a{a:g}", dim=1, rhs=rhs, jvp=jvp, jac=jac, params={"a": a},
                     flow=flow, log_det=log_det, lipschitz=abs(a),
                     tags={"nonlinear", "autonomous", "has_exact"},
                     description=f"f(z) = {a:g} sin z on the line (closed-form flow)",
                     citation="closed form by separation of variables: tan(z/2) grows like e^{at}")


def mlp_field(dim: int = 2, hidden: int = 16, depth: int = 2, activation: str = "tanh", seed: int = 0, *,
              scale: float = 1.0, name: str | None = None) -> FlowField:
    """An FFJORD-style field of concat-squash layers: layer ``i`` maps ``h`` to
    ``(W_i h + b_i) * sigmoid(g_i t + c_i) + d_i t``, with ``depth`` hidden layers of width
    ``hidden`` and ``activation`` between layers. Weights from ``default_rng(seed)``:
    ``W ~ N(0, scale^2/fan_in)``, ``b, d ~ N(0, 0.1^2)``, ``g, c ~ N(0, 1)``."""
    dim, hidden, depth = _int(dim, "dim"), _int(hidden, "hidden"), _int(depth, "depth")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r}, but it must be one of {', '.join(ACTIVATIONS)}")
    seed = _int(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    sizes = [dim] + [hidden] * depth + [dim]
    params: dict[str, Any] = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"W{i}"] = float(scale) * rng.standard_normal((fan_out, fan_in)) / math.sqrt(fan_in)
        params[f"b{i}"] = 0.1 * rng.standard_normal(fan_out)
        params[f"g{i}"] = rng.standard_normal(fan_out)
        params[f"c{i}"] = rng.standard_normal(fan_out)
        params[f"d{i}"] = 0.1 * rng.standard_normal(fan_out)
    layers = len(sizes) - 1

    def act(xp, x):
        return xp.tanh(x) if activation == "tanh" else xp.logaddexp(x, xp.zeros_like(x))

    def dact(xp, x):
        return 1.0 - xp.tanh(x) ** 2 if activation == "tanh" else _sigmoid(xp, x)

    def gates(xp, t, z, p):
        tt = xp.expand_dims(_time(xp, t, z), axis=-1)
        return tt, [_sigmoid(xp, tt * p[f"g{i}"] + p[f"c{i}"]) for i in range(layers)]

    def forward(xp, t, z, p):
        tt, gs = gates(xp, t, z, p)
        h, pres = z, []
        for i in range(layers):
            pre = (h @ xp.matrix_transpose(p[f"W{i}"]) + p[f"b{i}"]) * gs[i] + tt * p[f"d{i}"]
            if i < layers - 1:
                pres.append(pre)
                h = act(xp, pre)
            else:
                h = pre
        return h, gs, pres

    def rhs(xp, t, z, p):
        return forward(xp, t, z, p)[0]

    def jvp(xp, t, z, v, p):
        _, gs, pres = forward(xp, t, z, p)
        dh = v
        for i in range(layers):
            dh = (dh @ xp.matrix_transpose(p[f"W{i}"])) * gs[i]
            if i < layers - 1:
                dh = dact(xp, pres[i]) * dh
        return dh

    def jac(xp, t, z, p):
        _, gs, pres = forward(xp, t, z, p)
        M = None
        for i in range(layers):
            W = p[f"W{i}"]
            M = W if M is None else W @ M  # (..., out, dim)
            M = xp.expand_dims(gs[i], axis=-1) * M
            if i < layers - 1:
                M = xp.expand_dims(dact(xp, pres[i]), axis=-1) * M
        return M

    return FlowField(
        name=name or f"cnf_mlp_{activation}_{dim}x{hidden}_d{depth}_s{seed}", dim=dim, rhs=rhs, jvp=jvp, jac=jac,
        params=params, tags={"neural", "nonlinear", "time_dependent", "nonstiff"},
        description=(f"concat-squash MLP field on R^{dim}: {depth} hidden {activation} layer(s) of width {hidden},"
                     f" time-gated as in FFJORD, weights from default_rng({seed}) scaled by {float(scale):g}"),
        citation=FFJORD)


def rotation_field(angle: float = math.pi, duration: float = 1.0, *, name: str | None = None) -> FlowField:
    """The rotation ``f(x, y) = omega (-y, x)`` with ``omega = angle / duration``: its time-``duration``
    flow is the rotation by ``angle``, which for ``angle = pi`` maps ``(x, 0)`` to ``(-x, 0)``."""
    omega = float(angle) / float(duration)
    A = np.array([[0.0, -omega], [omega, 0.0]])
    return dataclasses.replace(linear_field(A, name=name or f"rotation_{float(angle):.4g}"), lipschitz=abs(omega),
                               tags=frozenset({"linear", "autonomous", "has_exact", "oscillatory"}),
                               description=f"rotation of the plane at angular speed {omega:g}", citation=ANODE)


# ----------------------------------------------------------------------------- augmented Neural ODEs
def augmented_problem(fld: FlowField, x: Any, *, extra: int, t_span: tuple[float, float] = (0.0, 1.0),
                      name: str | None = None) -> Problem:
    """The augmented Neural ODE of Dupont et al.: ``x`` (shape ``(d,)``) padded with ``extra``
    zeros to the field's dimension ``d + extra``; read the output's first ``d`` components
    (:func:`project`). The problem is an ordinary :class:`Problem`, so every solver, backend and
    gradient mode takes it."""
    extra = _int(extra, "extra", minimum=0)
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size + extra != fld.dim:
        raise ValueError(f"x has {x.size} components and extra={extra}, but flow field {fld.name!r} has"
                         f" dim={fld.dim}; they must add up to it")
    fld.check(float(t_span[0]))
    return fld.ode(np.concatenate([x, np.zeros(extra)]), t_span,
                   name=name or f"{fld.name}_aug{extra}")


def project(y: Any, dim: int) -> Any:
    """The first ``dim`` components of an augmented state (the output of an augmented Neural ODE)."""
    return y[..., :dim]


# ----------------------------------------------------------------------------- registered CNFs
def _data(dim: int, size: int, seed: int, std: float = 1.5) -> np.ndarray:
    return std * np.random.default_rng([seed, 7]).standard_normal((size, dim))


def _linear_A(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 3])
    A = rng.standard_normal((dim, dim)) / math.sqrt(dim) - 0.2 * np.eye(dim)
    return A, 0.3 * rng.standard_normal(dim)


_A2, _B2 = _linear_A(2, 0)
register_cnf(CNFProblem(
    # A doubled (eigenvalues -1.18, 0.87) so that an adaptive sweep takes enough steps to fit an exponent
    name="cnf_linear2", field=linear_field(2.0 * _A2, _B2, alpha=0.5, name="linear2"),
    base=DiagonalGaussian((0.5, -0.25), (1.0, 0.7)), data=_data(2, 8, 0),
    description="affine 2-D CNF with time-rescaled matrix, closed form"))
register_cnf(CNFProblem(
    name="cnf_linear8", field=linear_field(*_linear_A(8, 1), name="linear8"),
    base=DiagonalGaussian.standard(8), data=_data(8, 8, 1),
    description="affine 8-D CNF, closed form"))
register_cnf(CNFProblem(
    name="cnf_sine1", field=sine_field(1.5), base=DiagonalGaussian((0.3,), (1.2,)), data=_data(1, 8, 2),
    description="1-D CNF of f(z) = 1.5 sin z, closed form"))
register_cnf(CNFProblem(
    name="cnf_mlp2", field=mlp_field(2, 16, 2, "tanh", seed=0, scale=2.0), base=DiagonalGaussian.standard(2),
    data=_data(2, 8, 3), description="2-D concat-squash tanh MLP CNF (FFJORD-style)"))
register_cnf(CNFProblem(
    name="cnf_mlp1", field=mlp_field(1, 16, 2, "tanh", seed=1, scale=2.0), base=DiagonalGaussian.standard(1),
    data=_data(1, 8, 4), description="1-D concat-squash tanh MLP CNF"))
register_cnf(CNFProblem(
    name="cnf_mlp6_softplus", field=mlp_field(6, 32, 2, "softplus", seed=2, scale=2.0), base=DiagonalGaussian.standard(6),
    data=_data(6, 8, 5), description="6-D concat-squash softplus MLP CNF"))
