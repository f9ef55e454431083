"""Render a form's workbooks from one prerendered layout (issue 12, Speed: the FORMS step).

Every workbook of a form (the city's and each school's) has the same layout: the same sheets,
labels, merges, row heights, formats and print set-up. What differs is the header (unit,
recipient, school year, scope label), the values, and the KiemTra sheet. So the sheets before
KiemTra are rendered once per form definition by the very code that renders them
(reports._render_static / reports._render_sheet), with placeholder header strings and a
distinct placeholder number in every value cell, and each workbook's sheet XML is that XML
with its own numbers put in the value cells and its own header strings in the page footer.

A template depends on the form's definition and this code only (the school year is a
placeholder like the other header strings), so it is kept from one build to the next under
the exact content of the definition it was made from (`_definition_key`: a definition edited
in between, or one holding anything but plain values, is made again), and the warm server
makes the built-in forms' templates once (edustat.warmup), so a served run inherits them.

Why the parts are the same bytes as reports.render_form writes (tests/test_formfast.py and
scripts/compare_forms.py check it):
- the sheet XML of those sheets depends on the header only through shared-string indices and
  the footer; on the values only through each value cell's <v> (written as xlsxwriter writes a
  number: f"{n:.16G}");
- shared strings get their index at write time, in write order: the template logs every call,
  and a workbook replays the same calls with the real header strings in the same order; every
  returned index must equal the template's (a school named like a label of the form would
  reuse that label's index: then the workbook is rendered the ordinary way);
- formats get their xf index when the sheet XML is assembled, in first-use order: the first
  prerendered sheet gives the formats their indices in the template's order (and checks them),
  so KiemTra, rendered the ordinary way afterwards, sees the state it would have seen;
- the workbook-level parts (workbook.xml, app.xml: print titles and areas) read a few
  attributes of each sheet: they are copied from the template's sheets.
Anything the template cannot reproduce (an empty or very long header string, a value that is
not a finite number, a footer over Excel's 255 characters) falls back to reports.render_form,
which also raises what it would have raised.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import zipfile
from fractions import Fraction
from math import isinf, isnan
from pathlib import Path

import xlsxwriter
from xlsxwriter.packager import Packager
from xlsxwriter.sharedstrings import SharedStrings
from xlsxwriter.worksheet import Worksheet

MARK = "\ue000"  # a private-use character: starts each placeholder header string
TOKENS = {"unit": MARK + "\ue001", "recipient": MARK + "\ue002", "scope_label": MARK + "\ue003",
          "school_year": MARK + "\ue004"}
VALUE_BASE = 7_000_000_000_000_000  # placeholder values BASE + k: 16 digits, exact as floats, never a real cell
_VALUE_RE = re.compile(r"<v>(7\d{15})</v>")
_SHEET_ATTRS = ("repeat_row_range", "repeat_col_range", "print_area_range", "autofilter_area", "hidden")
WB_OPTIONS = {"strings_to_numbers": False, "strings_to_formulas": False, "strings_to_urls": False, "in_memory": True}

# The template replays xlsxwriter's internals (the shared-string table, _assemble_xml_file, the
# xf indices); tests/test_formfast.py proves the bytes equal the ordinary render for this version
# (the pin in pyproject.toml). Any other version renders every workbook the ordinary way.
PROVEN_XLSXWRITER = "3.3.1"


def proven() -> bool:
    """Whether the installed xlsxwriter is the one templates are proven against."""
    return xlsxwriter.__version__ == PROVEN_XLSXWRITER


_templates: dict[str, tuple[bytes, object]] = {}  # form code -> (its definition's key, template or None)
_keys: dict[int, tuple[object, bytes | None]] = {}  # one build's definitions: id -> (the dict, its key)
_once: dict[str, tuple[None, object]] = {}  # one build's templates of definitions that have no key
stats = {"fast": 0, "fallback": 0, "templates": 0}  # for tests and benchmarks


class _Fallback(Exception):
    """This workbook cannot be made from the template: render it the ordinary way."""


class _Probe(dict):
    """The values of a template render: a distinct placeholder for every value cell asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list = []

    def get(self, key, default=None):  # noqa: D102 — reports._render_sheet reads values with .get only
        self.asked.append(key)
        return float(VALUE_BASE + len(self.asked))


