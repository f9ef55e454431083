"""A cold collection through the flow's own steps in one process (the configured workers, 2 by
default): wall, this process's CPU and its children's CPU per stage, and how many cores each
stage kept busy ("util" = CPU ÷ wall). `--sequential` writes the feedback workbooks before the
forms, as the flow did before round 8 of issue 12, instead of beside them:

    python scripts/measure_cold_stages.py INBOX DATA_DIR [--sequential]

DATA_DIR is removed first. Without Prefect; Great Expectations' import counts in `validate`.
"""
from __future__ import annotations

import argparse
import os
import resource
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
    ap.add_argument("data", type=Path)
    ap.add_argument("--sequential", action="store_true", help="feedback then forms, one after the other")
    ap.add_argument("--year", default="2022-2023")
    ap.add_argument("--period", default="dau_nam")
    args = ap.parse_args()
    from edustat import formbuild, pipeline, store
    from edustat.config import load_config
    from edustat.incremental import publish_if_changed
    from edustat.publish import salt_for
    from edustat.submissions import discover

    shutil.rmtree(args.data, ignore_errors=True)
    cfg = load_config(None, args.data)
    y, p = args.year, args.period
    times: dict[str, tuple[float, float, float]] = {}

    def stage(name, fn):
        t, s = time.perf_counter(), time.process_time()
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = fn()
        c2 = resource.getrusage(resource.RUSAGE_CHILDREN)
        times[name] = (time.perf_counter() - t, time.process_time() - s,
                       c2.ru_utime + c2.ru_stime - c.ru_utime - c.ru_stime)
        return out

    def session():
        return store.session(cfg.db_path, cfg.private_group)

    results = stage("read", lambda: pipeline.ingest_all(discover(args.inbox), cfg, y, p))
    frames = stage("cast", lambda: pipeline.assemble_all(results, cfg))
    issues = stage("validate", lambda: pipeline.validate_all(results, cfg, y, p, frames))

    def load():
        with session() as con:
            return pipeline.load_all(con, results, issues, cfg, y, p, "measure", frames=frames)

    outcome = stage("load", load)

    def forms(con):
        return formbuild.build(con, cfg, y, p, incremental=cfg.incremental)

    if args.sequential:
        def feedback():
            with session() as con:
                return pipeline.write_feedbacks(con, outcome, results, cfg)

        def forms_alone():
            with session() as con:
                return forms(con)

        stage("feedback", feedback)
        stage("forms", forms_alone)
    else:
        def beside():
            with session() as con:
                work = pipeline.start_feedbacks(con, outcome, results, cfg)
                forms(con)
                return pipeline.finish_feedbacks(con, work, outcome)

        stage("fb+forms", beside)

    def publish():
        with session() as con:
            return publish_if_changed(con, cfg, salt_for(cfg))

    stage("publish", publish)
    print(f"{'stage':<10}{'wall':>7}{'self':>7}{'child':>7}{'CPU':>7}{'util':>6}   load {os.getloadavg()[0]:.2f}")
    tw = ts = tc = 0.0
    for k, (w, s, c) in times.items():
        tw, ts, tc = tw + w, ts + s, tc + c
        print(f"{k:<10}{w:>7.2f}{s:>7.2f}{c:>7.2f}{s + c:>7.2f}{(s + c) / w:>6.2f}")
    print(f"{'total':<10}{tw:>7.2f}{ts:>7.2f}{tc:>7.2f}{ts + tc:>7.2f}{(ts + tc) / tw:>6.2f}")


if __name__ == "__main__":
    main()
