"""Delta publish (edustat.publish_delta): after a run where few schools changed, the snapshot
is patched from the previous one — and must be exactly the snapshot a full publish gives.

"Exactly": the same tables, views and comments, the same column types, and per table the same
rows (count + order-free sum of DuckDB's row hashes; `publish_info.published_at` is a clock);
the Parquet tree has the same files with the same schema and rows. Checked after real runs
(synthetic city, real workbooks, the flow's steps) where one school changed, a school's file
was withdrawn, a late school arrived, the next period was collected; every fallback to a full
rebuild is taken when it must be; a kill -9 at each point of a delta publish leaves a readable
snapshot (the old one before the swap) and the rerun equals an uninterrupted publish; nothing
personal is in a delta-published snapshot.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import openpyxl
import pytest

from edustat import incremental, pipeline, publish_delta, store
from edustat.config import Config
from edustat.publish import SNAPSHOT_NAME, publish
from edustat.synth import generate_city

from test_publish import SALT, _make_curated

YEAR, PERIOD = "2022-2023", "dau_nam"


# ---------------------------------------------------------------------------------------
# What "the same snapshot" means
# ---------------------------------------------------------------------------------------

def snapshot_content(path: Path) -> dict:
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {
            "columns": con.execute("SELECT table_name, column_name, column_index, data_type, is_nullable, comment "
                                   "FROM duckdb_columns() WHERE schema_name = 'main' ORDER BY ALL").fetchall(),
            "tables": con.execute("SELECT table_name, comment FROM duckdb_tables() WHERE schema_name = 'main' "
                                  "ORDER BY ALL").fetchall(),
            "views": con.execute("SELECT view_name, sql, comment FROM duckdb_views() WHERE schema_name = 'main' "
                                 "AND NOT internal ORDER BY ALL").fetchall(),
        }
        for t, _ in out["tables"]:
            cols = [c for (c,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' "
                                              "AND table_name = ? ORDER BY column_index", [t]).fetchall()
                    if (t, c) != ("publish_info", "published_at")]
            h = "hash(" + ", ".join(f'"{c}"' for c in cols) + ")"
            out[f"rows.{t}"] = con.execute(f'SELECT count(*), sum({h}) FROM "{t}"').fetchone()
        for v, _, _ in out["views"]:
            out[f"view.{v}"] = con.execute(f'SELECT count(*) FROM "{v}"').fetchone()
        return out
    finally:
        con.close()


def parquet_content(tree: Path) -> dict:
    con = duckdb.connect()
    out = {}
    for f in sorted(tree.rglob("*.parquet")):
        rel = f.relative_to(tree).as_posix()
        schema = con.execute(f"SELECT name, type, repetition_type FROM parquet_schema('{f}') ORDER BY ALL").fetchall()
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{f}', hive_partitioning=false)").fetchall()]
        h = "hash(" + ", ".join(f'"{c}"' for c in cols) + ")"
        rows = con.execute(f"SELECT count(*), sum({h}) FROM read_parquet('{f}', hive_partitioning=false)").fetchone()
        out[rel] = (schema, rows)
    out["dirs"] = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_dir())
    con.close()
    return out


def assert_same_as_full(con, published_dir: Path, full_dir: Path, salt: str) -> None:
    full = publish(con, full_dir, salt=salt, delta=False)
    assert full.mode == "full" and full.reason == "delta not asked"
    assert snapshot_content(published_dir / SNAPSHOT_NAME) == snapshot_content(full.snapshot)
    assert parquet_content(published_dir / "parquet") == parquet_content(full.parquet_dir)
    assert ((published_dir / "DATA_DICTIONARY.md").read_text(encoding="utf-8")
            == (full_dir / "DATA_DICTIONARY.md").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------
# Real runs: a small city, the flow's steps (as tests/test_incremental.py runs them)
# ---------------------------------------------------------------------------------------

def run_steps(cfg: Config, inbox: Path, run_id: str, year: str = YEAR, period: str = PERIOD):
    from edustat.publish import salt_for
    from edustat.submissions import discover

    with pipeline.sole_writer(cfg):
        pipeline.clean_temp_files(cfg)
        results = pipeline.ingest_all(discover(inbox), cfg, year, period)
        outcome = incremental.unchanged_outcome(results, cfg, year, period, run_id)
        if outcome is None:
            frames = pipeline.assemble_all(results, cfg)
            issues = pipeline.validate_all(results, cfg, year, period, frames)
            with store.session(cfg.db_path) as con:
                outcome = pipeline.load_all(con, results, issues, cfg, year, period, run_id, frames=frames)
        with store.session(cfg.db_path) as con:
            pipeline.write_feedbacks(con, outcome, results, cfg)
            incremental.build_forms_incremental(con, cfg, year, period)
            published, _ = incremental.publish_if_changed(con, cfg, salt_for(cfg))
    return published


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """Five schools collected once (full publish); a sixth school's file held back (late)."""
    base = tmp_path_factory.mktemp("delta-city")
    before = os.environ.get("EDUSTAT_SALT_FILE")
    os.environ["EDUSTAT_SALT_FILE"] = str(base / "salt")
    every = base / "every"
    generate_city(every, schools=6, seed=11, school_year=YEAR, period=PERIOD, export_share=0.34, error_rate=0.004)
    files = sorted(every.glob("*.xlsx"))
    inbox = base / "inbox"
    inbox.mkdir()
    for f in files[:-1]:
        shutil.copy2(f, inbox / f.name)
    cfg = Config(data_dir=base / "data", workers=1, incremental=True)
    first = run_steps(cfg, inbox, "d-cold")
    assert first is not None and first.mode == "full"
    yield {"base": base, "inbox": inbox, "data": base / "data", "late": files[-1]}
    if before is None:
        os.environ.pop("EDUSTAT_SALT_FILE", None)
    else:
        os.environ["EDUSTAT_SALT_FILE"] = before


