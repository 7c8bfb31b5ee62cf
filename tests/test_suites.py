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

import numpy as np
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
sde_suite = importlib.import_module("suites.sde")
flows_suite = importlib.import_module("suites.flows")
events_suite = importlib.import_module("suites.events")
irregular_suite = importlib.import_module("suites.irregular")
cde_suite = importlib.import_module("suites.cde")

#: every parametrized benchmark class with a setup (the cuda rows must skip in it)
SETUP_CLASSES = [solve_suite.TimeSolve, solve_suite.TimeStiff, gradient_suite.TimeGradient, sde_suite.TimeSDE,
                 flows_suite.TimeCNF, cde_suite.TimeCDE]
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
    installed = {n for n in backends.names() if backends.get(n).available() and backends.get(n).capabilities().methods}
    covered = _case_backends(solve_suite.TimeSolve.params[0])
    assert covered == installed, f"backends covered={sorted(covered)}, but should be {sorted(installed)}"


def _gradient_backends():
    for name in backends.names():
        b = backends.get(name)
        if name.startswith("reference") or not b.available() or not callable(getattr(b, "gradient", None)):
            continue
        declared = tuple(getattr(b.capabilities(), "gradient_modes", ()))
        if declared:
            yield name, declared


def test_every_registered_gradient_mode_has_benchmarks(monkeypatch):
    """Small grid: every mode of the PyTorch reference, one mode of each other backend. Large grid:
    every declared mode."""
    modes, value_and_grad = grid.gradient_api()
    if modes is None or value_and_grad is None:
        pytest.skip("odeverify.gradients has no GRADIENT_MODES / value_and_grad yet")
    cases = gradient_suite.TimeGradient.params[0]
    missing = [m for m, gm in modes.items() if "torch" in gm.libraries and f"reference-torch:dopri5:{m}" not in cases]
    assert not missing, f"gradient modes without a benchmark: {missing}"
    for name, declared in _gradient_backends():
        ours = [c for c in cases if c.startswith(f"{name}:")]
        assert len(ours) == 1, f"{name}'s small-grid gradient rows={ours}, but should be one representative mode"
        assert ours[0].endswith(f":{grid.representative_gradient_modes(declared)[0]}"), ours
    monkeypatch.setattr(grid, "LARGE", True)
    large = grid.gradient_cases()
    for name, declared in _gradient_backends():
        for mode in declared:
            assert any(c.startswith(f"{name}:") and c.endswith(f":{mode}") for c in large), (name, mode)


def test_representative_gradient_mode():
    assert grid.representative_gradient_modes(("backprop", "adjoint", "adjoint_seminorm")) == ("adjoint",)
    assert grid.representative_gradient_modes(("direct", "backsolve")) == ("backsolve",)
    assert grid.representative_gradient_modes(("direct", "forward")) == ("direct",)
    assert grid.representative_gradient_modes(()) == ()


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


# --- the timing configuration: CPU time, enough samples, a work counter beside each timing -----
#: the deterministic work counters each suite module's Track class must have beside its timings
WORK_COUNTERS = {
    "suites.solve": ("track_nfev", "track_steps_accepted", "track_steps_rejected", "track_newton_iters",
                     "track_lu_factorisations", "track_jacobian_evaluations"),
    "suites.gradients": ("track_nfev_forward", "track_nfev_backward", "track_steps_forward",
                         "track_steps_backward", "track_saved_bytes", "track_saved_peak_bytes"),
    "suites.sde": ("track_nfev", "track_ngev"),
    "suites.flows": ("track_nfev", "track_steps_accepted", "track_trace_jvps"),
    "suites.events": ("track_nfev", "track_steps", "track_segments"),
    "suites.irregular": ("track_nfev", "track_nfev_forward", "track_nfev_backward"),
    "suites.cde": ("track_nfev", "track_steps", "track_nfev_backward"),
}
#: time_* benchmark classes allowed another timer than CPU time, with the reason (none today:
#: GPU rows switch to the wall clock per row, see _common.WALL_TIME_DEVICES)
TIMER_EXEMPT: dict[str, str] = {}
SUITE_MODULES = [solve_suite, order_suite, gradient_suite, sde_suite, flows_suite, events_suite, irregular_suite,
                 cde_suite]


def _benchmark_classes(module):
    return [obj for name, obj in vars(module).items()
            if isinstance(obj, type) and not name.startswith("_") and obj.__module__ == module.__name__]


