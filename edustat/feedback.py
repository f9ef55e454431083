"""Give a school its own workbook back, marked up so it can act without phoning the office:
a first sheet `PhanHoi` (status, what to do next, issues grouped by rule, then each issue),
and every offending cell of its sheets filled by severity and commented with message and fix.

Grain: one row per issue (the validation table) → one row per rule × sheet (summary) and one
comment per offending cell. Logs carry counts only, never a value from the workbook.

Two engines write the same `PhanHoi` (laid out once by `_phanhoi`, rendered by openpyxl or
xlsxwriter) and mark the same cells:
- "faithful": openpyxl opens the school's workbook and touches only the offending cells; the
  school's values, formulas, styles, merges and comments are kept as they were (~0.3 s a school).
- "fast" (default): fastexcel reads each sheet's values and xlsxwriter writes a new workbook:
  PhanHoi, then every sheet of the school with its values at the same cells (a formula becomes
  its cached value; formats, merges, the school's comments and other objects are not copied),
  2–3× faster. PhanHoi says so: the school fixes its own file, not this copy.
"""
from __future__ import annotations

import logging
import os
import re
import unicodedata
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import fastexcel
import openpyxl
import pandas as pd
import pyarrow as pa
import xlsxwriter
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, MergedCell
from openpyxl.comments import Comment
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import column_index_from_string, get_column_letter, quote_sheetname
from openpyxl.worksheet.hyperlink import Hyperlink
from openpyxl.worksheet.worksheet import Worksheet

log = logging.getLogger(__name__)

