"""The "patch" feedback engine (default, issue 12): the school's own .xlsx, patched at zip/XML
level. Every zip member is copied as it came (its compressed bytes, never inflated) except
the few that must change:

- the PhanHoi sheet is rendered by xlsxwriter exactly as the fast engine renders it (in a
  scratch workbook), its sheet XML is inserted first and made the active, only selected sheet,
  its styles are appended to the school's styles.xml (indices offset);
- each offending cell (the same targets and comment texts as the other engines: `_targets`,
  `_comment_text`) gets a clone of its own cell format with a solid fill of the severity
  colour (its value, formula, number format, font and borders kept), created when the cell or
  its row is absent; comments go into a new commentsN.xml + vmlDrawingN.vml (made by
  xlsxwriter in the same scratch workbook) linked from the sheet;
- workbook.xml (the new <sheet>, defined names' localSheetId shifted by one, activeTab),
  the rels and [Content_Types].xml.

The school's XML is edited as text (targeted regex edits), never re-serialised: namespace
prefixes, markup compatibility attributes and everything we do not understand stay
byte-identical. Anything outside what this module handles (.xls, .xlsm, strict OOXML,
prefixed SpreadsheetML, encryption, zip64, a sheet that already has comments or a legacy
drawing, a resent feedback workbook with our earlier marks, rows or cells without `r`, …)
falls back to the fast engine for that file, with a reason code in the log (never a value
from the workbook). Formulas and formats being kept, PhanHoi carries no "values only" note.
"""
from __future__ import annotations

import bisect
import io
import posixpath
import re
import struct
import time
import zipfile
import zlib
from html import unescape
from pathlib import Path
from typing import Callable
from xml.sax.saxutils import escape, quoteattr

import pandas as pd
import xlsxwriter
from xlsxwriter.packager import Packager
from openpyxl.utils import column_index_from_string, get_column_letter, quote_sheetname

from edustat.feedback import (COMMENT_AUTHOR, COMMENT_WIDTH, SEVERITY_COLOR, TEXT, _clean, _comment_height, _comment_text,
                              _phanhoi, _save_atomic, _sheet_lookup, _targets, log)

MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_REL_TYPE = REL_NS + "/"
_CT_SHEET = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
_CT_COMMENTS = "application/vnd.openxmlformats-officedocument.spreadsheetml.comments+xml"
_CT_VML = "application/vnd.openxmlformats-officedocument.vmlDrawing"
_MAX_INFLATED = 100 * 1024 * 1024  # as edustat.reader.Limits: the file was read through it already
_LEVEL = 1  # zlib level of the members we rewrite: 3× faster than 6, a few % larger


class Fallback(Exception):
    """This workbook is not patched; `reason` is a fixed code (no value from the file)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def write(source: Path | None, out: Path, frame: pd.DataFrame, about: dict) -> dict[object, str]:
    """The school's workbook patched (see the module docstring); the fast engine's copy for any
    workbook this engine does not handle. Returns issue index → marked cell."""
    from edustat import feedback_xlsx

    if source is None or about["status"] == "unreadable":
        return feedback_xlsx.write(source, out, frame, about)
    try:
        data, marked = patch(Path(source).read_bytes(), frame, about)
    except Fallback as exc:
        log.info("feedback: patch engine not used, fast engine instead (%s)", exc.reason)
        return feedback_xlsx.write(source, out, frame, about)
    except Exception as exc:  # anything unexpected: never a crash, never a wrong file
        log.warning("feedback: patch engine failed, fast engine instead (%s)", type(exc).__name__)
        return feedback_xlsx.write(source, out, frame, about)
    _save_atomic(lambda tmp: tmp.write_bytes(data), Path(out))
    return marked


# --- small XML helpers (text level) -----------------------------------------------------------

_ATTR = re.compile(r'([\w:.-]+)\s*=\s*("[^"]*"|\'[^\']*\')')


def _attrs(tag: str) -> dict[str, str]:
    return {k: unescape(v[1:-1]) for k, v in _ATTR.findall(tag)}


def _set_attr(tag: str, name: str, value: str | None) -> str:
    """`tag` (a start tag's text, `<x a="1" …>` or `…/>`) with attribute `name` set (None: removed)."""
    pat = re.compile(r'\s' + re.escape(name) + r'\s*=\s*("[^"]*"|\'[^\']*\')')
    tag = pat.sub("", tag)
    if value is None:
        return tag
    end = len(tag) - (2 if tag.endswith("/>") else 1)
    return f'{tag[:end]} {name}={quoteattr(value)}{tag[end:]}'


def _root_ok(xml: str, local: str) -> None:
    """The part's root is `local` in the transitional SpreadsheetML namespace, unprefixed."""
    m = re.search(r"<(?![?!])([\w:.-]+)([^>]*)>", xml)
    if m is None or m.group(1) != local:
        raise Fallback(f"{local}_prefixed_or_missing")
    if f'xmlns="{MAIN_NS}"' not in m.group(2).replace("'", '"'):
        raise Fallback(f"{local}_not_transitional")


def _rel_prefix(xml: str) -> str | None:
    m = re.search(r'xmlns:([\w.-]+)\s*=\s*["\']' + re.escape(REL_NS) + '["\']', xml[:4000])
    return m.group(1) if m else None


def _resolve(base_part: str, target: str) -> str:
    """A relationship target → zip member name (relative to the part's folder, or absolute)."""
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(base_part), target))


def _rels_path(part: str) -> str:
    return posixpath.join(posixpath.dirname(part), "_rels", posixpath.basename(part) + ".rels")


def _relationships(xml: str) -> list[dict[str, str]]:
    return [_attrs(t) for t in re.findall(r"<Relationship\b[^>]*>", xml)]


def _cell_ref(ref: str) -> tuple[int, int]:
    m = re.fullmatch(r"\$?([A-Z]{1,3})\$?(\d+)", ref)
    if not m:
        raise Fallback("cell_ref")
    return int(m.group(2)), column_index_from_string(m.group(1))


# --- the zip: members copied raw, a few replaced ---------------------------------------------


