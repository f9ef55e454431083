"""The Circular 24/2018 report forms: one generic engine over form definitions.

A form is a YAML file in `schemas/forms/` (layout copied from the ministry's exports, each
row's indicator written next to it as a count or sum over a report view with a SQL `where`).
This module:
- builds the report views of a collection and form level (`rpt_school`, `rpt_class`,
  `rpt_learner`, `rpt_learner_all`, `rpt_staff`, `rpt_room`);
- computes every cell with ONE grouped query per entity (all rows and measures of the form as
  filtered aggregates, grouped by school × ownership group), so the city and every school
  come out of the same pass;
- checks each produced form (its own identities and a reconciliation with the curated rows);
- stores every cell in `rpt_form_cell` and every check in `rpt_form_check`;
- renders the workbook (values, not formulas) in the ministry's layout with xlsxwriter.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import duckdb
import pandas as pd
import yaml

FORMS_DIR = Path(__file__).resolve().parents[1] / "schemas" / "forms"
ENTITIES = ("school", "class", "learner", "learner_all", "staff", "room")
PEOPLE_MEASURES = {
    "tong": "true",
    "nu": "is_female",
    "dtts": "is_dtts",
    "dtts_nu": "is_dtts and is_female",
    "vien_chuc_khong_xac_dinh": "contract_bucket = 'vien_chuc_khong_xac_dinh'",
    "vien_chuc_xac_dinh": "contract_bucket = 'vien_chuc_xac_dinh'",
    "hop_dong_lao_dong": "contract_bucket = 'hop_dong_lao_dong'",
}
ROOM_VALUES = {"tong": "tong", "kien_co": "permanent", "ban_kien_co": "semi_permanent", "tam": "temporary"}
CELL_COLUMNS = ["school_year", "period", "form_code", "scope", "row_code", "column_key", "value"]
CHECK_COLUMNS = ["school_year", "period", "form_code", "scope", "check_name", "row_code", "column_key",
                 "expected", "actual", "ok", "message"]


class FormError(ValueError):
    """A form definition is inconsistent (a developer / office error, caught by tests)."""


# ---------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def load_form(form_code: str) -> dict:
    path = FORMS_DIR / f"{form_code}.yaml"
    if not path.exists():
        raise FormError(f"no form definition {path}")
    form = yaml.safe_load(path.read_text(encoding="utf-8"))
    _check_definition(form)
    return form


def list_forms(period: str | None = None) -> list[str]:
    """Form codes, optionally of one period (read from each file's `period:` line, so a form
    being edited for the other period never stops this one)."""
    out = []
    for path in sorted(FORMS_DIR.glob("*.yaml")):
        if period is not None:
            m = re.search(r"^period:\s*(\S+)", path.read_text(encoding="utf-8"), re.M)
            if not m or m.group(1) != period:
                continue
        out.append(path.stem)
    return out


def data_rows(form: dict) -> Iterable[tuple[dict, dict]]:
    """(sheet, row) for every row that carries a Mã số."""
    for sheet in form["sheets"]:
        for row in sheet.get("rows", []):
            if "code" in row:
                yield sheet, row


ROW_KEYS = {"tt", "label", "unit", "code", "na", "count", "sum", "entity", "where", "within", "parts", "reconcile", "note"}


def _check_definition(form: dict) -> None:
    codes = [row["code"] for _, row in data_rows(form)]
    if len(codes) != len(set(codes)):
        raise FormError(f"{form['form_code']}: duplicate row codes")
    columns_of = {row["code"]: tuple(sheet["columns"]) for sheet, row in data_rows(form)}
    for sheet, row in data_rows(form):
        unknown = set(row) - ROW_KEYS
        if unknown:  # a misspelt `wehre:` would silently count everything
            raise FormError(f"{form['form_code']} row {row['code']}: unknown keys {sorted(unknown)}")
        if row.get("reconcile") and row["reconcile"] not in RECONCILE:
            raise FormError(f"{form['form_code']} row {row['code']}: reconcile must be one of {sorted(RECONCILE)}")
        for ref in [*(p for g in _part_groups(row) for p in g), *([row["within"]] if "within" in row else [])]:
            if columns_of.get(ref) not in (None, tuple(sheet["columns"])):
                # compared column by column: a row on a sheet of other columns would never be
                # checked (or be compared across units)
                raise FormError(f"{form['form_code']} row {row['code']}: row {ref} has other columns")
        if "count" not in row and "sum" not in row:
            raise FormError(f"{form['form_code']} row {row['code']}: no definition (count/sum)")
        entity = row.get("count") or row.get("entity")
        if entity not in ENTITIES:
            raise FormError(f"{form['form_code']} row {row['code']}: unknown entity {entity!r}")
        for key in row.get("na", []):
            if key not in sheet["columns"]:
                raise FormError(f"{form['form_code']} row {row['code']}: na {key} is not a column")
        for ref in [*(p for g in _part_groups(row) for p in g), *([row["within"]] if "within" in row else [])]:
            if ref not in codes:
                raise FormError(f"{form['form_code']} row {row['code']}: refers to unknown row {ref}")


def _part_groups(row: dict) -> list[list[int]]:
    """`parts: [a, b]` or several splits of the same total: `parts: [[a, b], [c, d, e]]`."""
    parts = row.get("parts") or []
    return [list(p) for p in parts] if parts and isinstance(parts[0], list) else ([list(parts)] if parts else [])


def _entity(row: dict) -> str:
    return row.get("count") or row.get("entity")


# ---------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------

def _lit(value: str) -> str:
    if not re.fullmatch(r"[0-9A-Za-z_\-]+", value):
        raise ValueError(f"unsafe literal {value!r}")
    return f"'{value}'"


def create_views(con: duckdb.DuckDBPyConnection, school_year: str, period: str, level: str, groups: list[str]) -> None:
    """Temp views of one collection × level. `grp` is the form's ownership column group of a
    school (a group the form has no column for is counted with tư thục, the forms' non-public
    group — e.g. a dân lập primary school on 02-TH-ĐN)."""
    y, p, lv = _lit(school_year), _lit(period), _lit(level)
    start = int(school_year[:4])
    grp_case = "case " + " ".join(f"when ownership_group = {_lit(g)} then {_lit(g)}" for g in groups) + " else 'tu_thuc' end"
    con.execute(f"""
    create or replace temp view rpt_school as
    with schools as (
        select * from core_school
        where school_year = {y} and period = {p} and list_contains(string_split(levels, ','), {lv})
    ),
    classes as (
        select school_code,
               count(*) filter (where level = {lv}) as n_classes,
               count(*) filter (where care_level = 'nha_tre') as n_groups_nha_tre,
               count(*) filter (where care_level = 'mau_giao') as n_classes_mau_giao
        from core_classes where school_year = {y} and period = {p} group by 1
    ),
    learners as (
        select school_code,
               count(*) as n_learners,
               count(*) filter (where is_disabled and coalesce(special_education, '0') = '0') as n_disabled_inclusive
        from core_learners where school_year = {y} and period = {p} and level = {lv} and is_enrolled group by 1
    ),
    final as (
        select s.*, {grp_case} as grp,
               coalesce(c.n_classes, 0) as n_classes, coalesce(c.n_groups_nha_tre, 0) as n_groups_nha_tre,
               coalesce(c.n_classes_mau_giao, 0) as n_classes_mau_giao,
               coalesce(l.n_learners, 0) as n_learners, coalesce(l.n_disabled_inclusive, 0) as n_disabled_inclusive
        from schools s left join classes c using (school_code) left join learners l using (school_code)
    )
    select * from final""")
    school_attrs = ("s.grp, s.region, s.ethnic_semi_boarding as school_semi_boarding, "
                    "s.special_school as school_special, s.two_sessions as school_two_sessions, "
                    "s.mn_school_type")
    con.execute(f"""
    create or replace temp view rpt_learner_all as
    with learners as (
        select * from core_learners where school_year = {y} and period = {p} and level = {lv}
    ),
    final as (
        select l.*, {school_attrs},
               -- completed months at the reference date (30/9 of the start year; 31/5 at year end)
               date_diff('month', l.birth_date, make_date({start + (1 if period == 'cuoi_nam' else 0)},
                         {5 if period == 'cuoi_nam' else 9}, {31 if period == 'cuoi_nam' else 30})) as age_months
        from learners l join rpt_school s using (school_code)
    )
    select * from final""")
    con.execute("create or replace temp view rpt_learner as select * from rpt_learner_all where is_enrolled")
    con.execute(f"""
    create or replace temp view rpt_class as
    with classes as (
        select * from core_classes where school_year = {y} and period = {p}
          and (level = {lv} or ({lv} = 'MN' and care_level is not null))
    ),
    sizes as (
        select school_code, class_code, count(*) as n_learners,
               count(*) filter (where is_disabled) as n_disabled
        from core_learners where school_year = {y} and period = {p} and is_enrolled group by 1, 2
    ),
    final as (
        select c.*, coalesce(z.n_learners, 0) as n_learners, coalesce(z.n_disabled, 0) as n_disabled, {school_attrs}
        from classes c join rpt_school s using (school_code) left join sizes z using (school_code, class_code)
    )
    select * from final""")
    con.execute(f"""
    create or replace temp view rpt_staff as
    select st.*, {school_attrs}
    from core_staff st join rpt_school s using (school_code)
    where st.school_year = {y} and st.period = {p} and st.is_active and st.level = {lv}""")
    con.execute(f"""
    create or replace temp view rpt_room as
    select r.*, coalesce(r.permanent, 0) + coalesce(r.semi_permanent, 0) + coalesce(r.temporary, 0) as tong, {school_attrs}
    from core_rooms r join rpt_school s using (school_code)
    where r.school_year = {y} and r.period = {p}""")


# ---------------------------------------------------------------------------------------
# Compute
# ---------------------------------------------------------------------------------------

def _measure_sql(entity: str, row: dict, measure: str) -> str:
    where = row.get("where", "true")
    if entity == "room":
        value = row.get("sum", ROOM_VALUES[measure]) if measure == "tong" or "sum" not in row else ROOM_VALUES[measure]
        if measure != "tong":
            value = ROOM_VALUES[measure]
        return f"coalesce(sum({value}) filter (where ({where})), 0)"
    pred = PEOPLE_MEASURES.get(measure)
    if pred is None:
        raise FormError(f"measure {measure!r} is not defined for {entity}")
    if "sum" in row:
        return f"coalesce(sum({row['sum']}) filter (where ({where}) and ({pred})), 0)"
    return f"count(*) filter (where ({where}) and ({pred}))"


def compute_form(con: duckdb.DuckDBPyConnection, form: dict, school_year: str, period: str,
                 schools: Iterable[str] | None = None) -> pd.DataFrame:
    """Every cell of the form for the city and each school.
    Grain: rows of the report views → one row per (scope, row_code, column_key)."""
    create_views(con, school_year, period, form["level"], form["groups"])
    school_list = [r[0] for r in con.execute("select school_code from rpt_school order by 1").fetchall()]
    if schools is not None:
        wanted = set(schools)
        school_list = [s for s in school_list if s in wanted]
    by_entity: dict[str, list[tuple[dict, dict]]] = {}
    for sheet, row in data_rows(form):
        by_entity.setdefault(_entity(row), []).append((sheet, row))
    long_parts = []
    for entity, rows in by_entity.items():
        selects, keys = [], []
        for sheet, row in rows:
            measures = sorted({c.split(".", 1)[1] for c in sheet["columns"]})
            for m in measures:
                alias = f"c{row['code']}__{m}"
                selects.append(f'{_measure_sql(entity, row, m)} as "{alias}"')
                keys.append((alias, row["code"], m))
        sql = f"select school_code, grp, {', '.join(selects)} from rpt_{entity} group by all"
        try:
            wide = con.execute(sql).df()
        except duckdb.Error as exc:
            raise FormError(f"{form['form_code']} ({entity}): {exc}") from exc
        if wide.empty:
            continue
        long = wide.melt(id_vars=["school_code", "grp"], var_name="alias", value_name="value")
        meta = pd.DataFrame(keys, columns=["alias", "row_code", "measure"])
        long_parts.append(long.merge(meta, on="alias").drop(columns="alias"))
    cells = _assemble(form, pd.concat(long_parts, ignore_index=True) if long_parts else
                      pd.DataFrame(columns=["school_code", "grp", "value", "row_code", "measure"]), school_list)
    cells.insert(0, "form_code", form["form_code"])
    cells.insert(0, "period", period)
    cells.insert(0, "school_year", school_year)
    return cells[CELL_COLUMNS]


def _assemble(form: dict, long: pd.DataFrame, schools: list[str]) -> pd.DataFrame:
    """Per school and for the city: each sheet column `<group>.<measure>` of each row; the
    tong_so group is the sum over groups; '#' cells (na) are NULL. Vectorised: the grid of
    (scope, row, column) comes from the definition, the values from two group-bys."""
    long = long[long["school_code"].isin(schools) & long["grp"].isin(form["groups"])] if schools else long.iloc[0:0]
    long = long.assign(value=pd.to_numeric(long["value"], errors="coerce").astype("float64"))
    by_group = long.assign(column_key=long["grp"] + "." + long["measure"])
    total = long.assign(column_key="tong_so." + long["measure"])
    per_school = pd.concat([by_group, total]).groupby(["school_code", "row_code", "column_key"])["value"].sum()
    city = per_school.groupby(level=["row_code", "column_key"]).sum()
    grid = [(row["code"], key, key in set(row.get("na", []))) for sheet, row in data_rows(form) for key in sheet["columns"]]
    base = pd.DataFrame(grid, columns=["row_code", "column_key", "na"])
    out = pd.DataFrame({"scope": ["city", *schools]}).merge(base, how="cross")
    values = pd.concat([city.rename("value").reset_index().assign(scope="city"),
                        per_school.rename("value").reset_index().rename(columns={"school_code": "scope"})])
    out = out.merge(values, on=["scope", "row_code", "column_key"], how="left")
    out["value"] = out["value"].astype("float64").fillna(0.0).where(~out["na"])
    out["value"] = out["value"].astype(object).where(out["value"].notna(), None)
    return out[["scope", "row_code", "column_key", "value"]]


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------

def check_form(form: dict, cells: pd.DataFrame) -> pd.DataFrame:
    """The form's own identities, per scope: total = Σ groups; female ≤ total; DTTS ≤ total;
    DTTS-female ≤ min(DTTS, female); public contract columns ≤ total; rooms total = Σ
    conditions; and the definition's `parts` (sum) and `within` (≤ parent) rows.
    Vectorised over scopes: one wide frame (scope × row, one column per column key)."""
    cols = ["school_year", "period", "form_code", "scope", "check_name", "row_code", "column_key",
            "expected", "actual", "ok", "message"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    values = cells.assign(value=pd.to_numeric(cells["value"], errors="coerce").astype("float64"))
    wide = values.pivot_table(index=["scope", "row_code"], columns="column_key", values="value", aggfunc="first")
    out: list[pd.DataFrame] = []

    def emit(name: str, key: str, expected: pd.Series, actual: pd.Series, ok: pd.Series, msg: str) -> None:
        valid = expected.notna() & actual.notna()
        if valid.any():
            idx = expected.index[valid]
            out.append(pd.DataFrame({"scope": idx.get_level_values(0), "row_code": idx.get_level_values(1),
                                     "check_name": name, "column_key": key, "expected": expected[valid].to_numpy(),
                                     "actual": actual[valid].to_numpy(), "ok": ok[valid].to_numpy(), "message": msg}))

    def col(key: str) -> pd.Series:
        return wide[key] if key in wide.columns else pd.Series(float("nan"), index=wide.index)

    measures = {k.split(".", 1)[1] for k in wide.columns}
    for m in sorted(measures):
        parts = [f"{g}.{m}" for g in form["groups"] if f"{g}.{m}" in wide.columns]
        if f"tong_so.{m}" in wide.columns and parts:
            total = col(f"tong_so.{m}")
            psum = wide[parts].sum(axis=1, min_count=len(parts)).where(wide[parts].notna().all(axis=1))
            emit("total_equals_groups", f"tong_so.{m}", psum, total, (psum - total).abs() < 1e-9, "Tổng số = tổng các loại hình")
    for g in ["tong_so", *form["groups"]]:
        t, nu, dt_, dtnu = (col(f"{g}.{m}") for m in ("tong", "nu", "dtts", "dtts_nu"))
        emit("female_le_total", f"{g}.nu", t, nu, nu <= t, "Nữ ≤ Tổng số")
        emit("dtts_le_total", f"{g}.dtts", t, dt_, dt_ <= t, "DTTS ≤ Tổng số")
        low = pd.concat([dt_, nu], axis=1).min(axis=1, skipna=False)
        emit("dtts_female_le_min", f"{g}.dtts_nu", low, dtnu, dtnu <= low, "DTTS nữ ≤ min(DTTS, Nữ)")
        contract = [f"{g}.{m}" for m in ("vien_chuc_khong_xac_dinh", "vien_chuc_xac_dinh", "hop_dong_lao_dong")]
        if all(k in wide.columns for k in contract):
            csum = wide[contract].sum(axis=1, min_count=3)
            emit("contracts_le_total", f"{g}.tong", t, csum, csum <= t, "Viên chức + hợp đồng lao động ≤ Tổng số")
        rooms = [f"{g}.{m}" for m in ("kien_co", "ban_kien_co", "tam")]
        if all(k in wide.columns for k in rooms):
            rsum = wide[rooms].sum(axis=1, min_count=3)
            emit("rooms_total", f"{g}.tong", rsum, t, (rsum - t).abs() < 1e-9, "Tổng số = kiên cố + bán kiên cố + tạm")
    # row identities, as joins of the long cells with themselves
    long = values.loc[values["value"].notna(), ["scope", "row_code", "column_key", "value"]]
    within = pd.DataFrame([(row["code"], row["within"]) for _, row in data_rows(form) if "within" in row],
                          columns=["row_code", "parent"])
    if len(within):
        w = long.merge(within, on="row_code").merge(
            long.rename(columns={"row_code": "parent", "value": "expected"}), on=["scope", "parent", "column_key"])
        out.append(pd.DataFrame({"scope": w["scope"], "row_code": w["row_code"], "check_name": "sub_row_le_parent",
                                 "column_key": w["column_key"], "expected": w["expected"], "actual": w["value"],
                                 "ok": w["value"] <= w["expected"] + 1e-9,
                                 "message": "Mã số " + w["row_code"].astype(str) + " ≤ mã số " + w["parent"].astype(str)}))
    groups = [(row["code"], gi, p, len(g), ", ".join(map(str, g)))
              for _, row in data_rows(form) for gi, g in enumerate(_part_groups(row)) for p in g]
    if groups:
        pg = pd.DataFrame(groups, columns=["row_code", "gi", "part", "n", "parts"])
        pp = long.rename(columns={"row_code": "part"}).merge(pg, on="part")
        agg = pp.groupby(["scope", "row_code", "gi", "column_key", "n", "parts"], as_index=False).agg(
            expected=("value", "sum"), found=("value", "size"))
        agg = agg[agg["found"] == agg["n"]].merge(long, on=["scope", "row_code", "column_key"])
        out.append(pd.DataFrame({"scope": agg["scope"], "row_code": agg["row_code"], "check_name": "rows_sum_to_total",
                                 "column_key": agg["column_key"], "expected": agg["expected"], "actual": agg["value"],
                                 "ok": (agg["expected"] - agg["value"]).abs() < 1e-9,
                                 "message": "Mã số " + agg["row_code"].astype(str) + " = tổng các mã số " + agg["parts"]}))
    if not out:
        return pd.DataFrame(columns=cols)
    res = pd.concat(out, ignore_index=True)
    res["school_year"] = form.get("school_year")
    res["period"] = None
    res["form_code"] = form["form_code"]
    res["ok"] = res["ok"].astype(bool)
    return res.sort_values(["scope", "row_code", "check_name", "column_key"], kind="stable")[cols].reset_index(drop=True)


RECONCILE = {  # what a form's `reconcile:` row counts, and the curated rows it must equal —
    # counted straight from core (not through the report views), so a row the views would
    # drop (a learner whose grade is of a level the school does not declare) shows up here
    "learners": "select school_code, count(*) from core_learners where school_year = $y and period = $p and level = $lv and is_enrolled group by 1",
    "staff": "select school_code, count(*) from core_staff where school_year = $y and period = $p and level = $lv and is_active group by 1",
    "classes": "select school_code, count(*) from core_classes where school_year = $y and period = $p and (level = $lv or ($lv = 'MN' and care_level is not null)) group by 1",
    "schools": "select school_code, 1 from core_school where school_year = $y and period = $p and list_contains(string_split(levels, ','), $lv)",
}


def reconcile_form(con: duckdb.DuckDBPyConnection, form: dict, cells: pd.DataFrame, school_year: str, period: str) -> pd.DataFrame:
    """Per school and city: rows in the accepted submissions = rows in core = the form's totals.
    Views must be those of this form (compute_form creates them)."""
    out = []
    val = {(r.scope, r.row_code, r.column_key): r.value for r in cells.itertuples(index=False)}
    scopes = cells["scope"].unique().tolist()
    # accepted submissions (the version core holds) = core rows, per school, all sheets
    sub = dict(con.execute("""select school_code, loaded_rows from submission
                              where school_year = ? and period = ? and in_core""", [school_year, period]).fetchall())
    core = {}
    for t in ("core_rooms", "core_classes", "core_learners", "core_staff"):
        for code, n in con.execute(f"select school_code, count(*) from {t} where school_year = ? and period = ? group by 1",
                                   [school_year, period]).fetchall():
            core[code] = core.get(code, 0) + n
    in_form = {r[0] for r in con.execute("select school_code from rpt_school").fetchall()}
    for code in sorted(in_form):
        out.append((school_year, period, form["form_code"], code, "submission_equals_core", None, None,
                    sub.get(code), core.get(code, 0), sub.get(code) == core.get(code, 0),
                    "Số dòng đã tiếp nhận = số dòng trong cơ sở dữ liệu"))
    for sheet, row in data_rows(form):
        what = row.get("reconcile")
        if not what:
            continue
        counts = dict(con.execute(RECONCILE[what], {"y": school_year, "p": period, "lv": form["level"]}).fetchall())
        for scope in scopes:
            expected = sum(counts.values()) if scope == "city" else counts.get(scope, 0)
            actual = val.get((scope, row["code"], "tong_so.tong"))
            out.append((school_year, period, form["form_code"], scope, f"core_equals_form_{what}", row["code"],
                        "tong_so.tong", expected, actual, actual is not None and abs(expected - actual) < 1e-9,
                        f"Số {what} trong cơ sở dữ liệu = mã số {row['code']} của biểu"))
    return pd.DataFrame(out, columns=CHECK_COLUMNS)


# ---------------------------------------------------------------------------------------
# Store and render
# ---------------------------------------------------------------------------------------

REPORT_DDL = """
create table if not exists rpt_form_cell (school_year varchar, period varchar, form_code varchar, scope varchar,
    row_code integer, column_key varchar, value double);
