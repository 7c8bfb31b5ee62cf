"""The backend contract: one adapter per library, the same ``Solution`` from each.

A backend solves a :class:`~odeverify.problems.Problem` with one of its own methods and
returns an :class:`~odeverify.solution.Solution` whose statistics are counted the same way
for every library:

- ``nfev``: calls of the vector field (one call evaluates the whole batch), counted by
  wrapping the field (or, for jitted code, by a closed form checked once against a
  host-callback count);
- ``accepted`` / ``rejected``: steps;
- ``timing``: ``{"wall_s": ..., "compile_s": ...}`` (compile time reported separately).

Implementers subclass :class:`Backend` and:

1. set ``name`` and ``install_hint``; import the library lazily inside methods, never at
   module import time (a missing optional library must not break ``import odeverify``);
2. return their :class:`Capabilities`: every method with its claimed order, whether it is
   adaptive, fixed-step, has dense output, and which reference tableau it shares (for
   agreement checks); the dtypes and devices; and for each solver option whether it is
   honoured (``True``) or why not (a string);
3. implement :meth:`Backend._solve`. Option handling: an option the library cannot honour
   must raise :class:`UnsupportedOption` naming it (never dropped silently). Library
   exceptions may propagate: :meth:`Backend.solve` turns any exception into a ``FAILED``
   status (``classify_exception`` maps known messages such as torchdiffeq's "underflow in
   dt" to ``DT_UNDERFLOW``), and a missing library into ``UNAVAILABLE`` with the hint.

Third-party backends register through the entry-point group ``odeverify.backends``
(``name = "package.module:BackendClass"``); the conformance tests and ``odeverify check
--backend NAME`` pick them up.
"""
from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from .._xp import MissingDependencyError
from ..gradients._spec import GradientResult, Loss
from ..problems import Problem
from ..problems.sde import SDEProblem
from ..solution import Solution, Stats, Status
from ..solvers.sde import SDEMethod

#: solver options every backend's ``solve`` accepts (and must honour or refuse)
OPTIONS = ("rtol", "atol", "dt", "n_steps", "first_step", "max_steps", "safety", "factor_min", "factor_max",
           "dtmin", "dtmax", "t_eval", "batch", "jac", "max_order", "max_order_stiff")
#: options that change a method itself (its order), not the solve: only the methods whose
#: ``MethodInfo.option_ranges`` name one take it, an int in the declared range.
#: ``max_order``: the highest order of a variable-order or multistep method (the reference BDF,
#: scipy LSODA's Adams part (``max_order_ns``), torchdiffeq's Adams methods);
#: ``max_order_stiff``: the highest order of LSODA's stiff (BDF) part (``max_order_s``)
METHOD_OPTIONS = ("max_order", "max_order_stiff")
#: ``jac``: None (the library's default), True (use the problem's analytic Jacobian
#: ``Problem.jac``; only implicit methods use one, and only backends whose
#: ``Capabilities.options["jac"]`` is True can take it), False (do not use it: the library's
#: own approximation, e.g. scipy's finite differences; every backend honours this)


def validate_options(problem: Problem, options: Mapping[str, Any]) -> None:
    """Bad arguments raise here, the same way for every backend, before any library runs
    (a library's own failure later becomes a status, never a bad-argument error)."""
    def number(key: str, positive: bool = True) -> None:
        v = options.get(key)
        if v is None:
            return
        arr = np.asarray(v, dtype=np.float64)
        if not np.all(np.isfinite(arr)) or (positive and np.any(arr <= 0)):
            raise ValueError(f"{key}={v!r}, but it must be finite and > 0")

    for key in ("rtol", "atol", "dt", "first_step", "dtmax", "safety", "factor_max"):
        number(key)
    for key in ("dtmin", "factor_min"):
        number(key, positive=False)
    for key in ("n_steps", "max_steps"):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0):
            raise ValueError(f"{key}={v!r}, but it must be a positive int")
    jac = options.get("jac")
    if jac is not None:
        if not isinstance(jac, (bool, np.bool_)):
            raise ValueError(f"jac={jac!r}, but it must be True (the problem's analytic Jacobian), False or None")
        if jac and getattr(problem, "jac", None) is None:
            raise ValueError(f"jac=True, but problem {problem.name!r} has no analytic Jacobian (Problem.jac is None)")
    t_eval = options.get("t_eval")
    if t_eval is not None:
        ts = np.asarray(t_eval, dtype=np.float64)
        t0, t1 = problem.t_span
        direction = 1.0 if t1 > t0 else -1.0
        if ts.ndim != 1 or ts.size == 0 or not np.all(np.isfinite(ts)):
            raise ValueError(f"t_eval={t_eval!r}, but it must be a non-empty 1-d sequence of finite times")
        if np.any(direction * np.diff(ts) <= 0):
            raise ValueError(f"t_eval={ts.tolist()}, but it must be strictly monotone in the direction of t_span")
        if ts.min() < min(t0, t1) or ts.max() > max(t0, t1):
            raise ValueError(f"t_eval={ts.tolist()} has times outside t_span={problem.t_span}")


def validate_y0(problem: Problem, y0: Any) -> np.ndarray:
    """A batch (or single) initial state for ``problem``: shape (n,) or (B, n), finite."""
    arr = np.asarray(y0, dtype=np.float64)
    if arr.ndim not in (1, 2) or arr.shape[-1] != problem.n:
        raise ValueError(f"y0 has shape {arr.shape}, but it must be ({problem.n},) or (B, {problem.n})")
    if not np.all(np.isfinite(arr)):
        raise ValueError("y0 contains non-finite values (NaN or inf); it must be finite")
    return arr


