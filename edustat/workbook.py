"""Write submission workbooks: the blank template schools fill, and (for the synthetic city)
filled workbooks in our template's layout or in the layouts other systems export.

One writer for both, driven by the contract: headers, order, code lists and formats all come
from `schemas/`. xlsxwriter is used (about 3× openpyxl, stack-findings §6).
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

import pandas as pd
import xlsxwriter
from xlsxwriter.utility import xl_col_to_name

from schemas import CodeList, Contract, Field, Sheet, load_contract
from transforms.text import strip_accents

INSTRUCTIONS_SHEET = "HuongDan"
CODELIST_SHEET = "DanhMuc"
NOTES_SHEET = "GhiChu"  # a prefilled (rolled-over) template's notes for the school
VALIDATION_ROWS = 3000  # rows below the header that carry dropdowns in a blank template
TEMPLATE_VERSION_PROPERTY = "edustat_template_version"


@dataclass(frozen=True)
class ExportStyle:
    """How a workbook looks. TEMPLATE is ours; the others imitate ministry / vnEdu exports."""

    title_rows: int = 0
    numbering_row: bool = False
    headers: Literal["header", "alias", "unaccented"] = "header"
    values: Literal["code", "label"] = "code"
    dates: Literal["text", "excel"] = "text"
    ids_as_numbers: bool = False
    template: bool = True


TEMPLATE = ExportStyle()
MINISTRY_EXPORT = ExportStyle(
    title_rows=3, numbering_row=True, headers="alias", values="label", dates="text",
    ids_as_numbers=True, template=False,
)


@dataclass(frozen=True)
class SheetLayout:
    """Where things landed, so tests and the synthetic manifest can name exact cells."""

    name: str
    header_row: int
    first_data_row: int
    columns: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    field_rows: dict[str, int] = field(default_factory=dict)
    rows: int = 0


def _header_text(f: Field, style: ExportStyle) -> str:
    if style.headers == "alias" and f.aliases:
        # the first alias that is a plain spelling (not an ASCII field code like MA_TINH)
        for a in f.aliases:
            if not a.isupper():
                return a
    if style.headers == "unaccented":
        return strip_accents(f.header)
    return f.header


def _is_blank(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


class _Formats:
    def __init__(self, wb: xlsxwriter.Workbook):
        self.header = wb.add_format(
            {"bold": True, "text_wrap": True, "valign": "vcenter", "align": "center",
             "bg_color": "#DDEBF7", "border": 1}
        )
        self.required = wb.add_format(
            {"bold": True, "text_wrap": True, "valign": "vcenter", "align": "center",
             "bg_color": "#FCE4D6", "border": 1}
        )
        self.text = wb.add_format({"num_format": "@"})
        self.text_top = wb.add_format({"num_format": "@", "valign": "top"})
        self.date = wb.add_format({"num_format": "dd/mm/yyyy"})
        self.title = wb.add_format({"bold": True, "font_size": 13})
        self.note = wb.add_format({"italic": True, "font_color": "#595959", "text_wrap": True,
                                   "valign": "top"})
        self.wrap = wb.add_format({"text_wrap": True, "valign": "top"})
        self.bold = wb.add_format({"bold": True})
        self.bold_wrap = wb.add_format({"bold": True, "text_wrap": True, "valign": "top"})
        self.cell = wb.add_format({"text_wrap": True, "valign": "top", "border": 1})
        self.cell_bold = wb.add_format({"text_wrap": True, "valign": "top", "border": 1, "bold": True})
        self.heading = wb.add_format({"bold": True, "font_size": 12, "valign": "vcenter"})


class _CodeListSheet:
    """The hidden sheet holding each code list once, as 'code - label' entries, so dropdowns
    reference a range instead of an inline list (inline lists over 255 characters corrupt
    the file — stack-findings)."""

    def __init__(self) -> None:
        self.columns: list[tuple[str, list[str]]] = []
        self._where: dict[str, str] = {}

    def range_for(self, key: str, entries: list[str]) -> str:
        if key not in self._where:
            col = xl_col_to_name(len(self.columns))
            self.columns.append((key, entries))
            self._where[key] = f"={CODELIST_SHEET}!${col}$2:${col}${len(entries) + 1}"
        return self._where[key]

    def write(self, wb: xlsxwriter.Workbook, fmt: _Formats) -> None:
        ws = wb.add_worksheet(CODELIST_SHEET)
        # constant_memory mode writes row by row: a cell above the current row is lost
        for c, (key, _) in enumerate(self.columns):
            ws.write_string(0, c, key, fmt.bold)
        depth = max((len(e) for _, e in self.columns), default=0)
        for r in range(depth):
            for c, (_, entries) in enumerate(self.columns):
                if r < len(entries):
                    ws.write_string(r + 1, c, entries[r])
        ws.hide()


def _entry(code: str, label: str | None) -> str:
    """What a dropdown offers and a blank template shows: "02 - Nữ" for a ministry code, the
    label alone ("Đầu năm") where the code is our own identifier (dau_nam), never read by a
    person. The reader accepts code, label and both."""
    if not label or label == code:
        return code
    return f"{code} - {label}" if any(ch.isdigit() for ch in code) else label


def _entries(cl: CodeList) -> list[str]:
    return [_entry(c, lab) for c, lab in zip(cl.codes, cl.labels)]


def _field_codelist(f: Field, school: Mapping[str, object] | None) -> tuple[str, CodeList] | None:
    """The list a dropdown offers: admin units are narrowed to the school's province/district."""
    cl = f.codelist
    if cl is None:
        return None
    school = school or {}
    key = cl.ref + (":" + ",".join(f.codes) if f.codes else "")
    parent = {"district_code": ("ma_tp", "province_code"), "commune_code": ("ma_qh", "district_code")}
    if f.id in parent and school.get(parent[f.id][1]):
        attr, pid = parent[f.id][0], str(school[parent[f.id][1]])
        keep = [c for c, a in zip(cl.codes, cl.attributes) if a.get(attr) == pid]
        if keep:
            cl = cl.subset(keep)
            key = f"{cl.ref}:{pid}"
    if len(cl) > 2000:  # a dropdown of 11k communes helps nobody; the reader still checks codes
        return None
    return key, cl


