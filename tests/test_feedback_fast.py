"""The feedback step's fast paths (issue 12) give what the slower code they replace gave:
- the patch engine's scratch parts, taken from xlsxwriter's packager as text, are the members
  of the same scratch workbook written as a zip by xlsxwriter;
- summarise, the detail order, the issues normalised and the cells targeted, in plain Python,
  equal the pandas versions they replace (kept here as the reference), on issues with what
  breaks sorting and grouping: no sheet, no row, NaN, ties, blank and repeated values, and
  text that needs cleaning.
Small data, no pipeline run."""
from __future__ import annotations

import io
import zipfile
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import xlsxwriter

from edustat import feedback as fb
from edustat import feedback_patch as fp

WHEN = datetime(2022, 10, 3, 14, 30)


def _issues() -> pd.DataFrame:
    rows = []
    for i in range(40):
        rows.append(dict(
            sheet=[None, "HocSinh", "Lop", "HOCSINH", "hoc sinh"][i % 5],
            excel_row=[None, 7, np.nan, 3, 7.0, 12][i % 6],
            column=[None, "b", "C", "zz9", " d "][i % 5],
            field=None, header=["Họ và tên", None][i % 2],
            rule_id=f"r{(i * 7) % 6}",
            severity=["error", "warning", "notice"][(i * 5) % 3],
            value=[None, "", " ", "x\x01y", "Hòa", "Hòa", "=1+1"][i % 7],  # decomposed ò, a control character
            message=["", None, f"Thông báo {i % 4}"][i % 3],
            fix=[None, "Sửa"][i % 2]))
    df = pd.DataFrame(rows, columns=list(fb.ISSUE_COLUMNS))
    return df.set_axis(range(100, 140))  # not a RangeIndex from 0: the index is dropped


def _clean_ref(value: object) -> str | None:  # as it was, without the memo
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return fb.ILLEGAL_CHARACTERS_RE.sub("", fb.unicodedata.normalize("NFC", str(value)))[:fb._MAX_CELL]


def _normalise_ref(issues: pd.DataFrame) -> pd.DataFrame:
    df = issues.reindex(columns=list(fb.ISSUE_COLUMNS)).astype(object).reset_index(drop=True)
    as_object = lambda values: pd.Series(values, index=df.index, dtype=object)  # noqa: E731
    for col in fb.ISSUE_COLUMNS:
        if col != "excel_row":
            df[col] = as_object([_clean_ref(v) for v in df[col]])
    df["excel_row"] = as_object([fb._as_row(v) for v in df["excel_row"]])
    df["column"] = as_object([fb._as_column(v) for v in df["column"]])  # idempotent on clean text
    df["rank"] = df["severity"].map(fb.SEVERITY_RANK).astype(int)
    return df