class _Template:
    def __init__(self, names, pieces, keys, footers, attrs, log, xf_order, xf_index):
        self.names = names  # sheet names (KiemTra excluded)
        self.pieces = pieces  # per sheet: XML split around its value cells' numbers
        self.keys = keys  # per sheet: the (row code, column key) of each value cell, in XML order
        self.footers = footers  # per sheet: the footer string with placeholders
        self.attrs = attrs  # per sheet: the attributes the workbook-level parts read
        self.log = log  # every shared-string call: (string, index, has placeholder)
        self.xf_order = xf_order  # format names in first-use order
        self.xf_index = xf_index  # format name → xf index (or None) after the sheets


class _Prerendered(Worksheet):
    """A worksheet whose XML is given: the first one also gives the formats their xf indices
    in the template's order (xlsxwriter assigns them while it assembles the sheets' XML)."""

    xml_text = ""
    replay = None  # (formats dict, template) on the first prerendered sheet

    def _assemble_xml_file(self) -> None:
        if self.replay is not None:
            f, tpl = self.replay
            for name in tpl.xf_order:
                f[name]._get_xf_index()
            if any(f[name].xf_index != idx for name, idx in tpl.xf_index.items()):
                raise RuntimeError("formfast: format indices differ from the template's")
        self.fh.write(self.xml_text)
        self._xml_close()


# Each shared string's <si> element, as xlsxwriter's own SharedStrings._write_si writes it (a
# pure function of the string), made once per process: every workbook of a form holds the
# form's few hundred labels again (~15 % of a workbook's render went to escaping them).
_SI_XML: dict[str, str] = {}
_MEMO_MAX = 1 << 16  # a bound on each memo (a province's workbooks hold far fewer distinct keys)


class _MemoSharedStrings(SharedStrings):
    """sharedStrings.xml with each string's <si> element from _SI_XML (made by _write_si)."""

    def _write_sst_strings(self) -> None:
        memo = _SI_XML
        if len(memo) > _MEMO_MAX:
            memo.clear()
        out = []
        for string in self.string_table.string_array:
            xml = memo.get(string) if string.__class__ is str else None
            if xml is None:
                fh, self.fh = self.fh, io.StringIO()
                try:
                    self._write_si(string)
                    xml = self.fh.getvalue()
                finally:
                    self.fh = fh
                if string.__class__ is str:
                    memo[string] = xml
            out.append(xml)
        self.fh.write("".join(out))


class _Packager(Packager):
    def _write_shared_strings_file(self) -> None:  # Packager's, with _MemoSharedStrings
        sst = _MemoSharedStrings()
        sst.string_table = self.workbook.str_table
        if not self.workbook.str_table.count:
            return
        sst._set_xml_writer(self._filename("xl/sharedStrings.xml"))
        sst._assemble_xml_file()


class _Workbook(xlsxwriter.Workbook):
    """A workbook packaged by _Packager (xlsxwriter's hook for another packager)."""

    def _get_packager(self):
        return _Packager()


def reset() -> None:
    """Forget the templates (tests: to count the templates a build makes)."""
    _templates.clear()
    new_build()


def new_build() -> None:
    """A build starts: each form's definition is keyed again (it may have been redefined since
    the last build; a template is reused only for the same content)."""
    _keys.clear()
    _once.clear()


_PLAIN = (str, int, float, bool, type(None))


