"""Hypothesis strategies for ODE problems, conditions and losses: public, for odeverify's own
tests, ``odeverify explore`` and users' test suites alike.

Every problem strategy draws a *spec* (:mod:`odeverify.problems.specs`) and builds the
problem from it, so a drawn problem prints as one line (``problem.spec``) that
``odeverify solve --spec '<spec>'`` or :func:`odeverify.problems.specs.from_spec` rebuilds
exactly. Strategies shrink towards small, readable problems: the simplest kind first, the
fewest components, round numbers, short spans.

Example (in a user's test file)::

    from hypothesis import given
    from odeverify import strategies as ods

    @given(ods.problems(kinds=("linear", "manufactured")), ods.tolerances())
    def test_my_solver(problem, tol):
        ...  # solve problem with tol["rtol"], tol["atol"]; compare with problem.exact
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - hypothesis is a core dependency
    raise ImportError("odeverify.strategies needs hypothesis: pip install hypothesis") from exc

from .problems import Problem
from .problems.specs import GENERATORS, canonical, from_spec

#: every kind of generated problem, simplest first (hypothesis shrinks towards the first)
KINDS = ("linear", "manufactured", "warped", "jordan", "hamiltonian", "mlp", "stiff_linear")
#: kinds with a closed form (spans can be moved and output times checked anywhere)
EXACT_KINDS = ("linear", "manufactured", "warped", "jordan", "hamiltonian", "stiff_linear")
#: kinds of spectra of a linear system
SPECTRA = ("real", "imaginary", "mixed", "clustered")


def _f(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Floats in [lo, hi] rounded to 3 significant digits: specs stay short and readable."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False).map(lambda x: float(f"{x:.3g}"))


@st.composite
def spectra(draw: Any, kinds: Sequence[str] = SPECTRA, max_magnitude: float = 4.0) -> list[complex]:
    """Eigenvalues of a real matrix: real (decaying), imaginary pairs, mixed (a damped pair and
    a real one) or clustered (nearly equal real ones); conjugate pairs come together."""
    kind = draw(st.sampled_from(list(kinds)))
    mag = _f(0.25, max_magnitude)
    if kind == "real":
        return [complex(-draw(mag)) for _ in range(draw(st.integers(1, 3)))]
    if kind == "imaginary":
        b = draw(mag)
        return [complex(0, b), complex(0, -b)]
    if kind == "clustered":
        r = draw(mag)
        gap = draw(_f(1e-4, 1e-2))
        return [complex(-r), complex(-r * (1 + gap)), complex(-r * (1 + 2 * gap))]
    a, b, r = draw(_f(0.05, 1.0)), draw(mag), draw(mag)
    return [complex(-a, b), complex(-a, -b), complex(-r)]


def _pairs(eigs: Sequence[complex]) -> list[list[float]]:
    return [[v.real, v.imag] for v in eigs]


@st.composite
def problem_specs(draw: Any, kinds: Sequence[str] = KINDS, spans: bool = True, max_span: float = 4.0) -> dict:
    """A spec dict of a generated problem (see :mod:`odeverify.problems.specs`).

    ``spans`` also draws the interval for kinds with a closed form: a start that is not a
    round binary number, forward or backward, up to ``max_span`` long."""
    for k in kinds:
        GENERATORS.get(k)  # unknown kinds fail with the choices
    kind = draw(st.sampled_from(list(kinds)))
    seed = draw(st.integers(0, 999))
    t1 = draw(_f(0.5, 3.0))
    if kind == "linear":
        params: dict[str, Any] = {"eigenvalues": _pairs(draw(spectra())), "seed": seed, "t1": t1}
    elif kind == "jordan":
        params = {"lam": -draw(_f(0.0, 2.0)), "size": draw(st.integers(2, 4)), "coupling": draw(_f(0.1, 10.0)),
                  "seed": seed, "t1": t1}
    elif kind == "warped":
        params = {"eigenvalues": _pairs(draw(spectra(kinds=("real", "imaginary", "mixed"), max_magnitude=3.0))),
                  "seed": seed, "eps": draw(_f(0.0, 0.5)), "omega": draw(_f(0.5, 3.0)),
                  "nonlinear": draw(st.booleans()), "t1": t1, "amplitude": draw(_f(0.3, 1.2))}
    elif kind == "hamiltonian":
        params = {"omegas": [draw(_f(0.5, 3.0)) for _ in range(draw(st.integers(1, 2)))], "a": draw(_f(0.0, 1.0)),
                  "seed": seed, "t1": draw(_f(1.0, 6.0))}
    elif kind == "manufactured":
        params = {"n": draw(st.integers(1, 4)), "modes": draw(st.integers(1, 3)), "seed": seed,
                  "damping": draw(_f(0.0, 5.0)), "beta": draw(_f(0.0, 1.0)), "t1": t1}
    elif kind == "stiff_linear":
        params = {"ratio": float(f"{10 ** draw(st.floats(1.0, 6.0)):.3g}"), "seed": seed}
    else:  # mlp
        params = {"state": draw(st.integers(2, 4)), "hidden": draw(st.integers(4, 16)), "depth": draw(st.integers(1, 2)),
                  "activation": draw(st.sampled_from(["tanh", "softplus"])), "seed": seed,
                  "time_dependent": draw(st.booleans()), "scale": draw(_f(0.5, 3.0)), "t1": t1}
    spec: dict[str, Any] = {"kind": kind, "params": params}
    if spans and kind in EXACT_KINDS and kind != "stiff_linear" and draw(st.booleans()):
        t0 = draw(_f(-2.0, 2.0))
        length = draw(_f(0.3, max_span))
        spec["span"] = [t0, float(f"{t0 + (length if draw(st.booleans()) else -length):.6g}")]
    return spec


def problems(kinds: Sequence[str] = KINDS, spans: bool = True, max_span: float = 4.0) -> st.SearchStrategy[Problem]:
    """Generated problems (a drawn spec built by :func:`~odeverify.problems.specs.from_spec`);
    ``problem.spec`` is the one-line reproduction."""
    return problem_specs(kinds, spans, max_span).map(_build).filter(lambda p: p is not None)


def _build(spec: dict) -> Problem | None:
    try:
        return from_spec(spec)
    except ValueError:  # a moved span on which the closed form overflows: not a problem to test
        return None


@st.composite
def tolerances(draw: Any, n: int | None = None, min_rtol: float = 1e-10, max_rtol: float = 1e-3) -> dict:
    """``{"rtol": r, "atol": a}`` with rtol log-uniform in [min_rtol, max_rtol] and atol = rtol
    times 10^[-3, 0]; with ``n`` the atol may be a per-component list (mixed tolerances)."""
    rtol = float(f"{10 ** draw(st.floats(math.log10(min_rtol), math.log10(max_rtol))):.2g}")
    if n is not None and draw(st.booleans()):
        atol: Any = [float(f"{rtol * 10 ** draw(st.floats(-3.0, 0.0)):.2g}") for _ in range(n)]
    else:
        atol = float(f"{rtol * 10 ** draw(st.floats(-3.0, 0.0)):.2g}")
    return {"rtol": rtol, "atol": atol}


@st.composite
def output_times(draw: Any, t_span: tuple[float, float], max_count: int = 8) -> list[float]:
    """Increasing (or, backward, decreasing) output times inside the span, ending at t1:
    irregular, possibly clustered, possibly including t0."""
    t0, t1 = t_span
    k = draw(st.integers(0, max_count - 1))
    fr = draw(st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=k, max_size=k))
    if fr and draw(st.booleans()):  # a cluster of nearly equal times
        c = fr[0]
        fr += [min(c + 1e-6 * (i + 1), 0.999999) for i in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()):
        fr.append(0.0)
    out: list[float] = []
    for f in sorted(set(fr)):
        t = t0 + f * (t1 - t0)
        if t != t1 and (not out or (t - out[-1]) * (t1 - t0) > 0):  # strictly monotone, t1 last
            out.append(t)
    return out + [t1]


@st.composite
def fixed_steps(draw: Any, t_span: tuple[float, float], order: int = 1) -> int:
    """A number of fixed steps, not a power of two, resolving the span (more for low orders)."""
    lo = 16 if order >= 3 else 32
    return draw(st.integers(lo, 4 * lo))


@st.composite
def batches(draw: Any, problem: Problem, max_size: int = 6) -> np.ndarray:
    """Per-sample initial values around the problem's y0, of scales 10^[-2, 2]: shape (B, n)."""
    b = draw(st.integers(1, max_size))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.uniform(-2, 2, b)
    return np.asarray(problem.y0)[None, :] * scales[:, None] + 0.1 * rng.standard_normal((b, problem.n))


