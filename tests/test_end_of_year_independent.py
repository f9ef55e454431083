"""End of year on input the project did not write (issue 13).

Each workbook here is built cell by cell with openpyxl — not with edustat.synth, not with the
template writer, not with the contract's aliases: the headers are the words of
../shared/spec/submission-workbook.md, the values what a clerk types (`Hoàn thành tốt`, `Lên lớp`,
`Tốt`, `Khá`, `Giỏi`, `Thôi học kỳ 2`), the results on the scale each grade used in 2022-2023
(regulations.md §4.4: TH grades 1–3 TT 27/2020, 4–5 TT 30/2014 + TT 22/2016; THCS grades 6–7
TT 22/2021, 8–9 TT 58/2011). The staff sheet uses the words the current contract accepts for its
coded fields (another change widens that vocabulary; this module is about learners).

One clean workbook per level (MN, TH, THCS) goes through the real pipeline
(`pipeline.run_collection`: read → cast → GX row rules → cross-row rules → DuckDB load) and must
come out accepted with 0 errors; it holds over-absent promoted primary pupils, grade-9 graduates
without a `Xếp loại tốt nghiệp` column, dropouts with reasons, transfers, grade-5 completion and
a numbering row past column Z. Then each end-of-year rule kept as an error gets a negative case,
and each rule lowered to a warning ([INF] in regulations.md) is shown to warn, not block.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import openpyxl
import pytest
from openpyxl.utils import get_column_letter

from edustat.reader import _is_numbering, read_workbook

YEAR, PERIOD = "2022-2023", "cuoi_nam"
START = 2022
LEVEL_WORD = {"MN": "Mầm non", "TH": "Tiểu học", "THCS": "THCS"}
SCHOOL_CODE = {"MN": "74718101", "TH": "74718102", "THCS": "74718103"}
SCHOOL_NAME = {"MN": "Trường Mầm non Hoa Sen", "TH": "Trường Tiểu học Phú Hòa 2", "THCS": "Trường THCS Phú Hòa"}
LEVEL_DIGIT = {"MN": 1, "TH": 2, "THCS": 3}

# Columns a real export carries beside the contract's (regulations.md §5.1): kept as extras
EXPORT_EXTRAS = ["SĐT liên hệ", "Nơi sinh chi tiết", "Chỗ ở hiện nay", "Tên cha", "Nghề nghiệp cha",
                 "Năm sinh cha", "Tên mẹ", "Nghề nghiệp mẹ", "Năm sinh mẹ", "Ghi chú", "Người nhập liệu"]
COMMON = ["STT", "Mã định danh Bộ GD&ĐT", "Số định danh cá nhân", "Họ và tên", "Ngày sinh", "Giới tính", "Dân tộc",
          "Quốc tịch", "Mã lớp", "Khối", "Trạng thái", "Ngày trạng thái", "Lý do thôi học", "Loại khuyết tật",
          "Học chuyên biệt"]
END_OF_YEAR = {
    "MN": ["Khám sức khỏe", "Tình trạng dinh dưỡng", "Hoàn thành chương trình mầm non"],
    "TH": ["Kết quả cuối năm", "Hoàn thành chương trình lớp học", "Hoàn thành chương trình tiểu học", "Số ngày nghỉ",
           "Kết quả lên lớp", "Danh hiệu"],
    # no "Xếp loại tốt nghiệp": optional, and this school does not keep it
    "THCS": ["Rèn luyện / Hạnh kiểm", "Học tập / Học lực", "Số ngày nghỉ", "Kết quả lên lớp", "Tốt nghiệp THCS",
             "Danh hiệu"],
}


def learner_headers(level: str) -> list[str]:
    return COMMON + END_OF_YEAR[level] + EXPORT_EXTRAS


def personal_id(female: bool, birth_year: int, serial: int) -> str:
    """Digits 1–3 province of birth (074), 4 century+sex, 5–6 birth year (regulations.md §1.3)."""
    return f"074{(birth_year // 100 - 19) * 2 + int(female)}{birth_year % 100:02d}{serial:06d}"


# ---- the schools, as a clerk would fill them -------------------------------------------------------

GIVEN = ["An", "Bình", "Chi", "Dũng", "Giang", "Hải", "Hương", "Khánh", "Linh", "Minh", "Ngọc", "Phong", "Quỳnh",
         "Sơn", "Thảo", "Trung", "Uyên", "Vinh", "Xuân", "Yến"]


class School:
    def __init__(self, level: str):
        self.level = level
        self.classes: list[dict] = []
        self.learners: list[dict] = []
        self.staff: list[dict] = []

    def pupil(self, cls: str, grade, age: int, **cells) -> dict:
        n = len(self.learners) + 1
        female = n % 2 == 0
        year = START - age
        row = {
            "STT": n,
            "Mã định danh Bộ GD&ĐT": f"74{LEVEL_DIGIT[self.level]}{n:07d}",
            "Số định danh cá nhân": personal_id(female, year, LEVEL_DIGIT[self.level] * 10000 + n),
            "Họ và tên": ("Trần Thị " if female else "Nguyễn Văn ") + GIVEN[n % len(GIVEN)],
            # a real date cell for some, typed text for others, as clerks do both
            "Ngày sinh": dt.datetime(year, 1 + n % 12, 1 + n % 27) if n % 3 else f"{1 + n % 27:02d}/{1 + n % 12:02d}/{year}",
            "Giới tính": "Nữ" if female else "Nam",
            "Dân tộc": "Hoa" if n % 7 == 0 else "Kinh",
            "Quốc tịch": "Việt Nam",
            "Mã lớp": cls,
            "Khối": grade,
            "Trạng thái": "Đang học",
            "Tên cha": "Nguyễn Văn Tư", "Năm sinh cha": 1985, "Nghề nghiệp cha": "Công nhân",
            "SĐT liên hệ": "0912345678", "Người nhập liệu": "Cô Lan",
        }
        row.update(cells)
        self.learners.append(row)
        return row

    def member(self, group: str, position: str | None, female: bool, year: int, **cells) -> None:
        n = len(self.staff) + 1
        row = {
            "STT": n, "Mã cán bộ": f"CB{LEVEL_DIGIT[self.level]}{n:03d}",
            "Số định danh cá nhân": personal_id(female, year, 900000 + LEVEL_DIGIT[self.level] * 100 + n),
            "Họ và tên": ("Lê Thị " if female else "Phạm Văn ") + GIVEN[(n * 3) % len(GIVEN)],
            "Ngày sinh": f"{n + 2:02d}/03/{year}", "Giới tính": "Nữ" if female else "Nam", "Dân tộc": "Kinh",
            "Nhóm cán bộ": group, "Chức vụ": position,
            "Hình thức hợp đồng": "Viên chức/Công chức HĐLV không xác định thời hạn",
            "Trình độ đào tạo": "Đại học sư phạm" if group != "Nhân viên" else None,
            "Trạng thái": "Đang làm việc",
        }
        row.update(cells)
        self.staff.append(row)


def primary() -> School:
    s = School("TH")
    for code, name, grade in (("1A", "Lớp 1A", 1), ("3A", "Lớp 3A", 3), ("4A", "Lớp 4A", 4), ("5A", "Lớp 5A", 5)):
        s.classes.append({"Mã lớp": code, "Tên lớp": name, "Khối": grade, "Lớp ghép / ghép độ tuổi": 0,
                          "Học 2 buổi/ngày": 1, "Bán trú": 1, "Lớp chuyên biệt": 0, "Điểm trường": "Điểm chính"})
    done = {"Hoàn thành chương trình lớp học": 1, "Kết quả lên lớp": "Lên lớp"}
    for code, grade in (("1A", 1), ("3A", 3)):  # TT 27/2020
        s.pupil(code, grade, grade + 5, **done, **{"Kết quả cuối năm": "Hoàn thành xuất sắc", "Danh hiệu": "Học sinh xuất sắc",
                                                   "Số ngày nghỉ": 0})
        s.pupil(code, grade, grade + 5, **done, **{"Kết quả cuối năm": "Hoàn thành tốt", "Số ngày nghỉ": 2})
        # many absences, promoted: primary has no absence-based retention (§4.4)
        s.pupil(code, grade, grade + 5, **done, **{"Kết quả cuối năm": "Hoàn thành", "Số ngày nghỉ": 52})
    s.pupil("3A", 3, 8, **{"Kết quả cuối năm": "Chưa hoàn thành", "Hoàn thành chương trình lớp học": 0,
                           "Kết quả lên lớp": "Lưu ban", "Số ngày nghỉ": 61})
    for code, grade in (("4A", 4), ("5A", 5)):  # TT 30/2014 + TT 22/2016 in 2022-2023
        last = {"Hoàn thành chương trình tiểu học": 1} if grade == 5 else {"Hoàn thành chương trình tiểu học": 0}
        s.pupil(code, grade, grade + 5, **done, **last, **{"Kết quả cuối năm": "Hoàn thành tốt", "Số ngày nghỉ": 1})
        s.pupil(code, grade, grade + 5, **done, **last, **{"Kết quả cuối năm": "Hoàn thành", "Số ngày nghỉ": 47})
        s.pupil(code, grade, grade + 5, **done, **last, **{"Kết quả cuối năm": "Hoàn thành", "Số ngày nghỉ": 4})
    # grade 5 completion left blank for one pupil: the column is optional
    s.learners[-1]["Hoàn thành chương trình tiểu học"] = None
    # leavers: no results owed
    s.pupil("4A", 4, 9, **{"Trạng thái": "Thôi học kỳ 2", "Ngày trạng thái": "12/03/2023",
                           "Lý do thôi học": "Xa trường, đi lại khó khăn"})
    s.pupil("5A", 5, 10, **{"Trạng thái": "Chuyển đi kỳ 2", "Ngày trạng thái": "05/02/2023"})
    # a pupil who arrived in term 2 is enrolled: results owed
    s.pupil("5A", 5, 10, **done, **{"Trạng thái": "Chuyển đến kỳ 2", "Ngày trạng thái": "06/02/2023",
                                    "Kết quả cuối năm": "Hoàn thành", "Hoàn thành chương trình tiểu học": 1,
                                    "Số ngày nghỉ": 3})
    # a disabled pupil in inclusive education
    s.pupil("1A", 1, 6, **done, **{"Kết quả cuối năm": "Hoàn thành", "Số ngày nghỉ": 12,
                                   "Loại khuyết tật": "Khuyết tật nghe nói", "Học chuyên biệt": "Hòa nhập"})
    _staff(s, subject="Tiểu học")
    return s


def lower_secondary() -> School:
    s = School("THCS")
    for code, grade in (("6A", 6), ("7A", 7), ("8A", 8), ("9A", 9)):
        s.classes.append({"Mã lớp": code, "Tên lớp": f"Lớp {code}", "Khối": grade, "Lớp ghép / ghép độ tuổi": 0,
                          "Học 2 buổi/ngày": 0, "Bán trú": 0})
    up = {"Kết quả lên lớp": "Lên lớp"}
    for code, grade in (("6A", 6), ("7A", 7)):  # TT 22/2021: Tốt / Khá / Đạt / Chưa đạt
        s.pupil(code, grade, grade + 5, **up, **{"Rèn luyện / Hạnh kiểm": "Tốt", "Học tập / Học lực": "Tốt",
                                                 "Danh hiệu": "Học sinh xuất sắc", "Số ngày nghỉ": 0})
        s.pupil(code, grade, grade + 5, **up, **{"Rèn luyện / Hạnh kiểm": "Tốt", "Học tập / Học lực": "Khá",
                                                 "Danh hiệu": "Học sinh giỏi", "Số ngày nghỉ": 3})
        s.pupil(code, grade, grade + 5, **up, **{"Rèn luyện / Hạnh kiểm": "Khá", "Học tập / Học lực": "Đạt",
                                                 "Số ngày nghỉ": 45})
    s.pupil("7A", 7, 12, **{"Rèn luyện / Hạnh kiểm": "Đạt", "Học tập / Học lực": "Chưa đạt", "Số ngày nghỉ": 10,
                            "Kết quả lên lớp": "Rèn luyện hoặc kiểm tra lại trong hè"})
    s.pupil("6A", 6, 11, **{"Rèn luyện / Hạnh kiểm": "Khá", "Học tập / Học lực": "Đạt", "Số ngày nghỉ": 50,
                            "Kết quả lên lớp": "Lưu ban"})
    # TT 22/2021 Art. 12: a disabled pupil's promotion is the principal's decision
    s.pupil("6A", 6, 11, **up, **{"Rèn luyện / Hạnh kiểm": "Đạt", "Học tập / Học lực": "Chưa đạt", "Số ngày nghỉ": 48,
                                  "Loại khuyết tật": "Khuyết tật vận động", "Học chuyên biệt": "Hòa nhập"})
    for code, grade in (("8A", 8), ("9A", 9)):  # TT 58/2011: Tốt/Khá/Trung bình/Yếu; Giỏi/Khá/Trung bình/Yếu/Kém
        grad = {"Tốt nghiệp THCS": 1} if grade == 9 else {}
        s.pupil(code, grade, grade + 5, **up, **grad, **{"Rèn luyện / Hạnh kiểm": "Tốt", "Học tập / Học lực": "Giỏi",
                                                         "Danh hiệu": "Học sinh giỏi", "Số ngày nghỉ": 1})
        s.pupil(code, grade, grade + 5, **up, **grad, **{"Rèn luyện / Hạnh kiểm": "Khá", "Học tập / Học lực": "Khá",
                                                         "Danh hiệu": "Học sinh tiên tiến", "Số ngày nghỉ": 6})
        s.pupil(code, grade, grade + 5, **up, **grad, **{"Rèn luyện / Hạnh kiểm": "Trung bình",
                                                         "Học tập / Học lực": "Trung bình", "Số ngày nghỉ": 20})
    s.pupil("9A", 9, 14, **{"Rèn luyện / Hạnh kiểm": "Khá", "Học tập / Học lực": "Yếu", "Số ngày nghỉ": 9,
                            "Kết quả lên lớp": "Rèn luyện hoặc kiểm tra lại trong hè", "Tốt nghiệp THCS": 0})
    s.pupil("8A", 8, 13, **{"Trạng thái": "Thôi học kỳ 1", "Ngày trạng thái": "20/11/2022",
                            "Lý do thôi học": "Có hoàn cảnh kinh tế gia đình khó khăn"})
    s.pupil("9A", 9, 14, **{"Trạng thái": "Thôi học kỳ 2", "Ngày trạng thái": "01/04/2023",
                            "Lý do thôi học": "Chuyển sang học nghề"})
    s.pupil("7A", 7, 12, **{"Trạng thái": "Chuyển đi kỳ 1", "Ngày trạng thái": "15/12/2022"})
    s.pupil("8A", 8, 13, **up, **{"Trạng thái": "Chuyển đến kỳ 2", "Ngày trạng thái": "10/01/2023",
                                  "Rèn luyện / Hạnh kiểm": "Tốt", "Học tập / Học lực": "Khá", "Số ngày nghỉ": 2})
    _staff(s, subject="Toán")
    return s


def preschool() -> School:
    s = School("MN")
    s.classes.append({"Mã lớp": "NT1", "Tên lớp": "Nhóm trẻ 25-36 tháng", "Khối": "Nhà trẻ", "Nhóm tuổi (MN)": "25-36 tháng",
                      "Lớp ghép / ghép độ tuổi": 0, "Học 2 buổi/ngày": 1, "Bán trú": 1})
    s.classes.append({"Mã lớp": "MG5", "Tên lớp": "Lớp Lá 1", "Khối": "Mẫu giáo", "Nhóm tuổi (MN)": "5-6 tuổi",
                      "Lớp ghép / ghép độ tuổi": 0, "Học 2 buổi/ngày": 1, "Bán trú": 1})
    for _ in range(4):
        s.pupil("NT1", "Nhà trẻ", 2, **{"Khám sức khỏe": 1, "Tình trạng dinh dưỡng": "Bình thường"})
    for i in range(5):
        s.pupil("MG5", "Mẫu giáo", 5, **{"Khám sức khỏe": 1,
                                         "Tình trạng dinh dưỡng": "Bình thường" if i else "Suy dinh dưỡng thể nhẹ cân",
                                         "Hoàn thành chương trình mầm non": 1})
    s.learners[1]["Số định danh cá nhân"] = None  # not required in preschool
    s.pupil("MG5", "Mẫu giáo", 5, **{"Trạng thái": "Thôi học kỳ 2", "Ngày trạng thái": "03/03/2023",
                                     "Lý do thôi học": "Nguyên nhân khác"})
    s.pupil("NT1", "Nhà trẻ", 2, **{"Trạng thái": "Chuyển đi kỳ 2", "Ngày trạng thái": "15/02/2023"})
    _staff(s, care=True)
    return s


def _staff(s: School, subject: str | None = None, care: bool = False) -> None:
    mn = {"Dạy/quản lý nhà trẻ hay mẫu giáo": "Mẫu giáo"} if care else {}
    subj = {"Môn dạy": subject} if subject else {}
    s.member("Cán bộ quản lý", "Hiệu trưởng", False, 1972, **mn)
    s.member("Cán bộ quản lý", "Phó hiệu trưởng", True, 1978, **mn)
    s.member("Giáo viên", None, True, 1986, **mn, **subj)
    s.member("Giáo viên", "Tổ trưởng chuyên môn", True, 1983, **mn, **subj)
    s.member("Giáo viên", None, False, 1990, **{**mn, **({"Dạy/quản lý nhà trẻ hay mẫu giáo": "Nhà trẻ"} if care else {})},
             **subj)
    s.member("Nhân viên", "Nhân viên kế toán", True, 1993, **mn)


# ---- writing, with openpyxl only -----------------------------------------------------------------

NUMBERING = {  # how each school numbers its learner columns under the header
    "TH": lambda j: f"({j})",                 # (1) (2) … (32)
    "THCS": lambda j: get_column_letter(j),   # A B … Z AA AB …
    "MN": lambda j: str(j),                   # 1 2 … with the STT cell left blank
}
FIRST_COL = {"TH": 1, "THCS": 1, "MN": 2}  # the MN school's sheets start at column B


def truong_rows(level: str, **override) -> list[tuple[str, object]]:
    rows = {
        "Mã trường": SCHOOL_CODE[level], "Tên trường": SCHOOL_NAME[level], "Năm học": YEAR, "Kỳ báo cáo": "Cuối năm",
        "Cấp học": LEVEL_WORD[level], "Loại hình": "Công lập", "Mã tỉnh": "74", "Mã huyện": "718", "Mã xã": "25750",
        "Vùng": "Trung du, đồng bằng, thành phố", "Chuẩn quốc gia": "Mức độ 1" if level == "TH" else "0",
        "Số điểm trường (ngoài điểm chính)": 0,
    }
    rows.update(override)
    return list(rows.items())


def _table(ws, headers: list[str], rows: list[dict], *, first_col: int = 1, title: str | None = None,
           numbering=None) -> int:
    """Title rows, the header, an optional numbering row, the data. Returns the first data row."""
    r = 1
    if title:
        ws.cell(r, first_col, SCHOOL_NAME_TITLE)
        ws.cell(r + 1, first_col, title)
        r += 3  # a blank row before the header
    for j, h in enumerate(headers):
        ws.cell(r, first_col + j, h)
    r += 1
    if numbering is not None:
        for j in range(len(headers)):
            label = numbering(j + 1)
            if headers[j] == "STT" and numbering is NUMBERING["MN"]:
                continue  # the clerk left it blank
            ws.cell(r, first_col + j, label if not label.isdigit() else int(label))
        r += 1
    first = r
    for row in rows:
        for j, h in enumerate(headers):
            v = row.get(h)
            if v is not None:
                ws.cell(r, first_col + j, v)
        r += 1
    return first


SCHOOL_NAME_TITLE = "PHÒNG GIÁO DỤC VÀ ĐÀO TẠO THÀNH PHỐ THỦ DẦU MỘT"


def write_school(s: School, path: Path, truong: dict | None = None) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Truong"
    ws.append(["Chỉ tiêu", "Giá trị"])
    for k, v in truong_rows(s.level, **(truong or {})):
        ws.append([k, v])
    fc = FIRST_COL[s.level]
    lop_headers = ["Mã lớp", "Tên lớp", "Khối"] + (["Nhóm tuổi (MN)"] if s.level == "MN" else []) + [
        "Lớp ghép / ghép độ tuổi", "Học 2 buổi/ngày", "Bán trú", "Lớp chuyên biệt", "Điểm trường"]
    _table(wb.create_sheet("Lop"), lop_headers, s.classes, first_col=fc)
    _table(wb.create_sheet("HocSinh"), learner_headers(s.level), s.learners, first_col=fc,
           title=f"DANH SÁCH HỌC SINH CUỐI NĂM HỌC {YEAR}", numbering=NUMBERING[s.level])
    staff_headers = ["STT", "Mã cán bộ", "Số định danh cá nhân", "Họ và tên", "Ngày sinh", "Giới tính", "Dân tộc",
                     "Nhóm cán bộ", "Chức vụ", "Hình thức hợp đồng", "Trình độ đào tạo", "Môn dạy", "Trạng thái"]
    if s.level == "MN":
        staff_headers.remove("Môn dạy")
        staff_headers.append("Dạy/quản lý nhà trẻ hay mẫu giáo")
    _table(wb.create_sheet("CanBo"), staff_headers, s.staff, first_col=fc)
    wb.save(path)
    return path


BUILD = {"MN": preschool, "TH": primary, "THCS": lower_secondary}


def run(paths: list[Path], data: Path):
    """The real collection: read → cast → validate (GX) → load into DuckDB."""
    from edustat import pipeline, store
    from edustat.config import load_config

    cfg = load_config(None, data)
    con = store.connect(cfg.db_path)
    try:
        outcome = pipeline.run_collection(con, paths, cfg, YEAR, PERIOD, workers=1)
    finally:
        con.close()
    return outcome, cfg.db_path


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("eoy_clean")
    (root / "inbox").mkdir()
    paths = {lv: write_school(BUILD[lv](), root / "inbox" / f"{SCHOOL_CODE[lv]}_cuoi_nam.xlsx") for lv in BUILD}
    outcome, db = run(list(paths.values()), root / "data")
    return paths, outcome, db


# ---- the clean city ------------------------------------------------------------------------------

def test_numbering_rows_are_wide(clean):
    """The learner sheets are wider than 26 columns, so their numbering rows pass column Z."""
    paths, _, _ = clean
    for lv, path in paths.items():
        ws = openpyxl.load_workbook(path)["HocSinh"]
        assert ws.max_column >= 30, lv
        header_row = 4  # two title rows, a blank row, then the header
        labels = [ws.cell(header_row + 1, j).value for j in range(1, ws.max_column + 1)]
        assert any(v in ("AA", "(27)", 27) for v in labels), (lv, labels)


@pytest.mark.parametrize("level", ["MN", "TH", "THCS"])
def test_clean_end_of_year_workbook_is_accepted(clean, level):
    paths, outcome, _ = clean
    issues = outcome.issues[outcome.issues["file_name"] == paths[level].name]
    errors = issues[issues["severity"] == "error"]
    assert errors.empty, errors[["sheet", "excel_row", "column", "rule_id", "value", "message"]].to_string()
    warnings = issues[issues["severity"] == "warning"]
    assert warnings.empty, warnings[["sheet", "excel_row", "rule_id", "value", "message"]].to_string()
    # only notices: the export's extra columns (STT, Tên cha …)
    assert set(issues["rule_id"]) <= {"file_column_unknown"}, set(issues["rule_id"])
    sub = outcome.submissions.set_index("file_name").loc[paths[level].name]
    assert str(sub["status"]).startswith("accepted"), sub.to_dict()


@pytest.mark.parametrize("level", ["MN", "TH", "THCS"])
def test_every_learner_row_is_loaded_and_the_numbering_row_is_not(clean, level):
    paths, _, db = clean
    school = BUILD[level]()
    with duckdb.connect(str(db), read_only=True) as con:
        got = con.execute("select count(*) from core_learners where school_code = ? and school_year = ? and period = ?",
                          [SCHOOL_CODE[level], YEAR, PERIOD]).fetchone()[0]
    assert got == len(school.learners)
    parsed = read_workbook(paths[level])
    hs = parsed.sheets["learners"]
    assert hs.header_row == 4
    assert hs.skipped_rows == {5: "numbering"}
    assert hs.frame["excel_row"].tolist() == list(range(6, 6 + len(school.learners)))


def test_end_of_year_results_are_loaded_as_written(clean):
    """Spot check that the words were read as the codes they name (not merely not rejected)."""
    _, _, db = clean
    with duckdb.connect(str(db), read_only=True) as con:
        df = con.execute("select * from core_learners where school_year = ? and period = ?", [YEAR, PERIOD]).df()
    th = df[df["school_code"] == SCHOOL_CODE["TH"]]
    thcs = df[df["school_code"] == SCHOOL_CODE["THCS"]]
    assert (th["absent_days"].astype(float) > 45).sum() == 5  # 4 promoted + 1 retained
    assert th["completed_primary"].astype(float).fillna(0).sum() == 3
    grads = thcs[thcs["graduated"].astype(float).fillna(0) == 1]
    assert len(grads) == 3 and grads["graduation_rank"].isna().all()
    assert sorted(thcs["status"].dropna().unique()) == ["01", "04", "05", "06", "09"]


# ---- the rules that stay errors: one negative case each, and the [INF] ones warn ------------------

def _set(s: School, stt: int, **cells) -> None:
    row = next(r for r in s.learners if r["STT"] == stt)
    row.update(cells)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """The same schools with one defect per row, in one collection."""
    root = tmp_path_factory.mktemp("eoy_broken")
    (root / "inbox").mkdir()
    th, thcs = primary(), lower_secondary()
    # learner STT n is on Excel row 5 + n (data from row 6)
    _set(thcs, 1, **{"Số ngày nghỉ": 50})                           # grade 6 (TT 22) promoted, 50 absences
    _set(thcs, 4, **{"Kết quả lên lớp": None})                      # grade 7, enrolled, no outcome
    _set(thcs, 5, **{"Học tập / Học lực": "Chưa đạt"})             # grade 7 (TT 22) promoted, learning below Đạt
    _set(thcs, 6, **{"Rèn luyện / Hạnh kiểm": "Trung bình"})       # grade 7 on the TT 58 scale
    _set(thcs, 10, **{"Học tập / Học lực": "Đạt"})                 # grade 8 on the TT 22 scale
    _set(thcs, 11, **{"Tốt nghiệp THCS": 1})                       # grade 8 marked graduated
    _set(thcs, 12, **{"Số ngày nghỉ": 55})                          # grade 8 (TT 58) promoted, 55 absences [INF]
    _set(thcs, 13, **{"Kết quả lên lớp": "Lưu ban"})                # grade 9 graduate retained [INF]
    _set(thcs, 20, **{"Học tập / Học lực": "Yếu"})                  # grade 8 (TT 58) promoted, Yếu [INF]
    _set(th, 2, **{"Kết quả cuối năm": "Chưa hoàn thành", "Hoàn thành chương trình lớp học": 0})  # grade 1 promoted [INF]
    _set(th, 4, **{"Kết quả cuối năm": "Giỏi"})                     # grade 3: not a primary result
    _set(th, 10, **{"Hoàn thành chương trình tiểu học": 1})        # grade 4 completing primary
    paths = [write_school(th, root / "inbox" / "th.xlsx"), write_school(thcs, root / "inbox" / "thcs.xlsx")]
    outcome, _ = run(paths, root / "data")
    return outcome


def _found(outcome, file_name: str) -> set[tuple]:
    i = outcome.issues[outcome.issues["file_name"] == file_name]
    i = i[i["rule_id"] != "file_column_unknown"]
    return {(r.rule_id, int(r.excel_row), r.header, r.severity) for r in i.itertuples()}


def test_thcs_end_of_year_rules(broken):
    assert _found(broken, "thcs.xlsx") == {
        ("student_absent_days_max", 6, "Số ngày nghỉ", "error"),
        ("student_outcome_required", 9, "Kết quả lên lớp", "error"),
        ("student_promotion_consistent", 10, "Kết quả lên lớp", "error"),
        ("student_result_scale", 11, "Rèn luyện / Hạnh kiểm", "error"),
        ("student_result_scale", 15, "Học tập / Học lực", "error"),
        ("student_graduated_grade9", 16, "Tốt nghiệp THCS", "error"),
        ("student_absent_days_max_tt58", 17, "Số ngày nghỉ", "warning"),
        ("student_graduation_promoted", 18, "Tốt nghiệp THCS", "warning"),
        ("student_promotion_consistent_tt58", 25, "Kết quả lên lớp", "warning"),
    }


def test_th_end_of_year_rules(broken):
    assert _found(broken, "th.xlsx") == {
        ("student_promotion_consistent_th", 7, "Kết quả lên lớp", "warning"),
        ("student_year_result_code", 9, "Kết quả cuối năm", "error"),
        ("student_completed_primary_grade5", 15, "Hoàn thành chương trình tiểu học", "error"),
    }


# ---- the reader, on its own ----------------------------------------------------------------------

@pytest.mark.parametrize("row", [
    [get_column_letter(j) for j in range(1, 36)],                      # A … Z AA … AI
    [str(j) for j in range(1, 34)],                                     # 1 … 33
    [None, None] + [f"({j})" for j in range(1, 31)],                    # (1) … (30), from column C
    ["A", "B", "C"] + [str(j) for j in range(1, 30)],                   # the forms' A B C 1 2 3 …
    [None] + [str(j) for j in range(1, 12)] + [None] + [str(j) for j in range(13, 32)],  # a blank cell
    [None] + [str(j) for j in range(1, 12)] + [None] + [str(j) for j in range(12, 31)],  # … merged column
    [get_column_letter(j) for j in range(3, 40)],                       # C … AM: starts anywhere
])
def test_numbering_row_is_recognised(row):
    assert _is_numbering(row)


@pytest.mark.parametrize("row", [
    ["x", "x", "x", "x"],                                  # flags of a data row
    ["1", "Nguyễn Văn An", "2", "3"],
    ["01", "2", "3", "4"],                                 # a code, then numbers
    ["1", "3", "2"],
    ["3", "1"],
    ["1"],
    ["1", "A", "B"],                                       # numbers before letters
])
def test_data_row_is_not_numbering(row):
    assert not _is_numbering(row)


def test_wide_sheet_numbering_row_skipped_not_read(tmp_path):
    """A 35-column learner sheet starting at column D whose numbering row runs A … AI."""
    s = lower_secondary()
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "HocSinh"
    headers = learner_headers("THCS") + [f"Cột {k}" for k in range(35 - len(learner_headers("THCS")))]
    assert len(headers) == 35
    for j, h in enumerate(headers):
        ws.cell(2, 4 + j, h)
        ws.cell(3, 4 + j, get_column_letter(j + 1))
    for i, row in enumerate(s.learners):
        for j, h in enumerate(headers):
            if row.get(h) is not None:
                ws.cell(4 + i, 4 + j, row[h])
    wb.save(tmp_path / "wide.xlsx")
    hs = read_workbook(tmp_path / "wide.xlsx").sheets["learners"]
    assert hs.header_row == 2
    assert hs.skipped_rows == {3: "numbering"}
    assert len(hs.frame) == len(s.learners)
    assert hs.columns["student_code"] == "E"
    assert hs.extra_columns["Cột 0"] == get_column_letter(4 + headers.index("Cột 0"))
    assert hs.columns["title"] == get_column_letter(4 + headers.index("Danh hiệu"))
    assert hs.frame["student_code"].tolist() == [r["Mã định danh Bộ GD&ĐT"] for r in s.learners]


def test_numbering_row_after_a_blank_row(tmp_path):
    """Header, a blank row, then '(1) (2) …' across 32 columns: skipped; the data follow."""
    s = primary()
    headers = learner_headers("TH")
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "HocSinh"
    for j, h in enumerate(headers):
        ws.cell(1, 1 + j, h)
        ws.cell(3, 1 + j, f"({j + 1})")
    for i, row in enumerate(s.learners):
        for j, h in enumerate(headers):
            if row.get(h) is not None:
                ws.cell(4 + i, 1 + j, row[h])
    wb.save(tmp_path / "blank.xlsx")
    hs = read_workbook(tmp_path / "blank.xlsx").sheets["learners"]
    assert hs.skipped_rows == {3: "numbering"}
    assert hs.frame["excel_row"].tolist() == list(range(4, 4 + len(s.learners)))
