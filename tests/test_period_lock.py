"""Period lock, late files and the audit trail (issue 11, item 3), end to end.

Through the CLI on a real DuckDB file: the `run` and `report` commands are real processes and real
Prefect flow runs against the test-started server: the first run, the report and closing twice (its
stderr must be exactly one line) are the console script in a new interpreter; the later runs are
`edustat run` processes forked from a process that has imported what a run imports
(tests/warmrun.py, as the kill -9 chain of test_faults.py and the officer's served runs start), so
each pays its own work but not a Python start and the imports again (with EDUSTAT_TESTS_COLD=1
every run is the console script, as in test_faults.py); the officer's other commands (close,
status, accept-late, rebuild, reopen, builds, audit) run the same typer app in this process
(tests/inproc.py: the same parsing, exit codes, stdout and stderr, without a Python start and its
imports per command). A closed collection holds a changed file as "late" and changes nothing in
core, the forms or their cells; accept-late loads it (reason required) while the period stays
closed; reopen lets the next run process the other late file; the audit trail records every step
append-only; and the forms of the first build, rebuilt from its recorded versions after a school's
data changed, equal the originals cell by cell. Through a Prefect flow run in this process:
`close_after` closes the collection and the next flow run holds a late file."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import openpyxl
import pytest

from edustat.synth import generate_city
from tests.inproc import edustat

YEAR, PERIOD = "2022-2023", "dau_nam"
EDUSTAT = str(Path(sys.executable).parent / "edustat")
pytestmark = pytest.mark.slow


def _cells(path: Path) -> dict:
    """Every cell value of every sheet of a workbook, as openpyxl reads it."""
    wb = openpyxl.load_workbook(path)
    return {ws.title: [tuple(r) for r in ws.iter_rows(values_only=True)] for ws in wb.worksheets}


def _change(path: Path, drop: int) -> None:
    """A school's new version: its last `drop` learner rows removed, saved a little later."""
    wb = openpyxl.load_workbook(path)
    ws = wb["HocSinh"]
    ws.delete_rows(ws.max_row - drop + 1, drop)
    wb.save(path)
    later = time.time() + 10
    os.utime(path, (later, later))


def _db(data: Path):
    return duckdb.connect(str(data / "curated" / "edustat.duckdb"), read_only=True)


def _core(data: Path) -> list:
    with _db(data) as con:
        return con.execute("""select school_code, file_hash, version, count(*) from core_learners
                              group by all order by 1""").fetchall()


def _form_cells(data: Path) -> list:
    with _db(data) as con:
        return con.execute("select * from rpt_form_cell order by all").fetchall()


def _register(data: Path) -> dict:
    with _db(data) as con:
        return {(c, v): (s, cur, core) for c, v, s, cur, core in con.execute(
            "select school_code, version, status, is_current, in_core from submission").fetchall()}


def _audit(data: Path) -> list:
    with _db(data) as con:
        return con.execute("""select seq, happened_at, who, action, school_code, file_hash, old_status, new_status, reason
                              from audit_log order by seq""").fetchall()


@pytest.fixture(scope="module")
def work(tmp_path_factory, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    root = tmp_path_factory.mktemp("lock-cli")
    inbox = root / "inbox"
    manifest = generate_city(inbox, schools=3, seed=5, school_year=YEAR, period=PERIOD)
    (inbox / "manifest.json").unlink()
    files = {s.school_code: inbox / s.file for s in manifest.schools}
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_HOME=str(root / ".prefect"))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([EDUSTAT, *args, "--data-dir", "data"], cwd=root, capture_output=True, text=True,
                              timeout=900, env=env)

    def warm(*args: str) -> subprocess.CompletedProcess:
        if os.environ.get("EDUSTAT_TESTS_COLD"):  # every run a new interpreter
            return cli(*args)
        from tests.warmrun import zygote

        return zygote(env).run([*args, "--data-dir", "data"], env, cwd=root, timeout=900)

    def cmd(*args: str) -> subprocess.CompletedProcess:
        return edustat(*args, "--data-dir", "data", cwd=root)

    yield {"root": root, "data": root / "data", "inbox": inbox, "files": files, "codes": sorted(files), "cli": cli,
           "warm": warm, "cmd": cmd}
    from tests.warmrun import release

    release(env)  # its zygote ends with the module, not with the session