create table if not exists rpt_form_check (school_year varchar, period varchar, form_code varchar, scope varchar,
    check_name varchar, row_code integer, column_key varchar, expected double, actual double, ok boolean, message varchar);
"""


def store_cells(con: duckdb.DuckDBPyConnection, form_code: str, school_year: str, period: str,
                cells: pd.DataFrame, checks: pd.DataFrame, scopes: Iterable[str] | None = None) -> None:
    """Replace the form's cells and checks of this collection (only `scopes` when given)."""
    con.execute(REPORT_DDL)
    con.execute("begin transaction")
    try:
        cond, params = "school_year = ? and period = ? and form_code = ?", [school_year, period, form_code]
        if scopes is not None:
            scopes = list(scopes)
            cond += " and scope in (select unnest(?))"
            params.append(scopes)
        con.execute(f"delete from rpt_form_cell where {cond}", params)
        con.execute(f"delete from rpt_form_check where {cond}", params)
        con.register("_cells", cells.astype({"row_code": "int64", "value": "float64"}))
        con.execute("insert into rpt_form_cell select * from _cells")
        con.unregister("_cells")
        if len(checks):
            c = checks.assign(school_year=school_year, period=period)[CHECK_COLUMNS]
            con.register("_checks", c.astype({"expected": "float64", "actual": "float64"}))
            con.execute("insert into rpt_form_check select * from _checks")
            con.unregister("_checks")
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise


