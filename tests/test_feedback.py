"""The feedback workbook a school gets back: real xlsx files written, reopened with openpyxl.

Most tests run for both engines: "faithful" (the school's workbook through openpyxl) and "fast"
(a values-only copy written with xlsxwriter from what fastexcel reads)."""
from __future__ import annotations

import hashlib
import logging
import zipfile
from datetime import datetime, timedelta, timezone
from datetime import time as dt_time
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import xlsxwriter
from openpyxl.comments import Comment

from edustat import feedback
from edustat.config import ConfigError, load_config
from edustat.feedback import ENGINES, SEVERITY_COLOR, STATUS_TEXT, TEXT, summarise, write_feedback

RED, YELLOW, BLUE = (SEVERITY_COLOR[s] for s in ("error", "warning", "notice"))
SCHOOL = {"school_code": "74000123", "school_name": "=Trường TH Phú Hòa"}
WHEN = datetime(2022, 10, 3, 14, 30)
COUNTS = {"learners": 8, "staff": 2, "classes": 1, "errors": 6, "warnings": 3, "notices": 3}
INJECTION = '=HYPERLINK("http://x.example","bấm")'


def _source(path: Path) -> Path:
    """A tiny school workbook: learners (header row 1, rows 2–9), staff, a formula, a merged
    cell and a comment of the school's own."""
    wb = openpyxl.Workbook()
    hs = wb.active
    hs.title = "HocSinh"
    hs.append(["STT", "Họ và tên", "Giới tính", "SĐT", "Số ngày nghỉ", "Tổng", "Ghi chú", ""])
    for i in range(1, 9):
        hs.append([i, f"Học sinh {i}", "Nam", "0912345678", "0", None, None, None])
    hs["F2"] = "=SUM(E2:E9)"
    hs["C3"], hs["D5"], hs["D7"], hs["E4"], hs["E9"], hs["C8"] = INJECTION, "+84912345678", "@x", "-1", "-1", "Nx"
    hs.merge_cells("G10:H10")
    hs["G10"] = "ghi chú gộp"
    hs["D5"].comment = Comment("Số của phụ huynh", "Cô Lan")
    hs["B2"].comment = Comment("đã kiểm tra", "Cô Lan")
    cb = wb.create_sheet("CanBo")
    cb.append(["Mã cán bộ", "Số định danh cá nhân"])
    cb.append(["CB01", "074080000001"])
    cb.append(["CB02", "0123"])
    wb.save(path)
    return path


def _issue(sheet, row, col, rule, sev, value=None, message=None, fix=None, header=None):
    return {"sheet": sheet, "excel_row": row, "column": col, "field": None, "header": header,
            "rule_id": rule, "severity": sev, "value": value,
            "message": message or f"Thông báo {rule} {value or ''}".strip(), "fix": fix or f"Sửa {rule}"}


ISSUES = [
    _issue("HocSinh", 3, "C", "student_sex_code", "error", INJECTION, header="Giới tính"),
    _issue("HocSinh", 3, "C", "student_sex_suspect", "warning", INJECTION, message="Giới tính lạ"),
    _issue("HocSinh", 8, "C", "student_sex_code", "error", "Nx", header="Giới tính"),
    _issue("HocSinh", 5, "D", "student_phone_format", "warning", "+84912345678", header="SĐT"),
    _issue("HocSinh", 7, "D", "student_phone_format", "warning", "@x", header="SĐT"),
    _issue("HocSinh", 4, "E", "student_absent_days_format", "notice", "-1"),
    _issue("HocSinh", 9, "E", "student_absent_days_format", "notice", "-1"),
    _issue("HocSinh", 6, None, "student_duplicate_row", "error", message="Dòng trùng với dòng 2"),
    _issue("HocSinh", 10, "H", "student_note_length", "notice", "ghi chú gộp"),
    _issue(None, None, None, "file_template_version", "notice", message="Mẫu cũ"),
    _issue("CanBo", None, None, "staff_contract_type_missing_column", "error", message="Thiếu cột Hợp đồng"),
    _issue("CanBo", 3, "B", "staff_personal_id_format", "error", "0123"),
    _issue("HocSinh", 2, "Z", "student_nowhere", "error"),  # a column the sheet does not use
    _issue("KhongCo", 2, "A", "student_ghost_sheet", "error"),  # a sheet the workbook lacks
]


def _issues(rows=ISSUES) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["excel_row"] = df["excel_row"].astype("Int64")
    return df


