"""Latent ODEs at many irregular observation times (issue 12): CPU time, accuracy and work of
the negative-ELBO gradient of a latent ODE, and what the union-of-times batch costs.

Parameters of the gradient: ``case`` (``backend:method:mode``, ``_grid.LATENT_SMALL_MODES``: the
PyTorch reference's discrete, backsolve and checkpoint modes, torchdiffeq's backprop and
adjoint, diffrax's recursive_checkpoint and backsolve, each with the backend's Dormand-Prince
pair; the large grid: every declared mode that works at a tolerance), ``observations``
(:data:`OBSERVATIONS`: one spiral series of the shipped data set,
``spiral_dataset(1, min_count=n, max_count=n)``, observed at n random times in (0, 6]). The
model is ``init_latent_ode()`` (seed 0; encoder RNN, 2-d latent MLP field, linear decoder
carried in the state), ``LatentSetup(sigma=0.1, seed=0)``; every gradient is
``properties.irregular.latent_ode_value_and_grad`` at :data:`RTOL`, :data:`ATOL` (the ODE part
by the backend's ``Backend.gradient`` mode with a loss at every observation time, the encoder
and the reparametrisation by the chain rule), on the CPU (it takes no device).

- ``time_gradient``: CPU time of one value-and-gradient (forward and backward); the first
  (compiling) call in ``setup``.
- ``track_gradient_error``: the gradient projected on :data:`DIRECTIONS` seeded unit directions
  (``numpy.random.default_rng([0, 3])`` over the 136 flat parameters), relative 2-norm error
  against central differences of the whole objective along the same directions
  (``latent_directional_oracle``: NumPy and DOP853 at rtol 1e-12, step 1e-4; no gradient code,
  no PyTorch). The oracle's own error (its change from step 2e-4) was 2e-9 relative at 500
  times, far below the 1e-7..1e-5 the gradients show at rtol 1e-6. A projection sees an error
  vector e as about |e| sqrt(3/136): it tracks changes, it does not bound every component.
- the work counters beside the timing: ``track_nfev`` (forward plus backward evaluations),
  ``track_nfev_forward``, ``track_nfev_backward`` (vector field or its VJP; the continuous
  adjoints restart at every observation time, so they grow with the observations).

Union of times (``TrackUnionTimes``, tracks only): a batch of :data:`UNION_SAMPLES` samples of a
rotating linear problem, each observed at its own n irregular times (``irregular_batch``,
seed :data:`UNION_SEED`), solved torchdiffeq's way (one batch solve to the sorted union of all
times) and sample by sample (``properties.irregular.union_times_cost``, rtol 1e-6); ``case`` is
``backend:method`` (each backend's representative explicit method).

- ``track_union_overhead``: the union's sample-evaluations (nfev x samples) over the per-sample
  evaluations, read off the dense output; ``track_union_extra_steps``: accepted steps the
  union takes beyond the per-sample solves (steps x samples minus their sum, in
  sample-steps, clipped at 0); ``track_union_stepped_overhead``: the same ratio when every solve steps onto
  each of its output times (the reference's ``tstops``; n/a elsewhere);
  ``track_union_error``: the worse of the union's and the per-sample solves' errors against
  the closed form ``expm(A t) y0``, in mixed tolerances ``atol + rtol |y*|``.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import numpy as np

from ._common import CpuTimed, count, lookup, single_thread, split_case, use_jax_cache
from ._grid import LARGE, NONE, latent_cases, load, union_cases

#: tolerances of every latent-ODE gradient (the suites' RTOL; atol two digits below)
RTOL, ATOL = 1e-6, 1e-8
#: observation times of the single series (large grid: :data:`LARGE_OBSERVATIONS`)
OBSERVATIONS = (50, 500)
LARGE_OBSERVATIONS = (50, 500, 2000)
#: seeded unit directions the gradient is projected on (the property's seed and count)
DIRECTIONS = 3
DIRECTION_SEED = 0
#: the union-of-times batch
UNION_SAMPLES = 8
UNION_SEED = 4
UNION_RTOL = 1e-6


def observations() -> list[int]:
    return list(LARGE_OBSERVATIONS if LARGE else OBSERVATIONS)


@functools.lru_cache(maxsize=None)
def latent_setup(n: int) -> tuple[dict[str, np.ndarray], Any]:
    """(parameters, LatentSetup) of the row with ``n`` observations."""
    from odeverify.problems.irregular import LatentSetup, init_latent_ode, spiral_dataset

    data = spiral_dataset(1, min_count=n, max_count=n)
    if data[0].times.size != n:  # np.unique merged two drawn times (never seen; would change the row)
        raise RuntimeError(f"spiral_dataset(1, min_count={n}, max_count={n}) gave {data[0].times.size} times")
    return init_latent_ode(), LatentSetup(data=data, sigma=0.1, seed=0)


def directions(params: dict[str, np.ndarray]) -> np.ndarray:
    size = sum(v.size for v in params.values())
    V = np.random.default_rng([DIRECTION_SEED, 3]).standard_normal((DIRECTIONS, size))
    return V / np.linalg.norm(V, axis=1, keepdims=True)


@functools.lru_cache(maxsize=None)
def oracle(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(directional derivatives, their error estimate) by central differences of the objective
    computed by NumPy and DOP853 at rtol 1e-12 (``latent_directional_oracle``)."""
    from odeverify.properties.irregular import latent_directional_oracle

    params, setup = latent_setup(n)
    return latent_directional_oracle(params, setup, directions(params))


