"""Schools' own words: every spelling class is read as its code, ambiguity is never guessed,
near misses are read and said, and — on workbooks written without the project's own words
(tests/independent.py, the real ministry files) — every clean school is accepted with the
right codes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import openpyxl
import pandas as pd
import pytest

from edustat import pipeline, store
from edustat.config import Config
from schemas import load_codelist
from schemas.folding import header_key
from schemas.vocabulary import codelist_entries, form_labels, sheet_matcher, sync_fields

sys.path.insert(0, str(Path(__file__).parent))
import independent  # noqa: E402

YEAR = "2022-2023"


def _read(contract, sheet: str, field: str, value: str):
    return contract.sheet(sheet).field(field).codelist.read(value)


# ---- every class of spelling -----------------------------------------------------------------

@pytest.mark.parametrize("sheet, field, written, code", [
    # official labels, any case, with or without diacritics
    ("staff", "position", "Hiệu trưởng", "01"), ("staff", "position", "HIEU TRUONG", "01"),
    ("learners", "ethnicity", "Khơ-me", "05"), ("learners", "status", "dang hoc", "01"),
    # the forms' own row labels (02-TH-ĐN / 01-MN-ĐN exports)
    ("rooms", "room_type", "Phòng hỗ trợ GD khuyết tật học hòa nhập", "10"),
    ("rooms", "room_type", "Phòng GD rèn luyện thể chất nhà đa năng", "09"),
    ("rooms", "room_type", "Phòng Y tế học đường", "13"), ("rooms", "room_type", "- Thư viện", "03"),
    ("rooms", "room_type", "Phòng học nhỏ, mượn", "02"),
    ("staff", "position", "GV Tổng phụ trách Đội TNTP HCM", "TPT"),
    ("staff", "position", "Nhân viên thư viện, thiết bị", "TVTB"),
    # the spec's words (submission-workbook.md)
    ("staff", "position", "Giáo viên", "GV"), ("staff", "position", "Tổng phụ trách Đội", "TPT"),
    ("staff", "position", "Tong phu trach Doi", "TPT"), ("staff", "position", "NV thư viện-thiết bị", "TVTB"),
    ("rooms", "room_type", "Đa năng/thể chất", "09"), ("rooms", "room_type", "Hỗ trợ khuyết tật", "10"),
    ("rooms", "room_type", "phòng học nhờ/mượn", "02"), ("school", "ownership", "công lập", "01"),
    ("school", "education_level", "TH+THCS", "09"),
    # abbreviations (the issue's list)
    ("staff", "position", "HT", "01"), ("staff", "position", "PHT", "02"), ("staff", "position", "P.HT", "02"),
    ("staff", "position", "Phó HT", "02"), ("staff", "position", "GV", "GV"), ("staff", "position", "TPT Đội", "TPT"),
    ("staff", "position", "NV CNTT", "32"), ("staff", "staff_group", "CBQL", "01"), ("staff", "staff_group", "NV", "02"),
    ("staff", "training_level", "ĐHSP", "16"), ("staff", "training_level", "CĐSP", "17"),
    ("staff", "training_level", "TCSP", "18"), ("staff", "training_level", "ThS", "02"), ("staff", "training_level", "TS", "01"),
    ("staff", "contract_type", "HĐLV không xác định thời hạn", "07"), ("staff", "contract_type", "HĐLV xác định thời hạn", "08"),
    ("rooms", "room_type", "Phòng TBGD", "04"), ("rooms", "room_type", "Phòng GD thể chất", "09"),
    # flags: x, X, Có/Không, 1/0
    ("classes", "two_sessions", "x", None), ("classes", "two_sessions", "Có", None),
])
def test_every_class_of_spelling_reads_as_its_code(contract, sheet, field, written, code):
    f = contract.sheet(sheet).field(field)
    if f.type == "flag":
        assert load_codelist("edustat/FLAG").resolve(written) == "1"
        return
    r = f.codelist.read(written)
    assert (r.code, r.how) == (code, "exact"), r


def test_a_spelling_that_does_not_pin_one_code_is_accepted_and_said(contract):
    r = _read(contract, "staff", "contract_type", "Hợp đồng lao động")
    assert (r.code, r.how) == ("03", "said") and "04" in r.note


@pytest.mark.parametrize("ref, written, candidates", [
    ("moet-2020/DM_KHOI", "Khối 3", ("03", "26")),
    ("moet-2020/DM_XA", "Phường Hiệp Thành", ("25741", "26770", "31343")),
])
def test_a_spelling_of_two_codes_is_never_guessed(ref, written, candidates):
    r = load_codelist(ref).read(written)
    assert r.how == "ambiguous" and r.code is None and r.candidates == candidates


@pytest.mark.parametrize("sheet, field, written, code", [
    ("staff", "position", "Hiệu trởng", "01"),       # a letter left out
    ("staff", "position", "Phó hiệu tưởng", "02"),
    ("staff", "position", "Ke tona", "15"),          # two letters swapped
    ("rooms", "room_type", "Phòng y tê hoc đươngg", "13"),
    ("learners", "ethnicity", "Khome", "05"),
])
def test_a_near_miss_is_read_and_said(contract, sheet, field, written, code):
    r = _read(contract, sheet, field, written)
    assert (r.code, r.how) == (code, "near"), r


@pytest.mark.parametrize("sheet, field, written", [
    ("rooms", "room_type", "Phòng họp"),    # another word, not a typo of "Phòng học"
    ("rooms", "room_type", "Phòng hóa"),
    ("rooms", "room_type", "Nhà xe"),
    ("staff", "position", "Bác sĩ"),
    ("staff", "position", "Lao công"),
    ("learners", "sex", "Nam Nữ"),
    ("learners", "grade", "Lớp 10"),        # numbers must agree: never "Lớp 1"
])
def test_a_wrong_value_is_not_read_as_a_code(contract, sheet, field, written):
    assert _read(contract, sheet, field, written).code is None


def test_measured_near_miss_reading():
    """scripts/measure_vocabulary.py on the chosen limits: no deliberately wrong value is read as
    a code, no typo as another code, and at least 90 % of typos are read as their own."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import measure_vocabulary as mv
    from schemas import vocabulary as V

    m = mv.measure(V.NEAR_EDITS)
    n_pos = sum(m["pos"].values())
    right = sum(v for (k, o), v in m["pos"].items() if o in ("near", "exact"))
    wrong = sum(v for (k, o), v in m["pos"].items() if o == "WRONG CODE")
    false = sum(v for how, v in m["neg"].items() if how in ("near", "said", "exact"))
    assert sum(m["neg"].values()) > 5000 and false == 0, m["false"]
    assert wrong == 0, m["wrong"]
    assert right / n_pos >= 0.90


