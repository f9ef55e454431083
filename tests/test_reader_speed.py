"""The read stage's vectorised paths (issue 12) against the per-cell Python they replaced: the
same blank rows, invisible characters, row limits, header matches and content hashes. The
whole-city identity proof is scripts/compare_ingest.py (main's code vs this one, every frame
and message); these tests pin each shortcut's reasoning on the inputs that could break it."""
import zipfile

import numpy as np
import openpyxl
import pandas as pd
import pyarrow as pa
import pytest

from edustat import reader
from edustat.framehash import row_hashes
from edustat.reader import Limits, UnreadableWorkbook, read_workbook
from schemas import load_contract
from schemas.folding import INVISIBLE
from schemas.vocabulary import TIER_LABEL, Entry, Matcher, sheet_matcher

TRICKY = [None, "", " ", "\u00a0", "\u3000", "\x1c\x1d", "\t\n", "\u2028", "\u200b", "\ufeff", "a", " a ",
          "\u00a0x", "Tổng cộng", "\u0301", "0", "\x85", "\u180e", "x\u200by", "\u00ad", "\u205f\u202f"]


def test_whitespace_class_is_what_str_strip_removes():
    assert set(reader.PY_WHITESPACE) == {chr(i) for i in range(0x110000) if chr(i).isspace()}


def test_filled_cells_are_those_python_strips_to_something():
    arrays = [pa.array(TRICKY, pa.string()), pa.array(list(reversed(TRICKY)), pa.large_string())]
    got = reader._matches(arrays, reader._NOT_SPACE)
    want = np.array([[v is not None and str(v).strip() != "" for v in TRICKY],
                     [v is not None and str(v).strip() != "" for v in reversed(TRICKY)]])
    assert (got == want).all()


def test_filled_by_left_trim_is_the_regex_test_and_python_strip():
    # every whitespace character alone, before, after and around a letter, and a combining mark
    cells = TRICKY + [w for c in reader.PY_WHITESPACE for w in (c, c + "a", "a" + c, c + "\u0301" + c)]
    arrays = [pa.array(cells, pa.string()), pa.array(list(reversed(cells)), pa.large_string())]
    got = reader._filled(arrays)
    want = np.array([[v is not None and str(v).strip() != "" for v in cells],
                     [v is not None and str(v).strip() != "" for v in reversed(cells)]])
    assert (got == want).all()
    assert (got == reader._matches(arrays, reader._NOT_SPACE)).all()
    assert reader._filled([]).shape == (0, 0) and reader._filled([pa.array([], pa.string())]).shape == (1, 0)


def test_invisible_characters_are_removed_as_python_removes_them():
    grid = reader.Grid([pa.array(TRICKY), pa.array(["ok"] * len(TRICKY))], len(TRICKY))
    cleaned = reader._strip_invisible(grid)
    assert grid.cols[0].to_pylist() == [None if v is None else INVISIBLE.sub("", v) for v in TRICKY]
    assert cleaned == {0: {i for i, v in enumerate(TRICKY) if v is not None and INVISIBLE.search(v)}}
    assert grid.cols[1].to_pylist() == ["ok"] * len(TRICKY)


def test_row_hashes_equal_pandas_hash_of_the_text_frame():
    frame = pd.DataFrame({
        "excel_row": np.array([3, 4, 5, 6, 7], dtype="int64"),
        "a": pd.array(["x", None, "", "Nguyễn", "\x00"], dtype="string"),
        "b": pd.array([None, None, None, None, None], dtype="string"),
        "c": pd.array(["1", "2", "3", None, "x"], dtype="str"),
        "d": [1.5, np.nan, 2.0, 3.0, -0.0],
        "e": pd.array([1, None, 3, 4, 5], dtype="Int64"),
    })
    want = pd.util.hash_pandas_object(frame.astype("string").fillna("\x00"), index=False).to_numpy()
    assert (row_hashes(frame) == want).all()
    assert (row_hashes(frame[["b"]]) == pd.util.hash_pandas_object(frame[["b"]].astype("string").fillna("\x00"),
                                                                    index=False).to_numpy()).all()


def test_int64_columns_are_hashed_as_their_python_text():
    # framehash._text writes a numpy int64 column with Arrow's cast: the text Python's str gives
    values = np.array([0, 1, -1, 7, 10, -10, 99999, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, -(2**63)],
                      dtype="int64")
    from edustat.framehash import _text

    assert _text(values).to_pylist() == [str(int(v)) for v in values]
    frame = pd.DataFrame({"excel_row": values, "a": pd.array(["x"] * len(values), dtype="string")})
    want = pd.util.hash_pandas_object(frame.astype("string").fillna("\x00"), index=False).to_numpy()
    assert (row_hashes(frame) == want).all()


