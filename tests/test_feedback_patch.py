"""The "patch" feedback engine (edustat.feedback_patch): the school's own .xlsx patched at
zip/XML level. Workbooks from outside our generator: the ministry's files in
../shared/reference/moet/, a workbook made with openpyxl (merged cells, a hidden sheet,
formulas, the school's comments, print area and names, inline strings, a sheet name that needs
quotes) and one made with xlsxwriter (shared strings). Compared with the fast engine, which
marks the same cells with the same comments."""
from __future__ import annotations

import io
import logging
import re
import shutil
import subprocess
import zipfile
from datetime import datetime
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import xlsxwriter
from openpyxl.comments import Comment
from openpyxl.styles import Border, Font, PatternFill, Side
from openpyxl.workbook.defined_name import DefinedName

from edustat.feedback import COMMENT_AUTHOR, ISSUE_COLUMNS, SEVERITY_COLOR, TEXT, write_feedback
from edustat.feedback_patch import Fallback, patch

MOET = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "moet"
WHEN = datetime(2022, 10, 3, 14, 30)
SCHOOL = {"school_code": "74000123", "school_name": "Trường TH Phú Hòa"}
QUOTED = "Danh sách (cũ)'s"  # needs quotes in a reference, and doubles its apostrophe
RED, YELLOW, BLUE = (SEVERITY_COLOR[s] for s in ("error", "warning", "notice"))


def _issue(sheet, row, col, rule, sev, message=None, fix=None, value=None):
    return dict(sheet=sheet, excel_row=row, column=col, field=None, header=None, rule_id=rule, severity=sev,
                value=value, message=message or f"Thông báo {rule}", fix=fix)


def _issues(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(ISSUE_COLUMNS))


def _write(src: Path, out: Path, issues: pd.DataFrame, engine: str, status: str = "rejected") -> Path:
    return write_feedback(src, out, school=SCHOOL, issues=issues, status=status, counts={"learners": 8},
                          school_year="2022-2023", period="dau_nam", generated_at=WHEN, engine=engine)


def _openpyxl_book(path: Path) -> Path:
    """A clerk's workbook as openpyxl writes it: shared strings, styles, formulas, merges, the
    school's own comments, a hidden sheet, print area / titles and names."""
    wb = openpyxl.Workbook()
    hs = wb.active
    hs.title = "HocSinh"
    hs.append(["STT", "Họ và tên", "Ngày sinh", "Điểm", "Tổng", "Ghi chú"])
    for i in range(1, 9):
        hs.append([i, f"Học sinh {i}", datetime(2015, 1, i), 7.5 + i / 10, None, None])
    hs["E2"] = "=SUM(D2:D9)"
    for row in hs.iter_rows(min_row=2, max_row=9, min_col=3, max_col=3):
        row[0].number_format = "dd/mm/yyyy"
    thin = Side(style="thin", color="000000")
    hs["D4"].font = Font(bold=True, color="FF0000")
    hs["D4"].border = Border(left=thin, right=thin, top=thin, bottom=thin)
    hs["D4"].number_format = "0.00"
    hs["A1"].fill = PatternFill("solid", start_color="CCFFCC", end_color="CCFFCC")
    hs.merge_cells("F3:F5")
    hs["F3"] = "chuyển trường"
    hs["B6"].comment = Comment("đã kiểm tra với phụ huynh", "Cô Lan")
    hs["A1"].comment = Comment("cột số thứ tự", "Cô Lan")
    hs.print_title_rows = "1:1"
    q = wb.create_sheet(QUOTED)
    q.append(["Mã", "Tên"])
    q.append(["X1", "cũ"])
    q.print_area = "A1:B2"
    hidden = wb.create_sheet("DanhMuc")
    hidden.append(["Nam"])
    hidden.append(["Nữ"])
    hidden.sheet_state = "hidden"
    wb.defined_names["GioiTinh"] = DefinedName("GioiTinh", attr_text="DanhMuc!$A$1:$A$2")
    wb.active = 0
    wb.save(path)
    return path


def _xlsxwriter_book(path: Path) -> Path:
    """Shared strings (openpyxl here writes inline ones), a formula with its cached value, an
    empty sheet."""
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("CanBo")
    bold = wb.add_format({"bold": True, "num_format": "0.0"})
    ws.write_row(0, 0, ["Mã", "Hệ số", "Tổng"])
    for r in range(1, 6):
        ws.write_string(r, 0, f"CB{r:02d}")
        ws.write_number(r, 1, r * 1.5, bold)
        ws.write_formula(r, 2, f"=B{r + 1}*2", None, r * 3.0)
    ws.activate()
    wb.add_worksheet("Trống")  # an empty sheet: <sheetData/>
    wb.close()
    return path


