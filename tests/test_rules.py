"""Every rule of the catalogue (`schemas/rules.yaml`), as its spec: the canonical workbook of a
school level passes; a copy with one value changed fails with exactly that rule, at the right
sheet, Excel row and column, with its severity and a Vietnamese message quoting the value;
several bad cells give several rows; blanks, "NA", unaccented labels and code-vs-label
spellings behave as a school would expect.

Speed. Reading and checking a workbook has a fixed cost whatever its size (sheet by sheet,
column by column), so a file per case (~300) would take minutes. Instead:
- all cases of a period go through ONE ingest_file → mark_superseded → validate_collection run
  (fixtures_rules.run; GX is imported once and validates each sheet once for the collection),
  beside the canonical workbooks, which must stay clean there; a few cases that once disturbed
  other schools run in a second, small collection;
- cases that only touch some rows are *packed* into a shared workbook when their rows do not
  meet (a case's footprint = the rows it changes + the rows it expects issues on; a change to a
  class also claims that class's learners). In a packed file each case is judged on its own rows,
  and any issue on a row no case claims fails every case of the file — so "no other issue"
  still holds per file. Structure, whole-sheet and whole-school cases get a file of their own.

Canonical rows the cases refer to (fixtures_rules.py):
  TH learners   0–2 class 1A (grade 01), 3–5 class 3A (03), 6–8 class 5A (05); even rows boys
  THCS learners 0–1 6A, 2–3 7A, 4–5 8A, 6–7 9A (grade 9 graduates at cuoi_nam); even rows boys
  MN learners   0–3 NT1 (16, age group 03), 4–7 MG5 (17, age group 06)
  staff         0 principal (01/01), 1–2 teachers (03, women born 1985), 3 teacher "tổ trưởng"
                (position 03), 4 accountant (group 02, position 15)
"""
from __future__ import annotations

import datetime as dt
import functools
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import pytest
from openpyxl.utils import get_column_letter

import fixtures_rules as fx
from edustat.submissions import ISSUE_COLUMNS
from edustat.workbook import MINISTRY_EXPORT, ExportStyle
from fixtures_rules import SCHOOL_YEAR, Book, canonical, set_cell
from schemas import load_contract
from schemas.rules import load_rules

C = load_contract()
CAT = load_rules()
LEVELS = ("MN", "TH", "THCS")
PERIODS = ("dau_nam", "cuoi_nam")

# The severities the catalogue promises (rules.yaml families + overrides), restated as spec.
FAMILY_SEVERITY = {"required": "error", "code": "error", "format": "error", "padded": "notice",
                   "near": "warning", "said": "warning", "ambiguous": "error"}
SEVERITY_EXCEPTIONS = {
    "student_personal_id_required": "warning",  # a completion KPI, not a blocker
    "student_student_code_format": "warning",  # 10 digits observed, not regulated [INF]
    "student_nationality_code": "warning",
    "student_policy_group_code": "warning",
    "student_title_code": "warning",
    "student_graduation_rank_code": "warning",  # ranks of QĐ 11/2006 are [INF]
    "staff_subject_code": "warning",
    "staff_extra_duty_code": "warning",
    "staff_training_standard_code": "warning",
}

# Rules this module does not exercise, and where they are covered instead.
NOT_TESTED_HERE = {
    "student_code_unique_city": "stage d (cross_school): SQL over the stored collection, run by "
                                "edustat.store.cross_school_issues from pipeline.load_all, not by "
                                "validate_collection — store / flow tests",
    "student_personal_id_unique_city": "stage d (cross_school), store.cross_school_issues — store / flow tests",
    "student_identity_duplicate_city": "stage d (cross_school), store.cross_school_issues — store / flow tests",
    "staff_personal_id_unique_city": "stage d (cross_school), store.cross_school_issues — store / flow tests",
    **{rid: "stage e (cross_period): edustat.periods against earlier collections in core_* — tests/test_cross_period.py"
       for rid in ("student_flow_identity", "student_vanished", "student_promoted_not_up", "student_retained_moved",
                   "student_leaver_still_present", "staff_training_lowered", "school_learners_swing",
                   "school_classes_swing", "school_staff_swing")},
    "school_school_code_required": "unreachable by design: a blank Mã trường stops the file at the "
                                   "structure stage with file_school_code_missing (case school_code_blank)",
    "school_education_level_required": "unreachable by design: a blank Cấp học stops the file with "
                                       "file_level_unknown (case school_education_level_blank)",
    "school_education_level_code": "unreachable by design: an unknown Cấp học stops the file with "
                                   "file_level_unknown (case school_education_level_unknown)",
    "file_sheet_duplicate": "tests/test_bad_inputs.py (kinds duplicate_learner_sheets, duplicate_school_sheets)",
    "file_sheet_empty": "tests/test_bad_inputs.py (kind header_only_learners)",
    "file_not_certified": "only with config require_certification: tests/test_certification.py",
    "file_invisible_chars": "tests/test_bad_inputs.py (kind school_code_zero_width) and test_reader",
}

# Source bugs these cases found (all fixed since; the cases stay as regression tests). A case
# whose `bug` is set here would be a strict xfail if it were reopened.
BUG_SCHOOL_CAST = ("FIXED: the Truong sheet is validated on its *cast* values (collect._structure keeps only "
                   "values that cast; build_check_frames rebuilds the school row from fr.school): an "
                   "unknown code / bad number / bad school year is reported as 'Thiếu …' (_required) and a "
                   "bad flag not at all — school _code/_format rules never fire")
BUG_SCHOOL_PADDED = ("FIXED: collect._structure discards the problems cast_key_values returns, so a Mã trường "
                     "re-padded with a leading zero is changed silently (school_school_code_padded never fires)")
BUG_FLAG = ("FIXED: transforms.cast fills an unreadable 0/1 value with 0 and check_frame restores the "
            "submitted text only where the typed value is NA — never after fillna(0) — so 'abc' in a "
            "0/1 column is silently read as 0 (không) and no *_format rule fires for flags")
BUG_STATUS_CASCADE = ("FIXED: status_date is required 'when status not in [01]'; the GX row condition "
                      "status != \"01\" is true for a blank or unknown status, so one bad Trạng thái also "
                      "raises a spurious 'Thiếu Ngày trạng thái'")
BUG_COMPLETED_GRADE_CASCADE = ("FIXED: a blank 'Hoàn thành chương trình lớp học' is cast to 0 and "
                               "checks._end_of_year then judges the promoted pupil as not completed: a "
                               "spurious student_promotion_consistent on top of the missing-value error")
BUG_SCALE_SYNONYMS = ("FIXED: student_result_scale accepts only the scale's labels and rank numbers "
                      "(collect.scales → CodeList.labels; checks._end_of_year) and ignores the synonyms "
                      "schemas/codelists/synonyms.yaml declares for RATING_TT22 / CONDUCT_TT58 / LEARNING_TT58 "
                      "('T', 'K', 'TB' …) — so does transforms.derive.derive_learners: those synonyms are "
                      "dead data and a common abbreviation is a blocking error")
BUG_CONDITIONAL_COLUMN_MISSING = ("FIXED: since the end-of-year results became required only 'when status in "
                                  "[enrolled]', collect._structure skips file_column_missing for them "
                                  "(`and not r.when_field`): a missing 'Kết quả lên lớp' column gives one "
                                  "student_outcome_required per learner, with no column letter, instead of one "
                                  "structure message (submission-workbook.md: one message per missing column)")
BUG_RESULT_SCALE_FIELD = ("FIXED: student_result_scale is catalogued on field 'conduct' only, so a wrong *learning* "
                          "value is reported in the Rèn luyện column quoting the conduct value ('Tốt') "
                          "instead of the bad Học tập value")


# ---------------------------------------------------------------------------------------------
# Expectations and cases
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Exp:
    """One expected issue row. A table cell is (sheet id, 0-based data row, field); a Truong
    value is ("school", field); file-level issues give sheet_name / excel_row / column."""

    rule: str
    severity: str
    sheet: str | None = None
    row: int | None = None
    field: str | None = None
    value: str | None = None
    says: tuple[str, ...] = ()  # other fragments the message must contain
    sheet_name: str | None = None
    excel_row: object = ...
    column: object = ...


@dataclass
class Case:
    id: str
    level: str
    period: str
    change: Callable[[Book], None] | None
    expect: tuple[Exp, ...]
    bug: str | None = None
    solo: bool = False  # needs a workbook of its own
    raw: bytes | None = None  # not a workbook: these bytes under `suffix`
    suffix: str = ".xlsx"
    twin: str | None = None  # "same_school": an older, different file | "identical": a later byte copy
    alone: bool = False  # validated in a collection of its own, beside clean bystanders only