@dataclass
class ReportHeader:
    unit: str  # Đơn vị báo cáo
    recipient: str  # Đơn vị nhận báo cáo
    school_year: str
    scope_label: str


def render_form(form: dict, cells: pd.DataFrame, checks: pd.DataFrame, scope: str, path: Path, header: ReportHeader) -> Path:
    """Write the form for one scope as an .xlsx in the ministry's layout (values, not formulas)."""
    import xlsxwriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    mine = cells[cells["scope"] == scope]
    val = dict(zip(zip(mine["row_code"].tolist(), mine["column_key"].tolist()), mine["value"].tolist()))
    wb = xlsxwriter.Workbook(str(tmp), {"strings_to_numbers": False, "strings_to_formulas": False, "strings_to_urls": False})
    wb.set_properties({"title": f"{form['number']} {header.school_year} — {header.scope_label}", "author": "edustat",
                       "comments": form["source"]["note"]})
    f = _formats(wb)
    for sheet in form["sheets"]:
        ws = wb.add_worksheet(sheet["name"])
        for col, width in (sheet.get("widths") or {}).items():
            idx = _col_index(col)
            ws.set_column(idx, idx, max(6.0, float(width)))
        if "static" in sheet:
            _render_static(ws, sheet, f, form)
            continue
        _render_sheet(ws, sheet, f, val, header, form)
    _render_checks(wb, f, checks[checks["scope"] == scope] if len(checks) else checks, form, header)
    wb.close()
    os.replace(tmp, path)
    return path


