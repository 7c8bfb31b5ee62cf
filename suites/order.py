"""Convergence-order deficit of every fixed-step method (deterministic, lower is better).

``track_order_deficit`` = claimed order minus the least-squares slope of
``odeverify.properties.convergence_order``, clipped at 0. Parameters: ``case``
(``backend:method``; the NumPy reference's methods, every fixed-step method of every
installed backend in the large grid) and ``problems``: ``curated`` is the best of
warped_fast and warped_oscillatory (nonlinear, time-dependent, closed form; every method's
order is confirmed on at least one of them), the large grid adds each alone. A sweep with no
asymptotic window counts as the whole order missing. A wrong tableau coefficient turns a 0
into a positive deficit, which ``asv continuous`` reports as a regression.
"""
from __future__ import annotations

from ._common import order_deficit
from ._grid import load


class TrackOrder:
    params = (load()["order"], load()["order_problems"])
    param_names = ("case", "problems")
    timeout = 600

    def track_order_deficit(self, case: str, problems: str) -> float:
        return order_deficit(case, problems)

    track_order_deficit.unit = "order"
