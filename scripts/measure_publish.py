"""The publish stage measured when one school changed (issue 12): delta vs full rebuild.

Copies a bench data dir that has already run (default /work/bench-before/<kind>/work: data/
and inbox/, never written), brings it up to date once with this code (that publish is a full
one and records the delta state), then `--rounds` times: one school re-sends its workbook with
a learner fewer, the flow's steps run as `measure_incremental.one_run` does (its publish is
the delta), and the same state is then published in full (`delta=False`) into another dir —
and, with `--before <repo>`, by that repo's code (`publish` as it was) in a subprocess.
Prints wall and CPU seconds of each publish (CPU: this process's user+system, DuckDB's threads
included) and checks the delta snapshot equals the full one (tables, types, comments, views,
order-free content hash of every table). Asserts nothing else.

    python scripts/measure_publish.py --only city [--rounds 3] [--before /work/main]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def cpu() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    return s.ru_utime + s.ru_stime


def snapshot_content(path: Path) -> dict:
    """Tables (count + order-free hash of the rows), column types and comments, views' SQL and
    comments, table comments; `publish_info.published_at` left out (a clock)."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {"columns": con.execute(
            "SELECT table_name, column_name, data_type, comment FROM duckdb_columns() "
            "WHERE schema_name = 'main' ORDER BY ALL").fetchall(),
            "tables": con.execute("SELECT table_name, comment FROM duckdb_tables() WHERE schema_name = 'main' "
                                  "ORDER BY ALL").fetchall(),
            "views": con.execute("SELECT view_name, sql, comment FROM duckdb_views() WHERE schema_name = 'main' "
                                 "AND NOT internal ORDER BY ALL").fetchall()}
        for (t, _) in out["tables"]:
            cols = [r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
                                              "AND schema_name = 'main' ORDER BY column_index", [t]).fetchall()]
            if t == "publish_info":
                cols = [c for c in cols if c != "published_at"]
            h = "hash(" + ", ".join(f'"{c}"' for c in cols) + ")"
            out[f"rows.{t}"] = [str(x) for x in con.execute(f'SELECT count(*), sum({h}) FROM "{t}"').fetchone()]
        return out
    finally:
        con.close()


BEFORE = r"""
import sys, time, resource, json
sys.path.insert(0, sys.argv[1])
import duckdb
from edustat.publish import publish
con = duckdb.connect(sys.argv[2])
def cpu():
    s = resource.getrusage(resource.RUSAGE_SELF); return s.ru_utime + s.ru_stime
t, c = time.perf_counter(), cpu()
publish(con, sys.argv[3], salt=open(sys.argv[4]).read().strip())
print(json.dumps({"wall": time.perf_counter() - t, "cpu": cpu() - c}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["city", "province"], default="city")
    ap.add_argument("--src", type=Path, default=Path("/work/bench-before"))
    ap.add_argument("--dir", type=Path, default=ROOT / "build" / "pubbench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", type=Path, help="a checkout whose publish() is measured as 'before'")
    args = ap.parse_args()

    import great_expectations  # noqa: F401  (paid once, apart)
    import edustat.publish as P
    from edustat.config import Config
    from measure_incremental import change_one, one_run

    base = args.dir / args.only
    shutil.rmtree(base, ignore_errors=True)
    base.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(args.src / args.only / "work", base, symlinks=True)
    os.environ["EDUSTAT_SALT_FILE"] = str(base / "salt")
    cfg = Config(data_dir=base / "data", workers=2, incremental=True)
    inbox = base / "inbox"

    seen: list[dict] = []
    real = P.publish

    def timed_publish(*a, **kw):
        t, c = time.perf_counter(), cpu()
        res = real(*a, **kw)
        seen.append({"wall": time.perf_counter() - t, "cpu": cpu() - c, "mode": res.mode, "reason": res.reason})
        return res

    P.publish = timed_publish
    one_run(cfg, inbox, "p-warm")
    print("warm-up publish:", seen[-1] if seen else "skipped")
    rows = []
    for i in range(args.rounds):
        changed = change_one(inbox)
        seen.clear()
        r = one_run(cfg, inbox, f"p-one-{i}")
        delta = seen[-1] if seen else None
        from edustat import store
        full_dir = base / f"full-{i}"
        with store.session(cfg.db_path) as con:
            t, c = time.perf_counter(), cpu()
            real(con, full_dir, salt=P.salt_for(cfg), pseudonymise=cfg.pseudonymise_published, delta=False)
            full = {"wall": time.perf_counter() - t, "cpu": cpu() - c}
        same = snapshot_content(cfg.published_dir / P.SNAPSHOT_NAME) == snapshot_content(full_dir / P.SNAPSHOT_NAME)
        before = None
        if args.before:
            out = subprocess.run([sys.executable, "-c", BEFORE, str(args.before), str(cfg.db_path),
                                  str(base / f"before-{i}"), str(base / "salt")],
                                 capture_output=True, text=True, check=True)
            before = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((changed, delta, full, before, same, r["stages"].get("publish")))
    print(f"\n== {args.only}: publish when one school changed; load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores, shared)")
    print(f"{'round':<6}{'school':<10}{'delta wall':>11}{'delta cpu':>10}{'full wall':>10}{'full cpu':>9}"
          f"{'before wall':>12}{'before cpu':>11}  same  mode")
    for i, (changed, d, f, b, same, _) in enumerate(rows):
        print(f"{i:<6}{changed[:8]:<10}{d['wall']:>11.2f}{d['cpu']:>10.2f}{f['wall']:>10.2f}{f['cpu']:>9.2f}"
              + (f"{b['wall']:>12.2f}{b['cpu']:>11.2f}" if b else f"{'-':>12}{'-':>11}")
              + f"  {same}  {d['mode']} {d['reason']}")


if __name__ == "__main__":
    main()