OPENPYXL_ISSUES = [
    _issue("HocSinh", 3, "B", "name_blank", "error", fix="Ghi họ tên"),
    _issue("HocSinh", 3, "B", "name_odd", "warning"),
    _issue("HocSinh", 4, "D", "score_range", "warning"),  # a styled cell: its font, border, format kept
    _issue("HocSinh", 5, None, "row_dup", "error"),  # no column: the row's first filled cell
    _issue("HocSinh", 7, "H", "beyond", "notice"),  # a blank cell right of the data
    _issue("HocSinh", 500, "C", "absent_row", "error"),  # a row the sheet does not have
    _issue("HocSinh", 4, "F", "merged", "notice"),  # inside F3:F5: its anchor is marked
    _issue("HocSinh", 6, "B", "commented", "warning"),  # the school's comment kept inside ours
    _issue("HocSinh", 2, "E", "formula", "notice"),
    _issue(QUOTED, 2, "A", "old_code", "error"),
    _issue("DanhMuc", 2, "A", "hidden_sheet", "notice"),
    _issue(None, None, None, "file_level", "error"),
    _issue("KhongCo", 2, "A", "no_such_sheet", "error"),
]


def _marks(path: Path) -> dict[tuple[str, str], tuple[str | None, str]]:
    """(sheet, cell) → (fill RGB, comment text) of every cell commented by us."""
    wb = openpyxl.load_workbook(path)
    out = {}
    for ws in wb.worksheets[1:]:
        for row in ws.iter_rows():
            for c in row:
                if c.comment is not None and c.comment.author == COMMENT_AUTHOR:
                    rgb = c.fill.fgColor.rgb if c.fill is not None and c.fill.fill_type == "solid" else None
                    out[(ws.title, c.coordinate)] = (rgb[-6:] if isinstance(rgb, str) else None, c.comment.text)
    return out


def _style(c) -> tuple:
    return (c.number_format, repr(c.font), repr(c.border), repr(c.alignment), repr(c.protection))


@pytest.fixture
def rich(tmp_path):
    src = _openpyxl_book(tmp_path / "src.xlsx")
    issues = _issues(OPENPYXL_ISSUES)
    data, _ = patch(src.read_bytes(), __import__("edustat.feedback", fromlist=["_normalise"])._normalise(issues),
                    _about(issues))  # raises Fallback if the patch engine would not handle it
    assert data[:2] == b"PK"
    out = _write(src, tmp_path / "patch.xlsx", issues, "patch")
    fast = _write(src, tmp_path / "fast.xlsx", issues, "fast")
    return src, out, fast


def _about(issues: pd.DataFrame) -> dict:
    from edustat.feedback import _normalise, _with_issue_counts

    return dict(school=SCHOOL, status="rejected", counts=_with_issue_counts({}, _normalise(issues)),
                school_year="2022-2023", period="dau_nam", generated_at=WHEN)


def test_same_cells_and_comments_as_the_fast_engine(rich):
    src, out, fast = rich
    mine, theirs = _marks(out), _marks(fast)
    # where the two engines differ on purpose: a merged cell's anchor carries the mark, and
    # the school's own comment is kept inside ours (the fast copy has neither merges nor comments)
    assert mine.pop(("HocSinh", "F3")) == (BLUE, theirs.pop(("HocSinh", "F4"))[1])
    fill, text = mine.pop(("HocSinh", "B6"))
    assert fill == YELLOW and text.startswith(theirs.pop(("HocSinh", "B6"))[1])
    assert "Cô Lan" in text and "đã kiểm tra với phụ huynh" in text
    assert mine == theirs
    assert mine[("HocSinh", "B3")][0] == RED  # error and warning on one cell: the error wins
    assert mine[("HocSinh", "C500")][0] == RED and mine[("HocSinh", "A5")][0] == RED
    assert (QUOTED, "A2") in mine and ("DanhMuc", "A2") in mine


