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
    "torchsde": ("torchsde", "torch"),
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

        # a concrete array (no transformation tracing it) has no gradient to stop: skip the
        # dispatch, which costs more than the time loop's own work on a small field
        return jax.lax.stop_gradient(x) if is_traced(x) else x
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


# ----------------------------------------------------------------------------- linear algebra
# The Array API's linalg extension has solve and inv but no LU factorisation, which the
# implicit solvers reuse across Newton iterations and steps (Hairer & Wanner II, §IV.8).
# ``lu_factor`` / ``lu_solve`` give it per library: scipy.linalg for NumPy, torch.linalg for
# PyTorch, jax.lax.linalg / jax.scipy.linalg for JAX; array-api-strict (and any other
# standard namespace) falls back to ``xp.linalg.inv`` (one inverse per factorisation, applied
# by matmul), which is as good for the small, well-scaled systems of the test problems.
class LUFactors:
    """An LU factorisation of a square matrix ``(m, m)`` or a stack ``(B, m, m)``.

    ``singular`` is True when a pivot is exactly zero or not finite (the solve would give
    inf/NaN); callers turn that into a clear status instead of solving.
    """

    def __init__(self, library: str, data: Any, singular: bool, batched: bool) -> None:
        self.library, self.data, self.singular, self.batched = library, data, singular, batched


def _pivots_singular(diag: np.ndarray) -> bool:
    return bool(np.any(diag == 0) or not np.all(np.isfinite(diag)))


def lu_factor(a: Any) -> LUFactors:
    """LU factorisation (with partial pivoting) of ``a``, shape ``(m, m)`` or ``(B, m, m)``."""
    batched = a.ndim == 3
    if isinstance(a, np.ndarray):
        import scipy.linalg

        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # reported as `singular`
            lu, piv = scipy.linalg.lu_factor(a, check_finite=False)
        diag = np.diagonal(lu, axis1=-2, axis2=-1)
        return LUFactors("numpy", (lu, piv), _pivots_singular(diag), batched)
    if array_api_compat.is_torch_array(a):
        torch = require("torch")
        lu, piv, _ = torch.linalg.lu_factor_ex(a)  # no exception on a zero pivot: `singular`
        diag = to_numpy(torch.diagonal(stop_gradient(lu), dim1=-2, dim2=-1))
        return LUFactors("torch", (lu, piv), _pivots_singular(diag), batched)
    if array_api_compat.is_jax_array(a):
        jax = require("jax")
        lu, piv, _ = jax.lax.linalg.lu(a)
        diag = np.diagonal(np.asarray(lu), axis1=-2, axis2=-1)
        return LUFactors("jax", (lu, piv), _pivots_singular(diag), batched)
    xp = namespace(a)
    try:
        inv = xp.linalg.inv(a)
    except Exception:  # noqa: BLE001 - libraries raise their own LinAlgError for a singular matrix
        return LUFactors("inverse", None, True, batched)
    return LUFactors("inverse", inv, not bool(np.all(np.isfinite(to_numpy(inv)))), batched)


def lu_solve(factors: LUFactors, b: Any) -> Any:
    """Solve ``a x = b`` from :func:`lu_factor`'s factors; ``b`` has shape ``(m,)`` for one
    matrix, ``(B, m)`` for a stack (one right-hand side per matrix)."""
    lib, data = factors.library, factors.data
    if lib == "numpy":
        import scipy.linalg

        if factors.batched:
            return scipy.linalg.lu_solve(data, b[..., None], check_finite=False)[..., 0]
        # LAPACK getrs directly: scipy.linalg.lu_solve's argument handling costs ~30 us a call,
        # several times the solve itself at the sizes here (n <= 60)
        getrs = scipy.linalg.get_lapack_funcs("getrs", (data[0], b))
        x, info = getrs(data[0], data[1], b)
        return x
    if lib == "torch":
        torch = require("torch")
        return torch.linalg.lu_solve(data[0], data[1], b[..., None])[..., 0]
    if lib == "jax":
        jax = require("jax")
        solve = jax.scipy.linalg.lu_solve
        if factors.batched:
            return jax.vmap(lambda lu, piv, rhs: solve((lu, piv), rhs))(data[0], data[1], b)
        return solve(data, b)
    xp = namespace(data)
    return xp.matmul(data, b[..., None])[..., 0]


