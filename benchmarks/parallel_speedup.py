"""Speed-up of a parallel `odeverify check` over a serial one, in one run.

Run:  python benchmarks/parallel_speedup.py [--backend reference] [--repeats 1] [--json out.json]

Runs the same `odeverify check --quick --json` (a fresh process each time) serially (-j 1),
with 2 worker processes (-j 2), and on a local Dask cluster of 1 and of 2 workers
(--workers N, when distributed is installed), interleaved over the repeats; reports the
median wall time of each, its ratio to the serial run, and checks that every run gave the
serial run's records (without their timing fields). The machine's load before each run is
printed too: on a shared machine a speed-up is only as good as the idle cores it had.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run(argv: list[str]) -> tuple[float, list, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "odeverify.cli", *argv], capture_output=True, text=True, env=env,
                         check=False)
    wall = time.perf_counter() - t0
    if out.returncode not in (0, 1):
        raise SystemExit(f"odeverify {' '.join(argv)} exited {out.returncode}:\n{out.stderr[-2000:]}")
    return wall, json.loads(out.stdout)["records"], load


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="reference")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="the full check instead of --quick")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    from odeverify.records import without_timings

    base = ["check", "--backend", args.backend, "--json"] + ([] if args.full else ["--quick"])
    configs = {"serial (-j 1)": ["-j", "1"], "-j 2": ["-j", "2"]}
    try:
        import distributed  # noqa: F401

        configs |= {"dask, 1 worker": ["--workers", "1"], "dask, 2 workers": ["--workers", "2"]}
    except ImportError:
        print("distributed is not installed: the Dask rows are left out", file=sys.stderr)
    walls: dict[str, list[float]] = {k: [] for k in configs}
    loads: dict[str, list[float]] = {k: [] for k in configs}
    reference = None
    same = {}
    for _ in range(args.repeats):
        for name, extra in configs.items():
            wall, records, load = run(base + extra)
            walls[name].append(wall)
            loads[name].append(load)
            if reference is None:
                reference = without_timings(records)
            same[name] = same.get(name, True) and without_timings(records) == reference
            print(f"  {name:18s} {wall:7.1f} s  (1-min load before: {load:.2f})", file=sys.stderr, flush=True)
    serial = statistics.median(walls["serial (-j 1)"])
    rows = []
    print(f"\n`odeverify {' '.join(base)}`, {os.cpu_count()} cores, median of {args.repeats}\n")
    print("| run | wall (s) | speed-up over serial | same records | load before |")
    print("|---|---:|---:|---|---:|")
    for name in configs:
        w = statistics.median(walls[name])
        rows.append({"run": name, "wall_s": w, "speedup": serial / w, "same_records": same[name],
                     "load_1min": statistics.median(loads[name])})
        print(f"| {name} | {w:.1f} | {serial / w:.2f}x | {'yes' if same[name] else 'NO'} |"
              f" {statistics.median(loads[name]):.2f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"command": base, "cores": os.cpu_count(), "repeats": args.repeats, "rows": rows}, fh, indent=2)
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
