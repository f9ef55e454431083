"""Derived columns the curated layer carries for the reports, from a school's typed sheets.

Each function: one row per submitted row → the same rows with derived columns added
(never mutating its input). Definitions follow the forms' own words (report-forms.md):
age = school-year start year − birth year; DTTS = ethnicity not 01 Kinh and not 55.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd



def _grade_attr(grade: pd.Series, mappings: Mapping, key: str) -> pd.Series:
    return grade.map({g: v.get(key) for g, v in mappings["grades"].items()})


def _people(frame: pd.DataFrame, start_year: int, mappings: Mapping) -> dict[str, pd.Series]:
    year = pd.to_datetime(frame["birth_date"]).dt.year if "birth_date" in frame else pd.Series(np.nan, index=frame.index)
    not_minority = set(mappings["ethnicity_not_minority"])
    eth = frame["ethnicity"] if "ethnicity" in frame else pd.Series(pd.NA, index=frame.index, dtype="string")
    return {
        "birth_year": year.astype("Int64"),
        "age": (start_year - year).astype("Int64"),
        "is_female": (frame.get("sex") == "02").fillna(False).astype(bool),
        "is_dtts": (eth.notna() & ~eth.isin(not_minority)).astype(bool),
    }


def derive_school(school: Mapping[str, object], levels: tuple[str, ...], mappings: Mapping) -> dict[str, object]:
    """One school's key/value record → the same with ownership group, levels, MN school type."""
    out = dict(school)
    out["levels"] = ",".join(levels)
    out["ownership_group"] = mappings["ownership_groups"].get(school.get("ownership"))
    out["mn_school_type"] = mappings["mn_school_type"].get(school.get("education_level"))
    return out


def derive_learners(frame: pd.DataFrame, start_year: int, mappings: Mapping,
                    scales: Mapping | None = None) -> pd.DataFrame:
    """+ level, grade_number, care_level, birth_year, age, is_female, is_dtts, is_enrolled,
    is_on_age, assessment_scale, conduct_code, learning_code, is_very_small_minority,
    is_disabled. `scales`: each scale's code list (edustat/RATING_TT22 …; labels, codes and
    synonyms resolve)."""
    out = frame.copy()
    grade = frame["grade"] if "grade" in frame else pd.Series(pd.NA, index=frame.index, dtype="string")
    out["level"] = _grade_attr(grade, mappings, "level").astype("string")
    out["grade_number"] = pd.to_numeric(_grade_attr(grade, mappings, "number"), errors="coerce").astype("Int64")
    out["care_level"] = _grade_attr(grade, mappings, "care_level").astype("string")
    for k, v in _people(frame, start_year, mappings).items():
        out[k] = v
    status = frame["status"] if "status" in frame else pd.Series("01", index=frame.index)
    out["is_enrolled"] = status.isin(mappings["learner_status"]["enrolled"]).fillna(False).astype(bool)
    offset = mappings["age_for_grade"]["offset"]
    out["is_on_age"] = (out["age"] == out["grade_number"] + offset).fillna(False).astype(bool)
    # end of year: the assessment scale of the learner's grade this school year, and the
    # conduct / learning labels as that scale's codes (1 best)
    new_from = mappings["assessment_new_from"]
    out["assessment_scale"] = grade.map(lambda g: None if pd.isna(g) or g not in new_from
                                        else ("new" if start_year >= new_from[g] else "old")).astype("string")
    for col in ("conduct", "learning"):
        codes = pd.Series(pd.NA, index=frame.index, dtype="string")
        if col in frame and scales:
            for which in ("new", "old"):
                cl = scales.get(mappings["assessment_scales"]["THCS"][which][col])
                if cl is None:
                    continue
                m = ((out["assessment_scale"] == which) & (out["level"] == "THCS") & frame[col].notna()).fillna(False).astype(bool)
                codes = codes.mask(m, frame.loc[m, col].astype("string").map(cl.resolve))
        out[f"{col}_code"] = codes.astype("string")
    eth = frame["ethnicity"] if "ethnicity" in frame else pd.Series(pd.NA, index=frame.index)
    out["is_very_small_minority"] = eth.isin(mappings["very_small_minorities"]).fillna(False).astype(bool)
    out["is_disabled"] = (frame["disability_type"].notna() if "disability_type" in frame else pd.Series(False, index=frame.index)).astype(bool)
    return out


