"""The "faithful" feedback engine: openpyxl opens the school's own workbook, drops our marks of
an earlier round, fills and comments each offending cell (formulas, styles, merges and the
school's comments kept) and inserts the PhanHoi sheet laid out by `edustat.feedback`."""
from __future__ import annotations

import re
from pathlib import Path

import openpyxl
import pandas as pd
from openpyxl.cell.cell import MergedCell
from openpyxl.comments import Comment
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter, quote_sheetname
from openpyxl.worksheet.hyperlink import Hyperlink
from openpyxl.worksheet.worksheet import Worksheet

from edustat.feedback import (_FORMULA_START, _LAST, _MARGIN, _WIDTHS, BORDER_COLOR, COMMENT_AUTHOR, COMMENT_WIDTH,
                              SEVERITY_COLOR, TEXT, _clean, _comment_height, _comment_text, _Page, _phanhoi,
                              _save_atomic, _sheet_lookup, _targets, log)


class _S:
    """Style objects shared by every PhanHoi cell (openpyxl stores each once anyway)."""

    thin = Side(style="thin", color=BORDER_COLOR)
    border = Border(left=thin, right=thin, top=thin, bottom=thin)
    wrap = Alignment(wrap_text=True, vertical="top")
    center = Alignment(wrap_text=True, vertical="top", horizontal="center")
    head = Alignment(wrap_text=True, vertical="center", horizontal="center")
    bold = Font(bold=True)
    title = Font(bold=True, size=14)
    section = Font(bold=True, size=12)
    link = Font(color="0563C1", underline="single")
    header_fill = PatternFill("solid", start_color="D9D9D9", end_color="D9D9D9")


_FILL = {k: PatternFill("solid", start_color=v, end_color=v) for k, v in SEVERITY_COLOR.items()}


def write(source: Path | None, out: Path, frame: pd.DataFrame, about: dict) -> dict[object, str]:
    """openpyxl: the school's own workbook, marked, with PhanHoi inserted first. `about`: the
    school, status, counts and dates PhanHoi shows. Returns issue index → marked cell."""
    status = about["status"]
    wb, opened = _open_source(source, status)
    school_sheets = list(wb.worksheets)
    marked = _mark_cells(wb, frame) if opened else {}

    ws = wb.create_sheet(TEXT["sheet"], 0)
    if not opened:
        for other in school_sheets:  # the empty default sheet of a new workbook
            wb.remove(other)
    unmarked = source is not None and not opened and status != "unreadable"
    content = _phanhoi(frame, sheet_order=[s.title for s in wb.worksheets], marked=marked,
                       note=TEXT["not_marked"] if unmarked else None, **about)
    _render_openpyxl(ws, content)
    _activate(wb, ws)
    _save_atomic(wb.save, out)
    return marked


# --- the school's sheets -----------------------------------------------------------------------


def _open_source(source: Path | None, status: str) -> tuple[openpyxl.Workbook, bool]:
    """The school's workbook, or a new empty one when there is none to mark."""
    if source is not None and status != "unreadable":
        try:
            # A file object skips openpyxl's extension check: raw files are content-addressed.
            with open(source, "rb") as fh:
                wb = openpyxl.load_workbook(fh, rich_text=True)
            _drop_previous_feedback(wb)
            return wb, True
        except Exception as exc:  # any failure only means the cells cannot be marked
            log.warning("feedback: source not opened for marking (%s)", type(exc).__name__)
    return openpyxl.Workbook(), False


def _drop_previous_feedback(wb: openpyxl.Workbook) -> None:
    """A school often fixes and resends the workbook we sent back: drop our old PhanHoi sheet
    and our old comments and fills, so stale marks do not survive a fix."""
    name = TEXT["sheet"]
    if name not in wb.sheetnames or wb[name]["A1"].value != TEXT["title"]:
        return
    wb.remove(wb[name])
    ours = {f"00{c}" for c in SEVERITY_COLOR.values()} | {f"FF{c}" for c in SEVERITY_COLOR.values()}
    marker = re.compile(
        "^" + re.escape(TEXT["previous_comment"]).replace(re.escape("{author}"), "(.*)") + "$",
        re.MULTILINE)
    for ws in wb.worksheets:
        for cell in list(ws._cells.values()):  # only existing cells; iter_rows would create them
            if cell.comment is None or cell.comment.author != COMMENT_AUTHOR:
                continue
            kept = marker.search(cell.comment.text or "")
            cell.comment = None
            if kept:
                cell.comment = Comment(kept.string[kept.end() + 1:], kept.group(1))
            if cell.fill is not None and cell.fill.fgColor.rgb in ours:
                cell.fill = PatternFill()