class _Zip:
    def __init__(self, data: bytes):
        self.data = data
        try:
            self.zf = zipfile.ZipFile(io.BytesIO(data))
            infos = self.zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise Fallback("not_a_zip") from exc
        if any(i.flag_bits & 0x1 for i in infos):
            raise Fallback("encrypted")
        if sum(i.file_size for i in infos) > _MAX_INFLATED:
            raise Fallback("too_large")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names) or len({n.lower() for n in names}) != len(names):
            raise Fallback("duplicate_members")
        if any(i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) for i in infos):
            raise Fallback("compression")
        if len(infos) > 60000 or len(data) >= 0xFFFFFFFF or any(i.file_size >= 0xFFFFFFFF for i in infos):
            raise Fallback("zip64")
        self.infos = {i.filename: i for i in infos}
        self.order = names
        self.lower = {n.lower() for n in names}

    def text(self, name: str) -> str:
        raw = self.zf.read(name)
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise Fallback("utf16_part")
        declared = re.match(rb'<\?xml[^>]*encoding\s*=\s*["\']([\w.-]+)', raw)
        if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
            raise Fallback("xml_encoding")
        return raw.decode("utf-8")

    def head(self, name: str, size: int = 8192) -> str:
        with self.zf.open(name) as fh:
            return fh.read(size).decode("utf-8", errors="replace")

    def free(self, pattern: str, taken: set[str]) -> str:
        n = 1
        while (pattern.format(n).lower() in self.lower) or pattern.format(n).lower() in taken:
            n += 1
        taken.add(pattern.format(n).lower())
        return pattern.format(n)

    def raw(self, info: zipfile.ZipInfo) -> tuple[bytes, bytes]:
        """(name bytes as stored, compressed bytes) of a member, without inflating it."""
        off = info.header_offset
        head = self.data[off:off + 30]
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise Fallback("zip_local_header")
        n, e = struct.unpack("<HH", head[26:30])
        name = self.data[off + 30:off + 30 + n]
        start = off + 30 + n + e
        body = self.data[start:start + info.compress_size]
        if len(body) != info.compress_size:
            raise Fallback("zip_truncated")
        return name, body

    def build(self, replaced: dict[str, bytes], added: list[tuple[str, bytes]]) -> bytes:
        """The new zip: members in their order (replaced ones rewritten), then the added ones."""
        out = io.BytesIO()
        central = []

        def put(name: bytes, flags: int, method: int, dostime: int, dosdate: int, crc: int, body: bytes,
                size: int) -> None:
            offset = out.tell()
            out.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, method, dostime, dosdate, crc,
                                  len(body), size, len(name), 0))
            out.write(name)
            out.write(body)
            central.append(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, method, dostime,
                                       dosdate, crc, len(body), size, len(name), 0, 0, 0, 0, 0, offset) + name)

        def deflated(content: bytes) -> bytes:
            c = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
            return c.compress(content) + c.flush()

        now = time.localtime()
        dostime = (now.tm_hour << 11) | (now.tm_min << 5) | (now.tm_sec // 2)
        dosdate = ((now.tm_year - 1980) << 9) | (now.tm_mon << 5) | now.tm_mday
        for name in self.order:
            info = self.infos[name]
            t, d = info.date_time[3:], info.date_time[:3]
            itime = (t[0] << 11) | (t[1] << 5) | (t[2] // 2)
            idate = max(0, (d[0] - 1980)) << 9 | (d[1] << 5) | d[2]
            if name in replaced:
                content = replaced[name]
                put(name.encode("utf-8"), 0x800, 8, itime, idate, zlib.crc32(content), deflated(content), len(content))
            else:
                raw_name, body = self.raw(info)
                put(raw_name, info.flag_bits & 0x800, info.compress_type, itime, idate, info.CRC, body, info.file_size)
        for name, content in added:
            put(name.encode("utf-8"), 0x800, 8, dostime, dosdate, zlib.crc32(content), deflated(content), len(content))
        start = out.tell()
        for entry in central:
            out.write(entry)
        size = out.tell() - start
        out.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(central), len(central), size, start, 0))
        return out.getvalue()


# --- styles.xml: appended fonts, fills, borders, cell formats --------------------------------


