"""The city's form cells of an incremental build from the stored per-school cells (issue 12).

When one school changed, the forms step used to compute every cell of every school again (one
pass over the whole collection's rows) just to sum the city. Every cell of a form is a count or
a sum over the school's rows, per ownership group (reports._assemble): the city cell IS the sum
of the schools' cells (`per_school.groupby(row, column).sum()`), and a school's cells depend on
that school's rows only (the report views join each record to its own school). So here:

- the changed schools' cells are computed from their own rows only (the report views restricted
  to them);
- each city cell = Σ the stored cells of the unchanged schools + Σ the changed schools' new
  cells, summed in DuckDB; '#' (na) cells stay NULL; a form with no school gives zeros, as before;
- the checks are NOT summed: they are computed from the city's cells (reports.check_form, per
  scope) and the reconciliation counts the city's curated rows in core (reports.reconcile_form),
  exactly as a full build does.

Exact, or not used. The sum is exact when every value is an integer and Σ|value| < 2**53 (float64
holds every such partial sum exactly, in any order); otherwise the form is computed in full. The
stored cells of the unchanged schools are used only when they are proven to be what the last
build wrote: the scopes stored are exactly the form's other schools, each with the whole grid,
and each scope's count and two 64-bit hash sums equal those recorded when reports.build_reports
stored them (table form_scope_stored, `record_stored`) — a cell changed or deleted by hand, a
copy-back of a certified-only build (which records none), a build by older code, or no record
yet: the form is computed in full (the reason is returned; the build goes on, only slower).

A form none of whose schools changed (a primary school re-sent: the preschool and
lower-secondary forms) is not summed, checked, stored or rendered at all when that is proven to
write nothing new (`unchanged_city`: the proof is in its docstring) and its city workbook is
proven the render of the stored city cells and checks (`city_markers`, recorded with each
incremental build in incremental_output, kind 'form_city'). scripts/compare_forms_kept.py
compares such a build with one that builds every form again.
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd

EXACT_LIMIT = 2.0 ** 53


def form_schools(con, school_year: str, period: str, level: str) -> list[str]:
    """The schools of a form (rpt_school's rows: the schools declaring the level), sorted."""
    from edustat.reports import _lit

    return [r[0] for r in con.execute(
        f"""select school_code from core_school where school_year = ? and period = ?
            and list_contains(string_split(levels, ','), {_lit(level)}) order by 1""",
        [school_year, period]).fetchall()]


PROOF_DDL = """
create table if not exists form_scope_stored (school_year varchar, period varchar, form_code varchar, scope varchar,
    n bigint, h1 hugeint, h2 hugeint)"""


def record_stored(con, form_code: str, school_year: str, period: str, scopes: Iterable[str] | None) -> None:
    """Right after reports.build_reports stored a form's cells of `scopes` (None: every scope):
    the fingerprint of each scope's stored cells, so a later delta can prove the cells it sums
    are still these (anything else writing rpt_form_cell leaves no fingerprint: no delta)."""
    from edustat.formbuild import FINGERPRINT_SQL

    con.execute(PROOF_DDL)
    cond = "school_year = $1 and period = $2 and form_code = $3"
    params: list = [school_year, period, form_code]
    if scopes is not None:
        cond += " and scope in (select unnest($4::varchar[]))"
        params.append(list(scopes))
    con.execute(f"delete from form_scope_stored where {cond}", params)
    con.execute(f"""insert into form_scope_stored select $1, $2, form_code, scope, n, h1, h2
                    from ({FINGERPRINT_SQL.format(cond=cond)})""", params)


def _stored_ok(con, form_code: str, school_year: str, period: str, others: list[str], changed: list[str],
               grid: int) -> str | None:
    """None when the stored cells of `others` (each unchanged school of the form) are exactly
    those the last build recorded; else why not."""
    from edustat import formbuild

    if not con.execute("select count(*) from duckdb_tables() where database_name = current_database() "
                       "and table_name = 'form_scope_stored'").fetchone()[0]:
        return "no record of the stored cells yet"
    # the list as a parameter, not a temp table (two statements fewer: issue 12)
    bad = con.execute(f"""
        with cur as ({formbuild.FINGERPRINT_SQL.format(cond="school_year = $1 and period = $2 and form_code = $3 "
                                                             "and scope <> 'city' and scope not in (select unnest($5::varchar[]))")}),
        want as (select unnest($6::varchar[]) as scope),
        rec as (select scope, n, h1, h2 from form_scope_stored where school_year = $1 and period = $2 and form_code = $3)
        select
          (select count(*) from want full join cur using (scope) where want.scope is null or cur.scope is null),
          (select count(*) from cur where n <> $4),
          (select count(*) from cur left join rec using (scope)
           where rec.scope is null or rec.n <> cur.n or rec.h1 <> cur.h1 or rec.h2 <> cur.h2)""",
        [school_year, period, form_code, grid, changed, others]).fetchall()[0]
    if bad[0]:
        return f"{bad[0]} scopes stored ≠ the form's unchanged schools"
    if bad[1]:
        return f"{bad[1]} scopes stored without the whole grid"
    if bad[2]:
        return f"{bad[2]} scopes changed since the last build recorded them"
    return None


def _summed_city(con, form: dict, school_year: str, period: str, others: list[str],
                 mine: pd.DataFrame | None) -> pd.DataFrame | None:
    """The city's cells (scope, row_code, column_key, value) = Σ the stored cells of `others` +
    Σ `mine` (the changed schools' new cells), summed in DuckDB; '#' cells NULL, a cell no
    school has 0. None when the sum is not proven exact (a value not a whole number, or
    Σ|value| ≥ 2**53)."""
    city = _summed_city_rows(con, form, school_year, period, others, mine)
    if city is None:
        return None
    city = pd.DataFrame(city, columns=["row_code", "column_key", "value"]).assign(scope="city")
    city["value"] = city["value"].astype(object).where(city["value"].notna(), None)
    return city


def _summed_city_rows(con, form: dict, school_year: str, period: str, others: list[str],
                      mine: pd.DataFrame | None) -> list[tuple] | None:
    """`_summed_city`'s cells as (row_code, column_key, value) tuples in the definition's
    order, before they are made a frame. The sums fetched as tuples, not a frame (iterating a
    frame's Arrow-backed strings cost ~10 ms a form: issue 12); no changed school (`mine`
    None): no empty frame to union."""
    import math

    from edustat.reports import data_rows

    if mine is not None:
        con.register("_delta_mine", mine.assign(value=pd.to_numeric(mine["value"]).astype("float64"))[
            ["row_code", "column_key", "value"]])
    try:
        summed = con.execute(f"""
            select row_code, column_key, sum(value) as value,
                   coalesce(bool_and(value = round(value)), true) as whole, coalesce(sum(abs(value)), 0) as mass
            from (select row_code, column_key, value from rpt_form_cell
                  where school_year = ? and period = ? and form_code = ? and scope in (select unnest(?::varchar[]))
                  {"union all select row_code::integer, column_key, value from _delta_mine" if mine is not None else ""})
            group by all""", [school_year, period, form["form_code"], others]).fetchall()
    finally:
        if mine is not None:
            con.unregister("_delta_mine")
    if summed:
        masses = [m for _, _, _, _, m in summed if not math.isnan(m)]  # as pandas' max: NaN skipped
        if not (all(w for _, _, _, w, _ in summed) and masses and max(masses) < EXACT_LIMIT):
            return None
    value = {(int(r), k): v for r, k, v, _, _ in summed}
    return [(row["code"], key, None if key in set(row.get("na", [])) else
             (0.0 if pd.isna(value.get((row["code"], key), 0.0)) else float(value.get((row["code"], key), 0.0))))
            for sheet, row in data_rows(form) for key in sheet["columns"]]


def compute_and_check_delta(con, form: dict, school_year: str, period: str, changed: Iterable[str]):
    """(cells, checks) of the city and of the `changed` schools (those still in the form), equal
    to reports.compute_and_check(..., scopes=["city", *changed]); computed in full when the
    delta cannot be proven exact (see the module doc). Returns (cells, checks, fallback_reason)."""
    from edustat.reports import CELL_COLUMNS, _assemble, _entity, _entity_long, _entity_long_sql, \
        check_form, compute_and_check, create_views, data_rows, reconcile_form

    changed = list(dict.fromkeys(changed))
    scopes = ["city", *changed]
    schools = form_schools(con, school_year, period, form["level"])
    reason = None
    if len(schools) != len(set(schools)):
        reason = "a school is listed twice in core_school"
    targets = [s for s in schools if s in set(changed)]
    others = [s for s in schools if s not in set(changed)]
    grid = sum(len(sheet["columns"]) for sheet, _ in data_rows(form))
    if reason is None:
        reason = _stored_ok(con, form["form_code"], school_year, period, others, changed, grid)
    if reason is not None:
        cells, checks = compute_and_check(con, form, school_year, period, scopes)
        return cells, checks, reason
    # the changed schools' cells, from their own rows only
    con.execute("create or replace temp table rpt_delta_schools as select unnest(?::varchar[]) as school_code",
                [targets])
    create_views(con, school_year, period, form["level"], form["groups"], only="rpt_delta_schools")
    by_entity: dict[str, list] = {}
    for sheet, row in data_rows(form):
        by_entity.setdefault(_entity(row), []).append((sheet, row))
    parts = []
    # no changed school in this form (the usual case: a school is in one level's form): the
    # restricted views are empty, so every entity's cells are none — their queries (~20 ms
    # each, planning hundreds of expressions, rows or not) are not run
    for entity, rows in (by_entity.items() if targets else ()):
        long = _entity_long(con, form, entity, rows)
        if long is None:
            long = _entity_long_sql(con, form, entity, rows)
        if long is not None and len(long):
            parts.append(long)
    long = pd.concat(parts, ignore_index=True) if parts else \
        pd.DataFrame(columns=["school_code", "grp", "value", "row_code", "measure"])
    mine = _assemble(form, long, targets)  # city (of the targets alone: replaced below) + targets
    mine = mine[mine["scope"] != "city"]
    # the city: Σ stored cells of the others + Σ the targets' new cells
    city = _summed_city(con, form, school_year, period, others, mine)
    if city is None:
        cells, checks = compute_and_check(con, form, school_year, period, scopes)
        return cells, checks, "a value is not a whole number (a sum in another order may differ)"
    cells = pd.concat([city[["scope", "row_code", "column_key", "value"]], mine], ignore_index=True)
    cells.insert(0, "form_code", form["form_code"])
    cells.insert(0, "period", period)
    cells.insert(0, "school_year", school_year)
    cells = cells[CELL_COLUMNS]
    checks = check_form({**form, "school_year": school_year}, cells)
    checks["period"] = period
    checks = pd.concat([checks, reconcile_form(con, form, cells, school_year, period)], ignore_index=True)
    # the restricted views go: nothing may take them for the whole collection's
    for view in ("rpt_room", "rpt_staff", "rpt_class", "rpt_learner", "rpt_learner_all", "rpt_school"):
        con.execute(f"drop view if exists {view}")
    con.execute("drop table if exists rpt_delta_schools_school")  # create_views' rows of rpt_school
    con.execute("drop table if exists rpt_delta_schools")
    return cells, checks, None


# ---------------------------------------------------------------------------------------
# A form none of whose schools changed: kept as it is (issue 12)
# ---------------------------------------------------------------------------------------

CITY_KIND = "form_city"  # incremental_output rows: per form, what its city workbook was rendered from


def unchanged_city(con, form: dict, school_year: str, period: str, changed: Iterable[str]) -> tuple[int, int, int] | None:
    """(cells, checks, failed checks) of the form's stored city when the incremental build
    (`build_reports(..., schools=changed, delta=True)`) is PROVEN to store exactly the city
    cells and checks it holds already and to write nothing else for this form; None otherwise
    (the form is then built as before). The caller also proves the city workbook on disk is the
    render of these stored cells and checks (`city_markers`): then the form is not summed,
    checked, stored or rendered again, and everything the build writes is what it would be.

    What the delta build writes for a form (compute_and_check_delta, store_cells, record_stored,
    the render), with T = the form's schools (core_school declaring its level) ∩ `changed`:
    - cells of scopes T, from T's rows only — none when T = ∅ (checked below);
    - rows of scopes in `changed` deleted from rpt_form_cell, rpt_form_check and
      form_scope_stored — none are there (checked below: no changed, withdrawn or moved school
      was in this form at its last build);
    - the city's cells = Σ the stored cells of the form's other schools when _stored_ok proves
      them (else it computes the form in full: then we do not skip) — computed here by the very
      code (_summed_city) and compared cell by cell with the stored city;
    - the city's checks: check_form of the city's cells only (its identities are per scope:
      the wide frame's rows, `within` and `parts` joins are keyed by scope), the same cells, the
      same code (code_digest is in every scope's fingerprint: new code rebuilds everything) —
      so the checks stored with those cells, which the recorded marker proves are the ones the
      workbook was rendered with; and reconcile_form's city rows, whose expected value counts
      curated rows of the form's level in EVERY school of core (a learner of this level in a
      school of another level counts too): counted again here by the same queries and compared
      with the stored ones (submission_equals_core rows are per school: only T's are written);
    - form_scope_stored's city row: the fingerprint of the same cells — checked equal here;
    - the city workbook: the render of those cells, checks and header (district and province
      are in every scope's fingerprint: a change rebuilds everything).
    Nothing else of the collection enters a form: the views join every record to its own school
    in the form, ownership groups and attributes are the school's own row, the school list and
    register enter only through the schools' rows and reconcile (both checked)."""
    from edustat.reports import RECONCILE, data_rows

    changed = list(dict.fromkeys(changed))
    key = form["form_code"]
    schools = form_schools(con, school_year, period, form["level"])
    if len(schools) != len(set(schools)) or set(schools) & set(changed):
        return None  # a changed school is in the form now
    con.execute(PROOF_DDL)
    base = "school_year = $1 and period = $2 and form_code = $3"
    params = [school_year, period, key, changed]
    traces = con.execute(f"""select (select count(*) from rpt_form_cell where {base} and scope in (select unnest($4::varchar[])))
                                  + (select count(*) from rpt_form_check where {base} and scope in (select unnest($4::varchar[])))
                                  + (select count(*) from form_scope_stored where {base} and scope in (select unnest($4::varchar[])))""",
                         params).fetchone()[0]
    if traces:
        return None  # a changed school was in the form at its last build (moved, withdrawn)
    from edustat.formbuild import FINGERPRINT_SQL

    city_rec = con.execute(f"""with cur as ({FINGERPRINT_SQL.format(cond=base + " and scope = 'city'")}),
                                    rec as (select * from form_scope_stored where {base} and scope = 'city')
                               select (select count(*) from cur), (select count(*) from rec),
                                      (select count(*) from cur join rec using (scope)
                                       where cur.n = rec.n and cur.h1 = rec.h1 and cur.h2 = rec.h2)""",
                           params[:3]).fetchone()
    if tuple(city_rec) != (1, 1, 1):
        return None  # the stored city is not the one its build recorded
    # the reconciliation's city rows: counted again, compared with the stored ones
    stored = {(n, r): e for n, r, e in con.execute(
        f"""select check_name, row_code, expected from rpt_form_check where {base} and scope = 'city'
            and check_name like 'core_equals_form_%' and column_key = 'tong_so.tong'""", params[:3]).fetchall()}
    n_reconcile = 0
    for _, row in data_rows(form):
        what = row.get("reconcile")
        if not what:
            continue
        n_reconcile += 1
        counts = dict(con.execute(RECONCILE[what], {"y": school_year, "p": period, "lv": form["level"]}).fetchall())
        got = stored.get((f"core_equals_form_{what}", row["code"]))
        if got is None or got != sum(counts.values()):
            return None
    if len(stored) != n_reconcile:
        return None
    grid = sum(len(sheet["columns"]) for sheet, _ in data_rows(form))
    if _stored_ok(con, key, school_year, period, schools, changed, grid) is not None:
        return None  # the delta build would compute the form in full
    city = _summed_city_rows(con, form, school_year, period, schools, None)
    if city is None:
        return None
    have = con.execute(f"select row_code, column_key, value from rpt_form_cell where {base} and scope = 'city'",
                       params[:3]).fetchall()
    want = {(int(r), k): (None if v is None else float(v)) for r, k, v in city}
    if len(have) != len(want) or any(want.get((r, k), "-") != (None if v is None else float(v)) for r, k, v in have):
        return None
    n, failed = con.execute(f"select count(*), count(*) filter (where not ok) from rpt_form_check "
                            f"where {base} and scope = 'city'", params[:3]).fetchone()
    return len(want), int(n), int(failed)


def city_markers(con, reports_dir, school_year: str, period: str, forms: Iterable[str], district: str,
                 province: str) -> dict[str, str]:
    """Per form whose city workbook is in place: a fingerprint of what it shows and of the file
    itself — the stored city cells and checks (count and two 64-bit hash sums each), district,
    province, edustat's code, and the file's size and modification time (any writer replaces
    the file: a new time). Recorded with each incremental build (FormsOutcome.record, in the
    build's transaction, after the workbooks are written): a later build finding the same
    marker knows the workbook on disk is the render of the stored city cells and checks — a
    build killed between storing and rendering, or another command's build (school-only,
    certified-only: never recorded) leaves a marker that no longer matches."""
    import hashlib
    import json
    import os
    import stat

    from edustat.formbuild import FINGERPRINT_SQL
    from edustat.incremental import code_digest
    from edustat.reports import REPORT_DDL, _form_path

    forms = list(forms)
    if not forms:
        return {}
    con.execute(REPORT_DDL)
    cond = "school_year = $1 and period = $2 and form_code in (select unnest($3::varchar[])) and scope = 'city'"
    params = [school_year, period, forms]
    cells = {r[0]: list(r[2:]) for r in con.execute(FINGERPRINT_SQL.format(cond=cond), params).fetchall()}
    checks = {r[0]: list(r[1:]) for r in con.execute(
        f"""select form_code, count(*), count(*) filter (where not ok),
                   sum(hash(check_name, row_code, column_key, expected, signbit(expected), actual, signbit(actual),
                            ok, message)::hugeint),
                   sum(hash(message, ok, signbit(actual), actual, signbit(expected), expected, column_key, row_code,
                            check_name, 'edustat')::hugeint)
            from rpt_form_check where {cond} group by 1""", params).fetchall()}
    out = {}
    for f in forms:
        path = _form_path(reports_dir, school_year, period, f, "city")
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or f not in cells:
            continue
        parts = [code_digest(), district, province, f, cells[f], checks.get(f), st.st_size, st.st_mtime_ns]
        out[f] = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()
    return out
