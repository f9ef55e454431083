"""Give a school its own workbook back, marked up so it can act without phoning the office:
a first sheet `PhanHoi` (status, what to do next, issues grouped by rule, then each issue),
and every offending cell of its sheets filled by severity and commented with message and fix.

Grain: one row per issue (the validation table) → one row per rule × sheet (summary) and one
comment per offending cell. Logs carry counts only, never a value from the workbook.

This module holds what both writers share: the words, the issues → tables step, where each
issue lands (`_targets`), and the PhanHoi sheet laid out once (`_phanhoi` → `_Page`). Two
engines render it and mark the same cells:
- "faithful" (`edustat.feedback_openpyxl`): openpyxl opens the school's workbook and touches
  only the offending cells; the school's values, formulas, styles, merges and comments are kept
  as they were (~0.3 s a school).
- "patch" (default, `edustat.feedback_patch`): the school's own .xlsx, every zip member copied
  as it came but the few edited as text: PhanHoi (rendered by the fast engine's xlsxwriter
  code) inserted first, offending cells' formats cloned with the severity fill, comments
  added. Formulas, formats, merges and names kept, at a fraction of the fast engine's cost;
  any file it does not handle (.xls, .xlsm, comments already on a marked sheet, a resent
  feedback workbook, …) gets the fast engine's copy instead.
- "fast" (`edustat.feedback_xlsx`): fastexcel reads each sheet's values and xlsxwriter
  writes a new workbook: PhanHoi, then every sheet of the school with its values at the same
  cells (a formula becomes its cached value; formats, merges, the school's comments and other
  objects are not copied), 2–3× faster. PhanHoi says so: the school fixes its own file, not
  this copy.
A clean school gets a receipt (`write_receipt`): PhanHoi alone, rendered by the fast engine.
"""
from __future__ import annotations

import functools
from collections import namedtuple
import logging
import os
import re
import unicodedata
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.utils import column_index_from_string, get_column_letter

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
        "late": "Nộp muộn — chờ Phòng xử lý (số liệu chưa được nạp)",
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
        "late": (
            "Tệp đến sau khi Phòng GD&ĐT đã khóa số liệu của kỳ này, nên được lưu lại nhưng CHƯA được "
            "nạp và không làm thay đổi số liệu báo cáo. Cán bộ thống kê của Phòng sẽ xem xét và quyết "
            "định nhận tệp hay không; trường không cần gửi lại. Các vấn đề hệ thống tìm thấy trong tệp "
            "vẫn được liệt kê dưới đây để trường biết."
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
                "rejected": "FFC7CE", "unreadable": "FFC7CE", "late": "D9D9D9"}
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
ENGINES = ("patch", "fast", "faithful")
BORDER_COLOR = "A6A6A6"  # thin cell borders of PhanHoi, both engines


