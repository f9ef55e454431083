"""Versioned form builds (issue 11, item 3): every build of the report forms records which
version of each school's data it was built from, so a form sent to the province can be
rebuilt exactly later, after schools have sent new versions.

What is kept per version: core_* holds only each school's current version, but staging keeps
every version: `stg_<sheet>` rows are keyed by file hash and only ever replaced by the same file
read again (store.stage_frames), and the raw file itself is kept under raw/ by hash. A build
records, per school in the forms, (school, version, file hash, content hash, loaded rows) and
the staged rows of that version that were *not* in core (rows with errors left out under
load_policy load_valid_rows) — so the exact core rows are `stg_* of the file − those rows`,
whatever the policy or the cross-school checks of the day were.

Tables (officer's DuckDB, not published): form_build (one row per build: when, who, forms,
scope, certified_only, digest of its cells), form_build_version, form_build_excluded.

Rebuild: the recorded versions' rows are copied from stg_* into an in-memory database attached
to the connection, with the register rows of those files, and the forms are built there by the
very code that builds them normally (reports.build_reports) into another folder. The digest of
the rebuilt cells is compared with the recorded one. `certified_only` builds use the same
in-memory database, filled from core_* with the certified schools only.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import pandas as pd

from edustat.store import SHEETS, and_given

DDL = """
create table if not exists form_build (
    build_id varchar primary key, school_year varchar, period varchar, built_at timestamp, built_by varchar,
    forms varchar[], school varchar, certified_only boolean, reports_dir varchar, files varchar[], cells_digest varchar);
create table if not exists form_build_version (
    build_id varchar, school_code varchar, version integer, file_hash varchar, content_hash varchar,
    loaded_rows integer, certified boolean);
create table if not exists form_build_excluded (
    build_id varchar, school_code varchar, file_hash varchar, sheet_id varchar, sheet_name varchar, excel_row integer);
