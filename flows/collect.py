"""The collection flow: school workbooks in, trusted DuckDB and feedback out.

Reads top to bottom as the recipe: (one writer: take the data dir's lock; clean what a killed
run left; check the register against core) → find submissions → read and check structure →
validate rows and cross-rows → load (write–audit–publish: stage, audit, swap the accepted
versions in, in one transaction) → feedback to each school → the Circular 24/2018 forms →
publish the analysts' snapshot. Business logic lives in `edustat/`; this module only orders
the steps and owns the connection.

Every task Prefect may retry is idempotent (the load is one transaction that replaces its
files' rows; publish swaps finished files in); faults a retry cannot fix (full disk,
read-only directory, another run) are not retried. `faults.point` marks where the
fault-injection tests crash or fail a run.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped

from edustat import faults, pipeline, store
from edustat.collect import discover
from edustat.config import Config, load_config


def retry_unless_operator_fault(task, task_run, state) -> bool:
    """Retry what may pass; not a full disk, a read-only directory or another run."""
    exc = state.data if isinstance(state.data, BaseException) else None
    return exc is None or not pipeline.is_operator_fault(exc)


@task(name="chuẩn bị: dọn tệp tạm, đối chiếu sổ đăng ký (prepare)")
def prepare(cfg: Config, run_id: str) -> dict:
    """Temp files of a killed run removed; register vs core checked (repaired or refused)."""
    removed = pipeline.clean_temp_files(cfg)
    if not cfg.db_path.exists():
        return {"removed": len(removed), "repaired": 0}
    with store.session(cfg.db_path, cfg.private_group) as con:
        repaired = pipeline.check_consistency(con, cfg, run_id)
    return {"removed": len(removed), "repaired": int(repaired["school_code"].nunique()) if len(repaired) else 0}


@task(name="tìm tệp nộp (find submissions)", retries=1, retry_delay_seconds=2,
      retry_condition_fn=retry_unless_operator_fault)
def find_submissions(inbox: Path) -> list[Path]:
    faults.point("find")
    return discover(inbox)


@task(name="đọc và kiểm tra cấu trúc (read + structure)")
def read_files(files: list[Path], cfg: Config, school_year: str, period: str):
    faults.point("read")
    return pipeline.ingest_all(files, cfg, school_year, period)


@task(name="đọc một nhóm tệp (read a batch)")
def read_batch(files: list[Path], cfg: Config, school_year: str, period: str):
    return pipeline.ingest_files(files, cfg, school_year, period)


def read_fanned_out(files: list[Path], cfg: Config, school_year: str, period: str, parts: int):
    """Reading as one task per batch of files, submitted to the flow's task runner (Dask)."""
    batches = [files[i::parts] for i in range(parts) if files[i::parts]]
    futures = read_batch.map(batches, cfg=unmapped(cfg), school_year=unmapped(school_year), period=unmapped(period))
    return pipeline.settle([fr for f in futures for fr in f.result()], cfg)


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
    return pipeline.assemble_all(results, cfg)


@task(name="kiểm tra dữ liệu (validate, Great Expectations)")
def validate(results, frames, cfg: Config, school_year: str, period: str):
    faults.point("validate")
    return pipeline.validate_all(results, cfg, school_year, period, frames)


@task(name="nạp DuckDB (load)", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_unless_operator_fault)
def load(results, frames, issues, cfg: Config, school_year: str, period: str, run_id: str):
    faults.point("load")
    with store.session(cfg.db_path, cfg.private_group) as con:
        return pipeline.load_all(con, results, issues, cfg, school_year, period, run_id, frames=frames)


@task(name="phản hồi cho trường (feedback)")
def feedback(outcome, results, cfg: Config):
    faults.point("feedback")
    with store.session(cfg.db_path, cfg.private_group) as con:
        return pipeline.write_feedbacks(con, outcome, results, cfg)


@task(name="lập biểu báo cáo TT 24/2018 (report forms)")
def build_forms(cfg: Config, school_year: str, period: str, school: str | None = None):
    from edustat.reports import build_reports

    faults.point("forms")
    with store.session(cfg.db_path, cfg.private_group) as con:
        result = build_reports(con, cfg.reports_dir, school_year, period, school=school, workers=cfg.workers)
    pipeline.share_outputs(cfg.reports_dir)
    return result