def write_feedback(source: Path | None, out: Path, *, school: Mapping[str, object], issues: pd.DataFrame,
                   status: str, counts: Mapping[str, int], school_year: str, period: str,
                   generated_at: datetime, engine: str = "patch") -> Path:
    """Write the school's workbook (or, when it cannot be opened, a new one) with a first sheet
    `PhanHoi` and its offending cells marked, to `out` atomically. Returns `out`.

    One row of `issues` per problem (columns ISSUE_COLUMNS; `sheet`/`excel_row`/`column` None
    when the problem is not tied to a cell). `source` itself is never written. `engine`:
    "patch" (default: the school's .xlsx with only PhanHoi, the marks and comments added at
    zip/XML level; the fast engine for any file it does not handle), "fast" (a values-only
    copy written with xlsxwriter) or "faithful" (the school's own
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
    if engine == "patch":  # the school's own .xlsx patched at zip/XML level; else the fast engine
        from edustat.feedback_patch import write
    elif engine == "fast":
        from edustat.feedback_xlsx import write
    else:
        from edustat.feedback_openpyxl import write
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

    from edustat.feedback_xlsx import write_page_only

    _save_atomic(lambda tmp: write_page_only(tmp, content), Path(out))
    log.info("feedback receipt written: status=%s issues=%d", status, len(frame))
    return Path(out)


# --- issues → tables (pure) -------------------------------------------------------------------


_CLEANED: dict[str, str] = {}  # text → its clean form, per process (issue 12: the same
# messages, rule ids and headers are cleaned for every issue of every school)


def _clean(value: object) -> str | None:
    """Text safe for an xlsx cell: NA → None, XML-illegal control characters dropped."""
    if type(value) is not str:
        if value is None:
            return None
        try:
            if pd.isna(value):
                return None
        except (TypeError, ValueError):
            pass
        value = str(value)
    text = _CLEANED.get(value)
    if text is None:
        text = ILLEGAL_CHARACTERS_RE.sub("", unicodedata.normalize("NFC", value))[:_MAX_CELL]
        if len(value) <= 1000 and len(_CLEANED) < 200_000:
            _CLEANED[value] = text
    return text


def _normalise(issues: pd.DataFrame) -> pd.DataFrame:
    """Issues with every expected column, text cleaned, Excel row as int or None, column letter
    upper-case (or None when it is not a valid letter), and a severity rank."""
    missing = {"rule_id", "severity", "message"} - set(issues.columns)
    if missing:
        raise ValueError(f"issues lack columns {sorted(missing)}")
    if issues["rule_id"].isna().any():
        raise ValueError("every issue needs a rule_id")
    src = issues.reindex(columns=list(ISSUE_COLUMNS)).astype(object)
    # lists, then one frame (issue 12: a column assigned at a time cost more than the cleaning);
    # object columns holding None: pandas would otherwise infer str/float and turn None into NaN
    data = {col: [_clean(v) for v in src[col].tolist()] if col != "excel_row" else
            [_as_row(v) for v in src[col].tolist()] for col in ISSUE_COLUMNS}
    data["column"] = [_as_column(v) for v in data["column"]]
    unknown = set(data["severity"]) - set(SEVERITY_RANK)
    if unknown:
        raise ValueError(f"unknown severities {sorted(map(str, unknown))}: use {list(SEVERITY_RANK)}")
    index = pd.RangeIndex(len(src))
    df = pd.DataFrame({col: pd.Series(values, index=index, dtype=object) for col, values in data.items()}, index=index)
    df["rank"] = pd.Series([SEVERITY_RANK[v] for v in data["severity"]], index=index, dtype=int)
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
    # plain Python over the columns (issue 12: a pandas group per rule cost more than the
    # whole sheet); the same order as the sort and groupby it replaces: rows with no Excel row
    # first (as they came), then by row (stable); groups in order of first appearance
    excel_row, value = df["excel_row"].tolist(), df["value"].tolist()
    rank, rule_id, sheet = df["rank"].tolist(), df["rule_id"].tolist(), df["sheet"].tolist()
    severity, message, fix = df["severity"].tolist(), df["message"].tolist(), df["fix"].tolist()
    order = [i for i, r in enumerate(excel_row) if r is None or r != r] + \
        sorted((i for i, r in enumerate(excel_row) if not (r is None or r != r)), key=excel_row.__getitem__)
    groups: dict[tuple, list[int]] = {}
    for i in order:
        sh = sheet[i]
        groups.setdefault((rank[i], rule_id[i], None if sh is None or sh != sh else sh), []).append(i)
    rows = []
    for (rk, rule, sh), g in groups.items():
        excel_rows = [excel_row[i] for i in g if not (excel_row[i] is None or excel_row[i] != excel_row[i])]
        values = list(dict.fromkeys(value[i] for i in g if value[i] is not None and value[i].strip()))
        rows.append({
            "rank": rk,
            "severity": severity[g[0]],
            "rule_id": rule,
            "message": next((message[i] for i in g if message[i]), None),
            "fix": next((fix[i] for i in g if fix[i]), None),
            "count": len(g),
            "sheet": sh,
            "first_row": int(min(excel_rows)) if excel_rows else None,
            "last_row": int(max(excel_rows)) if excel_rows else None,
            "examples": values[:EXAMPLES],
        })
    rows.sort(key=lambda x: (x["rank"], -x["count"], x["rule_id"], x["sheet"] if x["sheet"] is not None else ""))
    return pd.DataFrame(rows, columns=cols, dtype=object)  # object: a missing sheet or row stays None


def _detail(df: pd.DataFrame, sheet_order: list[str]) -> pd.DataFrame:
    """Issues in the order a school works through them: errors first; within a severity,
    file-level ones, then by the workbook's sheet order, row and column."""
    order = {name: i for i, name in enumerate(sheet_order)}
    key = list(zip(
        df["rank"].tolist(),
        [-1 if s is None else order.get(s, len(order)) for s in df["sheet"]],
        [0 if r is None or r != r else int(r) for r in df["excel_row"]],
        [0 if c is None else column_index_from_string(c) for c in df["column"]],
    ))
    return df.loc[df.index[sorted(range(len(key)), key=key.__getitem__)]]  # stable, as the sort it replaces


