"""Period lock and audit trail (issue 11, item 3).

The officer closes a collection (`edustat close`, or the collection flow's `close_after`
parameter); from then on a run changes nothing in core_* or the forms: a file whose bytes (or
cells, see pipeline.reuse_known_contents) are already registered is left alone, and a new file
is registered with status "late" ("nộp muộn — chờ Phòng xử lý"), its raw copy kept under
raw/ by hash, its issues recorded so the school's feedback says what to fix, and nothing else.
Late files wait for the officer: `edustat accept-late` loads them (from the kept raw copies,
through the normal read → validate → load, the period staying closed), `edustat reopen` opens
the collection again (the next run processes the inbox as usual).

Tables (in the officer's DuckDB; never published):

    period_state (school_year, period, state open|closed, changed_at, changed_by, reason)
    audit_log    (seq, happened_at, who, action, school_year, period, school_code, file_hash,
                  old_status, new_status, reason, run_id)

`audit_log` is append-only: this module only ever inserts into it. Actions: close, reopen,
late (a file held), accept_late (an override: the officer's reason is required), submission
(a school's first file), resubmission (a new version), status_change (a file's status changed
on a later run). Every row is written in the same transaction as what it describes (the load's
transaction in pipeline.load_all; the state change's own transaction here). Who: the `--by`
option, else the OS user running edustat (a Prefect run: the worker's user plus the flow run).
Times are Vietnam time (UTC+7), as everywhere in the register.
"""
from __future__ import annotations

import datetime as dt
import getpass
from pathlib import Path

import pandas as pd

from edustat import faults
from edustat.store import and_given

LATE_TEXT = "Nộp muộn — chờ Phòng xử lý"

DDL = """
create table if not exists period_state (
    school_year varchar, period varchar, state varchar, changed_at timestamp, changed_by varchar, reason varchar,
    primary key (school_year, period));
create sequence if not exists audit_seq;
create table if not exists audit_log (
    seq bigint default nextval('audit_seq'), happened_at timestamp, who varchar, action varchar,
    school_year varchar, period varchar, school_code varchar, file_hash varchar,
    old_status varchar, new_status varchar, reason varchar, run_id varchar);
"""
AUDIT_COLUMNS = ["happened_at", "who", "action", "school_year", "period", "school_code", "file_hash", "old_status",
                 "new_status", "reason", "run_id"]
ACTION_TEXT = {"close": "khóa kỳ", "reopen": "mở lại kỳ", "late": "nộp muộn (giữ lại)",
               "accept_late": "nhận tệp nộp muộn", "submission": "nộp lần đầu", "resubmission": "nộp lại (bản mới)",
               "status_change": "đổi trạng thái", "repair": "nạp lại từ bản lưu gốc (sửa lệch)"}
PERIOD_TEXT = {"dau_nam": "đầu năm", "cuoi_nam": "cuối năm"}


class PeriodError(ValueError):
    """An officer's request that cannot be done (one Vietnamese line)."""


def now_vn() -> dt.datetime:
    from edustat.pipeline import VN_TZ

    return dt.datetime.now(VN_TZ).replace(tzinfo=None)


def who(by: str | None = None) -> str:
    """The person behind an action: `--by`, else the OS user (a Prefect run adds its run)."""
    if by and by.strip():
        return by.strip()
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment
        user = "?"
    import sys

    if "prefect" not in sys.modules:  # not inside a flow run (and the CLI stays quick)
        return user
    try:
        from prefect.runtime import flow_run

        if flow_run.id:
            return f"{user} (Prefect: {flow_run.name or flow_run.id})"
    except Exception:  # noqa: BLE001 - outside a flow run
        pass
    return user


def ensure(con) -> None:
    """The tables, unless they exist (so readers on a read-only connection can call it)."""
    have = {r[0] for r in con.execute("select table_name from duckdb_tables() where database_name = current_database() "
                                      "and table_name in ('period_state', 'audit_log')").fetchall()}
    if have != {"period_state", "audit_log"}:
        con.execute(DDL)


def state(con, school_year: str, period: str) -> str:
    """'open' or 'closed' (a collection never closed is open)."""
    ensure(con)
    row = con.execute("select state from period_state where school_year = ? and period = ?",
                      [school_year, period]).fetchone()
    return row[0] if row else "open"


def state_row(con, school_year: str, period: str) -> dict:
    ensure(con)
    row = con.execute("select state, changed_at, changed_by, reason from period_state where school_year = ? and period = ?",
                      [school_year, period]).fetchone()
    if not row:
        return {"state": "open", "changed_at": None, "changed_by": None, "reason": None}
    return dict(zip(("state", "changed_at", "changed_by", "reason"), row))


def audit(con, rows: list[dict]) -> None:
    """Append audit rows (inside the caller's transaction)."""
    if not rows:
        return
    ensure(con)
    frame = pd.DataFrame([{k: r.get(k) for k in AUDIT_COLUMNS} for r in rows], columns=AUDIT_COLUMNS)
    frame["happened_at"] = pd.to_datetime(frame["happened_at"])
    con.register("_audit", frame)
    con.execute(f"insert into audit_log ({', '.join(AUDIT_COLUMNS)}) select {', '.join(AUDIT_COLUMNS)} from _audit")
    con.unregister("_audit")