def dtypes() -> st.SearchStrategy[str]:
    return st.sampled_from(["float64", "float32"])


@st.composite
def losses(draw: Any, problem: Problem, max_times: int = 4) -> Any:
    """A gradient loss (:class:`odeverify.gradients.Loss`): drawn output times inside the span
    (t1 always), N(0, 1) weights from a drawn seed, and a drawn quadratic term."""
    from .gradients import Loss

    t0, t1 = problem.t_span
    k = draw(st.integers(0, max_times - 1))
    fr = sorted(set(draw(st.lists(st.floats(0.05, 0.95), min_size=k, max_size=k))))
    times = [t0 + f * (t1 - t0) for f in fr] + [t1]
    return Loss.seeded(times, problem.n, seed=draw(st.integers(0, 999)), quadratic=draw(_f(0.0, 1.0)))


__all__ = ["CNF_EXACT_KINDS", "CNF_KINDS", "EXACT_KINDS", "FLOW_KINDS_1D", "KINDS", "SPECTRA", "batches", "canonical",
           "cnf_problem_specs", "cnf_problems", "dtypes", "fixed_steps", "flow_fields_1d", "losses", "output_times",
           "problem_specs", "problems", "spectra", "tolerances"]


# ----------------------------------------------------------------------------- SDEs
#: every family of generated SDE problem, simplest first (:mod:`odeverify.problems.sde_specs`)
SDE_KINDS = ("sde_gbm", "sde_linear", "sde_reducible", "sde_additive", "sde_noncommutative")
#: families with a closed form in W(t)
SDE_EXACT_KINDS = ("sde_gbm", "sde_linear", "sde_reducible", "sde_additive")


