"""odeverify: numerical-analysis verification and benchmark suite for Neural ODE solvers.

The public namespace is flat; the modules behind it are private by layer (see
``docs/architecture.md``).
"""
from __future__ import annotations

__version__ = "0.1.0"

from ._xp import MissingDependencyError
from .control import I_controller, PIController
from .integrate import solve
from .problems import PROBLEMS, Problem, Reference
from .records import Record
from .solution import Solution, Stats, Status
from .solvers import SOLVERS, ExplicitRK
from .tableaus import TABLEAUS, ButcherTableau

__all__ = [
    "__version__",
    "solve",
    "Solution",
    "Stats",
    "Status",
    "PIController",
    "I_controller",
    "SOLVERS",
    "ExplicitRK",
    "TABLEAUS",
    "ButcherTableau",
    "PROBLEMS",
    "Problem",
    "Reference",
    "Record",
    "MissingDependencyError",
]
