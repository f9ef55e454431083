"""The feedback step of a cold collection, alone (issue 12): read, cast, validate and load once,
then pipeline.write_feedbacks `--repeat` times with the configured engine into an empty
feedback dir (cold: every workbook written), with `--workers` worker processes. Prints wall
seconds, CPU seconds of this process and of its children (the workers), the load average, and
how many workbooks went which way (receipt, patched, fast engine by fallback reason).

    python scripts/measure_feedback_step.py INBOX [--workers 2] [--repeat 3] [--keep DIR]
    python scripts/measure_feedback_step.py --corpus DIR [--keep DIR]   # tests/bad_inputs' city

--keep DIR: the last repetition's feedback workbooks are copied to DIR (for
scripts/compare_feedback.py). The inbox is only read; the data dir is a temporary directory.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

from measure_patch import _Reasons as _Ways  # noqa: E402  (the engines' fallback reasons, counted from the log)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _makespan(costs: list[float], chunk: int, workers: int = 2) -> float:
    """When the last of `workers` greedy workers ends, taking chunks of `chunk` jobs in order."""
    free = [0.0] * workers
    for i in range(0, len(costs), chunk):
        w = free.index(min(free))
        free[w] += sum(costs[i:i + chunk])
    return max(free)


def fix_clock(pipeline) -> None:
    """One "generated at" for every feedback written from now on (pipeline.dt): outputs comparable."""
    class _FixedNow(pipeline.dt.datetime):
        @classmethod
        def now(cls, tz=None):
            import datetime

            return datetime.datetime(2026, 12, 1, 8, 0, tzinfo=tz)

    class _Dt:
        datetime = _FixedNow

        def __getattr__(self, name):
            import datetime

            return getattr(datetime, name)

    pipeline.dt = _Dt()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("inbox", type=Path, nargs="?")
    ap.add_argument("--corpus", type=Path, help="build tests/bad_inputs' corpus city in DIR and use it")
    ap.add_argument("--year", default="2022-2023")
    ap.add_argument("--period", default="dau_nam")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--engine", default="patch")
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--schedule", action="store_true",
                    help="with --workers 1: each job's CPU seconds, and the 2-worker makespan they give with the "
                         "pool's chunks in submission order (before) and costliest first one at a time (now)")
    ap.add_argument("--profile", action="store_true", help="cProfile the last repetition (use --workers 1)")
    args = ap.parse_args()
    from edustat import pipeline, store
    from edustat.config import Config
    from edustat.submissions import discover

    inbox = args.inbox
    if args.corpus:
        from tests.bad_inputs import build_corpus_city

        shutil.rmtree(args.corpus, ignore_errors=True)
        inbox = args.corpus / "inbox"
        inbox.mkdir(parents=True)
        build_corpus_city(inbox, args.corpus / "outside", school_year=args.year, period=args.period)
    data = Path(tempfile.mkdtemp(prefix="measure-fbstep-"))
    cfg = Config(data_dir=data, workers=1, feedback_engine=args.engine)
    y, p = args.year, args.period
    results = pipeline.ingest_all(discover(inbox), cfg, y, p, 1)
    frames = pipeline.assemble_all(results, cfg)
    issues = pipeline.validate_all(results, cfg, y, p, frames)
    con = store.connect(cfg.db_path)
    outcome = pipeline.load_all(con, results, issues, cfg, y, p, "measure", frames=frames)
    ways = _Ways()
    logging.getLogger("edustat.feedback").addHandler(ways)
    logging.getLogger("edustat.feedback").setLevel(logging.INFO)
    status = collections.Counter(outcome.submissions.status)
    print(f"{len(outcome.submissions)} files, statuses {dict(status)}")
    run_cfg = replace(cfg, workers=args.workers)
    costs: list[tuple[tuple, float]] = []
    if args.schedule:
        job_fn = pipeline._feedback_job

        def timed(job):
            c = time.process_time()
            try:
                return job_fn(job)
            finally:
                costs.append((job, time.process_time() - c))

        pipeline._feedback_job = timed

    fix_clock(pipeline)
    for i in range(args.repeat):
        shutil.rmtree(cfg.feedback_dir, ignore_errors=True)
        ways.seen.clear()
        load = os.getloadavg()
        prof = None
        if args.profile and i == args.repeat - 1:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t, c, k = time.perf_counter(), time.process_time(), _children_cpu()
        pipeline.write_feedbacks(con, outcome, results, run_cfg)
        if prof is not None:
            prof.disable()
            import pstats

            pstats.Stats(prof).strip_dirs().sort_stats("cumulative").print_stats(45)
            pstats.Stats(prof).strip_dirs().sort_stats("tottime").print_stats(30)
        wall, cpu, kids = time.perf_counter() - t, time.process_time() - c, _children_cpu() - k
        books = list(cfg.feedback_dir.rglob("*.xlsx"))
        print(f"#{i + 1} workers={args.workers} wall {wall:6.2f} s  CPU self {cpu:6.2f} s + workers {kids:6.2f} s"
              f"  {len(books)} workbooks  load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
              + (f"  fallbacks (1 process only) {dict(ways.seen)}" if ways.seen else ""))
    if costs:
        last = costs[-len(outcome.submissions):] if len(costs) >= len(outcome.submissions) else costs
        print(f"jobs {len(last)}: CPU {sum(c for _, c in last):.2f} s; 2-worker makespan "
              f"chunks in order {_makespan([c for _, c in last], max(1, len(last) // 8)):.2f} s, "
              f"costliest first {_makespan([c for _, c in sorted(last, key=lambda jc: pipeline._feedback_cost(jc[0]), reverse=True)], 1):.2f} s")
    if args.keep:
        shutil.rmtree(args.keep, ignore_errors=True)
        shutil.copytree(cfg.feedback_dir, args.keep)
        print(f"kept: {args.keep}")
    con.close()
    shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
