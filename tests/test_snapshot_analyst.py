"""An analyst with the snapshot alone: a small synthetic city is collected and published, the
snapshot file is copied to an empty folder, and the README's three example queries are run
there through `edustat sql` (the real CLI, read-only) and checked against the officer's
database. Labels, comments and the data dictionary come from the snapshot, not the repo."""
from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from edustat import store
from edustat.config import load_config
from edustat.pipeline import run_collection
from edustat.publish import load_or_create_salt, publish
from edustat.synth import generate_city

ROOT = Path(__file__).resolve().parents[1]
YEAR, PERIOD = "2022-2023", "cuoi_nam"
EDUSTAT = str(Path(sys.executable).parent / "edustat")


def readme_queries() -> dict[str, str]:
    """The ```sql blocks of the README's analyst section, keyed by the caption above each."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## For analysts"):]
    section = section[:section.index("\n## ", 4)]
    return {m.group(1).strip(): m.group(2) for m in re.finditer(r"\n([^\n`]+):\n\n```sql\n(.*?)```", section, re.S)}


@pytest.fixture(scope="module")
def analyst(tmp_path_factory):
    work = tmp_path_factory.mktemp("analyst-city")
    inbox = work / "inbox"
    generate_city(inbox, schools=4, seed=11, school_year=YEAR, period=PERIOD)
    cfg = load_config(None, work / "data")
    with store.session(cfg.db_path) as con:
        run_collection(con, sorted(p for p in inbox.glob("*.xlsx")), cfg, YEAR, PERIOD, workers=1)
        publish(con, cfg.published_dir, salt=load_or_create_salt(cfg.salt_path))
    alone = tmp_path_factory.mktemp("analyst-desk")  # nothing but what was published
    shutil.copy(cfg.published_dir / "edustat.duckdb", alone / "edustat.duckdb")
    shutil.copy(cfg.published_dir / "DATA_DICTIONARY.md", alone / "DATA_DICTIONARY.md")
    return {"db": cfg.db_path, "snapshot": alone / "edustat.duckdb", "dir": alone}


def run_sql(analyst, query: str) -> list[dict]:
    proc = subprocess.run([EDUSTAT, "sql", "--snapshot", "edustat.duckdb", "--csv", "-c", query], cwd=analyst["dir"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return list(csv.DictReader(io.StringIO(proc.stdout)))


def curated(analyst, sql: str, params=()) -> list[tuple]:
    con = duckdb.connect(str(analyst["db"]), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def test_readme_has_the_three_queries():
    assert set(readme_queries()) == {"Learners by ward × grade × sex",
                                     "Share of teachers at or above the training standard, by school",
                                     "Dropouts by school and reason"}


def test_learners_by_ward_grade_sex(analyst):
    rows = run_sql(analyst, readme_queries()["Learners by ward × grade × sex"])
    total = curated(analyst, "select count(*) from core_learners where school_year = ? and period = ? and is_enrolled",
                    [YEAR, PERIOD])[0][0]
    assert total > 0 and sum(int(r["learners"]) for r in rows) == total
    assert {r["sex"] for r in rows} <= {"Nam", "Nữ"} and {r["sex"] for r in rows} == {"Nam", "Nữ"}
    assert all(r["ward"] for r in rows), "every school's ward/commune has its name"
    assert all(r["grade_label"].startswith(("Khối", "Nhóm", "Lớp", "Nhà", "Mẫu")) for r in rows), {r["grade_label"] for r in rows}
    # the ward names are the code list's, for the schools' commune codes
    communes = {c for (c,) in curated(analyst, "select distinct commune_code from core_school where school_year = ? and period = ?",
                                      [YEAR, PERIOD])}
    con = duckdb.connect(str(analyst["snapshot"]), read_only=True)
    try:
        names = {n for (n,) in con.execute(f"select label from dim_xa where code in ({','.join('?' * len(communes))})",
                                           sorted(communes)).fetchall()}
    finally:
        con.close()
    assert {r["ward"] for r in rows} == names


def test_teachers_at_or_above_standard_by_school(analyst):
    rows = run_sql(analyst, readme_queries()["Share of teachers at or above the training standard, by school"])
    expected = dict(curated(analyst, """
        select school_code, count(*) from core_staff
        where school_year = ? and period = ? and role = 'giao_vien' and is_active group by 1""", [YEAR, PERIOD]))
    assert {r["school_code"]: int(r["teachers"]) for r in rows} == expected
    for r in rows:
        assert 0 <= int(r["at_or_above_standard"]) <= int(r["teachers"])
        assert abs(float(r["pct"]) - 100 * int(r["at_or_above_standard"]) / int(r["teachers"])) < 0.06
        assert r["school_name"]


def test_dropouts_by_school_and_reason(analyst):
    rows = run_sql(analyst, readme_queries()["Dropouts by school and reason"])
    total = curated(analyst, "select count(*) from core_learners where school_year = ? and period = ? and status in ('05', '09', '12')",
                    [YEAR, PERIOD])[0][0]
    assert total > 0, "the synthetic city has dropouts at the end of the year"
    assert sum(int(r["dropouts"]) for r in rows) == total
    assert all(r["reason"] for r in rows), "every dropout reason has its label"


def test_every_table_view_and_column_is_described(analyst):
    con = duckdb.connect(str(analyst["snapshot"]), read_only=True)
    try:
        tables = con.execute("select table_name, comment from duckdb_tables() where schema_name = 'main'").fetchall()
        views = con.execute("select view_name, comment from duckdb_views() where schema_name = 'main' and not internal").fetchall()
        cols = con.execute("select table_name, column_name, comment from duckdb_columns() where schema_name = 'main' and not internal").fetchall()
        dims = {t for t, _ in tables if t.startswith("dim_")}
        sex = dict(con.execute("select code, label from dim_gioi_tinh").fetchall())
        comment = con.execute("select comment from duckdb_columns() where table_name = 'core_learners' and column_name = 'sex'").fetchone()[0]
    finally:
        con.close()
    assert not [t for t, c in tables if not c], "tables without a comment"
    assert {v for v, _ in views} >= {"v_learner", "v_staff", "v_dropout", "v_school"}
    assert not [v for v, c in views if not c]
    assert not [(t, c) for t, c, cm in cols if not cm], "columns without a comment"
    assert not [(t, c, cm) for t, c, cm in cols if " — " not in cm], "every comment: Vietnamese — English"
    assert {"dim_gioi_tinh", "dim_dan_toc", "dim_khoi", "dim_trang_thai_hoc_sinh", "dim_ly_do_thoi_hoc",
            "dim_trinh_do_chuyen_mon", "dim_chuan_dao_tao", "dim_xa"} <= dims
    assert sex == {"01": "Nam", "02": "Nữ"} or set(sex.values()) >= {"Nam", "Nữ"}
    assert comment.startswith("Giới tính — ") and "dim_gioi_tinh" in comment
    text = (analyst["dir"] / "DATA_DICTIONARY.md").read_text(encoding="utf-8")
    for name, _ in tables + views:
        assert f"`{name}`" in text
    assert "Giới tính — sex" in text


def test_sql_shell_is_read_only_and_says_errors_in_one_line(analyst):
    proc = subprocess.run([EDUSTAT, "sql", "--snapshot", "edustat.duckdb", "-c", "delete from core_learners"],
                          cwd=analyst["dir"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stderr.startswith("Lỗi:") and "Traceback" not in proc.stderr
    proc = subprocess.run([EDUSTAT, "sql", "--snapshot", "edustat.duckdb"], input=".tables\n.schema v_learner\nselect 1 + 1 as two;\n.quit\n",
                          cwd=analyst["dir"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "v_learner" in proc.stdout and "sex_label" in proc.stdout and "two" in proc.stdout
    missing = subprocess.run([EDUSTAT, "sql", "--snapshot", "khong-co.duckdb", "-c", "select 1"], cwd=analyst["dir"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "không tìm thấy bản sao" in missing.stderr


def test_dim_tables_hold_each_code_list_in_its_order_every_time():
    """`_write_dims` writes each code list's codes and labels, in the list's order, from rows it
    keeps for the process (issue 12): the second publish's dims are the first one's."""
    from edustat import dictionary
    from schemas import load_codelist

    dims = sorted(set(dictionary.column_dims().values()), key=lambda d: d.table)
    dims.append(dictionary.Dim("dim_period", "edustat/PERIOD"))
    written = []
    for _ in range(2):
        con = duckdb.connect()
        try:
            dictionary._write_dims(con, dims)
            written.append({d.table: con.execute(f'select code, label from "{d.table}"').fetchall() for d in dims})
            types = {r for r in con.execute("select data_type from duckdb_columns() where table_name like 'dim_%'").fetchall()}
        finally:
            con.close()
        assert types == {("VARCHAR",)}
    for d in dims:
        cl = load_codelist(d.ref)
        assert written[0][d.table] == list(zip(cl.codes, cl.labels)), d.table
    assert written[0] == written[1]
    assert len(written[0]["dim_xa"]) > 1000  # the communes: the largest list