# ----------------------------------------------------------------------------- saved-tensor accounting
# Bytes that reverse-mode autodiff keeps for its backward pass. PyTorch reports
# every tensor an operation saves through ``torch.autograd.graph.saved_tensors_hooks``; its
# functional transforms (``torch.func.vjp``) refuse those hooks, so while a meter is active
# :func:`metered_vjp` computes the same product with ``torch.autograd.grad``. JAX (traced,
# residuals inside XLA) and NumPy (no autodiff) expose nothing comparable: the meter says why.
class SavedTensorMeter:
    """What autograd saved for backward while the meter was active.

    ``total_bytes``: bytes of every distinct tensor saved (a tensor saved by two operations
    counts once while both saves are alive); ``peak_bytes``: the most bytes held by saves
    alive at one time (a save dies when its graph is freed after ``backward``); ``saves``:
    the number of save events. All None, with ``reason`` set, where the library cannot tell.
    """

    def __init__(self, library: str) -> None:
        self.library = library
        self.reason: str | None = None
        self.total_bytes: int | None = 0
        self.peak_bytes: int | None = 0
        self.saves: int | None = 0
        self._live: dict[tuple, list[int]] = {}  # tensor key -> [alive saves, bytes]
        self._live_bytes = 0
        self._hooks: Any = None  # the active saved_tensors_hooks context (PyTorch)

    def _pack(self, t: Any) -> Any:
        try:
            where: Any = t.data_ptr()
        except RuntimeError:  # a tensor of a torch.func transform (no storage of its own)
            where = ("wrapped", id(t))
        key = (where, tuple(t.shape), str(t.dtype), str(t.device))
        self.saves += 1
        entry = self._live.get(key)
        if entry is None:
            nbytes = t.numel() * t.element_size()
            self._live[key] = entry = [0, nbytes]
            self.total_bytes += nbytes
            self._live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self._live_bytes)
        entry[0] += 1
        return _SavedHandle(self, key, t)

    def _release(self, key: tuple) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self._live_bytes -= entry[1]
            del self._live[key]


class _SavedHandle:
    """What the graph holds instead of a saved tensor; tells the meter when the graph drops it."""

    __slots__ = ("meter", "key", "tensor")

    def __init__(self, meter: SavedTensorMeter, key: tuple, tensor: Any) -> None:
        self.meter, self.key, self.tensor = meter, key, tensor

    def __del__(self) -> None:
        self.meter._release(self.key)


_ACTIVE_METERS: list[SavedTensorMeter] = []


def saved_tensor_bytes(library: str) -> Any:
    """Context manager yielding a :class:`SavedTensorMeter` of the autograd work inside it
    (PyTorch); for other libraries the meter's counts are None and ``reason`` says why."""
    import contextlib

    @contextlib.contextmanager
    def _meter() -> Any:
        meter = SavedTensorMeter(library)
        if library != "torch":
            meter.total_bytes = meter.peak_bytes = meter.saves = None
            meter.reason = ("JAX keeps its VJP residuals inside traced computations and NumPy has no autodiff:"
                            " neither exposes the tensors saved for backward")
            yield meter
            return
        torch = require("torch")
        _ACTIVE_METERS.append(meter)
        meter._hooks = torch.autograd.graph.saved_tensors_hooks(meter._pack, lambda handle: handle.tensor)
        meter._hooks.__enter__()
        try:
            yield meter
        finally:
            meter._hooks.__exit__(None, None, None)
            _ACTIVE_METERS.remove(meter)

    return _meter()


def _unmetered_vjp(fun: Any, primals: tuple[Any, ...], cotangent: Any) -> tuple[Any, tuple[Any, ...]]:
    """:func:`vjp` with the active meters' hooks lifted for its duration: a VJP inside a
    torch.func transform (the implicit solvers' autodiff Jacobian of an adjoint field) cannot
    run under saved-tensor hooks; its residuals live only inside that Jacobian evaluation and
    are not metered."""
    torch = require("torch")
    for meter in reversed(_ACTIVE_METERS):
        meter._hooks.__exit__(None, None, None)
    try:
        return vjp(fun, primals, cotangent)
    finally:
        for meter in _ACTIVE_METERS:
            meter._hooks = torch.autograd.graph.saved_tensors_hooks(meter._pack, lambda handle: handle.tensor)
            meter._hooks.__enter__()