CASES: list[Case] = []


def case(id_: str, level: str, change, *expect: Exp, period: str = "dau_nam", bug: str | None = None, **kw) -> None:
    assert all(c.id != id_ for c in CASES), id_
    CASES.append(Case(id_, level, period, change, tuple(expect), bug, **kw))


def do(*changes) -> Callable[[Book], None]:
    def apply(book: Book) -> None:
        for ch in changes:
            ch(book)
    return apply


def cell(sheet: str, row: int, field_id: str, value):
    return lambda b: set_cell(b, sheet, row, field_id, value)


def school_values(**values):
    return lambda b: b.school.update(values)


def post(*edits):
    return lambda b: b.post.extend(edits)


def severity(rule_id: str) -> str:
    return SEVERITY_EXCEPTIONS.get(rule_id) or FAMILY_SEVERITY[rule_id.rsplit("_", 1)[1]]


def fam(sheet: str, field_id: str, family: str, row: int | None = None, value: str | None = None, **kw) -> Exp:
    rid = CAT.family_id(sheet, field_id, family)
    return Exp(rid, severity(rid), sheet, row, field_id, value, **kw)


def E(rule: str, sev: str, sheet: str | None = None, row: int | None = None, field_id: str | None = None,
      value: str | None = None, **kw) -> Exp:
    return Exp(rule, sev, sheet, row, field_id, value, **kw)


def FILE(rule: str, sev: str, sheet_name: str | None = None, column=None, **kw) -> Exp:
    return Exp(rule, sev, sheet_name=sheet_name, excel_row=None, column=column, **kw)


def dmy(d: dt.date) -> str:
    return d.strftime("%d/%m/%Y")


def PID(level: str, row: int, sheet: str = "learners") -> str:
    return (fx.learners(level) if sheet == "learners" else fx.staff(level)).at[row, "personal_id"]


# ---- where a family case is exercised: the level, the period, and a row ----------------------

CANDIDATE_ROWS = {
    ("learners", "TH"): range(9), ("learners", "THCS"): range(8), ("learners", "MN"): range(8),
    ("staff", "TH"): (1, 2, 3, 4), ("staff", "THCS"): (1, 2, 3, 4), ("staff", "MN"): (1, 2, 3, 4),  # 0: principal
    ("classes", "TH"): range(3), ("classes", "THCS"): range(4), ("classes", "MN"): range(2),
    ("rooms", "TH"): range(2), ("rooms", "MN"): range(3),
}
FIELD_ROWS = {  # rows where the field makes sense
    ("learners", "graduation_rank"): (6, 7), ("learners", "graduated"): (6, 7),  # grade 9
    ("staff", "training_level"): (1, 2, 3), ("staff", "subject"): (1, 2, 3),  # teachers
}
_used: Counter = Counter()


def site(sheet_id: str, f, level: str | None = None, rows=None) -> tuple[str, str, int | None]:
    """(level, period, row) for a family case on field `f`: the first level whose workbook has
    the field, dau_nam unless the field is end-of-year only, and the least used candidate row
    (so cases spread over the rows and pack together)."""
    level = level or next(lv for lv in ("TH", "THCS", "MN") if lv in f.levels)
    period = "dau_nam" if "dau_nam" in f.periods else "cuoi_nam"
    if sheet_id == "school":
        return level, period, None
    rows = rows or FIELD_ROWS.get((sheet_id, f.id)) or CANDIDATE_ROWS[(sheet_id, level)]
    row = min(rows, key=lambda r: (_used[(level, period, sheet_id, r)], r))
    _used[(level, period, sheet_id, row)] += 1
    return level, period, row


def fields_of(family: str):
    for sheet in C.sheets:
        for f in sheet.fields:
            rid = CAT.family_id(sheet.id, f.id, family)
            if rid in CAT and CAT[rid].family == family:
                yield sheet, f, rid


def class_learner_rows(level: str, class_row: int) -> list[int]:
    code = fx.classes(level).at[class_row, "class_code"]
    ls = fx.learners(level)
    return list(ls.index[ls["class_code"] == code])


# ---------------------------------------------------------------------------------------------
# Families, generated over every field of the contract
# ---------------------------------------------------------------------------------------------

# --- required: the cell left blank (with what makes a conditional requirement apply) -----------
REQUIRED_SETUP = {
    ("learners", "status_date"): [("status", "04")],
    ("learners", "dropout_reason"): [("status", "05"), ("status_date", "15/11/2022")],
    ("learners", "special_education"): [("disability_type", "01")],
    ("learners", "nutrition_status"): [("health_checked", 1)],
}
REQUIRED_WHERE = {("staff", "position"): ("TH", (4,)),  # group 02 (01 is the principal)
                  ("staff", "subject"): ("THCS", (1, 2, 3))}  # required for THCS teachers only
REQUIRED_BUG = {("learners", "status"): BUG_STATUS_CASCADE, ("learners", "completed_grade"): BUG_COMPLETED_GRADE_CASCADE}
REQUIRED_ELSEWHERE = {"school_school_code_required", "school_education_level_required"}
# A Truong number left blank or unreadable once broke every *other* school of the run (see
# test_one_school_does_not_change_another): those cases run beside clean bystanders only.

for sheet, f, rid in fields_of("required"):
    if rid in REQUIRED_ELSEWHERE:
        continue
    lv, rows = REQUIRED_WHERE.get((sheet.id, f.id), (None, None))
    level, period, row = site(sheet.id, f, lv, rows)
    also = []
    if sheet.id == "school":
        change = school_values(**{f.id: None})
    else:
        setup = [cell(sheet.id, row, k, v) for k, v in REQUIRED_SETUP.get((sheet.id, f.id), [])]
        change = do(*setup, cell(sheet.id, row, f.id, None))
    if (sheet.id, f.id) == ("classes", "class_code"):  # its learners now point at no class
        code = fx.classes(level).at[row, "class_code"]
        also = [E("student_class_exists", "error", "learners", r, "class_code", code) for r in class_learner_rows(level, row)]
    bug = REQUIRED_BUG.get((sheet.id, f.id))
    case(f"req_{sheet.id}_{f.id}", level, change, fam(sheet.id, f.id, "required", row), *also, period=period, bug=bug,
         alone=(sheet.id, f.type) == ("school", "int"))

# --- code: an unknown value "ZZZ" --------------------------------------------------------------
for sheet, f, rid in fields_of("code"):
    if rid == "school_education_level_code":
        continue
    level, period, row = site(sheet.id, f)
    change = school_values(**{f.id: "ZZZ"}) if sheet.id == "school" else cell(sheet.id, row, f.id, "ZZZ")
    bug = BUG_SCHOOL_CAST if sheet.id == "school" else (BUG_STATUS_CASCADE if rid == "student_status_code" else None)
    case(f"code_{sheet.id}_{f.id}", level, change, fam(sheet.id, f.id, "code", row, "ZZZ"), period=period, bug=bug)

# --- format: a value of the wrong shape ------------------------------------------------------------
FORMAT_BAD = {"date": "31/02/2016", "int": "abc", "flag": "abc", "school_year": "2022/23", "id": "12345"}
for sheet, f, rid in fields_of("format"):
    level, period, row = site(sheet.id, f)
    bad = "74718OO1" if rid == "school_school_code_format" else FORMAT_BAD[f.type]
    change = school_values(**{f.id: bad}) if sheet.id == "school" else cell(sheet.id, row, f.id, bad)
    bug = BUG_FLAG if f.type == "flag" else (BUG_SCHOOL_CAST if sheet.id == "school" and f.type != "id" else None)
    case(f"fmt_{sheet.id}_{f.id}", level, change, fam(sheet.id, f.id, "format", row, bad), period=period, bug=bug,
         alone=(sheet.id, f.type) == ("school", "int"))

# --- padded: an ID Excel stored as a number, so its leading zero is gone ------------------------
case("pad_learners_personal_id", "TH", post(fx.set_number("HocSinh", "Số định danh cá nhân", 0, int(PID("TH", 0)))),
     fam("learners", "personal_id", "padded", 0, PID("TH", 0)[1:]))
case("pad_learners_student_code", "TH", post(fx.set_number("HocSinh", "Mã định danh Bộ GD&ĐT", 1, 740100002)),
     fam("learners", "student_code", "padded", 1, "740100002"))
