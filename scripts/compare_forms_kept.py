"""Prove that keeping a form none of whose schools changed (edustat.formdelta.unchanged_city)
changes nothing a run writes or reports: on copies of a data dir whose forms are up to date
(e.g. `scripts/profile_forms_delta.py DATA --prime` leaves one in OUT/base), each scenario
changes ONE school the same way in two copies, then runs the forms step of a run
(edustat.formbuild.build, incremental) in each: "ref" with keeping disabled (every form summed,
checked, stored and its city workbook rendered again, as before), "new" as the code does it.
Compared: the result (forms, files, cells, checks, failed checks, scopes), every row of
rpt_form_cell, rpt_form_check (and every workbook, XML part by part: scripts/compare_forms.py),
form_scope_stored, form_cell_block, incremental_output's form scopes, and the recorded build
(form_build: forms, files, digest, ...; its versions and excluded rows).

    python scripts/compare_forms_kept.py DATA_DIR [--out DIR] [--only a,b] [--year Y] [--period P]

Exit status 0 when every scenario is identical and kept the forms expected.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.profile_forms_delta import copy_data  # noqa: E402


def _bump(con, y, p, school):
    con.execute("update submission set version = version + 1 where school_year = ? and period = ? and school_code = ? "
                "and in_core", [y, p, school])


def _flip(con, y, p, school):
    con.execute("""update core_learners set is_female = not coalesce(is_female, false)
                   where school_year = ? and period = ? and school_code = ? and excel_row in (
                       select excel_row from core_learners where school_year = ? and period = ? and school_code = ?
                       and is_enrolled order by excel_row limit 3)""", [y, p, school, y, p, school])
    _bump(con, y, p, school)


def _levels(con, y, p, school, levels):
    con.execute("update core_school set levels = ? where school_year = ? and period = ? and school_code = ?",
                [levels, y, p, school])
    _bump(con, y, p, school)


def _withdraw(con, y, p, school):
    for t in ("school", "classes", "learners", "staff", "rooms"):
        con.execute(f"delete from core_{t} where school_year = ? and period = ? and school_code = ?", [y, p, school])
    con.execute("update submission set in_core = false where school_year = ? and period = ? and school_code = ?",
                [y, p, school])


def _row_level(table, where):
    def change(con, y, p, school, level):
        con.execute(f"""update core_{table} set level = ? where school_year = ? and period = ? and school_code = ?
                        and excel_row = (select min(excel_row) from core_{table} where school_year = ? and period = ?
                                         and school_code = ? and {where})""", [level, y, p, school, y, p, school])
        _bump(con, y, p, school)
    return change


def _pick(con, y, p, levels):
    return con.execute("""select school_code from core_school s where school_year = ? and period = ? and levels = ?
                          order by (select count(*) from core_learners l where l.school_code = s.school_code) desc,
                          school_code limit 1""", [y, p, levels]).fetchone()[0]


# name → (school's levels, change, expected kept forms (level codes))
SCENARIOS = {
    "thcs": ("THCS", _flip, {"MN", "TH"}),
    "th": ("TH", _flip, {"MN", "THCS"}),
    "mn": ("MN", _flip, {"TH", "THCS"}),
    "multi": ("TH,THCS", _flip, {"MN"}),
    "enters_th": ("THCS", lambda c, y, p, s: _levels(c, y, p, s, "TH,THCS"), {"MN"}),
    "leaves_thcs": ("TH,THCS", lambda c, y, p, s: _levels(c, y, p, s, "TH"), {"MN"}),
    "withdrawn": ("THCS", _withdraw, {"MN", "TH"}),
    # a lower-secondary school's learner recorded at primary level: not on any form's cells of the
    # school's (it declares THCS only), but the primary form's reconciliation counts it
    "th_learner_in_thcs": ("THCS", lambda c, y, p, s: _row_level("learners", "is_enrolled")(c, y, p, s, "TH"), {"MN"}),
    # a primary school's staff member at lower-secondary level: the THCS form's reconciliation
    "thcs_staff_in_th": ("TH", lambda c, y, p, s: _row_level("staff", "is_active")(c, y, p, s, "THCS"), {"MN"}),
    # a primary school's class at preschool level: the MN form's reconciliation counts classes
    "mn_class_in_th": ("TH", lambda c, y, p, s: _row_level("classes", "true")(c, y, p, s, "MN"), {"THCS"}),
}


def build(data: Path, args, keep: bool):
    import duckdb

    from edustat import formbuild, formdelta
    from edustat.config import load_config

    cfg = dataclasses.replace(load_config(data_dir=data), workers=args.workers)
    con = duckdb.connect(str(cfg.db_path))
    saved = formdelta.unchanged_city
    if not keep:
        formdelta.unchanged_city = lambda *a, **k: None
    try:
        t = time.perf_counter()
        result = formbuild.build(con, cfg, args.year, args.period, incremental=True)
        wall = time.perf_counter() - t
    finally:
        formdelta.unchanged_city = saved
        con.close()
    return result, wall


def compare_db(ref: Path, new: Path, ref_dir: Path, new_dir: Path, year: str, period: str) -> list[str]:
    import duckdb

    con = duckdb.connect()
    out = []
    try:
        con.execute(f"attach '{ref}' as ref (read_only)")
        con.execute(f"attach '{new}' as new (read_only)")
        last = {d: con.execute(f"select build_id from {d}.form_build order by built_at desc, build_id desc limit 1")
                .fetchone()[0] for d in ("ref", "new")}
        queries = {
            "form_scope_stored": "select * from {d}.form_scope_stored",
            "form_cell_block": "select * from {d}.form_cell_block",
            "incremental_output (form scopes)": f"""select school_year, period, kind, key, fingerprint,
                replace(files, '{{root}}', '') from {{d}}.incremental_output where kind = 'form'""",
            "form_build (last)": f"""select school_year, period, forms, school, certified_only, cells_digest,
                list_transform(files, lambda f: replace(f, '{{root}}', '')) from {{d}}.form_build where build_id = '{{last}}'""",
            "form_build_version (last)": "select * exclude (build_id) from {d}.form_build_version where build_id = '{last}'",
            "form_build_excluded (last)": "select * exclude (build_id) from {d}.form_build_excluded where build_id = '{last}'",
            "builds": "select count(*) from {d}.form_build",
        }
        roots = {"ref": str(ref_dir.resolve()), "new": str(new_dir.resolve())}
        for name, q in queries.items():
            qa, qb = (q.format(d=d, last=last[d], root=roots[d]) for d in ("ref", "new"))
            for a, b, qx, qy in (("ref", "new", qa, qb), ("new", "ref", qb, qa)):
                rows = con.execute(f"select * from ({qx}) except all select * from ({qy}) limit 5").fetchall()
                out += [f"{name}: only in {a}: {r}" for r in rows]
    finally:
        con.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path, help="a data dir whose forms are up to date with this code")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "forms-kept")
    ap.add_argument("--only", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--year", default="2022-2023")
    ap.add_argument("--period", default="dau_nam")
    args = ap.parse_args()
    import duckdb

    from scripts.compare_forms import compare_reports, compare_tables

    level_of = {"01": "MN", "02": "TH", "03": "THCS"}
    bad = 0
    for name in (args.only.split(",") if args.only else SCENARIOS):
        levels, change, expect = SCENARIOS[name]
        results = {}
        for side in ("ref", "new"):
            data = args.out / side
            copy_data(args.data, data)
            con = duckdb.connect(str(data / "curated" / "edustat.duckdb"))
            school = _pick(con, args.year, args.period, levels)
            change(con, args.year, args.period, school)
            con.close()
            results[side] = build(data, args, keep=side == "new")
        (ra, wa), (rb, wb) = results["ref"], results["new"]
        diffs = []
        root = {s: str((args.out / s).resolve()) for s in ("ref", "new")}
        for attr in ("forms", "cells", "checks", "failed_checks", "scopes", "skipped"):
            if getattr(ra, attr, None) != getattr(rb, attr, None):
                diffs.append(f"result.{attr}: {getattr(ra, attr, None)} ≠ {getattr(rb, attr, None)}")
        fa = [str(p).replace(root["ref"], "") for p in ra.files]
        fb = [str(p).replace(root["new"], "") for p in rb.files]
        if fa != fb:
            diffs.append(f"result.files: {fa} ≠ {fb}")
        diffs += compare_tables(args.out / "ref" / "curated" / "edustat.duckdb", args.out / "new" / "curated" / "edustat.duckdb")
        diffs += compare_db(args.out / "ref" / "curated" / "edustat.duckdb", args.out / "new" / "curated" / "edustat.duckdb",
                            args.out / "ref", args.out / "new", args.year, args.period)
        wdiffs, n, _ = compare_reports(args.out / "ref" / "curated" / "reports", args.out / "new" / "curated" / "reports")
        diffs += wdiffs
        kept = {level_of[k[:2]] for k in getattr(rb, "kept", [])}
        ok = not diffs and kept == expect
        bad += not ok
        print(f"[{name}] school {school} ({levels}): kept {sorted(getattr(rb, 'kept', []))} (expected levels "
              f"{sorted(expect)}); ref {wa:.2f} s, new {wb:.2f} s; {n} workbooks; "
              f"{'IDENTICAL' if not diffs else f'{len(diffs)} DIFFERENCES'}{'' if kept == expect else ' — KEPT ≠ EXPECTED'}",
              flush=True)
        for d in diffs[:30]:
            print("   DIFF", d)
    print("all identical" if not bad else f"{bad} scenarios differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
