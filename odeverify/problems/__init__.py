"""The problem library: frozen, tagged, cited initial-value problems (registry ``PROBLEMS``)."""
from __future__ import annotations

from .._registry import Registry
from ._spec import KNOWN_TAGS, Problem, Reference

PROBLEMS: Registry[Problem] = Registry("problem")


def register(problem: Problem) -> Problem:
    PROBLEMS.register(problem.name, problem)
    return problem


def get(name: str) -> Problem:
    return PROBLEMS.get(name)


def select(*tags: str, exclude: tuple[str, ...] = ()) -> list[Problem]:
    """Registered problems carrying every tag in ``tags`` and none in ``exclude``."""
    unknown = (set(tags) | set(exclude)) - KNOWN_TAGS
    if unknown:
        raise ValueError(f"unknown tags {sorted(unknown)}; known: {sorted(KNOWN_TAGS)}")
    return [
        p
        for _, p in PROBLEMS.items()
        if set(tags) <= p.tags and not (set(exclude) & p.tags)
    ]


# Modules that register problems on import (each owns its own file).
from . import classic as _classic  # noqa: E402,F401
from . import detest as _detest  # noqa: E402,F401
from . import neural as _neural  # noqa: E402,F401
from . import generated as _generated  # noqa: E402,F401
from . import stiff as _stiff  # noqa: E402,F401

__all__ = ["PROBLEMS", "Problem", "Reference", "register", "get", "select", "KNOWN_TAGS"]
