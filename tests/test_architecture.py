"""The layer contract, and that torch and jax stay optional."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is not installed")
def test_import_layers_are_kept():
    out = subprocess.run(["lint-imports", "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


BLOCK = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('torch', 'jax', 'jaxlib', 'torchdiffeq', 'diffrax', 'equinox'):
            raise ImportError(f'blocked {name}')
sys.meta_path.insert(0, Block())
"""


def test_import_works_without_torch_and_jax():
    code = BLOCK + """
import numpy as np
import odeverify
from odeverify import _xp
sol = odeverify.solve(lambda t, y: -y, np.ones(2), (0.0, 1.0))
assert sol.success
for lib, extra in (('torch', 'torch'), ('jax', 'jax'), ('diffrax', 'jax'), ('torchdiffeq', 'torch')):
    try:
        _xp.require(lib)
    except _xp.MissingDependencyError as exc:
        assert f"odeverify[{extra}]" in str(exc), exc
    else:
        raise AssertionError(lib + ' should be missing')
try:
    _xp.get_namespace('torch')
except odeverify.MissingDependencyError as exc:
    assert "pip install 'odeverify[torch]'" in str(exc)
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
