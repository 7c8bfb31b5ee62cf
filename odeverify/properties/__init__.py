"""Properties (L6): pure functions that measure and return a :class:`~odeverify.records.Record`.

pytest/hypothesis tests, asv ``track_*`` benchmarks and the report all call these same functions.
"""
from __future__ import annotations

from .._registry import Registry
from .accuracy import reference_accuracy
from .agreement import backend_agreement, library_agreement
from .batch import batch_behaviour, batch_y0
from .precision import precision_agreement
from .convergence import convergence_order, order_sweep
from .local import dense_output_order, embedded_estimate_bound, local_error_order
from .tolerance import expected_exponent, tolerance_proportionality

PROPERTIES: Registry = Registry("property")
for _f in (convergence_order, local_error_order, dense_output_order, embedded_estimate_bound,
           tolerance_proportionality, library_agreement, backend_agreement, batch_behaviour,
           precision_agreement, reference_accuracy):
    PROPERTIES.register(_f.__name__, _f)

__all__ = [
    "PROPERTIES",
    "convergence_order",
    "order_sweep",
    "local_error_order",
    "dense_output_order",
    "embedded_estimate_bound",
    "tolerance_proportionality",
    "expected_exponent",
    "library_agreement",
    "backend_agreement",
    "batch_behaviour",
    "batch_y0",
    "precision_agreement",
    "reference_accuracy",
]