def test_unmarked_cells_keep_values_and_styles_marked_cells_only_change_fill(rich):
    src, out, _ = rich
    before, after = openpyxl.load_workbook(src), openpyxl.load_workbook(out)
    marked = set(_marks(out))
    for ws in before.worksheets:
        new = after[ws.title]
        assert new.sheet_state == ws.sheet_state
        assert {str(r) for r in new.merged_cells.ranges} == {str(r) for r in ws.merged_cells.ranges}
        for row in ws.iter_rows():
            for c in row:
                d = new[c.coordinate]
                assert d.value == c.value, (ws.title, c.coordinate)
                assert _style(d) == _style(c), (ws.title, c.coordinate)
                if (ws.title, c.coordinate) not in marked:
                    assert repr(d.fill) == repr(c.fill), (ws.title, c.coordinate)
                    if c.comment is not None:
                        assert (d.comment.author, d.comment.text) == (c.comment.author, c.comment.text)
    hs = after["HocSinh"]
    assert hs["E2"].data_type == "f" and hs["E2"].value == "=SUM(D2:D9)"  # the formula kept
    assert hs["D4"].font.b and hs["D4"].number_format == "0.00" and hs["D4"].border.left.style == "thin"
    assert hs["D4"].fill.fgColor.rgb.endswith(YELLOW)
    assert hs["A1"].comment.text == "cột số thứ tự"  # an unmarked cell's comment of the school kept
    assert hs["C500"].value is None


def test_phanhoi_first_active_only_selected_and_names_still_point_right(rich):
    src, out, _ = rich
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == [TEXT["sheet"], "HocSinh", QUOTED, "DanhMuc"]
    assert wb.active.title == TEXT["sheet"]
    assert [bool(ws.sheet_view.tabSelected) for ws in wb.worksheets] == [True, False, False, False]
    assert wb[TEXT["sheet"]]["A1"].value == TEXT["title"]
    before = openpyxl.load_workbook(src)
    # sheet-scoped names (localSheetId shifted by the new first sheet) still on their sheets
    assert wb["HocSinh"].print_title_rows == before["HocSinh"].print_title_rows == "$1:$1"
    assert wb[QUOTED].print_area == before[QUOTED].print_area
    assert "$A$1:$B$2" in wb[QUOTED].print_area
    assert wb[TEXT["sheet"]].print_title_rows is not None and wb[TEXT["sheet"]].print_title_rows.startswith("$1:")
    assert wb.defined_names["GioiTinh"].attr_text == "DanhMuc!$A$1:$A$2"
    texts = [c.value for row in wb[TEXT["sheet"]].iter_rows(max_row=20) for c in row]
    assert TEXT["values_only"] not in texts  # formats and formulas are kept: no "values only" note
    links = {c.hyperlink.location for row in wb[TEXT["sheet"]].iter_rows() for c in row if c.hyperlink}
    assert "'HocSinh'!F3" in links and "'Danh sách (cũ)''s'!A2" in links and "'HocSinh'!C500" in links


def test_unchanged_members_are_copied_compressed_as_they_came(rich):
    src, out, _ = rich
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(out) as b:
        old, new = {i.filename: i for i in a.infolist()}, {i.filename: i for i in b.infolist()}
        assert set(old) <= set(new)
        same = [n for n in old if new[n].CRC == old[n].CRC]
        assert "xl/theme/theme1.xml" in same and "docProps/core.xml" in same
        for name in same:  # not inflated and deflated again: the very bytes
            assert new[name].compress_size == old[name].compress_size, name
        assert b.testzip() is None


def test_the_scratch_book_writes_phanhoi_s_sheet_only(tmp_path, monkeypatch):
    """xlsxwriter's scratch book: PhanHoi's sheet XML, and of the comment sheets only what the
    patch takes (their rels, comments, VML drawings), never their own sheet XML (issue 12):
    member for member the workbook a scratch book with every sheet written gives."""
    from xlsxwriter.packager import Packager

    from edustat import feedback_patch
    from edustat.feedback import _normalise

    src = _openpyxl_book(tmp_path / "src.xlsx")
    issues = _issues(OPENPYXL_ISSUES)
    made: list[set[str]] = []
    scratch = feedback_patch._scratch
    monkeypatch.setattr(feedback_patch, "_scratch", lambda *a: made.append(set(p := scratch(*a))) or p)
    data, marked = patch(src.read_bytes(), _normalise(issues), _about(issues))
    assert "xl/worksheets/sheet1.xml" in made[0] and "xl/worksheets/_rels/sheet2.xml.rels" in made[0]
    assert not any(re.fullmatch(r"xl/worksheets/sheet([2-9]|\d\d+)\.xml", p) for p in made[0])
    monkeypatch.setattr(feedback_patch._Parts, "_write_worksheet_files", Packager._write_worksheet_files)
    every, marked_every = patch(src.read_bytes(), _normalise(issues), _about(issues))
    assert "xl/worksheets/sheet2.xml" in made[1] and marked == marked_every
    with zipfile.ZipFile(io.BytesIO(data)) as a, zipfile.ZipFile(io.BytesIO(every)) as b:
        assert a.namelist() == b.namelist()
        assert all(a.read(n) == b.read(n) for n in a.namelist())


