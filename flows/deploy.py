"""Deployments and schedules of the collection flows, served against a real Prefect server.

Schedules come from config (`schedules:`), in Asia/Ho_Chi_Minh time. By default, during each
collection window a nightly run gives schools feedback by morning, and a final run follows
the deadline: start of year (October; deadline 30/10), the mid-year review the office's
guidance names (January; it re-runs the start-of-year collection on updated files), end of
year (June; deadline 30/6).
"""
from __future__ import annotations

from typing import Any, Mapping

from prefect.schedules import Cron

from edustat.config import Config

TIMEZONE = "Asia/Ho_Chi_Minh"
DEFAULT_SCHEDULES: dict[str, Any] = {
    "timezone": TIMEZONE,
    "collections": {
        "dau_nam": {"nightly": ["0 1 * 10 *", "0 1 * 1 *"], "final": ["0 6 31 10 *", "0 6 24 1 *"]},
        "cuoi_nam": {"nightly": ["0 1 * 6 *"], "final": ["0 6 1 7 *"]},
    },
}


def schedule_config(cfg: Config) -> dict[str, Any]:
    merged = dict(DEFAULT_SCHEDULES)
    merged.update(cfg.schedules or {})
    return merged


def schedules_for(cfg: Config) -> list[Cron]:
    """Every cron of the config as a Prefect schedule carrying its period."""
    conf = schedule_config(cfg)
    tz = conf.get("timezone", TIMEZONE)
    out = []
    for period, kinds in conf["collections"].items():
        for kind, crons in kinds.items():
            for cron in [crons] if isinstance(crons, str) else crons:
                out.append(Cron(cron, timezone=tz, parameters={"period": period, "school_year": "auto"},
                                slug=f"{period.replace('_', '-')}-{kind}-{cron.replace(' ', '-').replace('*', 'x')}"))
    return out


def served_flows(cfg: Config, data_dir: str, config_path: str | None = None) -> list[tuple]:
    """(flow, deployment settings): the collection (scheduled + on demand) and the report
    rebuild (on demand)."""
    from flows.collect import collection_flow, reports_flow, task_runner

    base: Mapping[str, Any] = {"data_dir": data_dir, "config_path": config_path}
    runner = task_runner(cfg)
    collection = collection_flow.with_options(task_runner=runner) if runner else collection_flow
    return [
        (collection, dict(
            name="thu-thap", schedules=schedules_for(cfg),
            parameters={**base, "school_year": "auto", "period": "dau_nam", "close_after": False},
            description="Đợt thu thập: đọc tệp của trường → kiểm tra → nạp → phản hồi → lập biểu → công bố. "
                        "Chạy tay: chọn năm học (vd 2022-2023), kỳ (dau_nam / cuoi_nam) và thư mục tệp nộp; "
                        "close_after = khóa kỳ sau lần chạy (tệp đến sau là 'nộp muộn').",
            tags=["edustat"])),
        (reports_flow, dict(
            name="lap-bieu", parameters={**base, "school_year": "auto", "period": "dau_nam"},
            description="Lập lại các biểu báo cáo TT 24/2018 từ dữ liệu đã nạp (toàn thành phố hoặc một trường).",
            tags=["edustat"])),
    ]


def deployments(cfg: Config, data_dir: str, config_path: str | None = None) -> list:
    """The served flows as Prefect deployments (to register without serving them)."""
    return [f.to_deployment(**settings) for f, settings in served_flows(cfg, data_dir, config_path)]


# How often the serving process asks the server for runs to start: a run the officer starts from
# the UI begins within this many seconds (Prefect's default is 10), half of it on average. A query
# to a local server is cheap: polling every 1 s rather than 2 s cost the server +0.65 % of a core
# and the serving process +0.1 % (measured, 1 Dec 2026, shared machine), for 0.5 s less waiting
# on average per run.
QUERY_SECONDS = 1


def serve(cfg: Config, data_dir: str, config_path: str | None = None, warm: bool = True) -> None:
    """Serve the deployments until interrupted (needs PREFECT_API_URL of a running server).

    The runner holds the flows themselves (Runner.add_flow), so it starts a run from the flow in
    memory rather than a new `python -m prefect.engine` that imports everything again; with
    `warm`, each run is forked from a process that has already imported edustat and its
    libraries (edustat.warm)."""
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    if warm:
        from edustat import warm as warm_start

        why_not = warm_start.install()
        if why_not:
            print(f"Các lần chạy khởi động nguội (không nạp sẵn thư viện): {why_not}", flush=True)
            warm = False
        else:
            warm_start.start()
    runner = Runner(name="edustat", pause_on_shutdown=True, query_seconds=QUERY_SECONDS)
    names = []
    for f, settings in served_flows(cfg, data_dir, config_path):
        runner.add_flow(f, **settings)
        names.append(f"{f.name}/{settings['name']}")
    print("Đang phục vụ các lần chạy: " + ", ".join(names)
          + (" (khởi động nóng: thư viện đã nạp sẵn)" if warm else " (mỗi lần chạy tự nạp thư viện)"), flush=True)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal):
        print("Đã dừng phục vụ.", flush=True)