class _Styles:
    """The school's styles.xml, appended to (never re-serialised)."""

    SECTIONS = ("numFmts", "fonts", "fills", "borders", "cellXfs")

    def __init__(self, xml: str):
        _root_ok(xml, "styleSheet")
        self.xml = xml
        self.items: dict[str, list[str]] = {}
        self.added: dict[str, list[str]] = {s: [] for s in self.SECTIONS}
        for sec in ("fonts", "fills", "borders", "cellXfs"):
            m = re.search(rf"<{sec}\b[^>]*?(?:/>|>(.*?)</{sec}>)", xml, re.S)
            if m is None:
                raise Fallback(f"styles_{sec}")
            child = {"fonts": "font", "fills": "fill", "borders": "border", "cellXfs": "xf"}[sec]
            self.items[sec] = re.findall(rf"<{child}\b[^>]*?(?:/>|>.*?</{child}>)", m.group(1) or "", re.S)
        fmt_ids = [int(i) for i in re.findall(r'<numFmt\b[^>]*numFmtId="(\d+)"', xml)]
        self.next_fmt = max([163, *fmt_ids]) + 1
        self._clones: dict[tuple[int, str], int] = {}
        self._fills: dict[str, int] = {}

    def count(self, sec: str) -> int:
        return len(self.items[sec]) + len(self.added[sec])

    def add(self, sec: str, item: str) -> int:
        self.added[sec].append(item)
        return self.count(sec) - 1

    def marked(self, xf: int, severity: str) -> int:
        """A clone of cell format `xf` with the severity's solid fill (one per xf × severity)."""
        key = (xf, severity)
        if key not in self._clones:
            if severity not in self._fills:
                rgb = "FF" + SEVERITY_COLOR[severity]
                self._fills[severity] = self.add(
                    "fills", f'<fill><patternFill patternType="solid"><fgColor rgb="{rgb}"/>'
                             f'<bgColor indexed="64"/></patternFill></fill>')
            xfs = self.items["cellXfs"]
            base = xfs[xf] if 0 <= xf < len(xfs) else (xfs[0] if xfs else '<xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>')
            tag_end = base.index(">") + 1
            tag = _set_attr(_set_attr(base[:tag_end], "fillId", str(self._fills[severity])), "applyFill", "1")
            self._clones[key] = self.add("cellXfs", tag + base[tag_end:])
        return self._clones[key]

    def merge_xlsxwriter(self, xml: str) -> dict[int, int]:
        """Append the scratch workbook's fonts, fills (but the two reserved), borders, number
        formats and cell formats. Returns its cellXfs index → index here."""
        def section(sec: str, child: str) -> list[str]:
            m = re.search(rf"<{sec}\b[^>]*?(?:/>|>(.*?)</{sec}>)", xml, re.S)
            return re.findall(rf"<{child}\b[^>]*?(?:/>|>.*?</{child}>)", (m.group(1) or "") if m else "", re.S)

        fmt_map: dict[int, int] = {}
        for nf in section("numFmts", "numFmt"):
            old = int(_attrs(nf[: nf.index(">") + 1])["numFmtId"])
            fmt_map[old] = self.next_fmt
            self.add("numFmts", _set_attr(nf[: nf.index(">") + 1], "numFmtId", str(self.next_fmt)) + nf[nf.index(">") + 1:])
            self.next_fmt += 1
        font_map = {i: self.add("fonts", f) for i, f in enumerate(section("fonts", "font"))}
        fill_map = {0: 0, 1: 1}
        for i, f in enumerate(section("fills", "fill")):
            if i >= 2:
                fill_map[i] = self.add("fills", f)
        border_map = {i: self.add("borders", b) for i, b in enumerate(section("borders", "border"))}
        xf_map = {}
        for i, xf in enumerate(section("cellXfs", "xf")):
            end = xf.index(">") + 1
            tag, rest = xf[:end], xf[end:]
            a = _attrs(tag)
            nf = int(a.get("numFmtId", "0"))
            tag = _set_attr(tag, "numFmtId", str(fmt_map.get(nf, nf)))
            tag = _set_attr(tag, "fontId", str(font_map[int(a.get("fontId", "0"))]))
            tag = _set_attr(tag, "fillId", str(fill_map[int(a.get("fillId", "0"))]))
            tag = _set_attr(tag, "borderId", str(border_map[int(a.get("borderId", "0"))]))
            tag = _set_attr(tag, "xfId", "0")
            xf_map[i] = self.add("cellXfs", tag + rest)
        return xf_map

    def render(self) -> str:
        xml = self.xml
        for sec in ("cellXfs", "borders", "fills", "fonts", "numFmts"):  # later sections first: offsets hold
            new = self.added[sec]
            if not new:
                continue
            m = re.search(rf"<{sec}\b([^>]*?)(/?)>", xml)
            if m is None:  # only numFmts may be absent: it is the first child of styleSheet
                root = re.search(r"<styleSheet\b[^>]*>", xml)
                xml = xml[:root.end()] + f'<numFmts count="{len(new)}">' + "".join(new) + "</numFmts>" + xml[root.end():]
                continue
            count = len(self.items.get(sec, [])) + len(new) if sec != "numFmts" else \
                len(re.findall(r"<numFmt\b", xml)) + len(new)
            tag = _set_attr(m.group(0).replace("/>", ">") if m.group(2) else m.group(0), "count", str(count))
            if m.group(2):  # <fills/>: opened and closed around the new items
                xml = xml[:m.start()] + tag + "".join(new) + f"</{sec}>" + xml[m.end():]
            else:
                close = xml.index(f"</{sec}>", m.end())
                xml = xml[:m.start()] + tag + xml[m.end():close] + "".join(new) + xml[close:]
        return xml


# --- one school sheet: cells marked as text edits --------------------------------------------

_ROW = re.compile(r"<row\b([^>]*?)(/?)>")
_CELL = re.compile(r"<c\b([^>]*?)(?:/>|>(.*?)</c>)", re.S)
_R_ATTR = re.compile(r'\sr\s*=\s*"([^"]*)"')
_S_ATTR = re.compile(r'\ss\s*=\s*"(\d+)"')
_REF_ATTR = re.compile(r'\sr\s*=\s*"([A-Z]{1,3})(\d+)"')
_COLUMNS: dict[str, int] = {}


def _column(letters: str) -> int:
    if letters not in _COLUMNS:
        _COLUMNS[letters] = column_index_from_string(letters)
    return _COLUMNS[letters]
# CT_Worksheet children after <legacyDrawing>: it goes before the first of them
_AFTER_LEGACY = ("legacyDrawingHF", "drawingHF", "picture", "oleObjects", "controls", "webPublishItems",
                 "tableParts", "extLst")