def _required_text(f: Field, levels: tuple[str, ...], period: str) -> str:
    r = f.required
    if r.when_field:
        return "Có điều kiện"
    return "Bắt buộc" if r.applies(levels, period) else "Không bắt buộc"


def write_submission(
    path: Path,
    *,
    levels: tuple[str, ...],
    period: str,
    school_year: str,
    school: Mapping[str, object] | None = None,
    tables: Mapping[str, pd.DataFrame] | None = None,
    style: ExportStyle = TEMPLATE,
    contract: Contract | None = None,
    notes: list[str] | None = None,
) -> dict[str, SheetLayout]:
    """Write one school's workbook. `tables` maps sheet ids to frames whose columns are
    field ids (codes as strings, dates as `datetime.date`); None writes a blank template.
    `notes` (a prefilled template, edustat.rollover): lines for the school on a sheet of
    their own, the first sheet (NOTES_SHEET, not read back by the reader)."""
    c = contract or load_contract()
    levels = tuple(levels)
    school = dict(school or {})
    if style.template:
        school.setdefault("template_version", c.version)
        school.setdefault("school_year", school_year)
        school.setdefault("period", period)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb = xlsxwriter.Workbook(
        str(path),
        {"constant_memory": True, "strings_to_numbers": False, "strings_to_formulas": False,
         "strings_to_urls": False},
    )
    fmt = _Formats(wb)
    lists = _CodeListSheet()
    props = {"title": "Biểu nhập liệu thống kê giáo dục (edustat)", "subject": f"{school_year} {period}",
             "author": "edustat", "company": "edustat"}
    wb.set_properties(props)
    if style.template:
        wb.set_custom_property(TEMPLATE_VERSION_PROPERTY, c.version)
        if notes:
            _write_notes(wb, fmt, notes)
        _write_instructions(wb, fmt, c, levels, period, school_year)
    layouts: dict[str, SheetLayout] = {}
    for sheet in c.sheets:
        if not sheet.fields_for(levels, period):
            continue
        if sheet.id == "rooms" and not sheet.required.applies(levels, period):
            continue  # rooms are a start-of-year sheet
        if sheet.layout == "key_value":
            # a blank or prefilled (notes: edustat.rollover) template shows codes as its dropdowns do
            layouts[sheet.id] = _write_key_value(wb, fmt, lists, sheet, levels, period, school, style,
                                                 blank=style.template and (tables is None or bool(notes)))
        else:
            frame = (tables or {}).get(sheet.id)
            layouts[sheet.id] = _write_table(wb, fmt, lists, sheet, levels, period, school, frame, style)
    if style.template:
        lists.write(wb, fmt)
    wb.close()
    return layouts