"""
SOURCE = "edustat_formsrc"


class RebuildError(ValueError):
    """A build cannot be rebuilt exactly (one Vietnamese line)."""


def ensure(con) -> None:
    """The tables, unless they exist (so readers on a read-only connection can call it)."""
    have = {r[0] for r in con.execute("select table_name from duckdb_tables() where database_name = current_database() "
                                      "and table_name like 'form_build%'").fetchall()}
    if have != {"form_build", "form_build_version", "form_build_excluded"}:
        con.execute(DDL)


def _versions(con, school_year: str, period: str, certified_only: bool) -> pd.DataFrame:
    return con.execute(f"""select school_code, version, file_hash, content_hash, loaded_rows, coalesce(certified, false) as certified
                           from submission where school_year = ? and period = ? and in_core
                           {"and certified" if certified_only else ""} order by school_code""",
                       [school_year, period]).df()


# Each (form, scope)'s lines of the digest text are kept with a fingerprint of the cells they
# were made from (count and two sums of 64-bit hashes): a later digest makes again only the
# blocks of the scopes whose cells changed (the province's 860,000 cells: 1.9 s → a few tenths).
BLOCK_DDL = """
create table if not exists form_cell_block (school_year varchar, period varchar, form_code varchar, scope varchar,
    n bigint, h1 hugeint, h2 hugeint, block varchar)"""
# (DuckDB hashes 0.0 and -0.0 alike, which print '0' and '-0': the sign bit is hashed too)
FINGERPRINT_SQL = """select form_code, scope, count(*) as n,
    sum(hash(row_code, column_key, value, signbit(value))::hugeint) as h1,
    sum(hash(value, signbit(value), column_key, row_code, 'edustat')::hugeint) as h2
    from rpt_form_cell where {cond} group by form_code, scope"""


def _digest_line_sql() -> str:
    def q(col: str) -> str:  # to_csv's minimal quoting (when it holds , " LF or CR: four contains(),
        # which DuckDB tests faster than the regular expression '[,"\n\r]' it replaces; same text)
        return (f"""case when {col} is null then '' when contains({col}, ',') or contains({col}, '"')
                         or contains({col}, chr(10)) or contains({col}, chr(13))
                    then '"' || replace({col}, '"', '""') || '"' else {col} end""")

    return (f"{q('form_code')} || ',' || {q('scope')} || ',' || coalesce(row_code::varchar, '') || ',' || "
            f"{q('column_key')} || ',' || case when value is null or isnan(value) then '' "
            f"else printf('%.10g', value) end")


def cells_digest(con, school_year: str, period: str, forms: Iterable[str], scopes: Iterable[str] | None = None,
                 cache: bool = False, proven: Iterable[str] = ()) -> str:
    """sha256 of the stored cells of these forms: the CSV text (header; form_code, scope,
    row_code, column_key, value as '%.10g'; sorted) built by DuckDB — the same text, byte for
    byte, as pandas' to_csv gave before (a rebuild compares digests recorded by either), without
    fetching a province's million cells into Python (3 s). `cache` (every scope): the text is
    assembled from the kept blocks of the scopes whose cells did not change (same bytes).
    `proven` (with `cache`): forms whose every scope's fingerprint is the one form_scope_stored
    holds for it (build_reports just stored or proved them: see `build`): their fingerprints
    are read from there, not computed again over their cells."""
    forms = list(forms)
    if not forms:
        return hashlib.sha256(b"").hexdigest()
    if cache and scopes is None:
        return _cells_digest_cached(con, school_year, period, forms, [f for f in forms if f in set(proven)])

    cond = "school_year = ? and period = ? and form_code in (select unnest(?))"
    params: list = [school_year, period, forms]
    if scopes is not None:
        cond += " and scope in (select unnest(?))"
        params.append(list(scopes))
    line = _digest_line_sql()
    body = con.execute(f"""select coalesce(string_agg({line}, chr(10) order by form_code, scope, row_code, column_key)
                                          || chr(10), '')
                           from rpt_form_cell where {cond}""", params).fetchall()[0][0]
    text = DIGEST_HEADER + body
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


DIGEST_HEADER = "form_code,scope,row_code,column_key,value\n"


def _cells_digest_cached(con, school_year: str, period: str, forms: list[str], proven: list[str] = ()) -> str:
    """cells_digest of every scope, from the kept blocks (form_cell_block) of the scopes whose
    cells' fingerprint is unchanged and new blocks for the others (which are then kept). The
    fingerprints of the `proven` forms' scopes are form_scope_stored's (their cells are counted
    to make sure no record outlived its scope's cells: else they are computed)."""
    con.execute(BLOCK_DDL)
    cond = "school_year = $1 and period = $2 and form_code in (select unnest($3::varchar[]))"
    params = [school_year, period, forms]
    proven = list(proven)
    if proven:
        from edustat.formdelta import PROOF_DDL

        con.execute(PROOF_DDL)
        have, recorded = con.execute(
            """select (select count(*) from rpt_form_cell where school_year = $1 and period = $2
                       and form_code in (select unnest($3::varchar[]))),
                      (select sum(n) from form_scope_stored where school_year = $1 and period = $2
                       and form_code in (select unnest($3::varchar[])))""", [school_year, period, proven]).fetchone()
        if have != recorded:
            proven = []
    if proven:
        rest = [f for f in forms if f not in set(proven)]
        con.execute(f"""create or replace temp table _digest_cur as
                        {FINGERPRINT_SQL.format(cond=cond.replace("$3", "$4"))}
                        union all select form_code, scope, n, h1, h2 from form_scope_stored
                        where school_year = $1 and period = $2 and form_code in (select unnest($3::varchar[]))""",
                    [school_year, period, proven, rest])
    else:
        con.execute(f"create or replace temp table _digest_cur as {FINGERPRINT_SQL.format(cond=cond)}", params)
    try:
        if con.execute("select count(*) from _digest_cur where scope is null").fetchone()[0]:
            return cells_digest(con, school_year, period, forms)  # a block cannot be keyed: the whole text
        con.execute("""create or replace temp table _digest_stale as select c.form_code, c.scope from _digest_cur c
                       where not exists (select 1 from form_cell_block b where b.school_year = $1 and b.period = $2
                                         and b.form_code = c.form_code and b.scope = c.scope and b.n = c.n
                                         and b.h1 = c.h1 and b.h2 = c.h2)""", [school_year, period])
        con.execute("""delete from form_cell_block b where b.school_year = $1 and b.period = $2
                       and b.form_code in (select unnest($3::varchar[]))
                       and ((b.form_code, b.scope) in (select (form_code, scope) from _digest_stale)
                            or (b.form_code, b.scope) not in (select (form_code, scope) from _digest_cur))""", params)
        con.execute(f"""insert into form_cell_block
                        select $1, $2, c.form_code, c.scope, c.n, c.h1, c.h2, k.block
                        from _digest_cur c join _digest_stale s using (form_code, scope)
                        join (select form_code, scope,
                                     string_agg({_digest_line_sql()}, chr(10) order by row_code, column_key) || chr(10)
                                       as block
                              from rpt_form_cell where {cond}
                                and (form_code, scope) in (select (form_code, scope) from _digest_stale)
                              group by form_code, scope) k using (form_code, scope)""", params)
        # the blocks as one Arrow string column: its data buffer IS the blocks' UTF-8 text one
        # after another, hashed in place (a province's 34 MB were made Python strings and
        # encoded again: ~0.05 s of a one-school delta; issue 12)
        blocks = con.sql("""select b.block from _digest_cur c join form_cell_block b
                            on b.school_year = $1 and b.period = $2 and b.form_code = c.form_code
                            and b.scope = c.scope and b.n = c.n and b.h1 = c.h1 and b.h2 = c.h2
                            order by c.form_code, c.scope""", params=[school_year, period]).to_arrow_table().column(0)
        n = con.execute("select count(*) from _digest_cur").fetchone()[0]
        if len(blocks) != n or blocks.null_count:  # never expected: the whole text then
            return cells_digest(con, school_year, period, forms)
        h = hashlib.sha256(DIGEST_HEADER.encode("utf-8"))
        for chunk in blocks.chunks:
            _hash_text(h, chunk)
        return h.hexdigest()
    finally:
        con.execute("drop table if exists _digest_cur")
        con.execute("drop table if exists _digest_stale")


def _hash_text(h, chunk) -> None:
    """h.update with the UTF-8 bytes of an Arrow string array's values, one after another
    (Arrow holds them so, in one data buffer, between the first and last offsets)."""
    import numpy as np
    import pyarrow as pa

    if len(chunk) == 0:
        return
    if pa.types.is_string(chunk.type):
        width = np.int32
    elif pa.types.is_large_string(chunk.type):
        width = np.int64
    else:  # any other layout: value by value
        for value in chunk.to_pylist():
            h.update(value.encode("utf-8"))
        return
    _, offsets, data = chunk.buffers()
    offsets = np.frombuffer(offsets, dtype=width)[chunk.offset: chunk.offset + len(chunk) + 1]
    if data is not None:
        h.update(memoryview(data)[int(offsets[0]):int(offsets[-1])])


@contextmanager
def _source(con, tables: dict[str, str], registers: pd.DataFrame):
    """An in-memory database attached as the current one, holding core_* (from `tables`:
    name → SELECT over the main database) and the register rows; the main database again after."""
    from edustat.reports import REPORT_DDL
    from edustat.store import ensure_tables

    main = con.execute("select current_database()").fetchone()[0]
    con.execute(f"attach ':memory:' as {SOURCE}")
    try:
        for name, select in tables.items():
            con.execute(f"create table {SOURCE}.{name} as {select}")
        con.register("_registers", registers)
        con.execute(f"create table {SOURCE}.submission as select * from _registers")
        con.unregister("_registers")
        con.execute(f"use {SOURCE}")
        ensure_tables(con)  # any sheet the versions had no rows of
        con.execute(REPORT_DDL)
        yield main
    finally:
        con.execute(f'use "{main}"')
        con.execute(f"detach {SOURCE}")


def _build_in_source(con, main: str, reports_dir: Path, school_year: str, period: str, school, forms, workers,
                     copy_back: bool):
    from edustat.reports import build_reports

    result = build_reports(con, reports_dir, school_year, period, school=school, forms=forms, workers=workers)
    digest = cells_digest(con, school_year, period, result.forms, ["city", school] if school else None)
    if copy_back and result.forms:
        con.execute(f'use "{main}"')
        try:
            con.execute("begin transaction")
            for table in ("rpt_form_cell", "rpt_form_check"):
                con.execute(f"create table if not exists {table} as select * from {SOURCE}.{table} limit 0")
                cond = "school_year = ? and period = ? and form_code in (select unnest(?))"
                params: list = [school_year, period, result.forms]
                if school:
                    cond += " and scope in ('city', ?)"
                    params.append(school)
                con.execute(f"delete from {table} where {cond}", params)
                con.execute(f"insert into {table} select * from {SOURCE}.{table} where {cond}", params)
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise
        finally:
            con.execute(f"use {SOURCE}")
    return result, digest


def build(con, cfg, school_year: str, period: str, school: str | None = None, forms: list[str] | None = None,
          certified_only: bool | None = None, by: str | None = None, incremental: bool = False):
    """Build the forms (reports.build_reports) and record the build: returns the ReportResult
    with `build_id` set. `certified_only` (default: config forms_certified_only) counts only
    the schools whose version in core is certified. `incremental`: render only the scopes
    whose data changed (edustat.incremental; the stored cells of the others are unchanged, so
    the recorded digest still covers every scope); nothing is recorded when nothing changed
    (`result.skipped`: the previous build stands)."""
    from edustat import period_lock as period_
    from edustat.reports import build_reports

    ensure(con)
    certified_only = cfg.forms_certified_only if certified_only is None else certified_only
    versions = _versions(con, school_year, period, certified_only)
    if certified_only:
        con.register("_certified", versions[["school_code", "file_hash"]])
        tables = {f"core_{sid}": f"""select c.* from core_{sid} c join _certified v using (school_code, file_hash)
                                     where c.school_year = '{school_year}' and c.period = '{period}'""" for sid in SHEETS}
        tables = {k: v.replace("_certified", "main_certified") for k, v in tables.items()}
        con.execute("create or replace temp table main_certified as select * from _certified")
        con.unregister("_certified")
        registers = con.execute("""select * from submission where school_year = ? and period = ? and in_core
                                   and file_hash in (select file_hash from main_certified)""", [school_year, period]).df()
        with _source(con, tables, registers) as main:
            result, digest = _build_in_source(con, main, cfg.reports_dir, school_year, period, school, forms,
                                              cfg.workers, copy_back=True)
        con.execute("drop table if exists main_certified")
    elif incremental:
        from edustat.incremental import build_forms_incremental

        done = build_forms_incremental(con, cfg, school_year, period, record=False)
        result = done.result
        result.skipped, result.scopes = done.skipped, done.scopes  # type: ignore[attr-defined]
        # every scope of a form kept or summed by the delta, or built whole, is recorded in
        # form_scope_stored as it is now (others proven, city and changed recorded when stored).
        # Skipped (nothing changed): no build is recorded below, so no digest is needed (a
        # province's 1.3 M cells' blocks checked for nothing, ~0.15 CPU s); the kept blocks
        # (form_cell_block, a cache proven by each scope's fingerprint) are brought up to date
        # by the next build's digest as they would have been here.
        digest = None
        if not done.skipped:
            delta = getattr(result, "delta", None)
            proven = list(result.forms) if delta is None else [f for f in result.forms if delta.get(f) is None]
            digest = cells_digest(con, school_year, period, result.forms, None, cache=True, proven=proven)
    else:
        result = build_reports(con, cfg.reports_dir, school_year, period, school=school, forms=forms, workers=cfg.workers)
        digest = cells_digest(con, school_year, period, result.forms, ["city", school] if school else None,
                              cache=school is None)
    result.build_id = None  # type: ignore[attr-defined]
    pending = done if incremental and not certified_only else None  # scopes to mark done with the build
    if not result.forms or getattr(result, "skipped", False):
        if pending is not None:
            pending.record(con, school_year, period)
        return result
    build_id = dt.datetime.now(dt.timezone(dt.timedelta(hours=7))).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    from edustat.store import transaction

    excluded = _excluded(con, school_year, period, versions)
    with transaction(con):
        if pending is not None:
            pending.record(con, school_year, period)
        con.execute("insert into form_build values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [build_id, school_year, period, period_.now_vn(), period_.who(by), result.forms, school,
                     bool(certified_only), str(cfg.reports_dir), [str(p) for p in result.files], digest])
        con.register("_v", versions.assign(build_id=build_id))
        con.execute("""insert into form_build_version select build_id, school_code, version, file_hash, content_hash,
                       loaded_rows, certified from _v""")
        con.unregister("_v")
        if len(excluded):
            con.register("_x", excluded.assign(build_id=build_id))
            con.execute("""insert into form_build_excluded select build_id, school_code, file_hash, sheet_id,
                           sheet_name, excel_row from _x""")
            con.unregister("_x")
    result.build_id = build_id  # type: ignore[attr-defined]
    return result


