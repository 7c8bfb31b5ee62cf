"""``odeverify explore``: hunt for a counterexample to the properties on generated problems,
against any backend (a user's plug-in included), and shrink it to a small reproduction.

A *case* is plain JSON: ``{"property", "backend", "method", "problem": <spec>, "kwargs"}``;
:func:`run_case` turns it into a :class:`~odeverify.records.Record`. An *exploration* draws
cases with hypothesis (:mod:`odeverify.strategies`) for one property: each example draws a
method of the backend to which the property applies, a problem, and the conditions
(tolerances, output times, steps, factors). A record with verdict ``fail`` (or ``error``:
the property itself raised) is a counterexample: hypothesis shrinks it, and the shrunk case
is printed with its measured and expected figures and a one-line reproduction
(``odeverify explore --replay '<case>'``) and appended to ``failures.jsonl`` under the
working directory (``.odeverify/explore/``): the next run replays the saved cases of each
property first, seeded or not (unseeded runs also keep hypothesis's example database
there; hypothesis reads no database when a seed is given). A failing record that an entry of
``expected_failures.toml`` excuses is a *known deviation* (a positive control when the
search re-finds it): reported, never a failure.
"""
from __future__ import annotations

import importlib

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import backends, expectations
from ._registry import Registry
from .backends import MethodInfo, UnsupportedOption
from .backends.base import is_implicit
from .problems.specs import canonical, from_spec
from .properties import (backend_agreement, convergence_order, embedded_estimate_bound,
                         tolerance_proportionality)
from .properties import metamorphic as mm
from .records import Record

DEFAULT_DIR = Path(".odeverify") / "explore"
CASE_SCHEMA = "odeverify.case/1"


@dataclass(frozen=True)
class Exploration:
    """One property searched over generated cases.

    ``applies(info, backend_name)`` says whether a method can be graded; ``draw(data, info)``
    returns the case's ``problem`` spec (a dict) and ``kwargs``; ``run(problem, method, *,
    backend, **kwargs)`` returns the record."""

    name: str
    description: str
    applies: Callable[[MethodInfo, str], bool]
    draw: Callable[[Any, MethodInfo], tuple[dict, dict]]
    run: Callable[..., Record]
    kinds: tuple[str, ...] = ()
    #: "ode": drawn over the backend's ODE methods (``Capabilities.methods``); "sde": over its
    #: SDE methods (``Capabilities.sde_methods``), on generated SDE problems; "flows": over its
    #: ODE methods, on generated CNF problems (:mod:`odeverify.problems.flow_specs`)
    family: str = "ode"
    #: ``methods(backend) -> {name: MethodInfo}``: the methods it is drawn over, where they are
    #: not the backend's ODE or SDE methods (a CDE-only library's CDE methods); None: by family
    methods: Callable[[Any], Mapping[str, MethodInfo]] | None = None

    def method_table(self, backend: Any) -> Mapping[str, MethodInfo]:
        """The methods of ``backend`` (a Backend) this exploration is drawn over."""
        if self.methods is not None:
            return dict(self.methods(backend) or {})
        caps = backend.capabilities()
        return caps.sde_methods if self.family == "sde" else caps.methods


EXPLORATIONS: Registry[Exploration] = Registry("exploration")


def load_families() -> None:
    """Register the explorations of the check families (``odeverify.families``: CDEs, events,
    irregular times, ...), which live in their family modules, as plug-ins do: imported by name
    when a search or a replay needs the whole registry."""
    importlib.import_module("odeverify.families")

_EXACT = ("linear", "manufactured", "warped", "jordan", "hamiltonian")
_FACTORS = (0.25, 0.5, 2.0, 4.0, 1024.0, 2.0 ** -10)


def _st() -> Any:
    from hypothesis import strategies as st

    return st


def _problem(data: Any, kinds: Sequence[str], spans: bool = True) -> dict:
    from .strategies import problem_specs

    return data.draw(problem_specs(kinds, spans=spans), label="problem")


def _factor(data: Any, label: str) -> float:
    st = _st()
    return data.draw(st.one_of(st.sampled_from(_FACTORS),
                               st.floats(0.1, 10.0).map(lambda x: float(f"{x:.4g}"))), label=label)


def _tol(data: Any, lo: float = 1e-10, hi: float = 1e-4) -> dict:
    from .strategies import tolerances

    return data.draw(tolerances(min_rtol=lo, max_rtol=hi), label="tolerances")


def _adaptive(info: MethodInfo, backend: str) -> bool:
    return bool(info.adaptive)


def _fixed(info: MethodInfo, backend: str) -> bool:
    return bool(info.fixed)


def _register(name: str, description: str, applies, draw, run, kinds=(), family: str = "ode", methods=None) -> None:
    EXPLORATIONS.register(name, Exploration(name, description, applies, draw, run, tuple(kinds), family, methods))


