"""Properties of continuous normalizing flows, graded against oracles that share no code with the
trace path (:mod:`odeverify.problems.flows`): closed forms, Liouville's formula by the variational
equation, the normalisation of the pushed-forward density, invertibility, and Hutchinson's
estimator's mean and variance against theory."""
from __future__ import annotations

from typing import Any

from ..gradients import Loss
from ..problems.flows import CNFProblem


def nll_loss(cnf: CNFProblem) -> Loss:
    """The negative log-likelihood of a density solve of ``cnf`` (summed over a batch), up to
    :meth:`CNFProblem.nll_constant`, as a :class:`Loss` at ``t0``."""
    w, q = cnf.nll_weights()
    return Loss(t_eval=(cnf.t_span[0],), weights=w, quadratic=q)


__all__: list[Any] = ["nll_loss"]
