"""School workbooks written WITHOUT the project's contract, aliases, vocabulary or generator.

Every header and every coded value below is copied from outside the project: the spec
(`../shared/spec/submission-workbook.md`), the real ministry files (`../shared/reference/moet/`:
the two form exports' row labels, the import templates' headers, the sync spec's field names
and descriptions) or the issue's list of what clerks type (issue 8). Nothing here imports
`schemas`, so a word the reader does not know shows up as a failing test, not as a silent
agreement between our writer and our reader.

`write_school(path, level, style)` → the truth (codes the pipeline must load).
Styles: "spec" (the spec's headers and words), "clerk" (decorated / abbreviated headers,
form labels and abbreviations as values), "moet" (ministry field names / sync descriptions).
"""
from __future__ import annotations

from pathlib import Path

import openpyxl

YEAR = "2022-2023"

# header spellings per style: (spec, clerk, moet). `None` = the column is left out in that style.
LEARNER_HEADERS = {
    "student_code": ("Mã định danh Bộ GD&ĐT", "Mã HS", "MaHocSinh"),
    "personal_id": ("Số định danh cá nhân", "CCCD", "Số cmnd"),
    "full_name": ("Họ và tên", "Họ tên trẻ", "Họ tên học sinh"),
    "birth_date": ("Ngày sinh", "Ngày tháng\nnăm sinh (dd/mm/yyyy)", "NgaySinh"),
    "sex": ("Giới tính", "Giới\ntính", "GioiTinh"),
    "ethnicity": ("Dân tộc", "Dân tộc (*)", "Mã dân tộc"),
    "class_code": ("Mã lớp", "Mã lớp:", "MaLopHocCn"),
    "grade": ("Khối", "Khối (*)", "KhoiHoc"),
    "status": ("Trạng thái", "Trạng thái (*)", "TrangThai"),
    "entry_type": ("Loại nhập học", "Loại nhập học (nếu có)", "Loại nhập học"),
    "disability_type": ("Loại khuyết tật", "Loại khuyết tật (nếu có)", "Mã loại khuyết tật"),
    "tuition_exempt": ("Miễn học phí", "Miễn học phí (x)", "Miễn học phí"),
    "lunch_support": ("Hỗ trợ ăn trưa (MN)", "Hỗ trợ ăn trưa (MN)", "Hỗ trợ ăn trưa"),
}
STAFF_HEADERS = {
    "staff_code": ("Mã cán bộ", "Mã CB", "MaCanBo"),
    "personal_id": ("Số định danh cá nhân", "CCCD", "Số CMTND/ thẻ căn cước/Hộ chiếu"),
    "full_name": ("Họ và tên", "Họ tên (*)", "TenCanBo"),
    "birth_date": ("Ngày sinh", "Ngày tháng năm sinh (*)", "NgaySinh"),
    "sex": ("Giới tính", "Giới tính (*)", "GioiTinh"),
    "ethnicity": ("Dân tộc", "Dân tộc:", "MaDanToc"),
    "staff_group": ("Nhóm cán bộ", "Nhóm cán bộ (*)", "LoaiCanBo"),
    "position": ("Chức vụ", "Chức vụ / Vị trí việc làm", "ChucVu"),
    "mn_care_level": ("Dạy/quản lý nhà trẻ hay mẫu giáo", "Nhà trẻ/Mẫu giáo", "Dạy/quản lý nhà trẻ hay mẫu giáo"),
    "contract_type": ("Hình thức hợp đồng", "Loại hợp đồng", "LoaiHopDong"),
    "training_level": ("Trình độ đào tạo", "Trình độ chuyên môn (*)", "Trình độ chuyên môn nghiệp vụ cao nhất"),
    "subject": ("Môn dạy", "Môn dạy (nếu có)", "MonDayChinh"),
    "status": ("Trạng thái", "Trạng thái:", "TrangThai"),
}
CLASS_HEADERS = {
    "class_code": ("Mã lớp", "Mã lớp:", "MaLopHoc"),
    "class_name": ("Tên lớp", "Tên lớp (*)", "TenLopHoc"),
    "grade": ("Khối", "Khối:", "KhoiHoc"),
    "mn_age_group": ("Nhóm tuổi (MN)", "Nhóm tuổi (MN)", "MaNhomTuoiMn"),
    "mixed": ("Lớp ghép / ghép độ tuổi", "Lớp ghép", "LopGhep"),
    "two_sessions": ("Học 2 buổi/ngày", "Học 2 buổi/ngày (x)", "Học 2 buổi/ngày"),
    "boarding": ("Bán trú", "Bán trú (x)", "LopBanTru"),
}
ROOM_HEADERS = {
    "room_type": ("Loại phòng", "Loại phòng:", "Loại phòng"),
    "care_level": ("Khối", "Khối", "Khối"),
    "permanent": ("Kiên cố", "Kiên cố", "Kiên cố"),
    "semi_permanent": ("Bán kiên cố", "Bán kiên cố", "Bán kiên cố"),
    "temporary": ("Tạm", "Tạm", "Tạm"),
}
# The Truong sheet's keys: spec | clerk | the import template's headers (template-truong-hoc.xlsx)
SCHOOL_KEYS = {
    "school_code": ("Mã trường", "Mã trường:", "MA_TRUONG *"),
    "school_name": ("Tên trường", "Tên trường (*)", "TEN_TRUONG_HOC *"),
    "school_year": ("Năm học", "Năm học:", "Năm học"),
    "period": ("Kỳ báo cáo", "Kỳ báo cáo:", "Kỳ báo cáo"),
    "education_level": ("Cấp học", "Cấp học (*)", "CAP_HOC *"),
    "ownership": ("Loại hình", "Loại hình:", "LOAI_HINH_DAO_TAO *"),
    "province_code": ("Mã tỉnh", "Mã tỉnh:", "MA_TINH_THANH *"),
    "district_code": ("Mã huyện", "Mã huyện:", "MA_QUAN_HUYEN *"),
    "commune_code": ("Mã xã", "Mã xã:", "MA_XA_PHUONG *"),
    "region": ("Vùng", "Vùng:", "Vùng"),
    "national_standard": ("Chuẩn quốc gia", "Chuẩn quốc gia:", "CHUAN_QUOC_GIA *"),
    "satellite_sites": ("Số điểm trường (ngoài điểm chính)", "Số điểm trường (ngoài điểm chính):", "Số điểm trường"),
}
STYLE = {"spec": 0, "clerk": 1, "moet": 2}

