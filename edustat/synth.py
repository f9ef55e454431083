"""The realistic synthetic city: one submission workbook per school plus a ground-truth manifest.

Grain: one city (a district of a province) → one workbook per school → one row per class,
learner, staff member and room type. Every column is drawn with numpy for a whole school at a
time (no Python loop per learner); the shared writer (`edustat.workbook`) writes the files.

Determinism: the city plan comes from `default_rng(seed)`; school i draws its population from
`default_rng([seed, i])`, its end-of-year evolution from `default_rng([seed, i, 1])` and its
injected errors from `default_rng([seed, i, 2])`. So `cuoi_nam` continues exactly the
`dau_nam` cohort of the same seed, changing `error_rate` or `export_share` never changes the
population, and `workers` never changes the output.

Codes and IDs that must be unique across the city (student codes, staff codes, personal IDs)
are built from disjoint per-school blocks passed through a seed-keyed bijection, so schools can
be generated in parallel without coordination and the IDs still look random.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from edustat import synth_names as names
from edustat.workbook import TEMPLATE, ExportStyle, SheetLayout, write_submission
from schemas import load_codelist, load_contract
from transforms.text import fold

# --------------------------------------------------------------------------------------------
# Parameters of the city (data, not logic: tune here)
# --------------------------------------------------------------------------------------------

LEVEL_MIX = {"MN": 0.40, "TH": 0.35, "THCS": 0.25}  # share of schools by main level
PTCS_SHARE = 0.06          # share of THCS-quota schools that are PTCS (TH+THCS, code 09)
MN_EDUCATION_LEVEL = {"01": 0.86, "02": 0.09, "03": 0.05}  # mầm non / mẫu giáo / nhà trẻ
OWNERSHIP = {
    "MN": {"01": 0.55, "09": 0.40, "03": 0.05},
    "TH": {"01": 0.90, "09": 0.10},
    "THCS": {"01": 0.92, "09": 0.08},
    "PTCS": {"01": 0.50, "09": 0.50},
}
MOUNTAIN_SHARE = 0.03      # schools in the city filed as "miền núi, vùng sâu" (rare)
CLEAN_EVERY = 4            # with error_rate > 0, school indexes divisible by this stay clean

# Bình Dương-like ethnic mix, DM_DAN_TOC codes (weights, normalised).
ETHNICITY_MIX = {
    "01": 95.0, "04": 1.4, "05": 0.9, "02": 0.6, "07": 0.5, "06": 0.35, "03": 0.3,
    "17": 0.15, "32": 0.1, "22": 0.1, "09": 0.1, "08": 0.08, "18": 0.07, "16": 0.05,
    "11": 0.03, "55": 0.05,
}
STAFF_KINH_SHARE = 0.97
FOREIGN_NATIONALITIES = {"410": 0.4, "158": 0.3, "156": 0.2, "392": 0.1}  # for ethnicity 55
HOME_PROVINCE_SHARE = {"learner": 0.70, "staff": 0.45}  # birth registered in the school's province
MALE_SHARE = 0.515

PERSONAL_ID_BLANK = {"MN": 0.40, "TH": 0.03, "THCS": 0.03}
TRANSFER_IN_START = 0.01   # entry_type 1 at the start of the year
REPEATER_SHARE = 0.015     # entry_type 3
OVER_AGE_OTHER = 0.017     # over-age by 1–3 years without being a repeater this year
UNDER_AGE = 0.003          # one year young
DISABILITY = 0.01
DISABILITY_TYPES = {"01": 0.2, "02": 0.15, "03": 0.1, "04": 0.15, "05": 0.3, "06": 0.1}
POLICY_SHARE = 0.05
POLICY_GROUPS = {"08": 0.25, "09": 0.25, "01": 0.10, "04": 0.05, "03": 0.02, "05": 0.05,
                 "06": 0.05, "10": 0.10, "16": 0.13}
NUTRITION = {"00": 0.88, "01": 0.04, "02": 0.04, "03": 0.01, "04": 0.03}

# During the year (end-of-year file): shares of the start-of-year cohort.
TRANSFER_OUT = 0.015
TRANSFER_IN_YEAR = 0.015
DROPOUT = {"MN": 0.010, "TH": 0.002, "THCS": 0.008}
DROPOUT_REASONS = {"01": 0.35, "02": 0.25, "03": 0.05, "06": 0.20, "08": 0.10, "09": 0.05}
CHRONIC_ABSENCE = {"TH": 0.0015, "THCS": 0.003}  # more than 45 days absent
# Category probabilities, best first, per scale (labels come from the code lists).
TH_YEAR_RESULT = (0.28, 0.34, 0.37, 0.01)
THCS_SCALES = {
    "new": {"conduct": ("edustat/RATING_TT22", (0.82, 0.14, 0.035, 0.005)),
            "learning": ("edustat/RATING_TT22", (0.30, 0.40, 0.27, 0.03))},
    "old": {"conduct": ("edustat/CONDUCT_TT58", (0.80, 0.16, 0.035, 0.005)),
            "learning": ("edustat/LEARNING_TT58", (0.28, 0.40, 0.27, 0.045, 0.005))},
}
# First category index that fails ("Chưa đạt" / "Yếu"), per scale and measure.
THCS_FAIL_FROM = {"new": {"conduct": 3, "learning": 3}, "old": {"conduct": 3, "learning": 3}}

# Ministry-export look-alikes, cycled over the schools chosen by `export_share`.
EXPORT_STYLES: dict[str, ExportStyle] = {
    "moet_export": ExportStyle(title_rows=3, numbering_row=True, headers="alias", values="label",
                               dates="text", ids_as_numbers=True, template=False),
    "unaccented": ExportStyle(title_rows=2, numbering_row=False, headers="unaccented",
                              values="code", dates="text", ids_as_numbers=False, template=False),
    "excel_dates": ExportStyle(title_rows=0, numbering_row=False, headers="header",
                               values="label", dates="excel", ids_as_numbers=False, template=False),
}
# A clerk's workbook: written with codes, then rewritten by edustat.synth_clerk (own word list).
CLERK_STYLE = ExportStyle(title_rows=2, numbering_row=True, headers="header", values="code",
                          dates="text", ids_as_numbers=False, template=False)

PID_BLOCK = 1000            # personal-ID suffixes per school and (province, sex-century, year)
CODE_BLOCK = 20_000         # student-code serials per school
STAFF_CODE_OFFSET = 50_000_000
MAX_SCHOOLS = 999           # school serial is 3 digits

# --------------------------------------------------------------------------------------------
# Public data structures
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CitySpec:
    """Everything that decides the generated data (not where it is written, nor how fast)."""

    schools: int
    seed: int
    school_year: str = "2022-2023"
    period: str = "dau_nam"
    export_share: float = 0.0
    error_rate: float = 0.0
    province_code: str = "74"
    district_code: str = "718"
    clerk_share: float = 0.0  # schools written as clerks type (edustat.synth_clerk)
    typo_rate: float = 0.0    # share of the clerk's coded cells with a typo (a near miss)
    broken: int = 0           # schools whose learner sheet lacks a required column (rejected)
    continues: bool = False   # start of year continuing the previous year's end (edustat.synth_next)

    @property
    def start_year(self) -> int:
        return int(self.school_year[:4])


@dataclass(frozen=True)
class SchoolPlan:
    """One school of the city plan: identity, level, ownership, file name and file style."""

    index: int
    school_code: str
    school_name: str
    file_name: str
    education_level: str
    levels: tuple[str, ...]
    ownership: str
    commune_code: str
    region: str
    style_name: str  # "template" or a key of EXPORT_STYLES
    clean: bool      # True: no errors are injected into this school
    broken: bool = False  # a required column of the learner sheet renamed beyond recognition

    @property
    def style(self) -> ExportStyle:
        if self.style_name == "clerk":
            return CLERK_STYLE
        return TEMPLATE if self.style_name == "template" else EXPORT_STYLES[self.style_name]


@dataclass(frozen=True)
class PendingError:
    """An injected error before writing: DataFrame row index, not yet an Excel row."""

    sheet_id: str
    row: int
    field: str
    kind: str
    rule: str
    original: str | None
    injected: str | None


@dataclass
class SchoolTables:
    """One school in memory: the `Truong` values and the table sheets, as the writer takes them."""

    plan: SchoolPlan
    school: dict[str, object]
    tables: dict[str, pd.DataFrame]
    errors: list[PendingError] = field(default_factory=list)


@dataclass(frozen=True)
class InjectedError:
    """One injected error (or leading-zero notice) at its exact cell in the written file."""

    school_code: str
    file: str
    sheet: str
    excel_row: int
    column: str      # field id
    cell: str        # e.g. "B17"
    header: str      # header text as written
    kind: str
    rule: str
    original: str | None
    injected: str | None
    written: str | None  # the cell as a reader sees it: a label in label-valued files, an ID
                         # without its leading zero when IDs are numbers, dates as dd/mm/yyyy


@dataclass(frozen=True)
class SchoolEntry:
    school_code: str
    school_name: str
    education_level: str
    levels: tuple[str, ...]
    ownership: str
    commune_code: str
    region: str
    file: str
    style: str          # "template" or "export"
    style_name: str
    export_options: dict[str, Any]
    clean: bool
    rows: dict[str, int]  # sheet id → data rows written
    sheets: dict[str, str]  # sheet id → sheet name as written


@dataclass(frozen=True)
class CityManifest:
    """The ground truth of one generated city (what manifest.json holds)."""

    spec: CitySpec
    contract_version: str
    schools: tuple[SchoolEntry, ...]
    errors: tuple[InjectedError, ...]
    notices: tuple[InjectedError, ...]
    spellings: tuple[dict, ...] = ()  # clerk-style cells: what was written for which code

    @property
    def total_learners(self) -> int:
        return sum(s.rows.get("learners", 0) for s in self.schools)

    @property
    def total_staff(self) -> int:
        return sum(s.rows.get("staff", 0) for s in self.schools)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generator": "edustat.synth",
            "contract_version": self.contract_version,
            "params": {k: v for k, v in asdict(self.spec).items()
                       if k not in ("clerk_share", "typo_rate", "broken", "continues") or v},  # older manifests stay byte-identical
            "totals": {
                "schools": len(self.schools),
                "learners": self.total_learners,
                "staff": self.total_staff,
                "classes": sum(s.rows.get("classes", 0) for s in self.schools),
                "errors": len(self.errors),
                "notices": len(self.notices),
            },
            "schools": [asdict(s) for s in self.schools],
            "errors": [asdict(e) for e in self.errors],
            "notices": [asdict(e) for e in self.notices],
            **({"spellings": list(self.spellings)} if self.spellings else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n"


# --------------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------------


def _choose(rng: np.random.Generator, weights: Mapping[str, float], size: int) -> np.ndarray:
    """`size` codes drawn with the given weights, as an object array."""
    keys = np.array(list(weights), dtype=object)
    p = np.fromiter(weights.values(), dtype=float)
    return keys[rng.choice(len(keys), size=size, p=p / p.sum())]


def _zipf(n: int, shift: float = 3.0) -> np.ndarray:
    w = 1.0 / (np.arange(n) + shift)
    return w / w.sum()


def _obj(values: Sequence | np.ndarray) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=object), dtype=object)


def _int(values: np.ndarray, blank: np.ndarray | None = None) -> pd.Series:
    """0/1 flags and counts as nullable ints (the writer gets Python ints or NA)."""
    arr = pd.array(np.asarray(values, dtype="int64"), dtype="Int64")
    if blank is not None:
        arr[np.asarray(blank, dtype=bool)] = pd.NA
    return pd.Series(arr)


def _blank_where(values: np.ndarray, blank: np.ndarray) -> np.ndarray:
    out = np.asarray(values, dtype=object).copy()
    out[np.asarray(blank, dtype=bool)] = None
    return out


def _day(d: dt.date) -> np.datetime64:
    return np.datetime64(d.isoformat(), "D")


def _dates_in_years(rng: np.random.Generator, years: np.ndarray) -> np.ndarray:
    """One uniformly drawn day in each given calendar year (datetime64[D])."""
    years = np.asarray(years, dtype="int64")
    start = (years - 1970).astype("datetime64[Y]").astype("datetime64[D]")
    leap = ((years % 4 == 0) & (years % 100 != 0)) | (years % 400 == 0)
    offset = (rng.random(len(years)) * (365 + leap)).astype("int64")
    return start + offset.astype("timedelta64[D]")


def _dates_between(rng: np.random.Generator, lo: dt.date, hi: dt.date, n: int) -> np.ndarray:
    span = (hi - lo).days + 1
    return _day(lo) + rng.integers(0, span, n).astype("timedelta64[D]")


def _as_dates(values: np.ndarray, blank: np.ndarray | None = None) -> np.ndarray:
    out = np.asarray(values, dtype="datetime64[D]").astype(object)
    if blank is not None:
        out[np.asarray(blank, dtype=bool)] = None
    return out


def _uniform_rank(x: np.ndarray) -> np.ndarray:
    """Ranks scaled into (0, 1): turns any latent score into a uniform one."""
    if len(x) == 0:
        return np.zeros(0)
    return (np.argsort(np.argsort(x, kind="stable"), kind="stable") + 0.5) / len(x)


def _category(u: np.ndarray, probs: Sequence[float]) -> np.ndarray:
    """Uniform u (small = good) → category index 0 (best) … len(probs)-1."""
    cum = np.cumsum(probs)
    return np.minimum(np.searchsorted(cum / cum[-1], u, side="right"), len(probs) - 1)


@dataclass(frozen=True)
class _Bijection:
    """x → (a·x + c) mod m, a permutation of [0, m) when gcd(a, m) = 1 (m a power of 10)."""

    a: int
    c: int
    m: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (self.a * np.asarray(x, dtype="int64") + self.c) % self.m


def _bijection(seed: int, stream: int, m: int) -> _Bijection:
    rng = np.random.default_rng([seed, 1_000_003, stream])
    a = int(rng.integers(m // 10, m)) | 1
    if a % 5 == 0:
        a += 2
    return _Bijection(a, int(rng.integers(0, m)), m)


@lru_cache(maxsize=None)
def _provinces() -> tuple[str, ...]:
    return load_codelist("moet-2020/DM_TINH").codes


# --------------------------------------------------------------------------------------------
# City plan
# --------------------------------------------------------------------------------------------

_LEVEL_PREFIX = {"MN": "Trường Mầm non", "TH": "Trường Tiểu học", "THCS": "Trường THCS",
                 "PTCS": "Trường Tiểu học và THCS"}
_MN_PREFIX = {"01": "Trường Mầm non", "02": "Trường Mẫu giáo", "03": "Nhà trẻ"}
_WARD_PREFIX = re.compile(r"^(Phường|Xã|Thị trấn)\s+")


def _communes(province_code: str, district_code: str) -> list[tuple[str, str]]:
    cl = load_codelist("moet-2020/DM_XA")
    out = [(c, _WARD_PREFIX.sub("", lab)) for c, lab, a in zip(cl.codes, cl.labels, cl.attributes)
           if a.get("ma_qh") == district_code and a.get("ma_tp") in (province_code, None, "")]
    if not out:
        raise ValueError(f"no communes of district {district_code} in province {province_code} (DM_XA)")
    return out


def _slug(name: str) -> str:
    text = fold(name.removeprefix("Trường "))
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def plan_city(spec: CitySpec) -> tuple[SchoolPlan, ...]:
    """The city's schools: one row per school (code, name, level, ownership, ward, file style)."""
    n = spec.schools
    if not 1 <= n <= MAX_SCHOOLS:
        raise ValueError(f"schools must be 1..{MAX_SCHOOLS} (3-digit serial), got {n}")
    if spec.province_code not in _provinces():
        raise ValueError(f"unknown province code {spec.province_code!r}")
    communes = _communes(spec.province_code, spec.district_code)
    rng = np.random.default_rng(spec.seed)

    n_mn = int(round(n * LEVEL_MIX["MN"]))
    n_th = int(round(n * LEVEL_MIX["TH"]))
    kinds = np.array(["MN"] * n_mn + ["TH"] * n_th + ["THCS"] * (n - n_mn - n_th), dtype=object)
    kinds = kinds[rng.permutation(n)]
    kinds[(kinds == "THCS") & (rng.random(n) < PTCS_SHARE)] = "PTCS"
    mn_level = _choose(rng, MN_EDUCATION_LEVEL, n)
    ownership = np.array(
        [_choose(rng, OWNERSHIP[k], 1)[0] for k in kinds], dtype=object)  # one per school
    commune_idx = rng.integers(0, len(communes), n)
    serials = np.sort(rng.choice(np.arange(1, 1000), size=n, replace=False))
    region = np.where(rng.random(n) < MOUNTAIN_SHARE, "mien_nui", "dong_bang")
    pools = {k: list(rng.permutation(np.array(p, dtype=object))) for k, p in (
        ("MN", names.MN_SCHOOL_NAMES), ("TH", names.PERSON_SCHOOL_NAMES_TH),
        ("THCS", names.PERSON_SCHOOL_NAMES_THCS), ("PTCS", names.PERSON_SCHOOL_NAMES_THCS))}
    # Styles are drawn last, so export_share never changes the schools themselves.
    n_export = int(round(n * spec.export_share))
    export_idx = sorted(rng.permutation(n)[:n_export].tolist())
    style_names = list(EXPORT_STYLES)
    offset = int(rng.integers(0, len(style_names)))
    styles = {i: style_names[(k + offset) % len(style_names)] for k, i in enumerate(export_idx)}
    if spec.clerk_share:
        # drawn from a stream of its own, so a clerk share never changes anything else
        crng = np.random.default_rng([spec.seed, 8])
        for i in sorted(crng.permutation(n)[:int(round(n * spec.clerk_share))].tolist()):
            styles[i] = "clerk"

    contract = load_contract()
    used: set[str] = set()
    used_ward: set[tuple[str, str]] = set()
    plans = []
    for i in range(n):
        kind = str(kinds[i])
        edu = {"MN": str(mn_level[i]), "TH": "06", "THCS": "07", "PTCS": "09"}[kind]
        code_c, ward = communes[commune_idx[i]]
        own = str(ownership[i])
        if own == "01" and (kind, ward) not in used_ward:
            used_ward.add((kind, ward))
            base = ward
        elif pools[kind]:
            base = str(pools[kind].pop())
        else:
            base = ward
        prefix = _MN_PREFIX[edu] if kind == "MN" else _LEVEL_PREFIX[kind]
        name, k = f"{prefix} {base}", 2
        while name in used:
            name, k = f"{prefix} {base} {k}", k + 1
        used.add(name)
        school_code = f"{spec.province_code}{spec.district_code}{serials[i]:03d}"
        plans.append(SchoolPlan(
            index=i, school_code=school_code, school_name=name,
            file_name=f"{school_code}_{_slug(name)}.xlsx", education_level=edu,
            levels=contract.levels_of(edu), ownership=own, commune_code=code_c,
            region=str(region[i]), style_name=styles.get(i, "template"),
            clean=spec.error_rate <= 0 or i % CLEAN_EVERY == 0,
        ))
    if spec.broken:
        # a stream of its own: asking for broken files never changes the schools themselves
        brng = np.random.default_rng([spec.seed, 10])
        chosen = set(brng.permutation(n)[:min(spec.broken, n)].tolist())
        plans = [replace(p, broken=True, clean=False) if p.index in chosen else p for p in plans]
    return tuple(plans)


