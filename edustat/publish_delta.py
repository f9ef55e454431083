"""Delta publishing: when few schools changed, the analysts' snapshot is patched, not rebuilt.

A full publish (`edustat.publish.publish`) creates every snapshot table anew, labels it
(`edustat.dictionary.annotate_snapshot`) and writes the whole Parquet tree. When one school of
730 changed, most of that work recreates what the previous snapshot already holds. A delta
publish instead

1. copies the previous snapshot file into the temp file (a plain file copy of a finished,
   checkpointed DuckDB file, opened without following symlinks);
2. deletes, in that copy, the rows of every *group* whose source rows changed and inserts them
   again through the very SELECT list a full publish uses (same pseudonymisation), and
   rewrites `publish_info`;
3. hard-links the Parquet files of untouched partitions from the previous tree and writes the
   others;
4. swaps both in exactly as a full publish does (`os.replace`, directory rename): a kill -9 at
   any point leaves the old snapshot or the new one.

A *group* is the rows of one table sharing their key: (`school_year`, `period`,
`school_code`) — or `scope` for the form tables — as far as the table has those VARCHAR
columns (a table without any is one group). Which groups changed is decided by content, not by
what the run believes it did: per group, `count(*)` and the sum of DuckDB's `hash()` of every
column of the *source* rows (the officer's tables, before pseudonymisation), compared with the
digests recorded when the snapshot in place was published. The digests, the snapshot file's
identity and the Parquet files' identities live in the officer's database
(`publish_delta_*` tables, never published); they are recorded after the swap, so a publish
killed before it has recorded leaves state that no longer matches the file and the next
publish rebuilds in full.

The delta is only taken when it must give the snapshot a full publish would (tables, rows,
types, comments and views; rows may be stored in another order). Otherwise it falls back to a
full publish, saying why:

- no recorded state, or the snapshot file is missing, a symlink, not the file recorded (other
  inode / size / mtime: someone replaced or wrote it) or has a `.wal` beside it;
- the *version key* differs: the code and declarations (`incremental.code_digest`: edustat,
  schemas, code lists), the DuckDB version, the salt, the pseudonymisation choice, the tables
  published and each table's columns and types, the SELECT lists;
- a published `dim_` table (the labelling step writes `dim_` tables of its own);
- more than `MAX_CHANGED_SHARE` of the rows changed, or `MAX_DELTAS` deltas in a row (deleted
  rows stay in the copied file, marked deleted: the copy is checkpointed without vacuuming,
  `checkpoint_copy`; a full rebuild compacts it).

Nothing here reads personal values into Python: digests are 64-bit hash sums computed inside
DuckDB; keys are school years, periods, school codes and form scopes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)

FORMAT = 3  # 3: large partitions written in chunks (publish.chunk_name): an older tree is not reused
MAX_CHANGED_SHARE = 0.5
MAX_DELTAS = 20
STATE_TABLE = "publish_delta_state"
DIGEST_TABLE = "publish_delta_digest"
FILES_TABLE = "publish_delta_files"
KEY_COLUMNS = ("school_year", "period")
GROUP_COLUMNS = ("school_code", "scope")  # the first one a table has
RUN_COLUMN = "run_id"  # rewritten on every issue and register row of a run: see `Plan.relabel`

STATE_DDL = f"""
create table if not exists {STATE_TABLE} (dir varchar, version varchar, snapshot varchar, deltas integer,
    recorded_at timestamp);
create table if not exists {DIGEST_TABLE} (dir varchar, table_name varchar, k varchar, n bigint, d varchar,
    r varchar);
