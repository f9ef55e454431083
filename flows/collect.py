"""The collection flow: school workbooks in, trusted DuckDB and feedback out.

Reads top to bottom as the recipe: (one writer: take the data dir's lock; clean what a killed
run left; check the register against core) → find submissions → read and check structure →
validate rows and cross-rows → load (write–audit–publish: stage, audit, swap the accepted
versions in, in one transaction) → feedback to each school (its workbooks written in worker
processes while the Circular 24/2018 forms are built) →
publish the analysts' snapshot (→ close the collection, with `close_after`). On a closed
collection the load holds new files as "late" and writes nothing else, and the forms are left as
built (edustat.period_lock). Business logic lives in `edustat/`; this module only orders the steps
and owns the connection.

Every task Prefect may retry is idempotent (the load is one transaction that replaces its
files' rows; publish swaps finished files in); faults a retry cannot fix (full disk,
read-only directory, another run) are not retried. `faults.point` marks where the
fault-injection tests crash or fail a run.

What the officer sees in the Prefect UI: a run named after what ran ("2022-2023 đầu năm — 12
trường (…)"), one INFO line per stage in the run's logs (counts, durations, file names; never
personal data), the custom-run form with Vietnamese descriptions and choices, and the
artifacts of `edustat/officer.py`.
"""
# No `from __future__ import annotations` here: a served run receives the flow by value
# (flows/deploy.py hands the runner the flow itself), and a function pickled by value keeps its
# annotations but not the module names they would be resolved from (Prefect builds the run
# form's parameter model from them: "SchoolYear is not defined").

import datetime as dt
import time
from functools import partial
from pathlib import Path
from typing import Literal

from prefect import flow, unmapped
from prefect import task as prefect_task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import opaque

from edustat import faults, pipeline, store, uicalls
from edustat.submissions import discover
from edustat.config import Config, load_config
from edustat.officer import run_log, run_title

Period = Literal["dau_nam", "cuoi_nam"]
# The custom-run form offers these: "auto" (the current school year) and every year from
# 2015-2016 to next year's.
SchoolYear = Literal[("auto", *(f"{y}-{y + 1}" for y in range(dt.date.today().year + 1, 2014, -1)))]  # type: ignore[valid-type]


def _resolved_year(school_year: str) -> str:
    return current_school_year() if school_year == "auto" else school_year