class _Sheet:
    def __init__(self, name: str, part: str, xml: str):
        _root_ok(xml, "worksheet")
        self.name, self.part, self.xml = name, part, xml
        self.legacy_rid: str | None = None
        m = re.search(r"<sheetData\b[^>]*?(/?)>", xml)
        if m is None:
            raise Fallback("no_sheetdata")
        self.data_open = m
        self.data_end = m.end() if m.group(1) else xml.index("</sheetData>", m.end())
        self.rows: dict[int, tuple[int, int, int, str]] = {}  # row → (start, content start, end, attrs)
        self.row_order: list[int] = []
        self.indexed = False
        self.lookups = 0
        self._tail_parsed(xml, m)

    def index(self) -> None:
        """Every row's place (for a row the sheet lacks: where it goes); checks rows are in order."""
        if self.indexed:
            return
        self.indexed = True
        xml, m = self.xml, self.data_open
        self.rows.clear()
        rows, order, find, r_attr = self.rows, self.row_order, xml.index, _R_ATTR.search
        for rm in _ROW.finditer(xml, m.end(), self.data_end):
            attrs, closed = rm.groups()
            r = r_attr(attrs)
            if r is None:
                raise Fallback("row_without_r")
            n = int(r.group(1))
            head_end = rm.end()
            rows[n] = (rm.start(), head_end, head_end if closed else find("</row>", head_end) + 6, attrs)
            order.append(n)
        if any(a >= b for a, b in zip(self.row_order, self.row_order[1:])):
            raise Fallback("rows_out_of_order")

    def row(self, n: int) -> tuple[int, int, int, str] | None:
        """(start, content start, end, attrs) of row `n`, None when the sheet lacks it: found
        directly where `r` is the first attribute (as Excel, openpyxl and xlsxwriter write it)."""
        if n in self.rows:
            return self.rows[n]
        self.lookups += 1
        if self.lookups > 8:  # many rows: one pass over the sheet beats a search per row
            self.index()
        if not self.indexed:
            at = self.xml.find(f'<row r="{n}"', self.data_open.end(), self.data_end)
            if at >= 0:
                rm = _ROW.match(self.xml, at)
                end = rm.end() if rm.group(2) else self.xml.index("</row>", rm.end()) + len("</row>")
                self.rows[n] = (rm.start(), rm.end(), end, rm.group(1))
                return self.rows[n]
            self.index()
        return self.rows.get(n)

    def _tail_parsed(self, xml: str, m: re.Match) -> None:
        tail = xml[self.data_end:]
        self.merges = [tuple(r.split(":")) for r in re.findall(r'<mergeCell\b[^>]*ref="([A-Z0-9:$]+)"', tail)]
        self.col_styles: list[tuple[int, int, int]] = []
        cols = re.search(r"<cols\b.*?</cols>", xml[: m.start()], re.S)
        for col in re.findall(r"<col\b[^>]*>", cols.group(0) if cols else ""):
            a = _attrs(col)
            if "style" in a:
                self.col_styles.append((int(a["min"]), int(a["max"]), int(a["style"])))
        self.col_widths = []
        for col in re.findall(r"<col\b[^>]*>", cols.group(0) if cols else ""):
            a = _attrs(col)
            if "width" in a and "min" in a and "max" in a:
                self.col_widths.append((int(a["min"]), int(a["max"]), float(a["width"])))

    def cells(self, row: int) -> list[tuple[int, int, int, str, str | None]]:
        """(column, start, end, attrs, inner) of each cell of `row` (empty when absent)."""
        found = self.row(row)
        if found is None:
            return []
        _, start, end, _ = found
        out: list[tuple[int, int, int, str, str | None]] = []
        append, ref, columns, digits = out.append, _REF_ATTR.search, _COLUMNS, str(row)
        for cm in _CELL.finditer(self.xml, start, end):
            attrs, inner = cm.groups()
            r = ref(attrs)
            if r is None:
                raise Fallback("cell_without_r")
            letters, number = r.groups()
            if number != digits and int(number) != row:  # "05" is row 5, as int() reads it
                raise Fallback("cell_row_mismatch")
            c = columns.get(letters)
            append((c if c is not None else _column(letters), *cm.span(), attrs, inner))
        return out

    def first_filled(self, row: int) -> int:
        for c, _, _, _, inner in self.cells(row):
            if inner and ("<v>" in inner or "<v " in inner or "<is>" in inner) and "<v></v>" not in inner:
                return c
        m = re.search(r'<dimension\b[^>]*ref="\$?([A-Z]+)', self.xml[: self.data_open.start()])
        return column_index_from_string(m.group(1)) if m else 1

    def anchor(self, row: int, col: int) -> tuple[int, int]:
        """The cell a mark lands on: a merged range's top-left cell (as the faithful engine)."""
        for first, *last in self.merges:
            if not last:
                continue
            r1, c1 = _cell_ref(first)
            r2, c2 = _cell_ref(last[0])
            if r1 <= row <= r2 and c1 <= col <= c2:
                return r1, c1
        return row, col

    def base_style(self, row: int, col: int) -> int:
        found = self.row(row)
        if found is not None:
            a = _attrs(f"<row{found[3]}>")
            if a.get("customFormat") in ("1", "true") and "s" in a:
                return int(a["s"])
        for lo, hi, style in self.col_styles:
            if lo <= col <= hi:
                return style
        return 0

    def patched(self, marks: dict[tuple[int, int], str], styles: _Styles, legacy_rid: str | None,
                untab: bool) -> str:
        """The sheet XML with `marks` ((row, col) → severity) filled, <legacyDrawing> added and
        tabSelected dropped."""
        xml = self.xml
        edits: list[tuple[int, int, int, str]] = []  # (start, end, order, text)
        by_row: dict[int, dict[int, str]] = {}
        for (r, c), sev in marks.items():
            by_row.setdefault(r, {})[c] = sev
        for r, cols in by_row.items():
            found = self.row(r)
            if found is not None:
                start, content, end, _ = found
                closed = xml[start:content].endswith("/>")
                inner_end = content if closed else end - len("</row>")
                parts = []
                pos = content
                todo = dict(cols)
                for c, cs, ce, cattrs, _inner in self.cells(r):
                    for nc in sorted(k for k in todo if k < c):
                        parts.append(xml[pos:cs])
                        pos = cs
                        parts.append(self._new_cell(r, nc, todo.pop(nc), styles))
                    if c in todo:
                        parts.append(xml[pos:cs])
                        s = _S_ATTR.search(cattrs)
                        new_s = styles.marked(int(s.group(1)) if s else 0, todo.pop(c))
                        tag_end = cs + 2 + len(cattrs)  # "<c" + attrs
                        tag = _set_attr(xml[cs:tag_end] + ">", "s", str(new_s))[:-1]
                        parts.append(tag + xml[tag_end:ce])
                        pos = ce
                parts.append(xml[pos:inner_end])
                for nc in sorted(todo):
                    parts.append(self._new_cell(r, nc, todo[nc], styles))
                head = _set_attr(xml[start:content], "spans", None)
                if closed:  # <row r="5"/>: opened and closed around its new cells
                    head = head[:-2].rstrip() + ">"
                edits.append((start, end, 0, head + "".join(parts) + "</row>"))
            else:
                self.index()
                at = bisect.bisect_right(self.row_order, r)  # rows in order (index() checks)
                nxt = self.row_order[at] if at < len(self.row_order) else None
                at = self.rows[nxt][0] if nxt is not None else self.data_end
                cells = "".join(self._new_cell(r, c, cols[c], styles) for c in sorted(cols))
                edits.append((at, at, r, f'<row r="{r}">{cells}</row>'))
        out, pos = [], 0
        if edits and self.data_open.group(1):  # <sheetData/>: opened and closed around the new rows
            edits.append((self.data_open.start(), self.data_open.end(), -1, "<sheetData>"))
            edits.append((self.data_open.end(), self.data_open.end(), 1 << 30, "</sheetData>"))
        for start, end, _, text in sorted(edits):
            out.append(xml[pos:start])
            out.append(text)
            pos = end
        out.append(xml[pos:])
        xml = "".join(out)
        if untab or marks:
            head_end = xml.index("<sheetData")
            head = xml[:head_end]
            if untab:
                head = re.sub(r'(<sheetView\b[^>]*?)\s+tabSelected\s*=\s*"(?:1|true)"', r"\1", head)
            if marks:
                head = self._dimension(head, marks)
            xml = head + xml[head_end:]
        if legacy_rid is not None:
            xml = self._legacy(xml, legacy_rid)
        return xml

    def _new_cell(self, r: int, c: int, sev: str, styles: _Styles) -> str:
        return f'<c r="{get_column_letter(c)}{r}" s="{styles.marked(self.base_style(r, c), sev)}"/>'

    @staticmethod
    def _dimension(head: str, marks) -> str:
        m = re.search(r'<dimension\b[^>]*ref="([^"]*)"[^>]*>', head)
        if m is None:
            return head
        try:
            a, _, b = m.group(1).partition(":")
            r1, c1 = _cell_ref(a)
            r2, c2 = _cell_ref(b or a)
        except (Fallback, ValueError):
            return head
        rows = [r for r, _ in marks] + [r1, r2]
        cols = [c for _, c in marks] + [c1, c2]
        ref = f"{get_column_letter(min(cols))}{min(rows)}:{get_column_letter(max(cols))}{max(rows)}"
        return head[: m.start()] + _set_attr(m.group(0), "ref", ref) + head[m.end():]

    @staticmethod
    def _legacy(xml: str, rid: str) -> str:
        prefix = _rel_prefix(xml)
        attr = f'{prefix}:id="{rid}"' if prefix else f'xmlns:r="{REL_NS}" r:id="{rid}"'
        element = f"<legacyDrawing {attr}/>"
        at = _top_level_position(xml, _AFTER_LEGACY)
        return xml[:at] + element + xml[at:]