def _definition_key(form: dict) -> bytes | None:
    """The exact content of a form definition (types included: pickled), or None when it holds
    anything but dicts, lists, tuples and plain values (then its template lives for one build)."""
    def plain(x) -> bool:
        c = x.__class__
        if c is dict:
            return all(plain(k) and plain(v) for k, v in x.items())
        if c is list or c is tuple:
            return all(plain(v) for v in x)
        return c in _PLAIN

    return hashlib.sha256(pickle.dumps(form, protocol=4)).digest() if plain(form) else None


def _escape(text: str) -> str:  # xlsxwriter's _escape_data (element text), character by character
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _utf16_len(text: str) -> int:
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def _build_template(form: dict) -> _Template | None:
    import xlsxwriter

    from edustat import reports

    wb = xlsxwriter.Workbook(io.BytesIO(), WB_OPTIONS)
    log: list = []
    sst = wb.str_table
    index_of = sst._get_shared_string_index

    def logged(s):
        i = index_of(s)
        log.append((s, i, isinstance(s, str) and MARK in s))
        return i

    sst._get_shared_string_index = logged
    f = reports._formats(wb)
    header = reports.ReportHeader(**TOKENS)
    probe = _Probe()
    sheets = []
    for sheet in form["sheets"]:
        ws = wb.add_worksheet(sheet["name"])
        if "static" in sheet:
            reports._render_static(ws, sheet, f, form, header)
        else:
            reports._render_sheet(ws, sheet, f, probe, header, form)
        sheets.append(ws)
    buf = wb.filename
    wb.close()
    known = {id(x) for x in f.values()} | {id(wb.formats[0])}
    if any(x.xf_index is not None and id(x) not in known for x in wb.formats):
        return None  # a format made outside reports._formats: not replayable
    if any(s.count(MARK) != sum(s.count(t) for t in TOKENS.values()) for s, _, has in log if has):
        return None  # the form's own text holds the placeholder character
    with zipfile.ZipFile(buf) as z:
        xmls = [z.read(f"xl/worksheets/sheet{i + 1}.xml").decode("utf-8") for i in range(len(sheets))]
    pieces, keys, seen = [], [], set()
    for xml in xmls:
        parts, ks, at = [], [], 0
        for m in _VALUE_RE.finditer(xml):
            k = int(m.group(1)) - VALUE_BASE
            if not 1 <= k <= len(probe.asked) or k in seen:
                return None
            seen.add(k)
            parts.append(xml[at:m.start(1)])
            ks.append(probe.asked[k - 1])
            at = m.end(1)
        parts.append(xml[at:])
        pieces.append(parts)
        keys.append(ks)
    if len(seen) != len(probe.asked):
        return None
    footers = [ws.footer for ws in sheets]
    if any(MARK not in (ft or "") for ft in footers):
        return None  # every sheet's footer names the scope (else it was dropped: too long)
    for parts, ft in zip(pieces, footers):  # the placeholders are in the footer and nowhere else
        if sum(p.count(MARK) for p in parts) != _escape(ft).count(MARK):
            return None
    xf_index = {name: x.xf_index for name, x in f.items()}
    xf_order = sorted((n for n, i in xf_index.items() if i is not None), key=xf_index.__getitem__)
    return _Template([ws.name for ws in sheets], pieces, keys, footers,
                     [{a: getattr(ws, a) for a in _SHEET_ATTRS} for ws in sheets], log, xf_order, xf_index)


def template(code: str, form: dict) -> _Template | None:
    """The form's template: the one kept when it was made from this very definition."""
    seen = _keys.get(id(form))
    if seen is None or seen[0] is not form:
        seen = _keys[id(form)] = (form, _definition_key(form))
    key = seen[1]
    kept = _templates.get(code) if key is not None else _once.get(code)
    if kept is None or kept[0] != key:
        kept = (key, _build_template(form))
        stats["templates"] += 1
        (_templates if key is not None else _once)[code] = kept
    return kept[1]