# --------------------------------------------------------------------------------------------
# Classes
# --------------------------------------------------------------------------------------------

_MN_GROUP_NAME = {"01": "Nhà trẻ 3-12 tháng", "02": "Nhà trẻ 12-24 tháng",
                  "03": "Nhà trẻ 24-36 tháng", "04": "Mầm", "05": "Chồi", "06": "Lá"}


def _primary_classes(rng, grades: range, per_grade: tuple[int, int], size: tuple[float, float],
                     size_clip: tuple[int, int], slash: bool) -> list[dict]:
    """Classes of TH or THCS grades: 'per_grade' = school base range of classes per grade."""
    base = int(rng.integers(per_grade[0], per_grade[1] + 1))
    out = []
    for g in grades:
        k = int(np.clip(base + rng.integers(-1, 2), per_grade[0], per_grade[1]))
        sizes = np.clip(np.round(rng.normal(size[0], size[1], k)), *size_clip).astype(int)
        for j in range(k):
            out.append({"grade": f"{g:02d}", "class_name": f"{g}/{j + 1}" if slash else f"{g}A{j + 1}",
                        "size": int(sizes[j]), "mixed": 0, "grade2": None,
                        "level": "TH" if g <= 5 else "THCS"})
    return out


def _school_classes(rng: np.random.Generator, plan: SchoolPlan) -> pd.DataFrame:
    """One row per class (MN: per group), with planned size and, for lớp ghép, the second grade."""
    caps = load_contract().mappings["mn_age_groups"]
    private = plan.ownership != "01"
    rows: list[dict] = []
    if "MN" in plan.levels:
        groups = {"01": (0, 1), "02": (0, 1), "03": (1, 2), "04": (1, 3), "05": (1, 3), "06": (1, 3)}
        if plan.education_level == "02":
            groups.update({"01": (0, 0), "02": (0, 0), "03": (0, 0)})
        if plan.education_level == "03":
            groups = {"01": (0, 1), "02": (1, 2), "03": (1, 3)}
        for ag, (lo, hi) in groups.items():
            if ag == "01" and rng.random() > 0.1:
                continue  # few cities' schools take babies under 12 months
            if ag == "02" and plan.education_level != "03" and rng.random() > 0.35:
                continue
            k = int(rng.integers(lo, (min(hi, 2) if private else hi) + 1))
            cap = int(caps[ag]["cap"])
            for j in range(k):
                short = cap - int(rng.integers(0, 6)) if not private else int(cap * rng.uniform(0.55, 0.9))
                over = int(rng.integers(1, 4)) if rng.random() < 0.08 else 0
                size = int(np.clip(short + over, 5, cap + 3))
                label = _MN_GROUP_NAME[ag]
                name = f"{label} {j + 1}" if (k > 1 or int(ag) >= 4) else label
                rows.append({"grade": "16" if int(ag) <= 3 else "17", "class_name": name,
                             "mn_age_group": ag, "size": size, "mixed": 0, "grade2": None, "level": "MN"})
        if not rows:  # every preschool has at least one class
            rows.append({"grade": "17", "class_name": "Lá 1", "mn_age_group": "06",
                         "size": 30, "mixed": 0, "grade2": None, "level": "MN"})
    slash = bool(rng.random() < 0.5)
    small = plan.education_level == "09"
    if "TH" in plan.levels:
        rows += _primary_classes(rng, range(1, 6), (1, 3) if small else (2, 6),
                                 (29.0, 3.0) if private else (32.5, 2.5), (24, 38), slash)
        if rng.random() < 0.12:  # a lớp ghép: two neighbouring grades, ≤ 15 pupils
            g = int(rng.integers(1, 5))
            rows.append({"grade": f"{g:02d}", "class_name": f"Ghép {g}-{g + 1}",
                         "size": int(rng.integers(8, 16)), "mixed": 2, "grade2": f"{g + 1:02d}",
                         "level": "TH"})
    if "THCS" in plan.levels:
        rows += _primary_classes(rng, range(6, 10), (1, 3) if small else (3, 10),
                                 (38.0, 3.0) if private else (42.5, 2.5), (30, 48), slash)
    m = load_contract().mappings
    for r in rows:  # the class-size cap of each class (TT 28/2020, 32/2020, 52/2020)
        r["cap"] = (int(caps[r["mn_age_group"]]["cap"]) if r["level"] == "MN"
                    else int(m["class_size_caps"]["TH_mixed" if r["mixed"] else r["level"]]))
    order = {"16": 0, "17": 1}
    rows.sort(key=lambda r: (order.get(r["grade"], 2), r["grade"], r.get("mn_age_group") or "",
                             r["mixed"], len(r["class_name"]), r["class_name"]))
    df = pd.DataFrame(rows)
    if "mn_age_group" not in df:
        df["mn_age_group"] = None
    df["class_code"] = [f"L{i + 1:03d}" for i in range(len(df))]
    return df