def _mark_cells(wb: openpyxl.Workbook, df: pd.DataFrame) -> dict[object, str]:
    """Fill and comment each offending cell. Returns issue index → the marked cell, as a
    hyperlink location (`'Sheet'!C5`)."""
    bounds: dict[str, tuple[int, int]] = {}  # min/max column scan every cell: once per sheet

    def first_filled(title: str, row: int) -> int:
        ws = wb[title]
        if title not in bounds:
            bounds[title] = (ws.min_column, ws.max_column)
        return _first_filled_column(ws, row, *bounds[title])

    where: dict[object, str] = {}
    for (title, row, col), found in _targets(df, _sheet_lookup(wb.sheetnames), first_filled).items():
        ws = wb[title]
        cell = ws.cell(row, col)
        if isinstance(cell, MergedCell):
            cell = _merge_anchor(ws, cell)
        cell.fill = _FILL[found[0][1]]
        cell.comment = _comment([f[:5] for f in found], cell.comment)
        for f in found:
            where[f[5]] = f"{quote_sheetname(title)}!{cell.coordinate}"
    return where


def _first_filled_column(ws: Worksheet, row: int, first: int, last: int) -> int:
    """The first column of `row` holding a value (a row problem is flagged where the row starts)."""
    cells = ws._cells  # read directly: ws[row] would create a cell in every column
    for col in range(first, last + 1):
        c = cells.get((row, col))
        if c is not None and c.value is not None:
            return col
    return first


def _merge_anchor(ws: Worksheet, cell: MergedCell):
    for rng in ws.merged_cells.ranges:
        if cell.coordinate in rng:
            return ws.cell(rng.min_row, rng.min_col)
    return cell

def _comment(found: list[tuple], existing: Comment | None) -> Comment:
    """found: (rank, severity, rule_id, message, fix), strongest first."""
    text = _comment_text(found, None if existing is None else (existing.author, existing.text))
    return Comment(text, COMMENT_AUTHOR, height=_comment_height(text), width=COMMENT_WIDTH)


# openpyxl


_ALIGN = {"wrap": _S.wrap, "center": _S.center, "head": _S.head,
          "left": Alignment(horizontal="left", vertical="top", wrap_text=True)}
_FONT = {"bold": _S.bold, "title": _S.title, "section": _S.section, "link": _S.link}


def _render_openpyxl(ws: Worksheet, page: _Page) -> None:
    _layout(ws)
    for (r, c), (value, style) in page.cells.items():
        cell = _put(ws, r, c, value, fill=style.fill, border=style.border, align=_ALIGN[style.align])
        if style.font:
            cell.font = _FONT[style.font]
        if (r, c) in page.links:
            cell.hyperlink = Hyperlink(ref=cell.coordinate, location=page.links[(r, c)])
    for r, first, last in page.merges:  # after the cells: a merge copies its first cell's border
        ws.merge_cells(start_row=r, start_column=first, end_row=r, end_column=last)
    for r, height in page.heights.items():
        ws.row_dimensions[r].height = height
    if page.frozen:
        ws.freeze_panes = f"A{page.frozen + 1}"
        ws.print_title_rows = f"1:{page.frozen}"
    if page.autofilter:
        ws.auto_filter.ref = f"A{page.autofilter[0]}:{_LAST}{page.autofilter[1]}"


def _put(ws: Worksheet, row: int, col: int, value: object, *, bold: bool = False, fill: str | None = None,
         border: bool = False, align: Alignment | None = None):
    """Write one cell. Every string is stored as text, never as a formula: school text that
    starts with = + - @ (or a tab/CR) must not run when the sheet is opened (CSV injection)."""
    cell = ws.cell(row, col)
    if isinstance(value, str) or value is None:
        text = _clean(value)
        cell.value = text
        if text is not None:
            cell.data_type = "s"  # openpyxl made "=…" a formula and "#N/A" an error
            if text.startswith(_FORMULA_START):
                cell.quotePrefix = True  # Excel's leading apostrophe: stays text when edited
    else:
        cell.value = value
    if bold:
        cell.font = _S.bold
    if fill:
        cell.fill = PatternFill("solid", start_color=fill, end_color=fill)
    if border:
        cell.border = _S.border
    cell.alignment = align or _S.wrap
    return cell


def _layout(ws: Worksheet) -> None:
    for i, w in enumerate(_WIDTHS, start=1):
        ws.column_dimensions[get_column_letter(i)].width = w
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_margins.left = ws.page_margins.right = _MARGIN["left"]
    ws.page_margins.top = ws.page_margins.bottom = _MARGIN["top"]


def _activate(wb: openpyxl.Workbook, ws: Worksheet) -> None:
    """Open on PhanHoi. Other sheets must lose `tabSelected`, or Excel opens them grouped and
    the school's next edit lands on several sheets at once."""
    for other in wb.worksheets:
        other.sheet_view.tabSelected = False
    wb.active = wb.worksheets.index(ws)
    ws.sheet_view.tabSelected = True
    if wb.views:
        wb.views[0].firstSheet = 0
