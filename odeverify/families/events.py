"""The ``events`` check family (issue 12, events and jumps): ``odeverify check --events
[--backend NAME]``, its report section and its explorations.

Per method of the backend: ``event_count`` on the closed-form event problems (the bouncing
ball's impacts, a decaying rotation's plane crossings: every one, the first only, each
terminal with a restart) and on the seven grazing and boundary cases (fixed grids, exact
arithmetic), and, for a method with a fixed-step mode and a dense-output order,
``event_time_order`` on the plane crossing. Once per run (the shared unit): ``event_gradient``
by each event gradient mode of the backend (the reference: ``discrete``, AD through the loop
with the implicit-function-theorem correction, and ``adjoint``, the continuous adjoint with
the jump condition). The reference runs :func:`odeverify.integrate.solve_with_jumps`, the
other backends ``Backend.solve_event`` / ``Backend.event_gradient``. ``docs/events.md``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import _xp, backends, expectations
from ..conformance import _safe, _Sink, _streaming, unit_names
from ..explore import _register
from ..integrate import resolve_solver
from ..problems.events import bouncing_ball, event_from_spec, event_problems, grazing_problems, plane_crossing
from ..properties import events as P
from ..properties.event_agreement import QUICK_TOLERANCES, TOLERANCES, event_location, library_problems
from ..records import Record, unavailable_record
from . import Family, register_family

#: the reference's methods of a quick and a full run
QUICK_REFERENCE_METHODS = ("dopri5",)
REFERENCE_METHODS = ("dopri5", "tsit5", "bosh3", "dop853", "rk4", "heun")
EVENTS_SHARED_UNIT = "(event gradients)"
PROPERTIES = ("event_count", "event_time_order", "event_gradient", "event_location")
#: the reference's event gradient modes (gradients/events.py)
REFERENCE_GRADIENT_MODES = ("discrete", "adjoint")


def _adapter(backend: str) -> Any:
    from ..backends._event_driver import adapter_of

    return adapter_of(backends.get(backend))


def event_methods(backend: str, quick: bool) -> list[str]:
    """The methods ``check --events`` runs on ``backend`` by default (none where it locates no
    events)."""
    b = backends.get(backend)
    if b.name == "reference":
        return list(QUICK_REFERENCE_METHODS if quick else REFERENCE_METHODS)
    from ..backends._event_driver import event_methods as library_methods

    return library_methods(b, quick)


def validate_event_method(backend: str, method: str) -> None:
    """ValueError naming ``method`` (with the closest match) if ``backend`` cannot locate events with it."""
    b = backends.get(backend)
    if b.name == "reference":
        from ..solvers import SOLVERS

        SOLVERS.get(method)  # raises naming the method, with the closest match
        return
    from ..backends._event_driver import check_method

    check_method(b, method)


def _gradient_problems(quick: bool) -> list[Any]:
    ball = bouncing_ball(bounces=2 if quick else 4, name="bouncing_ball_gradient")
    plane = plane_crossing(horizon=3.0 if quick else 6.0, name="plane_crossing_gradient")
    return [ball, plane]


def _gradient_records(backend: str, quick: bool) -> list[Record]:
    b = backends.get(backend)
    if b.name == "reference":
        if not _xp.available("torch"):
            return [Record(property="event_gradient", method="*", problem="-", measured=None, expected=None,
                           verdict="skip", backend="reference",
                           message="the reference's event gradients run on PyTorch, which is not installed")]
        modes, method = REFERENCE_GRADIENT_MODES, "dopri5"
    else:
        ad = _adapter(b.name)
        modes = tuple(getattr(ad, "GRADIENT_MODES", ())) if ad is not None else ()
        if not modes:
            why = getattr(ad, "UNSUPPORTED_GRADIENT", "no event gradient modes") if ad is not None else \
                "it locates no events"
            return [Record(property="event_gradient", method="*", problem="-", measured=None, expected=None,
                           verdict="skip", backend=b.name, message=f"{b.name}: {why}")]
        method = event_methods(b.name, True)[0]
    out: list[Record] = []
    for ep in _gradient_problems(quick):
        for mode in modes:
            out.append(_safe(P.event_gradient, ep, method, mode, backend=b.name, label=b.name))
    return out


@_streaming
def run_event_conformance(*, backend: str = "reference", quick: bool = False,
                          methods: str | Iterable[str] | None = None, shared: bool | None = None,
                          progress: Callable[[str], None] | None = None) -> list[Record]:
    """Events and jumps on ``backend`` (module docstring); ``shared`` (default: when no methods
    are named) adds the once-per-run gradient records."""
    b = backends.get(backend)
    if not b.available():
        return [unavailable_record(b.name, b.install_hint)]
    if b.name != "reference" and _adapter(b.name) is None:
        return [Record(property="event_count", method="*", problem="-", measured=None, expected=None,
                       verdict="skip", backend=b.name, message=f"{b.name} locates no events: the event checks do"
                       " not apply")]
    names = unit_names(methods, lambda: event_methods(b.name, quick))
    for m in names:
        validate_event_method(b.name, m)
    records: list[Record] = _Sink()
    problems = list(event_problems(quick).values())
    grazing = list(grazing_problems().values())
    order_problem = plane_crossing()
    for m in names:
        if progress:
            progress(m)
        for ep in problems + grazing:
            records.append(_safe(P.event_count, ep, m, backend=b.name, label=b.name))
        info = P.method_info(m, backend=b.name) if b.name != "reference" else None
        fixed = True if info is None else bool(info.fixed)
        if fixed:
            records.append(_safe(P.event_time_order, order_problem, m, backend=b.name, label=b.name))
        # --- the libraries' part (properties/event_agreement.py): the event time's convergence with
        # the tolerance, directions and terminal counts, through Backend.solve_event on every backend
        adaptive = bool(getattr(resolve_solver(m), "adaptive", False)) if info is None else info.adaptive
        if adaptive:  # a tolerance sweep
            for ep in library_problems(quick).values():
                records.append(_safe(event_location, ep, m, backend=b.name, label=b.name,
                                     tolerances=QUICK_TOLERANCES if quick else TOLERANCES))
    if shared is None:
        shared = methods is None
    if shared:
        if progress:
            progress(EVENTS_SHARED_UNIT)
        records.extend(_gradient_records(b.name, quick))
    return [expectations.apply(r) for r in records]


register_family(Family(
    name="events",
    title="Events and jumps",
    help="grade event location and jumps against closed forms: the number and times of events over long"
         " horizons (the bouncing ball's impacts, plane crossings, grazing and step-boundary cases), the event"
         " time's convergence at the dense output's order, and gradients through events (implicit function"
         " theorem, the adjoint's jump condition)",
    run=run_event_conformance,
    methods=event_methods,
    validate=validate_event_method,
    shared_unit=EVENTS_SHARED_UNIT,
    properties=PROPERTIES,
    doc="docs/events.md"))


# ----------------------------------------------------------------------------- explorations
def _draw_count(data: Any, info: Any) -> tuple[dict, dict]:
    from hypothesis import strategies as st

    from ..strategies import event_problem_specs

    spec = data.draw(event_problem_specs(), label="problem")
    return spec, {"rtol": float(f"{10 ** data.draw(st.floats(-10.0, -5.0), label='log10 rtol'):.2g}")}


def _draw_order(data: Any, info: Any) -> tuple[dict, dict]:
    from ..strategies import event_problem_specs

    # the ball's flights are parabolas, integrated exactly: only the plane has an order to show
    spec = data.draw(event_problem_specs(kinds=("event_plane",)), label="problem")
    return spec, {}


def _draw_gradient(data: Any, info: Any) -> tuple[dict, dict]:
    from hypothesis import strategies as st

    from ..strategies import event_problem_specs

    spec = data.draw(event_problem_specs(), label="problem")
    if spec["kind"] == "event_ball":
        spec["params"]["bounces"] = min(spec["params"]["bounces"], 4)
    return spec, {"mode": data.draw(st.sampled_from(REFERENCE_GRADIENT_MODES), label="mode")}


def _problem(problem: Any) -> Any:
    return problem if hasattr(problem, "events") else event_from_spec(problem)


def _run_count(problem, method, *, backend, rtol=1e-8):
    return P.event_count(_problem(problem), method, backend=backend, rtol=rtol)


def _run_order(problem, method, *, backend):
    return P.event_time_order(_problem(problem), method, backend=backend)


def _run_gradient(problem, method, *, backend, mode="discrete"):
    return P.event_gradient(_problem(problem), method, mode, backend=backend)


def _locates_events(info: Any, backend: str) -> bool:
    if backend == "reference":
        return bool(info.adaptive)
    ad = _adapter(backend)
    return ad is not None and info.name in getattr(ad, "METHODS", ())


def _fixed_with_dense(info: Any, backend: str) -> bool:
    return bool(info.fixed) and info.dense_order is not None and (
        backend == "reference" or _locates_events(info, backend))


_register("event_count", "the number and times of events of a drawn bouncing ball (every impact in closed form)"
          " or a drawn decaying rotation crossing a drawn line (every crossing, the first only, or each terminal"
          " with a restart) at a drawn tolerance, against the closed form", _locates_events, _draw_count,
          _run_count, family="events")
_register("event_time_order", "the first plane crossing's time over a fixed-step sweep (the event at phase 1/3 of"
          " its step) converges at min(order, dense order + 1), on drawn rotations and lines", _fixed_with_dense,
          _draw_order, _run_order, family="events")
_register("event_gradient", "d(sum of event times + sum of y(T))/dtheta through the events of a drawn problem by"
          " the reference's discrete and adjoint modes, against the closed form (the reference's dopri5)",
          lambda info, b: b == "reference" and info.name == "dopri5" and _xp.available("torch"), _draw_gradient,
          _run_gradient, family="events")

__all__ = ["run_event_conformance", "event_methods", "validate_event_method", "EVENTS_SHARED_UNIT", "PROPERTIES",
           "QUICK_REFERENCE_METHODS", "REFERENCE_METHODS", "REFERENCE_GRADIENT_MODES"]