case("pad_staff_personal_id", "TH", post(fx.set_number("CanBo", "Số định danh cá nhân", 1, int(PID("TH", 1, "staff")))),
     fam("staff", "personal_id", "padded", 1, PID("TH", 1, "staff")[1:]))
# the brief's "7471800": 7 digits of an 8-digit ID read as a lost leading zero, like every ID field
case("pad_school_school_code", "TH", school_values(school_code="7471800"),
     fam("school", "school_code", "padded", None, "7471800"), bug=BUG_SCHOOL_PADDED, solo=True)


def _ids_as_numbers(book: Book) -> None:
    book.style = ExportStyle(ids_as_numbers=True, template=False)
    book.school.update(school_year=SCHOOL_YEAR, period=book.period)


# a whole export with IDs as numbers: one notice per personal ID (all start 074), no error
case("pad_every_personal_id_as_number", "TH", _ids_as_numbers,
     *[fam("learners", "personal_id", "padded", r, PID("TH", r)[1:]) for r in range(9)],
     *[fam("staff", "personal_id", "padded", r, PID("TH", r, "staff")[1:]) for r in range(5)])

# ---------------------------------------------------------------------------------------------
# Edge cases of the families: what must be accepted, how blanks and "NA" behave
# ---------------------------------------------------------------------------------------------

ACCEPTED = {  # case → cells (sheet, row, field, spelling) that must raise nothing; level TH
    # sex spellings alternate boys (even rows) and girls, so the ID's 4th digit still agrees
    "sex": [("learners", r, "sex", v) for r, v in enumerate(["Nam", "Nữ", "nam", "Nu", "NAM", "nữ", "1", "2", "01 - Nam"])],
    "ethnicity": [("learners", r, "ethnicity", v) for r, v in enumerate(["Kinh", "kinh", "1", "01 - Kinh", "Việt", "KINH"])],
    "status": [("learners", r, "status", v) for r, v in enumerate(["Đang học", "Dang hoc", "1", "dang hoc"])],
    "entry_type": [("learners", r, "entry_type", v) for r, v in enumerate(["Lên lớp", "len lop", "4"])],
    "grade": [("learners", 0, "grade", "1"), ("learners", 1, "grade", "01 - Khối 1"),
              ("learners", 3, "grade", "Khối 3"), ("learners", 4, "grade", "Khoi 3"), ("learners", 5, "grade", "Lớp 3")],
    # the learner's Lớp may hold the class name, another case, stray spaces
    "class_code": [("learners", 3, "class_code", "Lớp 3A"), ("learners", 4, "class_code", "3a"),
                   ("learners", 5, "class_code", " 3A ")],
    "personal_id": [("learners", 0, "personal_id", "074 216 001 001"), ("learners", 1, "personal_id", "074-316-001-002")],
    "birth_date": [("learners", 0, "birth_date", "2016-02-02"), ("learners", 1, "birth_date", "2/3/2016"),
                   ("learners", 2, "birth_date", "02.04.2016")],
    "nationality": [("learners", r, "nationality", v) for r, v in enumerate(["Việt Nam", "VN", "704"])],
    "staff_position": [("staff", 0, "position", "HT")],
    "staff_group": [("staff", 1, "staff_group", "Giáo viên"), ("staff", 2, "staff_group", "GV")],
    "staff_training_level": [("staff", 1, "training_level", "Đại học sư phạm"), ("staff", 2, "training_level", "ĐHSP")],
    "staff_contract_type": [("staff", 1, "contract_type", "Viên chức/Công chức HĐLV không xác định thời hạn"),
                            ("staff", 2, "contract_type", "7")],
    "staff_status": [("staff", 0, "status", "Đang làm việc"), ("staff", 1, "status", "dang cong tac")],
    "staff_sex": [("staff", 0, "sex", "Nam"), ("staff", 1, "sex", "Nu")],
    "class_grade": [("classes", 0, "grade", "Khối 1"), ("classes", 1, "grade", "khoi 3"), ("classes", 2, "grade", "5")],
    "class_flags": [("classes", 0, "two_sessions", "Có"), ("classes", 1, "two_sessions", "x"),
                    ("classes", 2, "boarding", "Không")],
    "class_mixed": [("classes", 0, "mixed", "0.0")],
    "room_type": [("rooms", 1, "room_type", "Phòng y tế")],
}
for name, cells in ACCEPTED.items():
    case(f"ok_{name}", "TH", do(*[cell(*x) for x in cells]))

case("ok_school_labels_unaccented", "TH", school_values(
    ownership="cong lap", education_level="Tiểu học", region="Trung du, đồng bằng, thành phố",
    national_standard="Chưa đạt chuẩn quốc gia", province_code="Tỉnh Bình Dương", period="Đầu năm",
    school_year="2022 - 2023", two_sessions="x", internet="Có", mains_power="1", satellite_sites="0"), solo=True)
case("ok_mn_labels", "MN", do(cell("classes", 0, "mn_age_group", "25-36 tháng"), cell("rooms", 0, "care_level", "Nhà trẻ"),
                                cell("staff", 1, "mn_care_level", "Mẫu giáo"), cell("learners", 4, "grade", "Lớp mẫu giáo")))
case("ok_excel_date_cell", "TH", post(fx.set_datetime("HocSinh", "Ngày sinh", 0, dt.datetime(2016, 2, 2))))
case("ok_unaccented_header", "TH", post(fx.rename_header("HocSinh", "Giới tính", "Gioi tinh"),
                                         fx.rename_header("CanBo", "Nhóm cán bộ", "NHOM CAN BO (*)")))
case("ok_sheet_alias", "TH", post(fx.rename_sheet("HocSinh", "Danh sach hoc sinh"), fx.rename_sheet("Lop", "Lớp học")))
case("ok_template_newer", "TH", school_values(template_version="2023.1"), solo=True)
case("ok_ministry_export_labels", "THCS", lambda b: (setattr(b, "style", MINISTRY_EXPORT),
                                                     b.school.update(school_year=SCHOOL_YEAR, period=b.period)),
     # labels for every code, title and numbering rows, alias headers; IDs are numbers there,
     # so each personal ID (074…) loses its leading zero: a notice each, nothing else
     *[fam("learners", "personal_id", "padded", r, PID("THCS", r)[1:]) for r in range(8)],
     *[fam("staff", "personal_id", "padded", r, PID("THCS", r, "staff")[1:]) for r in range(5)])

SEX_BAD = ((0, "X"), (8, "3"))
case("code_learners_sex_several", "TH", do(*[cell("learners", r, "sex", v) for r, v in SEX_BAD], cell("learners", 4, "sex", "Nam giới?")),
     *[fam("learners", "sex", "code", r, v) for r, v in SEX_BAD],
     fam("learners", "sex", "near", 4, "Nam giới?"))  # a near miss of one entry: read as Nam, said
case("code_learners_ethnicity_na", "TH", cell("learners", 2, "ethnicity", "NA"), fam("learners", "ethnicity", "code", 2, "NA"))
case("code_learners_nationality_na", "TH", cell("learners", 5, "nationality", "N/A"),
     fam("learners", "nationality", "code", 5, "N/A"))
case("code_classes_grade_outside_subset", "TH", cell("classes", 2, "grade", "10"),  # in DM_KHOI, not a school grade
     fam("classes", "grade", "code", 2, "10"))
case("code_learners_grade_label_of_other_level", "TH", cell("learners", 7, "grade", "Khối 10"),
     fam("learners", "grade", "code", 7, "Khối 10"))
case("ok_staff_position_labels", "TH", do(cell("staff", 0, "position", "Hiệu trưởng"),
                                           cell("staff", 3, "position", "Tổ trưởng chuyên môn"),
                                           cell("staff", 4, "position", "Nhân viên kế toán")))
# the rules the cascade bugs above hide, where the cascade cannot happen (a status date is given;
# the pupil is not promoted)
case("code_learners_status_with_date", "TH", do(cell("learners", 3, "status", "Chuyển đi"), cell("learners", 3, "status_date", "15/11/2022")),
     fam("learners", "status", "code", 3, "Chuyển đi"))
case("req_learners_status_with_date", "TH", do(cell("learners", 4, "status", None), cell("learners", 4, "status_date", "15/11/2022")),
     fam("learners", "status", "required", 4))
case("req_learners_completed_grade_not_promoted", "TH",
     do(cell("learners", 2, "completed_grade", None), cell("learners", 2, "outcome", "3")),
     fam("learners", "completed_grade", "required", 2), period="cuoi_nam")