def _col_index(letter: str) -> int:
    n = 0
    for ch in letter:
        n = n * 26 + (ord(ch.upper()) - 64)
    return n - 1


def _formats(wb) -> dict:
    base = {"font_name": "Times New Roman", "font_size": 11}
    return {
        "title": wb.add_format({**base, "bold": True, "font_size": 12}),
        "text": wb.add_format({**base}),
        "italic": wb.add_format({**base, "italic": True}),
        "head": wb.add_format({**base, "bold": True, "border": 1, "align": "center", "valign": "vcenter",
                               "text_wrap": True, "bg_color": "#F2F2F2"}),
        "num_head": wb.add_format({**base, "italic": True, "border": 1, "align": "center"}),
        "label": wb.add_format({**base, "border": 1, "text_wrap": True, "valign": "vcenter"}),
        "label_b": wb.add_format({**base, "border": 1, "text_wrap": True, "bold": True, "valign": "vcenter"}),
        "center": wb.add_format({**base, "border": 1, "align": "center", "valign": "vcenter"}),
        "center_b": wb.add_format({**base, "border": 1, "align": "center", "valign": "vcenter", "bold": True}),
        "value": wb.add_format({**base, "border": 1, "num_format": "#,##0", "valign": "vcenter"}),
        "value_b": wb.add_format({**base, "border": 1, "num_format": "#,##0", "bold": True, "valign": "vcenter"}),
        "na": wb.add_format({**base, "border": 1, "align": "center", "valign": "vcenter"}),
        "ok": wb.add_format({**base, "border": 1, "bg_color": "#C6EFCE"}),
        "bad": wb.add_format({**base, "border": 1, "bg_color": "#FFC7CE"}),
    }