def _write(tmp_path, source=None, issues=None, status="rejected", **kw) -> Path:
    args = dict(school=SCHOOL, issues=_issues() if issues is None else issues, status=status, counts=COUNTS,
                school_year="2022-2023", period="dau_nam", generated_at=WHEN)
    args.update(kw)
    return write_feedback(source, tmp_path / "out" / "74000123_phanhoi.xlsx", **args)


KEEPS = ("faithful", "patch")  # engines that keep the school's own workbook (formulas, merges, comments)


def _sheet_part(z: zipfile.ZipFile, name: str) -> str:
    """The zip member of sheet `name` (the patch engine does not renumber the school's parts)."""
    import re

    book = z.read("xl/workbook.xml").decode()
    rid = re.search(r'<sheet [^>]*name="%s"[^>]*r:id="([^"]+)"' % name, book).group(1)
    rels = z.read("xl/_rels/workbook.xml.rels").decode()
    target = re.search(r'Id="%s"[^>]*Target="([^"]+)"' % rid, rels) or re.search(r'Target="([^"]+)"[^>]*Id="%s"' % rid, rels)
    return "xl/" + target.group(1).lstrip("/").removeprefix("xl/")


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    return request.param


@pytest.fixture
def result(tmp_path, engine):
    src = _source(tmp_path / "src.xlsx")
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    out = _write(tmp_path, src, engine=engine)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before, "the submitted file was changed"
    return out, openpyxl.load_workbook(out)


def _find_row(ws, first: str, second: str, start: int = 1) -> int:
    for r in range(start, ws.max_row + 1):
        if ws.cell(r, 1).value == first and ws.cell(r, 2).value == second:
            return r
    raise AssertionError(f"no row starting {first!r}, {second!r}")


def _table(ws, header_row: int) -> list[tuple]:
    rows = []
    for r in range(header_row + 1, ws.max_row + 1):
        values = tuple(ws.cell(r, c).value for c in range(1, 10))
        if all(v is None for v in values):
            break
        rows.append(values)
    return rows


def _fill(cell) -> str | None:
    """The RGB of a solid fill (openpyxl writes alpha 00, xlsxwriter FF)."""
    return cell.fill.fgColor.rgb[-6:] if cell.fill.fill_type == "solid" else None


def test_phanhoi_is_first_active_and_only_selected_sheet(result):
    _, wb = result
    assert wb.sheetnames == ["PhanHoi", "HocSinh", "CanBo"]
    assert wb.active.title == "PhanHoi"
    assert [bool(ws.sheet_view.tabSelected) for ws in wb.worksheets] == [True, False, False]


def test_header_block_says_who_when_and_the_status_in_vietnamese(result):
    ws = result[1]["PhanHoi"]
    cells = {ws.cell(r, 1).value: ws.cell(r, 3).value for r in range(2, 20)}
    assert ws["A1"].value == "PHẢN HỒI KIỂM TRA DỮ LIỆU"
    assert cells["Trường"] == "74000123 – =Trường TH Phú Hòa"
    assert cells["Năm học"] == "2022-2023" and cells["Kỳ báo cáo"] == "Đầu năm"
    assert cells["Kết quả"] == "Chưa tiếp nhận: có lỗi phải sửa và gửi lại"
    assert cells["Thời điểm kiểm tra"] == "03/10/2022 14:30"
    assert cells["Số học sinh đã đọc"] == 8 and cells["Số lỗi"] == 6 and cells["Số lưu ý"] == 3
    assert cells["Việc cần làm"].startswith("Dữ liệu chưa được tiếp nhận")
    status_row = next(r for r in range(2, 20) if ws.cell(r, 1).value == "Kết quả")
    assert ws.freeze_panes == f"A{status_row + 1}"
    assert ws.page_setup.orientation == "landscape"
    assert ws.page_setup.fitToWidth in (1, None)  # xlsxwriter leaves out the default, 1
    assert ws.page_setup.fitToHeight == 0 and ws.print_title_rows == f"$1:${status_row}"
    assert ws.sheet_properties.pageSetUpPr.fitToPage


