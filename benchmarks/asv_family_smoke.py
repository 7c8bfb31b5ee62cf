"""Every benchmark of the issue-12 asv suites (suites/events.py, suites/irregular.py,
suites/cde.py) once per small-grid row, as asv would run it but without asv: ``setup`` (the
first, compiling call), the least CPU time of 3 calls of each ``time_*``, then every
``track_*`` from the class's ``setup_cache``.

Run:  OMP_NUM_THREADS=1 python benchmarks/asv_family_smoke.py [events] [cde] [irregular]

(all three when none is named). Rows that cannot run here print ``n/a`` with the reason.
"""
from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(time_cls, timed, track_cls) -> None:
    for row in itertools.product(*time_cls.params):
        bench = time_cls()
        try:
            bench.setup(*row)
        except NotImplementedError as exc:
            print(f"{time_cls.__name__}{row}: n/a ({exc})", flush=True)
            continue
        out = []
        for name in timed:
            cpu = []
            for _ in range(3):
                c0 = time.process_time()
                getattr(bench, name)(*row)
                cpu.append(time.process_time() - c0)
            out.append(f"{name} {min(cpu) * 1e3:.1f} ms CPU")
        print(f"{time_cls.__name__}{row}: " + ", ".join(out), flush=True)
    if track_cls is not None:
        tracks(track_cls)


def tracks(track_cls) -> None:
    bench = track_cls()
    table = bench.setup_cache()
    for row in itertools.product(*track_cls.params):
        try:
            bench.setup(table, *row)
        except NotImplementedError as exc:
            print(f"{track_cls.__name__}{row}: n/a ({exc})", flush=True)
            continue
        vals = {n[len("track_"):]: getattr(bench, n)(table, *row) for n in dir(bench) if n.startswith("track_")}
        print(f"{track_cls.__name__}{row}: " + ", ".join(f"{k}={v:.3g}" for k, v in vals.items()), flush=True)


def main(argv: list[str]) -> None:
    chosen = set(argv) or {"events", "cde", "irregular"}
    unknown = chosen - {"events", "cde", "irregular"}
    if unknown:
        raise SystemExit(f"unknown suites {sorted(unknown)}; expected events, cde, irregular")
    if "events" in chosen:
        from suites import events as E
        run(E.TimeEvents, ["time_locate"], E.TrackEvents)
    if "cde" in chosen:
        from suites import cde as C
        run(C.TimeCDE, ["time_solve", "time_gradient"], C.TrackCDE)
    if "irregular" in chosen:
        from suites import irregular as I
        run(I.TimeLatentGradient, ["time_gradient"], I.TrackLatentGradient)
        tracks(I.TrackUnionTimes)


if __name__ == "__main__":
    main(sys.argv[1:])