#: options every backend's ``gradient`` accepts: the forward solve's (above), the adjoint
#: solve's tolerances (None: the forward ones), ``wrt`` ("all" (default), "y0", "params") and
#: ``count_nfev`` (False: skip an exact count that costs a separate compilation, e.g. diffrax's)
GRADIENT_OPTIONS = ("rtol", "atol", "dt", "n_steps", "max_steps", "adjoint_rtol", "adjoint_atol", "wrt",
                    "count_nfev")


def gradient_params(problem: Problem) -> dict[str, np.ndarray]:
    """The parameters a gradient dL/dθ is taken with respect to: the float arrays of
    ``problem.params`` (float64 copies), as in ``odeverify.gradients.value_and_grad``; Python
    scalars, ints, bools and None are constants of the field."""
    return {key: np.array(value, dtype=np.float64) for key, value in problem.params.items()
            if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating)}


def gradient_times(problem: Problem, loss: Loss) -> tuple[np.ndarray, np.ndarray]:
    """The times a gradient's forward solve is asked for (t0, the loss's output times and t1,
    in the direction of integration, without repeats) and the row of each loss time among them:
    every adapter solves over the whole ``t_span``, so work counts compare across libraries."""
    t0, t1 = problem.t_span
    ts = np.unique(np.concatenate([[t0, t1], np.asarray(loss.t_eval, dtype=np.float64)]))
    ts = ts if t1 > t0 else ts[::-1]
    rows = np.array([int(np.nonzero(ts == t)[0][0]) for t in loss.t_eval])
    return ts, rows


def validate_gradient(problem: Problem, mode: str, loss: Any, options: Mapping[str, Any], caps: Capabilities,
                      backend: str) -> None:
    """Bad arguments of :meth:`Backend.gradient` raise here, the same way for every backend."""
    check_mode(mode, caps.gradient_modes, backend, "gradient")
    if not isinstance(loss, Loss):
        raise TypeError(f"loss={loss!r}, but it must be an odeverify.gradients.Loss")
    if loss.n != problem.n:
        raise ValueError(f"loss has weights of shape {loss.weights.shape} (n={loss.n}), but problem {problem.name!r}"
                         f" has state dimension n={problem.n}")
    for key in options:
        if key not in GRADIENT_OPTIONS:
            raise ValueError(f"unknown gradient option {key!r}; expected one of {', '.join(GRADIENT_OPTIONS)}")
    validate_options(problem, {**{k: v for k, v in options.items() if k in OPTIONS}, "t_eval": loss.t_eval})
    for key in ("adjoint_rtol", "adjoint_atol"):
        v = options.get(key)
        if v is not None and not (np.all(np.isfinite(np.asarray(v, dtype=np.float64)))
                                  and np.all(np.asarray(v, dtype=np.float64) > 0)):
            raise ValueError(f"{key}={v!r}, but it must be finite and > 0")
    check_wrt(options.get("wrt"), problem, bool(gradient_params(problem)), "problem", "array")


def check_mode(mode: Any, modes: Sequence[str], backend: str, kind: str) -> None:
    """``mode`` one of ``modes`` (a backend's ``kind`` modes), else a ValueError naming the choices."""
    if mode not in modes:
        import difflib

        if not modes:
            raise ValueError(f"{backend} has no {kind} modes (mode={mode!r})")
        close = difflib.get_close_matches(str(mode), list(modes), n=1)
        raise ValueError(f"mode={mode!r}: {backend} has no such {kind} mode"
                         f"{f'; did you mean {close[0]!r}?' if close else ''} Choices: {', '.join(modes)}")


def check_wrt(wrt: Any, problem: Any, has_params: bool, what: str, kind: str) -> None:
    """``wrt`` of a gradient: None, 'all', 'y0' or 'params' (only with parameters to differentiate)."""
    if wrt not in (None, "all", "y0", "params"):
        raise ValueError(f"wrt={wrt!r}, but it must be 'all' (default), 'y0' or 'params'")
    if wrt == "params" and not has_params:
        raise ValueError(f"wrt='params', but {what} {problem.name!r} has no {kind} parameters to differentiate"
                         f" (params: {sorted(problem.params) or 'none'})")


def failed_gradient(problem: Problem, mode: str, method: str, backend: str, library: str, y0: np.ndarray | None,
                    status: Status, message: str, wrt: str | None = None) -> GradientResult:
    """A failure: NaN gradients of the right shapes (never zeros) and the status."""
    shape = np.shape(y0) if y0 is not None else (problem.n,)
    grad_y0 = None if wrt == "params" else np.full(shape, np.nan)
    params = {} if wrt == "y0" else {k: np.full(v.shape, np.nan) for k, v in gradient_params(problem).items()}
    return GradientResult(mode=mode, method=method, backend=backend, library=library, status=status,
                          loss=float("nan"), grad_y0=grad_y0, grad_params=params, message=message)


def is_implicit(info: MethodInfo) -> bool:
    """Whether a method solves systems with df/dy: declared (``MethodInfo.implicit``), or implied
    by the reference tableau it shares (a tableau with a nonzero diagonal or upper part)."""
    if info.implicit:
        return True
    if info.tableau is None:
        return False
    from ..tableaus import TABLEAUS

    return info.tableau in TABLEAUS.names() and not TABLEAUS.get(info.tableau).explicit


