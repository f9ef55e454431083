"""The "fast" feedback engine (default): fastexcel reads the values of each of the school's
sheets and xlsxwriter writes a new workbook — the PhanHoi sheet laid out by `edustat.feedback`,
then every sheet's values at the same cells, offending cells filled and commented. Also renders
a receipt (PhanHoi alone)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Mapping

import fastexcel
import pandas as pd
import pyarrow as pa
import xlsxwriter
from openpyxl.utils import get_column_letter, quote_sheetname

from edustat.feedback import (_FORMULA_START, _MARGIN, _WIDTHS, BORDER_COLOR, COMMENT_AUTHOR, COMMENT_WIDTH,
                              SEVERITY_COLOR, TEXT, _comment_height, _comment_text, _Page, _phanhoi, _save_atomic,
                              _sheet_lookup, _Style, _targets, log)


def write(source: Path | None, out: Path, frame: pd.DataFrame, about: dict) -> dict[object, str]:
    """fastexcel + xlsxwriter: a new workbook, PhanHoi first, then the school's sheets' values."""
    status = about["status"]
    grids = _read_grids(source, status)
    opened = grids is not None
    grids = grids or []
    marks, marked = _fast_marks(grids, frame)
    unmarked = source is not None and not opened and status != "unreadable"
    content = _phanhoi(frame, sheet_order=[TEXT["sheet"]] + [g.name for g in grids], marked=marked,
                       note=TEXT["not_marked"] if unmarked else None,
                       copy_note=TEXT["values_only"] if opened else None, **about)

    def save(tmp: Path) -> None:
        wb = xlsxwriter.Workbook(str(tmp), _XLSX_OPTIONS)
        try:
            ws = wb.add_worksheet(TEXT["sheet"])
            _render_xlsx(wb, ws, content)
            cell_formats = _CellFormats(wb)
            for grid in grids:
                _copy_sheet(wb, grid, marks.get(grid.title, {}), cell_formats)
            ws.activate()
        except BaseException:
            try:
                wb.close()  # xlsxwriter complains about a workbook never closed; the file is dropped
            except Exception:  # noqa: S110 - the first error is the one to report
                pass
            raise
        wb.close()

    _save_atomic(save, out)
    return marked


# --- the school's sheets, fast: values read with fastexcel, written with xlsxwriter ------------

_XLSX_OPTIONS = {
    "constant_memory": True,  # rows are written in order and flushed: less memory, a little faster
    # every text is a text: nothing the school typed may become a formula, a link or a number
    "strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False,
}
_EPOCH = datetime(1970, 1, 1)  # fastexcel's timestamps are naive milliseconds since 1970
_GOT = "Expected datetime but got '"  # fastexcel's conversion error: "…got 'String(\"x\")'"
_ERROR_TEXT = {"Div0": "#DIV/0!", "NA": "#N/A", "Name": "#NAME?", "Null": "#NULL!", "Num": "#NUM!",
               "Ref": "#REF!", "Value": "#VALUE!", "GettingData": "#GETTING_DATA"}
_BAD_TITLE = re.compile(r"[\[\]:*?/\\]")


@dataclass
class _Grid:
    """One sheet of the school's workbook as fastexcel reads it: the values of each used
    column (str, float, bool or datetime; None when blank), from Excel row 1."""

    name: str  # as in the school's workbook: issues name it so
    title: str  # in the feedback workbook: the same unless Excel would refuse it there
    visible: str  # visible | hidden | veryhidden
    columns: list[int]  # the Excel column (1 = A) of each entry of `values`
    values: list[list[object]]
    height: int

    def first_filled(self, row: int) -> int:
        if 1 <= row <= self.height:
            for col, values in zip(self.columns, self.values):
                if values[row - 1] is not None:
                    return col
        return self.columns[0] if self.columns else 1


def _read_grids(source: Path | None, status: str) -> list[_Grid] | None:
    """Every sheet of the school's workbook but our previous PhanHoi, in order; None when
    there is nothing to copy or fastexcel cannot read it (then PhanHoi comes alone)."""
    if source is None or status == "unreadable":
        return None
    try:
        reader = fastexcel.read_excel(str(source))
        grids: list[_Grid] = []
        taken = {TEXT["sheet"].lower()}
        for name in reader.sheet_names:
            visible, columns, values, height = _read_sheet(reader, name)
            if name == TEXT["sheet"] and columns[:1] == [1] and values[0][:1] == [TEXT["title"]]:
                continue  # the PhanHoi we sent last time: the new one replaces it
            grids.append(_Grid(name, _xlsx_title(name, taken), visible, columns, values, height))
        return grids
    except Exception as exc:  # any failure only means the school's sheets cannot be copied
        log.warning("feedback: source not read for copying (%s)", type(exc).__name__)
        return None


def _read_sheet(reader: fastexcel.ExcelReader, name: str) -> tuple[str, list[int], list[list[object]], int]:
    """(visibility, Excel columns, values by column, height) of one sheet.

    fastexcel gives one type per column, and the header makes nearly every column mixed, so
    each cell's type is found from two reads: as text (every cell; a number with all its
    digits), and as a date, which succeeds for numbers and dates only and, for any other cell,
    reports its kind in the error's text ("String", "Bool", "Error(Div0)", "Float" for a number
    beyond the dates). If that text ever changes, such cells fall back to their text."""
    text = reader.load_sheet(name, header_row=None, skip_rows=0, dtypes="string", dtype_coercion="coerce")
    columns = [c.absolute_index + 1 for c in text.available_columns()]
    strings = [col.to_pylist() for col in text.to_arrow().columns]
    if not columns:
        return text.visible, [], [], 0
    dated, errors = reader.load_sheet(name, header_row=None, skip_rows=0, dtypes="datetime",
                                      dtype_coercion="coerce").to_arrow_with_errors()
    kinds: list[dict[int, str]] = [{} for _ in columns]
    start = len(_GOT)
    for e in errors.errors:
        row, j = e.position
        detail = e.detail
        kind = detail[start:detail.find("(", start)] if detail.startswith(_GOT) else ""
        if kind == "Error":  # a formula's error: shown as Excel shows it
            code = detail[start + 6:detail.find(")", start)]
            kind = _ERROR_TEXT.get(code, f"#{code.upper()}!")
        kinds[j][row] = kind
    values = []
    for texts, stamps, kind in zip(strings, dated.columns, kinds):
        if stamps.null_count == len(stamps) and all(k == "String" for k in kind.values()):
            values.append(texts)  # text only (most columns): nothing to convert
            continue
        millis = stamps.cast(pa.int64()).to_pylist()  # not to_pylist(): a huge number overflows datetime
        out: list[object] = []
        for i, (s, ms) in enumerate(zip(texts, millis)):
            if ms is not None:  # a number or a date; a date's text is "2014-09-05 00:00:00"
                try:
                    out.append(float(s))
                except (TypeError, ValueError):
                    out.append(_EPOCH + timedelta(milliseconds=ms))
            elif s is None and i not in kind:
                out.append(None)
            else:
                out.append(_typed(s, kind.get(i, "")))
        values.append(out)
    return text.visible, columns, values, len(strings[0])


def _typed(text: str | None, kind: str) -> object:
    """A cell that is not a number within the dates: its text and kind (String, Bool, Float,
    Int, an error as Excel shows it, or "" when unknown) → the value to write."""
    if kind == "Bool" and text in ("true", "false"):
        return text == "true"
    if kind in ("Float", "Int") and text is not None:
        try:
            return float(text)
        except ValueError:
            return text
    if kind.startswith("#") and text is None:  # an error value, e.g. #DIV/0!
        return kind
    return text


def _xlsx_title(name: str, taken: set[str]) -> str:
    """`name`, unless Excel would refuse it in the new workbook (taken, case-insensitively,
    or malformed by the program that wrote the school's file)."""
    def fit(text: str, room: int = 31) -> str:
        while len(text.encode("utf-16-le")) // 2 > room:
            text = text[:-1]
        return text

    title = fit(_BAD_TITLE.sub("_", name).strip("'")) or "Trang"
    base, n = title, 1
    while title.lower() in taken:
        n += 1
        suffix = f" ({n})"
        title = fit(base, 31 - len(suffix)) + suffix
    taken.add(title.lower())
    return title


def _fast_marks(grids: list[_Grid], df: pd.DataFrame) -> tuple[dict[str, dict], dict[object, str]]:
    """The cells to mark, by feedback sheet title: (row, column) → (severity, comment text,
    comment height); and issue index → the marked cell, as a hyperlink location."""
    by_name = {g.name: g for g in grids}
    targets = _targets(df, _sheet_lookup(list(by_name)), lambda name, row: by_name[name].first_filled(row))
    marks: dict[str, dict] = {}
    where: dict[object, str] = {}
    for (name, row, col), found in targets.items():
        title = by_name[name].title
        text = _comment_text([f[:5] for f in found])
        marks.setdefault(title, {})[(row, col)] = (found[0][1], text, _comment_height(text))
        location = f"{quote_sheetname(title)}!{get_column_letter(col)}{row}"
        for f in found:
            where[f[5]] = location
    return marks, where


class _CellFormats:
    """xlsxwriter formats of the school's cells, by number format and fill, each made once."""

    def __init__(self, wb: xlsxwriter.Workbook):
        self._wb = wb
        self._made: dict[tuple, object] = {(None, None): None}

    def __call__(self, num_format: str | None = None, fill: str | None = None):
        key = (num_format, fill)
        if key not in self._made:
            props: dict[str, object] = {"num_format": num_format} if num_format else {}
            if fill:
                props.update(pattern=1, bg_color=f"#{fill}")
            self._made[key] = self._wb.add_format(props)
        return self._made[key]


def _date_format(value: datetime) -> str:
    if value < datetime(1900, 1, 1):  # a time of day (Excel day 0)
        return "hh:mm:ss" if value.second else "hh:mm"
    if (value.hour, value.minute, value.second) == (0, 0, 0):
        return "dd/mm/yyyy"
    return "dd/mm/yyyy hh:mm:ss" if value.second else "dd/mm/yyyy hh:mm"


def _copy_sheet(wb: xlsxwriter.Workbook, grid: _Grid, marks: Mapping[tuple[int, int], tuple],
                formats: _CellFormats) -> None:
    """The school's sheet, values only, with its offending cells filled and commented (a blank
    one too). Rows are written in order (constant_memory)."""
    ws = wb.add_worksheet(grid.title)
    if grid.visible == "hidden":
        ws.hide()
    elif grid.visible == "veryhidden":
        ws.very_hidden()
    for col, width in _column_widths(grid):
        ws.set_column(col - 1, col - 1, width)
    by_row: dict[int, dict[int, tuple]] = {}
    for (row, col), mark in marks.items():
        by_row.setdefault(row, {})[col] = mark
    columns = [c - 1 for c in grid.columns]
    write_string, write_number, write_boolean = ws.write_string, ws.write_number, ws.write_boolean
    for i, row in enumerate(zip(*grid.values)):
        here = by_row.pop(i + 1, None)
        if here is None:
            for c, v in zip(columns, row):
                if v is None:
                    continue
                kind = type(v)
                if kind is str:
                    write_string(i, c, v)
                elif kind is float:
                    write_number(i, c, v)
                elif kind is bool:
                    write_boolean(i, c, v)
                else:
                    ws.write_datetime(i, c, v, formats(_date_format(v)))
            continue
        for c, v in zip(columns, row):
            mark = here.pop(c + 1, None)
            if v is not None or mark is not None:
                _write_marked(ws, i, c, v, mark, formats)
        for c, mark in sorted(here.items()):  # a column the sheet does not use
            _write_marked(ws, i, c - 1, None, mark, formats)
    for row in sorted(by_row):  # below the sheet's last row
        for c, mark in sorted(by_row[row].items()):
            _write_marked(ws, row - 1, c - 1, None, mark, formats)


def _write_marked(ws, r: int, c: int, value: object, mark: tuple | None, formats: _CellFormats) -> None:
    fill = SEVERITY_COLOR[mark[0]] if mark else None
    if value is None:
        ws.write_blank(r, c, None, formats(None, fill))
    elif type(value) is str:
        ws.write_string(r, c, value, formats(None, fill))
    elif type(value) is float:
        ws.write_number(r, c, value, formats(None, fill))
    elif type(value) is bool:
        ws.write_boolean(r, c, value, formats(None, fill))
    else:
        ws.write_datetime(r, c, value, formats(_date_format(value), fill))
    if mark:
        ws.write_comment(r, c, mark[1], {"author": COMMENT_AUTHOR, "width": COMMENT_WIDTH, "height": mark[2]})


def _column_widths(grid: _Grid, rows: int = 60) -> list[tuple[int, float]]:
    """Widths from the longest value among the first rows (a one-cell row, such as a title
    merged across, does not count), capped."""
    widest = [0] * len(grid.columns)
    for row in zip(*(values[:rows] for values in grid.values)):
        if sum(v is not None for v in row) < 2:
            continue
        for j, v in enumerate(row):
            if v is not None:
                widest[j] = max(widest[j], _shown_length(v))
    return [(col, min(45, w + 2)) for col, w in zip(grid.columns, widest) if w + 2 > 8.43]


def _shown_length(value: object) -> int:
    if isinstance(value, str):
        return max(map(len, value.splitlines() or [""]))
    if isinstance(value, datetime):
        return len(_date_format(value))
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return len(str(int(value)))
    return len(str(value))


# xlsxwriter


_XL_ALIGN = {"wrap": {}, "center": {"align": "center"}, "head": {"align": "center", "valign": "vcenter"},
             "left": {"align": "left"}}
_XL_FONT = {None: {}, "bold": {"bold": True}, "title": {"bold": True, "font_size": 14},
            "section": {"bold": True, "font_size": 12}, "link": {"font_color": "#0563C1", "underline": 1}}


def _render_xlsx(wb: xlsxwriter.Workbook, ws, page: _Page) -> None:
    """The same page with xlsxwriter, row by row (the workbook may be in constant_memory mode).
    Every text goes through write_string: nothing becomes a formula."""
    formats: dict[tuple[_Style, bool], object] = {}

    def fmt(style: _Style, quote: bool):
        if (style, quote) not in formats:
            props = {"text_wrap": True, "valign": "top", **_XL_ALIGN[style.align], **_XL_FONT[style.font]}
            if style.fill:
                props.update(pattern=1, bg_color=f"#{style.fill}")
            if style.border:
                props.update(border=1, border_color=f"#{BORDER_COLOR}")
            if quote:
                props["quote_prefix"] = True  # Excel's leading apostrophe, as openpyxl's quotePrefix
            formats[(style, quote)] = wb.add_format(props)
        return formats[(style, quote)]

    for i, w in enumerate(_WIDTHS):
        ws.set_column(i, i, w)
    ws.set_landscape()
    ws.set_paper(9)  # A4
    ws.fit_to_pages(1, 0)
    ws.set_margins(**_MARGIN)
    if page.frozen:
        ws.freeze_panes(page.frozen, 0)
        ws.repeat_rows(0, page.frozen - 1)
    for r, height in page.heights.items():
        ws.set_row(r - 1, height)
    merged = {(r, first): last for r, first, last in page.merges}
    for (r, c), (value, style) in sorted(page.cells.items()):
        f = fmt(style, isinstance(value, str) and value.startswith(_FORMULA_START))
        if (r, c) in merged:  # blank first, then the value: merge_range would not say write_string
            ws.merge_range(r - 1, c - 1, r - 1, merged[(r, c)] - 1, "", f)
        if (r, c) in page.links:  # the link writes its text; the value below keeps a number a number
            ws.write_url(r - 1, c - 1, f"internal:{page.links[(r, c)]}", f, string=str(value))
        if value is None:
            ws.write_blank(r - 1, c - 1, None, f)
        elif isinstance(value, str):
            ws.write_string(r - 1, c - 1, value, f)
        else:
            ws.write_number(r - 1, c - 1, value, f)
    if page.autofilter:
        ws.autofilter(page.autofilter[0] - 1, 0, page.autofilter[1] - 1, len(_WIDTHS) - 1)


def write_page_only(path: Path, content: _Page) -> None:
    """A workbook of the PhanHoi sheet alone (a clean school's receipt). In memory: for one
    small sheet xlsxwriter's temporary files cost more than the sheet (issue 12)."""
    wb = xlsxwriter.Workbook(str(path), {**_XLSX_OPTIONS, "constant_memory": False, "in_memory": True})
    try:
        ws = wb.add_worksheet(TEXT["sheet"])
        _render_xlsx(wb, ws, content)
        ws.activate()
    finally:
        wb.close()
