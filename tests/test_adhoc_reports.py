"""Ad-hoc reports (issue 11, item 4): an office's YAML run by `edustat report --form x.yaml`.

The two shipped definitions (reports/*.yaml) run through the real command on a small city;
their cells are compared with a pandas count straight from core_* (not through the report
views or the definitions' `where`), the workbooks are opened by openpyxl, the cells and
checks are in DuckDB; broken definitions give one Vietnamese line and exit 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import openpyxl
import pandas as pd
import pytest

from edustat import store
from edustat.config import Config
from edustat.reports import AdhocError, load_adhoc
from tests.citycache import loaded_city
from tests.inproc import edustat

YEAR, PERIOD = "2022-2023", "dau_nam"
ROOT = Path(__file__).resolve().parents[1]
DISABILITY = ROOT / "reports" / "hoc-sinh-khuyet-tat.yaml"
TEACHERS = ROOT / "reports" / "giao-vien-mon-trinh-do.yaml"
EDUSTAT = str(Path(sys.executable).parent / "edustat")

# the spec's words, written here independently of the definitions
DISABILITY_LABELS = {"01": "Khuyết tật vận động", "02": "Khuyết tật nghe, nói", "03": "Khuyết tật nhìn",
                     "04": "Khuyết tật thần kinh, tâm thần", "05": "Khuyết tật trí tuệ", "06": "Khuyết tật khác"}
SUBJECT_LABELS = {"22": "Toán", "20": "Ngữ văn", "07": "Tiếng Anh", "23": "Vật lý", "17": "Hóa học",
                  "21": "Sinh học", "18": "Lịch sử", "06": "Địa lý", "16": "Giáo dục công dân", "10": "Tin học",
                  "24": "Công nghệ", "08": "Thể dục", "05": "Âm nhạc", "19": "Mỹ thuật"}
BUCKET_LABELS = {"tcsp": "- Trung cấp sư phạm", "cdsp": "- Cao đẳng sư phạm", "dhsp": "- Đại học sư phạm",
                 "ths": "- Thạc sĩ", "ts": "- Tiến sĩ, Tiến sỹ khoa học", "khac": "- Khác"}


def cli(*args: str, cwd: Path, api: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_HOME=str(cwd / ".prefect"))
    env.pop("PREFECT_API_URL", None)
    if api:
        env["PREFECT_API_URL"] = api
    return subprocess.run([EDUSTAT, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def city(tmp_path_factory, prefect_harness):
    """6 schools (seed 7: public and private TH, THCS, a PTCS) loaded by the real steps, then
    both shipped reports made by the real command (one Prefect flow run, on the session's
    test-started server: an ephemeral server's start, ~16 s, is proven by test_cli_truth.py)."""
    from prefect.settings import PREFECT_API_URL

    work = tmp_path_factory.mktemp("adhoc")
    # the session's loaded city of 6 schools (seed 7), shared with test_sql_reports and test_form_02_03
    loaded_city(work, tmp_path_factory, schools=6, seed=7, school_year=YEAR, period=PERIOD, export_share=0.3,
                load_policy="load_valid_rows", workers=2, run_id="test-city")
    cfg = Config(data_dir=work / "data", load_policy="load_valid_rows", workers=2)
    proc = cli("report", "--year", YEAR, "--period", PERIOD, "--data-dir", "data", "--form", str(DISABILITY),
               "--form", str(TEACHERS), cwd=work, api=PREFECT_API_URL.value())
    return {"work": work, "proc": proc, "db": cfg.db_path, "reports": cfg.reports_dir / YEAR / PERIOD}


def q(db: Path, sql: str, params=()) -> pd.DataFrame:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def cells(db: Path, form_code: str) -> pd.DataFrame:
    return q(db, "select scope, row_code, column_key, value from rpt_form_cell where school_year = ? and period = ? "
                 "and form_code = ?", [YEAR, PERIOD, form_code])


def row_codes(path: Path) -> dict[tuple[str, str], int]:
    """(parent label, own label) → Mã số, read from the loaded definition's layout only."""
    out, parent = {}, None
    for row in load_adhoc(path)["sheets"][0]["rows"]:
        if "code" not in row:
            continue
        if not row["label"].startswith("-"):
            parent = row["label"]
        out[(parent, row["label"])] = row["code"]
    return out


def people(db: Path, table: str, level: str, active: str) -> pd.DataFrame:
    """core rows of a level at the schools that serve it, with the ownership column group."""
    df = q(db, f"select t.*, s.ownership_group, s.levels from {table} t join core_school s "
               "using (school_year, period, school_code) where t.school_year = ? and t.period = ? and t.level = ? "
               f"and t.{active}", [YEAR, PERIOD, level])
    df = df[df["levels"].str.split(",").apply(lambda lv: level in lv)]
    return df.assign(grp=df["ownership_group"].where(df["ownership_group"] == "cong_lap", "tu_thuc"),
                     female=df["sex"] == "02")


def expected_counts(frame: pd.DataFrame, keys: list[str]) -> dict:
    """(scope, *keys, column key) → count, for the city and each school."""
    out: dict = {}
    for scope, part in [("city", frame), *frame.groupby("school_code")]:
        for key, sub in part.groupby(keys, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            out[(scope, *key, "tong_so.tong")] = len(sub)
            out[(scope, *key, "tong_so.nu")] = int(sub["female"].sum())
            for g in ("cong_lap", "tu_thuc"):
                out[(scope, *key, f"{g}.tong")] = int((sub["grp"] == g).sum())
                out[(scope, *key, f"{g}.nu")] = int(((sub["grp"] == g) & sub["female"]).sum())
    return out


def test_the_command_makes_both_reports(city):
    p = city["proc"]
    assert p.returncode == 0, p.stderr
    assert "hoc-sinh-khuyet-tat" in p.stdout and "giao-vien-mon-trinh-do" in p.stdout
    assert "phép kiểm tra nội bộ của biểu đều đạt" in p.stdout
    names = {f.name for f in city["reports"].glob("*.xlsx")}
    assert {"hoc-sinh-khuyet-tat_city.xlsx", "giao-vien-mon-trinh-do_city.xlsx"} <= names
    schools = set(q(city["db"], "select school_code from core_school where school_year = ? and period = ? "
                                "and list_contains(string_split(levels, ','), 'TH')", [YEAR, PERIOD])["school_code"])
    assert {f"hoc-sinh-khuyet-tat_{s}.xlsx" for s in schools} <= names and len(schools) >= 3


def test_disability_cells_equal_a_pandas_count(city):
    learners = people(city["db"], "core_learners", "TH", "is_enrolled")
    disabled = learners[learners["disability_type"].notna()]
    assert len(disabled) > 0 and disabled["disability_type"].nunique() >= 2  # the test can fail
    want = expected_counts(disabled, ["disability_type", "grade_number"])
    by_type = expected_counts(disabled, ["disability_type"])
    total = expected_counts(disabled.assign(all="x"), ["all"])
    codes = row_codes(DISABILITY)
    got = cells(city["db"], "hoc-sinh-khuyet-tat").set_index(["scope", "row_code", "column_key"])["value"]
    scopes = ["city", *sorted(learners["school_code"].unique())]
    keys = ["tong_so.tong", "tong_so.nu", "cong_lap.tong", "cong_lap.nu", "tu_thuc.tong", "tu_thuc.nu"]
    compared = 0
    for scope in scopes:
        for key in keys:
            assert got[(scope, codes[("Tổng số học sinh khuyết tật",) * 2], key)] == total.get((scope, "x", key), 0)
            for t, label in DISABILITY_LABELS.items():
                assert got[(scope, codes[(label, label)], key)] == by_type.get((scope, t, key), 0), (scope, label, key)
                for g in range(1, 6):
                    code = codes[(label, f"- Khối {g}")]
                    assert got[(scope, code, key)] == want.get((scope, t, g, key), 0), (scope, label, g, key)
                    compared += 1
    assert compared == len(scopes) * len(keys) * 30
    inclusive = disabled[disabled["special_education"].fillna("0") == "0"]
    assert got[("city", codes[("Trong đó: học hòa nhập",) * 2], "tong_so.tong")] == len(inclusive)


def test_teacher_cells_equal_a_pandas_count(city):
    staff = people(city["db"], "core_staff", "THCS", "is_active")
    teachers = staff[staff["role"] == "giao_vien"]
    assert len(teachers) > 0
    teachers = teachers.assign(
        subj=teachers["subject"].where(teachers["subject"].isin(list(SUBJECT_LABELS)), "khac"),
        bucket=teachers["training_bucket"].where(teachers["training_bucket"].isin(["tcsp", "cdsp", "dhsp", "ths", "ts"]),
                                                 "khac"))
    want = expected_counts(teachers, ["subj", "bucket"])
    by_subject = expected_counts(teachers, ["subj"])
    codes = row_codes(TEACHERS)
    got = cells(city["db"], "giao-vien-mon-trinh-do").set_index(["scope", "row_code", "column_key"])["value"]
    labels = {**SUBJECT_LABELS, "khac": "Môn khác hoặc chưa ghi môn dạy"}
    for scope in ["city", *sorted(teachers["school_code"].unique())]:
        assert got[(scope, codes[("Tổng số giáo viên",) * 2], "tong_so.tong")] == (
            len(teachers) if scope == "city" else (teachers["school_code"] == scope).sum())
        for s, label in labels.items():
            assert got[(scope, codes[(label, label)], "tong_so.nu")] == by_subject.get((scope, s, "tong_so.nu"), 0)
            for b, blabel in BUCKET_LABELS.items():
                for key in ("tong_so.tong", "cong_lap.tong", "tu_thuc.nu"):
                    assert got[(scope, codes[(label, blabel)], key)] == want.get((scope, s, b, key), 0), (scope, s, b, key)
    assert got[("city", 1, "tong_so.tong")] == len(teachers)


def test_cells_and_checks_are_in_duckdb(city):
    for code, nrows in (("hoc-sinh-khuyet-tat", 43), ("giao-vien-mon-trinh-do", 112)):
        c = cells(city["db"], code)
        scopes = c["scope"].nunique()
        assert "city" in set(c["scope"]) and scopes >= 3
        assert len(c) == scopes * nrows * 6 and c["value"].notna().all()
        checks = q(city["db"], "select check_name, ok from rpt_form_check where form_code = ? and school_year = ? "
                               "and period = ?", [code, YEAR, PERIOD])
        assert checks["ok"].all()
        assert {"rows_sum_to_total", "total_equals_groups", "female_le_total", "submission_equals_core"} <= set(
            checks["check_name"])
    assert "sub_row_le_parent" in set(q(city["db"], "select check_name from rpt_form_check "
                                                    "where form_code = 'hoc-sinh-khuyet-tat'")["check_name"])


def test_workbooks_open_with_the_report_and_kiemtra(city):
    for code, title in (("hoc-sinh-khuyet-tat", "HỌC SINH KHUYẾT TẬT THEO DẠNG TẬT VÀ KHỐI"),
                        ("giao-vien-mon-trinh-do", "GIÁO VIÊN THEO MÔN DẠY VÀ TRÌNH ĐỘ ĐÀO TẠO")):
        wb = openpyxl.load_workbook(city["reports"] / f"{code}_city.xlsx")
        assert wb.sheetnames == ["Báo cáo", "KiemTra"]
        ws = wb["Báo cáo"]
        assert ws["B1"].value == title
        values = [r for r in ws.iter_rows(values_only=True)]
        first = next(r for r in values if r[3] == 1)  # Mã số 1: the total row
        total = cells(city["db"], code).query("scope == 'city' and row_code == 1 and column_key == 'tong_so.tong'")
        assert first[4] == total["value"].iloc[0] > 0
        kt = "\n".join(str(v) for r in wb["KiemTra"].iter_rows(values_only=True) for v in r if v is not None)
        assert "tất cả đều đạt" in kt and "Báo cáo theo yêu cầu" in kt


def test_sums_rooms_and_total_only_columns(city, tmp_path):
    """`sum:` over classes, `count: room`, `by_ownership: false` and `reconcile:`: built by the
    library step the command runs, checked against core."""
    from edustat.reports import build_reports

    path = tmp_path / "si-so.yaml"
    path.write_text("title: Sĩ số lớp\nlevel: TH\nby_ownership: false\nrows:\n"
                    "  - {label: Số lớp, count: class, unit: lớp}\n"
                    "  - {label: Số học sinh trong các lớp, sum: n_learners, entity: class, where: 'true', reconcile: learners}\n"
                    "  - {label: Số phòng, count: room, unit: phòng}\n", encoding="utf-8")
    con = store.connect(city["db"])
    try:
        result = build_reports(con, city["work"] / "data" / "curated" / "reports", YEAR, PERIOD, forms=[str(path)], workers=1)
    finally:
        con.close()
    assert result.forms == ["si-so"] and result.failed_checks == 0 and result.checks > 0
    got = cells(city["db"], "si-so")
    assert set(got["column_key"]) == {"tong_so.tong"}
    city_ = got[got["scope"] == "city"].set_index("row_code")["value"]
    learners = people(city["db"], "core_learners", "TH", "is_enrolled")
    assert city_[2] == len(learners) > 0
    classes = q(city["db"], "select c.* from core_classes c join core_school s using (school_year, period, school_code) "
                            "where c.school_year = ? and c.period = ? and c.level = 'TH' "
                            "and list_contains(string_split(s.levels, ','), 'TH')", [YEAR, PERIOD])
    assert city_[1] == len(classes) > 0


BROKEN = {
    "unknown entity": ("title: Thử\nlevel: TH\nrows:\n  - label: Học sinh khuyết tật\n    count: hocsinh\n"
                       "    where: disability_type is not null\n", ["dòng 'Học sinh khuyết tật'", "'hocsinh' không có", "learner"]),
    "misspelt column": ("title: Thử\nlevel: TH\ncount: learner\nrows:\n  - label: Khuyết tật nhìn\n"
                        "    where: disabilty_type = '03'\n", ["dòng 'Khuyết tật nhìn'", "'disabilty_type'", "disability_type"]),
    "bad sql": ("title: Thử\nlevel: TH\ncount: learner\nrows:\n  - label: Học sinh nữ\n    where: is_female = = true\n",
                ["dòng 'Học sinh nữ'", "không phải điều kiện SQL hợp lệ"]),
    "two statements": ("title: Thử\nlevel: TH\ncount: learner\nrows:\n  - label: Tất cả\n"
                       "    where: true); drop table core_learners; select (1\n", ["dòng 'Tất cả'", "không có ;"]),
    "a person's name": ("title: x\nlevel: TH\ncount: learner\nrows:\n  - label: Một em\n"
                        "    where: full_name = 'Nguyễn Văn An'\n", ["dòng 'Một em'", "thông tin cá nhân"]),
    "missing title": ("level: TH\nrows:\n  - label: x\n    count: learner\n", ["thiếu khóa bắt buộc 'title'"]),
    "misspelt key": ("title: x\nlevel: TH\nrows:\n  - label: Nữ\n    count: learner\n    wehre: is_female\n",
                     ["dòng 'Nữ'", "wehre"]),
    "unknown id": ("title: x\nlevel: TH\ncount: learner\nrows:\n  - label: Tổng\n    where: true\n    parts: [a, b]\n",
                   ["dòng 'Tổng'", "id 'a'"]),
    "column of another entity": ("title: x\nlevel: TH\ncolumns: [tong, nu]\nrows:\n  - label: Trường\n    count: school\n",
                                 ["dòng 'Trường'", "nu không áp dụng cho school"]),
    "an official form's code": ("form_code: 02-th-dn\ntitle: x\nlevel: TH\nrows:\n  - label: a\n    count: learner\n",
                                ["trùng một biểu của Thông tư 24/2018"]),
    "yaml syntax": ("title: x\nlevel: TH\nrows:\n  - label: [x\n", ["YAML sai cú pháp", "dòng"]),
    "other period": ("title: x\nlevel: TH\nperiod: cuoi_nam\nrows:\n  - label: a\n    count: learner\n", ["kỳ cuối năm"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_definition_is_one_line_and_exit_2(case, tmp_path):
    """One case through a real `edustat` process (its stderr is the whole of what the officer
    sees); the others run the same command in this process (tests/inproc.py)."""
    text, words = BROKEN[case]
    path = tmp_path / "bao-cao-thu.yaml"
    path.write_text(text, encoding="utf-8")
    # no data at all: the definition is checked first (an office can try its file any time)
    args = ("report", "--year", YEAR, "--period", PERIOD, "--data-dir", "data", "--form", str(path))
    r = cli(*args, cwd=tmp_path) if case == sorted(BROKEN)[0] else edustat(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Lỗi: ") and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not (tmp_path / "data" / "curated").exists()


def test_loader_names_the_row_and_never_touches_the_data(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("title: x\nlevel: THCS\ncount: staff\nrows:\n  - label: Giáo viên Toán\n"
                    "    where: subject = '22' and exists (select 1 from read_csv('/etc/passwd'))\n", encoding="utf-8")
    with pytest.raises(AdhocError, match="Giáo viên Toán"):
        load_adhoc(path)


def test_shipped_definitions_are_in_the_demo_and_readme():
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for f in (DISABILITY, TEACHERS):
        rel = f"reports/{f.name}"
        assert f"--form {rel}" in make and rel in readme


def test_an_edited_definition_is_read_again(tmp_path):
    """A long-running server (Prefect deployment) sees the office's edit; the same version is
    read once however many workbooks are rendered."""
    from edustat.reports import load_form

    path = tmp_path / "bao-cao.yaml"
    path.write_text("title: Lần một\nlevel: TH\nrows:\n  - {label: a, count: learner}\n", encoding="utf-8")
    first = load_form(str(path))
    assert first["title"] == "Lần một" and load_form(str(path)) is first
    path.write_text("title: Lần thứ hai\nlevel: TH\nrows:\n  - {label: a, count: learner}\n", encoding="utf-8")
    assert load_form(str(path))["title"] == "Lần thứ hai"