class StiffnessWarning(UserWarning):
    """An explicit method was given a problem tagged ``stiff``."""


#: columns of a finite-difference Jacobian are affordable up to this state dimension
FD_JACOBIAN_MAX_N = 200


def jacobian_matrix(problem: Problem, t: float, y: np.ndarray) -> np.ndarray:
    """df/dy at (t, y) in NumPy float64: the problem's analytic ``jac`` when it has one, else
    forward differences with steps sqrt(eps) * max(1, |y_j|) (n + 1 evaluations)."""
    from .. import _xp

    xp = _xp.get_namespace("numpy")
    y = np.asarray(y, dtype=np.float64)
    if getattr(problem, "jac", None) is not None:
        return np.asarray(problem.jacobian_field(xp, np.float64)(np.float64(t), y), dtype=np.float64)
    f = problem.vector_field(xp, np.float64)
    return fd_jacobian(lambda s, z: f(np.float64(s), z), t, y)


def fd_jacobian(f: Any, t: float, y: np.ndarray) -> np.ndarray:
    """Forward-difference df/dy of a NumPy field ``f(t, y)`` (n + 1 evaluations)."""
    y = np.asarray(y, dtype=np.float64)
    f0 = np.asarray(f(t, y), dtype=np.float64)
    steps = np.sqrt(np.finfo(np.float64).eps) * np.maximum(1.0, np.abs(y))
    cols = [(np.asarray(f(t, y + d * e), dtype=np.float64) - f0) / d for d, e in zip(steps, np.eye(y.size))]
    return np.stack(cols, axis=1)


#: eigenvalues with |Re lambda| below this fraction of the spectral radius count as zero
#: (round-off of the eigensolver, or a conservation law such as ROBER's y1 + y2 + y3)
ZERO_EIGENVALUE = 1e-10


def stiffness_ratio(eigenvalues: np.ndarray) -> float:
    """max |Re lambda| / min |Re lambda| over the eigenvalues with Re lambda < 0, leaving out
    those that are zero up to ZERO_EIGENVALUE * rho (1 when fewer than two decay; Hairer &
    Wanner, Solving ODEs II, Sect. IV.1, on why this ratio alone is only a hint)."""
    eigenvalues = np.asarray(eigenvalues)
    rho = float(np.max(np.abs(eigenvalues), initial=0.0))
    re = np.real(eigenvalues)
    decaying = np.abs(re[re < -ZERO_EIGENVALUE * rho])
    return float(decaying.max() / decaying.min()) if decaying.size >= 2 else 1.0


def warn_explicit_on_stiff(problem: Problem, method: str, backend: str) -> None:
    """Warn (:class:`StiffnessWarning`) that an explicit method was given a problem tagged stiff,
    naming the stiffness estimated at t0 (one Jacobian; skipped above FD_JACOBIAN_MAX_N
    unless the problem has an analytic one). Stiffness may only build up after t0 (ROBER's
    y2 transient): the estimate at t0 is a lower bound."""
    t0, t1 = problem.t_span
    text = ""
    if problem.n <= FD_JACOBIAN_MAX_N or getattr(problem, "jac", None) is not None:
        with np.errstate(all="ignore"):
            eig = np.linalg.eigvals(jacobian_matrix(problem, t0, np.asarray(problem.y0)))
        rho = float(np.max(np.abs(eig)))
        text = (f": at t0 the estimated stiffness ratio is {stiffness_ratio(eig):.3g} and the spectral radius"
                f" of df/dy {rho:.3g} (rho*|t1 - t0| = {rho * abs(t1 - t0):.3g}; an explicit method needs about"
                " that many steps once the fast modes are stiff)")
    warnings.warn(f"problem {problem.name!r} is tagged stiff, but {backend} method {method!r} is explicit{text};"
                  " expect a max_steps or step-size-underflow status, or use an implicit method",
                  StiffnessWarning, stacklevel=3)


class UnsupportedOption(ValueError):
    """A solver option that the backend's library cannot honour."""


@dataclass(frozen=True)
class MethodInfo:
    """One method of a backend, with what the library claims for it."""

    name: str
    order: int
    adaptive: bool
    fixed: bool
    dense: bool = True
    dense_order: int | None = None
    embedded_order: int | None = None
    tableau: str | None = None  #: reference tableau with the same coefficients, if any
    #: k in err_estimate ~ h^k when it is not embedded_order + 1 (DOP853's combined estimate: 8)
    error_order: int | None = None
    notes: str = ""
    #: whether the method solves (non)linear systems with df/dy (only such a method takes ``jac``)
    implicit: bool = False
    #: the METHOD_OPTIONS this method takes, each with its inclusive int range: (name, lo, hi)
    option_ranges: tuple[tuple[str, int, int], ...] = ()

    def __post_init__(self) -> None:
        if not (self.adaptive or self.fixed):
            raise ValueError(f"method {self.name!r}: it must be adaptive, fixed-step, or both")