def test_summary_is_grouped_by_rule_and_sheet_errors_first_then_by_count(result):
    ws = result[1]["PhanHoi"]
    header = _find_row(ws, "Mức độ", "Mã quy tắc")
    assert [ws.cell(header, c).value for c in range(1, 10)] == list(TEXT["summary_headers"])
    assert ws.cell(header, 1).font.bold and ws.cell(header, 1).fill.fill_type == "solid"
    assert ws.cell(header, 1).border.bottom.style == "thin"
    table = _table(ws, header)
    got = [(sev, rule, n, sheet, first, last) for sev, rule, _, _, n, sheet, first, last, _ in table]
    assert got == [
        ("Lỗi", "student_sex_code", 2, "HocSinh", 3, 8),
        ("Lỗi", "staff_contract_type_missing_column", 1, "CanBo", None, None),
        ("Lỗi", "staff_personal_id_format", 1, "CanBo", 3, 3),
        ("Lỗi", "student_duplicate_row", 1, "HocSinh", 6, 6),
        ("Lỗi", "student_ghost_sheet", 1, "KhongCo", 2, 2),
        ("Lỗi", "student_nowhere", 1, "HocSinh", 2, 2),
        ("Cảnh báo", "student_phone_format", 2, "HocSinh", 5, 7),
        ("Cảnh báo", "student_sex_suspect", 1, "HocSinh", 3, 3),
        ("Lưu ý", "student_absent_days_format", 2, "HocSinh", 4, 9),
        ("Lưu ý", "file_template_version", 1, "(cả tệp)", None, None),
        ("Lưu ý", "student_note_length", 1, "HocSinh", 10, 10),
    ]
    by_rule = {row[1]: row for row in table}
    assert by_rule["student_phone_format"][8] == "+84912345678; @x"
    assert by_rule["student_absent_days_format"][8] == "-1"  # distinct examples only
    assert by_rule["student_sex_code"][3] == "Sửa student_sex_code"
    assert by_rule["staff_contract_type_missing_column"][2] == "Thiếu cột Hợp đồng"


def test_detail_lists_each_issue_with_a_link_to_its_cell(result, engine):
    ws = result[1]["PhanHoi"]
    summary = _find_row(ws, "Mức độ", "Mã quy tắc")
    header = _find_row(ws, "Mức độ", "Mã quy tắc", summary + 1)
    assert [ws.cell(header, c).value for c in range(1, 10)] == list(TEXT["detail_headers"])
    table = _table(ws, header)
    assert len(table) == len(ISSUES)
    assert [row[0] for row in table] == ["Lỗi"] * 7 + ["Cảnh báo"] * 3 + ["Lưu ý"] * 4
    # within a severity: whole-file first, then the workbook's sheet order, row, column
    assert [row[5] for row in table[:7]] == ["HocSinh"] * 4 + ["CanBo", "CanBo", "KhongCo"]
    assert [row[4] for row in table[:4]] == ["Z2", "C3", None, "C8"]  # row 6 has no column
    assert [row[5] for row in table[10:]] == ["(cả tệp)", "HocSinh", "HocSinh", "HocSinh"]
    c3 = header + 1 + [row[4] for row in table].index("C3")
    assert [ws.cell(c3, c).value for c in (4, 5, 6, 7, 8, 9)] == [INJECTION, "C3", "HocSinh", 3, "C", "Giới tính"]
    assert ws.cell(c3, 5).hyperlink.location == "'HocSinh'!C3"
    assert ws.cell(c3 + 1, 7).hyperlink.location == "'HocSinh'!A6"  # a row problem links to its row
    h10 = header + 1 + [row[4] for row in table].index("H10")
    # where the mark is: the merge anchor (the fast copy has no merged cells)
    assert ws.cell(h10, 5).hyperlink.location == ("'HocSinh'!G10" if engine in KEEPS else "'HocSinh'!H10")
    assert ws.cell(c3, 5).font.color.rgb.endswith("0563C1") and ws.cell(c3, 5).font.u == "single"
    assert ws.cell(c3 + 1, 7).value == 6  # a linked row number stays a number
    ghost = header + 1 + [row[5] for row in table].index("KhongCo")
    assert ws.cell(ghost, 5).hyperlink is None  # nothing to link to
    assert ws.auto_filter.ref.startswith(f"A{header}:")


def test_offending_cells_are_filled_by_the_strongest_severity(result, engine):
    _, wb = result
    hs, cb = wb["HocSinh"], wb["CanBo"]
    assert _fill(hs["C3"]) == RED  # error and warning on one cell: the error wins
    assert _fill(hs["C8"]) == RED
    assert _fill(hs["D5"]) == YELLOW and _fill(hs["D7"]) == YELLOW
    assert _fill(hs["E4"]) == BLUE and _fill(hs["E9"]) == BLUE
    assert _fill(hs["A6"]) == RED  # a row problem without a column: the row's first cell
    if engine in KEEPS:
        assert _fill(hs["G10"]) == BLUE  # H10 is inside a merged range: its anchor carries the mark
    else:
        assert _fill(hs["H10"]) == BLUE and _fill(hs["G10"]) is None  # no merges in the copy
    assert _fill(cb["B3"]) == RED
    assert _fill(hs["Z2"]) == RED
    for untouched in (hs["A1"], hs["B2"], hs["C2"], hs["D6"], hs["B6"], cb["A1"], cb["B2"]):
        assert _fill(untouched) is None, untouched.coordinate


