"""Cast, validate and load of one collection in one process, from a read stage kept on disk
(pickled once), so the later stages can be measured and compared again and again:

    python scripts/measure_stages.py INBOX --out build/bench/issues-after.parquet [--profile validate] [--top 40]

Prints wall / CPU seconds, RSS after and peak RSS (whole process) per stage; writes the
validate stage's issues (sorted, every column) to --out for `--compare A B`, which says whether
two runs found the same issue set (rule id, sheet, row, column, severity, message, value, fix).
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pickle
import pstats
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def _rss() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fingerprint(con):
    """Per table of the database: rows and an order-free hash of every row, without the
    columns that name the run or its time (run_id, *_at, *_time)."""
    import pandas as pd

    out = []
    for (table,) in con.execute("select table_name from information_schema.tables where table_schema = 'main' "
                                "and table_type = 'BASE TABLE' order by 1").fetchall():
        cols = [c for (c,) in con.execute("select column_name from information_schema.columns where table_name = ? "
                                          "order by ordinal_position", [table]).fetchall()
                if c not in ("run_id", "loaded_run") and not c.endswith(("_at", "_time", "_path"))
                # the incremental tables' version keys digest the code itself (edustat.incremental)
                and not (table.startswith("incremental_") and c in ("version", "fingerprint"))]
        if not cols:
            continue
        row = ", ".join(f'"{c}"' for c in cols)
        n, h = con.execute(f"select count(*), coalesce(sum(hash(struct_pack({row})) % 1000000007), 0) from {table}").fetchone()
        out.append({"table": table, "rows": n, "hash": int(h)})
    return pd.DataFrame(out)


def compare(a: Path, b: Path) -> int:
    import pandas as pd

    x, y = pd.read_parquet(a), pd.read_parquet(b)
    print(f"{a}: {len(x):,} issues; {b}: {len(y):,} issues")
    da, db = a.with_suffix(".db.csv"), b.with_suffix(".db.csv")
    if da.exists() and db.exists():
        fa, fb = pd.read_csv(da), pd.read_csv(db)
        same_db = fa.equals(fb)
        print(f"database: {'IDENTICAL' if same_db else 'DIFFERENT'} ({len(fa)} tables, {fa['rows'].sum():,} rows)")
        if not same_db:
            print(fa.merge(fb, on="table", how="outer", suffixes=("_a", "_b")).query("rows_a != rows_b or hash_a != hash_b").to_string())
    if x.equals(y):
        print("issues: IDENTICAL (every column, same order after sorting)")
        return 0
    m = x.merge(y, how="outer", indicator=True)
    print(m["_merge"].value_counts().to_string())
    print(m[m["_merge"] != "both"].head(20).to_string())
    return 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("inbox", type=Path, nargs="?")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--profile", default="", help="comma-separated stages to cProfile")
    ap.add_argument("--top", type=int, default=35)
    ap.add_argument("--stages", default="cast,validate,load")
    ap.add_argument("--compare", nargs=2, type=Path)
    ap.add_argument("--tag", default="", help="suffix of the data dir (two runs at once)")
    ap.add_argument("--year", default="2022-2023")
    ap.add_argument("--period", default="dau_nam")
    args = ap.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    from edustat import pipeline, store
    from edustat.config import Config
    from edustat.submissions import discover

    name = f"{args.inbox.parent.name}-{args.inbox.name}"
    base = ROOT / "build" / "bench" / f"stages-{name}"
    kept, data = base / "read", base / f"data{args.tag}"
    y, p = args.year, args.period
    if not (kept / "results.pkl").exists():
        shutil.rmtree(kept, ignore_errors=True)
        cfg = Config(data_dir=kept / "data", workers=2)
        t = time.perf_counter()
        results = pipeline.ingest_all(discover(args.inbox), cfg, y, p, 2)
        (kept / "results.pkl").write_bytes(pickle.dumps(results, protocol=5))
        print(f"read (kept for the next runs): {time.perf_counter() - t:.1f} s")
        del results
        gc.collect()
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(kept / "data", data, symlinks=True)
    cfg = Config(data_dir=data, workers=1)
    print(f"start: rss {_rss():.0f} MiB, peak {_peak():.0f} MiB")
    results = pickle.loads((kept / "results.pkl").read_bytes())
    for fr in results:  # the pickled paths point into the kept copy of the data dir
        if fr.raw_path is not None and str(fr.raw_path).startswith(str(kept / "data")):
            fr.raw_path = data / fr.raw_path.relative_to(kept / "data")
    gc.collect()
    print(f"results unpickled: rss {_rss():.0f} MiB, peak {_peak():.0f} MiB")
    wanted = set(args.stages.split(","))
    prof = {s: cProfile.Profile() for s in args.profile.split(",") if s}
    times = {}

    def stage(stage_name, fn):
        if stage_name not in wanted:
            return None
        t, c = time.perf_counter(), time.process_time()
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        kc = kids.ru_utime + kids.ru_stime
        pr = prof.get(stage_name)
        if pr:
            pr.enable()
        try:
            return fn()
        finally:
            if pr:
                pr.disable()
            times[stage_name] = (time.perf_counter() - t, time.process_time() - c)
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            kc = kids.ru_utime + kids.ru_stime - kc  # a forked child's CPU (edustat.isolate)
            print(f"{stage_name:<10} wall {times[stage_name][0]:7.2f}  CPU {times[stage_name][1]:6.2f}  "
                  f"+children {kc:6.2f}  "
                  f"rss {_rss():6.0f} MiB  peak {_peak():6.0f} MiB  (load {os.getloadavg()[0]:.2f})", flush=True)

    if os.environ.get("TRACE_LOAD"):  # RSS and peak after each step of the load
        from edustat import pipeline as pl
        from edustat import store as st

        def traced(mod, name):
            fn = getattr(mod, name)

            def wrapper(*a, **k):
                try:
                    return fn(*a, **k)
                finally:
                    print(f"  {name:<22} rss {_rss():6.0f} MiB  peak {_peak():6.0f} MiB", flush=True)
            setattr(mod, name, wrapper)
        # the load stages its frames as they are made (stage_sheets; staged_frames for a headstart)
        for mod, name in ((pl, "staged_frames"), (pl, "stage_sheets"), (pl, "cross_school_issues"),
                          (pl, "write_run"), (pl, "inconsistencies"), (st, "to_arrow")):
            traced(mod, name)
    frames = stage("cast", lambda: pipeline.assemble_all(results, cfg))
    issues = stage("validate", lambda: pipeline.validate_all(results, cfg, y, p, frames))
    if issues is not None and args.out:
        import pandas as pd

        cols = list(issues.columns)
        out = issues.astype("string").sort_values(cols, na_position="first").reset_index(drop=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out.to_parquet(args.out)
        print(f"issues: {len(issues):,} → {args.out}")
    if "load" in wanted:
        con = store.connect(cfg.db_path)
        stage("load", lambda: pipeline.load_all(con, results, issues, cfg, y, p, "measure", frames=frames))
        if args.out:
            fp = fingerprint(con)
            fp.to_csv(args.out.with_suffix(".db.csv"), index=False)
            print(f"database fingerprint ({len(fp)} tables) → {args.out.with_suffix('.db.csv')}")
        con.close()
    for s, pr in prof.items():
        pr.dump_stats(base / f"{s}.prof")
        for key in ("cumulative", "tottime"):
            buf = io.StringIO()
            pstats.Stats(pr, stream=buf).strip_dirs().sort_stats(key).print_stats(args.top)
            print(f"== {s} by {key}\n{buf.getvalue()}")
    print(f"end: peak {_peak():.0f} MiB")


if __name__ == "__main__":
    main()
