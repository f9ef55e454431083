"""The synthetic city's "clerk" style: a school's workbook rewritten the way clerks type it.

The spellings here are this module's own list — what a clerk writes, taken from the spec's
words, the real forms' row labels and the abbreviations offices use — and deliberately NOT
the reader's vocabulary (`schemas/vocabulary.yaml`): the generator may write words the reader
does not know, and the tests show what happens (tests/test_vocabulary.py measures the share
of clean clerk workbooks accepted). Typos are injected too: a letter dropped from a word, the
kind of near miss the reader should read and say.

`clerkify(path, layouts, rng)` rewrites headers and values in place (same cells, so the
manifest's cell addresses stay right) and returns what it wrote.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import openpyxl

# Header spellings clerks use (issue 8's measured city, the import templates, the spec).
HEADERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("learners", "student_code"): ("Mã HS", "Mã học sinh", "Mã định danh Bộ GD&ĐT (*)"),
    ("learners", "personal_id"): ("CCCD", "Số định danh cá nhân (*)", "Mã định danh cá nhân"),
    ("learners", "full_name"): ("Họ tên trẻ", "Họ và tên (*)", "Họ tên học sinh"),
    ("learners", "birth_date"): ("Ngày tháng\nnăm sinh", "Ngày sinh (dd/mm/yyyy)", "Ngày sinh:"),
    ("learners", "sex"): ("Giới\ntính", "Giới tính (*)"),
    ("learners", "class_code"): ("Mã lớp:", "Lớp"),
    ("learners", "lunch_support"): ("Hỗ trợ ăn trưa (MN)",),
    ("staff", "staff_code"): ("Mã CB", "Mã cán bộ (*)"),
    ("staff", "personal_id"): ("CCCD", "Số CCCD"),
    ("staff", "full_name"): ("Họ tên (*)", "Họ và tên"),
    ("staff", "birth_date"): ("Ngày tháng năm sinh (*)", "Ngày sinh"),
    ("staff", "contract_type"): ("Loại hợp đồng", "Hình thức HĐ"),
    ("staff", "training_level"): ("Trình độ chuyên môn (*)", "Trình độ đào tạo (*)"),
    ("staff", "position"): ("Chức vụ / Vị trí việc làm", "Chức vụ:"),
    ("classes", "class_code"): ("Mã lớp:",),
    ("classes", "mn_age_group"): ("Nhóm tuổi (MN)",),
}
DECORATIONS = (" (*)", ":", " (nếu có)", "  ")

# Values: (sheet, field, code) → what clerks write. Teachers' blank position is written too.
VALUES: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("staff", "position", ""): ("Giáo viên", "GV", "giáo viên"),
    ("staff", "position", "01"): ("Hiệu trưởng", "HT"),
    ("staff", "position", "02"): ("Phó hiệu trưởng", "P.HT", "Phó HT"),
    ("staff", "position", "09"): ("NV thư viện-thiết bị", "Nhân viên thư viện"),
    ("staff", "position", "10"): ("NV thư viện-thiết bị", "Nhân viên thiết bị"),
    ("staff", "position", "11"): ("Y tế", "Nhân viên y tế"),
    ("staff", "position", "15"): ("Kế toán", "Nhân viên kế toán"),
    ("staff", "position", "16"): ("Văn thư",),
    ("staff", "position", "17"): ("Bảo vệ",),
    ("staff", "position", "25"): ("Thủ quỹ",),
    ("staff", "position", "31"): ("Nấu ăn", "Cấp dưỡng"),
    ("staff", "position", "32"): ("CNTT", "Nhân viên công nghệ thông tin"),
    ("staff", "position", "34"): ("Giáo vụ",),
    ("staff", "staff_group", "01"): ("CBQL", "Cán bộ quản lý"),
    ("staff", "staff_group", "02"): ("NV", "Nhân viên"),
    ("staff", "staff_group", "03"): ("GV", "Giáo viên"),
    ("staff", "training_level", "16"): ("ĐHSP", "Đại học sư phạm"),
    ("staff", "training_level", "17"): ("CĐSP", "Cao đẳng sư phạm"),
    ("staff", "training_level", "18"): ("TCSP", "Trung cấp sư phạm"),
    ("staff", "training_level", "02"): ("ThS", "Thạc sĩ"),
    ("staff", "contract_type", "07"): ("HĐLV không xác định thời hạn", "Viên chức"),
    ("staff", "contract_type", "08"): ("HĐLV xác định thời hạn",),
    ("staff", "status", "01"): ("Đang làm việc", "đang công tác"),
    ("learners", "status", "01"): ("Đang học", "đang học"),
    ("learners", "sex", "01"): ("Nam", "NAM", "nam"),
    ("learners", "sex", "02"): ("Nữ", "NỮ", "nữ"),
    ("learners", "ethnicity", "01"): ("Kinh", "kinh"),
    ("learners", "ethnicity", "05"): ("Khmer", "Khơ me"),
    ("rooms", "room_type", "01"): ("Phòng học",),
    ("rooms", "room_type", "03"): ("Thư viện", "- Thư viện"),
    ("rooms", "room_type", "05"): ("Phòng tin học", "Tin học"),
    ("rooms", "room_type", "09"): ("Phòng GD rèn luyện thể chất nhà đa năng", "Đa năng/thể chất"),
    ("rooms", "room_type", "10"): ("Phòng hỗ trợ GD khuyết tật học hòa nhập", "Hỗ trợ khuyết tật"),
    ("rooms", "room_type", "12"): ("Phòng truyền thống",),
    ("rooms", "room_type", "13"): ("Phòng Y tế học đường", "Y tế"),
}
FLAG_WORDS = {"1": ("x", "X", "Có", "1"), "0": ("", "Không", "0")}
FLAG_FIELDS = {("classes", "two_sessions"), ("classes", "boarding"), ("learners", "tuition_exempt"),
               ("learners", "lunch_support"), ("learners", "two_sessions"), ("learners", "boarding")}
TYPO_FIELDS = {("staff", "position"), ("rooms", "room_type"), ("learners", "ethnicity"), ("staff", "training_level")}


@dataclass(frozen=True)
class Spelling:
    """One cell the clerk rewrote: what it wrote for which code, and whether it is a typo."""

    sheet: str
    cell: str
    field: str
    code: str
    written: str
    kind: str  # "header" | "word" | "typo"


def _typo(word: str, rng: np.random.Generator) -> str | None:
    """Drop one letter (not the first) from the longest word of at least 6 letters."""
    words = word.split()
    longest = max(range(len(words)), key=lambda i: len(words[i]), default=None)
    if longest is None or len(words[longest]) < 6:
        return None
    w = words[longest]
    i = int(rng.integers(1, len(w)))
    words[longest] = w[:i] + w[i + 1:]
    return " ".join(words)


def _decorate(header: str, rng: np.random.Generator) -> str:
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return header + DECORATIONS[int(rng.integers(0, len(DECORATIONS)))]
    if kind == 1 and " " in header:
        i = header.index(" ", len(header) // 2) if " " in header[len(header) // 2:] else header.index(" ")
        return header[:i] + "\n" + header[i + 1:]
    if kind == 2:
        text = unicodedata.normalize("NFD", header.replace("đ", "d").replace("Đ", "D"))
        return "".join(ch for ch in text if not unicodedata.combining(ch)).upper()
    return header


def clerkify(path, layouts: Mapping[str, object], rng: np.random.Generator, typo_rate: float = 0.02,
             tpt_as_position: bool = True) -> list[Spelling]:
    """Rewrite the workbook at `path` as a clerk would; return every rewritten cell."""
    wb = openpyxl.load_workbook(path)
    out: list[Spelling] = []
    for sheet_id, lay in layouts.items():
        if sheet_id == "school":
            continue
        ws = wb[lay.name]
        # headers
        for fid, letter in lay.columns.items():
            cell = ws[f"{letter}{lay.header_row}"]
            options = HEADERS.get((sheet_id, fid))
            new = options[int(rng.integers(0, len(options)))] if options else _decorate(str(cell.value), rng)
            if new != cell.value:
                out.append(Spelling(lay.name, cell.coordinate, fid, fid, new, "header"))
                cell.value = new
        last = lay.first_data_row + lay.rows - 1
        cols = dict(lay.columns)
        for r in range(lay.first_data_row, last + 1):
            orig = {fid: ws[f"{letter}{r}"].value for fid, letter in cols.items()}
            # TPT Đội as a position (the spec lists it so), not as an extra duty
            if tpt_as_position and sheet_id == "staff" and "extra_duty" in cols and "position" in cols:
                duty, pos = ws[f"{cols['extra_duty']}{r}"], ws[f"{cols['position']}{r}"]
                if str(duty.value or "") in ("07", "09", "10", "Tổng phụ trách Đội", "Tổng phụ trách Đoàn - Đội",
                                             "Tổng phụ trách Đoàn") and not pos.value:
                    duty.value, pos.value = None, "Tổng phụ trách Đội"
                    out.append(Spelling(lay.name, pos.coordinate, "position", "TPT", pos.value, "word"))
                    continue_row = True
                else:
                    continue_row = False
            else:
                continue_row = False
            for fid, letter in cols.items():
                if continue_row and fid in ("position", "extra_duty"):
                    continue
                cell = ws[f"{letter}{r}"]
                code = "" if cell.value is None else str(cell.value)
                if (sheet_id, fid) in FLAG_FIELDS and code in FLAG_WORDS:
                    words = FLAG_WORDS[code]
                    new = words[int(rng.integers(0, len(words)))]
                    if new != code:
                        cell.value = new or None
                        out.append(Spelling(lay.name, cell.coordinate, fid, code, new, "word"))
                    continue
                if sheet_id == "staff" and fid == "position" and code == "":
                    group = str(orig.get("staff_group") or "")
                    if group != "03":
                        continue
                words = VALUES.get((sheet_id, fid, code))
                if not words:
                    continue
                new = words[int(rng.integers(0, len(words)))]
                kind = "word"
                if (sheet_id, fid) in TYPO_FIELDS and rng.random() < typo_rate:
                    typo = _typo(new, rng)
                    if typo:
                        new, kind = typo, "typo"
                cell.value = new
                out.append(Spelling(lay.name, cell.coordinate, fid, code or "GV", new, kind))
    wb.save(path)
    return out
