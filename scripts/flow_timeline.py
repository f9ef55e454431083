"""The timeline of one flow run as the Prefect server recorded it: when the run started, each
task's start and end, the gaps between tasks, and the run's end (the time around and between
the stages, which no task wall shows).

    PREFECT_API_URL=http://127.0.0.1:PORT/api python scripts/flow_timeline.py [RUN_ID] [--logs]

Without RUN_ID: the server's latest flow run. Prints a table and, last, one JSON line
(`between_s`: the run's wall minus the sum of its task walls).
"""
from __future__ import annotations

import argparse
import json
import re


def timeline(run_id: str | None = None, logs: bool = False) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort, LogSort

    with get_client(sync_client=True) as c:
        run = c.read_flow_run(run_id) if run_id else c.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        trs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        states = c.read_flow_run_states(run.id)
        lines = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])),
                            sort=LogSort.TIMESTAMP_ASC, limit=200) if logs else []
    t0 = run.start_time
    rows, prev_end, busy = [], t0, 0.0
    for tr in sorted((t for t in trs if t.start_time and t.end_time), key=lambda t: t.start_time):
        name = re.sub(r"^.*\((.*)\)$", r"\1", tr.name.rsplit("-", 1)[0])
        start, end = (tr.start_time - t0).total_seconds(), (tr.end_time - t0).total_seconds()
        rows.append({"task": name, "start": round(start, 3), "end": round(end, 3), "wall": round(end - start, 3),
                     "gap_before": round((tr.start_time - prev_end).total_seconds(), 3)})
        busy += end - start
        prev_end = max(prev_end, tr.end_time)
    wall = (run.end_time - t0).total_seconds()
    out = {"run": str(run.id), "name": run.name, "wall_s": round(wall, 3), "tasks_s": round(busy, 3),
           "between_s": round(wall - busy, 3), "after_last_task_s": round((run.end_time - prev_end).total_seconds(), 3),
           "pickup_s": round((t0 - run.created).total_seconds(), 3), "tasks": rows,
           # the pickup: created → the runner's Pending (its poll) → the run's process proposes Running
           "states": [(s.name, round((s.timestamp - run.created).total_seconds(), 3))
                      for s in sorted(states, key=lambda s: s.timestamp)]}
    if logs:
        out["logs"] = [(round((lg.timestamp - t0).total_seconds(), 3), lg.message[:100]) for lg in lines]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_id", nargs="?")
    ap.add_argument("--logs", action="store_true")
    a = ap.parse_args()
    out = timeline(a.run_id, a.logs)
    for r in out["tasks"]:
        print(f"{r['start']:7.3f} → {r['end']:7.3f}  {r['wall']:6.3f} s  (gap {r['gap_before']:6.3f})  {r['task']}")
    for t, m in out.get("logs", []):
        print(f"  log {t:7.3f}  {m}")
    print(f"wall {out['wall_s']} s, tasks {out['tasks_s']} s, between {out['between_s']} s, "
          f"after the last task {out['after_last_task_s']} s")
    print(json.dumps({k: v for k, v in out.items() if k not in ("tasks", "logs")}, ensure_ascii=False))


if __name__ == "__main__":
    main()