def test_written_vocabulary_is_never_ambiguous(contract):
    """No entry of schemas/vocabulary.yaml reaches two codes of its list (the field's subset)."""
    for sheet in contract.sheets:
        for f in sheet.fields:
            if f.type != "code":
                continue
            cl = f.codelist
            for e in codelist_entries(f.codelist_ref, cl.codes, cl.labels):
                if e.tier >= 2:
                    r = cl.read(e.spelling, near=False)
                    assert r.how != "ambiguous", (f.id, e.spelling, r.candidates)


def test_form_labels_come_verbatim_from_the_real_exports(moet_dir):
    """The forms' words in the vocabulary are the ministry export's own labels."""
    wb = openpyxl.load_workbook(moet_dir / "bieu-02-th-dn_2020_export.xlsx", read_only=True)
    texts = {str(v).strip() for ws in wb.worksheets for row in ws.iter_rows(values_only=True) for v in row if isinstance(v, str)}
    folded = {header_key(t) for t in texts}
    labels = [lab for lab, _, src in form_labels()["edustat/ROOM_TYPE"] if "02-TH-DN" in src]
    assert len(labels) >= 10
    assert all(header_key(lab) in folded for lab in labels), [lab for lab in labels if header_key(lab) not in folded]


# ---- headers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sheet, header, field", [
    ("classes", "Mã lớp:", "class_code"), ("learners", "Họ tên trẻ", "full_name"), ("learners", "CCCD", "personal_id"),
    ("learners", "Mã HS", "student_code"), ("learners", "Ngày tháng\nnăm sinh", "birth_date"),
    ("learners", "Giới\ntính", "sex"), ("staff", "Loại hợp đồng", "contract_type"),
    ("staff", "Trình độ chuyên môn (*)", "training_level"), ("learners", "Loại khuyết tật (nếu có)", "disability_type"),
    ("learners", "Hỗ trợ ăn trưa (MN)", "lunch_support"), ("learners", "Ngày sinh (dd/mm/yyyy)", "birth_date"),
    ("learners", "Họ  và   tên", "full_name"), ("learners", "HO VA TEN", "full_name"),
    ("classes", "Nhóm tuổi (MN)", "mn_age_group"), ("learners", "1. Họ và tên", "full_name"),
    # the ministry's field names and the import templates' headers
    ("learners", "MaHocSinh", "student_code"), ("learners", "MaLopHocCn", "class_code"), ("staff", "MaCanBo", "staff_code"),
    ("staff", "Họ tên (*)", "full_name"), ("staff", "Ngày tháng năm sinh (*)", "birth_date"),
    ("staff", "Số CMTND/ thẻ căn cước/Hộ chiếu", "personal_id"), ("school", "MA_TRUONG *", "school_code"),
    ("school", "TEN_TRUONG_HOC *", "school_name"), ("school", "MA_XA_PHUONG *", "commune_code"),
])
def test_a_decorated_or_abbreviated_header_names_its_field(contract, sheet, header, field):
    r = sheet_matcher(contract.sheet(sheet)).read(header, near=False)
    assert (r.code, r.how) == (field, "exact"), r