def _excluded(con, school_year: str, period: str, versions: pd.DataFrame) -> pd.DataFrame:
    """Staged rows of the recorded versions that core does not hold (left out for errors)."""
    if versions.empty:
        return pd.DataFrame(columns=["school_code", "file_hash", "sheet_id", "sheet_name", "excel_row"])
    con.register("_vers", versions[["school_code", "file_hash"]])
    parts = []
    for sid in SHEETS:
        parts.append(con.execute(f"""
            select s.school_code, s.file_hash, '{sid}' as sheet_id, s.sheet_name, s.excel_row
            from stg_{sid} s join _vers v using (school_code, file_hash)
            where s.school_year = ? and s.period = ?
              and not exists (select 1 from core_{sid} c where c.school_year = s.school_year and c.period = s.period
                              and c.file_hash = s.file_hash and c.sheet_name is not distinct from s.sheet_name
                              and c.excel_row is not distinct from s.excel_row)""", [school_year, period]).df())
    con.unregister("_vers")
    return pd.concat(parts, ignore_index=True)


def builds(con, school_year: str | None = None, period: str | None = None) -> pd.DataFrame:
    ensure(con)
    sql = """select b.build_id, b.school_year, b.period, b.built_at, b.built_by, b.forms, b.school, b.certified_only,
                    (select count(*) from form_build_version v where v.build_id = b.build_id) as schools
             from form_build b where true"""
    sql, params = and_given(sql, [], {"school_year = ?": school_year, "period = ?": period})
    return con.execute(sql + " order by built_at, build_id", params).df()


