"""JAX's persistent compilation cache for odeverify's JAX paths, and a compile counter.

A diffrax check compiles about a hundred XLA programs of 1-2 s each, and those compilations
are most of its time. JAX can keep compiled programs on disk and read them back in a later
process (its *persistent compilation cache*); :func:`enable` turns it on, once per process,
before the first compilation of any odeverify JAX path (the diffrax backend and its
gradients call it; so can any other JAX path).

Where the cache lives (:func:`resolve`), first match wins:

1. a cache directory the user already gave JAX (``jax.config.update("jax_compilation_cache_dir",
   ...)`` or the ``JAX_COMPILATION_CACHE_DIR`` environment variable): used as it is, and none of
   JAX's cache settings is touched; likewise a cache the user switched off in JAX
   (``jax_enable_compilation_cache=False``) stays off;
2. the environment variable ``ODEVERIFY_JAX_CACHE``: a directory, or ``off`` (also the empty
   string, ``0``, ``false``, ``no``, ``none``) for no persistent cache;
3. ``$XDG_CACHE_HOME/odeverify/jax``, else ``~/.cache/odeverify/jax`` (next to the journals of
   ``odeverify check``).

In cases 2 and 3 the directory is created and probed with a test file first. One that cannot be
written gives one :class:`JaxCacheWarning` (naming the directory, the reason and the variable
that chooses another) and the run goes on compiling without a persistent cache. JAX's own
thresholds are lowered for odeverify's directory so that every compilation is kept
(:data:`MIN_COMPILE_TIME_S`; JAX's default of 1 s would skip diffrax's smaller solves on a fast
machine), and no entry size limit applies.

JAX does not store a program with host callbacks. equinox (under diffrax, optimistix, lineax)
compiles each of its run-time checks (``eqx.error_if``: save times in order, ``dt0`` of the
span's sign, ...) as a host callback that raises, so by default no diffrax solve could be
stored. While odeverify traces its own programs with a persistent cache in use,
:func:`cacheable_checks` has equinox compile those checks as ``EQX_ON_ERROR=nan`` does (a check
that fires turns the result into NaN instead of raising; odeverify validates its inputs before
a solve, and its solves run with ``throw=False``), unless the user set ``EQX_ON_ERROR``. What
stays uncached: the counting twins (``count_nfev``, the gradient counters) and the solves of
diffrax's implicit methods, whose evaluations are counted by a host callback. Tracing and
lowering are not cached either: a warm cache saves XLA's compile step only.

The cache is trusted code: JAX runs what it reads from it, so the directory must not be
writable by anyone else (JAX's documentation says the same of ``set_cache_dir``).
"""
from __future__ import annotations

import os
import tempfile
import threading
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: environment variable that chooses the cache directory, or switches it off
ENV = "ODEVERIFY_JAX_CACHE"
#: values of :data:`ENV` that switch the persistent cache off (compared lower-case, stripped)
OFF_VALUES = frozenset({"", "off", "0", "false", "no", "none"})
#: the compile time above which JAX writes an entry (JAX's default is 1 s); 0 keeps them all
MIN_COMPILE_TIME_S = 0.0
#: JAX's event for one XLA compilation (a persistent-cache hit included: it is timed there too)
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
HIT_EVENT = "/jax/compilation_cache/cache_hits"
#: JAX records "cache_misses" when it writes an entry (after a miss of a cacheable program)
WRITE_EVENT = "/jax/compilation_cache/cache_misses"


class JaxCacheWarning(RuntimeWarning):
    """The persistent compilation cache could not be used; the run compiles without it."""


@dataclass(frozen=True)
class CacheChoice:
    """Where the cache is (``path``, None when there is none) and why (``source``: ``"jax"``, a
    directory the user gave JAX; ``"jax-off"``, the user switched JAX's cache off; ``"env"``,
    :data:`ENV`; ``"env-off"``, :data:`ENV` switches it off; ``"default"``)."""

    path: Path | None
    source: str


_lock = threading.Lock()
_checks_lock = threading.RLock()  # one switch of equinox's mode at a time
_enabled: dict[str, Any] = {}  # "choice": the CacheChoice once enable() has run


def default_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/odeverify/jax``, else ``~/.cache/odeverify/jax``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "odeverify" / "jax"


def resolve(environ: Mapping[str, str] | None = None, jax_dir: str | None = None,
            jax_enabled: bool = True) -> CacheChoice:
    """The cache directory odeverify would use (see the module docstring), without touching
    anything. ``jax_dir``/``jax_enabled``: JAX's ``jax_compilation_cache_dir`` and
    ``jax_enable_compilation_cache`` as the user left them."""
    if jax_dir:
        return CacheChoice(Path(jax_dir), "jax")
    if not jax_enabled:
        return CacheChoice(None, "jax-off")
    env = os.environ if environ is None else environ
    if ENV in env:
        value = env[ENV].strip()
        if value.lower() in OFF_VALUES:
            return CacheChoice(None, "env-off")
        return CacheChoice(Path(value).expanduser(), "env")
    return CacheChoice(default_dir(env), "default")


