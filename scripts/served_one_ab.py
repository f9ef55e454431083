"""The served city run with ONE school changed, repo A against repo B, alternating (issue 12):

    python scripts/served_one_ab.py --ref /work/bench-ref/city/work --dir /tmp/ab \
        --repo base=/work/x-base --repo head=/work/x [--pairs 5] [--timeline]

Per repo: its own copy of REF's data/ and inbox/ (never written), its own Prefect server and
`edustat serve` (the repo's .venv, runs forked warm). One run with nothing changed first (the
copied database is audited once); then each round re-sends the same school in every repo's
inbox (`bench.change_one_school`: one more learner row deleted) and triggers a run of each repo
in turn through the API, alternating which goes first. Prints each run's wall (start to end on
the server), its CPU as the run logs it (the run's process and its children), its tasks'
walls, the time between tasks, and the load; then each repo's medians; last, one JSON line with
every run. With --timeline, each run's task timeline (scripts/flow_timeline.py). The first run
on a copy also redoes whatever REF's cache does not hold for the repo's code (another code
digest: everything), so only the rounds after it are compared. Asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "GX_ANALYTICS_ENABLED": "False",
         "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}
USAGE = re.compile(r"CPU ([0-9.]+) s, bộ nhớ tối đa ([0-9]+) MiB")
YEAR, PERIOD = "2022-2023", "dau_nam"


class Side:
    def __init__(self, tag: str, repo: Path, ref: Path, work: Path):
        from edustat.procs import start_prefect_server, wait_healthy

        self.tag, self.repo = tag, repo
        self.inbox, self.data = work / tag / "inbox", work / tag / "data"
        shutil.rmtree(work / tag, ignore_errors=True)
        shutil.copytree(ref / "inbox", self.inbox, ignore=shutil.ignore_patterns(".params", "manifest.json"))
        shutil.copytree(ref / "data", self.data)
        for p in [self.inbox, self.data, *self.inbox.rglob("*"), *self.data.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)  # the reference is read-only; its copy is ours
        home = work / tag / "prefect-home"
        home.mkdir(parents=True)
        self.server, self.url, senv = start_prefect_server(home, ui=False)
        if not wait_healthy(self.url, 120):
            from edustat.procs import stop_group

            stop_group(self.server)
            raise SystemExit(f"{tag}: the Prefect server did not start")
        env = dict(senv, **QUIET, PREFECT_LOGGING_LEVEL="INFO")
        self.log = open(work / tag / "serve.log", "wb")
        self.serve = subprocess.Popen([str(repo / ".venv" / "bin" / "edustat"), "serve", "--data-dir", str(self.data)],
                                      env=env, cwd=repo, stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def run(self) -> dict:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.url}):
            return self._run()

    def _run(self) -> dict:
        import bench
        from flow_timeline import timeline
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
        from prefect.client.schemas.sorting import LogSort

        with get_client(sync_client=True) as c:
            dep = bench.served_deployment(c, self.serve, f"{self.tag}: edustat serve did not register its deployment")
            load0 = os.getloadavg()[0]
            run = c.create_flow_run_from_deployment(dep.id, parameters={
                "school_year": YEAR, "period": PERIOD, "inbox": str(self.inbox), "data_dir": str(self.data)})
            while True:
                run = c.read_flow_run(run.id)
                if run.state and run.state.is_final():
                    break
                time.sleep(0.1)
            use, until = None, time.monotonic() + 15
            while use is None and time.monotonic() < until:
                logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])),
                                   sort=LogSort.TIMESTAMP_DESC, limit=20)
                use = next((USAGE.search(lg.message) for lg in logs if USAGE.search(lg.message)), None)
                time.sleep(0.2 if use is None else 0)
        tl = timeline(str(run.id))
        return {"tag": self.tag, "state": run.state.type.value, "wall_s": tl["wall_s"],
                "cpu_s": float(use.group(1)) if use else None, "between_s": tl["between_s"],
                "tasks": {t["task"]: t["wall"] for t in tl["tasks"]}, "timeline": tl["tasks"],
                "load": round(load0, 2)}

    def stop(self) -> None:
        from edustat.procs import stop_group

        stop_group(self.serve, signal.SIGINT)
        stop_group(self.server)
        self.log.close()


def medians(tag: str, runs: list[dict]) -> str:
    """One line: the medians of `tag`'s runs (wall, CPU, between tasks, each task's wall)."""
    mine = [r for r in runs if r["tag"] == tag]
    if not mine:
        return f"{tag}: no run"
    cpu = [r["cpu_s"] for r in mine if r["cpu_s"] is not None]
    return (f"{tag}: over {len(mine)} runs, medians: wall {statistics.median(r['wall_s'] for r in mine):.2f} s, "
            f"cpu {statistics.median(cpu) if cpu else float('nan'):.2f} s, "
            f"between tasks {statistics.median(r['between_s'] for r in mine):.2f} s; tasks (wall s): "
            + ", ".join(f"{k} {statistics.median(r['tasks'].get(k, 0) for r in mine):.2f}" for k in mine[0]["tasks"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", type=Path, default=Path("/work/bench-ref/city/work"))
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--repo", action="append", required=True, help="TAG=PATH (one or two)")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--timeline", action="store_true")
    args = ap.parse_args()
    os.environ.update(QUIET)
    import bench

    sides: list[Side] = []
    runs: list[dict] = []
    try:
        for spec in args.repo:
            tag, path = spec.split("=", 1)
            sides.append(Side(tag, Path(path).resolve(), args.ref, args.dir))
        for s in sides:
            r = s.run()
            print(f"{s.tag} nothing changed (first run on the copy): {r['state']} wall {r['wall_s']} s cpu {r['cpu_s']} s",
                  flush=True)
        for i in range(args.pairs):
            for s in sides:
                bench.change_one_school(s.inbox)
            order = sides if i % 2 == 0 else sides[::-1]
            for s in order:
                r = s.run()
                r["round"] = i
                runs.append(r)
                tasks = ", ".join(f"{k} {v:.2f}" for k, v in r["tasks"].items())
                print(f"[{i}] {s.tag:<6} {r['state']} wall {r['wall_s']:.2f} s cpu {r['cpu_s']} s "
                      f"between {r['between_s']:.2f} s load {r['load']} | {tasks}", flush=True)
                if args.timeline:
                    for t in r["timeline"]:
                        print(f"      {t['task']:<32} {t['start']:7.3f} {t['end']:7.3f} {t['wall']:6.3f} gap {t['gap_before']:6.3f}")
    finally:
        for s in sides:
            s.stop()
    for s in sides:
        print(medians(s.tag, runs))
    print(json.dumps([{k: v for k, v in r.items() if k != "timeline"} for r in runs], ensure_ascii=False))


if __name__ == "__main__":
    main()
