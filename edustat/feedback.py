"""Give a school its own workbook back, marked up so it can act without phoning the office:
a first sheet `PhanHoi` (status, what to do next, issues grouped by rule, then each issue),
and every offending cell of its sheets filled by severity and commented with message and fix.

Grain: one row per issue (the validation table) → one row per rule × sheet (summary) and one
comment per offending cell. Only offending cells are touched; the school's values, formulas
and styles are kept as they were. Logs carry counts only, never a value from the workbook.
"""
from __future__ import annotations

import logging
import os
import re
import unicodedata
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

import openpyxl
import pandas as pd
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
            "ngay trên tệp này rồi gửi lại trước hạn. Ô tô xanh là lưu ý, không bắt buộc sửa."
        ),
        "rejected": (
            "Dữ liệu chưa được tiếp nhận vì còn lỗi (ô tô đỏ). Trường mở từng trang tính, rê chuột "
            "vào ô tô màu để đọc ghi chú, sửa theo cột «Cách sửa» ở bảng dưới (lỗi không gắn với "
            "ô nào, như thiếu cột hay thiếu trang tính, cũng có trong bảng), rồi gửi lại cả tệp. "
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
}
STATUS_TEXT: Mapping[str, str] = TEXT["status"]
SEVERITY_TEXT: Mapping[str, str] = TEXT["severity"]

SEVERITY_RANK = {"error": 0, "warning": 1, "notice": 2}
SEVERITY_COLOR = {"error": "FFC7CE", "warning": "FFEB9C", "notice": "DDEBF7"}
STATUS_COLOR = {"accepted": "C6EFCE", "accepted_with_warnings": "FFEB9C",
                "rejected": "FFC7CE", "unreadable": "FFC7CE"}
DETAIL_LIMIT = 2000
EXAMPLES = 3
COMMENT_AUTHOR = "edustat"
COMMENT_MESSAGES = 6  # per cell; the rest are counted, and all are in PhanHoi
ISSUE_COLUMNS = ("sheet", "excel_row", "column", "field", "header", "rule_id", "severity",
                 "value", "message", "fix")
# What Excel, LibreOffice or a CSV consumer may take for a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MAX_CELL = 32_000  # Excel's limit is 32,767 characters per cell
_VN = timezone(timedelta(hours=7))  # Vietnam keeps no daylight saving time
# PhanHoi columns A–I, shared by the info block and both tables
_WIDTHS = (11, 26, 46, 46, 10, 16, 9, 9, 30)
_LAST = get_column_letter(len(_WIDTHS))


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
                   generated_at: datetime) -> Path:
    """Write the school's workbook (or, when it cannot be opened, a new one) with a first sheet
    `PhanHoi` and its offending cells marked, to `out` atomically. Returns `out`.

    One row of `issues` per problem (columns ISSUE_COLUMNS; `sheet`/`excel_row`/`column` None
    when the problem is not tied to a cell). `source` itself is never written.
    """
    if status not in STATUS_TEXT:
        raise ValueError(f"status {status!r}: use one of {sorted(STATUS_TEXT)}")
    out = Path(out)
    if source is not None and Path(source).resolve() == out.resolve():
        raise ValueError("out must differ from source: the submitted file is kept as received")
    frame = _normalise(issues)

    wb, opened = _open_source(source, status)
    school_sheets = list(wb.worksheets)
    marked = _mark_cells(wb, frame) if opened else {}

    ws = wb.create_sheet(TEXT["sheet"], 0)
    if not opened:
        for other in school_sheets:  # the empty default sheet of a new workbook
            wb.remove(other)
    _layout(ws)
    unmarked = source is not None and not opened and status != "unreadable"
    r = _write_info(ws, school=school, status=status, counts=_with_issue_counts(counts, frame),
                    school_year=school_year, period=period, generated_at=generated_at,
                    note=TEXT["not_marked"] if unmarked else None)
    r = _write_summary(ws, r + 1, summarise(frame))
    _write_detail(ws, r + 1, _detail(frame, [s.title for s in wb.worksheets]), len(frame), marked)
    _activate(wb, ws)
    _save_atomic(wb, out)
    log.info("feedback written: status=%s issues=%d cells_marked=%d", status, len(frame),
             len(set(marked.values())))
    return out


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


