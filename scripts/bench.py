"""`make bench`: seconds per stage, rows per second, peak memory and the read floor for a
synthetic city (100 schools) and a province (~730 schools); and a single school's
resubmission. Prints numbers; asserts nothing.

    python scripts/bench.py [--only city|province] [--workers 2]
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


def peak_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def timed(label: str, fn, results: dict):
    t = time.perf_counter()
    out = fn()
    results[label] = time.perf_counter() - t
    return out


def read_floor(files: list[Path]) -> tuple[float, int]:
    """The fastest reader (fastexcel/calamine) reading every cell of every sheet, nothing else."""
    import fastexcel

    t = time.perf_counter()
    cells = 0
    for f in files:
        r = fastexcel.read_excel(str(f))
        for name in r.sheet_names:
            tbl = r.load_sheet(name, header_row=None, dtypes="string", skip_rows=0).to_arrow()
            cells += tbl.num_rows * tbl.num_columns
    return time.perf_counter() - t, cells


def bench(kind: str, workers: int, base: Path) -> dict:
    from edustat.synth import generate_city

    n = SIZES[kind]
    inbox = base / kind / "inbox"
    stamp = inbox / ".params"
    params = json.dumps({"schools": n, "seed": 7, "export_share": 0.2, "error_rate": 0.002})
    if not (stamp.exists() and stamp.read_text() == params):
        shutil.rmtree(inbox, ignore_errors=True)
        t = time.perf_counter()
        m = generate_city(inbox, schools=n, seed=7, school_year="2022-2023", period="dau_nam", export_share=0.2,
                          error_rate=0.002, workers=workers)
        print(f"[{kind}] generated {len(m.schools)} schools, {m.total_learners:,} learners, {m.total_staff:,} staff "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
        stamp.write_text(params)
    files = sorted(inbox.glob("*.xlsx"))
    floor, cells = read_floor(files)

    r: dict[str, float] = {}
    t0 = time.perf_counter()
    import great_expectations  # noqa: F401  (fixed start-up, reported apart)
    r["startup_gx_import"] = time.perf_counter() - t0
    from edustat import pipeline, store
    from edustat.collect import discover
    from edustat.config import Config
    from edustat.publish import load_or_create_salt, publish
    from edustat.reports import build_reports

    data = base / kind / "data"
    shutil.rmtree(data, ignore_errors=True)
    cfg = Config(data_dir=data, workers=workers)
    year, period = "2022-2023", "dau_nam"
    paths = discover(inbox)
    results = timed("read", lambda: pipeline.ingest_all(paths, cfg, year, period, workers), r)
    frames = timed("cast", lambda: pipeline.assemble_all(results, cfg), r)
    issues = timed("validate", lambda: pipeline.validate_all(results, cfg, year, period, frames), r)
    con = store.connect(cfg.db_path)
    outcome = timed("load", lambda: pipeline.load_all(con, results, issues, cfg, year, period, "bench", frames=frames), r)
    timed("feedback", lambda: pipeline.write_feedbacks(con, outcome, results, cfg), r)
    rep = timed("report", lambda: build_reports(con, cfg.reports_dir, year, period, workers=workers), r)
    timed("publish", lambda: publish(con, cfg.published_dir, salt=load_or_create_salt(cfg.salt_path)), r)
    rows = int(con.execute("select (select count(*) from raw_learners) + (select count(*) from raw_staff) "
                           "+ (select count(*) from raw_classes) + (select count(*) from raw_rooms)").fetchone()[0])
    learners = int(con.execute("select count(*) from raw_learners").fetchone()[0])
    con.close()
    stages = ["read", "cast", "validate", "load", "feedback", "report", "publish"]
    e2e = sum(r[s] for s in stages)

    # one school resubmits: a changed file for one school, the rest untouched
    one = next(p for p in files if p.name.startswith("7"))
    resub = base / kind / "resubmit"
    shutil.rmtree(resub, ignore_errors=True)
    resub.mkdir(parents=True)
    import openpyxl

    wb = openpyxl.load_workbook(one)
    ws = wb["HocSinh"] if "HocSinh" in wb.sheetnames else wb.worksheets[-2]
    ws.delete_rows(ws.max_row)
    wb.save(resub / one.name)
    rr: dict[str, float] = {}
    con = store.connect(cfg.db_path)
    t = time.perf_counter()
    res1 = pipeline.ingest_all([resub / one.name], cfg, year, period, 1)
    fr1 = pipeline.assemble_all(res1, cfg)
    iss1 = pipeline.validate_all(res1, cfg, year, period, fr1)
    out1 = pipeline.load_all(con, res1, iss1, cfg, year, period, "bench-resubmit", frames=fr1)
    rr["revalidate+reload"] = time.perf_counter() - t
    t = time.perf_counter()
    pipeline.write_feedbacks(con, out1, res1, cfg)
    rr["feedback"] = time.perf_counter() - t
    t = time.perf_counter()
    code = res1[0].school_code
    build_reports(con, cfg.reports_dir, year, period, school=code)
    rr["forms (school + city)"] = time.perf_counter() - t
    con.close()
    rr["total"] = sum(rr.values())
    return {"kind": kind, "schools": len(files), "learners": learners, "rows": rows, "cells": cells,
            "floor": floor, "stages": {s: r[s] for s in stages}, "e2e": e2e, "gx_import": r["startup_gx_import"],
            "peak_mib": peak_mib(), "resubmit": rr, "forms": len(rep.files), "failed_checks": rep.failed_checks}


def report(b: dict) -> None:
    print(f"\n== {b['kind']}: {b['schools']} schools, {b['learners']:,} learners, {b['rows']:,} rows, {b['cells']:,} cells")
    print(f"{'stage':<12}{'seconds':>10}{'rows/s':>12}")
    for s, v in b["stages"].items():
        print(f"{s:<12}{v:>10.2f}{b['rows'] / v if v else 0:>12,.0f}")
    print(f"{'end to end':<12}{b['e2e']:>10.2f}{b['rows'] / b['e2e']:>12,.0f}")
    print(f"{'read floor':<12}{b['floor']:>10.2f}{b['rows'] / b['floor']:>12,.0f}   (fastexcel, every cell, nothing else)")
    print(f"ratio end-to-end / floor: {b['e2e'] / b['floor']:.2f}")
    print(f"fixed start-up apart: GX import {b['gx_import']:.2f} s (Prefect: see README; ~3.5 s/run with a running server)")
    print(f"peak memory: {b['peak_mib']:,.0f} MiB   forms written: {b['forms']}   failed form checks: {b['failed_checks']}")
    print("one school resubmits: " + ", ".join(f"{k} {v:.2f} s" for k, v in b["resubmit"].items()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=list(SIZES))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--dir", type=Path, default=ROOT / "build" / "bench")
    args = ap.parse_args()
    for kind in [args.only] if args.only else list(SIZES):
        report(bench(kind, args.workers, args.dir))


if __name__ == "__main__":
    main()