def _top_level_position(xml: str, before: tuple[str, ...]) -> int:
    """Where a new child of <worksheet> goes: before its first top-level child named in
    `before`, else before </worksheet> (children after sheetData scanned with depth)."""
    start = xml.index("</sheetData>") + len("</sheetData>") if "</sheetData>" in xml else \
        re.search(r"<sheetData\b[^>]*/>", xml).end()
    depth = 0
    for m in re.finditer(r"<(/?)([\w:.-]+)[^>]*?(/?)>", xml[start:]):
        close, name, empty = m.group(1), m.group(2), m.group(3)
        if name.startswith("!") or name.startswith("?"):
            continue
        if close:
            if depth == 0:  # </worksheet>
                return start + m.start()
            depth -= 1
            continue
        if depth == 0 and name in before:
            return start + m.start()
        if not empty:
            depth += 1
    raise Fallback("worksheet_end")


# --- the whole workbook -----------------------------------------------------------------------


def patch(data: bytes, frame: pd.DataFrame, about: dict) -> tuple[bytes, dict[object, str]]:
    """The patched workbook's bytes and issue index → marked cell. Raises Fallback."""
    z = _Zip(data)
    if "xl/workbook.xml" not in z.infos or "[Content_Types].xml" not in z.infos:
        raise Fallback("not_xlsx")
    if any(n.lower().endswith("vbaproject.bin") for n in z.order):
        raise Fallback("macros")
    root_rels = z.text("_rels/.rels") if "_rels/.rels" in z.infos else ""
    office = [r for r in _relationships(root_rels) if r.get("Type", "").endswith("/officeDocument")]
    if len(office) != 1 or _resolve("", office[0].get("Target", "")) != "xl/workbook.xml":
        raise Fallback("workbook_part")
    ctypes = z.text("[Content_Types].xml")
    if "macroEnabled" in ctypes or "template.main" in ctypes:
        raise Fallback("not_plain_xlsx")
    book = z.text("xl/workbook.xml")
    _root_ok(book, "workbook")
    rprefix = _rel_prefix(book)
    if rprefix is None:
        raise Fallback("workbook_rel_ns")
    wb_rels_name = "xl/_rels/workbook.xml.rels"
    wb_rels = z.text(wb_rels_name)
    by_id = {r.get("Id"): r for r in _relationships(wb_rels)}
    sheets_m = re.search(r"<sheets\b[^>]*>(.*?)</sheets>", book, re.S)
    if sheets_m is None:
        raise Fallback("no_sheets")
    sheets = []  # (name, part, sheetId)
    others: list[str] = []  # parts of chart and dialog sheets
    for tag in re.findall(r"<sheet\b[^>]*>", sheets_m.group(1)):
        a = _attrs(tag)
        rel = by_id.get(a.get(f"{rprefix}:id"))
        if rel is None or "name" not in a or "sheetId" not in a:
            raise Fallback("sheet_entry")
        part = _resolve("xl/workbook.xml", rel.get("Target", ""))
        is_sheet = rel.get("Type", "").endswith("/worksheet")
        sheets.append((a["name"], part if is_sheet else None, int(a["sheetId"])))
        if not is_sheet:
            others.append(part)
    if any(name.casefold() == TEXT["sheet"].casefold() for name, _, _ in sheets):
        raise Fallback("phanhoi_present")  # our earlier feedback resent, or a sheet of that name
    if any(part is not None and part not in z.infos for _, part, _ in sheets):
        raise Fallback("sheet_part_missing")  # e.g. a target spelled in another case than the member
    worksheets = {name: part for name, part, _ in sheets if part is not None}
    for other in others:  # a chart sheet left selected would open grouped with PhanHoi
        if other in z.infos and "tabSelected" in z.head(other):
            raise Fallback("chartsheet_selected")
    loaded: dict[str, _Sheet] = {}

    def sheet(name: str) -> _Sheet:
        if name not in loaded:
            loaded[name] = _Sheet(name, worksheets[name], z.text(worksheets[name]))
        return loaded[name]

    # the targets, as the other engines find them (charts and dialog sheets are not marked)
    targets = _targets(frame, _sheet_lookup(list(worksheets)), lambda name, row: sheet(name).first_filled(row))
    marks: dict[str, dict[tuple[int, int], list[tuple]]] = {}
    for (name, row, col), found in targets.items():
        if not 1 <= col <= 16384:
            raise Fallback("column_beyond_xfd")
        at = sheet(name).anchor(row, col)
        here = marks.setdefault(name, {})
        here[at] = sorted(here.get(at, []) + found, key=lambda f: f[0])
    marked: dict[object, str] = {}
    for name, cells in marks.items():
        for (row, col), found in cells.items():
            for f in found:
                marked[f[5]] = f"{quote_sheetname(name)}!{get_column_letter(col)}{row}"
    existing: dict[str, tuple[str, str, dict]] = {}  # sheet → (comments part, vml part, cell → comment)
    for name in marks:
        s = sheet(name)
        rels_name = _rels_path(s.part)
        srels = _relationships(z.text(rels_name)) if rels_name in z.infos else []
        comments = [r for r in srels if r.get("Type", "").endswith("/comments")]
        if any("threadedComment" in r.get("Type", "") for r in srels):
            raise Fallback("threaded_comments")  # Excel 365's threaded comments are tied to the legacy ones
        legacy = re.search(r"<legacyDrawing\b[^>]*>", s.xml)
        if not comments and not legacy:
            continue
        if len(comments) != 1 or legacy is None:  # a legacy drawing of form controls, or broken
            raise Fallback("sheet_legacy_drawing_without_comments")
        vml_rel = [r for r in srels if r.get("Id") == _attrs(legacy.group(0)).get(f"{_rel_prefix(s.xml)}:id")]
        if len(vml_rel) != 1:
            raise Fallback("sheet_legacy_drawing_target")
        c_part = _resolve(s.part, comments[0].get("Target", ""))
        v_part = _resolve(s.part, vml_rel[0].get("Target", ""))
        if c_part not in z.infos or v_part not in z.infos:
            raise Fallback("sheet_comment_parts")
        existing[name] = (c_part, v_part, _school_comments(z.text(c_part)))

    # PhanHoi and the comments, rendered by xlsxwriter in a scratch workbook
    content = _phanhoi(frame, sheet_order=[TEXT["sheet"]] + [n for n, _, _ in sheets], marked=marked, **about)
    scratch = _scratch(content, [(sheet(name), cells, existing.get(name, (None, None, {}))[2])
                                 for name, cells in marks.items()])

    def sz_read(name: str) -> str:
        if name not in scratch:
            raise Fallback("scratch_part")
        return scratch[name]

    taken: set[str] = set()
    replaced: dict[str, bytes] = {}
    added: list[tuple[str, bytes]] = []
    overrides: list[tuple[str, str]] = []

    styles_rel = [r for r in by_id.values() if r.get("Type", "").endswith("/styles")]
    if len(styles_rel) != 1:
        raise Fallback("styles_part")
    styles_name = _resolve("xl/workbook.xml", styles_rel[0]["Target"])
    styles = _Styles(z.text(styles_name))
    xf_map = styles.merge_xlsxwriter(sz_read("xl/styles.xml"))

    # PhanHoi's sheet: its cell formats renumbered
    ph = sz_read("xl/worksheets/sheet1.xml")
    ph = re.sub(r'(<(?:c|row|col)\b[^>]*?\s(?:s|style)=")(\d+)"', lambda m: f'{m.group(1)}{xf_map[int(m.group(2))]}"', ph)
    if 't="s"' in ph:  # the scratch book is written in memory, with shared strings: made inline
        shared = re.findall(r"<si>(.*?)</si>", sz_read("xl/sharedStrings.xml"), re.S)
        ph = re.sub(r'(<c\b[^>]*?)\st="s"([^>]*)><v>(\d+)</v></c>',
                    lambda m: f'{m.group(1)} t="inlineStr"{m.group(2)}><is>{shared[int(m.group(3))]}</is></c>', ph)
        if 't="s"' in ph:
            raise Fallback("scratch_shared_strings")
    ph_part = z.free("xl/worksheets/sheet{}.xml", taken)
    added.append((ph_part, ph.encode("utf-8")))
    overrides.append(("/" + ph_part, _CT_SHEET))

    # comments: scratch sheet k+2 holds the comments of the k-th marked sheet
    vml_offset = 0
    for n in z.order:
        if n.lower().endswith(".vml"):
            ids = re.findall(r'data="([\d,\s]+)"', z.head(n, 4096))
            for group in ids:
                vml_offset = max([vml_offset, *(int(x) for x in group.split(",") if x.strip())])
    for k, name in enumerate(marks):
        s = sheet(name)
        srels = sz_read(f"xl/worksheets/_rels/sheet{k + 2}.xml.rels")
        got = {r["Type"].rsplit("/", 1)[-1]: _resolve(f"xl/worksheets/sheet{k + 2}.xml", r["Target"])
               for r in _relationships(srels)}
        comments = sz_read(got["comments"]).encode("utf-8")
        vml = sz_read(got["vmlDrawing"])
        if name in existing:  # the sheet's own comments: ours merged into its parts
            c_part, v_part, theirs = existing[name]
            replaced[c_part], replaced[v_part] = _merge_comments(
                z.text(c_part), z.zf.read(v_part).decode("latin-1"), comments.decode("utf-8"), vml,
                [at for at in marks[name] if at in theirs], vml_offset + len(marks) + 1 + k)
            continue
        if vml_offset:
            vml = re.sub(r'data="(\d+)"', lambda m: f'data="{int(m.group(1)) + vml_offset}"', vml)
            vml = re.sub(r"_x0000_s(\d+)", lambda m: f"_x0000_s{int(m.group(1)) + 1024 * vml_offset}", vml)
        c_part = z.free("xl/comments{}.xml", taken)
        v_part = z.free("xl/drawings/vmlDrawing{}.vml", taken)
        added += [(c_part, comments), (v_part, vml.encode("utf-8"))]
        overrides.append(("/" + c_part, _CT_COMMENTS))
        rels_name = _rels_path(s.part)
        existing = z.text(rels_name) if rels_name in z.infos else \
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' \
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"></Relationships>'
        ids = {r.get("Id") for r in _relationships(existing)}
        vid, cid = _free_id(ids, "rIdEdu"), None
        ids.add(vid)
        cid = _free_id(ids, "rIdEdu")
        base = posixpath.dirname(s.part)
        new_rels = (f'<Relationship Id="{vid}" Type="{_REL_TYPE}vmlDrawing" Target="{posixpath.relpath(v_part, base)}"/>'
                    f'<Relationship Id="{cid}" Type="{_REL_TYPE}comments" Target="{posixpath.relpath(c_part, base)}"/>')
        at = existing.rindex("</Relationships>")
        rels_xml = (existing[:at] + new_rels + existing[at:]).encode("utf-8")
        if rels_name in z.infos:
            replaced[rels_name] = rels_xml
        else:
            added.append((rels_name, rels_xml))
        s.legacy_rid = vid

    # every school sheet: marked, and no longer selected (PhanHoi is the one selected)
    for name, part in worksheets.items():
        untab = bool(re.search(r'<sheetView\b[^>]*tabSelected\s*=\s*"(?:1|true)"', z.head(part)))
        if name not in marks and not untab:
            continue
        s = sheet(name)
        cells = {at: found[0][1] for at, found in marks.get(name, {}).items()}
        replaced[part] = s.patched(cells, styles, s.legacy_rid, untab).encode("utf-8")
    replaced[styles_name] = styles.render().encode("utf-8")

    # workbook.xml: PhanHoi first and active, defined names re-pointed, its own print titles
    wb_ids = set(by_id)
    ph_rid = _free_id(wb_ids, "rIdEdu")
    sheet_id = max(sid for _, _, sid in sheets) + 1 if sheets else 1
    entry = f'<sheet name="{TEXT["sheet"]}" sheetId="{sheet_id}" {rprefix}:id="{ph_rid}"/>'
    book = book[: sheets_m.start(1)] + entry + book[sheets_m.start(1):]
    book = re.sub(r"<workbookView\b[^>]*>", lambda m: _set_attr(_set_attr(m.group(0), "activeTab", None), "firstSheet", None), book)
    book = re.sub(r'(<definedName\b[^>]*?\slocalSheetId\s*=\s*")(\d+)"', lambda m: f'{m.group(1)}{int(m.group(2)) + 1}"', book)
    scratch_book = sz_read("xl/workbook.xml")
    ours = "".join(re.findall(r'<definedName\b[^>]*localSheetId="0"[^>]*>.*?</definedName>', scratch_book, re.S))
    if ours:
        if re.search(r"<definedNames\s*/>", book):
            book = re.sub(r"<definedNames\s*/>", f"<definedNames>{ours}</definedNames>", book, count=1)
        elif "<definedNames" in book:
            m = re.search(r"<definedNames\b[^>]*>", book)
            book = book[: m.end()] + ours + book[m.end():]
        else:
            after = max(book.find("</sheets>") + len("</sheets>"),
                        book.find("</externalReferences>") + len("</externalReferences>"))
            if "<functionGroups" in book[after - 200 if after > 200 else 0: after + 200] and "</externalReferences>" not in book:
                raise Fallback("function_groups")
            book = book[:after] + f"<definedNames>{ours}</definedNames>" + book[after:]
    replaced["xl/workbook.xml"] = book.encode("utf-8")
    at = wb_rels.rindex("</Relationships>")
    target = posixpath.relpath(ph_part, "xl")
    replaced[wb_rels_name] = (wb_rels[:at] + f'<Relationship Id="{ph_rid}" Type="{_REL_TYPE}worksheet" '
                              f'Target="{target}"/>' + wb_rels[at:]).encode("utf-8")

    # content types
    new_ct = "".join(f'<Override PartName="{p}" ContentType="{t}"/>' for p, t in overrides)
    if marks and not re.search(r'<Default\b[^>]*Extension="vml"', ctypes, re.I):
        new_ct = f'<Default Extension="vml" ContentType="{_CT_VML}"/>' + new_ct
    at = ctypes.rindex("</Types>")
    replaced["[Content_Types].xml"] = (ctypes[:at] + new_ct + ctypes[at:]).encode("utf-8")
    return z.build(replaced, added), marked