@st.composite
def sde_problem_specs(draw: Any, kinds: Sequence[str] = SDE_KINDS, noise_classes: Sequence[str] | None = None) -> dict:
    """A spec dict of a generated SDE problem. ``noise_classes`` (``additive``,
    ``commutative``, ``general``) keeps only families of those classes."""
    from .problems.sde_specs import SDE_GENERATORS

    classes = {"sde_gbm": "commutative", "sde_linear": "commutative", "sde_reducible": "commutative",
               "sde_additive": "additive", "sde_noncommutative": "general"}
    for k in kinds:
        SDE_GENERATORS.get(k)  # unknown kinds fail with the choices
    usable = [k for k in kinds if noise_classes is None or classes[k] in noise_classes]
    if not usable:
        raise ValueError(f"no SDE family of kinds {list(kinds)} has noise class in {list(noise_classes or [])}")
    kind = draw(st.sampled_from(usable))
    t1 = draw(_f(0.5, 2.0))
    calculus = draw(st.sampled_from(["ito", "stratonovich"]))
    if kind == "sde_gbm":
        n = draw(st.integers(1, 3))
        params: dict[str, Any] = {"mu": [draw(_f(-1.5, 1.5)) for _ in range(n)],
                                  "sigma": [draw(_f(0.1, 1.2)) for _ in range(n)],
                                  "x0": [draw(_f(0.2, 2.0)) for _ in range(n)], "calculus": calculus, "t1": t1}
    elif kind == "sde_linear":
        n, m = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        params = {"a": [draw(_f(-1.5, 1.0)) for _ in range(n)],
                  "b": [[draw(_f(-0.8, 0.8)) for _ in range(n)] for _ in range(m)],
                  "x0": [draw(_f(-2.0, 2.0)) for _ in range(n)], "seed": draw(st.integers(0, 999)), "t1": t1}
    elif kind == "sde_reducible":
        family = draw(st.sampled_from(["tanh", "arctan", "sinh"]))
        limit = {"tanh": 0.9, "arctan": 1.3, "sinh": 2.5}[family]
        params = {"family": family, "a": draw(_f(0.1, 1.5)), "alpha": draw(_f(-1.0, 1.0)),
                  "x0": draw(_f(-limit, limit)), "calculus": calculus, "t1": t1}
    elif kind == "sde_additive":
        params = {"alpha": draw(_f(0.1, 2.0)), "beta": draw(_f(0.1, 2.0)), "x0": draw(_f(-2.0, 2.0)), "t1": t1}
    else:
        params = {"c": draw(_f(0.0, 1.5)), "s": draw(_f(0.2, 1.2)),
                  "x0": [draw(_f(-1.5, 1.5)), draw(_f(-1.5, 1.5))], "t1": t1}
    return {"kind": kind, "params": params}