case("req_learners_whitespace_only", "TH", cell("learners", 6, "full_name", "   "), fam("learners", "full_name", "required", 6))
case("req_learners_personal_id_mn_optional", "MN", cell("learners", 0, "personal_id", None))
case("req_learners_personal_id_thcs", "THCS", cell("learners", 3, "personal_id", None),
     fam("learners", "personal_id", "required", 3))
case("req_learners_status_date_enrolled", "TH", cell("learners", 0, "status_date", None))  # status 01: not required
case("req_learners_status_date_given", "TH", do(cell("learners", 1, "status", "04"), cell("learners", 1, "status_date", "15/11/2022")))
case("req_learners_dropout_reason_enrolled", "TH", cell("learners", 2, "dropout_reason", None))
for r, status in ((3, "09"), (4, "12")):
    case(f"req_learners_dropout_reason_status_{status}", "TH",
         do(cell("learners", r, "status", status), cell("learners", r, "status_date", "15/11/2022")),
         fam("learners", "dropout_reason", "required", r))
case("req_learners_dropout_reason_given", "TH",
     do(cell("learners", 5, "status", "05"), cell("learners", 5, "status_date", "15/11/2022"),
        cell("learners", 5, "dropout_reason", "Xa trường, đi lại khó khăn")))
case("req_learners_special_education_given", "TH",
     do(cell("learners", 7, "disability_type", "Khuyết tật vận động"), cell("learners", 7, "special_education", "Hòa nhập")))
case("req_learners_entry_type_cuoi_nam", "TH", cell("learners", 0, "entry_type", None), period="cuoi_nam")
case("req_staff_position_teacher", "TH", cell("staff", 1, "position", None))  # a teacher's position may be blank
case("req_staff_training_level_group02", "TH", cell("staff", 4, "training_level", None))
case("req_staff_subject_th_teacher", "TH", cell("staff", 2, "subject", None))  # required only in THCS
case("req_learners_several", "TH", do(*[cell("learners", r, "full_name", None) for r in (1, 4, 7)]),
     *[fam("learners", "full_name", "required", r) for r in (1, 4, 7)])


def blank_column(sheet_id: str, field_id: str):
    def change(b: Book) -> None:
        b.tables[sheet_id][field_id] = None
    return change


# a column left blank in every row (a realistic MN school has no personal IDs at all)
case("req_learners_sex_none_at_all", "TH", blank_column("learners", "sex"),
     *[fam("learners", "sex", "required", r) for r in range(9)], solo=True)
case("req_learners_personal_id_mn_none_at_all", "MN", blank_column("learners", "personal_id"), solo=True)
case("req_rooms_temporary_none_at_all", "TH", blank_column("rooms", "temporary"),
     *[fam("rooms", "temporary", "required", r) for r in range(2)], solo=True)
case("fmt_learners_absent_days_none_at_all", "THCS", blank_column("learners", "absent_days"), period="cuoi_nam", solo=True)
# end-of-year results are owed by learners still enrolled, not by those who left
case("req_learners_results_of_leaver", "TH", do(cell("learners", 8, "status", "04"), cell("learners", 8, "status_date", "15/03/2023"),
                                                 cell("learners", 8, "year_result", None), cell("learners", 8, "completed_grade", None),
                                                 cell("learners", 8, "outcome", None)), period="cuoi_nam")
case("req_learners_results_of_leaver_thcs", "THCS", do(cell("learners", 3, "status", "05"),
                                                        cell("learners", 3, "status_date", "15/03/2023"),
                                                        cell("learners", 3, "dropout_reason", "01"),
                                                        cell("learners", 3, "conduct", None), cell("learners", 3, "learning", None),
                                                        cell("learners", 3, "outcome", None)), period="cuoi_nam")

case("fmt_learners_student_code_long", "TH", cell("learners", 8, "student_code", "74010000011"),
     fam("learners", "student_code", "format", 8, "74010000011"))
case("fmt_learners_birth_date_words", "TH", cell("learners", 3, "birth_date", "mùng 2 tháng 2"),
     fam("learners", "birth_date", "format", 3, "mùng 2 tháng 2"))
case("fmt_classes_mixed_negative", "TH", cell("classes", 1, "mixed", "-1"), fam("classes", "mixed", "format", 1, "-1"))
case("fmt_rooms_fraction", "TH", cell("rooms", 1, "temporary", "1.5"), fam("rooms", "temporary", "format", 1, "1.5"))

# ---------------------------------------------------------------------------------------------
# Personal IDs, codes, dates (row stage, specific rules)
# ---------------------------------------------------------------------------------------------
BAD_PIDS = ((0, "0742160010011"), (3, "07431400100A"), (6, "12345"))
case("student_personal_id_format_several", "TH", do(*[cell("learners", r, "personal_id", v) for r, v in BAD_PIDS]),
     *[E("student_personal_id_format", "error", "learners", r, "personal_id", v) for r, v in BAD_PIDS])
P1, P2, P4, P5, P7 = (PID("TH", r) for r in (1, 2, 4, 5, 7))
case("student_personal_id_province", "TH", cell("learners", 1, "personal_id", "999" + P1[3:]),
     E("student_personal_id_province", "error", "learners", 1, "personal_id", "999" + P1[3:]))
case("student_personal_id_province_ha_noi", "TH", cell("learners", 2, "personal_id", "001" + P2[3:]))
case("student_personal_id_sex_century", "TH", cell("learners", 4, "personal_id", P4[:3] + "3" + P4[4:]),  # a boy
     E("student_personal_id_sex_century", "error", "learners", 4, "personal_id", P4[:3] + "3" + P4[4:]))
case("student_personal_id_sex_century_by_sex", "TH", cell("learners", 5, "sex", "Nam"),  # the ID says girl
     E("student_personal_id_sex_century", "error", "learners", 5, "personal_id", P5))
case("student_personal_id_birth_year", "TH", cell("learners", 7, "personal_id", P7[:4] + "15" + P7[6:]),
     E("student_personal_id_birth_year", "error", "learners", 7, "personal_id", P7[:4] + "15" + P7[6:]))
P0 = PID("TH", 0)  # 074216001001, a boy born 2016; row 2 is a boy born 2016 too
case("student_personal_id_unique", "TH", cell("learners", 2, "personal_id", P0),
     E("student_personal_id_unique", "error", "learners", 0, "personal_id", P0),
     E("student_personal_id_unique", "error", "learners", 2, "personal_id", P0))
case("student_personal_id_blank_twice_is_no_duplicate", "TH",
     do(cell("learners", 6, "personal_id", None), cell("learners", 8, "personal_id", None)),
     fam("learners", "personal_id", "required", 6), fam("learners", "personal_id", "required", 8))
SC0 = fx.learners("TH").at[0, "student_code"]
case("student_code_unique", "TH", cell("learners", 1, "student_code", SC0),
     E("student_code_unique", "error", "learners", 0, "student_code", SC0),
     E("student_code_unique", "error", "learners", 1, "student_code", SC0))
# an impossible age also fails the age-for-grade warning: both are true of the row
case("student_birth_date_range_future", "TH", lambda b: fx.set_birth(b, "learners", 3, dt.date(2023, 6, 1)),
     E("student_birth_date_range", "error", "learners", 3, "birth_date", "01/06/2023"),
     E("student_age_for_grade", "warning", "learners", 3, "birth_date", "01/06/2023", says=("-1",)))
case("student_birth_date_range_old", "TH", lambda b: fx.set_birth(b, "learners", 8, dt.date(1990, 6, 1)),
     E("student_birth_date_range", "error", "learners", 8, "birth_date", "01/06/1990"),
     E("student_age_for_grade", "warning", "learners", 8, "birth_date", "01/06/1990", says=("32",)))

S1, S3 = PID("TH", 1, "staff"), PID("TH", 3, "staff")  # a woman born 1985; a man born 1982
case("staff_personal_id_format_several", "TH",
     do(cell("staff", 1, "personal_id", "74185900002X"), cell("staff", 3, "personal_id", "0741")),
     E("staff_personal_id_format", "error", "staff", 1, "personal_id", "74185900002X"),
     E("staff_personal_id_format", "error", "staff", 3, "personal_id", "0741"))
case("staff_personal_id_province", "TH", cell("staff", 1, "personal_id", "000" + S1[3:]),
     E("staff_personal_id_province", "error", "staff", 1, "personal_id", "000" + S1[3:]))
case("staff_personal_id_sex_century", "TH", cell("staff", 3, "personal_id", S3[:3] + "1" + S3[4:]),
     E("staff_personal_id_sex_century", "error", "staff", 3, "personal_id", S3[:3] + "1" + S3[4:]))
