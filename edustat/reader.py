"""Read a school's workbook robustly: every cell as text, header rows found (not assumed),
headers matched to the contract by aliases (diacritic-insensitive), numbering / blank / total
rows skipped, unknown columns kept, and every row's Excel row number kept as lineage.

Parsing only: what the reader finds wrong with the structure is returned as facts
(`missing_sheets`, `SheetData.missing_fields`…); the validation stage turns them into messages.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import fastexcel
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from xlsxwriter.utility import xl_col_to_name

from schemas import Contract, Sheet, load_contract
from schemas.vocabulary import Matcher, sheet_matcher
from schemas.folding import INVISIBLE
from transforms.text import fold, header_key, nfc

HEADER_SCAN_ROWS = 30
FEEDBACK_SHEET_KEY = "phanhoi"  # edustat.feedback's first sheet, "PhanHoi"
MAX_FILE_BYTES = 200 * 1024 * 1024
EXTRA_PREFIX = "extra:"
_TOTAL = re.compile(r"^(tong cong|tong so|tong|cong)\b")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # encrypted xlsx and legacy .xls


# Invisible characters (schemas.folding.INVISIBLE) are removed from every cell, with a notice
# per column.
# Token of a worksheet's XML for counting rows that hold values (optional namespace prefix).
_ROW_TOKEN = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(row|v|is)[\s>/]")


@dataclass(frozen=True)
class Limits:
    """What one file may cost before it is read: checked on the zip's central directory and
    on a streaming count of the sheets' rows, never by loading the file.

    Defaults are the largest real school × 10 (see edustat.config for how they were sized)."""

    max_file_bytes: int = MAX_FILE_BYTES
    max_uncompressed_bytes: int = 100 * 1024 * 1024
    max_sheet_rows: int = 35_000


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
    invisible: dict[str, int] = field(default_factory=dict)  # field id → cells cleaned of invisible chars


@dataclass
class KeyValueData:
    name: str
    values: dict[str, str | None]  # field id → text as found
    rows: dict[str, int]  # field id → Excel row
    value_column: str = "B"
    near_keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # field → (key found, read as)
    invisible: dict[str, int] = field(default_factory=dict)  # field id → 1 when cleaned


@dataclass
class ParsedWorkbook:
    path: Path
    sha256: str
    sheet_names: list[str]
    sheets: dict[str, SheetData] = field(default_factory=dict)
    school: KeyValueData | None = None
    unknown_sheets: list[str] = field(default_factory=list)
    template_version: str | None = None
    # contract sheet id → every sheet name of the file that maps to it, when more than one does
    duplicate_sheets: dict[str, list[str]] = field(default_factory=dict)

    @property
    def found(self) -> set[str]:
        return set(self.sheets) | ({"school"} if self.school else set())


def open_regular(path: Path):
    """A binary file object for a regular file, never following a symlink and never blocking
    on a fifo; OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sniff(head: bytes) -> str:
    """What a file that is not a zip is, for the message (the detail of "not_xlsx")."""
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "html"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "binary"


_CHUNK = 1 << 20
_TAIL = 64  # a token starting in a chunk's last bytes is read with the next chunk


