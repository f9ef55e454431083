"""Cast a sheet read as text into typed columns, explicitly, one field type at a time.

Grain: one row per submitted row → the same rows, typed, plus one problem row per cell that
could not be cast. Nothing is dropped: a value that fails to cast becomes NA in the typed
frame and a problem row keeps the value as submitted.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from schemas import Field, Sheet, load_codelist
from transforms.text import arrow_strings, nfc, nfc_series

PROBLEM_COLUMNS = ["excel_row", "field", "value", "kind", "row_index", "detail"]
LINEAGE = "excel_row"

_DMY = re.compile(r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4})$")
_YMD = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]00:00:00(?:\.0+)?)?$")
_SERIAL = re.compile(r"^\d{5}(?:\.0+)?$")  # 10000 = 1927-05-18; 4-digit numbers are years, not dates
_YEAR = re.compile(r"^(19|20)\d{2}$")
_SCHOOL_YEAR = re.compile(r"^(\d{4})\s*[-–/]\s*(\d{4})$")
_EXCEL_EPOCH = pd.Timestamp("1899-12-30")
# Python's `[\s\-]` (\s: every character str.isspace() is true of) spelled with literal
# characters, so that pandas runs it in Arrow instead of re.sub cell by cell (issue 12);
# tests/test_reader_speed.py checks the set against str.isspace and the result against `[\s\-]`
_PY_SPACES = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + \
    "\u2028\u2029\u202f\u205f\u3000"
_SPACE_OR_DASH = "[" + _PY_SPACES + "\\-]"


def _problems(rows: pd.Series, field_id: str, values: pd.Series, kind: str) -> pd.DataFrame:
    """`row_index`: the input frame's index of the row, to map a problem back to its file."""
    return pd.DataFrame(
        {"excel_row": rows.to_numpy(), "field": field_id, "value": values.astype("string").to_numpy(), "kind": kind,
         "row_index": rows.index.to_numpy(), "detail": None}
    )


def parse_dates(text: pd.Series, allow_year: bool = False) -> pd.Series:
    """dd/mm/yyyy, d/m/yyyy, yyyy-mm-dd (with a '00:00:00' tail as readers render real Excel
    dates), Excel serial numbers, and (when allowed) a bare year → datetime64; else NaT.
    Each distinct spelling is parsed once (birth dates repeat: a province's 400k learners
    have a few thousand)."""
    s = text.astype("string")
    spellings = s.dropna().unique()
    if len(spellings) * 2 > len(s):
        return _parse_dates(s, allow_year)
    parsed = _parse_dates(pd.Series(spellings, dtype="string"), allow_year)
    found = pd.Series(parsed.to_numpy(), index=pd.Index(spellings, dtype="string"))
    return pd.Series(found.reindex(s.to_numpy()).to_numpy(), index=s.index, dtype="datetime64[us]")


def _parse_dates(text: pd.Series, allow_year: bool) -> pd.Series:
    s = text.astype("string").str.strip()
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[us]")
    for pattern, (y, mo, d) in ((_DMY, (2, 1, 0)), (_YMD, (0, 1, 2))):  # group positions of year, month, day
        parts = s.str.extract(pattern)
        m = parts[0].notna()
        if m.any():
            out[m] = pd.to_datetime(
                dict(year=parts.loc[m, y].astype(int), month=parts.loc[m, mo].astype(int), day=parts.loc[m, d].astype(int)),
                errors="coerce",
            )
    m = s.str.fullmatch(_SERIAL).fillna(False).astype(bool) & out.isna()
    if m.any():
        days = s[m].astype(float)
        ok = days.between(10000, 80000)  # 1927 … 2119
        out[m & ok.reindex(s.index, fill_value=False)] = _EXCEL_EPOCH + pd.to_timedelta(days[ok], unit="D")
    if allow_year:
        m = s.str.fullmatch(_YEAR).fillna(False).astype(bool) & out.isna()
        if m.any():
            out[m] = pd.to_datetime(s[m] + "-01-01")
    return out


