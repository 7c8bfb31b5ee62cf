"""The only module that knows array frameworks.

Everything else is written against the Python Array API standard and asks this module for
the namespace of an array, for framework modules that are optional extras, and for the few
operations the standard leaves out (conversion to NumPy, stopping gradients).
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np
import array_api_compat

#: array library name -> (module to import, extra that installs it)
_OPTIONAL = {
    "torch": ("torch", "torch"),
    "torchdiffeq": ("torchdiffeq", "torch"),
    "jax": ("jax", "jax"),
    "diffrax": ("diffrax", "jax"),
    "array_api_strict": ("array_api_strict", "test"),
}

#: names accepted by :func:`get_namespace`
ARRAY_LIBRARIES = ("numpy", "torch", "jax", "array_api_strict")


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(name: str) -> ModuleType:
    """Import an optional dependency, or raise an error naming the extra that installs it."""
    module, extra = _OPTIONAL.get(name, (name, "all"))
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{name!r} is not installed; install it with: pip install 'odeverify[{extra}]'"
            f" ({exc})"
        ) from exc


def available(name: str) -> bool:
    try:
        require(name)
    except MissingDependencyError:
        return False
    return True


def get_namespace(library: str) -> Any:
    """The Array API namespace of an array library given by name (numpy, torch, jax, array_api_strict)."""
    if library == "numpy":
        return array_api_compat.array_namespace(np.empty(0))
    if library == "torch":
        torch = require("torch")
        return array_api_compat.array_namespace(torch.empty(0))
    if library == "jax":
        jax = require("jax")
        jax.config.update("jax_enable_x64", True)
        return array_api_compat.array_namespace(jax.numpy.empty(0))
    if library == "array_api_strict":
        return require("array_api_strict")
    raise ValueError(
        f"library={library!r} is not supported; expected one of {', '.join(ARRAY_LIBRARIES)}"
    )


def namespace(*xs: Any) -> Any:
    """The Array API namespace of the given arrays (array-api-compat wraps NumPy and PyTorch)."""
    return array_api_compat.array_namespace(*xs)


def library_name(xp: Any) -> str:
    """Short name of an Array API namespace: numpy, torch, jax or array_api_strict."""
    name = getattr(xp, "__name__", "")
    for lib in ("torch", "jax", "array_api_strict", "numpy"):
        if lib in name:
            return lib
    return name


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of an array of any supported library (gradients dropped, moved to host)."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_jax_array(x):
        return np.asarray(x)
    mod = type(x).__module__
    if mod.startswith("array_api_strict"):
        return np.asarray(x._array)  # array-api-strict keeps a NumPy array inside
    return np.asarray(x)


def stop_gradient(x: Any) -> Any:
    """``x`` cut from the autodiff graph (identity for libraries without autodiff)."""
    if array_api_compat.is_torch_array(x):
        return x.detach()
    if array_api_compat.is_jax_array(x):
        import jax

        return jax.lax.stop_gradient(x)
    return x


def device(x: Any) -> Any:
    return array_api_compat.device(x)


def is_array(x: Any) -> bool:
    return array_api_compat.is_array_api_obj(x)


def lincomb(coeffs: list[float], arrays: list[Any], base: Any = None) -> Any:
    """``base + sum_j coeffs[j] * arrays[j]`` over the non-zero coefficients (None if empty).

    Functional (new arrays only), so it differentiates on PyTorch and JAX. PyTorch gets one
    fused ``add(acc, x, alpha=c)`` per term instead of a multiply and an add: the stage
    combinations are most of an explicit step's own work.
    """
    pairs = [(float(c), x) for c, x in zip(coeffs, arrays) if c != 0.0]
    if not pairs:
        return base
    first = pairs[0][1]
    if array_api_compat.is_torch_array(first):
        import torch

        if base is None:
            acc, rest = torch.mul(first, pairs[0][0]), pairs[1:]
        else:
            acc, rest = base, pairs
        for c, x in rest:
            acc = torch.add(acc, x, alpha=c)
        return acc
    acc = base
    for c, x in pairs:
        term = x * c
        acc = term if acc is None else acc + term
    return acc


# ----------------------------------------------------------------------------- autodiff
# Functional derivatives of a function of arrays, for the gradient modes (VJPs, JVPs) and the
# implicit solvers (Jacobians). NumPy and array-api-strict have no autodiff: asking raises
# NotImplementedError, and callers fall back (finite differences) or refuse by name.
def _autodiff_library(x: Any) -> str:
    if array_api_compat.is_torch_array(x):
        return "torch"
    if array_api_compat.is_jax_array(x):
        return "jax"
    raise NotImplementedError(
        f"automatic differentiation needs PyTorch or JAX arrays, got {type(x).__module__}.{type(x).__name__}"
    )


def vjp(fun: Any, primals: tuple[Any, ...], cotangent: Any) -> tuple[Any, tuple[Any, ...]]:
    """``(fun(*primals), cotangent^T d fun / d primals)``: one reverse-mode product.

    ``primals`` is a tuple of arrays (or pytrees of arrays on JAX: a dict of parameters is
    fine on both); the result's second item has one entry per primal, of its structure.
    The products are detached from any outer graph (no higher-order derivatives).
    """
    lib = _autodiff_library(cotangent)
    if lib == "torch":
        torch = require("torch")
        out, pullback = torch.func.vjp(fun, *primals)
        grads = pullback(cotangent)
        return out, tuple(grads)
    jax = require("jax")
    out, pullback = jax.vjp(fun, *primals)
    return out, tuple(pullback(cotangent))


def jvp(fun: Any, primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
    """``(fun(*primals), d fun / d primals . tangents)``: one forward-mode product."""
    first = primals[0]
    while isinstance(first, (dict, tuple, list)):
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    lib = _autodiff_library(first)
    if lib == "torch":
        torch = require("torch")
        return torch.func.jvp(fun, tuple(primals), tuple(tangents))
    jax = require("jax")
    return jax.jvp(fun, tuple(primals), tuple(tangents))


def jacobian(fun: Any, y: Any) -> Any:
    """The Jacobian ``d fun(y) / d y`` of a map from shape ``(n,)`` to ``(n,)``: shape ``(n, n)``
    (forward mode; a batch ``(B, n)`` gives ``(B, n, n)``, one block per sample, assuming the
    samples are independent, as they are for a batched vector field)."""
    lib = _autodiff_library(y)
    if lib == "torch":
        torch = require("torch")
        jac = torch.func.jacfwd(fun)
        if y.ndim == 2:
            return _block_diag_jacobian(torch, fun, y)
        return jac(y)
    jax = require("jax")
    if y.ndim == 2:
        return jax.vmap(jax.jacfwd(lambda row: fun(row[None, :])[0]))(y)
    return jax.jacfwd(fun)(y)


def _block_diag_jacobian(torch: Any, fun: Any, y: Any) -> Any:
    """(B, n, n) per-sample Jacobians of a batched field, from n JVPs with one-hot tangents
    (each tangent perturbs component i of every sample at once)."""
    n = y.shape[-1]
    cols = []
    for i in range(n):
        e = torch.nn.functional.one_hot(torch.full(y.shape[:1], i), n).to(dtype=y.dtype, device=y.device)
        cols.append(torch.func.jvp(fun, (y,), (e,))[1])
    return torch.stack(cols, dim=-1)
