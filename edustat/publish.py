"""Publish the curated DuckDB as a pseudonymised snapshot that analysts can open at any time.

The curated file `data/curated/edustat.duckdb` has one writer (the officer's pipeline) and,
while it is open read-write, DuckDB refuses every other process — even `read_only=True`
(stack-findings §7). So analysts never open it: they open `<published>/edustat.duckdb` and the
Parquet tree `<published>/parquet/`, which this module rebuilds from the writer's connection.

Grain: one snapshot table per curated table, same rows; the Parquet tree holds the same rows.

Why the snapshot is always safe to read:
- it is built in a new file beside the destination and swapped in with `os.replace`, so a new
  open sees either the old or the new file, never a half-written one;
- a process that still has the old snapshot open keeps reading the old inode (POSIX unlink
  semantics) until it closes it. Note DuckDB caches database instances per path inside a
  process: a long-lived analyst process sees the new snapshot only after closing *every*
  connection it has to the file and connecting again;
- the Parquet tree is written to a temp dir and renamed in (old tree renamed aside first and
  then deleted); between the two renames `parquet/` is briefly absent (microseconds).

When few rows changed since the last publish to the same dir, the new file is a patched copy
of the previous one and untouched Parquet files are hard-linked (`edustat.publish_delta`; same
result as a full rebuild, same swap). Fault points of a delta, for tests: `publish:copied`
(previous snapshot copied into the temp file), `publish:written`, `publish:swapped` (both
swapped in, state not yet recorded) — not in `faults.POINTS`: a cold run never passes the first.

Pseudonymisation works by column name, so it covers any table (see `_column_sql`). Parquet
partition directories are `year=<school_year>/period=<period>/`; the files keep `school_year`
but, as with any Hive layout, `period` lives only in the path — read with hive partitioning
(DuckDB `read_parquet(..., hive_partitioning=true)`, the default for `**` globs, or
`pyarrow.parquet.read_table(dir)`). A partition is `part-0.parquet`, or, above CHUNK_ROWS rows,
`part-<i>-of-<n>.parquet` chunks of whole school_code / scope groups (`chunk_of`), so a delta
publish after one school changed rewrites that school's chunk (and the city scope's), not the
province's whole partition; file names are built from two integers only.

Logs carry table names, row counts and timings only.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from edustat import faults

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "edustat.duckdb"
PARQUET_DIR = "parquet"
INFO_TABLE = "publish_info"
PUBLISHED_PREFIXES = ("core_", "dim_", "fct_", "rpt_")
PUBLISHED_EXTRA = ("submission", "validation_issue")
NEVER_PUBLISHED_PREFIXES = ("raw_", "stg_")
# Identifiers replaced by a salted hash: stable across runs (same salt), so analysts can still
# join a learner across periods, but not trace them back without the salt.
HASHED_COLUMNS = ("personal_id", "student_code", "staff_code")
DROPPED_COLUMNS = ("full_name", "principal_name")  # a person's name, in whatever table
BIRTH_DATE, BIRTH_YEAR = "birth_date", "birth_year"
HASH_HEX_CHARS = 16
PARTITION_COLUMNS = ("school_year", "period")
# A partition of more rows than CHUNK_ROWS is written as 2, 4, … MAX_CHUNKS files (`chunk_count`),
# each holding whole groups of rows: every row of one school_code (or form scope) in the file
# `chunk_of` names. When one school changed, a delta publish rewrites its chunk only (and the
# city scope's) and hard-links the others (issue 12: a province's partition was ~1.3 M rows).
CHUNK_ROWS = 25_000
MAX_CHUNKS = 16
CHUNK_GROUP_COLUMNS = ("school_code", "scope")  # the first VARCHAR one a table has (publish_delta.GROUP_COLUMNS)
# validation_issue text rendered with raw values (see _scrubbed_text)
MESSAGE_COLUMNS = ("message", "fix")
REDACTED = "…"
SCRUB_PATTERNS = (
    r"\d{9,}",  # personal IDs (12 digits, 11 or 10 after Excel ate the zeros), student/staff codes
    r"\b\d{1,2}\s*[/.-]\s*\d{1,2}\s*[/.-]\s*\d{2,4}\b",  # 05/09/2015, 5-9-15
    r"\b\d{4}\s*[/.-]\s*\d{1,2}\s*[/.-]\s*\d{1,2}\b",  # 2015-09-05 (ISO, as a cast date prints)
)
NAME_LIKE = r"\pL+\s+\pL+"  # two words of letters: a person's name in whatever column it landed
README_NAME = "README.md"


@dataclass(frozen=True)
class PublishResult:
    snapshot: Path
    parquet_dir: Path
    tables: dict[str, int]  # table -> rows published
    seconds: float
    mode: str = "full"  # "full" or "delta" (edustat.publish_delta)
    reason: str = ""  # why a full publish was not a delta


def load_or_create_salt(path: Path) -> str:
    """The pseudonymisation salt: read from `path`, or created there once (32 random bytes as
    hex, file mode 0600). Reusing it keeps pseudonyms stable across runs and periods."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # atomic and fails if another process created it first
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    salt = path.read_text(encoding="ascii").strip()
    if not salt:
        raise ValueError(f"salt file {path} is empty")
    if path.stat().st_mode & 0o077:
        log.warning("salt file %s is readable by group/others; expected mode 0600", path)
    return salt