def test_close_late_accept_reopen_audit_and_exact_rebuild_through_the_cli(work):
    cli, warm, cmd, data, inbox = work["cli"], work["warm"], work["cmd"], work["data"], work["inbox"]
    a, b, _ = work["codes"]
    period = ["--year", YEAR, "--period", PERIOD]

    # 1. the collection: every school accepted, forms built and the build recorded (the console
    # script in a new interpreter; the later runs are forked warm, see the module docstring)
    first = cli("run", *period, "--inbox", str(inbox), "--no-publish")
    assert first.returncode == 0, first.stderr
    reports = data / "curated" / "reports" / YEAR / PERIOD
    original = {p.name: _cells(p) for p in sorted(reports.glob("*.xlsx"))}
    assert len(original) == 6
    core_before, cells_before = _core(data), _form_cells(data)
    bytes_before = {p.name: p.read_bytes() for p in reports.glob("*.xlsx")}
    listed = cmd("builds", *period)
    assert listed.returncode == 0 and "3 trường" in listed.stdout, listed.stdout
    build_1 = listed.stdout.split()[0]

    # 2. the officer closes it; closing twice is one Vietnamese line
    closed = cmd("close", *period, "--reason", "hết hạn nộp 30/10", "--by", "Cán bộ thống kê A")
    assert closed.returncode == 0, closed.stderr
    assert "Đã khóa kỳ đầu năm năm học 2022-2023" in closed.stdout
    again = cli("close", *period)
    assert again.returncode == 2 and again.stderr.strip().startswith("Lỗi: kỳ đầu năm năm học 2022-2023 đã khóa rồi")
    assert len(again.stderr.strip().splitlines()) == 1

    # 3. two schools send new versions after the close: held as late, nothing else changes
    _change(work["files"][a], 4)
    _change(work["files"][b], 3)
    late = warm("run", *period, "--inbox", str(inbox), "--no-publish")
    assert late.returncode == 0, late.stderr
    assert "Kỳ đã khóa" in late.stdout and "2 tệp nộp muộn" in late.stdout, late.stdout
    assert _core(data) == core_before
    assert _form_cells(data) == cells_before
    assert {p.name: p.read_bytes() for p in reports.glob("*.xlsx")} == bytes_before  # forms not even rewritten
    reg = _register(data)
    assert reg[(a, 2)] == ("late", False, False) and reg[(b, 2)] == ("late", False, False)
    assert reg[(a, 1)][2] is True and reg[(b, 1)][2] is True  # the accepted versions stay in core
    status = cmd("status", *period)
    assert status.returncode == 0
    assert "KỲ ĐÃ KHÓA" in status.stdout and status.stdout.count("Nộp muộn — chờ Phòng xử lý") == 2, status.stdout
    with _db(data) as con:
        raw_paths = [r[0] for r in con.execute("select raw_path from submission where status = 'late'").fetchall()]
    assert all(Path(p).is_file() for p in raw_paths)  # the late files are kept
    fb = openpyxl.load_workbook(data / "curated" / "feedback" / YEAR / PERIOD / f"{a}.xlsx", read_only=True)
    said = " ".join(str(v) for row in fb["PhanHoi"].iter_rows(values_only=True) for v in row if v)
    assert "Nộp muộn — chờ Phòng xử lý" in said and "đã khóa" in said

    # a run of the same inbox again changes nothing and holds nothing twice
    rerun = warm("run", *period, "--inbox", str(inbox), "--no-publish")
    assert rerun.returncode == 0 and "0 tệp nộp muộn trong lần chạy này, 2 tệp đang chờ" in rerun.stdout, rerun.stdout
    assert _core(data) == core_before and len(_register(data)) == 5

    # 4. accepting needs a reason; then school a's late file is loaded, the period stays closed
    no_reason = cmd("accept-late", *period, "--school", a)
    assert no_reason.returncode == 2 and "cần ghi lý do" in no_reason.stderr
    accepted = cmd("accept-late", *period, "--school", a, "--reason", "trường báo mất điện hôm 30/10",
                   "--by", "Cán bộ thống kê A")
    assert accepted.returncode == 0, accepted.stderr
    assert "kỳ vẫn khóa" in accepted.stdout
    core_now = {r[0]: r for r in _core(data)}
    assert core_now[a][2] == 2 and core_now[a][3] == core_before[0][3] - 4
    assert core_now[b] == next(r for r in core_before if r[0] == b)  # still its first version
    assert _register(data)[(b, 2)][0] == "late"

    # 5. the forms are built again from the new data (a real Prefect run): the cells changed
    rebuilt_now = cli("report", *period)
    assert rebuilt_now.returncode == 0, rebuilt_now.stderr
    assert "Mã lần lập biểu" in rebuilt_now.stdout
    current = {p.name: _cells(p) for p in sorted(reports.glob("*.xlsx"))}
    assert current != original  # school a's data changed: the test below can fail

    # 6. the first build, rebuilt from its recorded versions, equals the original in every cell
    out = work["root"] / "rebuilt"
    rebuilt = cmd("rebuild", "--build", build_1, "-o", str(out))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "khớp từng ô" in rebuilt.stdout
    again_files = {p.name: _cells(p) for p in sorted((out / YEAR / PERIOD).glob("*.xlsx"))}
    assert again_files.keys() == original.keys()
    for name in original:
        assert again_files[name] == original[name], name
    refused = cmd("rebuild", "--build", build_1, "-o", str(data / "curated"))
    assert refused.returncode == 2 and "biểu hiện hành" in refused.stderr

    # 7. reopen (reason required); the next run processes school b's late file as usual
    assert cmd("reopen", *period).returncode == 2
    reopened = cmd("reopen", *period, "--reason", "Sở gia hạn đến 05/11", "--by", "Cán bộ thống kê A")
    assert reopened.returncode == 0 and "1 tệp nộp muộn" in reopened.stdout, reopened.stdout
    audit_before_run = _audit(data)
    third = warm("run", *period, "--inbox", str(inbox), "--no-publish")
    assert third.returncode == 0, third.stderr
    reg = _register(data)
    assert reg[(b, 2)][0] in ("accepted", "accepted_with_warnings") and reg[(b, 2)][2] is True
    assert {r[0]: r for r in _core(data)}[b][2] == 2

    # 8. the audit trail: every step, who, why, which file; append-only
    trail = _audit(data)
    assert trail[: len(audit_before_run)] == audit_before_run  # earlier rows untouched
    assert [r[0] for r in trail] == sorted({r[0] for r in trail})  # strictly increasing
    actions = [(r[3], r[4]) for r in trail]
    assert actions[:3] == [("submission", c) for c in sorted(work["codes"])] or \
        sorted(actions[:3]) == [("submission", c) for c in sorted(work["codes"])]
    rest = [r for r in trail[3:]]
    kinds = [r[3] for r in rest]
    assert kinds == ["close", "late", "late", "accept_late", "reopen", "status_change"], kinds
    close, late_a, late_b, accept, reopen, change = rest
    assert close[2] == "Cán bộ thống kê A" and close[8] == "hết hạn nộp 30/10" and (close[6], close[7]) == ("open", "closed")
    assert {late_a[4], late_b[4]} == {a, b} and all(r[7] == "late" and r[5] for r in (late_a, late_b))
    assert accept[4] == a and accept[6] == "late" and accept[7] in ("accepted", "accepted_with_warnings")
    assert accept[8] == "trường báo mất điện hôm 30/10" and accept[2] == "Cán bộ thống kê A"
    assert accept[5] == next(r[5] for r in (late_a, late_b) if r[4] == a)  # the very file held
    assert reopen[8] == "Sở gia hạn đến 05/11"
    assert change[4] == b and change[6] == "late" and change[7] in ("accepted", "accepted_with_warnings")
    shown = cmd("audit", *period)
    assert shown.returncode == 0
    for words in ("khóa kỳ", "nộp muộn (giữ lại)", "nhận tệp nộp muộn", "mở lại kỳ", "lý do: Sở gia hạn đến 05/11"):
        assert words in shown.stdout, shown.stdout


