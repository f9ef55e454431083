"""Incremental runs (issue 12), on real workbooks, a real DuckDB file and real xlsx outputs.

A warm run (every file from the per-file cache) must give exactly what a cold run gives: the
same core_*, register (apart from run ids / times), validation issues, feedback workbooks'
cells and forms' cells; a run after one school re-sends recomputes that school only; a corrupt,
stale or planted (symlink) cache entry is ignored and recomputed; entries are private. Clean
schools get a receipt unless `feedback_full_copy`. The steps run in the flow's order through
`run_steps` (the same functions `flows/collect.py` calls); one test runs the real Prefect flow.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import duckdb
import openpyxl
import pandas as pd
import pytest

from edustat import incremental, pipeline, store
from edustat.config import Config
from edustat.synth import generate_city
from scripts.compare_forms import compare_parts

YEAR, PERIOD = "2022-2023", "dau_nam"
IGNORED = {"run_id", "received_at", "published_at", "generated_at"}


@pytest.fixture(scope="module", autouse=True)
def _salt_env_restored():
    """cfg_for sets EDUSTAT_SALT_FILE for this module's runs; later modules (test_faults compares
    salts beside each data dir) must not inherit it."""
    before = os.environ.get("EDUSTAT_SALT_FILE")
    yield
    if before is None:
        os.environ.pop("EDUSTAT_SALT_FILE", None)
    else:
        os.environ["EDUSTAT_SALT_FILE"] = before


@pytest.fixture(scope="module")
def inbox(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("incr-city") / "inbox"
    generate_city(d, schools=6, seed=5, school_year=YEAR, period=PERIOD, export_share=0.34, error_rate=0.004)
    bad = d / "zz_not_a_workbook.xlsx"  # an unreadable file takes part too
    bad.write_text("xin chào, đây không phải tệp Excel", encoding="utf-8")
    return d


def cfg_for(data: Path, **kw) -> Config:
    os.environ.setdefault("EDUSTAT_SALT_FILE", str(data.parent / "salt"))
    return Config(data_dir=data, workers=1, **kw)


def run_steps(cfg: Config, inbox: Path, run_id: str) -> dict:
    """The collection's steps in the order of flows/collect.py (without Prefect)."""
    from edustat.submissions import discover
    from edustat.publish import salt_for

    with pipeline.sole_writer(cfg):
        pipeline.clean_temp_files(cfg)
        results = pipeline.ingest_all(discover(inbox), cfg, YEAR, PERIOD)
        outcome = incremental.unchanged_outcome(results, cfg, YEAR, PERIOD, run_id)
        reused = outcome is not None
        if outcome is None:
            frames = pipeline.assemble_all(results, cfg)
            issues = pipeline.validate_all(results, cfg, YEAR, PERIOD, frames)
            with store.session(cfg.db_path) as con:
                outcome = pipeline.load_all(con, results, issues, cfg, YEAR, PERIOD, run_id, frames=frames)
        with store.session(cfg.db_path) as con:
            writing = pipeline.start_feedbacks(con, outcome, results, cfg)  # written while the forms are built
            if cfg.incremental:
                forms = incremental.build_forms_incremental(con, cfg, YEAR, PERIOD)
                pipeline.finish_feedbacks(con, writing, outcome)
                published, _ = incremental.publish_if_changed(con, cfg, salt_for(cfg))
            else:  # as before issue 12
                from edustat.publish import publish
                from edustat.reports import build_reports

                forms = incremental.FormsOutcome(build_reports(con, cfg.reports_dir, YEAR, PERIOD, workers=1))
                pipeline.finish_feedbacks(con, writing, outcome)
                published = publish(con, cfg.published_dir, salt=salt_for(cfg), pseudonymise=cfg.pseudonymise_published)
    return {"stats": pipeline.cache_stats(results), "reused": reused, "outcome": outcome, "forms": forms,
            "published": published, "feedback_written": outcome.feedback_written}


# ---------------------------------------------------------------------------------------
# What "the same as a cold run" means
# ---------------------------------------------------------------------------------------

def _table(con, name: str, data: Path) -> pd.DataFrame:
    df = con.execute(f'select * from "{name}"').df()
    df = df.drop(columns=[c for c in df.columns if c in IGNORED])
    for col in ("raw_path", "feedback_path"):
        if col in df.columns:
            df[col] = df[col].map(lambda p: os.path.relpath(p, data) if isinstance(p, str) else p)
    df = df.astype(str)
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def db_content(data: Path) -> dict[str, pd.DataFrame]:
    con = duckdb.connect(str(data / "curated" / "edustat.duckdb"), read_only=True)
    try:
        names = [r[0] for r in con.execute("select table_name from information_schema.tables "
                                           "where table_schema = 'main'").fetchall()]
        return {n: _table(con, n, data) for n in names
                if n.startswith(("core_", "rpt_", "raw_", "stg_")) or n in ("submission", "validation_issue")}
    finally:
        con.close()


def xlsx_cells(path: Path) -> dict:
    """Every cell's value of every sheet, the row of the feedback's check time left out
    (openpyxl's read-only reader: the same values as a full load, at half the cost)."""
    wb = openpyxl.load_workbook(path, read_only=True)
    out = {}
    try:
        for ws in wb.worksheets:
            for row in ws.iter_rows(min_col=1):  # row[0] is column A
                if row and row[0].value == "Thời điểm kiểm tra":
                    continue
                for c in row:
                    if c.value is not None:
                        out[(ws.title, c.coordinate)] = c.value
    finally:
        wb.close()
    return out


_CELLS: dict[tuple, dict] = {}  # (path, size, mtime_ns, inode) → cells: the cold run is compared with four times


def _cells_of(path: Path) -> dict:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _CELLS:
        _CELLS[key] = xlsx_cells(path)
    return _CELLS[key]


def output_files(data: Path) -> dict[str, Path]:
    files = sorted((data / "curated" / "feedback").rglob("*.xlsx")) + sorted((data / "curated" / "reports").rglob("*.xlsx"))
    return {str(p.relative_to(data)): p for p in files}


def same_cells(a: Path, b: Path) -> bool:
    """Every sheet's cell values equal (xlsx_cells). Workbooks whose parts are equal byte for byte
    (scripts/compare_forms.py's comparison: docProps/core.xml, the save time, aside) hold equal
    cells, so those are not read cell by cell (openpyxl's reading was most of what comparing a
    run's outputs cost); any other pair is compared cell by cell, as before: the verdict is the
    cell comparison's either way."""
    return not compare_parts(a, b) or _cells_of(a) == _cells_of(b)


