"""The DuckDB store: layered tables, the submission register, validation issues.

Layers (style.md §6): `raw_<sheet>` = every parsed file's cells as text with lineage (file
hash, sheet, Excel row), keyed by file hash; `stg_<sheet>` = the same rows typed and derived;
`core_<sheet>` = the accepted version of each school × period. A school's new version replaces
its previous one; a rejected version never removes what was already accepted.

Atomicity: a run's staging (raw_/stg_), its core rows, its register rows and its issues are
written in ONE transaction (`pipeline.load_all`). Staging replaces the rows of the run's files
(delete + insert by file hash), so a load retried by Prefect or re-run after a crash redoes
exactly the same work; nothing of a run that did not commit is visible. `inconsistencies`
checks the register against core at the start of every run.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import duckdb
import pandas as pd
import pyarrow as pa

from schemas import Contract, Sheet, load_contract
from transforms.text import arrow_strings

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


def and_given(sql: str, params: list, conditions: Mapping[str, object]) -> tuple[str, list]:
    """`sql` (ending in a where clause) narrowed by each condition whose value is given:
    `{"school_code = ?": school, "starts_with(file_hash, ?)": prefix}`; None leaves one out."""
    for cond, value in conditions.items():
        if value:
            sql += f" and {cond}"
            params = [*params, value]
    return sql, params


def private_file(path: Path, group: str | int | None = None) -> None:
    """Make a file holding personal data 0600, or 0640 owned by the office's `group`."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not os.path.isfile(path) or os.path.islink(path):
        return
    mode = 0o640 if group is not None else 0o600
    if group is not None:
        import grp

        gid = group if isinstance(group, int) else (int(group) if str(group).isdigit() else grp.getgrnam(str(group)).gr_gid)
        if st.st_gid != gid:
            os.chown(path, -1, gid)
    if st.st_mode & 0o777 != mode:
        os.chmod(path, mode)


def connect(db_path: Path, retries: int = 20, wait: float = 0.5, group: str | int | None = None) -> duckdb.DuckDBPyConnection:
    """The single writer's connection; waits briefly if another writer holds the lock. The
    database file (and its WAL) hold personal data: made private (see `private_file`)."""
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        try:
            con = duckdb.connect(str(db_path))
            con.execute(REGISTER_DDL)
            con.execute("alter table submission add column if not exists content_hash varchar")
            # issue 11: the principal's confirmation as the register shows it (certified / not)
            con.execute("alter table submission add column if not exists certified boolean")
            con.execute("alter table submission add column if not exists certified_on date")
            for p in (db_path, Path(f"{db_path}.wal")):
                private_file(p, group)
            return con
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or attempt == retries - 1:
                raise
            time.sleep(wait)
    raise RuntimeError("unreachable")


