"""Read a school's workbook robustly: every cell as text, header rows found (not assumed),
headers matched to the contract by aliases (diacritic-insensitive), numbering / blank / total
rows skipped, unknown columns kept, and every row's Excel row number kept as lineage.

Parsing only: what the reader finds wrong with the structure is returned as facts
(`missing_sheets`, `SheetData.missing_fields`…); the validation stage turns them into messages.
"""
from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import fastexcel
import numpy as np
import pandas as pd
from xlsxwriter.utility import xl_col_to_name

from schemas import Contract, Sheet, load_contract
from schemas.vocabulary import Matcher, sheet_matcher
from transforms.text import fold, header_key, nfc

HEADER_SCAN_ROWS = 30
FEEDBACK_SHEET_KEY = "phanhoi"  # edustat.feedback's first sheet, "PhanHoi"
MAX_FILE_BYTES = 200 * 1024 * 1024
EXTRA_PREFIX = "extra:"
_TOTAL = re.compile(r"^(tong cong|tong so|tong|cong)\b")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # encrypted xlsx and legacy .xls


class UnreadableWorkbook(Exception):
    """The file cannot be opened as a workbook. `reason` is a stable code for the rule catalogue."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class SheetData:
    sheet_id: str
    name: str
    header_row: int  # 1-based Excel row of the header (0 for a key/value sheet without one)
    frame: pd.DataFrame  # field-id columns as NFC text (+ extra:<header>) and `excel_row`
    columns: dict[str, str] = field(default_factory=dict)  # field id → Excel column letter
    headers: dict[str, str] = field(default_factory=dict)  # field id → header as found
    extra_columns: dict[str, str] = field(default_factory=dict)  # header → column letter
    duplicate_headers: list[str] = field(default_factory=list)
    skipped_rows: dict[int, str] = field(default_factory=dict)  # excel row → numbering/total
    near_headers: dict[str, tuple[str, str]] = field(default_factory=dict)  # field → (header found, read as)


@dataclass
class KeyValueData:
    name: str
    values: dict[str, str | None]  # field id → text as found
    rows: dict[str, int]  # field id → Excel row
    value_column: str = "B"
    near_keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # field → (key found, read as)


@dataclass
class ParsedWorkbook:
    path: Path
    sha256: str
    sheet_names: list[str]
    sheets: dict[str, SheetData] = field(default_factory=dict)
    school: KeyValueData | None = None
    unknown_sheets: list[str] = field(default_factory=list)
    template_version: str | None = None

    @property
    def found(self) -> set[str]:
        return set(self.sheets) | ({"school"} if self.school else set())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _open(path: Path) -> fastexcel.ExcelReader:
    size = path.stat().st_size
    if size == 0:
        raise UnreadableWorkbook("empty", "0 bytes")
    if size > MAX_FILE_BYTES:
        raise UnreadableWorkbook("too_large", f"{size} bytes")
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic == _OLE_MAGIC:
        # An OLE container is either a legacy .xls or a password-protected .xlsx.
        raise UnreadableWorkbook("encrypted_or_xls", path.suffix)
    if not zipfile.is_zipfile(path):
        raise UnreadableWorkbook("not_xlsx", path.suffix)
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            if bad is not None:
                raise UnreadableWorkbook("corrupt", bad)
            if "xl/workbook.xml" not in z.namelist():
                raise UnreadableWorkbook("not_xlsx", "no xl/workbook.xml")
        return fastexcel.read_excel(str(path))
    except UnreadableWorkbook:
        raise
    except Exception as exc:  # zip/calamine errors of every kind mean one thing to a school
        raise UnreadableWorkbook("corrupt", type(exc).__name__) from exc


def _load_text(reader: fastexcel.ExcelReader, name: str) -> tuple[pd.DataFrame, int]:
    """The whole sheet as text from Excel row 1, and the Excel column index of column 0."""
    sheet = reader.load_sheet(name, header_row=None, dtypes="string", skip_rows=0)
    cols = sheet.available_columns()
    offset = cols[0].absolute_index if cols else 0
    df = sheet.to_pandas()
    df.columns = range(df.shape[1])
    return df, offset


def _match_sheet(name: str, contract: Contract) -> Sheet | None:
    key = header_key(name)
    for s in contract.sheets:
        if key in s.match_keys:
            return s
    return None


def _header_score(row: list, matcher: Matcher) -> int:
    """How many cells of a row name a field exactly (the header row names the most)."""
    return sum(1 for v in row if isinstance(v, str) and matcher.read(v, near=False).how == "exact")


def _keys(sheet: Sheet) -> Matcher:
    return sheet_matcher(sheet)


def _find_header(df: pd.DataFrame, keys: Matcher) -> tuple[int, int]:
    """The row among the first ones whose cells name the most fields."""
    best, best_row = 0, -1
    head = df.iloc[:HEADER_SCAN_ROWS].to_numpy(dtype=object, na_value=None)  # one conversion, not one per row
    for i, row in enumerate(head):
        score = _header_score(row, keys)
        if score > best:
            best, best_row = score, i
    return best_row, best


_NUMBER_LABEL = re.compile(r"^[(\[]?\s*([1-9]\d{0,2}|[A-Za-z]{1,3})\s*[)\].]?$")
NUMBERING_SCAN_ROWS = 3  # a numbering row sits right under the header, maybe after a blank row


def _label(text: str) -> tuple[str, int] | None:
    """A column label of a numbering row: ('n', 7) for '7' / '(7)' / '[7]' / '7.', ('a', 28)
    for 'AB' (Excel-style letters: A=1 … Z=26, AA=27 …), None for anything else."""
    m = _NUMBER_LABEL.match(text.strip())
    if not m:
        return None
    t = m.group(1)
    if t.isdigit():
        return ("n", int(t))
    n = 0
    for ch in t.upper():
        n = n * 26 + ord(ch) - 64
    return ("a", n)


def _is_numbering(values: list) -> bool:
    """A column-numbering row under the header: '1 2 3 … 30', '(1) (2) …', 'A B … Z AA AB …',
    or the forms' 'A B C 1 2 3 …' (letters, then numbers), starting at any column. Cells may
    be blank (a merged header column): along the row each label is greater than the one before
    by at least 1 and by at most the number of columns between them."""
    cells = [(j, str(v)) for j, v in enumerate(values) if v is not None and str(v).strip()]
    if len(cells) < 2:
        return False
    labels = []
    for j, text in cells:
        lab = _label(text)
        if lab is None:
            return False
        labels.append((j, *lab))
    kinds = [k for _, k, _ in labels]
    if "a" in kinds and "n" in kinds and kinds.index("n") < len(kinds) - kinds[::-1].index("a") - 1:
        return False  # letters after numbers: not a numbering row
    for (j1, k1, v1), (j2, k2, v2) in zip(labels, labels[1:]):
        if k1 == k2 and not (1 <= v2 - v1 <= j2 - j1):
            return False
    return True


def _parse_table(df: pd.DataFrame, offset: int, sheet: Sheet, name: str) -> SheetData | None:
    keys = _keys(sheet)
    h, score = _find_header(df, keys)
    if h < 0 or score < 2:
        return None
    header = df.iloc[h].to_numpy(dtype=object, na_value=None).tolist()
    columns, headers, extra, dups = {}, {}, {}, []
    col_field: dict[int, str] = {}
    readings = {j: keys.read(v, near=False) for j, v in enumerate(header) if isinstance(v, str) and nfc(v)}
    exact = {r.code for r in readings.values() if r.how == "exact"}
    near: dict[str, tuple[str, str]] = {}
    for j, v in enumerate(header):
        if j not in readings:
            continue
        r = readings[j]
        if r.how != "exact":
            # a header not in the vocabulary: read as the one field it nearly names, if that
            # field has no column of its own (never two columns for one field)
            r = keys.read(v)
            if r.how == "near" and r.code not in exact and r.code not in near:
                near[r.code] = (nfc(v), r.spelling or "")
            else:
                r = None
        fid = r.code if r is not None else None
        letter = xl_col_to_name(offset + j)
        if fid is None:
            extra[nfc(v)] = letter
            col_field[j] = EXTRA_PREFIX + nfc(v)
        elif fid in columns:
            dups.append(nfc(v))
        else:
            columns[fid], headers[fid] = letter, nfc(v)
            col_field[j] = fid
    body = df.iloc[h + 1 :]
    skipped: dict[int, str] = {}
    # the first non-blank row under the header (a blank row may come between) is a numbering
    # row when it only numbers the columns; it is read across the whole row, not only the
    # columns the contract knows
    head = body.iloc[:NUMBERING_SCAN_ROWS].to_numpy(dtype=object, na_value=None)
    for i, row in enumerate(head):
        values = [None if v is None or not str(v).strip() else v for v in row.tolist()]
        if not any(v is not None for v in values):
            continue
        if _is_numbering(values):
            skipped[h + 2 + i] = "numbering"
            body = body.drop(body.index[i])
        break
    body = body[list(col_field)]
    body.columns = [col_field[j] for j in col_field]
    body = body.loc[:, ~body.columns.duplicated()]
    cells = body.to_numpy(dtype=object, na_value=None)
    filled = np.vectorize(lambda v: v is not None and str(v).strip() != "", otypes=[bool])(cells) if cells.size else cells.astype(bool)
    keep = filled.any(axis=1) if cells.size else np.zeros(len(body), dtype=bool)
    body, cells, filled = body[keep], cells[keep], filled[keep]
    excel_row = pd.Series(body.index.to_numpy() + 1, index=body.index, dtype="int64")
    if len(body):
        # a total row: its first filled cell says "Tổng cộng" / "Tổng số" / "Cộng"
        first = cells[np.arange(len(cells)), filled.argmax(axis=1)]
        is_total = np.array([bool(_TOTAL.match(fold(str(t)))) for t in first], dtype=bool)
        for idx in body.index[is_total]:
            skipped[int(excel_row[idx])] = "total"
        body, excel_row = body[~is_total], excel_row[~is_total]
    frame = body.astype("string").reset_index(drop=True)
    frame.insert(0, "excel_row", excel_row.to_numpy())
    return SheetData(sheet.id, name, h + 1, frame, columns, headers, extra, dups, skipped, near)


def _parse_key_value(df: pd.DataFrame, offset: int, sheet: Sheet, name: str) -> KeyValueData:
    keys = _keys(sheet)
    values: dict[str, str | None] = {}
    rows: dict[str, int] = {}
    near: dict[str, tuple[str, str]] = {}
    key_col = 0
    best = -1
    for j in range(min(df.shape[1], 4)):
        score = _header_score(df[j].tolist(), keys)
        if score > best:
            best, key_col = score, j
    column = df[key_col].tolist() if df.shape[1] else []
    readings = [keys.read(v, near=False) if isinstance(v, str) else None for v in column]
    exact = {r.code for r in readings if r is not None and r.how == "exact"}
    for i, v in enumerate(column):
        r = readings[i]
        if r is None:
            continue
        if r.how != "exact":
            r = keys.read(v)
            if r.how != "near" or r.code in exact or r.code in near:
                continue
            near[r.code] = (nfc(v), r.spelling or "")
        fid = r.code
        if fid in values:
            continue
        val = df.iat[i, key_col + 1] if df.shape[1] > key_col + 1 else None
        values[fid] = None if val is None or pd.isna(val) or not str(val).strip() else nfc(str(val))
        rows[fid] = i + 1
    return KeyValueData(name, values, rows, xl_col_to_name(offset + key_col + 1), near)


def read_workbook(path: Path, contract: Contract | None = None) -> ParsedWorkbook:
    """Parse every sheet the contract knows. Raises UnreadableWorkbook when it cannot open."""
    c = contract or load_contract()
    path = Path(path)
    reader = _open(path)
    names = list(reader.sheet_names)
    out = ParsedWorkbook(path=path, sha256=file_sha256(path), sheet_names=names)
    pending: list[tuple[str, pd.DataFrame, int]] = []
    for name in names:
        if header_key(name) == FEEDBACK_SHEET_KEY:
            continue  # a school re-sending our feedback workbook: our summary sheet is not data
        sheet = _match_sheet(name, c)
        try:
            df, offset = _load_text(reader, name)
        except Exception as exc:
            raise UnreadableWorkbook("corrupt", f"{name}: {type(exc).__name__}") from exc
        if sheet is None:
            pending.append((name, df, offset))
            continue
        if sheet.layout == "key_value":
            out.school = _parse_key_value(df, offset, sheet, name)
        else:
            data = _parse_table(df, offset, sheet, name)
            if data is not None and sheet.id not in out.sheets:
                out.sheets[sheet.id] = data
            elif data is None:
                out.sheets[sheet.id] = SheetData(sheet.id, name, 0, pd.DataFrame({"excel_row": []}))
    # Sheets with other names (a plain ministry student-list export, "Sheet1"): recognise
    # them by their headers.
    for name, df, offset in pending:
        best: tuple[int, Sheet | None] = (1, None)
        for s in c.sheets:
            if s.layout != "table" or s.id in out.sheets:
                continue
            _, score = _find_header(df, _keys(s))
            if score > best[0]:
                best = (score, s)
        if best[1] is not None and best[0] >= 3:
            data = _parse_table(df, offset, best[1], name)
            if data is not None:
                out.sheets[best[1].id] = data
                continue
        out.unknown_sheets.append(name)
    if out.school is not None:
        out.template_version = out.school.values.get("template_version")
    return out
