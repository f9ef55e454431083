"""The country's data as a Parquet lake partitioned by year / period / province, queried by
DuckDB (docs/SCALE.md): built here from real edustat runs on small synthetic cities of two
provinces, then queried, and the lake's answer checked against each province's own DuckDB.

    python scripts/lake_demo.py [--dir build/lake-demo] [--schools 3]

Each province's office runs edustat as today; its *published* snapshot (pseudonymised: no names,
personal IDs or learner codes) is what goes to the lake:
    lake/<table>/year=<school_year>/period=<period>/province=<code>/part-0.parquet
One province's upload replaces only its own partition directories, so uploads never conflict.
Prints the files, the query, its plan and its result; exits 1 on a mismatch.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

PROVINCES = [("74", "718"), ("01", "001")]  # Bình Dương / Thủ Dầu Một; Hà Nội / Ba Đình
TABLES = ["core_school", "core_classes", "core_learners", "core_staff"]
YEAR, PERIOD = "2022-2023", "dau_nam"

QUERY = """
-- learners by province, level and sex, one collection; the WHERE on partition columns means
-- DuckDB opens only year=2022-2023/period=dau_nam/* files (the rest of the country is skipped)
SELECT province, level, is_female, count(*) AS learners, count(DISTINCT school_code) AS schools
FROM read_parquet('{lake}/core_learners/*/*/*/*.parquet', hive_partitioning = true)
WHERE year = '{year}' AND period = '{period}' AND is_enrolled
GROUP BY ALL ORDER BY ALL
"""


def run_office(prov: str, district: str, base: Path, schools: int) -> Path:
    """One province office's edustat run (read → … → publish, no forms): its published snapshot."""
    from edustat import pipeline, store
    from edustat.submissions import discover
    from edustat.config import Config
    from edustat.publish import load_or_create_salt, publish
    from edustat.synth import generate_city

    inbox, data = base / f"inbox-{prov}", base / f"data-{prov}"
    generate_city(inbox, schools=schools, seed=int(prov), school_year=YEAR, period=PERIOD, province_code=prov,
                  district_code=district)
    cfg = Config(data_dir=data, workers=1)
    results = pipeline.ingest_all(discover(inbox), cfg, YEAR, PERIOD, 1)
    frames = pipeline.assemble_all(results, cfg)
    issues = pipeline.validate_all(results, cfg, YEAR, PERIOD, frames)
    con = store.connect(cfg.db_path)
    try:
        pipeline.load_all(con, results, issues, cfg, YEAR, PERIOD, f"lake-{prov}", frames=frames)
        publish(con, cfg.published_dir, salt=load_or_create_salt(cfg.salt_path))
    finally:
        con.close()
    return cfg.published_dir / "edustat.duckdb"


def upload(snapshot: Path, prov: str, lake: Path) -> None:
    """A province's snapshot → its partitions of the lake (replacing only its own)."""
    import duckdb

    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        for t in TABLES:
            for (year, period) in con.execute(f"SELECT DISTINCT school_year, period FROM {t}").fetchall():
                part = lake / t / f"year={year}" / f"period={period}" / f"province={prov}"
                tmp = part.with_name(part.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                con.execute(f"COPY (SELECT * EXCLUDE (period) FROM {t} WHERE school_year = ? AND period = ?) "
                            f"TO '{tmp / 'part-0.parquet'}' (FORMAT parquet, COMPRESSION zstd)", [year, period])
                shutil.rmtree(part, ignore_errors=True)
                os.replace(tmp, part)  # readers see the old partition or the new one
    finally:
        con.close()


def main() -> None:
    import duckdb

    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=ROOT / "build" / "lake-demo")
    ap.add_argument("--schools", type=int, default=3)
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    lake = args.dir / "lake"
    expected = {}
    for prov, district in PROVINCES:
        t = time.perf_counter()
        snap = run_office(prov, district, args.dir, args.schools)
        upload(snap, prov, lake)
        con = duckdb.connect(str(snap), read_only=True)
        expected[prov] = con.execute("SELECT count(*) FROM core_learners WHERE is_enrolled").fetchone()[0]
        con.close()
        print(f"province {prov}: edustat run + upload in {time.perf_counter() - t:.1f} s, {expected[prov]:,} enrolled learners")
    print("\nlake files:")
    for p in sorted(lake.rglob("*.parquet")):
        print(f"  {p.relative_to(args.dir)}  {p.stat().st_size:,} B")
    q = QUERY.format(lake=lake, year=YEAR, period=PERIOD)
    print(q)
    con = duckdb.connect()
    rows = con.execute(q).fetchall()
    for r in rows:
        print("  ", r)
    plan = con.execute("EXPLAIN " + q).fetchall()[0][1]
    print("\nplan (year / period / province are Hive partition columns, read from the paths; DuckDB "
          "prunes files on filters over them before opening any):")
    print("\n".join(line for line in plan.splitlines() if line.strip())[:3000])
    got = {}
    for prov, level, fem, n, s in rows:
        got[prov] = got.get(prov, 0) + n
    ok = got == {str(k): v for k, v in expected.items()}
    print(f"\nlake vs each province's own DuckDB: {got} vs {expected} → {'same' if ok else 'MISMATCH'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