def test_comments_carry_message_and_fix_strongest_first(result, engine):
    out, wb = result
    hs = wb["HocSinh"]
    c = hs["C3"].comment
    assert c.author == "edustat"
    with zipfile.ZipFile(out) as z:  # openpyxl does not read a comment's size back: check the VML
        vml = "".join(z.read(n).decode() for n in z.namelist() if n.endswith(".vml"))
    if engine == "faithful":
        assert "width:300px" in vml and "height:150px" in vml
    else:  # xlsxwriter writes points: 300 × 150 pixels
        assert "width:225pt" in vml and "height:112.5pt" in vml
    assert c.text.index("[Lỗi] Thông báo student_sex_code") < c.text.index("[Cảnh báo] Giới tính lạ")
    assert "Cách sửa: Sửa student_sex_code" in c.text
    assert "Dòng trùng với dòng 2" in hs["A6"].comment.text
    assert hs["C2"].comment is None


def test_the_schools_own_comments_are_kept_by_the_faithful_engine_only(result, engine):
    hs = result[1]["HocSinh"]
    if engine in KEEPS:  # the patch engine merges ours into the sheet's own comments
        assert hs["B2"].comment.text == "đã kiểm tra" and hs["B2"].comment.author == "Cô Lan"
        assert "Số của phụ huynh" in hs["D5"].comment.text and "Cô Lan" in hs["D5"].comment.text
    else:  # fastexcel reads values only: the school's comments stay in its own file
        assert hs["B2"].comment is None
        assert hs["D5"].comment.author == "edustat" and "Số của phụ huynh" not in hs["D5"].comment.text


def test_formula_like_text_is_stored_as_text_in_phanhoi(result):
    out, wb = result
    ws = wb["PhanHoi"]
    risky = {INJECTION, "+84912345678", "@x", "-1", "+84912345678; @x", "74000123 – =Trường TH Phú Hòa"}
    seen = set()
    for row in ws.iter_rows():
        for cell in row:
            if cell.value in risky:
                assert cell.data_type == "s", cell.coordinate
                seen.add(cell.value)
    assert seen == risky
    with zipfile.ZipFile(out) as z:
        xml = z.read(_sheet_part(z, "PhanHoi")).decode()
    assert "<f>" not in xml and "<f " not in xml


def test_the_schools_own_cells_and_formulas_are_kept(result, engine):
    out, wb = result
    hs = wb["HocSinh"]
    assert hs["B4"].value == "Học sinh 3" and hs["A4"].value == 3 and hs["E4"].value == "-1"
    assert hs["D5"].value == "+84912345678" and hs["D5"].data_type == "s"
    assert wb["CanBo"]["B2"].value == "074080000001"  # a code typed as text keeps its leading zero
    if engine in KEEPS:
        assert hs["F2"].data_type == "f" and hs["F2"].value == "=SUM(E2:E9)"
        assert hs["C3"].value == INJECTION  # openpyxl made the school's "=…" a formula: kept as it was
        assert "G10:H10" in {str(r) for r in hs.merged_cells.ranges}
    else:
        # a formula becomes its cached value, and openpyxl (which wrote this source) stores none:
        # F2 and C3 (a formula too) are blank (test_fast_copy_keeps_values_at_their_cells has cached ones)
        assert hs["F2"].value is None and hs["C3"].value is None and hs["G10"].value == "ghi chú gộp"
        assert not hs.merged_cells.ranges
        texts = [c.value for row in wb["PhanHoi"].iter_rows(max_row=20) for c in row]
        assert TEXT["values_only"] in texts


