import re

import pytest

from schemas import ContractError, load_codelist
from schemas.contract import Requirement


def test_every_sheet_and_field_is_well_formed(contract):
    assert [s.name for s in contract.sheets] == ["Truong", "PhongHoc", "Lop", "HocSinh", "CanBo"]
    for s in contract.sheets:
        assert s.fields, s.id
        for f in s.fields:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", f.id), f.id
            assert f.header.strip() == f.header and f.header
            if f.type == "code":
                assert len(f.codelist) > 0, f.id
            assert set(f.levels) <= {"MN", "TH", "THCS"}
            assert set(f.periods) <= {"dau_nam", "cuoi_nam"}


def test_headers_carry_vietnamese_diacritics(contract):
    learners = contract.sheet("learners")
    assert learners.field("full_name").header == "Họ và tên"
    assert learners.field("sex").header == "Giới tính"
    assert contract.sheet("staff").field("training_level").header == "Trình độ đào tạo"


def test_personal_data_is_flagged(contract):
    for sheet_id in ("learners", "staff"):
        s = contract.sheet(sheet_id)
        for fid in ("personal_id", "full_name", "birth_date"):
            assert s.field(fid).pii, (sheet_id, fid)
        assert not s.field("sex").pii


def test_field_applicability_by_level_and_period(contract):
    learners = contract.sheet("learners")
    th_start = {f.id for f in learners.fields_for(("TH",), "dau_nam")}
    th_end = {f.id for f in learners.fields_for(("TH",), "cuoi_nam")}
    mn_start = {f.id for f in learners.fields_for(("MN",), "dau_nam")}
    assert "year_result" not in th_start and "year_result" in th_end
    assert "nutrition_status" in mn_start and "nutrition_status" not in th_start
    assert "conduct" not in th_end
    ptcs_end = {f.id for f in learners.fields_for(("TH", "THCS"), "cuoi_nam")}
    assert {"year_result", "conduct", "graduated"} <= ptcs_end


def test_requirements(contract):
    pid = contract.sheet("learners").field("personal_id").required
    assert pid.applies(("TH",), "dau_nam") and not pid.applies(("MN",), "dau_nam")
    status_date = contract.sheet("learners").field("status_date").required
    assert status_date.when_field == "status" and status_date.when_not_in == ("01",)
    assert Requirement.parse(True).applies(("MN",), "cuoi_nam")
    assert not Requirement.parse(False).is_required
    with pytest.raises(ContractError):
        Requirement.parse({"level": ["TH"]})


def test_codes_subset_restricts_grade(contract):
    grade = contract.sheet("learners").field("grade").codelist
    assert grade.codes == ("01", "02", "03", "04", "05", "06", "07", "08", "09", "16", "17")
    assert grade.resolve("Khối 10") is None


@pytest.mark.parametrize(
    "ref, value, code",
    [
        ("moet-2020/DM_GIOI_TINH", "Nữ", "02"),
        ("moet-2020/DM_GIOI_TINH", "nu", "02"),
        ("moet-2020/DM_GIOI_TINH", "NỮ", "02"),
        ("moet-2020/DM_GIOI_TINH", "2", "02"),
        ("moet-2020/DM_GIOI_TINH", 2.0, "02"),
        ("moet-2020/DM_GIOI_TINH", " 01 ", "01"),
        ("moet-2020/DM_DAN_TOC", "Kinh", "01"),
        ("moet-2020/DM_DAN_TOC", "01 - Kinh", "01"),
        ("moet-2020/DM_DAN_TOC", "Khơ-me", "05"),
        ("moet-2020/DM_DAN_TOC", "Khmer", "05"),
        ("moet-2020/DM_DAN_TOC", "Người nước ngoài", "55"),
        ("moet-2020/DM_KHOI", "Lớp 9", "09"),
        ("moet-2020/DM_KHOI", "nha_tre", "16"),
        ("moet-2020/DM_TRANG_THAI_HOC_SINH", "Đang học", "01"),
        ("moet-2020/DM_TRANG_THAI_HOC_SINH", "Thoi hoc ky 2", "09"),
        ("moet-2020/DM_LOAI_HINH", "Tư thục", "09"),
        ("edustat/REGION", "Miền núi", "mien_nui"),
        ("edustat/REGION", "03", "dong_bang"),
        ("edustat/FLAG", "x", "1"),
        ("edustat/OUTCOME", "Lưu ban", "3"),
    ],
)
def test_code_or_label_resolves(ref, value, code):
    assert load_codelist(ref).resolve(value) == code