# Every Vietnamese word the school reads comes from here.
TEXT: dict[str, Any] = {
    "sheet": "PhanHoi",
    "title": "PHẢN HỒI KIỂM TRA DỮ LIỆU",
    "school": "Trường",
    "school_year": "Năm học",
    "period": "Kỳ báo cáo",
    "generated_at": "Thời điểm kiểm tra",
    "status_label": "Kết quả",
    "next_label": "Việc cần làm",
    "legend_label": "Màu ô đã tô",
    "status": {
        "accepted": "Đã tiếp nhận",
        "accepted_with_warnings": "Đã tiếp nhận, có cảnh báo cần xem lại",
        "partially_loaded": "Đã nạp một phần: các dòng có lỗi chưa được nạp",
        "rejected": "Chưa tiếp nhận: có lỗi phải sửa và gửi lại",
        "unreadable": "Không đọc được tệp",
    },
    "next_steps": {
        "accepted": (
            "Dữ liệu của trường đã được tiếp nhận, trường không cần gửi lại. Nếu bảng dưới có "
            "mục «Lưu ý» (ô tô xanh), trường xem để lần sau nhập đúng ngay từ đầu."
        ),
        "accepted_with_warnings": (
            "Dữ liệu đã được tiếp nhận. Các ô tô vàng là cảnh báo: trường rê chuột vào ô để đọc "
            "ghi chú và kiểm tra lại. Nếu số liệu đúng thì không cần làm gì thêm; nếu sai, sửa "
            "các ô đó trong tệp của trường rồi gửi lại trước hạn. Ô tô xanh là lưu ý, không bắt buộc sửa."
        ),
        "partially_loaded": (
            "Các dòng không có lỗi đã được nạp; các dòng có lỗi (ô tô đỏ) CHƯA được nạp nên chưa có "
            "trong số liệu báo cáo. Trường sửa các ô đó theo cột «Cách sửa» ở bảng dưới rồi gửi lại cả tệp. "
            "Ô tô vàng là cảnh báo nên xem lại; ô tô xanh là lưu ý."
        ),
        "rejected": (
            "Dữ liệu chưa được tiếp nhận vì còn lỗi (ô tô đỏ). Trường mở từng trang tính, rê chuột "
            "vào ô tô màu để đọc ghi chú, sửa các ô đó trong tệp của trường theo cột «Cách sửa» ở "
            "bảng dưới (lỗi không gắn với ô nào, như thiếu cột hay thiếu trang tính, cũng có trong "
            "bảng), rồi gửi lại cả tệp. "
            "Ô tô vàng là cảnh báo nên xem lại; ô tô xanh là lưu ý."
        ),
        "unreadable": (
            "Hệ thống không mở được tệp trường gửi (lý do ở bảng dưới), nên chưa kiểm tra được "
            "dữ liệu. Trường mở tệp trên máy để chắc chắn tệp không hỏng, bỏ mật khẩu nếu có, "
            "lưu lại dạng Excel Workbook (.xlsx) rồi gửi lại."
        ),
    },
    "period_names": {"dau_nam": "Đầu năm", "cuoi_nam": "Cuối năm"},
    "severity": {"error": "Lỗi", "warning": "Cảnh báo", "notice": "Lưu ý"},
    "counts": {
        "learners": "Số học sinh đã đọc",
        "staff": "Số cán bộ, giáo viên, nhân viên đã đọc",
        "classes": "Số lớp đã đọc",
        "errors": "Số lỗi",
        "warnings": "Số cảnh báo",
        "notices": "Số lưu ý",
    },
    "summary_title": "TỔNG HỢP THEO QUY TẮC",
    "summary_headers": (
        "Mức độ", "Mã quy tắc", "Nội dung", "Cách sửa", "Số ô/dòng", "Trang tính",
        "Dòng đầu", "Dòng cuối", "Ví dụ giá trị",
    ),
    "readings_title": "CÁCH HỆ THỐNG ĐÃ HIỂU DỮ LIỆU CỦA TRƯỜNG (kiểm tra: nếu hiểu sai, sửa tệp và gửi lại)",
    "readings_headers": ("Trang", "Cột", "Trường đã ghi", "Hệ thống hiểu là", "Số ô", "Dòng"),
    "readings_header_word": "tiêu đề",
    "detail_title": "DANH SÁCH CHI TIẾT TỪNG VẤN ĐỀ (bấm vào ô ở cột «Ô» để đi tới ô đó)",
    "detail_truncated": "Chỉ liệt kê {shown:,} vấn đề đầu tiên trong tổng số {total:,}; còn {more:,} "
                        "vấn đề chưa liệt kê. Sửa các vấn đề trên rồi gửi lại để xem tiếp.",
    "detail_headers": (
        "Mức độ", "Mã quy tắc", "Nội dung", "Giá trị", "Ô", "Trang tính", "Dòng", "Cột",
        "Tiêu đề cột",
    ),
    "no_issues": "Không có vấn đề nào.",
    "whole_file": "(cả tệp)",
    "fix_prefix": "Cách sửa: ",
    "more_in_cell": "… và {n} vấn đề khác ở ô này (xem trang PhanHoi).",
    "previous_comment": "— Ghi chú có sẵn của trường ({author}):",
    "not_marked": "Không mở được tệp gốc để tô màu các ô; các vấn đề vẫn được liệt kê đầy đủ bên dưới.",
    "values_only": "Bản phản hồi chép giá trị các trang của trường (không giữ định dạng và công thức); "
                   "hãy sửa trên tệp gốc của trường.",
    # a clean school's feedback (no error, no warning): a receipt, no copy of its data
    "receipt": "BIÊN NHẬN: dữ liệu của trường không có lỗi và không có cảnh báo nên tệp phản hồi này chỉ có "
               "trang PhanHoi, không chép lại dữ liệu của trường. Các lưu ý (nếu có) được liệt kê ở bảng dưới "
               "kèm trang tính, dòng và cột.",
    "received": {
        "file": "Tệp đã nhận",
        "version": "Lần nộp (phiên bản)",
        "hash": "Mã nhận dạng tệp (SHA-256, 12 ký tự đầu)",
    },
}
STATUS_TEXT: Mapping[str, str] = TEXT["status"]
SEVERITY_TEXT: Mapping[str, str] = TEXT["severity"]

SEVERITY_RANK = {"error": 0, "warning": 1, "notice": 2}
SEVERITY_COLOR = {"error": "FFC7CE", "warning": "FFEB9C", "notice": "DDEBF7"}
STATUS_COLOR = {"accepted": "C6EFCE", "accepted_with_warnings": "FFEB9C", "partially_loaded": "FFEB9C",
                "rejected": "FFC7CE", "unreadable": "FFC7CE"}
