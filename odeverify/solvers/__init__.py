"""Step functions (L2), one registry ``SOLVERS``: every explicit tableau becomes an ``ExplicitRK``,
every implicit one a ``DIRK`` (lower-triangular A) or a ``RadauIIA`` (fully implicit collocation)."""
from __future__ import annotations

from typing import Union

from .._registry import Registry
from ..tableaus import TABLEAUS
from .bdf import BDF, BDFController
from .base import StepResult, TimeContext
from .implicit import DIRK, PredictiveController, RadauIIA, implicit_solver
from .rk import ExplicitRK

SOLVERS: Registry[Union[ExplicitRK, DIRK, RadauIIA]] = Registry("solver")

for _name, _tab in TABLEAUS.items():
    SOLVERS.register(_name, ExplicitRK(_tab) if _tab.explicit else implicit_solver(_tab))
#: variable-order NDF/BDF (orders 1-5, Shampine & Reichelt 1997), as scipy's BDF
SOLVERS.register("bdf", BDF())

__all__ = ["SOLVERS", "BDF", "BDFController", "DIRK", "ExplicitRK", "PredictiveController", "RadauIIA", "StepResult", "TimeContext"]