def test_the_sync_specs_own_descriptions_name_their_fields(contract, moet_dir):
    """For every contract field with a ministry field, the sync spec's Vietnamese description
    (read here from the real file) is a header the reader understands."""
    spec = openpyxl.load_workbook(moet_dir / "mo-ta-du-lieu-dau-nam_2020_sync-spec.xlsx", read_only=True)
    sheets = {"school": "TruongHocInfo", "classes": "LstLopHocInfo", "learners": "LstHocSinh", "staff": "LstCanBo"}
    checked = 0
    for sid, name in sheets.items():
        rows = {str(r[1]).strip(): r[4] for r in spec[name].iter_rows(min_row=3, values_only=True) if len(r) > 4 and r[1]}
        matcher = sheet_matcher(contract.sheet(sid))
        owners: dict[str, set] = {}
        for f in contract.sheet(sid).fields:
            if f.moet_field:
                owners.setdefault(f.moet_field, set()).add(f.id)
        for f in contract.sheet(sid).fields:
            desc = rows.get(f.moet_field or "")
            if not desc or len(owners[f.moet_field]) > 1 or len(header_key(str(desc)).split()) > 7:
                continue
            r = matcher.read(str(desc))
            assert r.code == f.id, (sid, f.id, desc, r)
            checked += 1
    assert checked >= 25
    assert sync_fields()  # the committed extraction is what the reader uses


@pytest.fixture(scope="module")
def mutated(tmp_path_factory):
    """One collection (load_valid_rows) of three independent schools, each changed in one way:
    a near header and an unknown column; one learner's sex unreadable; a too-short ID."""
    root = tmp_path_factory.mktemp("mutated")
    files = []
    path = root / "near.xlsx"
    independent.write_school(path, "TH", "spec", code="74718990")
    wb = openpyxl.load_workbook(path)
    for cell in wb["HocSinh"][1]:
        if cell.value == "Ngày sinh":
            cell.value = "Ngày sinnh"           # a typo: read as Ngày sinh, said
        if cell.value == "Miễn học phí":
            cell.value = "Diện miễn giảm học phí"  # unknown, resembling Miễn học phí which is missing
    wb.save(path)
    files.append(path)
    path = root / "partial.xlsx"
    independent.write_school(path, "TH", "spec", code="74718991")
    wb = openpyxl.load_workbook(path)
    wb["HocSinh"]["E2"] = "Không rõ"  # sex of one learner: an error on one row
    wb.save(path)
    files.append(path)
    path = root / "pid.xlsx"
    independent.write_school(path, "TH", "spec", code="74718992")
    wb = openpyxl.load_workbook(path)
    ws = wb["HocSinh"]
    col = next(c.column_letter for c in ws[1] if c.value == "Số định danh cá nhân")
    full = str(ws[f"{col}2"].value)
    ws[f"{col}2"] = full[:2] + full[3:]  # 11 digits typed as text: a digit lost inside, not a lost leading 0
    wb.save(path)
    files.append(path)
    cfg = Config(data_dir=root / "data", workers=1, load_policy="load_valid_rows")
    with store.session(cfg.db_path) as con:
        out = pipeline.run_collection(con, files, cfg, YEAR, "dau_nam")
        core = con.execute("select school_code, count(*) from core_learners group by 1").fetchall()
    return out, dict(core)


