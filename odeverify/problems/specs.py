"""Generated problems as one-line specs: every problem a strategy draws is rebuilt exactly
from a JSON line (``odeverify solve --spec '...'``, :func:`from_spec`).

A spec is ``{"kind": K, "params": {...}, "span": [t0, t1]}`` (``span`` optional). ``kind``
names a builder in :data:`GENERATORS`; ``params`` are its keyword arguments, plain JSON
(complex numbers as ``[re, im]`` pairs); ``span`` moves a problem with a closed form onto
another interval, forward or backward, starting from the exact solution at ``t0``. The
problem's name is ``gen_<kind>_<hash>`` of the canonical spec, so an expected-failure entry
can match ``gen_*`` or one kind.

Kinds (each with a closed form unless stated):

- ``linear``: y' = A y with a prescribed spectrum (:func:`~.classic.linear_problem`);
- ``jordan``: y' = A y, A = Q (lam I + c N) Q^T with N the nilpotent shift: defective, and
  strongly non-normal for large coupling c;
- ``warped``: the sinh-warped, time-rescaled linear system (:mod:`.generated`);
- ``hamiltonian``: uncoupled oscillators seen through the symplectic shear
  P = p + a q^2 (non-separable, nonlinear, Hamiltonian);
- ``manufactured``: the method of manufactured solutions: y' = z'(t) - G (y - z(t))
  - beta (y - z(t))^3 with a drawn trigonometric z(t): the damping vanishes on z, so
  y = z exactly;
- ``stiff_linear``: a real log-spaced spectrum of drawn stiffness ratio
  (:func:`~.stiff.stiff_linear_problem`);
- ``mlp``: a seeded MLP field (:func:`~.neural.mlp_field`) with its output scaled; no closed
  form: its reference at t1 is a scipy DOP853 solve at rtol 1e-13, recorded as such.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from .._registry import Registry
from ._spec import Problem, Reference
from .classic import _random_orthogonal, linear_problem
from .generated import warped_linear_problem
from .neural import mlp_field
from .stiff import stiff_linear_problem

GENERATORS: Registry[Callable[..., Problem]] = Registry("problem generator")
#: a moved span whose exact solution leaves this magnitude is refused (overflow, not a test)
MAX_MAGNITUDE = 1e8
#: a backward span over which the damped modes grow by more than exp(this) is refused: every
#: error grows with them (Kvaerno3 in diffrax and the reference alike ran out of steps on a
#: manufactured problem with damping 4.8 run back over 2.8, a growth of exp(13))
MAX_BACKWARD_GROWTH = 5.0


def _complex_list(values: Any, name: str) -> list[complex]:
    out = []
    for v in values:
        if isinstance(v, (list, tuple)) and len(v) == 2:
            out.append(complex(float(v[0]), float(v[1])))
        elif isinstance(v, (int, float)):
            out.append(complex(float(v), 0.0))
        else:
            raise ValueError(f"{name}={values!r}: each entry must be a number or a [re, im] pair")
    return out


def _linear(eigenvalues: list, seed: int, t1: float = 1.0) -> Problem:
    return linear_problem(_complex_list(eigenvalues, "eigenvalues"), seed=seed, t_span=(0.0, t1))


def _warped(eigenvalues: list, seed: int, eps: float = 0.3, omega: float = 2.0, nonlinear: bool = True,
            t1: float = 1.0, amplitude: float = 1.0) -> Problem:
    return warped_linear_problem(_complex_list(eigenvalues, "eigenvalues"), seed=seed, eps=eps, omega=omega,
                                 nonlinear=nonlinear, t1=t1, amplitude=amplitude)


def _rhs_matrix(xp, t, y, p):
    return y @ xp.matrix_transpose(p["A"])


def _jordan(lam: float, size: int, coupling: float, seed: int, t1: float = 1.0) -> Problem:
    if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= 8:
        raise ValueError(f"size={size!r}, but it must be an int in [2, 8] (a Jordan block)")
    if not (math.isfinite(lam) and math.isfinite(coupling) and coupling != 0):
        raise ValueError(f"lam={lam!r}, coupling={coupling!r}: both must be finite and coupling nonzero")
    rng = np.random.default_rng(int(seed))
    Q = _random_orthogonal(rng, size)
    N = np.diag(np.ones(size - 1), 1)
    A = Q @ (lam * np.eye(size) + coupling * N) @ Q.T
    y0 = rng.standard_normal(size)
    y0 /= np.linalg.norm(y0)
    c0 = Q.T @ y0

    def exact(t):
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        out = np.empty(t.shape + (size,))
        for i, ti in enumerate(t):
            # exp((lam I + c N) t) = e^{lam t} sum_k (c t)^k N^k / k!  (N nilpotent: exact)
            E = np.zeros((size, size))
            Nk = np.eye(size)
            for k in range(size):
                E += (coupling * ti) ** k / math.factorial(k) * Nk
                Nk = Nk @ N
            out[i] = Q @ (math.exp(lam * ti) * (E @ c0))
        return out

    tags = {"linear", "autonomous", "has_exact", "nonstiff"} | ({"dissipative"} if lam < 0 else set())
    return Problem(name="jordan", rhs=_rhs_matrix, y0=tuple(y0), t_span=(0.0, t1), params={"A": A},
                   exact=exact, tags=tags, citation="Constructed (odeverify): defective, non-normal linear system",
                   description=f"y' = A y, A = Q ({lam:g} I + {coupling:g} N) Q^T, N the {size}x{size} nilpotent"
                               f" shift (one Jordan block, eigenvalue {lam:g}), t in [0, {t1:g}]")


def _rhs_hamiltonian(xp, t, y, p):
    m = y.shape[-1] // 2
    q, P = y[..., :m], y[..., m:]
    a, w2 = p["a"], p["w2"]
    v = P - a * q * q  # the original momentum p = P - g'(q), g(q) = a q^3 / 3
    return xp.concat([v, v * (2.0 * a * q) - w2 * q], axis=-1)


def _hamiltonian(omegas: list, a: float, seed: int, t1: float = 1.0) -> Problem:
    w = np.asarray([float(v) for v in omegas])
    if w.ndim != 1 or w.size == 0 or not np.all(w > 0):
        raise ValueError(f"omegas={omegas!r}, but they must be a non-empty list of frequencies > 0")
    m = w.size
    rng = np.random.default_rng(int(seed))
    q0, p0 = rng.uniform(-1, 1, m), rng.uniform(-1, 1, m)

    def exact(t):
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))[:, None]
        q = q0 * np.cos(w * t) + p0 / w * np.sin(w * t)
        p = -q0 * w * np.sin(w * t) + p0 * np.cos(w * t)
        return np.concatenate([q, p + a * q * q], axis=-1)

    def energy(y):
        q, P = y[..., :m], y[..., m:]
        return 0.5 * np.sum((P - a * q * q) ** 2 + (w * q) ** 2, axis=-1)

    return Problem(name="hamiltonian", rhs=_rhs_hamiltonian, y0=tuple(exact(0.0)[0]), t_span=(0.0, t1),
                   params={"a": float(a), "w2": w * w}, exact=exact, invariants={"energy": energy},
                   tags={"nonlinear", "autonomous", "hamiltonian", "oscillatory", "has_exact", "nonstiff"},
                   citation="Constructed (odeverify): harmonic oscillators through the symplectic shear P = p + a q^2",
                   description=f"H(q, P) = 1/2 |P - a q^2|^2 + 1/2 sum w_i^2 q_i^2, a = {a:g},"
                               f" w = {w.tolist()}, t in [0, {t1:g}]")


def _z(xp, t, p):
    """z(t) = c + sum_k A_k sin(w_k t + phi_k) and z'(t), with parameters of shape (K, n)."""
    arg = p["w"] * t + p["phi"]
    return p["c"] + xp.sum(p["amp"] * xp.sin(arg), axis=0), xp.sum(p["amp"] * p["w"] * xp.cos(arg), axis=0)