create table if not exists {FILES_TABLE} (dir varchar, path varchar, ident varchar);
"""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@dataclass
class Source:
    """What is about to be published: its version key and per-group digests."""

    version: str
    keys: dict[str, list[str]]  # table -> key columns
    digests: dict[str, dict[tuple, tuple[int, int]]]  # table -> key values -> (rows, hash sum)
    # tables with a run_id column published as it is: key values -> (hash sum of the rows without
    # run_id, the group's one run_id or None when it has several or a NULL)
    loose: dict[str, dict[tuple, tuple[int, str | None]]] = field(default_factory=dict)


@dataclass
class Plan:
    """A delta publish to make: the groups to replace, per table."""

    changed: dict[str, list[tuple]]
    snapshot_ident: str
    files: dict[str, str]  # Parquet path relative to the tree -> identity, as recorded
    deltas: int
    changed_rows: int = 0
    total_rows: int = 0
    touched: dict[str, set] = field(default_factory=dict)  # table -> {(year, period)} or {None}: all
    # table -> (year, period) -> the changed groups' key values (school_code / scope) there, or
    # None when the table has no group column (every file of the partition is rewritten)
    touched_keys: dict[str, dict[tuple, set | None]] = field(default_factory=dict)
    # table -> changed groups whose rows differ from the published ones in run_id only (same
    # count, same hash sum of every other column) and carry one run_id: the copy's rows of
    # such a group get that run_id (an UPDATE) instead of being deleted and selected again
    relabel: dict[str, dict[tuple, str]] = field(default_factory=dict)


def table_keys(con: duckdb.DuckDBPyConnection, table: str, types: dict[str, str] | None = None) -> list[str]:
    """The key columns grouping `table`'s rows (VARCHAR columns only, never transformed by
    pseudonymisation). `types`: its column -> type, when the caller has read them."""
    types = types if types is not None else dict(con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = 'main' AND table_name = ?",
        [table]).fetchall())
    keys = [c for c in KEY_COLUMNS if types.get(c) == "VARCHAR"]
    for c in GROUP_COLUMNS:
        if types.get(c) == "VARCHAR":
            keys.append(c)
            break
    return keys


def source_state(con: duckdb.DuckDBPyConnection, names: list[str], selects: dict[str, str], *,
                 salt: str, pseudonymise: bool, columns: dict[str, list[tuple[str, str]]] | None = None) -> Source:
    """Version key and per-group digests of the tables about to be published. `columns`: table ->
    its (column, type) in order, when the caller has read them (`publish._catalogue`)."""
    from edustat.incremental import code_digest

    schema, keys, digests, loose = {}, {}, {}, {}
    for t in names:
        cols = [tuple(c) for c in columns[t]] if columns is not None else con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = 'main' AND table_name = ? "
            "ORDER BY ordinal_position", [t]).fetchall()
        schema[t] = cols
        keys[t] = table_keys(con, t, dict(cols))
        k = ", ".join(_ident(c) for c in keys[t])
        h = "hash(" + ", ".join(_ident(c) for c, _ in cols) + ")"
        run = _plain_run_column(cols, selects.get(t, ""))
        extra = ""
        if run:
            rest = "hash(" + ", ".join(_ident(c) for c, _ in cols if c != RUN_COLUMN) + ")"
            q = _ident(RUN_COLUMN)
            extra = (f", coalesce(sum({rest}), 0)::HUGEINT, "
                     f"CASE WHEN count(DISTINCT {q}) = 1 AND count({q}) = count(*) THEN min({q}) END")
        sql = (f"SELECT {k + ', ' if k else ''}count(*)::BIGINT, coalesce(sum({h}), 0)::HUGEINT{extra} "
               f"FROM main.{_ident(t)}" + (" GROUP BY ALL" if k else ""))
        rows = con.execute(sql).fetchall()
        n = len(keys[t])
        digests[t] = {tuple(r[:n]): (int(r[n]), int(r[n + 1])) for r in rows if int(r[n])}
        if run:
            loose[t] = {tuple(r[:n]): (int(r[n + 2]), r[n + 3]) for r in rows if int(r[n])}
    from edustat.publish import CHUNK_GROUP_COLUMNS, CHUNK_ROWS, MAX_CHUNKS

    version = hashlib.sha256(json.dumps([
        FORMAT, CHUNK_ROWS, MAX_CHUNKS, CHUNK_GROUP_COLUMNS, duckdb.__version__, code_digest(),
        hashlib.sha256(("edustat-publish\x00" + salt).encode()).hexdigest(),
        pseudonymise, names, schema, keys, selects,
    ], default=str).encode()).hexdigest()
    return Source(version, keys, digests, loose)


def _plain_run_column(cols: list[tuple[str, str]], select: str) -> bool:
    """The table has a VARCHAR run_id that its SELECT list publishes unchanged (so a published
    row differs from another in run_id exactly when its source row does)."""
    return (dict(cols).get(RUN_COLUMN) == "VARCHAR" and len(cols) > 1
            and _ident(RUN_COLUMN) in [part.strip() for part in select.split(", ")])


def file_ident(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def plan(con: duckdb.DuckDBPyConnection, published_dir: Path, src: Source, names: list[str]) -> tuple[Plan | None, str]:
    """A delta publish from the snapshot in place to `src`, or (None, why not)."""
    from edustat.publish import SNAPSHOT_NAME

    if any(t.startswith("dim_") for t in names):
        return None, "a dim_ table is published (the labelling step writes dim_ tables)"
    _ensure_state(con)
    where = _dir_key(published_dir)
    row = con.execute(f"SELECT version, snapshot, deltas FROM {STATE_TABLE} WHERE dir = ?", [where]).fetchall()
    if len(row) != 1:
        return None, "no state recorded for the snapshot in place"
    version, ident, deltas = row[0]
    if version != src.version:
        return None, "code, salt, tables or columns changed since the last publish"
    if deltas >= MAX_DELTAS:
        return None, f"{deltas} delta publishes in a row: rebuilt to compact"
    snap = Path(published_dir) / SNAPSHOT_NAME
    try:
        st = os.lstat(snap)
    except FileNotFoundError:
        return None, "no snapshot in place"
    if not stat.S_ISREG(st.st_mode):
        return None, "the snapshot in place is not a regular file"
    if file_ident(st) != ident:
        return None, "the snapshot in place is not the one last published"
    if os.path.lexists(f"{snap}.wal"):
        return None, "the snapshot in place has a write-ahead log beside it"
    old: dict[str, dict[tuple, tuple[int, int]]] = {}
    old_loose: dict[str, dict[tuple, int]] = {}
    for t, k, n, d, r in con.execute(f"SELECT table_name, k, n, d, r FROM {DIGEST_TABLE} WHERE dir = ?",
                                     [where]).fetchall():
        old.setdefault(t, {})[tuple(json.loads(k))] = (int(n), int(d))
        if r is not None:
            old_loose.setdefault(t, {})[tuple(json.loads(k))] = int(r)
    if set(old) - set(names):
        return None, "the recorded digests are of other tables"
    changed, changed_rows, total = {}, 0, 0
    touched: dict[str, set] = {}
    touched_keys: dict[str, dict[tuple, set | None]] = {}
    relabel: dict[str, dict[tuple, str]] = {}
    for t in names:
        was, now = old.get(t, {}), src.digests[t]
        total += sum(n for n, _ in now.values()) + sum(n for n, _ in was.values())
        diff = sorted((k for k in set(was) | set(now) if was.get(k) != now.get(k)),
                      key=lambda k: tuple("" if v is None else v for v in k))
        changed[t] = diff
        changed_rows += sum(was.get(k, (0, 0))[0] + now.get(k, (0, 0))[0] for k in diff)
        loose, was_loose = src.loose.get(t, {}), old_loose.get(t, {})
        for k in diff:  # the same rows but for their run_id (count and the other columns' hash sum)
            if k in was and k in now and k in loose and k in was_loose and was[k][0] == now[k][0] \
                    and was_loose[k] == loose[k][0] and loose[k][1] is not None:
                relabel.setdefault(t, {})[k] = loose[k][1]
        if diff:
            partitioned = src.keys[t][:2] == list(KEY_COLUMNS)
            touched[t] = {tuple(k[:2]) for k in diff} if partitioned else {None}
            if partitioned:
                for k in diff:
                    was_keys = touched_keys.setdefault(t, {}).setdefault(tuple(k[:2]), set())
                    if len(k) == 3 and was_keys is not None:
                        was_keys.add(k[2])
                    else:
                        touched_keys[t][tuple(k[:2])] = None
    if total and changed_rows / total > MAX_CHANGED_SHARE:
        return None, f"{changed_rows} of {total} rows changed (> {MAX_CHANGED_SHARE:.0%})"
    files = dict(con.execute(f"SELECT path, ident FROM {FILES_TABLE} WHERE dir = ?", [where]).fetchall())
    return Plan(changed, ident, files, deltas, changed_rows, total, touched, touched_keys, relabel), "delta"


def copy_snapshot(published_dir: Path, tmp_db: Path, expected_ident: str) -> None:
    """Copy the snapshot in place to `tmp_db` (created here, exclusively), refusing a symlink
    and a file that is not the one recorded (checked on the open descriptor)."""
    from edustat.publish import SNAPSHOT_NAME

    src = os.open(Path(published_dir) / SNAPSHOT_NAME, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode) or file_ident(st) != expected_ident:
            raise _Stale("the snapshot changed while it was being copied")
        dst = os.open(tmp_db, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        try:
            left, offset = st.st_size, 0
            while left > 0:
                sent = os.sendfile(dst, src, offset, min(left, 1 << 30))
                if sent == 0:
                    raise _Stale("the snapshot shrank while it was being copied")
                offset, left = offset + sent, left - sent
        finally:
            os.close(dst)
        if file_ident(os.fstat(src)) != expected_ident:
            raise _Stale("the snapshot changed while it was being copied")
    finally:
        os.close(src)


class _Stale(Exception):
    """The previous snapshot cannot be used: rebuild in full."""


def apply(con: duckdb.DuckDBPyConnection, alias: str, p: Plan, src: Source, selects: dict[str, str],
          salt: str) -> dict[str, int]:
    """Replace the changed groups' rows in the attached copy `alias`. Returns rows per table."""
    import pyarrow as pa

    for t, groups in p.changed.items():
        if not groups:
            continue
        sel = selects[t]
        params = {"salt": salt} if "$salt" in sel else None
        dest = f"{_ident(alias)}.{_ident(t)}"
        keys = src.keys[t]
        if not keys:
            con.execute(f"DELETE FROM {dest}")
            con.execute(f"INSERT INTO {dest} SELECT {sel} FROM main.{_ident(t)}", params)
            continue
        match = " AND ".join(f"c.{_ident(k)} IS NOT DISTINCT FROM x.{_ident(k)}" for k in keys)
        relabel = p.relabel.get(t, {})
        if relabel:
            groups = [g for g in groups if g not in relabel]
            rel = pa.table({**{k: pa.array([g[i] for g in relabel], pa.string()) for i, k in enumerate(keys)},
                            "_run": pa.array(list(relabel.values()), pa.string())})
            con.register("_publish_relabel", rel)
            try:
                con.execute(f"UPDATE {dest} x SET {_ident(RUN_COLUMN)} = c._run FROM _publish_relabel c WHERE {match}")
            finally:
                con.unregister("_publish_relabel")
        if not groups:
            continue
        where, values = groups_filter(keys, groups)
        con.execute(f"DELETE FROM {dest} x WHERE {where}", values)
        con.execute(f"INSERT INTO {dest} SELECT {sel} FROM main.{_ident(t)} x WHERE {where}",
                    {**values, **(params or {})})
    return {t: con.execute(f"SELECT count(*) FROM {_ident(alias)}.{_ident(t)}").fetchone()[0] for t in p.changed}