def _set_state(con, school_year: str, period: str, new: str, by: str, reason: str | None, action: str) -> dict:
    from edustat.store import transaction

    ensure(con)
    when = now_vn()
    with transaction(con):
        old = state(con, school_year, period)
        if old == new:
            kind = PERIOD_TEXT.get(period, period)
            raise PeriodError(f"kỳ {kind} năm học {school_year} đã {'khóa' if new == 'closed' else 'mở'} rồi; không làm gì")
        con.execute("insert or replace into period_state values (?, ?, ?, ?, ?, ?)",
                    [school_year, period, new, when, by, reason])
        audit(con, [{"happened_at": when, "who": by, "action": action, "school_year": school_year, "period": period,
                     "old_status": old, "new_status": new, "reason": reason}])
        faults.point("period:written")  # the fault tests: nothing of a failed close/reopen remains
    return {"state": new, "at": when, "who": by}


def close(con, school_year: str, period: str, by: str, reason: str | None = None) -> dict:
    return _set_state(con, school_year, period, "closed", by, reason, "close")


def reopen(con, school_year: str, period: str, by: str, reason: str) -> dict:
    if not (reason and reason.strip()):
        raise PeriodError("mở lại kỳ cần lý do: --reason \"…\"")
    return _set_state(con, school_year, period, "open", by, reason.strip(), "reopen")


def late_files(con, school_year: str, period: str, school: str | None = None, file_hash: str | None = None) -> pd.DataFrame:
    """The files held as late (status 'late'), oldest first."""
    ensure(con)
    sql = """select school_code, version, file_hash, file_name, raw_path, received_at, certified
             from submission where school_year = ? and period = ? and status = 'late'"""
    sql, params = and_given(sql, [school_year, period], {"school_code = ?": school, "starts_with(file_hash, ?)": file_hash})
    return con.execute(sql + " order by received_at, file_name", params).df()


def audit_rows(con, school_year: str | None = None, period: str | None = None, school: str | None = None) -> pd.DataFrame:
    ensure(con)
    sql, params = and_given("select seq, " + ", ".join(AUDIT_COLUMNS) + " from audit_log where true", [],
                            {"school_year = ?": school_year, "period = ?": period, "school_code = ?": school})
    return con.execute(sql + " order by seq", params).df()


# ---------------------------------------------------------------------------------------
# Inside the load's transaction (called by pipeline.load_all)
# ---------------------------------------------------------------------------------------

def previous(con, school_year: str, period: str) -> tuple[dict[str, str], set[str]]:
    """(file hash → status registered before this run, schools with a registered file)."""
    rows = con.execute("select file_hash, status, school_code from submission where school_year = ? and period = ?",
                       [school_year, period]).fetchall()
    return {h: s for h, s, _ in rows}, {c for _, _, c in rows if c}


def run_audit_rows(before: tuple[dict[str, str], set[str]], submissions: pd.DataFrame, school_year: str, period: str,
                   run_id: str, by: str, override: dict | None = None) -> list[dict]:
    """What a load changed, as audit rows: a first file, a new version, a status change; with
    an `override` (accept-late) every file of the load is recorded under its action and reason."""
    old_status, known_schools = before
    when = now_vn()
    rows = []
    for r in submissions.itertuples(index=False):
        code = r.school_code if isinstance(r.school_code, str) else None
        old = old_status.get(r.file_hash)
        if override:
            action, reason = override["action"], override.get("reason")
        elif old is None:
            action, reason = ("resubmission" if code in known_schools else "submission"), None
        elif old != r.status:
            action, reason = "status_change", None
        else:
            continue  # the same file read again with the same outcome: nothing changed
        rows.append({"happened_at": when, "who": by, "action": action, "school_year": school_year, "period": period,
                     "school_code": code, "file_hash": r.file_hash, "old_status": old, "new_status": r.status,
                     "reason": reason, "run_id": run_id})
    return rows