@dataclass(frozen=True)
class Capabilities:
    methods: Mapping[str, MethodInfo]
    dtypes: tuple[str, ...] = ("float64", "float32")
    devices: tuple[str, ...] = ("cpu",)
    #: option -> True (honoured) or a string saying why it is not
    options: Mapping[str, bool | str] = field(default_factory=dict)
    per_sample: bool = False  #: whether batch members get their own step sizes
    gradient_modes: tuple[str, ...] = ()
    #: the gradient modes that differentiate the computed solution itself (discrete: exact up
    #: to round-off for the steps taken); the others solve a continuous adjoint (error ~ tolerance)
    discrete_gradient_modes: tuple[str, ...] = ()
    notes: str = ""
    #: SDE methods (``Backend.solve_sde``), each with the library's calculus and claimed orders
    sde_methods: Mapping[str, SDEMethod] = field(default_factory=dict)
    #: gradient modes of SDE solves (``Backend.sde_gradient``), and those among them that
    #: differentiate the computed solution itself (discrete: exact to round-off on the path); the
    #: others solve a continuous (stochastic) adjoint backward on the same path (error ~ h^p)
    sde_gradient_modes: tuple[str, ...] = ()
    sde_discrete_gradient_modes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", MappingProxyType(dict(self.methods)))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "sde_methods", MappingProxyType(dict(self.sde_methods)))

    def method(self, name: str, backend: str = "backend") -> MethodInfo:
        try:
            return self.methods[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, list(self.methods), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{backend} has no method {name!r}{hint} Choices: {', '.join(self.methods) or 'none'}"
                             + (f" (its SDE methods: {', '.join(self.sde_methods)}; check --sde)" if self.sde_methods
                                else "")) from None


def classify_exception(exc: BaseException) -> Status:
    """Map a library's exception to a status by its message."""
    text = str(exc).lower()
    if "underflow" in text or "step size" in text and "small" in text:
        return Status.DT_UNDERFLOW
    if "max_steps" in text or "max_num_steps" in text or "maximum number of steps" in text:
        return Status.MAX_STEPS
    if "nan" in text or "inf" in text and "finite" in text:
        return Status.NONFINITE
    return Status.FAILED