def _attr(cls, name, default=None):
    """An asv attribute as asv reads it for a row: from an instance (the timer is read that way)."""
    return getattr(cls(), name, default)


def config_problems(module) -> list[str]:
    """What is wrong with the timing configuration of one suite module (empty: nothing).

    Every class with a ``time_*`` benchmark: CPU time (or an entry in TIMER_EXEMPT), at least
    MIN_SAMPLES samples per round as ``repeat = (min, max, max seconds)``, 2 or more rounds, no
    warm-up (setup makes the first call), and a ``Track`` class of the same name with the same
    parameters carrying this module's WORK_COUNTERS, each with a unit."""
    problems = []
    classes = {c.__name__: c for c in _benchmark_classes(module)}
    for name, cls in classes.items():
        timed = [m for m in dir(cls) if m.startswith("time_")]
        if not timed:
            continue
        where = f"{module.__name__}.{name}"
        timer = _attr(cls, "timer")
        if timer is not common.CPU_TIMER and where not in TIMER_EXEMPT:
            problems.append(f"{where}.timer={timer!r}, but should be time.process_time (or a stated exemption)")
        repeat = _attr(cls, "repeat", 0)
        if not (isinstance(repeat, tuple) and len(repeat) == 3):
            problems.append(f"{where}.repeat={repeat!r}, but should be (min samples, max samples, max seconds)")
        elif not (repeat[0] >= common.MIN_SAMPLES and repeat[1] >= repeat[0] and repeat[2] > 0):
            problems.append(f"{where}.repeat={repeat!r}, but should take >= {common.MIN_SAMPLES} samples per round")
        rounds = _attr(cls, "rounds", 2)
        if not (isinstance(rounds, int) and rounds >= 2):
            problems.append(f"{where}.rounds={rounds!r}, but should be >= 2 (asv interleaves rounds between commits)")
        if _attr(cls, "warmup_time", -1) != 0:
            problems.append(f"{where}.warmup_time={_attr(cls, 'warmup_time', -1)!r}, but should be 0 (setup warms)")
        pair = classes.get("Track" + name[len("Time"):]) if name.startswith("Time") else None
        if pair is None:
            problems.append(f"{where} has no Track class of the same name beside it")
            continue
        if (pair.params, pair.param_names) != (cls.params, cls.param_names):
            problems.append(f"{module.__name__}.{pair.__name__} has other parameters than {where}")
        required = WORK_COUNTERS.get(module.__name__)
        if required is None:
            problems.append(f"{module.__name__} has time_* benchmarks but no WORK_COUNTERS entry in this test")
            continue
        for track in required:
            fn = getattr(pair, track, None)
            if fn is None:
                problems.append(f"{module.__name__}.{pair.__name__} lacks the work counter {track}")
            elif not getattr(fn, "unit", None):
                problems.append(f"{module.__name__}.{pair.__name__}.{track} has no unit")
    return problems


@pytest.mark.parametrize("module", SUITE_MODULES, ids=lambda m: m.__name__)
def test_timing_configuration(module):
    problems = config_problems(module)
    assert not problems, "\n".join(problems)


def test_every_suite_module_with_timings_is_checked():
    timed = {m.__name__ for m in SUITE_MODULES for c in _benchmark_classes(m) if any(a.startswith("time_") for a in dir(c))}
    assert timed == set(WORK_COUNTERS), f"modules with time_*={sorted(timed)}, WORK_COUNTERS has {sorted(WORK_COUNTERS)}"
    found = {p.stem for p in (ROOT / "suites").glob("*.py") if not p.stem.startswith("_")}
    assert found == {m.__name__.split(".")[1] for m in SUITE_MODULES}, f"suite modules={sorted(found)}"