def _cast_field(f: Field, raw: pd.Series, rows: pd.Series) -> tuple[pd.Series, list[pd.DataFrame]]:
    probs: list[pd.DataFrame] = []
    text = nfc_series(raw)
    present = text.notna()
    if f.type in ("text",):
        return text, probs
    if f.type == "id":
        num_tail = text.str.fullmatch(r"\d+\.0+").fillna(False).astype(bool)
        t = text.where(~num_tail, text.str.replace(r"\.0+$", "", regex=True))
        cleaned = t.str.replace(_SPACE_OR_DASH, "", regex=True)
        width = _pattern_width(f.pattern)
        if width:
            # A number that lost its leading zeros in Excel (personal IDs of provinces 001–009
            # start "00"): re-pad, and tell the school.
            short = cleaned.str.fullmatch(r"\d{%d,%d}" % (width - 2, width - 1)).fillna(False).astype(bool)
            if f.id == "personal_id" and short.any():
                short &= cleaned.str.zfill(width).str[:3].isin(_PROVINCE_PREFIXES()).fillna(False).astype(bool)
            if short.any():
                probs.append(_problems(rows[short], f.id, text[short], "id_padded"))
                cleaned = cleaned.where(~short, cleaned.str.zfill(width))
        return cleaned, probs
    if f.type == "code":
        return _read_codes(f.id, f.codelist, text, rows, probs)
    if f.type in ("date", "year_or_date"):
        dates = parse_dates(text, allow_year=f.type == "year_or_date")
        bad = present & dates.isna()
        if bad.any():
            probs.append(_problems(rows[bad], f.id, text[bad], "date_invalid"))
        return dates, probs
    if f.type == "int":
        num = numeric_text(text.str.replace(",", ".", regex=False))
        ok = num.notna() & (num == np.floor(num)) & (num >= 0)
        bad = present & ~ok
        if bad.any():
            probs.append(_problems(rows[bad], f.id, text[bad], "int_invalid"))
        return num.where(ok).astype("Int64"), probs
    if f.type == "flag":
        flags = load_codelist("edustat/FLAG")
        uniques = text.dropna().unique()
        mapping = {u: flags.resolve(u) for u in uniques}
        codes = map_text(text, mapping)
        bad = present & codes.isna()
        if bad.any():
            probs.append(_problems(rows[bad], f.id, text[bad], "flag_invalid"))
        # the template says "1 = có, 0 hoặc để trống = không"; a blank stays NA here so a
        # required 0/1 column and later rules can tell "blank" from "0" (reports test `= 1`),
        # and an unreadable value stays NA so its text is what the format rule sees
        return numeric_text(codes).astype("Int8"), probs
    if f.type == "school_year":
        m = text.str.extract(_SCHOOL_YEAR)
        ok = m[0].notna() & (pd.to_numeric(m[1], errors="coerce") == pd.to_numeric(m[0], errors="coerce") + 1)
        bad = present & ~ok
        if bad.any():
            probs.append(_problems(rows[bad], f.id, text[bad], "school_year_invalid"))
        return (m[0] + "-" + m[1]).where(ok).astype("string"), probs
    raise ValueError(f"unknown field type {f.type}")


def numeric_text(text: pd.Series) -> pd.Series:
    """`pd.to_numeric(text, errors="coerce")` for a text column, each distinct spelling parsed
    once (counts and flags repeat: issue 12). The result's dtype is what pandas gives for the
    set of spellings, which the distinct ones are (tests/test_reader_speed.py checks it)."""
    spellings = text.dropna().unique()
    if not len(spellings) or len(spellings) * 2 > len(text) or not isinstance(text.dtype, pd.StringDtype):
        return pd.to_numeric(text, errors="coerce")
    parsed = pd.to_numeric(pd.Series(spellings, dtype=text.dtype), errors="coerce")
    return pd.Series(parsed.array.take(_positions(text, spellings), allow_fill=True), index=text.index)


def _positions(text: pd.Series, spellings) -> np.ndarray:
    """`pd.Index(spellings, dtype=text.dtype).get_indexer(text)` for a text column whose every
    value is one of `spellings` (its distinct values, NA left out): each cell's position in
    them, -1 for NA. For an Arrow-backed column Arrow finds them (`index_in`: the same exact
    match of each cell's UTF-8 bytes) instead of pandas' hash table of a Python string per cell
    (issue 12: ~4 ms per 55 k-row column, 20 of the city's int and 0/1 columns);
    tests/test_reader_speed.py checks both on blanks, Unicode and the column's own values."""
    if not (isinstance(text.dtype, pd.StringDtype) and text.dtype.storage == "pyarrow"):
        return pd.Index(spellings, dtype=text.dtype).get_indexer(text)
    keys = arrow_strings(pd.Series(spellings, dtype=text.dtype))
    at = pc.index_in(arrow_strings(text), value_set=keys)
    return pc.fill_null(at, -1).to_numpy(zero_copy_only=False).astype(np.intp, copy=False)