case("staff_personal_id_birth_year", "TH", cell("staff", 4, "personal_id", PID("TH", 4, "staff")[:4] + "58" + PID("TH", 4, "staff")[6:]),
     E("staff_personal_id_birth_year", "error", "staff", 4, "personal_id",
       PID("TH", 4, "staff")[:4] + "58" + PID("TH", 4, "staff")[6:]))
case("staff_personal_id_unique", "TH", cell("staff", 2, "personal_id", S1),  # rows 1–2: same sex and year
     E("staff_personal_id_unique", "error", "staff", 1, "personal_id", S1),
     E("staff_personal_id_unique", "error", "staff", 2, "personal_id", S1))
case("staff_code_unique", "TH", cell("staff", 2, "staff_code", "CB002"),
     E("staff_code_unique", "error", "staff", 1, "staff_code", "CB002"),
     E("staff_code_unique", "error", "staff", 2, "staff_code", "CB002"))
case("staff_birth_date_range_young", "TH", lambda b: fx.set_birth(b, "staff", 1, dt.date(2006, 3, 3)),  # 16
     E("staff_birth_date_range", "error", "staff", 1, "birth_date", "03/03/2006"))
case("staff_birth_date_range_old", "TH", lambda b: fx.set_birth(b, "staff", 2, dt.date(1955, 3, 3)),  # 67
     E("staff_birth_date_range", "error", "staff", 2, "birth_date", "03/03/1955"))
case("staff_birth_date_range_edges", "TH", do(lambda b: fx.set_birth(b, "staff", 3, dt.date(2004, 3, 3)),  # 18
                                               lambda b: fx.set_birth(b, "staff", 4, dt.date(1957, 3, 3))))  # 65

case("class_code_unique", "TH", lambda b: fx.append_copy(b, "classes", 0),
     E("class_code_unique", "error", "classes", 0, "class_code", "1A"),
     E("class_code_unique", "error", "classes", 3, "class_code", "1A"))
case("room_type_unique", "TH", lambda b: fx.append_copy(b, "rooms", 0),
     E("room_type_unique", "error", "rooms", 0, "room_type", "01"),
     E("room_type_unique", "error", "rooms", 2, "room_type", "01"))
# canonical MN has room type 01 twice, once per care level: not a duplicate; the same level is
case("room_type_unique_mn", "MN", lambda b: fx.append_copy(b, "rooms", 1),
     E("room_type_unique", "error", "rooms", 1, "room_type", "01"),
     E("room_type_unique", "error", "rooms", 3, "room_type", "01"))

# ---------------------------------------------------------------------------------------------
# School sheet (cross-row) and structure (stage a)
# ---------------------------------------------------------------------------------------------
case("school_commune_in_district", "TH", school_values(commune_code="00001"),
     E("school_commune_in_district", "error", "school", None, "commune_code", "00001", says=("718",)), solo=True)
case("school_district_in_province", "TH", school_values(province_code="01"),
     E("school_district_in_province", "error", "school", None, "district_code", "718", says=("01",)), solo=True)
case("school_district_and_commune_elsewhere", "TH", school_values(district_code="001"),  # Ba Đình (Hà Nội): both break
     E("school_district_in_province", "error", "school", None, "district_code", "001", says=("74",)),
     E("school_commune_in_district", "error", "school", None, "commune_code", "25747", says=("001",)), solo=True)
case("school_school_code_nine_digits", "TH", school_values(school_code="747180011"),
     E("school_school_code_format", "error", "school", None, "school_code", "747180011"), solo=True)

TRUONG = C.sheet("school").name
case("school_code_blank", "TH", school_values(school_code=None), FILE("file_school_code_missing", "error", TRUONG), solo=True)
case("school_education_level_blank", "TH", school_values(education_level=None),
     E("file_level_unknown", "error", "school", None, "education_level"), solo=True)
case("school_education_level_unknown", "TH", school_values(education_level="ZZZ"),
     E("file_level_unknown", "error", "school", None, "education_level", "ZZZ"), solo=True)
case("file_template_stale", "TH", school_values(template_version="2021.1"),
     E("file_template_stale", "error", "school", None, "template_version", "2021.1", says=(C.version,)), solo=True)
case("file_year_mismatch", "TH", school_values(school_year="2021-2022"),
     E("file_year_mismatch", "error", "school", None, "school_year", "2021-2022", says=(SCHOOL_YEAR,)), solo=True)
case("file_period_mismatch", "TH", school_values(period="Cuối năm"),
     E("file_period_mismatch", "error", "school", None, "period", "cuoi_nam", says=("dau_nam",)), solo=True)
case("file_sheet_missing_canbo", "TH", post(fx.delete_sheet("CanBo")),
     FILE("file_sheet_missing", "error", "CanBo", says=("CanBo", "Cán bộ, giáo viên, nhân viên")))
case("file_sheet_missing_rooms_dau_nam", "MN", post(fx.delete_sheet("PhongHoc")),
     FILE("file_sheet_missing", "error", "PhongHoc", says=("PhongHoc",)))
case("file_sheet_missing_truong", "TH", post(fx.delete_sheet("Truong")),
     FILE("file_sheet_missing", "error", TRUONG, says=(TRUONG,)), FILE("file_school_code_missing", "error"))
case("file_column_missing", "TH", post(fx.delete_column("HocSinh", "Giới tính")),
     FILE("file_column_missing", "error", "HocSinh", says=("Giới tính", "HocSinh")))
case("file_column_missing_personal_id_th", "TH", post(fx.delete_column("HocSinh", "Số định danh cá nhân")),
     FILE("file_column_missing", "error", "HocSinh", says=("Số định danh cá nhân",)))
case("file_column_missing_personal_id_mn", "MN", post(fx.delete_column("HocSinh", "Số định danh cá nhân")))
case("file_column_missing_conditional", "TH", post(fx.delete_column("HocSinh", "Ngày trạng thái"),
                                                    fx.delete_column("HocSinh", "Lý do thôi học")))
case("file_column_missing_optional", "TH", post(fx.delete_column("HocSinh", "Quốc tịch")))
case("file_column_missing_end_of_year", "THCS", post(fx.delete_column("HocSinh", "Kết quả lên lớp")),
     FILE("file_column_missing", "error", "HocSinh", says=("Kết quả lên lớp",)), period="cuoi_nam",
     bug=BUG_CONDITIONAL_COLUMN_MISSING)
# issue 13: 'Xếp loại tốt nghiệp' is an optional column — a workbook without it is complete
case("ok_no_graduation_rank_column", "THCS", post(fx.delete_column("HocSinh", "Xếp loại tốt nghiệp")), period="cuoi_nam",
     solo=True)
EXTRA_COL = get_column_letter(len(C.sheet("learners").fields_for(("TH",), "dau_nam")) + 1)
case("file_column_unknown", "TH", post(fx.add_column("HocSinh", "Ghi chú", ["con thương binh"])),
     FILE("file_column_unknown", "notice", "HocSinh", column=EXTRA_COL, says=("Ghi chú", "HocSinh")))
case("file_header_duplicate", "TH", post(fx.add_column("HocSinh", "Họ tên", ["Tên khác"] * 9)),
     FILE("file_header_duplicate", "warning", "HocSinh", says=("Họ tên",)))
case("file_same_school_twice", "TH", None,
     FILE("file_same_school_twice", "error", says=("file_same_school_twice.xlsx", "file_same_school_twice__twin.xlsx")),
     twin="same_school")
case("file_duplicate_submission", "TH", None,
     FILE("file_duplicate_submission", "notice", value="2",
          says=("file_duplicate_submission.xlsx", "file_duplicate_submission__twin.xlsx")),
     twin="identical")
case("file_unreadable_empty", "TH", None, FILE("file_unreadable", "error", says=("tệp rỗng",)), raw=b"")
case("file_unreadable_pdf", "TH", None, FILE("file_unreadable", "error", says=("không phải tệp Excel",)),
     raw=b"%PDF-1.4\n", suffix=".pdf")

# ---------------------------------------------------------------------------------------------
# Cross-row rules within a school (stage c)
# ---------------------------------------------------------------------------------------------
case("student_class_exists", "TH", cell("learners", 0, "class_code", "9Z"),
     E("student_class_exists", "error", "learners", 0, "class_code", "9Z"))
case("student_class_exists_several", "TH", do(cell("learners", 1, "class_code", "9Z"), cell("learners", 7, "class_code", "Lớp 9")),
     E("student_class_exists", "error", "learners", 1, "class_code", "9Z"),
     E("student_class_exists", "error", "learners", 7, "class_code", "Lớp 9"))