# Values as each style writes them → the code the pipeline must load. Clerk values come from the
# spec's words, the forms' row labels and the issue's abbreviation list.
POSITIONS = {  # (spec word, clerk / form label) → code
    "principal": ("Hiệu trưởng", "HT", "01"),
    "vice": ("Phó hiệu trưởng", "P.HT", "02"),
    "teacher": ("Giáo viên", "GV", "GV"),
    "tpt": ("Tổng phụ trách Đội", "Tong phu trach Doi", "TPT"),
    "librarian": ("NV thư viện-thiết bị", "Nhân viên thư viện, thiết bị", "TVTB"),
    "accountant": ("Kế toán", "- Nhân viên kế toán", "15"),
    "it": ("CNTT", "Nhân viên công nghệ thông tin", "32"),
    "nurse": ("Y tế", "- Nhân viên y tế", "11"),
}
ROOMS = [  # (spec word, form label, code)
    ("Phòng học", "Phòng học", "01"),
    ("Thư viện", "- Thư viện", "03"),
    ("Tin học", "- Phòng tin học", "05"),
    ("Đa năng/thể chất", "Phòng GD rèn luyện thể chất nhà đa năng", "09"),
    ("Hỗ trợ khuyết tật", "Phòng hỗ trợ GD khuyết tật học hòa nhập", "10"),
    ("Y tế", "Phòng Y tế học đường", "13"),
]


