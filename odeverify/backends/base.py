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
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from .._xp import MissingDependencyError
from ..problems import Problem
from ..solution import Solution, Stats, Status

#: solver options every backend's ``solve`` accepts (and must honour or refuse)
OPTIONS = ("rtol", "atol", "dt", "n_steps", "first_step", "max_steps", "safety", "factor_min", "factor_max",
           "dtmin", "dtmax", "t_eval", "batch")


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
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", MappingProxyType(dict(self.methods)))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def method(self, name: str, backend: str = "backend") -> MethodInfo:
        try:
            return self.methods[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, list(self.methods), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{backend} has no method {name!r}{hint} Choices: {', '.join(self.methods)}") from None


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
            if value is None:
                continue
            support = caps.options.get(key, True)
            if support is not True:
                raise UnsupportedOption(f"{self.name} cannot honour {key}={value!r}: {support}")
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
        caps = self.capabilities()
        info = caps.method(method, self.name)
        if dtype not in caps.dtypes:
            raise ValueError(f"{self.name} supports dtypes {caps.dtypes}, not dtype={dtype!r}")
        if device not in caps.devices:
            raise ValueError(f"{self.name} supports devices {caps.devices}, not device={device!r}")
        self.check_options(info, options)
        validate_options(problem, options)
        y0a = None if y0 is None else validate_y0(problem, y0)
        start = time.perf_counter()
        try:
            sol = self._solve(problem, info, y0a, dict(options), dtype, device)
        except UnsupportedOption:
            raise
        except Exception as exc:  # noqa: BLE001 - a library's failure becomes a status
            status = classify_exception(exc)
            return failed_solution(problem, method, ts, y0a, status, f"{type(exc).__name__}: {exc}",
                                   wall=time.perf_counter() - start)
        sol.timing.setdefault("wall_s", time.perf_counter() - start)
        sol.timing.setdefault("compile_s", 0.0)
        return sol


def failed_solution(problem: Problem, method: str, ts: np.ndarray, y0: np.ndarray | None, status: Status,
                    message: str, wall: float = 0.0) -> Solution:
    shape = (len(ts),) + (np.shape(y0) if y0 is not None else (problem.n,))
    return Solution(ts=ts, ys=np.full(shape, np.nan), status=status, stats=Stats(), method=method,
                    message=message, timing={"wall_s": wall, "compile_s": 0.0})
