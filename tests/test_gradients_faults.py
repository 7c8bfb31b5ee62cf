"""Planted faults in gradients must be caught by the gradient properties on generated problems.

A property that passes correct code proves little until it is seen to fail on wrong code. Two
faults, each on drawn linear problems and losses (``odeverify.strategies``), graded by
``gradient_accuracy`` against the closed form:

- a gradient scaled by (1 + 1e-3): every part of it off by 1e-3 of itself, far below what a
  plot would show, and about 1e4 times the property's bound at rtol 1e-9 (atol small enough
  that no state decays below it: atol / |y| <= 1e-15 / exp(-4 * 3)). The tolerance is tight so
  that the correct gradient's own error (up to ~1e3 rtol where the loss terms cancel, see
  tests/test_gradients.py::gradient_error_bound) cannot offset the planted one;
- a backsolve adjoint that ignores a term: the parameter integral a_theta' = -a^T df/dtheta is
  dropped from the reference's backward solve, so dL/dA is lost while dL/dz0 stays right.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given

from odeverify.backends.torchdiffeq_backend import TorchdiffeqBackend
from odeverify.gradients import _common
from odeverify.properties import gradients as G

pytest.importorskip("torchdiffeq")
ods = pytest.importorskip("odeverify.strategies")  # the public strategies module (issue 15)

RTOL, ATOL = 1e-9, 1e-15
#: the planted scale error of the first fault
SCALE_FAULT = 1e-3


class _ScaledGradientBackend(TorchdiffeqBackend):
    """torchdiffeq, with every gradient multiplied by (1 + SCALE_FAULT)."""

    name = "torchdiffeq-scaled"

    def gradient(self, *args, **kwargs):
        r = super().gradient(*args, **kwargs)
        return dataclasses.replace(
            r, grad_y0=None if r.grad_y0 is None else r.grad_y0 * (1 + SCALE_FAULT),
            grad_params={k: v * (1 + SCALE_FAULT) for k, v in r.grad_params.items()})


def _linear_cases():
    """A drawn linear problem (forward span, closed form) and a drawn loss on it."""
    from hypothesis import strategies as st

    return ods.problems(kinds=("linear",), spans=False).flatmap(
        lambda p: st.tuples(st.just(p), ods.losses(p)))


@given(_linear_cases())
def test_a_gradient_off_by_1e_3_of_itself_fails(case):
    p, loss = case
    oracle = G.linear_closed_form(p, loss)
    fake = _ScaledGradientBackend()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(G, "backend_for", lambda name, library="numpy": fake)
        r = G.gradient_accuracy(p, "dopri5", "backprop", backend=fake.name, loss=loss, oracle=oracle, rtol=RTOL,
                                atol=ATOL)
    assert r.verdict == "fail", (p.spec, r.describe())
    assert r.measured > SCALE_FAULT / 2 > 100 * r.expected, (p.spec, r.describe())


def _vjp_without_parameter_term(self, t, z, a, with_params=True):
    fz, gz, gp = _ORIGINAL_VJP(self, t, z, a, with_params)
    return fz, gz, None if gp is None else gp * 0  # a_theta' = 0: the parameter integral is ignored


_ORIGINAL_VJP = _common.Setup.field_vjp


@given(_linear_cases())
def test_a_backsolve_that_ignores_the_parameter_term_fails(case):
    p, loss = case
    oracle = G.linear_closed_form(p, loss, wrt="params")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_common.Setup, "field_vjp", _vjp_without_parameter_term)
        bad = G.gradient_accuracy(p, "dopri5", "backsolve", backend="reference-torch", loss=loss, oracle=oracle,
                                  wrt="params", rtol=RTOL, atol=ATOL)
    assert bad.verdict == "fail", (p.spec, bad.describe())
    # dL/dA is lost altogether: the error is that of a zero gradient
    assert bad.measured == pytest.approx(1.0), (p.spec, bad.describe())
    assert np.all(np.asarray(bad.details["result"]["grad_params"]["A"]) == 0)