def salt_for(cfg) -> str:
    """The salt of a config (`cfg.salt_path`: outside the data tree), created 0600 on first
    use. A salt left in curated/ by an older release is moved out first, so pseudonyms stay
    stable across the upgrade and no copy of curated/ carries the key any more."""
    path, legacy = Path(cfg.salt_path), Path(cfg.legacy_salt_path)
    if not path.exists() and legacy.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(legacy.read_text(encoding="ascii"))
            fh.flush()
            os.fsync(fh.fileno())
        log.warning("pseudonymisation salt moved out of the data tree: %s -> %s", legacy, path)
    if legacy.exists() and path.exists():
        legacy.unlink()
    return load_or_create_salt(path)


README_TEXT = """# Bản sao dữ liệu cho phân tích (edustat) — analyst snapshot

`edustat.duckdb` and `parquet/` hold the curated tables with personal data removed:

- `full_name` dropped; `birth_date` reduced to `birth_year`;
- `personal_id`, `student_code`, `staff_code` replaced by the first 16 hex characters of
  sha256(salt ‖ value): the same person has the same pseudonym in every run and period
  published with the same salt, so joins across periods work;
- `validation_issue.value` is NULL for personal fields and for any value that looks personal
  (two words — a name typed into the wrong column —, 9+ digits, a full date); `message` / `fix`
  are published with such a value removed ("…") and every run of 9+ digits and every full
  date masked;
- `publish_info` says when it was built and the salt's fingerprint (sha256 of the salt, first
  8 hex): two snapshots with different fingerprints do not join on pseudonyms.

`parquet/<table>/year=<năm học>/period=<kỳ>/` holds `part-0.parquet`, or, for a large partition,
`part-<i>-of-<n>.parquet` files that together hold its rows (each every row of some schools or
form scopes). Read a table's directory or `parquet/<table>/**/*.parquet` with hive partitioning,
never one file by name.

## The salt

The salt is a secret file OUTSIDE the data folder, mode 0600: the config key `salt_file`, else
the environment variable `EDUSTAT_SALT_FILE`, else `.<data dir name>.pseudonym_salt` beside the
data folder. Anyone holding it can recompute a pseudonym from a known ID (IDs are short and
structured), so never copy it with the data, never put it in curated/ or published/.

## Rotating the salt

Rotate when the salt may have leaked, or when old pseudonyms must stop being linkable:

1. Stop scheduled runs (`edustat serve` / the Prefect deployment).
2. Move the old salt file away (keep it offline only if old snapshots must still be matched).
3. Run `edustat report --year <năm học> --period <kỳ>` (or the next `edustat run`): a new salt
   is created (0600) and the snapshot is rebuilt from the officer's database with it.
4. Check `select salt_fingerprint from publish_info` changed; tell analysts that pseudonyms
   changed (old extracts no longer join with the new snapshot).
"""