def hold_late(con, results, issues: pd.DataFrame, cfg, school_year: str, period: str, run_id: str):
    """A run on a closed collection: every file not registered before is registered "late"
    (its issues kept for the school's feedback), audited, and nothing else is written."""
    from edustat import certify
    from edustat.pipeline import RunOutcome, _REGISTER_COLUMNS, _received
    from edustat.store import next_versions, transaction

    by = who()
    now = now_vn()
    known, _ = previous(con, school_year, period)
    counted = [fr for fr in results if not fr.superseded and fr.sha256 not in known]
    versions = next_versions(con, school_year, period, {fr.sha256: fr.school_code for fr in counted if fr.school_code})
    hashes = {fr.sha256 for fr in counted}
    mine = issues[issues["file_hash"].isin(hashes)] if len(issues) else issues
    subs = []
    for fr in counted:
        counts = mine.loc[mine["file_hash"] == fr.sha256, "severity"].value_counts().to_dict() if len(mine) else {}
        cert, cert_on = certify.certification(fr)
        subs.append({
            "school_year": school_year, "period": period, "school_code": fr.school_code,
            "version": versions.get(fr.sha256), "file_hash": fr.sha256, "content_hash": getattr(fr, "content_hash", None),
            "file_name": fr.name, "raw_path": str(fr.raw_path) if fr.raw_path else None,
            "received_at": _received(fr, now), "status": "late",
            "n_learners": fr.rows("learners"), "n_staff": fr.rows("staff"), "n_classes": fr.rows("classes"),
            "n_rooms": fr.rows("rooms"), "n_errors": int(counts.get("error", 0)),
            "n_warnings": int(counts.get("warning", 0)), "n_notices": int(counts.get("notice", 0)),
            "loaded_rows": 0, "run_id": run_id, "feedback_path": None, "certified": cert, "certified_on": cert_on,
        })
    columns = list(subs[0]) if subs else _REGISTER_COLUMNS
    submissions = pd.DataFrame(subs, columns=columns)
    if len(submissions):
        submissions = submissions.astype({"version": "Int32", "n_learners": "Int32", "n_staff": "Int32",
                                          "n_classes": "Int32", "n_rooms": "Int32", "n_errors": "Int32",
                                          "n_warnings": "Int32", "n_notices": "Int32", "loaded_rows": "Int32"})
        with transaction(con):
            if len(mine):
                iss = mine.assign(run_id=run_id, school_year=school_year, period=period)
                cols = ["run_id", "school_year", "period", "school_code", "file_hash", "file_name", "sheet", "excel_row",
                        "column", "field", "header", "rule_id", "severity", "value", "message", "fix"]
                con.register("_late_issues", iss[cols].astype({"excel_row": "Int32"}))
                con.execute("insert into validation_issue select * from _late_issues")
                con.unregister("_late_issues")
            con.register("_late", submissions)
            con.execute("""insert into submission by name
                           select *, false as is_current, false as in_core from _late""")
            con.unregister("_late")
            audit(con, [{"happened_at": now, "who": by, "action": "late", "school_year": school_year, "period": period,
                         "school_code": r["school_code"], "file_hash": r["file_hash"], "old_status": None,
                         "new_status": "late", "reason": "kỳ đã khóa", "run_id": run_id} for r in subs])
            faults.point("late:written")
        con.execute("checkpoint")
    return RunOutcome(run_id, school_year, period, submissions, mine.reset_index(drop=True) if len(mine) else mine, {},
                      closed=True)


def accept_late(cfg, school_year: str, period: str, by: str, reason: str, school: str | None = None,
                file_hash: str | None = None) -> dict:
    """Load the held late files (all, one school's, or one by hash prefix) from their kept raw
    copies through the normal read → validate → load, in one transaction with an
    `accept_late` audit row per file; the collection stays closed. Needs the writer lock
    (the caller holds `pipeline.sole_writer`)."""
    import shutil
    import tempfile

    from edustat import pipeline
    from edustat.store import session

    if not (reason and reason.strip()):
        raise PeriodError("nhận tệp nộp muộn cần lý do: --reason \"…\"")
    with session(cfg.db_path, cfg.private_group) as con:
        todo = late_files(con, school_year, period, school, file_hash)
    if todo.empty:
        what = f" của trường {school}" if school else (f" có mã {file_hash}" if file_hash else "")
        raise PeriodError(f"không có tệp nộp muộn nào{what} đang chờ xử lý (năm học {school_year}, kỳ "
                          f"{PERIOD_TEXT.get(period, period)})")
    gone = [r.file_name for r in todo.itertuples(index=False) if not (isinstance(r.raw_path, str) and Path(r.raw_path).is_file())]
    if gone:
        raise PeriodError(f"không còn bản lưu gốc (raw/) của tệp {', '.join(gone)}; cần trường gửi lại")
    tmp = Path(tempfile.mkdtemp(prefix=".repair-", dir=cfg.data_dir))  # cleaned by clean_temp_files if killed
    try:
        files = []
        for i, r in enumerate(todo.itertuples(index=False)):
            dest = tmp / str(i) / Path(r.file_name).name
            dest.parent.mkdir()
            shutil.copyfile(r.raw_path, dest)
            files.append(dest)
        run_id = pipeline.new_run_id() + "-late"
        results = pipeline.ingest_all(files, cfg, school_year, period, workers=1)
        frames = pipeline.assemble_all(results, cfg)
        issues = pipeline.validate_all(results, cfg, school_year, period, frames)
        with session(cfg.db_path, cfg.private_group) as con:
            outcome = pipeline.load_all(con, results, issues, cfg, school_year, period, run_id, frames=frames,
                                        override={"action": "accept_late", "reason": reason.strip(), "who": by})
            pipeline.write_feedbacks(con, outcome, results, cfg)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"run_id": run_id, "files": outcome.submissions[["school_code", "file_name", "status", "version"]].to_dict("records")}