DETAIL_LIMIT = 2000
EXAMPLES = 3
COMMENT_AUTHOR = "edustat"
COMMENT_MESSAGES = 6  # per cell; the rest are counted, and all are in PhanHoi
COMMENT_WIDTH = 300  # pixels
ISSUE_COLUMNS = ("sheet", "excel_row", "column", "field", "header", "rule_id", "severity",
                 "value", "message", "fix")
# What Excel, LibreOffice or a CSV consumer may take for a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MAX_CELL = 32_000  # Excel's limit is 32,767 characters per cell
_VN = timezone(timedelta(hours=7))  # Vietnam keeps no daylight saving time
# PhanHoi columns A–I, shared by the info block and both tables. 140 units in all: printed on
# A4 landscape at ≥ 8 pt even where a unit prints a third wider (LibreOffice without Calibri).
_WIDTHS = (9, 17, 34, 32, 8, 12, 7, 7, 14)
_LAST = get_column_letter(len(_WIDTHS))
_MARGIN = {"left": 0.4, "right": 0.4, "top": 0.55, "bottom": 0.55}  # inches, as the report forms
ENGINES = ("fast", "faithful")


class _S:
    """Style objects shared by every PhanHoi cell (openpyxl stores each once anyway)."""

    thin = Side(style="thin", color="A6A6A6")
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


def write_feedback(source: Path | None, out: Path, *, school: Mapping[str, object], issues: pd.DataFrame,
                   status: str, counts: Mapping[str, int], school_year: str, period: str,
                   generated_at: datetime, engine: str = "fast") -> Path:
    """Write the school's workbook (or, when it cannot be opened, a new one) with a first sheet
    `PhanHoi` and its offending cells marked, to `out` atomically. Returns `out`.

    One row of `issues` per problem (columns ISSUE_COLUMNS; `sheet`/`excel_row`/`column` None
    when the problem is not tied to a cell). `source` itself is never written. `engine`:
    "fast" (a values-only copy written with xlsxwriter) or "faithful" (the school's own
    workbook, formulas and formats kept, through openpyxl); see the module docstring.
    """
    if status not in STATUS_TEXT:
        raise ValueError(f"status {status!r}: use one of {sorted(STATUS_TEXT)}")
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: use one of {list(ENGINES)}")
    out = Path(out)
    if source is not None and Path(source).resolve() == out.resolve():
        raise ValueError("out must differ from source: the submitted file is kept as received")
    frame = _normalise(issues)
    about = dict(school=school, status=status, counts=_with_issue_counts(counts, frame),
                 school_year=school_year, period=period, generated_at=generated_at)
    write = _write_fast if engine == "fast" else _write_faithful
    marked = write(source, out, frame, about)
    log.info("feedback written: engine=%s status=%s issues=%d cells_marked=%d", engine, status, len(frame),
             len(set(marked.values())))
    return out


def write_receipt(out: Path, *, school: Mapping[str, object], issues: pd.DataFrame, status: str,
                  counts: Mapping[str, int], school_year: str, period: str, generated_at: datetime,
                  received: Mapping[str, object]) -> Path:
    """A clean school's feedback (issue 12): the PhanHoi sheet alone — what was received (file
    name, version, hash prefix), the counts, the status and the notices if any — and no copy of
    the school's data. `received`: keys of TEXT["received"]. Written atomically to `out`."""
    if status not in STATUS_TEXT:
        raise ValueError(f"status {status!r}: use one of {sorted(STATUS_TEXT)}")
    frame = _normalise(issues)
    shown = _with_issue_counts(counts, frame)
    shown.update({TEXT["received"][k]: v for k, v in received.items() if v is not None})
    content = _phanhoi(frame, school=school, status=status, counts=shown, school_year=school_year, period=period,
                       generated_at=generated_at, sheet_order=[TEXT["sheet"]], marked={}, copy_note=TEXT["receipt"])

    def save(tmp: Path) -> None:
        wb = xlsxwriter.Workbook(str(tmp), _XLSX_OPTIONS)
        try:
            ws = wb.add_worksheet(TEXT["sheet"])
            _render_xlsx(wb, ws, content)
            ws.activate()
        finally:
            wb.close()

    _save_atomic(save, Path(out))
    log.info("feedback receipt written: status=%s issues=%d", status, len(frame))
    return Path(out)