case("student_grade_matches_class", "TH", cell("learners", 3, "grade", "04"),  # on-age for 4 too (one early)
     E("student_grade_matches_class", "error", "learners", 3, "grade", "04", says=("3A", "03")))
case("student_grade_in_school_levels", "TH", lambda b: fx.set_grade(b, 0, "06"),  # a grade-6 pupil in a primary school
     E("student_grade_in_school_levels", "error", "learners", 0, "grade", "06", says=("TH",)),
     E("student_grade_matches_class", "error", "learners", 0, "grade", "06", says=("1A", "01")))


def _grade6_class(b: Book) -> None:
    set_cell(b, "classes", 0, "grade", "06")
    for r in (0, 1, 2):
        fx.set_grade(b, r, "06")


case("student_grade_in_school_levels_class", "TH", _grade6_class,
     *[E("student_grade_in_school_levels", "error", "learners", r, "grade", "06") for r in (0, 1, 2)])
case("student_grade_matches_class_label", "TH", cell("learners", 6, "grade", "Khối 4"),
     E("student_grade_matches_class", "error", "learners", 6, "grade", "Khối 4"))


def _mixed(mixed: int):
    """Lớp ghép: class 3A recorded as grade 04 with `mixed` grades; its pupils in grades 4 and 5."""
    def change(b: Book) -> None:
        set_cell(b, "classes", 1, "grade", "04")
        set_cell(b, "classes", 1, "mixed", mixed)
        for r, g in ((3, "04"), (4, "05"), (5, "04")):
            fx.set_grade(b, r, g)
    return change


case("student_grade_mixed_class", "TH", _mixed(2))
case("student_grade_mixed_class_not_declared", "TH", _mixed(0),
     E("student_grade_matches_class", "error", "learners", 4, "grade", "05", says=("3A", "04")))
case("student_grade_mixed_mn", "MN", do(cell("classes", 1, "mixed", 2), lambda b: fx.set_grade(b, 4, "16")))

# age for grade: on-age = grade + 5; tolerated from one year early to three years late
for r, grade in ((3, 3), (6, 5)):
    for age in (grade + 3, grade + 4, grade + 8, grade + 9):
        d = fx.learners("TH").at[r, "birth_date"].replace(year=2022 - age)
        bad = not (grade + 4 <= age <= grade + 8)
        exp = [E("student_age_for_grade", "warning", "learners", r, "birth_date", dmy(d), says=(str(age),))] if bad else []
        case(f"student_age_for_grade_{age}_in_grade_{grade}", "TH", lambda b, r=r, d=d: fx.set_birth(b, "learners", r, d), *exp)
D7 = fx.learners("MN").at[4, "birth_date"].replace(year=2015)  # 7 in mẫu giáo
case("student_age_for_grade_mn_7", "MN", lambda b: fx.set_birth(b, "learners", 4, D7),
     E("student_age_for_grade", "warning", "learners", 4, "birth_date", dmy(D7), says=("7",)))
case("student_age_for_grade_mn_7_disabled", "MN",
     do(lambda b: fx.set_birth(b, "learners", 5, D7.replace(month=5)), cell("learners", 5, "disability_type", "01"),
        cell("learners", 5, "special_education", "0")))

# class sizes, counted on enrolled learners: TH 35, TH lớp ghép 15, THCS 45, MN by age group
case("class_size_cap_th_36", "TH", lambda b: fx.fill_class(b, "3A", 36),
     E("class_size_cap", "warning", "classes", 1, "class_code", "3A", says=("36", "35")))
case("class_size_cap_th_35", "TH", lambda b: fx.fill_class(b, "3A", 35))


def _36_one_left(b: Book) -> None:
    rows = fx.fill_class(b, "3A", 36)
    set_cell(b, "learners", rows[-1], "status", "04")  # chuyển đi: not counted
    set_cell(b, "learners", rows[-1], "status_date", "15/11/2022")


case("class_size_cap_th_counts_enrolled_only", "TH", _36_one_left)
case("class_size_cap_th_mixed_16", "TH", do(cell("classes", 1, "mixed", 2), lambda b: fx.fill_class(b, "3A", 16)),
     E("class_size_cap", "warning", "classes", 1, "class_code", "3A", says=("16", "15")))
case("class_size_cap_thcs_46", "THCS", lambda b: fx.fill_class(b, "6A", 46),
     E("class_size_cap", "warning", "classes", 0, "class_code", "6A", says=("46", "45")))
case("class_size_cap_thcs_45", "THCS", lambda b: fx.fill_class(b, "6A", 45))
case("class_size_cap_mn_26", "MN", lambda b: fx.fill_class(b, "NT1", 26),  # age group 03 (25–36 months): 25
     E("class_size_cap", "warning", "classes", 0, "class_code", "NT1", says=("26", "25")))
case("class_size_cap_mn_25", "MN", lambda b: fx.fill_class(b, "NT1", 25))

case("class_mn_age_group_matches_grade", "MN", cell("classes", 0, "mn_age_group", "06"),
     E("class_mn_age_group_matches_grade", "error", "classes", 0, "mn_age_group", "06", says=("nhà trẻ",)))
case("class_mn_age_group_matches_grade_mg", "MN", cell("classes", 1, "mn_age_group", "01"),
     E("class_mn_age_group_matches_grade", "error", "classes", 1, "mn_age_group", "01", says=("mẫu giáo",)))

# the principal rules look at the whole staff sheet: a file each
case("staff_principal_missing", "TH", cell("staff", 0, "position", "02"),
     E("staff_principal_missing", "warning", "staff", 0, "position", "02"), solo=True)
case("staff_principal_missing_transferred", "TH", cell("staff", 0, "status", "02"),  # đã chuyển đi
     E("staff_principal_missing", "warning", "staff", 0, "position", "01"), solo=True)
case("staff_principal_multiple", "TH", cell("staff", 1, "position", "01"),
     E("staff_principal_multiple", "error", "staff", 0, "position", "01", says=("2",)),
     E("staff_principal_multiple", "error", "staff", 1, "position", "01", says=("2",)), solo=True)
case("staff_principal_multiple_one_left", "TH", do(cell("staff", 1, "position", "01"), cell("staff", 1, "status", "02")),
     solo=True)

# ---- end of year ------------------------------------------------------------------------------
case("student_result_scale_conduct_tt22", "THCS", cell("learners", 0, "conduct", "Trung bình"),  # grade 6: TT 22
     E("student_result_scale", "error", "learners", 0, "conduct", "Trung bình", says=("TT 22/2021",)), period="cuoi_nam")
case("student_result_scale_conduct_tt58", "THCS", cell("learners", 5, "conduct", "Đạt"),  # grade 8: TT 58
     E("student_result_scale", "error", "learners", 5, "conduct", "Đạt", says=("TT 58/2011",)), period="cuoi_nam")
case("student_result_scale_learning_tt58", "THCS", cell("learners", 4, "learning", "Đạt"),
     E("student_result_scale", "error", "learners", 4, "learning", "Đạt", says=("TT 58/2011",)),
     period="cuoi_nam", bug=BUG_RESULT_SCALE_FIELD)
case("student_result_scale_accepts_spellings", "THCS",
     do(cell("learners", 0, "conduct", "tot"), cell("learners", 1, "learning", "Dat"), cell("learners", 4, "conduct", "1"),
        cell("learners", 5, "learning", "Trung binh"), cell("learners", 6, "conduct", "KHÁ")), period="cuoi_nam")
# the abbreviations schemas/codelists/synonyms.yaml lists for these scales (T, K, Đ, CĐ / TB, Y …)
case("student_result_scale_accepts_abbreviations", "THCS",
     do(cell("learners", 0, "conduct", "T"), cell("learners", 2, "conduct", "K"), cell("learners", 4, "conduct", "TB"),
        cell("learners", 6, "conduct", "K")), period="cuoi_nam", bug=BUG_SCALE_SYNONYMS)
# grade 8 in 2022-2023 is on TT 58/2011, whose promotion conditions are [INF]: a warning
case("student_promotion_consistent_tt58", "THCS", cell("learners", 4, "learning", "Yếu"),
     E("student_promotion_consistent_tt58", "warning", "learners", 4, "outcome", "1"), period="cuoi_nam")
case("student_promotion_consistent_tt22", "THCS", cell("learners", 1, "learning", "Chưa đạt"),
     E("student_promotion_consistent", "error", "learners", 1, "outcome", "1"), period="cuoi_nam")