def test_unreadable_source_gives_a_phanhoi_only_book(tmp_path, engine):
    issues = _issues([_issue(None, None, None, "file_corrupt", "error", message="Tệp bị hỏng")])
    out = _write(tmp_path, None, issues, status="unreadable", engine=engine)
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == ["PhanHoi"]
    ws = wb["PhanHoi"]
    assert STATUS_TEXT["unreadable"] == "Không đọc được tệp"
    assert any(ws.cell(r, 3).value == "Không đọc được tệp" for r in range(1, 12))
    assert any(ws.cell(r, 3).value == "Tệp bị hỏng" for r in range(1, ws.max_row + 1))
    texts = [c.value for row in ws.iter_rows() for c in row]
    assert TEXT["values_only"] not in texts and TEXT["not_marked"] not in " ".join(map(str, texts))


def test_a_source_that_will_not_open_still_gets_its_phanhoi(tmp_path, engine):
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    out = _write(tmp_path, bad, engine=engine)
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == ["PhanHoi"]
    texts = [c.value for row in wb["PhanHoi"].iter_rows() for c in row if isinstance(c.value, str)]
    assert any(str(TEXT["not_marked"]) in t for t in texts)


def test_no_issues_says_so(tmp_path, engine):
    out = _write(tmp_path, _source(tmp_path / "src.xlsx"), _issues(ISSUES).iloc[0:0], status="accepted",
                 engine=engine)
    ws = openpyxl.load_workbook(out)["PhanHoi"]
    header = _find_row(ws, "Mức độ", "Mã quy tắc")
    assert ws.cell(header + 1, 1).value == "Không có vấn đề nào."
    assert any(ws.cell(r, 3).value == "Đã tiếp nhận" for r in range(1, 12))


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch, engine):
    out = _write(tmp_path, _source(tmp_path / "src.xlsx"), engine=engine)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert out.stat().st_mode & 0o044, "the office must be able to read it"

    if engine == "faithful":
        def boom(self, filename):
            Path(filename).write_bytes(b"half")
            raise OSError("disk full")

        monkeypatch.setattr(openpyxl.Workbook, "save", boom)
    else:
        def boom(self):
            Path(self.filename).write_bytes(b"half")
            raise OSError("disk full")

        monkeypatch.setattr(xlsxwriter.Workbook, "close", boom)
    again = tmp_path / "out2" / "x.xlsx"
    with pytest.raises(OSError):
        write_feedback(None, again, school=SCHOOL, issues=_issues(), status="rejected", counts=COUNTS,
                       school_year="2022-2023", period="dau_nam", generated_at=WHEN, engine=engine)
    assert list(again.parent.iterdir()) == []


def test_the_submitted_file_is_never_the_output(tmp_path, engine):
    src = _source(tmp_path / "src.xlsx")
    before = src.read_bytes()
    with pytest.raises(ValueError):
        write_feedback(src, src, school=SCHOOL, issues=_issues(), status="rejected", counts=COUNTS,
                       school_year="2022-2023", period="dau_nam", generated_at=WHEN, engine=engine)
    assert src.read_bytes() == before


def test_a_resent_feedback_workbook_loses_old_marks_and_keeps_school_comments(tmp_path, engine):
    first = _write(tmp_path, _source(tmp_path / "src.xlsx"), engine=engine)
    resent = tmp_path / "resent.xlsx"
    resent.write_bytes(first.read_bytes())
    only_one = _issues([ISSUES[3]])  # the school fixed everything but D5
    out = write_feedback(resent, tmp_path / "round2" / "out.xlsx", school=SCHOOL, issues=only_one,
                         status="accepted_with_warnings", counts=COUNTS, school_year="2022-2023",
                         period="dau_nam", generated_at=WHEN, engine=engine)
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == ["PhanHoi", "HocSinh", "CanBo"]
    hs = wb["HocSinh"]
    assert _fill(hs["C3"]) is None and hs["C3"].comment is None
    assert _fill(hs["D5"]) == YELLOW
    # the fast copy never held the school's comments (they stay in the school's own file)
    assert hs["D5"].comment.text.count("Số của phụ huynh") == (1 if engine == "faithful" else 0)
    if engine == "faithful":
        assert hs["B2"].comment.author == "Cô Lan"
    assert hs["B4"].value == "Học sinh 3" and hs["D7"].value == "@x"


def test_detail_is_capped_and_says_how_many_more(tmp_path, monkeypatch, engine):
    monkeypatch.setattr(feedback, "DETAIL_LIMIT", 5)
    out = _write(tmp_path, _source(tmp_path / "src.xlsx"), engine=engine)
    ws = openpyxl.load_workbook(out)["PhanHoi"]
    summary = _find_row(ws, "Mức độ", "Mã quy tắc")
    header = _find_row(ws, "Mức độ", "Mã quy tắc", summary + 1)
    assert len(_table(ws, header)) == 5
    notes = [ws.cell(r, 1).value for r in range(summary, ws.max_row + 1)]
    more = f"còn {len(ISSUES) - 5} vấn đề chưa liệt kê"
    assert sum(1 for n in notes if isinstance(n, str) and more in n) == 2  # above and below