def test_a_label_of_two_codes_is_ambiguous_in_the_whole_list_but_not_in_the_fields_subset(contract):
    # DM_KHOI labels codes 03 and 26 both "Khối 3" (general education and GDTX): never guessed
    whole = load_codelist("moet-2020/DM_KHOI").read("Khối 3")
    assert whole.how == "ambiguous" and whole.candidates == ("03", "26")
    assert contract.sheet("learners").field("grade").codelist.resolve("Khối 3") == "03"


@pytest.mark.parametrize("value", [None, "", "  ", "Nam Nữ", "99", "abc"])
def test_unknown_or_blank_resolves_to_none(value):
    assert load_codelist("moet-2020/DM_GIOI_TINH").resolve(value) is None


def _codes(ref):
    return set(load_codelist(ref).codes)


def test_report_bucket_mappings_cover_their_code_lists(contract):
    m = contract.mappings
    assert set(m["training_buckets"]) == _codes("moet-2020/DM_TRINH_DO_CHUYEN_MON")
    assert set(m["training_buckets"].values()) == set(m["training_bucket_labels"])
    assert set(m["contract_buckets"]) == _codes("moet-2020/DM_HINH_THUC_HOP_DONG")
    assert set(m["ownership_groups"]) == _codes("moet-2020/DM_LOAI_HINH")
    assert set(m["grades"]) == set(contract.sheet("learners").field("grade").codes)
    assert set(m["mn_age_groups"]) == _codes("moet-2020/DM_NHOM_TUOI_MN")
    assert set(m["very_small_minorities"]) <= _codes("moet-2020/DM_DAN_TOC")
    assert set(m["education_level_levels"]) <= _codes("moet-2020/DM_NHOM_CAP_HOC")
    for rule in m["staff_roles"]:
        assert set(rule.get("position", [])) <= _codes("edustat/POSITION")
        assert set(rule.get("staff_group", [])) <= _codes("moet-2020/DM_NHOM_CAN_BO")
        assert set(rule.get("extra_duty", [])) <= _codes("moet-2020/DM_NHIEM_VU_KIEM_NHIEM")
    status = m["learner_status"]
    assert set().union(*status.values()) == _codes("moet-2020/DM_TRANG_THAI_HOC_SINH")
    for level, table in m["training_standard"].items():
        assert set(table) == set(m["training_bucket_labels"]), level


def test_very_small_minorities_are_the_sixteen_groups():
    dan_toc = load_codelist("moet-2020/DM_DAN_TOC")
    from schemas import load_contract

    names = {dan_toc.label(c) for c in load_contract().mappings["very_small_minorities"]}
    assert len(names) == 16
    assert {"Cống", "Mảng", "Si La", "Lự", "Brâu"} <= names


def test_contract_matches_the_prose_spec(contract):
    from conftest import SHARED

    spec = SHARED / "spec" / "submission-workbook.md"
    if not spec.exists():
        pytest.skip("../shared/spec absent")
    text = spec.read_text(encoding="utf-8")
    for s in contract.sheets:
        assert f"`{s.name}`" in text, s.name


def test_position_list_is_the_ministry_list_plus_the_specs_words():
    """edustat/POSITION = DM_LOAI_CAN_BO (same codes, same labels, same order) + GV, TPT, TVTB."""
    ministry = load_codelist("moet-2020/DM_LOAI_CAN_BO")
    ours = load_codelist("edustat/POSITION")
    n = len(ministry)
    assert ours.codes[:n] == ministry.codes and ours.labels[:n] == ministry.labels
    assert ours.codes[n:] == ("GV", "TPT", "TVTB")