def _check_zip(z: zipfile.ZipFile, limits: Limits) -> None:
    """Declared sizes first (the central directory: nothing inflated), then every member read
    through once — zipfile never inflates past a member's declared size, so a member that
    lies about it fails its CRC instead of filling memory — counting each worksheet's rows.

    A sheet can hold no more rows with values than row tags + 1, nor more row tags than
    occurrences of "row": those are counted in C; only a sheet with more than the limit is
    counted exactly, token by token (`_count_rows`)."""
    infos = z.infolist()
    if any(i.flag_bits & 0x1 for i in infos):
        raise UnreadableWorkbook("encrypted", "zip encryption")
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_uncompressed_bytes:
        raise UnreadableWorkbook("zip_bomb", f"{declared // (1 << 20)} MB > {limits.max_uncompressed_bytes // (1 << 20)} MB")
    if "xl/workbook.xml" not in {i.filename for i in infos}:
        raise UnreadableWorkbook("not_xlsx", "no xl/workbook.xml")
    for info in infos:
        is_sheet = info.filename.startswith("xl/worksheets/") and info.filename.endswith(".xml")
        tags = 0
        tail = b""
        with z.open(info) as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not is_sheet:
                    if not chunk:
                        break
                    continue
                # every row tag holds "row" and tags never overlap: an upper bound counted at
                # memchr speed (the last 2 bytes read before catch a "row" split in two)
                buf = tail + chunk
                tags += buf.count(b"row")
                if tags + 1 > limits.max_sheet_rows or not chunk:
                    break
                tail = buf[-2:]
        if is_sheet and tags + 1 > limits.max_sheet_rows:
            _count_rows(z, info, limits)