def problem_of(spec: dict | str) -> Any:
    """The problem of a case's spec: a generated ODE problem, an SDE one (kind ``sde_*``) or a
    CNF one (kind ``cnf_*``)."""
    from .problems.flow_specs import cnf_from_spec, is_cnf_spec
    from .problems.sde_specs import is_sde_spec, sde_from_spec

    data = json.loads(spec) if isinstance(spec, str) else spec
    if is_cnf_spec(data):
        return cnf_from_spec(data)
    if str(data.get("kind", "")).startswith("event_"):  # an event problem (problems/events.py)
        from .problems.events import event_from_spec
        return event_from_spec(data)
    if data.get("kind") == "cde":  # a controlled differential equation (problems/cde.py)
        from .problems.cde import cde_from_spec
        return cde_from_spec(data)
    if data.get("kind") == "irregular":  # an irregular batch (problems/irregular.py)
        from .problems.irregular import from_irregular_spec
        return from_irregular_spec(data)
    return sde_from_spec(data) if is_sde_spec(data) else from_spec(data)


def _draw_order(data, info):
    return _problem(data, _EXACT), {}


def _draw_differential(data, info):
    from .strategies import output_times

    spec = _problem(data, _EXACT + ("mlp",))
    kw = _tol(data)
    if spec["kind"] != "mlp" and data.draw(_st().booleans(), label="output times"):
        kw["t_eval"] = data.draw(output_times(from_spec(spec).t_span), label="t_eval")
    return spec, kw


def _draw_fixed_agreement(data, info):
    from .strategies import fixed_steps, output_times

    spec = _problem(data, _EXACT)
    span = from_spec(spec).t_span
    kw: dict[str, Any] = {"n_steps": data.draw(fixed_steps(span, info.order), label="n_steps")}
    if data.draw(_st().booleans(), label="output times"):
        kw["t_eval"] = data.draw(output_times(span), label="t_eval")
    return spec, kw


def _draw_tolerance_only(kinds):
    def draw(data, info):
        spec = _problem(data, kinds)
        kw = _tol(data, 1e-9, 1e-4)
        return spec, {"rtol": kw["rtol"], "atol": kw["atol"]}

    return draw


def _draw_scaling(arg):
    def draw(data, info):
        spec = _problem(data, _EXACT + ("mlp",))
        kw = _tol(data, 1e-9, 1e-4)
        return spec, {"rtol": kw["rtol"], "atol": kw["atol"], arg: _factor(data, arg)}

    return draw


def _draw_shift(data, info):
    spec = _problem(data, ("linear", "jordan", "hamiltonian"))
    kw = _tol(data, 1e-9, 1e-4)
    shift = data.draw(_st().floats(-10.0, 10.0).filter(lambda s: abs(s) > 1e-3).map(lambda s: float(f"{s:.4g}")),
                      label="shift")
    return spec, {"rtol": kw["rtol"], "atol": kw["atol"], "shift": shift}


def _draw_superposition(data, info):
    from .strategies import fixed_steps

    spec = _problem(data, ("linear", "jordan"))
    return spec, {"n_steps": data.draw(fixed_steps(from_spec(spec).t_span, info.order), label="n_steps"),
                  "seed": data.draw(_st().integers(0, 99), label="seed")}


def _draw_batch(data, info):
    st = _st()
    spec = _problem(data, _EXACT)
    return spec, {"batch": data.draw(st.integers(2, 6), label="batch"), "seed": data.draw(st.integers(0, 99))}


def _run_order(problem, method, *, backend, **kw):
    return convergence_order(problem, method, backend=backend, **kw)


def _run_tolerance(problem, method, *, backend, **kw):
    # the largest error over 8 output times: a drawn problem's error at t1 alone can sit at a
    # zero crossing of the global error for one tolerance and not the next
    return tolerance_proportionality(problem, method, backend=backend, times=8)


def _run_estimate(problem, method, *, backend, **kw):
    library = backends.get(backend).library if backend.startswith("reference") else "numpy"
    return embedded_estimate_bound(problem, method, library=library)


def _run_fixed_agreement(problem, method, *, backend, **kw):
    return backend_agreement(problem, method, backend=backend, final_only="t_eval" in kw, **kw)


_register("convergence_order", "fixed-step order on generated nonlinear, time-dependent and linear problems,"
          " over drawn spans (instability and order deficits fail)", _fixed, _draw_order, _run_order)
_register("differential_agreement", "the solution against the closed form at a drawn tolerance and output"
          " times, bounded by the reference's error on the same tableau (not run on the NumPy reference:"
          " it would grade itself)", lambda info, b: bool(info.adaptive) and b != "reference", _draw_differential,
          mm.differential_agreement)