def assert_same(got: Path, want: Path) -> None:
    a, b = db_content(got), db_content(want)
    assert sorted(a) == sorted(b)
    assert len(b["core_learners"]) > 0 and len(b["rpt_form_cell"]) > 0 and len(b["validation_issue"]) > 0
    for name in b:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    oa, ob = output_files(got), output_files(want)
    assert sorted(oa) == sorted(ob)
    for name in ob:
        assert same_cells(oa[name], ob[name]), name


# ---------------------------------------------------------------------------------------
# Warm equals cold
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cold(inbox, tmp_path_factory) -> tuple[Path, dict]:
    data = tmp_path_factory.mktemp("cold") / "data"
    return data, run_steps(cfg_for(data), inbox, "cold")


@pytest.fixture(scope="module")
def primed(inbox, cold, tmp_path_factory) -> tuple[Path, dict]:
    """A data dir that ran the inbox once (its cache holds every file)."""
    data = tmp_path_factory.mktemp("primed") / "data"
    return data, run_steps(cfg_for(data), inbox, "prime")


def test_a_cold_run_misses_everything_and_fills_the_cache_privately(inbox, cold):
    data, r = cold
    n = len([p for p in inbox.iterdir() if not p.name.startswith(".") and p.suffix == ".xlsx"])
    assert r["stats"]["read_hits"] == 0 and r["stats"]["read_misses"] == n
    assert r["stats"]["validate_hits"] == 0 and r["stats"]["validate_misses"] >= 5
    entries = list((data / "cache").rglob("*.parquet"))
    assert len(entries) >= n + r["stats"]["validate_misses"]  # read entries + validation entries
    for p in entries:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert not list((data / "cache").rglob("*.tmp"))


def test_a_warm_run_from_the_cache_equals_a_cold_run(inbox, cold, primed, tmp_path):
    """Every file's read and validation come from the cache (of another data dir's run); the
    database, feedback and forms are built anew: all equal to the cold run's."""
    data = tmp_path / "data"
    shutil.copytree(primed[0] / "cache", data / "cache")
    r = run_steps(cfg_for(data), inbox, "warm")
    assert r["stats"]["read_misses"] == 0 and r["stats"]["validate_misses"] == 0
    assert not r["reused"]  # no database yet: cast and load ran on cached results
    assert_same(data, cold[0])


def test_nothing_changed_skips_load_feedback_forms_and_publish(inbox, cold, primed):
    data = primed[0]
    before = {p: p.stat().st_mtime_ns for p in (data / "curated").rglob("*.xlsx")}
    snap = (data / "curated" / "published" / "edustat.duckdb").stat().st_mtime_ns
    r = run_steps(cfg_for(data), inbox, "same")
    assert r["reused"] and r["stats"]["read_misses"] == 0 and r["stats"]["validate_misses"] == 0
    assert r["feedback_written"] == 0 and r["forms"].skipped and r["published"] is None
    assert {p: p.stat().st_mtime_ns for p in (data / "curated").rglob("*.xlsx")} == before
    assert (data / "curated" / "published" / "edustat.duckdb").stat().st_mtime_ns == snap
    # the reused outcome says what the last load said
    assert sorted(r["outcome"].submissions["status"]) == sorted(primed[1]["outcome"].submissions["status"])
    assert len(r["outcome"].issues) == len(primed[1]["outcome"].issues)
    assert r["forms"].result.failed_checks == primed[1]["forms"].result.failed_checks
    assert_same(data, cold[0])


def _resend_one(src: Path, dest: Path) -> str:
    """A copy of the inbox where one school re-sent its workbook with a learner fewer."""
    shutil.copytree(src, dest)
    one = sorted(p for p in dest.glob("7*.xlsx"))[0]
    wb = openpyxl.load_workbook(one)
    ws = wb["HocSinh"] if "HocSinh" in wb.sheetnames else wb.worksheets[-2]
    ws.delete_rows(ws.max_row)
    wb.save(one)
    return one.name[:8]


@pytest.fixture(scope="module")
def resent(inbox, tmp_path_factory) -> tuple[Path, str, Path]:
    """The inbox with one school's workbook re-sent (a learner fewer), its school code, and a
    data dir that ran both inboxes without any cache (`incremental=False`): what an incremental
    run of the same two inboxes must equal (made once: two tests compare with it)."""
    root = tmp_path_factory.mktemp("resent")
    changed = root / "inbox2"
    code = _resend_one(inbox, changed)
    plain = root / "plain" / "data"
    run_steps(cfg_for(plain, incremental=False), inbox, "plain-1")
    assert not (plain / "cache").exists()
    run_steps(cfg_for(plain, incremental=False), changed, "plain-2")
    return changed, code, plain


# ---------------------------------------------------------------------------------------
# Entries that must not be trusted
# ---------------------------------------------------------------------------------------

