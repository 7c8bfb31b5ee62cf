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
from .work_precision import work_precision
from .work import work
from .options import max_order_sweep
from .stiffness import stiff_order, stiff_precision, stiffness_estimate, stiffness_handling
from .sde import (brownian_consistency, ito_stratonovich_consistency, sde_pathwise_agreement, sde_reversibility,
                  sde_strong_order, sde_weak_order)
from .sde_gradients import sde_adjoint_convergence, sde_gradient_accuracy, sde_reversible_exactness
from .flow_gradients import cnf_gradient_accuracy
from .flows import (cnf_invertibility, cnf_liouville, cnf_log_density, cnf_normalisation, hutchinson_unbiased,
                    hutchinson_variance, trace_agreement)
from .gradients import (adjoint_convergence, discrete_gradient_exactness, fixed_step_adjoint_gap, gradient_accuracy,
                        gradient_oracle, memory_scaling, reversibility_drift, reversible_stability_region,
                        reversible_use)
from .flow_geometry import FLOW_GEOMETRY

PROPERTIES: Registry = Registry("property")
for _f in (convergence_order, local_error_order, dense_output_order, embedded_estimate_bound,
           tolerance_proportionality, library_agreement, backend_agreement, batch_behaviour,
           precision_agreement, reference_accuracy, work_precision, stiffness_estimate, stiffness_handling,
           stiff_order, stiff_precision, work, max_order_sweep):
    PROPERTIES.register(_f.__name__, _f)
for _f in (gradient_accuracy, discrete_gradient_exactness, adjoint_convergence, fixed_step_adjoint_gap,
           reversibility_drift, reversible_stability_region, reversible_use, memory_scaling):
    PROPERTIES.register(_f.__name__, _f)
# the geometry of flow maps (augmented Neural ODEs, ResNets as Euler)
for _f in FLOW_GEOMETRY:
    PROPERTIES.register(_f.__name__, _f)
# SDEs (check --sde)
for _f in (sde_strong_order, sde_weak_order, sde_pathwise_agreement, ito_stratonovich_consistency, sde_reversibility,
           brownian_consistency, sde_gradient_accuracy, sde_reversible_exactness, sde_adjoint_convergence):
    PROPERTIES.register(_f.__name__, _f)
# continuous normalizing flows (check --flows)
for _f in (cnf_log_density, cnf_liouville, cnf_normalisation, cnf_invertibility, hutchinson_unbiased,
           hutchinson_variance, trace_agreement, cnf_gradient_accuracy):
    PROPERTIES.register(_f.__name__, _f)

__all__ = [
    "PROPERTIES",
    "brownian_consistency",
    "ito_stratonovich_consistency",
    "sde_pathwise_agreement",
    "sde_reversibility",
    "sde_strong_order",
    "sde_weak_order",
    "sde_adjoint_convergence",
    "sde_gradient_accuracy",
    "sde_reversible_exactness",
    "cnf_gradient_accuracy",
    "cnf_invertibility",
    "cnf_liouville",
    "cnf_log_density",
    "cnf_normalisation",
    "hutchinson_unbiased",
    "hutchinson_variance",
    "trace_agreement",
    "gradient_accuracy",
    "discrete_gradient_exactness",
    "adjoint_convergence",
    "fixed_step_adjoint_gap",
    "gradient_oracle",
    "reversibility_drift",
    "reversible_stability_region",
    "reversible_use",
    "memory_scaling",
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
    "work_precision",
    "work",
    "max_order_sweep",
    "stiffness_estimate",
    "stiffness_handling",
    "stiff_order",
    "stiff_precision",
]
