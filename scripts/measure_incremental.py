"""Incremental runs measured (issue 12): a city (100 schools) and optionally a province (730
schools) run three times on one data dir — cold (empty data dir), nothing changed (the same
inbox again), one school changed (one school's file re-sent with a learner fewer) — each
stage timed, the way `flows/collect.py` orders them (without Prefect: its overhead is apart).
Prints numbers; asserts nothing.

    python scripts/measure_incremental.py [--only city|province] [--workers 2] [--dir build/incr]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

SIZES = {"city": 100, "province": 730}
YEAR, PERIOD = "2022-2023", "dau_nam"


def cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def inbox_for(kind: str, base: Path, workers: int) -> Path:
    from edustat.synth import generate_city

    inbox = base / kind / "inbox"
    stamp = inbox / ".params"
    params = json.dumps({"schools": SIZES[kind], "seed": 7, "export_share": 0.2, "error_rate": 0.002})
    if not (stamp.exists() and stamp.read_text() == params):
        shutil.rmtree(inbox, ignore_errors=True)
        generate_city(inbox, schools=SIZES[kind], seed=7, school_year=YEAR, period=PERIOD, export_share=0.2,
                      error_rate=0.002, workers=workers)
        stamp.write_text(params)
    return inbox


def read_floor(files: list[Path]) -> float:
    import fastexcel

    t = time.perf_counter()
    for f in files:
        r = fastexcel.read_excel(str(f))
        for name in r.sheet_names:
            r.load_sheet(name, header_row=None, dtypes="string").to_arrow()
    return time.perf_counter() - t


def one_run(cfg, inbox: Path, run_id: str) -> dict:
    """The flow's steps in the flow's order (flows/collect.py), each timed; wall seconds and the
    CPU seconds of this process and its children; the cache's hits and misses."""
    from edustat import pipeline, store
    from edustat.submissions import discover
    from edustat.publish import publish, salt_for

    times: dict[str, float] = {}
    c0, t0 = cpu(), time.perf_counter()

    def timed(label, fn):
        t = time.perf_counter()
        out = fn()
        times[label] = times.get(label, 0.0) + time.perf_counter() - t
        return out

    incremental = None
    if cfg.incremental:
        from edustat import incremental
    timed("prepare", lambda: pipeline.clean_temp_files(cfg))
    files = timed("find", lambda: discover(inbox))
    results = timed("read", lambda: pipeline.ingest_all(files, cfg, YEAR, PERIOD))
    outcome = None
    if incremental:
        outcome = timed("load", lambda: incremental.unchanged_outcome(results, cfg, YEAR, PERIOD, run_id))
    reused = outcome is not None
    for label in ("cast", "validate"):
        times.setdefault(label, 0.0)
    if outcome is None:
        frames = timed("cast", lambda: pipeline.assemble_all(results, cfg))
        issues = timed("validate", lambda: pipeline.validate_all(results, cfg, YEAR, PERIOD, frames))
        with store.session(cfg.db_path) as con:
            outcome = timed("load", lambda: pipeline.load_all(con, results, issues, cfg, YEAR, PERIOD, run_id, frames=frames))
    import contextlib

    # the flow's tail shares one DuckDB instance (store.held) where the code has it
    with (store.held(cfg.db_path) if hasattr(store, "held") else contextlib.nullcontext()):
        with store.session(cfg.db_path) as con:
            timed("feedback", lambda: pipeline.write_feedbacks(con, outcome, results, cfg))
        with store.session(cfg.db_path) as con:
            if incremental:
                timed("forms", lambda: incremental.build_forms_incremental(con, cfg, YEAR, PERIOD))
            else:
                from edustat.reports import build_reports
                timed("forms", lambda: build_reports(con, cfg.reports_dir, YEAR, PERIOD, workers=cfg.workers))
        with store.session(cfg.db_path) as con:
            if incremental:
                timed("publish", lambda: incremental.publish_if_changed(con, cfg, salt_for(cfg)))
            else:
                timed("publish", lambda: publish(con, cfg.published_dir, salt=salt_for(cfg),
                                                 pseudonymise=cfg.pseudonymise_published))
    # as the flow: the file recorded when every write was audited (the next load trusts its stamps)
    if hasattr(pipeline, "record_audited") and (reused or getattr(outcome, "audited", False)):
        pipeline.record_audited(cfg)
    total, cpu_s = time.perf_counter() - t0, cpu() - c0
    stats = pipeline.cache_stats(results) if hasattr(pipeline, "cache_stats") else None
    if stats is not None:
        stats["feedback_written"] = getattr(outcome, "feedback_written", None)
    return {"stages": times, "total": total, "cpu": cpu_s, "cache": stats}


def change_one(inbox: Path) -> str:
    """One school re-sends its workbook with its last learner row removed."""
    import openpyxl

    one = sorted(p for p in inbox.glob("7*.xlsx"))[0]
    wb = openpyxl.load_workbook(one)
    ws = wb["HocSinh"] if "HocSinh" in wb.sheetnames else wb.worksheets[-2]
    ws.delete_rows(ws.max_row)
    wb.save(one)
    return one.name


def measure(kind: str, workers: int, base: Path, incremental: bool) -> None:
    import great_expectations  # noqa: F401  (fixed start-up, paid once per process: apart)
    from edustat.config import Config

    src = inbox_for(kind, base, workers)
    inbox = base / kind / "work_inbox"
    shutil.rmtree(inbox, ignore_errors=True)
    shutil.copytree(src, inbox)
    floor = read_floor(sorted(inbox.glob("*.xlsx")))
    data = base / kind / "data"
    shutil.rmtree(data, ignore_errors=True)
    os.environ["EDUSTAT_SALT_FILE"] = str(base / kind / "salt")
    cfg = Config(data_dir=data, workers=workers, incremental=incremental)
    runs = {"cold": one_run(cfg, inbox, "m-cold"), "nothing changed": one_run(cfg, inbox, "m-same")}
    changed = change_one(inbox)
    runs[f"one school changed ({changed[:8]})"] = one_run(cfg, inbox, "m-one")
    stages = list(next(iter(runs.values()))["stages"])
    print(f"\n== {kind}: {SIZES[kind]} schools, incremental {incremental}, workers {workers}, read floor {floor:.2f} s, "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'run':<32}" + "".join(f"{s:>9}" for s in stages) + f"{'total':>9}{'cpu':>9}{'×floor':>8}  cache")
    for name, r in runs.items():
        print(f"{name:<32}" + "".join(f"{r['stages'][s]:>9.2f}" for s in stages)
              + f"{r['total']:>9.2f}{r['cpu']:>9.2f}{r['total'] / floor:>8.1f}  {r['cache']}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=list(SIZES))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--dir", type=Path, default=ROOT / "build" / "incr")
    ap.add_argument("--no-incremental", action="store_true", help="as before issue 12 (config incremental: false)")
    args = ap.parse_args()
    for kind in [args.only] if args.only else list(SIZES):
        measure(kind, args.workers, args.dir, not args.no_incremental)


if __name__ == "__main__":
    main()
