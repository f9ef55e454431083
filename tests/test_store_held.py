"""store.held (issue 12): the steps of a run's tail open their sessions on one DuckDB
instance kept open for the block (each instance costs tens of ms of CPU to create and close),
and the block leaves nothing open behind it. No Prefect, no workbook (fast)."""
from __future__ import annotations

import duckdb

from edustat import store


def _attached(con) -> set[str]:
    return {r[0] for r in con.execute("select database_name from duckdb_databases()").fetchall()}


def test_sessions_inside_held_share_one_instance_and_nothing_stays_open_after(tmp_path):
    db = tmp_path / "curated" / "edustat.duckdb"
    with store.held(db):
        with store.session(db) as con:
            con.execute("attach ':memory:' as mark_of_this_instance")  # instance-wide
            con.execute("create table t as select 1 as x")
        with store.session(db) as con:  # another session: the same instance
            assert "mark_of_this_instance" in _attached(con)
            assert con.execute("select x from t").fetchall() == [(1,)]
    # the instance is gone: a new one (another configuration is allowed only then)
    ro = duckdb.connect(str(db), read_only=True)
    try:
        assert "mark_of_this_instance" not in _attached(ro)
        assert ro.execute("select x from t").fetchall() == [(1,)]  # committed, checkpointed or in the WAL
    finally:
        ro.close()
    with store.session(db) as con:  # and without `held`, each session is its own instance
        con.execute("attach ':memory:' as mark_of_this_instance")
    with store.session(db) as con:
        assert "mark_of_this_instance" not in _attached(con)


def test_held_releases_the_database_when_its_block_fails(tmp_path):
    db = tmp_path / "edustat.duckdb"
    try:
        with store.held(db):
            with store.session(db) as con:
                con.execute("create table t as select 1 as x")
            raise RuntimeError("a step failed")
    except RuntimeError:
        pass
    ro = duckdb.connect(str(db), read_only=True)  # refused while any connection of the run is open
    try:
        assert ro.execute("select count(*) from t").fetchone() == (1,)
    finally:
        ro.close()


def test_a_failed_step_inside_held_lets_the_instance_go(tmp_path):
    """A step that fails (and may be retried) gets a new instance next, as without `held`: a
    failure may leave an instance unusable (DuckDB invalidates it on a fatal error)."""
    db = tmp_path / "edustat.duckdb"
    with store.held(db):
        with store.session(db) as con:
            con.execute("attach ':memory:' as mark_of_this_instance")
        try:
            with store.session(db) as con:
                raise OSError("a fault in the step")
        except OSError:
            pass
        with store.session(db) as con:  # the retry
            assert "mark_of_this_instance" not in _attached(con)
    assert not store._HELD
