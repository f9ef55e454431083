"""The DuckDB store: layered tables, the submission register, validation issues.

Layers (style.md §6): `raw_<sheet>` = every parsed file's cells as text with lineage (file
hash, sheet, Excel row), append-only and keyed by file hash, so re-running the same files is a
no-op; `stg_<sheet>` = the same rows typed and derived; `core_<sheet>` = the accepted version
of each school × period. A school's new version replaces its previous one in one transaction;
a rejected version never removes what was already accepted.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import duckdb
import pandas as pd
import pyarrow as pa

from schemas import Contract, Sheet, load_contract

SHEETS = ("school", "rooms", "classes", "learners", "staff")
KEYS = [("school_year", pa.string()), ("period", pa.string()), ("school_code", pa.string()),
        ("file_hash", pa.string()), ("sheet_name", pa.string()), ("excel_row", pa.int32())]
DERIVED: dict[str, list[tuple[str, pa.DataType]]] = {
    "school": [("levels", pa.string()), ("ownership_group", pa.string()), ("mn_school_type", pa.string())],
    "rooms": [],
    "classes": [("level", pa.string()), ("grade_number", pa.int32()), ("care_level", pa.string()), ("size_cap", pa.int32())],
    "learners": [("level", pa.string()), ("grade_number", pa.int32()), ("care_level", pa.string()),
                 ("birth_year", pa.int32()), ("age", pa.int32()), ("is_female", pa.bool_()), ("is_dtts", pa.bool_()),
                 ("is_enrolled", pa.bool_()), ("is_on_age", pa.bool_()), ("assessment_scale", pa.string()),
                 ("conduct_code", pa.string()), ("learning_code", pa.string()), ("is_very_small_minority", pa.bool_()),
                 ("is_disabled", pa.bool_())],
    "staff": [("level", pa.string()), ("birth_year", pa.int32()), ("age", pa.int32()), ("is_female", pa.bool_()), ("is_dtts", pa.bool_()),
              ("role", pa.string()), ("training_bucket", pa.string()), ("training_standard_derived", pa.string()),
              ("contract_bucket", pa.string()), ("age_band", pa.string()), ("is_active", pa.bool_())],
}
_PA_TYPE = {"text": pa.string(), "code": pa.string(), "id": pa.string(), "school_year": pa.string(),
            "date": pa.date32(), "year_or_date": pa.date32(), "int": pa.int32(), "flag": pa.int8()}

REGISTER_DDL = """
create table if not exists run (
    run_id varchar primary key, school_year varchar, period varchar, inbox varchar,
    started_at timestamp, finished_at timestamp, files integer, status varchar, summary json);
create table if not exists submission (
    school_year varchar, period varchar, school_code varchar, version integer, file_hash varchar,
    file_name varchar, raw_path varchar, received_at timestamp, status varchar,
    n_learners integer, n_staff integer, n_classes integer, n_rooms integer,
    n_errors integer, n_warnings integer, n_notices integer, loaded_rows integer,
    is_current boolean, in_core boolean, run_id varchar, feedback_path varchar,
    primary key (school_year, period, file_hash));
create table if not exists validation_issue (
    run_id varchar, school_year varchar, period varchar, school_code varchar, file_hash varchar,
    file_name varchar, sheet varchar, excel_row integer, "column" varchar, field varchar,
    header varchar, rule_id varchar, severity varchar, value varchar, message varchar, fix varchar);
"""
STATUS_ORDER = ("accepted", "accepted_with_warnings", "partially_loaded", "rejected", "unreadable")


def connect(db_path: Path, retries: int = 20, wait: float = 0.5) -> duckdb.DuckDBPyConnection:
    """The single writer's connection; waits briefly if another writer holds the lock."""
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        try:
            con = duckdb.connect(str(db_path))
            con.execute(REGISTER_DDL)
            con.execute("alter table submission add column if not exists content_hash varchar")
            return con
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or attempt == retries - 1:
                raise
            time.sleep(wait)
    raise RuntimeError("unreachable")


