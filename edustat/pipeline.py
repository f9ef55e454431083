"""The collection's steps as plain functions; `flows/collect.py` composes them as Prefect
tasks and owns the order. Each step takes and returns plain data.
"""
from __future__ import annotations

import datetime as dt
import gc
import re
import json
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from edustat.submissions import (
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
from edustat import faults
from edustat.store import (
    SHEETS,
    cross_school_issues,
    ensure_tables,
    inconsistencies,
    next_versions,
    stage_frames,
    stage_sheets,
    transaction,
    write_run,
)
from schemas import load_codelist, load_contract
from schemas.rules import Catalogue, load_rules
from transforms.concat import stack_files
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
    "late": "Nộp muộn — chờ Phòng xử lý",  # a file received after the officer closed the collection (edustat.period_lock)
}


@dataclass
class RunOutcome:
    run_id: str
    school_year: str
    period: str
    submissions: pd.DataFrame  # one row per file of the run (register columns)
    issues: pd.DataFrame  # every issue of the run's files
    loaded: dict[str, int] = field(default_factory=dict)
    closed: bool = False  # the collection was closed: new files were held as late, nothing loaded
    audited: bool = False  # the load's audit found the whole collection consistent (record_audited)
    incremental: dict | None = None  # cache hits / misses of the run (edustat.incremental; set by the flow)
    publish_unchanged: bool = False  # the snapshot was not republished: nothing it copies changed
    feedback_written: int | None = None  # feedback workbooks rewritten (the others had not changed)


# the register row load_all writes per file (also the columns of an empty run's register)
_REGISTER_COLUMNS = ["school_year", "period", "school_code", "version", "file_hash", "file_name", "raw_path",
                     "received_at", "status", "n_learners", "n_staff", "n_classes", "n_rooms", "n_errors",
                     "n_warnings", "n_notices", "loaded_rows", "run_id", "feedback_path", "certified", "certified_on"]


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(VN_TZ)
    return now.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def process_usage() -> dict:
    """CPU seconds (user + system) of this process and the children it waited for (readers,
    the validation child), and the largest of their peak memories, in MiB. A served run is a
    fresh fork (edustat.warm), whose counters start at zero: this is the run's own cost."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_s": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 2),
            "peak_mib": round(max(me.ru_maxrss, kids.ru_maxrss) / 1024)}


def _ingest_one(args: tuple) -> FileResult:
    path, raw_root, school_year, period, severity, limits = args[:6]
    cached = args[6] if len(args) > 6 else None  # (data dir, version key): see edustat.incremental
    crash = os.environ.get("EDUSTAT_FAULT_READER_DIES")  # fault-injection hook for the tests
    if crash and crash in Path(path).name:
        os._exit(137)  # as the kernel's OOM killer would
    if cached:
        from edustat import incremental

        hit = incremental.lookup(path, cached[0], cached[1], school_year, period, raw_root)
        if hit is not None:  # what to read again if the entry is gone when its sheets are needed
            hit._cache_ctx = {"raw_root": raw_root, "school_year": school_year, "period": period,  # type: ignore[attr-defined]
                              "severity": severity, "limits": limits}
            return hit
    fr = ingest_file(path, raw_root=raw_root, school_year=school_year, period=period,
                     catalogue=_rules_once(severity), limits=limits)
    fr.bytes_sha = fr.sha256  # type: ignore[attr-defined]  (settling may name it by an older hash)
    if cached:
        incremental.store_ingest(cached[0], fr, cached[1], school_year, period)
    return fr


def _ingest_for_run(args: tuple) -> FileResult:
    """`_ingest_one` in a reader process: its raw frames packed for the trip back (edustat.framewire)."""
    from edustat.framewire import pack_result

    return pack_result(_ingest_one(args))


_RULES_MEMO: dict = {}


def _rules_once(severity) -> Catalogue:
    """load_rules(severity), built once per process and office severities (issue 12: it was
    built again for every file read, 101 times a city). Keyed by the severities' items; built
    anew when the contract or rules.yaml object it was made of (both cached by their loaders)
    is no longer the loaders' one; nothing mutates a Catalogue."""
    from schemas import load_contract
    from schemas.rules import _raw

    key = tuple(sorted((severity or {}).items()))
    contract, raw = load_contract(), _raw()
    hit = _RULES_MEMO.get(key)
    if hit is None or hit[0] is not contract or hit[1] is not raw:
        if len(_RULES_MEMO) > 8:
            _RULES_MEMO.clear()
        hit = _RULES_MEMO[key] = (contract, raw, load_rules(severity))
    return hit[2]


def _reader_caches(severity) -> None:
    """Build here, before the read workers fork, what each of them would otherwise build for
    itself on its first file: the rule catalogue, the sheets' header matchers (and the reader's
    memo of which of them no numeric text can name) and the school sheet's code-list matchers
    (province, district, ward: folding every spelling, ~0.35 s a process; only the lists of one
    district's units, made per file, are left to the readers). Each worker inherits
    them built: the same objects, from the same lru_caches, as a worker building them gives
    (nothing mutates a Matcher or a Catalogue). A served run's process, forked from the warm
    server (edustat.warmup), finds them built already: then this costs nothing."""
    from edustat.reader import _numeric_never_exact
    from schemas.vocabulary import sheet_matcher

    _rules_once(severity)
    load_codelist("edustat/FLAG").matcher  # noqa: B018 - yes/no cells of the school sheet
    contract = load_contract()
    for sheet in contract.sheets:
        _numeric_never_exact(sheet_matcher(sheet))
        if sheet.layout != "table":  # the key/value sheet is cast in the reader (transforms.cast.cast_key_values)
            for f in sheet.fields:
                if f.codelist is not None:
                    f.codelist.matcher  # noqa: B018 - the cached property is the point


def _cache_job(cfg: Config) -> tuple | None:
    """What `_ingest_one` needs to use the per-file cache; None when runs are not incremental."""
    if not cfg.incremental:
        return None
    from edustat.incremental import version_key

    return (cfg.data_dir, version_key(cfg.severity, cfg.read_limits))


def _ingest_alone(job: tuple) -> FileResult:
    """One file in a process of its own: if that process dies (a native reader crashing, the
    OOM killer), the file gets the message and the run goes on."""
    from concurrent.futures.process import BrokenProcessPool

    from edustat.submissions import file_died

    with ProcessPoolExecutor(max_workers=1) as pool:
        try:
            return pool.submit(_ingest_one, job).result()
        except BrokenProcessPool:
            return file_died(job[0], catalogue=load_rules(job[4]))


def ingest_files(files: list[Path], cfg: Config, school_year: str, period: str) -> list[FileResult]:
    """Parse a batch of files in this process (a Dask task's unit of work)."""
    cached = _cache_job(cfg)
    out = [_ingest_one((p, cfg.raw_dir, school_year, period, cfg.severity, cfg.read_limits, cached)) for p in files]
    for fr in out:  # no index here (`ingest_all` records what its readers wrote): a rerun reads these footers
        fr.__dict__.pop("_cache_written", None)
    return out


def content_hash(fr: FileResult) -> str | None:
    """sha256 of what a file says, not of its bytes: every sheet's cells as read (text), in
    order, with their headers. A workbook saved again (new timestamp, new zip metadata) with
    the same cells has the same content hash. None for a file that could not be read."""
    if fr.unreadable or not fr.school_code:
        return None
    import hashlib

    from edustat.framehash import row_hashes

    h = hashlib.sha256()
    h.update(json.dumps(list(fr.school_raw.items()), ensure_ascii=False, default=str).encode("utf-8"))
    for sid in sorted(fr.raw):
        frame = fr.raw[sid]
        h.update(f"\x1d{sid}\x1f{chr(31).join(map(str, frame.columns))}\x1e".encode("utf-8"))
        if len(frame):  # hash_pandas_object(frame.astype("string").fillna("\x00"), index=False), faster
            h.update(row_hashes(frame).tobytes())
    return h.hexdigest()


