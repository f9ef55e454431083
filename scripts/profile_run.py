"""Profile one cold collection in a single process (workers=1, so cProfile sees every stage):
seconds and CPU seconds per stage, then the top functions by cumulative and own time.

    python scripts/profile_run.py INBOX [--stages read,cast,validate,load,feedback,forms,publish] [--top 40]

The stages are the pipeline functions the Prefect flow's tasks call (flows/collect.py), without
Prefect; the .prof file is written to build/bench/profile-<inbox name>.prof (snakeviz / pstats).
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
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("inbox", type=Path)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--no-profile", action="store_true", help="stage times only (no cProfile overhead)")
    ap.add_argument("--data", type=Path, default=ROOT / "build" / "bench" / "profile-data")
    ap.add_argument("--year", default="2022-2023")
    ap.add_argument("--period", default="dau_nam")
    args = ap.parse_args()
    from edustat import pipeline, store
    from edustat.submissions import discover
    from edustat.config import Config
    from edustat.publish import load_or_create_salt, publish
    from edustat.reports import build_reports

    shutil.rmtree(args.data, ignore_errors=True)
    cfg = Config(data_dir=args.data, workers=1)
    y, p = args.year, args.period
    prof = cProfile.Profile()
    times = {}

    def stage(name, fn):
        t, c = time.perf_counter(), time.process_time()
        if not args.no_profile:
            prof.enable()
        try:
            return fn()
        finally:
            if not args.no_profile:
                prof.disable()
            times[name] = (time.perf_counter() - t, time.process_time() - c)

    paths = discover(args.inbox)
    results = stage("read", lambda: pipeline.ingest_all(paths, cfg, y, p, 1))
    frames = stage("cast", lambda: pipeline.assemble_all(results, cfg))
    issues = stage("validate", lambda: pipeline.validate_all(results, cfg, y, p, frames))
    con = store.connect(cfg.db_path)
    outcome = stage("load", lambda: pipeline.load_all(con, results, issues, cfg, y, p, "profile", frames=frames))
    stage("feedback", lambda: pipeline.write_feedbacks(con, outcome, results, cfg))
    stage("forms", lambda: build_reports(con, cfg.reports_dir, y, p, workers=1))
    stage("publish", lambda: publish(con, cfg.published_dir, salt=load_or_create_salt(cfg.salt_path)))
    con.close()
    total_w = sum(w for w, _ in times.values())
    total_c = sum(c for _, c in times.values())
    print(f"{'stage':<10}{'wall s':>9}{'CPU s':>9}{'CPU %':>7}   (load {os.getloadavg()[0]:.2f})")
    for k, (w, c) in times.items():
        print(f"{k:<10}{w:>9.2f}{c:>9.2f}{100 * c / total_c:>6.0f}%")
    print(f"{'total':<10}{total_w:>9.2f}{total_c:>9.2f}   issues {len(issues):,}")
    if args.no_profile:
        return
    out = ROOT / "build" / "bench" / f"profile-{args.inbox.parent.name}-{args.inbox.name}.prof"
    out.parent.mkdir(parents=True, exist_ok=True)
    prof.dump_stats(out)
    for key in ("cumulative", "tottime"):
        s = io.StringIO()
        pstats.Stats(prof, stream=s).strip_dirs().sort_stats(key).print_stats(args.top)
        print(s.getvalue())
    print(f"profile: {out}")


if __name__ == "__main__":
    main()