def _rhs_manufactured(xp, t, y, p):
    if getattr(t, "ndim", 0) > 0:  # per-sample times: one z per sample
        t = t[..., None, None]
        arg = p["w"] * t + p["phi"]
        z = p["c"] + xp.sum(p["amp"] * xp.sin(arg), axis=-2)
        dz = xp.sum(p["amp"] * p["w"] * xp.cos(arg), axis=-2)
    else:
        z, dz = _z(xp, t, p)
    d = y - z
    return dz - d @ xp.matrix_transpose(p["G"]) - p["beta"] * d * d * d


def _manufactured(n: int, modes: int, seed: int, damping: float = 1.0, beta: float = 0.5,
                  t1: float = 1.0) -> Problem:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 16:
        raise ValueError(f"n={n!r}, but it must be an int in [1, 16]")
    if isinstance(modes, bool) or not isinstance(modes, int) or not 1 <= modes <= 8:
        raise ValueError(f"modes={modes!r}, but it must be an int in [1, 8]")
    if not (math.isfinite(damping) and damping >= 0 and math.isfinite(beta) and beta >= 0):
        raise ValueError(f"damping={damping!r}, beta={beta!r}: both must be finite and >= 0")
    rng = np.random.default_rng(int(seed))
    amp = rng.uniform(-1, 1, (modes, n))
    w = rng.uniform(0.5, 4.0, (modes, n))
    phi = rng.uniform(0, 2 * math.pi, (modes, n))
    c = rng.uniform(-1, 1, n)
    # G = damping * V diag(s) V^-1 with s in [0.5, 1.5]: non-normal, eigenvalues > 0
    V = _random_orthogonal(rng, n) @ np.diag(rng.uniform(1, 2, n)) @ _random_orthogonal(rng, n)
    G = damping * V @ np.diag(rng.uniform(0.5, 1.5, n)) @ np.linalg.inv(V)
    params = {"amp": amp, "w": w, "phi": phi, "c": c, "G": G, "beta": float(beta)}

    def exact(t):
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))[:, None, None]
        return c + np.sum(amp * np.sin(w * t + phi), axis=1)

    return Problem(name="manufactured", rhs=_rhs_manufactured, y0=tuple(exact(0.0)[0]), t_span=(0.0, t1),
                   params=params, exact=exact,
                   tags={"nonlinear" if beta > 0 else "linear", "time_dependent", "has_exact", "nonstiff"}
                   | ({"dissipative"} if damping > 0 else set()),
                   citation="Method of manufactured solutions (Roache 2002); odeverify construction",
                   description=f"y' = z'(t) - G (y - z) - {beta:g} (y - z)^3, z(t) = c + sum of {modes}"
                               f" sinusoid(s) per component, n = {n}, |G| ~ {damping:g}, t in [0, {t1:g}];"
                               " exact y = z(t)")