def reuse_known_contents(results: list[FileResult], cfg: Config, school_year: str, period: str) -> int:
    """A file whose content equals its school's current registered version is that version
    (same file hash, same version, same received time), not a new one. Returns files matched."""
    for fr in results:  # a cached file brings its content hash (its sheets are not loaded yet)
        fr.content_hash = getattr(fr, "content_hash", None) or content_hash(fr)  # type: ignore[attr-defined]
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
    cached = _cache_job(cfg)
    if not cached:
        return settle(_read_all(files, cfg, school_year, period, workers, cached), cfg, school_year, period)
    from edustat import incremental, metaindex

    # one scope of the read entries' index for the lookups and the entries the readers wrote
    # (`store_ingest` hands each back as written: recorded here), so the next run reads no
    # footer; on a cold run the scope opens before its cache directory exists (metaindex.scope)
    with metaindex.scope(incremental.cache_dir(cached[0]), "ingest", school_year, period):
        results = _read_all(files, cfg, school_year, period, workers, cached)
        for fr in results:
            written = fr.__dict__.pop("_cache_written", None)
            if written is not None:
                metaindex.written(Path(written[0]), written[1])
    return settle(results, cfg, school_year, period)


def _read_all(files: list[Path], cfg: Config, school_year: str, period: str, workers: int | None,
              cached: tuple | None) -> list[FileResult]:
    workers = max(1, workers or cfg.workers)
    hits: dict[int, FileResult] = {}
    if cached:  # files read before (same bytes, name and version key): no worker needed
        from edustat import incremental
        from edustat.paths import inside_dirs

        prove = inside_dirs(cfg.raw_dir)  # the raw copies' directories resolved once for the pass
        for i, p in enumerate(files):
            hit = incremental.lookup(p, cached[0], cached[1], school_year, period, cfg.raw_dir, prove)
            if hit is not None:
                hit._cache_ctx = {"raw_root": cfg.raw_dir, "school_year": school_year, "period": period,  # type: ignore[attr-defined]
                                  "severity": cfg.severity, "limits": cfg.read_limits}
                hits[i] = hit
    todo = [i for i in range(len(files)) if i not in hits]
    jobs = [(files[i], cfg.raw_dir, school_year, period, cfg.severity, cfg.read_limits, cached) for i in todo]
    if workers > 1 and len(jobs) > 1:
        from concurrent.futures.process import BrokenProcessPool

        _reader_caches(cfg.severity)
        try:
            from edustat.framewire import unpack_result

            # gc.freeze: a forked reader's collections skip the objects it inherited (the
            # imports, the caches just built), which they walked (and copied page by page) for nothing
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=gc.freeze) as pool:
                # each batch of files unpacked as it comes back, while the readers read the next
                # ones, not all of them after the last (~0.2 CPU s a city on one core, the other
                # idle); the same function on the same results in the same order
                read = [unpack_result(fr) for fr in
                        pool.map(_ingest_for_run, jobs, chunksize=max(1, len(jobs) // (workers * 4)))]
        except BrokenProcessPool:  # a reader process died: every file again, each alone
            read = [_ingest_alone(j) for j in jobs]
    else:
        read = [_ingest_one(j) for j in jobs]
    fresh = dict(zip(todo, read))
    return [hits[i] if i in hits else fresh[i] for i in range(len(files))]


def cache_stats(results: list[FileResult]) -> dict[str, int]:
    """Per-file cache hits and misses of a run (read, and validation of the files validated)."""
    read_hits = sum(1 for fr in results if getattr(fr, "cache", None) is not None and fr.cache.ingest_hit)
    checked = [fr for fr in results if active(fr)]
    val_hits = sum(1 for fr in checked if getattr(fr, "cache", None) is not None and fr.cache.issues_hit)
    return {"read_hits": read_hits, "read_misses": len(results) - read_hits,
            "validate_hits": val_hits, "validate_misses": len(checked) - val_hits}


def assemble_all(results: list[FileResult], cfg: Config) -> Frames:
    """The collection's sheets concatenated and cast once (see submissions.assemble)."""
    from edustat.incremental import assemble_changed, materialise

    if cfg.incremental:  # only the files read anew (edustat.incremental.plan_staging)
        return assemble_changed(results, cfg)
    materialise(results)  # the sheets of files taken from the cache
    return assemble(results, catalogue=load_rules(cfg.severity))


def validate_isolated(results: list[FileResult], **kwargs) -> pd.DataFrame:
    """submissions.validate_collection; for a large collection in a forked child process, so
    that Great Expectations' import and what validation allocates do not stay in the flow's
    process through the load (edustat.isolate). A mid-sized one (a city) validates here, its
    learners' row rules in a forked child meanwhile, and this process then stages the load's
    frames while the child may still work (both cores; only when a core is free). The same
    issues either way."""
    from edustat import headstart, isolate  # headstart: this process stages the load's frames

    rows = sum(fr.rows(sid) for fr in results if active(fr) for sid in TABLE_SHEETS)
    ahead = headstart.ahead(results, kwargs.get("frames"), kwargs.get("school_year"))
    if rows >= isolate.VALIDATE_IN_CHILD_ROWS:
        return isolate.in_child(validate_collection, results, **kwargs, meanwhile=ahead)
    if (isolate.can_fork() and sum(fr.rows(isolate.SPLIT_SHEET) for fr in results if active(fr)) >= isolate.SPLIT_MIN_ROWS
            and isolate.second_core_free()):
        return validate_collection(results, **kwargs, aside=isolate.SPLIT_SHEET, meanwhile=ahead)
    return validate_collection(results, **kwargs)


def validate_all(results: list[FileResult], cfg: Config, school_year: str, period: str,
                 frames: Frames | None = None) -> pd.DataFrame:
    cat = load_rules(cfg.severity)
    if cfg.incremental:  # files validated before keep their issues; the others are validated
        from edustat.incremental import validate_incremental

        issues = validate_incremental(results, cfg, school_year, period, frames)
    else:
        issues = validate_isolated(results, school_year=school_year, period=period, catalogue=cat, frames=frames)
    if cfg.require_certification:  # the principal's confirmation is owed (edustat.certify)
        from edustat import certify

        owed = certify.issues(results, cat)
        if len(owed):
            issues = pd.concat([issues, owed.reindex(columns=issues.columns)], ignore_index=True)
    return issues


def staged_frames(results: list[FileResult], frames: Frames, school_year: str) -> tuple[dict, dict]:
    """raw_ (text as read, unknown columns as JSON) and stg_ (typed + derived) frames of the
    collection's active files, one per sheet, with their key columns."""
    raw, stg = {}, {}
    for sid, r, t in staged_sheets(results, frames, school_year):
        if r is not None:
            raw[sid] = r
        if t is not None:
            stg[sid] = t
    return raw, stg


def _same_rows(cast: pd.DataFrame, parts: list[tuple[pd.DataFrame, list[int], int]]) -> bool:
    """The cast step's stack holds exactly the rows of `parts` (file frame, kept columns, file
    index) in their order: each file's rows in one run, files in the same order, its excel_row
    the file's own."""
    if "_file" not in cast.columns or "excel_row" not in cast.columns:
        return False
    lengths = [len(f) for f, _, _ in parts]
    if len(cast) != sum(lengths):
        return False
    files = np.repeat(np.array([i for _, _, i in parts], dtype="int64"), lengths)
    if not np.array_equal(cast["_file"].to_numpy(dtype="int64", na_value=-1), files):
        return False
    rows = [f["excel_row"].to_numpy() if "excel_row" in f.columns else None for f, _, _ in parts]
    if any(r is None for r in rows):
        return False
    return bool(np.array_equal(cast["excel_row"].to_numpy(), np.concatenate(rows)))


def staged_sheets(results: list[FileResult], frames: Frames, school_year: str, cast_raw: bool = False):
    """`staged_frames` one sheet at a time: (sheet, raw frame or None, stg frame or None), the
    school sheet first, then TABLE_SHEETS; the same frames (the load stages each while the next
    is made: `store.stage_sheets`).

    `cast_raw` (the load, issue 12): a sheet's raw frame is a shallow copy of the cast step's
    stack of the same files (`frames.raw`, `submissions.assemble`: the files' sheets stacked by
    `stack_files` too, the columns of the contract's fields and excel_row) when its `_file`
    column proves it holds exactly the rows this stack would (the same files' rows, in the same
    order), instead of stacking them a second time. Staged, it is the same rows: the raw_ table
    holds the contract's fields, excel_row and the keys only (`store.arrow_schema`), and a
    field no file has is NULL either way; the extra columns' JSON is made from the files as
    ever. The frames given back then differ in columns the raw_ table does not have."""
    c = load_contract()
    start = int(school_year[:4])
    act = {i: fr for i, fr in enumerate(results) if active(fr)}
    keys = {i: {"school_code": fr.school_code, "file_hash": fr.sha256} for i, fr in act.items()}
    codes = {i: k["school_code"] for i, k in keys.items()}
    hashes = {i: k["file_hash"] for i, k in keys.items()}

    def keyed(frame: pd.DataFrame | None, sid: str) -> pd.DataFrame | None:
        if frame is not None:
            f = frame["_file"]
            frame["school_code"] = f.map(codes)
            frame["file_hash"] = f.map(hashes)
            frame["sheet_name"] = f.map({i: act[i].sheet_names.get(sid) for i in act})
        return frame

    schools = [dict(derive_school(fr.school, fr.levels, c.mappings), _file=i, excel_row=None) for i, fr in act.items()]
    if schools:
        sch = pd.DataFrame(schools)
        school_raw = pd.DataFrame([{**{k: (None if v is None else str(v)) for k, v in fr.school.items()}, "_file": i}
                                   for i, fr in act.items()])
        yield "school", keyed(school_raw, "school"), keyed(sch, "school")
    for sid in TABLE_SHEETS:
        # the files' frames are copied once, by the concat (not also per file: a province's
        # sheets are ~0.2 GiB of text; see scripts/measure_stages.py)
        raw_sid = None
        parts, extras = [], []
        cast = frames.raw.get(sid) if cast_raw else None
        for i, fr in act.items():
            frame = fr.raw.get(sid)
            if frame is None or frame.empty:
                continue
            extra = [col for col in frame.columns if col.startswith("extra:")]
            if extra:
                keep = [j for j, col in enumerate(frame.columns) if not col.startswith("extra:")]
                parts.append((frame, keep, i))
                extras.extend(json.dumps({k[6:]: v for k, v in zip(extra, vals) if isinstance(v, str)}, ensure_ascii=False)
                              for vals in frame[extra].itertuples(index=False))
            else:
                parts.append((frame, list(range(frame.shape[1])), i))
                extras.extend([None] * len(frame))
        if parts and cast is not None and _same_rows(cast, parts):
            raw_sid = cast.copy(deep=False)  # columns added below go to the copy only
            if any(e is not None for e in extras):
                raw_sid["extra_columns"] = pd.array(extras, dtype="string")
        elif parts:
            # = pd.concat(parts) + `_file` last, column by column in Arrow (transforms.concat)
            stacked = stack_files(parts)
            raw_sid = stacked[[col for col in stacked.columns if col != "_file"] + ["_file"]]
            del stacked
            if any(e is not None for e in extras):
                raw_sid["extra_columns"] = pd.array(extras, dtype="string")
        del parts, extras
        typed = frames.typed.get(sid)
        if typed is None or typed.empty:
            typed = None
        elif sid == "learners":
            typed = derive_learners(typed, start, c.mappings, scales(c))
        elif sid == "classes":
            typed = derive_classes(typed, c.mappings)
        elif sid == "staff":
            # a staff member's form level depends on the school's levels: one call per combination
            lv = typed["_file"].map({i: fr.levels for i, fr in act.items()})
            typed = pd.concat([derive_staff(typed[lv == combo], start, c.mappings, combo, _primary_subjects())
                               for combo in lv.dropna().unique()], ignore_index=False).loc[typed.index]
        if raw_sid is not None or typed is not None:
            yield sid, keyed(raw_sid, sid), keyed(typed, sid)


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
             run_id: str, catalogue: Catalogue | None = None, frames: Frames | None = None,
             override: dict | None = None) -> RunOutcome:
    """Stage the run's files, run the cross-school rules (stage d), settle each file's
    status, and write staging, register, issues and core in ONE transaction: a crash, a full
    disk or any error before the commit leaves the database as it was, and a retry (Prefect's,
    or the next run) redoes the same work. "accepted" is written in the same transaction as
    the core rows it stands for.

    A closed collection (edustat.period_lock) changes nothing: new files are held as "late". An
    `override` ({"action", "reason", "who"}: the officer accepting late files, or a repair)
    loads anyway; every change is audited in the same transaction."""
    from edustat import period_lock as period_

    cat = catalogue or load_rules(cfg.severity)
    if not results:  # an empty inbox: a completed run that loads nothing ("no submissions yet")
        ensure_tables(con)
        return RunOutcome(run_id, school_year, period, pd.DataFrame(columns=_REGISTER_COLUMNS),
                          issues.reindex(columns=list(issues.columns)), {})
    # before this load writes: is the database the file a completed run left audited (store.write_run's stamps)
    stamps = audited_unchanged(cfg)
    ensure_tables(con)
    if override is None and period_.state(con, school_year, period) == "closed":
        return period_.hold_late(con, results, issues, cfg, school_year, period, run_id)
    frames = frames or assemble(results, catalogue=cat)
    staging = results
    if getattr(frames, "covers", None) is not None:  # incremental: unchanged files' staged rows are kept
        from edustat.incremental import plan_staging

        staging, frames = plan_staging(con, results, frames, cfg, school_year, period)
    from edustat import headstart  # made while validation ran, if it was (same frames)

    ahead = headstart.take(staging, frames, school_year)
    if ahead is not None:
        raw, stg = ahead  # each sheet let go once staged (a province's ~0.4 GiB)
        sheets = ((sid, raw.pop(sid, None), stg.pop(sid, None)) for sid in SHEETS if sid in raw or sid in stg)
    else:  # made one sheet at a time while the previous one is inserted (store.stage_sheets)
        sheets = staged_sheets(staging, frames, school_year, cast_raw=True)
    ensure_tables(con)
    with transaction(con):
        before = period_.previous(con, school_year, period)
        outcome = _load_in_transaction(con, results, issues, cfg, school_year, period, run_id, cat, sheets,
                                       [fr.sha256 for fr in staging if active(fr)], stamps=stamps)
        from edustat.incremental import collection_fingerprint, record_load, record_staged, version_key

        record_staged(con, school_year, period, [fr.sha256 for fr in staging if active(fr)],
                      version_key(cfg.severity, cfg.read_limits))

        # what this load stood for, committed with it: a later run with the same collection reuses it
        record_load(con, school_year, period,
                    collection_fingerprint(results, cfg, school_year, period) if cfg.incremental else None, run_id)
        period_.audit(con, period_.run_audit_rows(before, outcome.submissions, school_year, period, run_id,
                                                  (override or {}).get("who") or period_.who(), override))
        faults.point("load:written")
    faults.point("load:committed")
    con.execute("checkpoint")
    if cfg.incremental:  # the cache entries this collection no longer needs (issue 12)
        from edustat.incremental import prune_cache

        pruned = prune_cache(cfg.data_dir, results, version_key(cfg.severity, cfg.read_limits), school_year, period)
        if pruned:
            import logging

            logging.getLogger("edustat").info("cache: %d entries no longer used removed", pruned)
    return outcome


def _load_in_transaction(con, results: list[FileResult], issues: pd.DataFrame, cfg: Config, school_year: str, period: str,
                         run_id: str, cat: Catalogue, sheets, staged: list[str], stamps: bool = False) -> RunOutcome:
    now = dt.datetime.now(VN_TZ).replace(tzinfo=None)
    loadable = [fr for fr in results if active(fr)]
    # the frames (a province's ~0.4 GiB) are let go sheet by sheet as they are staged: the rest
    # of the load does not need them (a retry stages them again from the top)
    stage_sheets(con, sheets, staged, school_year, period)
    faults.point("load:staged")
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
    # stage e: against earlier collections (edustat/periods.py); nothing when there are none
    from edustat.periods import cross_period_issues

    periods = cross_period_issues(con, loadable, school_year, period, cat, cfg.swing_thresholds)
    if len(periods):
        issues = pd.concat([issues, periods], ignore_index=True)
    issues = issues.astype({"excel_row": "Int64"})
    counted = [fr for fr in results if not fr.superseded]  # a byte-identical copy is named in its twin's notice
    versions = next_versions(con, school_year, period,
                             {fr.sha256: fr.school_code for fr in counted if fr.school_code})
    subs, load = [], {}
    from edustat.certify import certification

    by_file: dict[str, dict[str, int]] = {}  # one pass over the issues, not one filter per file
    for (file_hash, severity), n in issues.groupby(["file_hash", "severity"]).size().items():
        by_file.setdefault(file_hash, {})[severity] = int(n)
    for fr in counted:
        counts = by_file.get(fr.sha256, {})
        status = _status(fr, counts, cfg.load_policy == "load_valid_rows")
        certified, certified_on = certification(fr)
        if cfg.require_certification and certified is False and status != "unreadable":
            status = "rejected"  # owed and missing: never loaded, whatever the load policy
        subs.append({
            "school_year": school_year, "period": period, "school_code": fr.school_code,
            "version": versions.get(fr.sha256), "file_hash": fr.sha256, "content_hash": getattr(fr, "content_hash", None),
            "file_name": fr.name,
            "raw_path": str(fr.raw_path) if fr.raw_path else None, "received_at": _received(fr, now), "status": status,
            "n_learners": fr.rows("learners"), "n_staff": fr.rows("staff"), "n_classes": fr.rows("classes"),
            "n_rooms": fr.rows("rooms"), "n_errors": int(counts.get("error", 0)),
            "n_warnings": int(counts.get("warning", 0)), "n_notices": int(counts.get("notice", 0)),
            "loaded_rows": 0, "run_id": run_id, "feedback_path": None, "certified": certified, "certified_on": certified_on,
        })
        if fr.school_code and not fr.unreadable and not fr.blocked and not fr.superseded:
            if status in ("accepted", "accepted_with_warnings") or (cfg.load_policy == "load_valid_rows" and status != "rejected"):
                load[fr.school_code] = fr.sha256
    submissions = pd.DataFrame(subs, columns=list(subs[0]) if subs else _REGISTER_COLUMNS)
    if len(submissions) or not subs:
        submissions = submissions.astype({"version": "Int32", "n_learners": "Int32", "n_staff": "Int32", "n_classes": "Int32",
                                          "n_rooms": "Int32", "n_errors": "Int32", "n_warnings": "Int32",
                                          "n_notices": "Int32", "loaded_rows": "Int32"})
    # a file this run does not load leaves core if core holds it (accepted before, rejected now)
    unload = {fr.school_code: fr.sha256 for fr in counted if fr.school_code and fr.school_code not in load}
    loaded = write_run(con, run_id=run_id, school_year=school_year, period=period, submissions=submissions,
                       issues=issues, load=load, load_valid_rows=cfg.load_policy == "load_valid_rows", in_transaction=True,
                       unload=unload, stamps=stamps, restaged=staged)
    # audit before the commit: the register must say exactly what core holds for this run's files
    found = inconsistencies(con, school_year, period)
    bad = found[found["file_hash"].isin(submissions["file_hash"]) | found["school_code"].isin(list(load))] if len(submissions) else found.iloc[0:0]
    if len(bad):
        raise StoreInconsistent(_inconsistency_text(bad, repairable=False))
    submissions["loaded_rows"] = submissions["school_code"].map(loaded).fillna(0).astype("Int32")
    return RunOutcome(run_id, school_year, period, submissions, issues, loaded, audited=found.empty)


def feedback_path(cfg: Config, school_year: str, period: str, school_code: object, file_name: str,
                  file_hash: str = "", proven: Callable[[Path], Path] | None = None) -> Path:
    """<school code>.xlsx when the code has its format (8 digits); any other file is answered
    under its own name and hash. Proven inside the data dir (edustat.paths; `proven`: the
    caller's `paths.inside_dirs(cfg.data_dir)` when it names many, the same proof)."""
    from edustat.paths import inside, safe_stem, school_code_for_path

    code = school_code_for_path(school_code)
    name = code or (f"khong_xac_dinh__{safe_stem(file_name)}" + (f"__{file_hash[:8]}" if file_hash else ""))
    path = cfg.feedback_dir / school_year / period / f"{name}.xlsx"
    if proven is not None:
        proven(path)
    else:
        inside(cfg.data_dir, path)
    return path


def _feedback_job(job: tuple) -> str:
    from edustat.feedback import write_feedback

    source, path, kwargs = job
    if "received" in kwargs:  # a clean school: a receipt, no copy of its data (issue 12)
        from edustat.feedback import write_receipt

        write_receipt(path, **{k: v for k, v in kwargs.items() if k != "engine"})
    else:
        write_feedback(source, path, **kwargs)
    return str(path)


def _feedback_cost(job: tuple) -> tuple[int, int, int]:
    """What a feedback job costs, roughly, to order the pool's work (issue 12): a receipt
    (PhanHoi alone) least; else the school's workbook's size, then its issues."""
    source, _, kwargs = job
    if "received" in kwargs or source is None:
        return 0, 0, len(kwargs["issues"])
    try:
        size = source.stat().st_size
    except OSError:
        size = 0
    return 1, size, len(kwargs["issues"])


@dataclass
class FeedbackWork:
    """The feedback step between its start and its end (`start_feedbacks` → `finish_feedbacks`):
    the workbooks' paths, what each will be recorded as, the jobs, and the worker processes
    writing them meanwhile (None: the jobs run in `finish_feedbacks`, here)."""
    out: dict[str, Path]  # file hash → its feedback workbook
    made: dict[str, str]  # feedback path → fingerprint of what it is written from (incremental)
    jobs: list[tuple]
    pool: ProcessPoolExecutor | None = None
    futures: list = field(default_factory=list)
    started: float = 0.0  # perf_counter at the start

    def cancel(self) -> None:
        """Stop the workers: the jobs not started are dropped (their workbooks are written by
        the next run: nothing is recorded before every one is in place)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


_ILOC_SLICES = 16  # above this many workbooks with issues to write, their issues in one groupby pass


def start_feedbacks(con, outcome: RunOutcome, results: list[FileResult], cfg: Config) -> FeedbackWork:
    """Plan one feedback workbook per file of the run (the school's workbook, annotated; with
    cfg.feedback_engine "patch" the school's own .xlsx patched, "fast" a values-only copy,
    "faithful" the school's own file through openpyxl) and start writing them in worker
    processes, which go on while the caller does other work (the flow builds the forms
    meanwhile, issue 12). Only the workers write, and only the workbooks (atomic renames into
    the feedback directory): the database is touched again in `finish_feedbacks`, by the caller's
    thread, so no DuckDB connection is shared. The workers are forked here, before the caller
    starts anything else (no thread of this process is inside DuckDB while they fork)."""
    import time

    out = {}
    jobs = []
    now = dt.datetime.now(VN_TZ)
    by_hash = {fr.sha256: fr for fr in results}
    # each file's issue rows' positions, in the run's order (one pass, not one filter per file);
    # a file's issues are taken (the very rows, index and dtypes the groupby's own iteration
    # gives) only for a workbook to write — a province's 730 frames made for the one written
    # cost ~0.2 s
    grouped = outcome.issues.groupby("file_hash", sort=False) if len(outcome.issues) else None
    positions = grouped.indices if grouped is not None else {}
    hashes = {}  # each file's issue rows hashed, from one pass over the run's issues (incremental)
    if cfg.incremental and len(outcome.issues):
        from edustat.incremental import issue_row_hashes

        every = issue_row_hashes(outcome.issues)
        hashes = {h: every[pos] for h, pos in positions.items()}
    none = outcome.issues.iloc[0:0]
    done, made = {}, {}  # feedback path → fingerprint of what it was written from (issue 12)
    if cfg.incremental:
        from edustat.incremental import outputs_done

        done = outputs_done(con, outcome.school_year, outcome.period, "feedback")
    from edustat.paths import inside_dirs

    proven = inside_dirs(cfg.data_dir)  # the feedback directory resolved once, not once per school
    slices = []  # (a workbook's kwargs, its file, its issue rows' positions)
    for sub in outcome.submissions.itertuples(index=False):
        fr = by_hash[sub.file_hash]
        path = feedback_path(cfg, outcome.school_year, outcome.period, sub.school_code, sub.file_name, sub.file_hash,
                             proven)
        pos = positions.get(sub.file_hash)
        school = {"school_code": sub.school_code if isinstance(sub.school_code, str) else "", "school_name": fr.school.get("school_name") or fr.name}
        counts = {"learners": int(sub.n_learners or 0), "staff": int(sub.n_staff or 0), "classes": int(sub.n_classes or 0),
                  "errors": int(sub.n_errors or 0), "warnings": int(sub.n_warnings or 0), "notices": int(sub.n_notices or 0)}
        source = Path(fr.raw_path) if (fr.raw_path and not fr.unreadable) else None
        kwargs = dict(school=school, issues=none, status=sub.status, counts=counts,
                      school_year=outcome.school_year, period=outcome.period, generated_at=now,
                      engine=cfg.feedback_engine)
        if sub.status == "accepted" and not cfg.feedback_full_copy:  # no error, no warning: a receipt
            kwargs["received"] = {"file": sub.file_name, "version": None if pd.isna(sub.version) else int(sub.version),
                                  "hash": f"{sub.file_hash[:12]}…"}
        out[sub.file_hash] = path
        if cfg.incremental:  # the same result as the workbook in place: not written again
            from edustat.incremental import feedback_fingerprint

            # `issues` is still the empty frame of the run's columns: the file's count given apart
            fp = feedback_fingerprint(source, kwargs, sub, hashes.get(sub.file_hash),
                                      n_issues=0 if pos is None else len(pos))
            if fp == done.get(str(path)) and path.is_file() and not path.is_symlink():
                continue
            made[str(path)] = fp
        if pos is not None:
            slices.append((kwargs, sub.file_hash, pos))
        jobs.append((source, path, kwargs))
    # the issues of the workbooks to write: a few taken by position (`iloc`), many in the
    # groupby's one pass (a province's cold run: 730 `iloc`s on the run's Arrow-backed issues
    # cost 3 s, the groupby's iteration 0.3); the same frames either way (rows, order, index, dtypes)
    if len(slices) > _ILOC_SLICES:
        by_file = dict(iter(grouped))
        for kwargs, file_hash, _ in slices:
            kwargs["issues"] = by_file[file_hash]
    else:
        for kwargs, _, pos in slices:
            kwargs["issues"] = outcome.issues.iloc[pos]
    work = FeedbackWork(out=out, made=made, jobs=jobs, started=time.perf_counter())
    workers = max(1, min(cfg.workers, len(jobs)))
    if cfg.workers > 1 and jobs:
        # gc.freeze: a forked worker's collections skip the ~500k objects it inherited (the
        # run's frames and results), which they walked (and copied page by page) for nothing.
        # One job gets a worker of its own too: it is written while the forms are built.
        work.pool = ProcessPoolExecutor(max_workers=workers, initializer=gc.freeze)
        # the costliest first, one at a time: no worker idles beside a long last job (the
        # workers are forked at the first submit: the start method is fork)
        work.futures = [work.pool.submit(_feedback_job, job) for job in sorted(jobs, key=_feedback_cost, reverse=True)]
    return work


def finish_feedbacks(con, work: FeedbackWork, outcome: RunOutcome) -> dict[str, Path]:
    """Wait for the workbooks `start_feedbacks` began (or write them here), then record them:
    the written ones as done (incremental) and every file's feedback path in the register."""
    try:
        if work.pool is not None:
            for f in work.futures:
                f.result()  # a job's exception is raised here, as the step's
        else:
            for job in work.jobs:
                _feedback_job(job)
    finally:
        work.cancel()
    faults.point("feedback:written")
    if work.made:  # after the workbooks are in place: a kill before this rewrites them next run
        from edustat.incremental import record_outputs

        record_outputs(con, outcome.school_year, outcome.period, "feedback", work.made)
    outcome.feedback_written = len(work.jobs)
    out = work.out
    if out:
        # lists as parameters, not a registered frame: `register` refuses a connection whose last
        # result was read with fetchone (DuckDB 2.0: "unfinished result"), which the forms, now
        # built before this, may leave on a shared connection
        con.execute("""update submission set feedback_path = f.feedback_path
                       from (select unnest(?::varchar[]) as file_hash, unnest(?::varchar[]) as feedback_path) f
                       where submission.file_hash = f.file_hash and submission.school_year = ? and submission.period = ?""",
                    [list(out), [str(p) for p in out.values()], outcome.school_year, outcome.period])
    return out


def write_feedbacks(con, outcome: RunOutcome, results: list[FileResult], cfg: Config) -> dict[str, Path]:
    """start_feedbacks then finish_feedbacks: every workbook written and recorded."""
    return finish_feedbacks(con, start_feedbacks(con, outcome, results, cfg), outcome)


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
        "cross_period": _cross_period_counts(outcome.issues),
        "incremental": outcome.incremental,  # cache hits / misses of the run (issue 12)
        "published_unchanged": str(cfg.published_dir) if outcome.publish_unchanged else None,
        "readings": int(outcome.issues["rule_id"].astype("string").str.endswith(("_near", "_said")).sum()
                        + (outcome.issues["rule_id"] == "file_header_near").sum()) if len(outcome.issues) else 0,
        **_lock_and_certification(con, outcome),
    }
    import json

    con.execute("insert or replace into run values (?, ?, ?, null, null, ?, ?, 'completed', ?)",
                [outcome.run_id, outcome.school_year, outcome.period, dt.datetime.now(VN_TZ).replace(tzinfo=None),
                 int(len(subs)), json.dumps(out, ensure_ascii=False)])
    return out


def _lock_and_certification(con, outcome: RunOutcome) -> dict:
    """Issue 11: whether the collection is closed, files held as late (all waiting, not only
    this run's), and how many schools in core are certified by their principal."""
    from edustat import period_lock as period_

    y, p = outcome.school_year, outcome.period
    late = con.execute("select count(*) from submission where school_year = ? and period = ? and status = 'late'",
                       [y, p]).fetchone()[0]
    cert = con.execute("""select count(*) filter (where certified), count(*) from submission
                          where school_year = ? and period = ? and in_core""", [y, p]).fetchone()
    return {"closed": period_.state(con, y, p) == "closed", "late_waiting": int(late),
            "certified_schools": int(cert[0] or 0), "schools_in_core": int(cert[1] or 0)}


def _cross_period_counts(issues: pd.DataFrame) -> dict:
    from edustat.periods import summary_counts

    return summary_counts(issues)


def _schools_in_core(con, school_year: str, period: str) -> int:
    try:
        return int(con.execute("select count(distinct school_code) from core_school where school_year = ? and period = ?",
                               [school_year, period]).fetchone()[0])
    except Exception:  # noqa: BLE001 - no core table yet: nothing loaded
        return 0


def forms_line(s: dict, english: bool = True) -> str:
    """Honest: never "all checks pass" while schools are rejected / unreadable or the forms
    cover no school; always how many schools the forms cover. `english=False`: Vietnamese only
    (the officer's Prefect artifact)."""
    def say(vi: str, en: str) -> str:
        return f"{vi} / {en}" if english else vi

    c = s["counts"]
    covered, sent = s.get("schools_in_forms", 0), sum(c.get(k, 0) for k in STATUS_TEXT if k != "missing")
    cover = say(f"biểu gồm {covered} trường", f"forms cover {covered} schools")
    bad = s.get("form_checks_failed", 0)
    if not covered:
        return say("KHÔNG có trường nào trong biểu — biểu để trống", "forms are EMPTY") + f" ({', '.join(s['forms'])})"
    if bad:
        return f"{cover}; " + say(f"{bad} phép kiểm tra KHÔNG ĐẠT", "checks failed")
    left_out = c.get("rejected", 0) + c.get("unreadable", 0) + c.get("missing", 0)
    if left_out or c.get("partially_loaded", 0):
        return (f"{cover}; {left_out} trường chưa có trong biểu (bị từ chối / không đọc được / chưa nộp), "
                f"{c.get('partially_loaded', 0)} trường nạp một phần — " + say("biểu CHƯA ĐỦ", "forms INCOMPLETE"))
    return f"{cover} (tất cả {sent} trường đã nộp); " + say("các phép kiểm tra của biểu đều đạt", "form checks pass")


def _problem_files(outcome: RunOutcome) -> list[dict]:
    """Every file of the run that was not accepted, with its file-level message (row-level
    messages may quote personal data: only their count is given)."""
    subs, issues = outcome.submissions, outcome.issues
    out = []
    # one pass over the errors, not one filter of every issue per file (a province: 300 files
    # x 100k issues took 1.5 s): per file hash, its error count and its first file-level message
    errors = issues[issues["severity"] == "error"] if len(issues) else issues
    n_errors = errors["file_hash"].value_counts().to_dict() if len(errors) else {}
    first_file_level = {}
    if len(errors):
        file_level = errors[errors["rule_id"].str.startswith("file_")]
        file_level = file_level[file_level["file_hash"].notna()].drop_duplicates("file_hash", keep="first")
        first_file_level = dict(zip(file_level["file_hash"], file_level["message"]))
    for r in subs.itertuples(index=False) if len(subs) else []:
        if r.status not in ("unreadable", "rejected"):
            continue
        known = isinstance(r.file_hash, str)  # a null hash matches no issue (as `==` did)
        text = (first_file_level[r.file_hash] if known and r.file_hash in first_file_level
                else f"{n_errors.get(r.file_hash, 0) if known else 0} lỗi trong dữ liệu (xem tệp phản hồi)")
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
    inc = s.get("incremental")
    if inc and s["files"]:
        lines.append(f"  Bộ nhớ đệm / cache: {inc['read_hits']} tệp không đổi, {inc['read_misses']} tệp đọc mới / "
                     f"read hits {inc['read_hits']}, misses {inc['read_misses']}; "
                     f"validate hits {inc['validate_hits']}, misses {inc['validate_misses']}")
    if s.get("closed"):
        lines.append(f"  Kỳ đã khóa / collection closed: tệp mới được giữ lại là nộp muộn, không thay đổi số liệu và biểu; "
                     f"{c.get('late', 0)} tệp nộp muộn trong lần chạy này, {s.get('late_waiting', 0)} tệp đang chờ Phòng xử lý "
                     "(edustat accept-late / edustat reopen)")
    elif s.get("late_waiting"):
        lines.append(f"  Tệp nộp muộn chờ xử lý / late files waiting: {s['late_waiting']} (edustat accept-late)")
    if s.get("schools_in_core"):
        lines.append(f"  Hiệu trưởng đã xác nhận / certified: {s.get('certified_schools', 0)} / {s['schools_in_core']} trường đã nạp")
    if s["files"]:
        lines.append(f"  Phản hồi cho trường / feedback: {s['feedback_dir']}")
    lines.append(f"  Cơ sở dữ liệu / database: {s['database']}")
    if s.get("published"):  # never a path that was not written (run --no-publish)
        lines.append(f"  Bản sao cho phân tích / analyst snapshot: {s['published']}")
    elif s.get("published_unchanged"):
        lines.append(f"  Bản sao cho phân tích không đổi, không công bố lại / analyst snapshot unchanged, "
                     f"not republished: {s['published_unchanged']}")
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
    from edustat.periods import summary_text_lines

    cross = summary_text_lines(s.get("cross_period") or {})
    if cross:
        lines.append(f"  So với kỳ trước / cross-period: {cross[0]}")
        lines += [f"    - {t}" for t in cross[1:]]
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


# ---------------------------------------------------------------------------------------
# Trust: consistency at the start of a run, one writer at a time, temp files, file modes,
# faults in one Vietnamese line
# ---------------------------------------------------------------------------------------

class StoreInconsistent(RuntimeError):
    """The register and core disagree and the kept raw files cannot repair it."""


def _inconsistency_text(bad: pd.DataFrame, repairable: bool) -> str:
    schools = bad.drop_duplicates(["school_year", "period", "school_code"])
    names = ", ".join(f"{r.school_code or '?'} ({r.school_year} {r.period})" for r in schools.head(5).itertuples(index=False))
    more = f" và {len(schools) - 5} trường khác" if len(schools) > 5 else ""
    first = bad.iloc[0]
    why = f"{first['problem']}: {first['detail']}"
    tail = ("không sửa được tự động vì thiếu tệp gốc đã lưu trong raw/; cần khôi phục tệp gốc hoặc cho các trường nộp lại"
            if not repairable else "đã thử nạp lại từ tệp gốc nhưng vẫn chưa khớp")
    return (f"cơ sở dữ liệu không nhất quán: sổ đăng ký và dữ liệu đã nạp (core) lệch nhau ở {names}{more} "
            f"[{why}]; {tail}. Chưa chạy tiếp để không báo 'đã tiếp nhận' sai.")


AUDITED_SUFFIX = ".audited"  # beside the database: the state the last completed run left, proven consistent
_HEADERS = 3 * 4096  # DuckDB's file header and its two alternating database headers


def _database_state(cfg: Config) -> dict | None:
    """The database file as it lies closed, or None when a WAL is beside it (committed changes
    not yet in the file) or it is missing. Every change DuckDB makes reaches the file only
    through a checkpoint, and a checkpoint writes a new database header (the alternate slot,
    its iteration counter + 1) after the blocks it wrote: the first 12 KiB differ after any
    change. With the file's identity (inode, size, times — a file put in its place, a copy
    restored) and the code's digest (another audit, another answer)."""
    from edustat.incremental import code_digest

    db = Path(cfg.db_path)
    if os.path.lexists(f"{db}.wal"):
        return None
    try:
        with open(db, "rb") as fh:
            st = os.fstat(fh.fileno())
            head = fh.read(_HEADERS)
    except OSError:
        return None
    import hashlib

    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "headers": hashlib.sha256(head).hexdigest(), "code": code_digest()}


def _audited_path(cfg: Config) -> Path:
    db = Path(cfg.db_path)
    return db.with_name(db.name + AUDITED_SUFFIX)


def record_audited(cfg: Config) -> bool:
    """At the end of a completed collection run whose every write was audited (issue 12): the
    state of the closed database file, so the next run's prepare need not audit that very
    state again (`audited_unchanged`). The caller vouches that the run started from a state
    the audit passed (its prepare), that its load's audit found the whole collection
    consistent (`RunOutcome.audited`) or it loaded nothing, and that nothing after the load
    writes what the audit reads (the register's counts, statuses and flags, the error issues,
    raw_/stg_/core_ rows: the feedback path, the forms' and the publish's tables are not).
    Nothing is recorded (an earlier record removed) when the file is not closed clean, or
    when the record cannot be written (a full disk: the run's data is committed, and a record
    is only a shortcut — without one the next prepare audits). The record is written like
    every file of the data dir: proven inside it, a link in its place never followed.
    Returns whether a state was recorded."""
    from edustat.paths import inside

    path = _audited_path(cfg)
    state = _database_state(cfg)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # clean_temp_files removes a killed run's
    try:
        if state is None:
            path.unlink(missing_ok=True)
            return False
        inside(cfg.data_dir, path.parent)
        tmp.unlink(missing_ok=True)  # a link or a killed run's file of this pid: removed, not followed
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(state, sort_keys=True))
        os.replace(tmp, path)
        return True
    except OSError:
        for stale in (tmp, path):
            try:
                stale.unlink(missing_ok=True)
            except OSError:
                pass
        return False