@pytest.fixture
def any_share(monkeypatch):
    """In a city of 5 schools (2 accepted) one school is a third of the forms' rows plus the
    city scope: above the share at which a full rebuild is cheaper. The share is a speed
    heuristic, not a correctness one: lifted here so the delta path is what is tested."""
    monkeypatch.setattr(publish_delta, "MAX_CHANGED_SHARE", 1.0)


def _copy(city, tmp_path) -> tuple[Config, Path]:
    """The city's data dir and inbox copied; the copy's snapshot republished once (in full:
    no state is recorded for the copy's published dir) so the next publish can be a delta."""
    data, inbox = tmp_path / "data", tmp_path / "inbox"
    shutil.copytree(city["data"], data, symlinks=True)
    shutil.copytree(city["inbox"], inbox, symlinks=True)
    cfg = Config(data_dir=data, workers=1, incremental=True)
    from edustat.publish import salt_for

    with store.session(cfg.db_path) as con:
        res = publish(con, cfg.published_dir, salt=salt_for(cfg))
        assert res.mode == "full" and res.reason == "no state recorded for the snapshot in place"
    return cfg, inbox


def _drop_last_learner(path: Path) -> None:
    wb = openpyxl.load_workbook(path)
    ws = wb["HocSinh"] if "HocSinh" in wb.sheetnames else wb.worksheets[-2]
    ws.delete_rows(ws.max_row)
    wb.save(path)


def _check_delta_run(cfg: Config, inbox: Path, tmp_path: Path, run_id: str, **kw):
    from edustat.publish import salt_for

    before = snapshot_content(cfg.published_dir / SNAPSHOT_NAME)
    res = run_steps(cfg, inbox, run_id, **kw)
    assert res is not None and res.mode == "delta", res
    after = snapshot_content(cfg.published_dir / SNAPSHOT_NAME)
    assert after != before  # something was republished: the comparison below means something
    with store.session(cfg.db_path) as con:
        assert_same_as_full(con, cfg.published_dir, tmp_path / "full", salt_for(cfg))
    return before, after