def sde_problems(kinds: Sequence[str] = SDE_KINDS, noise_classes: Sequence[str] | None = None) -> st.SearchStrategy:
    """Generated :class:`~odeverify.problems.sde.SDEProblem` s (see :func:`sde_problem_specs`)."""
    from .problems.sde_specs import sde_from_spec

    return sde_problem_specs(kinds, noise_classes).map(sde_from_spec)


# ----------------------------------------------------------------------------- 1-D flow fields
#: kinds of drawn 1-D flow fields, simplest first
FLOW_KINDS_1D = ("linear", "sine", "mlp")


@st.composite
def flow_fields_1d(draw: Any, kinds: Sequence[str] = FLOW_KINDS_1D) -> Any:
    """A 1-D :class:`~odeverify.problems.flows.FlowField`: affine ``lambda z + b``, ``a sin z``
    (both with closed-form flows) or a seeded concat-squash MLP (drawn width, depth, activation,
    weight scale); its ``name`` records what was drawn."""
    from .problems.flows import linear_field, mlp_field, sine_field

    kind = draw(st.sampled_from(list(kinds)))
    if kind == "linear":
        lam, b = draw(_f(-3.0, 3.0)), draw(_f(-1.0, 1.0))
        return linear_field([[lam]], [b], name=f"linear1_l{lam:g}_b{b:g}")
    if kind == "sine":
        return sine_field(draw(_f(-2.0, 2.0)))
    return mlp_field(1, draw(st.integers(2, 8)), draw(st.integers(1, 2)), draw(st.sampled_from(["tanh", "softplus"])),
                     seed=draw(st.integers(0, 999)), scale=draw(_f(0.5, 3.0)))


# ----------------------------------------------------------------------------- CNFs
#: every family of generated CNF problem, simplest first (:mod:`odeverify.problems.flow_specs`)
CNF_KINDS = ("cnf_affine", "cnf_sine", "cnf_mlp")
#: families with a closed-form flow and log-determinant
CNF_EXACT_KINDS = ("cnf_affine", "cnf_sine")


@st.composite
def cnf_problem_specs(draw: Any, kinds: Sequence[str] = CNF_KINDS, max_dim: int = 8) -> dict:
    """A spec dict of a generated CNF problem (:func:`odeverify.problems.flow_specs.cnf_from_spec`):
    an affine field (dim 1..6, a seeded matrix of drawn spectral norm, drawn ``alpha`` and
    ``b``), ``a sin z``, or a seeded MLP field (dim 1..8, width 2..16, depth 1..3, tanh or
    softplus, weight scale 0.5..3), with a drawn diagonal Gaussian base, span ``[0, t1]`` and
    seeded data points. Shrinks towards a 1-D affine field on a standard base."""
    from .problems.flow_specs import FLOW_GENERATORS

    for k in kinds:
        FLOW_GENERATORS.get(k)  # unknown kinds fail with the choices
    kind = draw(st.sampled_from(list(kinds)))
    if kind == "cnf_affine":
        dim = draw(st.integers(1, min(6, max_dim)))
        params: dict[str, Any] = {"dim": dim, "seed": draw(st.integers(0, 999)), "scale": draw(_f(0.0, 3.0)),
                                  "alpha": draw(_f(-0.5, 1.0)), "b": [draw(_f(-1.0, 1.0)) for _ in range(dim)]}
    elif kind == "cnf_sine":
        dim, params = 1, {"a": draw(_f(-2.0, 2.0))}
    else:
        dim = draw(st.integers(1, min(8, max_dim)))
        params = {"dim": dim, "hidden": draw(st.integers(2, 16)), "depth": draw(st.integers(1, 3)),
                  "activation": draw(st.sampled_from(["tanh", "softplus"])), "seed": draw(st.integers(0, 999)),
                  "scale": draw(_f(0.5, 3.0))}
    params.update({"mean": [draw(_f(-1.0, 1.0)) for _ in range(dim)], "std": [draw(_f(0.3, 2.0)) for _ in range(dim)],
                   "t1": draw(st.sampled_from([1.0, 0.5, 2.0])), "data_seed": draw(st.integers(0, 999)),
                   "size": draw(st.integers(1, 8))})
    return {"kind": kind, "params": params}


