"""Rollover (issue 11, item 5): `edustat template --from-year 2022-2023 --school X` prefills
next year's start-of-year workbook from the accepted data.

A small city is generated and loaded by the real pipeline for 2022-2023 (start and end of
year) into a real DuckDB file; a few staff statuses the generator never writes (retired, moved
out, transferred in, awaiting retirement) are set in core_staff. Schools are rolled over by
the real command; the prefilled rows are checked against the end-of-year data read straight
from core_* (promoted one grade up with the same codes and personal data, retained in their
grade, leavers absent, classes renamed); then every prefilled workbook goes through the real
pipeline as the 2023-2024 start-of-year collection, in the database holding 2022-2023: zero
errors, no cross-period finding on a learner (promoted not up, retained moved, leaver still
present), and only the warnings the carried-over data and the missing new entrants explain."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import openpyxl
import pandas as pd
import pytest

from edustat import pipeline, store
from edustat.submissions import discover
from edustat.config import Config
from edustat.rollover import advance_mn_name, advance_name, roll_school
from edustat.synth import generate_city
from tests.inproc import edustat

FROM, TO = "2022-2023", "2023-2024"
EDUSTAT = str(Path(sys.executable).parent / "edustat")
ENROLLED = {"01", "02", "03", "06", "07", "10"}
# warnings a rolled-over roll may still carry: the source's own missing personal IDs, a retained
# pupil making a class one over its cap, a retained pupil over the grade's age
EXPECTED_WARNINGS = {"student_personal_id_required", "class_size_cap", "student_age_for_grade"}
# and, against last year, fewer learners and classes: the new first grade is not there yet
NEW_YEAR_SWINGS = {"school_learners_swing", "school_classes_swing"}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_HOME=str(cwd / ".prefect"))
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([EDUSTAT, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def q(db: Path, sql: str, params=()) -> pd.DataFrame:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def sheet(path: Path, name: str) -> pd.DataFrame:
    """A table sheet of the prefilled workbook as text, by its header row (openpyxl)."""
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        rows = list(wb[name].iter_rows(values_only=True))
    finally:
        wb.close()
    head = [str(h) for h in rows[0]]
    body = [["" if v is None else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)) for v in r]
            for r in rows[1:] if any(v is not None for v in r)]
    return pd.DataFrame(body, columns=head)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    work = tmp_path_factory.mktemp("rollover")
    cfg = Config(data_dir=work / "data", load_policy="load_valid_rows", workers=2)
    for period in ("dau_nam", "cuoi_nam"):
        generate_city(work / "inbox" / period, schools=6, seed=7, school_year=FROM, period=period)
        con = store.connect(cfg.db_path)
        try:
            pipeline.run_collection(con, discover(work / "inbox" / period), cfg, FROM, period, f"rollover-{period}")
        finally:
            con.close()
    schools = q(cfg.db_path, "select school_code, levels from core_school where school_year = ? and period = 'cuoi_nam' "
                             "order by 1", [FROM])
    th = schools[schools["levels"] == "TH"]["school_code"].iloc[0]
    # staff events the generator never writes: one retired, one moved out, one transferred in,
    # one awaiting retirement (the last two stay)
    con = duckdb.connect(str(cfg.db_path))
    try:
        codes = [r[0] for r in con.execute("select staff_code from core_staff where school_code = ? and period = 'cuoi_nam' "
                                           "and school_year = ? order by excel_row desc limit 4", [th, FROM]).fetchall()]
        for code, st in zip(codes, ("05", "02", "07", "04")):
            con.execute("update core_staff set status = ? where staff_code = ? and school_code = ? and period = 'cuoi_nam'",
                        [st, code, th])
    finally:
        con.close()
    proc = cli("template", "--from-year", FROM, "--school", th, "--data-dir", "data", cwd=work)
    return {"work": work, "cfg": cfg, "db": cfg.db_path, "th": th, "proc": proc, "schools": schools,
            "staff_events": dict(zip(codes, ("05", "02", "07", "04"))),
            "out": cfg.data_dir / "curated" / "templates" / TO / f"mau_{th}_dau_nam.xlsx"}


def test_names_advance_only_when_the_grade_is_clear():
    assert advance_name("3A", 3) == "4A"
    assert advance_name("Lớp 6A1", 6) == "Lớp 7A1"
    assert advance_name("5/2", 5) == "6/2"
    assert advance_name("A1", 3) is None        # no grade in the name
    assert advance_name("12A", 1) is None       # 12 is not grade 1
    assert advance_name("Lớp Hoa Mai", 2) is None
    assert advance_mn_name("Mầm 1", "05") == "Chồi 1"
    assert advance_mn_name("Lớp chồi A", "06") == "Lớp Lá A"
    assert advance_mn_name("Nhà trẻ 24-36 tháng", "04") is None


def test_command_writes_one_private_workbook_and_prints_counts_only(city):
    assert city["proc"].returncode == 0, city["proc"].stderr
    out = city["out"]
    assert out.exists() and stat.S_IMODE(out.stat().st_mode) == 0o600
    line = city["proc"].stdout
    assert "kỳ cuối năm" in line and TO in line
    names = q(city["db"], "select full_name from core_learners where school_code = ?", [city["th"]])["full_name"]
    assert not any(n in line for n in names)  # nothing personal on screen
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".mau_")]  # no temp file left


def test_learners_promoted_retained_and_leavers_removed(city):
    eoy = q(city["db"], "select student_code, full_name, birth_date, personal_id, grade, class_code, status, outcome "
                        "from core_learners where school_code = ? and school_year = ? and period = 'cuoi_nam'",
            [city["th"], FROM])
    classes = q(city["db"], "select class_code, class_name from core_classes where school_code = ? and school_year = ? "
                            "and period = 'cuoi_nam'", [city["th"], FROM]).set_index("class_code")["class_name"]
    got = sheet(city["out"], "HocSinh").set_index("Mã định danh Bộ GD&ĐT")
    new_classes = sheet(city["out"], "Lop").set_index("Mã lớp")
    enrolled = eoy[eoy["status"].isin(ENROLLED)]
    promoted = enrolled[(enrolled["outcome"] == "1") & (enrolled["grade"] != "05")]
    retained = enrolled[enrolled["outcome"] == "3"]
    leavers = pd.concat([eoy[~eoy["status"].isin(ENROLLED)], enrolled[enrolled["outcome"] == "4"],
                         enrolled[(enrolled["grade"] == "05") & (enrolled["outcome"] == "1")]])
    assert len(promoted) > 100 and len(retained) >= 1 and len(leavers) > 50  # the city has all three
    assert set(got.index) == set(promoted["student_code"]) | set(retained["student_code"])
    assert not set(leavers["student_code"]) & set(got.index)
    for r in promoted.itertuples():
        row = got.loc[r.student_code]
        assert row["Khối"] == f"{int(r.grade) + 1:02d}"
        assert row["Họ và tên"] == r.full_name and row["Số định danh cá nhân"] == ("" if pd.isna(r.personal_id) else r.personal_id)
        assert row["Ngày sinh"] == r.birth_date.strftime("%d/%m/%Y")
        assert row["Loại nhập học"] == "4" and row["Trạng thái"] == "01"
        # the learner's class is their old class one grade up ("2A1" → "3A1")
        old = classes[r.class_code]
        assert new_classes.loc[row["Mã lớp"], "Tên lớp"] == str(int(old[0]) + 1) + old[1:]
    for r in retained.itertuples():
        row = got.loc[r.student_code]
        assert row["Khối"] == r.grade and row["Loại nhập học"] == "3"
        assert new_classes.loc[row["Mã lớp"], "Khối"] == r.grade
    assert "Kết quả lên lớp" not in got.columns and "Ngày trạng thái" in got.columns
    assert (got["Ngày trạng thái"] == "").all() and (got["Lý do thôi học"] == "").all()


def test_classes_advanced_top_grade_dropped(city):
    old = q(city["db"], "select class_name, grade from core_classes where school_code = ? and school_year = ? "
                        "and period = 'cuoi_nam'", [city["th"], FROM])
    new = sheet(city["out"], "Lop")
    expected = {str(int(n[0]) + 1) + n[1:] for n, g in zip(old["class_name"], old["grade"]) if g != "05"}
    assert expected <= set(new["Tên lớp"])
    assert not (new["Khối"] == "01").sum() or set(new[new["Khối"] == "01"]["Tên lớp"]) <= set(old["class_name"])
    for name, grade in zip(new["Tên lớp"], new["Khối"]):
        assert int(name[0]) == int(grade)  # every name matches its grade
    assert new["Mã lớp"].is_unique


def test_staff_still_working(city):
    got = sheet(city["out"], "CanBo").set_index("Mã cán bộ")
    ev = city["staff_events"]
    gone = {c for c, s in ev.items() if s in ("05", "02")}
    assert not gone & set(got.index)
    kept = q(city["db"], "select count(*) n from core_staff where school_code = ? and period = 'cuoi_nam' and school_year = ? "
                         "and status in ('01', '04', '07')", [city["th"], FROM])["n"].iloc[0]
    assert len(got) == kept
    transferred_in = next(c for c, s in ev.items() if s == "07")
    awaiting = next(c for c, s in ev.items() if s == "04")
    assert got.loc[transferred_in, "Trạng thái"] == "01" and got.loc[awaiting, "Trạng thái"] == "04"


def test_school_sheet_and_notes(city):
    wb = openpyxl.load_workbook(city["out"], read_only=True)
    try:
        assert wb.sheetnames[0] == "GhiChu"
        notes = [r[0] for r in wb["GhiChu"].iter_rows(values_only=True) if r[0]]
        school = {r[0]: r[1] for r in wb["Truong"].iter_rows(min_row=2, values_only=True) if r[0]}
    finally:
        wb.close()
    text = "\n".join(notes)
    assert f"năm học {FROM}, kỳ cuối năm" in text and "Chờ nghỉ hưu" in text and "đã nghỉ hưu" in text
    assert school["Năm học"] == TO and school["Kỳ báo cáo"] == "Đầu năm" and school["Mã trường"] == city["th"]


def test_start_of_year_only_is_said_and_everyone_promoted(city, tmp_path):
    """A school with no end-of-year data: the start of year is used and said."""
    db = tmp_path / "copy.duckdb"
    shutil.copy(city["db"], db)
    con = duckdb.connect(str(db))
    try:
        for t in ("school", "classes", "learners", "staff", "rooms"):
            con.execute(f"delete from core_{t} where school_code = ? and period = 'cuoi_nam'", [city["th"]])
        r = roll_school(con, city["th"], FROM)
        start = con.execute("select count(*) from core_learners where school_code = ? and period = 'dau_nam' "
                            "and status in ('01','02','03','06','07','10') and grade <> '05'", [city["th"]]).fetchone()[0]
    finally:
        con.close()
    assert r.source_period == "dau_nam"
    assert any("kỳ đầu năm" in n for n in r.notes) and any("coi là lên lớp" in n for n in r.notes)
    assert len(r.tables["learners"]) == start and r.counts["retained"] == 0


def test_refusals_write_nothing(city):
    """The first refusal through a real `edustat` process; the others run the same command in
    this process (tests/inproc.py: the same exit code and stderr without a Python start each)."""
    work = city["work"]
    outside = work.parent / "outside.xlsx"
    p = cli("template", "--from-year", FROM, "--school", city["th"], "-o", str(outside), "--data-dir", "data", cwd=work)
    assert p.returncode == 2 and "thư mục dữ liệu" in p.stderr and not outside.exists()
    # a symlink inside the data dir pointing out of it is not followed
    link = city["cfg"].data_dir / "curated" / "templates" / "link.xlsx"
    link.symlink_to(outside)
    p = edustat("template", "--from-year", FROM, "--school", city["th"], "-o", str(link), "--data-dir", "data", cwd=work)
    assert p.returncode == 2 and not outside.exists()
    link.unlink()
    for bad in ("../../x", "7471800"):
        p = edustat("template", "--from-year", FROM, "--school", bad, "--data-dir", "data", cwd=work)
        assert p.returncode == 2 and "8 chữ số" in p.stderr
    p = edustat("template", "--from-year", FROM, "--school", "74799999", "--data-dir", "data", cwd=work)
    assert p.returncode == 2 and "không có số liệu" in p.stderr


def test_all_schools_round_trip_through_the_pipeline_without_errors(city, tmp_path):
    work = city["work"]
    p = cli("template", "--from-year", FROM, "--school", "all", "--data-dir", "data", cwd=work)
    assert p.returncode == 0, p.stderr
    out_dir = city["cfg"].data_dir / "curated" / "templates" / TO
    files = sorted(out_dir.glob("mau_*_dau_nam.xlsx"))
    assert len(files) == len(city["schools"]) == len(p.stdout.strip().splitlines())
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for f in files:
        shutil.copy(f, inbox / f.name)
    cfg = Config(data_dir=tmp_path / "data", workers=2)  # reject_school: any error would reject a school
    # into a copy of the database holding 2022-2023: the cross-period rules (edustat/periods.py,
    # written independently of the rollover) compare every prefilled learner with last year's end
    cfg.db_path.parent.mkdir(parents=True)
    shutil.copy(city["db"], cfg.db_path)
    con = store.connect(cfg.db_path)
    try:
        pipeline.run_collection(con, discover(inbox), cfg, TO, "dau_nam", "rollover-roundtrip")
        subs = con.execute("select school_code, status, n_errors from submission where school_year = ?", [TO]).df()
        issues = con.execute("select rule_id, severity, count(*) n from validation_issue where school_year = ? "
                             "group by all", [TO]).df()
        loaded = con.execute("select school_code, count(*) n from core_learners where school_year = ? group by 1",
                             [TO]).df().set_index("school_code")["n"]
    finally:
        con.close()
    assert len(subs) == len(files) and (subs["n_errors"] == 0).all(), subs
    assert subs["status"].isin(["accepted", "accepted_with_warnings"]).all()
    assert not len(issues[issues["severity"] == "error"]), issues
    warnings = set(issues[issues["severity"] == "warning"]["rule_id"])
    assert warnings <= EXPECTED_WARNINGS | NEW_YEAR_SWINGS, issues
    assert not warnings & {"student_promoted_not_up", "student_retained_moved", "student_leaver_still_present"}
    for f in files:  # every prefilled learner was loaded
        code = f.name.split("_")[1]
        assert loaded[code] == len(sheet(f, "HocSinh"))


def test_prefilled_workbook_prints(city, tmp_path):
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if not soffice:
        pytest.skip("LibreOffice (soffice) is not installed: `make sysdeps` installs it")
    res = subprocess.run([soffice, "--headless", f"-env:UserInstallation=file://{tmp_path}/lo", "--convert-to", "pdf",
                          "--outdir", str(tmp_path), str(city["out"])], capture_output=True, text=True, timeout=300)
    pdf = tmp_path / (city["out"].stem + ".pdf")
    assert pdf.exists(), res.stderr
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True).stdout
    first = text.split("\f")[0]
    assert "MẪU ĐIỀN SẴN NĂM HỌC 2023-2024" in first and "trang GhiChu" in first
    # the learner names print whole (columns as wide as their values)
    names = sheet(city["out"], "HocSinh")["Họ và tên"].head(20)
    assert sum(n in text for n in names) >= 18


def test_all_goes_on_past_a_school_it_cannot_roll(city, tmp_path):
    """One school's failure is that school's line; the others are written."""
    from edustat.rollover import rollover

    data = tmp_path / "data"
    db = data / "curated" / "edustat.duckdb"
    db.parent.mkdir(parents=True)
    shutil.copy(city["db"], db)
    con = duckdb.connect(str(db))
    try:
        con.execute("update core_school set levels = null where school_code = ?", [city["th"]])
    finally:
        con.close()
    failed: list[str] = []
    results = rollover(db, data, FROM, "all", failed=failed)
    assert len(failed) == 1 and city["th"] in failed[0] and "cấp học" in failed[0]
    assert {r.school_code for r in results} == set(city["schools"]["school_code"]) - {city["th"]}
    assert all(r.path.exists() for r in results)
    assert not (data / "curated" / "templates" / TO / f"mau_{city['th']}_dau_nam.xlsx").exists()