_register("fixed_step_agreement", "fixed-step solves of a shared tableau agree with the reference to a few"
          " ulps per step at t1, on drawn spans, step counts and output times (which shape the step grid)",
          lambda info, b: bool(info.fixed and info.tableau) and b != "reference", _draw_fixed_agreement,
          _run_fixed_agreement)
def _draw_nonlinear(data, info):
    """A nonlinear problem: on a linear one an embedded pair's estimate can have a higher order
    than its tableau's (fewer order conditions apply), so the model exponent p/(q+1) does not
    hold there (reference bosh3 and scipy RK23 both measured 3/4 on a scalar linear
    manufactured problem)."""
    spec = _problem(data, ("manufactured", "warped"))
    p = spec["params"]
    if spec["kind"] == "manufactured":
        p["beta"] = max(p["beta"], 0.1)
    else:
        p["nonlinear"] = True
    return spec, {}


_register("tolerance_proportionality", "the error at t1 scales like the tolerance, on drawn nonlinear problems",
          _adaptive, _draw_nonlinear, _run_tolerance)
_register("embedded_estimate_bound", "the embedded estimate bounds the true local error, on drawn problems"
          " (reference backends: no other library exposes its estimate)",
          lambda info, b: bool(info.adaptive) and b.startswith("reference") and not is_implicit(info),
          lambda data, info: (_problem(data, ("manufactured", "warped")), {}), _run_estimate)
_register("time_reversal", "forward then backward returns the start, for non-dissipative spectra",
          _adaptive, _draw_tolerance_only(("hamiltonian", "linear")), mm.time_reversal)
_register("time_rescaling", "t -> c t, f -> f / c: same steps and bits for powers of two, same solution"
          " otherwise", _adaptive, _draw_scaling("c"), mm.time_rescaling)
_register("unit_invariance", "y -> s y (atol with it): same steps and bits for powers of two, same solution"
          " otherwise", _adaptive, _draw_scaling("s"), mm.unit_invariance)
_register("time_shift", "an autonomous field on a shifted span gives the same solution", _adaptive, _draw_shift,
          mm.time_shift)
_register("linear_superposition", "y(a + b) = y(a) + y(b) to round-off for linear fields at fixed steps",
          _fixed, _draw_superposition, mm.linear_superposition)
_register("batch_permutation", "a permuted batch of initial values of different scales gives the permuted"
          " solution", _adaptive, _draw_batch, mm.batch_permutation)


def _gradient_modes(backend: str, discrete: bool) -> tuple[str, ...]:
    caps = backends.get(backend).capabilities()
    return tuple(caps.discrete_gradient_modes) if discrete else tuple(caps.gradient_modes)


def _draw_loss(data: Any, spec: dict) -> dict:
    """A loss as JSON (its output times, weight seed and quadratic term), drawn like
    :func:`odeverify.strategies.losses`."""
    from .strategies import losses

    loss = data.draw(losses(from_spec(spec)), label="loss")
    return {"t_eval": list(loss.t_eval), "seed": int(data.draw(_st().integers(0, 999), label="loss seed")),
            "quadratic": loss.quadratic.tolist() if loss.diagonal else loss.quadratic}


def _loss(problem: Any, spec: dict) -> Any:
    from .gradients import Loss

    return Loss.seeded(spec["t_eval"], problem.n, seed=spec["seed"], quadratic=spec["quadratic"])


def _gradient_applies(discrete: bool, fixed: bool):
    def applies(info: MethodInfo, backend: str) -> bool:
        b = backends.get(backend)
        if not b.available() or not _gradient_modes(backend, discrete):
            return False
        return bool(info.fixed if fixed else info.adaptive) and not is_implicit(info)

    return applies


def _draw_gradient(discrete: bool):
    def draw(data, info):
        st = _st()
        spec = _problem(data, ("linear", "jordan"))
        kw: dict[str, Any] = {"loss": _draw_loss(data, spec), "mode_index": data.draw(st.integers(0, 7),
                                                                                     label="mode")}
        if discrete:
            kw["n_steps"] = data.draw(st.integers(8, 40), label="n_steps")
        else:
            kw["rtol"] = float(f"{10 ** data.draw(st.floats(-9.0, -5.0), label='log10 rtol'):.2g}")
        return spec, kw

    return draw


def _run_gradient(discrete: bool):
    def run(problem, method, *, backend, loss, mode_index, **kw):
        from .properties.gradients import discrete_gradient_exactness, gradient_accuracy

        modes = _gradient_modes(backend, discrete)
        mode = modes[mode_index % len(modes)]
        fn = discrete_gradient_exactness if discrete else gradient_accuracy
        return fn(problem, method, mode, backend=backend, loss=_loss(problem, loss), **kw)

    return run