LEVEL_NAMES = {"MN": "Mầm non", "TH": "Tiểu học", "THCS": "Trung học cơ sở"}
PERIOD_NAMES = {"dau_nam": "đầu năm (số liệu có đến 30/9)", "cuoi_nam": "cuối năm (số liệu có đến 31/5)"}


def _print_setup(ws, *, landscape: bool, fit_width: bool, footer: str, repeat: tuple[int, int] | None = None,
                 widths: list[float] | None = None) -> None:
    """A4, the sheet's name and page number at the foot of every page. `fit_width`: one page
    wide; `widths` (a table's columns): as many pages wide as keep 11 pt text at ≥ 80 %, the
    columns spread evenly over them (no page holding one stray column)."""
    from edustat.layout import MARGIN_IN, PAPER, column_points, printable_width

    ws.set_paper(PAPER["A4"][2])
    ws.set_margins(**MARGIN_IN)
    ws.set_landscape() if landscape else ws.set_portrait()
    if fit_width:
        ws.fit_to_pages(1, 0)
    elif widths:
        total = sum(column_points(w) for w in widths)
        ws.fit_to_pages(max(1, math.ceil(total * 0.8 / printable_width("A4", landscape))), 0)
    if repeat is not None:
        ws.repeat_rows(*repeat)
    ws.set_footer(f"&LBiểu nhập liệu thống kê giáo dục — trang {footer}&RTrang &P/&N")


def _write_instructions(wb, fmt: _Formats, c: Contract, levels, period, school_year) -> None:
    """HuongDan: how to fill the workbook, then every column of every sheet. Written for the
    screen and for A4 landscape: one wide wrapped column of text, every row as tall as its
    text (spreadsheet programs do not grow rows written by xlsxwriter). Nothing here comes
    from the contract's developer notes: only headers, hints and whether a column is required."""
    from edustat.layout import rows_height, wrap_points, wrapped_lines

    ws = wb.add_worksheet(INSTRUCTIONS_SHEET)
    widths = (14, 30, 15, 60)
    for i, w in enumerate(widths):
        ws.set_column(i, i, w)
    full = sum(wrap_points(w) for w in widths)
    _print_setup(ws, landscape=True, fit_width=True, footer=INSTRUCTIONS_SHEET)
    names = ", ".join(LEVEL_NAMES.get(lv, lv) for lv in levels)
    lines = [
        f"BIỂU NHẬP LIỆU THỐNG KÊ GIÁO DỤC — năm học {school_year}, kỳ {PERIOD_NAMES.get(period, period)}",
        f"Cấp học: {names}. Phiên bản mẫu: {c.version}.",
        "Cách điền:",
        "• Mỗi trường gửi một tệp. Không đổi tên các trang tính và không xóa, đổi tên cột; có thể đổi thứ tự cột.",
        "• Trang 'Truong': điền cột 'Giá trị' cho từng chỉ tiêu. Các trang khác: mỗi dòng một lớp / một học sinh / một cán bộ.",
        "• Ngày nhập dạng ngày/tháng/năm (05/09/2016). Mã định danh cá nhân nhập đủ 12 chữ số (ô đã định dạng văn bản để giữ số 0 ở đầu).",
        "• Các cột có danh sách chọn: chọn trong danh sách, hoặc nhập mã (ví dụ 02) hay tên (ví dụ Nữ) đều được.",
        "• Tiêu đề cột tô màu cam là cột bắt buộc.",
        "• Bảo mật: tệp có thông tin cá nhân của học sinh và cán bộ. Chỉ gửi qua kênh Phòng GD&ĐT quy định; không đăng công khai, không gửi qua nhóm chat.",
        "• Sau khi gửi, nhà trường nhận lại tệp phản hồi: ô có lỗi được tô màu và ghi chú cách sửa.",
    ]
    for r, text in enumerate(lines):
        size = 13 if r == 0 else 11
        ws.set_row(r, rows_height(wrapped_lines(text, full, size, r == 0), size))
        ws.merge_range(r, 0, r, len(widths) - 1, text, fmt.title if r == 0 else (fmt.heading if r == 2 else fmt.wrap))
    r = len(lines) + 1
    ws.set_row(r, rows_height(2, 11))
    for col, h in enumerate(["Trang tính", "Cột", "Bắt buộc", "Cách nhập / giá trị hợp lệ"]):
        ws.write_string(r, col, h, fmt.header)
    ws.repeat_rows(r, r)
    ws.freeze_panes(r + 1, 0)
    for sheet in c.sheets:
        fields = sheet.fields_for(levels, period)
        if sheet.id == "rooms" and not sheet.required.applies(levels, period):
            continue
        for f in fields:
            if f.id == "template_version":
                continue
            r += 1
            required = _required_text(f, levels, period)
            hint = f.hint or ""  # the contract's `note` is for developers and never printed
            lines_needed = max(wrapped_lines(hint, wrap_points(widths[3]), 11),
                               wrapped_lines(f.header, wrap_points(widths[1]), 11, required == "Bắt buộc"),
                               wrapped_lines(required, wrap_points(widths[2]), 11))
            ws.set_row(r, rows_height(lines_needed, 11))
            ws.write_string(r, 0, sheet.name, fmt.cell)
            ws.write_string(r, 1, f.header, fmt.cell_bold if required == "Bắt buộc" else fmt.cell)
            ws.write_string(r, 2, required, fmt.cell)
            ws.write_string(r, 3, hint, fmt.cell)