def _with_issue_counts(counts: Mapping[str, int], df: pd.DataFrame) -> dict[str, object]:
    """The caller's counts, with errors/warnings/notices taken from the issues when absent."""
    out: dict[str, object] = dict(counts)
    for key, sev in (("errors", "error"), ("warnings", "warning"), ("notices", "notice")):
        out.setdefault(key, int((df["severity"] == sev).sum()))
    return out


# --- where each issue lands (both engines) ---------------------------------------------------


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
    for i, sheet, row, col, *found in zip(df.index.tolist(), *(df[c].tolist() for c in cols)):
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
        lines = _lines(copy_note, sum(_WIDTHS), bold=True)
        if lines > 1:  # a merged row is never auto-fitted: the receipt's note takes two lines
            page.heights[r] = 15 * lines
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
    # the columns as lists (issue 12: a pandas mask and itertuples cost ~3 ms a workbook for
    # the few rows they find; the same rows in the same order, the same values)
    rule_ids = frame["rule_id"].tolist()
    mine = [i for i, rid in enumerate(map(str, rule_ids))
            if rid.endswith(("_near", "_said")) or rid == "file_header_near"]
    if not mine:
        return r
    r += 1
    _section(page, r, TEXT["readings_title"])
    r += 1
    _header_row(page, r, TEXT["readings_headers"])
    messages, values, sheets, headers, rows_of = (frame[c].tolist() for c in ("message", "value", "sheet", "header",
                                                                               "excel_row"))
    groups: dict[tuple, list] = {}
    for i in mine:
        m = _READ_AS.search(messages[i] or "")
        read_as = m.group(1) if m else messages[i]
        file_header = rule_ids[i] == "file_header_near"
        written = values[i] if not file_header else f"{TEXT['readings_header_word']} '{values[i]}'"
        key = (sheets[i], headers[i] if not file_header else "", written, read_as)
        groups.setdefault(key, []).append(rows_of[i])
    for (sheet, header, written, read_as), rows in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        r += 1
        rows_n = [x for x in rows if x is not None]
        _table_row(page, r, (sheet or TEXT["whole_file"], header or None, written, read_as, len(rows),
                             ", ".join(str(x) for x in rows_n[:8]) + (" …" if len(rows_n) > 8 else "") or None), "warning")
    return r


_DetailRow = namedtuple("_DetailRow", "severity rule_id message value sheet excel_row column header")


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
    head = detail.head(shown)
    fields = ("severity", "rule_id", "message", "value", "sheet", "excel_row", "column", "header")
    for i, d in zip(head.index.tolist(), map(_DetailRow._make, zip(*(head[f].tolist() for f in fields)))):
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


@functools.lru_cache(maxsize=None)
def _table_style(fill: str | None, align: str) -> _Style:
    return _Style(fill=fill, border=True, align=align)


def _table_row(page: _Page, r: int, values: tuple, severity: str) -> None:
    lines = 1
    for j, v in enumerate(values, start=1):
        v = None if v is None or (not isinstance(v, str) and pd.isna(v)) else v
        if v is not None and not isinstance(v, str):
            v = int(v)
        page.put(r, j, v, _table_style(SEVERITY_COLOR[severity] if j == 1 else None,
                                       "center" if isinstance(v, int) else "wrap"))
        if isinstance(v, str) and j <= len(_WIDTHS):
            # wrapped text: not every spreadsheet program grows the row by itself
            lines = max(lines, -(-len(v) // max(1, int(_WIDTHS[j - 1] * 1.1))))
    if lines > 1:
        page.heights[r] = 15 * min(lines, 8)


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
