"""The collection flow: school workbooks in, trusted DuckDB and feedback out.

Reads top to bottom as the recipe: find submissions → read and check structure → validate
rows and cross-rows → load (write–audit–publish: stage, audit, swap the accepted versions in)
→ feedback to each school → publish the analysts' snapshot. Business logic lives in
`edustat/`; this module only orders the steps and owns the connection.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from edustat import pipeline, store
from edustat.collect import discover
from edustat.config import Config, load_config


@task(name="tìm tệp nộp (find submissions)", retries=1, retry_delay_seconds=2)
def find_submissions(inbox: Path) -> list[Path]:
    return discover(inbox)


@task(name="đọc và kiểm tra cấu trúc (read + structure)")
def read_files(files: list[Path], cfg: Config, school_year: str, period: str):
    return pipeline.ingest_all(files, cfg, school_year, period)


@task(name="kiểm tra dữ liệu (validate, Great Expectations)")
def validate(results, cfg: Config, school_year: str, period: str):
    return pipeline.validate_all(results, cfg, school_year, period)


@task(name="nạp DuckDB (load)", retries=2, retry_delay_seconds=5)
def load(results, issues, cfg: Config, school_year: str, period: str, run_id: str):
    con = store.connect(cfg.db_path)
    try:
        return pipeline.load_all(con, results, issues, cfg, school_year, period, run_id)
    finally:
        con.close()


@task(name="phản hồi cho trường (feedback)")
def feedback(outcome, results, cfg: Config):
    con = store.connect(cfg.db_path)
    try:
        return pipeline.write_feedbacks(con, outcome, results, cfg)
    finally:
        con.close()


@task(name="công bố bản sao cho phân tích (publish)", retries=2, retry_delay_seconds=5)
def publish_snapshot(cfg: Config):
    from edustat.publish import load_or_create_salt, publish

    con = store.connect(cfg.db_path)
    try:
        return publish(con, cfg.published_dir, salt=load_or_create_salt(cfg.salt_path),
                       pseudonymise=cfg.pseudonymise_published)
    finally:
        con.close()


@task(name="tổng kết (summary)")
def summarise(outcome, cfg: Config, feedback_paths) -> dict:
    con = store.connect(cfg.db_path)
    try:
        return pipeline.summary(con, outcome, cfg)
    finally:
        con.close()


@flow(name="edustat-collection", log_prints=True)
def collection_flow(school_year: str, period: str, inbox: str, data_dir: str = "data",
                    config_path: str | None = None, publish: bool = True) -> dict:
    """Run one collection (năm học × kỳ) over every workbook in `inbox`."""
    cfg = load_config(Path(config_path) if config_path else None, Path(data_dir))
    run_id = pipeline.new_run_id()
    files = find_submissions(Path(inbox))
    results = read_files(files, cfg, school_year, period)
    issues = validate(results, cfg, school_year, period)
    outcome = load(results, issues, cfg, school_year, period, run_id)
    paths = feedback(outcome, results, cfg)
    if publish:
        publish_snapshot(cfg)
    summary = summarise(outcome, cfg, paths)
    get_run_logger().info("run %s: %s", run_id, summary["counts"])
    return summary
