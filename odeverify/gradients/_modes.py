"""The registry of gradient modes: each mode is data (name, libraries, exact-discrete or
continuous, one-line description with its citation) plus the function that runs it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._registry import Registry


@dataclass(frozen=True)
class GradientMode:
    """One way to differentiate an ODE solve.

    ``exact_discrete``: True when the result is the derivative of the computed (discrete)
    solution, so it agrees with other exact-discrete modes on the same steps to round-off;
    False for continuous adjoints, which converge to the exact gradient as the tolerance
    tightens. ``fixed_step``: the mode needs ``dt`` or ``n_steps``.
    """

    name: str
    run: Callable[..., Any]
    libraries: tuple[str, ...]
    exact_discrete: bool
    description: str
    citation: str
    fixed_step: bool = False
    options: tuple[str, ...] = ()  #: the keyword options of value_and_grad this mode uses

    def __repr__(self) -> str:
        kind = "exact-discrete" if self.exact_discrete else "continuous"
        return f"GradientMode({self.name!r}, {kind}, libraries={self.libraries})"


GRADIENT_MODES: Registry[GradientMode] = Registry("gradient mode")


def register(mode: GradientMode) -> GradientMode:
    return GRADIENT_MODES.register(mode.name, mode)