_BLOCK_FILL = {"Sở GDĐT tỉnh………..": "unit", "Bộ Giáo dục và Đào tạo": "recipient"}


def _render_static(ws, sheet: dict, f: dict, form: dict) -> None:
    rows = sheet["static"]["rows"]
    merged = _merge_map(sheet["static"]["merges"], 0)
    for r, values in enumerate(rows):
        for c, v in enumerate(values):
            if (r, c) in merged["skip"]:
                continue
            fmt = f["head"] if r < 3 else f["label"]
            if (r, c) in merged["ranges"]:
                r2, c2 = merged["ranges"][(r, c)]
                ws.merge_range(r, c, r2, c2, v if v is not None else "", fmt)
            elif v is not None:
                ws.write_string(r, c, str(v), fmt)
            elif r >= 3:
                ws.write_blank(r, c, None, fmt)
    note_row = len(rows) + 1
    ws.write_string(note_row, 1, form.get("static_note", "Số liệu ngân sách do Phòng GD&ĐT / Sở GD&ĐT nhập từ quyết toán, "
                                          "dự toán; các trường không nộp các chỉ tiêu này nên edustat để trống."), f["italic"])
    ws.set_landscape()
    ws.fit_to_pages(1, 0)


def _merge_map(merges: list[str], offset: int) -> dict:
    from xlsxwriter.utility import xl_cell_to_rowcol

    ranges, skip = {}, set()
    for m in merges:
        a, b = m.split(":")
        r1, c1 = xl_cell_to_rowcol(a)
        r2, c2 = xl_cell_to_rowcol(b)
        ranges[(r1 + offset, c1)] = (r2 + offset, c2)
        for r in range(r1, r2 + 1):
            for c in range(c1, c2 + 1):
                if (r, c) != (r1, c1):
                    skip.add((r + offset, c))
    return {"ranges": ranges, "skip": skip}