def test_a_prefect_flow_run_closes_after_and_holds_a_late_file(tmp_path, prefect_harness):
    from flows.collect import collection_flow

    inbox = tmp_path / "inbox"
    manifest = generate_city(inbox, schools=2, seed=9, school_year=YEAR, period=PERIOD)
    (inbox / "manifest.json").unlink()
    data = tmp_path / "data"
    s1 = collection_flow(school_year=YEAR, period=PERIOD, inbox=str(inbox), data_dir=str(data), publish=False,
                         close_after=True)
    assert s1["counts"]["accepted"] + s1["counts"]["accepted_with_warnings"] == 2
    with _db(data) as con:
        assert con.execute("select state from period_state").fetchall() == [("closed",)]
        who = con.execute("select who from audit_log where action = 'close'").fetchone()[0]
    assert "Prefect" in who
    core_before, cells_before = _core(data), _form_cells(data)
    code = manifest.schools[0].school_code
    _change(inbox / manifest.schools[0].file, 2)
    s2 = collection_flow(school_year=YEAR, period=PERIOD, inbox=str(inbox), data_dir=str(data), publish=False)
    assert s2["closed"] is True and s2["counts"].get("late") == 1 and s2["schools"] == {code: "late"}
    assert _core(data) == core_before and _form_cells(data) == cells_before
    with _db(data) as con:
        held = con.execute("select school_code, status, in_core from submission where status = 'late'").fetchall()
        trail = con.execute("select action, school_code, new_status from audit_log order by seq").fetchall()
    assert held == [(code, "late", False)]
    assert trail[-1] == ("late", code, "late") and ("close", None, "closed") in trail


