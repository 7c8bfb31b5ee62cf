"""The asv suites (suites/, asv's benchmark_dir): their grid follows the registries, the
``track_*`` values are deterministic (so ``asv continuous`` flags only real changes), and
the ``cuda`` rows are skipped cleanly on a machine without a GPU.

suites/ is not part of the odeverify package: the repository root goes on sys.path and the
suites are imported as the package ``suites``, as asv imports them.
"""
from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import odeverify  # noqa: E402
from odeverify import backends  # noqa: E402

common = importlib.import_module("suites._common")
grid = importlib.import_module("suites._grid")
solve_suite = importlib.import_module("suites.solve")
order_suite = importlib.import_module("suites.order")
gradient_suite = importlib.import_module("suites.gradients")

#: every parametrized benchmark class with a setup (the cuda rows must skip in it)
SETUP_CLASSES = [solve_suite.TimeSolve, solve_suite.TimeStiff, gradient_suite.TimeGradient]
TABLE_CLASSES = [solve_suite.TrackSolve, solve_suite.TrackStiff, gradient_suite.TrackGradient]


def _case_backends(cases):
    return {c.split(":")[0] for c in cases if c != grid.NONE}


def _same(a: float, b: float) -> bool:
    """Bit-identical, NaN equal to NaN (a track with no reference is NaN every time)."""
    return (math.isnan(a) and math.isnan(b)) or a == b


# --- the grid follows the registries ------------------------------------------------------
def test_every_reference_method_has_forward_benchmarks():
    cases = solve_suite.TimeSolve.params[0]
    missing = [m for m in odeverify.SOLVERS.names() if f"reference:{m}" not in cases]
    assert not missing, f"reference methods without a forward benchmark: {missing}, but should be none"
    assert solve_suite.TrackSolve.params == solve_suite.TimeSolve.params


def test_every_reference_method_has_an_order_benchmark():
    cases = order_suite.TrackOrder.params[0]
    fixed = [n for n, m in backends.get("reference").capabilities().methods.items() if m.fixed]
    missing = [m for m in fixed if f"reference:{m}" not in cases]
    assert not missing, f"reference methods without an order-deficit benchmark: {missing}"


def test_every_installed_backend_has_forward_benchmarks():
    installed = {n for n in backends.names() if backends.get(n).available()}
    covered = _case_backends(solve_suite.TimeSolve.params[0])
    assert covered == installed, f"backends covered={sorted(covered)}, but should be {sorted(installed)}"


def test_every_registered_gradient_mode_has_benchmarks():
    modes, value_and_grad = grid.gradient_api()
    if modes is None or value_and_grad is None:
        pytest.skip("odeverify.gradients has no GRADIENT_MODES / value_and_grad yet")
    cases = gradient_suite.TimeGradient.params[0]
    missing = [m for m, gm in modes.items() if "torch" in gm.libraries and f"reference-torch:dopri5:{m}" not in cases]
    assert not missing, f"gradient modes without a benchmark: {missing}"
    for name in backends.names():
        b = backends.get(name)
        if name.startswith("reference") or not b.available() or not callable(getattr(b, "gradient", None)):
            continue
        for mode in getattr(b.capabilities(), "gradient_modes", ()):
            assert any(c.startswith(f"{name}:") and c.endswith(f":{mode}") for c in cases), (name, mode)


def test_stiff_grid_uses_stiff_problems_and_implicit_methods():
    cases, problems, _ = solve_suite.TrackStiff.params
    stiff = {p.name for p in odeverify.problems.select("stiff")} if "stiff" in odeverify.problems.KNOWN_TAGS else set()
    assert set(problems) <= stiff | {grid.NONE}
    assert (problems == [grid.NONE]) == (not stiff)
    for case in cases:
        if case == grid.NONE:
            continue
        backend, method = case.split(":")
        info = backends.get(backend).capabilities().methods[method]
        assert grid.is_implicit(backend, info) and info.adaptive, case


def test_large_grid_is_opt_in_and_bad_values_are_refused():
    assert grid.grid_name({}) == "small"
    assert grid.grid_name({grid.GRID_VAR: "large"}) == "large"
    with pytest.raises(ValueError, match="ODEVERIFY_ASV_GRID='huge'"):
        grid.grid_name({grid.GRID_VAR: "huge"})