def metered_vjp(fun: Any, primals: tuple[Any, ...], cotangent: Any) -> tuple[Any, tuple[Any, ...]]:
    """:func:`vjp`, but visible to an active PyTorch :func:`saved_tensor_bytes` meter: the
    product is taken with ``torch.autograd.grad`` (same operations, same result) instead of
    ``torch.func.vjp``, which refuses saved-tensor hooks. Primals: arrays or dicts of arrays."""
    if not (_ACTIVE_METERS and array_api_compat.is_torch_array(cotangent)):
        return vjp(fun, primals, cotangent)
    torch = require("torch")
    leaves: list[Any] = []

    def lift(p: Any) -> Any:
        if isinstance(p, dict):
            return {k: lift(v) for k, v in p.items()}
        leaf = p.detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf

    try:
        lifted = tuple(lift(p) for p in primals)
    except RuntimeError:  # inside a torch.func transform, which forbids requires_grad_
        return _unmetered_vjp(fun, primals, cotangent)
    with torch.enable_grad():
        out = fun(*lifted)
        grads = torch.autograd.grad(out, leaves, cotangent, allow_unused=True) if out.requires_grad else [None] * len(leaves)
    it = iter(g if g is not None else torch.zeros_like(leaf) for g, leaf in zip(grads, leaves))

    def rebuild(p: Any) -> Any:
        return {k: rebuild(v) for k, v in p.items()} if isinstance(p, dict) else next(it)

    return out.detach(), tuple(rebuild(p) for p in primals)


# ----------------------------------------------------------------------------- compiled / fused steps
# The explicit Runge-Kutta step of ``solvers.rk`` runs as one compiled function on JAX and with
# its stage combinations fused on PyTorch (see ``ExplicitRK.fast_stepper``); the framework calls
# they need live here.
def jit(fun: Any, **kwargs: Any) -> Any:
    """``jax.jit(fun, **kwargs)``: the one place the package asks JAX to compile."""
    return require("jax").jit(fun, **kwargs)


def is_traced(x: Any) -> bool:
    """Whether ``x`` is a JAX tracer (inside ``jax.jit``, ``jax.vjp``, ...), whose values are not
    concrete; False for every other array."""
    if not array_api_compat.is_jax_array(x):
        return False
    import jax

    return isinstance(x, jax.core.Tracer)


def records_gradient(*xs: Any) -> bool:
    """Whether PyTorch autograd is recording any of ``xs`` (grad mode on and one requires grad);
    False for other libraries."""
    for x in xs:
        if array_api_compat.is_torch_array(x):
            import torch

            if torch.is_grad_enabled() and x.requires_grad:
                return True
    return False


def coefficient_matrix(rows: list[list[float]], like: Any) -> Any:
    """A ``(len(rows), width)`` matrix of ``like``'s library, dtype and device (rows padded
    with zeros to the longest)."""
    width = max((len(r) for r in rows), default=0)
    data = np.zeros((len(rows), width), dtype=np.float64)
    for i, r in enumerate(rows):
        data[i, : len(r)] = r
    xp = namespace(like)
    return xp.asarray(data, dtype=like.dtype, device=device(like))


def stage_buffer(like: Any, stages: int) -> Any:
    """An uninitialised ``(stages, like.size)`` buffer for the stage derivatives of one step."""
    xp = namespace(like)
    return xp.empty((stages, int(np.prod(like.shape))), dtype=like.dtype, device=device(like))


def stage_matmuls(like: Any) -> tuple[Any, Any]:
    """``(addmm, mm)`` of ``like``'s library (PyTorch): ``addmm(base_row, coeffs, rows, alpha=h)``
    is ``base_row + h * coeffs @ rows`` in one call, the fused stage combination over a
    :func:`stage_buffer`; ``mm(coeffs, rows)`` without the base. Their sums run in BLAS's
    order, so they may differ from a sequential sum in the last bits. Not for autograd (the
    buffer is written in place)."""
    if not array_api_compat.is_torch_array(like):
        raise NotImplementedError(f"fused stage combinations are PyTorch's; got {type(like).__module__}")
    torch = require("torch")
    return torch.addmm, torch.mm


