"""The read stage alone (pipeline.ingest_all, one process, per-file cache written as a cold run
does): wall and CPU seconds, per file, and optionally a cProfile of it.

    python scripts/bench_read.py INBOX [--profile] [--top 30] [--repeat 1] [--code CHECKOUT]

`--code` measures another checkout's code (e.g. main's) with this same harness.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if "--code" in sys.argv:
    ROOT = Path(sys.argv[sys.argv.index("--code") + 1]).resolve()
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("inbox", type=Path)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--year", default="2022-2023")
    ap.add_argument("--period", default="dau_nam")
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose code is measured")
    args = ap.parse_args()
    from edustat import pipeline
    from edustat.config import Config
    from edustat.incremental import code_digest
    from edustat.submissions import discover
    from schemas import load_contract
    from schemas.rules import load_rules

    print(f"code: {Path(pipeline.__file__).resolve().parents[1]}")
    paths = discover(args.inbox)
    load_contract(), load_rules(), code_digest()  # warm what every run loads once
    prof = cProfile.Profile() if args.profile else None
    for r in range(args.repeat):
        data = Path(tempfile.mkdtemp(prefix="bench-read-"))
        try:
            cfg = Config(data_dir=data, workers=1)
            t, c = time.perf_counter(), time.process_time()
            if prof:
                prof.enable()
            results = pipeline.ingest_all(paths, cfg, args.year, args.period, 1)
            if prof:
                prof.disable()
            w, c = time.perf_counter() - t, time.process_time() - c
        finally:
            shutil.rmtree(data, ignore_errors=True)
        rows = sum(fr.rows(s) for fr in results for s in ("learners",))
        print(f"run {r + 1}: {len(results)} files, {rows:,} learners: wall {w:.2f} s, CPU {c:.2f} s, "
              f"{1000 * c / max(1, len(results)):.1f} CPU ms/file   (load {os.getloadavg()[0]:.2f})")
    if prof:
        for key in ("cumulative", "tottime"):
            s = io.StringIO()
            pstats.Stats(prof, stream=s).strip_dirs().sort_stats(key).print_stats(args.top)
            print(s.getvalue())


if __name__ == "__main__":
    main()