_COMMENT = re.compile(r"<comment\b([^>]*)>(.*?)</comment>", re.S)
_SHAPE = re.compile(r"<v:shape\b[^>]*>.*?</v:shape>", re.S)  # xlsxwriter's
_ANY_SHAPE = re.compile(r"<((?:[\w.-]+:)?)shape\b[^>]*>.*?</\1shape>", re.S)  # any VML's, any prefix


def _authors(xml: str) -> list[str]:
    m = re.search(r"<authors\b[^>]*>(.*?)</authors>", xml, re.S)
    return [unescape(a or "") for a in re.findall(r"<author(?:\s*/>|>(.*?)</author>)", m.group(1) if m else "", re.S)]


def _school_comments(xml: str) -> dict[tuple[int, int], tuple[str, str]]:
    """cell → (author, text) of a comments part."""
    _root_ok(xml, "comments")
    authors = _authors(xml)
    out = {}
    for attrs, body in _COMMENT.findall(xml):
        a = _attrs(attrs)
        i = int(a.get("authorId", "0"))
        text = "".join(unescape(t) for t in re.findall(r"<t\b[^>]*>(.*?)</t>", body, re.S))
        # ST_Xstring escapes (_x000D_ is Excel's carriage return), then one kind of line break
        text = re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), text)
        text = _clean(text.replace("\r\n", "\n").replace("\r", "\n")) or ""
        out[_cell_ref(a.get("ref", ""))] = (authors[i] if 0 <= i < len(authors) else "", text)
    return out