def _stiff_linear(ratio: float, n: int = 4, seed: int = 0, t1: float = 10.0) -> Problem:
    return stiff_linear_problem(ratio, n=n, seed=seed, t_span=(0.0, t1))


def _mlp(state: int, hidden: int, depth: int, activation: str, seed: int, time_dependent: bool = False,
         scale: float = 1.0, t1: float = 1.0) -> Problem:
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale={scale!r}, but it must be a finite number > 0 (the field is multiplied by it)")
    base = mlp_field(state, hidden, depth, activation, time_dependent, seed, t_span=(0.0, t1))
    params = dict(base.params)
    params["W_out"] = params["W_out"] * scale
    params["b_out"] = params["b_out"] * scale
    return dataclasses.replace(base, params=params,
                               description=base.description + f" Output scaled by {scale:g}.")


def _computed_reference(problem: Problem) -> Problem:
    from scipy.integrate import solve_ivp

    from .. import _xp

    f = problem.vector_field(_xp.get_namespace("numpy"), np.float64)
    t0, t1 = problem.t_span
    sol = solve_ivp(lambda t, y: np.asarray(f(np.asarray(t), np.asarray(y))), (t0, t1), np.asarray(problem.y0),
                    method="DOP853", rtol=1e-13, atol=1e-15)
    if sol.status != 0:
        raise ValueError(f"the reference solve of {problem.name!r} failed: {sol.message}")
    ref = Reference(t=t1, y=tuple(float(v) for v in sol.y[:, -1]), kind="computed",
                    source="scipy solve_ivp DOP853, rtol 1e-13, atol 1e-15")
    return dataclasses.replace(problem, references=(ref,), tags=problem.tags | {"has_reference"})


for _kind, _fn in (("linear", _linear), ("jordan", _jordan), ("warped", _warped), ("hamiltonian", _hamiltonian),
                   ("manufactured", _manufactured), ("stiff_linear", _stiff_linear), ("mlp", _mlp)):
    GENERATORS.register(_kind, _fn)


