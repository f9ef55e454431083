"""The synthetic city's next school year: the start of year N+1 continuing the end of year N.

`continued_population(spec, plan)` builds the start-of-year school of `spec.school_year` from
the end of the previous school year of the same seed (`synth._end_of_year`): the same classes
and rooms, the same staff (same personal IDs and codes; one teacher per school with a raised
training level, which the cross-period checks must accept), and the learners who are still
enrolled at 31 May carried over with the same MOET student code and personal ID:

- promoted (Kết quả lên lớp = 1) → one grade up, in a class of that grade;
- retained (= 3) → the same grade;
- grade-9 leavers, grade-5 completers of a school without lower secondary and preschool
  children of the last age group (5-year-olds) leave; a preschool child moves one age group up
  (and leaves when the school has no class of that group, or no place left in it);
- transferred-out and dropped-out learners are gone;
- the entry grades (1, 6 and every preschool group) are filled up to their classes' planned
  sizes with new entrants, drawn by `synth._learners` with codes and IDs that never reuse one
  of the previous year (MOET codes are for life).

Determinism: the previous year is re-drawn from its own streams; the continuation draws from
`default_rng([seed, i, 3])`. Only one year of continuation: the previous year itself is the
fresh city of the seed.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from edustat import synth as s
from schemas import load_contract

_MN_NEXT = {"01": "02", "02": "03", "03": "04", "04": "05", "05": "06"}


def previous_spec(spec: "s.CitySpec") -> "s.CitySpec":
    """The end of the school year before `spec.school_year`, same seed and city."""
    y = spec.start_year - 1
    return replace(spec, school_year=f"{y}-{y + 1}", period="cuoi_nam", continues=False, error_rate=0.0)


def _planned_classes(spec: "s.CitySpec", plan: "s.SchoolPlan") -> pd.DataFrame:
    """The class plan (sizes, caps, levels) exactly as `synth._population` drew it."""
    rng = np.random.default_rng([spec.seed, plan.index])
    s._school_sheet(rng, spec, plan)
    return s._school_classes(rng, plan)


def _slots(rng: np.random.Generator, classes: pd.DataFrame, idx: np.ndarray, n: int) -> np.ndarray:
    """`n` class positions among `idx`: each class filled up to its planned size (a mixed class
    takes half of it for each of its two grades) before any is filled beyond it, the extra
    spread one per class in turn; shuffled, so which learner sits where is random."""
    sizes = classes["size"].to_numpy()[idx].astype(float)
    sizes = np.where(classes["mixed"].to_numpy()[idx] > 0, np.ceil(sizes / 2), sizes).astype(int)
    base = np.repeat(idx, np.maximum(sizes, 0))
    extra = np.resize(idx, max(n - len(base), 0)) if len(idx) else np.array([], dtype=int)
    return rng.permutation(np.concatenate([base, extra])[:n].astype(int))


def _fresh_codes(rng, spec, plan, n: int, used: set[str]) -> np.ndarray:
    code_map = s._bijection(spec.seed, 2, 10**8)
    prov_num = int(spec.province_code) * 10**8
    out: list[str] = []
    for serial in rng.permutation(s.CODE_BLOCK):
        code = str(prov_num + int(code_map(np.array([plan.index * s.CODE_BLOCK + int(serial)]))[0])).zfill(10)
        if code not in used:
            out.append(code)
            used.add(code)
            if len(out) == n:
                break
    if len(out) < n:  # pragma: no cover - a school's block is 20,000 codes
        raise RuntimeError("student-code block exhausted")
    return np.array(out, dtype=object)


def _fresh_pids(rng, spec, plan, learners: pd.DataFrame, used: set[str]) -> np.ndarray:
    """Personal IDs in the school's blocks, none equal to an ID of the previous year."""
    prov, cs, yy = (learners[c].to_numpy() for c in ("_pid_prov", "_pid_cs", "_pid_yy"))
    scramble = s._bijection(spec.seed, 1, 10**6)
    pids = s._personal_ids(rng, prov, cs, yy, plan.index, scramble)
    for _ in range(200):
        clash = np.array([p in used for p in pids]) | pd.Series(pids).duplicated().to_numpy()
        if not clash.any():
            break
        redo = s._personal_ids(rng, prov[clash], cs[clash], yy[clash], plan.index, scramble)
        pids[clash] = redo
    else:  # pragma: no cover
        raise RuntimeError("personal-ID block exhausted")
    return pids