def _classes_table(classes: pd.DataFrame, rng: np.random.Generator,
                   school: Mapping[str, object]) -> pd.DataFrame:
    """The Lop sheet: one row per class, with its session and boarding flags."""
    n = len(classes)
    level = classes["level"].to_numpy()
    two = np.where(level == "MN", rng.random(n) < 0.97,
                   np.where(level == "TH", rng.random(n) < (0.95 if school["two_sessions"] else 0.2),
                            rng.random(n) < (0.35 if school["two_sessions"] else 0.05)))
    boarding = np.where(level == "MN", rng.random(n) < 0.95,
                        two & (rng.random(n) < np.where(level == "TH", 0.65, 0.15)))
    site = np.full(n, None, dtype=object)
    if int(school["satellite_sites"]) > 0:
        site[:] = "Điểm chính"
        satellite = rng.random(n) < 0.15
        site[satellite] = "Điểm lẻ 1"
    return pd.DataFrame({
        "class_code": _obj(classes["class_code"]),
        "class_name": _obj(classes["class_name"]),
        "grade": _obj(classes["grade"]),
        "mn_age_group": _obj(classes["mn_age_group"].where(classes["mn_age_group"].notna(), None)),
        "mixed": _int(classes["mixed"].to_numpy()),
        "two_sessions": _int(two.astype(int)),
        "boarding": _int(boarding.astype(int)),
        "special_school_class": _int(np.zeros(n, dtype=int)),
        "site": _obj(site),
    })


# --------------------------------------------------------------------------------------------
# People: names and personal IDs
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _name_tables() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    fam = np.array([f for f, _ in names.FAMILY_NAMES], dtype=object)
    fam_p = np.array([w for _, w in names.FAMILY_NAMES], dtype=float)
    out = {"family": (fam, fam_p / fam_p.sum())}
    for key, pool in (("mid_m", names.MIDDLE_MALE),
                      ("mid_f", tuple(m for m in names.MIDDLE_FEMALE if m != "Thị")),
                      ("giv_m", names.GIVEN_MALE), ("giv_f", names.GIVEN_FEMALE),
                      ("giv_m_adult", names.GIVEN_MALE_ADULT), ("giv_f_adult", names.GIVEN_FEMALE_ADULT)):
        out[key] = (np.array(pool, dtype=object), _zipf(len(pool)))
    return out


def _draw(rng, key: str, n: int) -> np.ndarray:
    pool, p = _name_tables()[key]
    return pool[rng.choice(len(pool), size=n, p=p)]


def _full_names(rng: np.random.Generator, female: np.ndarray, ethnicity: np.ndarray,
                adult: bool) -> tuple[np.ndarray, np.ndarray]:
    """Vietnamese full names (family middle given) and a sort key (given, family, middle)."""
    n = len(female)
    fam = _draw(rng, "family", n)
    for code, pool in names.ETHNIC_FAMILY_NAMES.items():
        m = ethnicity == code
        if m.any():
            fam[m] = np.array(pool, dtype=object)[rng.integers(0, len(pool), int(m.sum()))]
    mid = np.where(female, _draw(rng, "mid_f", n), _draw(rng, "mid_m", n)).astype(object)
    thi = names.THI_SHARE_ADULT if adult else names.THI_SHARE_CHILD
    mid[female & (rng.random(n) < thi)] = "Thị"
    if not adult:  # some parents give two middle names ("Nguyễn Ngọc Bảo Anh")
        mid2 = np.where(female, _draw(rng, "mid_f", n), _draw(rng, "mid_m", n)).astype(object)
        two = (rng.random(n) < 0.08) & (mid2 != mid) & (mid != "Thị")
        mid[two] = mid[two] + " " + mid2[two]
    suffix = "_adult" if adult else ""
    giv = np.where(female, _draw(rng, "giv_f" + suffix, n), _draw(rng, "giv_m" + suffix, n)).astype(object)
    same = mid == giv  # "Trần Bảo Bảo" does not happen: fall back to the commonest middle name
    mid[same] = np.where(female[same], "Thị", "Văn")
    full = fam + " " + mid + " " + giv
    # Vietnamese lists are sorted by given name, then family name: fold once per distinct name.
    folded = {v: fold(v) for v in set(np.concatenate([fam, mid, giv]).tolist())}
    key = pd.Series(giv).map(folded) + "|" + pd.Series(fam).map(folded) + "|" + pd.Series(mid).map(folded)
    return full, key.to_numpy(dtype=object)


