"""The collection's steps as plain functions; `flows/collect.py` composes them as Prefect
tasks and owns the order. Each step takes and returns plain data.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd

from edustat.collect import (
    TABLE_SHEETS,
    FileResult,
    Frames,
    active,
    assemble,
    ingest_file,
    mark_superseded,
    scales,
    validate_collection,
)
from edustat.config import Config
from edustat.store import cross_school_issues, next_versions, stage_frames, write_run
from schemas import load_codelist, load_contract
from schemas.rules import Catalogue, load_rules
from transforms.derive import (
    derive_classes,
    derive_learners,
    derive_school,
    derive_staff,
)

VN_TZ = dt.timezone(dt.timedelta(hours=7))
STATUS_TEXT = {
    "accepted": "Đã tiếp nhận",
    "accepted_with_warnings": "Tiếp nhận, có cảnh báo",
    "partially_loaded": "Nạp một phần (dòng có lỗi chưa nạp)",
    "rejected": "Chưa tiếp nhận (có lỗi)",
    "unreadable": "Không đọc được tệp",
    "missing": "Chưa nộp",
}


@dataclass
class RunOutcome:
    run_id: str
    school_year: str
    period: str
    submissions: pd.DataFrame  # one row per file of the run (register columns)
    issues: pd.DataFrame  # every issue of the run's files
    loaded: dict[str, int] = field(default_factory=dict)


# the register row load_all writes per file (also the columns of an empty run's register)
_REGISTER_COLUMNS = ["school_year", "period", "school_code", "version", "file_hash", "file_name", "raw_path",
                     "received_at", "status", "n_learners", "n_staff", "n_classes", "n_rooms", "n_errors",
                     "n_warnings", "n_notices", "loaded_rows", "run_id", "feedback_path"]


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(VN_TZ)
    return now.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _ingest_one(args: tuple) -> FileResult:
    path, raw_root, school_year, period, severity, limits = args
    crash = os.environ.get("EDUSTAT_FAULT_READER_DIES")  # fault-injection hook for the tests
    if crash and crash in Path(path).name:
        os._exit(137)  # as the kernel's OOM killer would
    return ingest_file(path, raw_root=raw_root, school_year=school_year, period=period,
                       catalogue=load_rules(severity), limits=limits)


def _ingest_alone(job: tuple) -> FileResult:
    """One file in a process of its own: if that process dies (a native reader crashing, the
    OOM killer), the file gets the message and the run goes on."""
    from concurrent.futures.process import BrokenProcessPool

    from edustat.collect import file_died

    with ProcessPoolExecutor(max_workers=1) as pool:
        try:
            return pool.submit(_ingest_one, job).result()
        except BrokenProcessPool:
            return file_died(job[0], catalogue=load_rules(job[4]))


def ingest_files(files: list[Path], cfg: Config, school_year: str, period: str) -> list[FileResult]:
    """Parse a batch of files in this process (a Dask task's unit of work)."""
    return [_ingest_one((p, cfg.raw_dir, school_year, period, cfg.severity, cfg.read_limits)) for p in files]


def content_hash(fr: FileResult) -> str | None:
    """sha256 of what a file says, not of its bytes: every sheet's cells as read (text), in
    order, with their headers. A workbook saved again (new timestamp, new zip metadata) with
    the same cells has the same content hash. None for a file that could not be read."""
    if fr.unreadable or not fr.school_code:
        return None
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps(list(fr.school_raw.items()), ensure_ascii=False, default=str).encode("utf-8"))
    for sid in sorted(fr.raw):
        frame = fr.raw[sid]
        h.update(f"\x1d{sid}\x1f{chr(31).join(map(str, frame.columns))}\x1e".encode("utf-8"))
        if len(frame):
            text = frame.astype("string").fillna("\x00")
            h.update(pd.util.hash_pandas_object(text, index=False).to_numpy().tobytes())
    return h.hexdigest()


def reuse_known_contents(results: list[FileResult], cfg: Config, school_year: str, period: str) -> int:
    """A file whose content equals its school's current registered version is that version
    (same file hash, same version, same received time), not a new one. Returns files matched."""
    for fr in results:
        fr.content_hash = content_hash(fr)  # type: ignore[attr-defined]
    if not Path(cfg.db_path).exists():
        return 0
    from edustat.store import current_contents, session

    with session(cfg.db_path) as con:
        known = current_contents(con, school_year, period)
    n = 0
    for fr in results:
        old = known.get((fr.school_code, fr.content_hash))
        if old and old != fr.sha256:
            for issue in fr.issues:
                if issue.get("file_hash") == fr.sha256:
                    issue["file_hash"] = old
            fr.sha256, n = old, n + 1
    return n


