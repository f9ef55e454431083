"""The forms we render reproduce the ministry's real exports: every row code and label of the
two real forms is in our definition, in the same sheet and order (whitespace normalised),
with the same header texts and merged ranges; reconstructed forms say so."""
import re

import openpyxl
import pytest

from edustat.reports import data_rows, list_forms, load_form

REAL = {"01-MN-DN": "bieu-01-mn-dn_2020_export.xlsx", "02-TH-DN": "bieu-02-th-dn_2020_export.xlsx"}


def _norm(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return re.sub(r"\s+", " ", str(v)).strip()


def _export_rows(ws):
    """(label, code) of every row of a real sheet that carries a Mã số, in order."""
    out = []
    for r in ws.iter_rows(values_only=True):
        code = _norm(r[3]) if len(r) > 3 else ""
        if code.isdigit():
            out.append((_norm(r[0]), _norm(r[1]), int(code)))
    return out


@pytest.mark.parametrize("form_code", sorted(REAL))
def test_every_real_row_is_ours_in_the_same_sheet_and_order(form_code, moet_dir):
    form = load_form(form_code)
    wb = openpyxl.load_workbook(moet_dir / REAL[form_code])
    real_sheets = [ws for ws in wb.worksheets if ws.title != "Errors"]
    assert [s["name"] for s in form["sheets"]] == [ws.title for ws in real_sheets]
    for sheet, ws in zip(form["sheets"], real_sheets):
        if "static" in sheet:
            continue
        ours = [(_norm(r.get("tt")), _norm(r["label"]), r["code"]) for r in sheet["rows"] if "code" in r]
        assert ours == _export_rows(ws), sheet["name"]


@pytest.mark.parametrize("form_code", sorted(REAL))
def test_headers_and_merges_match_the_real_export(form_code, moet_dir):
    form = load_form(form_code)
    wb = openpyxl.load_workbook(moet_dir / REAL[form_code])
    for sheet in form["sheets"]:
        if "static" in sheet:
            continue
        ws = wb[sheet["name"]]
        top = len(sheet["title_block"]["rows"]) if "title_block" in sheet else 0
        for i, row in enumerate(sheet["header"]["rows"], start=top + 1):
            got = [_norm(ws.cell(i, c + 1).value) for c in range(len(row))]
            assert got == [_norm(v) for v in row], (sheet["name"], i)
        real_merges = {str(m) for m in ws.merged_cells.ranges if top < m.min_row and m.max_row <= top + len(sheet["header"]["rows"]) + 1}
        assert set(sheet["header"]["merges"]) == real_merges, sheet["name"]


def test_row_codes_are_complete_and_unique():
    expected = {"01-MN-DN": range(1, 213), "02-TH-DN": range(1, 133)}
    for code, rng in expected.items():
        codes = [row["code"] for _, row in data_rows(load_form(code))]
        assert codes == list(rng), code


def test_every_form_declares_its_source():
    for code in list_forms():
        src = load_form(code)["source"]
        assert src["kind"] in ("real_export", "reconstruction"), code
        if src["kind"] == "reconstruction":
            assert "no original" in src["note"].lower() or "không có bản gốc" in src["note"].lower(), code
        assert code in {"01-MN-DN", "02-TH-DN"} or src["kind"] == "reconstruction", code


def test_column_keys_use_the_contract_vocabulary():
    groups = {"tong_so", "cong_lap", "tu_thuc", "dan_lap"}
    measures = {"tong", "nu", "dtts", "dtts_nu", "vien_chuc_khong_xac_dinh", "vien_chuc_xac_dinh",
                "hop_dong_lao_dong", "kien_co", "ban_kien_co", "tam"}
    for code in list_forms():
        for sheet in load_form(code)["sheets"]:
            for key in sheet.get("columns", []):
                g, m = key.split(".", 1)
                assert g in groups and m in measures, (code, sheet["name"], key)