def test_configuration_check_fails_on_a_wall_clock_unpaired_under_sampled_suite():
    """The check above can fail: a module whose timing uses the wall clock, 3 samples, 1 round,
    and has no Track class, gets one problem for each."""
    import types

    bad = types.ModuleType("suites.bad")

    class TimeBad:
        params, param_names = [["x"]], ["case"]
        repeat, rounds, warmup_time = (3, 10, 4.0), 1, 0.0

        def time_it(self, case):
            pass

    class TimeHalf(common.CpuTimed):
        params, param_names = [["x"]], ["case"]

        def time_it(self, case):
            pass

    class TrackHalf:
        params, param_names = [["y"]], ["case"]

        def track_nfev(self, case):
            return 1.0

    for cls in (TimeBad, TimeHalf, TrackHalf):
        cls.__module__ = bad.__name__
        setattr(bad, cls.__name__, cls)
    problems = config_problems(bad)
    text = "\n".join(problems)
    for expected in ("TimeBad.timer=", "TimeBad.repeat=(3, 10, 4.0)", "TimeBad.rounds=1", "TimeBad has no Track class",
                     "TrackHalf has other parameters", "no WORK_COUNTERS entry"):
        assert expected in text, f"{expected!r} missing from the problems found:\n{text}"
    WORK_COUNTERS[bad.__name__] = ("track_nfev", "track_steps_accepted")
    try:
        text = "\n".join(config_problems(bad))
    finally:
        del WORK_COUNTERS[bad.__name__]
    assert "TrackHalf.track_nfev has no unit" in text
    assert "TrackHalf lacks the work counter track_steps_accepted" in text


@pytest.mark.parametrize("device,timer", [("cpu", common.CPU_TIMER), ("cuda", common.WALL_TIMER)])
def test_rows_choose_their_timer(device, timer):
    """A GPU row is timed by the wall clock (set in setup, which asv reads the timer after), a CPU
    row by CPU time; the reason for the exemption is stated."""
    assert set(common.WALL_TIME_DEVICES) == {"cuda"} and all(len(r) > 40 for r in common.WALL_TIME_DEVICES.values())
    for cls in SETUP_CLASSES:
        bench = cls()
        bench.timer = None
        common.choose_timer(bench, device)
        assert bench.timer is timer, (cls.__name__, device, bench.timer)


def test_cuda_setup_switches_to_the_wall_clock():
    """setup itself chooses the timer (before it skips the row without a GPU)."""
    for cls in SETUP_CLASSES:
        row = _cuda_rows(cls)[0]
        bench = cls()
        try:
            bench.setup(*row)
        except NotImplementedError:
            pass
        assert bench.timer is common.WALL_TIMER, cls.__name__


def test_cpu_timer_resolution_is_far_below_the_fastest_solve():
    """process_time's resolution on this platform (1 ns on Linux) is at least 1000x below a 0.1 ms
    sample (the fastest small-grid solve took 0.66 ms of CPU)."""
    import time

    assert time.get_clock_info("process_time").resolution <= 1e-7


# --- no GPU here: every cuda row is skipped in setup --------------------------------------
def _cuda_rows(cls):
    """The cuda rows of ``cls``: those of its grid where there is a GPU, else the cpu rows moved
    to cuda (the rows a GPU machine would run)."""
    cases, problems, devices = cls.params
    return list(itertools.product(cases, problems, ["cuda"]))


def _has_gpu() -> bool:
    return any("cuda" in backends.get(n).capabilities().devices or "gpu" in backends.get(n).capabilities().devices
               for n in backends.names() if backends.get(n).available())


def test_cuda_rows_only_where_a_gpu_is():
    """Without a GPU the grid has no cuda rows (each would cost asv a process to skip); with one,
    every suite has them."""
    expected = ["cpu", "cuda"] if _has_gpu() else ["cpu"]
    assert grid.grid_devices() == expected
    for cls in SETUP_CLASSES + TABLE_CLASSES:
        assert cls.params[-1] == expected, cls.__name__


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


def test_unknown_counts_are_not_a_number():
    """asv compares negative values wrongly (scipy's -1 'no count' read as an improvement): n/a."""
    assert math.isnan(common.count(-1)) and math.isnan(common.count(None)) and common.count(7) == 7.0
    assert type(common.count(np.int64(3))) is float


def test_peakmem_is_in_the_large_grid_only():
    assert not any(name.startswith("peakmem_") for cls in SETUP_CLASSES for name in dir(cls)) or grid.LARGE


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