case("student_promotion_consistent_several", "THCS",
     do(cell("learners", 3, "conduct", "Chưa đạt"), cell("learners", 5, "learning", "Kém")),  # 7: TT 22, 8: TT 58
     E("student_promotion_consistent", "error", "learners", 3, "outcome", "1"),
     E("student_promotion_consistent_tt58", "warning", "learners", 5, "outcome", "1"), period="cuoi_nam")
# primary: the principal may promote a pupil who has not completed the grade (TT 27/2020) [INF]
case("student_promotion_consistent_th", "TH", cell("learners", 0, "year_result", "4"),
     E("student_promotion_consistent_th", "warning", "learners", 0, "outcome", "1"), period="cuoi_nam")
case("student_promotion_consistent_th_not_completed", "TH", cell("learners", 1, "completed_grade", 0),
     E("student_promotion_consistent_th", "warning", "learners", 1, "outcome", "1"), period="cuoi_nam")
case("student_promotion_consistent_disabled", "THCS",  # TT 22/2021 Art. 12: the principal decides
     do(cell("learners", 0, "learning", "Chưa đạt"), cell("learners", 0, "disability_type", "Khuyết tật vận động"),
        cell("learners", 0, "special_education", "Hòa nhập")), period="cuoi_nam")
case("student_promotion_consistent_not_promoted", "THCS",
     do(cell("learners", 5, "learning", "Yếu"), cell("learners", 5, "outcome", "Lưu ban")), period="cuoi_nam")
case("student_promotion_consistent_pass_mark", "THCS",  # Đạt (TT 22) and Trung bình (TT 58) pass
     do(cell("learners", 2, "learning", "Đạt"), cell("learners", 5, "learning", "Trung bình")), period="cuoi_nam")
case("student_absent_days_max", "THCS", cell("learners", 2, "absent_days", 46),
     E("student_absent_days_max", "error", "learners", 2, "absent_days", "46"), period="cuoi_nam")
case("student_absent_days_max_several", "THCS", do(cell("learners", 0, "absent_days", 60), cell("learners", 7, "absent_days", "47")),
     E("student_absent_days_max", "error", "learners", 0, "absent_days", "60"),
     E("student_absent_days_max_tt58", "warning", "learners", 7, "absent_days", "47"), period="cuoi_nam")  # grade 9: TT 58 [INF]
case("student_absent_days_max_tt58", "THCS", cell("learners", 5, "absent_days", 50),
     E("student_absent_days_max_tt58", "warning", "learners", 5, "absent_days", "50"), period="cuoi_nam")
# the 45-absence rule is lower-secondary only (TT 22/2021 Art. 12): promoted primary pupils are fine
case("student_absent_days_max_primary", "TH", do(cell("learners", 0, "absent_days", 60), cell("learners", 8, "absent_days", 46)),
     period="cuoi_nam")
case("student_absent_days_max_disabled", "THCS",
     do(cell("learners", 1, "absent_days", 70), cell("learners", 1, "disability_type", "Khuyết tật vận động"),
        cell("learners", 1, "special_education", "Hòa nhập")), period="cuoi_nam")
case("student_absent_days_max_45", "THCS", cell("learners", 3, "absent_days", 45), period="cuoi_nam")
case("student_absent_days_max_not_promoted", "THCS",
     do(cell("learners", 1, "absent_days", 46), cell("learners", 1, "outcome", "3")), period="cuoi_nam")
case("student_graduated_grade9", "THCS",
     do(cell("learners", 4, "graduated", 1), cell("learners", 4, "graduation_rank", "2")),
     E("student_graduated_grade9", "error", "learners", 4, "graduated", "1", says=("8",)), period="cuoi_nam")
# graduation conditions of 2022-2023 (QĐ 11/2006) are [INF]: a warning
case("student_graduation_promoted_not_promoted", "THCS", cell("learners", 6, "outcome", "3"),
     E("student_graduation_promoted", "warning", "learners", 6, "graduated", "1", says=("Lưu ban",)), period="cuoi_nam")
# Xếp loại tốt nghiệp is optional: a graduate without a rank is fine
case("ok_graduate_without_rank", "THCS", cell("learners", 7, "graduation_rank", None), period="cuoi_nam")
# TT 27/2020 grades (1–3 in 2022-23) owe a year result; grade 5 (TT 30/2014) does not
case("student_year_result_required_tt27", "TH", do(cell("learners", 1, "year_result", None), cell("learners", 7, "year_result", None)),
     E("student_year_result_required_tt27", "error", "learners", 1, "year_result", None), period="cuoi_nam")
case("student_completed_primary_grade5", "TH", cell("learners", 3, "completed_primary", 1),
     E("student_completed_primary_grade5", "error", "learners", 3, "completed_primary", "1"), period="cuoi_nam")
case("student_end_of_year_labels", "TH", do(cell("learners", 4, "year_result", "Hoàn thành tốt"),
                                             cell("learners", 5, "year_result", "HTT"), cell("learners", 6, "outcome", "Lên lớp"),
                                             cell("learners", 7, "title", "Học sinh tiên tiến")), period="cuoi_nam")


# ---------------------------------------------------------------------------------------------
# Packing: which cases share a workbook
# ---------------------------------------------------------------------------------------------

SOLO_SCHOOL_FIELDS = {"school_code", "school_year", "period", "education_level", "template_version",
                      "province_code", "district_code", "commune_code"}  # structure, or nested admin units


def _blank(v) -> bool:
    return v is None or (not isinstance(v, str) and pd.isna(v))


def footprint(c: Case) -> frozenset | None:
    """The rows a case owns — ("learners", 3), ("school", "ownership") … — or None when it
    needs a workbook of its own (structure, style, row count, whole-sheet rules)."""
    if c.solo or c.raw is not None or c.twin or c.change is None:
        return None
    before, book = canonical(c.level, c.period), canonical(c.level, c.period)
    c.change(book)
    if book.post or book.style != before.style:
        return None
    rows: set = set()
    for sid, df in book.tables.items():
        old = before.tables[sid]
        if len(df) != len(old):
            return None
        at = range(len(df))  # by label, as df.at[r, col] reads (a column at a time: ~50× faster)
        for col in set(df.columns) | set(old.columns):
            now = df[col].reindex(at).tolist() if col in df else [None] * len(df)
            was = old[col].reindex(at).tolist() if col in old else [None] * len(df)
            for r, (a, b) in enumerate(zip(now, was)):
                if not (_blank(a) and _blank(b)) and (_blank(a) or _blank(b) or a != b):
                    rows.add((sid, r))
    for k in set(book.school) | set(before.school):
        if book.school.get(k) != before.school.get(k):
            if k in SOLO_SCHOOL_FIELDS:
                return None
            rows.add(("school", k))
    for e in c.expect:
        if e.sheet is None:
            return None
        rows.add(("school", e.field) if e.sheet == "school" else (e.sheet, e.row))
    for sid, r in list(rows):  # a class's learners are judged against it
        if sid == "classes":
            rows.update(("learners", i) for i in class_learner_rows(c.level, r))
    return frozenset(rows)


@dataclass
class Slot:
    """Where a case's rows ended up: its workbook, and the rows it (and its neighbours) own."""

    file_name: str
    solo: bool
    owned: frozenset = frozenset()  # (sheet id, row | field) of this case
    claimed: frozenset = frozenset()  # … of every case in the file


RUNS = [(period, alone) for period in PERIODS for alone in (False, True)]


@functools.cache  # the collections and test_packed_cases_own_disjoint_rows ask for the same plan
def plan(period: str, alone: bool = False) -> list[tuple[str, list[Case], list[frozenset | None]]]:
    """Group a run's cases into workbooks: (file name, cases, footprints)."""
    files: list[tuple[str, list[Case], list]] = []
    packs: dict[str, list[tuple[list[Case], list]]] = {}
    for c in (x for x in CASES if x.period == period and x.alone == alone):
        fp = footprint(c)
        if fp is None:
            files.append((c.id + c.suffix, [c], [None]))
            continue
        for cases, fps in packs.setdefault(c.level, []):
            if all(fp.isdisjoint(other) for other in fps):
                cases.append(c)
                fps.append(fp)
                break
        else:
            packs[c.level].append(([c], [fp]))
    for level, groups in packs.items():
        for n, (cases, fps) in enumerate(groups):
            files.append((f"pack_{level}_{period}_{n:02d}.xlsx", cases, fps))
    return files


# ---------------------------------------------------------------------------------------------
# One collection run per period
# ---------------------------------------------------------------------------------------------

@dataclass
class Run:
    issues: pd.DataFrame
    layouts: dict[str, dict]  # file name → sheet id → SheetLayout
    slots: dict[str, Slot]  # case id → where it was written
    crashed: dict[str, str] = field(default_factory=dict)  # file name → what ingest_file raised