def test_a_failed_close_or_hold_leaves_nothing_and_a_lost_raw_copy_is_one_line(tmp_path, monkeypatch):
    """Atomic: a fault inside the close's or the late hold's transaction leaves no state, no
    register row and no audit row; accepting a late file whose kept copy is gone says so."""
    from edustat import period_lock as period, store
    from edustat.config import load_config
    from edustat.pipeline import run_collection

    inbox = tmp_path / "inbox"
    manifest = generate_city(inbox, schools=2, seed=13, school_year=YEAR, period=PERIOD)
    (inbox / "manifest.json").unlink()
    cfg = load_config(None, tmp_path / "data")
    files = sorted(p for p in inbox.iterdir())
    with store.session(cfg.db_path) as con:
        run_collection(con, files, cfg, YEAR, PERIOD, workers=1)
        trail = period.audit_rows(con)
        monkeypatch.setenv("EDUSTAT_FAULT", "period:written:ENOSPC")
        with pytest.raises(OSError):
            period.close(con, YEAR, PERIOD, "A", "hết hạn")
        assert period.state(con, YEAR, PERIOD) == "open" and period.audit_rows(con).equals(trail)
        monkeypatch.delenv("EDUSTAT_FAULT")
        period.close(con, YEAR, PERIOD, "A", "hết hạn")
        code = manifest.schools[0].school_code
        _change(inbox / manifest.schools[0].file, 2)
        register = con.execute("select * from submission order by all").fetchall()
        trail = period.audit_rows(con)
        monkeypatch.setenv("EDUSTAT_FAULT", "late:written:EIO")
        with pytest.raises(OSError):
            run_collection(con, files, cfg, YEAR, PERIOD, workers=1)
        assert con.execute("select * from submission order by all").fetchall() == register
        assert period.audit_rows(con).equals(trail)
        monkeypatch.delenv("EDUSTAT_FAULT")
        out = run_collection(con, files, cfg, YEAR, PERIOD, workers=1)
        assert out.closed and list(out.submissions["status"]) == ["late"]
        raw = Path(period.late_files(con, YEAR, PERIOD)["raw_path"].iloc[0])
    os.chmod(raw, 0o644)
    raw.unlink()
    with pytest.raises(period.PeriodError, match="không còn bản lưu gốc"):
        period.accept_late(cfg, YEAR, PERIOD, "A", "cho phép", school=code)
    with pytest.raises(period.PeriodError, match="cần lý do"):
        period.accept_late(cfg, YEAR, PERIOD, "A", "  ", school=code)


def test_the_officers_summary_says_closed_late_and_certified():
    import datetime as dt

    import pandas as pd

    from edustat import officer
    from edustat.pipeline import format_summary

    s = {"school_year": YEAR, "period": PERIOD, "run_id": "r", "files": 2, "issues": {"error": 0, "warning": 0, "notice": 0},
         "counts": {"accepted": 0, "accepted_with_warnings": 0, "partially_loaded": 0, "rejected": 0, "unreadable": 0,
                    "missing": 0, "late": 2},
         "feedback_dir": "f", "database": "d", "missing": [], "closed": True, "late_waiting": 3,
         "certified_schools": 1, "schools_in_core": 3}
    md = officer.summary_markdown(s, pd.DataFrame(columns=["status", "school_code", "school_name", "received_date"]), None,
                                  dt.date(2022, 10, 30), dt.date(2022, 10, 1), pd.DataFrame(columns=["grade", "nam", "nu"]))
    assert "Kỳ **đã khóa**" in md and "3 tệp nộp muộn đang chờ" in md and "1 / 3 trường" in md
    text = format_summary(s)
    assert "Kỳ đã khóa" in text and "2 tệp nộp muộn trong lần chạy này, 3 tệp đang chờ" in text and "1 / 3" in text
    table = pd.DataFrame([{"school_code": "74718001", "school_name": "T", "status": "accepted", "version": 1, "n_learners": 1,
                           "n_staff": 1, "n_errors": 0, "n_warnings": 0, "received_at": None, "received_date": None,
                           "in_core": True, "certified": True}])
    assert officer.table_artifact_rows(table)[0]["Trạng thái"] == "Đã tiếp nhận · HT xác nhận"
    assert officer.status_text("late", False, short=True) == "Nộp muộn, chờ xử lý"
