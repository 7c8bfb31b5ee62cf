"""An exact predictor makes the Newton increments round-off whose measured "rate" is ~1: the
iteration has converged (stalled at its floor), and must be accepted, not failed.
Found while adding tstops: kvaerno5 on y' = 3 from y(0.41) = 0.5 ended NEWTON_FAILED."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from odeverify.integrate import solve
from odeverify.solution import Status

ADAPTIVE_IMPLICIT = ("kvaerno3", "kvaerno4", "kvaerno5", "radau_iia5", "bdf")


@pytest.mark.parametrize("method", ADAPTIVE_IMPLICIT)
@settings(max_examples=6, deadline=None, derandomize=True)
@given(y0=st.floats(-100, 100), c=st.floats(-5, 5), t0=st.floats(0, 1))
@example(y0=0.5, c=3.0, t0=0.41)  # the case found
def test_a_field_constant_in_y_is_solved_exactly(method, y0, c, t0):
    """y' = c is integrated exactly, to round-off, by every one of these methods, and their
    Newton iteration starts from an exact predictor."""
    t1 = t0 + 0.59
    sol = solve(lambda t, y: np.full_like(y, c), np.array([y0]), (t0, t1), method=method)
    assert sol.status is Status.SUCCESS, sol.message
    exact = y0 + c * (t1 - t0)
    assert abs(float(sol.ys[-1, 0]) - exact) <= 1e-12 * (1 + abs(exact))
