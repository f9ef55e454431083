"""The validate step's issues with ONE school changed, warm (per-file cache) and cold, of any
checkout, and whether two such results are identical (issue 12):

    python scripts/compare_validate_one.py run INBOX --work /tmp/me-cmp --out A.pkl [--repo /work/main]
    python scripts/compare_validate_one.py compare A.pkl B.pkl

`run` copies INBOX to WORK/inbox (fresh), validates it once with the cache on (fills it),
re-sends one school (scripts/bench.change_one_school), reads and casts as a run does, then
validates warm (cache on) and cold (cache off) and pickles both issue frames. `compare` checks
every frame of A against every frame of B and the warm against the cold within each: same
columns, dtypes, index, order and values, and the same Python type in every object cell (None
is not NaN). Exit 1 on any difference.
"""
from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def run(inbox: Path, work: Path, out: Path, repo: Path, year: str, period: str) -> None:
    sys.path[:0] = [str(repo), str(repo / "scripts")]
    import bench
    from edustat import pipeline
    from edustat.config import Config
    from edustat.submissions import discover

    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(inbox, work / "inbox", ignore=shutil.ignore_patterns(".params", "manifest.json"))
    cfg = Config(data_dir=work / "data", workers=2, incremental=True)

    def read_and_cast(c):
        results = pipeline.ingest_all(discover(work / "inbox"), c, year, period, 2)
        return results, pipeline.assemble_all(results, c)

    results, frames = read_and_cast(cfg)
    pipeline.validate_all(results, cfg, year, period, frames)
    changed = bench.change_one_school(work / "inbox")
    results, frames = read_and_cast(cfg)
    warm = pipeline.validate_all(results, cfg, year, period, frames)
    cold_cfg = Config(data_dir=work / "data-cold", workers=2, incremental=False)
    results, frames = read_and_cast(cold_cfg)
    cold = pipeline.validate_all(results, cold_cfg, year, period, frames)
    out.write_bytes(pickle.dumps({"repo": str(repo), "changed": changed, "warm": warm, "cold": cold}))
    print(f"{repo}: changed {changed}; warm {len(warm):,} issues, cold {len(cold):,}")


def same(a, b) -> str | None:
    import pandas as pd

    if list(a.columns) != list(b.columns):
        return "columns differ"
    if list(a.dtypes.astype(str)) != list(b.dtypes.astype(str)):
        return f"dtypes differ: {list(a.dtypes.astype(str))} vs {list(b.dtypes.astype(str))}"
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True, check_dtype=True, check_index_type=True,
                                      check_column_type=True)
    except AssertionError as e:
        return str(e)[:500]
    for col in a.columns:
        if a[col].dtype == object and [type(v) for v in a[col]] != [type(v) for v in b[col]]:
            return f"cell types differ in {col}"
    return None


def _norm(frame, changed: str):
    """The changed file's bytes differ run to run (openpyxl saves a time): its hash is masked."""
    out = frame.copy()
    out.loc[out["file_name"] == changed, "file_hash"] = "<changed file>"
    return out


def _sorted(frame):
    order = frame.astype(str).sort_values(list(frame.columns), kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def compare(pa: Path, pb: Path) -> int:
    """A against B exactly (row order included); warm against cold as sorted rows (a cold
    validation orders the row issues of all files otherwise than file by file, on main too)."""
    A, B = pickle.loads(pa.read_bytes()), pickle.loads(pb.read_bytes())
    for X in (A, B):
        X["warm"], X["cold"] = _norm(X["warm"], X["changed"]), _norm(X["cold"], X["changed"])
    for X in (A, B):
        X["warm sorted"], X["cold sorted"] = _sorted(X["warm"]), _sorted(X["cold"])
    bad = 0
    for (na, fa), (nb, fb) in [((f"A.{k}", A[k]), (f"B.{k}", B[k])) for k in ("warm", "cold")] + [
            (("A.warm sorted", A["warm sorted"]), ("A.cold sorted", A["cold sorted"])),
            (("B.warm sorted", B["warm sorted"]), ("B.cold sorted", B["cold sorted"]))]:
        why = same(fa, fb)
        print(f"{na} vs {nb}: {'identical' if why is None else 'DIFFERENT: ' + why} ({len(fa):,} rows)")
        bad += why is not None
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("inbox", type=Path)
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    r.add_argument("--year", default="2022-2023")
    r.add_argument("--period", default="dau_nam")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.inbox, args.work, args.out, args.repo.resolve(), args.year, args.period)
    else:
        sys.exit(compare(args.a, args.b))


if __name__ == "__main__":
    main()