def staff_role(frame: pd.DataFrame, mappings: Mapping) -> pd.Series:
    """The forms' staff role of each row: first matching rule of `staff_roles`."""
    role = pd.Series(pd.NA, index=frame.index, dtype="string")
    for rule in mappings["staff_roles"]:
        hit = pd.Series(True, index=frame.index)
        for key in ("position", "staff_group", "extra_duty"):
            if key in rule:
                col = frame[key] if key in frame else pd.Series(pd.NA, index=frame.index)
                hit &= col.isin(rule[key]).fillna(False).astype(bool)
        role = role.mask(role.isna() & hit, rule["role"])
    return role


def derive_staff(frame: pd.DataFrame, start_year: int, mappings: Mapping, levels: tuple[str, ...],
                 primary_subjects: frozenset[str] = frozenset()) -> pd.DataFrame:
    """+ level, role, training_bucket, training_standard_derived, contract_bucket, birth_year,
    age, is_female, is_dtts, age_band, is_active. A school of several levels reports a teacher
    of a primary-only subject on the TH form and everyone else on its highest level's form."""
    out = frame.copy()
    top = levels[-1] if levels else None
    level = pd.Series(top, index=frame.index, dtype="string")
    if len(levels) > 1 and "TH" in levels and "subject" in frame:
        level = level.mask(frame["subject"].isin(primary_subjects).fillna(False).astype(bool), "TH")
    if len(levels) > 1 and "MN" in levels and "mn_care_level" in frame:
        # staff of a school's preschool section (they say nhà trẻ / mẫu giáo) report on 01-MN
        level = level.mask(frame["mn_care_level"].notna().fillna(False).astype(bool), "MN")
    out["level"] = level
    for k, v in _people(frame, start_year, mappings).items():
        out[k] = v
    out["role"] = staff_role(frame, mappings)
    tl = frame["training_level"] if "training_level" in frame else pd.Series(pd.NA, index=frame.index)
    out["training_bucket"] = tl.map(mappings["training_buckets"]).astype("string")
    level = levels[-1] if levels else None  # a PTCS school's teachers are held to the THCS standard [INF]
    table = mappings["training_standard"].get(level, {})
    derived = out["training_bucket"].map(table).astype("string")
    given = frame["training_standard"] if "training_standard" in frame else pd.Series(pd.NA, index=frame.index, dtype="string")
    out["training_standard_derived"] = given.astype("string").fillna(derived)
    ct = frame["contract_type"] if "contract_type" in frame else pd.Series(pd.NA, index=frame.index)
    out["contract_bucket"] = ct.map(mappings["contract_buckets"]).astype("string")
    bands = mappings["teacher_age_bands"]
    band = pd.Series(pd.NA, index=frame.index, dtype="string")
    for lo, hi in bands:
        band = band.mask((out["age"] >= lo) & (out["age"] <= hi), f"{lo}-{hi}")
    out["age_band"] = band
    status = frame["status"] if "status" in frame else pd.Series("01", index=frame.index)
    out["is_active"] = status.isin(["01", "07"]).fillna(False).astype(bool)
    return out


def derive_classes(frame: pd.DataFrame, mappings: Mapping) -> pd.DataFrame:
    """+ level, grade_number, care_level, size_cap."""
    out = frame.copy()
    grade = frame["grade"] if "grade" in frame else pd.Series(pd.NA, index=frame.index, dtype="string")
    out["level"] = _grade_attr(grade, mappings, "level").astype("string")
    out["grade_number"] = pd.to_numeric(_grade_attr(grade, mappings, "number"), errors="coerce").astype("Int64")
    out["care_level"] = _grade_attr(grade, mappings, "care_level").astype("string")
    caps = mappings["class_size_caps"]
    cap = out["level"].map({"TH": caps["TH"], "THCS": caps["THCS"]})
    mixed = pd.to_numeric(frame.get("mixed"), errors="coerce").astype("float64") if "mixed" in frame else pd.Series(0.0, index=frame.index)
    cap = cap.mask((out["level"] == "TH") & (mixed >= 2), caps["TH_mixed"])
    if "mn_age_group" in frame:
        cap = cap.fillna(frame["mn_age_group"].map({k: v["cap"] for k, v in mappings["mn_age_groups"].items()}))
    out["size_cap"] = pd.to_numeric(cap, errors="coerce").astype("Int64")
    return out