def _run_name() -> str:
    """The run's name as it starts ("2022-2023 đầu năm"); renamed with counts as it goes."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    return run_title(_resolved_year(params.get("school_year", "auto")), params.get("period", "dau_nam"))


def _rename(name: str) -> None:
    """Rename the current flow run (best effort: a name is never worth failing a run), in the
    background while the stages go on (edustat.uicalls; `_ui_sent` waits for it at the end)."""
    uicalls.rename(name)


def _ui_sent() -> None:
    """Wait for the renames and artifacts sent in the background; a failed one is a warning."""
    for line in uicalls.drain():
        run_log().warning("không gửi được lên giao diện Prefect: %s", line)


# Every step is a Prefect task without Prefect's own result cache: its default policy hashes each
# task's inputs (the whole collection, pickled: ~0.2-0.5 s CPU per task for a city) to a key we
# never use. What may be reused is decided by edustat.incremental, per file and per output.
task = partial(prefect_task, cache_policy=NO_CACHE)
# opaque(x): Prefect hands the step x as it is, without walking into it looking for futures (the
# collection is ~1.5 M objects for a province: the walks cost 30 s of a 66 s run); the run graph
# keeps the edge from the step that returned x.


def retry_unless_operator_fault(task, task_run, state) -> bool:
    """Retry what may pass; not a full disk, a read-only directory or another run."""
    exc = state.data if isinstance(state.data, BaseException) else None
    return exc is None or not pipeline.is_operator_fault(exc)


@task(name="chuẩn bị: dọn tệp tạm, đối chiếu sổ đăng ký (prepare)")
def prepare(cfg: Config, run_id: str) -> dict:
    """Temp files of a killed run removed; register vs core checked (repaired or refused),
    unless the database is the very file the last completed run left audited."""
    removed = pipeline.clean_temp_files(cfg)
    if not cfg.db_path.exists() or pipeline.audited_unchanged(cfg):
        return {"removed": len(removed), "repaired": 0}
    with store.session(cfg.db_path, cfg.private_group) as con:
        repaired = pipeline.check_consistency(con, cfg, run_id)
        # not the file a completed run left: what core was written from is proven again (store.write_run)
        store.drop_core_stamps(con)
    return {"removed": len(removed), "repaired": int(repaired["school_code"].nunique()) if len(repaired) else 0}


@task(name="tìm tệp nộp (find submissions)", retries=1, retry_delay_seconds=2,
      retry_condition_fn=retry_unless_operator_fault)
def find_submissions(inbox: Path) -> list[Path]:
    faults.point("find")
    files = discover(inbox)
    run_log().info("Tìm thấy %d tệp trong thư mục nộp %s", len(files), inbox)
    return files


def _log_read(results, seconds: float) -> None:
    bad = [fr.name for fr in results if fr.unreadable]
    blocked = sum(1 for fr in results if fr.blocked and not fr.unreadable)
    hits = pipeline.cache_stats(results)["read_hits"]
    run_log().info("Đã đọc %d tệp trong %.1f s: %d đọc được, %d sai cấu trúc, %d không đọc được%s; "
                   "%d tệp không đổi lấy từ bộ nhớ đệm, %d tệp đọc mới",
                   len(results), seconds, len(results) - len(bad) - blocked, blocked, len(bad),
                   f" ({', '.join(bad)})" if bad else "", hits, len(results) - hits)


@task(name="đọc và kiểm tra cấu trúc (read + structure)")
def read_files(files: list[Path], cfg: Config, school_year: str, period: str):
    faults.point("read")
    t0 = time.perf_counter()
    results = pipeline.ingest_all(files, cfg, school_year, period)
    _log_read(results, time.perf_counter() - t0)
    return results


@task(name="đọc một nhóm tệp (read a batch)")
def read_batch(files: list[Path], cfg: Config, school_year: str, period: str):
    return pipeline.ingest_files(files, cfg, school_year, period)


def read_fanned_out(files: list[Path], cfg: Config, school_year: str, period: str, parts: int):
    """Reading as one task per batch of files, submitted to the flow's task runner (Dask)."""
    batches = [files[i::parts] for i in range(parts) if files[i::parts]]
    futures = read_batch.map(batches, cfg=unmapped(cfg), school_year=unmapped(school_year), period=unmapped(period))
    t0 = time.perf_counter()
    results = pipeline.settle([fr for f in futures for fr in f.result()], cfg, school_year, period)
    _log_read(results, time.perf_counter() - t0)
    return results


def task_runner(cfg: Config):
    """The configured task runner: local processes (default) or a Dask cluster."""
    if cfg.task_runner != "dask":
        return None
    from prefect_dask import DaskTaskRunner

    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


@task(name="ghép và chuẩn hóa kiểu (cast)")
def cast(results, cfg: Config):
    faults.point("cast")
    t0 = time.perf_counter()
    frames = pipeline.assemble_all(results, cfg)
    words = {"school": "trường", "rooms": "phòng học", "classes": "lớp", "learners": "học sinh", "staff": "cán bộ"}
    rows = ", ".join(f"{words.get(sid, sid)} {len(f):,}" for sid, f in frames.typed.items())
    covers = getattr(frames, "covers", None)  # incremental: only the files read anew are cast
    tail = (f" (chỉ {len(covers):,} tệp mới hoặc đã thay đổi; các tệp khác dùng dữ liệu đã chuẩn hóa ở lần nạp trước)"
            if covers is not None else "")
    run_log().info("Đã ghép và chuẩn hóa kiểu trong %.1f s: %s dòng%s", time.perf_counter() - t0, rows or "0", tail)
    return frames


