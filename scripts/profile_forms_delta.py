"""Profile (and prove) the forms step of a run where ONE school changed, on a data dir already
loaded and built (e.g. a bench work dir): the data dir is copied (never changed), one school's
data is changed in the copy's DuckDB (a few learners' sex flipped — or, with --withdraw, the
school leaves core — and its version bumped, as a new file would), and the forms step of a run
(edustat.formbuild.build, incremental) is timed. With --compare, a second copy gets the same
change and a FULL build (every scope from scratch, into an empty reports dir), and
scripts/compare_forms.py compares the two: every stored cell and check, every workbook cell and
XML part.

    python scripts/profile_forms_delta.py DATA_DIR [--out DIR] [--school CODE] [--withdraw]
                                          [--compare] [--profile] [--top 30] [--repeat 1]

Prints wall and CPU seconds of the step (this process + its worker processes) and the load.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def change_school(con, school_year: str, period: str, school: str | None, withdraw: bool = False) -> str:
    """Change one school's data as a new version of its file would: flip the sex of its first
    three enrolled learners (or, `withdraw`, take the school out of core) and bump its version."""
    if school is None:
        school = con.execute("""select school_code from core_learners where school_year = ? and period = ?
                                group by 1 order by count(*) desc, 1 limit 1""", [school_year, period]).fetchone()[0]
    if withdraw:
        for t in ("school", "classes", "learners", "staff", "rooms"):
            con.execute(f"delete from core_{t} where school_year = ? and period = ? and school_code = ?",
                        [school_year, period, school])
        con.execute("update submission set in_core = false where school_year = ? and period = ? and school_code = ?",
                    [school_year, period, school])
        return school
    con.execute("""update core_learners set is_female = not coalesce(is_female, false)
                   where school_year = ? and period = ? and school_code = ? and excel_row in (
                       select excel_row from core_learners where school_year = ? and period = ? and school_code = ?
                       and is_enrolled order by excel_row limit 3)""",
                [school_year, period, school, school_year, period, school])
    con.execute("""update submission set version = version + 1 where school_year = ? and period = ?
                   and school_code = ? and in_core""", [school_year, period, school])
    return school


def copy_data(src: Path, dst: Path, reports: bool = True) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    (dst / "curated").mkdir(parents=True)
    shutil.copyfile(src / "curated" / "edustat.duckdb", dst / "curated" / "edustat.duckdb")
    if reports and (src / "curated" / "reports").exists():
        shutil.copytree(src / "curated" / "reports", dst / "curated" / "reports")
    import duckdb

    # the scopes done record their files by absolute path: point them at the copy
    con = duckdb.connect(str(dst / "curated" / "edustat.duckdb"))
    try:
        con.execute("""update incremental_output set files = regexp_replace(files, '"[^"]*/curated/reports/',
                       '"' || ? || '/curated/reports/', 'g') where kind like 'form%'""", [str(dst.resolve())])
    finally:
        con.close()


def run(data: Path, args, incremental: bool, label: str) -> None:
    import duckdb

    from edustat import formbuild
    from edustat.config import load_config

    import dataclasses

    cfg = dataclasses.replace(load_config(data_dir=data), workers=args.workers)
    con = duckdb.connect(str(cfg.db_path))
    school = change_school(con, args.year, args.period, args.school, args.withdraw)
    con.execute("checkpoint")
    prof = cProfile.Profile()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t, c = time.perf_counter(), time.process_time()
    if args.profile:
        prof.enable()
    result = formbuild.build(con, cfg, args.year, args.period, incremental=incremental)
    if args.profile:
        prof.disable()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (child.ru_utime + child.ru_stime) - (before.ru_utime + before.ru_stime)
    con.close()
    print(f"{label}: school {school} {'withdrawn' if args.withdraw else 'changed'}; {len(result.files)} files, "
          f"scopes {getattr(result, 'scopes', None) and len(result.scopes)}; wall {wall:.2f} s, CPU {cpu:.2f} s "
          f"+ workers {child_cpu:.2f} s (load {os.getloadavg()[0]:.2f}); delta: {getattr(result, 'delta', None)}; "
          f"kept as they were: {getattr(result, 'kept', None)}",
          flush=True)
    if args.profile:
        for key in ("cumulative", "tottime"):
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats(key).print_stats(args.top)
            print(s.getvalue())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, help="a loaded data dir (curated/edustat.duckdb, curated/reports)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "forms-delta")
    ap.add_argument("--school", default=None, help="the school to change (default: the largest)")
    ap.add_argument("--withdraw", action="store_true", help="take the school out of core instead")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--year", default="2022-2023")
    ap.add_argument("--period", default="dau_nam")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--prime", action="store_true",
                    help="first bring the copy's forms up to date with this code (an incremental build with "
                         "no change, in `OUT/base`), and start every measured run from that")
    args = ap.parse_args()
    if args.prime:
        import dataclasses

        import duckdb

        from edustat import formbuild
        from edustat.config import load_config

        copy_data(args.data, args.out / "base")
        cfg = dataclasses.replace(load_config(data_dir=args.out / "base"), workers=args.workers)
        con = duckdb.connect(str(cfg.db_path))
        formbuild.build(con, cfg, args.year, args.period, incremental=True)
        con.close()
        args.data = args.out / "base"
    for i in range(args.repeat):
        copy_data(args.data, args.out / "inc")
        run(args.out / "inc", args, True, f"incremental #{i + 1}")
    if not args.compare:
        return 0
    copy_data(args.data, args.out / "full", reports=False)
    prof, args.profile = args.profile, False
    run(args.out / "full", args, False, "full")
    args.profile = prof
    from scripts.compare_forms import main as compare

    sys.argv = ["compare_forms", *(str(p) for p in (
        args.out / "full" / "curated" / "edustat.duckdb", args.out / "full" / "curated" / "reports",
        args.out / "inc" / "curated" / "edustat.duckdb", args.out / "inc" / "curated" / "reports"))]
    return compare()


if __name__ == "__main__":
    sys.exit(main())
