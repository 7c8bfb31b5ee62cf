"""Step functions (L2), one registry ``SOLVERS``: every explicit tableau becomes an ``ExplicitRK``."""
from __future__ import annotations

from .._registry import Registry
from ..tableaus import TABLEAUS
from .base import StepResult, TimeContext
from .rk import ExplicitRK

SOLVERS: Registry[ExplicitRK] = Registry("solver")

for _name, _tab in TABLEAUS.items():
    if _tab.explicit:
        SOLVERS.register(_name, ExplicitRK(_tab))

__all__ = ["SOLVERS", "ExplicitRK", "StepResult", "TimeContext"]