def test_summarise_grain_is_rule_by_sheet():
    s = summarise(_issues())
    assert len(s) == len({(i["severity"], i["rule_id"], i["sheet"]) for i in ISSUES})
    assert s["count"].sum() == len(ISSUES)
    assert list(s["severity"]) == sorted(s["severity"], key=["error", "warning", "notice"].index)


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="status"):
        _write(tmp_path, None, status="ok")
    with pytest.raises(ValueError, match="severities"):
        _write(tmp_path, None, _issues([_issue("HocSinh", 2, "A", "x", "fatal")]))
    with pytest.raises(ValueError, match="engine"):
        _write(tmp_path, None, engine="openpyxl")


def test_aware_time_is_shown_in_vietnam_time(tmp_path, engine):
    out = _write(tmp_path, None, generated_at=datetime(2022, 10, 3, 7, 30, tzinfo=timezone.utc), engine=engine)
    ws = openpyxl.load_workbook(out)["PhanHoi"]
    assert any(ws.cell(r, 3).value == "03/10/2022 14:30" for r in range(1, 12))
    assert timedelta(hours=7) == datetime(2022, 1, 1, tzinfo=feedback._VN).utcoffset()


def test_logs_carry_no_values_from_the_workbook(tmp_path, caplog, engine):
    caplog.set_level(logging.DEBUG, logger="edustat")
    _write(tmp_path, _source(tmp_path / "src.xlsx"), engine=engine)
    _write(tmp_path, tmp_path / "missing.xlsx", engine=engine)
    assert caplog.records, "the module should log what it did"
    for secret in ("Phú Hòa", "0123", "+849", "Nx", "Học sinh", "missing.xlsx"):
        assert secret not in caplog.text


def _n_rows(ws) -> int:
    return sum(1 for row in ws.iter_rows(values_only=True) if any(v is not None for v in row))


@pytest.mark.parametrize("engine, rows", [("patch", 5_000)] + [(e, 1_000) for e in ENGINES if e != "patch"])
def test_a_long_sheet_with_500_issues_is_written(tmp_path, engine, rows):
    """A large school's sheet: the default engine (patch) at 5,000 rows, the others at 1,000
    (their time side by side at 10,000: scripts/measure_feedback_engines.py — a benchmark)."""
    from scripts.measure_feedback_engines import long_issues, long_source

    src = long_source(tmp_path / "big.xlsx", rows)
    out = _write(tmp_path, src, _issues(long_issues(rows)), engine=engine)
    got = openpyxl.load_workbook(out, read_only=True)
    assert got.sheetnames[0] == "PhanHoi" and "HocSinh" in got.sheetnames
    assert _n_rows(got["HocSinh"]) == rows + 1


# --- the fast engine: a values-only copy ------------------------------------------------------


def _rich_source(path: Path) -> Path:
    """A workbook as Excel would save it (cached formula values included), written with
    xlsxwriter: values of every kind, data not starting at A1, a hidden and an empty sheet."""
    wb = xlsxwriter.Workbook(path, {"strings_to_numbers": False, "strings_to_formulas": False,
                                    "strings_to_urls": False})
    day, pct = wb.add_format({"num_format": "dd/mm/yyyy"}), wb.add_format({"num_format": "0%"})
    ws = wb.add_worksheet("Truong")
    ws.write_string(0, 0, "THÔNG TIN TRƯỜNG")
    rows = [
        ("Mã trường", "74000123"), ("Số lớp", 12), ("Ngày thành lập", datetime(1990, 9, 5)),
        ("Giờ vào học", datetime(1899, 12, 31, 7, 15)), ("Có bán trú", True), ("Tỉ lệ", 0.25),
        ("Tổng", ("=C4*2", 24)), ("Lỗi", ("=1/0", "#DIV/0!")), ("Số âm", -3.5), ("Rất lớn", 1e20),
        ("Số dạng chữ", "-1"), ("Ngày dạng chữ", "05/09/2014"), ("Công thức giả", INJECTION),
        ("Số dài", 123456789012345), ("Phân số", 0.1 + 0.2), ("Chữ trong công thức", ('="a"&1', "a1")),
    ]
    for i, (label, value) in enumerate(rows, start=2):
        ws.write_string(i, 1, label)
        if isinstance(value, tuple):
            ws.write_formula(i, 2, value[0], None, value[1])
        elif isinstance(value, datetime):
            ws.write_datetime(i, 2, value, wb.add_format({"num_format": "hh:mm" if value.year < 1900 else "dd/mm/yyyy"}))
        elif isinstance(value, bool):
            ws.write_boolean(i, 2, value)
        elif isinstance(value, str):
            ws.write_string(i, 2, value)
        else:
            ws.write_number(i, 2, value, pct if value == 0.25 else None)
    hidden = wb.add_worksheet("DanhMuc")
    hidden.write_string(0, 0, "Mã")
    hidden.write_string(1, 0, "01")
    hidden.hide()
    wb.add_worksheet("Trống")
    lop = wb.add_worksheet("Lop")
    lop.write_string(1, 1, "Tên lớp")
    lop.write_string(1, 2, "Sĩ số")
    lop.write_string(1, 3, "Ngày mở")
    for r in range(2, 8):
        lop.write_string(r, 1, f"3A{r - 1}")
        lop.write_number(r, 2, 30 + r)
        lop.write_datetime(r, 3, datetime(2022, 9, r), day)
    wb.close()
    return path