def _write_faithful(source: Path | None, out: Path, frame: pd.DataFrame, about: dict) -> dict[object, str]:
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


def _write_fast(source: Path | None, out: Path, frame: pd.DataFrame, about: dict) -> dict[object, str]:
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


# --- issues → tables (pure) -------------------------------------------------------------------


def _clean(value: object) -> str | None:
    """Text safe for an xlsx cell: NA → None, XML-illegal control characters dropped."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    text = ILLEGAL_CHARACTERS_RE.sub("", unicodedata.normalize("NFC", str(value)))
    return text[:_MAX_CELL]


def _normalise(issues: pd.DataFrame) -> pd.DataFrame:
    """Issues with every expected column, text cleaned, Excel row as int or None, column letter
    upper-case (or None when it is not a valid letter), and a severity rank."""
    missing = {"rule_id", "severity", "message"} - set(issues.columns)
    if missing:
        raise ValueError(f"issues lack columns {sorted(missing)}")
    if issues["rule_id"].isna().any():
        raise ValueError("every issue needs a rule_id")
    df = issues.reindex(columns=list(ISSUE_COLUMNS)).astype(object).reset_index(drop=True)
    # object columns holding None: pandas would otherwise infer str/float and turn None into NaN
    as_object = lambda values: pd.Series(values, index=df.index, dtype=object)  # noqa: E731
    for col in ISSUE_COLUMNS:
        if col != "excel_row":
            df[col] = as_object([_clean(v) for v in df[col]])
    df["excel_row"] = as_object([_as_row(v) for v in df["excel_row"]])
    df["column"] = as_object([_as_column(v) for v in df["column"]])
    unknown = set(df["severity"]) - set(SEVERITY_RANK)
    if unknown:
        raise ValueError(f"unknown severities {sorted(map(str, unknown))}: use {list(SEVERITY_RANK)}")
    df["rank"] = df["severity"].map(SEVERITY_RANK).astype(int)
    return df


def _as_row(value: object) -> int | None:
    try:
        if value is None or pd.isna(value):
            return None
        row = int(value)
    except (TypeError, ValueError):
        return None
    return row if 1 <= row <= 1_048_576 else None


def _as_column(value: object) -> str | None:
    text = _clean(value)
    if not text:
        return None
    text = text.strip().upper()
    try:
        column_index_from_string(text)
    except ValueError:
        return None
    return text


def summarise(issues: pd.DataFrame) -> pd.DataFrame:
    """One row per issue → one row per severity × rule × sheet: message and fix (of the first
    occurrence), count, first/last Excel row, up to EXAMPLES distinct values. Errors first,
    then warnings, then notices; within each, the most frequent first."""
    df = issues if "rank" in issues.columns else _normalise(issues)
    cols = ["severity", "rule_id", "message", "fix", "count", "sheet", "first_row", "last_row", "examples"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    ordered = df.sort_values(["excel_row"], na_position="first", kind="stable")
    for (rank, rule, sheet), g in ordered.groupby(["rank", "rule_id", "sheet"], dropna=False, sort=False):
        excel_rows = g["excel_row"].dropna()
        values = list(dict.fromkeys(v for v in g["value"] if v is not None and v.strip()))
        rows.append({
            "rank": rank,
            "severity": g["severity"].iat[0],
            "rule_id": rule,
            "message": _first(g["message"]),
            "fix": _first(g["fix"]),
            "count": len(g),
            "sheet": None if pd.isna(sheet) else sheet,
            "first_row": int(excel_rows.min()) if len(excel_rows) else None,
            "last_row": int(excel_rows.max()) if len(excel_rows) else None,
            "examples": values[:EXAMPLES],
        })
    out = pd.DataFrame(rows, dtype=object)  # object: a missing sheet or row stays None
    out["_sheet"] = out["sheet"].fillna("")
    out = out.sort_values(["rank", "count", "rule_id", "_sheet"], ascending=[True, False, True, True],
                          kind="stable")
    return out[cols].reset_index(drop=True)


def _first(values: pd.Series) -> str | None:
    return next((v for v in values if v), None)


def _detail(df: pd.DataFrame, sheet_order: list[str]) -> pd.DataFrame:
    """Issues in the order a school works through them: errors first; within a severity,
    file-level ones, then by the workbook's sheet order, row and column."""
    order = {name: i for i, name in enumerate(sheet_order)}
    key = pd.DataFrame({
        "rank": df["rank"],
        "sheet": [-1 if s is None else order.get(s, len(order)) for s in df["sheet"]],
        "row": df["excel_row"].fillna(0).astype(int),
        "col": [0 if c is None else column_index_from_string(c) for c in df["column"]],
    })
    return df.loc[key.sort_values(["rank", "sheet", "row", "col"], kind="stable").index]