def settle(results: list[FileResult], cfg: Config, school_year: str | None = None, period: str | None = None) -> list[FileResult]:
    """Which file of a school counts when it sent more than one; a re-sent copy of the
    current version (same cells, other bytes) is that version."""
    if school_year and period:
        reuse_known_contents(results, cfg, school_year, period)
    mark_superseded(results, load_rules(cfg.severity))
    return results


def ingest_all(files: list[Path], cfg: Config, school_year: str, period: str, workers: int | None = None) -> list[FileResult]:
    """Parse every file (in worker processes when there are several), then settle which
    file of a school counts when it sent more than one."""
    workers = max(1, workers or cfg.workers)
    jobs = [(p, cfg.raw_dir, school_year, period, cfg.severity, cfg.read_limits) for p in files]
    if workers > 1 and len(jobs) > 1:
        from concurrent.futures.process import BrokenProcessPool

        try:
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                results = list(pool.map(_ingest_one, jobs, chunksize=max(1, len(jobs) // (workers * 4))))
        except BrokenProcessPool:  # a reader process died: every file again, each alone
            results = [_ingest_alone(j) for j in jobs]
    else:
        results = [_ingest_one(j) for j in jobs]
    return settle(results, cfg, school_year, period)


def assemble_all(results: list[FileResult], cfg: Config) -> Frames:
    """The collection's sheets concatenated and cast once (see collect.assemble)."""
    return assemble(results, catalogue=load_rules(cfg.severity))


def validate_all(results: list[FileResult], cfg: Config, school_year: str, period: str,
                 frames: Frames | None = None) -> pd.DataFrame:
    return validate_collection(results, school_year=school_year, period=period, catalogue=load_rules(cfg.severity),
                               frames=frames)


def staged_frames(results: list[FileResult], frames: Frames, school_year: str) -> tuple[dict, dict]:
    """raw_ (text as read, unknown columns as JSON) and stg_ (typed + derived) frames of the
    collection's active files, one per sheet, with their key columns."""
    c = load_contract()
    start = int(school_year[:4])
    act = {i: fr for i, fr in enumerate(results) if active(fr)}
    keys = {i: {"school_code": fr.school_code, "file_hash": fr.sha256} for i, fr in act.items()}
    raw, stg = {}, {}
    schools = [dict(derive_school(fr.school, fr.levels, c.mappings), _file=i, excel_row=None) for i, fr in act.items()]
    if schools:
        sch = pd.DataFrame(schools)
        stg["school"] = sch
        raw["school"] = pd.DataFrame([{**{k: (None if v is None else str(v)) for k, v in fr.school.items()}, "_file": i}
                                      for i, fr in act.items()])
    for sid in TABLE_SHEETS:
        parts = []
        for i, fr in act.items():
            frame = fr.raw.get(sid)
            if frame is None or frame.empty:
                continue
            extra = [col for col in frame.columns if col.startswith("extra:")]
            part = frame.drop(columns=extra).assign(_file=i)
            if extra:
                part["extra_columns"] = [json.dumps({k[6:]: v for k, v in zip(extra, vals) if isinstance(v, str)}, ensure_ascii=False)
                                         for vals in frame[extra].itertuples(index=False)]
            parts.append(part)
        if parts:
            raw[sid] = pd.concat(parts, ignore_index=True)
        typed = frames.typed.get(sid)
        if typed is None or typed.empty:
            continue
        if sid == "learners":
            typed = derive_learners(typed, start, c.mappings, scales(c))
        elif sid == "classes":
            typed = derive_classes(typed, c.mappings)
        elif sid == "staff":
            # a staff member's form level depends on the school's levels: one call per combination
            lv = typed["_file"].map({i: fr.levels for i, fr in act.items()})
            typed = pd.concat([derive_staff(typed[lv == combo], start, c.mappings, combo, _primary_subjects())
                               for combo in lv.dropna().unique()], ignore_index=False).loc[typed.index]
        stg[sid] = typed
    for frames_ in (raw, stg):
        for sid, frame in frames_.items():
            f = frame["_file"]
            frame["school_code"] = f.map({i: k["school_code"] for i, k in keys.items()})
            frame["file_hash"] = f.map({i: k["file_hash"] for i, k in keys.items()})
            frame["sheet_name"] = f.map({i: act[i].sheet_names.get(sid) for i in act})
    return raw, stg


@lru_cache(maxsize=1)
def _primary_subjects() -> frozenset[str]:
    """DM_MON_DAY_GV subjects taught only in primary school (IS_C1 and not IS_C2)."""
    cl = load_codelist("moet-2020/DM_MON_DAY_GV")
    return frozenset(c for c, a in zip(cl.codes, cl.attributes) if a.get("is_c1") == "1" and a.get("is_c2") != "1")


def _status(fr: FileResult, counts: dict[str, int], load_valid_rows: bool = False) -> str:
    """Honest per-file status: under `load_valid_rows` a school with row errors is loaded
    without those rows — "partially_loaded", never "rejected" (nor "accepted")."""
    if fr.unreadable:
        return "unreadable"
    if fr.blocked:
        return "rejected"
    if counts.get("error", 0):
        return "partially_loaded" if load_valid_rows else "rejected"
    if counts.get("warning", 0):
        return "accepted_with_warnings"
    return "accepted"


def _received(fr: FileResult, now: dt.datetime) -> dt.datetime:
    """When a file was received: its time in the inbox (saved from the mail, copied from a USB
    stick), never later than now; a file seen before keeps its first time (store.write_run)."""
    if not fr.received_mtime:
        return now
    return min(now, dt.datetime.fromtimestamp(fr.received_mtime, VN_TZ).replace(tzinfo=None))


def load_all(con, results: list[FileResult], issues: pd.DataFrame, cfg: Config, school_year: str, period: str,
             run_id: str, catalogue: Catalogue | None = None, frames: Frames | None = None) -> RunOutcome:
    """Stage the run's files, run the cross-school rules (stage d), settle each file's
    status, and write register, issues and core in one transaction."""
    cat = catalogue or load_rules(cfg.severity)
    if not results:  # an empty inbox: a completed run that loads nothing ("no submissions yet")
        from edustat.store import ensure_tables

        ensure_tables(con)
        return RunOutcome(run_id, school_year, period, pd.DataFrame(columns=_REGISTER_COLUMNS),
                          issues.reindex(columns=list(issues.columns)), {})
    now = dt.datetime.now(VN_TZ).replace(tzinfo=None)
    loadable = [fr for fr in results if active(fr)]
    frames = frames or assemble(results, catalogue=cat)
    raw, stg = staged_frames(results, frames, school_year)
    stage_frames(con, raw, stg, school_year, period)
    run_files = {fr.school_code: fr.sha256 for fr in loadable}
    cross = cross_school_issues(con, run_files, school_year, period)
    if len(cross):
        by_hash = {fr.sha256: fr for fr in loadable}
        rows = []
        for rec in cross.itertuples(index=False):
            fr = by_hash[rec.file_hash]
            rule = cat[rec.rule_id]
            sid = rule.sheet
            header = fr.headers.get(sid, {}).get(rule.field)
            fill = dict(header=header, value=rec.value, detail=rec.detail, sheet=rec.sheet_name)
            rows.append({"school_code": rec.school_code, "file_hash": rec.file_hash, "file_name": fr.name,
                         "sheet": rec.sheet_name, "excel_row": int(rec.excel_row),
                         "column": fr.columns.get(sid, {}).get(rule.field), "field": rule.field, "header": header,
                         "rule_id": rule.id, "severity": rule.severity, "value": rec.value,
                         "message": rule.render(rule.message, **fill), "fix": rule.render(rule.fix, **fill)})
        issues = pd.concat([issues, pd.DataFrame(rows)], ignore_index=True)
    issues = issues.astype({"excel_row": "Int64"})
    counted = [fr for fr in results if not fr.superseded]  # a byte-identical copy is named in its twin's notice
    versions = next_versions(con, school_year, period,
                             {fr.sha256: fr.school_code for fr in counted if fr.school_code})
    subs, load = [], {}
    for fr in counted:
        mine = issues[issues["file_hash"] == fr.sha256]
        counts = mine["severity"].value_counts().to_dict()
        status = _status(fr, counts, cfg.load_policy == "load_valid_rows")
        subs.append({
            "school_year": school_year, "period": period, "school_code": fr.school_code,
            "version": versions.get(fr.sha256), "file_hash": fr.sha256, "content_hash": getattr(fr, "content_hash", None),
            "file_name": fr.name,
            "raw_path": str(fr.raw_path) if fr.raw_path else None, "received_at": _received(fr, now), "status": status,
            "n_learners": fr.rows("learners"), "n_staff": fr.rows("staff"), "n_classes": fr.rows("classes"),
            "n_rooms": fr.rows("rooms"), "n_errors": int(counts.get("error", 0)),
            "n_warnings": int(counts.get("warning", 0)), "n_notices": int(counts.get("notice", 0)),
            "loaded_rows": 0, "run_id": run_id, "feedback_path": None,
        })
        if fr.school_code and not fr.unreadable and not fr.blocked and not fr.superseded:
            if status in ("accepted", "accepted_with_warnings") or cfg.load_policy == "load_valid_rows":
                load[fr.school_code] = fr.sha256
    submissions = pd.DataFrame(subs, columns=list(subs[0]) if subs else _REGISTER_COLUMNS)
    if len(submissions) or not subs:
        submissions = submissions.astype({"version": "Int32", "n_learners": "Int32", "n_staff": "Int32", "n_classes": "Int32",
                                          "n_rooms": "Int32", "n_errors": "Int32", "n_warnings": "Int32",
                                          "n_notices": "Int32", "loaded_rows": "Int32"})
    loaded = write_run(con, run_id=run_id, school_year=school_year, period=period, submissions=submissions,
                       issues=issues, load=load, load_valid_rows=cfg.load_policy == "load_valid_rows")
    submissions["loaded_rows"] = submissions["school_code"].map(loaded).fillna(0).astype("Int32")
    return RunOutcome(run_id, school_year, period, submissions, issues, loaded)


def feedback_path(cfg: Config, school_year: str, period: str, school_code: object, file_name: str,
                  file_hash: str = "") -> Path:
    """<school code>.xlsx when the code has its format (8 digits); any other file is answered
    under its own name and hash. Proven inside the data dir (edustat.paths)."""
    from edustat.paths import inside, safe_stem, school_code_for_path

    code = school_code_for_path(school_code)
    name = code or (f"khong_xac_dinh__{safe_stem(file_name)}" + (f"__{file_hash[:8]}" if file_hash else ""))
    path = cfg.feedback_dir / school_year / period / f"{name}.xlsx"
    inside(cfg.data_dir, path)
    return path


def _feedback_job(job: tuple) -> str:
    from edustat.feedback import write_feedback

    source, path, kwargs = job
    write_feedback(source, path, **kwargs)
    return str(path)


def write_feedbacks(con, outcome: RunOutcome, results: list[FileResult], cfg: Config) -> dict[str, Path]:
    """One feedback workbook per file of the run (the school's workbook, annotated; with
    cfg.feedback_engine "fast" a values-only copy, with "faithful" the school's own file),
    written in worker processes (reading and writing each workbook dominates)."""
    out = {}
    jobs = []
    now = dt.datetime.now(VN_TZ)
    by_hash = {fr.sha256: fr for fr in results}
    for sub in outcome.submissions.itertuples(index=False):
        fr = by_hash[sub.file_hash]
        path = feedback_path(cfg, outcome.school_year, outcome.period, sub.school_code, sub.file_name, sub.file_hash)
        mine = outcome.issues[outcome.issues["file_hash"] == sub.file_hash]
        school = {"school_code": sub.school_code if isinstance(sub.school_code, str) else "", "school_name": fr.school.get("school_name") or fr.name}
        counts = {"learners": int(sub.n_learners or 0), "staff": int(sub.n_staff or 0), "classes": int(sub.n_classes or 0),
                  "errors": int(sub.n_errors or 0), "warnings": int(sub.n_warnings or 0), "notices": int(sub.n_notices or 0)}
        source = Path(fr.raw_path) if (fr.raw_path and not fr.unreadable) else None
        jobs.append((source, path, dict(school=school, issues=mine, status=sub.status, counts=counts,
                                        school_year=outcome.school_year, period=outcome.period, generated_at=now,
                                        engine=cfg.feedback_engine)))
        out[sub.file_hash] = path
    workers = max(1, min(cfg.workers, len(jobs)))
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_feedback_job, jobs, chunksize=max(1, len(jobs) // (workers * 4))))
    else:
        for job in jobs:
            _feedback_job(job)
    if out:
        con.register("_fb", pd.DataFrame({"file_hash": list(out), "feedback_path": [str(p) for p in out.values()]}))
        con.execute("""update submission set feedback_path = f.feedback_path from _fb f
                       where submission.file_hash = f.file_hash and submission.school_year = ? and submission.period = ?""",
                    [outcome.school_year, outcome.period])
        con.unregister("_fb")
    return out


def summary(con, outcome: RunOutcome, cfg: Config, reports=None, published: Path | None = None) -> dict:
    """What the officer needs after a run: counts by status (missing schools included),
    issues by severity, the unreadable files by name, and where things are — only what was
    written (`published`: the snapshot, when this run published one). Records the run in the
    `run` table."""
    from edustat.store import missing_schools

    subs = outcome.submissions
    counts = {s: 0 for s in ("accepted", "accepted_with_warnings", "partially_loaded", "rejected", "unreadable")}
    for s, n in subs["status"].value_counts().items() if len(subs) else []:
        counts[s] = int(n)
    missing = missing_schools(con, outcome.school_year, outcome.period, cfg.expected_schools)
    counts["missing"] = len(missing)
    sev = outcome.issues["severity"].value_counts().to_dict() if len(outcome.issues) else {}
    out = {
        "run_id": outcome.run_id,
        "school_year": outcome.school_year,
        "period": outcome.period,
        "files": int(len(subs)),
        "counts": counts,
        "issues": {k: int(sev.get(k, 0)) for k in ("error", "warning", "notice")},
        "learners_loaded": int(sum(outcome.loaded.values())),
        "missing": missing.to_dict("records"),
        "schools": {r.school_code: r.status for r in subs.itertuples(index=False) if isinstance(r.school_code, str)},
        "problem_files": _problem_files(outcome),
        "duplicates": (outcome.issues.loc[outcome.issues["rule_id"] == "file_duplicate_submission", "message"].tolist()
                       if len(outcome.issues) else []),
        "feedback_dir": str(cfg.feedback_dir / outcome.school_year / outcome.period),
        "database": str(cfg.db_path),
        "published": str(published) if published else None,
        "partially_loaded": counts["partially_loaded"],
        "unreadable_files": sorted(str(n) for n in subs.loc[subs["status"] == "unreadable", "file_name"]) if len(subs) else [],
        "reports_dir": str(cfg.reports_dir / outcome.school_year / outcome.period) if reports else None,
        "forms": list(reports.forms) if reports else [],
        "form_checks_failed": int(reports.failed_checks) if reports else 0,
        # what the forms cover: the schools whose data is in core for this collection
        "schools_in_forms": _schools_in_core(con, outcome.school_year, outcome.period),
        "readings": int(outcome.issues["rule_id"].astype("string").str.endswith(("_near", "_said")).sum()
                        + (outcome.issues["rule_id"] == "file_header_near").sum()) if len(outcome.issues) else 0,
    }
    import json

    con.execute("insert or replace into run values (?, ?, ?, null, null, ?, ?, 'completed', ?)",
                [outcome.run_id, outcome.school_year, outcome.period, dt.datetime.now(VN_TZ).replace(tzinfo=None),
                 int(len(subs)), json.dumps(out, ensure_ascii=False)])
    return out


def _schools_in_core(con, school_year: str, period: str) -> int:
    try:
        return int(con.execute("select count(distinct school_code) from core_school where school_year = ? and period = ?",
                               [school_year, period]).fetchone()[0])
    except Exception:  # noqa: BLE001 - no core table yet: nothing loaded
        return 0


def forms_line(s: dict) -> str:
    """Honest: never "all checks pass" while schools are rejected / unreadable or the forms
    cover no school; always how many schools the forms cover."""
    c = s["counts"]
    covered, sent = s.get("schools_in_forms", 0), sum(c.get(k, 0) for k in STATUS_TEXT if k != "missing")
    cover = f"biểu gồm {covered} trường / forms cover {covered} schools"
    bad = s.get("form_checks_failed", 0)
    if not covered:
        return f"KHÔNG có trường nào trong biểu — biểu để trống / forms are EMPTY ({', '.join(s['forms'])})"
    if bad:
        return f"{cover}; {bad} phép kiểm tra KHÔNG ĐẠT / checks failed"
    left_out = c.get("rejected", 0) + c.get("unreadable", 0) + c.get("missing", 0)
    if left_out or c.get("partially_loaded", 0):
        return (f"{cover}; {left_out} trường chưa có trong biểu (bị từ chối / không đọc được / chưa nộp), "
                f"{c.get('partially_loaded', 0)} trường nạp một phần — biểu CHƯA ĐỦ / forms INCOMPLETE")
    return f"{cover} (tất cả {sent} trường đã nộp); các phép kiểm tra của biểu đều đạt / form checks pass"


def _problem_files(outcome: RunOutcome) -> list[dict]:
    """Every file of the run that was not accepted, with its file-level message (row-level
    messages may quote personal data: only their count is given)."""
    subs, issues = outcome.submissions, outcome.issues
    out = []
    for r in subs.itertuples(index=False) if len(subs) else []:
        if r.status not in ("unreadable", "rejected"):
            continue
        mine = issues[(issues["file_hash"] == r.file_hash) & (issues["severity"] == "error")] if len(issues) else issues
        file_level = mine[mine["rule_id"].str.startswith("file_")] if len(mine) else mine
        text = (file_level["message"].iloc[0] if len(file_level)
                else f"{len(mine)} lỗi trong dữ liệu (xem tệp phản hồi)")
        out.append({"file": r.file_name, "school_code": r.school_code if isinstance(r.school_code, str) else None,
                    "status": r.status, "message": text})
    return out


def format_summary(s: dict) -> str:
    """The short bilingual text `edustat run` prints."""
    period = "đầu năm" if s["period"] == "dau_nam" else "cuối năm"
    c, i = s["counts"], s["issues"]
    lines = [
        f"Năm học {s['school_year']}, kỳ {period}: {s['files']} tệp / files (run {s['run_id']})",
        f"  Đã tiếp nhận / accepted: {c['accepted']} | có cảnh báo / with warnings: {c['accepted_with_warnings']} | "
        f"nạp một phần / partially loaded: {c.get('partially_loaded', 0)} | "
        f"chưa tiếp nhận / rejected: {c['rejected']} | không đọc được / unreadable: {c['unreadable']} | "
        f"chưa nộp / missing: {c['missing']}",
        f"  Lỗi / errors: {i['error']} | cảnh báo / warnings: {i['warning']} | lưu ý / notices: {i['notice']}"
        + (f" | ô/tiêu đề được hiểu theo cách gần đúng / values read as near matches: {s['readings']}" if s.get("readings") else ""),
    ]
    if s["files"]:
        lines.append(f"  Phản hồi cho trường / feedback: {s['feedback_dir']}")
    lines.append(f"  Cơ sở dữ liệu / database: {s['database']}")
    if s.get("published"):  # never a path that was not written (run --no-publish)
        lines.append(f"  Bản sao cho phân tích / analyst snapshot: {s['published']}")
    if s.get("reports_dir") and s["files"]:
        lines.append(f"  Biểu báo cáo / report forms: {s['reports_dir']} ({', '.join(s['forms'])}): {forms_line(s)}")
    if not s["files"]:
        lines.append("  Chưa có trường nào nộp: thư mục tệp nộp chưa có tệp nào / no submissions yet")
    problems = s.get("problem_files") or []
    if problems:
        lines.append("  Tệp chưa tiếp nhận / files not accepted:")
        for p in problems[:40]:
            lines.append(f"    - {p['file']}: {p['message']}")
        if len(problems) > 40:
            lines.append(f"    (+{len(problems) - 40} tệp, xem 'edustat status')")
    for text in s.get("duplicates") or []:
        lines.append(f"  Tệp trùng nội dung / identical copies: {text}")
    if s["missing"]:
        names = ", ".join(f"{m['school_code']}" + (f" {m['school_name']}" if m.get("school_name") else "") for m in s["missing"][:10])
        more = f" (+{len(s['missing']) - 10})" if len(s["missing"]) > 10 else ""
        lines.append(f"  Chưa nộp / missing: {names}{more}")
    return "\n".join(lines)


def run_collection(con, files: list[Path], cfg: Config, school_year: str, period: str, run_id: str | None = None,
                   workers: int | None = None) -> RunOutcome:
    """The collection's data steps without Prefect (read → cast → validate → load), for
    scripts, tests and notebooks; `flows/collect.py` runs the same steps as tasks."""
    results = ingest_all(files, cfg, school_year, period, workers)
    frames = assemble_all(results, cfg)
    issues = validate_all(results, cfg, school_year, period, frames)
    return load_all(con, results, issues, cfg, school_year, period, run_id or new_run_id(), frames=frames)