def check_method_option(backend: str, caps: Capabilities, method: MethodInfo, key: str, value: Any) -> None:
    """A METHOD_OPTIONS value: refused (``UnsupportedOption``, naming the methods that take it)
    by a method that does not declare it; an int in the declared range, else ``ValueError``."""
    ranges = {name: (lo, hi) for name, lo, hi in method.option_ranges}
    if key not in ranges:
        takers = [m.name for m in caps.methods.values() if any(o[0] == key for o in m.option_ranges)]
        raise UnsupportedOption(f"{backend} method {method.name!r} has no option {key}={value!r}"
                                f" ({'methods that take it: ' + ', '.join(takers) if takers else 'no method does'})")
    lo, hi = ranges[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{key}={value!r}, but {backend} method {method.name!r} takes an int in {lo} .. {hi}")


class Backend(ABC):
    """Base class of every backend; see the module docstring for the contract."""

    name: str = "backend"
    install_hint: str = ""

    def available(self) -> bool:
        try:
            self._import()
        except (ImportError, MissingDependencyError):
            return False
        return True

    def _import(self) -> Any:  # pragma: no cover - overridden where a library is needed
        return None

    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def _solve(self, problem: Problem, method: MethodInfo, y0: np.ndarray | None, options: dict[str, Any],
               dtype: str, device: str) -> Solution: ...

    def check_options(self, method: MethodInfo, options: Mapping[str, Any]) -> None:
        caps = self.capabilities()
        for key, value in options.items():
            if key not in OPTIONS:
                raise ValueError(f"unknown solver option {key!r}; expected one of {', '.join(OPTIONS)}")
            if value is None or (key == "jac" and value is False):
                continue  # jac=False (do not use an analytic Jacobian) is honoured by every method
            if key == "jac" and not is_implicit(method):
                raise UnsupportedOption(f"{self.name} method {method.name!r} is explicit: it uses no Jacobian,"
                                        " so jac=True cannot be honoured")
            default: bool | str = True if key not in METHOD_OPTIONS else "no method of this backend takes it"
            support = caps.options.get(key, default)
            if support is not True:
                raise UnsupportedOption(f"{self.name} cannot honour {key}={value!r}: {support}")
            if key in METHOD_OPTIONS:
                check_method_option(self.name, caps, method, key, value)
        if options.get("batch") not in (None, "shared") and not caps.per_sample:
            raise UnsupportedOption(f"{self.name} has one step size per batch: batch={options['batch']!r} is not"
                                    " possible")
        fixed = options.get("dt") is not None or options.get("n_steps") is not None
        if fixed and not method.fixed:
            raise UnsupportedOption(f"{self.name} method {method.name!r} has no fixed-step mode")
        if not fixed and not method.adaptive:
            raise ValueError(f"{self.name} method {method.name!r} is fixed-step only: pass dt or n_steps")

    def solve(self, problem: Problem, method: str, *, y0: Sequence[float] | np.ndarray | None = None,
              dtype: str = "float64", device: str = "cpu", **options: Any) -> Solution:
        """Solve ``problem`` (optionally from a batch ``y0`` of shape (B, n)) with ``method``.

        Bad arguments raise; a failure inside the library becomes a status on the returned
        Solution (``FAILED``, ``DT_UNDERFLOW``, ``MAX_STEPS``, ``NONFINITE``), and a missing
        library ``UNAVAILABLE`` with the install hint.
        """
        ts = np.asarray(options["t_eval"] if options.get("t_eval") is not None else problem.t_span, dtype=np.float64)
        if not self.available():
            return failed_solution(problem, method, ts, y0, Status.UNAVAILABLE,
                                   f"{self.name} is not installed: {self.install_hint}")
        info = self._resolve(method, dtype, device)
        self.check_options(info, options)
        validate_options(problem, options)
        y0a = None if y0 is None else validate_y0(problem, y0)
        if "stiff" in problem.tags and not is_implicit(info):
            warn_explicit_on_stiff(problem, info.name, self.name)
        return _timed(lambda: self._solve(problem, info, y0a, dict(options), dtype, device), problem, method, ts, y0a)

    def _resolve(self, method: str, dtype: str, device: str) -> MethodInfo:
        """The method's info; an unknown method, dtype or device raises, naming the choices."""
        caps = self.capabilities()
        info = caps.method(method, self.name)
        self._check_dtype_device(caps, dtype, device)
        return info

    def _check_dtype_device(self, caps: Capabilities, dtype: str, device: str) -> None:
        if dtype not in caps.dtypes:
            raise ValueError(f"{self.name} supports dtypes {caps.dtypes}, not dtype={dtype!r}")
        if device not in caps.devices:
            raise ValueError(f"{self.name} supports devices {caps.devices}, not device={device!r}")

    def _solve_sde(self, problem: SDEProblem, method: SDEMethod, bm: Any, y0: np.ndarray, options: dict[str, Any],
                   dtype: str, device: str) -> Solution:
        raise NotImplementedError(f"{self.name} solves no SDEs")

    def solve_sde(self, problem: SDEProblem, method: str, *, bm: Any = None, paths: int | None = None, seed: int = 0,
                  y0: Sequence[float] | np.ndarray | None = None, dtype: str = "float64", device: str = "cpu",
                  **options: Any) -> Solution:
        """Solve the SDE ``problem`` with ``method`` (one of ``Capabilities.sde_methods``) on the
        Brownian path ``bm`` (default: a :class:`~odeverify.brownian.BrownianTree` of ``paths``
        paths from ``seed``), from ``y0`` (default: the problem's, repeated for every path).

        Options: :data:`SDE_OPTIONS` (``n_steps`` or ``dt`` is required; output times must be
        step boundaries). Bad arguments raise; a library's failure becomes a status. An adapter
        drives the library with ``bm`` itself where the library takes a user path, so every
        library is compared pathwise on the same noise; where it cannot, it returns the
        values of its own path at the output times in ``Solution.brownian``.
        """
        ts = np.asarray(options["t_eval"] if options.get("t_eval") is not None else problem.t_span, dtype=np.float64)
        if not self.available():
            return failed_solution(problem, method, ts, y0, Status.UNAVAILABLE,
                                   f"{self.name} is not installed: {self.install_hint}")
        info = self._sde_method(method, dtype, device)
        validate_sde(problem, info, options, self.name)
        problem = in_method_calculus(problem, info)
        y0a, path = sde_inputs(problem, bm, paths, seed, y0)
        return _timed(lambda: self._solve_sde(problem, info, path, y0a, dict(options), dtype, device), problem, method,
                      ts, y0a)

    def _sde_method(self, method: str, dtype: str, device: str) -> SDEMethod:
        """The SDE method's info; an unknown method, dtype or device raises, naming the choices."""
        caps = self.capabilities()
        if method not in caps.sde_methods:
            import difflib

            close = difflib.get_close_matches(str(method), list(caps.sde_methods), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{self.name} has no SDE method {method!r}{hint} Choices:"
                             f" {', '.join(caps.sde_methods) or 'none'}")
        self._check_dtype_device(caps, dtype, device)
        return caps.sde_methods[method]

    def _sde_gradient(self, problem: SDEProblem, method: SDEMethod, mode: str, loss: Loss, bm: Any, y0: np.ndarray,
                      n_steps: int, options: dict[str, Any], dtype: str, device: str) -> GradientResult:
        raise NotImplementedError(f"{self.name} computes no SDE gradients")

    def sde_gradient(self, problem: SDEProblem, method: str, mode: str, loss: Loss, *, bm: Any = None,
                     paths: int | None = None, seed: int = 0, y0: Sequence[float] | np.ndarray | None = None,
                     n_steps: int, dtype: str = "float64", device: str = "cpu", **options: Any) -> GradientResult:
        """The pathwise gradient dL/dy0, dL/dθ of ``loss`` (a :class:`~odeverify.gradients.Loss`,
        summed over the paths) of the SDE solve of ``problem`` with ``method`` on the Brownian
        path ``bm`` (default: ``paths`` paths from ``seed``, as :meth:`solve_sde`), by gradient
        ``mode`` (one of ``Capabilities.sde_gradient_modes``), at ``n_steps`` fixed steps; θ is
        :func:`sde_gradient_params` (float scalars included). Every loss time must be a step
        boundary.

        ``grad_y0`` has the shape ``(M, n)`` of the batch of initial states (a y0 of shape
        ``(n,)`` is repeated for every path, and each path's row is differentiated). Options:
        :data:`SDE_GRADIENT_OPTIONS`. Bad arguments raise (an unknown mode or method, a loss of
        another dimension or off the grid, a problem in the other calculus); a method the
        library cannot differentiate in this mode raises ``UnsupportedOption``; a failure inside
        the library becomes a status with NaN gradients, and a non-finite gradient of a
        successful solve is ``NONFINITE``.
        """
        wrt = options.get("wrt")
        if not self.available():
            return failed_sde_gradient(problem, mode, method, self.name, None, Status.UNAVAILABLE,
                                       f"{self.name} is not installed: {self.install_hint}", wrt)
        info = self._sde_method(method, dtype, device)
        validate_sde_gradient(problem, info, mode, loss, n_steps, options, self.capabilities(), self.name)
        problem = in_method_calculus(problem, info)
        y0a, path = sde_inputs(problem, bm, paths, seed, y0)
        try:
            res = self._sde_gradient(problem, info, mode, loss, path, y0a, int(n_steps), dict(options), dtype, device)
        except UnsupportedOption:
            raise
        except Exception as exc:  # noqa: BLE001 - a library's failure becomes a status
            return failed_sde_gradient(problem, mode, method, self.name, y0a, classify_exception(exc),
                                       f"{type(exc).__name__}: {exc}"[:500], wrt)
        if res.status.ok and not np.all(np.isfinite(res.flat())):
            res.status = Status.NONFINITE
            res.message = ("non-finite gradient from a finite solve: the drift or diffusion is not differentiable"
                           " along the path (or its derivative overflows)")
        return res

    def _gradient(self, problem: Problem, method: MethodInfo, mode: str, loss: Loss, y0: np.ndarray | None,
                  options: dict[str, Any], dtype: str, device: str) -> GradientResult:
        raise NotImplementedError(f"{self.name} computes no gradients")

    def gradient(self, problem: Problem, method: str, mode: str, loss: Loss, *,
                 y0: Sequence[float] | np.ndarray | None = None, dtype: str = "float64", device: str = "cpu",
                 **options: Any) -> GradientResult:
        """dL/dy0 and dL/dθ of ``loss`` (a :class:`~odeverify.gradients.Loss`) with gradient
        ``mode`` (one of ``Capabilities.gradient_modes``), θ being :func:`gradient_params`.

        Options: :data:`GRADIENT_OPTIONS`. Bad arguments raise (an unknown mode, a loss of
        another dimension, a y0 of the wrong shape, wrt='params' on a problem without float
        parameters); a failure inside the library becomes a status with NaN gradients, and a
        non-finite gradient of a successful solve is ``NONFINITE`` (never silent zeros).
        """
        if not self.available():
            return failed_gradient(problem, mode, method, self.name, "-", None, Status.UNAVAILABLE,
                                   f"{self.name} is not installed: {self.install_hint}", options.get("wrt"))
        info = self._resolve(method, dtype, device)
        validate_gradient(problem, mode, loss, options, self.capabilities(), self.name)
        self.check_options(info, {k: v for k, v in options.items() if k in OPTIONS})
        y0a = None if y0 is None else validate_y0(problem, y0)
        try:
            res = self._gradient(problem, info, mode, loss, y0a, dict(options), dtype, device)
        except UnsupportedOption:
            raise
        except Exception as exc:  # noqa: BLE001 - a library's failure becomes a status
            return failed_gradient(problem, mode, method, self.name, "-", y0a, classify_exception(exc),
                                   f"{type(exc).__name__}: {exc}"[:500], options.get("wrt"))
        if res.status.ok and not np.all(np.isfinite(res.flat())):
            res.status = Status.NONFINITE
            res.message = ("non-finite gradient from a finite solve: the vector field is not differentiable"
                           " along the trajectory (or its derivative overflows)")
        return res

    # --- events (issue 12): the library side lives in backends/<library>_events.py; a backend
    # that locates events returns that module here (one line in its class), and the driver in
    # backends/_event_driver.py restarts it after each terminal event, applying the jump
    def _event_adapter(self) -> Any:
        """The module of this backend's event adapter (``segment``, ``METHODS``, ``GRADIENT_MODES``),
        or None: the backend locates no events."""
        return None

    def solve_event(self, event_problem: Any, method: str, **options: Any) -> Any:
        """Solve an event problem (``odeverify.problems.events``) with ``method``: every event
        (time, state before the jump, which function, crossing direction) located by the
        library, restarted after each terminal event with the jump applied, up to the end of the
        span; an :class:`~odeverify.backends._event_driver.EventSolution`. Options:
        ``_event_driver.EVENT_OPTIONS``. Bad arguments raise; a library's failure is a status."""
        from ._event_driver import solve_event

        return solve_event(self, event_problem, method, options)

    def event_gradient(self, event_problem: Any, method: str, mode: str, **options: Any) -> Any:
        """The gradient of the first terminal event's time t* (and of y(t*)) with respect to the
        parameters and y0, by the library's gradient ``mode`` through its event location; an
        ``_event_driver.EventGradient`` (NaN with a status on failure)."""
        from ._event_driver import event_gradient

        return event_gradient(self, event_problem, method, mode, options)

    # --- CDEs (issue 12): a backend that solves controlled differential equations returns its
    # adapter module here (``capabilities``, ``solve``, ``gradient``); backends/_cde_driver.py
    # validates every call the same way for every backend before the library runs
    def _cde_adapter(self) -> Any:
        """The module of this backend's CDE adapter, or None: the backend solves no CDEs."""
        return None

    def solve_cde(self, cde_problem: Any, method: str, *, interpolation: str | None = None, dtype: str = "float64",
                  device: str = "cpu", **options: Any) -> Solution:
        """Solve ``dz = f(z) dX`` (a :class:`~odeverify.problems.cde.CDEProblem`) with ``method`` (one
        of ``_cde_driver.cde_capabilities(backend).methods``), ``X`` the ``interpolation`` (default
        the problem's) of the problem's data. Options: ``_cde_driver.CDE_OPTIONS`` (``knots``: how
        steps meet the knots, default ``"jump"``). Bad arguments raise; a library's failure is a
        status; a missing library ``UNAVAILABLE``."""
        from ._cde_driver import solve_cde

        return solve_cde(self, cde_problem, method, interpolation, options, dtype, device)

    def cde_gradient(self, cde_problem: Any, method: str, mode: str, loss: Loss, *, interpolation: str | None = None,
                     dtype: str = "float64", device: str = "cpu", **options: Any) -> GradientResult:
        """dL/dz0 and dL/dtheta (theta: the data ``values`` and the field's parameters,
        ``_cde_driver.cde_gradient_params``) of ``loss`` on a CDE solve, by the library's gradient
        ``mode``. Options: ``_cde_driver.CDE_GRADIENT_OPTIONS`` (``wrt``: all, y0, params, data).
        A failure gives NaN gradients with the status, never zeros."""
        from ._cde_driver import cde_gradient

        return cde_gradient(self, cde_problem, method, mode, loss, interpolation, options, dtype, device)


#: options every backend's ``solve_sde`` accepts
SDE_OPTIONS = ("n_steps", "dt", "t_eval")


def sde_brownian(problem: SDEProblem, bm: Any, paths: int | None, seed: int, y0: np.ndarray | None) -> Any:
    """The Brownian path of an SDE solve: ``bm`` checked against the problem, or a fresh
    :class:`~odeverify.brownian.BrownianTree` of ``paths`` paths (the rows of ``y0``)."""
    from ..brownian import BrownianTree

    rows = None if y0 is None or np.ndim(y0) == 1 else int(np.shape(y0)[0])
    if bm is None:
        count = paths if paths is not None else rows
        return BrownianTree(*problem.t_span, problem.brownian_shape(count), seed=seed)
    want = problem.brownian_shape(rows if rows is not None else (bm.shape[0] if len(bm.shape) == 2 else None))
    if tuple(bm.shape) != want:
        raise ValueError(f"bm has shape {tuple(bm.shape)}, but problem {problem.name!r} with noise_dim"
                         f" {problem.noise_dim} and y0 rows {rows} needs {want}")
    if bm.t0 > problem.t_span[0] or bm.t1 < problem.t_span[1]:
        raise ValueError(f"bm covers [{bm.t0}, {bm.t1}], but problem {problem.name!r} spans {problem.t_span}")
    return bm


def sde_inputs(problem: SDEProblem, bm: Any, paths: int | None, seed: int, y0: Any) -> tuple[np.ndarray, Any]:
    """The batch of initial states ``(M, n)`` (``y0`` of shape ``(n,)`` repeated for ``paths``
    paths; default the problem's) and the Brownian path (:func:`sde_brownian`) of an SDE solve."""
    if paths is not None and (isinstance(paths, bool) or not isinstance(paths, (int, np.integer)) or paths < 1):
        raise ValueError(f"paths={paths!r}, but it must be a positive int")
    if y0 is not None:
        y0a = np.asarray(y0, dtype=np.float64)
        if y0a.ndim not in (1, 2) or y0a.shape[-1] != problem.n or not np.all(np.isfinite(y0a)):
            raise ValueError(f"y0 has shape {y0a.shape}, but it must be finite of shape ({problem.n},) or"
                             f" (M, {problem.n})")
        if y0a.ndim == 1:
            y0a = np.broadcast_to(y0a, (paths or 1, problem.n)).copy()
    else:
        count = paths if paths is not None else (bm.shape[0] if bm is not None and len(bm.shape) == 2 else 1)
        y0a = problem.y0_batch(count)
    return y0a, sde_brownian(problem, bm, paths if paths is not None else y0a.shape[0], seed, y0a)


#: options every backend's ``sde_gradient`` accepts: ``wrt`` ("all" (default), "y0", "params")
#: and ``adjoint_method`` (the backward solve's method of a continuous-adjoint mode, in the
#: library's own names; a backend refuses a value it does not know)
SDE_GRADIENT_OPTIONS = ("wrt", "adjoint_method")


def sde_gradient_params(problem: SDEProblem) -> dict[str, np.ndarray]:
    """The parameters an SDE gradient dL/dθ is taken with respect to: every float entry of
    ``problem.params``, float arrays *and* Python float scalars (as 0-d float64 arrays), as in
    ``odeverify.gradients.sde_value_and_grad`` (SDE problems keep their coefficients as
    scalars); ints, bools and other values are constants."""
    out = {}
    for key, value in problem.params.items():
        if isinstance(value, (bool, np.bool_)):
            continue
        if isinstance(value, (float, np.floating)) or (isinstance(value, np.ndarray)
                                                      and np.issubdtype(value.dtype, np.floating)):
            out[key] = np.array(value, dtype=np.float64)
    return out


def validate_sde_gradient(problem: SDEProblem, info: SDEMethod, mode: str, loss: Any, n_steps: Any,
                          options: Mapping[str, Any], caps: Capabilities, backend: str) -> None:
    """Bad arguments of :meth:`Backend.sde_gradient` raise here, the same way for every backend."""
    check_mode(mode, caps.sde_gradient_modes, backend, "SDE gradient")
    if not isinstance(problem, SDEProblem):
        raise TypeError(f"problem={problem!r}, but sde_gradient takes an SDEProblem (odeverify.problems.sde)")
    if not isinstance(loss, Loss):
        raise TypeError(f"loss={loss!r}, but it must be an odeverify.gradients.Loss")
    if loss.n != problem.n:
        raise ValueError(f"loss has weights of shape {loss.weights.shape} (n={loss.n}), but SDE problem"
                         f" {problem.name!r} has state dimension n={problem.n}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps={n_steps!r}, but it must be a positive int (SDE gradients take fixed steps)")
    for key in options:
        if key not in SDE_GRADIENT_OPTIONS:
            raise ValueError(f"unknown SDE gradient option {key!r}; expected one of {', '.join(SDE_GRADIENT_OPTIONS)}")
    check_wrt(options.get("wrt"), problem, bool(sde_gradient_params(problem)), "SDE problem", "float")
    validate_sde(problem, info, {"n_steps": n_steps, "t_eval": loss.t_eval}, backend)


def failed_sde_gradient(problem: SDEProblem, mode: str, method: str, backend: str, y0: np.ndarray | None,
                        status: Status, message: str, wrt: str | None = None) -> GradientResult:
    """A failed SDE gradient: NaN gradients of the right shapes (never zeros) and the status."""
    shape = np.shape(y0) if y0 is not None else (1, problem.n)
    grad_y0 = None if wrt == "params" else np.full(shape, np.nan)
    params = {} if wrt == "y0" else {k: np.full(v.shape, np.nan) for k, v in sde_gradient_params(problem).items()}
    return GradientResult(mode=mode, method=method, backend=backend, library="-", status=status, loss=float("nan"),
                          grad_y0=grad_y0, grad_params=params, message=message)


def in_method_calculus(problem: SDEProblem, info: SDEMethod) -> SDEProblem:
    """An additive-noise problem relabelled in the method's calculus (the same equation: the
    correction vanishes), so adapters hand their library one consistent SDE type; any other
    problem as it is (:func:`validate_sde` refused a mismatch)."""
    if problem.calculus == info.calculus or problem.noise_class != "additive":
        return problem
    import dataclasses

    return dataclasses.replace(problem, calculus=info.calculus)


def validate_sde(problem: SDEProblem, info: SDEMethod, options: Mapping[str, Any], backend: str) -> None:
    """Bad arguments of :meth:`Backend.solve_sde` raise here, the same way for every backend."""
    if not isinstance(problem, SDEProblem):
        raise TypeError(f"problem={problem!r}, but solve_sde takes an SDEProblem (odeverify.problems.sde)")
    for key in options:
        if key not in SDE_OPTIONS:
            raise ValueError(f"unknown SDE solve option {key!r}; expected one of {', '.join(SDE_OPTIONS)}")
    if options.get("n_steps") is None and options.get("dt") is None:
        raise ValueError(f"{backend} SDE method {info.name!r} needs a fixed step: pass n_steps=... or dt=...")
    validate_options(problem, {k: v for k, v in options.items() if k in ("n_steps", "dt", "t_eval")})
    if options.get("t_eval") is not None:
        from ..integrate import fixed_grid, snap_to_grid

        t0, t1 = problem.t_span
        snap_to_grid(fixed_grid(t0, t1, options.get("dt"), options.get("n_steps")), options["t_eval"])
    # additive noise: the Itô and Stratonovich solutions coincide (the correction vanishes)
    if info.calculus != problem.calculus and problem.noise_class != "additive":
        raise ValueError(f"{backend} SDE method {info.name!r} converges to the {info.calculus} solution, but problem"
                         f" {problem.name!r} is written in the {problem.calculus} sense (convert it with"
                         f" problem.as_calculus({info.calculus!r}))")
    if not info.valid_for(problem.noise_class):
        raise ValueError(f"{backend} SDE method {info.name!r} is not valid for {problem.noise_class} noise"
                         f" (problem {problem.name!r}, noise={problem.noise!r}); valid for: {', '.join(info.strong)}")


def _timed(run: Any, problem: Any, method: str, ts: np.ndarray, y0: np.ndarray | None) -> Solution:
    """``run()``'s Solution with its wall time (and a compile time, 0 unless the adapter set
    one); a library's exception becomes a failed Solution with its status, an
    ``UnsupportedOption`` is raised as the bad argument it is."""
    start = time.perf_counter()
    try:
        sol = run()
    except UnsupportedOption:
        raise
    except Exception as exc:  # noqa: BLE001 - a library's failure becomes a status
        return failed_solution(problem, method, ts, y0, classify_exception(exc), f"{type(exc).__name__}: {exc}",
                               wall=time.perf_counter() - start)
    sol.timing.setdefault("wall_s", time.perf_counter() - start)
    sol.timing.setdefault("compile_s", 0.0)
    return sol


def failed_solution(problem: Problem, method: str, ts: np.ndarray, y0: np.ndarray | None, status: Status,
                    message: str, wall: float = 0.0) -> Solution:
    shape = (len(ts),) + (np.shape(y0) if y0 is not None else (problem.n,))
    return Solution(ts=ts, ys=np.full(shape, np.nan), status=status, stats=Stats(), method=method,
                    message=message, timing={"wall_s": wall, "compile_s": 0.0})