def test_corrupt_stale_and_planted_entries_are_ignored_and_recomputed(inbox, cold, primed, tmp_path):
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    shutil.copytree(primed[0] / "cache", data / "cache")
    reads = sorted(p for p in (data / "cache").rglob("*.parquet") if not p.name.endswith(".issues.parquet"))
    corrupt, stale, planted = reads[0], reads[1], reads[2]
    corrupt.write_bytes(corrupt.read_bytes()[: len(corrupt.read_bytes()) // 2])  # a half-written file
    tbl = pq.read_table(stale)
    meta = dict(tbl.schema.metadata)
    meta[b"edustat"] = meta[b"edustat"].replace(incremental.version_key({}, cfg_for(data).read_limits).encode(), b"0" * 64)
    pq.write_table(tbl.replace_schema_metadata(meta), stale)  # made by another version of the rules
    outside = tmp_path / "outside.parquet"
    shutil.copy(planted, outside)
    planted.unlink()
    planted.symlink_to(outside)  # never followed (read or written)
    before = outside.read_bytes()
    r = run_steps(cfg_for(data), inbox, "mixed")
    assert r["stats"]["read_misses"] == 3, r["stats"]
    assert outside.read_bytes() == before
    assert_same(data, cold[0])
    # the corrupt and stale entries were rewritten whole: the next run hits them
    r2 = run_steps(cfg_for(data), inbox, "again")
    assert r2["stats"]["read_misses"] == 1  # the symlinked one is read again, never replaced through the link


def test_same_cells_reads_cell_by_cell_unless_the_parts_are_equal(tmp_path):
    """A workbook saved again (new docProps times) is the same; one value changed is not, and a
    value changed in a sheet whose parts differ anyway (the check time) is caught cell by cell."""
    import time

    import xlsxwriter

    def book(path: Path, value, when: str) -> Path:
        wb = xlsxwriter.Workbook(str(path))
        ws = wb.add_worksheet("Tóm tắt")
        ws.write_string(0, 0, "Thời điểm kiểm tra")
        ws.write_string(0, 1, when)
        ws.write(1, 0, "Số học sinh")
        ws.write(1, 1, value)
        wb.close()
        return path

    a = book(tmp_path / "a.xlsx", 12, "01/10/2022 08:00")
    time.sleep(1.1)  # docProps/core.xml holds the second the book was made
    b = book(tmp_path / "b.xlsx", 12, "01/10/2022 08:00")
    assert not compare_parts(a, b) and a.read_bytes() != b.read_bytes()
    assert same_cells(a, b)
    assert not same_cells(a, book(tmp_path / "c.xlsx", 13, "01/10/2022 08:00"))
    assert not same_cells(a, book(tmp_path / "d.xlsx", "12", "01/10/2022 08:00"))  # text, not a number
    later = book(tmp_path / "e.xlsx", 12, "02/10/2022 09:30")  # only the check time differs
    assert compare_parts(a, later) and same_cells(a, later)
    assert not same_cells(later, book(tmp_path / "f.xlsx", 13, "03/10/2022 10:00"))


def test_the_version_key_follows_the_rules_and_the_config():
    limits = Config().read_limits
    base = incremental.version_key({}, limits)
    assert incremental.version_key({"student_age_for_grade": "notice"}, limits) != base
    assert incremental.version_key({}, Config(max_sheet_rows=1000).read_limits) != base
    assert incremental.version_key({}, limits) == base


def test_a_cached_file_sheets_cannot_be_used_unloaded(primed, inbox):
    from edustat.submissions import discover

    cfg = cfg_for(primed[0])
    path = [p for p in discover(inbox) if p.name.startswith("7")][0]
    fr = incremental.lookup(path, cfg.data_dir, incremental.version_key({}, cfg.read_limits), YEAR, PERIOD, cfg.raw_dir)
    assert fr is not None
    with pytest.raises(RuntimeError):
        fr.raw["learners"]
    with pytest.raises(RuntimeError):
        fr.raw.get("learners")
    counted = {sid: fr.rows(sid) for sid in ("rooms", "classes", "learners", "staff", "nosuch")}  # kept in the entry
    incremental.materialise([fr])
    assert fr.rows("learners") > 0
    assert counted == {sid: fr.rows(sid) for sid in counted}


def test_one_school_changed_recomputes_that_school_only(inbox, primed, resent, monkeypatch):
    """(Last of the tests using `primed`: it changes that data dir.)"""
    data = primed[0]
    changed_inbox, code, plain = resent
    cfg = cfg_for(data)
    before = {p.relative_to(data): p.stat().st_mtime_ns for p in (data / "curated").rglob("*.xlsx")}
    entries = _plant_for_pruning(data, cfg, inbox)
    subset_frames = []
    real = incremental.frames_of_subset
    monkeypatch.setattr(incremental, "frames_of_subset", lambda f, todo: subset_frames.append(real(f, todo)) or subset_frames[-1])
    r = run_steps(cfg, changed_inbox, "one")
    assert len(subset_frames) == 1 and subset_frames[0] is not None, "validated on the cast step's frames"
    # the cache keeps only what a run may use again: the re-sent school's earlier file, a stale
    # version's entry, a corrupt one and a symlink are gone; the other collection's entry stays
    left = {p.relative_to(data / "cache") for p in (data / "cache").rglob("*") if not p.is_dir()}
    assert entries["other_period"] in left
    assert not left & {entries[k] for k in ("old_file", "old_issues", "stale", "corrupt", "symlink")}
    # (the entries; beside them the collection's metadata indexes, edustat.metaindex)
    left = {p for p in left if p.suffix == ".parquet"}
    assert len([p for p in left if not str(p).endswith(".issues.parquet")]) == len(entries["current"]) + 1
    assert r["stats"]["read_misses"] == 1 and r["stats"]["validate_misses"] == 1
    assert not r["reused"] and r["feedback_written"] == 1
    assert sorted(r["forms"].scopes) == sorted(["city", code])
    after = {p.relative_to(data): p.stat().st_mtime_ns for p in (data / "curated").rglob("*.xlsx")}
    rewritten = {str(p) for p in after if before.get(p) != after[p]}
    assert rewritten and all(code in p or "_city" in p for p in rewritten), rewritten
    # and the result is what the same two runs give without any cache
    assert_same(data, plain)


def test_a_failure_recording_the_build_leaves_the_scopes_to_render_again(inbox, resent, tmp_path, monkeypatch):
    """The scopes an incremental build rendered are marked done in the transaction that records
    the build: when recording fails (a kill, a full disk), neither is written, and the next run
    renders those scopes again and records its build — it does not skip them as done."""
    from edustat import formbuild, period_lock
    from edustat.submissions import discover

    data = tmp_path / "data"
    cfg = cfg_for(data)
    run_steps(cfg, inbox, "first")
    changed_inbox, code, _ = resent
    with pipeline.sole_writer(cfg):
        results = pipeline.ingest_all(discover(changed_inbox), cfg, YEAR, PERIOD)
        frames = pipeline.assemble_all(results, cfg)
        issues = pipeline.validate_all(results, cfg, YEAR, PERIOD, frames)
        with store.session(cfg.db_path) as con:
            pipeline.load_all(con, results, issues, cfg, YEAR, PERIOD, "second", frames=frames)
            formbuild.ensure(con)
            before = incremental.outputs_done(con, YEAR, PERIOD, "form")
            builds = con.execute("select count(*) from form_build").fetchone()[0]

            def fail(by=None):
                raise OSError("No space left on device")

            monkeypatch.setattr(period_lock, "who", fail)
            with pytest.raises(OSError):
                formbuild.build(con, cfg, YEAR, PERIOD, incremental=True)
            assert incremental.outputs_done(con, YEAR, PERIOD, "form") == before
            assert con.execute("select count(*) from form_build").fetchone()[0] == builds
            monkeypatch.undo()
            again = formbuild.build(con, cfg, YEAR, PERIOD, incremental=True)
            assert sorted(again.scopes) == sorted(["city", code]) and again.build_id
            assert con.execute("select count(*) from form_build").fetchone()[0] == builds + 1
            assert incremental.outputs_done(con, YEAR, PERIOD, "form") != before
            assert formbuild.build(con, cfg, YEAR, PERIOD, incremental=True).skipped


def _plant_for_pruning(data: Path, cfg: Config, inbox: Path) -> dict:
    """Beside the primed cache's entries: one for another collection (kept), one written under
    another version key (stale), a corrupt one, a symlink; and the names of the entries of the
    school about to re-send (its old file's: pruned after the run)."""
    import hashlib

    import pyarrow as pa

    root = incremental.cache_dir(data)
    current = [p for p in root.rglob("*.parquet") if not p.name.endswith(".issues.parquet")]  # before planting
    vkey = incremental.version_key(cfg.severity, cfg.read_limits)
    one = sorted(inbox.glob("7*.xlsx"))[0]
    sha = hashlib.sha256(one.read_bytes()).hexdigest()
    old_file, old_issues = incremental._entry_paths(root, sha, one.name)
    assert old_file.is_file() and old_issues.is_file()
    other = root / "ab" / ("ab" + "0" * 62 + "-000000000000.parquet")
    incremental._write_atomic(data, other, pa.table({"x": [1]}),
                              incremental._meta_key(vkey, YEAR, "cuoi_nam", "x.xlsx", "ab" + "0" * 62))
    stale = root / "cd" / ("cd" + "0" * 62 + "-000000000000.parquet")
    incremental._write_atomic(data, stale, pa.table({"x": [1]}),
                              incremental._meta_key("0" * 64, YEAR, "cuoi_nam", "x.xlsx", "cd" + "0" * 62))
    corrupt = root / "ef" / ("ef" + "0" * 62 + "-000000000000.parquet")
    corrupt.parent.mkdir(exist_ok=True)
    corrupt.write_bytes(b"not parquet")
    link = root / "ab" / "planted.parquet"
    link.symlink_to(other)
    return {"other_period": other.relative_to(root), "stale": stale.relative_to(root),
            "corrupt": corrupt.relative_to(root), "symlink": link.relative_to(root),
            "old_file": old_file.relative_to(root), "old_issues": old_issues.relative_to(root), "current": current}


def test_a_load_elsewhere_or_a_load_setting_changed_means_loading_again(cold, inbox):
    """Rules in the load may compare with other collections (cross-period checks) and read the
    load's settings: the skip holds only while neither changed."""
    from edustat.submissions import discover

    data = cold[0]
    results = pipeline.ingest_all(discover(inbox), cfg_for(data), YEAR, PERIOD)
    assert incremental.unchanged_outcome(results, cfg_for(data), YEAR, PERIOD, "x") is not None
    assert incremental.unchanged_outcome(results, cfg_for(data, load_policy="load_valid_rows"), YEAR, PERIOD, "x") is None
    con = duckdb.connect(str(data / "curated" / "edustat.duckdb"))
    try:
        con.execute("insert into incremental_collection values ('2021-2022', 'cuoi_nam', 'f', 'another-run')")
    finally:
        con.close()
    assert incremental.unchanged_outcome(results, cfg_for(data), YEAR, PERIOD, "x") is None
    con = duckdb.connect(str(data / "curated" / "edustat.duckdb"))
    try:
        con.execute("delete from incremental_collection where school_year = '2021-2022'")
    finally:
        con.close()
    assert incremental.unchanged_outcome(results, cfg_for(data), YEAR, PERIOD, "x") is not None


def test_one_school_changed_stages_that_file_only_unless_staged_rows_are_not_proven(inbox, resent, tmp_path, monkeypatch):
    """The load stages the changed school's file; every other school's staged rows are kept
    when a load with this version key staged them and they hold exactly the file's rows — a
    school whose rows are missing, or were staged under another version key, is staged again.
    Cross-school rules and core still see the whole collection: the result equals plain runs."""
    data = tmp_path / "data"
    run_steps(cfg_for(data), inbox, "first")
    changed_inbox, code, plain = resent
    db = data / "curated" / "edustat.duckdb"
    con = duckdb.connect(str(db))
    try:
        files = dict(con.execute("""select s.school_code, s.file_hash from submission s where s.is_current and s.in_core
                                    and exists (select 1 from stg_learners l where l.file_hash = s.file_hash)
                                    order by 1""").fetchall())
        short, stale = [c for c in files if c != code][:2]
        con.execute("""delete from stg_learners where rowid = (select min(rowid) from stg_learners
                       where file_hash = ?)""", [files[short]])  # a staged row lost
        con.execute("update incremental_staged set version = ? where file_hash = ?", ["0" * 64, files[stale]])
        con.execute("update stg_learners set full_name = 'X' where file_hash = ?", [files[stale]])  # staged by another version
    finally:
        con.close()
    staged: list[str] = []
    deleted: list[str] = []
    real = pipeline.stage_sheets

    def spy(con, sheets, hashes, *a, **k):  # the files whose frames are staged, and whose rows replaced
        def seen():
            for sid, raw, stg in sheets:
                if stg is not None:
                    staged.extend(h for h in stg["file_hash"].dropna().unique() if h not in staged)
                yield sid, raw, stg
        deleted.extend(hashes)
        return real(con, seen(), hashes, *a, **k)

    monkeypatch.setattr(pipeline, "stage_sheets", spy)
    r = run_steps(cfg_for(data), changed_inbox, "one")
    assert r["stats"]["read_misses"] == 1 and not r["reused"]
    con = duckdb.connect(str(db), read_only=True)
    try:
        new_hash = con.execute("select file_hash from submission where school_code = ? and is_current", [code]).fetchone()[0]
    finally:
        con.close()
    assert sorted(staged) == sorted(deleted) == sorted([new_hash, files[short], files[stale]])
    monkeypatch.undo()
    assert_same(data, plain)


# ---------------------------------------------------------------------------------------
# Receipts
# ---------------------------------------------------------------------------------------

def test_a_clean_school_gets_a_receipt_unless_a_full_copy_is_configured(cold, inbox, tmp_path):
    data, r = cold
    subs = r["outcome"].submissions
    clean = subs[subs["status"] == "accepted"]
    marked = subs[subs["status"].isin(["accepted_with_warnings", "rejected", "partially_loaded"])]
    assert len(clean) and len(marked), subs["status"].tolist()
    fb = data / "curated" / "feedback" / YEAR / PERIOD
    for rec in clean.itertuples():
        wb = openpyxl.load_workbook(fb / f"{rec.school_code}.xlsx")
        assert wb.sheetnames == ["PhanHoi"]
        text = " ".join(str(c.value) for row in wb["PhanHoi"].iter_rows() for c in row if c.value is not None)
        assert "BIÊN NHẬN" in text and rec.file_name in text and f"{rec.file_hash[:12]}…" in text
        assert "Lần nộp (phiên bản)" in text and "Đã tiếp nhận" in text
    for rec in marked.itertuples():
        assert len(openpyxl.load_workbook(fb / f"{rec.school_code}.xlsx").sheetnames) > 1
    full = tmp_path / "full" / "data"
    run_steps(cfg_for(full, feedback_full_copy=True), inbox, "full")
    for rec in clean.itertuples():
        names = openpyxl.load_workbook(full / "curated" / "feedback" / YEAR / PERIOD / f"{rec.school_code}.xlsx").sheetnames
        assert names[0] == "PhanHoi" and len(names) > 1


def test_feedback_full_copy_is_a_checked_config_key(tmp_path):
    from edustat.config import ConfigError, load_config

    p = tmp_path / "edustat.yaml"
    p.write_text("feedback_full_copy: true\nincremental: false\n", encoding="utf-8")
    cfg = load_config(p, tmp_path / "data")
    assert cfg.feedback_full_copy and not cfg.incremental
    p.write_text("feedback_full_copy: 'có'\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_config(p, tmp_path / "data")


# ---------------------------------------------------------------------------------------
# The real flow: hits in the log line and the summary; publish skipped, said
# ---------------------------------------------------------------------------------------

def test_the_flow_says_what_it_reused(prefect_harness, inbox, tmp_path):
    import logging

    from flows.collect import collection_flow

    class Keep(logging.Handler):  # the stages' run logger does not propagate to the root logger
        def __init__(self):
            super().__init__(logging.INFO)
            self.lines: list[str] = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    data = tmp_path / "data"
    os.environ["EDUSTAT_SALT_FILE"] = str(tmp_path / "salt")
    first = collection_flow(school_year=YEAR, period=PERIOD, inbox=str(inbox), data_dir=str(data))
    n = first["files"]
    assert first["incremental"]["read_misses"] == n and first["published"]
    keep = Keep()
    from edustat.officer import RUN_LOGGER, run_log

    run_log()  # the stages' logger (it does not propagate): its lines are kept here too
    loggers = [logging.getLogger(RUN_LOGGER)]
    for lg in loggers:
        lg.addHandler(keep)
    try:
        second = collection_flow(school_year=YEAR, period=PERIOD, inbox=str(inbox), data_dir=str(data))
    finally:
        for lg in loggers:
            lg.removeHandler(keep)
    assert second["incremental"] == {"read_hits": n, "read_misses": 0, "validate_hits": first["incremental"]["validate_misses"],
                                     "validate_misses": 0}
    assert second["published"] is None and second["published_unchanged"]
    assert second["counts"] == first["counts"] and second["issues"] == first["issues"]
    assert second["forms"] == first["forms"] and second["form_checks_failed"] == first["form_checks_failed"]
    text = pipeline.format_summary(second)
    assert "không công bố lại" in text and f"{n} tệp không đổi" in text
    logs = "\n".join(keep.lines)
    assert f"{n} tệp không đổi lấy từ bộ nhớ đệm" in logs and "Không tệp nào thay đổi" in logs
    assert "Biểu báo cáo không đổi" in logs and "Không công bố lại" in logs


def test_the_changed_file_is_validated_on_the_cast_steps_frames(inbox, primed, tmp_path):
    """One school changed: validation takes the cast step's frames of that file (renumbered to
    the subset) instead of casting it again — exactly what casting it again gives."""
    from edustat.submissions import assemble, discover
    from schemas.rules import load_rules

    data = tmp_path / "data"
    shutil.copytree(primed[0], data)  # `primed` itself stays as the tests above expect it
    changed = tmp_path / "inbox2"
    shutil.copytree(inbox, changed)
    last = sorted(changed.glob("7*.xlsx"))[-1]  # not the first file: its position must be renumbered
    wb = openpyxl.load_workbook(last)
    ws = wb["HocSinh"] if "HocSinh" in wb.sheetnames else wb.worksheets[-2]
    ws.delete_rows(ws.max_row)
    wb.save(last)
    cfg = cfg_for(data)
    results = pipeline.ingest_all(discover(changed), cfg, YEAR, PERIOD)
    frames = pipeline.assemble_all(results, cfg)
    todo = sorted(frames.covers)
    # the last school, and any other file `primed` last saw in another version
    assert todo and todo[-1] > len(todo) - 1, "a file cast anew whose position is renumbered"
    mine = incremental.frames_of_subset(frames, todo)
    want = assemble([results[i] for i in todo], catalogue=load_rules(cfg.severity))
    assert mine is not None and sorted(mine.raw) == sorted(want.raw) and sorted(mine.typed) == sorted(want.typed)
    for sid in want.raw:
        pd.testing.assert_frame_equal(mine.raw[sid], want.raw[sid], obj=f"raw {sid}")
        pd.testing.assert_frame_equal(mine.typed[sid], want.typed[sid], obj=f"typed {sid}")
        assert set(frames.raw[sid]["_file"]) <= set(todo) and todo[-1] in set(frames.raw[sid]["_file"]), \
            "the cast step's frames are left as they were"
    assert mine.notices == want.notices and mine.ambiguous == want.ambiguous
    extra = next(i for i in range(len(results)) if i not in todo)
    assert incremental.frames_of_subset(frames, sorted([extra, *todo])) is None, "frames of other files: cast again"


def test_issues_from_the_cache_are_the_cold_frame_and_old_entries_are_misses(inbox, primed, tmp_path):
    """The issues of files validated before come from their entries by column (issue 12): the
    frame is exactly a cold validation's (columns, dtypes, order, values, None never NaN). An
    entry in the earlier row format, or one whose columns disagree, is a miss, never misread."""
    import pyarrow as pa

    from edustat.submissions import discover

    data = tmp_path / "data"
    shutil.copytree(primed[0] / "cache", data / "cache")
    cfg = cfg_for(data)
    for _ in range(2):  # the first fills what other tests of this module left out of `primed`'s cache
        results = pipeline.ingest_all(discover(inbox), cfg, YEAR, PERIOD)
        warm = pipeline.validate_all(results, cfg, YEAR, PERIOD, pipeline.assemble_all(results, cfg))
    assert pipeline.cache_stats(results)["validate_misses"] == 0
    cold_cfg = cfg_for(tmp_path / "cold", incremental=False)
    again = pipeline.ingest_all(discover(inbox), cold_cfg, YEAR, PERIOD)
    want = pipeline.validate_all(again, cold_cfg, YEAR, PERIOD, pipeline.assemble_all(again, cold_cfg))
    assert len(want) > 0 and want["value"].isna().any() and want["value"].notna().any()
    assert list(warm.dtypes.astype(str)) == list(want.dtypes.astype(str))
    pd.testing.assert_frame_equal(warm, want, check_exact=True)
    for col in want.columns:
        assert [type(v) for v in warm[col]] == [type(v) for v in want[col]], col

    vkey = incremental.version_key(cfg.severity, cfg.read_limits)
    fr = next(f for f in results if f.cache is not None and f.cache.issues_hit
              and incremental.lookup_issues(f, data, vkey, YEAR, PERIOD)["rule_id"])
    _, path = incremental._entry_paths(incremental.cache_dir(data), fr.cache.bytes_sha, fr.name)
    meta, _, fh = incremental._read_meta(path)
    fh.close()
    rows = [dict(zip(meta["issue_columns"], vals)) for vals in zip(*meta["issue_columns"].values())]
    old = {k: v for k, v in meta.items() if k not in ("issue_columns", "n_issues")}
    for bad in ({**old, "issues": rows},  # the earlier format's body under this key
                {**old, "format": 1, "issues": rows},
                {**meta, "n_issues": meta["n_issues"] + 1},
                {**meta, "issue_columns": {**meta["issue_columns"], "value": meta["issue_columns"]["value"][:-1]}}):
        incremental._write_atomic(data, path, pa.table({"issues": [0]}), bad)
        assert incremental.lookup_issues(fr, data, vkey, YEAR, PERIOD) is None


def test_issue_columns_round_trip_typed_values(tmp_path):
    """An issues entry keeps typed values (dates, tuples) and None as they were, by column."""
    import datetime as dt
    from types import SimpleNamespace

    from edustat.submissions import ISSUE_COLUMNS

    data = tmp_path / "data"
    (data / "cache").mkdir(parents=True)
    sha = "ab" * 32
    fr = SimpleNamespace(bytes_sha=sha, cache=SimpleNamespace(bytes_sha=sha), name="t.xlsx", school_code="79000001",
                         sha256="f" * 64)
    base = dict.fromkeys(ISSUE_COLUMNS, "x")
    recs = [{**base, "excel_row": 7, "value": dt.date(2022, 9, 30)}, {**base, "excel_row": None, "value": None},
            {**base, "excel_row": 9, "value": ("a", 1)}]
    incremental.store_issues(fr, recs, data, "k", YEAR, PERIOD)
    got = incremental.lookup_issues(fr, data, "k", YEAR, PERIOD)
    assert got["value"] == [dt.date(2022, 9, 30), None, ("a", 1)] and got["excel_row"] == [7, None, 9]
    assert got["file_hash"] == ["f" * 64] * 3 and got["school_code"] == ["79000001"] * 3 and list(got) == ISSUE_COLUMNS
    assert incremental.lookup_issues(fr, data, "other key", YEAR, PERIOD) is None


def test_feedback_written_beside_the_forms_is_recorded_only_once_every_workbook_is_in_place(inbox, cold, tmp_path,
                                                                                            monkeypatch):
    """The flow starts the feedback workbooks in worker processes, builds the forms meanwhile,
    then waits (pipeline.start_feedbacks / finish_feedbacks, issue 12). Until the wait, nothing
    is recorded: a run that dies during the forms leaves every workbook to be written again;
    after it, the same workbooks as written one after the other, each in the register."""
    from edustat.submissions import discover

    data = tmp_path / "data"
    cfg = Config(data_dir=data, workers=2)
    os.environ.setdefault("EDUSTAT_SALT_FILE", str(tmp_path / "salt"))
    with pipeline.sole_writer(cfg):
        results = pipeline.ingest_all(discover(inbox), cfg, YEAR, PERIOD)
        frames = pipeline.assemble_all(results, cfg)
        issues = pipeline.validate_all(results, cfg, YEAR, PERIOD, frames)
        with store.session(cfg.db_path) as con:
            outcome = pipeline.load_all(con, results, issues, cfg, YEAR, PERIOD, "beside", frames=frames)
            work = pipeline.start_feedbacks(con, outcome, results, cfg)
            assert work.pool is not None and len(work.futures) == len(work.jobs) == len(outcome.submissions)

            def recorded() -> tuple[dict, int]:
                paths = con.execute("select count(feedback_path) from submission").fetchone()[0]
                return incremental.outputs_done(con, YEAR, PERIOD, "feedback"), paths

            assert recorded() == ({}, 0)
            incremental.build_forms_incremental(con, cfg, YEAR, PERIOD)  # DuckDB work while they write
            assert recorded() == ({}, 0)
            work.cancel()  # the forms failed: the run ends here
            assert recorded() == ({}, 0)

            again = pipeline.start_feedbacks(con, outcome, results, cfg)  # the next run writes every one
            assert len(again.jobs) == len(work.jobs)
            # a few workbooks' issues are taken by position, many in one groupby pass: the same frames
            monkeypatch.setattr(pipeline, "_ILOC_SLICES", 0)
            grouped = pipeline.start_feedbacks(con, outcome, results, Config(data_dir=data, workers=1))
            assert sum(len(kw["issues"]) > 0 for _, _, kw in grouped.jobs) > 1
            for (_, p1, kw1), (_, p2, kw2) in zip(again.jobs, grouped.jobs, strict=True):
                assert p1 == p2
                pd.testing.assert_frame_equal(kw1["issues"], kw2["issues"], check_exact=True)
            paths = pipeline.finish_feedbacks(con, again, outcome)
            done, n = recorded()
            assert n == len(outcome.submissions) and set(done) == {str(p) for p in paths.values()}
            assert outcome.feedback_written == len(again.jobs)
    fb, ref = data / "curated" / "feedback" / YEAR / PERIOD, cold[0] / "curated" / "feedback" / YEAR / PERIOD
    assert sorted(p.name for p in fb.iterdir()) == sorted(p.name for p in ref.iterdir())
    for p in fb.iterdir():
        assert openpyxl.load_workbook(p).sheetnames == openpyxl.load_workbook(ref / p.name).sheetnames


def test_feedback_fingerprint_of_a_count_and_row_hashes_is_that_of_the_rows():
    """The feedback step fingerprints a school's issues from their row hashes and count, with
    only an empty frame of the run's columns in hand (it takes the rows for a workbook it
    writes): the same fingerprint as from the rows themselves."""
    from types import SimpleNamespace

    issues = pd.DataFrame({"file_hash": ["a", "b", "a"], "excel_row": pd.array([3, 4, None], dtype="Int64"),
                           "message": ["x", "y", None]})
    sub = SimpleNamespace(file_hash="a", version=1, status="accepted_with_warnings", file_name="a.xlsx")
    every = incremental.issue_row_hashes(issues)
    pos = issues.groupby("file_hash", sort=False).indices["a"]
    kw = dict(school={"school_code": "1"}, counts={}, engine="patch", school_year="y", period="p")
    whole = incremental.feedback_fingerprint(None, {**kw, "issues": issues.iloc[pos]}, sub)
    assert whole == incremental.feedback_fingerprint(None, {**kw, "issues": issues.iloc[pos]}, sub, every[pos])
    assert whole == incremental.feedback_fingerprint(None, {**kw, "issues": issues.iloc[0:0]}, sub, every[pos],
                                                     n_issues=len(pos))
    assert whole != incremental.feedback_fingerprint(None, {**kw, "issues": issues.iloc[0:0]}, sub, every[pos][:1],
                                                     n_issues=1)


def test_nothing_changed_reads_the_issues_entries_through_the_index_and_the_recorded_issues_as_before(inbox, tmp_path,
                                                                                                     monkeypatch):
    """unchanged_outcome looks up every issues entry through the collection's index
    (edustat.metaindex, as validate_incremental does). The cold run that wrote the entries
    recorded them in the indexes (read entries with their bytes, issues entries with their yes),
    so already the FIRST nothing-changed run opens no entry's Parquet footer, neither to read
    nor to check, and parses no issues entry's JSON. The recorded issues it returns are what
    `.df()` of the same rows gives (dtypes and values, nulls included)."""
    from edustat import metaindex
    from edustat.submissions import discover

    cfg = cfg_for(tmp_path / "data")  # a data dir of its own: other tests change `primed`'s state
    assert not incremental.cache_dir(cfg.data_dir).exists()  # a cold run: its cache made as it runs
    run_steps(cfg, inbox, "cold")
    opened, parsed = [], []
    real_read, real_footer, real_loads = incremental._read_meta, metaindex._footer, metaindex.json.loads
    monkeypatch.setattr(incremental, "_read_meta", lambda p, hook=None: opened.append(p) or real_read(p, hook))
    monkeypatch.setattr(metaindex, "_footer", lambda p: opened.append(p) or real_footer(p))
    results = pipeline.ingest_all(discover(inbox), cfg, YEAR, PERIOD)
    assert opened == [] and all(fr.cache is not None for fr in results), "every read entry from the cold run's index"
    monkeypatch.setattr(metaindex.json, "loads", lambda *a, **k: parsed.append(1) or real_loads(*a, **k))
    assert incremental.unchanged_outcome(results, cfg, YEAR, PERIOD, "first") is not None
    assert opened == [] and parsed == [], "every issues entry's yes from the cold run's index"
    outcome = incremental.unchanged_outcome(results, cfg, YEAR, PERIOD, "second")
    assert outcome is not None and opened == [] and parsed == []
    with store.session(cfg.db_path) as con:
        run = con.execute("select run_id from incremental_collection where school_year = ? and period = ?",
                          [YEAR, PERIOD]).fetchone()[0]
        old = con.execute("""select school_code, file_hash, file_name, sheet, excel_row, "column", field, header,
                                    rule_id, severity, value, message, fix
                             from validation_issue where school_year = ? and period = ? and run_id = ?""",
                          [YEAR, PERIOD, run]).df()
        none = incremental._issues_frame(con, YEAR, PERIOD, "no such run")
        old_none = con.execute("""select school_code, file_hash, file_name, sheet, excel_row, "column", field, header,
                                         rule_id, severity, value, message, fix
                                  from validation_issue where run_id = 'no such run'""").df()
    assert len(old) and old["excel_row"].isna().any() and old["value"].isna().any()
    with duckdb.connect(str(cfg.db_path), read_only=True) as ro:
        got = incremental._issues_frame(ro, YEAR, PERIOD, run)
    for want, have in ((old, got), (old_none, none)):
        want["excel_row"] = want["excel_row"].astype("Int64")  # as unchanged_outcome made it
        assert list(have.dtypes.astype(str)) == list(want.dtypes.astype(str))
        pd.testing.assert_frame_equal(have, want, check_exact=True)
        for col in want.columns:
            assert [type(v) for v in have[col]] == [type(v) for v in want[col]], col
    pd.testing.assert_frame_equal(outcome.issues, old, check_exact=True)


def test_forms_skipped_when_nothing_changed_compute_no_digest(cold, monkeypatch):
    """formbuild.build with nothing changed records no build, so it computes no cells digest
    (a province's 1.3 M cells checked for nothing); the last build and its digest stand."""
    from edustat import formbuild

    cfg = cfg_for(cold[0])  # not `primed`: other tests change its state
    with store.session(cfg.db_path) as con:
        formbuild.ensure(con)
        before = con.execute("select build_id, cells_digest from form_build order by all").fetchall()
        monkeypatch.setattr(formbuild, "cells_digest", lambda *a, **k: pytest.fail("digest computed for a skipped build"))
        result = formbuild.build(con, cfg, YEAR, PERIOD, incremental=True)
        assert result.skipped and result.build_id is None and result.forms
        assert con.execute("select build_id, cells_digest from form_build order by all").fetchall() == before


def test_the_read_entries_decoded_as_parsed_equal_decoding_after(tmp_path):
    """`_decode_hook` (the read's entries decoded while the JSON is parsed) gives exactly what
    `_decode` of the parsed entry gives, for every kind of value `_encode` writes, nested: the
    values written, of the same types; a malformed encoded value makes the entry a miss."""
    import datetime as dt
    import json

    from edustat import metaindex

    values = [None, "x", 3, 2.5, True, dt.date(2022, 9, 30), dt.datetime(2022, 9, 30, 7, 5, 1), ("TH", "THCS"), (),
              [], {}, [1, ("a", dt.date(2020, 1, 2))], {"a": {"b": [1, {"c": (1, 2)}]}, ("k", 1): "tuple key"},
              {"school_code": "79000001", "n": None, "d": dt.date(2021, 5, 31)},
              [{"rule_id": "r", "value": ["x", {"y": 1}]}], {"__t": "not an encoded value", "v": 1}]
    for value in values:
        text = json.dumps(incremental._encode(value), ensure_ascii=False)
        after = incremental._decode(json.loads(text))
        parsed = json.loads(text, object_hook=incremental._decode_hook)
        assert parsed == after and repr(parsed) == repr(after), value  # repr: tuple vs list, date vs datetime
        assert repr(after) == repr(value), value  # and both are the value that was written

    def types(v):
        if isinstance(v, dict):
            return [type(v), [(types(k), types(x)) for k, x in v.items()]]
        if isinstance(v, (list, tuple)):
            return [type(v), [types(x) for x in v]]
        return type(v)

    fr = {k: incremental._encode(v) for k, v in zip(incremental._META_FIELDS, values)}
    entry = tmp_path / "e.parquet"
    import pyarrow as pa

    tmp_path.joinpath("cache").mkdir()
    incremental._write_atomic(tmp_path, entry, pa.table({"x": [1]}), {"fr": fr, "sheets": {"learners": [["a", "str"]]}})
    for scoped in (False, True):  # the worker's path (the footer) and the run's (the collection's index)
        with metaindex.scope(tmp_path, "ingest", YEAR, PERIOD) if scoped else open(os.devnull) as _:
            meta = metaindex.read_meta(entry, incremental._decode_hook)
        want = {k: incremental._decode(v) for k, v in fr.items()}
        assert meta["fr"] == want and types(meta["fr"]) == types(want) and meta["sheets"] == {"learners": [["a", "str"]]}
    bad = tmp_path / "bad.parquet"
    incremental._write_atomic(tmp_path, bad, pa.table({"x": [1]}), {"fr": {"school": {"__t": "date", "v": "not a date"}}})
    for scoped in (False, True):
        with metaindex.scope(tmp_path, "ingest", YEAR, PERIOD) if scoped else open(os.devnull) as _:
            assert metaindex.read_meta(bad, incremental._decode_hook) is None
            assert metaindex.read_meta(bad)["fr"]["school"] == {"__t": "date", "v": "not a date"}


# ---------------------------------------------------------------------------------------
# A school's history that must not stop a collection (found in round 11: both stopped the
# whole run with StoreInconsistent under reject_school)
# ---------------------------------------------------------------------------------------

def _first_learner_row(ws) -> int:
    return next(i for i, r in enumerate(ws.iter_rows(max_col=1, values_only=True), 1)
                if r and str(r[0] or "").strip().isdigit())


@pytest.fixture(scope="module")
def small_inbox(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("history-city") / "inbox"
    generate_city(d, schools=3, seed=11, school_year=YEAR, period=PERIOD)
    (d / "manifest.json").unlink()
    return d


def _register(cfg: Config) -> list[tuple]:
    with duckdb.connect(str(cfg.db_path), read_only=True) as con:
        return con.execute("""select school_code, version, file_hash, status, is_current, in_core from submission
                              order by school_code, version""").fetchall()


def _core_learners(cfg: Config) -> dict[str, tuple[str, int]]:
    """school → (the file its core rows come from, how many)."""
    with duckdb.connect(str(cfg.db_path), read_only=True) as con:
        return {c: (h, n) for c, h, n in con.execute(
            "select school_code, any_value(file_hash), count(*) from core_learners group by 1").fetchall()}


@pytest.mark.parametrize("policy", ["reject_school", "load_valid_rows"])
def test_an_earlier_version_sent_again_becomes_the_current_version(small_inbox, tmp_path, policy):
    inbox = tmp_path / "inbox"
    shutil.copytree(small_inbox, inbox)
    cfg = cfg_for(tmp_path / "data", load_policy=policy)
    target = sorted(inbox.glob("*.xlsx"))[0]
    first = tmp_path / "first.xlsx"
    shutil.copy(target, first)
    run_steps(cfg, inbox, "v1")
    code, _, h1, _, _, _ = _register(cfg)[0]
    n1 = _core_learners(cfg)[code][1]
    wb = openpyxl.load_workbook(target)
    wb["HocSinh"].delete_rows(wb["HocSinh"].max_row)
    wb.save(target)
    run_steps(cfg, inbox, "v2")
    assert _core_learners(cfg)[code][1] == n1 - 1
    shutil.copy(first, target)  # the clerk sends the first file back, the very same bytes
    out = run_steps(cfg, inbox, "v1-again")  # stopped with StoreInconsistent before
    mine = [r for r in _register(cfg) if r[0] == code]
    assert [(v, h == h1, cur, core) for _, v, h, _, cur, core in mine] == [(2, False, False, False), (3, True, True, True)]
    assert _core_learners(cfg)[code] == (h1, n1)
    assert out["outcome"].submissions.set_index("school_code").loc[code, "version"] == 3
    with duckdb.connect(str(cfg.db_path), read_only=True) as con:
        assert store.inconsistencies(con).empty
        assert con.execute("select distinct version from core_school where school_code = ?", [code]).fetchall() == [(3,)]


def test_a_new_conflict_rejects_the_unchanged_school_without_stopping_the_run(small_inbox, tmp_path):
    """Under reject_school, school A's new file gives a learner school B's student code: both
    files get the cross-school error, B's unchanged (earlier accepted) file is rejected and its
    rows leave core — what a cold run of the same inbox holds — while A keeps its earlier
    accepted version; when A corrects its file, B is accepted again. The run goes on."""
    inbox = tmp_path / "inbox"
    shutil.copytree(small_inbox, inbox)
    cfg = cfg_for(tmp_path / "data")
    a, b = sorted(inbox.glob("*.xlsx"))[:2]
    original = tmp_path / "a.xlsx"
    shutil.copy(a, original)
    run_steps(cfg, inbox, "cold")
    before = _core_learners(cfg)
    reg = {r[0]: r for r in _register(cfg)}
    code_a = next(c for c in reg if a.name.startswith(c))
    code_b = next(c for c in reg if b.name.startswith(c))
    wb = openpyxl.load_workbook(b)
    shared = wb["HocSinh"].cell(row=_first_learner_row(wb["HocSinh"]), column=1).value
    wb.close()
    wb = openpyxl.load_workbook(a)
    wb["HocSinh"].cell(row=_first_learner_row(wb["HocSinh"]), column=1).value = shared
    wb.save(a)
    out = run_steps(cfg, inbox, "conflict")  # stopped with StoreInconsistent before
    subs = out["outcome"].submissions.set_index("school_code")
    assert subs.loc[code_a, "status"] == "rejected" and subs.loc[code_b, "status"] == "rejected"
    core = _core_learners(cfg)
    assert code_b not in core  # B's rows left core with its acceptance
    assert core[code_a] == before[code_a]  # A's earlier accepted version stays
    with duckdb.connect(str(cfg.db_path), read_only=True) as con:
        assert store.inconsistencies(con).empty
        rules = {r for (r,) in con.execute("select distinct rule_id from validation_issue where school_code = ? "
                                           "and severity = 'error'", [code_b]).fetchall()}
        assert rules and all("city" in r or "school" in r for r in rules)
    # a cold run of the same inbox holds the same schools in core
    cold = cfg_for(tmp_path / "cold-data")
    run_steps(cold, inbox, "cold-conflict")
    assert set(_core_learners(cold)) == set(core) - {code_a}
    shutil.copy(original, a)  # A corrects its file: B is accepted again, from its same file
    out = run_steps(cfg, inbox, "resolved")
    assert _core_learners(cfg) == before
    with duckdb.connect(str(cfg.db_path), read_only=True) as con:
        assert store.inconsistencies(con).empty