def test_a_near_header_is_read_and_said_and_an_unknown_column_is_never_silent(mutated):
    out, _ = mutated
    iss = out.issues[out.issues.school_code == "74718990"]
    near = iss[iss.rule_id == "file_header_near"]
    assert near[["value", "header"]].values.tolist() == [["Ngày sinnh", "Ngày sinh"]]
    unread = iss[iss.rule_id == "file_column_unread"]
    assert unread["header"].tolist() == ["Diện miễn giảm học phí"] and "Miễn học phí" in unread["message"].iloc[0]
    assert (unread["severity"] == "warning").all()
    subs = out.submissions.set_index("school_code")["status"]
    assert subs["74718990"] == "accepted_with_warnings"


# ---- workbooks the project did not write -------------------------------------------------------

@pytest.fixture(scope="module")
def independent_city(tmp_path_factory):
    root = tmp_path_factory.mktemp("independent")
    inbox = root / "inbox"
    inbox.mkdir()
    truths = {}
    n = 0
    for level in ("MN", "TH", "THCS"):
        for style in ("spec", "clerk", "moet"):
            n += 1
            code = f"747189{n:02d}"
            truths[code] = independent.write_school(inbox / f"{level}_{style}.xlsx", level, style, code=code)
    cfg = Config(data_dir=root / "data", workers=1)
    with store.session(cfg.db_path) as con:
        out = pipeline.run_collection(con, sorted(inbox.glob("*.xlsx")), cfg, YEAR, "dau_nam")
    return out, truths, cfg


def test_every_clean_independent_workbook_is_accepted(independent_city):
    out, truths, _ = independent_city
    assert sorted(out.submissions["school_code"]) == sorted(truths)
    assert set(out.submissions["status"]) == {"accepted"}, out.issues[out.issues.severity != "notice"][
        ["school_code", "rule_id", "value"]].to_string()


def test_independent_workbooks_load_the_right_codes(independent_city):
    out, truths, cfg = independent_city
    con = duckdb.connect(str(cfg.db_path), read_only=True)
    try:
        learners = con.execute("select school_code, student_code, sex, ethnicity, grade, lunch_support from core_learners").df()
        staff = con.execute("select school_code, staff_code, position, staff_group from core_staff").df()
        rooms = con.execute("select school_code, room_type, permanent from core_rooms").df()
        classes = con.execute("select school_code, class_code, grade, mn_age_group from core_classes").df()
    finally:
        con.close()
    for code, truth in truths.items():
        ls = learners[learners.school_code == code].set_index("student_code")
        assert len(ls) == len(truth["learners"])
        for sc, t in truth["learners"].items():
            row = ls.loc[sc]
            assert (row.sex, row.ethnicity, row.grade) == (t["sex"], t["ethnicity"], t["grade"]), (code, sc)
            if t["lunch_support"] is not None:
                assert (0 if pd.isna(row.lunch_support) else int(row.lunch_support)) == t["lunch_support"]
        st = staff[staff.school_code == code].set_index("staff_code")
        assert {k: (st.loc[k].position, st.loc[k].staff_group) for k in truth["staff"]} == {
            k: (v["position"], v["staff_group"]) for k, v in truth["staff"].items()}
        rs = rooms[rooms.school_code == code].set_index("room_type")["permanent"].astype(int).to_dict()
        assert rs == truth["rooms"]
        cs = classes[classes.school_code == code].set_index("class_code")
        assert {k: cs.loc[k].grade for k in truth["classes"]} == {k: v["grade"] for k, v in truth["classes"].items()}