@contextmanager
def session(db_path: Path, group: str | int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """The writer's connection for one step, closed (and its lock released) after it. Inside
    `held`, a step that fails also lets the held instance go: a retry, or the next step, opens a
    new one, as without `held` (a failure may have left the instance unusable)."""
    con = connect(db_path, group=group)
    try:
        yield con
    except BaseException:
        con.close()
        _let_go(db_path)
        raise
    finally:
        con.close()


_HELD: dict[str, duckdb.DuckDBPyConnection] = {}  # db path -> the connection `held` keeps open


def _let_go(db_path: Path) -> None:
    holder = _HELD.pop(str(Path(db_path)), None)
    if holder is not None:
        holder.close()


@contextmanager
def held(db_path: Path, group: str | int | None = None) -> Iterator[None]:
    """The database kept open across consecutive steps: each `session` inside is a new
    connection to the same DuckDB instance (DuckDB's per-process instance cache, the same
    configuration), not a new instance (issue 12: an instance costs ~20-60 ms of CPU to
    create and close — DuckDB's own set-up, even in memory — and a province's nothing-changed
    rerun made nine). Each step still commits its own transactions (durable in the WAL as
    before); the instance checkpoints when the block ends. Only around steps that follow one
    another without other work between them (feedback … artifacts): the file stays locked
    for the block, as it was for the steps' own sessions, which left gaps of milliseconds. A
    session that fails inside lets the instance go (`session`)."""
    key = str(Path(db_path))
    if key in _HELD:  # held already (a nested block): the outer one lets it go
        yield
        return
    _HELD[key] = connect(db_path, group=group)
    try:
        yield
    finally:
        _let_go(db_path)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One DuckDB transaction: committed at the end of the block, rolled back on any error.
    A rollback that itself fails (e.g. the database was invalidated by a full disk) is not
    allowed to hide the original error."""
    con.execute("begin transaction")
    try:
        yield con
    except BaseException:
        try:
            con.execute("rollback")
        except duckdb.Error:
            pass
        raise
    con.execute("commit")


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
    have: dict[str, set[str]] = {}
    for table, column in con.execute("select table_name, column_name from duckdb_columns() "
                                     "where schema_name = 'main' and database_name = current_database()").fetchall():
        have.setdefault(table, set()).add(column)
    if all(f"{layer}_{sid}" in have and {f.name for f in arrow_schema(c.sheet(sid), layer)} <= have[f"{layer}_{sid}"]
           for sid in SHEETS for layer in ("raw", "stg", "core")):
        return  # every table and column there (a load calls this 5 times): no DDL
    for sid in SHEETS:
        sheet = c.sheet(sid)
        for layer in ("raw", "stg", "core"):
            con.execute(_ddl(f"{layer}_{sid}", arrow_schema(sheet, layer)))
    _add_new_columns(con, c)


def _add_new_columns(con: duckdb.DuckDBPyConnection, c: Contract) -> None:
    """A database made before a field was added to the contract (e.g. the certification cells
    of issue 11) gets the column, empty for the files read before; writes go by name."""
    have: dict[str, set[str]] = {}
    for table, column in con.execute("select table_name, column_name from duckdb_columns() "
                                     "where schema_name = 'main' and database_name = current_database()").fetchall():
        have.setdefault(table, set()).add(column)
    typemap = {pa.string(): "varchar", pa.int32(): "integer", pa.int8(): "tinyint", pa.date32(): "date", pa.bool_(): "boolean"}
    for sid in SHEETS:
        for layer in ("raw", "stg", "core"):
            table = f"{layer}_{sid}"
            for f in arrow_schema(c.sheet(sid), layer):
                if table in have and f.name not in have[table]:
                    con.execute(f'alter table {table} add column "{f.name}" {typemap[f.type]}')


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
                arr = arrow_strings(s)  # no Python string per cell: a province stages ~20M cells
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


def _unstage(con: duckdb.DuckDBPyConnection, hashes: list[str], school_year: str, period: str) -> None:
    """Delete every raw_/stg_ row of these files in the collection (staging then inserts them)."""
    con.register("_staging", pd.DataFrame({"file_hash": hashes}))
    for sid in SHEETS:
        for layer in ("raw", "stg"):
            con.execute(f"""delete from {layer}_{sid} where school_year = ? and period = ?
                            and file_hash in (select file_hash from _staging)""", [school_year, period])
    con.unregister("_staging")


def _arrow_tables(sheets: Iterable[tuple[str, pd.DataFrame | None, pd.DataFrame | None]], c: Contract,
                  school_year: str, period: str):
    """(layer, sheet id, Arrow table) of each non-empty frame, raw then stg, in the sheets' order."""
    for sid, raw, stg in sheets:
        for layer, frame in (("raw", raw), ("stg", stg)):
            if frame is not None and not frame.empty:
                yield layer, sid, to_arrow(frame.assign(school_year=school_year, period=period),
                                           arrow_schema(c.sheet(sid), layer))


def _insert(con: duckdb.DuckDBPyConnection, layer: str, sid: str, tbl: pa.Table) -> None:
    con.register("_incoming", tbl)
    con.execute(f"insert into {layer}_{sid} by name select * from _incoming")
    con.unregister("_incoming")


def stage_frames(con: duckdb.DuckDBPyConnection, raw: Mapping[str, pd.DataFrame], stg: Mapping[str, pd.DataFrame],
                 school_year: str, period: str, contract: Contract | None = None) -> int:
    """Stage the raw_/stg_ rows of the given files, replacing whatever rows those file hashes
    had (a half-staged file from a run that crashed before this design, or this run's own
    earlier attempt), so staging is idempotent. Call it inside the load's transaction. Frames
    carry the key columns (school_code, file_hash, sheet_name, excel_row). Returns files staged."""
    c = contract or load_contract()
    ensure_tables(con, c)
    hashes = sorted({h for frames in (raw, stg) for f in frames.values() if f is not None and not f.empty
                     for h in f["file_hash"].dropna().unique()})
    if not hashes:
        return 0
    _unstage(con, hashes, school_year, period)
    for item in _arrow_tables(((sid, raw.get(sid), stg.get(sid)) for sid in SHEETS), c, school_year, period):
        _insert(con, *item)
    return len(hashes)


STAGE_AHEAD = 2  # Arrow tables made ahead of the inserts (each one sheet × layer); 0: no thread


def stage_sheets(con: duckdb.DuckDBPyConnection, sheets: Iterable[tuple[str, pd.DataFrame | None, pd.DataFrame | None]],
                 hashes: Iterable[str], school_year: str, period: str, contract: Contract | None = None) -> int:
    """`stage_frames` of frames made one sheet at a time (`pipeline.staged_sheets`: (sheet,
    raw frame, stg frame)): the rows of the files `hashes` (every file the frames hold rows of:
    the load's active files, each with its school row) are deleted, then each sheet's frames are
    inserted, raw then stg, in the order given. Call it inside the load's transaction.

    Side by side (issue 12): a thread makes the next sheet's frames and their Arrow tables
    (pandas and Python: the GIL) while this thread inserts the previous ones (DuckDB, which
    releases the GIL), so the inserts no longer wait for the frames. The same statements on the
    same connection in the same order with the same tables as `stage_frames`: the same rows. At
    most STAGE_AHEAD tables wait; an error on either side stops both and is raised here (the
    caller's transaction rolls back). Returns files staged."""
    import queue
    import threading

    c = contract or load_contract()
    ensure_tables(con, c)
    hashes = sorted({h for h in hashes if h})
    if not hashes:
        return 0
    _unstage(con, hashes, school_year, period)
    tables = _arrow_tables(sheets, c, school_year, period)
    if STAGE_AHEAD < 1:  # one after the other, in this thread
        for item in tables:
            _insert(con, *item)
        return len(hashes)
    made: queue.Queue = queue.Queue(maxsize=STAGE_AHEAD)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                made.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in tables:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # raised in the inserting thread
            put(exc)

    maker = threading.Thread(target=produce, name="edustat-stage", daemon=True)
    maker.start()
    try:
        while True:
            item = made.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            _insert(con, *item)
            del item
    finally:
        stop.set()
        maker.join()
    return len(hashes)


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
    Grain: one row per (row of a run file, rule) with the other schools in `detail`.
    Only a run row's key can be reported, so the other schools' rows are taken for those keys
    only (issue 12: a one-changed rerun no longer groups every core row of the period; the same
    rows as grouping them all, tests/test_load_one.py)."""
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
              and {key} in (select k from run_rows)  -- only a run row's key is reported: the others' keys left out
        ),
        all_keys as (
            select school_code, k from run_rows union all select school_code, k from other_rows
        ),
        dup_keys as (  -- cheap first pass: min <> max is count(distinct) > 1 without a distinct per key
            select k from all_keys group by k having min(school_code) <> max(school_code)
        ),
        shared as (  -- the lists only for the few shared keys (a province: 0.49 -> 0.29 s)
            select k, list(distinct school_code order by school_code) as schools
            from all_keys semi join dup_keys using (k) group by k
        ),
        final as (
            select r.school_code, r.file_hash, r.sheet_name, r.excel_row, '{rule_id}' as rule_id, r.value,
                   array_to_string(list_filter(sh.schools, lambda x: x <> r.school_code), ', ') as detail
            from run_rows r join shared sh using (k)
        )
        select * from final
        order by school_code, file_hash, sheet_name, excel_row, value, detail  -- the same order whatever the rows' storage order
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
    1 + the school's highest. A school that sends an earlier version's very bytes again
    (v1, v2, then v1's file back) has sent its newest version: that file becomes
    1 + the school's highest, so the register's current version is the one the load puts in
    core (keeping its old number left the newer one "current" and the audit stopped the run).
    `files` holds one file per school (the run's others are superseded)."""
    rows = con.execute("select school_code, file_hash, version from submission where school_year = ? and period = ?",
                       [school_year, period]).fetchall()
    known = {h: v for _, h, v in rows}
    top: dict[str, int] = {}
    for code, _, v in rows:
        top[code] = max(top.get(code, 0), v or 0)
    out = {}
    for h, code in files.items():
        if h in known and (known[h] or 0) >= top.get(code, 0):
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
              load_valid_rows: bool, contract: Contract | None = None, in_transaction: bool = False,
              unload: Mapping[str, str] | None = None, stamps: bool = False,
              restaged: Iterable[str] = ()) -> dict[str, int]:
    """In ONE transaction: upsert the register rows, replace the issues of this run's files,
    and replace each loadable school's core rows with its accepted version. With
    `in_transaction` the caller holds the transaction (and commits it with its staging).

    `submissions`: one row per file of the run (register columns). `load`: school → file hash
    to put in core. `unload`: school → file hash of this run's files that are not loaded: if
    core holds that very file, its rows leave core (a file accepted earlier that this run
    rejects — e.g. another school's new file now collides with it in a cross-school rule —
    is not kept in core under a "rejected" register row; an earlier *other* accepted file of
    the school stays, as it does when a new version is rejected). Returns rows loaded per
    school.

    `stamps`: the database is the very file a completed run of this code left audited
    (`pipeline.audited_unchanged`), so every core row since written went through write_run,
    which keeps `incremental_core_written` with it (`stamped_core_schools`); `restaged`: the
    files this load staged again (their stamps say nothing of their new staged rows). Without
    `stamps` every stamp is dropped and made again from what is proven now."""
    c = contract or load_contract()
    ensure_tables(con, c)
    if not in_transaction:
        with transaction(con):
            loaded = write_run(con, run_id=run_id, school_year=school_year, period=period, submissions=submissions,
                               issues=issues, load=load, load_valid_rows=load_valid_rows, contract=c,
                               in_transaction=True, unload=unload, stamps=stamps, restaged=restaged)
        con.execute("checkpoint")
        return loaded
    loaded: dict[str, int] = {}
    con.execute(CORE_WRITTEN_DDL)
    if not stamps:  # not proven kept by this code since: made again, below, from what is proven now
        drop_core_stamps(con)
    if unload:
        con.register("_unload", pd.DataFrame({"school_code": list(unload), "file_hash": list(unload.values())},
                                             dtype="object"))
        for sid in SHEETS:
            con.execute(f"""delete from core_{sid} where school_year = ? and period = ?
                            and (school_code, file_hash) in (select school_code, file_hash from _unload)""",
                        [school_year, period])
        con.execute("""delete from incremental_core_written where school_year = ? and period = ?
                       and (school_code, file_hash) in (select school_code, file_hash from _unload)""",
                    [school_year, period])
        con.unregister("_unload")
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
    # a file seen before keeps the time it was first received (and its feedback workbook);
    # an earlier version's bytes sent again (next_versions: a new version) was received now
    con.execute("""create or replace temp table _old as select file_hash, version as old_version, received_at, feedback_path from submission
                   where school_year = ? and period = ? and file_hash in (select file_hash from _hashes)""",
                [school_year, period])
    con.execute("delete from submission where school_year = ? and period = ? and file_hash in (select file_hash from _hashes)",
                [school_year, period])
    con.unregister("_hashes")
    con.register("_subs", submissions)
    con.execute("""insert into submission by name
                   select s.* replace (case when o.old_version is distinct from s.version then s.received_at
                                            else coalesce(o.received_at, s.received_at) end as received_at,
                                          coalesce(s.feedback_path, o.feedback_path) as feedback_path),
                          false as is_current, false as in_core
                   from _subs s left join _old o using (file_hash)""")
    con.unregister("_subs")
    con.execute("drop table _old")
    # every loadable school at once: one delete + one insert per sheet, not one per school;
    # under load_valid_rows the rows with an error (file, sheet, row) are left out
    if load:
        con.register("_load", pd.DataFrame({"school_code": list(load), "file_hash": list(load.values())}))
        # a school whose core rows already are exactly what this load would write is left in
        # place (issue 12: one school changed, the others' rows not rewritten): proven by its
        # stamp, else by content
        stamped = stamped_core_schools(con, school_year, period, restaged) if stamps and REUSE_UNCHANGED_CORE else set()
        fresh = {code: h for code, h in load.items() if code not in stamped}  # stamped now, below
        con.unregister("_load")
        con.register("_load", pd.DataFrame({"school_code": list(fresh), "file_hash": list(fresh.values())},
                                           dtype="object"))
        same = stamped | (unchanged_core_schools(con, school_year, period, load_valid_rows)
                          if REUSE_UNCHANGED_CORE and fresh else set())
        con.unregister("_load")
        con.register("_load", pd.DataFrame({"school_code": list(load), "file_hash": list(load.values())}))
        rewrite = {code: h for code, h in load.items() if code not in same}
        con.register("_rewrite", pd.DataFrame({"school_code": list(rewrite), "file_hash": list(rewrite.values())},
                                              dtype="object"))
        for sid in SHEETS:
            con.execute(f"""delete from core_{sid} where school_year = ? and period = ?
                            and school_code in (select school_code from _rewrite)""", [school_year, period])
            con.execute(f"insert into core_{sid} by name select s.*, b.version {_core_rows(sid, '_rewrite', load_valid_rows)}",
                        {"y": school_year, "p": period})
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
        con.unregister("_rewrite")
        con.unregister("_load")
        if fresh:  # what each school's core rows were written (or proven) from, in the same transaction
            con.register("_fresh", pd.DataFrame({"school_code": list(fresh), "file_hash": list(fresh.values())},
                                                dtype="object"))
            con.execute(f"""insert or replace into incremental_core_written
                            select $y, $p, school_code, file_hash, version, errors from ({_provenance("_fresh")})""",
                        {"y": school_year, "p": period})
            con.unregister("_fresh")
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
    return loaded