def _sheet_xml(rows: list[str]) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/'
            'spreadsheetml/2006/main"><sheetData>' + "".join(rows) + "</sheetData></worksheet>").encode()


def _with_sheet(tmp_path, name: str, xml: bytes):
    src = tmp_path / "src.xlsx"
    wb = openpyxl.Workbook()
    wb.active.append(["x"])
    wb.save(src)
    dest = tmp_path / name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info, xml if info.filename == "xl/worksheets/sheet1.xml" else zin.read(info))
    return dest


def _reason(path, limits):
    try:
        with zipfile.ZipFile(path) as z:
            reader._check_zip(z, limits)
        return None
    except UnreadableWorkbook as exc:
        return exc.reason, exc.detail


@pytest.mark.parametrize("chunk", [1 << 20, 7, 5, 3])
def test_row_limit_counts_rows_with_values_exactly(tmp_path, chunk, monkeypatch):
    monkeypatch.setattr(reader, "_CHUNK", chunk)
    value = '<row r="{r}"><c r="A{r}" t="inlineStr"><is><t>row</t></is></c></row>'
    empty = '<row r="{r}"/>'
    # 6 rows with a value among 40 row tags (and "row" as cell text too)
    rows = [(value if r % 6 == 0 else empty).format(r=r) for r in range(1, 41)]
    path = _with_sheet(tmp_path, "rows.xlsx", _sheet_xml(rows))
    assert _reason(path, Limits(max_sheet_rows=6)) is None  # 40 tags > 6: counted exactly, passes
    got = _reason(path, Limits(max_sheet_rows=5))
    with zipfile.ZipFile(path) as z:  # the exact count (the check before issue 12) says the same
        with pytest.raises(UnreadableWorkbook) as exact:
            reader._count_rows(z, z.getinfo("xl/worksheets/sheet1.xml"), Limits(max_sheet_rows=5))
    assert got == ("too_many_rows", exact.value.detail)
    # a namespace prefix on the tags is still a row
    prefixed = _with_sheet(tmp_path, "ns.xlsx", _sheet_xml([value.format(r=r).replace("<row", "<x:row")
                                                             .replace("</row", "</x:row") for r in range(1, 9)]))
    assert _reason(prefixed, Limits(max_sheet_rows=8)) is None
    assert _reason(prefixed, Limits(max_sheet_rows=7))[0] == "too_many_rows"


def test_numeric_texts_never_name_a_field_as_the_vocabulary_says():
    texts = ["1", "01", "2022-2023", "05/09/2014", "1.", "1. 2", " 12 ", "74214000123", "0", "-", "/", ".", " ",
             "3 - 4", "2014-01-02"]
    for sheet in load_contract().sheets:
        m = sheet_matcher(sheet)
        assert reader._numeric_never_exact(m), sheet.id  # the shortcut is in use for every sheet
        for t in texts:
            assert reader._names_field(m, t) == (m.read(t, near=False).how == "exact"), (sheet.id, t)
    # a vocabulary with a numeric spelling: no shortcut, the look-up finds it
    m = Matcher([Entry("Mã trường", "school_code", "test", TIER_LABEL), Entry("2022", "year", "test", TIER_LABEL)],
                {}, headers=True)
    assert not reader._numeric_never_exact(m)
    assert reader._names_field(m, "2022") and m.read("2022", near=False).how == "exact"


def test_table_rows_blank_numbering_total_and_offset_columns(tmp_path):
    path = tmp_path / "t.xlsx"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "HocSinh"
    rows = [
        [None, None, "DANH SÁCH HỌC SINH"],
        [],
        [None, None, "STT", "Mã học sinh", "Họ và tên", "Ngày sinh", "Ghi chú", "Ghi chú"],
        [None, None, "(1)", "(2)", "(3)", "(4)", "(5)", "(6)"],
        [None, None, "1", "7401234567", "Nguyễn\u200b Văn An", "05/09/2014", None, "x"],
        [None, None, "\u00a0", " ", None, "\u3000", None, None],  # whitespace only: dropped
        [None, None, None, None, None, None, None, "only in a duplicate column"],  # dropped with it
        [None, None, "2", "7401234568", "Phạm Thị Bình", "2014-01-02", "\u00a0y", None],
        [None, None, "Tổng cộng", None, None, None, None, None],
    ]
    for r in rows:
        ws.append(r)
    wb.save(path)
    data = read_workbook(path).sheets["learners"]
    assert data.header_row == 3
    assert data.skipped_rows == {4: "numbering", 9: "total"}
    assert data.columns["full_name"] == "E" and data.extra_columns == {"STT": "C", "Ghi chú": "H"}
    assert data.frame["excel_row"].tolist() == [5, 8] and str(data.frame["excel_row"].dtype) == "int64"
    assert data.frame["full_name"].tolist() == ["Nguyễn Văn An", "Phạm Thị Bình"]
    assert data.frame["extra:Ghi chú"].tolist() == [pd.NA, "\u00a0y"]
    assert data.invisible == {"full_name": 1}
    assert all(isinstance(t, pd.StringDtype) and t.na_value is pd.NA for t in data.frame.dtypes.iloc[1:])