def _count_rows(z: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> None:
    """The rows of one worksheet that hold a value, streamed; UnreadableWorkbook past the limit."""
    rows = 0
    has_value = False
    tail = b""
    with z.open(info) as fh:
        while True:
            chunk = fh.read(_CHUNK)
            buf = tail + chunk
            last = not chunk
            cut = len(buf) if last else max(0, len(buf) - _TAIL)
            for m in _ROW_TOKEN.finditer(buf, 0, len(buf)):
                if m.start() >= cut:
                    break
                if m.group(1) == b"row":
                    rows += has_value
                    has_value = False
                else:
                    has_value = True
            if rows > limits.max_sheet_rows:
                raise UnreadableWorkbook("too_many_rows", f"> {limits.max_sheet_rows}")
            if last:
                rows += has_value
                break
            tail = buf[cut:]
    if rows > limits.max_sheet_rows:
        raise UnreadableWorkbook("too_many_rows", f"{rows} > {limits.max_sheet_rows}")


def _open(path: Path, limits: Limits | None = None) -> fastexcel.ExcelReader:
    limits = limits or Limits()
    try:
        fh = open_regular(path)
    except OSError as exc:
        raise UnreadableWorkbook("not_regular", type(exc).__name__) from exc
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise UnreadableWorkbook("empty", "0 bytes")
        if size > limits.max_file_bytes:
            raise UnreadableWorkbook("too_large", f"{size // (1 << 20)} MB > {limits.max_file_bytes // (1 << 20)} MB")
        content = fh.read()  # ≤ max_file_bytes; read from the fd opened without following links
        head = content[:512]
        if head[:8] == _OLE_MAGIC:
            # An OLE container is either a legacy .xls or a password-protected .xlsx.
            raise UnreadableWorkbook("encrypted_or_xls", path.suffix)
        if not zipfile.is_zipfile(io.BytesIO(content)):
            if head.startswith(b"PK\x03\x04"):  # a zip's start without its end: cut short
                raise UnreadableWorkbook("corrupt", "truncated zip")
            raise UnreadableWorkbook("not_xlsx", _sniff(head))
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            _check_zip(z, limits)
        # the bytes, not the path: a name that is not UTF-8 cannot cross into Rust, and the
        # file that was checked is the file that is read
        return fastexcel.read_excel(content)
    except UnreadableWorkbook:
        raise
    except Exception as exc:  # zip/calamine errors of every kind mean one thing to a school
        raise UnreadableWorkbook("corrupt", type(exc).__name__) from exc


# Every character Python's str.strip() removes (str.isspace; tests/test_reader.py proves the
# list), as an RE2 class: a cell is filled when it holds a character outside it — the
# vectorised `str(v).strip() != ""` of the reader's blank-row test.
PY_WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + \
    "\u2028\u2029\u202f\u205f\u3000"
_NOT_SPACE = "[^" + "".join(f"\\x{{{ord(c):x}}}" for c in PY_WHITESPACE) + "]"
_INVISIBLE_RE2 = INVISIBLE.pattern  # a class of literal characters: the same set for RE2
_INVISIBLE_BYTES = re.compile(b"|".join(re.escape(chr(i).encode("utf-8")) for i in range(0x10000)
                                        if not 0xD800 <= i <= 0xDFFF and INVISIBLE.match(chr(i))))


class Grid:
    """A sheet's cells as Arrow text columns, index 0 = Excel row 1: loaded once, never turned
    into pandas objects cell by cell (only the first rows are read in Python, for the header)."""

    __slots__ = ("cols", "nrows")

    def __init__(self, cols: list, nrows: int):
        self.cols = cols
        self.nrows = nrows

    @property
    def ncols(self) -> int:
        return len(self.cols)

    def rows(self, start: int, stop: int) -> list[list]:
        """Rows [start, stop) as lists of str / None."""
        stop = min(stop, self.nrows)
        if start >= stop:
            return []
        cols = [c.slice(start, stop - start).to_pylist() for c in self.cols]
        return [list(r) for r in zip(*cols)] if cols else [[] for _ in range(stop - start)]

    def column(self, j: int) -> list:
        return self.cols[j].to_pylist()


def _load_text(reader: fastexcel.ExcelReader, name: str) -> tuple[Grid, int]:
    """The whole sheet as text from Excel row 1, and the Excel column index of column 0."""
    sheet = reader.load_sheet(name, header_row=None, dtypes="string", skip_rows=0)
    cols = sheet.available_columns()
    offset = cols[0].absolute_index if cols else 0
    batch = sheet.to_arrow()
    arrays = []
    for a in batch.columns:
        if isinstance(a, pa.ChunkedArray):
            a = a.combine_chunks()
        if not (pa.types.is_null(a.type) or pa.types.is_string(a.type) or pa.types.is_large_string(a.type)):
            raise TypeError(f"column of type {a.type}")  # dtypes="string": never; a corrupt file
        arrays.append(a.cast(pa.large_string()))  # pandas' "string" storage: cast once, here
    return Grid(arrays, batch.num_rows), offset


def _strip_invisible(grid: Grid) -> dict[int, set[int]]:
    """Remove invisible characters from every cell, in place: column index → row indexes cleaned."""
    cleaned: dict[int, set[int]] = {}
    if not grid.cols or not grid.nrows:
        return cleaned
    # the columns' UTF-8 bytes searched in place first: they hold every cell's characters
    # whole, so no match there means no cell has one (a match is checked cell by cell)
    if not any(buf is not None and _INVISIBLE_BYTES.search(buf) for col in grid.cols for buf in col.buffers()[2:3]):
        return cleaned
    hit = _matches(grid.cols, _INVISIBLE_RE2)
    if not hit.any():
        return cleaned
    for j in np.flatnonzero(hit.any(axis=1)).tolist():
        grid.cols[j] = pc.replace_substring_regex(grid.cols[j], _INVISIBLE_RE2, "")
        cleaned[j] = set(np.flatnonzero(hit[j]).tolist())
    return cleaned


def _matches(arrays: list, pattern: str) -> np.ndarray:
    """(column, row) → the cell holds a match of `pattern` (RE2), for equal-length text columns:
    one Arrow call over them all."""
    n = len(arrays[0]) if arrays else 0
    if not arrays or not n:
        return np.zeros((len(arrays), n), dtype=bool)
    cells = pa.chunked_array(arrays, type=arrays[0].type) if len({a.type for a in arrays}) == 1 else \
        pa.chunked_array([a.cast(pa.large_string()) for a in arrays])
    hit = pc.match_substring_regex(cells, pattern).fill_null(False).to_numpy()
    return hit.reshape(len(arrays), n)


def _filled(arrays: list) -> np.ndarray:
    """(column, row) → the cell holds more than whitespace (`str(v).strip() != ""`, the set
    `PY_WHITESPACE`): what `_matches(arrays, _NOT_SPACE)` gives, with one Arrow left-trim of
    those characters over every cell instead of a regex search (3x less CPU; issue 12)."""
    n = len(arrays[0]) if arrays else 0
    if not arrays or not n:
        return np.zeros((len(arrays), n), dtype=bool)
    cells = pa.chunked_array(arrays, type=arrays[0].type) if len({a.type for a in arrays}) == 1 else \
        pa.chunked_array([a.cast(pa.large_string()) for a in arrays])
    left = pc.utf8_ltrim(cells, characters=PY_WHITESPACE)
    hit = pc.greater(pc.binary_length(left), 0).fill_null(False).to_numpy(zero_copy_only=False)
    return hit.reshape(len(arrays), n)


def _invisible_by_field(cleaned: dict[int, set[int]], columns: dict[str, str], offset: int,
                        rows: dict[str, int] | None = None) -> dict[str, int]:
    """Field id → cells cleaned in its column (in its own row only, for a key/value sheet)."""
    out = {}
    for fid, letter in columns.items():
        hit = cleaned.get(_col_index(letter) - offset, set())
        n = len(hit) if rows is None else int(rows.get(fid, 0) - 1 in hit)
        if n:
            out[fid] = n
    return out


def _match_sheet(name: str, contract: Contract) -> Sheet | None:
    key = header_key(name)
    for s in contract.sheets:
        if key in s.match_keys:
            return s
    return None


def _header_score(row: list, matcher: Matcher) -> int:
    """How many cells of a row name a field exactly (the header row names the most)."""
    return sum(1 for v in row if isinstance(v, str) and _names_field(matcher, v))


# id(matcher) → (the matcher, kept alive so the id is not reused; text → names a field exactly).
# The same title, header and first-row texts come back in every file of a collection.
_EXACT_MEMO: dict[int, tuple[Matcher, dict[str, bool]]] = {}


# A code, a number or a date: every key Matcher.read derives from such a text (its casefold,
# header key, expansion, bare key) is again made of these characters only.
_NUMERIC_TEXT = re.compile(r"[0-9/.\- ]*")
_NUMERIC_NEVER: dict[int, tuple[Matcher, bool]] = {}


def _numeric_never_exact(matcher: Matcher) -> bool:
    """No numeric text (`_NUMERIC_TEXT`) can name a field of `matcher` exactly: none of its keys
    is numeric, and no abbreviation (which could rewrite a numeric key) is made of digits and
    spaces. The data cells under a header are mostly such texts (codes, IDs, dates), each new:
    this spares the header scan a vocabulary look-up per cell (tests/test_reader.py checks it
    against Matcher.read)."""
    hit = _NUMERIC_NEVER.get(id(matcher))
    if hit is None or hit[0] is not matcher:
        index, abbr = getattr(matcher, "_index", None), getattr(matcher, "abbreviations", None)
        ok = isinstance(index, dict) and hasattr(abbr, "get")
        if ok:
            shorts = [k for k in abbr if k != "__phrases__"] + list(abbr.get("__phrases__") or {})
            ok = not any(_NUMERIC_TEXT.fullmatch(k) for k in index) and \
                not any(re.fullmatch(r"[0-9 ]*", str(s)) for s in shorts)
        hit = _NUMERIC_NEVER[id(matcher)] = (matcher, ok)
    return hit[1]


def _names_field(matcher: Matcher, text: str) -> bool:
    hit = _EXACT_MEMO.get(id(matcher))
    if hit is None or hit[0] is not matcher:
        hit = _EXACT_MEMO[id(matcher)] = (matcher, {})
    memo = hit[1]
    found = memo.get(text)
    if found is None:
        if _NUMERIC_TEXT.fullmatch(text) and _numeric_never_exact(matcher):
            return False  # not remembered: codes and dates are new in every file
        found = matcher.read(text, near=False).how == "exact"
        if len(memo) < 100_000:
            memo[text] = found
    return found


def _keys(sheet: Sheet) -> Matcher:
    return sheet_matcher(sheet)


def _find_header(grid: Grid, keys: Matcher) -> tuple[int, int]:
    """The row among the first ones whose cells name the most fields."""
    best, best_row = 0, -1
    numeric_never = _numeric_never_exact(keys)
    for i, row in enumerate(grid.rows(0, HEADER_SCAN_ROWS)):
        # the cells that may name a field (`_names_field` is False for the others): a row with
        # no more of them than the best score cannot beat it — data rows under a header are
        # mostly names and codes, skipped without a vocabulary look-up each (issue 12)
        cells = [v for v in row if isinstance(v, str) and not (numeric_never and _NUMERIC_TEXT.fullmatch(v))]
        if len(cells) <= best:
            continue
        score = sum(1 for v in cells if _names_field(keys, v))
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


def _parse_table(grid: Grid, offset: int, sheet: Sheet, name: str) -> SheetData | None:
    keys = _keys(sheet)
    h, score = _find_header(grid, keys)
    if h < 0 or score < 2:
        return None
    header = grid.rows(h, h + 1)[0]
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
    start = h + 1  # the body: every row under the header
    skipped: dict[int, str] = {}
    # the first non-blank row under the header (a blank row may come between) is a numbering
    # row when it only numbers the columns; it is read across the whole row, not only the
    # columns the contract knows
    numbering = -1
    for i, row in enumerate(grid.rows(start, start + NUMBERING_SCAN_ROWS)):
        values = [None if v is None or not str(v).strip() else v for v in row]
        if not any(v is not None for v in values):
            continue
        if _is_numbering(values):
            skipped[h + 2 + i] = "numbering"
            numbering = i
        break
    # the contract's and the extra columns, each name once (the first column of a name)
    chosen: dict[str, int] = {}
    for j, col_name in col_field.items():
        chosen.setdefault(col_name, j)
    names = list(chosen)
    arrays = [grid.cols[j].slice(start) for j in chosen.values()]
    n = max(0, grid.nrows - start)
    # a row is kept when one of its cells holds more than whitespace (numbering row: dropped)
    filled = _filled(arrays)
    if numbering >= 0:
        filled = filled.copy()
        filled[:, numbering] = False
    keep = np.flatnonzero(filled.any(axis=0)) if len(arrays) else np.zeros(0, dtype=np.int64)
    if len(keep):
        # a total row: its first filled cell says "Tổng cộng" / "Tổng số" / "Cộng"
        first = filled[:, keep].argmax(axis=0)
        is_total = np.zeros(len(keep), dtype=bool)
        for k, arr in enumerate(arrays):
            at = np.flatnonzero(first == k)
            if len(at):
                texts = arr.take(pa.array(keep[at])).to_pylist()
                # ASCII digits (a row number, a code) fold to themselves: never "tổng"/"cộng"
                is_total[at] = [not (t.isascii() and t.isdigit()) and bool(_TOTAL.match(fold(str(t)))) for t in texts]
        for pos in keep[is_total]:
            skipped[int(start + pos + 1)] = "total"
        keep = keep[~is_total]
    take = pa.array(keep, pa.int64())
    frame = pd.DataFrame({"excel_row": (keep + start + 1).astype("int64"),
                          **{col: _text_array(arr.take(take)) for col, arr in zip(names, arrays)}}, copy=False)
    return SheetData(sheet.id, name, h + 1, frame, columns, headers, extra, dups, skipped, near)


def _text_array(arr: pa.Array) -> pd.api.extensions.ExtensionArray:
    """An Arrow text column as pandas' "string" dtype (what `.astype("string")` gives: large_string
    storage, <NA> for a blank), wrapped without a copy through Python objects."""
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    return pd.arrays.ArrowStringArray(pa.chunked_array([arr]))


def _parse_key_value(grid: Grid, offset: int, sheet: Sheet, name: str) -> KeyValueData:
    keys = _keys(sheet)
    values: dict[str, str | None] = {}
    rows: dict[str, int] = {}
    near: dict[str, tuple[str, str]] = {}
    key_col = 0
    best = -1
    cols = [grid.column(j) for j in range(grid.ncols)]  # a key/value sheet: a few dozen rows
    for j in range(min(grid.ncols, 4)):
        score = _header_score(cols[j], keys)
        if score > best:
            best, key_col = score, j
    column = cols[key_col] if grid.ncols else []
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
        val = cols[key_col + 1][i] if grid.ncols > key_col + 1 else None
        values[fid] = None if val is None or not str(val).strip() else nfc(str(val))
        rows[fid] = i + 1
    return KeyValueData(name, values, rows, xl_col_to_name(offset + key_col + 1), near)


def read_workbook(path: Path, contract: Contract | None = None, limits: Limits | None = None) -> ParsedWorkbook:
    """Parse every sheet the contract knows. Raises UnreadableWorkbook when it cannot open.
    Two sheets whose names map to one contract sheet are both recorded (`duplicate_sheets`):
    the first is parsed, the structure stage refuses the file naming both."""
    c = contract or load_contract()
    path = Path(path)
    reader = _open(path, limits)
    names = list(reader.sheet_names)
    out = ParsedWorkbook(path=path, sha256=file_sha256(path), sheet_names=names)
    pending: list[tuple[str, Grid, int, dict[int, set[int]]]] = []
    matched: dict[str, list[str]] = {}
    for name in names:
        if header_key(name) == FEEDBACK_SHEET_KEY:
            continue  # a school re-sending our feedback workbook: our summary sheet is not data
        sheet = _match_sheet(name, c)
        try:
            grid, offset = _load_text(reader, name)
        except Exception as exc:
            raise UnreadableWorkbook("corrupt", f"{name}: {type(exc).__name__}") from exc
        cleaned = _strip_invisible(grid)
        if sheet is None:
            pending.append((name, grid, offset, cleaned))
            continue
        matched.setdefault(sheet.id, []).append(name)
        if len(matched[sheet.id]) > 1:
            continue  # the first is parsed; the file is refused for the ambiguity
        if sheet.layout == "key_value":
            out.school = _parse_key_value(grid, offset, sheet, name)
            out.school.invisible = _invisible_by_field(cleaned, {f: out.school.value_column for f in out.school.values},
                                                       offset, out.school.rows)
        else:
            data = _parse_table(grid, offset, sheet, name)
            if data is not None:
                data.invisible = _invisible_by_field(cleaned, data.columns, offset)
                out.sheets[sheet.id] = data
            else:
                out.sheets[sheet.id] = SheetData(sheet.id, name, 0, pd.DataFrame({"excel_row": []}))
    out.duplicate_sheets = {sid: ns for sid, ns in matched.items() if len(ns) > 1}
    # Sheets with other names (a plain ministry student-list export, "Sheet1"): recognise
    # them by their headers.
    for name, grid, offset, cleaned in pending:
        best: tuple[int, Sheet | None] = (1, None)
        for s in c.sheets:
            if s.layout != "table" or s.id in out.sheets:
                continue
            _, score = _find_header(grid, _keys(s))
            if score > best[0]:
                best = (score, s)
        if best[1] is not None and best[0] >= 3:
            data = _parse_table(grid, offset, best[1], name)
            if data is not None:
                data.invisible = _invisible_by_field(cleaned, data.columns, offset)
                out.sheets[best[1].id] = data
                continue
        out.unknown_sheets.append(name)
    if out.school is not None:
        out.template_version = out.school.values.get("template_version")
    return out


def _col_index(letter: str) -> int:
    from xlsxwriter.utility import xl_cell_to_rowcol

    return xl_cell_to_rowcol(f"{letter}1")[1]