def test_asv_config_points_at_the_suites():
    text = (ROOT / "asv.conf.json").read_text()
    # asv reads JSON with // comments; this file keeps them on lines of their own
    conf = json.loads("\n".join(line for line in text.splitlines() if not line.strip().startswith("//")))
    assert conf["benchmark_dir"] == "suites"
    assert conf["environment_type"] == "virtualenv", "existing environments cannot compare commits"
    req = conf["matrix"]["req"]
    assert req["torch"] == "2.13.0", "unpinned torch pulls a multi-GB CUDA build"
    assert all(v == "" or v[0].isdigit() for v in req.values()), "asv accepts only '' or an exact version"
    assert all("--no-deps" in c for c in conf["install_command"] if "pip install" in c)
    assert conf["matrix"]["env_nobuild"]["OMP_NUM_THREADS"] == "1"


# --- no GPU here: every cuda row is skipped in setup --------------------------------------
def _cuda_rows(cls):
    return [p for p in itertools.product(*cls.params) if p[-1] == "cuda"]


def _has_gpu() -> bool:
    return any("cuda" in backends.get(n).capabilities().devices or "gpu" in backends.get(n).capabilities().devices
               for n in backends.names() if backends.get(n).available())


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present: the cuda rows run")
@pytest.mark.parametrize("cls", SETUP_CLASSES, ids=lambda c: c.__name__)
def test_cuda_setups_skip_without_a_gpu(cls):
    rows = _cuda_rows(cls)
    assert rows, f"{cls.__name__} has no cuda rows"
    for params in rows:
        with pytest.raises(NotImplementedError):
            cls().setup(*params)


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present: the cuda rows run")
def test_cuda_tracks_skip_without_a_gpu():
    for params in _cuda_rows(solve_suite.TrackSolve)[:3]:
        table = common.values_table([params])
        with pytest.raises(NotImplementedError, match="cuda"):
            solve_suite.TrackSolve().setup(table, *params)


# --- track values are deterministic -------------------------------------------------------
#: a cheap, representative part of the small grid for the default run (< 10 s); the whole
#: small grid is the slow test below
QUICK_FORWARD = [("reference:dopri5", "warped_fast"), ("reference:rk4", "mlp_tanh_2x16"),
                 ("scipy:RK45", "warped_fast"), ("torchdiffeq:dopri5", "mlp_tanh_2x16"),
                 ("reference-torch:dopri5", "mlp_tanh_2x16")]
QUICK_ORDER = ["reference:dop853", "reference:rk4"]
#: diffrax's gradients compile for 5-40 s each here: they are in the slow sweep only
QUICK_GRADIENT = ["reference-torch:dopri5:discrete", "reference-torch:dopri5:backsolve", "torchdiffeq:dopri5:adjoint"]


def _forward_rows(cls, quick):
    rows = [p for p in itertools.product(*cls.params) if p[-1] == "cpu"]
    return [p for p in rows if p[:2] in quick] if quick is not None else rows


def _track_methods(cls):
    return [name for name in dir(cls) if name.startswith("track_")]


def _run_tracks(cls, rows):
    """Every track_* of ``cls`` on ``rows``, the way asv runs them (setup_cache, setup, track)."""
    bench = cls()
    table = _table_for(cls, rows)
    out = {}
    for params in rows:
        try:
            bench.setup(table, *params)
        except NotImplementedError:
            out[params] = "skipped"
            continue
        out[params] = {name: getattr(bench, name)(table, *params) for name in _track_methods(cls)}
    return out


def _table_for(cls, rows):
    """What ``cls.setup_cache`` computes for the whole grid, for ``rows`` only."""
    if cls is gradient_suite.TrackGradient:
        oracles: dict = {}
        return {key: common.gradient_values(*key, oracles) for key in rows}
    return common.values_table(rows, stiff=getattr(cls, "stiff", False))


def _assert_identical(first, second):
    assert first.keys() == second.keys()
    for key in first:
        a, b = first[key], second[key]
        if isinstance(a, str) or isinstance(b, str):
            assert a == b, f"{key}: skipped in one run only ({a!r} vs {b!r})"
            continue
        for name in a:
            assert _same(a[name], b[name]), f"{name}{key}={b[name]!r}, but should be {a[name]!r} as in the first run"