def test_one_school_changed_delta_equals_full_and_rewrites_only_its_chunks(city, tmp_path, any_share, monkeypatch):
    """One school re-sent with a learner fewer: the delta equals a full publish. A large
    partition is written in chunks by school code / form scope (publish.chunk_of): the delta
    rewrites the chunks holding a changed group and hard-links the others; the tree equals a full
    publish's file by file, and read as analysts read it, it holds the snapshot's rows. (A delta
    of whole partitions: the withdrawn, late and next-period cases below.)"""
    from edustat import publish as pub

    monkeypatch.setattr(pub, "CHUNK_ROWS", 40)  # the small city's partitions split as a province's do
    cfg, inbox = _copy(city, tmp_path)
    tree = cfg.published_dir / "parquet"
    learners = tree / "core_learners" / f"year={YEAR}" / f"period={PERIOD}"
    inodes = {p.name: p.stat().st_ino for p in learners.iterdir()}
    assert len(inodes) >= 2 and all(pub.parse_chunk_name(n)[1] > 1 for n in inodes), inodes
    one = sorted(inbox.glob("*.xlsx"))[0]
    code = one.name[:8]
    _drop_last_learner(one)
    before, after = _check_delta_run(cfg, inbox, tmp_path, "d-chunks")
    assert after["rows.core_learners"][0] == before["rows.core_learners"][0] - 1
    after = {p.name: p.stat().st_ino for p in learners.iterdir()}
    n = pub.parse_chunk_name(next(iter(after)))[1]
    mine = pub.chunk_name(pub.chunk_of(code, n), n)
    assert after[mine] != inodes[mine]  # the changed school's chunk written anew
    assert {k: v for k, v in after.items() if k != mine} == {k: v for k, v in inodes.items() if k != mine}  # linked
    with duckdb.connect() as c:
        for f in learners.iterdir():  # every chunk holds whole schools, the ones chunk_of names
            i = pub.parse_chunk_name(f.name)[0]
            assert {pub.chunk_of(s, n) for (s,) in c.execute(f"SELECT DISTINCT school_code FROM '{f}'").fetchall()} == {i}
        for t in ("core_learners", "rpt_form_check", "validation_issue", "submission"):
            got = c.execute(f"SELECT count(*) FROM read_parquet('{tree / t}/**/*.parquet', hive_partitioning = true)").fetchone()
            with duckdb.connect(str(cfg.published_dir / SNAPSHOT_NAME), read_only=True) as s:
                assert got == s.execute(f"SELECT count(*) FROM {t}").fetchone(), t


def test_a_withdrawn_school_delta_equals_full(city, tmp_path, any_share):
    cfg, inbox = _copy(city, tmp_path)
    sorted(inbox.glob("*.xlsx"))[1].unlink()
    from edustat.publish import salt_for

    before = snapshot_content(cfg.published_dir / SNAPSHOT_NAME)
    res = run_steps(cfg, inbox, "d-gone")
    assert res is not None and res.mode == "delta", res
    assert snapshot_content(res.snapshot) != before
    with store.session(cfg.db_path) as con:
        assert_same_as_full(con, cfg.published_dir, tmp_path / "full", salt_for(cfg))


def test_a_late_school_delta_equals_full(city, tmp_path, any_share):
    cfg, inbox = _copy(city, tmp_path)
    shutil.copy2(city["late"], inbox / city["late"].name)
    before, after = _check_delta_run(cfg, inbox, tmp_path, "d-late")
    assert after["rows.submission"][0] == before["rows.submission"][0] + 1


def test_the_next_period_delta_equals_full_and_reuses_the_first_periods_parquet(city, tmp_path, any_share):
    cfg, inbox = _copy(city, tmp_path)
    nxt = tmp_path / "cuoi_nam"
    generate_city(nxt, schools=2, seed=12, school_year=YEAR, period="cuoi_nam", export_share=0.0, error_rate=0.0)
    learners = cfg.published_dir / "parquet" / "core_learners" / f"year={YEAR}" / f"period={PERIOD}" / "part-0.parquet"
    ino = learners.stat().st_ino
    _check_delta_run(cfg, nxt, tmp_path, "d-next", period="cuoi_nam")
    assert learners.stat().st_ino == ino  # dau_nam's file hard-linked into the new tree, not rewritten
    assert (learners.parents[1] / "period=cuoi_nam" / "part-0.parquet").is_file()


