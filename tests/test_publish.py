"""edustat.publish: a pseudonymised snapshot + Parquet tree from the curated DuckDB, readable
while the pipeline holds the curated file read-write. Real DuckDB files, synthetic data."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from edustat.publish import PublishResult, load_or_create_salt, publish, salt_fingerprint

SALT = "a" * 64
PID_1 = "001234567890"
PID_2 = "009876543210"


def _h(value: str, salt: str = SALT) -> str:
    return hashlib.sha256((salt + value).encode()).hexdigest()[:16]


def _make_curated(path: Path) -> duckdb.DuckDBPyConnection:
    """A tiny curated DB: 3 learners (2 in dau_nam, 1 in cuoi_nam), 2 staff, 1 submission,
    3 issues, plus raw_/stg_ tables that must never be published."""
    con = duckdb.connect(str(path))
    con.execute(
        """
        CREATE TABLE core_learners(school_year VARCHAR, period VARCHAR, school_code VARCHAR,
            student_code VARCHAR, personal_id VARCHAR, full_name VARCHAR, birth_date DATE,
            sex VARCHAR, disability_type VARCHAR, excel_row INTEGER);
        INSERT INTO core_learners VALUES
          ('2022-2023', 'dau_nam', '79000701', 'HS001', '001234567890', 'Nguyễn Văn An', '2015-03-04', '01', NULL, 5),
          ('2022-2023', 'dau_nam', '79000701', 'HS002', NULL,           'Trần Thị Bình', '2014-12-31', '02', '01', 6),
          ('2022-2023', 'cuoi_nam', '79000701', 'HS001', '001234567890', 'Nguyễn Văn An', '2015-03-04', '01', NULL, 5);
        CREATE TABLE core_staff(school_year VARCHAR, period VARCHAR, school_code VARCHAR,
            staff_code VARCHAR, personal_id VARCHAR, full_name VARCHAR, birth_date DATE,
            sex VARCHAR, policy_group VARCHAR, excel_row INTEGER);
        INSERT INTO core_staff VALUES
          ('2022-2023', 'dau_nam', '79000701', 'GV01', '009876543210', 'Lê Văn Cường', '1980-01-01', '01', NULL, 5),
          ('2022-2023', 'dau_nam', '79000701', 'GV02', '001234567890', 'Phạm Thị Dung', '1990-07-15', '02', '03', 6);
        CREATE TABLE submission(run_id VARCHAR, school_code VARCHAR, school_year VARCHAR,
            period VARCHAR, file_sha256 VARCHAR, accepted BOOLEAN);
        INSERT INTO submission VALUES ('r1', '79000701', '2022-2023', 'dau_nam', 'abc', true);
        CREATE TABLE validation_issue(run_id VARCHAR, school_code VARCHAR, sheet VARCHAR,
            excel_row INTEGER, "column" VARCHAR, field VARCHAR, rule_id VARCHAR,
            severity VARCHAR, value VARCHAR, message VARCHAR);
        INSERT INTO validation_issue VALUES
          ('r1', '79000701', 'learners', 7, 'D', 'personal_id', 'learner_personal_id_format', 'error', '12345', 'Sai định dạng'),
          ('r1', '79000701', 'learners', 8, 'E', 'sex', 'learner_sex_code', 'error', 'X', 'Mã không hợp lệ'),
          ('r1', '79000701', 'learners', 9, 'F', 'disability_type', 'learner_disability_code', 'warning', '99', 'Mã không hợp lệ');
        CREATE TABLE raw_learners(full_name VARCHAR, personal_id VARCHAR);
        INSERT INTO raw_learners VALUES ('Nguyễn Văn An', '001234567890');
        CREATE TABLE stg_learners AS SELECT * FROM core_learners;
        """
    )
    return con


@pytest.fixture
def curated(tmp_path):
    (tmp_path / "curated").mkdir()
    con = _make_curated(tmp_path / "curated" / "edustat.duckdb")
    yield con
    con.close()


@pytest.fixture
def published(tmp_path, curated) -> tuple[PublishResult, Path]:
    out = tmp_path / "published"
    return publish(curated, out, salt=SALT), out


def _read(snapshot: Path, sql: str, params=None):
    with duckdb.connect(str(snapshot), read_only=True) as c:
        return c.execute(sql, params).fetchall()


# ---------------------------------------------------------------- snapshot contents


def test_publishes_curated_tables_with_row_counts(published):
    res, out = published
    assert res.snapshot == out / "edustat.duckdb" and res.snapshot.is_file()
    assert res.tables == {"core_learners": 3, "core_staff": 2, "submission": 1, "validation_issue": 3}
    names = {r[0] for r in _read(res.snapshot, "SELECT table_name FROM information_schema.tables")}
    # + the code-label tables and labelled views of edustat.dictionary
    assert {n for n in names if not n.startswith(("dim_", "v_"))} == {*res.tables, "publish_info"}
    for table, n in res.tables.items():
        assert _read(res.snapshot, f"SELECT count(*) FROM {table}") == [(n,)]
    # no temp files left behind
    assert sorted(p.name for p in out.iterdir()) == ["DATA_DICTIONARY.md", "README.md", "edustat.duckdb", "parquet"]


def test_raw_and_stg_never_published(curated, tmp_path):
    with pytest.raises(ValueError, match="never published"):
        publish(curated, tmp_path / "p", salt=SALT, tables=["core_learners", "raw_learners"])
    with pytest.raises(ValueError, match="no such tables"):
        publish(curated, tmp_path / "p", salt=SALT, tables=["core_nothing"])
    res = publish(curated, tmp_path / "p", salt=SALT, tables=["core_staff"])
    assert res.tables == {"core_staff": 2}


def test_names_dropped_birth_year_kept(published):
    res, _ = published
    cols = [r[0] for r in _read(res.snapshot, "SELECT column_name FROM information_schema.columns "
                                              "WHERE table_name = 'core_learners' ORDER BY ordinal_position")]
    assert "full_name" not in cols and "birth_date" not in cols
    assert cols.index("birth_year") == 5  # where birth_date was (after full_name is dropped)
    types = dict(_read(res.snapshot, "SELECT column_name, data_type FROM information_schema.columns "
                                     "WHERE table_name = 'core_staff'"))
    assert types["birth_year"] == "INTEGER" and "full_name" not in types
    rows = _read(res.snapshot, "SELECT excel_row, period, birth_year FROM core_learners ORDER BY period, excel_row")
    assert rows == [(5, "cuoi_nam", 2015), (5, "dau_nam", 2015), (6, "dau_nam", 2014)]
    assert "disability_type" in cols and "sex" in cols  # kept for statistics


def test_identifiers_hashed_null_stays_null(published):
    res, _ = published
    rows = _read(res.snapshot, "SELECT excel_row, personal_id, student_code FROM core_learners "
                               "WHERE period = 'dau_nam' ORDER BY excel_row")
    assert rows == [(5, _h(PID_1), _h("HS001")), (6, None, _h("HS002"))]
    staff = _read(res.snapshot, "SELECT staff_code, personal_id FROM core_staff ORDER BY excel_row")
    assert staff == [(_h("GV01"), _h(PID_2)), (_h("GV02"), _h(PID_1))]
    # same person in two periods and two tables → the same pseudonym (joinable)
    assert _read(res.snapshot, "SELECT count(DISTINCT personal_id) FROM core_learners WHERE personal_id IS NOT NULL") == [(1,)]
    joined = _read(res.snapshot, "SELECT count(*) FROM core_learners l JOIN core_staff s USING (personal_id)")
    assert joined == [(2,)]


def test_pseudonyms_stable_for_a_salt_and_differ_across_salts(curated, tmp_path):
    q = "SELECT personal_id FROM core_staff ORDER BY excel_row"
    a = _read(publish(curated, tmp_path / "a", salt=SALT).snapshot, q)
    b = _read(publish(curated, tmp_path / "b", salt=SALT).snapshot, q)
    c = _read(publish(curated, tmp_path / "c", salt="b" * 64).snapshot, q)
    assert a == b
    assert all(len(v) == 16 and int(v, 16) >= 0 for (v,) in a)
    assert not set(a) & set(c)


def test_validation_issue_value_nulled_for_pii_fields_only(published):
    res, _ = published
    rows = _read(res.snapshot, "SELECT field, value, message FROM validation_issue ORDER BY excel_row")
    assert rows == [
        ("personal_id", None, "Sai định dạng"),
        ("sex", "X", "Mã không hợp lệ"),
        ("disability_type", None, "Mã không hợp lệ"),
    ]


def test_publish_info(published):
    res, _ = published
    (row,) = _read(res.snapshot, "SELECT * FROM publish_info")
    published_at, pseudonymised, fingerprint, tables, pii_kept = row
    assert pseudonymised is True
    assert fingerprint == hashlib.sha256(SALT.encode()).hexdigest()[:8] == salt_fingerprint(SALT)
    assert tables == ["core_learners", "core_staff", "submission", "validation_issue"]
    assert pii_kept == ["disability_type", "policy_group"]
    now_utc = datetime.now(timezone.utc).replace(tzinfo=None)
    assert abs((published_at - now_utc).total_seconds()) < 600  # stored as UTC
    # the salt itself is nowhere in the snapshot file
    assert SALT.encode() not in res.snapshot.read_bytes()


def test_pseudonymise_false_keeps_everything(curated, tmp_path):
    res = publish(curated, tmp_path / "p", salt=SALT, pseudonymise=False)
    rows = _read(res.snapshot, "SELECT full_name, personal_id, birth_date FROM core_learners "
                               "WHERE period = 'dau_nam' ORDER BY excel_row")
    assert rows == [("Nguyễn Văn An", PID_1, date(2015, 3, 4)), ("Trần Thị Bình", None, date(2014, 12, 31))]
    assert _read(res.snapshot, "SELECT value FROM validation_issue ORDER BY excel_row")[0] == ("12345",)
    (info,) = _read(res.snapshot, "SELECT pseudonymised, pii_kept FROM publish_info")
    assert info == (False, ["birth_date", "disability_type", "full_name", "personal_id", "policy_group"])


def test_views_are_materialised(curated, tmp_path):
    curated.execute("CREATE VIEW rpt_learners_by_sex AS SELECT sex, count(*) n FROM core_learners GROUP BY sex")
    res = publish(curated, tmp_path / "p", salt=SALT)
    assert res.tables["rpt_learners_by_sex"] == 2
    assert _read(res.snapshot, "SELECT table_type FROM information_schema.tables "
                               "WHERE table_name = 'rpt_learners_by_sex'") == [("BASE TABLE",)]


def test_publish_leaves_caller_connection_clean(curated, tmp_path):
    publish(curated, tmp_path / "p", salt=SALT)
    assert curated.execute("SELECT database_name FROM duckdb_databases() WHERE NOT internal").fetchall() == [("edustat",)]
    curated.execute("INSERT INTO core_staff SELECT * FROM core_staff")  # still the writer
    assert curated.execute("SELECT count(*) FROM core_staff").fetchone() == (4,)


def test_failed_publish_keeps_previous_publication(curated, tmp_path, monkeypatch):
    out = tmp_path / "p"
    publish(curated, out, salt=SALT)
    import edustat.publish as mod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mod, "_write_parquet", boom)
    curated.execute("DELETE FROM core_staff")
    with pytest.raises(RuntimeError):
        publish(curated, out, salt=SALT)
    assert sorted(p.name for p in out.iterdir()) == ["DATA_DICTIONARY.md", "README.md", "edustat.duckdb", "parquet"]
    assert _read(out / "edustat.duckdb", "SELECT count(*) FROM core_staff") == [(2,)]
    assert curated.execute("SELECT count(*) FROM duckdb_databases() WHERE NOT internal").fetchone() == (1,)


def test_empty_table_published_with_empty_parquet_dir(curated, tmp_path):
    curated.execute("DELETE FROM core_staff")
    res = publish(curated, tmp_path / "p", salt=SALT)
    assert res.tables["core_staff"] == 0
    assert _read(res.snapshot, "SELECT count(*) FROM core_staff") == [(0,)]
    assert (res.parquet_dir / "core_staff").is_dir()
    assert not any((res.parquet_dir / "core_staff").iterdir())  # no partitions to write


# ---------------------------------------------------------------- parquet


def test_parquet_partition_layout_and_read_back(published):
    res, out = published
    base = res.parquet_dir
    assert base == out / "parquet"
    assert (base / "core_learners/year=2022-2023/period=dau_nam/part-0.parquet").is_file()
    assert (base / "core_learners/year=2022-2023/period=cuoi_nam/part-0.parquet").is_file()
    assert (base / "core_staff/year=2022-2023/period=dau_nam/part-0.parquet").is_file()
    assert (base / "submission/year=2022-2023/period=dau_nam/part-0.parquet").is_file()
    # validation_issue has no school_year/period → one flat file
    assert (base / "validation_issue/part-0.parquet").is_file()

    one = pq.read_table(base / "core_learners/year=2022-2023/period=dau_nam/part-0.parquet")
    assert one.num_rows == 2
    assert "school_year" in one.column_names and "full_name" not in one.column_names
    assert one.column("personal_id").to_pylist() in ([_h(PID_1), None], [None, _h(PID_1)])

    whole = pq.read_table(base / "core_learners")  # hive partitioning: year/period from the path
    assert whole.num_rows == 3 and {"year", "period", "school_year"} <= set(whole.column_names)
    with duckdb.connect() as c:
        got = c.execute(
            f"SELECT year, period, count(*) FROM read_parquet('{base}/core_learners/**/*.parquet', "
            "hive_partitioning = true) GROUP BY ALL ORDER BY period"
        ).fetchall()
        assert got == [("2022-2023", "cuoi_nam", 1), ("2022-2023", "dau_nam", 2)]
        assert c.execute(f"SELECT count(*) FROM '{base}/validation_issue/part-0.parquet'").fetchone() == (3,)
        assert c.execute(f"SELECT value FROM '{base}/validation_issue/part-0.parquet' "
                         "ORDER BY excel_row").fetchall() == [(None,), ("X",), (None,)]


def test_parquet_tree_replaced_not_merged(curated, tmp_path):
    out = tmp_path / "p"
    publish(curated, out, salt=SALT)
    curated.execute("UPDATE core_learners SET period = 'cuoi_nam'")
    publish(curated, out, salt=SALT)
    parts = sorted(p.relative_to(out / "parquet/core_learners").as_posix()
                   for p in (out / "parquet/core_learners").rglob("*.parquet"))
    assert parts == ["year=2022-2023/period=cuoi_nam/part-0.parquet"]
    assert sorted(p.name for p in out.iterdir()) == ["DATA_DICTIONARY.md", "README.md", "edustat.duckdb", "parquet"]


# ---------------------------------------------------------------- salt


def test_salt_created_once_0600_and_reused(tmp_path):
    path = tmp_path / "secrets" / "publish.salt"
    s1 = load_or_create_salt(path)
    assert len(s1) == 64 and int(s1, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_salt(path) == s1
    assert load_or_create_salt(tmp_path / "other.salt") != s1
    assert [p.name for p in path.parent.iterdir()] == ["publish.salt"]


# ---------------------------------------------------------------- concurrency

READER = textwrap.dedent(
    """
    import sys, time, pathlib, duckdb
    snap, ready, go = sys.argv[1:4]
    con = duckdb.connect(snap, read_only=True)
    print("before", con.execute("SELECT count(*) FROM core_learners").fetchone()[0], flush=True)
    pathlib.Path(ready).write_text("ok")
    deadline = time.time() + 60
    while not pathlib.Path(go).exists():
        if time.time() > deadline:
            sys.exit("timed out waiting for go")
        time.sleep(0.02)
    # full scans after the file was replaced: every block must still come from the old inode
    n = con.execute("SELECT count(*) FROM core_learners").fetchone()[0]
    d = con.execute("SELECT count(DISTINCT student_code), sum(birth_year) FROM core_learners").fetchone()
    print("after", n, d[0], d[1], flush=True)
    con.close()
    """
)


def _start_reader(snapshot: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    ready, go = tmp_path / "reader.ready", tmp_path / "reader.go"
    proc = subprocess.Popen(
        [sys.executable, "-c", READER, str(snapshot), str(ready), str(go)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 60
    while not ready.exists():
        if proc.poll() is not None:
            pytest.fail(f"reader died: {proc.stderr.read()}")
        assert time.time() < deadline, "reader never became ready"
        time.sleep(0.02)
    return proc, ready, go


def test_reader_keeps_old_snapshot_while_republished(curated, tmp_path):
    """The test process holds the curated DB read-write throughout (as the pipeline does);
    another process reads the snapshot, we republish changed data underneath it."""
    out = tmp_path / "published"
    publish(curated, out, salt=SALT)
    # bulk the data up so the reader's later scans need blocks it has not read yet
    curated.execute(
        "INSERT INTO core_learners SELECT school_year, period, school_code, 'HS' || i, "
        "lpad(CAST(i AS VARCHAR), 12, '0'), 'Tên ' || i, DATE '2015-01-01', '01', NULL, i "
        "FROM core_learners, range(100, 20100) r(i) WHERE excel_row = 6"
    )
    res = publish(curated, out, salt=SALT)
    n_old = 20003
    old_inode = res.snapshot.stat().st_ino
    proc, _, go = _start_reader(res.snapshot, tmp_path)

    curated.execute("DELETE FROM core_learners WHERE excel_row >= 100")
    curated.execute("INSERT INTO core_learners SELECT * FROM core_learners")  # 6 rows
    res2 = publish(curated, out, salt=SALT)  # must not raise while the reader holds the old file
    assert res2.tables["core_learners"] == 6
    assert res2.snapshot.stat().st_ino != old_inode
    fd_dir = Path(f"/proc/{proc.pid}/fd")
    if fd_dir.is_dir():  # Linux: the reader now holds an unlinked file — the old snapshot
        targets = [os.readlink(fd) for fd in fd_dir.iterdir() if fd.is_symlink()]
        assert f"{res.snapshot} (deleted)" in targets

    go.write_text("go")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == f"before {n_old}"
    assert lines[1] == f"after {n_old} {20002} {2015 * 20001 + 2014 + 2015}"  # the old data, intact
    # a fresh open (new process, and this one: no connection to the snapshot is cached here)
    assert _read(res2.snapshot, "SELECT count(*) FROM core_learners") == [(6,)]
    fresh = subprocess.run(
        [sys.executable, "-c",
         "import duckdb,sys;print(duckdb.connect(sys.argv[1], read_only=True)"
         ".execute('SELECT count(*) FROM core_learners').fetchone()[0])", str(res2.snapshot)],
        capture_output=True, text=True, timeout=60,
    )
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip() == "6"


def test_publish_while_analyst_holds_snapshot_read_only(curated, tmp_path):
    """An analyst process idling on the snapshot (read-only lock held) does not block publish."""
    out = tmp_path / "published"
    res = publish(curated, out, salt=SALT)
    proc, _, go = _start_reader(res.snapshot, tmp_path)
    try:
        for _ in range(2):
            publish(curated, out, salt=SALT)
        # also with a read-only connection in this very process (different file than `curated`)
        with duckdb.connect(str(res.snapshot), read_only=True) as mine:
            publish(curated, out, salt=SALT)
            assert mine.execute("SELECT count(*) FROM core_staff").fetchone() == (2,)
    finally:
        go.write_text("go")
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stdout.splitlines() == ["before 3", "after 3 2 6044"]


def test_duckdb_cli_optional(published):
    """Nothing needs the `duckdb` CLI; if it happens to be installed it can read the snapshot."""
    res, _ = published
    cli = shutil.which("duckdb")
    if cli is None:
        pytest.skip("duckdb CLI not installed (not required)")
    run = subprocess.run([cli, "-readonly", "-csv", "-noheader", str(res.snapshot),
                          "SELECT count(*) FROM core_learners"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "3"


def test_no_personal_data_in_logs(curated, tmp_path, caplog):
    caplog.set_level("DEBUG")
    publish(curated, tmp_path / "p", salt=SALT)
    text = caplog.text
    assert "core_learners=3" in text
    for secret in (SALT, PID_1, "Nguyễn", "HS001", _h(PID_1)):
        assert secret not in text


# ---------------------------------------------------------------- timing (printed, not asserted)


def test_timing_100k_rows(tmp_path):
    con = _make_curated(tmp_path / "big.duckdb")
    try:
        con.execute("DELETE FROM core_learners")
        con.execute(
            "INSERT INTO core_learners SELECT '2022-2023', CASE WHEN i % 2 = 0 THEN 'dau_nam' ELSE 'cuoi_nam' END, "
            "'7900' || lpad(CAST(i % 300 AS VARCHAR), 4, '0'), 'HS' || i, lpad(CAST(i AS VARCHAR), 12, '0'), "
            "'Học sinh ' || i, DATE '2012-01-01' + CAST(i % 3000 AS INTEGER), CASE WHEN i % 2 = 0 THEN '01' ELSE '02' END, "
            "NULL, i % 500 + 5 FROM range(100000) r(i)"
        )
        con.execute("CHECKPOINT")
        out = tmp_path / "published"
        times = []
        for salt in (SALT, SALT):
            res = publish(con, out, salt=salt)
            times.append(res.seconds)
        assert res.tables["core_learners"] == 100000
        size = res.snapshot.stat().st_size / 1e6
        print(f"\npublish 100k learners: first {times[0]:.2f} s, republish {times[1]:.2f} s, "
              f"snapshot {size:.1f} MB")
    finally:
        con.close()



def test_chunk_files_are_named_from_integers_only():
    """A large partition's chunk files (publish.chunk_name): named from two integers, never from
    a value; every group key lands in one chunk; NULL and '' together; the count a power of 2."""
    from edustat import publish as pub

    assert pub.chunk_name(0, 1) == "part-0.parquet" and pub.chunk_name(3, 16) == "part-3-of-16.parquet"
    for bad in ((16, 16), (-1, 4), ("1", 4), (0, 17)):
        with pytest.raises(ValueError):
            pub.chunk_name(*bad)
    assert pub.parse_chunk_name("part-3-of-16.parquet") == (3, 16)
    assert pub.parse_chunk_name("part-0.parquet") == (0, 1)
    assert pub.parse_chunk_name("../part-3-of-16.parquet") is None and pub.parse_chunk_name("part-16-of-16.parquet") is None
    assert [pub.chunk_count(r) for r in (0, pub.CHUNK_ROWS, pub.CHUNK_ROWS + 1, 10**9)] == [1, 1, 2, pub.MAX_CHUNKS]
    keys = [f"7471{i:04d}" for i in range(200)] + ["city", "Quận 1", None, ""]
    assert all(0 <= pub.chunk_of(k, 16) < 16 for k in keys) and pub.chunk_of(None, 8) == pub.chunk_of("", 8)
    assert len({pub.chunk_of(k, 16) for k in keys}) == 16  # spread over every chunk