def _core_rows(sid: str, schools: str, load_valid_rows: bool) -> str:
    """FROM … WHERE of the rows the load puts in core_{sid} for the (school_code, file_hash) of
    the registered table `schools` ($y, $p: the collection): the file's staged rows (s) with the
    register's row (b: its version), less those with an error under load_valid_rows. One text for
    the insert and for `unchanged_core_schools`, which must compare exactly those rows."""
    keep = ""
    if load_valid_rows and sid != "school":
        keep = """and not exists (select 1 from validation_issue v where v.file_hash = s.file_hash
                   and v.severity = 'error' and v.sheet = s.sheet_name and v.excel_row = s.excel_row)"""
    return f"""from stg_{sid} s
        join {schools} l on l.file_hash = s.file_hash and l.school_code = s.school_code
        join submission b on b.school_year = s.school_year and b.period = s.period and b.file_hash = s.file_hash
        where s.school_year = $y and s.period = $p {keep}"""


REUSE_UNCHANGED_CORE = True  # off: every loadable school's core rows deleted and inserted again

# per school of a collection in core: the file, its register version and its error rows that
# write_run's insert took its core rows from (or proved them equal to), kept by write_run in
# the transaction that writes them; trusted only in a database a completed run of this code
# left audited (write_run's `stamps`), dropped and made again otherwise
CORE_WRITTEN_DDL = """create table if not exists incremental_core_written (
    school_year varchar, period varchar, school_code varchar, file_hash varchar, version integer,
    errors varchar, primary key (school_year, period, school_code))"""