def _write_readme(published_dir: Path) -> None:
    tmp = published_dir / f".{README_NAME}.tmp-{uuid.uuid4().hex}"
    tmp.write_text(README_TEXT, encoding="utf-8")
    os.replace(tmp, published_dir / README_NAME)


def salt_fingerprint(salt: str) -> str:
    """First 8 hex of sha256(salt): tells two snapshots' salts apart without revealing it."""
    return hashlib.sha256(salt.encode("utf-8")).hexdigest()[:8]


def pii_field_ids() -> frozenset[str]:
    """Ids of every field flagged `pii: true` in the contract, across sheets."""
    from schemas import load_contract

    return frozenset(f.id for s in load_contract().sheets for f in s.fields if f.pii)


def publish(
    con: duckdb.DuckDBPyConnection,
    published_dir: Path,
    *,
    salt: str,
    pseudonymise: bool = True,
    tables: Sequence[str] | None = None,
    delta: bool = True,
) -> PublishResult:
    """Write `published_dir/edustat.duckdb` and `published_dir/parquet/` from the curated DB.

    `con` is the pipeline's read-write connection (the only writer). Publishes the `core_`,
    `dim_`, `fct_`, `rpt_` tables plus `submission` and `validation_issue` (or `tables`),
    never `raw_`/`stg_`. Both outputs are swapped in atomically; on error the previous
    publication is left untouched.

    With `delta` (the default) and a previous snapshot this function published from the same
    code, salt and tables, only the groups of rows that changed are replaced in a copy of it
    (`edustat.publish_delta`); the result is the snapshot a full publish gives.
    """
    from edustat import publish_delta

    t0 = time.perf_counter()
    if pseudonymise and not salt:
        raise ValueError("pseudonymisation needs a non-empty salt")
    published_dir = Path(published_dir)
    published_dir.mkdir(parents=True, exist_ok=True)
    names = _select_tables(con, tables)
    catalogue = _catalogue(con, "main")  # one catalogue query for every table (issue 12: fixed costs)
    pii = pii_field_ids()
    hidden_fields = pii | set(HASHED_COLUMNS)
    selects: dict[str, str] = {}
    pii_kept: set[str] = set()
    for name in names:
        select, kept = _select_list(catalogue[name], name, pii, hidden_fields, pseudonymise)
        selects[name] = select
        pii_kept |= kept
    source = publish_delta.source_state(con, names, selects, salt=salt, pseudonymise=pseudonymise,
                                        columns={t: catalogue[t] for t in names})
    plan, reason = publish_delta.plan(con, published_dir, source, names) if delta else (None, "delta not asked")
    try:
        return _publish(con, published_dir, names, selects, pii_kept, source, plan, reason, salt, pseudonymise, t0)
    except (publish_delta._Stale, duckdb.Error) as exc:
        if plan is None:
            raise
        # the previous snapshot could not be used (replaced meanwhile, unreadable): rebuild
        why = str(exc) if isinstance(exc, publish_delta._Stale) else f"delta failed ({type(exc).__name__})"
        log.warning("full publish: %s", why)
        return _publish(con, published_dir, names, selects, pii_kept, source, None, why, salt, pseudonymise, t0)


