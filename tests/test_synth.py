"""The synthetic city generator: determinism, realism invariants, end-of-year continuity, and
injected errors that sit exactly where the manifest says."""
from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from openpyxl.utils.cell import column_index_from_string, coordinate_from_string

from edustat.synth import (
    CLEAN_EVERY,
    EXPORT_STYLES,
    CitySpec,
    generate_city,
    generate_city_tables,
    plan_city,
)
from schemas import load_codelist, load_contract

SEED = 2022
PT_GRADES = [f"{g:02d}" for g in range(1, 10)]


@pytest.fixture(scope="module")
def start() -> list:
    return generate_city_tables(schools=6, seed=SEED)


@pytest.fixture(scope="module")
def end() -> list:
    return generate_city_tables(schools=6, seed=SEED, period="cuoi_nam")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("city")
    generate_city(out, schools=5, seed=7, export_share=0.6, error_rate=0.03, period="cuoi_nam")
    return out, json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def _all(city: list, sheet: str) -> pd.DataFrame:
    return pd.concat([st.tables[sheet].assign(_school=st.plan.school_code,
                                              _levels="+".join(st.plan.levels)) for st in city],
                     ignore_index=True)


def _sheet_values(path: Path) -> dict[str, list[tuple]]:
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        return {ws.title: list(ws.iter_rows(values_only=True)) for ws in wb.worksheets}
    finally:
        wb.close()


def _cell_text(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.strftime("%d/%m/%Y")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_city_whatever_the_workers(tmp_path):
    args = dict(schools=3, seed=11, export_share=0.67, error_rate=0.02)
    a = generate_city(tmp_path / "a", workers=1, **args)
    b = generate_city(tmp_path / "b", workers=2, **args)
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    assert a == b
    for s in a.schools:
        assert _sheet_values(tmp_path / "a" / s.file) == _sheet_values(tmp_path / "b" / s.file)


def test_another_seed_gives_another_city():
    a = generate_city_tables(schools=3, seed=1)
    b = generate_city_tables(schools=3, seed=2)
    assert [s.plan for s in a] != [s.plan for s in b]
    assert not set(_all(a, "learners").student_code) & set(_all(b, "learners").student_code)


def test_error_rate_and_export_share_do_not_change_the_population():
    base = generate_city_tables(schools=4, seed=5)
    other = generate_city_tables(schools=4, seed=5, export_share=1.0, error_rate=0.05)
    assert any(y.errors for y in other)
    for x, y in zip(base, other):
        assert x.plan.school_code == y.plan.school_code
        for sheet in ("learners", "staff"):
            hit = [e.row for e in y.errors if e.sheet_id == sheet]
            pd.testing.assert_frame_equal(x.tables[sheet].drop(index=hit), y.tables[sheet].drop(index=hit))


# ----------------------------------------------------------------------------- the city plan


def test_level_mix_codes_and_wards_of_thu_dau_mot():
    plans = plan_city(CitySpec(schools=200, seed=3))
    codes = [p.school_code for p in plans]
    assert len(set(codes)) == 200 and all(len(c) == 8 and c.startswith("74718") for c in codes)
    assert len({p.school_name for p in plans}) == 200
    kinds = Counter(p.levels[0] if len(p.levels) == 1 else "PTCS" for p in plans)
    assert 0.33 <= kinds["MN"] / 200 <= 0.47 and 0.28 <= kinds["TH"] / 200 <= 0.42
    assert 0.15 <= (kinds["THCS"] + kinds["PTCS"]) / 200 <= 0.32
    xa = load_codelist("moet-2020/DM_XA")
    district = {c: a["ma_qh"] for c, a in zip(xa.codes, xa.attributes)}
    assert all(district[p.commune_code] == "718" and p.commune_code.startswith("257") for p in plans)
    ownership = Counter((p.levels == ("MN",), p.ownership) for p in plans)
    assert ownership[(True, "09")] > 0 and ownership[(False, "01")] > ownership[(False, "09")]


def test_any_district_works():
    plans = plan_city(CitySpec(schools=8, seed=1, province_code="74", district_code="720"))
    xa = load_codelist("moet-2020/DM_XA")
    district = {c: a["ma_qh"] for c, a in zip(xa.codes, xa.attributes)}
    assert all(district[p.commune_code] == "720" for p in plans)
    assert all(p.school_code.startswith("74720") for p in plans)


def test_a_province_with_a_leading_zero_gets_padding_notices(tmp_path):
    m = generate_city(tmp_path, schools=3, seed=4, province_code="01", district_code="001",
                      export_share=1.0, workers=1)
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert all(s.school_code.startswith("01001") for s in m.schools)
    numeric = [s for s in m.schools if s.export_options["ids_as_numbers"]]
    assert len(numeric) == 1  # three export schools: each export style once
    rules = Counter(n.rule for n in m.notices)
    assert rules["school_code_padded"] == 1 and rules["student_code_padded"] > 0
    assert rules["student_personal_id_padded"] > 0 and rules["staff_personal_id_padded"] > 0
    _check_cells(tmp_path, manifest)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError):
        generate_city(tmp_path, schools=2, seed=1, period="giua_nam")
    with pytest.raises(ValueError):
        generate_city(tmp_path, schools=2, seed=1, school_year="2022")
    with pytest.raises(ValueError):
        plan_city(CitySpec(schools=2, seed=1, district_code="999"))


