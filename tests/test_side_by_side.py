"""Work of a cold load and a full publish done side by side (issue 12): the staging's frames
made while the previous sheet is inserted (store.stage_sheets), a publish's tables and Parquet
files two at a time on cursors, the snapshot labelled while still attached. The same outputs
as one at a time; errors stop both sides and leave nothing behind."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from edustat import publish as pub
from edustat import store
from edustat.publish import publish
from schemas import load_contract
from tests.test_publish import SALT, _make_curated


def _content(snapshot: Path, tree: Path) -> dict:
    """Tables (rows, order-free hash), columns with comments, views' text, and the Parquet
    files with their rows."""
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        out = {"columns": con.execute("SELECT table_name, column_name, data_type, comment FROM duckdb_columns() "
                                      "WHERE schema_name = 'main' ORDER BY ALL").fetchall(),
               "tables": con.execute("SELECT table_name, comment FROM duckdb_tables() ORDER BY ALL").fetchall(),
               "views": con.execute("SELECT view_name, sql, comment FROM duckdb_views() WHERE NOT internal "
                                    "ORDER BY ALL").fetchall()}
        for t, _ in out["tables"]:
            cols = [c for (c,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
                                              "ORDER BY column_index", [t]).fetchall() if c != "published_at"]
            out[t] = con.execute(f"SELECT count(*), sum(hash({', '.join(chr(34) + c + chr(34) for c in cols)})) "
                                 f'FROM "{t}"').fetchone()
    finally:
        con.close()
    files = sorted(p for p in tree.rglob("*.parquet"))
    out["parquet"] = [(p.relative_to(tree).as_posix(),
                       duckdb.execute(f"SELECT count(*) FROM read_parquet('{p}', hive_partitioning = false)").fetchone()[0])
                      for p in files]
    return out


def _dictionary(out: Path) -> str:
    return hashlib.sha256((out / "DATA_DICTIONARY.md").read_bytes()).hexdigest()


@pytest.fixture
def curated(tmp_path):
    con = _make_curated(tmp_path / "curated.duckdb")
    # a partition above CHUNK_ROWS (written in chunks) and a table of forms (scope groups)
    con.execute("""CREATE TABLE rpt_form_cell AS SELECT '2022-2023' AS school_year, 'dau_nam' AS period,
                   'F1' AS form_code, 'scope' || (i % 40) AS scope, 'r' || i AS row_code, 'c1' AS column_key,
                   i::DOUBLE AS value FROM range(60000) t(i)""")
    yield con
    con.close()


def test_full_publish_side_by_side_is_the_one_at_a_time_publish(curated, tmp_path, monkeypatch):
    monkeypatch.setattr(pub, "PUBLISH_THREADS", 1)
    one = publish(curated, tmp_path / "one", salt=SALT, delta=False)
    monkeypatch.setattr(pub, "PUBLISH_THREADS", 2)
    two = publish(curated, tmp_path / "two", salt=SALT, delta=False)
    assert one.tables == two.tables
    a = _content(one.snapshot, one.parquet_dir)
    b = _content(two.snapshot, two.parquet_dir)
    assert a == b
    assert any(n.startswith("rpt_form_cell/") and "-of-" in n for n, _ in a["parquet"])  # chunked
    assert any(t.startswith("dim_") for t, _ in a["tables"]) and any(c[3] for c in a["columns"])  # labelled
    assert _dictionary(tmp_path / "one") == _dictionary(tmp_path / "two")


def test_full_publish_uses_two_cursors_and_opens_the_temp_file_once(curated, tmp_path, monkeypatch):
    threads: set[int] = set()
    real = pub._write_parquet
    # each cursor's first file waits for the other's: on a loaded machine one thread could
    # otherwise take every table before the second starts (a sequential publish times out here)
    both = threading.Barrier(2, timeout=120)

    def spy(*a, **k):
        me = threading.get_ident()
        if me not in threads:
            threads.add(me)
            both.wait()
        return real(*a, **k)

    monkeypatch.setattr(pub, "_write_parquet", spy)
    opened: list[str] = []
    real_connect = duckdb.connect

    def connect(path=":memory:", *a, **k):
        opened.append(str(path))
        return real_connect(path, *a, **k)

    monkeypatch.setattr(duckdb, "connect", connect)
    result = publish(curated, tmp_path / "out", salt=SALT, delta=False)
    assert len(threads) == 2  # the Parquet files written on two threads
    assert not [p for p in opened if ".tmp-" in p]  # labelled and described while attached: never reopened
    assert any(c[3] for c in _content(result.snapshot, result.parquet_dir)["columns"])


def test_an_error_on_one_cursor_stops_the_other_and_keeps_the_publication(curated, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = publish(curated, out, salt=SALT, delta=False)
    before = _content(first.snapshot, first.parquet_dir)
    done: list[str] = []
    real = pub._write_parquet

    def boom(con, alias, table, *a, **k):
        if table == "core_learners":
            raise RuntimeError("disk full")
        done.append(table)
        return real(con, alias, table, *a, **k)

    monkeypatch.setattr(pub, "_write_parquet", boom)
    curated.execute("DELETE FROM core_staff")
    with pytest.raises(RuntimeError, match="disk full"):
        publish(curated, out, salt=SALT, delta=False)
    assert _content(out / "edustat.duckdb", out / "parquet") == before
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    assert len(done) < 6  # the other cursor stopped instead of writing every remaining table
    assert not curated.execute("SELECT * FROM duckdb_databases() WHERE database_name LIKE 'pub_%'").fetchall()


# -------------------------------------------------------------------------------------------
# store.stage_sheets: frames made one sheet at a time, inserted while the next is made
# -------------------------------------------------------------------------------------------

def _sheets(n: int = 3):
    """(sheet, raw, stg) frames of `n` files: a school row each and a few rooms."""
    out = []
    for sid in ("school", "rooms"):
        rows = 1 if sid == "school" else 4
        raw = pd.DataFrame({"school_code": [f"7900000{i}" for i in range(n) for _ in range(rows)],
                            "file_hash": [f"h{i}" for i in range(n) for _ in range(rows)],
                            "sheet_name": sid, "excel_row": [r + 5 for _ in range(n) for r in range(rows)]})
        out.append((sid, raw, raw.copy()))
    return out


def _tables(con) -> dict:
    return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
            for t in ("raw_school", "stg_school", "raw_rooms", "stg_rooms")}


@pytest.mark.parametrize("ahead", [0, 2])
def test_stage_sheets_stages_what_stage_frames_stages(tmp_path, monkeypatch, ahead):
    monkeypatch.setattr(store, "STAGE_AHEAD", ahead)
    a, b = duckdb.connect(str(tmp_path / "a.duckdb")), duckdb.connect(str(tmp_path / "b.duckdb"))
    sheets = _sheets()
    store.stage_frames(a, {s: r for s, r, _ in sheets}, {s: t for s, _, t in sheets}, "2022-2023", "dau_nam")
    n = store.stage_sheets(b, iter(_sheets()), ["h0", "h1", "h2"], "2022-2023", "dau_nam")
    assert n == 3
    assert _tables(a) == _tables(b) and _tables(a)["raw_rooms"]
    # staged again (a retry): the files' rows replaced, not doubled
    store.stage_sheets(b, iter(_sheets()), ["h0", "h1", "h2"], "2022-2023", "dau_nam")
    assert _tables(a) == _tables(b)


def test_stage_sheets_an_error_making_frames_is_raised_and_rolled_back(tmp_path):
    con = duckdb.connect(str(tmp_path / "a.duckdb"))
    store.stage_sheets(con, iter(_sheets()), ["h0", "h1", "h2"], "2022-2023", "dau_nam")
    before = _tables(con)

    def broken():
        yield _sheets()[0]
        raise ValueError("a sheet could not be derived")

    with pytest.raises(ValueError, match="derived"):
        with store.transaction(con):
            store.stage_sheets(con, broken(), ["h0", "h1", "h2"], "2022-2023", "dau_nam")
    assert _tables(con) == before
    assert not [t for t in threading.enumerate() if t.name == "edustat-stage"]


def test_stage_sheets_an_insert_error_stops_the_frame_maker(tmp_path):
    con = duckdb.connect(str(tmp_path / "a.duckdb"))
    ddl = store._ddl("raw_rooms", store.arrow_schema(load_contract().sheet("rooms"), "raw"))
    con.execute(ddl.replace('"excel_row" integer', '"excel_row" integer check (excel_row < 7)'))  # rows 5, 6 only
    store.ensure_tables(con)
    made: list[str] = []

    def sheets():
        for i in range(50):
            made.append(f"s{i}")
            yield _sheets()[1]

    with pytest.raises(duckdb.ConstraintException):
        with store.transaction(con):
            store.stage_sheets(con, sheets(), ["h0", "h1", "h2"], "2022-2023", "dau_nam")
    assert len(made) < 50  # stopped, not run to the end
    assert not [t for t in threading.enumerate() if t.name == "edustat-stage"]
    assert con.execute("SELECT count(*) FROM raw_rooms").fetchone()[0] == 0