def _publish(con, published_dir: Path, names: list[str], selects: dict[str, str], pii_kept: set[str], source,
             plan, reason: str, salt: str, pseudonymise: bool, t0: float) -> PublishResult:
    """One publish, full (`plan` None) or delta."""
    from edustat import publish_delta

    token = uuid.uuid4().hex
    tmp_db = published_dir / f".{SNAPSHOT_NAME}.tmp-{token}"
    tmp_parquet = published_dir / f".{PARQUET_DIR}.tmp-{token}"
    alias = f"pub_{token[:12]}"
    counts: dict[str, int] = {}
    attached = False
    try:
        if plan is not None:
            publish_delta.copy_snapshot(published_dir, tmp_db, plan.snapshot_ident)
            faults.point("publish:copied")
        con.execute(f"ATTACH {_lit(tmp_db)} AS {_ident(alias)}")
        attached = True
        if plan is None:
            def create(cur, name: str) -> None:
                select = selects[name]
                cur.execute(
                    f"CREATE TABLE {_ident(alias)}.{_ident(name)} AS "
                    f"SELECT {select} FROM main.{_ident(name)}",
                    {"salt": salt} if "$salt" in select else None,
                )
                counts[name] = _scalar(cur, f"SELECT count(*) FROM {_ident(alias)}.{_ident(name)}")
            _side_by_side(con, create, names)
            counts = {name: counts[name] for name in names}
            _write_info(con, alias, pseudonymise, salt, names, pii_kept)
        else:
            counts = publish_delta.apply(con, alias, plan, source, selects, salt)
            con.execute(f"DELETE FROM {_ident(alias)}.{INFO_TABLE}")
            _insert_info(con, alias, pseudonymise, salt, names, pii_kept)
        # Parquet from the snapshot, not from main: one pseudonymisation, identical rows.
        tmp_parquet.mkdir()
        published = _catalogue(con, alias)
        keepers = {name: (publish_delta.parquet_keeper(plan, published_dir / PARQUET_DIR, tmp_parquet, name)
                          if plan is not None else None) for name in names}
        from edustat.dictionary import annotate, dictionary_text, write_dictionary  # labels, comments, views, dictionary

        def in_snapshot(work: Callable) -> object:
            cur = con.cursor()  # the attached file as the current database: its names unqualified
            try:
                cur.execute(f"USE {_ident(alias)}")
                return work(cur)
            finally:
                cur.close()

        def parquet_or_labels(cur, name: str) -> None:
            if name is _LABELS:  # catalogue only (dims, comments, views): nothing the Parquet files read
                in_snapshot(annotate)
            else:
                _write_parquet(cur, alias, name, tmp_parquet / name, keepers[name], dict(published[name]))

        with _statistics_propagation_off(con):
            # a delta's copy has the labels already (same code: version key)
            _side_by_side(con, parquet_or_labels, ([_LABELS] if plan is None else []) + names)
        dictionary = None
        if plan is None or not publish_delta.dictionary_kept(plan, published_dir):
            dictionary = in_snapshot(dictionary_text)  # a delta's is the one in place (same catalogue)
        if plan is None:
            con.execute(f"CHECKPOINT {_ident(alias)}")
        else:
            publish_delta.checkpoint_copy(con, alias)
        con.execute(f"DETACH {_ident(alias)}")
        attached = False
        _fsync(tmp_db)
        faults.point("publish:written")

        snapshot = published_dir / SNAPSHOT_NAME
        # A WAL left beside the destination (someone opened the snapshot read-write) would be
        # replayed onto the new file at the next open; the snapshot is rebuilt anyway.
        Path(f"{snapshot}.wal").unlink(missing_ok=True)
        if dictionary is not None:
            write_dictionary(None, published_dir, dictionary)
        os.replace(tmp_db, snapshot)
        parquet_dir = published_dir / PARQUET_DIR
        _swap_dir(tmp_parquet, parquet_dir, published_dir / f".{PARQUET_DIR}.old-{token}")
        _write_readme(published_dir)
        _fsync_dir(published_dir)
    except BaseException:
        if attached:
            try:
                con.execute(f"DETACH {_ident(alias)}")
            except duckdb.Error:
                pass
        tmp_db.unlink(missing_ok=True)
        Path(f"{tmp_db}.wal").unlink(missing_ok=True)
        shutil.rmtree(tmp_parquet, ignore_errors=True)
        raise
    faults.point("publish:swapped")
    publish_delta.record(con, source, snapshot, parquet_dir, 0 if plan is None else plan.deltas + 1)

    seconds = time.perf_counter() - t0
    mode = "full" if plan is None else "delta"
    if plan is not None:
        log.info("delta publish: %d of %d rows in changed groups, tables %s", plan.changed_rows, plan.total_rows,
                 ", ".join(f"{t}={len(g)}" for t, g in plan.changed.items() if g) or "none")
    elif reason:
        log.info("full publish: %s", reason)
    log.info(
        "published %d tables, %d rows in %.2f s (%s, pseudonymised=%s): %s",
        len(counts), sum(counts.values()), seconds, mode, pseudonymise,
        ", ".join(f"{t}={n}" for t, n in counts.items()),
    )
    return PublishResult(snapshot, parquet_dir, counts, seconds, mode, "" if plan is not None else reason)