def groups_filter(keys: list[str], groups: list[tuple]) -> tuple[str, dict[str, str]]:
    """The rows of `x` in `groups` (tuples of `keys`' values, None for NULL) as a condition on
    constants, with its named parameters: per value of the leading keys, their equalities and
    the last key IN the group's values (or IS NULL). The rows an `IS NOT DISTINCT FROM` match
    on every key selects; as constants, DuckDB filters them in the table scan (zone maps) rather
    than joining every row with a registered table (issue 12: a city's one-changed delta,
    `apply` 0.253 -> 0.178 CPU s, medians of five alternating pairs)."""
    *lead, last = keys
    by_lead: dict[tuple, list] = {}
    for g in groups:
        by_lead.setdefault(tuple(g[:-1]), []).append(g[-1])
    values: dict[str, str] = {}

    def param(v: str) -> str:
        name = f"g{len(values)}"
        values[name] = v
        return f"${name}"

    ors = []
    for head, tails in by_lead.items():
        parts = [f"x.{_ident(k)} IS NULL" if v is None else f"x.{_ident(k)} = {param(v)}" for k, v in zip(lead, head)]
        named = [v for v in dict.fromkeys(tails) if v is not None]
        last_parts = ([f"x.{_ident(last)} IN ({', '.join(param(v) for v in named)})"] if named else []) \
            + ([f"x.{_ident(last)} IS NULL"] if None in tails else [])
        parts.append("(" + " OR ".join(last_parts) + ")")
        ors.append("(" + " AND ".join(parts) + ")")
    return "(" + " OR ".join(ors) + ")", values