def audited_unchanged(cfg: Config) -> bool:
    """The database is the very file the last completed run left audited (`record_audited`):
    no WAL, the same headers, identity and code. Then the register against core is what that
    audit found, and prepare skips it (and the session it needs). Anything else: audit."""
    try:
        fd = os.open(_audited_path(cfg), os.O_RDONLY | os.O_NOFOLLOW)  # a link is no record
        with os.fdopen(fd, encoding="utf-8") as fh:
            recorded = json.loads(fh.read())
    except (OSError, ValueError):
        return False
    state = _database_state(cfg)
    return state is not None and recorded == state


def check_consistency(con, cfg: Config, run_id: str) -> pd.DataFrame:
    """At the start of every run: the register against core_* for every collection. What
    disagrees is repaired by re-staging the file from its kept raw copy (read, validated and
    loaded again in one transaction); what cannot be repaired stops the run with one line.
    Returns what was repaired (empty when all was consistent)."""
    import shutil
    import tempfile

    bad = inconsistencies(con)
    if bad.empty:
        return bad
    regs = con.execute("""select school_year, period, file_hash, file_name, raw_path from submission""").df()
    todo = bad.dropna(subset=["file_hash"]).merge(regs, on=["school_year", "period", "file_hash"], how="left")
    missing = todo[todo["raw_path"].isna() | ~todo["raw_path"].map(lambda p: isinstance(p, str) and Path(p).is_file())]
    if len(missing) or bad["file_hash"].isna().any():
        raise StoreInconsistent(_inconsistency_text(bad, repairable=False))
    for (year, period), grp in todo.drop_duplicates("file_hash").groupby(["school_year", "period"]):
        tmp = Path(tempfile.mkdtemp(prefix=".repair-", dir=cfg.data_dir))
        try:
            files = []
            for i, r in enumerate(grp.itertuples(index=False)):
                # under its own name again (messages and the register name the school's file)
                dest = tmp / str(i) / (Path(r.file_name).name if isinstance(r.file_name, str) and r.file_name else Path(r.raw_path).name)
                dest.parent.mkdir()
                shutil.copyfile(r.raw_path, dest)
                files.append(dest)
            results = ingest_all(files, cfg, year, period, workers=1)
            frames = assemble_all(results, cfg)
            issues = validate_all(results, cfg, year, period, frames)
            # a repair restores registered files: allowed in a closed collection, and audited
            load_all(con, results, issues, cfg, year, period, f"{run_id}-repair", frames=frames,
                     override={"action": "repair", "reason": "đối chiếu sổ đăng ký với dữ liệu đã nạp"})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    still = inconsistencies(con)
    if len(still):
        raise StoreInconsistent(_inconsistency_text(still, repairable=True))
    return bad