PUBLISH_THREADS = 2  # statements run side by side on cursors of the writer's connection
_LABELS = object()  # the snapshot's labelling (edustat.dictionary.annotate), beside the Parquet files


def _side_by_side(con: duckdb.DuckDBPyConnection, work: Callable, names: list[str]) -> None:
    """`work(cursor, name)` for every table, on PUBLISH_THREADS cursors of `con` at once, the
    largest tables first (the labelling, `_LABELS`, before them: the longest). Why (issue 12): a
    city's tables are each about one DuckDB row group or less, so each statement (CREATE TABLE
    AS, COPY) runs on one thread; two at a time use the second core. Each statement writes its
    own table or its own files of the temp snapshot and tree; the labelling writes only the
    catalogue (dim_ tables, comments, views) of the temp snapshot, which the Parquet files do not
    read (each COPY reads its table's rows as of its start; comments change no row); each
    cursor commits its own statements, and the temp files are swapped in only after every one
    has finished: the same files as one at a time. The first error is raised once every
    statement has stopped."""
    from concurrent.futures import ThreadPoolExecutor

    if len(names) < 2 or PUBLISH_THREADS < 2:
        for name in names:
            work(con, name)
        return
    sizes = dict(con.execute("SELECT table_name, estimated_size FROM duckdb_tables() "
                             "WHERE database_name = current_database() AND schema_name = 'main'").fetchall())
    todo = sorted(names, key=lambda n: -(sizes.get(n) or 0) if n is not _LABELS else -float("inf"))
    cursors = [con.cursor() for _ in range(PUBLISH_THREADS)]
    lock = threading.Lock()

    def run(cur) -> None:
        while True:
            with lock:
                if not todo:
                    return
                name = todo.pop(0)
            try:
                work(cur, name)
            except BaseException:
                with lock:
                    todo.clear()  # the other cursor stops after its statement
                raise

    try:
        with ThreadPoolExecutor(PUBLISH_THREADS) as pool:
            futures = [pool.submit(run, cur) for cur in cursors]
        for f in futures:
            if f.exception() is not None:
                raise f.exception()
    finally:
        for cur in cursors:
            cur.close()


def _select_tables(con: duckdb.DuckDBPyConnection, requested: Sequence[str] | None) -> list[str]:
    existing = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = 'main' "
            "ORDER BY table_name"
        ).fetchall()
    ]
    if requested is None:
        return [t for t in existing if t.startswith(PUBLISHED_PREFIXES) or t in PUBLISHED_EXTRA]
    bad = [t for t in requested if t.startswith(NEVER_PUBLISHED_PREFIXES)]
    if bad:
        raise ValueError(f"raw_/stg_ tables are never published: {bad}")
    missing = [t for t in requested if t not in existing]
    if missing:
        raise ValueError(f"no such tables in the curated database: {missing}")
    if INFO_TABLE in requested:
        raise ValueError(f"{INFO_TABLE} is written by publish itself")
    return list(dict.fromkeys(requested))