RICH_ISSUES = [
    _issue("Lop", 4, "C", "class_size_cap", "error", "34"),
    _issue("Lop", 5, None, "class_duplicate_row", "warning"),  # marks the row's first cell: B5
    _issue("Lop", 6, "E", "class_room_missing", "notice"),  # a blank cell beside the data
    _issue("Lop", 12, "B", "class_after_the_end", "error"),  # below the last row
    _issue("truong", 3, "C", "school_code_format", "warning", "74000123"),  # named loosely
]


def _cells(ws) -> dict[str, object]:
    return {c.coordinate: c.value for row in ws.iter_rows() for c in row if c.value is not None}


def test_fast_copy_keeps_values_at_their_cells(tmp_path):
    src = _rich_source(tmp_path / "rich.xlsx")
    out = _write(tmp_path, src, _issues(RICH_ISSUES), engine="fast")
    school = openpyxl.load_workbook(src, data_only=True)  # a formula's cached value, as Excel shows it
    copy = openpyxl.load_workbook(out)
    assert copy.sheetnames == ["PhanHoi", *school.sheetnames]
    for ws in school.worksheets:
        theirs, ours = _cells(ws), _cells(copy[ws.title])
        assert set(ours) == set(theirs), ws.title
        for at, value in theirs.items():
            assert (type(ours[at]), ours[at]) == (type(value), value), (ws.title, at)
    truong = copy["Truong"]
    assert truong["C3"].data_type == "s" and truong["C13"].value == "-1"  # text stays text
    assert truong["C9"].value == 24 and truong["C10"].value == "#DIV/0!"  # formulas: their values
    assert truong["C18"].value == "a1" and truong["C12"].value == 1e20 and truong["C16"].value == 123456789012345
    assert truong["C7"].value is True and truong["C6"].value == dt_time(7, 15)  # a boolean; a time of day
    assert truong["C5"].number_format == "dd/mm/yyyy" and truong["C15"].value == INJECTION
    assert truong["C8"].value == 0.25 and truong["C8"].number_format == "General"  # formats are not copied
    assert copy["DanhMuc"].sheet_state == "hidden" and copy["Trống"].max_row == 1
    assert copy["Lop"]["D3"].value == datetime(2022, 9, 2)


def test_fast_marks_cells_where_the_school_sees_them(tmp_path):
    src = _rich_source(tmp_path / "rich.xlsx")
    out = _write(tmp_path, src, _issues(RICH_ISSUES), engine="fast")
    wb = openpyxl.load_workbook(out)
    lop, truong = wb["Lop"], wb["Truong"]
    assert _fill(lop["C4"]) == RED and lop["C4"].value == 33 and "class_size_cap" in lop["C4"].comment.text
    assert _fill(lop["B5"]) == YELLOW and lop["B5"].value == "3A3"  # data starts in column B
    assert _fill(lop["E6"]) == BLUE and lop["E6"].value is None and lop["E6"].comment.author == "edustat"
    assert _fill(lop["B12"]) == RED and lop["B12"].comment is not None
    assert _fill(truong["C3"]) == YELLOW and truong["C3"].value == "74000123"
    marked = {c.coordinate for ws in wb.worksheets[1:] for row in ws.iter_rows() for c in row if _fill(c)}
    assert marked == {"C4", "B5", "E6", "B12", "C3"}
    ws = wb["PhanHoi"]
    links = {c.hyperlink.location for row in ws.iter_rows() for c in row if c.hyperlink}
    assert links == {"'Lop'!C4", "'Lop'!B5", "'Lop'!E6", "'Lop'!B12", "'Truong'!C3"}


