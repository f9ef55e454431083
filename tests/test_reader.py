"""The reader on workbooks built by hand the way other systems and offices make them."""
import zipfile

import openpyxl
import pytest

from edustat.reader import UnreadableWorkbook, read_workbook


def _book(path, sheets: dict[str, list[list]]):
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for r in rows:
            ws.append(r)
    wb.save(path)
    return path


EXPORT_ROWS = [
    ["SỞ GIÁO DỤC VÀ ĐÀO TẠO BÌNH DƯƠNG"],
    ["DANH SÁCH HỌC SINH LỚP 3A1"],
    [],
    ["STT", "Mã định danh Bộ GD&ĐT", "Ho ten", "NGÀY SINH", "Giới tính (*)", "Dân tộc", "Lớp học", "Khối học",
     "Trạng thái", "Số định danh cá nhân", "SĐT liên hệ"],
    ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"],
    [1, "7401234567", "Nguyễn Văn An", "05/09/2014", "Nam", "Kinh", "3A1", "Khối 3", "Đang học", 74214000123, "0912345678"],
    [],
    [2, "7401234568", "Phạm Thị Bình", "2014-01-02", "Nữ", "Hoa", "3A1", "Khối 3", "Đang học", "074314000124", None],
    ["Tổng cộng", None, None, None, None, None, None, None, None, None, None],
]


def test_ministry_student_list_export_is_recognised_by_its_headers(tmp_path):
    path = _book(tmp_path / "export.xlsx", {"Sheet1": EXPORT_ROWS})
    parsed = read_workbook(path)
    data = parsed.sheets["learners"]
    assert data.name == "Sheet1" and data.header_row == 4
    assert data.skipped_rows == {5: "numbering", 9: "total"}
    assert data.frame["excel_row"].tolist() == [6, 8]  # blank row 7 skipped, lineage kept
    assert data.frame["full_name"].tolist() == ["Nguyễn Văn An", "Phạm Thị Bình"]
    assert data.frame["personal_id"].tolist() == ["74214000123", "074314000124"]
    assert data.columns["full_name"] == "C" and data.columns["sex"] == "E"
    # unknown columns are kept (raw layer), with their letters
    assert data.extra_columns == {"STT": "A", "SĐT liên hệ": "K"}
    assert "extra:SĐT liên hệ" in data.frame.columns
    assert parsed.school is None and parsed.template_version is None
    assert {"school", "classes", "staff"}.isdisjoint(parsed.sheets)


def test_sheet_aliases_and_offset_columns(tmp_path):
    rows = [[None, None], [None, "Mã lớp", "Tên lớp", "Khoi", "Lop ghep", "Hoc 2 buoi/ngay", "Ban tru"],
            [None, "L1", "1A1", "1", "0", "1", "0"]]
    path = _book(tmp_path / "b.xlsx", {"Lớp học": rows})
    data = read_workbook(path).sheets["classes"]
    assert data.columns == {"class_code": "B", "class_name": "C", "grade": "D", "mixed": "E",
                            "two_sessions": "F", "boarding": "G"}
    assert data.frame["excel_row"].tolist() == [3]


def test_key_value_school_sheet(tmp_path):
    rows = [["THÔNG TIN TRƯỜNG"], ["Chỉ tiêu", "Giá trị"], ["Mã trường", "74718001"], ["Ten truong", "Trường TH A"],
            ["Năm học", "2022-2023"], ["Phiên bản mẫu", "2021.9"]]
    parsed = read_workbook(_book(tmp_path / "s.xlsx", {"Truong": rows}))
    assert parsed.school.values["school_code"] == "74718001"
    assert parsed.school.values["school_name"] == "Trường TH A"
    assert parsed.school.rows["school_code"] == 3
    assert parsed.template_version == "2021.9"


def test_duplicate_header_is_reported(tmp_path):
    rows = [["Họ và tên", "Họ tên", "Ngày sinh"], ["A", "B", "01/01/2015"]]
    data = read_workbook(_book(tmp_path / "d.xlsx", {"HocSinh": rows})).sheets["learners"]
    assert data.duplicate_headers == ["Họ tên"]
    assert data.frame["full_name"].tolist() == ["A"]


def test_unknown_sheet_is_listed(tmp_path):
    parsed = read_workbook(_book(tmp_path / "u.xlsx", {"Ghi chú": [["xin chào"]], "HocSinh": [["Họ và tên", "Ngày sinh"]]}))
    assert parsed.unknown_sheets == ["Ghi chú"]


def test_not_an_xlsx(tmp_path):
    p = tmp_path / "x.xlsx"
    p.write_text("Họ và tên,Ngày sinh\n", encoding="utf-8")
    with pytest.raises(UnreadableWorkbook) as e:
        read_workbook(p)
    assert e.value.reason == "not_xlsx"


def test_truncated_zip(tmp_path):
    good = _book(tmp_path / "g.xlsx", {"HocSinh": EXPORT_ROWS})
    p = tmp_path / "t.xlsx"
    p.write_bytes(good.read_bytes()[:1500])
    with pytest.raises(UnreadableWorkbook) as e:
        read_workbook(p)
    assert e.value.reason in {"not_xlsx", "corrupt"}


def test_password_protected_or_legacy_xls(tmp_path):
    p = tmp_path / "enc.xlsx"
    p.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600)
    with pytest.raises(UnreadableWorkbook) as e:
        read_workbook(p)
    assert e.value.reason == "encrypted_or_xls"


def test_empty_file(tmp_path):
    p = tmp_path / "e.xlsx"
    p.write_bytes(b"")
    with pytest.raises(UnreadableWorkbook) as e:
        read_workbook(p)
    assert e.value.reason == "empty"


def test_zip_that_is_not_a_workbook(tmp_path):
    p = tmp_path / "z.xlsx"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(UnreadableWorkbook) as e:
        read_workbook(p)
    assert e.value.reason == "not_xlsx"


def test_wrong_stored_dimension_does_not_hide_rows(tmp_path):
    """Some exports declare <dimension ref="A1:B2"/> while holding more rows (regulations §5.1)."""
    rows = [["Họ và tên", "Ngày sinh", "Giới tính"]] + [[f"HS {i}", "01/01/2015", "Nam"] for i in range(50)]
    good = _book(tmp_path / "g.xlsx", {"HocSinh": rows})
    bad = tmp_path / "dim.xlsx"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.startswith("xl/worksheets/sheet"):
                text = data.decode("utf-8")
                import re
                text = re.sub(r'<dimension ref="[^"]+"\s*/>', '<dimension ref="A1:B2"/>', text)
                data = text.encode("utf-8")
            zout.writestr(item, data)
    # openpyxl read-only trusts the wrong dimension …
    ws = openpyxl.load_workbook(bad, read_only=True)["HocSinh"]
    assert ws.max_row == 2
    # … the reader does not.
    assert len(read_workbook(bad).sheets["learners"].frame) == 50