def checkpoint_copy(con: duckdb.DuckDBPyConnection, alias: str) -> None:
    """CHECKPOINT the patched copy without vacuuming it. A checkpoint that finds a table's
    row groups with deleted rows beside appended ones rewrites (vacuums) them: in a city delta
    that was ~0.15 of the checkpoint's ~0.2 CPU s (mostly `rpt_form_cell`, whose city rows are
    replaced each time), for the same rows. The deleted rows stay in the file, marked deleted
    (what every reader skips), until the full rebuild that `MAX_DELTAS` and
    `MAX_CHANGED_SHARE` bring; the setting is the database instance's, so it is put back as it
    was, also when the checkpoint fails."""
    was = con.execute("SELECT current_setting('max_vacuum_tasks')").fetchone()[0]
    con.execute("SET max_vacuum_tasks = 0")
    try:
        con.execute(f"CHECKPOINT {_ident(alias)}")
    finally:
        con.execute(f"SET max_vacuum_tasks = {int(was)}")


def parquet_keeper(p: Plan, old_tree: Path, new_tree: Path, table: str):
    """`keep(target)` for `publish._write_parquet`: hard-links the previous tree's file for an
    untouched partition (or untouched unpartitioned table) when that file is still the one
    recorded, and says so; False means: write it."""
    from edustat.publish import chunk_of, parse_chunk_name

    touched = p.touched.get(table, set())
    if None in touched:
        return None
    dirs_ok: dict[Path, bool] = {}

    def real_dir(d: Path) -> bool:
        """`d` and every directory between it and the tree's parent are directories, not
        symlinks (lstat: a planted link is not followed)."""
        if d not in dirs_ok:
            try:
                ok = stat.S_ISDIR(os.lstat(d).st_mode)
            except OSError:
                ok = False
            dirs_ok[d] = ok and (d == old_tree or real_dir(d.parent))
        return dirs_ok[d]

    def keep(target: Path) -> bool:
        rel = target.relative_to(new_tree).as_posix()
        parts = target.relative_to(new_tree / table).parts
        if len(parts) == 3:  # year=<y>/period=<p>/part-0.parquet or part-<i>-of-<n>.parquet
            part = (parts[0].split("=", 1)[1], parts[1].split("=", 1)[1])
            if part in touched:
                keys = p.touched_keys.get(table, {}).get(part)
                chunk = parse_chunk_name(parts[2])
                if keys is None or chunk is None or chunk[1] == 1:
                    return False
                i, n = chunk
                if any(chunk_of(k, n) == i for k in keys):
                    return False  # a changed group's rows are in this chunk
        elif touched:
            return False
        if rel not in p.files:
            return False
        old = old_tree / rel
        if not real_dir(old.parent):
            return False
        try:
            st = os.lstat(old)
            if not stat.S_ISREG(st.st_mode) or file_ident(st) != p.files[rel]:
                return False
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(old, target, follow_symlinks=False)
        except OSError:
            return False
        return True

    return keep