class LatentCase:
    """One latent-ODE value-and-gradient, ready to run (NotImplementedError where it cannot)."""

    def __init__(self, case: str, n: int) -> None:
        from odeverify import backends

        backend_name, method, mode = split_case(case)
        b = backends.get(backend_name)
        if not b.available():
            raise NotImplementedError(f"{backend_name} is not installed: {b.install_hint}")
        if mode not in tuple(b.capabilities().gradient_modes):
            raise NotImplementedError(f"{backend_name} has no gradient mode {mode!r}")
        self.backend, self.method, self.mode = backend_name, method, mode
        self.params, self.setup = latent_setup(int(n))
        single_thread()

    def run(self) -> tuple[float, dict[str, np.ndarray], dict[str, Any]]:
        from odeverify import backends
        from odeverify.properties.irregular import latent_ode_value_and_grad

        try:
            return latent_ode_value_and_grad(self.params, self.setup, backend=self.backend, method=self.method,
                                             mode=self.mode, rtol=RTOL, atol=ATOL)
        except (backends.UnsupportedOption, NotImplementedError) as exc:
            raise NotImplementedError(str(exc)) from exc


_WARM: dict = {}


def warmed(case: str, n: int) -> LatentCase:
    key = (case, int(n))
    if key not in _WARM:
        use_jax_cache()
        lc = LatentCase(case, n)
        lc.run()
        _WARM[key] = lc
    return _WARM[key]


def gradient_values(case: str, n: int) -> dict[str, float] | str:
    """Gradient error and work of one row, or the reason it is skipped. A failed solve (the
    property raises RuntimeError naming the status) is an infinite error with n/a work."""
    from odeverify.properties.gradients import _relative

    try:
        use_jax_cache()
        lc = LatentCase(case, n)
        try:
            _, g, work = lc.run()
        except RuntimeError:
            return {"grad_error": math.inf, "nfev": math.nan, "nfev_forward": math.nan, "nfev_backward": math.nan}
    except NotImplementedError as exc:
        return str(exc) or "not available"
    flat = np.concatenate([np.ravel(g[k]) for k in lc.params])
    fd, _ = oracle(int(n))
    err = _relative(directions(lc.params) @ flat, fd)
    fwd, bwd = count(work["nfev_forward"]), count(work["nfev_backward"])
    return {"grad_error": float(err), "nfev": fwd + bwd, "nfev_forward": fwd, "nfev_backward": bwd}


@functools.lru_cache(maxsize=None)
def union_batch(n: int) -> Any:
    from odeverify.problems.irregular import irregular_batch

    return irregular_batch(samples=UNION_SAMPLES, counts=int(n), seed=UNION_SEED, name=f"union_{UNION_SAMPLES}x{n}")


def union_sample_steps(backend: Any, batch: Any, method: str) -> float:
    """Accepted steps of the union solve summed over the samples: a batch whose samples keep
    their own steps (``Stats.sample_accepted``: diffrax's vmapped batch, whose ``accepted`` is
    already that sum) counts each sample's; a shared-step batch counts its steps once per sample."""
    import dataclasses

    from odeverify.problems.irregular import union_times

    union, _ = union_times(batch.times)
    problem = dataclasses.replace(batch.problem, t_span=(batch.problem.t_span[0], float(union[-1])))
    sol = backend.solve(problem, method, y0=batch.y0s, t_eval=union, rtol=UNION_RTOL, atol=UNION_RTOL * 1e-3)
    if not sol.success:
        return math.inf
    per_sample = getattr(sol.stats, "sample_accepted", None)
    if per_sample is not None:
        return float(np.sum(per_sample))
    return float(sol.stats.accepted) * batch.samples