def canonical(spec: dict[str, Any]) -> str:
    """The one-line JSON of a spec (sorted keys, no spaces): what problems print and take."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def _backward_growth(problem: Problem) -> float:
    """The fastest decay rate of the linear part (A, or the damping -G), which a backward solve
    turns into growth: max(0, -Re lambda), times 1 + eps for the warped clock."""
    if "A" in problem.params:
        lam = np.linalg.eigvals(np.asarray(problem.params["A"]))
    elif "G" in problem.params:
        lam = -np.linalg.eigvals(np.asarray(problem.params["G"]))
    else:
        return 0.0
    return max(0.0, float(np.max(-lam.real))) * (1.0 + float(problem.params.get("eps", 0.0)))


def with_span(problem: Problem, t0: float, t1: float) -> Problem:
    """The same solution on [t0, t1] (t1 < t0 integrates backward), started from the exact
    solution at t0. Needs a closed form."""
    if problem.exact is None:
        raise ValueError(f"problem {problem.name!r} has no closed form; span=[{t0}, {t1}] cannot be moved onto it")
    if not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1:
        raise ValueError(f"span=[{t0}, {t1}], but it must be two distinct finite times")
    growth = _backward_growth(problem) * abs(t1 - t0) if t1 < t0 else 0.0
    if growth > MAX_BACKWARD_GROWTH:
        raise ValueError(f"span=[{t0}, {t1}]: run backward, the damped modes of {problem.name!r} grow like"
                         f" exp({growth:.3g}): an ill-conditioned problem, not a test of a solver; choose a"
                         " shorter span")
    with np.errstate(over="ignore", invalid="ignore"):
        along = problem.exact(np.linspace(t0, t1, 9))
    if not np.all(np.isfinite(along)) or np.max(np.abs(along)) > MAX_MAGNITUDE:
        raise ValueError(f"span=[{t0}, {t1}]: the exact solution of {problem.name!r} grows beyond"
                         f" {MAX_MAGNITUDE:g} there (a decaying mode run backward); choose a shorter span")
    y0 = problem.exact(np.asarray([t0], dtype=np.float64))[0]
    return dataclasses.replace(problem, y0=tuple(float(v) for v in y0), t_span=(float(t0), float(t1)),
                               references=())


def load_spec(spec: str | dict[str, Any], keys: tuple[str, ...] = ("kind", "params", "span")) -> dict[str, Any]:
    """A spec as a dict (from its JSON line), with a ``kind`` and no keys outside ``keys``."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise ValueError(f"spec={spec!r} is not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"spec={spec!r}, but it must be an object with keys among {', '.join(map(repr, keys))}"
                         " ('kind' required)")
    unknown = set(spec) - set(keys)
    if unknown:
        raise ValueError(f"spec has unknown keys {sorted(unknown)}; expected {', '.join(map(repr, keys))}")
    return spec


def from_spec(spec: str | dict[str, Any]) -> Problem:
    """Rebuild a generated problem from its spec (a JSON string or a dict); see the module doc."""
    spec = load_spec(spec)
    GENERATORS.get(spec["kind"])  # an unknown kind fails with the choices
    if not isinstance(spec.get("params", {}), dict):
        raise ValueError(f"spec params={spec['params']!r}, but it must be an object of keyword arguments")
    return _build(canonical(spec))


@lru_cache(maxsize=256)
def _build(text: str) -> Problem:
    """The problem of a canonical spec, built once: explore draws, runs and describes the same
    case several times, and an MLP problem's reference is a DOP853 solve at rtol 1e-13.
    Problems are frozen, so the cached one is shared safely."""
    spec = json.loads(text)
    builder = GENERATORS.get(spec["kind"])
    params = spec.get("params", {})
    try:
        problem = builder(**params)
    except TypeError as exc:
        raise ValueError(f"spec params for kind {spec['kind']!r} do not fit its builder: {exc}") from None
    if "span" in spec:
        t0, t1 = (float(v) for v in spec["span"])
        problem = with_span(problem, t0, t1)
    if problem.exact is None and not problem.references:
        problem = _computed_reference(problem)
    name = f"gen_{spec['kind']}_{hashlib.sha256(text.encode()).hexdigest()[:10]}"
    return dataclasses.replace(problem, name=name, spec=text)


__all__ = ["GENERATORS", "canonical", "from_spec", "with_span"]