# ----------------------------------------------------------------------------- user models
# ``odeverify diagnose`` takes the user's own vector field: a PyTorch ``nn.Module`` or an
# Equinox module (a pytree holding its parameters), or a plain callable. These helpers read the
# parameters out of it and call it with parameters given as arrays (functionally), so the
# gradient modes can differentiate with respect to them without knowing the framework.
def model_library(obj: Any) -> str | None:
    """``"torch"`` for a ``torch.nn.Module``, ``"jax"`` for an Equinox module, None otherwise
    (decided from the class hierarchy's modules, without importing either library)."""
    for cls in type(obj).__mro__:
        mod = getattr(cls, "__module__", "") or ""
        if mod.startswith("torch.nn"):
            return "torch"
        if mod.startswith("equinox"):
            return "jax"
    return None


def model_parameters(obj: Any, library: str) -> tuple[dict[str, np.ndarray], dict[str, bool], dict[str, np.ndarray]]:
    """``(params, requires_grad, buffers)`` of a module: float64 NumPy copies of its floating
    parameters by name, whether each requires a gradient (PyTorch; always True for Equinox's
    inexact arrays), and its floating buffers (PyTorch running statistics; constants)."""
    if library == "torch":
        params = {k: np.array(to_numpy(v), dtype=np.float64) for k, v in obj.named_parameters()}
        grads = {k: bool(v.requires_grad) for k, v in obj.named_parameters()}
        buffers = {k: np.array(to_numpy(v), dtype=np.float64) for k, v in obj.named_buffers()
                   if v.is_floating_point()}
        return params, grads, buffers
    if library == "jax":
        jax = require("jax")
        leaves = jax.tree_util.tree_leaves_with_path(obj)
        params = {}
        for path, leaf in leaves:
            if array_api_compat.is_jax_array(leaf) and jax.numpy.issubdtype(leaf.dtype, jax.numpy.inexact):
                params[jax.tree_util.keystr(path)] = np.array(leaf, dtype=np.float64)
        return params, dict.fromkeys(params, True), {}
    raise ValueError(f"library={library!r}: only PyTorch and Equinox modules carry parameters")


def model_caller(obj: Any, library: str, names: tuple[str, ...]) -> Any:
    """``call(t, y, params)``: the module evaluated at ``(t, y)`` with the arrays ``params``
    (name -> array, names as :func:`model_parameters` gives them) in place of its own
    (``torch.func.functional_call`` on PyTorch, the pytree's leaves replaced on JAX)."""
    if library == "torch":
        torch = require("torch")

        def call(t: Any, y: Any, params: dict[str, Any]) -> Any:
            return torch.func.functional_call(obj, params, (t, y), strict=False)

        return call
    if library == "jax":
        jax = require("jax")
        leaves, treedef = jax.tree_util.tree_flatten_with_path(obj)
        keys = [jax.tree_util.keystr(path) for path, _ in leaves]
        plain = [leaf for _, leaf in leaves]

        def call(t: Any, y: Any, params: dict[str, Any]) -> Any:
            filled = [params.get(k, leaf) if k in names else leaf for k, leaf in zip(keys, plain)]
            return jax.tree_util.tree_unflatten(treedef, filled)(t, y)

        return call
    raise ValueError(f"library={library!r}: only PyTorch and Equinox modules carry parameters")


def batch_jacobian(fun: Any, y: Any) -> Any:
    """Per-sample Jacobians ``(B, n, n)`` of a batched field ``fun`` at ``y`` ``(B, n)`` whose
    samples are independent: the Jacobian of ``u -> fun(y + u)`` at ``u = 0`` (``u`` of shape
    ``(n,)``, added to every sample), one vectorised forward-mode pass over the n directions
    instead of n separate JVPs. A function the vectorising map cannot trace (data-dependent
    control flow) falls back to :func:`jacobian`."""
    lib = _autodiff_library(y)
    if lib == "torch":
        torch = require("torch")
        u0 = torch.zeros(y.shape[-1], dtype=y.dtype, device=y.device)
        try:
            return torch.func.jacfwd(lambda u: fun(y + u))(u0)
        except RuntimeError:
            return jacobian(fun, y)
    jax = require("jax")
    u0 = jax.numpy.zeros(y.shape[-1], dtype=y.dtype)
    return jax.jacfwd(lambda u: fun(y + u))(u0)
