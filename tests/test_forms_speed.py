"""The faster forms stage (issue 12) computes what the slower one did: each entity's cells
from one projection + numpy sums equal the grouped FILTER aggregates, on the sample city and
on a copy of it damaged with NULLs and contradictions; a non-integer sum falls back to SQL;
a workbook rendered from per-scope values is byte-identical (XML parts) to one rendered from
the long cells; scripts/compare_forms.py finds a changed cell."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from edustat import reports as R
from edustat.golden import SAMPLE, build_sample

ROOT = Path(__file__).resolve().parents[1]
YEAR = SAMPLE["school_year"]


def _compare_module():
    spec = importlib.util.spec_from_file_location("compare_forms", ROOT / "scripts" / "compare_forms.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def damage_core(db: Path) -> None:
    """NULL conditions and flags, shifted ages, rooms: what FILTER treats as false / skips."""
    con = duckdb.connect(str(db))
    try:
        con.execute("update core_learners set grade = null, grade_number = null where hash(excel_row, school_code) % 7 = 0")
        con.execute("update core_learners set is_female = null, is_dtts = null where hash(excel_row, school_code) % 9 = 1")
        con.execute("update core_learners set age = age + 5, birth_date = null where hash(excel_row, school_code) % 11 = 2")
        con.execute("update core_staff set is_female = null, contract_bucket = null where hash(excel_row, school_code) % 5 = 3")
        con.execute("update core_rooms set permanent = null, temporary = coalesce(temporary, 0) + 2 "
                    "where hash(excel_row, school_code) % 3 = 1")
        con.execute("update core_classes set care_level = null where hash(excel_row, school_code) % 4 = 2")
    finally:
        con.close()


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    work = tmp_path_factory.mktemp("speed")
    files = build_sample(work)
    db = work / "data" / "curated" / "edustat.duckdb"
    damaged = work / "damaged.duckdb"
    shutil.copyfile(db, damaged)
    damage_core(damaged)
    return {"files": files, "db": db, "damaged": damaged, "work": work}


def _norm(long: pd.DataFrame | None) -> pd.DataFrame:
    cols = ["school_code", "grp", "row_code", "measure", "value"]
    if long is None or long.empty:
        return pd.DataFrame(columns=cols)
    out = long.assign(value=pd.to_numeric(long["value"]).astype("float64"), row_code=long["row_code"].astype("int64"),
                      school_code=long["school_code"].astype(str), grp=long["grp"].astype(str),
                      measure=long["measure"].astype(str))[cols]
    return out.sort_values(cols[:4]).reset_index(drop=True)


@pytest.mark.parametrize("which", ["db", "damaged"])
def test_projection_cells_equal_the_filtered_aggregates(sample, which):
    con = duckdb.connect(str(sample[which]))
    compared = 0
    try:
        for period in ("dau_nam", "cuoi_nam"):
            for code in R.list_forms(period):
                form = R.load_form(code)
                R.create_views(con, YEAR, period, form["level"], form["groups"])
                by_entity: dict[str, list] = {}
                for sheet, row in R.data_rows(form):
                    by_entity.setdefault(R._entity(row), []).append((sheet, row))
                for entity, rows in by_entity.items():
                    fast = R._entity_long(con, form, entity, rows)
                    assert fast is not None, (code, entity)  # every built-in sum is of integers
                    slow = R._entity_long_sql(con, form, entity, rows)
                    a, b = _norm(fast), _norm(slow)
                    pd.testing.assert_frame_equal(a, b, check_exact=True, obj=f"{code} {period} {entity}")
                    compared += len(a)
    finally:
        con.close()
    assert compared > 5_000


def test_a_non_integer_sum_is_computed_by_the_filtered_aggregates(sample):
    form = {"form_code": "x", "level": "TH", "groups": ["cong_lap", "tu_thuc"], "sheets": [{
        "name": "x", "columns": ["tong_so.tong", "cong_lap.tong", "tu_thuc.tong"],
        "rows": [{"code": 1, "label": "nửa số học sinh", "sum": "n_learners * 0.5", "entity": "class"},
                 {"code": 2, "label": "số học sinh", "sum": "n_learners", "entity": "class"}]}]}
    con = duckdb.connect(str(sample["db"]), read_only=True)
    try:
        R.create_views(con, YEAR, "dau_nam", "TH", form["groups"])
        rows = [(form["sheets"][0], r) for r in form["sheets"][0]["rows"]]
        assert R._entity_long(con, form, "class", rows) is None
        cells = R.compute_form(con, form, YEAR, "dau_nam")
    finally:
        con.close()
    city = cells[(cells["scope"] == "city") & (cells["column_key"] == "tong_so.tong")].set_index("row_code")["value"]
    assert city[2] > 0 and city[1] == city[2] * 0.5


def test_rendering_from_scope_values_is_byte_identical(sample, tmp_path):
    con = duckdb.connect(str(sample["db"]), read_only=True)
    try:
        form = R.load_form("02-TH-DN")
        cells = con.execute("select * from rpt_form_cell where school_year = ? and period = 'dau_nam' "
                            "and form_code = '02-TH-DN'", [YEAR]).df()
        checks = con.execute("select * from rpt_form_check where school_year = ? and period = 'dau_nam' "
                             "and form_code = '02-TH-DN'", [YEAR]).df()
    finally:
        con.close()
    cells["value"] = cells["value"].astype(object).where(cells["value"].notna(), None)
    scope = sorted(set(cells["scope"]) - {"city"})[0]
    header = R.ReportHeader(unit="Trường", recipient="Phòng GD&ĐT", school_year=YEAR, scope_label=scope)
    a = R.render_form(form, cells, checks, scope, tmp_path / "a" / "f.xlsx", header)
    b = R.render_form(form, None, checks[checks["scope"] == scope], scope, tmp_path / "b" / "f.xlsx", header,
                      values=R.scope_values(cells)[scope])
    cmp = _compare_module()
    assert cmp.compare_workbook(a, b) == []
    # the comparison sees a changed value
    changed = cells.copy()
    hit = (changed["scope"] == scope) & changed["value"].notna()
    changed.loc[changed.index[hit][0], "value"] = 12345.0
    c = R.render_form(form, changed, checks, scope, tmp_path / "c" / "f.xlsx", header)
    diffs = cmp.compare_workbook(a, c)
    assert any("12345" in d for d in diffs) and any("part xl/worksheets" in d for d in diffs)


def test_compare_script_proves_a_build_identical_and_sees_a_changed_cell(sample, tmp_path):
    cmp = _compare_module()
    reports = sample["work"] / "data" / "curated" / "reports"
    copy = tmp_path / "reports"
    shutil.copytree(reports, copy)
    db2 = tmp_path / "e.duckdb"
    shutil.copyfile(sample["db"], db2)
    assert cmp.compare_tables(sample["db"], db2) == []
    assert cmp.compare_reports(reports, copy)[0] == []
    con = duckdb.connect(str(db2))
    try:
        con.execute("update rpt_form_cell set value = value + 1 where scope = 'city' and row_code = 1 "
                    "and column_key = 'tong_so.tong'")
    finally:
        con.close()
    assert any("only in" in d for d in cmp.compare_tables(sample["db"], db2))


def _cells_digest_pandas(con, school_year: str, period: str, forms, scopes=None) -> str:
    """The digest as formbuild computed it before (pandas to_csv): builds recorded then hold it."""
    import hashlib

    forms = list(forms)
    if not forms:
        return hashlib.sha256(b"").hexdigest()
    df = con.execute("""select form_code, scope, row_code, column_key, value from rpt_form_cell
                        where school_year = ? and period = ? and form_code in (select unnest(?))
                        order by form_code, scope, row_code, column_key""", [school_year, period, forms]).df()
    if scopes is not None:
        df = df[df["scope"].isin(list(scopes))]
    text = df.to_csv(index=False, float_format="%.10g")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_the_cells_digest_built_by_duckdb_equals_the_pandas_csv_digest(sample, tmp_path):
    """formbuild.cells_digest builds the CSV text in DuckDB; builds recorded before hold the
    digest of pandas' to_csv text: a rebuild compares the two, so they must be the same text —
    on real cells, every scope filter, and codes/values that need quoting or are NaN/NULL."""
    import shutil

    from edustat import formbuild

    db = tmp_path / "d.duckdb"
    shutil.copy(sample["db"], db)
    con = duckdb.connect(str(db))
    try:
        year, period = con.execute("select school_year, period from rpt_form_cell limit 1").fetchone()
        forms = [r[0] for r in con.execute("select distinct form_code from rpt_form_cell order by 1").fetchall()]
        school = con.execute("select min(scope) from rpt_form_cell where scope <> 'city'").fetchone()[0]
        for scopes in (None, ["city"], ["city", school], []):
            got = formbuild.cells_digest(con, year, period, forms, scopes)
            assert got == _cells_digest_pandas(con, year, period, forms, scopes), scopes
        con.execute("""insert into rpt_form_cell (school_year, period, form_code, scope, row_code, column_key, value)
                       values ($1, $2, $3, 'city', NULL, 'a,b', 'nan'::double), ($1, $2, $3, 'ci"ty', 5, 'x' || chr(10) || 'y', NULL),
                              ($1, $2, $3, 'city', 7, 'k', 123456789012.25), ($1, $2, $3, 'city', 8, 'k', -0.0000001)""",
                    [year, period, forms[0]])
        before = formbuild.cells_digest(con, year, period, forms)
        assert before == _cells_digest_pandas(con, year, period, forms)
        con.execute("update rpt_form_cell set value = 42 where row_code = 8 and column_key = 'k'")
        assert formbuild.cells_digest(con, year, period, forms) != before
    finally:
        con.close()


def test_each_digest_line_quotes_a_code_as_it_always_did():
    """The digest's line text (formbuild._digest_line_sql), pinned: a code holding a comma, a
    quote, LF or CR is quoted (quotes doubled), any other is not; a NULL row code or value and
    NaN are empty; values as '%.10g'. Recorded digests were made so: the text must not move."""
    from edustat.formbuild import _digest_line_sql

    rows = [("f", "city", 1, "tong_so.tong", 3.0), ("f,1", 's"1', None, "a\nb", None), ("f", "c\rd", 2, "k", float("nan")),
            ("f", "x", 3, "plain", 123456789012.25), ("f", "x", 4, "k", -1e-7)]
    con = duckdb.connect()
    try:
        con.execute("create table rpt_form_cell (form_code varchar, scope varchar, row_code integer, column_key varchar, "
                    "value double)")
        con.executemany("insert into rpt_form_cell values (?, ?, ?, ?, ?)", rows)
        got = [r[0] for r in con.execute(f"select {_digest_line_sql()} from rpt_form_cell").fetchall()]
    finally:
        con.close()
    assert got == ["f,city,1,tong_so.tong,3", '"f,1","s""1",,"a\nb",', 'f,"c\rd",2,k,', "f,x,3,plain,1.23456789e+11",
                   "f,x,4,k,-1e-07"]