def test_tong_phu_trach_doi_written_as_a_position_is_that_row_of_the_forms(contract):
    from transforms.derive import staff_role

    frame = pd.DataFrame({"position": ["TPT", "GV", "01", "TVTB"], "staff_group": ["03", "03", "01", "02"],
                          "extra_duty": [None, None, None, None]})
    assert staff_role(frame, contract.mappings).tolist() == ["tong_phu_trach_doi", "giao_vien", "hieu_truong",
                                                            "nv_thu_vien_thiet_bi"]


def test_every_contract_field_under_a_decorated_header_reaches_core(tmp_path, contract):
    """The same school twice — headers as the template writes them, then every header decorated
    (`(*)`, `:`, a line break, `(nếu có)`, capitals without accents) — loads the same core rows."""
    from edustat.synth import generate_city
    from schemas.folding import strip_accents

    inbox = tmp_path / "plain"
    m = generate_city(inbox, schools=3, seed=1, school_year=YEAR, period="dau_nam")  # one MN, one TH, one THCS
    assert {lv for s in m.schools for lv in s.levels} == {"MN", "TH", "THCS"}
    decorated = tmp_path / "decorated"
    decorated.mkdir()
    decorations = [lambda h: f"{h} (*)", lambda h: f"{h}:", lambda h: h.replace(" ", "\n", 1),
                   lambda h: f"{h} (nếu có)", lambda h: strip_accents(h).upper(), lambda h: f"  {h}  "]
    n_fields = 0
    for s in m.schools:
        wb = openpyxl.load_workbook(inbox / s.file)
        for sid, name in s.sheets.items():
            ws = wb[name]
            if sid == "school":
                cells = [row[0] for row in ws.iter_rows(min_row=2) if row[0].value]
            else:
                header_row = next(r for r in range(1, 10) if sum(1 for c in ws[r] if c.value) >= 3)
                cells = [c for c in ws[header_row] if c.value]
            for i, cell in enumerate(cells):
                cell.value = decorations[i % len(decorations)](str(cell.value))
                n_fields += 1
        wb.save(decorated / s.file)

    def load(folder: Path, name: str) -> dict[str, pd.DataFrame]:
        cfg = Config(data_dir=tmp_path / name, workers=1)
        with store.session(cfg.db_path) as con:
            out = pipeline.run_collection(con, sorted(folder.glob("*.xlsx")), cfg, YEAR, "dau_nam")
            assert not out.issues["rule_id"].isin(["file_column_unknown", "file_column_unread", "file_column_missing",
                                                   "file_header_near"]).any(), out.issues[["rule_id", "header"]]
            tables = {}
            for t in ("core_school", "core_classes", "core_learners", "core_staff", "core_rooms"):
                df = con.execute(f"select * from {t}").df()
                keep = [c for c in df.columns if c not in ("file_hash", "run_id", "loaded_at", "raw_path", "sheet_name",
                                                           "file_name", "extra")]
                tables[t] = df[keep].sort_values(keep[:4]).reset_index(drop=True)
            return tables

    plain, dec = load(inbox, "a"), load(decorated, "b")
    assert n_fields > 100
    for t in plain:
        assert len(plain[t]) > 0
        pd.testing.assert_frame_equal(plain[t], dec[t], check_dtype=False)


# ---- the clerk-style synthetic city --------------------------------------------------------

def test_a_clerk_style_city_is_accepted_and_its_typos_are_said(tmp_path):
    from edustat.synth import generate_city

    inbox = tmp_path / "inbox"
    m = generate_city(inbox, schools=4, seed=5, school_year=YEAR, period="dau_nam", clerk_share=1.0, typo_rate=0.3)
    assert {s.style_name for s in m.schools} == {"clerk"}
    typos = [s for s in m.spellings if s["kind"] == "typo"]
    assert typos and any(s["kind"] == "header" for s in m.spellings)
    cfg = Config(data_dir=tmp_path / "data", workers=1)
    with store.session(cfg.db_path) as con:
        out = pipeline.run_collection(con, sorted(inbox.glob("*.xlsx")), cfg, YEAR, "dau_nam")
    errors = out.issues[out.issues.severity == "error"]
    read = out.issues[out.issues.rule_id.str.endswith("_near")]
    said = {(r.school_code, r.value) for r in read.itertuples()}
    unread = [t for t in typos if (t["school_code"], t["written"]) not in said]
    # every typo is either read and said, or (a few, by design: another word) an error naming it
    assert set(errors["value"]) <= {t["written"] for t in unread}, errors[["rule_id", "value"]]
    assert len(unread) <= 0.25 * len(typos), unread
    ok = out.submissions["status"].isin(["accepted", "accepted_with_warnings"])
    clean = {s.school_code for s in m.schools} - set(errors["school_code"])
    assert set(out.submissions.loc[ok, "school_code"]) == clean