def _write_notes(wb, fmt: _Formats, notes: list[str]) -> None:
    """One wrapped line per note on A4 landscape, every row as tall as its text; the first
    note is the sheet's title."""
    from edustat.layout import rows_height, wrap_points, wrapped_lines

    ws = wb.add_worksheet(NOTES_SHEET)
    width = 115  # the instructions' full width: one A4 landscape page wide at 100 %
    ws.set_column(0, 0, width)
    _print_setup(ws, landscape=True, fit_width=True, footer=NOTES_SHEET)
    for r, text in enumerate(notes):
        ws.set_row(r, rows_height(wrapped_lines(text, wrap_points(width), 11, r == 0), 11))
        ws.write_string(r, 0, text, fmt.bold_wrap if r == 0 else fmt.wrap)


def _write_value(ws, r: int, col: int, f: Field, value: object, style: ExportStyle, fmt: _Formats) -> None:
    if _is_blank(value):
        return
    if isinstance(value, (pd.Timestamp, dt.datetime)):
        value = value.date()
    if f.type in ("date", "year_or_date") and isinstance(value, dt.date):
        if style.dates == "excel":
            ws.write_datetime(r, col, dt.datetime(value.year, value.month, value.day), fmt.date)
        else:
            ws.write_string(r, col, value.strftime("%d/%m/%Y"))
        return
    if f.type in ("int", "flag") and isinstance(value, (int, float)) and not isinstance(value, bool):
        ws.write_number(r, col, value)
        return
    text = str(value)
    if f.type == "code" and style.values == "label" and f.codelist is not None:
        cl = f.codelist
        if text in cl.codes:
            text = cl.label(text) or text
    if f.type == "id" and style.ids_as_numbers and text.isdigit():
        ws.write_number(r, col, int(text))
        return
    ws.write_string(r, col, text)


def _write_key_value(wb, fmt, lists, sheet: Sheet, levels, period, school, style, blank: bool = False) -> SheetLayout:
    """The school sheet: one row per indicator. In a blank template, prefilled codes are
    written as the dropdown shows them ("Đầu năm", "74 - Bình Dương"), and every row is as tall
    as its hint."""
    from edustat.layout import rows_height, wrap_points, wrapped_lines

    ws = wb.add_worksheet(sheet.name)
    widths = (40, 28, 62)
    ws.set_column(0, 0, widths[0])
    ws.set_column(1, 1, widths[1], fmt.text)
    ws.set_column(2, 2, widths[2])
    if style.template:
        _print_setup(ws, landscape=True, fit_width=True, footer=sheet.name)
    row = 0
    for t in range(style.title_rows):
        ws.write_string(row, 0, ("THÔNG TIN TRƯỜNG HỌC" if t == 0 else ""), fmt.title)
        row += 1
    header_row = row
    ws.write_string(row, 0, sheet.key_header or "Chỉ tiêu", fmt.header)
    ws.write_string(row, 1, sheet.value_header or "Giá trị", fmt.header)
    if style.template:
        ws.write_string(row, 2, "Hướng dẫn", fmt.header)
        ws.freeze_panes(row + 1, 0)
    row += 1
    field_rows: dict[str, int] = {}
    headers: dict[str, str] = {}
    for f in sheet.fields_for(levels, period):
        if f.id == "template_version" and not style.template:
            continue
        label = _header_text(f, style)
        headers[f.id] = label
        if style.template:
            lines = max(wrapped_lines(f.hint or "", wrap_points(widths[2]), 11),
                        wrapped_lines(label, wrap_points(widths[0]), 11, True))
            if lines > 1:
                ws.set_row(row, rows_height(lines, 11))
        ws.write_string(row, 0, label, (fmt.bold_wrap if style.template else fmt.bold)
                        if f.required.applies(levels, period) else (fmt.wrap if style.template else None))
        value = school.get(f.id)
        if blank and not _is_blank(value):  # prefilled: as the dropdown shows it, at the row's top
            text = str(value)
            if f.codelist is not None and text in f.codelist.codes:
                text = _entry(text, f.codelist.label(text))
            ws.write_string(row, 1, text, fmt.text_top)
        else:
            _write_value(ws, row, 1, f, value, style, fmt)
        if style.template:
            ws.write_string(row, 2, f.hint, fmt.note)
            cl = _field_codelist(f, school)
            if cl is not None:
                ws.data_validation(row, 1, row, 1, {
                    "validate": "list", "source": lists.range_for(cl[0], _entries(cl[1])),
                    "error_type": "warning", "error_title": "Giá trị không có trong danh mục",
                    "error_message": "Chọn trong danh sách, hoặc nhập đúng mã / tên.",
                })
        field_rows[f.id] = row + 1
        row += 1
    return SheetLayout(sheet.name, header_row + 1, header_row + 2, {"value": "B"}, headers, field_rows, len(field_rows))


