"""Shared fixtures and hypothesis profiles.

Profiles: ``default`` (fast, for local runs), ``odeverify-ci`` (derived from hypothesis's own
``ci`` profile, which hypothesis loads when CI is set: derandomized, no deadline), and
``thorough`` (``pytest --hypothesis-profile=thorough``: many more examples).
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from odeverify import _xp

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("default", max_examples=6, **_common)
settings.register_profile("odeverify-ci", parent=settings.get_profile("ci"), max_examples=6, **_common)
settings.register_profile("thorough", max_examples=200, **_common)
settings.load_profile("odeverify-ci" if os.environ.get("CI") else "default")

LIBRARIES = ("numpy", "array_api_strict", "torch", "jax")


def namespace_or_skip(library: str):
    module = {"numpy": "numpy", "array_api_strict": "array_api_strict", "torch": "torch", "jax": "jax"}[library]
    if not _xp.available(module):
        pytest.skip(f"{library} is not installed")
    return _xp.get_namespace(library)


def backend_or_skip(name: str):
    """The backend ``name``; the test is skipped when its library is not installed."""
    from odeverify import backends

    b = backends.get(name)
    if not b.available():
        pytest.skip(f"{name} is not installed: {b.install_hint}")
    return b


@pytest.fixture(params=LIBRARIES)
def xp(request):
    """Every array library the reference runs on (skipped when not installed)."""
    return namespace_or_skip(request.param)


@pytest.fixture(params=("numpy", "torch", "jax"))
def library(request):
    namespace_or_skip(request.param)
    return request.param