def _number(v) -> str:
    """A value cell's text as reports._render_sheet → xlsxwriter write_number writes it."""
    n = 0 if v is None else v
    if isnan(n) or isinf(n):
        raise _Fallback
    if n.__class__ is Fraction:
        n = float(n)
    return f"{n:.16G}"


# A float's text (`_number`) once per process: every workbook of a form holds the same few
# hundred distinct numbers. Only non-zero floats are kept: equal floats have one text, except
# 0.0 and -0.0 ("0", "-0"), which compare equal; NaN and ±inf never reach the table (they
# raise _Fallback first); an int, a Fraction or any other type is formatted each time.
_NUMBER_TEXT: dict[float, str] = {}


def _numbers(keys: list, get) -> list[str]:
    """[_number(get(k)) for k in keys], each non-zero float's text formatted once."""
    memo = _NUMBER_TEXT
    if len(memo) > _MEMO_MAX:
        memo.clear()
    out = []
    for k in keys:
        v = get(k)
        if v.__class__ is float and v:
            t = memo.get(v)
            if t is None:
                t = memo[v] = _number(v)
        else:
            t = _number(v)
        out.append(t)
    return out


def _sheet_xml(tpl: _Template, i: int, values: dict, subst: dict[str, str]) -> str:
    parts = tpl.pieces[i]
    nums = _numbers(tpl.keys[i], values.get)
    out = [""] * (len(parts) + len(nums))
    out[0::2] = parts
    out[1::2] = nums
    xml = "".join(out)
    for token, text in subst.items():
        if token in xml:
            xml = xml.replace(token, _escape(text))
    return xml


def render(code: str, form: dict, values: dict, checks, scope: str, path: Path, header) -> Path:
    """reports.render_form(form, None, checks, scope, path, header, values=values), the same
    parts, from the form's template when it can be (else the ordinary way)."""
    from edustat import reports

    tpl = template(code, form) if proven() else None
    if tpl is not None:
        try:
            return _render(tpl, form, values, checks, scope, Path(path), header)
        except _Fallback:
            pass
    stats["fallback"] += 1
    return reports.render_form(form, None, checks, scope, path, header, values=values)


def _render(tpl: _Template, form: dict, values: dict, checks, scope: str, path: Path, header) -> Path:
    from edustat import reports

    real = {TOKENS[k]: getattr(header, k) for k in TOKENS}
    if any(not isinstance(t, str) or not t or MARK in t for t in real.values()):
        raise _Fallback
    xmls = []
    for i, ft in enumerate(tpl.footers):
        if ft is not None and MARK in ft:
            for token, text in real.items():
                ft = ft.replace(token, text)
            if _utf16_len(ft) > 255:  # xlsxwriter would drop the footer (with a warning)
                raise _Fallback
        xmls.append(_sheet_xml(tpl, i, values, real))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    wb = _Workbook(str(tmp), WB_OPTIONS)
    wb.set_properties({"title": f"{form['number']} {header.school_year} — {header.scope_label}", "author": "edustat"})
    f = reports._formats(wb)
    index_of = wb.str_table._get_shared_string_index
    for s, idx, has in tpl.log:  # the same shared-string calls, in the same order, as the ordinary render
        if has:
            for token, text in real.items():
                s = s.replace(token, text)
            if not s or len(s) > 16000:  # "" is written as a blank cell; a long one may be truncated
                raise _Fallback
        if index_of(s) != idx:
            raise _Fallback  # e.g. a school named like one of the form's labels
    for i, name in enumerate(tpl.names):
        ws = wb.add_worksheet(name, worksheet_class=_Prerendered)
        ws.xml_text = xmls[i]
        for a, v in tpl.attrs[i].items():
            setattr(ws, a, v)
        if i == 0:
            ws.replay = (f, tpl)
    if len(checks) and not (checks["scope"] == scope).all():
        checks = checks[checks["scope"] == scope]
    reports._render_checks(wb, f, checks, form, header)
    wb.close()
    os.replace(tmp, path)
    stats["fast"] += 1
    return path