def _render_sheet(ws, sheet: dict, f: dict, val: dict, header: ReportHeader, form: dict) -> None:
    row_i = 0
    ncols = len(sheet["numbering"])
    if "title_block" in sheet:
        block = sheet["title_block"]
        merged = _merge_map(block["merges"], 0)
        for r, values in enumerate(block["rows"]):
            for c, v in enumerate(values):
                if v is None or (r, c) in merged["skip"]:
                    continue
                text = str(v)
                if text in _BLOCK_FILL:
                    text = getattr(header, _BLOCK_FILL[text])
                fmt = f["title"] if c <= 2 else f["text"]
                if (r, c) in merged["ranges"]:
                    r2, c2 = merged["ranges"][(r, c)]
                    ws.merge_range(r, c, r2, c2, text, fmt)
                else:
                    ws.write_string(r, c, text, fmt)
        row_i = len(block["rows"])
        ws.write_string(row_i, 1, f"Năm học {header.school_year} — {header.scope_label}", f["italic"])
        row_i += 1
    head_top = row_i
    merged = _merge_map(sheet["header"]["merges"], head_top - _first_header_row(sheet))
    for r, values in enumerate(sheet["header"]["rows"]):
        for c in range(ncols):
            v = values[c] if c < len(values) else None
            rr = head_top + r
            if (rr, c) in merged["skip"]:
                continue
            if (rr, c) in merged["ranges"]:
                r2, c2 = merged["ranges"][(rr, c)]
                ws.merge_range(rr, c, r2, c2, "" if v is None else str(v), f["head"])
            else:
                ws.write(rr, c, "" if v is None else str(v), f["head"])
    row_i = head_top + len(sheet["header"]["rows"])
    for c, v in enumerate(sheet["numbering"]):
        ws.write(row_i, c, "" if v is None else (int(v) if str(v).isdigit() else str(v)), f["num_head"])
    ws.repeat_rows(head_top, row_i)
    ws.freeze_panes(row_i + 1, 4)
    row_i += 1
    for row in sheet["rows"]:
        bold = bool(row.get("tt")) and "code" in row and not str(row.get("label", "")).startswith(("-", "+"))
        if "note_cells" in row:
            text = " ".join(str(v) for v in row["note_cells"] if v)
            ws.write_string(row_i, 0, text, f["italic"])
            row_i += 1
            continue
        ws.write(row_i, 0, row.get("tt") or "", f["center_b"] if row.get("tt") else f["center"])
        ws.write(row_i, 1, row.get("label", ""), f["label_b"] if (bold or "code" not in row) and row.get("tt") else f["label"])
        ws.write(row_i, 2, row.get("unit") or "", f["center"])
        if "code" in row:
            ws.write_number(row_i, 3, row["code"], f["center"])
            na = set(row.get("na", []))
            for c, key in enumerate(sheet["columns"], start=4):
                if key in na:
                    ws.write_string(row_i, c, "#", f["na"])
                else:
                    v = val.get((row["code"], key))
                    ws.write_number(row_i, c, 0 if v is None else v, f["value_b"] if bold else f["value"])
        else:
            ws.write(row_i, 3, "", f["center"])
            for c in range(4, ncols):
                ws.write_blank(row_i, c, None, f["value"])
        row_i += 1
    ws.set_landscape()
    ws.set_paper(9)
    ws.fit_to_pages(1, 0)
    ws.set_margins(left=0.4, right=0.4, top=0.5, bottom=0.5)


