"""Cold LOAD and PUBLISH (issue 12): a full first run into an empty data dir, measured per repo,
outputs fingerprinted for comparison across repos.

One process per run: read, cast, validate with `--repo`'s code (the flow's steps as
/work/notes/stagecpu.py runs them, 2 workers), then `pipeline.load_all` and
`incremental.publish_if_changed`, each timed (wall; CPU of this process, DuckDB's threads
included). `--dir` is emptied first; use the same `--dir` for the runs compared, so the columns a
data-dir path sets (`raw_path`, `feedback_path`) are equal too. The salt is a fixed file beside
`--dir` (`EDUSTAT_SALT_FILE`) and the run id is fixed, so the outputs compare. Writes
`<out>`: the curated database's fingerprint (`measure_stages.fingerprint`: every table's rows and
an order-free hash, less run_id, *_at, *_time, *_path, incremental version keys), the
snapshot's content (`measure_publish.snapshot_content`: rows, column types, comments, views;
less publish_info.published_at), its rows less *_at columns, the Markdown files beside it
(sha256), and the Parquet tree: every file's path, row count and Parquet schema, and each table's order-free hash read as analysts read it (hive glob).

    python scripts/measure_cold_load_publish.py --repo /work/main --out /tmp/x/main.json
    python scripts/measure_cold_load_publish.py --repo . --out /tmp/x/mine.json [--queries] [--profile P]
    python scripts/measure_cold_load_publish.py --compare /tmp/x/main.json /tmp/x/mine.json
"""
from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cpu() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    return s.ru_utime + s.ru_stime


def tree_content(tree: Path) -> dict:
    """Every Parquet file's path and rows; per table, rows and an order-free hash (hive glob)."""
    import duckdb

    con = duckdb.connect()
    out: dict = {"files": {}, "tables": {}}
    for f in sorted(tree.rglob("*")):
        rel = f.relative_to(tree).as_posix()
        if f.is_dir():
            out["files"][rel + "/"] = "dir"
        else:
            schema = con.execute(f"SELECT name, type, repetition_type, converted_type, logical_type "
                                 f"FROM parquet_schema('{f}')").fetchall()
            out["files"][rel] = [con.execute(f"SELECT count(*) FROM read_parquet('{f}', hive_partitioning = false)").fetchone()[0],
                                 [list(map(str, r)) for r in schema]]
    for t in sorted(p.name for p in tree.iterdir()):
        if not list((tree / t).rglob("*.parquet")):
            out["tables"][t] = [0]
            continue
        src = f"read_parquet('{tree / t}/**/*.parquet', hive_partitioning = true, union_by_name = true)"
        desc = con.execute(f"SELECT * FROM {src} LIMIT 0").description
        cols = [d[0] for d in desc]
        types = [str(d[1]) for d in desc]
        row = ", ".join(f'"{c}"' for c in cols if not c.endswith("_at"))
        n, h = con.execute(f"SELECT count(*), coalesce(sum(hash(struct_pack({row})) % 1000000007), 0) FROM {src}").fetchone()
        out["tables"][t] = [n, str(h), cols, types]
    con.close()
    return out


def content(cfg) -> dict:
    import duckdb
    from measure_publish import snapshot_content
    from measure_stages import fingerprint

    con = duckdb.connect(str(cfg.db_path), read_only=True)
    try:
        db = {rec["table"]: [int(rec["rows"]), int(rec["hash"])] for rec in fingerprint(con).to_dict("records")}
    finally:
        con.close()
    # the same, less what a clock, a file's identity (inode, mtime) or the code's digest sets in
    # the bookkeeping: form_build*.build_id (a time stamp), publish_delta_state.version (digests
    # the code) and .snapshot (the file's identity), publish_delta_files.ident
    con = duckdb.connect(str(cfg.db_path), read_only=True)
    try:
        stable_db = {}
        for t, cols in {"form_build": ["school_year", "period", "built_by", "forms", "school", "certified_only",
                                       "files", "cells_digest"],
                        "form_build_version": ["school_code", "version", "file_hash", "content_hash", "loaded_rows",
                                               "certified"],
                        "publish_delta_state": ["dir", "deltas"], "publish_delta_files": ["dir", "path"]}.items():
            row = ", ".join(f'"{c}"' for c in cols)
            stable_db[t] = [str(v) for v in con.execute(
                f"SELECT count(*), coalesce(sum(hash(struct_pack({row})) % 1000000007), 0) FROM {t}").fetchone()]
    finally:
        con.close()
    snap = cfg.published_dir / "edustat.duckdb"
    con = duckdb.connect(str(snap), read_only=True)
    try:  # the snapshot's rows without the columns a clock sets
        stable = {}
        for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1").fetchall():
            cols = [c for (c,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
                                              "AND schema_name = 'main' ORDER BY column_index", [t]).fetchall()
                    if not c.endswith("_at")]
            row = ", ".join(f'"{c}"' for c in cols)
            stable[t] = [str(v) for v in con.execute(
                f'SELECT count(*), coalesce(sum(hash(struct_pack({row})) % 1000000007), 0) FROM "{t}"').fetchone()]
    finally:
        con.close()
    return {"database": db, "database_bookkeeping": stable_db, "snapshot": snapshot_content(snap), "snapshot_stable": stable,
            "parquet": tree_content(cfg.published_dir / "parquet"),
            "published_files": sorted(p.name for p in cfg.published_dir.iterdir() if not p.name.startswith(".")),
            "published_text": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                               for p in sorted(cfg.published_dir.glob("*.md"))}}