def _pid(sex: str, year: int, serial: int) -> str:
    """12-digit personal ID of a person registered in Bình Dương (074), consistent with sex and
    birth year (regulations.md §1.3: digit 4 = century + sex, digits 5–6 = year)."""
    digit4 = (year // 100 - 19) * 2 + (1 if sex == "F" else 0)
    return f"074{digit4}{year % 100:02d}{serial:06d}"


def _table(ws, headers: dict, style: int, rows: list[dict], title: str | None, numbering: bool) -> None:
    cols = [k for k, v in headers.items() if v[style] is not None and any(k in r for r in rows)]
    r0 = 1
    if title:
        ws.cell(1, 1, title)
        ws.cell(2, 1, "Năm học 2022-2023")
        r0 = 4
    for j, k in enumerate(cols, start=1):
        ws.cell(r0, j, headers[k][style])
    if numbering:
        for j in range(1, len(cols) + 1):
            ws.cell(r0 + 1, j, f"({j})")
        r0 += 1
    for i, row in enumerate(rows, start=r0 + 1):
        for j, k in enumerate(cols, start=1):
            if row.get(k) is not None:
                ws.cell(i, j, row[k])


def write_school(path: Path, level: str, style: str = "spec", code: str = "74718901", period: str = "dau_nam") -> dict:
    """One clean start-of-year school of `level` (MN / TH / THCS). Returns the truth."""
    s = STYLE[style]
    clerk = style == "clerk"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Truong" if style != "clerk" else "Thông tin trường"
    level_word = {"MN": ("Mầm non", "MN"), "TH": ("Tiểu học", "TH"), "THCS": ("THCS", "Trung học cơ sở")}[level]
    school = {
        "school_code": code, "school_name": f"Trường {level_word[0]} Độc Lập", "school_year": YEAR,
        "period": "Đầu năm" if not clerk else "Đầu năm học", "education_level": level_word[1 if clerk else 0],
        "ownership": "Công lập", "province_code": "74", "district_code": "718",
        "commune_code": "25741" if not clerk else "Phường Hiệp Thành",
        "region": "Trung du, đồng bằng, thành phố" if not clerk else "Đồng bằng",
        "national_standard": "Đạt chuẩn quốc gia mức độ 1" if not clerk else "Mức độ 1", "satellite_sites": "0",
    }
    ws.cell(1, 1, "Chỉ tiêu")
    ws.cell(1, 2, "Giá trị")
    for i, (k, v) in enumerate(school.items(), start=2):
        ws.cell(i, 1, SCHOOL_KEYS[k][s])
        ws.cell(i, 2, v)

    truth: dict = {"school_code": code, "learners": {}, "staff": {}, "rooms": {}, "classes": {}}
    # classes
    if level == "MN":
        classes = [("MG5A", "Lá 1", "Mẫu giáo", "5-6 Tuổi", "17", "06"), ("NT1", "Nhà trẻ 1", "Nhà trẻ", "25-36 Tháng", "16", "03")]
    elif level == "TH":
        classes = [("1A", "1A", "Khối 1" if not clerk else "Lớp 1", None, "01", None), ("5A", "5A", "5", None, "05", None)]
    else:
        classes = [("6A", "6A", "Khối 6" if not clerk else "Lớp 6", None, "06", None), ("9A", "9A", "9", None, "09", None)]
    class_rows = []
    for cc, name, grade_word, age_word, grade, age in classes:
        row = {"class_code": cc, "class_name": name, "grade": grade_word, "mixed": "0",
               "two_sessions": "x" if clerk else "1", "boarding": "" if clerk else "0"}
        if level == "MN":
            row["mn_age_group"] = age_word
        class_rows.append(row)
        truth["classes"][cc] = {"grade": grade, "mn_age_group": age}
    sheet = wb.create_sheet("Lop" if not clerk else "Lớp")
    _table(sheet, CLASS_HEADERS, s, class_rows, "DANH SÁCH LỚP" if clerk else None, numbering=clerk)

    # learners: 4 per class
    start = int(YEAR[:4])
    kinh = ("Kinh", "01")
    ethnic = ("Khơ-me", "05") if not clerk else ("Khmer", "05")
    learners = []
    serial = 1
    for cc, _, grade_word, _, grade, _ in classes:
        age = {"16": 2, "17": 5}.get(grade) or int(grade) + 5
        year = start - age
        for k in range(4):
            sex = "F" if k % 2 else "M"
            eth = ethnic if k == 3 else kinh
            sc = f"{code[-4:]}{serial:06d}"
            row = {
                "student_code": sc, "full_name": f"Nguyễn Văn {chr(65 + k)} {code[-3:]}-{serial}",
                "birth_date": f"{(k % 27) + 1:02d}/0{(k % 9) + 1}/{year}",
                "sex": ("Nữ" if sex == "F" else "Nam") if not clerk else ("nữ" if sex == "F" else "NAM"),
                "ethnicity": eth[0], "class_code": cc, "grade": grade_word,
                "status": "Đang học" if not clerk else "dang hoc",
            }
            if level != "MN":
                row["personal_id"] = _pid(sex, year, int(code[-3:]) * 1000 + serial)
                row["entry_type"] = "Lên lớp" if grade not in ("01", "06") else ("Tuyển mới" if not clerk else "Trúng tuyển")
            if level == "MN":
                row["lunch_support"] = ("x" if k == 0 else "") if clerk else ("1" if k == 0 else "0")
            else:
                row["tuition_exempt"] = ("x" if k == 0 else None) if clerk else ("1" if k == 0 else "0")
            learners.append(row)
            truth["learners"][sc] = {"sex": "02" if sex == "F" else "01", "ethnicity": eth[1], "grade": grade,
                                     "lunch_support": (1 if k == 0 else 0) if level == "MN" else None}
            serial += 1
    sheet = wb.create_sheet("HocSinh" if not clerk else "Danh sách học sinh")
    _table(sheet, LEARNER_HEADERS, s, learners, "DANH SÁCH HỌC SINH" if clerk else None, numbering=clerk)

    # staff
    roles = ["principal", "vice", "teacher", "teacher", "tpt", "librarian", "accountant", "it", "nurse"]
    if level == "MN":
        roles = ["principal", "vice", "teacher", "teacher", "accountant", "nurse"]
    staff = []
    for i, role in enumerate(roles, start=1):
        group = {"principal": ("Cán bộ quản lý", "CBQL", "01"), "vice": ("Cán bộ quản lý", "CBQL", "01"),
                 "teacher": ("Giáo viên", "GV", "03"), "tpt": ("Giáo viên", "GV", "03")}.get(role, ("Nhân viên", "NV", "02"))
        pos = POSITIONS[role]
        year = 1975 + i
        sex = "F" if i % 2 else "M"
        code_i = f"CB{code[-3:]}{i:03d}"
        row = {
            "staff_code": code_i, "personal_id": _pid(sex, year, int(code[-3:]) * 1000 + 500 + i), "full_name": f"Trần Thị {chr(64 + i)} {code[-3:]}",
            "birth_date": f"1{i % 9}/0{(i % 9) + 1}/{year}", "sex": "Nữ" if sex == "F" else "Nam", "ethnicity": "Kinh",
            "staff_group": group[1 if clerk else 0], "position": pos[1 if clerk else 0],
            "contract_type": "Viên chức/Công chức HĐLV không xác định thời hạn" if not clerk else "HĐLV không xác định thời hạn",
            "training_level": ("Đại học sư phạm" if not clerk else "ĐHSP") if group[2] in ("01", "03") else "Trung cấp",
            "status": "Đang làm việc" if not clerk else "dang cong tac",
        }
        if level == "MN":
            row["mn_care_level"] = "Mẫu giáo"
        if level == "THCS" and group[2] == "03":
            row["subject"] = "Toán"
        staff.append(row)
        truth["staff"][code_i] = {"position": pos[2], "staff_group": group[2]}
    sheet = wb.create_sheet("CanBo" if not clerk else "CBGVNV")
    _table(sheet, STAFF_HEADERS, s, staff, "DANH SÁCH CÁN BỘ, GIÁO VIÊN, NHÂN VIÊN" if clerk else None, numbering=False)

    # rooms
    rooms = []
    for spec_word, form_label, rcode in ROOMS:
        if level == "MN" and rcode in ("05", "10"):
            continue
        row = {"room_type": form_label if clerk else spec_word, "permanent": "2" if rcode == "01" else "1",
               "semi_permanent": "0", "temporary": "0"}
        if level == "MN":
            row["care_level"] = "Mẫu giáo"
        rooms.append(row)
        truth["rooms"][rcode] = 2 if rcode == "01" else 1
    sheet = wb.create_sheet("PhongHoc" if not clerk else "Cơ sở vật chất")
    _table(sheet, ROOM_HEADERS, s, rooms, None, numbering=False)
    wb.save(path)
    return truth
