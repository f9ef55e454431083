"""The validate step (pipeline.validate_all, incremental) with ONE school changed, in a warm
process (GX and the caches already imported, as a served run's forkserver has them):

    python scripts/measure_validate_one.py INBOX --work /tmp/me-val [--repeat 3] [--profile] [--alt]

Copies INBOX to WORK/inbox once; the first validation fills the data dir's cache; then each
repeat re-sends one school (scripts/bench.change_one_school), reads and casts as a run does and
times validate_all alone. --alt alternates edustat.gxfast and the subset-frames reuse off/on
(an A/B in one process). Prints wall and CPU seconds and the load; asserts nothing.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("inbox", type=Path)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile the last repeat")
    ap.add_argument("--alt", action="store_true")
    ap.add_argument("--year", default="2022-2023")
    ap.add_argument("--period", default="dau_nam")
    args = ap.parse_args()
    sys.argv = sys.argv[:1]
    import bench
    import great_expectations  # noqa: F401 - warm, as the forkserver
    import edustat.warmup  # noqa: F401
    from edustat import gxfast, incremental, pipeline
    from edustat.config import Config
    from edustat.submissions import discover

    inbox, data = args.work / "inbox", args.work / "data"
    if not inbox.exists():
        shutil.copytree(args.inbox, inbox, ignore=shutil.ignore_patterns(".params", "manifest.json"))
    cfg = Config(data_dir=data, workers=2, incremental=True)

    def read_and_cast():
        results = pipeline.ingest_all(discover(inbox), cfg, args.year, args.period, 2)
        return results, pipeline.assemble_all(results, cfg)

    results, frames = read_and_cast()
    t = time.perf_counter()
    issues = pipeline.validate_all(results, cfg, args.year, args.period, frames)
    print(f"first validation {time.perf_counter() - t:.2f} s, {len(issues):,} issues", flush=True)
    for i in range(args.repeat):
        bench.change_one_school(inbox)
        results, frames = read_and_cast()
        on = bool(i % 2) if args.alt else True
        gxfast.ENABLED = incremental.REUSE_CAST_FRAMES = on
        pr = cProfile.Profile() if (args.profile and i == args.repeat - 1) else None
        w, c = time.perf_counter(), time.process_time()
        if pr:
            pr.enable()
        issues = pipeline.validate_all(results, cfg, args.year, args.period, frames)
        if pr:
            pr.disable()
        print(f"one changed #{i} ({'cuts on' if on else 'cuts off'}): validate wall {time.perf_counter() - w:.3f} s  "
              f"CPU {time.process_time() - c:.3f} s  {len(issues):,} issues  load {os.getloadavg()[0]:.2f} "
              "(2 cores, shared)", flush=True)
        if pr:
            for key in ("cumulative", "tottime"):
                buf = io.StringIO()
                pstats.Stats(pr, stream=buf).strip_dirs().sort_stats(key).print_stats(40)
                print(buf.getvalue())


if __name__ == "__main__":
    main()
