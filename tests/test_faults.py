"""Faults of the machine, proved on the real `edustat run` (the Prefect flow, a real DuckDB
file, real workbooks): SIGKILL of its process group at stage boundaries and inside the load,
a load failing once and retried by Prefect, a full disk, a read-only data dir, the database
held by another process, a second run while one is writing. After each, a rerun must leave
core_*, the register, the forms and the analysts' snapshot equal to an uninterrupted run.

The runs share the session's test-started Prefect server (PREFECT_API_URL), so each run costs
its own work, not a server start. `edustat.faults` is the hook: EDUSTAT_CRASH_AT / EDUSTAT_PAUSE_AT / EDUSTAT_FAULT.

The crash chain kills one run at each point of `CHAIN` in turn (each rerun is the next
crash's run), then runs to the end and compares. EDUSTAT_FAULT_POINTS=all (or a comma list)
kills at every point of `edustat.faults.POINTS` instead (slower: one run per point).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from edustat.faults import POINTS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
EDUSTAT = str(Path(sys.executable).parent / "edustat")
YEAR, PERIOD = "2022-2023", "dau_nam"
# one kill per kind of state a crash can leave: nothing written; staging inside the open load
# transaction (the data loss); committed but not checkpointed (WAL replay); the forms
# starting while the feedback workers write (nothing of the feedback recorded yet); feedback
# written, register not yet told; forms built; snapshot temp files beside the old snapshot;
# after the summary; a per-file cache entry half written (issue 12). Every crash also leaves the
# lock file of a dead run (taken over next).
CHAIN = ("read", "cache:written", "load:staged", "load:committed", "forms", "feedback:written", "publish:written",
         "artifacts")
IGNORED = {"run_id", "received_at", "published_at", "started_at", "finished_at", "generated_at"}



@pytest.fixture(scope="module")
def api(tmp_path_factory, prefect_harness):
    """The environment of every run of this module: the session's test-started Prefect server
    (a server process of its own, as `edustat server` serves an officer's runs; a run killed
    with its process group never takes it down), the fault hooks of the parent dropped."""
    from prefect.settings import PREFECT_API_URL

    home = tmp_path_factory.mktemp("prefect-faults-home")
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_LOGGING_LEVEL="WARNING")
    for k in ("PREFECT_API_KEY", "EDUSTAT_CRASH_AT", "EDUSTAT_PAUSE_AT", "EDUSTAT_FAULT", "EDUSTAT_CONFIG"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def inbox(tmp_path_factory):
    from edustat.synth import generate_city

    d = tmp_path_factory.mktemp("faults-city") / "inbox"
    generate_city(d, schools=4, seed=9, school_year=YEAR, period=PERIOD, export_share=0.25, error_rate=0.002)
    return d


def run(api: dict, inbox: Path, data: Path, timeout: float = 300, warm: bool = True,
        **fault_env) -> subprocess.CompletedProcess:
    """`edustat run` in its own process group (what SIGKILL of the group hits): forked from a
    process that has imported what a run imports (tests/warmrun.py; the officer's served runs
    start so too), or with `warm=False` the console script in a new interpreter (the clean run:
    what a cold start does is proven once)."""
    env = dict(api, **fault_env)
    if warm and not os.environ.get("EDUSTAT_TESTS_COLD"):  # EDUSTAT_TESTS_COLD=1: every run a new interpreter
        from tests.warmrun import zygote

        args = ["run", "--year", YEAR, "--period", PERIOD, "--inbox", str(inbox), "--data-dir", str(data)]
        return zygote(api).run(args, env, cwd=ROOT, timeout=timeout)
    p = subprocess.Popen([EDUSTAT, "run", "--year", YEAR, "--period", PERIOD, "--inbox", str(inbox), "--data-dir", str(data)],
                         env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"edustat run timed out\n{out}\n{err}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.fixture(scope="module")
def clean(api, inbox, tmp_path_factory):
    """The uninterrupted run everything is compared with."""
    data = tmp_path_factory.mktemp("clean") / "data"
    r = run(api, inbox, data, warm=False)
    assert r.returncode == 0, r.stderr
    return data


# ---------------------------------------------------------------------------------------
# What "equal to an uninterrupted run" means
# ---------------------------------------------------------------------------------------

def _table(con, name: str, data: Path) -> pd.DataFrame:
    df = con.execute(f'select * from "{name}"').df()
    df = df.drop(columns=[c for c in df.columns if c in IGNORED])
    for col in ("raw_path", "feedback_path"):  # paths inside the data dir, compared relative to it
        if col in df.columns:
            df[col] = df[col].map(lambda p: os.path.relpath(p, data) if isinstance(p, str) else p)
    df = df.astype(str)
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def content(data: Path) -> dict[str, pd.DataFrame]:
    """core_*, the register, the issues, the forms (curated DB) and every snapshot table."""
    out = {}
    con = duckdb.connect(str(data / "curated" / "edustat.duckdb"), read_only=True)
    try:
        names = [r[0] for r in con.execute("select table_name from information_schema.tables where table_schema = 'main'").fetchall()]
        for n in names:
            if n.startswith(("core_", "rpt_")) or n in ("submission", "validation_issue"):
                out[f"curated.{n}"] = _table(con, n, data)
    finally:
        con.close()
    con = duckdb.connect(str(data / "curated" / "published" / "edustat.duckdb"), read_only=True)
    try:
        names = [r[0] for r in con.execute("select table_name from information_schema.tables where table_schema = 'main'").fetchall()]
        for n in names:
            if n != "publish_info":
                out[f"snapshot.{n}"] = _table(con, n, data)
    finally:
        con.close()
    return out


def assert_same(got: Path, want: Path) -> None:
    a, b = content(got), content(want)
    assert sorted(a) == sorted(b)
    assert b["curated.core_learners"].shape[0] > 0 and b["curated.rpt_form_cell"].shape[0] > 0
    for name in b:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    forms = sorted(p.relative_to(want) for p in (want / "curated" / "reports").rglob("*.xlsx"))
    assert forms and forms == sorted(p.relative_to(got) for p in (got / "curated" / "reports").rglob("*.xlsx"))


def leftovers(data: Path) -> list[Path]:
    """Temp files and the lock a finished run must not leave."""
    pats = ("*.part", "*.tmp", ".*.tmp-*", ".*.old-*", ".repair-*")
    found = [p for pat in pats for p in data.rglob(pat)]
    return found + [p for p in (data / "edustat.lock",) if p.exists()]


def _points() -> tuple[str, ...]:
    chosen = os.environ.get("EDUSTAT_FAULT_POINTS")
    if not chosen:
        return CHAIN
    return POINTS if chosen == "all" else tuple(chosen.split(","))


# ---------------------------------------------------------------------------------------
# SIGKILL at stage boundaries and inside the load
# ---------------------------------------------------------------------------------------

def same_salt(clean: Path, data: Path) -> None:
    """Pseudonyms depend on the salt; two data dirs compared must share it. The salt lives
    beside the data dir (`.<data dir name>.pseudonym_salt`, edustat.config), never inside it."""
    salt = clean.parent / f".{clean.name}.pseudonym_salt"
    assert salt.exists(), "the clean run published with a salt beside its data dir"
    data.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(salt, data.parent / f".{data.name}.pseudonym_salt")


def test_killed_at_each_point_then_rerun_equals_an_uninterrupted_run(api, inbox, clean, tmp_path):
    data = tmp_path / "data"
    same_salt(clean, data)
    seen_tmp = False
    for point in _points():
        r = run(api, inbox, data, EDUSTAT_CRASH_AT=point)
        assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-2000:])
        if point == "publish:written":  # the snapshot's temp files are there until the next run
            seen_tmp = bool(list((data / "curated" / "published").glob(".*.tmp-*")))
        if (data / "curated" / "edustat.duckdb").exists():  # whatever it holds, it is consistent
            from edustat.store import inconsistencies

            con = duckdb.connect(str(data / "curated" / "edustat.duckdb"), read_only=True)
            try:
                assert inconsistencies(con).empty, point
            finally:
                con.close()
    assert (data / "edustat.lock").exists(), "a killed run leaves its lock file (stale, taken over next)"
    dead = json.loads((data / "edustat.lock").read_text(encoding="utf-8"))["pid"]
    r = run(api, inbox, data)
    assert r.returncode == 0, r.stderr
    assert_same(data, clean)
    log = "\n".join(p.read_text(encoding="utf-8") for p in (data / "logs").glob("*.log"))
    assert f"'pid': {dead}" in log  # the takeover of the dead run's lock is logged
    assert not leftovers(data)
    assert seen_tmp or "publish:written" not in _points()


def test_a_load_that_fails_once_is_retried_by_prefect_to_the_same_result(api, inbox, clean, tmp_path):
    data = tmp_path / "data"
    same_salt(clean, data)
    # the first attempt stages and writes everything, then fails before its commit
    r = run(api, inbox, data, EDUSTAT_FAULT="load:written:EIO:1")
    assert r.returncode == 0, r.stderr
    log = "\n".join(p.read_text(encoding="utf-8") for p in (data / "logs").glob("*.log"))
    # the first attempt did fail (and the run completed: Prefect retried it)
    assert "injected fault EIO at load:written (hit 1)" in log and "(hit 2)" not in log
    assert_same(data, clean)


# ---------------------------------------------------------------------------------------
# Clear faults: one Vietnamese line, the detail in the log file, data intact
# ---------------------------------------------------------------------------------------

def _one_line(r: subprocess.CompletedProcess, words: str) -> None:
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith("Lỗi: ") and words in lines[0], lines[0]
    assert "Traceback" not in r.stderr + r.stdout


def test_disk_full_says_so_in_one_line_and_keeps_the_data(api, inbox, clean, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(clean, data, symlinks=True)
    shutil.rmtree(data / "cache")  # else nothing changed and the run skips the load (issue 12)
    before = content(data)
    r = run(api, inbox, data, EDUSTAT_FAULT="load:staged:ENOSPC")
    _one_line(r, "ổ đĩa đã đầy")
    log = "\n".join(p.read_text(encoding="utf-8") for p in (data / "logs").glob("*.log"))
    assert "Traceback" in log and "No space left on device" in log
    after = content(data)
    for name in before:
        pd.testing.assert_frame_equal(after[name], before[name], obj=name)


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                           capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=20)


def test_a_really_full_disk_says_so(api, inbox, clean, tmp_path):
    """A real ENOSPC from the kernel (a small tmpfs; skipped where mounting is not allowed)."""
    mnt = tmp_path / "small"
    # room for a copy of the clean data dir and a little more, which the filler then takes
    used = sum(p.stat().st_size for p in clean.rglob("*") if p.is_file() and not p.is_symlink())
    if not _mount_tmpfs(mnt, f"{used // (1 << 20) + 16}m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        data = mnt / "data"
        shutil.copytree(clean, data, symlinks=True)
        filler = mnt / "filler"
        with open(filler, "wb") as fh:  # fill what is left
            try:
                while True:
                    fh.write(b"\0" * (1 << 20))
            except OSError:
                pass
        try:  # and the last blocks
            with open(mnt / "filler2", "wb") as fh:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        except OSError:
            pass
        before = content(data)
        r = run(api, inbox, data)
        _one_line(r, "ổ đĩa đã đầy")
        after = content(data)
        for name in before:
            pd.testing.assert_frame_equal(after[name], before[name], obj=name)
    finally:
        _umount(mnt)


def test_read_only_data_dir_says_so(api, inbox, clean, tmp_path):
    mnt = tmp_path / "ro"
    if not _mount_tmpfs(mnt, "64m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        shutil.copytree(clean, mnt / "data", symlinks=True)
        assert subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True).returncode == 0
        r = run(api, inbox, mnt / "data")
        _one_line(r, "chỉ cho đọc")
    finally:
        _umount(mnt)


def test_database_held_by_another_process_says_so(api, inbox, clean, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(clean, data, symlinks=True)
    db = data / "curated" / "edustat.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time\n"
                               f"con = duckdb.connect({str(db)!r})\nprint('ready', flush=True)\ntime.sleep(600)"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        r = run(api, inbox, data)
        _one_line(r, "đang được một tiến trình khác mở")
        assert f"PID {holder.pid}" in r.stderr
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


# ---------------------------------------------------------------------------------------
# One writer at a time, with two real `edustat run` processes
# ---------------------------------------------------------------------------------------

def test_a_second_run_refuses_while_the_first_writes(api, inbox, clean, tmp_path):
    """(The first is then killed inside its load: what the next run does with that state and
    with its stale lock is the crash chain's `load:staged`.)"""
    data = tmp_path / "data"
    marker = tmp_path / "paused"
    env = dict(api, EDUSTAT_PAUSE_AT="load:staged", EDUSTAT_PAUSE_FILE=str(marker))
    first = subprocess.Popen([EDUSTAT, "run", "--year", YEAR, "--period", PERIOD, "--inbox", str(inbox), "--data-dir", str(data)],
                             env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():  # the first run is inside its load transaction, holding the lock
            assert first.poll() is None, "the first run ended before its load"
            assert time.monotonic() < deadline
            time.sleep(0.5)
        second = run(api, inbox, data)
        _one_line(second, "một lượt chạy edustat khác đang ghi")
        assert f"tiến trình {first.pid}" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert (data / "edustat.lock").exists()


def test_files_holding_personal_data_are_private_and_the_snapshot_is_not(clean):
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(clean / "curated" / "edustat.duckdb") == 0o600
    feedback = list((clean / "curated" / "feedback").rglob("*.xlsx"))
    assert feedback and all(mode(p) == 0o600 for p in feedback)
    umask = os.umask(0)
    os.umask(umask)
    assert mode(clean / "curated" / "published" / "edustat.duckdb") == 0o666 & ~umask
    assert mode(clean / "curated") == 0o777 & ~umask  # analysts reach published/ through it
    forms = list((clean / "curated" / "reports").rglob("*.xlsx"))
    assert forms and all(mode(p) == 0o666 & ~umask for p in forms)


# ---------------------------------------------------------------------------------------
# The register against core: the state the old loader left, repaired or refused
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded_once(clean, inbox):
    """The uninterrupted run's data dir, with its core for comparison."""
    from edustat import store
    from edustat.config import load_config

    cfg = load_config(None, clean)
    con = duckdb.connect(str(cfg.db_path), read_only=True)
    try:
        want = {t: con.execute(f"select * exclude (version) from core_{t} order by all").df() for t in store.SHEETS}
        school = con.execute("select school_code, file_hash from submission where in_core and n_learners > 0 "
                             "order by school_code limit 1").fetchone()
    finally:
        con.close()
    files = sorted(p for p in inbox.iterdir() if p.suffix == ".xlsx")
    return {"cfg": cfg, "want": want, "school": school, "files": files}


@pytest.fixture()
def loaded(loaded_once, tmp_path):
    """A copy of that data dir to damage (the register's raw_path still names the kept raw
    files of the original, which the tests only read)."""
    from edustat import store
    from edustat.config import load_config

    cfg = load_config(None, tmp_path / "data")
    shutil.copytree(loaded_once["cfg"].data_dir, cfg.data_dir, symlinks=True)
    con = store.connect(cfg.db_path)
    yield {**loaded_once, "cfg": cfg, "con": con}
    con.close()


def _half_staged(con, school_code: str, file_hash: str) -> None:
    """What a SIGKILL in the old loader's staging left, then its rerun: raw_/stg_ learners and
    staff of the file only partly there, core without them, the register saying accepted."""
    for t in ("learners", "staff"):
        for layer in ("raw", "stg"):
            con.execute(f"delete from {layer}_{t} where file_hash = ? and excel_row > 20", [file_hash])
        con.execute(f"delete from core_{t} where school_code = ?", [school_code])
    con.execute("update submission set loaded_rows = 0, status = 'accepted' where file_hash = ?", [file_hash])


def test_the_start_of_a_run_repairs_what_the_old_loader_lost(loaded):
    from edustat import store
    from edustat.pipeline import check_consistency

    con, (code, h) = loaded["con"], loaded["school"]
    _half_staged(con, code, h)
    bad = store.inconsistencies(con)
    assert set(bad["school_code"]) == {code}
    # the load's audit of its own collection (filtered inside, not after) finds the same; another none
    pd.testing.assert_frame_equal(store.inconsistencies(con, YEAR, PERIOD), bad)
    assert store.inconsistencies(con, YEAR, "cuoi_nam" if PERIOD == "dau_nam" else "dau_nam").empty
    assert {"loaded_rows", "core rows: learners", "staging incomplete: learners"} <= set(bad["problem"])
    repaired = check_consistency(con, loaded["cfg"], "second")
    assert set(repaired["school_code"]) == {code}
    assert store.inconsistencies(con).empty
    for t, want in loaded["want"].items():
        got = con.execute(f"select * exclude (version) from core_{t} order by all").df()
        pd.testing.assert_frame_equal(got, want, obj=t)
    name = con.execute("select file_name from submission where file_hash = ?", [h]).fetchone()[0]
    assert name == next(p.name for p in loaded["files"] if code in p.name)  # still the school's own file name


def test_an_unrepairable_register_stops_the_run_in_vietnamese(loaded):
    from edustat.pipeline import StoreInconsistent, check_consistency, fault_text

    con, (code, h) = loaded["con"], loaded["school"]
    _half_staged(con, code, h)
    # the kept raw copy is gone (deleted by hand, a disk replaced)
    con.execute("update submission set raw_path = ? where file_hash = ?", [str(loaded["cfg"].raw_dir / "gone.xlsx"), h])
    with pytest.raises(StoreInconsistent) as err:
        check_consistency(con, loaded["cfg"], "second")
    text = fault_text(err.value)
    assert text and code in text and "không nhất quán" in text and "tệp gốc" in text


def test_a_rerun_of_the_same_files_restages_them(loaded):
    """Staging is keyed by file and replaced, never skipped because a hash is 'already there'."""
    from edustat import store
    from edustat.pipeline import run_collection

    con, (code, h) = loaded["con"], loaded["school"]
    _half_staged(con, code, h)
    run_collection(con, loaded["files"], loaded["cfg"], YEAR, PERIOD, run_id="again", workers=1)
    assert store.inconsistencies(con).empty
    for t, want in loaded["want"].items():
        got = con.execute(f"select * exclude (version) from core_{t} order by all").df()
        pd.testing.assert_frame_equal(got, want, obj=t)


def test_a_failing_load_leaves_nothing_behind(loaded, monkeypatch):
    """A fault anywhere inside the load (here after staging) rolls back staging too."""
    from edustat import store
    from edustat.pipeline import run_collection

    con = loaded["con"]
    before = {f"{layer}_{t}": con.execute(f"select count(*) from {layer}_{t}").fetchone()[0]
              for layer in ("raw", "stg", "core") for t in store.SHEETS}
    before["submission"] = con.execute("select count(*) from submission").fetchone()[0]
    other = loaded["cfg"].data_dir.parent / "other-inbox"
    other.mkdir()
    from edustat.synth import generate_city

    generate_city(other, schools=2, seed=77, school_year=YEAR, period=PERIOD)
    monkeypatch.setenv("EDUSTAT_FAULT", "load:staged:ENOSPC")
    with pytest.raises(OSError):
        run_collection(con, sorted(other.glob("*.xlsx")), loaded["cfg"], YEAR, PERIOD, run_id="full-disk", workers=1)
    after = {k: con.execute(f"select count(*) from {k}").fetchone()[0] for k in before}
    assert after == before


def test_a_rerun_does_not_audit_again_the_database_the_last_run_left_audited(clean, monkeypatch):
    """issue 12: the uninterrupted run recorded the database file it left (its load audited the
    whole collection, after a prepare that audited every collection): the next run's prepare
    neither opens it nor audits it again."""
    from edustat import pipeline, store
    from edustat.config import load_config
    from flows.collect import prepare

    cfg = load_config(None, clean)
    assert pipeline.audited_unchanged(cfg)
    monkeypatch.setattr(pipeline, "check_consistency", lambda *a, **k: pytest.fail("audited again"))
    monkeypatch.setattr(store, "session", lambda *a, **k: pytest.fail("the database opened"))
    assert prepare.fn(cfg, "next") == {"removed": 0, "repaired": 0}


@pytest.mark.parametrize("how", ["checkpointed", "left in the WAL", "a copy in its place"])
def test_any_change_to_the_database_since_makes_the_next_run_audit(clean, tmp_path, monkeypatch, how):
    """The record names one closed file: a change checkpointed into it (its mtime put back,
    as a clock too coarse to tell would), a change only in the WAL (a writer killed before its
    checkpoint), or another file put in its place, and the next prepare audits — and drops the
    load's stamps of what core was written from, which only a file this code left may keep."""
    from edustat import pipeline
    from edustat.config import load_config
    from flows.collect import prepare

    cfg = load_config(None, tmp_path / "data")
    shutil.copytree(clean, cfg.data_dir, symlinks=True)
    assert not pipeline.audited_unchanged(cfg)  # a copy is another file: the original's record is not its
    assert pipeline.record_audited(cfg) and pipeline.audited_unchanged(cfg)
    st = os.stat(cfg.db_path)
    if how == "a copy in its place":
        shutil.copy2(cfg.db_path, tmp_path / "copy.duckdb")
        os.replace(tmp_path / "copy.duckdb", cfg.db_path)
    else:
        write = (f"import duckdb, os; con = duckdb.connect({str(cfg.db_path)!r}); "
                 "con.execute('delete from core_staff where rowid = (select min(rowid) from core_staff)'); "
                 + ("con.close()" if how == "checkpointed" else "os._exit(0)"))
        subprocess.run([sys.executable, "-c", write], check=True)
        assert Path(f"{cfg.db_path}.wal").exists() == (how == "left in the WAL")
        os.utime(cfg.db_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not pipeline.audited_unchanged(cfg)
    con = duckdb.connect(str(cfg.db_path), read_only=True)
    assert con.execute("select count(*) from incremental_core_written").fetchone()[0] > 0  # the run's stamps
    con.close()
    audited = []
    monkeypatch.setattr(pipeline, "check_consistency", lambda con, cfg, run_id: audited.append(run_id) or pd.DataFrame())
    prepare.fn(cfg, "next")
    assert audited == ["next"]
    # what core was written from is proven again (store.write_run's stamps not trusted in this file)
    con = duckdb.connect(str(cfg.db_path), read_only=True)
    assert con.execute("select count(*) from incremental_core_written").fetchone() == (0,)
    con.close()


def test_the_audited_record_follows_no_link_and_a_failed_write_leaves_none(clean, tmp_path, monkeypatch):
    """The record is a file of the data dir like any other: a link planted at its name is no
    record (the next prepare audits), a link at its temporary name is removed, not written
    through, and a write that fails (a full disk) leaves no record and does not fail the run."""
    import errno

    from edustat import pipeline
    from edustat.config import load_config

    cfg = load_config(None, tmp_path / "data")
    shutil.copytree(clean, cfg.data_dir, symlinks=True)
    record = pipeline._audited_path(cfg)
    assert pipeline.record_audited(cfg) and pipeline.audited_unchanged(cfg)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(record.read_text())
    record.unlink()
    record.symlink_to(elsewhere)
    assert not pipeline.audited_unchanged(cfg)  # the same content, behind a link: no record

    record.unlink()
    target = tmp_path / "target.txt"
    target.write_text("untouched")
    record.with_name(f".{record.name}.tmp-{os.getpid()}").symlink_to(target)
    assert pipeline.record_audited(cfg) and pipeline.audited_unchanged(cfg)
    assert target.read_text() == "untouched" and not record.is_symlink()

    real_open = os.open

    def full(path, flags, *a):
        if str(path).endswith(f".tmp-{os.getpid()}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *a)
    monkeypatch.setattr(os, "open", full)
    assert pipeline.record_audited(cfg) is False
    monkeypatch.undo()
    assert not record.exists() and not pipeline.audited_unchanged(cfg)


def test_fault_text_names_the_fault():
    import errno

    import duckdb as ddb

    from edustat.pipeline import WriterBusy, fault_text, is_operator_fault

    def chained(inner):
        try:
            try:
                raise inner
            except BaseException as e:
                raise RuntimeError("task failed") from e
        except RuntimeError as outer:
            return outer

    assert "ổ đĩa đã đầy" in fault_text(chained(OSError(errno.ENOSPC, "No space left on device")))
    assert "ổ đĩa đã đầy" in fault_text(ddb.IOException('IO Error: Could not write file "x.wal": No space left on device'))
    assert "chỉ cho đọc" in fault_text(OSError(errno.EROFS, "Read-only file system", "/d/edustat.lock"))
    assert "không có quyền" in fault_text(PermissionError(errno.EACCES, "Permission denied"))
    held = fault_text(ddb.IOException('IO Error: Could not set lock on file "e.duckdb": Conflicting lock is held in python3 (PID 4242)'))
    assert "PID 4242" in held and "tiến trình khác mở" in held
    assert "đang ghi" in fault_text(WriterBusy({"pid": 1, "host": "h", "user": "u", "started_at": "t"}, Path("l")))
    assert fault_text(ValueError("bug")) is None
    assert is_operator_fault(OSError(errno.ENOSPC, "x")) and not is_operator_fault(OSError(errno.EIO, "x"))