def _first_header_row(sheet: dict) -> int:
    """The Excel row index (0-based) the header had in the ministry's file, so its merge
    ranges (recorded in that file's coordinates) can be shifted to ours."""
    return len(sheet["title_block"]["rows"]) if "title_block" in sheet else 0


def _render_checks(wb, f: dict, checks: pd.DataFrame, form: dict, header: ReportHeader) -> None:
    """The KiemTra sheet: every kind of check with its count, then every failure (the passing
    checks themselves are in rpt_form_check)."""
    ws = wb.add_worksheet("KiemTra")
    ws.set_column(0, 0, 28)
    ws.set_column(1, 2, 10)
    ws.set_column(3, 5, 12)
    ws.set_column(6, 6, 60)
    n = len(checks)
    bad = checks[~checks["ok"].astype(bool)] if n else checks
    ws.write_string(0, 0, f"KIỂM TRA BIỂU {form['number']} — {header.scope_label}", f["title"])
    ws.write_string(1, 0, f"{n} phép kiểm tra, {len(bad)} không đạt." + (" Biểu nhất quán." if n and not len(bad) else ""),
                    f["text"])
    src = form["source"]
    ws.write_string(2, 0, ("Nguồn bố cục: " + src.get("file", "")) if src["kind"] == "real_export"
                    else "Biểu dựng lại (không có bản gốc): " + src.get("note", ""), f["italic"])
    for c, h in enumerate(["Phép kiểm tra", "Số phép", "Không đạt"]):
        ws.write_string(4, c, h, f["head"])
    r = 5
    if n:
        summary = checks.groupby("check_name", sort=True)["ok"].agg(total="size", failed=lambda x: int((~x.astype(bool)).sum()))
        for name, t, fl in summary.itertuples():
            fmt = f["bad"] if fl else f["ok"]
            ws.write_string(r, 0, name, fmt)
            ws.write_number(r, 1, int(t), fmt)
            ws.write_number(r, 2, int(fl), fmt)
            r += 1
    r += 1
    if not len(bad):
        return
    ws.write_string(r, 0, "Các phép kiểm tra không đạt", f["title"])
    r += 1
    for c, h in enumerate(["Phép kiểm tra", "Mã số", "Cột", "Kỳ vọng", "Thực tế", "Đạt", "Nội dung"]):
        ws.write_string(r, c, h, f["head"])
    for i, rec in enumerate(bad.head(2000).astype(object).itertuples(index=False), start=r + 1):
        ws.write_string(i, 0, rec.check_name, f["bad"])
        ws.write(i, 1, "" if pd.isna(rec.row_code) else int(rec.row_code), f["bad"])
        ws.write_string(i, 2, rec.column_key if isinstance(rec.column_key, str) else "", f["bad"])
        ws.write(i, 3, "" if rec.expected is None or pd.isna(rec.expected) else rec.expected, f["bad"])
        ws.write(i, 4, "" if rec.actual is None or pd.isna(rec.actual) else rec.actual, f["bad"])
        ws.write_string(i, 5, "KHÔNG ĐẠT", f["bad"])
        ws.write_string(i, 6, rec.message if isinstance(rec.message, str) else "", f["bad"])