@task(name="kiểm tra dữ liệu (validate, Great Expectations)")
def validate(results, frames, cfg: Config, school_year: str, period: str):
    faults.point("validate")
    t0 = time.perf_counter()
    issues = pipeline.validate_all(results, cfg, school_year, period, frames)
    sev = issues["severity"].value_counts().to_dict() if len(issues) else {}
    rules = issues["rule_id"].value_counts().head(5) if len(issues) else []
    run_log().info("Đã kiểm tra trong %.1f s: %d lỗi, %d cảnh báo, %d lưu ý%s", time.perf_counter() - t0,
                   sev.get("error", 0), sev.get("warning", 0), sev.get("notice", 0),
                   ("; quy tắc gặp nhiều nhất: " + ", ".join(f"{r} ({n})" for r, n in rules.items())) if len(rules) else "")
    return issues


@task(name="nạp DuckDB (load)", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_operator_fault)
def load(results, frames, issues, cfg: Config, school_year: str, period: str, run_id: str):
    faults.point("load")
    t0 = time.perf_counter()
    with store.session(cfg.db_path, cfg.private_group) as con:
        outcome = pipeline.load_all(con, results, issues, cfg, school_year, period, run_id, frames=frames)
    st = outcome.submissions["status"].value_counts().to_dict() if len(outcome.submissions) else {}
    run_log().info("Đã nạp DuckDB trong %.1f s: %d trường vào dữ liệu chính thức, %s dòng; trạng thái: %s",
                   time.perf_counter() - t0, len(outcome.loaded), f"{sum(outcome.loaded.values()):,}",
                   ", ".join(f"{pipeline.STATUS_TEXT.get(k, k).lower()} {v}" for k, v in sorted(st.items())) or "không có tệp")
    return outcome


@task(name="dùng lại lần nạp trước nếu không có gì đổi (reuse)")
def reuse_load(results, cfg: Config, school_year: str, period: str, run_id: str):
    """The last load's outcome when every file and the collection are as that load saw them
    (edustat.incremental); None: cast, validate and load as usual."""
    from edustat.incremental import unchanged_outcome

    outcome = unchanged_outcome(results, cfg, school_year, period, run_id)
    if outcome is not None:
        run_log().info("Không tệp nào thay đổi so với lần nạp trước (%d tệp): không ghép, kiểm tra và nạp lại; "
                       "dữ liệu đã nạp giữ nguyên", len(results))
    return outcome


@task(name="phản hồi cho trường (feedback)")
def feedback(outcome, results, cfg: Config):
    """The feedback workbooks planned and their writing started in worker processes; they are
    written while the forms are built and waited for by `feedback_written`."""
    faults.point("feedback")
    with store.session(cfg.db_path, cfg.private_group) as con:
        work = pipeline.start_feedbacks(con, outcome, results, cfg)
    if work.pool is not None:
        run_log().info("Bắt đầu ghi %d tệp phản hồi (ghi song song trong khi lập biểu)", len(work.jobs))
    return work


@task(name="phản hồi cho trường: chờ ghi xong (feedback written)")
def feedback_written(work, outcome, cfg: Config):
    with store.session(cfg.db_path, cfg.private_group) as con:
        paths = pipeline.finish_feedbacks(con, work, outcome)
    written = len(paths) if outcome.feedback_written is None else outcome.feedback_written
    run_log().info("Đã ghi %d tệp phản hồi trong %.1f s vào %s (%d tệp không đổi, giữ nguyên)", written,
                   time.perf_counter() - work.started, cfg.feedback_dir / outcome.school_year / outcome.period,
                   len(paths) - written)
    return paths