class WriterBusy(RuntimeError):
    """Another edustat process writes this data directory."""

    def __init__(self, holder: dict, lock_path: Path):
        self.holder, self.lock_path = holder, lock_path
        who = (f"tiến trình {holder.get('pid', '?')} của {holder.get('user', '?')} trên máy {holder.get('host', '?')}, "
               f"bắt đầu lúc {holder.get('started_at', '?')}" if holder else "một tiến trình khác")
        super().__init__(f"một lượt chạy edustat khác đang ghi thư mục dữ liệu này ({who}; tệp khóa {lock_path}); "
                         "chờ lượt đó xong rồi chạy lại")


def _proc_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _read_holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


class WriterLock:
    """One writer per data directory: `<data_dir>/edustat.lock`, an advisory lock (flock) held
    for the whole run, its content naming the owner (PID, user, host, start time, command).

    Stale-lock rule: the kernel drops a flock when its process dies, however it dies (SIGKILL,
    OOM), so a lock file whose flock is free belongs to a dead run and is taken over (the
    takeover is logged with the dead owner's PID). A live owner is never overridden: a second
    run waits up to `wait` seconds (saying so once) and then refuses with `WriterBusy`."""

    def __init__(self, data_dir: Path, wait: float = 0.0, say=None):
        self.path = Path(data_dir) / "edustat.lock"
        self.wait, self.say = wait, say
        self.fd: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> "WriterLock":
        import fcntl
        import getpass
        import os
        import socket
        import sys
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait
        told = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = _read_holder(self.path)
                if time.monotonic() >= deadline:
                    raise WriterBusy(holder, self.path) from None
                if not told and self.say:
                    self.say(f"Đang chờ: một lượt chạy edustat khác (PID {holder.get('pid', '?')}, máy "
                             f"{holder.get('host', '?')}) đang ghi thư mục dữ liệu; sẽ chờ tối đa {self.wait:.0f} giây.")
                    told = True
                time.sleep(0.5)
                continue
            # the file may have been removed and re-created by the previous owner's release
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            break
        self.previous = _read_holder(self.path)
        me = {"pid": os.getpid(), "proc_start": _proc_start(os.getpid()), "user": getpass.getuser(),
              "host": socket.gethostname(), "started_at": dt.datetime.now(VN_TZ).isoformat(timespec="seconds"),
              "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me, ensure_ascii=False).encode("utf-8"), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        import fcntl
        import os

        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding the flock (see __enter__)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


TEMP_PATTERNS = ("*.part", "*.tmp", ".*.tmp-*", ".*.old-*", ".repair-*")


def clean_temp_files(cfg: Config) -> list[Path]:
    """Temp files and dirs a killed run left (raw copies `*.part`, workbooks `.*.tmp`, the
    snapshot's `.edustat.duckdb.tmp-*`, `.parquet.tmp-*`/`.old-*`, repairs `.repair-*`), under
    raw/, curated/ and the data root. Only the lock holder calls this (never another run's
    files). Symlinks are removed as links, never followed."""
    import fnmatch
    import os
    import shutil

    removed: list[Path] = []

    # one regex for the patterns (fnmatch's own translation): a walk of a province's data dir
    # tests ~3,000 names, five fnmatch calls each
    match = re.compile("|".join(fnmatch.translate(pat) for pat in TEMP_PATTERNS)).match

    roots = [cfg.raw_dir, cfg.curated_dir, cfg.data_dir / "cache"]  # cache: edustat.incremental's entries
    for entry in (cfg.data_dir.iterdir() if cfg.data_dir.is_dir() else ()):
        if entry.name.startswith(".repair-") and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for d in list(dirnames):
                p = Path(dirpath) / d
                if match(d):
                    if p.is_symlink():
                        p.unlink()
                    else:
                        shutil.rmtree(p, ignore_errors=True)
                    dirnames.remove(d)
                    removed.append(p)
            for f in filenames:
                if match(f):
                    (Path(dirpath) / f).unlink(missing_ok=True)
                    removed.append(Path(dirpath) / f)
    return removed


def private_umask(cfg: Config) -> int:
    """The umask of a run: files it creates (the DuckDB and its WAL, feedback workbooks) are
    0600, or 0640 when the office's group is configured. Returns the previous umask."""
    import os

    return os.umask(0o027 if cfg.private_group is not None else 0o077)


def share_tree(root: Path, umask: int) -> None:
    """Give the outputs meant for others (analysts' snapshot, report forms) the modes the
    caller's umask would have given them, after a run made under `private_umask`."""
    import os

    root = Path(root)
    if not root.exists() or root.is_symlink():
        return
    fmode, dmode = 0o666 & ~umask, 0o777 & ~umask
    os.chmod(root, dmode if root.is_dir() else fmode)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for d in dirnames:
            p = Path(dirpath) / d
            if not p.is_symlink():
                os.chmod(p, dmode)
        for f in filenames:
            p = Path(dirpath) / f
            if not p.is_symlink():
                os.chmod(p, fmode)


def secure_private_files(cfg: Config) -> None:
    """The files holding personal data made private (0600, or 0640 + group): the curated
    DuckDB and its WAL, and every feedback workbook (also those of earlier versions)."""
    from edustat.store import private_file

    private_file(cfg.db_path, cfg.private_group)
    private_file(Path(f"{cfg.db_path}.wal"), cfg.private_group)
    if cfg.feedback_dir.is_dir():
        for p in cfg.feedback_dir.rglob("*.xlsx"):
            if not p.is_symlink():
                private_file(p, cfg.private_group)


def fault_text(exc: BaseException) -> str | None:
    """One Vietnamese line for a fault of the machine (disk full, read-only or forbidden
    directory, database held by another process, another run writing) found anywhere in the
    exception's chain; None when it is none of those."""
    import errno as errno_

    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (WriterBusy, StoreInconsistent)):
            return str(e)
        text = str(e)
        low = text.lower()
        where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
        if (isinstance(e, OSError) and e.errno in (errno_.ENOSPC, errno_.EDQUOT)) or "no space left" in low \
                or "disk quota" in low:
            return f"ổ đĩa đã đầy, không ghi được dữ liệu{where}; giải phóng dung lượng rồi chạy lại (dữ liệu cũ vẫn nguyên vẹn)"
        if (isinstance(e, OSError) and e.errno == errno_.EROFS) or "read-only file system" in low:
            return f"thư mục dữ liệu chỉ cho đọc (read-only){where}; cần thư mục ghi được rồi chạy lại"
        if (isinstance(e, OSError) and e.errno in (errno_.EACCES, errno_.EPERM)) or "permission denied" in low:
            return f"không có quyền ghi vào thư mục dữ liệu{where}; kiểm tra quyền của tài khoản đang chạy"
        if "could not set lock" in low or "conflicting lock" in low:
            m = re.search(r"PID (\d+)", text)
            pid = f" (PID {m.group(1)})" if m else ""
            return (f"cơ sở dữ liệu đang được một tiến trình khác mở{pid}, ví dụ một phiên phân tích; "
                    "đóng tiến trình đó (hoặc dùng bản sao cho phân tích) rồi chạy lại")
        e = e.__cause__ or e.__context__
    return None