@contextmanager
def session(db_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The writer's connection for one step, closed (and its lock released) after it."""
    con = connect(db_path)
    try:
        yield con
    finally:
        con.close()


def arrow_schema(sheet: Sheet, layer: str) -> pa.Schema:
    """raw: every field as text; stg/core: typed fields + derived columns."""
    fields = [pa.field(k, t) for k, t in KEYS]
    if layer == "core":
        fields.append(pa.field("version", pa.int32()))
    key_names = {k for k, _ in KEYS}
    for f in sheet.fields:
        if f.id in key_names:  # the school sheet's own code / year / period are the keys
            continue
        fields.append(pa.field(f.id, pa.string() if layer == "raw" else _PA_TYPE[f.type]))
    if layer == "raw":
        fields.append(pa.field("extra_columns", pa.string()))
    else:
        fields.extend(pa.field(n, t) for n, t in DERIVED[sheet.id])
    return pa.schema(fields)


def _ddl(table: str, schema: pa.Schema) -> str:
    typemap = {pa.string(): "varchar", pa.int32(): "integer", pa.int8(): "tinyint", pa.date32(): "date", pa.bool_(): "boolean"}
    cols = ", ".join(f'"{f.name}" {typemap[f.type]}' for f in schema)
    return f"create table if not exists {table} ({cols})"


def ensure_tables(con: duckdb.DuckDBPyConnection, contract: Contract | None = None) -> None:
    c = contract or load_contract()
    for sid in SHEETS:
        sheet = c.sheet(sid)
        for layer in ("raw", "stg", "core"):
            con.execute(_ddl(f"{layer}_{sid}", arrow_schema(sheet, layer)))


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Conform a frame to a table schema: absent columns are null, dates become DATE.
    Column-wise conversions (no Python list per column: a province stages ~20M cells)."""
    n = len(frame)
    arrays = []
    for f in schema:
        if f.name in frame.columns:
            s = frame[f.name]
            if pa.types.is_date32(f.type):
                days = pd.to_datetime(s, errors="coerce").to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
                arr = pa.array(days, type=pa.date32(), from_pandas=True)
            elif pa.types.is_string(f.type):
                arr = pa.array(s.astype("string").to_numpy(dtype=object, na_value=None), type=pa.string())
            elif pa.types.is_boolean(f.type):
                arr = pa.array(s.astype("boolean").to_numpy(dtype=object, na_value=None), type=pa.bool_())
            else:
                ints = pd.to_numeric(s, errors="coerce").astype("Int64")
                arr = pa.array(ints.to_numpy(dtype="float64", na_value=float("nan")), from_pandas=True).cast(f.type, safe=False) \
                    if ints.isna().any() else pa.array(ints.to_numpy(dtype="int64")).cast(f.type)
        else:
            arr = pa.nulls(n, type=f.type)
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=schema)


def stage_frames(con: duckdb.DuckDBPyConnection, raw: Mapping[str, pd.DataFrame], stg: Mapping[str, pd.DataFrame],
                 school_year: str, period: str, contract: Contract | None = None) -> int:
    """Append the raw_/stg_ rows of files not staged before (keyed by file hash). Frames carry
    the key columns (school_code, file_hash, sheet_name, excel_row). Returns files added."""
    c = contract or load_contract()
    ensure_tables(con, c)
    seen = {r[0] for r in con.execute("select distinct file_hash from raw_school where school_year = ? and period = ?",
                                     [school_year, period]).fetchall()}
    added = set()
    for sid in SHEETS:
        sheet = c.sheet(sid)
        for layer, frames in (("raw", raw), ("stg", stg)):
            frame = frames.get(sid)
            if frame is None or frame.empty:
                continue
            frame = frame[~frame["file_hash"].isin(seen)]
            if frame.empty:
                continue
            added.update(frame["file_hash"].unique())
            tbl = to_arrow(frame.assign(school_year=school_year, period=period), arrow_schema(sheet, layer))
            con.register("_incoming", tbl)
            con.execute(f"insert into {layer}_{sid} select * from _incoming")
            con.unregister("_incoming")
    return len(added)


# ---------------------------------------------------------------------------------------
# Stage d: cross-school rules, as SQL over this run's files and the other schools' core rows
# ---------------------------------------------------------------------------------------

CROSS_SCHOOL_SQL = {
    # the same code in two schools: every row of the run that shares it is reported
    "student_code_unique_city": ("learners", "student_code", ["student_code"]),
    "student_personal_id_unique_city": ("learners", "personal_id", ["personal_id"]),
    "student_identity_duplicate_city": ("learners", "full_name", ["lower(full_name)", "birth_date", "sex"]),
    "staff_personal_id_unique_city": ("staff", "personal_id", ["personal_id"]),
}


def cross_school_issues(con: duckdb.DuckDBPyConnection, run_files: Mapping[str, str], school_year: str, period: str) -> pd.DataFrame:
    """run_files: school_code → file hash of this run's file for that school. Compares those
    files with each other and with the core rows of every other school of the period.
    Grain: one row per (row of a run file, rule) with the other schools in `detail`."""
    if not run_files:
        return pd.DataFrame(columns=["school_code", "file_hash", "sheet_name", "excel_row", "rule_id", "value", "detail"])
    con.register("_run_files", pd.DataFrame({"school_code": list(run_files), "file_hash": list(run_files.values())}))
    parts = []
    for rule_id, (sid, field, key_exprs) in CROSS_SCHOOL_SQL.items():
        key = " || '|' || ".join(f"coalesce(cast({e} as varchar), '')" for e in key_exprs)
        notnull = " and ".join(f"{e} is not null" for e in key_exprs)
        enrolled = "and is_enrolled" if sid == "learners" else "and is_active"
        sql = f"""
        with run_rows as (
            select s.school_code, s.file_hash, s.sheet_name, s.excel_row, cast(s.{field} as varchar) as value, {key} as k
            from stg_{sid} s join _run_files f using (school_code, file_hash)
            where s.school_year = $1 and s.period = $2 and {notnull} {enrolled}
        ),
        other_rows as (
            select c.school_code, {key} as k
            from core_{sid} c
            where c.school_year = $1 and c.period = $2 and {notnull} {enrolled}
              and c.school_code not in (select school_code from _run_files)
        ),
        all_keys as (
            select school_code, k from run_rows union all select school_code, k from other_rows
        ),
        shared as (
            select k, list(distinct school_code order by school_code) as schools
            from all_keys group by k having count(distinct school_code) > 1
        ),
        final as (
            select r.school_code, r.file_hash, r.sheet_name, r.excel_row, '{rule_id}' as rule_id, r.value,
                   array_to_string(list_filter(sh.schools, lambda x: x <> r.school_code), ', ') as detail
            from run_rows r join shared sh using (k)
        )
        select * from final
        """
        parts.append(con.execute(sql, [school_year, period]).df())
    con.unregister("_run_files")
    out = pd.concat(parts, ignore_index=True)
    return out


# ---------------------------------------------------------------------------------------
# The register and the curated layer
# ---------------------------------------------------------------------------------------

def next_versions(con: duckdb.DuckDBPyConnection, school_year: str, period: str, files: Mapping[str, str]) -> dict[str, int]:
    """file hash → version: an already registered file keeps its version; a new one gets
    1 + the school's highest."""
    rows = con.execute("select school_code, file_hash, version from submission where school_year = ? and period = ?",
                       [school_year, period]).fetchall()
    known = {h: v for _, h, v in rows}
    top: dict[str, int] = {}
    for code, _, v in rows:
        top[code] = max(top.get(code, 0), v or 0)
    out = {}
    for h, code in files.items():
        if h in known:
            out[h] = known[h]
        else:
            top[code] = top.get(code, 0) + 1
            out[h] = top[code]
    return out


def current_contents(con: duckdb.DuckDBPyConnection, school_year: str, period: str) -> dict[tuple[str, str], str]:
    """(school code, content hash) → file hash of each school's current registered version."""
    rows = con.execute("""select school_code, content_hash, file_hash from submission
                          where school_year = ? and period = ? and is_current and content_hash is not null""",
                       [school_year, period]).fetchall()
    return {(code, ch): h for code, ch, h in rows}


def write_run(con: duckdb.DuckDBPyConnection, *, run_id: str, school_year: str, period: str,
              submissions: pd.DataFrame, issues: pd.DataFrame, load: Mapping[str, str],
              load_valid_rows: bool, contract: Contract | None = None) -> dict[str, int]:
    """In ONE transaction: upsert the register rows, replace the issues of this run's files,
    and replace each loadable school's core rows with its accepted version.

    `submissions`: one row per file of the run (register columns). `load`: school → file hash
    to put in core. Returns rows loaded per school."""
    c = contract or load_contract()
    ensure_tables(con, c)
    loaded: dict[str, int] = {}
    con.execute("begin transaction")
    try:
        hashes = submissions["file_hash"].dropna().tolist()
        con.register("_hashes", pd.DataFrame({"file_hash": hashes}))
        con.execute("delete from validation_issue where school_year = ? and period = ? and file_hash in (select file_hash from _hashes)",
                    [school_year, period])
        if len(issues):
            iss = issues.assign(run_id=run_id, school_year=school_year, period=period)
            cols = ["run_id", "school_year", "period", "school_code", "file_hash", "file_name", "sheet", "excel_row",
                    "column", "field", "header", "rule_id", "severity", "value", "message", "fix"]
            iss = iss[cols].astype({"excel_row": "Int32"})
            con.register("_issues", iss)
            con.execute('insert into validation_issue select * from _issues')
            con.unregister("_issues")
        # a file seen before keeps the time it was first received
        con.execute("""create or replace temp table _old as select file_hash, received_at from submission
                       where school_year = ? and period = ? and file_hash in (select file_hash from _hashes)""",
                    [school_year, period])
        con.execute("delete from submission where school_year = ? and period = ? and file_hash in (select file_hash from _hashes)",
                    [school_year, period])
        con.unregister("_hashes")
        con.register("_subs", submissions)
        con.execute("""insert into submission by name
                       select s.* replace (coalesce(o.received_at, s.received_at) as received_at),
                              false as is_current, false as in_core
                       from _subs s left join _old o using (file_hash)""")
        con.unregister("_subs")
        con.execute("drop table _old")
        # every loadable school at once: one delete + one insert per sheet, not one per school;
        # under load_valid_rows the rows with an error (file, sheet, row) are left out
        if load:
            con.register("_load", pd.DataFrame({"school_code": list(load), "file_hash": list(load.values())}))
            for sid in SHEETS:
                keep = ""
                if load_valid_rows and sid != "school":
                    keep = """and not exists (select 1 from validation_issue v where v.file_hash = s.file_hash
                               and v.severity = 'error' and v.sheet = s.sheet_name and v.excel_row = s.excel_row)"""
                con.execute(f"""delete from core_{sid} where school_year = ? and period = ?
                                and school_code in (select school_code from _load)""", [school_year, period])
                con.execute(f"""insert into core_{sid} by name
                    select s.*, b.version
                    from stg_{sid} s
                    join _load l on l.file_hash = s.file_hash and l.school_code = s.school_code
                    join submission b on b.school_year = s.school_year and b.period = s.period and b.file_hash = s.file_hash
                    where s.school_year = ? and s.period = ? {keep}""", [school_year, period])
            counts = con.execute(f"""
                select school_code, sum(n) from (
                    {" union all ".join(f"select school_code, count(*) as n from core_{sid} where school_year = $y and period = $p "
                                        f"and school_code in (select school_code from _load) group by 1" for sid in SHEETS if sid != "school")}
                ) group by 1""", {"y": school_year, "p": period}).fetchall()
            loaded = {code: int(n) for code, n in counts}
            for code in load:
                loaded.setdefault(code, 0)
            con.register("_loaded", pd.DataFrame({"file_hash": [load[c] for c in loaded], "n": list(loaded.values())}))
            con.execute("""update submission set loaded_rows = l.n from _loaded l
                           where submission.file_hash = l.file_hash and submission.school_year = ? and submission.period = ?""",
                        [school_year, period])
            con.unregister("_loaded")
            con.unregister("_load")
        # current = newest version of each school; in_core = the version core holds
        con.execute("""
            update submission set is_current = (version = (select max(version) from submission b
                where b.school_year = submission.school_year and b.period = submission.period
                  and b.school_code is not distinct from submission.school_code))
            where school_year = ? and period = ?""", [school_year, period])
        con.execute("""
            update submission set in_core = file_hash in (select distinct file_hash from core_school c
                where c.school_year = submission.school_year and c.period = submission.period)
            where school_year = ? and period = ?""", [school_year, period])
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    con.execute("checkpoint")
    return loaded


def expected_schools(con: duckdb.DuckDBPyConnection, school_year: str, period: str,
                     configured: Iterable[str] | None = None) -> list[str]:
    """The configured list, else the schools in core of the latest earlier collection."""
    if configured:
        return sorted(set(configured))
    rows = con.execute("""
        select distinct school_year, period from core_school
        where (school_year, period) <> (?, ?)
        order by school_year desc, case period when 'cuoi_nam' then 2 else 1 end desc""", [school_year, period]).fetchall()
    start = (school_year, 2 if period == "cuoi_nam" else 1)
    earlier = [r for r in rows if (r[0], 2 if r[1] == "cuoi_nam" else 1) < start]
    if not earlier:
        return []
    y, p = earlier[0]
    return [r[0] for r in con.execute("select distinct school_code from core_school where school_year = ? and period = ? order by 1", [y, p]).fetchall()]


def missing_schools(con: duckdb.DuckDBPyConnection, school_year: str, period: str,
                    configured: Iterable[str] | None = None) -> pd.DataFrame:
    """Expected schools without any submission in this collection (with their last known name)."""
    expected = expected_schools(con, school_year, period, configured)
    if not expected:
        return pd.DataFrame(columns=["school_code", "school_name"])
    con.register("_expected", pd.DataFrame({"school_code": expected}))
    df = con.execute("""
        with expected as (select school_code from _expected),
        submitted as (select distinct school_code from submission where school_year = ? and period = ?),
        names as (select school_code, arg_max(school_name, school_year || period) as school_name from core_school group by 1),
        final as (
            select e.school_code, n.school_name from expected e
            left join names n using (school_code)
            where e.school_code not in (select school_code from submitted where school_code is not null))
        select * from final order by school_code""", [school_year, period]).df()
    con.unregister("_expected")
    return df
