"""The blank template: opens, carries dropdowns backed by the hidden code-list sheet, headers
match the contract, ID/date cells are text, version stamp present, round-trips through the reader."""
import datetime as dt
import shutil
import subprocess

import openpyxl
import pandas as pd
import pytest

from edustat.reader import read_workbook
from edustat.workbook import CODELIST_SHEET, INSTRUCTIONS_SHEET, MINISTRY_EXPORT, ExportStyle, write_submission
from transforms.cast import cast_key_values, cast_table

CASES = [(("MN",), "dau_nam"), (("TH",), "dau_nam"), (("THCS",), "cuoi_nam"), (("TH", "THCS"), "cuoi_nam")]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: "+".join(c[0]) + "-" + c[1])
def template(request, tmp_path_factory):
    levels, period = request.param
    path = tmp_path_factory.mktemp("tpl") / "mau.xlsx"
    write_submission(path, levels=levels, period=period, school_year="2022-2023",
                     school={"school_code": "74718001", "province_code": "74", "district_code": "718"})
    return path, levels, period, openpyxl.load_workbook(path)


def test_sheets_and_hidden_code_lists(template, contract):
    path, levels, period, wb = template
    expected = [INSTRUCTIONS_SHEET, "Truong"] + (["PhongHoc"] if period == "dau_nam" else []) + ["Lop", "HocSinh", "CanBo", CODELIST_SHEET]
    assert wb.sheetnames == expected
    assert wb[CODELIST_SHEET].sheet_state == "hidden"
    assert all(wb[n].sheet_state == "visible" for n in expected[:-1])


def test_headers_match_the_contract(template, contract):
    path, levels, period, wb = template
    for sheet in contract.sheets:
        if sheet.layout != "table" or sheet.name not in wb.sheetnames:
            continue
        ws = wb[sheet.name]
        headers = [c.value for c in ws[1] if c.value is not None]
        assert headers == [f.header for f in sheet.fields_for(levels, period)], sheet.name
        assert ws.freeze_panes == "A2"


def test_dropdowns_reference_the_hidden_sheet_and_no_inline_list_is_long(template, contract):
    path, levels, period, wb = template
    ws = wb["HocSinh"]
    dvs = ws.data_validations.dataValidation
    assert dvs, "no dropdowns"
    for dv in dvs:
        assert dv.type == "list"
        assert dv.formula1.startswith(f"{CODELIST_SHEET}!$") or dv.formula1.startswith(f"={CODELIST_SHEET}!$"), dv.formula1
        assert len(dv.formula1) < 255
    sex_col = [f.id for f in contract.sheet("learners").fields_for(levels, period)].index("sex") + 1
    letter = openpyxl.utils.get_column_letter(sex_col)
    assert any(f"{letter}2" in str(dv.sqref) for dv in dvs)
    # the list the sex dropdown points at holds "01 - Nam", "02 - Nữ"
    dm = wb[CODELIST_SHEET]
    cols = {dm.cell(1, c).value: c for c in range(1, dm.max_column + 1)}
    c = cols["moet-2020/DM_GIOI_TINH"]
    assert [dm.cell(r, c).value for r in (2, 3)] == ["01 - Nam", "02 - Nữ"]


def test_id_and_date_columns_are_text_formatted(template, contract):
    path, levels, period, wb = template
    ws = wb["HocSinh"]
    fields = [f.id for f in contract.sheet("learners").fields_for(levels, period)]
    for fid in ("personal_id", "birth_date", "student_code"):
        idx = fields.index(fid) + 1
        # openpyxl groups adjacent columns of one style into a single dimension (min..max)
        dims = [d for d in ws.column_dimensions.values() if d.min and d.min <= idx <= d.max]
        assert dims and dims[0].number_format == "@", fid


def test_version_stamp(template, contract):
    path, levels, period, wb = template
    ws = wb["Truong"]
    rows = {r[0]: r[1] for r in ws.iter_rows(values_only=True) if r[0]}
    assert rows["Phiên bản mẫu"] == contract.version
    # a person reads labels, never our codes: "Đầu năm", not dau_nam; the reader resolves them
    assert rows["Năm học"] == "2022-2023" and rows["Kỳ báo cáo"] == {"dau_nam": "Đầu năm", "cuoi_nam": "Cuối năm"}[period]
    assert rows["Mã trường"] == "74718001"
    assert rows["Mã tỉnh"] == "74 - Tỉnh Bình Dương"
    parsed = read_workbook(path).school
    values, problems = cast_key_values(parsed.values, contract.sheet("school"), parsed.rows)
    assert values["period"] == period and values["province_code"] == "74" and problems.empty
    props = {p.name: p.value for p in wb.custom_doc_props.props}
    assert props["edustat_template_version"] == contract.version


def test_no_developer_notes_or_internal_codes_in_the_instructions(template, contract):
    path, levels, period, wb = template
    text = "\n".join(str(v) for ws in wb.worksheets if ws.title != CODELIST_SHEET
                     for row in ws.iter_rows(values_only=True) for v in row if isinstance(v, str))
    for leak in ("[INF", "observed", ".md", "dau_nam", "cuoi_nam", "dong_bang", "mien_nui", "nha_tre", "mau_giao"):
        assert leak not in text, leak
    notes = [f.note for s in contract.sheets for f in s.fields if getattr(f, "note", None)]
    assert notes and not any(n in text for n in notes)