def continued_population(spec: "s.CitySpec", plan: "s.SchoolPlan") -> "s._Population":
    """The start of `spec.school_year` continuing the end of the previous year (see module doc)."""
    prev_spec = previous_spec(spec)
    prev = s._population(prev_spec, plan)
    end = s._end_of_year(prev_spec, plan, prev)
    classes = _planned_classes(prev_spec, plan)
    rng = np.random.default_rng([spec.seed, plan.index, 3])
    enrolled_codes = load_contract().mappings["learner_status"]["enrolled"]

    # Who continues, in which grade / age group.
    level = end["_level"].to_numpy(dtype=object)
    grade = end["grade"].to_numpy(dtype=object)
    outcome = end["outcome"].to_numpy(dtype=object)
    age_group = end["_age_group"].to_numpy(dtype=object)
    enrolled = end["status"].isin(enrolled_codes).to_numpy()
    gnum = pd.to_numeric(pd.Series(grade), errors="coerce").fillna(0).astype(int).to_numpy()
    new_grade = np.full(len(end), None, dtype=object)
    new_group = np.full(len(end), None, dtype=object)
    pt = enrolled & (level != "MN")
    up = pt & (outcome == "1") & (gnum < 9) & ~((gnum == 5) & ("THCS" not in plan.levels))
    same = pt & (outcome == "3")
    new_grade[up] = np.array([f"{g + 1:02d}" for g in gnum[up]], dtype=object)
    new_grade[same] = grade[same]
    mn_groups = set(classes["mn_age_group"].dropna())
    mn = enrolled & (level == "MN")
    for i in np.flatnonzero(mn):
        nxt = _MN_NEXT.get(age_group[i])
        if nxt in mn_groups:
            new_group[i] = nxt
            new_grade[i] = "16" if nxt <= "03" else "17"
    # a preschool group takes no more children than its classes' planned places: the others go
    # to another school (children move between preschools freely)
    for a in sorted({g for g in new_group if g is not None}):
        members = np.flatnonzero(new_group == a)
        places = int(classes.loc[classes["mn_age_group"] == a, "size"].sum())
        if len(members) > places:
            gone = rng.choice(members, size=len(members) - places, replace=False)
            new_group[gone] = None
            new_grade[gone] = None
    keep = pd.notna(new_grade)
    cont = end[keep].reset_index(drop=True)
    cont["grade"] = new_grade[keep]
    cont["_age_group"] = new_group[keep]
    cont["_level"] = np.where(cont["grade"].isin(["16", "17"]), "MN",
                              np.where(cont["grade"] <= "05", "TH", "THCS")).astype(object)
    promoted = up[keep]

    # Classes: continuing learners spread over their grade's (or age group's) classes.
    cls_grade = classes["grade"].to_numpy(dtype=object)
    cls_grade2 = classes["grade2"].to_numpy(dtype=object)
    cls_group = classes["mn_age_group"].to_numpy(dtype=object)
    pos = np.zeros(len(cont), dtype=int)
    cg, ca = cont["grade"].to_numpy(dtype=object), cont["_age_group"].to_numpy(dtype=object)
    for key in sorted({(g, a) for g, a in zip(cg, ca)}, key=str):
        g, a = key
        members = np.flatnonzero((cg == g) & (ca == a) if a is not None else (cg == g) & pd.isna(ca))
        idx = np.flatnonzero(cls_group == a) if a is not None else np.flatnonzero((cls_grade == g) | (cls_grade2 == g))
        pos[members] = _slots(rng, classes, idx, len(members))
    cont["_class_pos"] = pos
    class_tbl = prev.classes
    cont["class_code"] = class_tbl["class_code"].to_numpy(dtype=object)[pos]
    cont["status"] = "01"
    cont["status_date"] = None
    cont["dropout_reason"] = None
    cont["_future_in"] = False
    entry = np.where(promoted, "4", "3").astype(object)
    entry[cont["_level"].to_numpy() == "MN"] = None
    cont["entry_type"] = entry
    two = class_tbl["two_sessions"].to_numpy(dtype="int64")[pos]
    board = class_tbl["boarding"].to_numpy(dtype="int64")[pos]
    is_mn = cont["_level"].to_numpy() == "MN"
    g_new = pd.to_numeric(cont["grade"], errors="coerce").fillna(0).astype(int).to_numpy()
    cont["two_sessions"] = s._int(two)
    cont["boarding"] = s._int((board.astype(bool) & (pd.to_numeric(cont["boarding"], errors="coerce").fillna(1).to_numpy() == 1)).astype(int))
    cont["learns_it"] = s._int(np.where(g_new >= 3, 1, 0), blank=is_mn)
    cont["mn_new_entrant"] = s._int(np.zeros(len(cont), dtype=int), blank=~is_mn)

    # New entrants: entry grades filled up to their classes' planned sizes.
    placed = np.bincount(pos, minlength=len(classes))
    entry_class = classes["level"].eq("MN").to_numpy() | np.isin(cls_grade, ["01", "06"])
    gap = np.where(entry_class, np.clip(classes["size"].to_numpy() - placed, 0, None), 0)
    fresh = pd.DataFrame()
    if gap.sum():
        sub = classes.assign(size=gap).reset_index(drop=True)
        fresh = s._learners(rng, spec, plan, sub, class_tbl)
        order = np.flatnonzero(gap > 0)
        fresh = fresh[fresh["_class_pos"].isin(order) | fresh["_future_in"]]
        fresh = fresh.reset_index(drop=True)
        used_codes = set(prev.learners["student_code"])
        used_pids = set(prev.learners["personal_id"].dropna()) | set(prev.staff["personal_id"].dropna())
        fresh["student_code"] = s._obj(_fresh_codes(rng, spec, plan, len(fresh), used_codes))
        pids = _fresh_pids(rng, spec, plan, fresh, used_pids)
        fresh["personal_id"] = s._obj(s._blank_where(pids, fresh["_pid_blank"].to_numpy()))
        fresh["mn_new_entrant"] = s._int(np.ones(len(fresh), dtype=int), blank=fresh["_level"].to_numpy() != "MN")
    learners = pd.concat([cont.reindex(columns=prev.learners.columns), fresh.reindex(columns=prev.learners.columns)],
                         ignore_index=True)

    # Staff: the same people; one teacher a year further trained (ĐHSP → Thạc sĩ).
    staff = prev.staff.copy()
    raised = np.flatnonzero((staff["staff_group"] == "03").to_numpy() & (staff["training_level"] == "16").to_numpy())
    if len(raised):
        i = int(rng.choice(raised))
        staff.loc[i, "training_level"] = "02"
        staff.loc[i, "training_standard"] = "02"  # Thạc sĩ is above the standard at every level
    school = dict(prev.school, school_year=spec.school_year, period=spec.period)
    return s._Population(school, class_tbl, prev.rooms, learners, staff)
