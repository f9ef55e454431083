"""The cold run's feedback + report-forms stage alone, with its timeline (issue 12, round 10):
read, cast, validate and load a collection once (one process, the configured workers), keep the
loaded database, then `--repeat` times: the loaded database put back, the feedback and reports
folders emptied, and the flow's order run — pipeline.start_feedbacks (the feedback workers
start writing), formbuild.build (incremental, as a served run: the forms computed, checked,
stored, rendered in their own pool, digested and recorded), pipeline.finish_feedbacks (the wait
for the last feedback workbook, then the records).

Prints per repetition the stage's wall, this process's CPU, the workers' CPU (children; the
render pool's apart from the feedback workers', as each pool is reaped when it ends), the load
average, and the timeline (seconds from the stage's start): when the forms' render began and
ended, the seconds of the serial steps after it (cells digest, excluded rows, city markers), when
the build returned, when the last feedback workbook was done; and how many workbooks each side
wrote (receipts, marked copies, forms).

    python scripts/measure_fbforms.py INBOX [--workers 2] [--repeat 3] [--keep DIR]
                                      [--threads 2,1] [--profile N] [--profile-feedback N]

--keep DIR: the last repetition's database, feedback and reports folders copied to
DIR/edustat.duckdb, DIR/feedback and DIR/reports (for scripts/compare_feedback.py and
scripts/compare_forms.py). --threads: DuckDB's threads for the stage's connection, one value per
repetition in turn. --profile N: this process's CPU profile of the stage (top N). --profile-feedback
N: afterwards, every feedback workbook written again in this process, one after the other (CPU
seconds per receipt and per marked copy, the jobs' pickling); N > 0: under a CPU profile, its top
N printed (and kept as DIR/feedback.prof with --keep).

On a shared machine the wall is the other processes' as much as this one's; a helper may run this
in a session of its own with a raised autogroup priority (echo -15 > /proc/$$/autogroup, root).
"""
from __future__ import annotations

import argparse
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

from measure_feedback_step import fix_clock  # noqa: E402  (one "generated at": outputs comparable)


def _children() -> float:
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return c.ru_utime + c.ru_stime