def canonical_name(level: str, period: str) -> str:
    return f"canonical_{level}_{period}.xlsx"


def _collect(tmp, period: str, alone: bool = False) -> Run:
    """One collection: the canonical workbooks (clean bystanders) and the run's cases."""
    inbox = tmp / (period + ("_alone" if alone else ""))
    inbox.mkdir()
    layouts: dict[str, dict] = {}
    slots: dict[str, Slot] = {}
    paths = []
    for i, level in enumerate(LEVELS):
        p = inbox / canonical_name(level, period)
        layouts[p.name] = fx.write(canonical(level, period, code=f"7471800{i + 1}"), p)
        paths.append(p)
    for k, (name, cases, fps) in enumerate(plan(period, alone)):
        p = inbox / name
        first = cases[0]
        if first.raw is not None:
            p.write_bytes(first.raw)
            paths.append(p)
            slots[first.id] = Slot(name, True)
            continue
        book = canonical(first.level, period, code=f"74{PERIODS.index(period) + 1}{int(alone)}{k:04d}")
        for c in cases:
            if c.change:
                c.change(book)
        layouts[name] = fx.write(book, p)
        paths.append(p)
        claimed = frozenset().union(*(fp for fp in fps if fp))
        for c, fp in zip(cases, fps):
            slots[c.id] = Slot(name, fp is None, fp or frozenset(), claimed)
        if first.twin:
            twin = inbox / f"{first.id}__twin.xlsx"
            if first.twin == "identical":
                twin.write_bytes(p.read_bytes())
                os.utime(twin, (p.stat().st_mtime + 3600,) * 2)  # the later copy
            else:
                other = canonical(first.level, period, code=book.school["school_code"])
                other.school["school_name"] += " (bản cũ)"
                fx.write(other, twin)
                os.utime(twin, (p.stat().st_mtime - 3600,) * 2)  # the older file
            layouts[twin.name] = layouts[name]
            paths.append(twin)
    crashed: dict[str, str] = {}  # a raising ingest is a bug of its case: the run goes on
    issues = fx.run(paths, period, raw_root=tmp / "raw", catalogue=CAT, crashed=crashed)
    return Run(issues, layouts, slots, crashed)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, bool], Run]:
    tmp = tmp_path_factory.mktemp("rules")
    return {(period, alone): _collect(tmp, period, alone) for period, alone in RUNS
            if any(c.period == period and c.alone == alone for c in CASES)}


def _none(v):
    return None if _blank(v) else v


def _where(e: Exp, layouts: dict) -> tuple:
    name = e.sheet_name if e.sheet is None else C.sheet(e.sheet).name
    if e.excel_row is not ...:
        row = e.excel_row
    elif e.sheet == "school":
        row = layouts["school"].field_rows[e.field]
    else:
        row = layouts[e.sheet].first_data_row + e.row
    if e.column is not ...:
        col = e.column
    else:
        col = "B" if e.sheet == "school" else layouts[e.sheet].columns[e.field]
    return (e.rule, name, row, col, e.severity)


def _cells(owned, layouts: dict) -> set[tuple]:
    """Owned rows as (sheet name, Excel row)."""
    out = set()
    for sid, r in owned:
        if sid == "school":
            out.add((C.sheet("school").name, layouts["school"].field_rows[r]))
        else:
            out.add((C.sheet(sid).name, layouts[sid].first_data_row + r))
    return out


def _key(r) -> tuple:
    return (r.rule_id, _none(r.sheet), _none(r.excel_row), _none(r.column), r.severity)


def _got(issues: pd.DataFrame) -> list[tuple]:
    return [_key(r) for r in issues.itertuples()]


def _of(run: Run, name: str) -> pd.DataFrame:
    return run.issues[run.issues["file_name"] == name]


def _at(issues: pd.DataFrame, cells: set[tuple]) -> pd.Series:
    return pd.Series([(_none(s), _none(r)) in cells for s, r in zip(issues["sheet"], issues["excel_row"])],
                     index=issues.index, dtype=bool)


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("period", PERIODS)
def test_canonical_workbook_is_clean(runs, level, period):
    """The canonical workbook of each level passes: no error, no warning, not even a notice
    (here in the collection of the period's cases, which must not disturb it)."""
    run = runs[(period, False)]
    assert canonical_name(level, period) not in run.crashed
    assert _got(_of(run, canonical_name(level, period))) == []


@pytest.mark.parametrize("level", LEVELS)
def test_one_school_does_not_change_another(runs, level):
    """The canonical workbooks validated beside the cases that leave a Truong number blank or
    unreadable: a school's result depends on its own file only. (Regression: in 02c5bc8
    collect.assemble built the collection's Truong rows with pd.DataFrame, one blank
    'Số điểm trường' made the column float, and every other school's 0 became a blocking
    school_satellite_sites_format error.)"""
    assert _got(_of(runs[("dau_nam", True)], canonical_name(level, "dau_nam"))) == []


@pytest.mark.parametrize(
    "c", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=c.bug, strict=True)] if c.bug and not c.bug.startswith("FIXED") else []) for c in CASES])
def test_rule(runs, c: Case):
    """Exactly the expected issue rows for the case's rows (its whole file when solo): rule,
    sheet, Excel row, column letter, severity; the value as submitted, quoted in a message
    with nothing left unfilled."""
    run = runs[(c.period, c.alone)]
    slot = run.slots[c.id]
    assert slot.file_name not in run.crashed, f"ingest_file raised: {run.crashed[slot.file_name]}"
    issues = _of(run, slot.file_name)
    layouts = run.layouts.get(slot.file_name, {})
    if slot.solo:
        mine = issues
        if c.twin:  # the copy / the older file of the school is set aside without a word
            assert _got(_of(run, f"{c.id}__twin.xlsx")) == []
    else:
        stray = issues[~_at(issues, _cells(slot.claimed, layouts))]
        assert _got(stray) == [], f"{slot.file_name}: issues on rows no case of the file owns"
        mine = issues[_at(issues, _cells(slot.owned, layouts))]
    assert sorted(_got(mine)) == sorted(_where(e, layouts) for e in c.expect)
    for e in c.expect:
        where = _where(e, layouts)
        hit = next(r for r in mine.itertuples() if _key(r) == where)
        assert hit.message and "{" not in hit.message and "{" not in (hit.fix or ""), hit.message
        if e.value is not None:
            assert str(_none(hit.value)) == e.value
            template = CAT[e.rule].message
            if "{value}" in template:  # quoted where the template quotes it
                assert (f"'{e.value}'" if "'{value}'" in template else e.value) in hit.message, hit.message
        for fragment in e.says:
            assert fragment in hit.message, hit.message
        if e.sheet not in (None, "school"):
            assert hit.field == e.field


def test_issue_rows_speak_the_catalogue(runs):
    """Every issue row: the ISSUE_COLUMNS, a catalogue rule at its severity, a filled-in message."""
    for run in runs.values():
        assert list(run.issues.columns) == ISSUE_COLUMNS
        for r in run.issues.itertuples():
            assert r.rule_id in CAT, r.rule_id
            assert r.severity == CAT[r.rule_id].severity
            assert r.message and "{" not in r.message


def test_packed_cases_own_disjoint_rows():
    for period, alone in RUNS:
        for name, cases, fps in plan(period, alone):
            owned = [fp for fp in fps if fp is not None]
            assert sum(map(len, owned)) == len(frozenset().union(*owned)), name


def _tested() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in CASES:
        for e in c.expect:
            out.setdefault(e.rule, []).append(c.id)
    return out


def test_every_catalogue_rule_is_tested_or_listed():
    """A new rule (or a new contract field that expands a family) cannot arrive silently."""
    tested = _tested()
    # how a coded cell was read (near / said / ambiguous) is one mechanism for every coded
    # field, proven per kind in tests/test_vocabulary.py; the file-level header readings too
    by_vocabulary = {r for r, rule in CAT.rules.items() if rule.family in ("near", "said", "ambiguous")}
    by_vocabulary |= {"file_header_near", "file_column_unread"}
    missing = sorted(r for r in CAT.rules if r not in tested and r not in NOT_TESTED_HERE and r not in by_vocabulary)
    assert missing == [], f"rules with neither a case here nor a NOT_TESTED_HERE entry: {missing}"


def test_not_tested_here_is_current():
    tested = _tested()
    assert sorted(r for r in NOT_TESTED_HERE if r not in CAT) == []
    assert sorted(r for r in NOT_TESTED_HERE if r in tested) == []