def drop_core_stamps(con: duckdb.DuckDBPyConnection) -> None:
    """Every stamp of `incremental_core_written` dropped: a database this code did not leave
    audited may hold core rows another writer changed since (an older edustat, a hand edit);
    write_run stamps each school again once it has proven its rows by content."""
    con.execute(CORE_WRITTEN_DDL)
    con.execute("delete from incremental_core_written")


def _provenance(schools: str) -> str:
    """One row per (school_code, file_hash) of the registered table `schools` ($y, $p: the
    collection): the register's version of the file as written now and its error rows (file,
    sheet, Excel row: those `_core_rows` leaves out under load_valid_rows) as one md5 — what
    write_run's insert would take the school's core rows from."""
    return f"""
        with errors as (
            select file_hash, md5(string_agg(k, chr(30) order by k)) as errors from (
                select distinct file_hash, coalesce(sheet, '') || chr(31) || coalesce(cast(excel_row as varchar), '') as k
                from validation_issue
                where school_year = $y and period = $p and severity = 'error'
                  and file_hash in (select file_hash from {schools}))
            group by file_hash
        ),
        final as (
            select l.school_code, l.file_hash, b.version, coalesce(e.errors, '') as errors
            from {schools} l
            join submission b on b.school_year = $y and b.period = $p and b.file_hash = l.file_hash
            left join errors e on e.file_hash = l.file_hash
        )
        select * from final"""