def test_shared_strings_formulas_and_an_empty_sheet(tmp_path):
    src = _xlsxwriter_book(tmp_path / "src.xlsx")
    issues = _issues([_issue("CanBo", 3, "B", "coef", "error"), _issue("CanBo", 2, "A", "code", "warning"),
                      _issue("Trống", 4, "B", "empty", "notice"), _issue("CanBo", 3, "C", "total", "notice")])
    out = _write(src, tmp_path / "patch.xlsx", issues, "patch")
    fast = _write(src, tmp_path / "fast.xlsx", issues, "fast")
    assert _marks(out) == _marks(fast)
    wb = openpyxl.load_workbook(out)
    cb = wb["CanBo"]
    assert cb["A2"].value == "CB01" and cb["B3"].value == 3.0 and cb["B3"].font.b and cb["B3"].number_format == "0.0"
    assert cb["C3"].value == "=B3*2"
    assert openpyxl.load_workbook(out, data_only=True)["CanBo"]["C3"].value == 6.0  # the cached value kept
    assert wb["Trống"]["B4"].fill.fgColor.rgb.endswith(BLUE)
    assert wb.active.title == TEXT["sheet"] and not cb.sheet_view.tabSelected
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(out) as b:
        assert a.read("xl/sharedStrings.xml") == b.read("xl/sharedStrings.xml")


@pytest.mark.parametrize("name,sheet,cells", [
    ("template-truong-hoc.xlsx", "Sheet1", ["B4", "C6"]),  # a sheet with the ministry's comments
    ("template-upload-can-bo.xlsx", "CanboPhong.So", ["I1", "B3"]),
    ("bieu-02-th-dn_2020_export.xlsx", "III", ["E10", "F12"]),
])
def test_ministry_files(tmp_path, name, sheet, cells):
    src = MOET / name
    if not src.exists():
        pytest.skip(f"{src} not available")
    issues = _issues([_issue(sheet, int(c[1:]), c[0], f"r{i}", ("error", "warning")[i % 2])
                      for i, c in enumerate(cells)])
    from edustat.feedback import _normalise

    patch(src.read_bytes(), _normalise(issues), _about(issues))  # handled, not a fallback
    out = _write(src, tmp_path / "patch.xlsx", issues, "patch")
    before, after = openpyxl.load_workbook(src), openpyxl.load_workbook(out)
    assert after.sheetnames == [TEXT["sheet"], *before.sheetnames] and after.active.title == TEXT["sheet"]
    mine = _marks(out)
    for c in cells:
        assert (sheet, c) in mine
    for c in (c for row in before[sheet].iter_rows() for c in row if c.comment is not None):
        d = after[sheet][c.coordinate]
        assert c.comment.text.strip() in d.comment.text  # the ministry's comment kept (inside ours when marked)
    for ws in before.worksheets:
        for row in ws.iter_rows(max_row=60):
            for c in row:
                assert after[ws.title][c.coordinate].value == c.value
    import xml.etree.ElementTree as ET

    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None
        for part in z.namelist():
            if part.endswith((".xml", ".rels", ".vml")):
                ET.fromstring(z.read(part))  # well-formed, every prefix bound


@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice not installed")
def test_libreoffice_converts_the_patched_workbook(rich, tmp_path):
    _, out, _ = rich
    pdf_dir = tmp_path / "pdf"
    run = subprocess.run(["soffice", f"-env:UserInstallation=file://{tmp_path}/lo", "--headless", "--convert-to", "pdf",
                          "--outdir", str(pdf_dir), str(out)], capture_output=True, timeout=180)
    assert run.returncode == 0, run.stderr
    pdf = pdf_dir / "patch.pdf"
    assert pdf.exists() and pdf.stat().st_size > 1000
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
        assert TEXT["title"] in text and "Học sinh 3" in text


