"""The frame the row rules run on, and the within-school cross-row / cross-sheet checks.

`check_frame`: one row per submitted row → the same rows, each field as its canonical text
when it cast cleanly (code, ISO date, digits) and as submitted when it did not, so a Great
Expectations "in set" / "match regex" expectation fails exactly on the bad cells; plus the
derived columns some rules compare (`_pid_digit4` vs `_expected_digit4`, `_age` …) and the
row-level conditions (`_is_TH`, `_has_<field>`).

`cross_row_issues`: one school's typed sheets → one row per failing (row, rule).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from schemas import Field, load_codelist
from transforms.text import fold_series

LEVELS = ("MN", "TH", "THCS")
ISSUE_COLUMNS = ["_rowkey", "rule_id", "detail", "field"]
_OUTCOME = load_codelist("edustat/OUTCOME")


def row_levels(typed: pd.DataFrame, school_levels: pd.Series, grades: Mapping[str, dict], by_grade: bool) -> pd.DataFrame:
    """`_is_MN/_is_TH/_is_THCS` per row: by the learner's grade when known (a PTCS school
    teaches both), else by the school's levels (`school_levels`: tuple per row)."""
    out = pd.DataFrame(index=typed.index)
    grade_level = typed["grade"].map({g: v["level"] for g, v in grades.items()}) if by_grade and "grade" in typed else None
    for lv in LEVELS:
        school_has = school_levels.map(lambda t, lv=lv: lv in t).astype(bool)
        if grade_level is not None:
            out[f"_is_{lv}"] = np.where(grade_level.notna(), grade_level == lv, school_has).astype(bool)
        else:
            out[f"_is_{lv}"] = school_has
    return out


def _canonical(f: Field, raw: pd.Series, typed: pd.Series) -> pd.Series:
    """The cell as its canonical text where it cast, else as submitted (stripped, "" as NA).
    The submitted text is prepared only where it is used: for the types that fall back to it
    and only when some cell did not cast (`fillna` changes only the NA cells; with none it gives
    the same values, dtype, index and name) — a changed school's frames, issue 12."""
    if f.type == "code" or f.type == "school_year" or f.type == "int":
        return _or_submitted(typed.astype("string"), raw)
    if f.type in ("date", "year_or_date"):
        iso = pd.Series(pd.NA, index=typed.index, dtype="string")
        ok = typed.notna()
        iso[ok] = pd.to_datetime(typed[ok]).dt.strftime("%Y-%m-%d")
        return _or_submitted(iso, raw)
    if f.type == "flag":
        return _or_submitted(typed.astype("Int64").astype("string"), raw)
    return typed.astype("string")  # "id" and the free-text types: as cast, never the submitted text


def _or_submitted(canonical: pd.Series, raw: pd.Series) -> pd.Series:
    """`canonical.fillna(submitted)`, the submitted text made only when a cell is NA."""
    if not canonical.isna().any():
        return canonical
    return canonical.fillna(raw.astype("string").str.strip().mask(lambda s: s == ""))