def _with_issue_counts(counts: Mapping[str, int], df: pd.DataFrame) -> dict[str, object]:
    """The caller's counts, with errors/warnings/notices taken from the issues when absent."""
    out: dict[str, object] = dict(counts)
    for key, sev in (("errors", "error"), ("warnings", "warning"), ("notices", "notice")):
        out.setdefault(key, int((df["severity"] == sev).sum()))
    return out


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


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def _sheet_lookup(names: list[str]) -> dict[str, str]:
    """Sheet name by exact name, then by NFC + case-folded name."""
    out: dict[str, str] = {}
    for name in names:
        out.setdefault(_fold(name), name)
    for name in names:
        out[name] = name
    return out


def _targets(df: pd.DataFrame, lookup: Mapping[str, str],
             first_filled: Callable[[str, int], int]) -> dict[tuple[str, int, int], list[tuple]]:
    """The cell each issue marks: (sheet, row, column) → [(rank, severity, rule_id, message,
    fix, issue index)], strongest severity first. A row problem without a column marks the
    row's first filled cell; file- and sheet-level problems, and sheets the workbook lacks,
    mark nothing (they live in the summary only)."""
    targets: dict[tuple[str, int, int], list[tuple]] = {}
    cols = ["sheet", "excel_row", "column", "rank", "severity", "rule_id", "message", "fix"]
    for i, sheet, row, col, *found in df[cols].itertuples(name=None):
        if sheet is None or row is None:
            continue
        title = lookup.get(sheet) or lookup.get(_fold(sheet))
        if title is None:
            continue
        c = first_filled(title, row) if col is None else column_index_from_string(col)
        targets.setdefault((title, row, c), []).append((*found, i))
    for found in targets.values():
        found.sort(key=lambda f: f[0])  # strongest severity first; stable within one
    return targets


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


def _comment_text(found: list[tuple], existing: tuple[str | None, str | None] | None = None) -> str:
    """found: (rank, severity, rule_id, message, fix), strongest first; existing: the cell's
    comment (author, text), when it has one."""
    parts = []
    for _, sev, rule, msg, fix in found[:COMMENT_MESSAGES]:
        part = f"[{SEVERITY_TEXT[sev]}] {msg or rule}"
        if fix:
            part += f"\n{TEXT['fix_prefix']}{fix}"
        parts.append(part)
    if len(found) > COMMENT_MESSAGES:
        parts.append(TEXT["more_in_cell"].format(n=len(found) - COMMENT_MESSAGES))
    if existing is not None and existing[0] != COMMENT_AUTHOR and existing[1]:
        # kept inside ours (a cell holds one comment) and given back by _drop_previous_feedback
        parts.append(TEXT["previous_comment"].format(author=existing[0] or "") + "\n" + existing[1])
    return "\n\n".join(parts)[:_MAX_CELL]


