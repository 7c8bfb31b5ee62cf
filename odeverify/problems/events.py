"""Event functions, jumps and event problems with closed-form event times.

An :class:`Event` is a scalar function ``g(xp, t, y, p)`` of the state, written against the
Array API like :attr:`Problem.rhs`, whose zeros the solver locates; a :class:`Jump` maps
the state at a terminal event to the state the solve restarts from; an
:class:`EventProblem` bundles an initial-value problem with its events, its jump and the
closed form of every event time (and of the state there), so that the event location,
the event count and the gradient of an event time can be graded against an oracle that
shares no code with the solver.

Conventions (the reference loop follows them; ``docs/events.md`` states them for users):

* an event is a SIGN CHANGE of ``g`` along the solution; ``direction=+1`` keeps the
  crossings where ``g`` increases, ``-1`` where it decreases, ``0`` both;
* a zero of ``g`` reached exactly (at a step boundary) counts once, as a crossing in the
  direction ``g`` arrived from; a zero at the start of a solve (``t0``, or the restart point
  after a jump) is never reported: it is the event that was just handled, or no event;
* a tangency (a double root) where ``g`` touches zero without changing sign is not an event
  (the grazing problems below pin each case).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from ._spec import Problem

#: the directions an event may be restricted to
DIRECTIONS = (-1, 0, 1)


def _event_output_shape(event_name: str, out: Any, y: Any) -> None:
    want = tuple(y.shape[:-1])
    got = tuple(getattr(out, "shape", np.shape(out)))
    if got != want:
        raise ValueError(
            f"event function {event_name!r} returned shape {got} for a state of shape {tuple(y.shape)}, but"
            f" it must return {want} (one value per sample: shape () for a state (n,), (B,) for a batch (B, n))")


@dataclass(frozen=True)
class Event:
    """An event ``g(xp, t, y, p) = 0``.

    ``g`` returns one value per sample: shape ``y.shape[:-1]`` (``()`` for a state ``(n,)``).
    ``direction``: ``+1`` only increasing crossings, ``-1`` only decreasing, ``0`` both.
    ``terminal``: ``True`` ends the solve at the first occurrence, an int ``k >= 1`` at the
    ``k``-th, ``False`` never (every occurrence is recorded).
    ``dg_dy(xp, t, y, p)`` (shape ``y.shape``) and ``dg_dt(xp, t, y, p)`` (the partial
    derivative at fixed ``y``) are the analytic derivatives the implicit-function-theorem
    gradient uses; None: differentiate ``g`` automatically.
    """

    g: Callable[..., Any]
    direction: int = 0
    terminal: bool | int = True
    name: str = "event"
    dg_dy: Callable[..., Any] | None = None
    dg_dt: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if not callable(self.g):
            raise TypeError(f"event g={self.g!r}, but it must be a callable g(xp, t, y, p) -> scalar per sample")
        if isinstance(self.direction, bool) or self.direction not in DIRECTIONS:
            raise ValueError(f"event {self.name!r}: direction={self.direction!r}, but it must be -1, 0 or +1")
        if not isinstance(self.terminal, (bool, int, np.integer)):
            raise TypeError(f"event {self.name!r}: terminal={self.terminal!r}, but it must be a bool or an int count")
        if not isinstance(self.terminal, bool) and self.terminal < 1:
            raise ValueError(f"event {self.name!r}: terminal={self.terminal!r}, but a count must be >= 1")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"event name={self.name!r}, but it must be a non-empty str")
        for label, fn in (("dg_dy", self.dg_dy), ("dg_dt", self.dg_dt)):
            if fn is not None and not callable(fn):
                raise TypeError(f"event {self.name!r}: {label}={fn!r}, but it must be callable or None")

    @property
    def terminal_count(self) -> int | None:
        """The occurrence that ends the solve (1 for ``terminal=True``), None if never."""
        if self.terminal is True:
            return 1
        if self.terminal is False:
            return None
        return int(self.terminal)

    def check(self, xp: Any, t: Any, y: Any, p: Mapping[str, Any]) -> Any:
        """``g`` at ``(t, y)``, with its shape checked (a ValueError names the event)."""
        out = self.g(xp, t, y, p)
        _event_output_shape(self.name, out, y)
        return out


@dataclass(frozen=True)
class Jump:
    """A state map applied at a terminal event: ``y+ = map(xp, t, y-, p)`` (``y-``'s shape).

    ``events``: the names of the events it applies at (empty: every terminal event).
    A jump returning a non-finite state ends the solve with a status naming the event time
    and the jump (it never raises inside a solve)."""

    map: Callable[..., Any]
    name: str = "jump"
    events: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not callable(self.map):
            raise TypeError(f"jump map={self.map!r}, but it must be a callable map(xp, t, y, p) -> state")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"jump name={self.name!r}, but it must be a non-empty str")
        object.__setattr__(self, "events", tuple(self.events))

    def applies(self, event_name: str) -> bool:
        return not self.events or event_name in self.events


@dataclass(frozen=True)
class ExactEvents:
    """The closed form of a solve's events: ``times`` (k,), the index of the event each is
    (``which``, into :attr:`EventProblem.events`) and the state at each (``states``, (k, n),
    before the jump)."""

    times: np.ndarray
    which: np.ndarray
    states: np.ndarray


@dataclass(frozen=True)
class EventProblem:
    """An initial-value problem with events, an optional jump, and closed forms.

    ``exact(theta) -> ExactEvents``: every event time in ``problem.t_span`` (up to
    ``max_events``) for parameter values ``theta`` (a dict of :attr:`theta`'s keys).
    ``state(t, theta) -> (n,)``: the exact state at time ``t`` (after the jumps before it),
    or None; analytic in ``t`` and ``theta`` (complex arguments give complex-step derivatives). ``time_gradient(theta) -> (k, len(theta))``: ``d t_k / d theta_j`` from the
    closed form (complex step or an independent high-precision computation).
    ``parametrize(xp, theta)``: ``(y0, params)`` from theta in any Array API library.
    ``factory(**theta)`` rebuilds the problem at other parameter values with the same
    horizon (finite differences of the whole solve). ``options``: solve options a case needs
    (the grazing cases fix the step grid). ``convention``: what the case expects, in words.
    """

    problem: Problem
    events: tuple[Event, ...]
    jump: Jump | None = None
    max_events: int = 100
    exact: Callable[[Mapping[str, float]], ExactEvents] | None = None
    state: Callable[[float, Mapping[str, float]], np.ndarray] | None = None
    time_gradient: Callable[[Mapping[str, float]], np.ndarray] | None = None
    theta: Mapping[str, float] = field(default_factory=dict)
    factory: Callable[..., EventProblem] | None = None
    #: ``parametrize(xp, theta) -> (y0, params)``: the initial state and the field's parameters
    #: as functions of theta, written against the Array API (PyTorch tensors that require
    #: gradients in, a differentiable solve out); None: theta is not differentiable here
    parametrize: Callable[[Any, Mapping[str, Any]], tuple[Any, dict[str, Any]]] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    convention: str = ""
    description: str = ""
    citation: str = ""
    tags: frozenset[str] = frozenset()
    spec: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.problem, Problem):
            raise TypeError(f"problem={self.problem!r}, but it must be an odeverify Problem")
        events = (self.events,) if isinstance(self.events, Event) else tuple(self.events)
        if not events:
            raise ValueError(f"event problem {self.problem.name!r}: events=(), but it needs at least one Event")
        for ev in events:
            if not isinstance(ev, Event):
                raise TypeError(f"event problem {self.problem.name!r}: events holds {ev!r}, expected Event objects")
        names = [ev.name for ev in events]
        if len(set(names)) != len(names):
            raise ValueError(f"event problem {self.problem.name!r}: event names {names} must be distinct")
        object.__setattr__(self, "events", events)
        if self.jump is not None and not isinstance(self.jump, Jump):
            raise TypeError(f"jump={self.jump!r}, but it must be a Jump or None")
        if self.jump is not None:
            unknown = [e for e in self.jump.events if e not in names]
            if unknown:
                raise ValueError(f"jump {self.jump.name!r} names events {unknown}, but the events are {names}")
        if isinstance(self.max_events, bool) or not isinstance(self.max_events, (int, np.integer)) \
                or self.max_events < 1:
            raise ValueError(f"max_events={self.max_events!r}, but it must be a positive int")
        object.__setattr__(self, "theta", MappingProxyType(dict(self.theta)))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "tags", frozenset(self.tags))
        # every event function evaluated once at y0, as a single state and as a batch of two
        p = self.problem.converted_params(np)
        y0 = np.asarray(self.problem.y0, dtype=np.float64)
        t0 = np.asarray(self.problem.t_span[0], dtype=np.float64)
        for ev in events:
            ev.check(np, t0, y0, p)
            ev.check(np, np.full((2,), float(t0)), np.stack([y0, y0]), p)

    @property
    def name(self) -> str:
        return self.problem.name

    def exact_events(self) -> ExactEvents | None:
        return None if self.exact is None else self.exact(self.theta)

    def with_theta(self, **theta: float) -> EventProblem:
        """The problem at other parameter values, same horizon (needs ``factory``)."""
        if self.factory is None:
            raise ValueError(f"event problem {self.name!r} has no factory, so its parameters cannot be changed")
        unknown = set(theta) - set(self.theta)
        if unknown:
            raise ValueError(f"theta {sorted(unknown)} are not parameters of {self.name!r} ({sorted(self.theta)})")
        return self.factory(**{**self.theta, **theta}, horizon=self.problem.t_span[1])


# ----------------------------------------------------------------------------- bouncing ball
def _rhs_ball(xp, t, y, p):
    # h' = v, v' = -g (one column each; a batch keeps its leading axes)
    v = y[..., 1:2]
    return xp.concat([v, xp.zeros_like(v) - p["gravity"]], axis=-1)


def _g_height(xp, t, y, p):
    return y[..., 0]


def _dg_height_dy(xp, t, y, p):
    return xp.concat([xp.ones_like(y[..., 0:1]), xp.zeros_like(y[..., 0:1])], axis=-1)


def _jump_restitution(xp, t, y, p):
    return xp.concat([y[..., 0:1], -p["restitution"] * y[..., 1:2]], axis=-1)


def _ball_parametrize(xp: Any, th: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    y0 = xp.stack([xp.asarray(th["height"]), xp.asarray(th["velocity"])])
    return y0, {"gravity": th["gravity"], "restitution": th["restitution"]}


def ball_times(height: Any, gravity: Any, restitution: Any, velocity: Any, count: int) -> list[Any]:
    """The first ``count`` impact times of a ball dropped from ``height`` with upward
    ``velocity`` under ``gravity`` with restitution ``restitution`` (closed form, written
    so that complex arguments give the complex-step derivative): ``t_1 = (v0 + u)/g`` with
    ``u = sqrt(v0^2 + 2 g h0)`` the impact speed, then flights of ``2 e^k u / g``."""
    u = (velocity * velocity + 2 * gravity * height) ** 0.5
    t = (velocity + u) / gravity
    out = [t]
    for k in range(1, count):
        t = t + 2 * restitution ** k * u / gravity
        out.append(t)
    return out


def ball_zeno_time(height: float, gravity: float, restitution: float, velocity: float = 0.0) -> float:
    """The accumulation time of the impacts: ``t_1 + 2 u e / (g (1 - e))``."""
    u = math.sqrt(velocity ** 2 + 2 * gravity * height)
    return (velocity + u) / gravity + 2 * u * restitution / (gravity * (1 - restitution))


def _ball_state(t: Any, theta: Mapping[str, Any], horizon: float) -> np.ndarray:
    # analytic in theta and t on the branch of the real parts' impact count, so complex steps
    # differentiate it (the gradient oracle): no math.sqrt, no comparison of complex values
    h0, g, e, v0 = theta["height"], theta["gravity"], theta["restitution"], theta.get("velocity", 0.0)
    u0 = (v0 * v0 + 2 * g * h0) ** 0.5
    k, last, nxt = 0, None, (v0 + u0) / g
    while np.real(nxt) <= np.real(t):
        k, last = k + 1, nxt
        nxt = nxt + 2 * e ** k * u0 / g
    if last is None:
        return np.array([h0 + v0 * t - 0.5 * g * t * t, v0 - g * t])
    u = u0 * e ** k  # take-off speed after the k-th impact
    s = t - last
    return np.array([u * s - 0.5 * g * s * s, u - g * s])


def bouncing_ball(height: float = 1.0, gravity: float = 9.81, restitution: float = 0.8, velocity: float = 0.0,
                  bounces: int = 12, horizon: float | None = None, name: str = "bouncing_ball") -> EventProblem:
    """A ball ``h'' = -g`` from ``h(0) = height``, ``h'(0) = velocity``, bouncing with
    restitution ``e``: ``g(t, y) = h`` (downward crossings, terminal) and the jump
    ``v -> -e v``. The horizon (default) ends halfway through the flight after the
    ``bounces``-th impact, well before the Zeno time of accumulation."""
    for label, value in (("height", height), ("gravity", gravity)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{label}={value!r}, but it must be finite and > 0")
    if not (0 < restitution < 1):
        raise ValueError(f"restitution={restitution!r}, but it must be in (0, 1)")
    if isinstance(bounces, bool) or not isinstance(bounces, int) or bounces < 1:
        raise ValueError(f"bounces={bounces!r}, but it must be a positive int")
    times = ball_times(height, gravity, restitution, velocity, bounces + 1)
    if horizon is None:
        horizon = 0.5 * (times[bounces - 1] + times[bounces])
    theta = {"height": float(height), "gravity": float(gravity), "restitution": float(restitution),
             "velocity": float(velocity)}
    zeno = ball_zeno_time(height, gravity, restitution, velocity)
    if horizon >= zeno:
        raise ValueError(f"horizon={horizon!r} is at or past the Zeno time {zeno:.6g} of the bounces; choose fewer")
    problem = Problem(
        name=name, rhs=_rhs_ball, y0=(height, velocity), t_span=(0.0, horizon),
        params={"gravity": float(gravity), "restitution": float(restitution)},
        tags={"nonstiff", "linear", "autonomous"},
        description="ball h'' = -g, y = (h, v)")

    def exact(th: Mapping[str, float]) -> ExactEvents:
        ts = [tk for tk in ball_times(th["height"], th["gravity"], th["restitution"], th.get("velocity", 0.0),
                                      bounces + 1) if tk <= horizon]
        u = math.sqrt(th.get("velocity", 0.0) ** 2 + 2 * th["gravity"] * th["height"])
        states = np.array([[0.0, -u * th["restitution"] ** k] for k in range(len(ts))]).reshape(-1, 2)
        return ExactEvents(np.asarray(ts, dtype=np.float64), np.zeros(len(ts), dtype=np.int64), states)

    def time_gradient(th: Mapping[str, float]) -> np.ndarray:
        # complex step on the closed form: d t / d theta_j = Im t(theta + i eps e_j) / eps
        k = len(exact(th).times)
        keys = list(th)
        out = np.zeros((k, len(keys)))
        eps = 1e-30
        for j, key in enumerate(keys):
            z = {kk: complex(v) for kk, v in th.items()}
            z[key] += 1j * eps
            ts = ball_times(z["height"], z["gravity"], z["restitution"], z.get("velocity", 0.0), k)
            out[:, j] = [tk.imag / eps for tk in ts]
        return out

    def factory(**kw: Any) -> EventProblem:
        return bouncing_ball(bounces=bounces, name=name, **kw)

    return EventProblem(
        problem=problem,
        events=(Event(_g_height, direction=-1, terminal=True, name="impact", dg_dy=_dg_height_dy),),
        jump=Jump(_jump_restitution, name="restitution"),
        max_events=bounces + 5,
        exact=exact, state=lambda t, th: _ball_state(t, th, horizon), time_gradient=time_gradient,
        theta=theta, factory=factory, parametrize=_ball_parametrize,
        convention=f"{len(exact(theta).times)} impacts before the horizon {horizon:.6g} (Zeno time {zeno:.6g})",
        description=f"bouncing ball, e={restitution:g}, h0={height:g}, g={gravity:g}: every impact time in closed form",
        citation="t_1 = (v0 + u)/g, u = sqrt(v0^2 + 2 g h0); flights 2 e^k u / g",
        tags={"terminal", "jump"},
        spec="")


# ----------------------------------------------------------------------------- a plane crossing
def _rhs_spiral_decay(xp, t, y, p):
    a, w = p["decay"], p["omega"]
    x, z = y[..., 0:1], y[..., 1:2]
    return xp.concat([-a * x - w * z, w * x - a * z], axis=-1)


def _g_plane(xp, t, y, p):
    return p["c0"] * y[..., 0] + p["c1"] * y[..., 1] - p["offset"]


def _dg_plane_dy(xp, t, y, p):
    one = xp.ones_like(y[..., 0:1])
    return xp.concat([p["c0"] * one, p["c1"] * one], axis=-1)


def _jump_identity(xp, t, y, p):
    return y + 0.0


def _plane_parametrize(xp: Any, th: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    r0 = xp.asarray(th["radius"])
    angle = xp.asarray(th["angle"])
    y0 = xp.stack([r0, xp.zeros_like(r0)])
    return y0, {"decay": th["decay"], "omega": th["omega"], "c0": xp.cos(angle), "c1": xp.sin(angle),
                "offset": th["offset"]}


def _plane_mp(theta: Mapping[str, Any], mp: Any) -> Callable[[Any], Any]:
    a, w, r0, phi, d = (mp.mpf(theta[k]) for k in ("decay", "omega", "radius", "angle", "offset"))

    def G(t: Any) -> Any:
        # c.z(t) - d with z(t) = r0 e^{-a t} (cos wt, sin wt) and c = (cos phi, sin phi)
        return r0 * mp.exp(-a * t) * mp.cos(w * t - phi) - d

    return G


def plane_crossing_times(theta: Mapping[str, Any], horizon: float, dps: int = 40) -> list[Any]:
    """Every zero of ``c.z(t) - d`` in ``(0, horizon]`` from the closed form
    ``z(t) = r0 e^{-a t} (cos wt, sin wt)``, located independently of any solver: sign changes on
    a grid of 64 points per half-turn, then mpmath's Illinois root finder at ``dps`` digits."""
    import mpmath

    with mpmath.workdps(dps):
        G = _plane_mp(theta, mpmath)
        n = max(64, int(64 * float(theta["omega"]) * horizon / math.pi) + 1)
        grid = [mpmath.mpf(horizon) * i / n for i in range(n + 1)]
        vals = [G(s) for s in grid]
        roots = []
        for i in range(n):
            if vals[i] == 0 and i > 0:
                roots.append(grid[i])
            elif vals[i] * vals[i + 1] < 0:
                roots.append(mpmath.findroot(G, (grid[i], grid[i + 1]), solver="illinois"))
        if vals[n] == 0:
            roots.append(grid[n])
        return roots


def plane_crossing(decay: float = 0.1, omega: float = 2.0, radius: float = 1.0, angle: float = 0.3,
                   offset: float = 0.2, horizon: float = 12.0, terminal: bool | int = False,
                   direction: int = 0, restart: bool = False, name: str = "plane_crossing") -> EventProblem:
    """``z' = A z`` with ``A = [[-a, -w], [w, -a]]`` (a decaying rotation) from ``(r0, 0)``,
    crossing the line ``c.z = d``, ``c = (cos phi, sin phi)``. The crossing times are the
    zeros of ``r0 e^{-a t} cos(wt - phi) - d``, found in mpmath (no solver code), and their
    derivatives by the implicit function theorem on that closed form (mpmath derivatives).
    ``restart=True``: every crossing is terminal and an identity jump restarts the solve
    there, so the events are the non-terminal ones again (a restart that saw its own event
    again would double them)."""
    if not (math.isfinite(decay) and decay >= 0):
        raise ValueError(f"decay={decay!r}, but it must be finite and >= 0")
    if not (math.isfinite(omega) and omega > 0):
        raise ValueError(f"omega={omega!r}, but it must be finite and > 0")
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius={radius!r}, but it must be finite and > 0")
    theta = {"decay": float(decay), "omega": float(omega), "radius": float(radius), "angle": float(angle),
             "offset": float(offset)}
    problem = Problem(
        name=name, rhs=_rhs_spiral_decay, y0=(radius, 0.0), t_span=(0.0, horizon),
        params={"decay": float(decay), "omega": float(omega), "c0": math.cos(angle), "c1": math.sin(angle),
                "offset": float(offset)},
        tags={"nonstiff", "linear", "autonomous", "oscillatory"},
        exact=lambda t: radius * np.exp(-decay * np.asarray(t))[:, None]
        * np.stack([np.cos(omega * np.asarray(t)), np.sin(omega * np.asarray(t))], axis=-1),
        description="z' = [[-a, -w], [w, -a]] z")
    if restart:
        terminal = True
    ev = Event(_g_plane, direction=direction, terminal=terminal, name="plane", dg_dy=_dg_plane_dy)

    def mp_roots(th: Mapping[str, float]) -> list[Any]:
        # the crossings kept by the event's direction and terminal count, at 40 digits (call in workdps(40))
        import mpmath

        G = _plane_mp(th, mpmath)
        roots = plane_crossing_times(th, horizon)
        keep = [r for r in roots if direction == 0 or mpmath.diff(G, r) * direction > 0]
        count = ev.terminal_count
        return keep[:count] if count is not None and not restart else keep

    def exact(th: Mapping[str, float]) -> ExactEvents:
        import mpmath

        with mpmath.workdps(40):
            ts = np.asarray([float(r) for r in mp_roots(th)], dtype=np.float64)
        a, w, r0 = th["decay"], th["omega"], th["radius"]
        states = (r0 * np.exp(-a * ts))[:, None] * np.stack([np.cos(w * ts), np.sin(w * ts)], axis=-1)
        return ExactEvents(ts, np.zeros(len(ts), dtype=np.int64), states.reshape(-1, 2))

    def time_gradient(th: Mapping[str, float]) -> np.ndarray:
        import mpmath

        keys = list(th)
        with mpmath.workdps(40):
            # IFT on the closed form at the 40-digit roots (bracketed by Illinois: a secant restarted
            # from the float root diverged on explore's event_plane(angle=2, omega=2.5, ...))
            G0 = _plane_mp(th, mpmath)
            roots = mp_roots(th)
            out = np.zeros((len(roots), len(keys)))
            for i, r in enumerate(roots):
                dG_dt = mpmath.diff(G0, r)
                for j, key in enumerate(keys):
                    def G_of(x: Any, key: str = key, r: Any = r) -> Any:
                        return _plane_mp({**th, key: x}, mpmath)(r)

                    out[i, j] = float(-mpmath.diff(G_of, mpmath.mpf(th[key])) / dG_dt)
        return out

    def factory(**kw: Any) -> EventProblem:
        kw.setdefault("horizon", horizon)
        return plane_crossing(terminal=terminal, direction=direction, restart=restart, name=name, **kw)

    ex = exact(theta)
    return EventProblem(
        problem=problem, events=(ev,), jump=Jump(_jump_identity, name="identity") if restart else None,
        max_events=max(1, len(ex.times)) + 5,
        exact=exact,
        state=lambda t, th: th["radius"] * np.exp(-th["decay"] * t) * np.array(
            [np.cos(th["omega"] * t), np.sin(th["omega"] * t)]),
        time_gradient=time_gradient, theta=theta, factory=factory, parametrize=_plane_parametrize,
        convention=f"{len(ex.times)} crossings of c.z = {offset:g} in (0, {horizon:g}]",
        description=f"decaying rotation (a={decay:g}, w={omega:g}) crossing c.z = d, c at angle {angle:g}",
        citation="zeros of r0 e^{-a t} cos(wt - phi) - d by mpmath (Illinois), 40 digits",
        tags={"terminal"} if terminal else frozenset())


# ----------------------------------------------------------------------------- grazing cases
def _rhs_parabola(xp, t, y, p):
    # h' = v, v' = -1: h(t) = t - t^2/2 from (0, 1); polynomial of degree 2, so every Runge-Kutta
    # method of order >= 2 and its dense output reproduce it to round-off (dyadic values exactly)
    v = y[..., 1:2]
    return xp.concat([v, xp.zeros_like(v) - 1.0], axis=-1)


def _g_level(xp, t, y, p):
    return y[..., 0] - p["level"]


def _g_touch(xp, t, y, p):
    # -(t - 1)^2 per sample: a double root at t = 1 in exact arithmetic, whatever the solver's
    # round-off (a tangency of the state itself is decided by the last ulp of the solution)
    d = xp.zeros_like(y[..., 0]) + (t - p["level"])
    return -(d * d)


def _parabola_state(t: float, th: Mapping[str, float]) -> np.ndarray:
    return np.array([t - 0.5 * t * t, 1.0 - t])


def _grazing(name: str, g: Callable[..., Any], level: float, times: list[float], direction: int,
             options: Mapping[str, Any], convention: str, t1: float = 2.0) -> EventProblem:
    problem = Problem(name=name, rhs=_rhs_parabola, y0=(0.0, 1.0), t_span=(0.0, t1), params={"level": level},
                      tags={"nonstiff", "linear", "autonomous"},
                      exact=lambda t: np.stack([np.asarray(t) - 0.5 * np.asarray(t) ** 2, 1.0 - np.asarray(t)], -1),
                      description="h'' = -1 from (0, 1): h = t - t^2/2, top h = 1/2 at t = 1")
    ts = np.asarray(times, dtype=np.float64)

    def exact(th: Mapping[str, float]) -> ExactEvents:
        return ExactEvents(ts, np.zeros(len(ts), dtype=np.int64),
                           np.array([_parabola_state(t, th) for t in ts]).reshape(-1, 2))

    return EventProblem(problem=problem, events=(Event(g, direction=direction, terminal=False, name="level"),),
                        exact=exact, state=_parabola_state, theta={}, options=options, convention=convention,
                        description=convention, tags={"grazing"}, max_events=10)


def grazing_problems() -> dict[str, EventProblem]:
    """The grazing and boundary cases, each with the step grid it needs (``options``) and
    the events the conventions above expect. The parabola ``h = t - t^2/2`` is reproduced
    to round-off by methods of order >= 2, so the cases are exact, not near misses."""
    return {
        "touch_at_step_end": _grazing(
            "graze_touch_at_step_end", _g_touch, 1.0, [1.0], 0, {"n_steps": 8},
            "g = -(t - 1)^2 touches zero at t = 1, a step boundary: reported exactly once (the zero is reached"
            " from below), never again at the next step's start"),
        "near_miss": _grazing(
            "graze_near_miss", _g_level, 0.5 + 2.0 ** -20, [], 0, {"n_steps": 7},
            "g = h - (1/2 + 2^-20) stays below zero (closest 2^-20 at t = 1): no event"),
        "double_root_inside_step": _grazing(
            "graze_double_root", _g_touch, 1.0, [], 0, {"n_steps": 4},
            "g = -(t - 1)^2 has a double root at t = 1 inside the step [0.55, 1.1] (off its sample points) and"
            " never changes sign: no event", t1=2.2),
        "two_roots_one_step": _grazing(
            "graze_two_roots_one_step", _g_level, 0.375, [0.5, 1.5], 0, {"n_steps": 1},
            "g = h - 3/8 crosses up at t = 1/2 and down at t = 3/2 inside ONE step whose ends both have g < 0:"
            " both reported"),
        "two_roots_one_step_up": _grazing(
            "graze_two_roots_one_step_up", _g_level, 0.375, [0.5], 1, {"n_steps": 1},
            "as two_roots_one_step with direction +1: only the upward crossing t = 1/2"),
        "crossing_at_step_ends": _grazing(
            "graze_crossing_at_step_ends", _g_level, 0.375, [0.5, 1.5], 0, {"n_steps": 4},
            "g = h - 3/8 crosses zero exactly at the step boundaries t = 1/2 and t = 3/2: each once"),
        "event_at_t0": _grazing(
            "graze_event_at_t0", _g_level, 0.0, [2.0], 0, {"n_steps": 5},
            "g = h is zero at t0 = 0 (not reported: the start is never an event) and crosses down at t = 2,"
            " a step boundary (reported once)", t1=2.5),
    }


def event_problems(quick: bool = False) -> dict[str, EventProblem]:
    """The closed-form event problems of a conformance run."""
    out = {
        "bouncing_ball": bouncing_ball(bounces=6 if quick else 12),
        "plane_crossing": plane_crossing(),
    }
    if not quick:
        out["plane_crossing_terminal"] = plane_crossing(terminal=True, direction=-1, name="plane_crossing_terminal")
    out["plane_crossing_restart"] = plane_crossing(restart=True, name="plane_crossing_restart")
    return out


# ----------------------------------------------------------------------------- one-line specs
#: the generated event problems: spec kind -> builder of its params
EVENT_KINDS = ("event_ball", "event_plane")


def is_event_spec(data: Any) -> bool:
    """Whether a spec dict is a generated event problem's (kind ``event_*``)."""
    return isinstance(data, Mapping) and str(data.get("kind", "")).startswith("event_")


def event_from_spec(spec: Any) -> EventProblem:
    """The event problem of a one-line spec ``{"kind": "event_ball" | "event_plane", "params": {...}}``
    (JSON text or a dict): :func:`bouncing_ball` / :func:`plane_crossing` with those keyword
    arguments; the problem's ``spec`` is the canonical JSON, so a case replays exactly."""
    import json

    data = json.loads(spec) if isinstance(spec, str) else dict(spec)
    kind = data.get("kind")
    if kind not in EVENT_KINDS:
        raise ValueError(f"event spec kind={kind!r}, but it must be one of {EVENT_KINDS}")
    params = dict(data.get("params", {}))
    text = json.dumps({"kind": kind, "params": params}, sort_keys=True)
    name = f"{kind}(" + ",".join(f"{k}={params[k]}" for k in sorted(params)) + ")"
    build = bouncing_ball if kind == "event_ball" else plane_crossing
    ep = build(name=name, **params)
    return dataclasses.replace(ep, spec=text)


__all__ = ["DIRECTIONS", "Event", "Jump", "ExactEvents", "EventProblem", "ball_times", "ball_zeno_time",
           "bouncing_ball", "plane_crossing", "plane_crossing_times", "grazing_problems", "event_problems",
           "EVENT_KINDS", "is_event_spec", "event_from_spec"]
