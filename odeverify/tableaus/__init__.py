"""Runge--Kutta tableaus as exact data, and the theory that proves their orders.

``TABLEAUS`` is the registry (lower-case names) that tests, solvers, suites and the report
parametrize over; importing this package fills it with the shipped explicit methods
(:mod:`.explicit`) and then the implicit ones (:mod:`.implicit`: DIRK/SDIRK/ESDIRK, Radau IIA).

>>> from odeverify.tableaus import get, theory
>>> theory.verify_tableau(get("rk4")).main.proven
4
"""
from __future__ import annotations

from .._registry import Registry
from ._tableau import (
    ButcherTableau,
    DenseOutput,
    FloatView,
    coefficient_tolerance,
    hairer_dense_output,
    parse_coefficient,
)

#: every shipped tableau by lower-case name
TABLEAUS: Registry[ButcherTableau] = Registry("tableau")

from . import theory  # noqa: E402
from . import explicit  # noqa: E402,F401  (fills TABLEAUS)
from . import implicit  # noqa: E402,F401  (fills TABLEAUS, after the explicit methods)
from .theory import OrderConditionError, verify_tableau  # noqa: E402


def get(name: str) -> ButcherTableau:
    """The registered tableau called ``name`` (case-insensitive); an unknown name raises
    ``ValueError`` listing the choices and the closest match."""
    return TABLEAUS.get(name)


__all__ = [
    "TABLEAUS",
    "ButcherTableau",
    "DenseOutput",
    "FloatView",
    "OrderConditionError",
    "coefficient_tolerance",
    "get",
    "hairer_dense_output",
    "parse_coefficient",
    "theory",
    "verify_tableau",
]
