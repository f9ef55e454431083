"""The feedback stage of a city with each feedback engine (issue 12: the patch engine), in one
process (workers=1, so CPU seconds are the stage's own): read, cast, validate and load once,
then write_feedbacks with "fast" and with "patch". Prints CPU and wall seconds per engine, how
many workbooks each wrote and how many the patch engine handed to the fast engine (by reason).

    python scripts/measure_patch.py INBOX [--check]   # --check: open every patched workbook with openpyxl

The inbox is only read (copy it first if you like); the data dir is a temporary directory.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


class _Reasons(logging.Handler):
    def __init__(self):
        super().__init__()
        self.seen = collections.Counter()

    def emit(self, record):
        msg = record.getMessage()
        if "patch engine" in msg:
            self.seen[msg[msg.rfind("(") + 1:-1]] += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("inbox", type=Path)
    ap.add_argument("--year", default="2022-2023")
    ap.add_argument("--period", default="dau_nam")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    from edustat import pipeline, store
    from edustat.config import Config
    from edustat.submissions import discover

    data = Path(tempfile.mkdtemp(prefix="measure-patch-"))
    cfg = Config(data_dir=data, workers=1, incremental=False)
    y, p = args.year, args.period
    results = pipeline.ingest_all(discover(args.inbox), cfg, y, p, 1)
    frames = pipeline.assemble_all(results, cfg)
    issues = pipeline.validate_all(results, cfg, y, p, frames)
    con = store.connect(cfg.db_path)
    outcome = pipeline.load_all(con, results, issues, cfg, y, p, "measure", frames=frames)
    reasons = _Reasons()
    logging.getLogger("edustat.feedback").addHandler(reasons)
    logging.getLogger("edustat.feedback").setLevel(logging.INFO)
    print(f"{len(outcome.submissions)} schools, statuses {dict(collections.Counter(outcome.submissions.status))} "
          f"(load {os.getloadavg()[0]:.2f})")
    for engine in ("fast", "patch", "fast", "patch"):
        out = cfg.feedback_dir
        shutil.rmtree(out, ignore_errors=True)
        reasons.seen.clear()
        t, c = time.perf_counter(), time.process_time()
        pipeline.write_feedbacks(con, outcome, results, replace(cfg, feedback_engine=engine))
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        books = list(out.rglob("*.xlsx"))
        size = sum(b.stat().st_size for b in books) / 1e6
        print(f"{engine:<6} CPU {cpu:6.2f} s  wall {wall:6.2f} s  {len(books)} workbooks {size:.1f} MB"
              + (f"  fallbacks {dict(reasons.seen)}" if engine == "patch" else ""))
        if args.check and engine == "patch":
            import openpyxl

            for b in books:
                openpyxl.load_workbook(b).close()
            print(f"       {len(books)} patched workbooks open in openpyxl")
    con.close()
    shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