def test_reader_frames_travel_back_packed_and_come_back_the_same(tmp_path):
    """edustat.framewire: the frame the reader builds crosses from a reader process as one Arrow
    IPC message and comes back equal (values, dtypes, Arrow types, index, column index); any
    other frame is left to pickle as it was."""
    import pickle

    from edustat import framewire

    test_table_rows_blank_numbering_total_and_offset_columns(tmp_path)
    frame = read_workbook(tmp_path / "t.xlsx").sheets["learners"].frame
    packed = framewire.pack(frame)
    assert isinstance(packed, framewire.Packed)
    back = framewire.unpack(pickle.loads(pickle.dumps(packed)))
    pd.testing.assert_frame_equal(back, frame, check_exact=True, check_column_type=True, check_index_type=True)
    assert repr(back.index) == repr(frame.index) and back.columns.dtype == frame.columns.dtype
    assert [str(a._pa_array.type) for a in framewire.column_arrays(back)[1:]] == ["large_string"] * (frame.shape[1] - 1)
    assert framewire.column_arrays(back)[0].flags.writeable == framewire.column_arrays(frame)[0].flags.writeable
    empty = framewire.unpack(framewire.pack(frame.iloc[:0].reset_index(drop=True)))
    pd.testing.assert_frame_equal(empty, frame.iloc[:0].reset_index(drop=True), check_exact=True, check_column_type=True)
    others = [pd.DataFrame({"excel_row": []}), frame.iloc[1:], frame.assign(full_name=frame["full_name"].astype(object)),
              frame.assign(full_name=frame["full_name"].astype("str")), frame[["full_name", "excel_row"]],
              frame.astype({"excel_row": "int32"}), frame.rename(columns={"full_name": 7})]
    for other in others:
        assert framewire.pack(other) is other
    fr = type("FR", (), {})()
    fr.raw = {"learners": frame, "staff": others[0]}
    framewire.pack_result(fr)
    assert isinstance(fr.raw["learners"], framewire.Packed) and fr.raw["staff"] is others[0]
    framewire.unpack_result(fr)
    pd.testing.assert_frame_equal(fr.raw["learners"], frame, check_exact=True)