_register("gradient_exactness", "a discrete gradient mode equals central differences of the same fixed-step"
          " solve, on drawn linear and defective problems and drawn losses (times, weights, quadratic term)",
          _gradient_applies(True, True), _draw_gradient(True), _run_gradient(True))
_register("gradient_accuracy", "every gradient mode of an adaptive solve against the closed-form gradient"
          " (Van Loan), at a drawn tolerance, on drawn linear and defective problems and losses",
          _gradient_applies(False, False), _draw_gradient(False), _run_gradient(False))


def _draw_stiff_family(data, info):
    st = _st()
    n, seed = data.draw(st.integers(2, 5), label="n"), data.draw(st.integers(0, 999), label="seed")
    return {"kind": "stiff_linear", "params": {"ratio": 10.0, "n": n, "seed": seed}}, {"n": n, "seed": seed}


def _run_stiffness(problem, method, *, backend, n, seed):
    from .problems.stiff import stiff_linear_problem
    from .properties import stiffness_handling

    return stiffness_handling(method, backend=backend,
                              problem_factory=lambda ratio: stiff_linear_problem(ratio, n=n, seed=seed))


def _draw_reversible(data, info):
    spec = _problem(data, ("hamiltonian",), spans=False)
    return spec, {"n_steps": data.draw(_st().integers(16, 128), label="n_steps")}


def _run_reversible(problem, method, *, backend, n_steps):
    from .properties.gradients import reversibility_drift

    return reversibility_drift(problem, method, backend=backend, n_steps=n_steps)


_register("stiffness_handling", "on drawn stiff linear families (2-5 modes, seeded non-normal bases, ratios"
          " 1e1..1e6): A-stable methods' work stays bounded, explicit methods' work explodes",
          _adaptive, _draw_stiff_family, _run_stiffness)
_register("reversibility_drift", "an algebraically reversible method (diffrax ReversibleHeun) reconstructs its"
          " start to round-off on drawn Hamiltonian fields at drawn step counts",
          lambda info, b: b == "diffrax" and info.name == "ReversibleHeun", _draw_reversible, _run_reversible)


# ----------------------------------------------------------------------------- SDEs
#: paths and seeds of a drawn SDE case: enough for an interval of about +-0.05 on an order
#: (measured: 200 paths give +-0.03 to +-0.13), cheap enough for dozens of examples
SDE_EXPLORE_PATHS = 200
SDE_WEAK_EXPLORE_PATHS = 2000


def _sde_calculus(problem: Any, info: Any) -> Any:
    return problem if problem.calculus == info.calculus else problem.as_calculus(info.calculus)


def _draw_sde(exact_only: bool):
    def draw(data, info):
        from .strategies import SDE_EXACT_KINDS, SDE_KINDS, sde_problem_specs

        classes = [c for c in ("additive", "commutative", "general") if info.valid_for(c)]
        spec = data.draw(sde_problem_specs(SDE_EXACT_KINDS if exact_only else SDE_KINDS, classes), label="problem")
        return spec, {"seed": data.draw(_st().integers(0, 2**16), label="seed")}

    return draw


def _run_sde_strong(problem, method, *, backend, seed):
    from .properties.sde import sde_strong_order

    info = backends.get(backend).capabilities().sde_methods[method]
    return sde_strong_order(_sde_calculus(problem, info), method, backend=backend, paths=SDE_EXPLORE_PATHS, seed=seed)


def _run_sde_weak(problem, method, *, backend, seed):
    from .properties.sde import sde_weak_order

    info = backends.get(backend).capabilities().sde_methods[method]
    return sde_weak_order(_sde_calculus(problem, info), method, backend=backend, paths=SDE_WEAK_EXPLORE_PATHS,
                          seed=seed)


def _run_sde_agreement(problem, method, *, backend, seed):
    from .properties.sde import sde_pathwise_agreement

    info = backends.get(backend).capabilities().sde_methods[method]
    return sde_pathwise_agreement(_sde_calculus(problem, info), method, backend=backend, reference=info.reference,
                                  seed=seed)


def _run_ito_strat(problem, method, *, backend, seed):
    from .properties.sde import ito_stratonovich_consistency

    ito = "milstein_ito" if problem.noise_class != "general" else "euler"
    return ito_stratonovich_consistency(problem, method, ito, backend=backend, paths=SDE_EXPLORE_PATHS, seed=seed)


_register("sde_strong_order", "the strong order of an SDE method on drawn SDE problems (GBM, reducible nonlinear,"
          " linear with commuting noise, additive, non-commutative) of the noise classes it claims, with a"
          " bootstrap interval on the same Brownian paths at every step",
          lambda info, b: True, _draw_sde(False), _run_sde_strong, family="sde")