def test_instruction_rows_are_sized_to_their_text(template):
    """xlsxwriter rows do not grow by themselves: every wrapped instruction row has a height."""
    path, levels, period, wb = template
    ws = wb[INSTRUCTIONS_SHEET]
    assert ws.column_dimensions["D"].width >= 50
    long_rows = [r for r in range(1, ws.max_row + 1)
                 if any(isinstance(c.value, str) and len(c.value) > 90 for c in ws[r])]
    assert long_rows and all((ws.row_dimensions[r].height or 0) > 15 for r in long_rows)
    assert ws.page_setup.orientation == "landscape" and ws.print_title_rows


def test_commune_dropdown_is_narrowed_to_the_district(template):
    path, levels, period, wb = template
    dm = wb[CODELIST_SHEET]
    cols = {dm.cell(1, c).value: c for c in range(1, dm.max_column + 1)}
    c = cols["moet-2020/DM_XA:718"]
    wards = [dm.cell(r, c).value for r in range(2, dm.max_row + 1) if dm.cell(r, c).value]
    assert len(wards) == 14 and wards[0].startswith("257")


def test_blank_template_reads_back_empty(template, contract):
    path, levels, period, wb = template
    parsed = read_workbook(path)
    assert parsed.template_version == contract.version
    assert parsed.school.values["school_code"] == "74718001"
    assert all(len(s.frame) == 0 for s in parsed.sheets.values())
    assert set(parsed.sheets) >= {"classes", "learners", "staff"}
    for sid, data in parsed.sheets.items():
        assert set(data.columns) == {f.id for f in contract.sheet(sid).fields_for(levels, period)}


LEARNERS = pd.DataFrame({
    "student_code": ["7400000001", "7400000002", "7400000003"],
    "personal_id": ["074215012345", "079314000001", None],
    "full_name": ["Nguyễn Thị Ánh", "Trần Văn Đức", "Lê Hoàng Yến"],
    "birth_date": [dt.date(2015, 3, 4), dt.date(2014, 12, 31), dt.date(2015, 1, 9)],
    "sex": ["02", "01", "02"],
    "ethnicity": ["01", "04", "05"],
    "class_code": ["2A1", "2A1", "2A2"],
    "grade": ["02", "02", "02"],
    "status": ["01", "01", "02"],
    "status_date": [None, None, dt.date(2022, 9, 12)],
    "entry_type": ["4", "4", "1"],
    "two_sessions": [1, 1, 0],
})


@pytest.mark.parametrize("style", [
    ExportStyle(),
    MINISTRY_EXPORT,
    ExportStyle(headers="unaccented", values="label", dates="excel", template=False),
    ExportStyle(title_rows=2, headers="alias", ids_as_numbers=True, template=False),
], ids=["template", "ministry", "unaccented-excel-dates", "alias-numbers"])
def test_round_trip_through_the_reader(tmp_path, contract, style):
    path = tmp_path / "school.xlsx"
    layouts = write_submission(path, levels=("TH",), period="dau_nam", school_year="2022-2023",
                               school={"school_code": "74718001", "school_name": "Trường Tiểu học Phú Cường"},
                               tables={"learners": LEARNERS}, style=style)
    parsed = read_workbook(path)
    data = parsed.sheets["learners"]
    assert data.header_row == layouts["learners"].header_row
    typed, problems = cast_table(data.frame, contract.sheet("learners").fields)
    assert typed["excel_row"].tolist() == [layouts["learners"].first_data_row + i for i in range(3)]
    for col in LEARNERS.columns:
        got = typed[col].tolist()
        want = LEARNERS[col].tolist()
        if col == "birth_date" or col == "status_date":
            got = [None if pd.isna(v) else v.date() for v in got]
        got = [None if pd.isna(v) else v for v in got]
        want = [None if pd.isna(v) else v for v in want]
        assert got == want, col
    kinds = set(problems["kind"])
    # a 12-digit ID stored as a number loses its leading zero: re-padded, reported as a notice
    assert kinds <= {"id_padded"}
    assert ("id_padded" in kinds) == style.ids_as_numbers


def test_text_looking_like_a_formula_stays_text(tmp_path):
    path = tmp_path / "f.xlsx"
    bad = LEARNERS.assign(full_name=["=1+1", "+84 912", "@SUM(A1)"])
    write_submission(path, levels=("TH",), period="dau_nam", school_year="2022-2023", tables={"learners": bad})
    ws = openpyxl.load_workbook(path)["HocSinh"]
    values = [ws.cell(r, 3).value for r in (2, 3, 4)]
    assert values == ["=1+1", "+84 912", "@SUM(A1)"]
    assert all(ws.cell(r, 3).data_type == "s" for r in (2, 3, 4))


@pytest.mark.libreoffice
def test_template_opens_in_libreoffice(tmp_path):
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if not soffice:
        pytest.skip("LibreOffice not installed (make pdf-check installs it)")
    path = tmp_path / "mau.xlsx"
    write_submission(path, levels=("TH",), period="dau_nam", school_year="2022-2023")
    res = subprocess.run(
        [soffice, "--headless", f"-env:UserInstallation=file://{tmp_path}/lo", "--convert-to", "pdf",
         "--outdir", str(tmp_path), str(path)],
        capture_output=True, text=True, timeout=180,
    )
    assert res.returncode == 0, res.stderr
    pdf = tmp_path / "mau.pdf"
    assert pdf.exists() and pdf.stat().st_size > 1000
    assert pdf.read_bytes()[:4] == b"%PDF"