def stamped_core_schools(con: duckdb.DuckDBPyConnection, school_year: str, period: str,
                         restaged: Iterable[str]) -> set[str]:
    """The schools of `_load` whose stamp (`incremental_core_written`) names the very file,
    version and error rows the insert would take their core rows from now, the file not staged
    again by this load: their core rows are those (issue 12: no digest of every school's rows).
    Only where write_run's `stamps` holds; the others are proven by content."""
    rows = con.execute(f"""
        with now as ({_provenance("_load")}),
        final as (
            select n.school_code from now n
            join incremental_core_written w on w.school_year = $y and w.period = $p
                 and w.school_code = n.school_code and w.file_hash = n.file_hash
                 and w.version is not distinct from n.version and w.errors = n.errors
            where not list_contains(cast($r as varchar[]), n.file_hash)
        )
        select * from final""", {"y": school_year, "p": period, "r": sorted(set(restaged))}).fetchall()
    return {code for (code,) in rows}


def unchanged_core_schools(con: duckdb.DuckDBPyConnection, school_year: str, period: str,
                           load_valid_rows: bool) -> set[str]:
    """The schools of `_load` (school_code, file_hash; registered by write_run) whose core rows
    already are, row for row, what write_run's insert would put there — proven by content, not
    by what the run believes changed: per school and core sheet, the count and the sum of
    DuckDB's `hash()` of every core column of the rows in core, against the same of the rows the
    insert would select (the staged rows of the file, its version from the register as just
    written, less the rows with an error when `load_valid_rows`: an issue another school's file
    added changes the digest). Only schools whose core rows are all of the very file to load
    are compared (core rows carry `file_hash`: another file's rows always differ). Call after
    the register and the issues of the run are written, inside the run's transaction."""
    same = {code for (code,) in con.execute("""
        select l.school_code from _load l
        where exists (select 1 from core_school c where c.school_year = ? and c.period = ?
                      and c.school_code = l.school_code and c.file_hash = l.file_hash)""",
        [school_year, period]).fetchall()}
    if not same:
        return set()
    columns: dict[str, list[str]] = {}  # one catalogue query, not two per sheet
    names = [f"{layer}_{sid}" for sid in SHEETS for layer in ("core", "stg")]
    for table, column in con.execute(
            f"""select table_name, column_name from duckdb_columns() where schema_name = 'main'
               and database_name = current_database() and table_name in ({", ".join("?" for _ in names)})
               order by table_name, column_index""", names).fetchall():
        columns.setdefault(table, []).append(column)
    for sid in SHEETS:
        cols = columns.get(f"core_{sid}", [])
        stg_cols = set(columns.get(f"stg_{sid}", []))
        if any(c != "version" and c not in stg_cols for c in cols):
            return set()  # core has a column staging lacks (filled NULL by the insert): not compared, rewritten
        now = "hash(" + ", ".join(f'c."{c}"' for c in cols) + ")"
        would = "hash(" + ", ".join('b."version"' if c == "version" else f's."{c}"' for c in cols) + ")"
        rows = con.execute(f"""
            with now as (
                select c.school_code, count(*) as n, sum({now})::hugeint as h from core_{sid} c
                join _load l on l.school_code = c.school_code
                where c.school_year = $y and c.period = $p group by 1),
            would as (
                select s.school_code, count(*) as n, sum({would})::hugeint as h
                {_core_rows(sid, "_load", load_valid_rows)} group by 1)
            select coalesce(now.school_code, would.school_code) from now full join would using (school_code)
            where now.n is distinct from would.n or now.h is distinct from would.h""",
            {"y": school_year, "p": period}).fetchall()
        same -= {code for (code,) in rows}
    return same


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