# ----------------------------------------------------------------------------- invariants of a clean run


def test_every_coded_value_is_in_its_code_list(start, end):
    c = load_contract()
    for city in (start, end):
        for st in city:
            for f in c.sheet("school").fields:
                if f.codelist is not None and f.id in st.school:
                    assert st.school[f.id] in f.codelist.codes, f.id
            for sheet_id, df in st.tables.items():
                for f in c.sheet(sheet_id).fields:
                    if f.codelist is None or f.id not in df:
                        continue
                    values = set(df[f.id].dropna())
                    assert values <= set(f.codelist.codes), (sheet_id, f.id, values - set(f.codelist.codes))


def test_personal_ids_agree_with_sex_birth_year_and_province(start):
    provinces = {"0" + p for p in load_codelist("moet-2020/DM_TINH").codes}
    people = pd.concat([_all(start, "learners"), _all(start, "staff")], ignore_index=True)
    with_id = people[people.personal_id.notna()]
    pid = with_id.personal_id
    assert pid.str.fullmatch(r"\d{12}").all()
    assert pid.str[:3].isin(provinces).all()
    year = with_id.birth_date.map(lambda d: d.year)
    female = (with_id.sex == "02").astype(int)
    assert (pid.str[3].astype(int) == (year // 100 - 19) * 2 + female).all()
    assert (pid.str[4:6].astype(int) == year % 100).all()
    assert pid.is_unique
    # most learners were registered in the school's province, some elsewhere
    home = (pid.str[:3] == "074").mean()
    assert 0.5 < home < 0.9


def test_personal_id_blanks_are_realistic(start):
    learners = _all(start, "learners")
    mn = learners.grade.isin(["16", "17"])
    assert 0.25 < learners[mn].personal_id.isna().mean() < 0.55
    assert learners[~mn].personal_id.isna().mean() < 0.08


def test_student_codes_are_unique_in_the_city(start):
    codes = _all(start, "learners").student_code
    assert codes.str.fullmatch(r"74\d{8}").all() and codes.is_unique
    staff = _all(start, "staff").staff_code
    assert staff.is_unique


@pytest.mark.parametrize("period", ["start", "end"])
def test_class_sizes_stay_within_cap_plus_three(period, request):
    m = load_contract().mappings
    mn_caps = {k: v["cap"] for k, v in m["mn_age_groups"].items()}
    gone = m["learner_status"]["transferred_out"] + m["learner_status"]["dropped_out"]
    for st in request.getfixturevalue(period):
        classes = st.tables["classes"].set_index("class_code")
        learners = st.tables["learners"]
        sizes = learners[~learners.status.isin(gone)].groupby("class_code").size()
        for code, size in sizes.items():
            c = classes.loc[code]
            if c.grade in ("16", "17"):
                cap = mn_caps[c.mn_age_group]
            elif c.mixed:
                cap = m["class_size_caps"]["TH_mixed"]
            else:
                cap = m["class_size_caps"]["TH" if int(c.grade) <= 5 else "THCS"]
            assert size <= cap + 3, (st.plan.school_code, code, size, cap)
        assert set(sizes.index) == set(classes.index)  # no empty class


def test_ages_fit_the_grade(start):
    learners = _all(start, "learners")
    pt = learners[learners.grade.isin(PT_GRADES)]
    age = 2022 - pt.birth_date.map(lambda d: d.year)
    on_band = (age >= pt.grade.astype(int) + 4) & (age <= pt.grade.astype(int) + 8)
    assert on_band.mean() >= 0.95
    assert (age == pt.grade.astype(int) + 5).mean() > 0.9
    mn = learners[learners.grade.isin(["16", "17"])]
    months = mn.birth_date.map(lambda d: (2022 - d.year) * 12 + 9 - d.month)
    assert months.between(3, 72).all()


def test_learners_sit_in_existing_classes_of_their_grade(start):
    for st in start:
        classes = st.tables["classes"].set_index("class_code")
        learners = st.tables["learners"]
        assert learners.class_code.isin(classes.index).all()
        class_grade = learners.class_code.map(classes.grade)
        mixed = learners.class_code.map(classes.mixed) > 0
        ok = (learners.grade == class_grade) | (
            mixed & (learners.grade.astype(int) - class_grade.astype(int)).between(0, 1))
        assert ok.all()
        assert classes.index.is_unique


def test_learner_mix(start):
    learners = _all(start, "learners")
    assert 0.49 < (learners.sex == "01").mean() < 0.54
    assert 0.92 < (learners.ethnicity == "01").mean() < 0.98
    assert 0.30 < learners.full_name.str.startswith("Nguyễn ").mean() < 0.46
    assert learners.full_name.str.split().str.len().between(3, 5).all()
    pt = learners[learners.grade.isin(PT_GRADES)]
    promoted = pt[~pt.grade.isin(["01", "06"])].entry_type
    assert (promoted == "4").mean() > 0.95 and (pt.entry_type == "3").any()
    assert (learners.status == "01").mean() > 0.98


def test_staff_make_sense(start):
    for st in start:
        staff = st.tables["staff"]
        assert (staff.position == "01").sum() == 1  # one principal
        assert 1 <= (staff.position == "02").sum() <= 3
        n_teachers = (staff.staff_group == "03").sum()
        n_classes = len(st.tables["classes"])
        assert 1.0 * n_classes <= n_teachers <= 2.3 * n_classes
        if "MN" in st.plan.levels:
            assert staff.mn_care_level.notna().all()
            assert (staff[staff.staff_group == "03"].sex == "02").mean() > 0.9
        else:
            assert (staff.extra_duty == "07").sum() == 1  # Tổng phụ trách Đội
            assert staff.training_level[staff.staff_group != "02"].notna().all()
        if "THCS" in st.plan.levels:
            subjects = load_codelist("moet-2020/DM_MON_DAY_GV")
            c2 = {c for c, a in zip(subjects.codes, subjects.attributes) if a.get("is_c2") == "1"}
            thcs_teachers = staff[(staff.staff_group == "03") & staff.subject.isin(c2)]
            assert len(thcs_teachers) > 0
        age = 2022 - staff.birth_date.map(lambda d: d.year)
        assert age.between(22, 60).all()


def test_rooms_cover_the_classes(start):
    for st in start:
        rooms = st.tables["rooms"]
        classrooms = rooms[rooms.room_type == "01"][["permanent", "semi_permanent", "temporary"]].sum().sum()
        assert 0.8 * len(st.tables["classes"]) <= classrooms <= len(st.tables["classes"]) + 2
        if "MN" in st.plan.levels:
            assert rooms.care_level.notna().all()
            assert not rooms.duplicated(["room_type", "care_level"]).any()
        else:
            assert rooms.room_type.is_unique


# ----------------------------------------------------------------------------- end of year


def test_end_of_year_continues_the_same_cohort(start, end):
    assert [s.plan for s in start] == [s.plan for s in end]
    for a, b in zip(start, end):
        la, lb = a.tables["learners"], b.tables["learners"]
        assert set(la.student_code) <= set(lb.student_code)
        arrived = lb[~lb.student_code.isin(la.student_code)]
        assert arrived.status.isin(["02", "06"]).all() and arrived.status_date.notna().all()
        same = la.merge(lb, on="student_code", suffixes=("_a", "_b"))
        for col in ("personal_id", "full_name", "birth_date", "sex", "class_code", "grade"):
            assert same[f"{col}_a"].fillna("").equals(same[f"{col}_b"].fillna("")), col
        pd.testing.assert_frame_equal(a.tables["staff"], b.tables["staff"])
        pd.testing.assert_frame_equal(a.tables["classes"], b.tables["classes"])


def test_end_of_year_results_are_consistent(end):
    learners = _all(end, "learners")
    m = load_contract().mappings
    left = learners.status.isin(m["learner_status"]["transferred_out"])
    dropped = learners.status.isin(m["learner_status"]["dropped_out"])
    assert left.any() and learners[left].status_date.notna().all()
    assert learners[dropped].dropout_reason.notna().all()
    pt = learners.grade.isin(PT_GRADES)
    assert (learners[dropped & pt].outcome == "4").all()
    active = pt & ~left & ~dropped

    th = learners[active & learners.grade.isin(PT_GRADES[:5])]
    assert th.year_result.isin(["1", "2", "3", "4"]).all()
    assert ((th.outcome == "3") == (th.year_result == "4")).all()
    assert ((th.completed_grade == 0) == (th.year_result == "4")).all()
    assert th.completed_primary.notna().eq(th.grade == "05").all()
    assert set(th.year_result) >= {"1", "2", "3"}

    thcs = learners[active & learners.grade.isin(PT_GRADES[5:])]
    assert len(thcs)
    new = thcs.grade.map(lambda g: 2022 >= int(m["assessment_new_from"][g]))
    tt22 = list(load_codelist("edustat/RATING_TT22").labels)
    for measure, old_ref in (("conduct", "edustat/CONDUCT_TT58"), ("learning", "edustat/LEARNING_TT58")):
        old = list(load_codelist(old_ref).labels)
        assert thcs[new][measure].isin(tt22).all()
        assert thcs[~new][measure].isin(old).all()
    below = (thcs.conduct.isin(["Chưa đạt", "Yếu"]) | thcs.learning.isin(["Chưa đạt", "Yếu", "Kém"])
             | (thcs.absent_days > 45))
    assert ((thcs.outcome == "3") == below).all()
    assert thcs.outcome.isin(["1", "3"]).all()
    g9 = thcs[thcs.grade == "09"]
    assert (g9.graduated == 1).eq(g9.outcome == "1").all()
    assert g9.graduation_rank.notna().eq(g9.graduated == 1).all()
    assert thcs[thcs.grade != "09"].graduated.isna().all()
    assert thcs[thcs.outcome == "3"].title.isna().all()


# ----------------------------------------------------------------------------- injected errors


def _check_cells(out: Path, manifest: dict) -> None:
    """Every error and notice of the manifest: its header above, its value in the cell."""
    books: dict[str, openpyxl.Workbook] = {}
    for e in manifest["errors"] + manifest["notices"]:
        if e["file"] not in books:
            books[e["file"]] = openpyxl.load_workbook(out / e["file"])
        ws = books[e["file"]][e["sheet"]]
        col, row = coordinate_from_string(e["cell"])
        assert row == e["excel_row"]
        if e["sheet"] == "Truong":  # key/value sheet: the field's label is in column A
            assert ws.cell(row=row, column=1).value == e["header"], e
        else:  # the header sits above, under at most a few title rows
            top = [ws.cell(row=r, column=column_index_from_string(col)).value for r in range(1, min(row, 6))]
            assert e["header"] in top, e
        assert _cell_text(ws[e["cell"]].value) == e["written"], e
        if not e["kind"].startswith("leading_zero"):
            assert e["original"] != e["injected"], e
            assert e["rule"].startswith("student_" if e["sheet"] == "HocSinh" else "staff_")
    for wb in books.values():
        wb.close()


def test_injected_errors_sit_in_the_cells_the_manifest_names(written):
    out, manifest = written
    assert manifest["errors"], "an error rate of 3% over thousands of rows injects errors"
    _check_cells(out, manifest)
    rows = Counter((e["file"], e["sheet"], e["excel_row"]) for e in manifest["errors"])
    assert max(rows.values()) == 1  # at most one error per row
    kinds = {e["kind"] for e in manifest["errors"]}
    assert len(kinds) >= 6


def test_clean_schools_have_no_errors(written):
    _, manifest = written
    with_errors = {e["school_code"] for e in manifest["errors"]}
    plans = plan_city(CitySpec(schools=5, seed=7, export_share=0.6, error_rate=0.03))
    for p, s in zip(plans, manifest["schools"]):
        assert p.school_code == s["school_code"]
        if p.index % CLEAN_EVERY == 0:
            assert p.clean and s["clean"] and p.school_code not in with_errors
    assert with_errors


def test_export_styles_are_recorded_and_zero_losses_are_notices(written):
    out, manifest = written
    styles = Counter(s["style_name"] for s in manifest["schools"])
    assert styles["template"] == 2 and sum(styles.values()) == 5
    for s in manifest["schools"]:
        if s["style"] == "export":
            assert s["export_options"] == {k: getattr(EXPORT_STYLES[s["style_name"]], k)
                                           for k in s["export_options"]}
            assert s["export_options"]["template"] is False
        assert (out / s["file"]).exists() and set(s["rows"]) >= {"classes", "learners", "staff"}
    numeric = {s["school_code"] for s in manifest["schools"] if s["export_options"]["ids_as_numbers"]}
    noticed = {n["school_code"] for n in manifest["notices"]}
    assert noticed == numeric
    for n in manifest["notices"]:
        assert n["written"] == n["original"].lstrip("0")
        # born in provinces 001–009: two zeros go; the reader re-pads 10 and 11 digits alike
        assert n["kind"] == ("leading_zeros_lost" if n["original"].startswith("00") else "leading_zero_lost")
        assert n["rule"].endswith("_padded")
    assert manifest["totals"]["learners"] == sum(s["rows"]["learners"] for s in manifest["schools"])