# ---- statuses and summary ----------------------------------------------------------------

def test_rows_held_back_make_a_school_partially_loaded_not_rejected(mutated):
    out, core = mutated
    subs = out.submissions.set_index("school_code")["status"]
    assert subs["74718991"] == "partially_loaded"
    assert core["74718991"] == 7  # 8 learners, 1 held back


def test_summary_never_says_all_checks_pass_when_schools_are_left_out():
    base = {"run_id": "r", "school_year": YEAR, "period": "dau_nam", "files": 3, "issues": {"error": 2, "warning": 0, "notice": 0},
            "feedback_dir": "f", "database": "d", "published": "p", "reports_dir": "r", "forms": ["02-TH-DN"],
            "form_checks_failed": 0, "missing": [], "readings": 0}
    rejected = pipeline.format_summary({**base, "counts": {"accepted": 2, "accepted_with_warnings": 0, "partially_loaded": 0,
                                                           "rejected": 1, "unreadable": 0, "missing": 0}, "schools_in_forms": 2})
    assert "đều đạt" not in rejected and "CHƯA ĐỦ" in rejected and "biểu gồm 2 trường" in rejected
    empty = pipeline.format_summary({**base, "counts": {"accepted": 0, "accepted_with_warnings": 0, "partially_loaded": 0,
                                                        "rejected": 3, "unreadable": 0, "missing": 0}, "schools_in_forms": 0})
    assert "để trống" in empty and "đều đạt" not in empty
    fine = pipeline.format_summary({**base, "counts": {"accepted": 3, "accepted_with_warnings": 0, "partially_loaded": 0,
                                                       "rejected": 0, "unreadable": 0, "missing": 0}, "schools_in_forms": 3})
    assert "biểu gồm 3 trường" in fine and "đều đạt" in fine


def test_a_too_short_personal_id_is_told_its_length_and_nothing_else(mutated):
    out, _ = mutated
    iss = out.issues[out.issues.school_code == "74718992"]
    mine = iss[(iss.excel_row == 2) & (iss.field == "personal_id")]
    assert mine["rule_id"].tolist() == ["student_personal_id_format"], mine[["rule_id", "message"]]
    assert "12 chữ số" in mine["message"].iloc[0]


def test_feedback_lists_what_was_read_as_what(tmp_path):
    from datetime import datetime

    from edustat.feedback import write_feedback

    issues = pd.DataFrame([{
        "school_code": "74718993", "file_hash": "h", "file_name": "a.xlsx", "sheet": "CanBo", "excel_row": 5,
        "column": "H", "field": "position", "header": "Chức vụ", "rule_id": "staff_position_near", "severity": "warning",
        "value": "Hiệu trởng", "message": "Chức vụ 'Hiệu trởng' không có đúng trong danh mục; hệ thống đã hiểu là: Hiệu trưởng (mã 01).",
        "fix": "x"}])
    out = write_feedback(None, tmp_path / "fb.xlsx", school={"school_code": "74718993", "school_name": "A"}, issues=issues,
                         status="accepted_with_warnings", counts={"learners": 1}, school_year=YEAR, period="dau_nam",
                         generated_at=datetime(2022, 10, 1))
    ws = openpyxl.load_workbook(out)["PhanHoi"]
    text = [[c.value for c in row] for row in ws.iter_rows()]
    title = next(i for i, row in enumerate(text) if row[0] and str(row[0]).startswith("CÁCH HỆ THỐNG ĐÃ HIỂU"))
    assert text[title + 2][:5] == ["CanBo", "Chức vụ", "Hiệu trởng", "Hiệu trưởng (mã 01)", 1]
