"""Profile the report-forms stage alone (reports.build_reports) on a data dir already loaded
(e.g. by scripts/profile_run.py): the DuckDB file is copied first, so the loaded data is never
changed, and the forms are written to a fresh folder.

    python scripts/profile_forms.py DATA_DIR [--out DIR] [--workers 1] [--no-profile] [--top 40]

Prints wall and CPU seconds (this process + its worker processes); with profiling, the top
functions by cumulative and own time (this process only).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, help="a loaded data dir (curated/edustat.duckdb)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "forms-out")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--year", default="2022-2023")
    ap.add_argument("--period", default="dau_nam")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    import duckdb

    from edustat.reports import build_reports

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    db = args.out / "edustat.duckdb"
    shutil.copyfile(args.data / "curated" / "edustat.duckdb", db)
    con = duckdb.connect(str(db))
    prof = cProfile.Profile()
    t, c = time.perf_counter(), time.process_time()
    if not args.no_profile:
        prof.enable()
    result = build_reports(con, args.out / "reports", args.year, args.period, workers=args.workers)
    if not args.no_profile:
        prof.disable()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    con.close()
    print(f"forms: {len(result.files)} files, {result.cells:,} cells, {result.checks:,} checks "
          f"({result.failed_checks:,} failed); wall {wall:.2f} s, CPU {cpu:.2f} s "
          f"+ workers {child.ru_utime + child.ru_stime:.2f} s (load {os.getloadavg()[0]:.2f})")
    if args.no_profile:
        return
    for key in ("cumulative", "tottime"):
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats(key).print_stats(args.top)
        print(s.getvalue())


if __name__ == "__main__":
    main()
