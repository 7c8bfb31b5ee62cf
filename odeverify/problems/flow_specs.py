"""Generated continuous normalizing flows as one-line specs (the CNF twin of
:mod:`odeverify.problems.specs` and :mod:`odeverify.problems.sde_specs`).

A spec is ``{"kind": "cnf_<family>", "params": {...}}``; :func:`cnf_from_spec` rebuilds the
:class:`~odeverify.problems.flows.CNFProblem` exactly, named ``gen_<kind>_<hash>`` of the
canonical spec (so an expected-failure entry can match ``gen_cnf_*`` or one kind). Every
family shares the base and the data: a diagonal Gaussian base (drawn ``mean``, ``std``), the
span ``[0, t1]``, and ``size`` data points ``mean + spread std N(0, 1)`` from
``default_rng([data_seed, 11])``.

- ``cnf_affine``: ``f(t, z) = (1 + alpha t)(A z + b)`` on R^dim
  (:func:`~odeverify.problems.flows.linear_field`) with ``A = scale G / |G|_2`` for ``G`` a
  standard normal matrix from ``default_rng([seed, 5])`` (``scale`` is A's spectral norm);
  closed-form flow and log-determinant;
- ``cnf_sine``: ``f(z) = a sin z`` on the line (:func:`~odeverify.problems.flows.sine_field`);
  closed form;
- ``cnf_mlp``: a seeded concat-squash MLP field (:func:`~odeverify.problems.flows.mlp_field`,
  drawn width, depth, activation and weight scale); no closed form: the properties grade it
  against Liouville's formula (:func:`odeverify.properties.flows.liouville_oracle`).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .._registry import Registry
from .flows import CNFProblem, DiagonalGaussian, FlowField, linear_field, mlp_field, sine_field
from .specs import canonical, load_spec

FLOW_GENERATORS: Registry[Callable[..., FlowField]] = Registry("CNF problem generator")
#: the parameters every family shares (the base density, the span and the data)
SHARED = ("mean", "std", "t1", "data_seed", "size", "spread")


def _affine(dim: int, seed: int, scale: float, alpha: float = 0.0, b: list | None = None) -> FlowField:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim={dim!r}, but it must be an int >= 1")
    if not (0.0 <= float(scale) <= 10.0):
        raise ValueError(f"scale={scale!r}, but the spectral norm of A must be in [0, 10]")
    g = np.random.default_rng([int(seed), 5]).standard_normal((dim, dim))
    A = float(scale) * g / np.linalg.norm(g, 2)
    return linear_field(A, None if b is None else list(b), alpha=float(alpha))


def _sine(a: float) -> FlowField:
    return sine_field(float(a))


def _mlp(dim: int, hidden: int, depth: int, activation: str, seed: int, scale: float = 1.0) -> FlowField:
    return mlp_field(dim, hidden, depth, activation, seed, scale=float(scale))


for _kind, _fn in (("cnf_affine", _affine), ("cnf_sine", _sine), ("cnf_mlp", _mlp)):
    FLOW_GENERATORS.register(_kind, _fn)


def cnf_from_spec(spec: str | dict[str, Any]) -> CNFProblem:
    """The CNF problem of a spec (a dict or its JSON line); a bad spec raises a ``ValueError``
    naming the field."""
    spec = load_spec(spec, ("kind", "params"))
    build = FLOW_GENERATORS.get(spec["kind"])  # an unknown kind fails with the choices
    params = dict(spec.get("params", {}))
    if not isinstance(spec.get("params", {}), dict):
        raise ValueError(f"spec params={spec['params']!r}, but it must be an object of keyword arguments")
    missing = [k for k in ("mean", "std") if k not in params]
    if missing:
        raise ValueError(f"CNF spec {canonical(spec)} lacks {missing}: the base density's mean and std")
    shared = {k: params.pop(k) for k in SHARED if k in params}
    try:
        fld = build(**params)
    except TypeError as exc:
        raise ValueError(f"CNF spec params for kind {spec['kind']!r} do not fit its builder: {exc}") from None
    base = DiagonalGaussian(tuple(shared["mean"]), tuple(shared["std"]))
    size, spread = int(shared.get("size", 4)), float(shared.get("spread", 1.5))
    if size < 1:
        raise ValueError(f"size={size!r}, but a CNF problem needs at least one data point")
    t1 = float(shared.get("t1", 1.0))
    if not (t1 > 0.0 and np.isfinite(t1)):
        raise ValueError(f"t1={t1!r}, but the span [0, t1] needs a finite t1 > 0")
    rng = np.random.default_rng([int(shared.get("data_seed", 0)), 11])
    data = np.asarray(base.mean) + spread * np.asarray(base.std) * rng.standard_normal((size, base.dim))
    text = canonical(spec)
    name = f"gen_{spec['kind']}_{hashlib.sha256(text.encode()).hexdigest()[:10]}"
    return CNFProblem(name=name, field=fld, base=base, t_span=(0.0, t1), data=data,
                      description=f"generated CNF {text}: {fld.description}")


def is_cnf_spec(spec: Any) -> bool:
    """Whether ``spec`` (a dict) is a generated CNF problem's (kind ``cnf_*``)."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    return isinstance(kind, str) and kind.startswith("cnf_")


__all__ = ["FLOW_GENERATORS", "cnf_from_spec", "is_cnf_spec"]