def _read_codes(field_id: str, cl, text: pd.Series, rows: pd.Series, probs: list) -> tuple[pd.Series, list]:
    """Codes of a coded column, each distinct spelling read once. Near misses and spellings
    that do not pin one code are accepted and reported (`code_near`, `code_said`, the reading
    in `detail`); a spelling that fits two codes is never guessed (`code_ambiguous`)."""
    present = text.notna()
    readings = {u: cl.read(u) for u in text.dropna().unique()}
    codes = map_text(text, {u: r.code for u, r in readings.items()})
    for how in ("near", "said", "ambiguous"):
        hit = {u for u, r in readings.items() if r.how == how}
        if not hit:
            continue
        m = present & text.isin(hit).fillna(False).astype(bool)
        p = _problems(rows[m], field_id, text[m], f"code_{how}")
        p["detail"] = [reading_detail(cl, readings[v]) for v in text[m]]
        probs.append(p)
    bad = present & codes.isna()
    if bad.any():
        probs.append(_problems(rows[bad], field_id, text[bad], "code_unknown"))
    return codes, probs


def map_text(text: pd.Series, mapping: dict) -> pd.Series:
    """`text.map(mapping, na_action="ignore").astype("string")` for a text column whose every
    value is a key of `mapping`, looked up in Arrow (pandas' map hashes ~400 k Python strings
    per coded column of a province: ~25 % of the cast). Values not in `mapping` become NA."""
    if not (isinstance(text.dtype, pd.StringDtype) and text.dtype.storage == "pyarrow"):
        return text.map(mapping, na_action="ignore").astype("string")
    arr = arrow_strings(text)
    keys = pa.array(list(mapping), type=arr.type)
    values = pa.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                       for v in mapping.values()], type=pa.large_string())
    out = pc.take(values, pc.index_in(arr, value_set=keys))
    return pd.Series(pd.arrays.ArrowStringArray(out), index=text.index, dtype="string")


def reading_detail(cl, r) -> str:
    """What a school reads about how its cell was read: the code and label, or the candidates."""
    if r.how == "ambiguous":
        return "; ".join(f"{c} = {cl.label(c)}" for c in r.candidates if c in cl.codes)
    label = cl.label(r.code) if r.code in cl.codes else r.spelling
    text = f"{label} (mã {r.code})" if label and label != r.code else str(r.code)
    return f"{text}; {r.note}" if r.note else text


@lru_cache(maxsize=1)
def _PROVINCE_PREFIXES() -> frozenset[str]:  # noqa: N802 - a constant, loaded once
    """'0' + a GSO province code: what the first 3 digits of a personal ID are (regulations.md
    §1.3). An ID re-padded to anything else did not lose a leading zero: it is too short, and
    that is the one thing the school is told (not three consequential digit errors)."""
    return frozenset("0" + c for c in load_codelist("moet-2020/DM_TINH").codes)


def _pattern_width(pattern: str | None) -> int | None:
    m = re.fullmatch(r"\^\\d\{(\d+)\}\$", pattern or "")
    return int(m.group(1)) if m else None