def _children_sys() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("inbox", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--threads", default=None,
                    help="comma-separated DuckDB thread counts for the stage's connection, one per repetition in turn")
    ap.add_argument("--profile", type=int, default=0, help="cProfile this process in the stage; print the top N")
    ap.add_argument("--profile-feedback", type=int, default=None,
                    help="also write every feedback workbook in this process (CPU per kind); N > 0: under "
                         "cProfile, the top N printed")
    args = ap.parse_args()

    from edustat import formbuild, pipeline, reports, store
    from edustat.config import load_config
    from edustat.submissions import discover

    print("code:", Path(pipeline.__file__).parents[1])
    y, p = "2022-2023", "dau_nam"
    tmp = Path(tempfile.mkdtemp(prefix="fbforms-"))
    try:
        cfg = replace(load_config(None, tmp / "data"), workers=args.workers)
        paths = discover(args.inbox)
        results = pipeline.ingest_all(paths, cfg, y, p)
        frames = pipeline.assemble_all(results, cfg)
        issues = pipeline.validate_all(results, cfg, y, p, frames)
        with store.session(cfg.db_path, cfg.private_group) as con:
            outcome = pipeline.load_all(con, results, issues, cfg, y, p, "measure", frames=frames)
        loaded = tmp / "loaded.duckdb"
        shutil.copy2(cfg.db_path, loaded)

        fix_clock(pipeline)  # the feedback's "generated at" (after the load, which records real times)
        marks: dict[str, float] = {}
        render_all = reports._render_all

        def timed_render(jobs, workers):
            marks.setdefault("render_start", time.perf_counter())
            marks["render_jobs"] = marks.get("render_jobs", 0) + len(jobs)
            c = _children()  # the render pool's workers are reaped when it returns
            try:
                return render_all(jobs, workers)
            finally:
                marks["render_end"] = time.perf_counter()
                marks["render_cpu"] = marks.get("render_cpu", 0) + _children() - c

        reports._render_all = timed_render

        def timed(module, name):  # wall of each call of module.name, summed per repetition
            real = getattr(module, name)

            def wrapper(*a, **k):
                t = time.perf_counter()
                try:
                    return real(*a, **k)
                finally:
                    marks["t:" + name] = marks.get("t:" + name, 0) + time.perf_counter() - t
            setattr(module, name, wrapper)

        from edustat import formdelta

        timed(formbuild, "cells_digest")
        timed(formbuild, "_excluded")
        timed(formdelta, "city_markers")
        for rep in range(args.repeat):
            shutil.copy2(loaded, cfg.db_path)
            for d in (cfg.feedback_dir, cfg.reports_dir):
                shutil.rmtree(d, ignore_errors=True)
            marks.clear()
            prof = None
            if args.profile:
                import cProfile

                prof = cProfile.Profile(time.process_time)  # CPU: the machine is shared
                prof.enable()
            t0, s0, c0, k0 = time.perf_counter(), time.process_time(), _children(), _children_sys()
            with store.session(cfg.db_path, cfg.private_group) as con:
                if args.threads is not None:
                    threads = [int(x) for x in args.threads.split(",")]
                    con.execute(f"set threads = {threads[rep % len(threads)]}")
                    print("   duckdb threads", con.execute("select current_setting('threads')").fetchone()[0])
                work = pipeline.start_feedbacks(con, outcome, results, cfg)
                last = [t0]
                for f in work.futures:
                    f.add_done_callback(lambda _f: last.__setitem__(0, max(last[0], time.perf_counter())))
                t_started = time.perf_counter()
                result = formbuild.build(con, cfg, y, p, incremental=cfg.incremental)
                t_built = time.perf_counter()
                pipeline.finish_feedbacks(con, work, outcome)
            t1, s1, c1, k1 = time.perf_counter(), time.process_time(), _children(), _children_sys()
            if prof is not None:
                import pstats

                prof.disable()
                pstats.Stats(prof).sort_stats("cumulative").print_stats(args.profile)
            receipts = sum(1 for j in work.jobs if "received" in j[2])
            print(f"rep {rep + 1}: wall {t1 - t0:.2f}  self {s1 - s0:.2f}  child {c1 - c0:.2f}  "
                  f"cpu {s1 - s0 + c1 - c0:.2f} (children's system {k1 - k0:.2f})  load {os.getloadavg()[0]:.2f}")
            rel = {k: marks[k] - t0 for k in ("render_start", "render_end") if k in marks}
            print(f"   feedback: {len(work.jobs)} workbooks ({receipts} receipts, {len(work.jobs) - receipts} marked), "
                  f"started {t_started - t0:.2f}, last done {last[0] - t0:.2f}, "
                  f"workers' CPU {c1 - c0 - marks.get('render_cpu', 0):.2f}")
            print("   after the render:", ", ".join(f"{k[2:]} {v:.2f}" for k, v in marks.items() if k.startswith("t:")))
            print(f"   forms: {len(result.files)} workbooks ({marks.get('render_jobs', 0)} rendered), "
                  f"render {rel.get('render_start', float('nan')):.2f}-{rel.get('render_end', float('nan')):.2f} "
                  f"(workers' CPU {marks.get('render_cpu', 0):.2f}), "
                  f"build returned {t_built - t0:.2f}, finished {t1 - t0:.2f}")
        if args.profile_feedback is not None:
            import cProfile
            import pstats

            shutil.copy2(loaded, cfg.db_path)
            shutil.rmtree(cfg.feedback_dir, ignore_errors=True)
            one = replace(cfg, workers=1)
            with store.session(cfg.db_path, cfg.private_group) as con:
                work = pipeline.start_feedbacks(con, outcome, results, one)
            import pickle

            s0 = time.process_time()
            sent = [pickle.dumps((pipeline._feedback_job, job)) for job in work.jobs]
            s1 = time.process_time()
            for b in sent:
                pickle.loads(b)
            print(f"feedback jobs pickled: {sum(map(len, sent)):,} bytes, dumps {s1 - s0:.3f} CPU s, "
                  f"loads {time.process_time() - s1:.3f} CPU s")
            kinds: dict[str, list] = {"receipt": [0, 0.0], "marked": [0, 0.0]}
            prof = cProfile.Profile(time.process_time)
            for job in work.jobs:
                kind = "receipt" if "received" in job[2] else "marked"
                s0 = time.process_time()
                if args.profile_feedback:
                    prof.enable()
                pipeline._feedback_job(job)
                if args.profile_feedback:
                    prof.disable()
                kinds[kind][0] += 1
                kinds[kind][1] += time.process_time() - s0
            for k, (n, sec) in kinds.items():
                print(f"feedback {k}: {n} workbooks, {sec:.2f} CPU s ({sec / max(n, 1) * 1000:.0f} ms each)")
            if args.profile_feedback:
                pstats.Stats(prof).sort_stats("cumulative").print_stats(args.profile_feedback)
                pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile_feedback)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    prof.dump_stats(str(args.keep / "feedback.prof"))
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cfg.db_path, args.keep / "edustat.duckdb")
            for d in (cfg.feedback_dir, cfg.reports_dir):
                dest = args.keep / d.name
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(d, dest)
            print("kept:", args.keep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