# ---------------------------------------------------------------------------------------
# The whole step
# ---------------------------------------------------------------------------------------

@dataclass
class ReportResult:
    files: list[Path] = field(default_factory=list)
    cells: int = 0
    checks: int = 0
    failed_checks: int = 0
    forms: list[str] = field(default_factory=list)


def _names(con, school_year: str, period: str) -> tuple[dict[str, str], str, str]:
    from schemas import load_codelist

    rows = con.execute("select school_code, school_name, district_code, province_code from core_school "
                       "where school_year = ? and period = ?", [school_year, period]).fetchall()
    names = {r[0]: r[1] or r[0] for r in rows}
    district = pd.Series([r[2] for r in rows]).mode()
    province = pd.Series([r[3] for r in rows]).mode()
    huyen, tinh = load_codelist("moet-2020/DM_HUYEN"), load_codelist("moet-2020/DM_TINH")
    d = huyen.label(district.iloc[0]) if len(district) and district.iloc[0] in huyen.codes else ""
    p = tinh.label(province.iloc[0]) if len(province) and province.iloc[0] in tinh.codes else ""
    return names, d, p


def compute_and_check(con: duckdb.DuckDBPyConnection, form: dict, school_year: str, period: str
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every cell of a form and every check of it (identities + reconciliation)."""
    cells = compute_form(con, form, school_year, period)
    if cells.empty:
        return cells, pd.DataFrame(columns=CHECK_COLUMNS)
    checks = check_form({**form, "school_year": school_year}, cells)
    checks["period"] = period
    return cells, pd.concat([checks, reconcile_form(con, form, cells, school_year, period)], ignore_index=True)


def build_reports(con: duckdb.DuckDBPyConnection, reports_dir: Path, school_year: str, period: str,
                  school: str | None = None, forms: Iterable[str] | None = None, workers: int = 2) -> ReportResult:
    """Compute, check, store and render every form of the period, for the city and per school
    (or only for `school`: its own forms and the city forms, which include it)."""
    result = ReportResult()
    jobs: list[tuple] = []
    names, district, province = _names(con, school_year, period)
    for code in forms or list_forms(period):
        form = load_form(code)
        cells, checks = compute_and_check(con, form, school_year, period)
        if cells.empty:
            continue
        scopes = ["city", school] if school else None
        if school:
            cells = cells[cells["scope"].isin(scopes)]
            checks = checks[checks["scope"].isin(scopes)]
        store_cells(con, code, school_year, period, cells, checks, scopes)
        result.cells += len(cells)
        result.checks += len(checks)
        result.failed_checks += int((~checks["ok"]).sum())
        result.forms.append(code)
        cells_by, checks_by = dict(tuple(cells.groupby("scope"))), dict(tuple(checks.groupby("scope")))
        for scope in cells["scope"].unique():
            if scope == "city":
                header = ReportHeader(unit=f"Phòng GD&ĐT {district}".strip(), recipient=f"Sở GD&ĐT {province}".strip(),
                                      school_year=school_year, scope_label=f"Toàn {district}" if district else "Toàn đơn vị")
            else:
                header = ReportHeader(unit=names.get(scope, scope), recipient=f"Phòng GD&ĐT {district}".strip(),
                                      school_year=school_year, scope_label=f"{names.get(scope, scope)} ({scope})")
            out = _form_path(reports_dir, school_year, period, code, scope)
            jobs.append((code, cells_by[scope], checks_by.get(scope, checks.iloc[0:0]), scope, out, header))
    result.files = _render_all(jobs, workers)
    return result


def _form_path(reports_dir: Path, school_year: str, period: str, code: str, scope: str) -> Path:
    """<form>_<city | school code>.xlsx; a school code without its format never names a file
    (edustat.paths), and the path is proven inside the reports dir."""
    import hashlib

    from edustat.paths import UNIDENTIFIED, inside, school_code_for_path

    name = scope if scope == "city" else (
        school_code_for_path(scope) or f"{UNIDENTIFIED}_{hashlib.sha256(str(scope).encode()).hexdigest()[:8]}")
    out = Path(reports_dir) / school_year / period / f"{code}_{name}.xlsx"
    inside(reports_dir, out)
    return out


def _render_job(job: tuple) -> Path:
    code, cells, checks, scope, out, header = job
    return render_form(load_form(code), cells, checks, scope, out, header)


def _render_all(jobs: list[tuple], workers: int) -> list[Path]:
    """Write the workbooks, in worker processes when there are many (xlsxwriter is pure Python)."""
    if workers > 1 and len(jobs) > 4:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(_render_job, jobs, chunksize=max(1, len(jobs) // (workers * 4))))
    return [_render_job(j) for j in jobs]