def _summarise_ref(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["severity", "rule_id", "message", "fix", "count", "sheet", "first_row", "last_row", "examples"]
    rows = []
    ordered = df.sort_values(["excel_row"], na_position="first", kind="stable")
    for (rank, rule, sheet), g in ordered.groupby(["rank", "rule_id", "sheet"], dropna=False, sort=False):
        excel_rows = g["excel_row"].dropna()
        values = list(dict.fromkeys(v for v in g["value"] if v is not None and v.strip()))
        rows.append({"rank": rank, "severity": g["severity"].iat[0], "rule_id": rule,
                     "message": next((v for v in g["message"] if v), None), "fix": next((v for v in g["fix"] if v), None),
                     "count": len(g), "sheet": None if pd.isna(sheet) else sheet,
                     "first_row": int(excel_rows.min()) if len(excel_rows) else None,
                     "last_row": int(excel_rows.max()) if len(excel_rows) else None, "examples": values[:fb.EXAMPLES]})
    out = pd.DataFrame(rows, dtype=object)
    out["_sheet"] = out["sheet"].fillna("")
    out = out.sort_values(["rank", "count", "rule_id", "_sheet"], ascending=[True, False, True, True], kind="stable")
    return out[cols].reset_index(drop=True)


def _detail_ref(df: pd.DataFrame, sheet_order: list[str]) -> pd.DataFrame:
    order = {name: i for i, name in enumerate(sheet_order)}
    key = pd.DataFrame({
        "rank": df["rank"],
        "sheet": [-1 if s is None else order.get(s, len(order)) for s in df["sheet"]],
        "row": df["excel_row"].fillna(0).astype(int),
        "col": [0 if c is None else fb.column_index_from_string(c) for c in df["column"]],
    })
    return df.loc[key.sort_values(["rank", "sheet", "row", "col"], kind="stable").index]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return fb._normalise(_issues())


def test_normalise_as_before(frame):
    pd.testing.assert_frame_equal(frame, _normalise_ref(_issues()))
    assert frame["value"].tolist()[3] == "xy" and "Hòa" in frame["value"].tolist()  # cleaned, NFC
    empty = fb._normalise(_issues().iloc[0:0])
    pd.testing.assert_frame_equal(empty, _normalise_ref(_issues().iloc[0:0]))


def test_summarise_and_detail_as_before(frame):
    got = fb.summarise(frame)
    assert len(got) > 10 and got["count"].nunique() > 1  # groups, ties and no-sheet rows are exercised
    pd.testing.assert_frame_equal(got, _summarise_ref(frame))
    for order in (["PhanHoi", "Lop", "HocSinh"], []):
        pd.testing.assert_frame_equal(fb._detail(frame, order), _detail_ref(frame, order))


def test_targets_as_before(frame):
    lookup = fb._sheet_lookup(["HocSinh", "Lop"])
    got = fb._targets(frame, lookup, lambda name, row: 2)
    ref: dict = {}
    cols = ["sheet", "excel_row", "column", "rank", "severity", "rule_id", "message", "fix"]
    for i, sheet, row, col, *found in frame[cols].itertuples(name=None):
        title = None if sheet is None or row is None else (lookup.get(sheet) or lookup.get(fb._fold(sheet)))
        if title is not None:
            c = 2 if col is None else fb.column_index_from_string(col)
            ref.setdefault((title, row, c), []).append((*found, i))
    for found in ref.values():
        found.sort(key=lambda f: f[0])
    assert got == ref and len(got) > 3


def test_scratch_parts_are_the_zipped_workbooks_members(monkeypatch, frame):
    """The parts the patch uses, as xlsxwriter's own zipped workbook holds them."""
    content = fb._phanhoi(frame, school={"school_code": "74000123", "school_name": "Trường TH"}, status="rejected",
                          counts={"learners": 3}, school_year="2022-2023", period="dau_nam", generated_at=WHEN,
                          sheet_order=["PhanHoi", "HocSinh"], marked={})
    xml = ('<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><cols>'
           '<col min="1" max="3" width="20"/></cols><sheetData/></worksheet>')
    sheet = fp._Sheet("HocSinh", "xl/worksheets/sheet1.xml", xml)
    found = [(0, "error", "r1", "Sai", "Sửa", 1)]
    cells = {(3, 2): found, (9, 40): found, (9, 41): [(1, "warning", "r2", "Xem", None, 2)]}
    marked = [(sheet, cells, {(3, 2): ("Cô Lan", "Ghi chú của trường")})]
    parts = fp._scratch(content, marked)

    zipped = io.BytesIO()

    class Zipped(xlsxwriter.Workbook):  # the scratch workbook as it was: xlsxwriter's whole zip
        def __init__(self, into):
            from edustat.feedback_xlsx import _XLSX_OPTIONS

            super().__init__(zipped, {**_XLSX_OPTIONS, "constant_memory": False, "in_memory": True})

    monkeypatch.setattr(fp, "_ScratchBook", Zipped)
    fp._scratch(content, marked)
    with zipfile.ZipFile(io.BytesIO(zipped.getvalue())) as z:
        for name in ("xl/worksheets/sheet1.xml", "xl/styles.xml", "xl/workbook.xml", "xl/sharedStrings.xml",
                     "xl/worksheets/_rels/sheet2.xml.rels", "xl/comments1.xml", "xl/drawings/vmlDrawing1.vml"):
            assert name in parts, name
            assert parts[name] == z.read(name).decode("utf-8"), name
    assert "Ghi chú của trường" in parts["xl/comments1.xml"]