def cast_table(raw: pd.DataFrame, fields: Iterable[Field]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw text frame (field-id columns + `excel_row`) → (typed frame, problems).
    Columns absent from `raw` are absent from the result; other columns pass through."""
    fields = list(fields)
    return typed_table(raw, fields, cast_columns(raw, fields))


def cast_columns(raw: pd.DataFrame, fields: Iterable[Field]) -> dict[str, tuple[pd.Series, list[pd.DataFrame]]]:
    """Each field of `raw` cast alone: {field id: (typed column, its problem frames)}. A
    column's cast reads only that column and `excel_row`, so any subset of the fields can be
    cast apart (edustat.castsplit: in two processes) and put together by `typed_table`."""
    rows = raw[LINEAGE]
    return {f.id: _cast_blank(f, raw[f.id], rows) for f in fields if f.id in raw.columns}


def typed_table(raw: pd.DataFrame, fields: Iterable[Field],
                done: dict[str, tuple[pd.Series, list[pd.DataFrame]]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`cast_table`'s result from its columns cast (`cast_columns`, every field of `raw`):
    the typed frame and the problems, in the fields' order."""
    rows = raw[LINEAGE]
    out = {LINEAGE: rows}
    probs: list[pd.DataFrame] = []
    for f in fields:
        if f.id not in raw.columns:
            continue
        typed, p = done[f.id]
        out[f.id] = typed
        probs.extend(p)
    for col in raw.columns:
        if col not in out:
            out[col] = raw[col]
    typed = pd.DataFrame(out, index=raw.index)
    problems = pd.concat(probs, ignore_index=True) if probs else pd.DataFrame(columns=PROBLEM_COLUMNS)
    return typed, problems


def _cast_blank(f: Field, raw: pd.Series, rows: pd.Series) -> tuple[pd.Series, list[pd.DataFrame]]:
    """`_cast_field`, for a column with no value at all (a column no file of the collection
    filled: 12 of the learners' at the start of the year) as its first blank cell casts,
    repeated: a blank is cast without looking at any other cell (each type's cast is per cell;
    `parse_dates` and `numeric_text` take the same path for no spellings whatever the length)
    and gives no problem. Same dtype, same NA values (issue 12: `pd.to_numeric` of 55 k blanks
    took ~7 ms a column); tests/test_reader_speed.py checks every field of the contract."""
    if len(raw) < 2 or raw.notna().any():
        return _cast_field(f, raw, rows)
    one, probs = _cast_field(f, raw.iloc[:1], rows.iloc[:1])
    if probs:  # never for a blank; kept exact if a type ever reports one
        return _cast_field(f, raw, rows)
    return pd.Series(one.array.take(np.zeros(len(raw), dtype=np.intp)), index=raw.index, name=one.name), probs


def cast_key_values(values: dict[str, str | None], sheet: Sheet, rows: dict[str, int]) -> tuple[dict, pd.DataFrame]:
    """The key/value `Truong` sheet: {field id: text} → ({field id: typed value}, problems).
    Scalars need no frames: each value is cast directly, with the same rules as `cast_table`."""
    out, probs = {}, []
    for f in sheet.fields:
        if f.id not in values:
            continue
        text = values[f.id]
        text = None if text is None else (nfc(str(text)) or None)
        value, kind = _cast_scalar(f, text)
        out[f.id] = value
        if kind:
            detail = reading_detail(f.codelist, f.codelist.read(text)) if kind in ("code_near", "code_said", "code_ambiguous") else None
            probs.append({"excel_row": rows.get(f.id, 0), "field": f.id, "value": text, "kind": kind, "row_index": 0,
                          "detail": detail})
    return out, pd.DataFrame(probs, columns=PROBLEM_COLUMNS)


def _cast_scalar(f: Field, text: str | None) -> tuple[object, str | None]:
    if text is None:
        return None, None
    if f.type == "text":
        return text, None
    if f.type == "code":
        r = f.codelist.read(text)
        return r.code, ({"exact": None, "unknown": "code_unknown"}.get(r.how, f"code_{r.how}"))
    if f.type == "flag":
        code = load_codelist("edustat/FLAG").resolve(text)
        return (int(code) if code else None), (None if code else "flag_invalid")
    if f.type == "int":
        try:
            num = float(text.replace(",", "."))
        except ValueError:
            return None, "int_invalid"
        return (int(num), None) if num >= 0 and num.is_integer() else (None, "int_invalid")
    if f.type == "school_year":
        m = _SCHOOL_YEAR.fullmatch(text)
        ok = bool(m) and int(m.group(2)) == int(m.group(1)) + 1
        return (f"{m.group(1)}-{m.group(2)}" if ok else None), (None if ok else "school_year_invalid")
    if f.type in ("date", "year_or_date"):
        d = parse_dates(pd.Series([text], dtype="string"), allow_year=f.type == "year_or_date").iloc[0]
        return (None if pd.isna(d) else d.date()), ("date_invalid" if pd.isna(d) else None)
    if f.type == "id":
        cleaned = re.sub(r"[\s\-]", "", re.sub(r"\.0+$", "", text) if re.fullmatch(r"\d+\.0+", text) else text)
        width = _pattern_width(f.pattern)
        if width and re.fullmatch(r"\d{%d,%d}" % (width - 2, width - 1), cleaned) and (
                f.id != "personal_id" or cleaned.zfill(width)[:3] in _PROVINCE_PREFIXES()):
            return cleaned.zfill(width), "id_padded"
        return cleaned, None
    raise ValueError(f"unknown field type {f.type}")