def _resolve_sheets(wb: openpyxl.Workbook) -> dict[str, Worksheet]:
    """Sheet lookup by exact name, then by NFC + case-folded name."""
    out: dict[str, Worksheet] = {}
    for ws in wb.worksheets:
        out.setdefault(unicodedata.normalize("NFC", ws.title).casefold(), ws)
    for ws in wb.worksheets:
        out[ws.title] = ws
    return out


def _mark_cells(wb: openpyxl.Workbook, df: pd.DataFrame) -> dict[object, str]:
    """Fill and comment each offending cell. Returns issue index → the marked cell, as a
    hyperlink location (`'Sheet'!C5`)."""
    sheets = _resolve_sheets(wb)
    bounds: dict[str, tuple[int, int]] = {}  # min/max column scan every cell: once per sheet
    targets: dict[tuple[str, int, int], list[tuple]] = {}
    cols = ["sheet", "excel_row", "column", "rank", "severity", "rule_id", "message", "fix"]
    for i, sheet, row, col, *found in df[cols].itertuples(name=None):
        if sheet is None or row is None:
            continue  # file- and sheet-level problems live in the summary only
        ws = sheets.get(sheet) or sheets.get(unicodedata.normalize("NFC", sheet).casefold())
        if ws is None:
            continue
        if col is None:
            if ws.title not in bounds:
                bounds[ws.title] = (ws.min_column, ws.max_column)
            c = _first_filled_column(ws, row, *bounds[ws.title])
        else:
            c = column_index_from_string(col)
        targets.setdefault((ws.title, row, c), []).append((*found, i))
    where: dict[object, str] = {}
    for (title, row, col), found in targets.items():
        ws = wb[title]
        cell = ws.cell(row, col)
        if isinstance(cell, MergedCell):
            cell = _merge_anchor(ws, cell)
        found.sort(key=lambda f: f[0])  # strongest severity first; stable within one
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
    parts = []
    for _, sev, rule, msg, fix in found[:COMMENT_MESSAGES]:
        part = f"[{SEVERITY_TEXT[sev]}] {msg or rule}"
        if fix:
            part += f"\n{TEXT['fix_prefix']}{fix}"
        parts.append(part)
    if len(found) > COMMENT_MESSAGES:
        parts.append(TEXT["more_in_cell"].format(n=len(found) - COMMENT_MESSAGES))
    if existing is not None and existing.author != COMMENT_AUTHOR and existing.text:
        # kept inside ours (a cell holds one comment) and given back by _drop_previous_feedback
        parts.append(TEXT["previous_comment"].format(author=existing.author or "") + "\n" + existing.text)
    text = "\n\n".join(parts)[:_MAX_CELL]
    lines = sum(1 + len(line) // 45 for line in text.splitlines())
    return Comment(text, COMMENT_AUTHOR, height=min(max(150, 15 * lines), 450), width=300)


# --- the PhanHoi sheet -------------------------------------------------------------------------


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


def _write_info(ws: Worksheet, *, school: Mapping[str, object], status: str, counts: Mapping[str, object],
                school_year: str, period: str, generated_at: datetime, note: str | None) -> int:
    """Title, who/when/status, counts, what to do next and the colour legend. Returns the
    last row written."""
    _put(ws, 1, 1, TEXT["title"]).font = _S.title
    ws.merge_cells(f"A1:{_LAST}1")
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
    left = Alignment(horizontal="left", vertical="top", wrap_text=True)
    for r, (label, value) in enumerate(info, start=2):
        _put(ws, r, 1, label, bold=True)
        ws.merge_cells(f"A{r}:B{r}")
        cell = _put(ws, r, 3, value, align=left)
        ws.merge_cells(f"C{r}:{_LAST}{r}")
        if label == TEXT["status_label"]:
            cell.font = _S.bold
            cell.fill = PatternFill("solid", start_color=STATUS_COLOR[status], end_color=STATUS_COLOR[status])
            # title, school, year, period and status stay in view while scrolling and on paper
            ws.freeze_panes = f"A{r + 1}"
            ws.print_title_rows = f"1:{r}"
    # merged cells are never auto-fitted: size the paragraph's row (~1.1 characters per unit)
    ws.row_dimensions[r].height = 15 * (1 + len(paragraph) // int(sum(_WIDTHS[2:]) * 1.1))
    r += 1
    _put(ws, r, 1, TEXT["legend_label"], bold=True)
    ws.merge_cells(f"A{r}:B{r}")
    for j, sev in enumerate(SEVERITY_RANK):
        _put(ws, r, 3 + j, SEVERITY_TEXT[sev], fill=SEVERITY_COLOR[sev], border=True, align=_S.center)
    return r


def _write_summary(ws: Worksheet, r: int, summary: pd.DataFrame) -> int:
    """The table grouped by rule from row r + 1. Returns the last row written."""
    r += 1
    _put(ws, r, 1, TEXT["summary_title"]).font = _S.section
    r += 1
    _header_row(ws, r, TEXT["summary_headers"])
    if summary.empty:
        r += 1
        _put(ws, r, 1, TEXT["no_issues"], border=True)
        ws.merge_cells(f"A{r}:{_LAST}{r}")
    for s in summary.to_dict("records"):
        r += 1
        _table_row(ws, r, (
            SEVERITY_TEXT[s["severity"]], s["rule_id"], s["message"], s["fix"], s["count"],
            s["sheet"] if s["sheet"] is not None else TEXT["whole_file"], s["first_row"], s["last_row"],
            "; ".join(_short(v) for v in s["examples"]) or None,
        ), s["severity"])
    return r


def _write_detail(ws: Worksheet, r: int, detail: pd.DataFrame, total: int, marked: Mapping[object, str]) -> int:
    """Each issue (up to DETAIL_LIMIT) from row r + 1, linked to its marked cell."""
    r += 1
    _put(ws, r, 1, TEXT["detail_title"]).font = _S.section
    shown = min(total, DETAIL_LIMIT)
    truncated = TEXT["detail_truncated"].format(shown=shown, total=total, more=total - shown)
    if total > shown:
        r += 1
        _put(ws, r, 1, truncated, bold=True)
        ws.merge_cells(f"A{r}:{_LAST}{r}")
    r += 1
    _header_row(ws, r, TEXT["detail_headers"])
    header = r
    for i, d in zip(detail.index[:shown], detail.head(shown).itertuples(index=False)):
        r += 1
        ref = f"{d.column}{d.excel_row}" if d.column and d.excel_row else None
        _table_row(ws, r, (
            SEVERITY_TEXT[d.severity], d.rule_id, d.message, d.value, ref,
            d.sheet if d.sheet is not None else TEXT["whole_file"], d.excel_row, d.column, d.header,
        ), d.severity)
        if i in marked:  # the cell's own link, or (no column) the row's, where the mark is
            link = ws.cell(r, 5 if ref else 7)
            link.hyperlink = Hyperlink(ref=link.coordinate, location=marked[i])
            link.font = _S.link
    if detail.empty:
        r += 1
        _put(ws, r, 1, TEXT["no_issues"], border=True)
        ws.merge_cells(f"A{r}:{_LAST}{r}")
        return r
    ws.auto_filter.ref = f"A{header}:{_LAST}{r}"
    if total > shown:
        r += 2  # after a blank row: the note is not one more issue
        _put(ws, r, 1, truncated, bold=True)
        ws.merge_cells(f"A{r}:{_LAST}{r}")
    return r


def _header_row(ws: Worksheet, r: int, headers: tuple[str, ...]) -> None:
    for j, h in enumerate(headers, start=1):
        cell = _put(ws, r, j, h, bold=True, border=True, align=_S.head)
        cell.fill = _S.header_fill


def _table_row(ws: Worksheet, r: int, values: tuple, severity: str) -> None:
    for j, v in enumerate(values, start=1):
        v = None if v is None or (not isinstance(v, str) and pd.isna(v)) else v
        if v is not None and not isinstance(v, str):
            v = int(v)
        cell = _put(ws, r, j, v, border=True, align=_S.center if isinstance(v, int) else _S.wrap)
        if j == 1:
            cell.fill = _FILL[severity]


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


def _save_atomic(wb: openpyxl.Workbook, out: Path) -> None:
    """Save beside `out` and rename over it, so a half-written workbook never appears."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # not mkstemp: its 0600 mode would survive the rename and hide the file from the office
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex}.tmp"
    try:
        wb.save(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