def union_values(case: str, n: int) -> dict[str, float] | str:
    """The union-of-times cost and error of one row, or the reason it is skipped."""
    from odeverify import backends
    from odeverify.properties.irregular import union_times_cost

    if case == NONE:
        return "nothing of this kind is registered yet"
    backend_name, method = split_case(case)
    b = backends.get(backend_name)
    if not b.available():
        return f"{backend_name} is not installed: {b.install_hint}"
    use_jax_cache()
    single_thread()
    rec = union_times_cost(union_batch(int(n)), method, backend=backend_name, rtol=UNION_RTOL)
    d = rec.details or {}
    if rec.measured is None or not d:
        return {"overhead": math.inf, "extra_steps": math.inf, "stepped_overhead": math.nan, "error": math.inf}
    stepped = d.get("stepped") or {}
    union = union_sample_steps(b, union_batch(int(n)), method)
    # clipped at 0 (asv misreads negative values; a union cheaper than its samples shows in the overhead)
    extra = max(0.0, union - sum(d["per_sample_steps"]))
    error = max(max(d["union_error"]), max(d["per_sample_error"]))
    return {"overhead": float(rec.measured), "extra_steps": float(extra),
            "stepped_overhead": float(stepped["overhead"]) if stepped.get("success") else math.nan,
            "error": float(error)}


LATENT = (load().get("latent") or latent_cases(), observations())
UNION = (load().get("union") or union_cases(), observations())
PARAM_NAMES = ("case", "observations")


class TimeLatentGradient(CpuTimed):
    """CPU time of one negative-ELBO value and gradient at every observation time."""

    params = LATENT
    param_names = PARAM_NAMES
    timeout = 300

    def setup(self, case: str, observations: int) -> None:
        self.case = warmed(case, observations)

    def time_gradient(self, case: str, observations: int) -> None:
        self.case.run()


class TrackLatentGradient:
    """Gradient error and work of the same gradient (deterministic)."""

    params = LATENT
    param_names = PARAM_NAMES
    timeout = 1800

    def setup_cache(self) -> dict:
        return {key: gradient_values(*key) for key in itertools.product(*LATENT)}

    setup_cache.timeout = 1800

    def setup(self, table: dict, case: str, observations: int) -> None:
        lookup(table, (case, observations), "grad_error")

    def track_gradient_error(self, table: dict, case: str, observations: int) -> float:
        """Relative error of the directional derivatives against central differences; inf if it failed."""
        return lookup(table, (case, observations), "grad_error")

    track_gradient_error.unit = "relative error"

    def track_nfev(self, table: dict, case: str, observations: int) -> float:
        """Forward plus backward evaluations of the vector field (or of its VJP)."""
        return lookup(table, (case, observations), "nfev")

    track_nfev.unit = "evaluations"

    def track_nfev_forward(self, table: dict, case: str, observations: int) -> float:
        """Evaluations of the vector field in the forward pass."""
        return lookup(table, (case, observations), "nfev_forward")

    track_nfev_forward.unit = "evaluations"

    def track_nfev_backward(self, table: dict, case: str, observations: int) -> float:
        """Evaluations of the vector field (or of its VJP) in the backward pass."""
        return lookup(table, (case, observations), "nfev_backward")

    track_nfev_backward.unit = "evaluations"


class TrackUnionTimes:
    """What the union-of-times batch costs against per-sample solves (deterministic)."""

    params = UNION
    param_names = PARAM_NAMES
    timeout = 1800

    def setup_cache(self) -> dict:
        return {key: union_values(*key) for key in itertools.product(*UNION)}

    setup_cache.timeout = 1800

    def setup(self, table: dict, case: str, observations: int) -> None:
        lookup(table, (case, observations), "overhead")

    def track_union_overhead(self, table: dict, case: str, observations: int) -> float:
        """Union sample-evaluations over per-sample evaluations (dense output)."""
        return lookup(table, (case, observations), "overhead")

    track_union_overhead.unit = "ratio"

    def track_union_extra_steps(self, table: dict, case: str, observations: int) -> float:
        """Union steps x samples minus the per-sample solves' steps."""
        return lookup(table, (case, observations), "extra_steps")

    track_union_extra_steps.unit = "sample-steps"

    def track_union_stepped_overhead(self, table: dict, case: str, observations: int) -> float:
        """The overhead when every solve steps onto its output times (reference only)."""
        return lookup(table, (case, observations), "stepped_overhead")

    track_union_stepped_overhead.unit = "ratio"

    def track_union_error(self, table: dict, case: str, observations: int) -> float:
        """Worst error of the union and per-sample solves, in mixed tolerances."""
        return lookup(table, (case, observations), "error")

    track_union_error.unit = "tolerances"
