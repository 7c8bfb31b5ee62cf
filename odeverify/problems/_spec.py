"""Frozen problem specifications.

A problem is data: a right-hand side written once against the Array API, an initial value,
a time span, parameters, and what is known about its solution (a closed form, a published
reference value, or a cached high-precision solve with its method and tolerance recorded).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

#: tags a problem may carry (anything else is a construction error)
KNOWN_TAGS = frozenset(
    {
        "nonstiff",
        "stiff",
        "linear",
        "nonlinear",
        "autonomous",
        "time_dependent",
        "hamiltonian",
        "chaotic",
        "dissipative",
        "oscillatory",
        "periodic",
        "neural",
        "has_exact",
        "has_reference",
        "detest",
        "scalar",
    }
)


def convert_params(params: Mapping[str, Any], xp: Any, dtype: Any = None, device: Any = None) -> dict[str, Any]:
    """A problem's parameters for ``xp``: NumPy arrays as ``xp`` arrays (of ``dtype`` on
    ``device`` when given), anything else as it is."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, np.ndarray):
            kwargs: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
            if device is not None:
                kwargs["device"] = device
            out[key] = xp.asarray(value, **kwargs)
        else:
            out[key] = value
    return out


def bind_field(name: str, fun: Callable[..., Any], xp: Any, params: Mapping[str, Any]) -> Callable[[Any, Any], Any]:
    """``fun(xp, t, y, params)`` as a field ``f(t, y)`` named ``name``."""
    def bound(t: Any, y: Any) -> Any:
        return fun(xp, t, y, params)

    bound.__name__ = name
    return bound


@dataclass(frozen=True)
class Reference:
    """A reference solution value ``y`` at time ``t``.

    ``kind`` is ``"published"`` (a value printed in the literature: ``source`` cites it and
    ``digits`` says how many significant digits were printed) or ``"computed"`` (a cached
    high-precision solve: ``source`` names the solver, method and tolerances).
    """

    t: float
    y: tuple[float, ...]
    kind: str
    source: str
    digits: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("published", "computed"):
            raise ValueError(f"Reference kind={self.kind!r}; expected 'published' or 'computed'")


@dataclass(frozen=True)
class Problem:
    """An initial-value problem y' = f(t, y), y(t0) = y0, as frozen data.

    ``rhs(xp, t, y, p)`` is written against the Array API namespace ``xp``: ``y`` has shape
    ``(..., n)`` (leading batch axes allowed), ``t`` is an array broadcastable like one
    component ``y[..., i]`` (0-d for a shared time, shape ``y.shape[:-1]`` for per-sample
    times), ``p`` maps parameter names to values already converted by
    :meth:`vector_field` (arrays in ``xp`` with ``y``'s dtype, or Python scalars). It
    returns an array of ``y``'s shape and dtype.

    ``exact(t)`` (NumPy, float64) maps a 1-d array of times to an array of shape
    ``(len(t), n)``, or is None. ``references`` are values at given times.

    ``spec`` is the one-line JSON a generated problem is rebuilt from (empty otherwise).

    ``jac(xp, t, y, p)`` is the analytic Jacobian df/dy, or None: written against the Array
    API like ``rhs`` (same arguments and broadcasting), it returns an array of shape
    ``(..., n, n)`` with ``J[..., i, j] = d f_i / d y_j`` and ``y``'s dtype. Implicit
    solvers use it instead of a finite-difference or autodiff Jacobian;
    :meth:`jacobian_field` binds the parameters the way :meth:`vector_field` does.
    """

    name: str
    rhs: Callable[..., Any]
    y0: tuple[float, ...]
    t_span: tuple[float, float]
    params: Mapping[str, Any] = field(default_factory=dict)
    exact: Callable[[np.ndarray], np.ndarray] | None = None
    references: tuple[Reference, ...] = ()
    tags: frozenset[str] = frozenset()
    citation: str = ""
    description: str = ""
    invariants: Mapping[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    jac: Callable[..., Any] | None = None
    #: for a generated problem, the one-line JSON spec that rebuilds it exactly
    #: (:func:`odeverify.problems.specs.from_spec`); empty for library problems
    spec: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "y0", tuple(float(v) for v in self.y0))
        object.__setattr__(self, "t_span", (float(self.t_span[0]), float(self.t_span[1])))
        object.__setattr__(self, "tags", frozenset(self.tags))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "invariants", MappingProxyType(dict(self.invariants)))
        unknown = self.tags - KNOWN_TAGS
        if unknown:
            raise ValueError(
                f"problem {self.name!r}: unknown tags {sorted(unknown)}; known: {sorted(KNOWN_TAGS)}"
            )
        if not np.all(np.isfinite(self.y0)):
            raise ValueError(f"problem {self.name!r}: y0={self.y0} must be finite")
        if self.jac is not None and not callable(self.jac):
            raise ValueError(f"problem {self.name!r}: jac={self.jac!r} must be callable or None")
        if self.t_span[0] == self.t_span[1]:
            raise ValueError(f"problem {self.name!r}: t_span={self.t_span} has zero length")
        for ref in self.references:
            if len(ref.y) != self.n:
                raise ValueError(
                    f"problem {self.name!r}: reference at t={ref.t} has {len(ref.y)} components,"
                    f" but the state has {self.n}"
                )

    @property
    def n(self) -> int:
        """State dimension."""
        return len(self.y0)

    @property
    def has_exact(self) -> bool:
        return self.exact is not None

    def solution_at(self, t: float) -> np.ndarray | None:
        """The best known solution at ``t``: the closed form, else a reference at that time."""
        if self.exact is not None:
            return np.asarray(self.exact(np.asarray([t], dtype=np.float64))[0], dtype=np.float64)
        for ref in self.references:
            if ref.t == t:
                return np.asarray(ref.y, dtype=np.float64)
        return None

    def final_reference(self) -> np.ndarray | None:
        """The solution at ``t_span[1]`` (closed form or reference), or None."""
        return self.solution_at(self.t_span[1])

    def converted_params(self, xp: Any, dtype: Any = None, device: Any = None) -> dict[str, Any]:
        """Parameters as ``xp`` arrays (NumPy arrays) or Python floats (scalars)."""
        return convert_params(self.params, xp, dtype, device)

    def _bind(self, fun: Callable[..., Any], suffix: str, xp: Any, dtype: Any, device: Any) -> Callable[[Any, Any], Any]:
        return bind_field(f"{self.name}_{suffix}", fun, xp, self.converted_params(xp, dtype, device))

    def vector_field(self, xp: Any, dtype: Any = None, device: Any = None) -> Callable[[Any, Any], Any]:
        """``f(t, y)`` for the integrator, with parameters converted once for ``xp``."""
        return self._bind(self.rhs, "rhs", xp, dtype, device)

    def jacobian_field(self, xp: Any, dtype: Any = None, device: Any = None) -> Callable[[Any, Any], Any] | None:
        """``J(t, y)`` (shape ``(..., n, n)``) from the analytic ``jac``, parameters converted
        once for ``xp``; None when the problem has no analytic Jacobian."""
        return None if self.jac is None else self._bind(self.jac, "jac", xp, dtype, device)

    def y0_array(self, xp: Any, dtype: Any = None, device: Any = None) -> Any:
        kwargs: dict[str, Any] = {"dtype": dtype if dtype is not None else xp.float64}
        if device is not None:
            kwargs["device"] = device
        return xp.asarray(self.y0, **kwargs)