def _pid_parts(rng: np.random.Generator, birth_year: np.ndarray, female: np.ndarray,
               home_province: str, home_share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digits 1–3 (province of birth registration), 4 (century+sex) and 5–6 (year) as ints."""
    n = len(birth_year)
    others = np.array([p for p in _provinces() if p != home_province], dtype=object)
    prov = np.where(rng.random(n) < home_share, home_province,
                    others[rng.integers(0, len(others), n)]).astype(int)
    century_sex = (birth_year // 100 - 19) * 2 + female.astype(int)
    return prov, century_sex, birth_year % 100


def _personal_ids(rng: np.random.Generator, prov: np.ndarray, century_sex: np.ndarray,
                  yy: np.ndarray, school_index: int, scramble: _Bijection) -> np.ndarray:
    """12-digit IDs, unique in the city: random digits 7–12 drawn inside the school's block
    of each (province, century+sex, year) bucket, then scrambled by a city-wide bijection."""
    bucket = prov.astype("int64") * 1000 + century_sex * 100 + yy
    r = rng.integers(0, PID_BLOCK, len(bucket))
    for _ in range(500):
        dup = pd.Series(bucket * PID_BLOCK + r).duplicated().to_numpy()
        if not dup.any():
            break
        r[dup] = rng.integers(0, PID_BLOCK, int(dup.sum()))
    else:  # pragma: no cover - a bucket larger than the block
        raise RuntimeError("personal-ID block exhausted")
    suffix = scramble(school_index * PID_BLOCK + r)
    value = prov.astype("int64") * 10**9 + century_sex * 10**8 + yy * 10**6 + suffix
    return pd.Series(value).astype(str).str.zfill(12).to_numpy(dtype=object)


# --------------------------------------------------------------------------------------------
# Learners (start of year, plus the pupils who will transfer in during the year)
# --------------------------------------------------------------------------------------------


def _learners(rng: np.random.Generator, spec: CitySpec, plan: SchoolPlan,
              classes: pd.DataFrame, class_tbl: pd.DataFrame) -> pd.DataFrame:
    """One row per learner (internal columns start with '_'): the start-of-year cohort and,
    flagged `_future_in`, the pupils who will transfer in during the year."""
    y = spec.start_year
    sizes = classes["size"].to_numpy()
    cls = np.repeat(np.arange(len(classes)), sizes)
    n0 = len(cls)
    # Pupils arriving during the year go where there is room (not to lớp ghép or full classes).
    room = np.clip(classes["cap"].to_numpy() - sizes + 1, 0, None) * (classes["mixed"].to_numpy() == 0)
    room = room if room.sum() > 0 else (classes["mixed"].to_numpy() == 0).astype(float)
    n_in = int(rng.binomial(n0, TRANSFER_IN_YEAR))
    cls = np.concatenate([cls, rng.choice(len(classes), size=n_in, p=room / room.sum())])
    n = len(cls)
    future_in = np.arange(n) >= n0

    grade = classes["grade"].to_numpy(dtype=object)[cls]
    grade2 = classes["grade2"].to_numpy(dtype=object)[cls]
    upper = pd.notna(grade2) & (rng.random(n) < 0.5)
    grade[upper] = grade2[upper]
    level = classes["level"].to_numpy(dtype=object)[cls]
    age_group = classes["mn_age_group"].to_numpy(dtype=object)[cls]
    is_mn = level == "MN"
    gnum = np.where(is_mn, 0, pd.to_numeric(pd.Series(grade), errors="coerce").fillna(0).to_numpy()).astype(int)

    female = rng.random(n) >= MALE_SHARE
    ethnicity = _choose(rng, ETHNICITY_MIX, n)
    nationality = np.full(n, "704", dtype=object)
    foreign = ethnicity == "55"
    nationality[foreign] = _choose(rng, FOREIGN_NATIONALITIES, int(foreign.sum()))

    # Entry type and age. Repeaters are a year or two older; a few others are late or early.
    u = rng.random(n)
    first = np.isin(grade, ["01", "06"])
    entry = np.where(first, "0", "4").astype(object)
    entry[first & (grade == "06") & (u < 0.05)] = "2"
    entry[(u >= 0.05) & (u < 0.05 + REPEATER_SHARE)] = "3"
    entry[(u >= 0.08) & (u < 0.08 + TRANSFER_IN_START)] = "1"
    entry[future_in] = "1"
    over = np.zeros(n, dtype=int)
    rep = entry == "3"
    over[rep] = rng.choice([1, 2], size=int(rep.sum()), p=[0.75, 0.25])
    v = rng.random(n)
    late = ~rep & (v < OVER_AGE_OTHER)
    over[late] = rng.choice([1, 2, 3], size=int(late.sum()), p=[0.7, 0.2, 0.1])
    over[~rep & (v >= OVER_AGE_OTHER) & (v < OVER_AGE_OTHER + UNDER_AGE) & (gnum > 1)] = -1
    birth_year = y - (gnum + 5) - over
    birth = _dates_in_years(rng, birth_year)
    # Preschool: crèche groups by age in months at 5 September; kindergarten by calendar year.
    ref = _day(dt.date(y, 9, 5))
    months = {"01": (3, 12), "02": (13, 24), "03": (25, 36)}
    for ag, (lo, hi) in months.items():
        m = is_mn & (age_group == ag)
        if m.any():
            days = rng.integers(int(lo * 30.44), int((hi + 1) * 30.44) - 1, int(m.sum()))
            birth[m] = ref - days.astype("timedelta64[D]")
    for ag, years_old in (("04", 3), ("05", 4), ("06", 5)):
        m = is_mn & (age_group == ag)
        if m.any():
            birth[m] = _dates_in_years(rng, np.full(int(m.sum()), y - years_old))
    birth_year = birth.astype("datetime64[Y]").astype(int) + 1970
    entry[is_mn] = None

    full_name, sort_key = _full_names(rng, female, ethnicity, adult=False)
    prov, cs, yy = _pid_parts(rng, birth_year, female, spec.province_code, HOME_PROVINCE_SHARE["learner"])
    pid_blank = rng.random(n) < np.where(is_mn, PERSONAL_ID_BLANK["MN"], PERSONAL_ID_BLANK["TH"])

    status = np.full(n, "01", dtype=object)
    status_date = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    moved_in = (entry == "1") & ~future_in & (rng.random(n) < 0.5)
    status[moved_in] = "02"
    status_date[moved_in] = _dates_between(rng, dt.date(y, 8, 15), dt.date(y, 9, 25), int(moved_in.sum()))

    disabled = rng.random(n) < DISABILITY
    disability = np.full(n, None, dtype=object)
    disability[disabled] = _choose(rng, DISABILITY_TYPES, int(disabled.sum()))
    special = np.full(n, None, dtype=object)
    special[disabled] = np.where(rng.random(int(disabled.sum())) < 0.05, "1", "0")
    policy = np.full(n, None, dtype=object)
    pol = rng.random(n) < POLICY_SHARE
    policy[pol] = _choose(rng, POLICY_GROUPS, int(pol.sum()))
    policy[disabled & (rng.random(n) < 0.3)] = "06"
    very_small = np.isin(ethnicity, load_contract().mappings["very_small_minorities"])

    cls_two = class_tbl["two_sessions"].to_numpy(dtype="int64")[cls]
    cls_board = class_tbl["boarding"].to_numpy(dtype="int64")[cls]
    learns_it = np.where(level == "THCS", 1, np.where((gnum >= 3) & (rng.random(n) < 0.95), 1, 0))
    new_share = np.select([age_group == a for a in ("01", "02", "03", "04", "05", "06")],
                          [1.0, 0.8, 0.5, 0.35, 0.12, 0.06], 0.0)
    checked = rng.random(n) < 0.95
    nutrition = _choose(rng, NUTRITION, n)

    return pd.DataFrame({
        "_future_in": future_in,
        "_level": _obj(level),
        "_class_pos": cls,
        "_sort": _obj(sort_key),
        "_age_group": _obj(age_group),
        "student_code": _obj(np.zeros(n, dtype=object)),  # filled by the caller (needs the order)
        "personal_id": _obj(np.full(n, None, dtype=object)),  # drawn with the staff's
        "_pid_prov": prov, "_pid_cs": cs, "_pid_yy": yy, "_pid_blank": pid_blank,
        "full_name": _obj(full_name),
        "birth_date": _obj(_as_dates(birth)),
        "sex": _obj(np.where(female, "02", "01")),
        "ethnicity": _obj(ethnicity),
        "nationality": _obj(nationality),
        "class_code": _obj(classes["class_code"].to_numpy(dtype=object)[cls]),
        "grade": _obj(grade),
        "status": _obj(status),
        "status_date": _obj(_as_dates(status_date, np.isnat(status_date))),
        "entry_type": _obj(entry),
        "dropout_reason": _obj(np.full(n, None, dtype=object)),
        "disability_type": _obj(disability),
        "special_education": _obj(special),
        "policy_group": _obj(policy),
        "tuition_exempt": _int(np.isin(policy, ["01", "02", "03", "04", "05", "06", "07", "08"]).astype(int)),
        "tuition_reduced": _int(np.isin(policy, ["09", "10"]).astype(int)),
        "learning_cost_support": _int(np.isin(policy, ["05", "06", "07", "08"]).astype(int)),
        "small_minority_support": _int((very_small & (rng.random(n) < 0.9)).astype(int)),
        "food_housing_support": _int(np.zeros(n, dtype=int), blank=is_mn),
        "lunch_support": _int(np.isin(policy, ["05", "06", "07", "08", "09"]).astype(int), blank=~is_mn),
        "two_sessions": _int(cls_two),
        "boarding": _int((cls_board.astype(bool) & (rng.random(n) < 0.9)).astype(int)),
        "learns_it": _int(learns_it, blank=is_mn),
        "mn_new_entrant": _int((rng.random(n) < new_share).astype(int), blank=~is_mn),
        "health_checked": _int(checked.astype(int), blank=~is_mn),
        "nutrition_status": _obj(_blank_where(nutrition, ~is_mn | ~checked)),
    })


# --------------------------------------------------------------------------------------------
# Staff
# --------------------------------------------------------------------------------------------

_NV_POSITIONS_PT = ("09", "10", "11", "15", "16", "25", "17")   # one each (bảo vệ may be two)
_TRAINING = {
    "manager": {"16": 0.55, "02": 0.40, "01": 0.02, "13": 0.03},
    "teacher_MN": {"17": 0.45, "16": 0.38, "18": 0.12, "14": 0.03, "02": 0.02},
    "teacher_PT": {"16": 0.72, "02": 0.08, "17": 0.12, "13": 0.05, "03": 0.03},
    "office": {"03": 0.30, "04": 0.30, "05": 0.35, "06": 0.05},
    "manual": {"06": 0.70, "05": 0.30},
}
_MANUAL = {"17", "20", "21", "31"}
_SUBJECT_TH = {"09": 0.80, "07": 0.08, "08": 0.05, "05": 0.03, "19": 0.03, "10": 0.01}
_SUBJECT_THCS = {"22": 20, "20": 20, "07": 12, "23": 6, "17": 5, "21": 6, "18": 6, "06": 6,
                 "16": 4, "10": 5, "24": 4, "08": 6, "05": 3, "19": 3}


@lru_cache(maxsize=None)
def _subjects_thcs() -> dict[str, float]:
    cl = load_codelist("moet-2020/DM_MON_DAY_GV")
    ok = {c for c, a in zip(cl.codes, cl.attributes) if a.get("is_c2") == "1"}
    return {c: w for c, w in _SUBJECT_THCS.items() if c in ok}


def _staff(rng: np.random.Generator, spec: CitySpec, plan: SchoolPlan, classes: pd.DataFrame,
           n_learners: int) -> pd.DataFrame:
    """One row per staff member: managers, teachers, then employees (internal '_' columns)."""
    y = spec.start_year
    public = plan.ownership == "01"
    level_of = classes["level"].to_numpy()
    n_cls = {lv: int((level_of == lv).sum()) for lv in ("MN", "TH", "THCS")}
    mn_groups = classes.loc[level_of == "MN", "grade"].to_numpy()
    main_level = "THCS" if "THCS" in plan.levels else ("TH" if "TH" in plan.levels else "MN")
    total_cls = len(classes)

    n_vice = 1 + int(total_cls >= 28) + int(total_cls >= 40 and rng.random() < 0.5)
    if not public and total_cls < 10:
        n_vice = 1
    ratio = {"MN": 2.0, "TH": 1.3, "THCS": 1.9}
    teach = {lv: int(round(n_cls[lv] * ratio[lv] * rng.uniform(0.9, 1.1))) for lv in n_cls}
    nv: list[str] = []
    if main_level == "MN":
        nv += ["15", "11", "17"] + (["16"] if rng.random() < 0.5 else []) + (["25"] if rng.random() < 0.5 else [])
        nv += ["31"] * max(2, int(np.ceil(n_learners / 60)))
        nv += ["21"] * (int(np.ceil(len(classes) / 2)) if not public else int(rng.integers(0, 3)))
        nv += ["17"] if rng.random() < 0.4 else []
    else:
        nv += list(_NV_POSITIONS_PT) + (["17"] if rng.random() < 0.6 else [])
        if main_level == "THCS":
            nv += [p for p in ("32", "34") if rng.random() < 0.5]
        if rng.random() < 0.1:
            nv.append("33")
        board = int(rng.integers(0, 4)) if n_cls["TH"] and rng.random() < 0.5 else 0
        nv += ["20"] * board
    role = np.array(["principal"] + ["vice"] * n_vice + ["teacher"] * sum(teach.values())
                    + [f"nv{p}" for p in nv], dtype=object)
    n = len(role)
    teacher = role == "teacher"
    manager = np.isin(role, ["principal", "vice"])
    employee = ~teacher & ~manager
    # Which level each teacher teaches (PTCS: TH first, then THCS) and MN care level.
    t_level = np.full(n, main_level, dtype=object)
    t_idx = np.flatnonzero(teacher)
    t_level[t_idx] = np.repeat(np.array(["MN", "TH", "THCS"], dtype=object),
                               [teach["MN"], teach["TH"], teach["THCS"]])
    care = np.full(n, None, dtype=object)
    if "MN" in plan.levels:
        creche_share = float((mn_groups == "16").mean()) if len(mn_groups) else 0.0
        care[:] = "nha_tre" if creche_share >= 0.999 else "mau_giao"
        care[teacher] = np.where(rng.random(int(teacher.sum())) < creche_share, "nha_tre", "mau_giao")

    female_share = {"MN": 0.99, "TH": 0.80, "THCS": 0.70}
    pf = pd.Series(t_level).map(female_share).to_numpy(dtype=float).copy()  # by the level taught
    pf[role == "principal"] = {"MN": 0.95, "TH": 0.6, "THCS": 0.45}[main_level]
    pf[role == "nv17"] = 0.05
    pf[np.isin(role, ["nv31", "nv21", "nv20"])] = 0.9
    female = rng.random(n) < pf

    age = np.clip(np.round(rng.normal(39, 9, n)), 23, 59)
    age[role == "principal"] = rng.integers(42, 58, int((role == "principal").sum()))
    age[role == "vice"] = rng.integers(35, 57, int((role == "vice").sum()))
    age[employee] = np.clip(np.round(rng.normal(40, 11, int(employee.sum()))), 22, 60)
    age[role == "nv17"] = rng.integers(40, 61, int((role == "nv17").sum()))
    age = np.where(female, np.minimum(age, 56), age).astype(int)  # women retire earlier
    birth = _dates_in_years(rng, y - age)
    birth_year = birth.astype("datetime64[Y]").astype(int) + 1970

    ethnicity = np.where(rng.random(n) < STAFF_KINH_SHARE, "01",
                         _choose(rng, {k: v for k, v in ETHNICITY_MIX.items() if k not in ("01", "55")}, n))
    full_name, sort_key = _full_names(rng, female, ethnicity.astype(object), adult=True)
    prov, cs, yy = _pid_parts(rng, birth_year, female, spec.province_code, HOME_PROVINCE_SHARE["staff"])

    group = np.where(manager, "01", np.where(teacher, "03", "02")).astype(object)
    position = np.full(n, None, dtype=object)
    position[role == "principal"] = "01"
    position[role == "vice"] = "02"
    position[employee] = pd.Series(role[employee]).str.slice(2).to_numpy(dtype=object)
    n_teams = {"MN": 3, "TH": 6, "THCS": 5}
    leaders = []
    for lv in ("MN", "TH", "THCS"):
        idx = t_idx[t_level[t_idx] == lv]
        k = min(n_teams[lv], len(idx))
        pick = rng.permutation(idx)[: 2 * k]
        position[pick[:k]] = "03"
        position[pick[k:2 * k]] = "04" if lv != "MN" else None
        leaders += list(pick)
    extra = np.full(n, None, dtype=object)
    if public and rng.random() < 0.7:
        extra[0] = "01"  # the principal is party-cell secretary
    others = np.setdiff1d(t_idx, np.array(leaders, dtype=int))
    others = rng.permutation(others)
    if main_level != "MN" and len(others):
        extra[others[0]] = "07"  # Tổng phụ trách Đội
    if len(others) > 1:
        extra[others[1]] = "03"  # Chủ tịch Công đoàn

    contract = np.empty(n, dtype=object)
    manual = np.isin(role, [f"nv{p}" for p in _MANUAL])
    if public:
        contract[:] = _choose(rng, {"07": 0.85, "08": 0.10, "03": 0.05}, n)
        contract[employee] = _choose(rng, {"07": 0.35, "08": 0.10, "03": 0.30, "04": 0.15, "05": 0.10},
                                     int(employee.sum()))
        contract[manual] = _choose(rng, {"02": 0.5, "03": 0.3, "04": 0.2}, int(manual.sum()))
    else:
        contract[:] = _choose(rng, {"03": 0.70, "04": 0.25, "06": 0.05}, n)
        contract[manager] = _choose(rng, {"03": 0.8, "04": 0.2}, int(manager.sum()))
        contract[employee] = _choose(rng, {"03": 0.5, "04": 0.4, "05": 0.1}, int(employee.sum()))

    training = np.empty(n, dtype=object)
    training[manager] = _choose(rng, _TRAINING["manager"], int(manager.sum()))
    t_mn = teacher & (t_level == "MN")
    training[t_mn] = _choose(rng, _TRAINING["teacher_MN"], int(t_mn.sum()))
    t_pt = teacher & (t_level != "MN")
    training[t_pt] = _choose(rng, _TRAINING["teacher_PT"], int(t_pt.sum()))
    office = employee & ~manual
    training[office] = _choose(rng, _TRAINING["office"], int(office.sum()))
    training[manual] = _choose(rng, _TRAINING["manual"], int(manual.sum()))
    maps = load_contract().mappings
    bucket = pd.Series(training).map(maps["training_buckets"]).to_numpy(dtype=object)
    std_level = np.where(teacher, t_level, main_level)
    std_map = {f"{lv}|{b}": code for lv, m in maps["training_standard"].items() for b, code in m.items()}
    standard = (pd.Series(std_level, dtype=object) + "|" + pd.Series(bucket, dtype=object).fillna("")
                ).map(std_map).to_numpy(dtype=object).copy()
    standard[employee] = None

    subject = np.full(n, None, dtype=object)
    t_th = teacher & (t_level == "TH")
    subject[t_th] = _choose(rng, _SUBJECT_TH, int(t_th.sum()))
    t_thcs = teacher & (t_level == "THCS")
    subject[t_thcs] = _choose(rng, _subjects_thcs(), int(t_thcs.sum()))

    party = rng.random(n) < np.where(manager, 0.9, np.where(teacher, 0.35, 0.1))
    civil = manager & public & (rng.random(n) < 0.05)
    order = np.lexsort((sort_key, np.where(manager, 0, np.where(teacher, 1, 2)),
                        np.where(role == "principal", 0, 1)))
    df = pd.DataFrame({
        "_pid_prov": prov, "_pid_cs": cs, "_pid_yy": yy,
        "staff_code": _obj(np.zeros(n, dtype=object)),
        "personal_id": _obj(np.full(n, None, dtype=object)),
        "full_name": _obj(full_name),
        "birth_date": _obj(_as_dates(birth)),
        "sex": _obj(np.where(female, "02", "01")),
        "ethnicity": _obj(ethnicity),
        "staff_group": _obj(group),
        "position": _obj(position),
        "extra_duty": _obj(extra),
        "mn_care_level": _obj(care),
        "contract_type": _obj(contract),
        "training_level": _obj(training),
        "training_standard": _obj(standard),
        "subject": _obj(subject),
        "civil_servant": _int(civil.astype(int)),
        "party_member": _int(party.astype(int)),
        "status": _obj(np.full(n, "01", dtype=object)),
    })
    return df.iloc[order].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Rooms and the school sheet
# --------------------------------------------------------------------------------------------


def _split_condition(rng, totals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    semi = rng.binomial(totals, 0.10)
    temp = rng.binomial(totals - semi, 0.02)
    return totals - semi - temp, semi, temp


def _rooms(rng: np.random.Generator, plan: SchoolPlan, classes: pd.DataFrame) -> pd.DataFrame:
    """One row per room type (MN: per room type × crèche/kindergarten), counts by condition."""
    rows: list[tuple[str, str | None, int]] = []
    if "MN" in plan.levels:
        grades = classes.loc[classes["level"] == "MN", "grade"]
        levels = [("nha_tre", int((grades == "16").sum())), ("mau_giao", int((grades == "17").sum()))]
        main = max(levels, key=lambda t: t[1])[0]
        for care, k in levels:
            if k == 0:
                continue
            rows.append(("01", care, k))
            rows.append(("02", care, int(rng.random() < 0.05)))
            if care == "mau_giao":
                rows += [("07", care, int(rng.random() < 0.5)), ("09", care, int(rng.random() < 0.6))]
        rows += [("13", main, 1), ("14", main, 1)]
    pt = classes["level"] != "MN"
    if pt.any():
        k = int(pt.sum())
        thcs = "THCS" in plan.levels
        rows.append(("01", None, max(1, k + int(rng.integers(-1, 2)))))
        rows.append(("02", None, int(rng.integers(1, 3)) if rng.random() < 0.05 else 0))
        rows += [("03", None, 1), ("04", None, 1 + int(thcs and rng.random() < 0.5)),
                 ("05", None, int(rng.random() < 0.85) + int(thcs or k > 25)),
                 ("06", None, int(rng.random() < 0.7) + int(thcs and rng.random() < 0.5)),
                 ("07", None, int(rng.random() < 0.6)), ("08", None, int(rng.random() < 0.5)),
                 ("09", None, int(rng.random() < 0.5)), ("10", None, int(rng.random() < 0.15)),
                 ("11", None, int(rng.random() < 0.3)), ("12", None, int(rng.random() < 0.4)),
                 ("13", None, 1)]
        if "TH" in plan.levels and rng.random() < 0.6:
            rows.append(("14", None, 1))
    totals = np.array([t for _, _, t in rows], dtype="int64")
    perm, semi, temp = _split_condition(rng, totals)
    return pd.DataFrame({
        "room_type": _obj([r for r, _, _ in rows]),
        "care_level": _obj([c for _, c, _ in rows]),
        "permanent": _int(perm), "semi_permanent": _int(semi), "temporary": _int(temp),
    })


def _school_sheet(rng: np.random.Generator, spec: CitySpec, plan: SchoolPlan) -> dict[str, object]:
    public = plan.ownership == "01"
    main = "THCS" if "THCS" in plan.levels else ("TH" if "TH" in plan.levels else "MN")
    p = rng.random(16)
    return {
        "school_code": plan.school_code,
        "school_name": plan.school_name,
        "school_year": spec.school_year,
        "period": spec.period,
        "education_level": plan.education_level,
        "ownership": plan.ownership,
        "province_code": spec.province_code,
        "district_code": spec.district_code,
        "commune_code": plan.commune_code,
        "region": plan.region,
        "national_standard": str(_category(p[0:1], (0.3, 0.5, 0.2) if public else (0.7, 0.25, 0.05))[0]),
        "satellite_sites": int(_category(p[1:2], (0.85, 0.12, 0.03))[0]),
        "two_sessions": int(p[2] < {"MN": 0.95, "TH": 0.9, "THCS": 0.2}[main]),
        "ethnic_semi_boarding": 0,
        "special_school": 0,
        "uses_computers": int(p[3] < (0.9 if main == "MN" else 0.99)),
        "internet": int(p[4] < 0.98),
        "mains_power": 1,
        "clean_water": int(p[5] < 0.99),
        "toilets": 1,
        "handwashing": int(p[6] < 0.95),
        "sex_education": int(p[7] < 0.85),
        "accessible_infrastructure": int(p[8] < 0.55),
        "school_counselling": int(p[9] < 0.85),
        "disaster_plan": int(p[10] < 0.9),
    }


# --------------------------------------------------------------------------------------------
# One school: population, end-of-year evolution, errors
# --------------------------------------------------------------------------------------------


@dataclass
class _Population:
    school: dict[str, object]
    classes: pd.DataFrame       # the Lop sheet
    rooms: pd.DataFrame
    learners: pd.DataFrame      # with internal columns, incl. future transfer-ins
    staff: pd.DataFrame


def _population(spec: CitySpec, plan: SchoolPlan) -> _Population:
    """The start-of-year school, the same for both periods."""
    rng = np.random.default_rng([spec.seed, plan.index])
    school = _school_sheet(rng, spec, plan)
    classes = _school_classes(rng, plan)
    class_tbl = _classes_table(classes, rng, school)
    learners = _learners(rng, spec, plan, classes, class_tbl)
    staff = _staff(rng, spec, plan, classes, int((~learners["_future_in"]).sum()))
    rooms = _rooms(rng, plan, classes)

    # IDs: one draw for learners and staff together, so they never collide in a bucket.
    prov = np.concatenate([learners["_pid_prov"].to_numpy(), staff["_pid_prov"].to_numpy()])
    cs = np.concatenate([learners["_pid_cs"].to_numpy(), staff["_pid_cs"].to_numpy()])
    yy = np.concatenate([learners["_pid_yy"].to_numpy(), staff["_pid_yy"].to_numpy()])
    pids = _personal_ids(rng, prov, cs, yy, plan.index, _bijection(spec.seed, 1, 10**6))
    nl = len(learners)
    learners["personal_id"] = _obj(_blank_where(pids[:nl], learners["_pid_blank"].to_numpy()))
    staff["personal_id"] = _obj(pids[nl:])
    code_map = _bijection(spec.seed, 2, 10**8)
    prov_num = int(spec.province_code) * 10**8
    if nl > CODE_BLOCK or len(staff) > 1000:  # pragma: no cover - far beyond real schools
        raise RuntimeError("school too large for its code block")
    serial = rng.choice(CODE_BLOCK, size=nl, replace=False)  # random places in the school's block
    learners["student_code"] = _obj(pd.Series(prov_num + code_map(plan.index * CODE_BLOCK + serial))
                                    .astype(str).str.zfill(10).to_numpy(dtype=object))
    staff_serial = rng.choice(1000, size=len(staff), replace=False)
    staff["staff_code"] = _obj(pd.Series(prov_num + code_map(STAFF_CODE_OFFSET + plan.index * 1000
                                                             + staff_serial))
                               .astype(str).str.zfill(10).to_numpy(dtype=object))
    return _Population(school, class_tbl, rooms, learners, staff)


def _thcs_scale(start_year: int, grade: np.ndarray) -> np.ndarray:
    new_from = load_contract().mappings["assessment_new_from"]
    first = pd.Series(grade).map({g: int(v) for g, v in new_from.items()}).fillna(10**6).to_numpy()
    return np.where(start_year >= first, "new", "old")


def _end_of_year(spec: CitySpec, plan: SchoolPlan, pop: _Population) -> pd.DataFrame:
    """The same cohort at the end of the year: transfers, dropouts, results."""
    rng = np.random.default_rng([spec.seed, plan.index, 1])
    y = spec.start_year
    df = pop.learners.copy()
    n = len(df)
    level = df["_level"].to_numpy()
    future_in = df["_future_in"].to_numpy()
    status = df["status"].to_numpy(dtype=object).copy()
    status_date = df["status_date"].to_numpy(dtype=object).copy()

    # Transfers in during the year (pre-drawn in the cohort so their IDs are fixed).
    k1 = rng.random(n) < 0.55
    status[future_in] = np.where(k1[future_in], "02", "06")
    d_k1 = _as_dates(_dates_between(rng, dt.date(y, 10, 1), dt.date(y, 12, 31), n))
    d_k2 = _as_dates(_dates_between(rng, dt.date(y + 1, 1, 10), dt.date(y + 1, 4, 30), n))
    status_date[future_in] = np.where(k1, d_k1, d_k2)[future_in]
    # Transfers out and dropouts, among the start-of-year cohort.
    u = rng.random(n)
    out = ~future_in & (u < TRANSFER_OUT)
    drop_p = pd.Series(level).map(DROPOUT).to_numpy(dtype=float)
    drop = ~future_in & ~out & (u >= TRANSFER_OUT) & (u < TRANSFER_OUT + drop_p)
    status[out] = np.where(k1[out], "04", "08")
    status_date[out] = np.where(k1, d_k1, d_k2)[out]
    status[drop] = np.where(k1[drop], "05", "09")
    status_date[drop] = np.where(k1, d_k1, d_k2)[drop]
    reason = np.full(n, None, dtype=object)
    reason[drop] = _choose(rng, DROPOUT_REASONS, int(drop.sum()))
    reason[drop & (level != "THCS") & (reason == "08")] = "06"  # vocational training is for THCS
    reason[drop & (level == "MN") & (reason == "02")] = "06"    # no "weak learning" in preschool
    df["status"] = _obj(status)
    df["status_date"] = _obj(status_date)
    df["dropout_reason"] = _obj(reason)

    active = ~out & ~drop
    th = active & (level == "TH")
    thcs = active & (level == "THCS")
    grade = df["grade"].to_numpy(dtype=object)
    # Absences: mostly a few days; a handful of chronic absentees (> 45 days).
    absent = np.where(level == "TH", rng.negative_binomial(1, 0.33, n), rng.negative_binomial(1, 0.25, n))
    chronic_p = pd.Series(level).map(CHRONIC_ABSENCE).fillna(0).to_numpy(dtype=float)
    chronic = rng.random(n) < chronic_p
    absent = np.where(chronic, rng.integers(46, 80, n), absent)
    skill = rng.random(n)  # latent: small = strong pupil

    # TH: year result, completion, outcome, title.
    result = np.full(n, None, dtype=object)
    cat = _category(_uniform_rank(skill[th]), TH_YEAR_RESULT) + 1
    result[th] = cat.astype(str)
    result[th & chronic] = "4"
    completed = np.where(result == "4", 0, 1)
    completed_primary = np.where(th & (grade == "05"), completed, 0)
    # THCS: conduct and learning on the scale of the grade, correlated through `skill`.
    scale = _thcs_scale(y, grade)
    conduct = np.full(n, None, dtype=object)
    learning = np.full(n, None, dtype=object)
    c_idx = np.full(n, -1)
    l_idx = np.full(n, -1)
    for sc, spec_sc in THCS_SCALES.items():
        m = thcs & (scale == sc)
        if not m.any():
            continue
        l_u = _uniform_rank(skill[m])
        c_u = _uniform_rank(0.6 * skill[m] + 0.4 * rng.random(int(m.sum())))
        for measure, u_m, idx, out_arr in (("learning", l_u, l_idx, learning), ("conduct", c_u, c_idx, conduct)):
            ref, probs = spec_sc[measure]
            k = _category(u_m, probs)
            idx[m] = k
            out_arr[m] = np.array(load_codelist(ref).labels, dtype=object)[k]
    fail_c = np.where(scale == "new", THCS_FAIL_FROM["new"]["conduct"], THCS_FAIL_FROM["old"]["conduct"])
    fail_l = np.where(scale == "new", THCS_FAIL_FROM["new"]["learning"], THCS_FAIL_FROM["old"]["learning"])
    thcs_fail = thcs & ((c_idx >= fail_c) | (l_idx >= fail_l) | (absent > 45))
    outcome = np.full(n, None, dtype=object)
    outcome[th] = np.where(result[th] == "4", "3", "1")
    outcome[thcs] = np.where(thcs_fail[thcs], "3", "1")
    outcome[drop & (level != "MN")] = "4"
    promoted = outcome == "1"
    g9 = thcs & (grade == "09")
    graduated = g9 & promoted
    rank = np.full(n, None, dtype=object)
    rank[graduated] = np.where((l_idx == 0) & (c_idx == 0), "1",
                               np.where((l_idx <= 1) & (c_idx <= 1), "2", "3"))[graduated]
    title = np.full(n, None, dtype=object)
    title[th & (result == "1")] = "1"
    good = thcs & promoted & (l_idx == 0) & (c_idx == 0)
    title[good & (scale == "new")] = "2"
    top = good & (scale == "new") & (skill < 0.3 * 0.30)  # the strongest third of "Tốt/Tốt"
    title[top] = "1"
    title[good & (scale == "old")] = "2"
    title[thcs & promoted & (scale == "old") & ~good & (l_idx <= 1) & (c_idx <= 1)] = "3"
    age_group = df["_age_group"].to_numpy(dtype=object)

    df["year_result"] = _obj(result)
    df["completed_grade"] = _int(completed, blank=~th)
    df["completed_primary"] = _int(completed_primary, blank=~(th & (grade == "05")))
    df["conduct"] = _obj(conduct)
    df["learning"] = _obj(learning)
    df["absent_days"] = _int(absent, blank=~(th | thcs))
    df["outcome"] = _obj(outcome)
    df["graduated"] = _int(graduated.astype(int), blank=~g9)
    df["graduation_rank"] = _obj(rank)
    df["title"] = _obj(title)
    df["mn_completed_programme"] = _int((rng.random(n) < 0.995).astype(int),
                                        blank=~((level == "MN") & active & (age_group == "06")))
    return df


def _finish_learners(df: pd.DataFrame, fields: Sequence[str], include_future: bool) -> pd.DataFrame:
    """Drop pupils not yet arrived, sort as schools do (class, then given name), keep fields."""
    if not include_future:
        df = df[~df["_future_in"]]
    df = df.iloc[np.lexsort((df["_sort"].to_numpy(dtype=str), df["_class_pos"].to_numpy()))]
    out = df.reindex(columns=list(fields)).reset_index(drop=True)
    for c in out.columns:
        if out[c].dtype != "Int64":
            out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


def _sheet_fields(sheet_id: str, levels: tuple[str, ...], period: str) -> list[str]:
    return [f.id for f in load_contract().sheet(sheet_id).fields_for(levels, period)]


def generate_school_tables(spec: CitySpec, plan: SchoolPlan) -> SchoolTables:
    """One school's sheets in memory (errors injected when the spec asks and the school is
    not a clean one): `school` (Truong values) and `tables` (rooms, classes, learners, staff)."""
    if spec.continues:
        from edustat.synth_next import continued_population

        pop = continued_population(spec, plan)
    else:
        pop = _population(spec, plan)
    if spec.period == "cuoi_nam":
        learners = _finish_learners(_end_of_year(spec, plan, pop),
                                    _sheet_fields("learners", plan.levels, spec.period), True)
    else:
        learners = _finish_learners(pop.learners, _sheet_fields("learners", plan.levels, spec.period), False)
    staff = pop.staff.reindex(columns=_sheet_fields("staff", plan.levels, spec.period))
    tables = {"classes": pop.classes.reindex(columns=_sheet_fields("classes", plan.levels, spec.period)),
              "learners": learners, "staff": staff}
    if spec.period == "dau_nam":
        tables["rooms"] = pop.rooms.reindex(columns=_sheet_fields("rooms", plan.levels, spec.period))
    school = dict(pop.school)
    st = SchoolTables(plan, school, tables)
    if spec.error_rate > 0 and not plan.clean:
        st.errors = _inject_errors(np.random.default_rng([spec.seed, plan.index, 2]), spec, st)
    return st


def generate_city_tables(*, schools: int, seed: int, school_year: str = "2022-2023",
                         period: str = "dau_nam", export_share: float = 0.0, error_rate: float = 0.0,
                         province_code: str = "74", district_code: str = "718") -> list[SchoolTables]:
    """The whole city in memory, without writing (for tests and notebooks)."""
    spec = _spec(schools, seed, school_year, period, export_share, error_rate, province_code, district_code)
    return [generate_school_tables(spec, p) for p in plan_city(spec)]


# --------------------------------------------------------------------------------------------
# Injected errors
# --------------------------------------------------------------------------------------------

_LEARNER_KINDS = {  # kind → weight
    "personal_id_format": 3, "personal_id_sex_century": 2, "personal_id_birth_year": 2,
    "required": 2, "code": 2, "birth_date_format": 2, "class_exists": 1.5,
    "grade_matches_class": 1.5, "code_unique": 1, "age_for_grade": 1.5,
}
_STAFF_KINDS = {
    "personal_id_format": 3, "personal_id_sex_century": 2, "personal_id_birth_year": 2,
    "required": 2, "code": 2, "birth_date_format": 2,
}
_BAD_CODES = {"sex": "3", "ethnicity": "99", "grade": "13"}


def _fmt(value: object) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, dt.date):
        return value.strftime("%d/%m/%Y")
    return str(value)


def _inject_errors(rng: np.random.Generator, spec: CitySpec, st: SchoolTables) -> list[PendingError]:
    """At most one error per learner/staff row, with probability `error_rate` per row."""
    out: list[PendingError] = []
    numeric_ids = st.plan.style.ids_as_numbers
    classes = st.tables["classes"]
    class_grade = dict(zip(classes["class_code"], classes["grade"]))
    class_grades = {c: {g} for c, g in class_grade.items()}
    # a mixed class also takes the next grade
    for c, g, m in zip(classes["class_code"], classes["grade"], classes["mixed"]):
        if int(m or 0) > 1 and g not in ("16", "17"):
            class_grades[c] |= {f"{int(g) + k:02d}" for k in range(int(m))}
    for sheet_id, prefix, kinds in (("learners", "student", _LEARNER_KINDS), ("staff", "staff", _STAFF_KINDS)):
        df = st.tables[sheet_id]
        n = len(df)
        rows = np.flatnonzero(rng.random(n) < spec.error_rate)
        names_k = list(kinds)
        p = np.array(list(kinds.values()), dtype=float)
        picks = rng.choice(len(names_k), size=len(rows), p=p / p.sum())
        clean_rows = np.setdiff1d(np.arange(n), rows)
        for row, k in zip(rows.tolist(), picks.tolist()):
            e = _inject_one(rng, spec, df, sheet_id, prefix, int(row), names_k[k], class_grade,
                            class_grades, clean_rows, numeric_ids)
            if e is None:  # the kind does not fit this row (e.g. no personal ID): blank the name
                e = _inject_one(rng, spec, df, sheet_id, prefix, int(row), "required", class_grade,
                                class_grades, clean_rows, numeric_ids, force_field="full_name")
            out.append(e)
    return out


def _inject_one(rng, spec: CitySpec, df: pd.DataFrame, sheet_id: str, prefix: str, row: int,
                kind: str, class_grade, class_grades, clean_rows, numeric_ids: bool,
                force_field: str | None = None) -> PendingError | None:
    """Change one cell of `df` (and, for an age error, keep the ID consistent); None if the
    kind cannot apply to this row."""
    def put(col: str, value: object, rule: str, kind_name: str) -> PendingError:
        original = _fmt(df.at[row, col])
        df.at[row, col] = value
        return PendingError(sheet_id, row, col, kind_name, f"{prefix}_{rule}", original, _fmt(value))

    pid = df.at[row, "personal_id"]
    has_pid = isinstance(pid, str) and len(pid) == 12
    if kind == "personal_id_format":
        if not has_pid:
            return None
        variant = int(rng.choice([0, 2] if numeric_ids else [0, 1, 2]))
        bad = pid[:-1] if variant == 0 else (pid + str(int(rng.integers(0, 10))) if variant == 1
                                               else pid[:5] + "O" + pid[6:])
        return put("personal_id", bad, "personal_id_format", kind)
    if kind == "personal_id_sex_century":
        if not has_pid:
            return None
        d4 = int(pid[3])
        wrong = d4 ^ 1 if rng.random() < 0.7 else (d4 + 2) % 4  # other sex, or other century
        return put("personal_id", pid[:3] + str(wrong) + pid[4:], "personal_id_sex_century", kind)
    if kind == "personal_id_birth_year":
        if not has_pid:
            return None
        yy = (int(pid[4:6]) + int(rng.choice([-3, -2, -1, 1, 2, 3]))) % 100
        return put("personal_id", f"{pid[:4]}{yy:02d}{pid[6:]}", "personal_id_birth_year", kind)
    if kind == "required":
        col = force_field or str(rng.choice(["full_name", "birth_date", "sex"]))
        return put(col, None, f"{col}_required", "required_blank")
    if kind == "code":
        cols = ["sex", "ethnicity"] + (["grade"] if sheet_id == "learners" else [])
        col = str(rng.choice(cols))
        return put(col, _BAD_CODES[col], f"{col}_code", "unknown_code")
    if kind == "birth_date_format":
        born = df.at[row, "birth_date"]
        bad = f"31/02/{born.year}" if isinstance(born, dt.date) and rng.random() < 0.6 else "abc"
        return put("birth_date", bad, "birth_date_format", "invalid_date")
    if kind == "class_exists":
        existing = set(class_grade)
        code = next(f"L{c}" for c in rng.permutation(np.arange(900, 1000)) if f"L{c}" not in existing)
        return put("class_code", code, "class_exists", "class_not_found")
    if kind == "grade_matches_class":
        cls = df.at[row, "class_code"]
        g = class_grade.get(cls)
        if g is None:
            return None
        if g in ("16", "17"):
            other = "17" if g == "16" else "16"
        else:
            same_level = [f"{x:02d}" for x in (range(1, 6) if int(g) <= 5 else range(6, 10))]
            choices = [x for x in same_level if x not in class_grades[cls]]
            other = str(rng.choice(choices))
        return put("grade", other, "grade_matches_class", "grade_class_mismatch")
    if kind == "code_unique":
        if len(clean_rows) == 0:
            return None
        src = int(rng.choice(clean_rows))
        return put("student_code", df.at[src, "student_code"], "code_unique", "duplicate_code")
    if kind == "age_for_grade":
        g = df.at[row, "grade"]
        born = df.at[row, "birth_date"]
        if g in ("16", "17") or not isinstance(born, dt.date):
            return None
        shift = int(rng.choice([-7, -6, 4]))  # 7/6 years too old, or 4 too young
        try:
            new = born.replace(year=born.year + shift)
        except ValueError:  # 29 February
            new = born.replace(year=born.year + shift, day=28)
        if has_pid:  # keep digits 4–6 consistent: this row has one error, the age
            female = df.at[row, "sex"] == "02"
            d4 = (new.year // 100 - 19) * 2 + int(female)
            df.at[row, "personal_id"] = f"{pid[:3]}{d4}{new.year % 100:02d}{pid[6:]}"
        return put("birth_date", new, "age_for_grade", "age_for_grade")
    raise ValueError(kind)


# --------------------------------------------------------------------------------------------
# Writing the city
# --------------------------------------------------------------------------------------------


def _spec(schools, seed, school_year, period, export_share, error_rate, province_code,
          district_code, clerk_share=0.0, typo_rate=0.0, broken=0, continues=False) -> CitySpec:
    if period not in ("dau_nam", "cuoi_nam"):
        raise ValueError(f"period must be dau_nam or cuoi_nam, got {period!r}")
    if not re.fullmatch(r"\d{4}-\d{4}", school_year) or int(school_year[5:]) != int(school_year[:4]) + 1:
        raise ValueError(f"school_year must look like 2022-2023, got {school_year!r}")
    if not 0.0 <= export_share <= 1.0 or not 0.0 <= error_rate <= 1.0:
        raise ValueError("export_share and error_rate must be in [0, 1]")
    return CitySpec(schools=int(schools), seed=int(seed), school_year=school_year, period=period,
                    export_share=float(export_share), error_rate=float(error_rate),
                    province_code=str(province_code), district_code=str(district_code),
                    clerk_share=float(clerk_share), typo_rate=float(typo_rate), broken=int(broken),
                    continues=bool(continues))


def _write_school(args: tuple[CitySpec, SchoolPlan, str]) -> tuple[SchoolEntry, list[InjectedError], list[InjectedError]]:
    """Generate, write and describe one school (runs in a worker process)."""
    spec, plan, out_dir = args
    st = generate_school_tables(spec, plan)
    style = plan.style
    layouts = write_submission(Path(out_dir) / plan.file_name, levels=plan.levels, period=spec.period,
                               school_year=spec.school_year, school=st.school, tables=st.tables,
                               style=style)
    errors = [_locate(plan, layouts[e.sheet_id], e.sheet_id, e.row, e.field, e.kind, e.rule, e.original,
                      e.injected)
              for e in sorted(st.errors, key=lambda e: (e.sheet_id != "learners", e.row))]
    notices = _zero_notices(plan, st, layouts) if style.ids_as_numbers else []
    spellings: list[dict] = []
    if plan.style_name == "clerk":
        from edustat.synth_clerk import clerkify

        rng = np.random.default_rng([spec.seed, 9, plan.index])
        seen: set[tuple] = set()
        for s in clerkify(Path(out_dir) / plan.file_name, layouts, rng, typo_rate=spec.typo_rate):
            key = (s.sheet, s.field, s.code, s.written)
            if s.kind != "word" or key not in seen:  # every header and typo; each distinct word once
                seen.add(key)
                spellings.append({"school_code": plan.school_code, "file": plan.file_name, **asdict(s)})
    if plan.broken:
        errors.append(_break_learner_sheet(plan, Path(out_dir) / plan.file_name, layouts["learners"]))
    entry = SchoolEntry(
        school_code=plan.school_code, school_name=plan.school_name,
        education_level=plan.education_level, levels=plan.levels, ownership=plan.ownership,
        commune_code=plan.commune_code, region=plan.region, file=plan.file_name,
        style="template" if plan.style_name == "template" else "export", style_name=plan.style_name,
        export_options=asdict(style), clean=not st.errors,
        rows={sid: len(df) for sid, df in st.tables.items()},
        sheets={sid: lay.name for sid, lay in layouts.items()},
    )
    return entry, errors, notices, spellings


def _break_learner_sheet(plan: SchoolPlan, path: Path, layout: SheetLayout) -> InjectedError:
    """Rename the learner sheet's class column to words no vocabulary holds: the file is
    rejected at the structure stage (file_column_missing), the rest of the city goes on."""
    import openpyxl

    wb = openpyxl.load_workbook(path)
    ws = wb[layout.name]
    cell = f"{layout.columns['class_code']}{layout.header_row}"
    before = ws[cell].value
    ws[cell] = "Thông tin sắp xếp chỗ ngồi"
    wb.save(path)
    return InjectedError(plan.school_code, plan.file_name, layout.name, layout.header_row, "class_code", cell,
                         str(before), "column_renamed", "file_column_missing", str(before), ws[cell].value, ws[cell].value)


# ID cells that lose a leading zero when written as numbers; the reader re-pads them (a notice).
_PADDED = {("learners", "personal_id"): "student_personal_id_padded",
           ("learners", "student_code"): "student_code_padded",
           ("staff", "personal_id"): "staff_personal_id_padded"}


def _zero_notices(plan: SchoolPlan, st: SchoolTables, layouts: Mapping[str, SheetLayout]) -> list[InjectedError]:
    """One notice per full-length ID cell starting with 0 in a file that writes IDs as numbers."""
    out: list[InjectedError] = []
    code = str(st.school.get("school_code") or "")
    if code.startswith("0") and code.isdigit() and "school" in layouts:
        lay = layouts["school"]
        r = lay.field_rows["school_code"]
        out.append(InjectedError(plan.school_code, plan.file_name, lay.name, r, "school_code", f"B{r}",
                                 lay.headers["school_code"], "leading_zero_lost", "school_code_padded",
                                 code, code, str(int(code))))
    for (sheet_id, field_id), rule in _PADDED.items():
        pattern = load_contract().sheet(sheet_id).field(field_id).pattern or r"^\d+$"
        ids = st.tables[sheet_id][field_id].astype("string")
        lost = ids.str.match(pattern).fillna(False) & ids.str.startswith("0").fillna(False)
        for row in np.flatnonzero(lost.to_numpy(dtype=bool)).tolist():
            v = str(ids.iat[row])
            # born in provinces 001–009: two zeros go; the reader re-pads 10- and 11-digit IDs
            kind, r = ("leading_zeros_lost" if v.startswith("00") else "leading_zero_lost"), rule
            out.append(_locate(plan, layouts[sheet_id], sheet_id, row, field_id, kind, r, v, v))
    return out


def _as_written(sheet_id: str, field_id: str, value: str | None, style: ExportStyle) -> str | None:
    """What the writer puts in the cell for this value and style, as text."""
    if value is None:
        return None
    f = load_contract().sheet(sheet_id).field(field_id)
    if f.type == "code" and style.values == "label" and f.codelist is not None and value in f.codelist.codes:
        return f.codelist.label(value) or value
    if f.type == "id" and style.ids_as_numbers and value.isdigit():
        return str(int(value))
    return value


def _locate(plan: SchoolPlan, layout: SheetLayout, sheet_id: str, row: int, field_id: str, kind: str,
            rule: str, original: str | None, injected: str | None) -> InjectedError:
    excel_row = layout.first_data_row + row
    return InjectedError(
        school_code=plan.school_code, file=plan.file_name, sheet=layout.name, excel_row=excel_row,
        column=field_id, cell=f"{layout.columns[field_id]}{excel_row}",
        header=layout.headers[field_id], kind=kind, rule=rule, original=original, injected=injected,
        written=_as_written(sheet_id, field_id, injected, plan.style),
    )


def generate_city(out_dir: Path, *, schools: int, seed: int, school_year: str = "2022-2023",
                  period: str = "dau_nam", export_share: float = 0.0, error_rate: float = 0.0,
                  province_code: str = "74", district_code: str = "718", workers: int = 1,
                  clerk_share: float = 0.0, typo_rate: float = 0.0, broken: int = 0,
                  continues: bool = False) -> CityManifest:
    """Write one workbook per school into `out_dir` plus `manifest.json` (the ground truth:
    schools, file styles, row counts, every injected error at its cell). Same arguments →
    the same manifest bytes and sheet contents, whatever `workers` is. `continues`: the
    learners, staff and classes continue the previous school year's end of the same seed
    (promoted one grade up with the same codes; see edustat.synth_next)."""
    spec = _spec(schools, seed, school_year, period, export_share, error_rate, province_code, district_code,
                 clerk_share, typo_rate, broken, continues)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plans = plan_city(spec)
    jobs = [(spec, p, str(out_dir)) for p in plans]
    if workers > 1 and len(plans) > 1:
        # Big schools first keeps the workers busy to the end; results are re-ordered below.
        order = sorted(range(len(jobs)), key=lambda i: ("THCS" not in plans[i].levels, i))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            done = dict(zip(order, pool.map(_write_school, [jobs[i] for i in order], chunksize=1)))
        results = [done[i] for i in range(len(jobs))]
    else:
        results = [_write_school(j) for j in jobs]
    manifest = CityManifest(
        spec=spec, contract_version=load_contract().version,
        schools=tuple(r[0] for r in results),
        errors=tuple(e for r in results for e in r[1]),
        notices=tuple(e for r in results for e in r[2]),
        spellings=tuple(s for r in results for s in r[3]),
    )
    (out_dir / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    return manifest