def test_fast_output_holds_no_formula(tmp_path):
    src = _rich_source(tmp_path / "rich.xlsx")
    out = _write(tmp_path, src, _issues(RICH_ISSUES), engine="fast")
    with zipfile.ZipFile(out) as z:
        sheets = [n for n in z.namelist() if n.startswith("xl/worksheets/sheet")]
        assert len(sheets) == 5
        for name in sheets:
            xml = z.read(name).decode()
            assert "<f>" not in xml and "<f " not in xml, name
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames[0] == "PhanHoi" and wb.active.title == "PhanHoi"
    assert all(c.data_type != "f" for ws in wb.worksheets for row in ws.iter_rows() for c in row)


def test_fast_keeps_a_school_sheet_that_happens_to_be_called_phanhoi(tmp_path):
    wb = openpyxl.Workbook()
    wb.active.title = "PhanHoi"
    wb.active["A1"] = "Ghi chú của trường"
    wb.active["B2"] = "x"
    wb.save(tmp_path / "own.xlsx")
    issues = _issues([_issue("PhanHoi", 2, "B", "note_rule", "notice", "x")])
    out = _write(tmp_path, tmp_path / "own.xlsx", issues, engine="fast")
    got = openpyxl.load_workbook(out)
    assert got.sheetnames == ["PhanHoi", "PhanHoi (2)"]
    assert got["PhanHoi"]["A1"].value == TEXT["title"]
    assert got["PhanHoi (2)"]["A1"].value == "Ghi chú của trường" and _fill(got["PhanHoi (2)"]["B2"]) == BLUE


def test_a_wide_sheet_is_written_by_every_engine(tmp_path):
    """30 columns of numbers, dates and text with 100 issues (the engines' time on 1,000 such
    rows: scripts/measure_feedback_engines.py)."""
    from scripts.measure_feedback_engines import wide_issues, wide_source

    src = wide_source(tmp_path / "wide.xlsx", rows=200)
    for engine in ENGINES:
        out = write_feedback(src, tmp_path / engine / "out.xlsx", school=SCHOOL, issues=_issues(wide_issues(rows=200)),
                             status="rejected", counts=COUNTS, school_year="2022-2023", period="dau_nam",
                             generated_at=WHEN, engine=engine)
        got = openpyxl.load_workbook(out, read_only=True)
        assert got.sheetnames == ["PhanHoi", "HocSinh"], engine
        assert _n_rows(got["HocSinh"]) == 201, engine


def test_the_engine_comes_from_the_config(tmp_path):
    assert load_config(data_dir=tmp_path).feedback_engine == "patch"
    cfg = tmp_path / "edustat.yaml"
    cfg.write_text("feedback_engine: faithful\n", encoding="utf-8")
    assert load_config(cfg, data_dir=tmp_path).feedback_engine == "faithful"
    cfg.write_text("feedback_engine: openpyxl\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="feedback_engine"):
        load_config(cfg, data_dir=tmp_path)


def test_a_receipt_prints_its_note_clear_of_the_legend(tmp_path):
    """A receipt's note spans the page and wraps to two lines: its merged row must be tall
    enough (merged rows are never auto-fitted), or the printed note runs into the legend."""
    from edustat.feedback import ISSUE_COLUMNS, write_receipt
    WORDS = TEXT

    out = write_receipt(tmp_path / "r.xlsx", school={"school_code": "74718286", "school_name": "Nhà trẻ Phú Cường"},
                        issues=pd.DataFrame(columns=list(ISSUE_COLUMNS)), status="accepted",
                        counts={"learners": 87, "staff": 17, "classes": 4}, school_year="2022-2023", period="dau_nam",
                        generated_at=datetime(2022, 10, 16, 9, 30),
                        received={"file": "74718286_nha-tre-phu-cuong.xlsx", "version": 1, "hash": "0138dffb9673…"})
    ws = openpyxl.load_workbook(out)[WORDS["sheet"]]
    row = next(c.row for c in ws["A"] if c.value == WORDS["receipt"])
    assert (ws.row_dimensions[row].height or 15) >= 30
    assert ws.cell(row + 1, 1).value == WORDS["legend_label"]
