"""The ``irregular`` check family (issue 12, latent ODEs and irregularly sampled series):
``odeverify check --irregular [--backend NAME]``, its report section and its explorations.

Per method of the backend: the union-of-times batch against per-sample solves
(``union_times_cost``) on the named irregular batches and, on the reference, dense against
stepped-on outputs (``dense_vs_stepped_output``). Once per run (the shared unit): the gradient
of a loss at 200 irregular times by every gradient mode of the backend against the closed form
(``irregular_gradient_accuracy``), the latent ODE's negative-ELBO gradient by every mode against
central differences (``latent_ode_gradient``) and, on the reference, the ODE-RNN's discrete and
jumping-adjoint gradients (``odernn_adjoint_jumps``). ``docs/irregular.md``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import backends, expectations
from ..backends.base import is_implicit
from ..conformance import _safe, _Sink, _streaming, unit_names
from ..explore import _register
from ..gradients import GRADIENT_MODES
from ..problems.irregular import IRREGULAR_BATCHES, from_irregular_spec, irregular_batch, named_batch
from ..properties import irregular as P
from ..records import Record, unavailable_record
from . import Family, register_family

#: the methods of a quick run per backend (an adaptive explicit pair's first)
QUICK_IRREGULAR_METHODS = {"reference": ("dopri5",), "torchdiffeq": ("dopri5",), "diffrax": ("Dopri5",),
                           "scipy": ("RK45",)}
#: the methods of a full run per backend
IRREGULAR_METHODS = {"reference": ("dopri5", "bosh3", "dop853", "tsit5"), "torchdiffeq": ("dopri5", "bosh3", "dopri8"),
                     "diffrax": ("Dopri5", "Tsit5", "Dopri8"), "scipy": ("RK45", "RK23", "DOP853")}
#: the batch of the gradient at many irregular times
GRADIENT_BATCH = dict(samples=1, counts=200, seed=7, t_span=(0.0, 5.0))
#: the gradient modes of a quick run of the reference (a full run takes every mode)
QUICK_REFERENCE_MODES = ("discrete", "backsolve", "checkpoint", "forward")
IRREGULAR_SHARED_UNIT = "(gradients at many times, latent ODE, ODE-RNN)"
PROPERTIES = ("union_times_cost", "dense_vs_stepped_output", "irregular_gradient_accuracy", "latent_ode_gradient",
              "odernn_adjoint_jumps")


def irregular_methods(backend: str, quick: bool) -> list[str]:
    """The methods ``check --irregular`` runs on ``backend`` by default (adaptive explicit ones)."""
    b = backends.get(backend)
    caps = b.capabilities()
    base = b.name.split("-")[0]
    names = (QUICK_IRREGULAR_METHODS if quick else IRREGULAR_METHODS).get(base, ())
    chosen = [m for m in names if m in caps.methods]
    if chosen:
        return chosen
    return [m for m, info in caps.methods.items() if info.adaptive and not is_implicit(info)][:1]


def validate_irregular(backend: str, method: str) -> None:
    """ValueError naming ``method`` (with the closest match) if ``backend`` does not have it, or
    if it is not adaptive (every irregular property reads a dense output at a tolerance)."""
    b = backends.get(backend)
    info = b.capabilities().method(method, b.name)
    if not info.adaptive:
        raise ValueError(f"method {method!r} of {b.name} is fixed-step; check --irregular grades adaptive methods"
                         " (outputs read off the dense output at a tolerance)")


def _gradient_backends(name: str, quick: bool) -> list[str]:
    if name == "reference":
        return ["reference-torch"] if quick else ["reference-torch", "reference-jax"]
    return [name]


def _gradient_records(backend: str, quick: bool) -> list[Record]:
    out: list[Record] = []
    for name in _gradient_backends(backend, quick):
        b = backends.get(name)
        if not b.available():
            out.append(unavailable_record(b.name, b.install_hint))
            continue
        modes = b.capabilities().gradient_modes
        if not modes:
            out.append(Record(property="irregular_gradient_accuracy", method="*", problem="-", measured=None,
                              expected=None, verdict="skip", backend=b.name,
                              message=f"{b.name} has no gradient modes: the gradient checks do not apply"))
            continue
        if name.startswith("reference") and quick:
            modes = tuple(m for m in modes if m in QUICK_REFERENCE_MODES)
        method = irregular_methods(name.split("-")[0] if name.startswith("reference") else name, True)[0]
        batch = irregular_batch(name="irregular_200", **GRADIENT_BATCH)
        for mode in modes:
            # a backend's own mode names (torchdiffeq adjoint, backsolve_seminorm) are not GRADIENT_MODES
            gm = GRADIENT_MODES.get(mode) if name.startswith("reference") and mode in GRADIENT_MODES else None
            if gm is not None and gm.fixed_step:
                out.append(Record(property="irregular_gradient_accuracy", method=f"{method}/{mode}",
                                  problem=batch.name, measured=None, expected=None, verdict="skip", backend=b.name,
                                  message=f"mode {mode!r} is fixed-step: no accuracy at a tolerance to grade"))
                continue
            out.append(_safe(P.irregular_gradient_accuracy, batch, method, mode, backend=name, label=b.name))
            if gm is None or not gm.fixed_step:
                out.append(_safe(P.latent_ode_gradient, method, mode, backend=name, label=b.name))
    return out


@_streaming
def run_irregular_conformance(*, backend: str = "reference", quick: bool = False,
                              methods: str | Iterable[str] | None = None, shared: bool | None = None,
                              progress: Callable[[str], None] | None = None) -> list[Record]:
    """Irregularly sampled series on ``backend`` (module docstring); ``shared`` (default: when
    no methods are named) adds the once-per-run gradient records."""
    b = backends.get(backend)
    if not b.available():
        return [unavailable_record(b.name, b.install_hint)]
    names = unit_names(methods, lambda: irregular_methods(b.name, quick))
    for m in names:
        validate_irregular(b.name, m)
    records: list[Record] = _Sink()
    batches = ["rotation_4x50"] if quick else list(IRREGULAR_BATCHES)
    for m in names:
        if progress:
            progress(m)
        for name in batches:
            records.append(_safe(P.union_times_cost, named_batch(name), m, backend=b.name, label=b.name))
        if b.name == "reference":
            torch_ref = backends.get("reference-torch")
            if torch_ref.available():  # its gradient half differentiates on PyTorch
                records.append(_safe(P.dense_vs_stepped_output, named_batch("rotation_4x50"), m, label=b.name))
            else:
                records.append(unavailable_record(torch_ref.name, torch_ref.install_hint))
    if shared is None:
        shared = methods is None
    if shared:
        if progress:
            progress(IRREGULAR_SHARED_UNIT)
        records.extend(_gradient_records(b.name, quick))
        if b.name == "reference":
            torch_ref = backends.get("reference-torch")
            if not torch_ref.available():  # the ODE-RNN's gradients run on PyTorch
                records.append(unavailable_record(torch_ref.name, torch_ref.install_hint))
            else:
                for mode in P.ODERNN_MODES:
                    records.append(_safe(P.odernn_adjoint_jumps, mode, label="reference-torch"))
    return [expectations.apply(r) for r in records]


register_family(Family(
    name="irregular",
    title="Irregularly sampled series and latent ODEs",
    help="grade losses at many per-sample irregular times: the union-of-times batch against per-sample solves,"
         " dense against stepped-on outputs, gradients at hundreds of times by every gradient mode, a latent"
         " ODE's log-likelihood gradient and the ODE-RNN's jumping adjoint",
    run=run_irregular_conformance,
    methods=irregular_methods,
    validate=validate_irregular,
    shared_unit=IRREGULAR_SHARED_UNIT,
    properties=PROPERTIES,
    doc="docs/irregular.md"))


# ----------------------------------------------------------------------------- explorations
def _draw_irregular(tolerance: bool):
    def draw(data: Any, info: Any) -> tuple[dict, dict]:
        from hypothesis import strategies as st

        from ..strategies import irregular_problem_specs

        spec = data.draw(irregular_problem_specs(), label="problem")
        kw: dict[str, Any] = {}
        if tolerance:
            kw["rtol"] = float(f"{10 ** data.draw(st.floats(-9.0, -3.0), label='log10 rtol'):.2g}")
        return spec, kw

    return draw


def _run_union(problem, method, *, backend, **kw):
    batch = problem if hasattr(problem, "times") else from_irregular_spec(problem)
    return P.union_times_cost(batch, method, backend=backend, **kw)


def _run_dense(problem, method, *, backend, rtol=1e-5):
    batch = problem if hasattr(problem, "times") else from_irregular_spec(problem)
    return P.dense_vs_stepped_output(batch, method, rtols=(rtol,))


def _explicit_adaptive(info: Any, backend: str) -> bool:
    return bool(info.adaptive) and not is_implicit(info)


_register("union_times_cost", "a batch of a linear problem whose samples have their own drawn irregular times"
          " (uneven, near-duplicates, different counts): the union-of-times solve and per-sample solves against"
          " the closed form at a drawn tolerance", _explicit_adaptive, _draw_irregular(True), _run_union,
          family="irregular")
_register("dense_vs_stepped_output", "outputs at drawn irregular times off the dense output and with a step"
          " landing on each, against the closed form, with the loss gradient at those times (the reference)",
          lambda info, b: b == "reference" and _explicit_adaptive(info, b), _draw_irregular(True), _run_dense,
          family="irregular")

__all__ = ["run_irregular_conformance", "irregular_methods", "validate_irregular", "IRREGULAR_SHARED_UNIT",
           "QUICK_IRREGULAR_METHODS", "IRREGULAR_METHODS", "PROPERTIES"]