def test_forward_tracks_are_deterministic():
    rows = _forward_rows(solve_suite.TrackSolve, QUICK_FORWARD)
    assert len(rows) == len([q for q in QUICK_FORWARD if q[0] in solve_suite.TrackSolve.params[0]])
    first = _run_tracks(solve_suite.TrackSolve, rows)
    assert any(not isinstance(v, str) for v in first.values()), "every quick row was skipped"
    for v in first.values():
        if not isinstance(v, str):
            assert v["track_nfev"] > 0 and v["track_error"] >= 0 and v["track_scd_deficit"] >= 0
    _assert_identical(first, _run_tracks(solve_suite.TrackSolve, rows))


def test_order_deficit_is_deterministic_and_zero_for_correct_methods():
    bench = order_suite.TrackOrder()
    for case in QUICK_ORDER:
        first = bench.track_order_deficit(case, grid.CURATED_SET)
        assert first == bench.track_order_deficit(case, grid.CURATED_SET)
        assert first == 0.0, f"order deficit of {case}={first}, but should be 0 (the order is confirmed)"


def test_gradient_tracks_are_deterministic():
    modes, _ = grid.gradient_api()
    rows = [p for p in itertools.product(*gradient_suite.TrackGradient.params)
            if p[-1] == "cpu" and p[0] in QUICK_GRADIENT]
    if not rows:
        pytest.skip("no gradient mode is registered yet")
    first = _run_tracks(gradient_suite.TrackGradient, rows)
    ran = [v for v in first.values() if not isinstance(v, str)]
    assert ran, "every gradient row was skipped"
    for v in ran:
        assert v["track_gradient_error"] < 1e-2, v
        assert v["track_nfev_backward"] > 0, v
    _assert_identical(first, _run_tracks(gradient_suite.TrackGradient, rows))


@pytest.mark.slow
@pytest.mark.parametrize("cls", TABLE_CLASSES, ids=lambda c: c.__name__)
def test_all_small_grid_tracks_are_deterministic(cls):
    rows = _forward_rows(cls, None)
    _assert_identical(_run_tracks(cls, rows), _run_tracks(cls, rows))


@pytest.mark.slow
def test_all_order_deficits_are_deterministic():
    bench = order_suite.TrackOrder()
    for params in itertools.product(*order_suite.TrackOrder.params):
        assert _same(bench.track_order_deficit(*params), bench.track_order_deficit(*params)), params


def test_a_wrong_coefficient_shows_as_an_order_deficit(monkeypatch):
    """The accuracy regression asv must flag: a perturbed weight of rk4 gives a positive deficit."""
    from fractions import Fraction

    from odeverify.solvers import ExplicitRK

    tab = odeverify.TABLEAUS.get("rk4")
    b = list(tab.b)
    b[0], b[1] = b[0] + Fraction(1, 100), b[1] - Fraction(1, 100)  # sum(b) = 1 still: order 1 kept
    bad = dataclasses.replace(tab, b=tuple(b), name="rk4_perturbed")
    monkeypatch.setitem(odeverify.SOLVERS._items, "rk4", ExplicitRK(bad))
    deficit = order_suite.TrackOrder().track_order_deficit("reference:rk4", grid.CURATED_SET)
    assert deficit >= 1.0, f"order deficit of a perturbed rk4={deficit}, but should be >= 1 (order 4 -> 2 or less)"



def test_results_are_json_serialisable():
    """asv stores track values in JSON: floats (inf allowed), never numpy scalars."""
    rows = _forward_rows(solve_suite.TrackSolve, QUICK_FORWARD[:1])
    values = _run_tracks(solve_suite.TrackSolve, rows)
    for v in values.values():
        if not isinstance(v, str):
            assert all(type(x) is float for x in v.values()), v
            json.dumps(v)


@pytest.mark.slow
def test_grid_built_in_a_subprocess_is_the_same():
    """Under asv the grid is built in a subprocess (JAX must not start in asv's fork server)."""
    assert grid.compute_in_subprocess() == grid.compute()