def compare(a: Path, b: Path) -> int:
    x, y = json.loads(a.read_text()), json.loads(b.read_text())
    bad = 0
    for part in ("database", "database_bookkeeping", "snapshot", "snapshot_stable", "parquet", "published_files", "published_text"):
        xa, ya = x.get(part), y.get(part)
        if xa is None or ya is None:
            print(f"{part}: MISSING")
            bad += 1
            continue
        if xa == ya:
            print(f"{part}: IDENTICAL")
            continue
        # the snapshot's publish_info.published_at is left out by snapshot_content; rows.* keep every
        # other column: a difference there that is only in a clock column shows in snapshot_stable
        keys = sorted(k for k in set(xa) | set(ya) if xa.get(k) != ya.get(k)) if isinstance(xa, dict) else [part]
        if part == "database":  # compared less their clock / file identity / code digest columns below
            left = [k for k in keys if k in ("form_build", "form_build_version", "publish_delta_state",
                                              "publish_delta_files")]
            keys = [k for k in keys if k not in left]
            if left:
                print(f"{part}: differs in {', '.join(left)} (see database_bookkeeping)")
        print(f"{part}: {'DIFFERENT' if keys else 'bookkeeping only differs'}")
        for k in keys:
            print("  ", k, str(xa.get(k) if isinstance(xa, dict) else xa)[:300], "|",
                  str(ya.get(k) if isinstance(ya, dict) else ya)[:300])
        bad += bool(keys)
    return bad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--inbox", type=Path, default=Path("/work/bench-city/city/inbox"))
    ap.add_argument("--dir", type=Path, default=Path("/tmp/coldlp/data"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--profile", type=Path, help="cProfile of load and publish into <profile>-load.prof / -publish.prof")
    ap.add_argument("--queries", action="store_true", help="time every SQL statement of load and publish")
    ap.add_argument("--compare", nargs=2, type=Path)
    args = ap.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))

    repo = args.repo.resolve()
    sys.path.insert(0, str(repo))
    sys.path.insert(0, str(HERE))
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    salt = args.dir.parent / "salt"
    args.dir.parent.mkdir(parents=True, exist_ok=True)
    if not salt.exists():
        salt.write_text("1" * 64 + "\n")
        os.chmod(salt, 0o600)
    os.environ["EDUSTAT_SALT_FILE"] = str(salt)
    import great_expectations  # noqa: F401  (paid apart, as in a served run)

    import edustat
    assert Path(edustat.__file__).resolve().is_relative_to(repo), edustat.__file__
    from edustat import pipeline, store
    from edustat.config import load_config
    from edustat.incremental import publish_if_changed
    from edustat.publish import salt_for
    from edustat.submissions import discover

    shutil.rmtree(args.dir, ignore_errors=True)
    cfg = load_config(None, args.dir)
    y, p = "2022-2023", "dau_nam"
    results = pipeline.ingest_all(discover(args.inbox), cfg, y, p)
    frames = pipeline.assemble_all(results, cfg)
    issues = pipeline.validate_all(results, cfg, y, p, frames)

    queries: list = []
    timing = {"on": False}
    if args.queries:
        import duckdb

        class Timed:
            def __init__(self, c):
                self._c = c

            def __getattr__(self, n):
                return getattr(self._c, n)

            def execute(self, q, *a, **k):
                t0, c0 = time.perf_counter(), cpu()
                r = self._c.execute(q, *a, **k)
                queries.append((time.perf_counter() - t0, cpu() - c0, timing["on"], " ".join(str(q).split())[:150]))
                return r
        real = store.session

        import contextlib

        @contextlib.contextmanager
        def session(*a, **k):
            with real(*a, **k) as c:
                yield Timed(c)
        open_session = session
    else:
        open_session = store.session
    rows = {}
    for label in ("load", "publish"):
        timing["on"] = label
        pr = cProfile.Profile() if args.profile else None
        t, c = time.perf_counter(), cpu()
        with open_session(cfg.db_path, cfg.private_group) as con:
            if pr:
                pr.enable()
            if label == "load":
                outcome = pipeline.load_all(con, results, issues, cfg, y, p, "cold", frames=frames)
            else:
                publish_if_changed(con, cfg, salt_for(cfg))
            if pr:
                pr.disable()
        rows[label] = (time.perf_counter() - t, cpu() - c)
        if pr:
            pr.dump_stats(f"{args.profile}-{label}.prof")
        if label == "load":
            # the feedback and forms steps between them in a run: forms writes rpt_ tables that publish reads
            from edustat import formbuild
            with store.session(cfg.db_path, cfg.private_group) as con:
                formbuild.build(con, cfg, y, p, incremental=cfg.incremental)
    for w, cp, lab, q in sorted(queries, reverse=True)[:40]:
        print(f"Q {lab:<8}{w:6.3f} wall {cp:6.3f} cpu  {q}")
    for lab in ("load", "publish"):
        mine = [r for r in queries if r[2] == lab]
        print(f"{lab}: {len(mine)} statements, {sum(r[0] for r in mine):.2f} s wall, {sum(r[1] for r in mine):.2f} s cpu")
    print(f"load    wall {rows['load'][0]:.2f} cpu {rows['load'][1]:.2f}")
    print(f"publish wall {rows['publish'][0]:.2f} cpu {rows['publish'][1]:.2f}   load avg {os.getloadavg()[0]:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(content(cfg), default=str, sort_keys=True, indent=0))
        print("wrote", args.out)


if __name__ == "__main__":
    main()