def test_the_identity_proof_sees_a_difference():
    """scripts/compare_ingest.py's comparison: a changed cell, dtype, row number or message is
    reported (its zero differences on the city mean something)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("compare_ingest",
                                                  Path(__file__).resolve().parents[1] / "scripts" / "compare_ingest.py")
    cmp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cmp)
    base = pd.DataFrame({"excel_row": np.array([5, 6], dtype="int64"), "a": pd.array(["x", None], dtype="string")})
    same = {"raw": cmp._frame(base.copy()), "issues": [{"message": "Ô trống", "excel_row": 5}]}
    for changed in (base.assign(a=pd.array(["y", None], dtype="string")), base.assign(a=base["a"].astype(object)),
                    base.assign(excel_row=np.array([5, 7], dtype="int64")), base.astype({"a": "str"})):
        out = []
        cmp._diff(same, {"raw": cmp._frame(changed), "issues": same["issues"]}, "f", out)
        assert out, changed.dtypes
    out = []
    cmp._diff(same, {"raw": cmp._frame(base.copy()), "issues": [{"message": "Ô trống ", "excel_row": 5}]}, "f", out)
    assert out == ["f.issues[0].message: 'Ô trống' != 'Ô trống '"]
    out = []
    cmp._diff(same, {"raw": cmp._frame(base.copy()), "issues": same["issues"]}, "f", out)
    assert out == []


def test_rule_catalogue_is_built_once_per_severities_and_equals_load_rules():
    from edustat import pipeline
    from schemas.rules import load_rules

    plain, again = pipeline._rules_once({}), pipeline._rules_once(None)
    office = pipeline._rules_once({"student_age_for_grade": "notice"})
    assert plain is again and plain is not office  # built once; other severities: their own
    assert plain.rules == load_rules().rules and plain.areas == load_rules().areas
    assert office.rules == load_rules({"student_age_for_grade": "notice"}).rules
    assert office["student_age_for_grade"].severity == "notice" != plain["student_age_for_grade"].severity


def _nfc_series_by_regex(values: pd.Series) -> pd.Series:
    """transforms.text.nfc_series as it was: the space-folding regex on every column."""
    import pyarrow.compute as pc
    from transforms.text import arrow_strings

    arr = pc.utf8_normalize(arrow_strings(values), "NFC")
    arr = pc.replace_substring_regex(arr, r"[\s\x{00A0}\x{2007}\x{202F}\x{3000}]+", " ")
    arr = pc.utf8_trim_whitespace(arr)
    arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
    return pd.Series(arr.to_pandas(types_mapper=lambda t: pd.StringDtype() if t == pa.string() else None).array,
                     index=values.index, dtype="string")


@pytest.mark.parametrize("char", sorted(set(reader.PY_WHITESPACE) | {"\u2007", "\u200b", "\x0b"}))
def test_nfc_series_skips_the_space_regex_only_when_it_changes_nothing(char):
    from transforms.text import nfc_series

    plain = ["Nguyễn Văn", "1", None, "a b", " lead", "trail "]
    for cells in (plain + [f"a{char}b", f"{char}x", f"x{char}{char}y"], plain + ["a  b"], plain,
                  [None, None], [f"a{char} b"], [f"a{char}"]):
        s = pd.Series(cells, dtype="string", index=range(10, 10 + len(cells)))
        for part in (s, s.iloc[2:], s.iloc[:-1]):  # slices: buffers holding more than the cells
            got = nfc_series(part)
            pd.testing.assert_series_equal(got, _nfc_series_by_regex(part))


def test_numeric_text_is_to_numeric_of_the_column():
    import random

    from transforms.cast import numeric_text

    pool = ["1", "2", "0", "12", "1.0", "1.5", "-3", "x", "", "1e3", " 7 ", "12345678901234567890",
            "99999999999999999999", "-1", "3.7", "nan", "inf", "0x1F", "\u0663"]
    rng = random.Random(7)
    for _ in range(400):
        some = rng.sample(pool, rng.randint(1, 6))
        cells = [rng.choice(some + [None]) for _ in range(rng.randint(1, 40))]
        s = pd.Series(cells, dtype="string", index=range(3, 3 + len(cells)))
        pd.testing.assert_series_equal(numeric_text(s), pd.to_numeric(s, errors="coerce"))
    s = pd.Series(["7", "7", None, "8"] * 10, dtype="string")  # the distinct-spellings path
    assert numeric_text(s).tolist() == pd.to_numeric(s, errors="coerce").tolist()


def test_positions_of_distinct_spellings_are_pandas_get_indexer():
    import random

    from transforms.cast import _positions

    pool = ["1", "01", "0", "có", "Có", "có", "x", " ", "", " ", "Nữ", "1.0", "nan", "NaN", "None"]
    rng = random.Random(11)
    for storage in ("pyarrow", "python"):
        for _ in range(300):
            some = rng.sample(pool, rng.randint(1, 7))
            s = pd.Series([rng.choice(some + [None]) for _ in range(rng.randint(1, 60))], dtype=pd.StringDtype(storage))
            spellings = s.dropna().unique()
            want = pd.Index(spellings, dtype=s.dtype).get_indexer(s)
            got = _positions(s, spellings)
            assert got.dtype == want.dtype and (got == want).all(), (storage, s.tolist())


def _header_by_every_row(grid, keys):
    """reader._find_header as it was: every row of the scan scored."""
    best, best_row = 0, -1
    for i, row in enumerate(grid.rows(0, reader.HEADER_SCAN_ROWS)):
        score = reader._header_score(row, keys)
        if score > best:
            best, best_row = score, i
    return best_row, best


def test_header_scan_skipping_rows_that_cannot_win_finds_the_same_row():
    import random

    contract = load_contract()
    learners = next(s for s in contract.sheets if s.id == "learners")
    keys = sheet_matcher(learners)
    words = [e.spelling for e in keys.entries][:40]
    filler = ["Nguyễn Văn An", "Nữ", "Kinh", "1A", "05/09/2014", "7401234567", "1", None, "", "x", "Ghi chú"]
    rng = random.Random(3)
    for _ in range(300):
        width = rng.randint(1, 12)
        rows = [[rng.choice(words if rng.random() < rng.random() else filler) for _ in range(width)]
                for _ in range(rng.randint(1, reader.HEADER_SCAN_ROWS + 3))]
        grid = reader.Grid([pa.array([r[j] for r in rows], pa.large_string()) for j in range(width)], len(rows))
        assert reader._find_header(grid, keys) == _header_by_every_row(grid, keys), rows
    # a vocabulary with a numeric spelling: numeric cells count
    m = Matcher([Entry("Mã trường", "school_code", "test", TIER_LABEL), Entry("2022", "year", "test", TIER_LABEL)],
                {}, headers=True)
    grid = reader.Grid([pa.array(["Mã trường", "x"]), pa.array(["x", "2022"]), pa.array([None, "2022"])], 2)
    assert reader._find_header(grid, m) == (1, 2) == _header_by_every_row(grid, m)


def test_id_cleaning_class_is_python_whitespace_and_dash_run_in_arrow():
    from transforms import cast

    assert set(cast._PY_SPACES) == {chr(i) for i in range(0x110000) if chr(i).isspace()}
    cells = [None, "", "74-01 23", "\u2013x", "a\u200bb", "\u0301", "x\\y", "[a]", "^$"] + \
        [f"1{c}2{c}" for c in cast._PY_SPACES + "-\u2010\u2011\u180e\ufeff\u00ad"]
    s = pd.Series(cells, dtype="string", index=range(5, 5 + len(cells)))
    got = s.str.replace(cast._SPACE_OR_DASH, "", regex=True)
    pd.testing.assert_series_equal(got, s.str.replace(r"[\s\-]", "", regex=True))
    assert isinstance(got.array, pd.arrays.ArrowStringArray)


def test_readers_inherit_the_matchers_built_before_the_fork(tmp_path, monkeypatch):
    """ingest_all builds the rule catalogue and the matchers a reader needs before its reader
    processes fork (each built them itself on its first file, ~0.4 CPU s): in a fresh process,
    after `_reader_caches`, reading a school builds no header matcher and no code list but the
    per-district lists of its own units."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from edustat import pipeline
    from edustat.config import Config
    from edustat.synth import generate_city

    year, period = "2022-2023", "dau_nam"
    generate_city(tmp_path / "in", schools=2, seed=5, school_year=year, period=period)
    files = sorted((tmp_path / "in").glob("*.xlsx"))
    root = Path(__file__).resolve().parents[1]
    prog = f"""
import json, sys
sys.path.insert(0, {str(root)!r})
from pathlib import Path
from edustat import pipeline
import schemas.vocabulary as V
from schemas import load_codelist
pipeline._reader_caches(None)
built, entries = [], V.codelist_entries
V.codelist_entries = lambda ref, codes, labels: built.append([ref, len(codes)]) or entries(ref, codes, labels)
sheets = V._sheet_matcher.cache_info().misses
fr = pipeline._ingest_one((Path({str(files[0])!r}), Path({str(tmp_path / 'raw')!r}), {year!r}, {period!r}, None, None, None))
print(json.dumps({{"read": bool(fr.school_code) and not fr.unreadable, "sheets": V._sheet_matcher.cache_info().misses - sheets,
                  "lists": [[ref, n, len(load_codelist(ref).codes)] for ref, n in built]}}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", prog], check=True, capture_output=True, text=True,
                                    cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert out["read"] and out["sheets"] == 0
    assert all(n < whole for _, n, whole in out["lists"]), out["lists"]  # only sublists: a district's units
    calls = []
    real = pipeline._reader_caches
    monkeypatch.setattr(pipeline, "_reader_caches", lambda severity: calls.append(severity) or real(severity))
    results = pipeline.ingest_all(files, Config(data_dir=tmp_path / "data", workers=2), year, period)
    assert len(calls) == 1 and all(fr.school_code and not fr.unreadable for fr in results)


def test_a_column_with_no_value_casts_as_every_blank_cast_alone():
    from transforms.cast import _cast_blank, _cast_field

    contract = load_contract()
    for sheet in contract.sheets:
        for f in sheet.fields:
            for dtype in ("string", object):
                raw = pd.Series([None] * 9, dtype=dtype, index=range(40, 49))
                rows = pd.Series(range(7, 16), index=raw.index)
                want, want_probs = _cast_field(f, raw, rows)
                got, got_probs = _cast_blank(f, raw, rows)
                pd.testing.assert_series_equal(got, want, check_exact=True)
                assert got_probs == want_probs == []
    f = next(f for f in contract.sheet("learners").fields if f.type == "flag")  # a value: the full cast
    raw = pd.Series([None, "1", None], dtype="string")
    got, _ = _cast_blank(f, raw, pd.Series([3, 4, 5]))
    assert got.tolist() == [pd.NA, 1, pd.NA]
