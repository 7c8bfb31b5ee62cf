"""The ``cde`` check family (issue 12, controlled differential equations): ``odeverify check --cde
[--backend NAME]``, its report section and its explorations.

Per method of the backend (its CDE methods, ``Backend.solve_cde``): ``cde_convergence`` on the
closed-form CDEs with steps on the knots (the method's order) and without (``min(p, k + 1)`` for a
C^k control), for a method with a fixed-step mode; ``cde_reparametrisation`` for an adaptive one.
Once per run (the shared unit): on the reference the interpolations' own ``cde_interpolation_order``
and ``cde_knot_conditions`` (odeverify's interpolants: the data every library is given), and on
every backend ``cde_gradient_accuracy`` of each of its CDE gradient modes. ``docs/cde.md``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import _xp, backends, expectations
from ..backends._cde_driver import cde_capabilities
from ..conformance import _safe, _Sink, _streaming, unit_names
from ..explore import _register
from ..problems import cde as cdep
from ..properties import cde as P
from ..properties import cde_agreement as A
from ..records import Record, unavailable_record
from . import Family, register_family

CDE_SHARED_UNIT = "(cde interpolations and gradients)"
PROPERTIES = tuple(P.PROPERTIES) + tuple(A.PROPERTIES)
#: the reference's methods of a quick and a full run
QUICK_REFERENCE_METHODS = ("rk4", "dopri5")
REFERENCE_METHODS = ("heun", "rk4", "bosh3", "dopri5", "tsit5")
#: the closed-form problems of the convergence records (quick: the first two)
CONVERGENCE_PROBLEMS = ("cde_linear_pl", "cde_commuting_natural_cubic", "cde_commuting_hermite_cubic_bd",
                        "cde_rectilinear", "cde_partial")
REPARAM_PROBLEMS = ("cde_linear_pl", "cde_neural")
GRADIENT_PROBLEMS = ("cde_linear_pl", "cde_rectilinear")


def cde_methods(backend: str, quick: bool) -> list[str]:
    """The CDE methods ``check --cde`` runs on ``backend`` by default (none where it solves no CDEs)."""
    b = backends.get(backend)
    if b.name == "reference":
        return list(QUICK_REFERENCE_METHODS if quick else REFERENCE_METHODS)
    if not b.available():
        return []
    caps = cde_capabilities(b)
    if caps is None:
        return []
    names = list(caps.methods)
    if not quick:
        return names
    # quick: the highest-order fixed-step method up to 4 and the first adaptive fifth-order pair
    fixed = [m for m in names if caps.methods[m].fixed and caps.methods[m].order <= 4]
    adaptive = [m for m in names if caps.methods[m].adaptive]
    pick = [max(fixed, key=lambda m: caps.methods[m].order)] if fixed else []
    if adaptive:
        pick.append(next((m for m in adaptive if caps.methods[m].order == 5), adaptive[0]))
    return list(dict.fromkeys(pick))


def validate_cde_method(backend: str, method: str) -> None:
    """ValueError naming ``method`` (with the closest match) if ``backend`` has no such CDE method."""
    import difflib

    b = backends.get(backend)
    caps = cde_capabilities(b) if b.available() else None
    known = list(caps.methods) if caps is not None else []
    if method not in known:
        close = difflib.get_close_matches(method, known, n=1)
        raise ValueError(f"--methods={method!r}, but {b.name} has no such CDE method; expected some of:"
                         f" {', '.join(known) or '(none)'}" + (f"; did you mean {close[0]!r}?" if close else ""))


def gradient_method(caps: Any) -> str:
    """The adaptive method the gradient records use: a fifth-order pair where there is one."""
    adaptive = [m for m, i in caps.methods.items() if i.adaptive]
    return next((m for m in adaptive if caps.methods[m].order == 5), max(adaptive, key=lambda m: caps.methods[m].order))


def _shared_records(backend: str, quick: bool) -> list[Record]:
    out: list[Record] = []
    b = backends.get(backend)
    if b.name == "reference":
        pl = cdep.get("cde_linear_pl")
        ends = _ends_problem()
        for kind in ("linear", "natural_cubic", "hermite_cubic_bd"):
            out.append(_safe(P.cde_interpolation_order, pl, kind, label=b.name))
            if kind == "natural_cubic" or not quick:
                out.append(_safe(P.cde_interpolation_order, ends, kind, label=b.name))
        for name in ("cde_linear_pl", "cde_rectilinear", "cde_commuting_natural_cubic",
                     "cde_commuting_hermite_cubic_bd", "cde_partial", "cde_neural"):
            out.append(_safe(P.cde_knot_conditions, cdep.get(name), label=b.name))
    # --- the libraries against odeverify on the same data (properties/cde_agreement.py):
    # interpolants, missing values, solutions, knot rules, fixed-grid orders, gradients
    if b.name in A.LIBRARIES:
        for fn, args, kwargs in A.library_cases(b.name, quick):
            out.append(_safe(fn, *args, label=b.name, **kwargs))
    caps = cde_capabilities(b)
    modes = caps.gradient_modes if caps is not None else ()
    if not modes:
        out.append(Record(property="cde_gradient_accuracy", method="*", problem="-", measured=None, expected=None,
                          verdict="skip", backend=b.name, message=f"{b.name} declares no CDE gradient modes"))
        return out
    method = gradient_method(caps)
    for name in GRADIENT_PROBLEMS[:1] if quick else GRADIENT_PROBLEMS:
        for mode in modes:
            out.append(_safe(P.cde_gradient_accuracy, cdep.get(name), mode, backend=b.name, method=method,
                             label=b.name))
        if b.name == "reference" and _xp.available("torch"):
            # every ODE gradient mode of the reference on to_problem(), stopping at the knots
            # (value_and_grad(tstops=...)): the continuous adjoints' backward solves and the
            # replays of checkpointing and interpolation evaluate f on each step's own side
            for mode in QUICK_ODE_MODES if quick else ODE_MODES:
                out.append(_safe(P.cde_gradient_accuracy, cdep.get(name), f"ode:{mode}", backend=b.name,
                                 method=method, label=b.name))
    return out


def _ends_problem() -> cdep.CDEProblem:
    """Smooth data whose x'' does not vanish at the ends (natural spline: order 2 there)."""
    return cdep.cde_from_spec({"kind": "cde", "interp": "natural_cubic",
                               "path": {"amp": [[1.0], [0.7]], "freq": [[1.3], [2.1]], "phase": [[0.4], [1.1]]},
                               "times": {"rule": "jitter", "n": 12, "span": [0.0, 3.0], "seed": 1, "spread": 0.5},
                               "field": {"type": "linear", "hidden": 2, "seed": 1}})


#: the reference's ODE gradient modes graded on a CDE's to_problem() (quick: one adjoint, one replay)
ODE_MODES = ("discrete", "checkpoint", "quadrature", "backsolve", "interpolated", "forward")
QUICK_ODE_MODES = ("backsolve", "checkpoint")


@_streaming
def run_cde_conformance(*, backend: str = "reference", quick: bool = False,
                        methods: str | Iterable[str] | None = None, shared: bool | None = None,
                        progress: Callable[[str], None] | None = None) -> list[Record]:
    """Neural CDEs on ``backend`` (module docstring); ``shared`` (default: when no methods are
    named) adds the once-per-run interpolation and gradient records."""
    b = backends.get(backend)
    if not b.available():
        return [unavailable_record(b.name, b.install_hint)]
    caps = cde_capabilities(b)
    if caps is None:
        return [Record(property="cde_convergence", method="*", problem="-", measured=None, expected=None,
                       verdict="skip", backend=b.name, message=f"{b.name} solves no CDEs: the CDE checks do not"
                       " apply")]
    names = unit_names(methods, lambda: cde_methods(b.name, quick))
    for m in names:
        validate_cde_method(b.name, m)
    records: list[Record] = _Sink()
    conv = [cdep.get(n) for n in (CONVERGENCE_PROBLEMS[:2] if quick else CONVERGENCE_PROBLEMS)]
    for m in names:
        if progress:
            progress(m)
        info = caps.methods[m]
        if info.fixed:
            for p in conv:
                if p.interpolation not in caps.interpolations:
                    continue
                for rule in ("jump", "none"):
                    if rule in caps.knots and not (rule == "jump" and "fixed_jump" in caps.refusals):
                        records.append(_safe(P.cde_convergence, p, m, backend=b.name, knots=rule, label=b.name))
        if info.adaptive:
            for name in REPARAM_PROBLEMS[:1] if quick else REPARAM_PROBLEMS:
                p = cdep.get(name)
                if p.interpolation in caps.interpolations:
                    records.append(_safe(P.cde_reparametrisation, p, m, backend=b.name, label=b.name))
    if shared is None:
        shared = methods is None
    if shared:
        if progress:
            progress(CDE_SHARED_UNIT)
        records.extend(_shared_records(b.name, quick))
    return [expectations.apply(r) for r in records]


register_family(Family(
    name="cde",
    title="Neural CDEs",
    help="grade controlled differential equations dz = f(z) dX on interpolated irregular data: each"
         " interpolation's order and knot conditions (linear, rectilinear, natural cubic, Hermite cubic with"
         " backward differences), the solve's convergence with and without steps on the knots, invariance under"
         " a change of time variable, and the gradients wrt the field and the data against complex steps",
    run=run_cde_conformance,
    methods=cde_methods,
    validate=validate_cde_method,
    shared_unit=CDE_SHARED_UNIT,
    properties=PROPERTIES,
    doc="docs/cde.md"))


# ----------------------------------------------------------------------------- explorations
def _problem(problem: Any) -> cdep.CDEProblem:
    return problem if isinstance(problem, cdep.CDEProblem) else cdep.cde_from_spec(problem)


def _draw_interp(data: Any, info: Any) -> tuple[dict, dict]:
    from ..strategies import cde_problem_specs

    return data.draw(cde_problem_specs(interpolations=("linear", "natural_cubic", "hermite_cubic_bd")),
                     label="problem"), {}


def _draw_convergence(data: Any, info: Any) -> tuple[dict, dict]:
    from ..strategies import cde_problem_specs

    return data.draw(cde_problem_specs(fields=("linear",)), label="problem"), {}


def _draw_reparam(data: Any, info: Any) -> tuple[dict, dict]:
    from hypothesis import strategies as st

    from ..strategies import cde_problem_specs

    spec = data.draw(cde_problem_specs(), label="problem")
    rate = data.draw(st.sampled_from((-2.0, -0.5, 0.7, 1.5, 3.0)), label="warp rate")
    return spec, {"rate": rate}


def _run_interp(problem, method, *, backend):
    p = _problem(problem)
    return P.cde_interpolation_order(p, backend=backend, refinements=(1, 2, 4, 8, 16))


def _run_convergence(problem, method, *, backend):
    return P.cde_convergence(_problem(problem), method, backend=backend, knots="jump")


def _run_reparam(problem, method, *, backend, rate=1.5):
    p = _problem(problem)
    t0, t1 = p.t_span
    warp = cdep.exponential_warp(t0, t1, rate, s_span=(0.0, 2.0 * (t1 - t0)))
    return P.cde_reparametrisation(p, method, backend=backend, warp=warp)


def _solves_cde(info: Any, backend: str) -> bool:
    caps = cde_capabilities(backends.get(backend))
    return caps is not None and info.name in caps.methods


_register("cde_interpolation_order", "the error of the drawn problem's interpolation (linear, natural cubic,"
          " Hermite-bd) of drawn smooth data (sines and polynomials) at drawn irregular times, against the closed"
          " form, as the spacing shrinks: the interpolant's order (the natural spline's 2 where x'' is not zero at"
          " an end)", lambda info, b: b == "reference" and info.name == "dopri5", _draw_interp, _run_interp,
          family="cde")
_register("cde_convergence", "fixed-step convergence with steps on the knots of a drawn linear-field CDE on a"
          " drawn interpolation of drawn irregular data, against its closed form: the method's order",
          lambda info, b: bool(info.fixed) and _solves_cde(info, b), _draw_convergence, _run_convergence,
          family="cde", methods=lambda backend: _cde_method_table(backend))
_register("cde_reparametrisation", "z(T) of a drawn CDE (linear or MLP field) unchanged under a drawn monotone"
          " change of time variable, to solver tolerance across a tolerance sweep",
          lambda info, b: bool(info.adaptive) and _solves_cde(info, b), _draw_reparam, _run_reparam, family="cde",
          methods=lambda backend: _cde_method_table(backend))

def _cde_method_table(backend: Any) -> dict:
    """The CDE methods of ``backend`` (a CDE-only library such as torchcde has no ODE methods)."""
    from ..backends._cde_driver import cde_capabilities

    caps = cde_capabilities(backend)
    return {} if caps is None else dict(caps.methods)


# --- the libraries on drawn problems (properties/cde_agreement.py): torchcde's and diffrax's
# interpolant and solution of a drawn CDE against odeverify's on the same data
def _draw_library(data: Any, info: Any) -> tuple[dict, dict]:
    from ..strategies import cde_problem_specs

    return data.draw(cde_problem_specs(), label="problem"), {}


def _run_library_interpolant(problem, method, *, backend):
    return A.cde_library_interpolant(_problem(problem), backend=backend)


def _run_library_solution(problem, method, *, backend):
    return A.cde_library_solution(_problem(problem), method, backend=backend)


_register("cde_library_interpolant", "torchcde's or diffrax's interpolant of a drawn CDE's data (any interpolation,"
          " drawn irregular times, missing values filled) against odeverify's: values and dX/dt to round-off",
          lambda info, b: b in A.LIBRARIES and info.name == A.METHOD[b], _draw_library, _run_library_interpolant,
          family="cde", methods=_cde_method_table)
_register("cde_library_solution", "torchcde's or diffrax's adaptive solve of a drawn CDE (knots as jumps) against"
          " its closed form or the reference on the knots at rtol 1e-12",
          lambda info, b: b in A.LIBRARIES and bool(info.adaptive) and _solves_cde(info, b), _draw_library,
          _run_library_solution, family="cde", methods=_cde_method_table)

__all__ = ["CDE_SHARED_UNIT", "PROPERTIES", "QUICK_REFERENCE_METHODS", "REFERENCE_METHODS", "cde_methods",
           "run_cde_conformance", "validate_cde_method"]
