"""Canonical small workbooks, one per school level and period, for the per-rule tests.

Everything here is synthetic and internally consistent: 12-digit personal IDs agree with sex,
birth year and province 074; every learner is on-age for a grade that matches their class;
one principal; codes from the lists. A test case copies these frames, changes one thing, and
writes the copy with `write_submission` (or mutates the written file with openpyxl).
"""
from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import openpyxl
import pandas as pd

from edustat.submissions import ingest_file, mark_superseded, validate_collection
from edustat.workbook import TEMPLATE, ExportStyle, write_submission
from schemas.rules import Catalogue, load_rules

SCHOOL_YEAR = "2022-2023"
START_YEAR = 2022
LEVEL_CODE = {"MN": "01", "TH": "06", "THCS": "07"}
SCHOOL_NAME = {"MN": "Trường Mầm non Phú Cường", "TH": "Trường Tiểu học Phú Cường", "THCS": "Trường THCS Phú Cường"}


def pid(sex: str, birth_year: int, serial: int, province: str = "074") -> str:
    """A personal ID consistent with sex and birth year (TT 59/2021 Đ.4)."""
    century = (birth_year // 100 - 19) * 2
    return f"{province}{century + (1 if sex == '02' else 0)}{birth_year % 100:02d}{serial:06d}"


def school(level: str, code: str = "74718001") -> dict:
    return {
        "school_code": code, "school_name": SCHOOL_NAME[level], "education_level": LEVEL_CODE[level],
        "ownership": "01", "province_code": "74", "district_code": "718", "commune_code": "25747",
        "region": "dong_bang", "national_standard": "0", "satellite_sites": 0,
    }


# (class_code, class_name, grade, mn_age_group)
CLASSES = {
    "MN": [("NT1", "Nhóm trẻ 25-36 tháng", "16", "03"), ("MG5", "Lớp mẫu giáo 5-6 tuổi", "17", "06")],
    "TH": [("1A", "Lớp 1A", "01", None), ("3A", "Lớp 3A", "03", None), ("5A", "Lớp 5A", "05", None)],
    "THCS": [("6A", "Lớp 6A", "06", None), ("7A", "Lớp 7A", "07", None), ("8A", "Lớp 8A", "08", None),
             ("9A", "Lớp 9A", "09", None)],
}
# learners per class: (full name, sex)
NAMES = [("Nguyễn Văn An", "01"), ("Trần Thị Bình", "02"), ("Lê Văn Cường", "01")]
LEARNERS_PER_CLASS = {"MN": 4, "TH": 3, "THCS": 2}
GIVEN = ["An", "Bình", "Cường", "Dung", "Hà", "Khoa", "Lan", "Minh", "Nga", "Phúc"]


def _age(level: str, grade: str) -> int:
    if grade == "16":
        return 2  # 25–36 months
    if grade == "17":
        return 5
    return int(grade) + 5


def classes(level: str) -> pd.DataFrame:
    rows = []
    for code, name, grade, age_group in CLASSES[level]:
        r = {"class_code": code, "class_name": name, "grade": grade, "mixed": 0, "two_sessions": 1, "boarding": 0}
        if level == "MN":
            r["mn_age_group"] = age_group
        rows.append(r)
    return pd.DataFrame(rows)


def learner(level: str, grade: str, class_code: str, n: int, sex: str | None = None) -> dict:
    """The n-th learner (n ≥ 1) of a class: on-age, consistent IDs."""
    sex = sex or ("01" if n % 2 else "02")
    year = START_YEAR - _age(level, grade)
    given = GIVEN[n % len(GIVEN)]
    gnum = int(grade)
    r = {
        "student_code": f"74{gnum:02d}{n:06d}",
        "personal_id": pid(sex, year, gnum * 1000 + n),
        "full_name": ("Nguyễn Văn " if sex == "01" else "Trần Thị ") + given,
        "birth_date": dt.date(year, 1 + n % 12, 1 + n % 28),
        "sex": sex,
        "ethnicity": "01",
        "class_code": class_code,
        "grade": grade,
        "status": "01",
    }
    if level in ("TH", "THCS"):
        r["entry_type"] = "4"
    return r


def learners(level: str) -> pd.DataFrame:
    rows = []
    k = 0
    for code, _, grade, _ in CLASSES[level]:
        for _ in range(LEARNERS_PER_CLASS[level]):
            k += 1
            rows.append(learner(level, grade, code, k))
    return pd.DataFrame(rows)


def staff_member(level: str, n: int, group: str, position: str | None, sex: str = "02", year: int = 1980) -> dict:
    r = {
        "staff_code": f"CB{n:03d}",
        "personal_id": pid(sex, year, 900000 + n),
        "full_name": ("Phạm Văn " if sex == "01" else "Võ Thị ") + GIVEN[n % len(GIVEN)],
        "birth_date": dt.date(year, 3, 1 + n),
        "sex": sex,
        "ethnicity": "01",
        "staff_group": group,
        "position": position,
        "contract_type": "07",
        "training_level": "16" if group in ("01", "03") else None,
        "status": "01",
    }
    if level == "MN":
        r["mn_care_level"] = "mau_giao"
    if level == "TH" and group == "03":
        r["subject"] = "09"  # Tiểu học
    if level == "THCS" and group == "03":
        r["subject"] = "10"  # Tin học
    return r


def staff(level: str) -> pd.DataFrame:
    rows = [
        staff_member(level, 1, "01", "01", sex="01", year=1975),  # Hiệu trưởng
        staff_member(level, 2, "03", None, year=1985),
        staff_member(level, 3, "03", None, year=1985),
        staff_member(level, 4, "03", "03", sex="01", year=1982),  # tổ trưởng chuyên môn
        staff_member(level, 5, "02", "15", year=1992),  # kế toán
    ]
    return pd.DataFrame(rows)


def rooms(level: str) -> pd.DataFrame:
    if level == "MN":
        return pd.DataFrame([
            {"room_type": "01", "care_level": "nha_tre", "permanent": 1, "semi_permanent": 0, "temporary": 0},
            {"room_type": "01", "care_level": "mau_giao", "permanent": 1, "semi_permanent": 0, "temporary": 0},
            {"room_type": "14", "care_level": "mau_giao", "permanent": 1, "semi_permanent": 0, "temporary": 0},
        ])
    return pd.DataFrame([
        {"room_type": "01", "permanent": len(CLASSES[level]), "semi_permanent": 0, "temporary": 0},
        {"room_type": "03", "permanent": 1, "semi_permanent": 0, "temporary": 0},
    ])


def end_of_year(level: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Realistic end-of-year columns: everyone promoted, grade 9 graduates (rank Khá)."""
    df = frame.copy()
    df["absent_days"] = 3
    df["outcome"] = "1"
    if level == "TH":
        df["year_result"] = "2"
        df["completed_grade"] = 1
        df["completed_primary"] = (df["grade"] == "05").astype(int)
    if level == "THCS":
        # 2022-2023: grades 6–7 under TT 22/2021, grades 8–9 under TT 58/2011
        df["conduct"] = "Tốt"
        df["learning"] = "Khá"
        nine = df["grade"] == "09"
        df["graduated"] = nine.astype(int)
        df["graduation_rank"] = pd.Series(None, index=df.index, dtype="object").mask(nine, "2")
    return df


@dataclass
class Book:
    """One school's workbook as data: the school sheet and the four tables."""

    level: str
    period: str
    school: dict
    tables: dict[str, pd.DataFrame]
    style: ExportStyle = TEMPLATE
    post: list[Callable[[openpyxl.Workbook], None]] = field(default_factory=list)  # openpyxl edits after writing


def canonical(level: str, period: str = "dau_nam", code: str = "74718001") -> Book:
    """A fresh copy of the level's canonical book (cases change it freely)."""
    tables = {sid: df.copy(deep=True) for sid, df in _canonical_tables(level, period).items()}
    return Book(level, period, school(level, code), tables)


@functools.cache
def _canonical_tables(level: str, period: str) -> dict[str, pd.DataFrame]:
    """Built once per level and period (the rule tests copy it ~600 times); never handed out."""
    ls = learners(level)
    if period == "cuoi_nam" and level in ("TH", "THCS"):
        ls = end_of_year(level, ls)
    tables = {"classes": classes(level), "learners": ls, "staff": staff(level)}
    if period == "dau_nam":
        tables["rooms"] = rooms(level)
    return tables


def write(book: Book, path: Path) -> dict:
    """Write the book; apply openpyxl edits; return the layouts (sheet id → SheetLayout)."""
    layouts = write_submission(path, levels=(book.level,), period=book.period, school_year=SCHOOL_YEAR,
                               school=book.school, tables=book.tables, style=book.style)
    if book.post:
        wb = openpyxl.load_workbook(path)
        for edit in book.post:
            edit(wb)
        wb.save(path)
    return layouts


def run(path_or_paths, period: str = "dau_nam", *, raw_root: Path | None = None,
        catalogue: Catalogue | None = None, crashed: dict[str, str] | None = None) -> pd.DataFrame:
    """One collection run, as the pipeline does it: ingest each file (structure stage), settle
    which file of a school counts, then the row and cross-row rules over all of them.
    Returns the issue rows (edustat.submissions.ISSUE_COLUMNS). With `crashed`, a file whose
    ingest raises is recorded there (file name → exception) instead of stopping the run."""
    paths = [Path(path_or_paths)] if isinstance(path_or_paths, (str, Path)) else [Path(p) for p in path_or_paths]
    cat = catalogue or load_rules()
    raw_root = raw_root or paths[0].parent / "raw"
    results = []
    for p in paths:
        try:
            results.append(ingest_file(p, raw_root=raw_root, school_year=SCHOOL_YEAR, period=period, catalogue=cat))
        except Exception as exc:
            if crashed is None:
                raise
            crashed[p.name] = f"{type(exc).__name__}: {exc}"
    mark_superseded(results, cat)
    return validate_collection(results, school_year=SCHOOL_YEAR, period=period, catalogue=cat)


# ---- changes to the frames (one value each, unless the case says why) ------------------------

def set_cell(book: Book, sheet_id: str, row: int, field_id: str, value) -> None:
    """Put `value` in one cell (a column the frame lacks is added, blank elsewhere)."""
    df = book.tables[sheet_id]
    if field_id not in df:
        df[field_id] = None
    df[field_id] = df[field_id].astype(object)
    df.at[row, field_id] = value


def append_copy(book: Book, sheet_id: str, row: int) -> None:
    """A duplicated row, as when a school pastes a row twice."""
    df = book.tables[sheet_id]
    book.tables[sheet_id] = pd.concat([df, df.iloc[[row]]], ignore_index=True)


def consistent_pid(book: Book, sheet_id: str, row: int) -> str:
    """Re-derive a row's personal ID from its sex and birth date, keeping its serial."""
    df = book.tables[sheet_id]
    old = str(df.at[row, "personal_id"])
    return pid(df.at[row, "sex"], df.at[row, "birth_date"].year, int(old[-6:]))


def set_birth(book: Book, sheet_id: str, row: int, date: dt.date) -> None:
    """Change a person's birth date; the personal ID follows (digits 4–6 encode the year),
    so the case isolates the age rules from the ID rules."""
    set_cell(book, sheet_id, row, "birth_date", date)
    book.tables[sheet_id].at[row, "personal_id"] = consistent_pid(book, sheet_id, row)


def set_grade(book: Book, row: int, grade: str) -> None:
    """Move a learner to another grade, on-age for it (birth date and ID follow)."""
    set_cell(book, "learners", row, "grade", grade)
    old = book.tables["learners"].at[row, "birth_date"]
    set_birth(book, "learners", row, old.replace(year=START_YEAR - _age(book.level, grade)))


def fill_class(book: Book, class_code: str, n: int, first: int = 100) -> list[int]:
    """Replace the learners of one class by `n` on-age learners; returns their row indices."""
    df = book.tables["learners"]
    grade = book.tables["classes"].set_index("class_code").at[class_code, "grade"]
    keep = df[df["class_code"] != class_code]
    new = pd.DataFrame([learner(book.level, grade, class_code, first + k) for k in range(n)])
    for col in df.columns:  # end-of-year columns of the canonical frame
        if col not in new:
            new[col] = df[df["class_code"] == class_code][col].iloc[0]
    book.tables["learners"] = pd.concat([keep, new[df.columns]], ignore_index=True)
    return list(range(len(keep), len(keep) + n))


# ---- openpyxl edits ------------------------------------------------------------------------

def header_col(ws, header: str, row: int = 1) -> int:
    for c in range(1, ws.max_column + 1):
        if ws.cell(row, c).value == header:
            return c
    raise KeyError(header)


def delete_sheet(name: str):
    def edit(wb):
        del wb[name]
    return edit


def delete_column(sheet: str, header: str):
    def edit(wb):
        ws = wb[sheet]
        ws.delete_cols(header_col(ws, header))
    return edit


def rename_header(sheet: str, old: str, new: str):
    def edit(wb):
        ws = wb[sheet]
        ws.cell(1, header_col(ws, old)).value = new
    return edit


def add_column(sheet: str, header: str, values: Iterable = ()):
    def edit(wb):
        ws = wb[sheet]
        c = ws.max_column + 1
        ws.cell(1, c).value = header
        for r, v in enumerate(values, start=2):
            ws.cell(r, c).value = v
    return edit


def set_school_value(header: str, value):
    """Set the 'Giá trị' cell of a row of the key/value Truong sheet."""
    def edit(wb):
        ws = wb["Truong"]
        for r in range(1, ws.max_row + 1):
            if ws.cell(r, 1).value == header:
                ws.cell(r, 2).value = value
                return
        raise KeyError(header)
    return edit


def set_number(sheet: str, header: str, data_row: int, number: int | float):
    """Overwrite a data cell (0-based row under a row-1 header) with a number, as Excel
    stores an ID typed into a General cell."""
    def edit(wb):
        ws = wb[sheet]
        ws.cell(2 + data_row, header_col(ws, header)).value = number
    return edit


def set_datetime(sheet: str, header: str, data_row: int, value: dt.datetime):
    """A real Excel date cell (the template writes dates as text)."""
    def edit(wb):
        ws = wb[sheet]
        c = ws.cell(2 + data_row, header_col(ws, header))
        c.value = value
        c.number_format = "dd/mm/yyyy"
    return edit


def rename_sheet(old: str, new: str):
    def edit(wb):
        wb[old].title = new
    return edit