_register("sde_weak_order", "the weak order (E X, E X^2) of an SDE method on drawn problems with closed forms in"
          " W(t), with the exact solution as a control variate and antithetic paths",
          lambda info, b: True, _draw_sde(True), _run_sde_weak, family="sde")
_register("sde_pathwise_agreement", "a library's SDE method equals odeverify's method of the same step rule on the"
          " same Brownian path, to round-off, on drawn problems",
          lambda info, b: not b.startswith("reference") and getattr(info, "reference", None) is not None,
          _draw_sde(False), _run_sde_agreement, family="sde")
_register("ito_stratonovich_consistency", "a Stratonovich method on the Stratonovich form and an Itô method on the"
          " converted Itô form converge to the same solution on the same path, on drawn problems",
          lambda info, b: b.startswith("reference") and info.calculus == "stratonovich", _draw_sde(False),
          _run_ito_strat, family="sde")


# ----------------------------------------------------------------------------- flows
#: the exact trace estimators a drawn CNF case chooses between (the analytic ``jac`` or ``jvp``
#: products; ``autodiff`` needs PyTorch or JAX, Hutchinson is random: trace_agreement grades them)
FLOW_TRACES = ("jacobian", "jvp")


def _draw_cnf(data: Any) -> dict:
    from .strategies import cnf_problem_specs

    return data.draw(cnf_problem_specs(), label="problem")


def _flow_rtol(data: Any, info: MethodInfo) -> float:
    """A tolerance from 1e-4 down to the tightest of ``tolerance_proportionality``'s sweep for the
    method's order (10^-(2 + 2p), at most 1e-10): Heun at 1e-9 took 20 s on a 6-D MLP CNF."""
    from .properties.tolerance import default_tols

    lowest = math.log10(min(default_tols(info.order or 4)))  # a variable-order method: as order 4
    return float(f"{10 ** data.draw(_st().floats(lowest, -4.0), label='log10 rtol'):.2g}")


def _draw_flow(tolerance: bool, seeded: bool = False):
    def draw(data, info):
        spec = _draw_cnf(data)
        kw: dict[str, Any] = {"trace": data.draw(_st().sampled_from(FLOW_TRACES), label="trace")}
        if tolerance:
            kw["rtol"] = _flow_rtol(data, info)
        if seeded:
            kw["seed"] = data.draw(_st().integers(0, 999), label="seed")
        return spec, kw

    return draw


def _draw_trace_agreement(data, info):
    from . import _xp

    st = _st()
    spec = _draw_cnf(data)
    t1 = float(spec["params"]["t1"])
    libraries = [lib for lib in ("numpy", "torch", "jax") if lib == "numpy" or _xp.available(lib)]
    times = data.draw(st.lists(st.floats(0.0, t1).map(lambda x: round(x, 3)), min_size=1, max_size=3,
                               unique=True), label="times")
    return spec, {"library": data.draw(st.sampled_from(libraries), label="library"), "times": sorted(times)}


def _flow_property(name: str):
    def run(problem, method, *, backend, **kw):
        from .properties import flows

        return getattr(flows, name)(problem, method, backend=backend, **kw)

    return run


def _run_trace_agreement(problem, method, *, backend, library, times):
    from .properties.flows import trace_agreement

    return trace_agreement(problem, library=library, times=tuple(times))


def _explicit_adaptive(info: MethodInfo, backend: str) -> bool:
    return bool(info.adaptive) and not is_implicit(info)


_register("cnf_log_density", "a CNF's log-likelihood at seeded data points against the closed form (affine, sine)"
          " or Liouville's formula (MLP fields) on drawn CNFs, by the analytic Jacobian or JVP trace: the"
          " tolerance exponent of an adaptive method, the order of a fixed-step one (implicit methods too: the"
          " reference's Kvaerno3 sweeps a 6-D MLP CNF of 8 points in 3 s)",
          lambda info, b: True, _draw_flow(False), _flow_property("cnf_log_density"), family="flows")
_register("cnf_liouville", "the integrated trace of a density solve at a drawn tolerance against Liouville's"
          " log|det| of the variational equation, on drawn CNFs", _explicit_adaptive, _draw_flow(True),
          _flow_property("cnf_liouville"), family="flows")
_register("cnf_invertibility", "sampling then density evaluation returns the seeded base points and their"
          " log-density at a drawn tolerance, on drawn CNFs", _explicit_adaptive, _draw_flow(True, seeded=True),
          _flow_property("cnf_invertibility"), family="flows")
_register("trace_agreement", "the analytic Jacobian and JVP traces (and autodiff's on PyTorch and JAX) against"
          " a five-point finite difference at drawn times, on drawn CNFs (the reference only: no solve)",
          # no method is involved: one of the reference's stands for the case
          lambda info, b: b == "reference" and info.name == "dopri5", _draw_trace_agreement, _run_trace_agreement,
          family="flows")


