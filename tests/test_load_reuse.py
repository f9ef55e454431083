"""Issue 12, one school changed: the load leaves a school's core rows in place when they already
are exactly what it would write (store.unchanged_core_schools), and rewrites them otherwise —
also when only an issue changed (under load_valid_rows another school's file can give an
unchanged file a cross-school error). A real DuckDB file; store.write_run called as load_all
calls it; every result compared with write_run's full rewrite (REUSE_UNCHANGED_CORE off)."""
import duckdb
import pandas as pd
import pytest

from edustat import store

Y, P = "2022-2023", "dau_nam"
CODES = ("74700001", "74700002", "74700003")
ISSUE_COLS = ["school_code", "file_hash", "file_name", "sheet", "excel_row", "column", "field", "header", "rule_id",
              "severity", "value", "message", "fix"]


def _stage(con, code: str, fh: str, learners: int) -> None:
    con.execute("""insert into stg_school (school_year, period, school_code, file_hash, sheet_name, excel_row)
                   values (?, ?, ?, ?, 'TruongHoc', 2)""", [Y, P, code, fh])
    for row in range(5, 5 + learners):
        con.execute("""insert into stg_learners (school_year, period, school_code, file_hash, sheet_name, excel_row,
                       student_code, full_name, sex, is_enrolled)
                       values (?, ?, ?, ?, 'HocSinh', ?, ?, 'Nguyễn Văn An', '1', true)""",
                    [Y, P, code, fh, row, f"{code}-{row}"])