def _catalogue(con: duckdb.DuckDBPyConnection, catalog: str) -> dict[str, list[tuple[str, str]]]:
    """Every table of `catalog`'s main schema -> its (column, type) in order: one query (the
    same rows `_columns` gives table by table)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for t, c, ty in con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = " + ("current_database()" if catalog == "main" else "?")
        + " AND table_schema = 'main' ORDER BY table_name, ordinal_position",
        None if catalog == "main" else [catalog],
    ).fetchall():
        out.setdefault(t, []).append((c, ty))
    return out


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = 'main' AND table_name = ? "
        "ORDER BY ordinal_position",
        [table],
    ).fetchall()


def _select_list(
    cols: list[tuple[str, str]],
    table: str,
    pii: frozenset[str],
    hidden_fields: set[str],
    pseudonymise: bool,
) -> tuple[str, set[str]]:
    """The SELECT list publishing `table`, and the pii columns it keeps in clear."""
    names = {c for c, _ in cols}
    parts, kept = [], set()
    for col, dtype in cols:
        expr = _column_sql(col, dtype, table, names, hidden_fields) if pseudonymise else _ident(col)
        if expr is None:
            continue
        if col in pii and (not pseudonymise or col not in (*HASHED_COLUMNS, *DROPPED_COLUMNS, BIRTH_DATE)):
            kept.add(col)
        parts.append(expr)
    if not parts:
        raise ValueError(f"{table}: nothing left to publish after pseudonymisation")
    return ", ".join(parts), kept


def _column_sql(col: str, dtype: str, table: str, names: set[str], hidden_fields: set[str]) -> str | None:
    """One column's pseudonymised expression, or None to drop it.

    - personal_id / student_code / staff_code → first 16 hex of sha256(salt || value);
      NULL and '' stay NULL (a hash of '' would join every blank together);
    - full_name → dropped; birth_date → birth_year INTEGER;
    - validation_issue.value → NULL when the issue's field is pii or a hashed identifier
      (the raw value would undo the pseudonym); other pii columns are kept (needed for
      statistics) and listed in publish_info.pii_kept.
    """
    q = _ident(col)
    if col in HASHED_COLUMNS:
        return f"left(sha256($salt || NULLIF(CAST({q} AS VARCHAR), '')), {HASH_HEX_CHARS}) AS {q}"
    if col in DROPPED_COLUMNS:
        return None
    if col == BIRTH_DATE:
        if BIRTH_YEAR in names:
            return None
        src = q if dtype.startswith(("DATE", "TIMESTAMP")) else f"TRY_CAST({q} AS DATE)"
        return f"CAST(year({src}) AS INTEGER) AS {_ident(BIRTH_YEAR)}"
    if table == "validation_issue" and col == "value" and "field" in names:
        return f"CASE WHEN {_value_is_personal(names, hidden_fields)} THEN NULL ELSE {q} END AS {q}"
    if table == "validation_issue" and col in MESSAGE_COLUMNS and dtype == "VARCHAR":
        return f"{_scrubbed_text(q, names, hidden_fields)} AS {q}"
    return q


def _value_is_personal(names: set[str], hidden_fields: set[str]) -> str:
    """SQL: the issue's value may identify a person — its field is personal, or it looks like
    a name (two words: a name typed into the wrong column), an ID or a full date."""
    hidden = ", ".join(_lit(f) for f in sorted(hidden_fields))
    v = _ident("value")
    looks = " OR ".join(f"regexp_matches({v}, {_lit(p)})" for p in (NAME_LIKE, *SCRUB_PATTERNS))
    return f"(coalesce({_ident('field')} IN ({hidden}), false) OR coalesce({looks}, false))"


def _scrubbed_text(q: str, names: set[str], hidden_fields: set[str]) -> str:
    """A message as published: rendered with the value removed when the issue's field is
    personal (the value is replaced by "…" wherever the template put it), then — a belt for
    what a template quotes in its detail — every run of 9+ digits (an ID with or without its
    leading zeros; school codes have 8) and every full date (d/m/yyyy, d-m-yyyy, yyyy-mm-dd)."""
    expr = q
    if {"field", "value"} <= names:
        expr = (f"CASE WHEN NULLIF({_ident('value')}, '') IS NOT NULL AND {_value_is_personal(names, hidden_fields)} "
                f"THEN replace({q}, {_ident('value')}, '{REDACTED}') ELSE {q} END")
    for pattern in SCRUB_PATTERNS:
        expr = f"regexp_replace({expr}, {_lit(pattern)}, '{REDACTED}', 'g')"
    return expr


def _write_info(
    con: duckdb.DuckDBPyConnection, alias: str, pseudonymise: bool, salt: str,
    names: list[str], pii_kept: set[str],
) -> None:
    con.execute(
        f"CREATE TABLE {_ident(alias)}.{INFO_TABLE} (published_at TIMESTAMP, pseudonymised BOOLEAN, "
        "salt_fingerprint VARCHAR, tables VARCHAR[], pii_kept VARCHAR[])"
    )
    _insert_info(con, alias, pseudonymise, salt, names, pii_kept)


def _insert_info(
    con: duckdb.DuckDBPyConnection, alias: str, pseudonymise: bool, salt: str,
    names: list[str], pii_kept: set[str],
) -> None:
    con.execute(
        f"INSERT INTO {_ident(alias)}.{INFO_TABLE} VALUES (?, ?, ?, ?, ?)",
        [
            datetime.now(timezone.utc).replace(tzinfo=None),  # UTC
            pseudonymise,
            salt_fingerprint(salt),
            list(names),
            sorted(pii_kept),
        ],
    )


def chunk_count(rows: int) -> int:
    """Files a partition of `rows` rows is written as: 1 up to CHUNK_ROWS, else the power of 2
    that keeps each near CHUNK_ROWS, at most MAX_CHUNKS."""
    n = 1
    while n < MAX_CHUNKS and rows > n * CHUNK_ROWS:
        n *= 2
    return n


def chunk_of(key: str | None, n: int) -> int:
    """The chunk (0 … n-1) holding the rows of group `key` (a school code, a form scope; NULL
    and '' together): the first 32 bits of md5 of its UTF-8, modulo n. Computed here only
    (the SQL gets the keys of each chunk as a list), so writer and delta agree by construction."""
    return int(hashlib.md5((key or "").encode("utf-8")).hexdigest()[:8], 16) % n


def chunk_name(i: int, n: int) -> str:
    """`part-0.parquet` for an unsplit partition (as always), `part-<i>-of-<n>.parquet` for a
    chunk. Built from two integers only: no value from the data names a file."""
    if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n <= MAX_CHUNKS):
        raise ValueError(f"bad chunk {i!r} of {n!r}")
    return "part-0.parquet" if n == 1 else f"part-{i}-of-{n}.parquet"


def parse_chunk_name(name: str) -> tuple[int, int] | None:
    """(i, n) of a file named by `chunk_name`, else None."""
    if name == "part-0.parquet":
        return 0, 1
    m = re.fullmatch(r"part-(\d{1,2})-of-(\d{1,2})\.parquet", name)
    if not m:
        return None
    i, n = int(m.group(1)), int(m.group(2))
    return (i, n) if 0 <= i < n <= MAX_CHUNKS else None


@contextmanager
def _statistics_propagation_off(con: duckdb.DuckDBPyConnection):
    """`_write_parquet`'s setting (see there) for a whole tree: a GLOBAL setting of the
    database instance, so set once around the cursors writing side by side, not by each."""
    before = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0] or ""
    off = ",".join(dict.fromkeys([o for o in before.split(",") if o.strip()] + ["statistics_propagation"]))
    con.execute(f"SET disabled_optimizers = {_lit(off)}")
    try:
        yield
    finally:
        con.execute(f"SET disabled_optimizers = {_lit(before)}")


def _write_parquet(con: duckdb.DuckDBPyConnection, alias: str, table: str, out: Path,
                   keep: Callable[[Path], bool] | None = None, types: dict[str, str] | None = None) -> None:
    """`out/year=<school_year>/period=<period>/part-0.parquet`, or `out/part-0.parquet`; a
    partition of more than CHUNK_ROWS rows of a table with a school_code / scope column is
    split into `part-<i>-of-<n>.parquet` (`chunk_count`, `chunk_of`): read the directory or a
    `**/*.parquet` glob, never one file by name.

    `keep(path)`, when given, is asked before each file is written: True means the caller has
    already put that file in place (a delta publish hard-links the unchanged ones). `types`:
    the published table's column -> type, when the caller has read them (`_catalogue`)."""
    from edustat.paths import inside

    src = f"{_ident(alias)}.{_ident(table)}"
    types = types if types is not None else dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = ? AND table_schema = 'main' AND table_name = ?",
            [alias, table],
        ).fetchall()
    )
    cols = set(types)
    out.mkdir()  # stays (empty) when the table has no rows
    if not set(PARTITION_COLUMNS) <= cols:
        if keep is None or not keep(out / "part-0.parquet"):
            con.execute(f"COPY (SELECT * FROM {src}) TO {_lit(out / 'part-0.parquet')} (FORMAT parquet)")
        return
    group = next((c for c in CHUNK_GROUP_COLUMNS if types.get(c) == "VARCHAR"), None)
    per_group = con.execute(
        f"SELECT school_year, period, {_ident(group) if group else 'NULL'}, count(*) FROM {src} GROUP BY ALL"
    ).fetchall()
    groups: dict[tuple, list[tuple[str | None, int]]] = {}
    for y, p, k, n in per_group:
        groups.setdefault((y, p), []).append((k, n))
    parts = sorted(groups, key=lambda yp: tuple("" if v is None else v for v in yp))
    if all(_plain_partition_value(y) and _plain_partition_value(p) for y, p in parts):
        # One plain COPY per partition: the same files as DuckDB's PARTITION_BY writes
        # (`school_year` kept, `period` only in the path), measured 2.5-4x cheaper here.
        # With statistics propagation on, a plain COPY marks a column without NULLs
        # `required`; PARTITION_BY never did: switched off so the schema stays as it was.
        before = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0] or ""
        off = ",".join(dict.fromkeys([o for o in before.split(",") if o.strip()] + ["statistics_propagation"]))
        con.execute(f"SET disabled_optimizers = {_lit(off)}")
        try:
            for year, period in parts:
                where = out / f"year={year}" / f"period={period}"
                n = chunk_count(sum(rows for _, rows in groups[(year, period)])) if group else 1
                chunks: dict[int, list] = {}
                for k, _ in groups[(year, period)]:
                    chunks.setdefault(chunk_of(k, n), []).append(k)
                for i in sorted(chunks):
                    target = where / chunk_name(i, n)  # plain partition values (checked above), two integers
                    inside(out, target.parent)  # proven inside the table's dir: no link followed out of it
                    if keep is not None and keep(target):
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if n == 1:
                        con.execute(
                            f"COPY (SELECT * EXCLUDE (period) FROM {src} WHERE school_year = ? AND period = ?) "
                            f"TO {_lit(target)} (FORMAT parquet)",
                            [year, period],
                        )
                        continue
                    _copy_chunk(con, src, group, year, period, chunks[i], target)
        finally:
            con.execute(f"SET disabled_optimizers = {_lit(before)}")
        return
    # values that are not plain path words (NULL, '/', '..', spaces): DuckDB names the Hive
    # dirs itself, as it always did.
    # DuckDB names Hive dirs after the columns and drops them from the files; partitioning
    # on an alias gives the `year=` dirs and keeps `school_year` in the files.
    con.execute(
        f"COPY (SELECT school_year AS year, * FROM {src}) TO {_lit(out)} "
        "(FORMAT parquet, PARTITION_BY (year, period), FILENAME_PATTERN 'part-{i}', "
        "OVERWRITE_OR_IGNORE true)"
    )