# ----------------------------------------------------------------------------- cases
def make_case(prop: str, backend: str, method: str, problem: dict | str, kwargs: dict) -> dict:
    spec = json.loads(problem) if isinstance(problem, str) else problem
    return {"schema": CASE_SCHEMA, "property": prop, "backend": backend, "method": method,
            "problem": canonical(spec), "kwargs": kwargs}


def case_line(case: dict) -> str:
    return json.dumps(case, sort_keys=True, separators=(",", ":"))


def run_case(case: dict | str) -> Record:
    """Run one case (a dict or its JSON line) and return its record, with the expected
    deviations applied; an exception inside the property becomes an ``error`` record."""
    if isinstance(case, str):
        try:
            case = json.loads(case)
        except json.JSONDecodeError as exc:
            raise ValueError(f"case={case!r} is not valid JSON ({exc})") from None
    missing = {"property", "backend", "method", "problem"} - set(case)
    if missing:
        raise ValueError(f"case is missing {sorted(missing)}; expected the keys of an explore case")
    load_families()
    expl = EXPLORATIONS.get(case["property"])
    problem = problem_of(case["problem"])
    try:
        rec = expl.run(problem, case["method"], backend=case["backend"], **case.get("kwargs", {}))
    except UnsupportedOption:
        raise
    except Exception as exc:  # noqa: BLE001 - a crash of the property is a finding too
        rec = Record(property=case["property"], method=case["method"], problem=problem.name, measured=None,
                     expected=None, verdict="error", status="failed", backend=case["backend"],
                     message=f"{type(exc).__name__}: {exc}")
    rec.details = {**rec.details, "case": case_line(case)}
    return expectations.apply(rec)


# ----------------------------------------------------------------------------- the search
@dataclass
class Finding:
    case: dict
    record: Record

    @property
    def known(self) -> bool:
        return self.record.verdict == "deviation"

    def describe(self) -> str:
        r = self.record
        spec = self.case["problem"]
        kw = ", ".join(f"{k}={v}" for k, v in self.case.get("kwargs", {}).items()) or "defaults"
        m = "n/a" if r.measured is None else f"{r.measured:.4g}"
        e = "n/a" if r.expected is None else f"{r.expected:.4g}"
        head = "KNOWN DEVIATION" if self.known else ("ERROR" if r.verdict == "error" else "FAIL")
        return "\n".join([
            f"{head}: {r.property} on {self.case['backend']}/{self.case['method']}",
            f"  problem:    {r.problem}  {problem_of(spec).description if isinstance(spec, dict) else ''}",
            f"  spec:       {spec}",
            f"  conditions: {kw}",
            f"  measured:   {m}   expected: {e}",
            f"  why:        {r.message}",
            f"  reproduce:  odeverify explore --replay '{case_line(self.case)}'",
        ])


@dataclass
class ExploreResult:
    backend: str
    examples: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    known: list[Finding] = field(default_factory=list)
    not_applicable: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0
    notes: list[str] = field(default_factory=list)  #: a worker's log lines (parallel runs)

    @property
    def failed(self) -> bool:
        return bool(self.findings)


class _Found(AssertionError):
    pass


def _atomic_append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _save_finding(directory: str | os.PathLike, finding: Finding) -> None:
    """Append a finding to ``directory/failures.jsonl``, where the next run replays it first."""
    _atomic_append(Path(directory) / "failures.jsonl", json.dumps(
        {"case": finding.case, "record": finding.record.to_dict()}, sort_keys=True))