@task(name="lập biểu báo cáo TT 24/2018 (report forms)")
def build_forms(cfg: Config, school_year: str, period: str, school: str | None = None, forms: list[str] | None = None,
                rebuild: bool = False, certified_only: bool | None = None):
    from edustat import formbuild

    faults.point("forms")
    t0 = time.perf_counter()
    # incremental: only the scopes whose data changed are rendered again (edustat.incremental)
    incremental = cfg.incremental and not rebuild and school is None and forms is None
    with store.session(cfg.db_path, cfg.private_group) as con:
        # recorded with the version of each school's data it used (edustat.formbuild: exact rebuilds)
        result = formbuild.build(con, cfg, school_year, period, school=school, forms=forms,
                                 certified_only=certified_only, incremental=incremental)
    if getattr(result, "skipped", False):
        run_log().info("Biểu báo cáo không đổi (dữ liệu đã nạp không đổi từ lần lập trước): không lập lại; "
                       "%d phép kiểm tra, %d không đạt", result.checks, result.failed_checks)
        return result
    if getattr(result, "scopes", None):
        run_log().info("Lập lại biểu cho %d phạm vi có dữ liệu thay đổi (toàn đơn vị và %d trường)",
                       len(result.scopes), len(result.scopes) - 1)
    run_log().info("Đã lập %d tệp biểu (%s) trong %.1f s: %d ô, %d phép kiểm tra, %d không đạt", len(result.files),
                   ", ".join(result.forms) or "không có biểu", time.perf_counter() - t0, result.cells, result.checks,
                   result.failed_checks)
    pipeline.share_outputs(cfg.reports_dir)
    return result


@task(name="công bố bản sao cho phân tích (publish)", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_unless_operator_fault)
def publish_snapshot(cfg: Config):
    from edustat.publish import publish, salt_for

    faults.point("publish")
    with store.session(cfg.db_path, cfg.private_group) as con:
        if cfg.incremental:
            from edustat.incremental import publish_if_changed

            result, _ = publish_if_changed(con, cfg, salt_for(cfg))
            if result is None:
                run_log().info("Không công bố lại bản sao cho phân tích: dữ liệu không đổi từ lần công bố trước (%s)",
                               cfg.published_dir)
                return None
        else:
            result = publish(con, cfg.published_dir, salt=salt_for(cfg),
                             pseudonymise=cfg.pseudonymise_published)
    run_log().info("Đã công bố bản sao cho phân tích trong %.1f s: %d bảng, %s dòng → %s", result.seconds,
                   len(result.tables), f"{sum(result.tables.values()):,}", result.snapshot)
    pipeline.share_outputs(cfg.published_dir)
    return result


@task(name="khóa kỳ thu thập (close the collection)")
def close_collection(cfg: Config, school_year: str, period: str) -> dict:
    """The officer's `close_after`: after this run, files change nothing until reopened."""
    from edustat import period_lock as period_

    with store.session(cfg.db_path, cfg.private_group) as con:
        if period_.state(con, school_year, period) == "closed":
            run_log().info("Kỳ %s %s đã khóa từ trước", school_year, period)
            return period_.state_row(con, school_year, period)
        done = period_.close(con, school_year, period, period_.who(), "khóa sau lần chạy (close_after)")
    run_log().info("Đã khóa kỳ %s %s: tệp đến sau sẽ được giữ lại là 'nộp muộn'", school_year, period)
    return done


@task(name="tổng kết (summary)")
def summarise(outcome, cfg: Config, feedback_paths, reports, published=None) -> dict:
    faults.point("summary")
    with store.session(cfg.db_path, cfg.private_group) as con:
        return pipeline.summary(con, outcome, cfg, reports, published=published.snapshot if published else None)