def _comment_height(text: str) -> int:
    """Pixels: enough for the text at the comment's 300-pixel width, within 150–450."""
    lines = sum(1 + len(line) // 45 for line in text.splitlines())
    return min(max(150, 15 * lines), 450)


def _comment(found: list[tuple], existing: Comment | None) -> Comment:
    """found: (rank, severity, rule_id, message, fix), strongest first."""
    text = _comment_text(found, None if existing is None else (existing.author, existing.text))
    return Comment(text, COMMENT_AUTHOR, height=_comment_height(text), width=COMMENT_WIDTH)


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


# --- the PhanHoi sheet: laid out once, written by openpyxl or xlsxwriter ---------------------


@dataclass(frozen=True)
class _Style:
    """How one PhanHoi cell looks, for either writer. Every cell wraps and sits at the top."""

    font: str | None = None  # bold | title | section | link
    fill: str | None = None  # RGB
    border: bool = False
    align: str = "wrap"  # wrap | center | head (centred both ways) | left


_PLAIN, _BOLD, _BOXED = _Style(), _Style(font="bold"), _Style(border=True)
_TITLE, _SECTION, _LEFT = _Style(font="title"), _Style(font="section"), _Style(align="left")
_HEADER = _Style(font="bold", fill="D9D9D9", border=True, align="head")


@dataclass
class _Page:
    """PhanHoi laid out: cells (1-based row, column) → (value, style) in writing order, merges
    within one row, internal links, row heights, the title rows kept in view and on every
    printed page, and the detail table's filter."""

    cells: dict[tuple[int, int], tuple[object, _Style]] = field(default_factory=dict)
    merges: list[tuple[int, int, int]] = field(default_factory=list)  # row, first and last column
    links: dict[tuple[int, int], str] = field(default_factory=dict)  # → "'Sheet'!C5"
    heights: dict[int, float] = field(default_factory=dict)
    frozen: int = 0
    autofilter: tuple[int, int] | None = None  # header row and last row, columns A to the last

    def put(self, row: int, col: int, value: object, style: _Style = _PLAIN) -> None:
        self.cells[(row, col)] = (_clean(value) if isinstance(value, str) or value is None else value, style)

    def merge(self, row: int, first: int = 1, last: int = len(_WIDTHS)) -> None:
        self.merges.append((row, first, last))


def _phanhoi(frame: pd.DataFrame, *, school: Mapping[str, object], status: str, counts: Mapping[str, object],
             school_year: str, period: str, generated_at: datetime, sheet_order: list[str],
             marked: Mapping[object, str], note: str | None = None, copy_note: str | None = None) -> _Page:
    """The whole PhanHoi sheet: header block, summary by rule, then each issue."""
    page = _Page()
    r = _write_info(page, school=school, status=status, counts=counts, school_year=school_year,
                    period=period, generated_at=generated_at, note=note, copy_note=copy_note)
    r = _write_summary(page, r + 1, summarise(frame))
    r = _write_readings(page, r + 1, frame)
    _write_detail(page, r + 1, _detail(frame, sheet_order), len(frame), marked)
    return page


def _write_info(page: _Page, *, school: Mapping[str, object], status: str, counts: Mapping[str, object],
                school_year: str, period: str, generated_at: datetime, note: str | None,
                copy_note: str | None = None) -> int:
    """Title, who/when/status, counts, what to do next and the colour legend. Returns the
    last row written."""
    page.put(1, 1, TEXT["title"], _TITLE)
    page.merge(1)
    page.heights[1] = 24  # 14 pt bold: one line, clear of the rows below
    code, name = _clean(school.get("school_code")) or "", _clean(school.get("school_name")) or ""
    info: list[tuple[str, object]] = [
        (TEXT["school"], f"{code} – {name}".strip(" –")),
        (TEXT["school_year"], school_year),
        (TEXT["period"], TEXT["period_names"].get(period, period)),
        (TEXT["status_label"], STATUS_TEXT[status]),
        (TEXT["generated_at"], _when(generated_at)),
    ]
    names: Mapping[str, str] = TEXT["counts"]
    keys = [k for k in names if k in counts] + [k for k in counts if k not in names]
    info += [(names.get(k, k), _number(counts[k])) for k in keys]
    paragraph = TEXT["next_steps"][status] + (f" {note}" if note else "")
    info.append((TEXT["next_label"], paragraph))
    for r, (label, value) in enumerate(info, start=2):
        page.put(r, 1, label, _BOLD)
        page.merge(r, 1, 2)
        lines = _lines(label, _WIDTHS[0] + _WIDTHS[1], bold=True)
        if lines > 1:  # "Số cán bộ, giáo viên, nhân viên đã đọc" takes two lines
            page.heights[r] = 15 * lines
        if label == TEXT["status_label"]:
            page.put(r, 3, value, _Style(font="bold", fill=STATUS_COLOR[status], align="left"))
            page.frozen = r  # title, school, year, period and status stay in view and on paper
        else:
            page.put(r, 3, value, _LEFT)
        page.merge(r, 3)
    # merged cells are never auto-fitted: size the paragraph's row (~1.1 characters per unit)
    page.heights[r] = 15 * max(_lines(paragraph, sum(_WIDTHS[2:])), _lines(TEXT["next_label"], _WIDTHS[0] + _WIDTHS[1], bold=True))
    if copy_note:
        r += 1
        page.put(r, 1, copy_note, _BOLD)
        page.merge(r)
    r += 1
    page.put(r, 1, TEXT["legend_label"], _BOLD)
    page.merge(r, 1, 2)
    for j, sev in enumerate(SEVERITY_RANK):
        page.put(r, 3 + j, SEVERITY_TEXT[sev], _Style(fill=SEVERITY_COLOR[sev], border=True, align="center"))
    return r


def _write_summary(page: _Page, r: int, summary: pd.DataFrame) -> int:
    """The table grouped by rule from row r + 1. Returns the last row written."""
    r += 1
    _section(page, r, TEXT["summary_title"])
    r += 1
    _header_row(page, r, TEXT["summary_headers"])
    if summary.empty:
        r += 1
        page.put(r, 1, TEXT["no_issues"], _BOXED)
        page.merge(r)
    for s in summary.to_dict("records"):
        r += 1
        _table_row(page, r, (
            SEVERITY_TEXT[s["severity"]], s["rule_id"], s["message"], s["fix"], s["count"],
            s["sheet"] if s["sheet"] is not None else TEXT["whole_file"], s["first_row"], s["last_row"],
            "; ".join(_short(v) for v in s["examples"]) or None,
        ), s["severity"])
    return r


_READ_AS = re.compile(r"(?:đã hiểu là|được hiểu là|hiểu là cột)[:]?\s*'?(.+?)'?\.?$")


def _write_readings(page: _Page, r: int, frame: pd.DataFrame) -> int:
    """What the system read as what, per column: values and headers that were not written as
    the contract has them but were accepted (near misses, spellings that name no single code).
    A school checks these and corrects its file where the reading is wrong."""
    rid = frame["rule_id"].astype(str)
    mine = frame[rid.str.endswith(("_near", "_said")) | (rid == "file_header_near")]
    if mine.empty:
        return r
    r += 1
    _section(page, r, TEXT["readings_title"])
    r += 1
    _header_row(page, r, TEXT["readings_headers"])
    groups: dict[tuple, list] = {}
    for d in mine.itertuples(index=False):
        m = _READ_AS.search(d.message or "")
        read_as = m.group(1) if m else d.message
        written = d.value if d.rule_id != "file_header_near" else f"{TEXT['readings_header_word']} '{d.value}'"
        key = (d.sheet, d.header if d.rule_id != "file_header_near" else "", written, read_as)
        groups.setdefault(key, []).append(d.excel_row)
    for (sheet, header, written, read_as), rows in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        r += 1
        rows_n = [x for x in rows if x is not None]
        _table_row(page, r, (sheet or TEXT["whole_file"], header or None, written, read_as, len(rows),
                             ", ".join(str(x) for x in rows_n[:8]) + (" …" if len(rows_n) > 8 else "") or None), "warning")
    return r


def _write_detail(page: _Page, r: int, detail: pd.DataFrame, total: int, marked: Mapping[object, str]) -> int:
    """Each issue (up to DETAIL_LIMIT) from row r + 1, linked to its marked cell."""
    r += 1
    _section(page, r, TEXT["detail_title"])
    shown = min(total, DETAIL_LIMIT)
    truncated = TEXT["detail_truncated"].format(shown=shown, total=total, more=total - shown)
    if total > shown:
        r += 1
        page.put(r, 1, truncated, _BOLD)
        page.merge(r)
    r += 1
    _header_row(page, r, TEXT["detail_headers"])
    header = r
    for i, d in zip(detail.index[:shown], detail.head(shown).itertuples(index=False)):
        r += 1
        ref = f"{d.column}{d.excel_row}" if d.column and d.excel_row else None
        _table_row(page, r, (
            SEVERITY_TEXT[d.severity], d.rule_id, d.message, d.value, ref,
            d.sheet if d.sheet is not None else TEXT["whole_file"], d.excel_row, d.column, d.header,
        ), d.severity)
        if i in marked:  # the cell's own link, or (no column) the row's, where the mark is
            at = (r, 5 if ref else 7)
            value, style = page.cells[at]
            page.cells[at] = (value, replace(style, font="link"))
            page.links[at] = marked[i]
    if detail.empty:
        r += 1
        page.put(r, 1, TEXT["no_issues"], _BOXED)
        page.merge(r)
        return r
    page.autofilter = (header, r)
    if total > shown:
        r += 2  # after a blank row: the note is not one more issue
        page.put(r, 1, truncated, _BOLD)
        page.merge(r)
    return r


def _section(page: _Page, r: int, text: str) -> None:
    """A section title across the whole width (wrapped in column A it ran into the table's
    header row and lost its instruction), one 12 pt line high."""
    page.put(r, 1, text, _SECTION)
    page.merge(r)
    page.heights[r] = 18 * _lines(text, sum(_WIDTHS), bold=True, size=12)


def _lines(text: str, width: float, bold: bool = False, size: float = 11) -> int:
    """Lines `text` wraps to in a cell `width` units wide (estimated generously, see
    edustat.layout: spreadsheet programs do not grow the rows we write)."""
    from edustat.layout import wrap_points, wrapped_lines

    return wrapped_lines(text, wrap_points(width), size, bold)


def _header_row(page: _Page, r: int, headers: tuple[str, ...]) -> None:
    for j, h in enumerate(headers, start=1):
        page.put(r, j, h, _HEADER)
    page.heights[r] = 15 * max(_lines(h, w, bold=True) for h, w in zip(headers, _WIDTHS))


def _table_row(page: _Page, r: int, values: tuple, severity: str) -> None:
    lines = 1
    for j, v in enumerate(values, start=1):
        v = None if v is None or (not isinstance(v, str) and pd.isna(v)) else v
        if v is not None and not isinstance(v, str):
            v = int(v)
        page.put(r, j, v, _Style(fill=SEVERITY_COLOR[severity] if j == 1 else None, border=True,
                                 align="center" if isinstance(v, int) else "wrap"))
        if isinstance(v, str) and j <= len(_WIDTHS):
            # wrapped text: not every spreadsheet program grows the row by itself
            lines = max(lines, -(-len(v) // max(1, int(_WIDTHS[j - 1] * 1.1))))
    if lines > 1:
        page.heights[r] = 15 * min(lines, 8)


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
                props.update(border=1, border_color=f"#{_S.thin.color.rgb[-6:]}")
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


def _short(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _number(value: object) -> object:
    try:
        return int(value)
    except (TypeError, ValueError):
        return _clean(value)


def _when(at: datetime) -> str:
    if at.tzinfo is not None:
        at = at.astimezone(_VN)
    return at.strftime("%d/%m/%Y %H:%M")


def _activate(wb: openpyxl.Workbook, ws: Worksheet) -> None:
    """Open on PhanHoi. Other sheets must lose `tabSelected`, or Excel opens them grouped and
    the school's next edit lands on several sheets at once."""
    for other in wb.worksheets:
        other.sheet_view.tabSelected = False
    wb.active = wb.worksheets.index(ws)
    ws.sheet_view.tabSelected = True
    if wb.views:
        wb.views[0].firstSheet = 0


def _save_atomic(save: Callable[[Path], None], out: Path) -> None:
    """Save (with `save(path)`) beside `out` and rename over it, so a half-written workbook
    never appears."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # not mkstemp: its 0600 mode would survive the rename and hide the file from the office
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex}.tmp"
    try:
        save(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