def cnf_problems(kinds: Sequence[str] = CNF_KINDS, max_dim: int = 8) -> st.SearchStrategy:
    """Generated :class:`~odeverify.problems.flows.CNFProblem` s (see :func:`cnf_problem_specs`)."""
    from .problems.flow_specs import cnf_from_spec

    return cnf_problem_specs(kinds, max_dim).map(cnf_from_spec)


# ----------------------------------------------------------------------------- irregular times
@st.composite
def irregular_times(draw: Any, t_span: tuple[float, float] = (0.0, 4.0), min_count: int = 1,
                    max_count: int = 40) -> list[float]:
    """Strictly increasing observation times in ``(t0, t1]``: uneven spacing, with drawn
    near-duplicate pairs (a time and one ``gap`` after it, ``gap`` from 1e-9 to 1e-3 of the
    span), and times as close to t0 as a float allows (they found that a span of 2e-323
    crashed the loop's error estimate, now fixed). Shrinks towards one time."""
    t0, t1 = float(t_span[0]), float(t_span[1])
    fr = draw(st.lists(st.floats(0.0, 1.0, exclude_min=True), min_size=min_count, max_size=max_count))
    times = sorted({t0 + f * (t1 - t0) for f in fr} - {t0})
    if times and draw(st.booleans()):
        gap = draw(st.sampled_from([1e-9, 1e-6, 1e-3])) * (t1 - t0)
        picks = draw(st.lists(st.sampled_from(times), max_size=3, unique=True))
        times = sorted(set(times) | {min(t + gap, t1) for t in picks})
    times = [float(t) for t, u in zip(times, times[1:] + [math.inf]) if u > t]
    return times or [t1]


@st.composite
def irregular_problem_specs(draw: Any, max_samples: int = 4, max_count: int = 40) -> dict:
    """A spec dict of an irregular batch (:func:`odeverify.problems.irregular.from_irregular_spec`):
    a linear problem of a drawn spectrum (a damped rotation, or real decays with one), 1 to
    ``max_samples`` samples, each with its own :func:`irregular_times` (different counts).
    Shrinks towards one sample observed once."""
    from .problems.irregular import irregular_batch

    span = (0.0, float(draw(st.sampled_from([4.0, 1.0, 10.0]))))
    rot = complex(-draw(_f(0.0, 0.5)), draw(_f(0.2, 3.0)))
    eigs = [rot, rot.conjugate()]
    if draw(st.booleans()):
        eigs.append(-draw(_f(0.1, 2.0)))
    samples = draw(st.integers(1, max_samples))
    times = [draw(irregular_times(span, 1, max_count)) for _ in range(samples)]
    spec = irregular_batch(times=times, eigenvalues=eigs, t_span=span, seed=draw(st.integers(0, 999))).spec
    import json
    return json.loads(spec)


__all__ += ["irregular_times", "irregular_problem_specs"]