def _merge_comments(theirs: str, their_vml: str, ours: str, our_vml: str,
                    replaced_cells: list[tuple[int, int]], spare_block: int) -> tuple[bytes, bytes]:
    """The sheet's comments part and VML drawing with ours added; the school's comment of a
    cell we mark is dropped (its text is inside ours, as the faithful engine does)."""
    gone = set(replaced_cells)

    def keep(m: re.Match) -> str:
        return "" if _cell_ref(_attrs(m.group(1)).get("ref", "")) in gone else m.group(0)

    theirs = _COMMENT.sub(keep, theirs)
    authors = _authors(theirs)
    if COMMENT_AUTHOR in authors:
        me = authors.index(COMMENT_AUTHOR)
    else:
        me = len(authors)
        if re.search(r"<authors\s*/>", theirs):
            theirs = re.sub(r"<authors\s*/>", f"<authors><author>{COMMENT_AUTHOR}</author></authors>", theirs, count=1)
        else:
            at = theirs.index("</authors>")
            theirs = theirs[:at] + f"<author>{COMMENT_AUTHOR}</author>" + theirs[at:]
    mine = "".join(re.sub(r'authorId="\d+"', f'authorId="{me}"', m.group(0)) for m in _COMMENT.finditer(ours))
    if re.search(r"<commentList\s*/>", theirs):
        theirs = re.sub(r"<commentList\s*/>", f"<commentList>{mine}</commentList>", theirs, count=1)
    else:
        at = theirs.index("</commentList>")
        theirs = theirs[:at] + mine + theirs[at:]

    def shape_cell(shape: str) -> tuple[int, int] | None:
        r = re.search(r"<(?:[\w.-]+:)?Row>\s*(\d+)\s*</", shape)
        c = re.search(r"<(?:[\w.-]+:)?Column>\s*(\d+)\s*</", shape)
        return (int(r.group(1)) + 1, int(c.group(1)) + 1) if r and c else None

    if 'id="_x0000_t202"' not in their_vml or "</xml>" not in their_vml:
        raise Fallback("vml_layout")
    their_vml = _ANY_SHAPE.sub(lambda m: "" if shape_cell(m.group(0)) in gone and "ObjectType=\"Note\"" in m.group(0)
                           else m.group(0), their_vml)
    blocks = [int(x) for g in re.findall(r'data="([\d,\s]+)"', their_vml) for x in g.split(",") if x.strip()]
    used = [int(x) for x in re.findall(r"_x0000_s(\d+)", their_vml)]
    if not blocks:  # LibreOffice writes no idmap (and ids "shape_0"): ids from a block of our own
        blocks = [spare_block]
    next_id = max([min(blocks) * 1024, *used]) + 1
    shapes = []
    for shape in _SHAPE.findall(our_vml):
        if next_id // 1024 not in blocks:
            raise Fallback("vml_ids_full")
        shapes.append(re.sub(r'id="_x0000_s\d+"', f'id="_x0000_s{next_id}"', shape, count=1))
        next_id += 1
    at = their_vml.rindex("</xml>")
    their_vml = their_vml[:at] + _vml_prefixes("".join(shapes), their_vml) + their_vml[at:]
    return theirs.encode("utf-8"), their_vml.encode("latin-1")