def _write_table(wb, fmt, lists, sheet: Sheet, levels, period, school, frame, style) -> SheetLayout:
    fields = sheet.fields_for(levels, period)
    ws = wb.add_worksheet(sheet.name)
    row = 0
    if style.title_rows:
        titles = [str(school.get("school_name") or ""), f"DANH SÁCH {sheet.title.upper()}",
                  f"Năm học {school.get('school_year') or ''}"]
        for t in range(style.title_rows):
            if t < len(titles):
                ws.write_string(row, 0, titles[t], fmt.title)
            row += 1
    header_row = row
    columns: dict[str, str] = {}
    headers: dict[str, str] = {}
    widths: list[float] = []
    for col, f in enumerate(fields):
        label = _header_text(f, style)
        headers[f.id] = label
        columns[f.id] = xl_col_to_name(col)
        required = f.required.applies(levels, period) and not f.required.when_field
        text_like = f.type in ("id", "code", "text", "date", "school_year")
        width = max(10, min(32, len(label) + 2))
        if style.template and frame is not None and f.id in getattr(frame, "columns", ()) and len(frame):
            # a prefilled template (edustat.rollover): as wide as its longest text value (names)
            longest = frame[f.id].dropna().astype(str).str.len().max()
            if longest == longest and longest:  # not NaN, not 0
                width = max(width, min(32, int(longest) + 2))
        widths.append(width)
        ws.set_column(col, col, width, fmt.text if (style.template and text_like) else None)
        ws.write_string(row, col, label, fmt.required if (style.template and required) else fmt.header)
    ws.set_row(row, 36)
    row += 1
    if style.numbering_row:
        for col in range(len(fields)):
            ws.write_number(row, col, col + 1)
        row += 1
    first_data = row
    n = 0
    if frame is not None and len(frame):
        present = [(col, f) for col, f in enumerate(fields) if f.id in frame.columns]
        arrays = [(col, f, frame[f.id].tolist()) for col, f in present]
        n = len(frame)
        for i in range(n):
            for col, f, values in arrays:
                _write_value(ws, row + i, col, f, values[i], style, fmt)
    if style.template:
        ws.freeze_panes(first_data, 0)
        _print_setup(ws, landscape=True, fit_width=False, footer=sheet.name, repeat=(header_row, first_data - 1),
                     widths=widths)
        last = first_data + max(n, VALIDATION_ROWS) - 1
        for col, f in enumerate(fields):
            cl = _field_codelist(f, school)
            if cl is not None:
                ws.data_validation(first_data, col, last, col, {
                    "validate": "list", "source": lists.range_for(cl[0], _entries(cl[1])),
                    "error_type": "warning", "error_title": "Giá trị không có trong danh mục",
                    "error_message": "Chọn trong danh sách, hoặc nhập đúng mã / tên.",
                })
        ws.autofilter(header_row, 0, header_row, max(len(fields) - 1, 0))
    return SheetLayout(sheet.name, header_row + 1, first_data + 1, columns, headers, {}, n)
