"""The user's Neural ODE as odeverify sees it: :class:`UserModel`.

A user brings a vector field ``f(t, z)`` from their own code: a PyTorch ``nn.Module`` (or a
callable on tensors), an Equinox module (or a callable on JAX arrays), or a NumPy callable;
an initial-state batch ``z0`` of shape ``(B, n)``; a time span and output times; optionally
the solver and the gradient mode they train with. :meth:`UserModel.build` validates all of it
before any work (bad input raises ``ValueError`` naming what is wrong) and
:meth:`UserModel.problem` turns it into an odeverify :class:`~odeverify.problems.Problem`,
so the integrator, the gradient modes and the properties apply unchanged:

- the module's floating parameters that require gradients become the problem's NumPy
  parameters (float64 copies, by their module names: ``"net.0.weight"``, or Equinox's
  pytree paths ``".layers[0].weight"``); the gradient modes convert them to the library and
  differentiate with respect to them (the module is called functionally with them,
  :func:`odeverify._xp.model_caller`);
- frozen parameters and buffers are constants;
- every computation is float64 (a float32 module's parameters are cast).

Jacobians of f come from the field's own library (forward-mode autodiff, one block per
sample) or, for a NumPy field, from forward differences (:func:`odeverify.backends.base.fd_jacobian`).

``z0`` may be an array, a ``.npy`` file, or a seeded distribution spec ``"normal:256"``
(``"normal:BxN"``, ``"uniform:B"``, options ``:seed=S``, ``:scale=s``; N comes from the spec,
from ``n=``, or from the field's ``dim`` attribute).
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _xp
from ..backends.base import fd_jacobian
from ..gradients import GRADIENT_MODES, Loss, value_and_grad
from ..gradients._spec import GradientResult
from ..integrate import solve as integrate_solve
from ..problems import Problem
from ..solution import Solution
from ..solvers import SOLVERS

#: distributions a z0 spec may name
Z0_DISTRIBUTIONS = ("normal", "uniform")
#: libraries a user field may be written in
FIELD_LIBRARIES = ("torch", "jax", "numpy")
#: default solver and tolerances of a diagnosis (the user's own when given)
DEFAULT_METHOD = "dopri5"
DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-9


# ----------------------------------------------------------------------------- loading
def load_field(path: str) -> Any:
    """The object named by ``path``: ``"package.module:attr"`` (``attr`` may be dotted) or
    ``"some/file.py:attr"``. A class is instantiated with no arguments; a function that takes
    no required argument is called (a factory). A path that does not
    resolve raises ValueError naming the part that failed and why."""
    if not isinstance(path, str):
        raise TypeError(f"field path={path!r}, but it must be a str 'package.module:attr'")
    if path.count(":") != 1 or not all(path.split(":")):
        raise ValueError(f"field path={path!r}, but it must have the form 'package.module:attr'"
                         " (or 'file.py:attr'): one colon between the module and the attribute")
    mod_name, attr = path.split(":")
    if mod_name.endswith(".py"):
        if not os.path.isfile(mod_name):
            raise ValueError(f"field path={path!r}: the file {mod_name!r} does not exist")
        spec = importlib.util.spec_from_file_location(f"_odeverify_user_{abs(hash(mod_name))}", mod_name)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's module failed while importing: say so
            raise ValueError(f"field path={path!r}: importing {mod_name!r} raised {type(exc).__name__}: {exc}") from exc
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())  # a module next to the user, as `python -m` would find it
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            raise ValueError(f"field path={path!r}: the module {mod_name!r} cannot be imported"
                             f" ({exc}); is it installed or on PYTHONPATH?") from exc
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"field path={path!r}: importing {mod_name!r} raised {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; it has {', '.join(names[:12])}"
            raise ValueError(f"field path={path!r}: {mod_name!r} has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
    if isinstance(obj, type):
        try:
            obj = obj()
        except TypeError as exc:
            raise ValueError(f"field path={path!r} names the class {obj.__name__}, which cannot be built"
                             f" without arguments ({exc}); name an instance or a factory") from exc
    elif _is_factory(obj):
        obj = obj()
    if not callable(obj):
        raise ValueError(f"field path={path!r} names a {type(obj).__name__}, not a callable field f(t, z)")
    return obj


def _is_factory(obj: Any) -> bool:
    """A plain function that takes no required argument (``def mlp(): return MLPField(...)``):
    a field takes (t, z), so such a function builds one."""
    if not inspect.isfunction(obj):
        return False
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return False
    return not any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def parse_z0(z0: Any, *, n: int | None = None) -> np.ndarray:
    """The initial-state batch as float64 ``(B, n)``: from an array (``(n,)`` is one sample),
    a ``.npy`` file, or a distribution spec ``"normal:B[xN][:seed=S][:scale=s]"`` /
    ``"uniform:..."`` (uniform on ``[-scale, scale]``; seed 0 and scale 1 by default)."""
    if isinstance(z0, (str, os.PathLike)):
        text = os.fspath(z0)
        head = text.split(":")[0]
        if head in Z0_DISTRIBUTIONS:
            return _z0_from_spec(text, n)
        if not os.path.isfile(text):
            raise ValueError(f"z0={text!r} is neither a file nor a distribution spec"
                             f" ({' or '.join(d + ':B[xN][:seed=S][:scale=s]' for d in Z0_DISTRIBUTIONS)})")
        try:
            arr = np.load(text, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - not a .npy file, or a corrupt one
            raise ValueError(f"z0={text!r} could not be read as a NumPy .npy file: {exc}") from exc
    else:
        arr = _xp.to_numpy(z0) if _xp.is_array(z0) else z0
    try:
        arr = np.array(arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"z0 could not be read as an array of floats ({exc})") from exc
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"z0 has shape {arr.shape}, but it must be (B, n) (a batch of states) or (n,)")
    if n is not None and arr.shape[1] != n:
        raise ValueError(f"z0 has dimension n={arr.shape[1]} (shape {arr.shape}), but the field's state has"
                         f" dimension {n}")
    bad = np.flatnonzero(~np.all(np.isfinite(arr), axis=1))
    if bad.size:
        raise ValueError(f"z0 has non-finite values in sample(s) {bad[:10].tolist()}; every state must be finite")
    return arr


def _z0_from_spec(text: str, n: int | None) -> np.ndarray:
    parts = text.split(":")
    dist = parts[0]
    if len(parts) < 2 or not parts[1]:
        raise ValueError(f"z0={text!r}: a distribution spec needs the batch size, e.g. '{dist}:256' or '{dist}:256x32'")
    size = parts[1].lower().split("x")
    try:
        batch = int(size[0])
        dim = int(size[1]) if len(size) > 1 else n
    except ValueError:
        raise ValueError(f"z0={text!r}: the size {parts[1]!r} must be B or BxN (integers)") from None
    if len(size) > 2 or batch < 1 or (dim is not None and dim < 1):
        raise ValueError(f"z0={text!r}: the size {parts[1]!r} must be B or BxN with B, N >= 1")
    if dim is None:
        raise ValueError(f"z0={text!r} does not give the state dimension and the field does not say it"
                         f" (no 'dim' attribute): write '{dist}:{batch}xN'")
    if n is not None and dim != n:
        raise ValueError(f"z0={text!r} has dimension N={dim}, but the field's state has dimension {n}")
    opts = {"seed": 0.0, "scale": 1.0}
    for opt in parts[2:]:
        key, _, value = opt.partition("=")
        if key not in opts or not value:
            raise ValueError(f"z0={text!r}: unknown option {opt!r}; expected seed=S or scale=s")
        try:
            opts[key] = float(value)
        except ValueError:
            raise ValueError(f"z0={text!r}: option {opt!r} needs a number") from None
    seed = int(opts["seed"])
    if seed != opts["seed"] or seed < 0 or not (opts["scale"] > 0 and math.isfinite(opts["scale"])):
        raise ValueError(f"z0={text!r}: seed must be an int >= 0 and scale a finite number > 0")
    rng = np.random.default_rng(seed)
    if dist == "normal":
        return opts["scale"] * rng.standard_normal((batch, dim))
    return opts["scale"] * rng.uniform(-1.0, 1.0, (batch, dim))


def parse_times(value: Any, name: str) -> tuple[float, ...]:
    """A tuple of finite floats from a sequence or a string ``"0,0.5,1"`` (CLI)."""
    if isinstance(value, str):
        try:
            value = [float(v) for v in value.replace(" ", "").split(",") if v]
        except ValueError:
            raise ValueError(f"{name}={value!r}, but it must be comma-separated numbers, e.g. '0,1'") from None
    try:
        out = tuple(float(v) for v in np.ravel(np.asarray(_xp.to_numpy(value) if _xp.is_array(value) else value,
                                                          dtype=np.float64)))
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}, but it must be a sequence of numbers") from None
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name}={value!r}, but every time must be finite")
    return out


# ----------------------------------------------------------------------------- the model
def _detect_library(field_obj: Any, z: np.ndarray) -> str:
    """The library a plain callable computes in: called with NumPy, it returns NumPy (numpy)
    or a JAX array (jax); otherwise it is tried on a torch tensor."""
    lib = _xp.model_library(field_obj)
    if lib is not None:
        return lib
    errors: list[str] = []
    try:
        out = field_obj(np.float64(0.0), z)
    except Exception as exc:  # noqa: BLE001 - not a NumPy field: try the frameworks
        out = None
        errors.append(f"NumPy: {type(exc).__name__}: {exc}")
    if isinstance(out, np.ndarray):
        return "numpy"
    if out is not None and _xp.is_array(out):
        name = _xp.library_name(_xp.namespace(out))
        if name in ("jax", "torch"):
            return name
    # a field written for a framework was defined by code that imported it: try only those
    for lib in ("torch", "jax"):
        if lib not in sys.modules:
            continue
        xp = _xp.get_namespace(lib)
        try:
            out = field_obj(xp.asarray(0.0, dtype=xp.float64), xp.asarray(z, dtype=xp.float64))
            if _xp.is_array(out) and _xp.library_name(_xp.namespace(out)) == lib:
                return lib
            errors.append(f"{lib}: returned {type(out).__name__}")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{lib}: {type(exc).__name__}: {exc}")
    raise ValueError(f"the field raised or returned no array when called at t=0 with z0 of shape {z.shape}"
                     f" (n={z.shape[1]}) as {' / '.join(e.split(':')[0] for e in errors) or 'NumPy'} arrays"
                     f" ({'; '.join(errors)[:400]}). Is z0's dimension the field's state dimension? (pass library="
                     f"one of {', '.join(FIELD_LIBRARIES)} if it computes in another library)")


@dataclass
class UserModel:
    """A user's vector field with its parameters, initial batch, span and training choices.

    Build it with :meth:`build` (which validates); the fields are then consistent:
    ``z0`` float64 ``(B, n)``, ``t_eval`` inside ``t_span`` and monotone, ``params`` the
    differentiable parameters (float64 NumPy, by name), ``constants`` the frozen parameters
    and buffers, ``library`` the field's library (torch, jax or numpy), ``method`` the user's
    solver name (or :data:`DEFAULT_METHOD`), ``mode`` the user's gradient mode (None: not
    given), ``rtol``/``atol`` the user's tolerances, ``batched_time`` whether the field takes
    one time per sample (``t`` of shape ``(B,)``), ``autonomous`` whether its output was seen
    not to depend on t.
    """

    field: Any
    library: str
    z0: np.ndarray
    t_span: tuple[float, float]
    t_eval: tuple[float, ...]
    method: str = DEFAULT_METHOD
    mode: str | None = None
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    name: str = "user_field"
    params: dict[str, np.ndarray] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    batched_time: bool = False
    autonomous: bool = False
    _caller: Any = None
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, field_obj: Any, z0: Any, t_span: Any, *, t_eval: Any = None, method: str | None = None,
              mode: str | None = None, rtol: float | None = None, atol: float | None = None,
              library: str | None = None, name: str | None = None, n: int | None = None) -> UserModel:
        """Validate everything and build the model (raises before any solve).

        ``field_obj``: a callable ``f(t, z)`` (``z`` of shape ``(B, n)``, ``t`` a 0-d array),
        a PyTorch/Equinox module, or an import path ``"pkg.mod:attr"`` (:func:`load_field`).
        """
        if isinstance(field_obj, str):
            name = name or field_obj
            field_obj = load_field(field_obj)
        if not callable(field_obj):
            raise TypeError(f"field={field_obj!r}, but it must be callable as f(t, z) (or an import path str)")
        if library is not None and library not in FIELD_LIBRARIES:
            raise ValueError(f"library={library!r}, but it must be one of {', '.join(FIELD_LIBRARIES)}")
        if n is None:
            dim = getattr(field_obj, "dim", None)
            n = int(dim) if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) else None
        z0_np = parse_z0(z0, n=n)
        span = parse_times(t_span, "t_span")
        if len(span) != 2 or span[0] == span[1]:
            raise ValueError(f"t_span={t_span!r}, but it must be two distinct finite times (t0, t1)")
        if t_eval is None:
            ts = span
        else:
            ts = parse_times(t_eval, "t_eval")
            lo, hi = min(span), max(span)
            direction = 1.0 if span[1] > span[0] else -1.0
            if not ts or min(ts) < lo or max(ts) > hi:
                raise ValueError(f"t_eval={list(ts)}, but every output time must lie inside t_span={span}")
            if np.any(direction * np.diff(ts) <= 0):
                raise ValueError(f"t_eval={list(ts)}, but it must be strictly monotone in the direction of"
                                 f" t_span={span}")
        method = DEFAULT_METHOD if method is None else method
        if not isinstance(method, str):
            raise TypeError(f"method={method!r}, but it must be a solver name (str); see `odeverify list`")
        if method not in SOLVERS:
            SOLVERS.get(method)  # raises ValueError naming the closest match
        if mode is not None:
            if not isinstance(mode, str):
                raise TypeError(f"mode={mode!r}, but it must be a gradient mode name (str)")
            GRADIENT_MODES.get(mode)  # raises ValueError naming the closest match
        rtol = DEFAULT_RTOL if rtol is None else rtol
        atol = DEFAULT_ATOL if atol is None else atol
        for key, value in (("rtol", rtol), ("atol", atol)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < 1):
                raise ValueError(f"{key}={value!r}, but it must be a float in (0, 1)")

        lib = library or _detect_library(field_obj, z0_np[:1])
        params: dict[str, np.ndarray] = {}
        constants: dict[str, np.ndarray] = {}
        if _xp.model_library(field_obj) is not None:
            if lib != _xp.model_library(field_obj):
                raise ValueError(f"library={lib!r}, but the field is a {_xp.model_library(field_obj)} module")
            all_params, requires, buffers = _xp.model_parameters(field_obj, lib)
            params = {k: v for k, v in all_params.items() if requires[k]}
            constants = {**{k: v for k, v in all_params.items() if not requires[k]}, **buffers}
            if all_params and not params:
                raise ValueError(f"the field's parameters ({', '.join(list(all_params)[:6])}"
                                 f"{', ...' if len(all_params) > 6 else ''}) all have requires_grad=False: a model"
                                 " whose parameters do not require gradients cannot be trained; call"
                                 " .requires_grad_(True) (or diagnose the model you train)")
        model = cls(field=field_obj, library=lib, z0=z0_np, t_span=(span[0], span[1]), t_eval=ts, method=method,
                    mode=mode, rtol=float(rtol), atol=float(atol),
                    name=name or getattr(field_obj, "__name__", type(field_obj).__name__), params=params,
                    constants=constants)
        if params or constants:
            model._caller = _xp.model_caller(field_obj, lib, tuple(params) + tuple(constants))
        model._validate_output()
        model._probe_time()
        return model

    def _validate_output(self) -> None:
        """The field at z0 (and t0): it must return the state's shape, finite."""
        z = self.z0
        try:
            out = self.evaluate(self.t_span[0], z)
        except Exception as exc:  # noqa: BLE001 - the user's code raised: name the inputs
            raise ValueError(f"the field raised {type(exc).__name__} when called at t={self.t_span[0]:g} with z0 of"
                             f" shape {z.shape} (n={z.shape[1]}): {exc}. Is z0's dimension the field's state"
                             " dimension?") from exc
        if out.shape != z.shape:
            raise ValueError(f"the field returned shape {out.shape} for z of shape {z.shape}; f(t, z) must"
                             " return dz/dt of z's shape")
        bad = np.flatnonzero(~np.all(np.isfinite(out), axis=1))
        if bad.size:
            raise ValueError(f"the field returned non-finite values (NaN or inf) at t={self.t_span[0]:g} for"
                             f" sample(s) {bad[:10].tolist()} of z0")

    def _probe_time(self) -> None:
        """Whether the field depends on t, and whether it takes a per-sample time vector."""
        t0, t1 = self.t_span
        z = self.z0[: min(4, self.batch)]
        times = [t0 + frac * (t1 - t0) for frac in (0.0, 0.3819660112501051, 0.7071067811865476)]
        outs = [self.evaluate(t, z) for t in times]
        self.autonomous = all(np.array_equal(outs[0], o) for o in outs[1:])
        tvec = np.asarray([times[i % 3] for i in range(z.shape[0])])
        xp, _ = self._native(self.library)
        params = {k: xp.asarray(v, dtype=xp.float64) for k, v in self.params.items()}
        try:  # the user's field itself, with no per-sample fallback in between
            got = self._call(xp.asarray(tvec, dtype=xp.float64), xp.asarray(z, dtype=xp.float64), params, xp)
            got = np.asarray(_xp.to_numpy(got), dtype=np.float64)
        except Exception:  # noqa: BLE001 - a field written for one shared time
            self.batched_time = False
            return
        want = np.stack([outs[i % 3][i] for i in range(z.shape[0])])
        self.batched_time = bool(got.shape == want.shape and np.allclose(got, want, rtol=1e-12, atol=1e-12))

    # ------------------------------------------------------------------ shape
    @property
    def n(self) -> int:
        return int(self.z0.shape[1])

    @property
    def batch(self) -> int:
        return int(self.z0.shape[0])

    @property
    def differentiable(self) -> bool:
        """Whether the field's library has autodiff (the gradient measurements need it)."""
        return self.library in ("torch", "jax")

    @property
    def n_params(self) -> int:
        return int(sum(v.size for v in self.params.values()))

    # ------------------------------------------------------------------ evaluation
    def _native(self, library: str, dtype: Any = None) -> tuple[Any, dict[str, Any]]:
        """(xp, constants as xp arrays) of a library, cached."""
        key = ("const", library, str(dtype))
        if key not in self._cache:
            xp = _xp.get_namespace(library)
            dt = xp.float64 if dtype is None else dtype
            self._cache[key] = (xp, {k: xp.asarray(v, dtype=dt) for k, v in self.constants.items()})
        return self._cache[key]

    def _call(self, t: Any, y: Any, p: dict[str, Any], xp: Any) -> Any:
        """The user's field at (t, y) with parameters ``p`` (arrays of the field's library)."""
        if self._caller is None:
            return self.field(t, y)
        _, const = self._native(self.library, y.dtype)
        return self._caller(t, y, {**const, **p})

    def rhs(self, xp: Any, t: Any, y: Any, p: dict[str, Any]) -> Any:
        """``Problem.rhs``: the field in ``xp`` with parameters ``p``. In the field's own library
        it is called directly (autodiff flows through); a NumPy ``xp`` on a torch/JAX field goes
        through the field's library (no gradients). A per-sample time vector is passed on when
        the field takes one, collapsed for an autonomous field, else evaluated sample by sample."""
        lib = _xp.library_name(xp)
        p = {k: v for k, v in p.items() if k in self.params}
        if lib != self.library:
            if lib != "numpy":
                raise ValueError(f"the field computes in {self.library}; it cannot be evaluated (or differentiated)"
                                 f" in {lib}")
            nxp, _ = self._native(self.library)
            tt = nxp.asarray(np.asarray(t, dtype=np.float64), dtype=nxp.float64)
            yy = nxp.asarray(np.asarray(y, dtype=np.float64), dtype=nxp.float64)
            pp = {k: nxp.asarray(np.asarray(v, dtype=np.float64), dtype=nxp.float64) for k, v in p.items()}
            return np.asarray(_xp.to_numpy(self.rhs(nxp, tt, yy, pp)), dtype=np.float64)
        if getattr(t, "ndim", 0) >= 1 and not self.batched_time:
            if self.autonomous:
                return self._call(t[0], y, p, xp)
            rows = [self._call(t[i], y[i:i + 1], p, xp) for i in range(y.shape[0])]
            return xp.concat(rows, axis=0)
        if y.ndim == 1:  # one state (a Problem's y0): the user's field takes a batch
            return self._call(t, y[None, :], p, xp)[0]
        return self._call(t, y, p, xp)

    def evaluate(self, t: Any, z: np.ndarray) -> np.ndarray:
        """f(t, z) as float64 NumPy (any library), with the model's own parameters."""
        return np.asarray(self.numpy_field()(np.asarray(t, dtype=np.float64), np.asarray(z, dtype=np.float64)),
                          dtype=np.float64)

    def numpy_field(self) -> Callable[[Any, np.ndarray], np.ndarray]:
        """``f(t, z)`` on NumPy float64 in and out, whatever the field's library."""
        if "numpy_field" not in self._cache:
            xp = _xp.get_namespace("numpy")
            params = dict(self.params)

            def f(t: Any, z: np.ndarray) -> np.ndarray:
                out = self.rhs(xp, np.asarray(t, dtype=np.float64), np.asarray(z, dtype=np.float64), params)
                if not _xp.is_array(out):
                    raise TypeError(f"the field returned {type(out).__name__}, not an array")
                return np.asarray(_xp.to_numpy(out), dtype=np.float64)

            self._cache["numpy_field"] = f
        return self._cache["numpy_field"]

    def vector_field(self, library: str | None = None) -> Callable[[Any, Any], Any]:
        """``f(t, y)`` for :func:`odeverify.solve` in ``library`` (default the field's own),
        float64, parameters converted once (one object per library, so JAX compiles once)."""
        library = library or self.library
        key = ("field", library)
        if key not in self._cache:
            xp = _xp.get_namespace(library)
            params = {k: xp.asarray(v, dtype=xp.float64) for k, v in self.params.items()}

            def f(t: Any, y: Any) -> Any:
                return self.rhs(xp, t, y, params)

            f.__name__ = f"{self.name}_rhs"
            self._cache[key] = f
        return self._cache[key]

    def array(self, z: np.ndarray, library: str | None = None) -> Any:
        """A NumPy state as a float64 array of ``library`` (default the field's)."""
        xp = _xp.get_namespace(library or self.library)
        return xp.asarray(np.asarray(z, dtype=np.float64), dtype=xp.float64)

    def jacobian(self, t: float, z: np.ndarray) -> np.ndarray:
        """df/dz at time t for each state of ``z`` ``(B, n)``: ``(B, n, n)`` float64 NumPy, by the
        field's autodiff (forward mode, vectorised over the n directions) or, for NumPy, forward differences (n + 1 evaluations
        per sample)."""
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        if self.differentiable:
            xp = _xp.get_namespace(self.library)
            f = self.vector_field()
            tt = xp.asarray(float(t), dtype=xp.float64)
            jac = _xp.batch_jacobian(lambda y: f(tt, y), self.array(z))
            return np.asarray(_xp.to_numpy(jac), dtype=np.float64)
        f = self.numpy_field()
        return np.stack([fd_jacobian(lambda s, y: f(s, y[None, :])[0], float(t), row) for row in z])

    # ------------------------------------------------------------------ odeverify views
    def problem(self, z0: np.ndarray | None = None) -> Problem:
        """The model as an odeverify Problem: ``rhs`` calls the field, ``params`` are its
        differentiable parameters, ``y0`` is the first state of ``z0`` (pass the batch as the
        solve's or the gradient's ``y0``)."""
        y0 = self.z0[0] if z0 is None else np.atleast_2d(np.asarray(z0, dtype=np.float64))[0]
        return Problem(name=self.name, rhs=self.rhs, y0=tuple(y0), t_span=self.t_span, params=dict(self.params),
                       tags={"neural", "autonomous" if self.autonomous else "time_dependent"},
                       description=f"user field {self.name!r} ({self.library}, state {self.n},"
                                   f" {self.n_params} parameters)")

    def solve(self, *, method: Any = None, z0: np.ndarray | None = None, rtol: float | None = None,
              atol: float | None = None, t_eval: Sequence[float] | None = None, t_span: Any = None,
              batch: str = "shared", max_steps: int = 20_000, library: str | None = None, **options: Any) -> Solution:
        """:func:`odeverify.solve` of the batch (default the model's z0, solver, tolerances and
        output times) in the field's library (or ``library``); ``batch="per-sample"`` gives each
        sample its own steps and counts."""
        lib = library or self.library
        z = self.z0 if z0 is None else np.atleast_2d(np.asarray(z0, dtype=np.float64))
        return integrate_solve(self.vector_field(lib), self.array(z, lib), self.t_span if t_span is None else t_span,
                               method=self.method if method is None else method,
                               t_eval=self.t_eval if t_eval is None else t_eval,
                               rtol=self.rtol if rtol is None else rtol, atol=self.atol if atol is None else atol,
                               batch=batch, max_steps=max_steps, **options)

    def loss(self, seed: int = 0) -> Loss:
        """The loss the gradient measurements differentiate: seeded N(0, 1) weights on the state
        at every output time after t0, plus |z|^2 / 4 (``Loss``'s ``q/2 |z|^2`` with ``q = 1/2``: a
        generic training loss's shape)."""
        ts = [t for t in self.t_eval if t != self.t_span[0]] or [self.t_span[1]]
        return Loss.seeded(ts, self.n, seed=seed, quadratic=0.5)

    def value_and_grad(self, mode: str, *, method: Any = None, z0: np.ndarray | None = None,
                       rtol: float | None = None, atol: float | None = None, loss: Loss | None = None,
                       **options: Any) -> GradientResult:
        """:func:`odeverify.gradients.value_and_grad` of :meth:`loss` (default) with respect to
        z0 and the parameters, in the field's library, float64."""
        if not self.differentiable:
            raise ValueError(f"the field computes in {self.library}, which has no automatic differentiation:"
                             " gradient measurements need a PyTorch or JAX field")
        z = self.z0 if z0 is None else np.atleast_2d(np.asarray(z0, dtype=np.float64))
        return value_and_grad(self.problem(z), self.loss() if loss is None else loss, mode=mode,
                              method=self.method if method is None else method, library=self.library,
                              y0=z, rtol=self.rtol if rtol is None else rtol,
                              atol=self.atol if atol is None else atol, **options)

    def subsample(self, size: int, seed: int = 0) -> np.ndarray:
        """Indices of ``size`` samples of the batch (all when the batch is smaller), sorted,
        drawn with ``numpy.random.default_rng(seed)``."""
        if size >= self.batch:
            return np.arange(self.batch)
        return np.sort(np.random.default_rng(seed).choice(self.batch, size=size, replace=False))

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary of the model (for the diagnosis' header)."""
        return {"name": self.name, "library": self.library, "state_dim": self.n, "batch": self.batch,
                "n_params": self.n_params, "t_span": list(self.t_span), "t_eval": list(self.t_eval),
                "method": self.method, "mode": self.mode, "rtol": self.rtol, "atol": self.atol,
                "autonomous": self.autonomous, "batched_time": self.batched_time}