def is_operator_fault(exc: BaseException) -> bool:
    """Faults a retry cannot fix (full disk, read-only or forbidden directory, another run,
    an inconsistent store): Prefect does not retry them; the officer must act."""
    text = fault_text(exc)
    return text is not None and "đang được một tiến trình khác mở" not in text


_SHARED_UMASK: int | None = None  # the umask before `sole_writer` made the run's files private


def share_outputs(root: Path) -> None:
    """Outputs meant for others (snapshot, forms) get the modes they had before runs made
    files private (a no-op outside `sole_writer`)."""
    if _SHARED_UMASK is not None:
        share_tree(root, _SHARED_UMASK)


def _private_prefect_db() -> None:
    """Prefect's database (flow parameters, logs) under a PREFECT_HOME we own: private too."""
    import os

    home = os.environ.get("PREFECT_HOME")
    if not home:
        return
    from edustat.store import private_file

    for name in ("prefect.db", "prefect.db-wal", "prefect.db-shm"):
        p = Path(home) / name
        try:
            if p.is_file() and not p.is_symlink() and p.stat().st_uid == os.getuid():
                private_file(p)
        except OSError:
            pass


@contextmanager
def sole_writer(cfg: Config):
    """The frame of every run that writes the data dir: the writer lock (see `WriterLock`),
    a private umask for the files it creates, and the personal-data files made private at the
    end. Outputs for others are re-shared by `share_outputs`."""
    import logging
    import os
    import sys

    global _SHARED_UMASK
    log = logging.getLogger("edustat")

    def say(text: str) -> None:
        print(text, file=sys.__stderr__, flush=True)
        log.warning(text)

    for d in (cfg.data_dir, cfg.curated_dir):  # traversable by analysts, as before
        d.mkdir(parents=True, exist_ok=True)
    with WriterLock(cfg.data_dir, cfg.lock_wait_seconds, say) as lock:
        if lock.previous.get("pid"):
            log.warning("lock of an interrupted run taken over: %s", lock.previous)
        old = private_umask(cfg)
        _SHARED_UMASK = old
        try:
            yield lock
        finally:
            os.umask(old)
            _SHARED_UMASK = None
            try:
                secure_private_files(cfg)
                _private_prefect_db()
            except OSError as exc:  # a full disk or read-only dir: reported by the run's own error
                log.warning("could not make personal-data files private: %s", exc)