# ---------------------------------------------------------------------------------------
# Consistency: the register against core, checked at the start of every run
# ---------------------------------------------------------------------------------------

def inconsistencies(con: duckdb.DuckDBPyConnection, school_year: str | None = None, period: str | None = None) -> pd.DataFrame:
    """Every school × period whose register disagrees with core_* (all collections, or one).

    Grain: one row per (school_year, period, school_code, problem). For the file the register
    says is in core (`in_core`): its staged rows must number what the register counted when it
    was read (n_rooms … n_staff), core must hold exactly its staged rows less those with an
    error (load_valid_rows leaves those out; under reject_school an in-core file has none), one
    core_school row, no other file's rows, and `loaded_rows` must be their sum. A current
    version registered "accepted" must be the one in core, and core rows need a register row.
    `file_hash` names the file to re-stage. Read-only: works on a read-only connection."""
    present = {r[0] for r in con.execute("select table_name from information_schema.tables where table_schema = 'main'").fetchall()}
    if not {"submission", "validation_issue"} | {f"{layer}_{sid}" for layer in ("raw", "stg", "core") for sid in SHEETS} <= present:
        return pd.DataFrame(columns=["school_year", "period", "school_code", "file_hash", "problem", "detail"])
    where = "where school_year = $y and period = $p" if school_year else ""
    params = {"y": school_year, "p": period} if school_year else {}
    # one grouped count per table joined to the register, not one correlated count per register
    # row and sheet (issue 12: the load's audit of a province's 730 files; the same rows)
    cond = "and {a}.school_year = $y and {a}.period = $p" if school_year else ""
    parts = []
    for sid, n_col in (("rooms", "n_rooms"), ("classes", "n_classes"), ("learners", "n_learners"), ("staff", "n_staff")):
        parts.append(f"""
            select s.school_year, s.period, s.school_code, s.file_hash, '{sid}' as sheet, s.{n_col} as registered,
                   coalesce(g.staged, 0) as staged, coalesce(r.raw_staged, 0) as raw_staged,
                   coalesce(g.expected, 0) as expected, coalesce(c.in_core_rows, 0) as in_core_rows,
                   coalesce(c.foreign_rows, 0) as foreign_rows
            from submission s
            left join (
                select g.school_year, g.period, g.file_hash, count(*) as staged,
                       count(*) filter (where e.excel_row is null) as expected
                from stg_{sid} g
                left join errors e on e.school_year = g.school_year and e.period = g.period and e.file_hash = g.file_hash
                     and e.sheet = g.sheet_name and e.excel_row = g.excel_row
                where true {cond.format(a="g")}
                group by g.school_year, g.period, g.file_hash) g
              on g.school_year = s.school_year and g.period = s.period and g.file_hash = s.file_hash
            left join (
                select school_year, period, file_hash, count(*) as raw_staged from raw_{sid} g
                where true {cond.format(a="g")} group by school_year, period, file_hash) r
              on r.school_year = s.school_year and r.period = s.period and r.file_hash = s.file_hash
            left join (
                select b.school_year, b.period, b.file_hash, count(*) as in_core_rows,
                       count(*) filter (where c.file_hash <> b.file_hash) as foreign_rows
                from core_{sid} c
                join submission b on b.school_year = c.school_year and b.period = c.period and b.school_code = c.school_code
                where b.in_core {cond.format(a="b")}
                group by b.school_year, b.period, b.file_hash) c
              on c.school_year = s.school_year and c.period = s.period and c.file_hash = s.file_hash
            where s.in_core {cond.format(a="s")}""")
    per_sheet = " union all ".join(parts)
    sql = f"""
    with errors as (
        select distinct school_year, period, file_hash, sheet, excel_row from validation_issue v
        where severity = 'error' {cond.format(a="v")}),
    sheets as ({per_sheet}),
    reg as (select * from submission {where}),
    sheet_problems as (
        select school_year, period, school_code, file_hash,
               'staging incomplete: ' || sheet as problem,
               'registered ' || coalesce(registered, 0) || ', staged ' || staged || ' (raw ' || raw_staged || ')' as detail
        from sheets where coalesce(registered, 0) <> staged or coalesce(registered, 0) <> raw_staged
        union all
        select school_year, period, school_code, file_hash, 'core rows: ' || sheet,
               'expected ' || expected || ', in core ' || in_core_rows || ', of another file ' || foreign_rows
        from sheets where expected <> in_core_rows or foreign_rows > 0
    ),
    school_rows as (
        select s.school_year, s.period, s.school_code, s.file_hash, s.loaded_rows,
               coalesce(c.n, 0) as n_school, x.n_core
        from reg s
        left join (select school_year, period, school_code, file_hash, count(*) as n from core_school g
                   where true {cond.format(a="g")} group by school_year, period, school_code, file_hash) c
          on c.school_year = s.school_year and c.period = s.period and c.school_code = s.school_code
             and c.file_hash = s.file_hash
        left join (select school_year, period, file_hash, sum(in_core_rows) as n_core from sheets
                   group by school_year, period, file_hash) x
          on x.school_year = s.school_year and x.period = s.period and x.file_hash = s.file_hash
        where s.in_core
    ),
    school_problems as (
        select school_year, period, school_code, file_hash, 'core_school row', 'rows: ' || n_school
        from school_rows where n_school <> 1
        union all
        select school_year, period, school_code, file_hash, 'loaded_rows',
               'register ' || coalesce(loaded_rows, 0) || ', core ' || coalesce(n_core, 0)
        from school_rows where coalesce(loaded_rows, 0) <> coalesce(n_core, 0)
    ),
    accepted_not_in_core as (
        select school_year, period, school_code, file_hash, 'accepted but not in core', 'status ' || status
        from reg where is_current and status in ('accepted', 'accepted_with_warnings') and not coalesce(in_core, false)
    ),
    orphans as (
        select distinct c.school_year, c.period, c.school_code, c.file_hash,
               'core rows without a register row', 'file not registered as in core' as detail
        from core_school c
        where not exists (select 1 from submission s where s.school_year = c.school_year and s.period = c.period
                          and s.file_hash = c.file_hash and s.in_core)
          {"and c.school_year = $y and c.period = $p" if school_year else ""}
    ),
    final as (
        select * from sheet_problems where (school_year, period) in (select school_year, period from reg)
        union all select * from school_problems
        union all select * from accepted_not_in_core
        union all select * from orphans
    )
    select * from final order by school_year, period, school_code, problem
    """
    df = con.execute(sql, params).df()
    df.columns = ["school_year", "period", "school_code", "file_hash", "problem", "detail"]
    return df
