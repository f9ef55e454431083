"""Prove two builds of the report forms identical: the stored cells and checks (DuckDB tables
rpt_form_cell, rpt_form_check) row for row, and every workbook: each XML part of the .xlsx byte
for byte (so the layout, formats and print set-up too), except docProps/core.xml, which holds the
time the file was written, and, where a part differs, each cell's value read back by openpyxl
(equal parts hold equal values) to name the cells that differ.

    python scripts/compare_forms.py REF_DB REF_REPORTS NEW_DB NEW_REPORTS

Exit status 0 when there is no difference; otherwise the differences are listed (at most 20 of
each kind) and the status is 1.
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABLES = {
    "rpt_form_cell": "school_year, period, form_code, scope, row_code, column_key, value",
    "rpt_form_check": "school_year, period, form_code, scope, check_name, row_code, column_key, expected, actual, ok, message",
}
VOLATILE = {"docProps/core.xml"}  # creation/modification time


def compare_tables(ref_db: Path, new_db: Path) -> list[str]:
    """Rows of each table in one database and not the other (as multisets: EXCEPT ALL)."""
    import duckdb

    out = []
    con = duckdb.connect()
    try:
        con.execute(f"attach '{ref_db}' as ref (read_only)")
        con.execute(f"attach '{new_db}' as new (read_only)")
        for table, cols in TABLES.items():
            n_ref = con.execute(f"select count(*) from ref.{table}").fetchone()[0]
            n_new = con.execute(f"select count(*) from new.{table}").fetchone()[0]
            if n_ref != n_new:
                out.append(f"{table}: {n_ref} rows in ref, {n_new} in new")
            for a, b in (("ref", "new"), ("new", "ref")):
                rows = con.execute(f"select {cols} from {a}.{table} except all select {cols} from {b}.{table} "
                                   f"order by all limit 20").fetchall()
                out += [f"{table}: only in {a}: {r}" for r in rows]
            print(f"{table}: {n_ref:,} rows in ref, {n_new:,} in new")
        # the digest each database's last build recorded (edustat.formbuild: cached blocks or not)
        have = [con.execute(f"select count(*) from duckdb_tables() where database_name = '{d}' "
                            f"and table_name = 'form_build'").fetchone()[0] for d in ("ref", "new")]
        if all(have):
            last = [con.execute(f"select cells_digest from {d}.form_build order by built_at desc, build_id desc "
                                f"limit 1").fetchone() for d in ("ref", "new")]
            if last[0] and last[1]:
                print(f"last build's cells digest: ref {last[0][0][:12]}…, new {last[1][0][:12]}…")
                if last[0][0] != last[1][0]:
                    out.append(f"form_build.cells_digest: {last[0][0]} in ref, {last[1][0]} in new")
    finally:
        con.close()
    return out


def sheet_values(path: Path) -> dict[str, dict[tuple[int, int], object]]:
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=False)
    try:
        return {ws.title: {(c.row, c.column): c.value for row in ws.iter_rows() for c in row
                           if getattr(c, "value", None) is not None}
                for ws in wb.worksheets}
    finally:
        wb.close()


def compare_parts(ref: Path, new: Path) -> list[str]:
    """Each XML part byte for byte, but VOLATILE."""
    out = []
    with zipfile.ZipFile(ref) as za, zipfile.ZipFile(new) as zb:
        pa, pb = set(za.namelist()), set(zb.namelist())
        if pa != pb:
            out.append(f"{ref.name}: parts {sorted(pa ^ pb)} in one file only")
        for part in sorted((pa & pb) - VOLATILE):
            if za.read(part) != zb.read(part):
                out.append(f"{ref.name}: part {part} differs")
    return out


def compare_values(a: dict, b: dict, name: str) -> list[str]:
    out = []
    if list(a) != list(b):
        out.append(f"{name}: sheets {list(a)} ≠ {list(b)}")
    for sheet in a.keys() & b.keys():
        for key in sorted(a[sheet].keys() | b[sheet].keys()):
            va, vb = a[sheet].get(key), b[sheet].get(key)
            if va != vb or type(va) is not type(vb):
                out.append(f"{name}!{sheet} R{key[0]}C{key[1]}: {va!r} ≠ {vb!r}")
    return out


def compare_workbook(ref: Path, new: Path, ref_values: dict | None = None) -> list[str]:
    """The cell values (openpyxl) and the parts. Cell values are a function of the parts but
    VOLATILE (the sheets, shared strings and workbook parts), so two workbooks without a part
    that differs hold the same values: those are read only when a part differs, to say which
    cells do."""
    parts = compare_parts(ref, new)
    if not parts:
        return []
    a = ref_values if ref_values is not None else sheet_values(ref)
    return compare_values(a, sheet_values(new), ref.name) + parts


def compare_reports(ref_dir: Path, new_dir: Path) -> tuple[list[str], int, int]:
    ref = {p.relative_to(ref_dir): p for p in Path(ref_dir).rglob("*.xlsx")}
    new = {p.relative_to(new_dir): p for p in Path(new_dir).rglob("*.xlsx")}
    out = [f"only in ref: {p}" for p in sorted(ref.keys() - new.keys())]
    out += [f"only in new: {p}" for p in sorted(new.keys() - ref.keys())]
    cells = 0
    for rel in sorted(ref.keys() & new.keys()):
        values = sheet_values(ref[rel])  # read once: the count, and the comparison if a part differs
        out += compare_workbook(ref[rel], new[rel], values)
        cells += sum(len(v) for v in values.values())
    return out, len(ref.keys() & new.keys()), cells


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__)
        return 2
    ref_db, ref_reports, new_db, new_reports = map(Path, sys.argv[1:])
    diffs = compare_tables(ref_db, new_db)
    wb_diffs, n, cells = compare_reports(ref_reports, new_reports)
    diffs += wb_diffs
    print(f"workbooks compared: {n} ({cells:,} non-empty cells, every XML part but docProps/core.xml)")
    for d in diffs[:200]:
        print("DIFF", d)
    print("identical" if not diffs else f"{len(diffs)} differences")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