# ----------------------------------------------------------------------------- event problems
@st.composite
def event_problem_specs(draw: Any, kinds: Sequence[str] = ("event_ball", "event_plane")) -> dict:
    """A spec dict of a generated event problem (:func:`odeverify.problems.events.event_from_spec`):
    a bouncing ball (drawn height, gravity, restitution 0.3..0.95, initial velocity, 1..15
    impacts before the horizon, which ends before the Zeno time) or a decaying rotation crossing
    a drawn line ``c.z = d`` (drawn decay, frequency, radius, angle, offset ``|d| <= 0.6 r0``, every
    event, only the first, or each terminal with a restart, in a drawn direction). The horizon keeps
    the envelope ``r0 e^(-a t)`` above ``1.5 |d|``, so every crossing is transversal (``|sin| >= 0.74``:
    no near-grazing case whose count the last ulp decides). Shrinks towards a ball dropped from 0.1."""
    kind = draw(st.sampled_from(list(kinds)))
    if kind == "event_ball":
        params: dict[str, Any] = {"height": draw(_f(0.1, 10.0)), "gravity": draw(_f(1.0, 20.0)),
                                  "restitution": draw(_f(0.3, 0.95)), "velocity": draw(_f(-1.0, 3.0)),
                                  "bounces": draw(st.integers(1, 15))}
        return {"kind": kind, "params": params}
    decay, omega, radius = draw(_f(0.0, 0.5)), draw(_f(0.5, 5.0)), draw(_f(0.5, 2.0))
    offset = float(f"{draw(_f(-0.6, 0.6)) * radius:.3g}")
    horizon = draw(_f(1.0, 12.0))
    if decay > 0 and offset != 0:
        horizon = min(horizon, float(f"{math.log(radius / (1.5 * abs(offset))) / decay:.3g}"))
    mode = draw(st.sampled_from(["all", "terminal", "restart"]))
    params = {"decay": decay, "omega": omega, "radius": radius, "angle": draw(_f(-3.14, 3.14)), "offset": offset,
              "horizon": max(horizon, 0.1), "direction": draw(st.sampled_from([0, 1, -1])),
              "terminal": mode == "terminal", "restart": mode == "restart"}
    return {"kind": kind, "params": params}


__all__ += ["event_problem_specs"]


# ----------------------------------------------------------------------------- CDE problems
@st.composite
def cde_problem_specs(draw: Any, interpolations: Sequence[str] = ("linear", "rectilinear", "natural_cubic",
                                                                   "hermite_cubic_bd"),
                      fields: Sequence[str] = ("linear", "mlp")) -> dict:
    """A spec dict of a generated CDE (:func:`odeverify.problems.cde.cde_from_spec`): a drawn
    interpolation of drawn smooth data (1-3 channels of one or two sines, drawn amplitude, frequency
    0.2-3 and phase, plus a drawn linear trend) at 5-40 irregular times drawn by a rule (jittered,
    smoothly warped or Poisson arrivals) on a drawn span, maybe with time as a channel and missing
    values filled by a named rule; the field linear (seeded, maybe commuting: closed forms) or a tanh
    MLP. Shrinks towards linear interpolation of one sine at 5 jittered times."""
    interp = draw(st.sampled_from(list(interpolations)))
    c = draw(st.integers(1, 3))
    terms = draw(st.integers(1, 2))
    path = {"amp": [[round(draw(_f(0.2, 2.0)), 3) for _ in range(terms)] for _ in range(c)],
            "freq": [[round(draw(_f(0.2, 3.0)), 3) for _ in range(terms)] for _ in range(c)],
            "phase": [[round(draw(_f(-3.0, 3.0)), 3) for _ in range(terms)] for _ in range(c)],
            "poly": [[0.0, round(draw(_f(-1.0, 1.0)), 3)] for _ in range(c)]}
    t0 = round(draw(_f(-2.0, 2.0)), 2)
    times = {"rule": draw(st.sampled_from(["jitter", "warped", "poisson"])), "n": draw(st.integers(5, 40)),
             "span": [t0, round(t0 + draw(_f(0.5, 4.0)), 2)], "seed": draw(st.integers(0, 2 ** 16)),
             "spread": round(draw(_f(0.0, 0.8)), 2)}
    ftype = draw(st.sampled_from(list(fields)))
    field: dict[str, Any] = {"type": ftype, "hidden": draw(st.integers(1, 3)), "seed": draw(st.integers(0, 2 ** 16)),
                             "scale": round(draw(_f(0.1, 1.0)), 2)}
    if ftype == "linear":
        field["commuting"] = draw(st.booleans())
        field["bias"] = not field["commuting"] and draw(st.booleans())
    else:
        field["width"] = draw(st.integers(2, 16))
    include_time = interp == "rectilinear" or draw(st.booleans())
    missing = None
    if draw(st.booleans()):
        missing = {"frac": round(draw(_f(0.05, 0.4)), 2), "seed": draw(st.integers(0, 2 ** 16)),
                   "fill": draw(st.sampled_from(["forward", "linear"]))}
    return {"kind": "cde", "interp": interp, "path": path, "times": times, "field": field,
            "include_time": include_time, "missing": missing}


__all__ += ["cde_problem_specs"]