def _pid_columns(pid: pd.Series, sex: pd.Series | None, birth: pd.Series | None) -> dict[str, pd.Series]:
    """Digits of a 12-digit personal ID and what they should be (regulations.md §1.3)."""
    ok = pid.str.fullmatch(r"\d{12}").fillna(False).astype(bool)
    p = pid.where(ok)
    out = {"_pid_province": p.str[:3], "_pid_digit4": p.str[3], "_pid_yy": p.str[4:6]}
    if sex is not None and birth is not None:
        year = pd.to_datetime(birth).dt.year
        century = (year // 100 - 19) * 2  # 1900s: 0/1, 2000s: 2/3, 2100s: 4/5
        female = (sex == "02").astype("Int64")
        digit = (century.astype("Int64") + female).where(sex.isin(["01", "02"]) & year.notna())
        out["_expected_digit4"] = digit.astype("string")
        out["_birth_yy"] = (year % 100).astype("Int64").astype("string").str.zfill(2)
    return {k: v.astype("string") for k, v in out.items()}


def check_frame(
    raw: pd.DataFrame,
    typed: pd.DataFrame,
    fields: Iterable[Field],
    levels: pd.DataFrame,
    start_year: pd.Series,
    conditions: Iterable[str] = (),
    big_list: int = 500,
) -> pd.DataFrame:
    """Grain: one row per submitted row. `raw`/`typed` share the index and `_rowkey`."""
    out: dict[str, pd.Series] = {"_rowkey": raw["_rowkey"]}
    fields = [f for f in fields if f.id in raw.columns]
    for f in fields:
        out[f.id] = _canonical(f, raw[f.id], typed[f.id])
        if f.type == "code" and len(f.codelist) > big_list:
            present = raw[f.id].astype("string").str.strip().fillna("") != ""
            out[f"_known_{f.id}"] = typed[f.id].notna().astype("boolean").where(present, pd.NA)
    for col in levels.columns:
        out[col] = levels[col]
    for fid in conditions:
        out[f"_has_{fid}"] = (typed[fid].notna() if fid in typed else pd.Series(False, index=raw.index)).astype(bool)
    ids = {f.id for f in fields}
    if "personal_id" in ids:
        sex = typed["sex"] if "sex" in typed else None
        birth = typed["birth_date"] if "birth_date" in typed else None
        out.update(_pid_columns(typed["personal_id"].astype("string"), sex, birth))
    if "birth_date" in ids:
        out["_age"] = (start_year - pd.to_datetime(typed["birth_date"]).dt.year).astype("Int64")
    return pd.DataFrame(out, index=raw.index)


# ---------------------------------------------------------------------------------------
# Within-school cross-row and cross-sheet checks (stage c). Each returns issue rows.
# ---------------------------------------------------------------------------------------

def _num(values: pd.Series) -> pd.Series:
    """Numbers as plain float64 (NaN for missing): comparisons then give plain booleans,
    never the NA that Arrow-backed and nullable dtypes propagate."""
    return pd.to_numeric(values, errors="coerce").astype("float64")


def _eq(values: pd.Series, value: object) -> pd.Series:
    """values == value as plain booleans (a blank cell is simply not equal)."""
    return (values == value).fillna(False).astype(bool)


def _issues(rowkeys: pd.Series, rule_id: str, detail: pd.Series | str = "", field: str | None = None) -> pd.DataFrame:
    """Issue rows; `field` names the cell when a rule covers several columns."""
    d = detail if isinstance(detail, pd.Series) else pd.Series(detail, index=rowkeys.index)
    return pd.DataFrame({"_rowkey": rowkeys.to_numpy(), "rule_id": rule_id, "detail": d.astype("string").to_numpy(),
                         "field": field})


def resolve_learner_classes(learners: pd.DataFrame, classes: pd.DataFrame) -> pd.Series:
    """A learner's class as the class_code of the Lop sheet of the same file: exports often
    give the class *name* ("3A1") in the learner's Lớp column; match code first, then name
    (folded). Grain: one value per learner (collection-wide, keyed by `_file`)."""
    if "class_code" not in learners or classes.empty or "class_code" not in classes:
        return pd.Series(pd.NA, index=learners.index, dtype="string")
    left = pd.DataFrame({"_file": learners["_file"].to_numpy(), "k": fold_series(learners["class_code"]).to_numpy()})
    found = pd.Series(pd.NA, index=range(len(left)), dtype="string")
    for col in ("class_code", "class_name"):
        if col not in classes:
            continue
        right = classes.loc[classes[col].notna() & classes["class_code"].notna(),
                            list(dict.fromkeys(["_file", col, "class_code"]))].copy()
        right["k"] = fold_series(right[col]).to_numpy()
        right = right.drop_duplicates(["_file", "k"])[["_file", "k", "class_code"]]
        hit = left.merge(right, on=["_file", "k"], how="left")["class_code"].astype("string")
        found = found.fillna(hit)
    return pd.Series(found.to_numpy(), index=learners.index, dtype="string")


def cross_row_issues(
    tables: Mapping[str, pd.DataFrame],
    *,
    schools: pd.DataFrame,
    period: str,
    start_year: int,
    mappings: Mapping[str, object],
    scales: Mapping[str, object],
    admin: Mapping[str, Mapping[str, str]],
) -> pd.DataFrame:
    """The collection's typed sheets (each with `_file` and `_rowkey`) → issue rows
    (`_rowkey`, rule_id, detail, field), every school at once: rows are matched within their
    own file by `_file`. `schools`: one row per file (index `_file`) with `levels` (tuple),
    commune/district/province codes and `_rowkey` (its Truong row). `scales`: the code list of
    each assessment scale; `admin`: {"district_of": commune→district, "province_of": district→province}."""
    out: list[pd.DataFrame] = []
    learners = tables.get("learners", pd.DataFrame())
    classes = tables.get("classes", pd.DataFrame())
    staff = tables.get("staff", pd.DataFrame())
    grades = mappings["grades"]

    # school: admin units nest (one row per school: a plain loop)
    for key, commune, district, province in zip(schools["_rowkey"], schools["commune_code"], schools["district_code"],
                                                 schools["province_code"]):
        if isinstance(commune, str) and isinstance(district, str) and admin["district_of"].get(commune) not in (None, district):
            out.append(_issues(pd.Series([key]), "school_commune_in_district", str(district)))
        if isinstance(district, str) and isinstance(province, str) and admin["province_of"].get(district) not in (None, province):
            out.append(_issues(pd.Series([key]), "school_district_in_province", str(province)))

    # classes: MN age group agrees with the grade (16 nhà trẻ: 01–03; 17 mẫu giáo: 04–06)
    if {"mn_age_group", "grade"} <= set(classes.columns):
        care = classes["mn_age_group"].map({k: v["care_level"] for k, v in mappings["mn_age_groups"].items()})
        grade_care = classes["grade"].map({g: v.get("care_level") for g, v in grades.items()})
        bad = (care.notna() & grade_care.notna() & (care != grade_care)).fillna(False).astype(bool)
        out.append(_issues(classes.loc[bad, "_rowkey"], "class_mn_age_group_matches_grade",
                           classes.loc[bad, "grade"].map({"16": "nhà trẻ", "17": "mẫu giáo"})))

    if not learners.empty and "grade" in learners:
        # a learner of a level the school does not declare would fall off every form
        glevel = learners["grade"].map({g: v["level"] for g, v in grades.items()})
        declared = pd.Series(False, index=learners.index)
        for lv in LEVELS:
            has = learners["_file"].map(schools["levels"].map(lambda t, lv=lv: lv in t)).fillna(False).astype(bool)
            declared |= (glevel == lv).fillna(False).astype(bool) & has
        bad = glevel.notna() & ~declared
        detail = learners.loc[bad, "_file"].map(schools["levels"].map(", ".join))
        out.append(_issues(learners.loc[bad, "_rowkey"], "student_grade_in_school_levels", detail))

    if not learners.empty and "class_code" in learners:
        cls = resolve_learner_classes(learners, classes)
        missing = learners["class_code"].notna() & cls.isna()
        out.append(_issues(learners.loc[missing, "_rowkey"], "student_class_exists"))
        cinfo = (classes.dropna(subset=["class_code"]).drop_duplicates(["_file", "class_code"])
                 if not classes.empty and "class_code" in classes else pd.DataFrame())
        if len(cinfo) and "grade" in learners and "grade" in cinfo:
            keyed = pd.DataFrame({"_file": learners["_file"].to_numpy(), "class_code": cls.to_numpy()})
            cols = ["_file", "class_code", "grade"] + (["mixed"] if "mixed" in cinfo else [])
            joined = keyed.merge(cinfo[cols].rename(columns={"grade": "cgrade"}), on=["_file", "class_code"], how="left")
            cgrade = pd.Series(joined["cgrade"].to_numpy(), index=learners.index)
            mixed = (_num(pd.Series(joined["mixed"].to_numpy(), index=learners.index)).fillna(0)
                     if "mixed" in joined else pd.Series(0.0, index=learners.index))
            lnum = _num(learners["grade"].map({g: v.get("number") for g, v in grades.items()}))
            cnum = _num(cgrade.map({g: v.get("number") for g, v in grades.items()}))
            same = (learners["grade"] == cgrade).fillna(False).astype(bool)
            # a lớp ghép of k grades holds learners of up to k adjacent grades
            in_mixed = (mixed >= 2) & ((lnum - cnum).abs() <= (mixed - 1))
            mn_mixed = ((mixed >= 2) & learners["grade"].isin(["16", "17"]) & cgrade.isin(["16", "17"])).fillna(False).astype(bool)
            bad = (learners["grade"].notna() & cgrade.notna() & ~same & ~in_mixed & ~mn_mixed).fillna(False).astype(bool)
            detail = "lớp " + learners.loc[bad, "class_code"].astype("string") + " thuộc khối " + cgrade[bad].astype("string")
            out.append(_issues(learners.loc[bad, "_rowkey"], "student_grade_matches_class", detail))

        # class size caps, counted on enrolled learners of the same file
        if len(cinfo):
            enrolled_codes = mappings["learner_status"]["enrolled"]
            enrolled = (learners["status"].isin(enrolled_codes) if "status" in learners
                        else pd.Series(True, index=learners.index)).fillna(False).astype(bool)
            size = (pd.DataFrame({"_file": learners["_file"], "class_code": cls})[enrolled & cls.notna()]
                    .groupby(["_file", "class_code"]).size().rename("n").reset_index())
            c = cinfo.merge(size, on=["_file", "class_code"], how="left").set_index(cinfo.index)
            n = c["n"].fillna(0).astype(int)
            caps = mappings["class_size_caps"]
            cap = pd.Series(np.nan, index=c.index)
            glevel = c["grade"].map({g: v["level"] for g, v in grades.items()}) if "grade" in c else pd.Series(pd.NA, index=c.index)
            mixed_c = _num(c["mixed"]).fillna(0) if "mixed" in c else pd.Series(0.0, index=c.index)
            cap[(glevel == "TH").fillna(False).astype(bool)] = caps["TH"]
            cap[((glevel == "TH") & (mixed_c >= 2)).fillna(False).astype(bool)] = caps["TH_mixed"]
            cap[(glevel == "THCS").fillna(False).astype(bool)] = caps["THCS"]
            if "mn_age_group" in c:
                mn_cap = c["mn_age_group"].map({k: v["cap"] for k, v in mappings["mn_age_groups"].items()})
                cap = cap.fillna(_num(mn_cap))
            over = cap.notna() & (n > cap)
            detail = n[over].astype(str) + " học sinh, vượt sĩ số tối đa " + cap[over].astype(int).astype(str)
            out.append(_issues(c.loc[over, "_rowkey"], "class_size_cap", detail))

    if not learners.empty and "birth_date" in learners and "grade" in learners:
        age = start_year - _num(pd.to_datetime(learners["birth_date"]).dt.year)
        num = _num(learners["grade"].map({g: v.get("number") for g, v in grades.items()}))
        afg = mappings["age_for_grade"]
        expected = num + afg["offset"]
        bad = num.notna() & age.notna() & ((age < expected - afg["early"]) | (age > expected + afg["late"]))
        mn = learners["grade"].isin(["16", "17"]).fillna(False).astype(bool) & age.notna()
        # preschool: 3 months to 6 years (+3 for disabled children) — the age in calendar years
        extra = learners["disability_type"].notna() * mappings["mn_age_years"]["disabled_extra_years"] if "disability_type" in learners else 0
        bad_mn = mn & ((age < 0) | (age > mappings["mn_age_years"]["max_years"] + extra))
        bad = bad | bad_mn
        out.append(_issues(learners.loc[bad, "_rowkey"], "student_age_for_grade", age[bad].astype(int).astype(str)))

    if not staff.empty and "position" in staff:
        active = (staff["status"].isin(["01", "07"]) if "status" in staff else pd.Series(True, index=staff.index)).fillna(False).astype(bool)
        principal = (staff["position"] == "01").fillna(False).astype(bool) & active
        count = principal.groupby(staff["_file"]).sum()
        none = count.index[count == 0]
        first = staff.drop_duplicates("_file")
        out.append(_issues(first.loc[first["_file"].isin(none), "_rowkey"], "staff_principal_missing"))
        many = staff[principal & staff["_file"].map(count).gt(1)]
        out.append(_issues(many["_rowkey"], "staff_principal_multiple", many["_file"].map(count).astype(int).astype(str)))

    if period == "cuoi_nam" and not learners.empty:
        out.extend(_end_of_year(learners, start_year, mappings, scales))
    frames = [f for f in out if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ISSUE_COLUMNS)


def _scale_of(grade: pd.Series, start_year: int, mappings) -> pd.Series:
    new_from = mappings["assessment_new_from"]
    return grade.map(lambda g: None if pd.isna(g) or g not in new_from else ("new" if start_year >= new_from[g] else "old"))


def _end_of_year(learners: pd.DataFrame, start_year: int, mappings, scales) -> list[pd.DataFrame]:
    """End-of-year rules (regulations.md §4.4). Each THCS learner is judged on the scale of
    their grade in this school year (`_scale_of`): TT 22/2021 ("new") rules are errors, TT 58/2011
    ("old") ones warnings, since that circular's promotion conditions are [INF] in the spec.
    Primary has no absence-based retention; its promotion check is a warning ([INF]: under
    TT 27/2020 the principal decides on a pupil who has not completed the grade)."""
    out = []
    idx = learners.index
    grades = mappings["grades"]
    level = learners["grade"].map({g: v["level"] for g, v in grades.items()})
    num = _num(learners["grade"].map({g: v.get("number") for g, v in grades.items()}))
    scale = _scale_of(learners["grade"], start_year, mappings)
    thcs = _eq(level, "THCS")
    thcs_new, thcs_old = thcs & _eq(scale, "new"), thcs & _eq(scale, "old")
    # TT 22/2021 Art. 12: a disabled pupil's promotion is decided by the principal from the
    # individual education plan — not checked against the general thresholds
    disabled = (learners["disability_type"].notna() if "disability_type" in learners
                else pd.Series(False, index=idx)).fillna(False).astype(bool)
    conf = mappings["assessment_scales"]["THCS"]
    rank = {}  # (column, scale) → rank code per row (1 best)
    for col in ("conduct", "learning"):
        if col not in learners:
            continue
        val = learners[col].astype("string")
        for which in ("new", "old"):
            cl = scales[conf[which][col]]  # the scale's code list: labels, rank codes and synonyms
            m = thcs & _eq(scale, which) & val.notna()
            codes = val[m].map(cl.resolve)
            bad_idx = codes[codes.isna()].index
            circular = conf[which]["circular"]
            out.append(_issues(learners.loc[bad_idx, "_rowkey"], "student_result_scale",
                               pd.Series(f"{circular}: " + ", ".join(cl.labels), index=bad_idx), field=col))
            rank[(col, which)] = codes
    outcome = learners["outcome"] if "outcome" in learners else pd.Series(pd.NA, index=idx, dtype="string")
    promoted = _eq(outcome, "1")
    absent = _num(learners["absent_days"]) if "absent_days" in learners else pd.Series(np.nan, index=idx)
    over = promoted & (absent > mappings["max_absent_days"]) & ~disabled
    out.append(_issues(learners.loc[over & thcs_new, "_rowkey"], "student_absent_days_max"))
    out.append(_issues(learners.loc[over & thcs_old, "_rowkey"], "student_absent_days_max_tt58"))
    for which, rule, passing in (("new", "student_promotion_consistent", "Đạt"),
                                 ("old", "student_promotion_consistent_tt58", "Trung bình")):
        failing = pd.Series(False, index=idx)
        for col in ("conduct", "learning"):
            if (col, which) in rank:
                # rank code ≤ 3 passes: Đạt (TT 22) and Trung bình (TT 58) are both code 3
                failing |= _num(rank[(col, which)].reindex(idx)) > 3
        bad = promoted & failing & thcs & _eq(scale, which) & ~disabled
        out.append(_issues(learners.loc[bad, "_rowkey"], rule, f"rèn luyện hoặc học tập dưới mức {passing}"))
    th = _eq(level, "TH")
    # TT 27/2020 grades owe a year result (HTXS/HTT/HT/CHT); TT 30/2014 grades do not have one
    enrolled = learners["status"].isin(mappings["learner_status"]["enrolled"]).fillna(False).astype(bool) \
        if "status" in learners else pd.Series(True, index=idx)
    # blank as written: a value that did not cast is its own (code) error, not a missing one
    written = "_written_year_result"
    blank = (~learners[written].astype(bool)) if written in learners else (
        learners["year_result"].isna() if "year_result" in learners else pd.Series(True, index=idx))
    bad = th & _eq(scale, "new") & enrolled & blank
    out.append(_issues(learners.loc[bad, "_rowkey"], "student_year_result_required_tt27",
                       num[bad].astype("Int64").astype("string"), field="year_result"))
    not_done = pd.Series(False, index=idx)
    if "year_result" in learners:
        not_done |= _eq(learners["year_result"], "4")
    if "completed_grade" in learners and "year_result" in learners:
        # a blank 'Hoàn thành chương trình lớp học' is its own (required) error, not a 0
        not_done |= _eq(learners["completed_grade"], 0) & learners["year_result"].notna()
    bad = promoted & th & not_done
    out.append(_issues(learners.loc[bad, "_rowkey"], "student_promotion_consistent_th", "chưa hoàn thành"))
    if "graduated" in learners:
        grad = _eq(learners["graduated"], 1)
        bad = grad & num.notna() & (num != 9)
        out.append(_issues(learners.loc[bad, "_rowkey"], "student_graduated_grade9",
                           "khối " + num[bad].astype(int).astype(str)))
        labels = {c: _OUTCOME.label(c) for c in _OUTCOME.codes}
        bad = grad & _eq(num, 9) & ~promoted
        detail = outcome[bad].map(lambda c: labels.get(c, c) if isinstance(c, str) else "(trống)")
        out.append(_issues(learners.loc[bad, "_rowkey"], "student_graduation_promoted", detail))
    if "completed_primary" in learners:
        bad = _eq(learners["completed_primary"], 1) & num.notna() & (num != 5)
        out.append(_issues(learners.loc[bad, "_rowkey"], "student_completed_primary_grade5"))
    return out