def _copy_chunk(con: duckdb.DuckDBPyConnection, src: str, group: str, year: str, period: str,
                keys: list, target: Path) -> None:
    """The rows of one partition whose `group` value is one of `keys` (None: NULL) to `target`."""
    import pyarrow as pa

    g = _ident(group)
    plain = [k for k in keys if k is not None]
    null = f" OR {g} IS NULL" if len(plain) < len(keys) else ""
    con.register("_publish_chunk", pa.table({"k": pa.array(plain, pa.string())}))
    try:
        con.execute(
            f"COPY (SELECT * EXCLUDE (period) FROM {src} WHERE school_year = ? AND period = ? "
            f"AND ({g} IN (SELECT k FROM _publish_chunk){null})) TO {_lit(target)} (FORMAT parquet)",
            [year, period],
        )
    finally:
        con.unregister("_publish_chunk")


def _plain_partition_value(value: object) -> bool:
    """A partition value DuckDB's Hive writer would put in a path unchanged and that names no
    other place: letters, digits, '_', '-', '.', not starting with '.'."""
    return isinstance(value, str) and bool(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", value))


def _swap_dir(new: Path, dest: Path, aside: Path) -> None:
    if dest.exists():
        os.rename(dest, aside)
    os.rename(new, dest)
    shutil.rmtree(aside, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # not supported everywhere; durability only, not correctness
        pass


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return con.execute(sql).fetchone()[0]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"
