"""Backends (L5): one adapter per library behind one interface (registry ``BACKENDS``).

Built in: ``reference`` (NumPy), ``reference-torch``, ``reference-jax``,
``reference-array_api_strict``, ``scipy``,
``torchdiffeq``, ``diffrax``. Third-party backends register through the entry-point group
``odeverify.backends``; they are loaded on first use of :func:`get` or :func:`names`.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from .._registry import Registry
from .base import Backend, Capabilities, MethodInfo, UnsupportedOption, classify_exception
from .reference import ReferenceBackend

BACKENDS: Registry[Backend] = Registry("backend")
ENTRY_POINT_GROUP = "odeverify.backends"

#: built-in adapters of optional libraries: name -> "module:Class" (imported lazily)
_BUILTIN = {
    "scipy": "odeverify.backends.scipy_backend:ScipyBackend",
    "torchdiffeq": "odeverify.backends.torchdiffeq_backend:TorchdiffeqBackend",
    "diffrax": "odeverify.backends.diffrax_backend:DiffraxBackend",
    # SDE methods only (Capabilities.sde_methods): graded by check --sde
    "torchsde": "odeverify.backends.torchsde_backend:TorchsdeBackend",
    # CDE methods only (backends/_cde_driver.py): graded by the CDE family
    "torchcde": "odeverify.backends.torchcde_backend:TorchcdeBackend",
}

for _lib in ("numpy", "torch", "jax", "array_api_strict"):
    _b = ReferenceBackend(_lib)
    BACKENDS.register(_b.name, _b)

_loaded_plugins = False


def _load(spec: str) -> Backend:
    module, _, attr = spec.partition(":")
    obj = getattr(importlib.import_module(module), attr)
    backend = obj() if isinstance(obj, type) else obj
    if not isinstance(backend, Backend):
        raise TypeError(f"{spec} is not an odeverify Backend (got {type(backend).__name__})")
    return backend


def _load_all() -> None:
    global _loaded_plugins
    if _loaded_plugins:
        return
    _loaded_plugins = True
    for name, spec in _BUILTIN.items():
        if name not in BACKENDS:
            try:
                BACKENDS.register(name, _load(spec))
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.startswith("odeverify"):
                    continue  # adapter module not written yet
                raise
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BACKENDS:
            raise ValueError(f"entry point {ep.name!r} ({ep.value}) clashes with a registered backend")
        BACKENDS.register(ep.name, _load(ep.value))


def get(name: str) -> Backend:
    _load_all()
    return BACKENDS.get(name)


def names() -> list[str]:
    _load_all()
    return BACKENDS.names()


__all__ = ["BACKENDS", "Backend", "Capabilities", "MethodInfo", "UnsupportedOption", "ReferenceBackend",
           "classify_exception", "get", "names", "ENTRY_POINT_GROUP"]