def _search(expl: Exploration, backend: str, infos: list[MethodInfo], *, examples: int, seed: int | None,
            database: Any, result: ExploreResult, log: Callable[[str], None],
            deadline: float | None = None) -> Finding | None:
    from hypothesis import HealthCheck, Phase, Verbosity, assume, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    last: dict[str, Any] = {}
    names = [i.name for i in infos]

    def body(data: Any) -> None:
        if deadline is not None and time.monotonic() > deadline:
            assume(False)  # the budget is spent: the remaining examples are rejected, cheaply
        method = data.draw(st.sampled_from(names), label="method")
        info = next(i for i in infos if i.name == method)
        try:
            spec, kwargs = expl.draw(data, info)
            problem_of(spec)
        except ValueError:  # a drawn span on which the closed form overflows: not a test case
            assume(False)
            return
        case = make_case(expl.name, backend, method, spec, kwargs)
        try:
            rec = run_case(case)
        except UnsupportedOption:
            assume(False)
            return
        result.examples[expl.name] = result.examples.get(expl.name, 0) + 1
        if rec.verdict == "deviation":
            # a positive control: one per (property, method) is enough to show it was re-found
            if not any(f.case["method"] == method and f.case["property"] == expl.name for f in result.known):
                result.known.append(Finding(case, rec))
            return
        if rec.verdict in ("fail", "error"):
            last["finding"] = Finding(case, rec)
            raise _Found(rec.describe())

    test = given(st.data())(body)
    test = settings(max_examples=examples, deadline=None, database=database, verbosity=Verbosity.quiet,
                    suppress_health_check=list(HealthCheck), print_blob=False,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])(test)
    if seed is not None:
        test = hseed(seed)(test)
    # one database entry per (property, backend), whatever the seed: a failure found once is
    # replayed first by every later run
    test._hypothesis_internal_database_key = f"odeverify-explore:{expl.name}:{backend}".encode()
    try:
        test()
    except _Found:
        return last.get("finding")
    except Exception as exc:  # hypothesis itself gave up (e.g. every draw not applicable)
        if deadline is not None and time.monotonic() > deadline:
            return None  # rejecting every example once the budget is spent can read as flaky data
        log(f"  {expl.name}: search stopped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return None


def _replay_saved(directory: str | os.PathLike | None, prop: str, backend: str, methods: set[str],
                  log: Callable[[str], None]) -> Finding | None:
    """Replay the saved counterexamples of (property, backend) first, newest first: one that
    still fails is the finding, without a search (hypothesis's own database is not read when
    a seed is given, so this keeps replay deterministic)."""
    if directory is None:
        return None
    path = Path(directory) / "failures.jsonl"
    if not path.exists():
        return None
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            case = json.loads(line)["case"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a torn last line from an interrupted run
        if case.get("property") == prop and case.get("backend") == backend and case.get("method") in methods:
            cases.append(case)
    for case in reversed(cases):
        try:
            rec = run_case(case)
        except (UnsupportedOption, ValueError):
            continue
        if rec.verdict in ("fail", "error"):
            log(f"  {prop}: a saved counterexample still fails (replayed from {path})")
            return Finding(case, rec)
    return None


def run_unit(*, backend: str, prop: str, methods: list[str] | None, examples: int | None, budget: float | None,
             seed: int | None, directory: str | None) -> dict[str, Any]:
    """One property's search, as a unit of :mod:`odeverify.parallel` (its findings are saved
    by the caller, so that a cluster run keeps them on the client)."""
    notes: list[str] = []
    result = explore(backend, properties=[prop], methods=methods, examples=examples, budget=budget, seed=seed,
                     directory=directory, log=notes.append, _save=False)
    # what the caller has no line of its own for (a stopped search, a replayed counterexample)
    result.notes = [n for n in notes if not n.startswith("[")]
    return {"records": [f.record for f in result.findings], "value": result}


def _explore_parallel(b: Any, expls: list[Exploration], methods: list[str] | None, examples: int | None,
                      budget: float | None, seed: int | None, directory: Path | None,
                      log: Callable[[str], None], parallel: dict[str, Any]) -> ExploreResult:
    """Each property's search in its own worker (:mod:`odeverify.parallel`). A budget is shared
    out: each property gets ``budget x jobs / properties`` seconds, so the whole search takes
    about ``budget``."""
    from .parallel import Unit, run_units

    start = time.monotonic()
    result = ExploreResult(backend=b.name)
    lanes = parallel.get("workers") or parallel.get("jobs") or 1
    share = None if budget is None else budget * min(lanes, len(expls)) / max(len(expls), 1)
    units = [Unit(label=f"explore {e.name} on {b.name}", target="odeverify.explore:run_unit",
                  kwargs=dict(backend=b.name, prop=e.name, methods=methods, examples=examples, budget=share,
                              seed=seed, directory=None if directory is None else str(directory)),
                  backend=b.name, property=e.name) for e in expls]

    def on_outcome(out: Any, unit: Unit) -> None:
        name = unit.property
        if out.error is not None:
            rec = out.error_record(unit)
            result.findings.append(Finding({"property": name, "backend": b.name, "method": "*", "problem": "-",
                                            "kwargs": {}}, rec))
            log(f"[{time.monotonic() - start:6.1f}s] {name} on {b.name}: {out.error}")
            return
        got: ExploreResult = out.value
        for note in got.notes:
            log(note)
        result.examples.update(got.examples)
        result.known += got.known
        result.not_applicable.update(got.not_applicable)
        for f in got.findings:
            result.findings.append(f)
            if directory is not None:
                _save_finding(directory, f)
        log(f"[{time.monotonic() - start:6.1f}s] {name} on {b.name}: {got.examples.get(name, 0)} examples"
            f" ({out.wall_s:.1f}s in {out.worker}){', counterexample found' if got.findings else ''}")

    run_units(units, on_outcome=on_outcome, **parallel)
    # the order of a serial run: by property, whatever order the workers finished in
    order = {e.name: i for i, e in enumerate(expls)}
    result.findings.sort(key=lambda f: order.get(f.case.get("property"), len(order)))
    result.known.sort(key=lambda f: order.get(f.case.get("property"), len(order)))
    result.examples = {e.name: result.examples[e.name] for e in expls if e.name in result.examples}
    result.elapsed = time.monotonic() - start
    return result


def explore(backend: str, *, properties: Iterable[str] | None = None, methods: Iterable[str] | None = None,
            examples: int | None = None, budget: float | None = None, seed: int | None = None,
            directory: str | os.PathLike | None = DEFAULT_DIR, log: Callable[[str], None] | None = None,
            parallel: dict[str, Any] | None = None, _save: bool = True) -> ExploreResult:
    """Search every applicable exploration (or ``properties``) against ``backend``.

    ``examples`` bounds the examples per property and round; ``budget`` (seconds) repeats
    rounds with fresh seeds until it is spent (each round is ``examples`` or 10 examples per
    property). ``directory`` holds hypothesis's example database and ``failures.jsonl``
    (None: no database, nothing written). Returns the examples run, the new findings (shrunk)
    and the known deviations re-found. ``parallel`` (``jobs``, ``timeout``, ``scheduler``,
    ``workers`` of :func:`odeverify.parallel.run_units`) searches the properties in worker
    processes or on a Dask cluster."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if examples is not None and (isinstance(examples, bool) or not isinstance(examples, int) or examples < 1):
        raise ValueError(f"examples={examples!r}, but it must be an int >= 1")
    if budget is not None and not (isinstance(budget, (int, float)) and budget > 0 and math.isfinite(budget)):
        raise ValueError(f"budget={budget!r}, but it must be a number of seconds > 0")
    b = backends.get(backend)
    load_families()
    names = list(properties) if properties is not None else list(EXPLORATIONS.names())
    expls = [EXPLORATIONS.get(n) for n in names]  # unknown names fail with the choices
    result = ExploreResult(backend=b.name)
    if not b.available():
        raise ValueError(f"backend={b.name!r} is not installed: {b.install_hint}")
    caps = b.capabilities()
    tables = {e.name: e.method_table(b) for e in expls}
    if methods is not None:
        methods = list(methods)
        known = set(caps.methods) | set(caps.sde_methods) | {m for t in tables.values() for m in t}
        for m in methods:
            if m not in known:
                caps.method(m, b.name)  # raises naming the choices
    directory = None if directory is None else Path(directory)
    if parallel is not None and len(expls) > 1:  # each worker opens the example database itself
        return _explore_parallel(b, expls, methods, examples, budget,
                                 seed, directory, log, parallel)
    database = None
    if directory is not None:
        from hypothesis.database import DirectoryBasedExampleDatabase

        database = DirectoryBasedExampleDatabase(str(directory / "db"))
    # rounds of 50 with a budget: each round restarts hypothesis at its simplest example
    per_round = examples if examples is not None else (50 if budget is not None else 10)
    start = time.monotonic()
    rnd = 0
    pending = list(expls)
    while pending:
        for expl in list(pending):
            usable = [i for i in tables[expl.name].values()
                      if (methods is None or i.name in methods) and expl.applies(i, b.name)]
            if not usable:
                result.not_applicable[expl.name] = "no method of this backend fits"
                pending.remove(expl)
                continue
            t0 = time.monotonic()
            finding = _replay_saved(directory, expl.name, b.name, {i.name for i in usable}, log) if rnd == 0 else None
            if finding is None:
                finding = _search(expl, b.name, usable, examples=per_round,
                                  seed=None if seed is None else seed + rnd, database=database, result=result, log=log,
                                  deadline=None if budget is None else start + budget)
            elif directory is not None:  # already in failures.jsonl
                result.findings.append(finding)
                pending.remove(expl)
                continue
            n = result.examples.get(expl.name, 0)
            log(f"[{time.monotonic() - start:6.1f}s] {expl.name} on {b.name}: {n} examples"
                f" ({time.monotonic() - t0:.1f}s this round){', counterexample found' if finding else ''}")
            if finding is not None:
                result.findings.append(finding)
                pending.remove(expl)
                if directory is not None and _save:
                    _save_finding(directory, finding)
            if budget is not None and time.monotonic() - start > budget:
                pending = []
                break
        rnd += 1
        if budget is None:
            break
    result.elapsed = time.monotonic() - start
    return result


__all__ = ["EXPLORATIONS", "ExploreResult", "Exploration", "Finding", "case_line", "explore", "make_case",
           "run_case"]