_VML_NS = {"v": "urn:schemas-microsoft-com:vml", "o": "urn:schemas-microsoft-com:office:office",
           "x": "urn:schemas-microsoft-com:office:excel"}


def _vml_prefixes(shapes: str, vml: str) -> str:
    """xlsxwriter's shapes (prefixes v:, o:, x:) in the prefixes `vml` binds to the same
    namespaces (openpyxl writes ns0:, ns1:, …); a namespace it does not bind is declared on
    each shape."""
    root = re.search(r"<xml\b[^>]*>", vml)
    declared = dict((uri, p) for p, uri in re.findall(r'xmlns:([\w.-]+)\s*=\s*"([^"]*)"', root.group(0) if root else ""))
    rename = {ours: declared.get(uri) for ours, uri in _VML_NS.items()}
    missing = " ".join(f'xmlns:{ours}="{uri}"' for ours, uri in _VML_NS.items() if rename[ours] is None)

    def fix(m: re.Match) -> str:
        p = m.group(2)
        return m.group(1) + (rename[p] or p) + ":"

    shapes = re.sub(r"(</?|\s)(v|o|x):(?=[A-Za-z])", fix, shapes)
    if missing:
        shapes = re.sub(r"<([\w.-]+:shape)\b", lambda m: f"<{m.group(1)} {missing}", shapes)
    return shapes


def _free_id(ids: set[str], stem: str) -> str:
    n = 1
    while f"{stem}{n}" in ids:
        n += 1
    ids.add(f"{stem}{n}")
    return f"{stem}{n}"


class _Parts(Packager):
    """xlsxwriter's packager writing only the parts the patch takes from the scratch workbook,
    kept as text by part name: no zip to deflate and inflate again, no theme, properties or
    content types (issue 12). The parts are written by xlsxwriter's own code, in its order, so
    their XML is the XML the zipped scratch workbook held."""

    def __init__(self, into: dict[str, str]):
        super().__init__()
        self._into = into

    def _write_worksheet_files(self):
        """PhanHoi's sheet (sheet1) only: the comment sheets (sheet2, …) give the patch their
        comments, VML drawings and rels (made by `_prepare_vml` and the rels writer, not by a
        sheet's XML), never their own XML; writing it was ~2 % of a marked copy (issue 12)."""
        first = next(ws for ws in self.workbook.worksheets() if not ws.is_chartsheet)
        first._set_xml_writer(self._filename("xl/worksheets/sheet1.xml"))
        first._assemble_xml_file()

    def _create_package(self):
        self._write_worksheet_files()
        self._write_workbook_file()
        self._write_vml_files()
        self._write_comment_files()
        self._write_shared_strings_file()
        self._write_styles_file()
        self._write_worksheet_rels_files()
        for fh, name, is_binary in self.filenames:
            if is_binary:  # never for these parts
                raise Fallback("scratch_binary_part")
            self._into[name] = fh.getvalue()
        self.filenames = []
        return []  # nothing for the workbook to zip


class _ScratchBook(xlsxwriter.Workbook):
    def __init__(self, into: dict[str, str]):
        from edustat.feedback_xlsx import _XLSX_OPTIONS

        super().__init__(io.BytesIO(), {**_XLSX_OPTIONS, "constant_memory": False, "in_memory": True})
        self._into = into

    def _get_packager(self):
        return _Parts(self._into)


def _scratch(content, marked_sheets: list[tuple[_Sheet, dict, dict]]) -> dict[str, str]:
    """xlsxwriter: PhanHoi (sheet1) and, per marked school sheet, a sheet holding only its
    comments (sheet k + 2), with the school's column widths so comment boxes sit near.
    Returns the parts the patch uses (sheets, their rels, comments, VML, styles, shared
    strings, workbook.xml) by part name, as text."""
    from edustat.feedback_xlsx import _render_xlsx

    parts: dict[str, str] = {}
    # in memory: xlsxwriter's temporary files (one per part, created and removed) cost more
    # than the whole patch; its shared strings are made inline above
    wb = _ScratchBook(parts)
    try:
        ws = wb.add_worksheet(TEXT["sheet"])
        _render_xlsx(wb, ws, content)
        ws.activate()
        for k, (s, cells, theirs) in enumerate(marked_sheets):
            cw = wb.add_worksheet(f"c{k}")
            for lo, hi, width in s.col_widths:
                if 1 <= lo <= hi <= 16384:
                    cw.set_column(lo - 1, hi - 1, max(0.0, width - 0.71))
            last = None
            for (row, col), found in sorted(cells.items()):
                if row != last:  # constant_memory: a comment on a row without data needs the row known
                    cw.set_row(row - 1, None)
                    last = row
                text = _comment_text([f[:5] for f in found], theirs.get((row, col)))
                cw.write_comment(row - 1, col - 1, text,
                                 {"author": COMMENT_AUTHOR, "width": COMMENT_WIDTH, "height": _comment_height(text)})
    finally:
        wb.close()
    return parts