@task(name="công bố bản sao cho phân tích (publish)", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_unless_operator_fault)
def publish_snapshot(cfg: Config):
    from edustat.publish import load_or_create_salt, publish

    faults.point("publish")
    with store.session(cfg.db_path, cfg.private_group) as con:
        result = publish(con, cfg.published_dir, salt=load_or_create_salt(cfg.salt_path),
                         pseudonymise=cfg.pseudonymise_published)
    pipeline.share_outputs(cfg.published_dir)
    return result


@task(name="tổng kết (summary)")
def summarise(outcome, cfg: Config, feedback_paths, reports) -> dict:
    faults.point("summary")
    with store.session(cfg.db_path, cfg.private_group) as con:
        return pipeline.summary(con, outcome, cfg, reports)


@task(name="báo cáo cho cán bộ thống kê (artifacts)")
def officer_artifacts(summary: dict, cfg: Config) -> dict:
    """The per-school table, the summary and the charts, under stable keys per collection."""
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

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
    chart = officer.charts_html(cfg.curated_dir / "charts" / year / period / f"{summary['run_id']}.html", summary, table, by_grade)
    create_table_artifact(officer.table_artifact_rows(table), key=officer.artifact_key("truong", year, period),
                          description=f"Trạng thái từng trường — năm học {year}, kỳ {officer.PERIOD_TEXT[period]}")
    create_markdown_artifact(md, key=officer.artifact_key("tong-ket", year, period),
                             description=f"Tổng kết đợt thu thập {year} {officer.PERIOD_TEXT[period]}")
    create_link_artifact(chart.resolve().as_uri(), link_text="Biểu đồ (mở trong trình duyệt)",
                         key=officer.artifact_key("bieu-do", year, period), description="Học sinh theo khối, trường theo trạng thái")
    return {"chart": str(chart), "schools": len(table)}


def current_school_year(today=None) -> str:
    """The school year a scheduled run collects: from August a new one starts."""
    today = today or pipeline.dt.datetime.now(pipeline.VN_TZ).date()
    y = today.year if today.month >= 8 else today.year - 1
    return f"{y}-{y + 1}"


@flow(name="edustat-collection", log_prints=True)
def collection_flow(school_year: str = "auto", period: str = "dau_nam", inbox: str | None = None,
                    data_dir: str = "data", config_path: str | None = None, publish: bool = True,
                    forms: bool = True) -> dict:
    """Run one collection (năm học × kỳ) over every workbook in `inbox` (default
    `<data_dir>/inbox/<school year>/<period>`; school year "auto" = the current one)."""
    cfg = load_config(Path(config_path) if config_path else None, Path(data_dir))
    if school_year == "auto":
        school_year = current_school_year()
    inbox_dir = Path(inbox) if inbox else cfg.data_dir / "inbox" / school_year / period
    inbox_dir.mkdir(parents=True, exist_ok=True) if not inbox else None
    run_id = pipeline.new_run_id()
    with pipeline.sole_writer(cfg):  # one run at a time per data dir; personal data kept private
        prepare(cfg, run_id)
        files = find_submissions(inbox_dir)
        if cfg.task_runner == "dask":
            results = read_fanned_out(files, cfg, school_year, period, parts=max(1, cfg.workers * 4))
        else:
            results = read_files(files, cfg, school_year, period)
        frames = cast(results, cfg)
        issues = validate(results, frames, cfg, school_year, period)
        outcome = load(results, frames, issues, cfg, school_year, period, run_id)
        paths = feedback(outcome, results, cfg)
        reports = build_forms(cfg, school_year, period) if forms else None
        if publish:
            publish_snapshot(cfg)
        summary = summarise(outcome, cfg, paths, reports)
        officer_artifacts(summary, cfg)
        faults.point("end")
    get_run_logger().info("run %s: %s", run_id, summary["counts"])
    return summary


@flow(name="edustat-reports", log_prints=True)
def reports_flow(school_year: str = "auto", period: str = "dau_nam", data_dir: str = "data",
                 config_path: str | None = None, school: str | None = None, publish: bool = True) -> dict:
    """Rebuild the report forms of a collection from the curated data (no re-validation)."""
    cfg = load_config(Path(config_path) if config_path else None, Path(data_dir))
    if school_year == "auto":
        school_year = current_school_year()
    with pipeline.sole_writer(cfg):
        result = build_forms(cfg, school_year, period, school)
        if publish:
            publish_snapshot(cfg)
    return {"forms": result.forms, "files": [str(p) for p in result.files], "cells": result.cells,
            "checks": result.checks, "failed_checks": result.failed_checks,
            "reports_dir": str(cfg.reports_dir / school_year / period)}