def rebuild(con, cfg, build_id: str, out_dir: Path) -> dict:
    """Build the forms of a recorded build again, from the recorded versions, into `out_dir`
    (never over the live reports). Returns files, forms, and whether the cells' digest equals
    the recorded one."""
    ensure(con)
    row = con.execute("""select school_year, period, forms, school, cells_digest from form_build
                         where build_id = ? or starts_with(build_id, ?) order by build_id""", [build_id, build_id]).fetchall()
    if not row:
        raise RebuildError(f"không có lần lập biểu mã '{build_id}'; xem danh sách: edustat builds")
    if len(row) > 1:
        raise RebuildError(f"mã '{build_id}' khớp {len(row)} lần lập biểu; ghi đầy đủ hơn")
    school_year, period, forms, school, digest = row[0]
    build_id = con.execute("select build_id from form_build where build_id = ? or starts_with(build_id, ?)",
                           [build_id, build_id]).fetchone()[0]
    versions = con.execute("select school_code, file_hash, loaded_rows from form_build_version where build_id = ?",
                           [build_id]).df()
    staged = {sid: con.execute(f"""select count(*) from stg_{sid} s join form_build_version v
                                   on v.build_id = ? and v.file_hash = s.file_hash and v.school_code = s.school_code
                                   where s.school_year = ? and s.period = ?""", [build_id, school_year, period]).fetchone()[0]
              for sid in ("school",)}
    if staged["school"] != len(versions):
        raise RebuildError("dữ liệu đã lưu của các phiên bản trong lần lập biểu này không còn đủ (stg_); "
                           "không lập lại chính xác được")
    con.execute("create or replace temp table main_build as select * from form_build_version where build_id = ?", [build_id])
    con.execute("create or replace temp table main_excluded as select * from form_build_excluded where build_id = ?",
                [build_id])
    tables = {}
    for sid in SHEETS:
        tables[f"core_{sid}"] = f"""
            select s.*, b.version from stg_{sid} s
            join main_build b on b.file_hash = s.file_hash and b.school_code = s.school_code
            where s.school_year = '{school_year}' and s.period = '{period}'
              and not exists (select 1 from main_excluded x where x.file_hash = s.file_hash and x.sheet_id = '{sid}'
                              and x.sheet_name is not distinct from s.sheet_name
                              and x.excel_row is not distinct from s.excel_row)"""
    registers = con.execute("""select s.* replace (true as in_core, b.loaded_rows as loaded_rows, true as is_current)
                               from submission s join main_build b using (file_hash)
                               where s.school_year = ? and s.period = ?""", [school_year, period]).df()
    out_dir = Path(out_dir)
    try:
        with _source(con, tables, registers) as main:
            # core_* column order as in the main database (stg_* + version)
            result, new_digest = _build_in_source(con, main, out_dir, school_year, period, school, list(forms),
                                                  cfg.workers, copy_back=False)
    finally:
        con.execute("drop table if exists main_build")
        con.execute("drop table if exists main_excluded")
    return {"build_id": build_id, "school_year": school_year, "period": period, "forms": result.forms,
            "files": [str(p) for p in result.files], "identical": new_digest == digest}