def _probe(path: Path) -> None:
    """Create ``path`` and write (then remove) a file in it; raises OSError if it cannot."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".odeverify-probe-"):
        pass


def enable() -> Path | None:
    """Turn on JAX's persistent compilation cache for this process (once; later calls return
    the first answer). Returns the directory in use, or None when there is none: switched off,
    or not writable (one :class:`JaxCacheWarning`). Call it before the first compilation."""
    with _lock:
        if "choice" in _enabled:
            return _enabled["choice"].path
        import jax

        choice = resolve(jax_dir=jax.config.jax_compilation_cache_dir,
                         jax_enabled=bool(jax.config.jax_enable_compilation_cache))
        if choice.source in ("env", "default"):
            assert choice.path is not None
            try:
                _probe(choice.path)
            except OSError as exc:
                origin = f"{ENV}={os.environ.get(ENV, '')!r}" if choice.source == "env" else "the default"
                warnings.warn(f"the JAX compilation cache directory {str(choice.path)!r} ({origin}) cannot be"
                              f" written ({exc}); compiling without a persistent cache. Set {ENV} to a writable"
                              f" directory, or to 'off'", JaxCacheWarning, stacklevel=2)
                choice = CacheChoice(None, "unwritable")
            else:
                jax.config.update("jax_compilation_cache_dir", str(choice.path))
                jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
                jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        _enabled["choice"] = choice
        return choice.path


@contextmanager
def cacheable_checks() -> Iterator[None]:
    """Around the tracing of an odeverify program: equinox's run-time checks compiled as NaN
    results instead of raising host callbacks, so that JAX can store the program (see the
    module docstring). Does nothing when no persistent cache is in use, when the user set
    ``EQX_ON_ERROR``, or when equinox's mode is not its default ``raise``. The mode is restored
    afterwards. (An inner check traced here for the same shapes and message may be reused by
    JAX's tracing cache in a later trace of the same process.)"""
    current = _enabled.get("choice")
    errors = None
    if current is not None and current.path is not None and "EQX_ON_ERROR" not in os.environ:
        try:
            import equinox._errors as errors
        except ImportError:  # pragma: no cover - equinox comes with diffrax
            errors = None
    if errors is None or getattr(errors, "EQX_ON_ERROR", None) != "raise":
        yield
        return
    with _checks_lock:
        errors.EQX_ON_ERROR = "nan"
        try:
            yield
        finally:
            errors.EQX_ON_ERROR = "raise"


def choice() -> CacheChoice | None:
    """What :func:`enable` chose in this process (``source`` ``"unwritable"`` when the directory
    could not be written), or None before it ran."""
    return _enabled.get("choice")


def _reset_for_tests() -> None:
    """Forget :func:`enable`'s answer (tests only: JAX's settings are not undone)."""
    with _lock:
        _enabled.clear()


@dataclass
class CompileCount:
    """XLA compilations seen while :func:`counting` is open: ``compiles`` (every one, a
    persistent-cache hit included, by function name in ``by_name``), ``hits`` (programs read
    from the persistent cache) and ``writes`` (programs compiled and written to it), and the
    seconds spent tracing, lowering and compiling (a hit's compile time is its read time).
    ``compiles - hits`` programs were compiled by XLA."""

    compiles: int = 0
    hits: int = 0
    writes: int = 0
    trace_s: float = 0.0
    lower_s: float = 0.0
    compile_s: float = 0.0
    by_name: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"compiles": self.compiles, "persistent_hits": self.hits, "persistent_writes": self.writes,
                "trace_s": self.trace_s, "lower_s": self.lower_s, "compile_s": self.compile_s,
                "by_name": dict(self.by_name.most_common())}


class counting:
    """``with counting() as c: ...``: count JAX's compilations (:class:`CompileCount`) through
    ``jax.monitoring`` listeners, removed on exit."""

    def __enter__(self) -> CompileCount:
        import jax.monitoring as monitoring

        count = self.count = CompileCount()

        def on_duration(event: str, duration: float, **kw: Any) -> None:
            if event == COMPILE_EVENT:
                count.compiles += 1
                count.compile_s += duration
                count.by_name[str(kw.get("fun_name", "?"))] += 1
            elif event == TRACE_EVENT:
                count.trace_s += duration
            elif event == LOWER_EVENT:
                count.lower_s += duration

        def on_event(event: str, **kw: Any) -> None:
            if event == HIT_EVENT:
                count.hits += 1
            elif event == WRITE_EVENT:
                count.writes += 1

        self._listeners = (on_duration, on_event)
        monitoring.register_event_duration_secs_listener(on_duration)
        monitoring.register_event_listener(on_event)
        return count

    def __exit__(self, *exc: Any) -> None:
        import jax.monitoring as monitoring

        on_duration, on_event = self._listeners
        monitoring.unregister_event_duration_listener(on_duration)
        monitoring.unregister_event_listener(on_event)


__all__ = ["ENV", "OFF_VALUES", "MIN_COMPILE_TIME_S", "JaxCacheWarning", "CacheChoice", "CompileCount",
           "default_dir", "resolve", "enable", "choice", "cacheable_checks", "counting"]