def _subs(files: dict[str, str], versions: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame([{"school_year": Y, "period": P, "school_code": c, "version": versions[c], "file_hash": h,
                          "file_name": f"{c}.xlsx", "status": "accepted", "n_learners": 3, "loaded_rows": 0,
                          "received_at": pd.Timestamp("2022-10-01"), "feedback_path": None, "run_id": "r"}
                         for c, h in files.items()]).astype({"version": "Int32", "n_learners": "Int32",
                                                             "loaded_rows": "Int32"})


def _issues(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    """(school, file hash, learner row) → an error on that row."""
    return pd.DataFrame([{"school_code": c, "file_hash": h, "file_name": f"{c}.xlsx", "sheet": "HocSinh",
                          "excel_row": r, "column": "C", "field": "student_code", "header": "Mã học sinh",
                          "rule_id": "student_code_unique_city", "severity": "error", "value": None,
                          "message": "Trùng mã học sinh", "fix": "Sửa mã"} for c, h, r in rows],
                        columns=ISSUE_COLS)


def _run(con, files, versions, issues, valid_rows):
    return store.write_run(con, run_id="r", school_year=Y, period=P, submissions=_subs(files, versions),
                           issues=issues, load=dict(files), load_valid_rows=valid_rows)


def _content(con) -> dict[str, list]:
    out = {}
    for t in [f"core_{s}" for s in store.SHEETS] + ["submission"]:
        out[t] = sorted(map(str, con.execute(f"select * from {t}").fetchall()))
    return out


@pytest.fixture(params=[True, False], ids=["load_valid_rows", "reject_school"])
def valid_rows(request):
    return request.param


def _three_staged(path):
    """A new database with the three schools' first files staged (three learners each)."""
    con = store.connect(path)
    store.ensure_tables(con)
    files = {c: f"h{c[-1]}" for c in CODES}
    for c, h in files.items():
        _stage(con, c, h, 3)
    return con, files, dict.fromkeys(CODES, 1)


def _second_runs(tmp_path, valid_rows, reuse: bool, monkeypatch):
    """Two runs; returns the connection and what unchanged_core_schools found in each."""
    monkeypatch.setattr(store, "REUSE_UNCHANGED_CORE", reuse)
    found, real = [], store.unchanged_core_schools

    def spy(*a, **k):
        found.append(real(*a, **k))
        return found[-1]
    monkeypatch.setattr(store, "unchanged_core_schools", spy)
    con, files, versions = _three_staged(tmp_path / f"t-{reuse}.duckdb")
    _run(con, files, versions, _issues([]), valid_rows)
    # school 1 re-sends (a learner fewer); its new file gives school 2's unchanged file an error
    _stage(con, CODES[0], "h1b", 2)
    files2 = {**files, CODES[0]: "h1b"}
    _run(con, files2, {**versions, CODES[0]: 2}, _issues([(CODES[1], "h2", 6), (CODES[0], "h1b", 6)]), valid_rows)
    return con, found


def test_only_the_schools_whose_rows_change_are_rewritten(tmp_path, valid_rows, monkeypatch):
    con, found = _second_runs(tmp_path, valid_rows, True, monkeypatch)
    # first run: nothing in core; second: school 3 left in place, school 2 too unless its new error counts
    assert found == [set(), {CODES[2]} if valid_rows else {CODES[1], CODES[2]}]
    rows = con.execute("select school_code, excel_row, file_hash from core_learners order by 1, 2").fetchall()
    if valid_rows:  # the error rows of school 1's new file and of school 2's unchanged one are left out
        want = [(CODES[0], 5, "h1b"), (CODES[1], 5, "h2"), (CODES[1], 7, "h2")]
    else:  # reject_school: write_run loads what it is given (the statuses are load_all's)
        want = [(CODES[0], 5, "h1b"), (CODES[0], 6, "h1b"), (CODES[1], 5, "h2"), (CODES[1], 6, "h2"), (CODES[1], 7, "h2")]
    assert rows == want + [(CODES[2], r, "h3") for r in (5, 6, 7)]
    # the same database as a full rewrite gives
    full, none = _second_runs(tmp_path, valid_rows, False, monkeypatch)
    assert none == []
    assert _content(con) == _content(full)


def test_a_changed_version_or_a_core_row_changed_in_place_is_rewritten(tmp_path, monkeypatch):
    con = store.connect(tmp_path / "t.duckdb")
    store.ensure_tables(con)
    files = {c: f"h{c[-1]}" for c in CODES}
    for c, h in files.items():
        _stage(con, c, h, 3)
    _run(con, files, dict.fromkeys(CODES, 1), _issues([]), True)
    con.execute("update core_learners set sex = '2' where school_code = ? and excel_row = 6", [CODES[2]])
    con.register("_load", pd.DataFrame({"school_code": list(files), "file_hash": list(files.values())}))
    assert store.unchanged_core_schools(con, Y, P, True) == {CODES[0], CODES[1]}
    con.unregister("_load")
    _run(con, files, dict.fromkeys(CODES, 1), _issues([]), True)
    assert con.execute("select count(*) from core_learners where sex = '2'").fetchone() == (0,)  # put right
    # the register's version is part of every core row: a new version number rewrites the school
    _run(con, files, {**dict.fromkeys(CODES, 1), CODES[1]: 3}, _issues([]), True)
    assert con.execute("select distinct version from core_learners where school_code = ?", [CODES[1]]).fetchall() == [(3,)]


def test_the_audit_finds_each_kind_of_disagreement_and_nothing_else(tmp_path):
    """store.inconsistencies (grouped counts joined to the register): every kind of problem on
    its own school, the detail counts exact, a consistent school not named, the collection's
    audit the same as the whole database's and another collection's empty."""
    con = store.connect(tmp_path / "a.duckdb")
    store.ensure_tables(con)
    codes = [f"747000{i:02d}" for i in range(1, 8)]
    files = {c: f"h{c[-2:]}" for c in codes}
    for c, h in files.items():
        _stage(con, c, h, 3)
        con.execute("""insert into raw_learners (school_year, period, school_code, file_hash, sheet_name, excel_row)
                       select school_year, period, school_code, file_hash, sheet_name, excel_row from stg_learners
                       where file_hash = ?""", [h])
    _run(con, files, dict.fromkeys(codes, 1), _issues([]), True)
    con.execute("update submission set n_learners = 3")
    assert store.inconsistencies(con).empty
    c1, c2, c3, c4, c5, c6, c7 = codes
    con.execute("delete from stg_learners where school_code = ? and excel_row = 7", [c1])  # staging incomplete
    con.execute("delete from core_learners where school_code = ? and excel_row = 5", [c2])  # a core row lost
    con.execute("""insert into validation_issue (school_year, period, school_code, file_hash, sheet, excel_row, severity)
                   values (?, ?, ?, ?, 'HocSinh', 6, 'error'), (?, ?, ?, ?, 'HocSinh', 6, 'error')""",
                [Y, P, c3, files[c3]] * 2)  # an error row still in core (twice reported: counted once)
    con.execute("insert into core_learners select * replace ('other' as file_hash) from core_learners "
                "where school_code = ? and excel_row = 5", [c4])  # another file's row
    con.execute("insert into core_school select * from core_school where school_code = ?", [c5])  # two school rows
    con.execute("update submission set loaded_rows = 9 where school_code = ?", [c6])
    con.execute("update submission set in_core = false where school_code = ?", [c7])  # accepted, core orphaned
    got = sorted(store.inconsistencies(con)[["school_code", "problem", "detail"]].itertuples(index=False, name=None))
    assert got == [
        (c1, "core rows: learners", "expected 2, in core 3, of another file 0"),
        (c1, "staging incomplete: learners", "registered 3, staged 2 (raw 3)"),
        (c2, "core rows: learners", "expected 3, in core 2, of another file 0"),
        (c2, "loaded_rows", "register 3, core 2"),
        (c3, "core rows: learners", "expected 2, in core 3, of another file 0"),
        (c4, "core rows: learners", "expected 3, in core 4, of another file 1"),
        (c4, "loaded_rows", "register 3, core 4"),
        (c5, "core_school row", "rows: 2"),
        (c6, "loaded_rows", "register 9, core 3"),
        (c7, "accepted but not in core", "status accepted"),
        (c7, "core rows without a register row", "file not registered as in core"),
    ]
    pd.testing.assert_frame_equal(store.inconsistencies(con, Y, P), store.inconsistencies(con))
    assert store.inconsistencies(con, Y, "cuoi_nam").empty


def _stamped_runs(tmp_path, valid_rows, monkeypatch, name: str):
    """A first load (no stamp trusted: each school proven by content, then stamped), then school
    1 re-sent (staged again) giving school 2's unchanged file an error, loaded with the stamps
    trusted (what load_all does in the file a completed run left audited). Returns the
    connection and the schools the content check was asked about in each run."""
    asked, real = [], store.unchanged_core_schools

    def spy(con, *a, **k):
        asked.append({c for (c,) in con.execute("select school_code from _load").fetchall()})
        return real(con, *a, **k)
    monkeypatch.setattr(store, "unchanged_core_schools", spy)
    con, files, versions = _three_staged(tmp_path / f"{name}.duckdb")
    store.write_run(con, run_id="r", school_year=Y, period=P, submissions=_subs(files, versions), issues=_issues([]),
                    load=dict(files), load_valid_rows=valid_rows, stamps=False, restaged=files.values())
    _stage(con, CODES[0], "h1b", 2)
    files2 = {**files, CODES[0]: "h1b"}
    store.write_run(con, run_id="r", school_year=Y, period=P, submissions=_subs(files2, {**versions, CODES[0]: 2}),
                    issues=_issues([(CODES[1], "h2", 6), (CODES[0], "h1b", 6)]), load=dict(files2),
                    load_valid_rows=valid_rows, stamps=True, restaged=["h1b"])
    return con, asked


def test_a_stamped_school_is_not_digested_again_and_the_database_equals_a_full_rewrite(tmp_path, valid_rows, monkeypatch):
    """issue 12: with the stamps trusted only the schools whose stamp no longer holds (school 1:
    another file; school 2: its error rows changed) are proven by content; school 3 is kept by
    its stamp. The database equals write_run's full rewrite."""
    con, asked = _stamped_runs(tmp_path, valid_rows, monkeypatch, "stamped")
    assert asked == [set(CODES), {CODES[0], CODES[1]}]
    assert sorted(con.execute("select school_code, file_hash, version from incremental_core_written").fetchall()) == [
        (CODES[0], "h1b", 2), (CODES[1], "h2", 1), (CODES[2], "h3", 1)]
    monkeypatch.setattr(store, "REUSE_UNCHANGED_CORE", False)
    full, _ = _stamped_runs(tmp_path, valid_rows, monkeypatch, "full")
    assert _content(con) == _content(full)


def test_a_stamp_that_no_longer_holds_is_proven_by_content(tmp_path, monkeypatch):
    """Each part of a stamp: another register version, the file staged again (here with other
    rows), and a load that does not trust the stamps drops every one (a school not loaded too)."""
    con = store.connect(tmp_path / "t.duckdb")
    store.ensure_tables(con)
    files = {c: f"h{c[-1]}" for c in CODES}
    for c, h in files.items():
        _stage(con, c, h, 3)

    def run(versions, stamps, restaged=(), load=files):
        return store.write_run(con, run_id="r", school_year=Y, period=P, submissions=_subs(load, versions),
                               issues=_issues([]), load=dict(load), load_valid_rows=True, stamps=stamps,
                               restaged=restaged)
    run(dict.fromkeys(CODES, 1), False)
    run({**dict.fromkeys(CODES, 1), CODES[1]: 3}, True)
    assert con.execute("select distinct version from core_learners where school_code = ?", [CODES[1]]).fetchall() == [(3,)]
    con.execute("update stg_learners set sex = '2' where file_hash = 'h3'")  # staged again, other rows
    run({**dict.fromkeys(CODES, 1), CODES[1]: 3}, True, restaged=["h3"])
    assert con.execute("select count(*) from core_learners where school_code = ? and sex = '2'",
                       [CODES[2]]).fetchone() == (3,)
    run({CODES[0]: 1}, False, load={CODES[0]: "h1"})
    assert con.execute("select school_code from incremental_core_written").fetchall() == [(CODES[0],)]