def test_a_corrupt_xlsx_falls_back_to_the_fast_engine(tmp_path, caplog):
    src = _openpyxl_book(tmp_path / "src.xlsx")
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(src.read_bytes()[:-200])  # the central directory cut off
    caplog.set_level(logging.INFO)
    out = _write(bad, tmp_path / "out.xlsx", _issues(OPENPYXL_ISSUES), "patch")
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames[0] == TEXT["sheet"]
    assert "patch engine not used" in caplog.text and "not_a_zip" in caplog.text
    assert "Học sinh" not in caplog.text  # no value from the workbook in the log


def test_an_xls_falls_back_to_the_fast_engine(tmp_path):
    xls = tmp_path / "old.xls"
    xls.write_bytes(bytes.fromhex("D0CF11E0A1B11AE1") + b"\0" * 2000)  # an OLE2 container: not a zip
    with pytest.raises(Fallback, match="not_a_zip"):
        patch(xls.read_bytes(), _issues([]), {})
    out = _write(xls, tmp_path / "out.xlsx", _issues(OPENPYXL_ISSUES), "patch")
    assert openpyxl.load_workbook(out).sheetnames == [TEXT["sheet"]]


def test_macros_and_a_resent_feedback_workbook_fall_back(tmp_path):
    src = _openpyxl_book(tmp_path / "src.xlsx")
    issues = _issues(OPENPYXL_ISSUES)
    from edustat.feedback import _normalise

    buf = io.BytesIO()
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(buf, "w") as b:
        for i in a.infolist():
            b.writestr(i, a.read(i))
        b.writestr("xl/vbaProject.bin", b"\0" * 10)
    with pytest.raises(Fallback, match="macros"):
        patch(buf.getvalue(), _normalise(issues), _about(issues))
    first = _write(src, tmp_path / "first.xlsx", issues, "patch")
    with pytest.raises(Fallback, match="phanhoi_present"):  # ours came back: the fast copy drops old marks
        patch(first.read_bytes(), _normalise(issues), _about(issues))
    again = _write(first, tmp_path / "again.xlsx", issues, "patch")
    assert openpyxl.load_workbook(again).sheetnames.count(TEXT["sheet"]) == 1


def test_every_part_is_well_formed_and_keeps_its_prefixes(rich):
    """The school's parts are edited as text: each stays namespace-well-formed (our comment
    shapes take the prefixes of the VML they join: openpyxl's is ns0/ns1/ns2) and no part we
    wrote gains ElementTree's ns0: prefixes."""
    import xml.etree.ElementTree as ET

    src, out, _ = rich
    with zipfile.ZipFile(src) as a:
        theirs = {n: a.read(n) for n in a.namelist()}
    with zipfile.ZipFile(out) as z:
        for name in z.namelist():
            if name.endswith((".xml", ".rels", ".vml")):
                data = z.read(name)
                ET.fromstring(data)  # raises on an unbound prefix
                if name not in theirs or b"<ns0:" not in theirs[name]:
                    assert not re.search(rb"<ns\d+:", data), name


@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice not installed")
def test_a_workbook_saved_by_libreoffice(tmp_path):
    """LibreOffice writes its own xlsx (shared strings, a VML without idmap, shape ids
    "shape_0"): patched, not handed to the fast engine, the same cells marked."""
    import xml.etree.ElementTree as ET

    from edustat.feedback import _normalise

    src = _openpyxl_book(tmp_path / "src.xlsx")
    run = subprocess.run(["soffice", f"-env:UserInstallation=file://{tmp_path}/lo", "--headless", "--convert-to",
                          "xlsx:Calc MS Excel 2007 XML", "--outdir", str(tmp_path / "lo"), str(src)],
                         capture_output=True, timeout=180)
    assert run.returncode == 0, run.stderr
    lo = tmp_path / "lo" / "src.xlsx"
    issues = _issues(OPENPYXL_ISSUES)
    patch(lo.read_bytes(), _normalise(issues), _about(issues))  # raises Fallback if not handled
    out = _write(lo, tmp_path / "patch.xlsx", issues, "patch")
    fast = _write(lo, tmp_path / "fast.xlsx", issues, "fast")
    mine, theirs = _marks(out), _marks(fast)
    assert mine.pop(("HocSinh", "F3"))[0] == BLUE and theirs.pop(("HocSinh", "F4"))
    assert set(mine) == set(theirs)
    with zipfile.ZipFile(out) as z:
        for part in z.namelist():
            if part.endswith((".xml", ".rels", ".vml")):
                ET.fromstring(z.read(part))
    hs = openpyxl.load_workbook(out)["HocSinh"]
    assert "đã kiểm tra với phụ huynh" in hs["B6"].comment.text and hs["A1"].comment.text == "cột số thứ tự"
