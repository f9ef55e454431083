"""GX's cost on ONE school (issue 12: one school changed): the row-rule run
(`edustat.expectations.run_row_rules`) on one school's check frames, timed cold (GX imported
in this call) and then warm (the same process again, as a pre-imported worker would run it).

    python scripts/measure_gx_school.py [FILE.xlsx] [--repeat 3] [--profile] [--top 30]

Prints wall and CPU seconds (the machine may be shared); asserts nothing.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def checks_of(path: Path, year: str, period: str):
    from edustat import pipeline
    from edustat.config import Config
    from edustat.submissions import assemble, build_check_frames

    with tempfile.TemporaryDirectory() as d:
        cfg = Config(data_dir=Path(d), workers=1, incremental=False)
        results = pipeline.ingest_all([path], cfg, year, period, 1)
        from edustat.incremental import materialise
        materialise(results)
        frames = assemble(results)
        checks, _ = build_check_frames(results, year, frames=frames)
    return checks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", type=Path, nargs="?",
                    default=ROOT / "build" / "in" / "city" / "inbox" / "74718011_thcs-phu-hoa.xlsx")
    ap.add_argument("--year", default="2022-2023")
    ap.add_argument("--period", default="dau_nam")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    from edustat import expectations as ex

    checks = checks_of(args.file, args.year, args.period)
    n_exp = sum(len(ex.load_suite(s, args.period)["expectations"]) for s in checks)
    print(f"{args.file.name}: {sum(len(f) for f in checks.values()):,} check rows in {len(checks)} sheets, "
          f"{n_exp} expectations; load {os.getloadavg()[0]:.2f} (2 cores, shared)")
    for i in range(args.repeat + 1):
        pr = cProfile.Profile() if (args.profile and i == args.repeat) else None
        w, c = time.perf_counter(), time.process_time()
        if pr:
            pr.enable()
        out = ex.run_row_rules(checks, args.period)
        if pr:
            pr.disable()
        label = "cold (GX imported)" if i == 0 else f"warm #{i}"
        print(f"  {label:<20} wall {time.perf_counter() - w:6.3f} s  CPU {time.process_time() - c:6.3f} s  "
              f"{len(out)} failing cells")
        if pr:
            for key in ("cumulative", "tottime"):
                buf = io.StringIO()
                pstats.Stats(pr, stream=buf).strip_dirs().sort_stats(key).print_stats(args.top)
                print(f"== by {key}\n{buf.getvalue()}")


if __name__ == "__main__":
    main()