# The data dictionary's identity, recorded among the Parquet files' under a key no file of the
# tree has (those are `<table>/...`): its text is a function of the snapshot's catalogue (tables,
# columns, comments, views, dim_ rows), which the version key fixes, so a delta keeps the one
# in place when it is still the file the last publish wrote.
DICTIONARY_KEY = ":DATA_DICTIONARY.md"


def dictionary_kept(p: Plan, published_dir: Path) -> bool:
    """The dictionary in place is the one recorded (regular file, same identity): a delta keeps it."""
    from edustat.dictionary import DICTIONARY_NAME

    try:
        st = os.lstat(Path(published_dir) / DICTIONARY_NAME)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and p.files.get(DICTIONARY_KEY) == file_ident(st)


def tree_files(tree: Path) -> dict[str, str]:
    """Regular files under `tree` (symlinks not followed, not listed) -> identity."""
    out = {}
    for root, dirs, files in os.walk(tree, followlinks=False):
        for f in files:
            path = Path(root) / f
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                out[path.relative_to(tree).as_posix()] = file_ident(st)
    return out


def record(con: duckdb.DuckDBPyConnection, src: Source, snapshot: Path, tree: Path, deltas: int) -> None:
    """Remember what the snapshot now in place was made from (after the swap)."""
    import pyarrow as pa

    from edustat.dictionary import DICTIONARY_NAME

    ident = file_ident(os.lstat(snapshot))
    files = tree_files(tree)
    dictionary = os.lstat(snapshot.parent / DICTIONARY_NAME)
    if stat.S_ISREG(dictionary.st_mode):
        files[DICTIONARY_KEY] = file_ident(dictionary)
    digest_rows = [(t, json.dumps(list(k), ensure_ascii=False), n, str(d),
                    str(src.loose[t][k][0]) if k in src.loose.get(t, {}) else None)
                   for t, groups in src.digests.items() for k, (n, d) in groups.items()]
    digests = pa.table({
        "table_name": pa.array([r[0] for r in digest_rows], pa.string()),
        "k": pa.array([r[1] for r in digest_rows], pa.string()),
        "n": pa.array([r[2] for r in digest_rows], pa.int64()),
        "d": pa.array([r[3] for r in digest_rows], pa.string()),
        "r": pa.array([r[4] for r in digest_rows], pa.string()),
    })
    where = _dir_key(snapshot.parent)
    manifest = pa.table({"path": pa.array(list(files), pa.string()), "ident": pa.array(list(files.values()), pa.string())})
    _ensure_state(con)
    con.register("_publish_digests", digests)
    con.register("_publish_files", manifest)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            for table in (STATE_TABLE, DIGEST_TABLE, FILES_TABLE):
                con.execute(f"DELETE FROM {table} WHERE dir = ?", [where])
            con.execute(f"INSERT INTO {STATE_TABLE} VALUES (?, ?, ?, ?, now()::TIMESTAMP)",
                        [where, src.version, ident, deltas])
            con.execute(f"INSERT INTO {DIGEST_TABLE} SELECT ?, * FROM _publish_digests", [where])
            con.execute(f"INSERT INTO {FILES_TABLE} SELECT ?, * FROM _publish_files", [where])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.unregister("_publish_digests")
        con.unregister("_publish_files")


def _ensure_state(con: duckdb.DuckDBPyConnection) -> None:
    """Create the state tables; ones of another layout (an older release) are dropped first:
    they are only a cache of what the snapshot was made from."""
    want = {STATE_TABLE: ["dir", "version", "snapshot", "deltas", "recorded_at"],
            DIGEST_TABLE: ["dir", "table_name", "k", "n", "d", "r"], FILES_TABLE: ["dir", "path", "ident"]}
    found: dict[str, list[str]] = {}
    for table, col in con.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_catalog = current_database() "
            "AND table_schema = 'main' AND table_name IN (?, ?, ?) ORDER BY table_name, ordinal_position",
            list(want)).fetchall():
        found.setdefault(table, []).append(col)
    for table, cols in want.items():
        have = found.get(table, [])
        if have and have != cols:
            con.execute(f"DROP TABLE {table}")
    con.execute(STATE_DDL)


def _dir_key(published_dir: Path) -> str:
    """The published dir the state is about (one officer's DB may publish to several)."""
    return os.path.abspath(published_dir)
