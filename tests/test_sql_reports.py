"""Ad-hoc reports written as SQL (issue 11, item 4): `edustat report --form x.sql`.

A small city is loaded by the real pipeline into a real DuckDB file; the shipped example
(reports/lop-theo-khoi.sql) runs through the real command and its workbooks, opened by
openpyxl, are compared with a pandas count straight from core_* (not through the views);
the split per school, the refusals (DELETE, ATTACH, COPY, several statements, file reads) and
the privacy of the city workbook are checked; the database file is unchanged by a report."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import openpyxl
import pandas as pd
import pytest

from edustat.config import Config
from edustat.sql_reports import SqlReportError, load_sql_report
from tests.citycache import loaded_city
from tests.inproc import edustat

YEAR, PERIOD = "2022-2023", "dau_nam"
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "reports" / "lop-theo-khoi.sql"
EDUSTAT = str(Path(sys.executable).parent / "edustat")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_HOME=str(cwd / ".prefect"))
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([EDUSTAT, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def report(work: Path, *forms: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    args = ["report", "--year", YEAR, "--period", PERIOD, "--data-dir", "data", *extra]
    for f in forms:
        args += ["--form", str(f)]
    return cli(*args, cwd=work)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def table(path: Path) -> pd.DataFrame:
    """The BaoCao sheet's table: the header is the first row whose first cell is a heading
    after the title block (row 5), values as openpyxl reads them."""
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        rows = list(wb["BaoCao"].iter_rows(values_only=True))
    finally:
        wb.close()
    head = list(rows[4])
    body = []
    for r in rows[5:]:
        if r[0] is None or (isinstance(r[0], str) and r[0].startswith(("Nguồn:", "Sĩ số", "Biểu toàn"))):
            break
        body.append(list(r))
    return pd.DataFrame(body, columns=head)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    work = tmp_path_factory.mktemp("sqlrep")
    # the session's loaded city of 6 schools (seed 7), shared with test_adhoc_reports and test_form_02_03
    loaded_city(work, tmp_path_factory, schools=6, seed=7, school_year=YEAR, period=PERIOD, export_share=0.3,
                load_policy="load_valid_rows", workers=2, run_id="test-city")
    cfg = Config(data_dir=work / "data", load_policy="load_valid_rows", workers=2)
    before = sha(cfg.db_path)
    proc = report(work, EXAMPLE)
    return {"work": work, "db": cfg.db_path, "proc": proc, "before": before,
            "out": cfg.reports_dir / YEAR / PERIOD}


def write_sql(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_example_city_workbook_matches_core(city):
    assert city["proc"].returncode == 0, city["proc"].stderr
    assert "lop-theo-khoi" in city["proc"].stdout and "KHÔNG ĐẠT" not in city["proc"].stdout
    got = table(city["out"] / "lop-theo-khoi_city.xlsx")
    assert list(got.columns[:5]) == ["Mã trường", "Tên trường", "Khối", "Số lớp", "Số học sinh đang học"]
    con = duckdb.connect(str(city["db"]), read_only=True)
    try:
        classes = con.execute("select school_code, class_code, grade from core_classes where school_year = ? and period = ?",
                              [YEAR, PERIOD]).df()
        learners = con.execute("select school_code, class_code, is_enrolled from core_learners where school_year = ? "
                               "and period = ?", [YEAR, PERIOD]).df()
    finally:
        con.close()
    sizes = learners[learners["is_enrolled"]].groupby(["school_code", "class_code"]).size().rename("n")
    classes = classes.join(sizes, on=["school_code", "class_code"]).fillna({"n": 0})
    want = classes.groupby(["school_code", "grade"]).agg(so_lop=("class_code", "size"), hs=("n", "sum")).reset_index()
    labels = {f"{g:02d}": f"Khối {g}" for g in range(1, 10)} | {"16": "Nhóm trẻ", "17": "Lớp mẫu giáo"}
    want["khoi"] = want["grade"].map(labels)
    assert len(got) == len(want)
    merged = got.merge(want, left_on=["Mã trường", "Khối"], right_on=["school_code", "khoi"])
    assert len(merged) == len(want)
    assert (merged["Số lớp"] == merged["so_lop"]).all() and (merged["Số học sinh đang học"] == merged["hs"]).all()
    avg = (merged["hs"] / merged["so_lop"]).round(1)
    assert ((merged["Sĩ số bình quân (học sinh/lớp)"] - avg).abs() < 1e-9).all()


def test_split_per_school_and_checks(city):
    city_rows = table(city["out"] / "lop-theo-khoi_city.xlsx")
    files = sorted(city["out"].glob("lop-theo-khoi_7*.xlsx"))
    assert {f.stem.split("_")[1] for f in files} == set(city_rows["Mã trường"])
    total = 0
    for f in files:
        part = table(f)
        code = f.stem.split("_")[1]
        assert set(part["Mã trường"]) == {code}
        assert part["Số lớp"].sum() == city_rows.loc[city_rows["Mã trường"] == code, "Số lớp"].sum()
        total += len(part)
    assert total == len(city_rows)
    wb = openpyxl.load_workbook(city["out"] / "lop-theo-khoi_city.xlsx", read_only=True)
    try:
        checks = [r for r in wb["KiemTra"].iter_rows(min_row=2, values_only=True)]
        title = wb["BaoCao"]["A2"].value
    finally:
        wb.close()
    assert title == "LỚP HỌC THEO KHỐI, SỐ HỌC SINH VÀ SĨ SỐ BÌNH QUÂN"
    assert checks and all(r[2] == "Đạt" for r in checks)


def test_report_leaves_the_database_unchanged(city):
    assert sha(city["db"]) == city["before"]


@pytest.mark.parametrize("body, words", [
    ("delete from core_learners", "DELETE"),
    ("attach '/tmp/other.duckdb' as o", "ATTACH"),
    ("copy (select 1) to '/tmp/x.csv'", "COPY"),
    ("select 1; select 2", "một câu lệnh"),
    ("select 1; delete from core_school", "một câu lệnh"),
    ("create table x as select 1", "CREATE"),
    ("select * from read_text('/etc/hostname')", "đọc tệp"),
    ("select nonexistent_column from v_learner", "không chạy được"),
    ("select * from v_learner where school_year = $nam", "$nam"),
])
def test_refusals_are_one_vietnamese_line(city, tmp_path, body, words):
    """The first refusal through a real `edustat` process (its stderr is the whole of what the
    officer sees); the others run the same command in this process (tests/inproc.py)."""
    path = write_sql(tmp_path, "xau.sql", f"-- title: Báo cáo thử\n{body}\n")
    before = sorted(p.name for p in city["out"].iterdir())
    if body == "delete from core_learners":
        p = report(city["work"], path)
    else:
        p = edustat("report", "--year", YEAR, "--period", PERIOD, "--data-dir", "data", "--form", str(path),
                    cwd=city["work"])
    assert p.returncode == 2, p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Lỗi: xau.sql:") and words in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert sorted(p.name for p in city["out"].iterdir()) == before
    assert sha(city["db"]) == city["before"]


def test_definition_errors(tmp_path):
    with pytest.raises(SqlReportError, match="thiếu dòng tiêu đề"):
        load_sql_report(write_sql(tmp_path, "a.sql", "select 1"))
    with pytest.raises(SqlReportError, match="label"):
        load_sql_report(write_sql(tmp_path, "b.sql", "-- title: T\n-- label khong_co: X\nselect 1 as a"))
    with pytest.raises(SqlReportError, match="trùng một biểu"):
        load_sql_report(write_sql(tmp_path, "c.sql", "-- title: T\n-- form_code: 02-th-dn\nselect 1 as a"))
    r = load_sql_report(write_sql(tmp_path, "Lớp học đặc biệt.sql", "-- title: T\n-- period: dau_nam\nselect 1 as a"))
    assert r.form_code == "lop-hoc-dac-biet" and r.period == "dau_nam" and r.columns == ["a"]


def test_personal_columns_stay_out_of_the_city_workbook(city, tmp_path):
    sql = ("-- title: Danh sách học sinh khuyết tật\n"
           "select school_code, student_code, full_name, grade_label, disability_type\n"
           "from v_learner where is_disabled and is_enrolled and school_year = $school_year and period = $period\n"
           "order by school_code, student_code\n")
    path = write_sql(tmp_path, "ds-khuyet-tat.sql", sql)
    p = report(city["work"], path)
    assert p.returncode == 0, p.stderr
    assert "thông tin cá nhân" in p.stdout
    names = set(duckdb.connect(str(city["db"]), read_only=True).execute(
        "select full_name from core_learners where is_disabled and is_enrolled").df()["full_name"])
    assert names  # the city has disabled learners
    cityfile = city["out"] / "ds-khuyet-tat_city.xlsx"
    got = table(cityfile)
    assert "Họ và tên" not in got.columns and "Mã học sinh" not in got.columns and "Khối" in got.columns
    wb = openpyxl.load_workbook(cityfile, read_only=True)
    try:
        text = " ".join(str(v) for ws in wb.worksheets for r in ws.iter_rows(values_only=True) for v in r if v)
    finally:
        wb.close()
    assert not any(n in text for n in names)
    # the schools' lists (names) are private, outside reports/ (which a collection run re-shares)
    assert not list(city["out"].glob("ds-khuyet-tat_7*.xlsx"))
    private = city["work"] / "data" / "curated" / "reports_private" / YEAR / PERIOD
    schools = sorted(private.glob("ds-khuyet-tat_7*.xlsx"))
    assert schools
    seen = set()
    for f in schools:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600  # a school's list with names is private
        seen |= set(table(f)["Họ và tên"])
    assert seen == names
    # asked for: the city workbook keeps them, privately
    path = write_sql(tmp_path, "ds-khuyet-tat-2.sql", sql.replace("-- title:", "-- personal_in_city: yes\n-- title:"))
    assert report(city["work"], path).returncode == 0
    assert not (city["out"] / "ds-khuyet-tat-2_city.xlsx").exists()
    f = private / "ds-khuyet-tat-2_city.xlsx"
    assert set(table(f)["Họ và tên"]) == names and stat.S_IMODE(f.stat().st_mode) == 0o600


def test_views_show_only_the_collection_and_school_option(city, tmp_path):
    path = write_sql(tmp_path, "dem.sql", "-- title: Đếm\n-- label n: Số học sinh\n"
                                          "select school_code, count(*) as n from v_learner group by 1 order by 1\n")
    school = sorted(p.stem.split("_")[1] for p in city["out"].glob("lop-theo-khoi_7*.xlsx"))[0]
    p = report(city["work"], path, extra=("--school", school))
    assert p.returncode == 0, p.stderr
    files = sorted(x.name for x in city["out"].glob("dem_*.xlsx"))
    assert files == sorted(["dem_city.xlsx", f"dem_{school}.xlsx"])
    want = duckdb.connect(str(city["db"]), read_only=True).execute(
        "select count(*) from core_learners where school_year = ? and period = ?", [YEAR, PERIOD]).fetchone()[0]
    assert table(city["out"] / "dem_city.xlsx")["Số học sinh"].sum() == want
    # a report for the other period is refused before anything runs
    other = write_sql(tmp_path, "cuoi.sql", "-- title: Cuối năm\n-- period: cuoi_nam\nselect 1 as a\n")
    p = report(city["work"], other)
    assert p.returncode == 2 and "kỳ cuối năm" in p.stderr