@task(name="báo cáo cho cán bộ thống kê (artifacts)")
def officer_artifacts(summary: dict, cfg: Config) -> dict:
    """The per-school table, the summary and the charts, under stable keys per collection."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from edustat import officer
    from edustat.store import expected_schools

    faults.point("artifacts")
    year, period = summary["school_year"], summary["period"]
    with store.session(cfg.db_path, cfg.private_group) as con:
        expected = expected_schools(con, year, period, cfg.expected_schools)
        table = officer.school_table(con, year, period, expected)
        previous = officer.previous_summary(con, year, period, summary["run_id"])
        by_grade = officer.learners_by_grade(con, year, period)
    deadline = officer.deadline_for(cfg.deadlines, year, period)
    md = officer.summary_markdown(summary, table, previous, deadline, officer.today_vn(), by_grade)
    # sent in the background (edustat.uicalls), in this task's context: the flow waits for them at its end
    uicalls.later("bảng trạng thái", partial(
        create_table_artifact, officer.table_artifact_rows(table, deadline), key=officer.artifact_key("truong", year, period),
        description=f"Trạng thái từng trường — năm học {year}, kỳ {officer.PERIOD_TEXT[period]}"))
    uicalls.later("tổng kết", partial(
        create_markdown_artifact, md, key=officer.artifact_key("tong-ket", year, period),
        description=f"Tổng kết đợt thu thập {year} {officer.PERIOD_TEXT[period]}"))
    uicalls.later("biểu đồ", partial(
        create_markdown_artifact, officer.charts_markdown(summary, table, by_grade), key=officer.artifact_key("bieu-do", year, period),
        description="Biểu đồ: trường theo trạng thái, học sinh theo khối và giới tính"))
    run_log().info("Đã tạo 3 báo cáo (artifacts) cho cán bộ thống kê: bảng %d trường, tổng kết, biểu đồ", len(table))
    return {"schools": len(table)}


def current_school_year(today=None) -> str:
    """The school year a scheduled run collects: from August a new one starts."""
    today = today or pipeline.dt.datetime.now(pipeline.VN_TZ).date()
    y = today.year if today.month >= 8 else today.year - 1
    return f"{y}-{y + 1}"


@flow(name="edustat-collection", log_prints=True, flow_run_name=_run_name)
def collection_flow(school_year: SchoolYear = "auto", period: Period = "dau_nam", inbox: str | None = None,
                    data_dir: str = "data", config_path: str | None = None, publish: bool = True,
                    forms: bool = True, close_after: bool = False) -> dict:
    """Đợt thu thập: đọc tệp của trường → kiểm tra → nạp → phản hồi → lập biểu → công bố.

    Args:
        school_year: Năm học, ví dụ 2022-2023; "auto" = năm học hiện tại (từ tháng 8 là năm học mới).
        period: Kỳ báo cáo: dau_nam = đầu năm (số liệu ngày 30/9), cuoi_nam = cuối năm (số liệu ngày 31/5).
        inbox: Thư mục chứa các tệp trường đã nộp; để trống = <thư mục dữ liệu>/inbox/<năm học>/<kỳ>.
        data_dir: Thư mục dữ liệu của phòng (raw/, curated/); thường để nguyên.
        config_path: Tệp cấu hình edustat.yaml (danh sách trường, hạn nộp, lịch chạy); để trống nếu không có.
        publish: Cập nhật bản sao cho phân tích (DuckDB + Parquet) sau khi nạp.
        forms: Lập lại các biểu báo cáo TT 24/2018 sau khi nạp.
        close_after: Khóa kỳ sau lần chạy này: tệp đến sau được giữ lại là "nộp muộn", không làm thay đổi số liệu và biểu cho đến khi cán bộ mở lại hoặc nhận tệp.
    """
    cfg = load_config(Path(config_path) if config_path else None, Path(data_dir))
    school_year = _resolved_year(school_year)
    inbox_dir = Path(inbox) if inbox else cfg.data_dir / "inbox" / school_year / period
    inbox_dir.mkdir(parents=True, exist_ok=True) if not inbox else None
    run_id = pipeline.new_run_id()
    with pipeline.sole_writer(cfg):  # one run at a time per data dir; personal data kept private
        prepare(cfg, run_id)
        files = find_submissions(inbox_dir)
        _rename(run_title(school_year, period, files=len(files)))
        if cfg.task_runner == "dask":
            results = read_fanned_out(files, cfg, school_year, period, parts=max(1, cfg.workers * 4))
        else:
            results = read_files(files, cfg, school_year, period)
        outcome = reuse_load(opaque(results), cfg, school_year, period, run_id)
        audited = outcome is not None  # nothing written: the state prepare audited (or found audited)
        if outcome is None:
            frames = cast(opaque(results), cfg)
            issues = validate(opaque(results), opaque(frames), cfg, school_year, period)
            outcome = load(opaque(results), opaque(frames), opaque(issues), cfg, school_year, period, run_id)
            audited = outcome.audited
        outcome.incremental = pipeline.cache_stats(results)
        # the steps from here on follow one another: their sessions share one DuckDB instance
        with store.held(cfg.db_path, cfg.private_group):
            writing = feedback(opaque(outcome), opaque(results), cfg)  # in worker processes, while the forms are built
            # a closed collection changed nothing: its forms stay as built (edustat.period_lock)
            reports = build_forms(cfg, school_year, period) if forms and not outcome.closed else None
            paths = feedback_written(opaque(writing), opaque(outcome), cfg)
            published = publish_snapshot(cfg) if publish else None
            outcome.publish_unchanged = bool(publish and published is None)  # skipped: nothing changed
            summary = summarise(opaque(outcome), cfg, paths, reports, published)
            officer_artifacts(summary, cfg)
            if close_after:
                close_collection(cfg, school_year, period)
        if audited:  # the file as closed: the next run's prepare need not audit it again
            pipeline.record_audited(cfg)
        faults.point("end")
    _rename(run_title(school_year, period, summary["counts"], partial=summary.get("partially_loaded", 0)))
    use = pipeline.process_usage()
    run_log().info("Lần chạy %s xong: %s (tiến trình chạy: CPU %.1f s, bộ nhớ tối đa %d MiB)", run_id,
                   ", ".join(f"{pipeline.STATUS_TEXT[k].lower()} {v}" for k, v in summary["counts"].items()),
                   use["cpu_s"], use["peak_mib"])
    _ui_sent()
    return summary


@flow(name="edustat-reports", log_prints=True,
      flow_run_name=lambda: f"Lập biểu {_run_name()}")
def reports_flow(school_year: SchoolYear = "auto", period: Period = "dau_nam", data_dir: str = "data",
                 config_path: str | None = None, school: str | None = None, publish: bool = True,
                 forms: list[str] | None = None, certified_only: bool | None = None) -> dict:
    """Lập lại các biểu báo cáo TT 24/2018 từ dữ liệu đã nạp (không kiểm tra lại).

    Args:
        school_year: Năm học, ví dụ 2022-2023; "auto" = năm học hiện tại.
        period: Kỳ báo cáo: dau_nam = đầu năm (30/9), cuoi_nam = cuối năm (31/5).
        data_dir: Thư mục dữ liệu của phòng; thường để nguyên.
        config_path: Tệp cấu hình edustat.yaml; để trống nếu không có.
        school: Mã trường (8 chữ số) nếu chỉ lập lại biểu của một trường; để trống = mọi trường.
        publish: Cập nhật bản sao cho phân tích sau khi lập biểu.
        forms: Chỉ lập các biểu này (vd 02-TH-DN); để trống = mọi biểu của kỳ.
        certified_only: Chỉ tính các trường đã được hiệu trưởng xác nhận số liệu; để trống = theo cấu hình.
    """
    cfg = load_config(Path(config_path) if config_path else None, Path(data_dir))
    school_year = _resolved_year(school_year)
    with pipeline.sole_writer(cfg):
        result = build_forms(cfg, school_year, period, school, forms, rebuild=True,  # asked for: all of it
                             certified_only=certified_only)
        if publish:
            publish_snapshot(cfg)
    return {"forms": result.forms, "files": [str(p) for p in result.files], "cells": result.cells,
            "checks": result.checks, "failed_checks": result.failed_checks,
            "reports_dir": str(cfg.reports_dir / school_year / period), "build_id": getattr(result, "build_id", None)}