# --- benchmarks/asv_gate.py: the parts that run without asv ------------------------------------
def _gate():
    spec = importlib.util.spec_from_file_location("asv_gate", ROOT / "benchmarks" / "asv_gate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gate_plants_a_doubled_evaluation_in_the_reference_loop():
    """The gate's anchor is in integrate.py, and the planted loop doubles NFE and nothing else."""
    gate = _gate()
    source = (ROOT / gate.PLANT_FILE).read_text()
    planted = gate.plant(source)
    assert planted.count("stats.nfev += 2") == source.count("stats.nfev += 2") + 1
    # the planted function itself, run on a counter: two evaluations per call, both counted
    m = gate.PLANT_PATTERN.search(source)
    body = gate.PLANT_REPLACEMENT.format(indent="", body="    ")
    calls: list = []
    namespace: dict = {"calls": calls}
    exec("from typing import Any\nclass S: nfev = 0\nstats = S()\nf = lambda t, y: calls.append(t) or y\n" + body,
         namespace)
    assert m is not None and namespace["fun"](0.0, 1.0) == 1.0
    assert len(calls) == 2 and namespace["stats"].nfev == 2
    with pytest.raises(RuntimeError, match="expected exactly once"):
        gate.plant(source.replace("stats.nfev += 1\n        return f(t_arr, y)", "return f(t_arr, y)"))


GATE_TABLE = """\
| Change   | Before [44d66126] <gate-base>   | After [6ae6d0e3] <gate-planted>   | Ratio   | Benchmark (Parameter)   |
|----------|---------------------------------|-----------------------------------|---------|-------------------------|
| +        | 100                             | 199                               | 1.99    | solve.TrackSolve.track_nfev('reference:euler', 'mlp_tanh_2x16', 'cpu') |
| +        | 1.50±0.1ms                      | 2.61±0.2ms                        | 1.74    | solve.TimeSolve.time_solve('reference:euler', 'mlp_tanh_2x16', 'cpu') |
| -        | 8.87±0.3ms                      | 6.10±0.2ms                        | 0.69    | solve.TimeSolve.time_solve('scipy:RK45', 'warped_fast', 'cpu') |
| +        | 20                              | 40                                | 2.00    | solve.TrackSolve.track_nfev('scipy:RK45', 'warped_fast', 'cpu') |
|          | 0                               | 3                                 | n/a     | order.TrackOrder.track_order_deficit('reference:rk4', 'curated') |
"""


def test_gate_reads_asv_tables_and_judges_the_planted_run():
    gate = _gate()
    rows = gate.parse_rows("noise\n" + GATE_TABLE + "SOME BENCHMARKS HAVE CHANGED SIGNIFICANTLY.\n")
    assert [(r["mark"], r["ratio"], r["case"]) for r in rows] == [
        ("+", 1.99, "reference:euler"), ("+", 1.74, "reference:euler"), ("-", 0.69, "scipy:RK45"),
        ("+", 2.0, "scipy:RK45"), ("", None, "reference:rk4")]
    euler = ("solve.TrackSolve.track_nfev", "('reference:euler', 'mlp_tanh_2x16', 'cpu')")
    dopri = ("solve.TrackSolve.track_nfev", "('reference:dopri5', 'mlp_tanh_2x16', 'cpu')")
    problems = gate.judge_planted(1, rows, {euler, dopri})
    assert len(problems) == 2, problems
    assert "reference:dopri5" in problems[0] and "was not flagged" in problems[0]
    assert "scipy:RK45" in problems[1] and "untouched" in problems[1]
    assert gate.judge_planted(1, rows[:1], {euler}) == []
    assert "exited 0" in gate.judge_planted(0, rows[:1], {euler})[0]
    summary = gate.summarise(rows)
    assert summary["flagged"] == 4 and summary["by_kind"]["time (other backends)"] == {"+": 0, "-": 1}


# --- the SDE suite --------------------------------------------------------------------------
def test_sde_grid_covers_every_backend_with_sde_methods():
    """Euler-Maruyama and stochastic Heun of every installed backend with SDE methods (not the
    reference's other array libraries); the large grid takes every SDE method."""
    cases = sde_suite.TimeSDE.params[0]
    assert sde_suite.TrackSDE.params == sde_suite.TimeSDE.params
    expected = {n for n in backends.names() if not n.startswith("reference-") and backends.get(n).available()
                and backends.get(n).capabilities().sde_methods}
    assert _case_backends(cases) == expected, f"SDE cases={cases}, but should cover {sorted(expected)}"
    assert {c.split(":")[1] for c in cases} <= {"euler", "heun"}, cases


def test_sde_tracks_are_deterministic_and_agree_across_libraries():
    """The strong error at N_STEPS is a fixed-seed figure: the same on a second run, and the same
    rule gives the same error in every library (they run on one Brownian path); NFE/NGEV count
    the method's evaluations (Heun two per step, Euler one; a library may add one at the start)."""
    rows = [(c, "gbm_ito", "cpu") for c in sde_suite.TimeSDE.params[0] if c.split(":")[0] in ("reference", "torchsde")]
    first = {k: sde_suite.sde_values(*k) for k in rows}
    second = {k: sde_suite.sde_values(*k) for k in rows}
    _assert_identical(first, second)
    for (case, _, _), v in first.items():
        assert not isinstance(v, str), (case, v)
        per_step = 2 if case.endswith(":heun") else 1
        assert per_step * sde_suite.N_STEPS <= v["nfev"] <= per_step * sde_suite.N_STEPS + 1, (case, v)
        assert per_step * sde_suite.N_STEPS <= v["ngev"] <= per_step * sde_suite.N_STEPS + 1, (case, v)
        assert all(type(x) is float for x in v.values()), v
    for rule in ("euler", "heun"):
        errs = [v["strong_error"] for (c, _, _), v in first.items() if c.endswith(f":{rule}")]
        assert errs and max(errs) - min(errs) <= 1e-12 * max(errs), (rule, errs)
    # Heun (strong order 1 on GBM) beats Euler-Maruyama (1/2) at 128 steps
    euler = first[("reference:euler", "gbm_ito", "cpu")]["strong_error"]
    heun = first[("reference:heun", "gbm_ito", "cpu")]["strong_error"]
    assert 0 < heun < euler / 5, (heun, euler)


# --- the CNF suite --------------------------------------------------------------------------
def test_cnf_grid_covers_every_trace_estimator(monkeypatch):
    """Small grid: exact (Jacobian, JVPs, autodiff) and Hutchinson traces; the large grid: every
    estimator of TRACE_ESTIMATORS on every installed reference backend (autodiff where the
    library has forward mode)."""
    from odeverify.problems.flows import TRACE_ESTIMATORS

    cases = flows_suite.TimeCNF.params[0]
    assert flows_suite.TrackCNF.params == flows_suite.TimeCNF.params
    assert {flows_suite.estimator(c.split(":")[2])[0] for c in cases} == set(TRACE_ESTIMATORS), cases
    monkeypatch.setattr(grid, "LARGE", True)
    large = grid.cnf_cases()
    for name in backends.names():
        if not name.startswith("reference") or not backends.get(name).available():
            continue
        library = getattr(backends.get(name), "library", "numpy")
        want = {t for t in TRACE_ESTIMATORS if t != "autodiff" or library in ("torch", "jax")}
        got = {flows_suite.estimator(c.split(":")[2])[0] for c in large if c.split(":")[0] == name}
        assert got == want, (name, got, want)


def test_cnf_tracks_are_deterministic_and_grade_the_estimators():
    """The log-likelihood error on the closed-form cnf_linear2 is within the solve's tolerance
    for every exact trace (and the same in every library), while one fixed Rademacher probe is
    off by far more (its estimator error: sqrt(2 (|A_sym|_F^2 - sum A_ii^2)) ~ 1 nat here)."""
    rows = [(c, "cnf_linear2", "cpu") for c in flows_suite.TimeCNF.params[0]]
    first = {k: flows_suite.cnf_values(*k) for k in rows}
    _assert_identical(first, {k: flows_suite.cnf_values(*k) for k in rows})
    exact = {c: v for (c, _, _), v in first.items() if "hutchinson" not in c}
    hutch = {c: v for (c, _, _), v in first.items() if c.endswith(":hutchinson1")}
    assert exact and hutch, first
    for c, v in exact.items():
        assert not isinstance(v, str), (c, v)
        assert 0 < v["log_density_error"] < 10 * flows_suite.RTOL, (c, v)
        assert v["trace_jvps"] == 2.0 and all(type(x) is float for x in v.values()), (c, v)
    for c, v in hutch.items():
        assert v["log_density_error"] > 1e3 * max(e["log_density_error"] for e in exact.values()), (c, v)
        assert v["trace_jvps"] == 1.0, (c, v)


def test_cnf_time_benchmarks_run():
    bench = flows_suite.TimeCNF()
    row = ("reference:dopri5:hutchinson1", "cnf_mlp6_softplus", "cpu")
    bench.setup(*row)
    bench.time_density(*row)
    bench.time_trace(*row)
    assert bench.timer is common.CPU_TIMER


# --- the event-location suite ------------------------------------------------------------------
def test_event_grid_covers_every_backend_that_locates_events(monkeypatch):
    """Every installed backend with an event adapter (not the reference's other array libraries:
    the same NumPy loop) has rows; the large grid adds each adapter's default methods."""
    from odeverify.backends._event_driver import adapter_of

    cases = events_suite.TimeEvents.params[0]
    assert events_suite.TrackEvents.params == events_suite.TimeEvents.params
    expected = {n for n in backends.names() if not n.startswith("reference-") and backends.get(n).available()
                and adapter_of(backends.get(n)) is not None}
    assert _case_backends(cases) == expected, f"event cases={cases}, but should cover {sorted(expected)}"
    monkeypatch.setattr(grid, "LARGE", True)
    large = grid.event_cases()
    for name in expected:
        for m in adapter_of(backends.get(name)).DEFAULT_METHODS:
            assert f"{name}:{m}" in large, (name, m)


EVENT_ROWS = [(c, p) for c in ("reference:dopri5", "scipy:RK45", "scipy:DOP853") for p in events_suite.PROBLEMS]


def test_event_tracks_are_deterministic_and_match_the_closed_form():
    """Every impact and crossing found once, each within 100 rtol (1 + t_end) of the closed form;
    the same numbers on a second run; the ball restarts once per impact."""
    rows = [r for r in EVENT_ROWS if r[0] in events_suite.TimeEvents.params[0]]
    assert rows, "no cheap event rows in the grid"
    first = {r: events_suite.event_values(*r) for r in rows}
    _assert_identical(first, {r: events_suite.event_values(*r) for r in rows})
    for (case, problem), v in first.items():
        assert not isinstance(v, str), (case, v)
        t_end = events_suite.event_problem(problem).problem.t_span[1]
        assert v["count_error"] == 0.0, (case, problem, v)
        assert 0 <= v["time_error"] <= 100 * events_suite.RTOL * (1 + t_end), (case, problem, v)
        assert v["nfev"] > 0 and all(type(x) is float for x in v.values()), v
        if problem == "bouncing_ball":
            assert v["segments"] == events_suite.BOUNCES + 1, (case, v)


def test_event_tracks_flag_a_missed_and_a_shifted_event(monkeypatch):
    """Planted faults in the located events: the last event dropped (count error 1, time error
    inf), every time shifted by 1e-5 (time error 1e-5, count right)."""
    real = events_suite.EventCase.solve
    row = ("reference:dopri5", "plane_crossing")

    def planted(change):
        def solve(self):
            sol = real(self)
            sol.t_events = change(np.asarray(sol.t_events))
            return sol
        return solve

    monkeypatch.setattr(events_suite.EventCase, "solve", planted(lambda t: t[:-1]))
    v = events_suite.event_values(*row)
    assert v["count_error"] == 1.0 and v["time_error"] == math.inf, v
    monkeypatch.setattr(events_suite.EventCase, "solve", planted(lambda t: t + 1e-5))
    v = events_suite.event_values(*row)
    assert v["count_error"] == 0.0 and abs(v["time_error"] - 1e-5) < 1e-7, v


def test_event_time_benchmark_runs_and_skips_what_cannot():
    bench = events_suite.TimeEvents()
    row = ("reference:dopri5", "bouncing_ball")
    bench.setup(*row)
    bench.time_locate(*row)
    assert bench.timer is common.CPU_TIMER
    with pytest.raises(NotImplementedError, match="no events with"):
        events_suite.TimeEvents().setup("scipy:NoSuchMethod", "bouncing_ball")
    with pytest.raises(ValueError, match="problem='nowhere'"):
        events_suite.event_problem("nowhere")


# --- the latent-ODE suite ------------------------------------------------------------------------
def test_latent_grid_covers_the_gradient_modes(monkeypatch):
    """Small grid: the modes of _grid.LATENT_SMALL_MODES of each installed backend with gradient
    modes; the large grid: every declared mode that works at a tolerance (no fixed-step mode)."""
    cases = irregular_suite.TimeLatentGradient.params[0]
    assert irregular_suite.TrackLatentGradient.params == irregular_suite.TimeLatentGradient.params
    for name, modes in grid.LATENT_SMALL_MODES.items():
        b = backends.get(name)
        if not b.available():
            continue
        for mode in modes:
            assert any(c.startswith(f"{name}:") and c.endswith(f":{mode}") for c in cases), (name, mode, cases)
    assert irregular_suite.TimeLatentGradient.params[1] == list(irregular_suite.OBSERVATIONS)
    modes, _ = grid.gradient_api()
    monkeypatch.setattr(grid, "LARGE", True)
    large = grid.latent_cases()
    fixed = {m for m, gm in modes.items() if gm.fixed_step}
    assert fixed and not any(c.startswith("reference") and c.split(":")[2] in fixed for c in large), large
    ref = [c for c in large if c.startswith("reference-torch:")]
    assert len(ref) == len(backends.get("reference-torch").capabilities().gradient_modes) - len(fixed), ref


LATENT_ROWS = [("reference-torch:dopri5:checkpoint", 50), ("torchdiffeq:dopri5:backprop", 50)]


def test_latent_tracks_are_deterministic_and_accurate():
    """The directional derivatives agree with central differences of the objective (NumPy,
    DOP853 at rtol 1e-12) to 100 rtol, bit-identically on a second run; forward and backward
    evaluations are counted."""
    rows = [r for r in LATENT_ROWS if r[0] in irregular_suite.TimeLatentGradient.params[0]]
    assert rows, "no cheap latent-ODE rows in the grid"
    first = {r: irregular_suite.gradient_values(*r) for r in rows}
    _assert_identical(first, {r: irregular_suite.gradient_values(*r) for r in rows})
    for r, v in first.items():
        assert not isinstance(v, str), (r, v)
        assert 0 < v["grad_error"] < 100 * irregular_suite.RTOL, (r, v)
        assert v["nfev_forward"] > 0 and v["nfev_backward"] > 0, (r, v)
        assert v["nfev"] == v["nfev_forward"] + v["nfev_backward"], v
        assert all(type(x) is float for x in v.values()), v


def test_latent_gradient_error_sees_a_planted_fault(monkeypatch):
    """The decoder's term (dL/dx(0)) z0^T dropped from dL/dD (tests/test_irregular's planted
    fault) moves the tracked error far above the healthy one."""
    from odeverify.properties import irregular as P

    row = LATENT_ROWS[0]
    healthy = irregular_suite.gradient_values(*row)["grad_error"]
    real = P.latent_ode_value_and_grad

    def planted(params, setup, **kw):
        value, g, work = real(params, setup, **kw)
        g = dict(g)
        g["D"] = np.zeros_like(g["D"])
        return value, g, work

    monkeypatch.setattr(P, "latent_ode_value_and_grad", planted)
    broken = irregular_suite.gradient_values(*row)["grad_error"]
    assert broken > 1e3 * healthy and broken > 1e-3, (healthy, broken)


def test_latent_time_benchmark_runs_and_skips_what_cannot():
    bench = irregular_suite.TimeLatentGradient()
    row = LATENT_ROWS[0]
    bench.setup(*row)
    bench.time_gradient(*row)
    assert bench.timer is common.CPU_TIMER
    with pytest.raises(NotImplementedError, match="no gradient mode 'nope'"):
        irregular_suite.TimeLatentGradient().setup("reference-torch:dopri5:nope", 50)


def test_union_tracks_are_deterministic_and_flag_a_wrong_reading(monkeypatch):
    """The union of 8 samples' times against per-sample solves: both within the property's
    bound of the closed form, an overhead near 1 read off the dense output, several times that
    when stepping onto every time (the reference); the same twice. Planted: the union solve's
    sample b read from column b + 1 makes the error exceed the bound."""
    from odeverify.properties import irregular as P

    rows = [(c, 50) for c in ("reference:dopri5", "scipy:RK45") if c in irregular_suite.TrackUnionTimes.params[0]]
    assert rows
    first = {r: irregular_suite.union_values(*r) for r in rows}
    _assert_identical(first, {r: irregular_suite.union_values(*r) for r in rows})
    for (case, _), v in first.items():
        assert 0 < v["overhead"] < 2 and v["extra_steps"] >= 0 and v["error"] <= P.OUTPUT_FACTOR, (case, v)
        if case.startswith("reference"):
            assert v["stepped_overhead"] > 2 * v["overhead"], v
        else:
            assert math.isnan(v["stepped_overhead"]), v
    real = P.union_times_cost

    def wrong(ys, positions):
        return [ys[np.asarray(p), (b + 1) % ys.shape[1]] for b, p in enumerate(positions)]

    monkeypatch.setattr(P, "union_times_cost", lambda *a, **kw: real(*a, reader=wrong, **kw))
    v = irregular_suite.union_values(*rows[0])
    assert v["error"] > P.OUTPUT_FACTOR, v


# --- the CDE suite -------------------------------------------------------------------------------
def test_cde_grid_covers_every_backend_that_solves_cdes():
    """Every installed backend with a CDE adapter (not the reference's other array libraries) has
    a row with a declared gradient mode."""
    from odeverify.backends._cde_driver import cde_capabilities

    cases = cde_suite.TimeCDE.params[0]
    assert cde_suite.TrackCDE.params == cde_suite.TimeCDE.params
    expected = {n for n in backends.names() if not n.startswith("reference-") and backends.get(n).available()
                and cde_capabilities(backends.get(n)) is not None}
    assert _case_backends(cases) == expected, f"CDE cases={cases}, but should cover {sorted(expected)}"
    for c in cases:
        name, method, mode = c.split(":")
        caps = cde_capabilities(backends.get(name))
        assert method in caps.methods and mode in caps.gradient_modes, c


def test_cde_tracks_are_deterministic_and_accurate():
    """The reference's solves agree with the closed forms (and, on the neural field, with SciPy's
    DOP853 at rtol 1e-12 piece by piece) to 100 rtol, bit-identically on a second run."""
    rows = [("reference:dopri5:discrete", p, "cpu") for p in cde_suite.PROBLEMS]
    rows = [r for r in rows if r[0] in cde_suite.TimeCDE.params[0]]
    assert rows
    first = {r: cde_suite.cde_values(*r) for r in rows}
    _assert_identical(first, {r: cde_suite.cde_values(*r) for r in rows})
    for r, v in first.items():
        assert not isinstance(v, str), (r, v)
        assert 0 < v["solution_error"] < 100 * cde_suite.RTOL, (r, v)
        assert v["nfev"] > 0 and v["steps"] > 0 and all(type(x) is float for x in v.values()), (r, v)


def test_cde_oracle_is_accurate_and_the_error_sees_a_planted_fault(monkeypatch):
    """The SciPy oracle of the neural CDE agrees with the reference at rtol 1e-10 to 1e-8; a solve
    perturbed by 1e-3 at its last output is tracked as about 1e-3 / max(1, max |z*|)."""
    from odeverify import backends as B

    name = "cde_neural"
    cde = cde_suite.CDECase("reference:dopri5:discrete", name, "cpu").problem
    sol = B.get("reference").solve_cde(cde, "dop853", t_eval=cde_suite.output_times(cde), rtol=1e-10, atol=1e-12)
    ref = np.asarray(cde_suite.reference_solution(name))
    assert np.max(np.abs(np.asarray(sol.ys) - ref)) < 1e-8
    real = cde_suite.CDECase.solve

    def planted(self):
        out = real(self)
        out.ys = np.asarray(out.ys).copy()
        out.ys[-1] += 1e-3
        return out

    monkeypatch.setattr(cde_suite.CDECase, "solve", planted)
    v = cde_suite.cde_values("reference:dopri5:discrete", name, "cpu")
    expected = 1e-3 / max(1.0, float(np.max(np.abs(ref))))  # the scaled error's denominator
    assert v["solution_error"] > 0.5 * expected, (v, expected)


def test_cde_time_benchmarks_run_and_skip_what_cannot():
    bench = cde_suite.TimeCDE()
    row = ("reference:dopri5:discrete", "cde_linear_pl", "cpu")
    bench.setup(*row)
    bench.time_solve(*row)
    bench.time_gradient(*row)
    assert bench.timer is common.CPU_TIMER
    if "diffrax:Dopri5:backsolve" in cde_suite.TimeCDE.params[0]:
        with pytest.raises(NotImplementedError, match="natural_cubic"):
            cde_suite.CDECase("diffrax:Dopri5:backsolve", "cde_commuting_natural_cubic", "cpu")


#: the name prefixes asv reads as benchmarks, at module level as well as in classes
ASV_PREFIXES = ("time_", "timeraw_", "track_", "peakmem_", "mem_")


@pytest.mark.parametrize("module", SUITE_MODULES, ids=lambda m: m.__name__)
def test_no_module_level_helper_reads_as_a_benchmark(module):
    """asv takes a module-level function named time_* (or track_*, ...) for a benchmark and
    `asv check` fails on its arguments (events.time_error did, before it became located_error)."""
    import inspect

    bad = [name for name, obj in vars(module).items()
           if inspect.isfunction(obj) and obj.__module__ == module.__name__ and name.startswith(ASV_PREFIXES)]
    assert not bad, f"{module.__name__} has module-level functions asv reads as benchmarks: {bad}"