def test_a_delta_published_snapshot_has_no_personal_data(city, tmp_path, any_share):
    from test_privacy import _needles, scan_outputs

    cfg, inbox = _copy(city, tmp_path)
    _drop_last_learner(sorted(inbox.glob("*.xlsx"))[2])
    shutil.copy2(city["late"], inbox / city["late"].name)
    res = run_steps(cfg, inbox, "d-private")
    assert res.mode == "delta"
    needles = _needles(city["base"] / "every")
    assert needles.names and needles.numbers
    leaks = {k: v for k, v in scan_outputs(needles, cfg.data_dir, None).items()
             if k.startswith(("snapshot:", "parquet:"))}
    assert leaks == {}
    # and the state the delta keeps in the officer's database is never published
    with duckdb.connect(str(res.snapshot), read_only=True) as c:
        names = {r[0] for r in c.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert not {n for n in names if n.startswith("publish_delta")}


# ---------------------------------------------------------------------------------------
# Fallbacks, on the tiny curated DB of tests/test_publish.py
# ---------------------------------------------------------------------------------------

@pytest.fixture
def curated(tmp_path):
    (tmp_path / "curated").mkdir()
    con = _make_curated(tmp_path / "curated" / "edustat.duckdb")
    yield con
    con.close()


def _change_one(con) -> None:
    con.execute("UPDATE core_learners SET sex = '02' WHERE student_code = 'HS001' AND period = 'cuoi_nam'")


def test_a_second_publish_is_a_delta_and_equals_full(curated, tmp_path):
    out = tmp_path / "p"
    first = publish(curated, out, salt=SALT)
    assert (first.mode, first.reason) == ("full", "no state recorded for the snapshot in place")
    _change_one(curated)
    curated.execute("INSERT INTO validation_issue VALUES ('r2', '79000702', 'learners', 3, 'D', 'personal_id', "
                    "'x', 'error', '079215001234', 'Số 079215001234 sai')")
    dictionary = (out / "DATA_DICTIONARY.md").stat().st_ino
    res = publish(curated, out, salt=SALT)
    assert res.mode == "delta"
    assert (out / "DATA_DICTIONARY.md").stat().st_ino == dictionary  # kept, not written again
    assert res.tables == {"core_learners": 3, "core_staff": 2, "submission": 1, "validation_issue": 4}
    assert_same_as_full(curated, out, tmp_path / "full", SALT)
    with duckdb.connect(str(res.snapshot), read_only=True) as c:
        assert "079215001234" not in repr(c.execute("SELECT * FROM validation_issue").fetchall())
    nothing = publish(curated, out, salt=SALT)  # nothing changed: a delta of nothing
    assert nothing.mode == "delta"
    assert_same_as_full(curated, out, tmp_path / "full2", SALT)


def test_groups_changed_in_run_id_only_are_relabelled_and_equal_full(curated, tmp_path, monkeypatch, any_share):
    """Every run writes its run_id on every issue and register row: a group whose rows differ
    from the published ones in run_id only gets the new run_id in the copy (Plan.relabel); a
    group with another change too, or with two run_ids, is deleted and selected again."""
    curated.execute("""INSERT INTO validation_issue VALUES
        ('r1', '79000702', 'learners', 3, 'D', 'sex', 'learner_sex_code', 'error', 'Y', 'Mã không hợp lệ'),
        ('r1', '79000703', 'learners', 4, 'D', 'sex', 'learner_sex_code', 'error', 'Z', 'Mã không hợp lệ'),
        ('r1', '79000704', 'learners', 5, 'F', 'personal_id', 'learner_personal_id_format', 'error',
         '079215001234', 'Số 079215001234 sai')""")
    out = tmp_path / "p"
    assert publish(curated, out, salt=SALT).mode == "full"
    plans, real = [], publish_delta.plan

    def spy(*a, **k):
        plans.append(real(*a, **k))
        return plans[-1]
    monkeypatch.setattr(publish_delta, "plan", spy)
    curated.execute("UPDATE validation_issue SET run_id = 'r2'")  # the next run rewrote every issue
    curated.execute("UPDATE submission SET run_id = 'r2'")
    curated.execute("UPDATE validation_issue SET value = 'W' WHERE school_code = '79000702'")  # and changed one
    curated.execute("UPDATE validation_issue SET run_id = 'r3' WHERE school_code = '79000703'")  # two run ids after
    curated.execute("INSERT INTO validation_issue VALUES ('r2', '79000703', 'learners', 6, 'D', 'sex', "
                    "'learner_sex_code', 'error', 'Z', 'Mã không hợp lệ')")
    res = publish(curated, out, salt=SALT)
    assert res.mode == "delta"
    plan = plans[-1][0]
    assert plan.relabel == {"validation_issue": {("79000701",): "r2", ("79000704",): "r2"},
                            "submission": {("2022-2023", "dau_nam", "79000701"): "r2"}}
    assert set(plan.changed["validation_issue"]) == {("79000701",), ("79000702",), ("79000703",), ("79000704",)}
    assert_same_as_full(curated, out, tmp_path / "full", SALT)
    with duckdb.connect(str(res.snapshot), read_only=True) as c:
        assert "079215001234" not in repr(c.execute("SELECT * FROM validation_issue").fetchall())
        assert c.execute("SELECT DISTINCT run_id FROM validation_issue WHERE school_code = '79000704'").fetchall() == [("r2",)]


@pytest.mark.parametrize("how, why", [
    ("salt", "code, salt, tables or columns changed"),
    ("column", "code, salt, tables or columns changed"),
    ("table", "code, salt, tables or columns changed"),
    ("pseudonymise", "code, salt, tables or columns changed"),
    ("foreign", "not the one last published"),
    ("symlink", "not a regular file"),
    ("missing", "no snapshot in place"),
    ("wal", "write-ahead log"),
    ("too_much", "rows changed"),
    ("deltas", "delta publishes in a row"),
    ("other_dir", "no state recorded"),
    ("state_lost", "no state recorded"),
])
def test_falls_back_to_a_full_publish_when_it_must(curated, tmp_path, monkeypatch, how, why):
    out = tmp_path / "p"
    publish(curated, out, salt=SALT)
    snap = out / SNAPSHOT_NAME
    kw = {"salt": SALT}
    outside = tmp_path / "outside.duckdb"
    if how == "salt":
        kw["salt"] = "b" * 64
    elif how == "column":
        curated.execute("ALTER TABLE core_staff ADD COLUMN note VARCHAR")
    elif how == "table":
        curated.execute("CREATE TABLE core_rooms AS SELECT 'x' AS school_code")
    elif how == "pseudonymise":
        kw["pseudonymise"] = False
    elif how == "foreign":  # someone put another snapshot in place
        shutil.copy(snap, tmp_path / "other")
        os.replace(tmp_path / "other", snap)
    elif how == "symlink":
        shutil.copy(snap, outside)
        snap.unlink()
        snap.symlink_to(outside)
    elif how == "missing":
        snap.unlink()
    elif how == "wal":
        Path(f"{snap}.wal").write_bytes(b"")
    elif how == "too_much":
        curated.execute("UPDATE core_learners SET sex = '09'")
        curated.execute("UPDATE core_staff SET sex = '09'")
    elif how == "deltas":
        monkeypatch.setattr(publish_delta, "MAX_DELTAS", 2)
        for _ in range(2):
            _change_one(curated)
            curated.execute("UPDATE core_learners SET excel_row = excel_row + 1 WHERE period = 'cuoi_nam'")
            assert publish(curated, out, salt=SALT).mode == "delta"
    elif how == "other_dir":
        out = tmp_path / "elsewhere"
    elif how == "state_lost":
        curated.execute(f"DELETE FROM {publish_delta.STATE_TABLE}")
    _change_one(curated)
    res = publish(curated, out, **kw)
    assert res.mode == "full" and why in res.reason, res
    if how == "symlink":  # replaced by a regular file; the file the link named is untouched
        assert not snap.is_symlink() and outside.stat().st_size > 0
    assert_same_as_full(curated, out, tmp_path / "full", kw["salt"]) if how != "pseudonymise" else None
    after = publish(curated, out, **kw)  # and the next one is a delta again
    assert after.mode == "delta", after


def test_a_parquet_file_changed_in_place_is_rewritten(curated, tmp_path):
    out = tmp_path / "p"
    publish(curated, out, salt=SALT)
    staff = out / "parquet" / "core_staff" / "year=2022-2023" / "period=dau_nam" / "part-0.parquet"
    staff.write_bytes(b"not parquet")  # same inode, another size and mtime
    planted = out / "parquet" / "submission" / "year=2022-2023" / "period=dau_nam" / "part-0.parquet"
    planted.unlink()
    planted.symlink_to(tmp_path / "nowhere.parquet")
    # a directory of the old tree swapped for a link to a copy elsewhere (same files)
    school = out / "parquet" / "core_school"
    if school.exists():
        shutil.rmtree(school)
    issues = out / "parquet" / "validation_issue"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.link(issues / "part-0.parquet", elsewhere / "part-0.parquet")  # the very file, recorded identity and all
    shutil.rmtree(issues)
    issues.symlink_to(elsewhere, target_is_directory=True)
    (out / "DATA_DICTIONARY.md").write_text("edited by hand\n", encoding="utf-8")  # not the one recorded: rewritten
    _change_one(curated)
    res = publish(curated, out, salt=SALT)
    assert res.mode == "delta"
    assert not planted.is_symlink() and not issues.is_symlink()
    assert (elsewhere / "part-0.parquet").stat().st_nlink == 1  # not linked from outside the tree
    assert_same_as_full(curated, out, tmp_path / "full", SALT)


def test_a_snapshot_replaced_during_the_copy_means_a_full_publish(curated, tmp_path, monkeypatch):
    out = tmp_path / "p"
    publish(curated, out, salt=SALT)
    real = publish_delta.copy_snapshot

    def racing(published_dir, tmp_db, ident):
        snap = Path(published_dir) / SNAPSHOT_NAME
        shutil.copy(snap, tmp_path / "x")
        os.replace(tmp_path / "x", snap)  # another file in place between plan and copy
        return real(published_dir, tmp_db, ident)

    monkeypatch.setattr(publish_delta, "copy_snapshot", racing)
    _change_one(curated)
    res = publish(curated, out, salt=SALT)
    assert res.mode == "full" and "changed while it was being copied" in res.reason
    assert sorted(p.name for p in out.iterdir()) == ["DATA_DICTIONARY.md", "README.md", "edustat.duckdb", "parquet"]
    assert_same_as_full(curated, out, tmp_path / "full", SALT)


# ---------------------------------------------------------------------------------------
# kill -9 during a delta publish
# ---------------------------------------------------------------------------------------

PUBLISHER = textwrap.dedent("""
    import sys
    import duckdb
    from edustat.publish import publish
    con = duckdb.connect(sys.argv[1])
    res = publish(con, sys.argv[2], salt=sys.argv[3])
    print(res.mode)
""")


@pytest.mark.parametrize("point", ["publish:copied", "publish:written", "publish:swapped"])
def test_killed_during_a_delta_publish_then_rerun_equals_an_uninterrupted_one(tmp_path, point):
    db = tmp_path / "curated" / "edustat.duckdb"
    db.parent.mkdir()
    con = _make_curated(db)
    out = tmp_path / "p"
    publish(con, out, salt=SALT)
    _change_one(con)
    con.close()
    old = snapshot_content(out / SNAPSHOT_NAME)
    old_parquet = parquet_content(out / "parquet")
    env = {**os.environ, "EDUSTAT_CRASH_AT": point}
    proc = subprocess.run([sys.executable, "-c", PUBLISHER, str(db), str(out), SALT], env=env,
                          capture_output=True, text=True, timeout=300, start_new_session=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    now = snapshot_content(out / SNAPSHOT_NAME)  # opens: a whole DuckDB file either way
    if point == "publish:swapped":  # swapped in, state not recorded yet: the new snapshot
        assert now != old
    else:
        assert now == old and parquet_content(out / "parquet") == old_parquet
    rerun = subprocess.run([sys.executable, "-c", PUBLISHER, str(db), str(out), SALT],
                           capture_output=True, text=True, timeout=300, start_new_session=True)
    assert rerun.returncode == 0, rerun.stderr
    # killed before the swap: the state still matches the old snapshot, the rerun is a delta;
    # after it: the state no longer matches the file in place, the rerun rebuilds in full
    assert rerun.stdout.strip() == ("full" if point == "publish:swapped" else "delta")
    con = duckdb.connect(str(db))
    try:
        assert_same_as_full(con, out, tmp_path / "full", SALT)
    finally:
        con.close()


def test_a_previous_snapshot_duckdb_cannot_open_means_a_full_publish(curated, tmp_path, monkeypatch):
    out = tmp_path / "p"
    publish(curated, out, salt=SALT)
    real = publish_delta.copy_snapshot

    def garbled(published_dir, tmp_db, ident):
        real(published_dir, tmp_db, ident)
        with open(tmp_db, "r+b") as fh:  # the copy is not a DuckDB file any more
            fh.write(b"\0" * 8192)

    monkeypatch.setattr(publish_delta, "copy_snapshot", garbled)
    _change_one(curated)
    res = publish(curated, out, salt=SALT)
    assert res.mode == "full" and res.reason.startswith("delta failed"), res
    assert sorted(p.name for p in out.iterdir()) == ["DATA_DICTIONARY.md", "README.md", "edustat.duckdb", "parquet"]
    assert_same_as_full(curated, out, tmp_path / "full", SALT)


def test_a_reader_holding_the_old_snapshot_keeps_it_through_a_delta(curated, tmp_path):
    """The delta copies the file an analyst has open (read-only), patches the copy and swaps
    it in: the analyst's open connection still reads the old rows; a new open reads the new."""
    from test_publish import _start_reader

    curated.execute(
        "INSERT INTO core_learners SELECT school_year, period, '7900' || (i % 50), 'HS' || i, "
        "lpad(CAST(i AS VARCHAR), 12, '0'), 'Tên ' || i, DATE '2015-01-01', '01', NULL, i "
        "FROM core_learners, range(100, 20100) r(i) WHERE excel_row = 6"
    )
    out = tmp_path / "published"
    res = publish(curated, out, salt=SALT)
    proc, _, go = _start_reader(res.snapshot, tmp_path)
    try:
        curated.execute("DELETE FROM core_learners WHERE school_code = '79007'")
        res2 = publish(curated, out, salt=SALT)
        assert res2.mode == "delta" and res2.tables["core_learners"] == 20003 - 400
    finally:
        go.write_text("go")
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stdout.splitlines() == ["before 20003", f"after 20003 20002 {2015 * 20001 + 2014 + 2015}"]
    with duckdb.connect(str(res2.snapshot), read_only=True) as c:
        assert c.execute("SELECT count(*) FROM core_learners").fetchone() == (20003 - 400,)
    assert_same_as_full(curated, out, tmp_path / "full", SALT)


def test_the_patched_copy_is_checkpointed_without_vacuuming(tmp_path):
    """publish_delta.checkpoint_copy: row groups with deleted rows beside appended ones are not
    rewritten (DuckDB's vacuum, most of a city delta's checkpoint); the rows read are the same;
    the instance's setting is put back as it was, also when the checkpoint fails."""
    con = duckdb.connect()
    con.execute("SET max_vacuum_tasks = 7")

    def row_groups(alias: str) -> int:
        return con.execute(f"SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('{alias}.t')").fetchone()[0]

    groups = {}
    for alias, vacuum in (("plain", True), ("patched", False)):
        con.execute(f"ATTACH '{tmp_path / alias}.duckdb' AS {alias}")
        con.execute(f"CREATE TABLE {alias}.t AS SELECT i, i % 100 AS g, i / 7 AS v FROM range(200000) r(i)")
        con.execute(f"CHECKPOINT {alias}")
        con.execute(f"DELETE FROM {alias}.t WHERE g < 40")  # the changed groups' rows, in every row group
        con.execute(f"INSERT INTO {alias}.t SELECT i, i % 100, i / 7 + 1 FROM range(200000) r(i) WHERE i % 100 < 40")
        if vacuum:
            con.execute(f"CHECKPOINT {alias}")
        else:
            publish_delta.checkpoint_copy(con, alias)
        groups[alias] = row_groups(alias)
        assert con.execute("SELECT current_setting('max_vacuum_tasks')").fetchone()[0] == 7
    assert groups["patched"] > groups["plain"], groups  # the plain checkpoint merged row groups
    assert con.execute("SELECT count(*), sum(hash(i, g, v)) FROM plain.t").fetchone() == \
        con.execute("SELECT count(*), sum(hash(i, g, v)) FROM patched.t").fetchone()
    con.execute("DETACH patched")
    con.execute(f"ATTACH '{tmp_path / 'patched'}.duckdb' AS again (READ_ONLY)")
    assert con.execute("SELECT count(*) FROM again.t WHERE g < 40 AND v = i / 7 + 1").fetchone()[0] == 80000
    with pytest.raises(duckdb.Error):
        publish_delta.checkpoint_copy(con, "no_such_database")
    assert con.execute("SELECT current_setting('max_vacuum_tasks')").fetchone()[0] == 7


def test_the_changed_groups_filter_selects_what_a_null_safe_match_selects():
    """publish_delta.groups_filter (constants, filtered in the scan) selects exactly the rows an
    IS NOT DISTINCT FROM match with the groups as a table selects: NULL keys, several leading
    values, one key or three, a group alone or many."""
    import itertools

    import pyarrow as pa

    con = duckdb.connect()
    vals = ["2022-2023", "2023-2024", None]
    con.execute("CREATE TABLE t (a VARCHAR, b VARCHAR, c VARCHAR, n INTEGER)")
    rows = list(itertools.product(vals, ["dau_nam", "cuoi_nam", None], ["79001", "79002", "city", "it's", None]))
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(*r, i) for i, r in enumerate(rows)])
    cases = [(["a", "b", "c"], [("2022-2023", "dau_nam", "79001")]),
             (["a", "b", "c"], [("2022-2023", "dau_nam", "79001"), ("2022-2023", "dau_nam", None),
                                (None, "cuoi_nam", "it's"), ("2023-2024", None, "city"), (None, None, None)]),
             (["a", "b", "c"], rows[::3]),
             (["c"], [("79002",), (None,)]),
             (["a", "b"], [("2023-2024", "cuoi_nam"), (None, "dau_nam")])]
    for keys, groups in cases:
        con.register("_g", pa.table({k: pa.array([g[i] for g in groups], pa.string()) for i, k in enumerate(keys)}))
        match = " AND ".join(f"g.{k} IS NOT DISTINCT FROM x.{k}" for k in keys)
        want = con.execute(f"SELECT n FROM t x WHERE EXISTS (SELECT 1 FROM _g g WHERE {match}) ORDER BY n").fetchall()
        con.unregister("_g")
        where, values = publish_delta.groups_filter(keys, groups)
        assert con.execute(f"SELECT n FROM t x WHERE {where} ORDER BY n", values).fetchall() == want, (keys, groups)
        assert want
