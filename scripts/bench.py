"""`make bench`: one run, one table, the same data for every line (issue 12 item 4).

    python scripts/bench.py [--only city|province] [--scenarios floor,obvious,cold,warm,one,dask]
                            [--workers 2] [--dir build/bench] [--no-prefect-startup]

Scenarios (each in its own child process, so wall, CPU and peak memory are per scenario):
  floor    the read floor: fastexcel (calamine) reading every cell of every sheet, nothing else
  obvious  scripts/obvious.py: pandas.read_excel + row-by-row checks + openpyxl outputs
  cold     `edustat run` on a fresh data dir (the real CLI → the Prefect flow)
  warm     `edustat run` again, nothing changed
  one      `edustat run` again after one school's file changed (one learner row deleted)
  dask     `edustat run` cold with `task_runner: dask` (a local cluster of --workers processes)
  served   the officer's path: `edustat serve` (started once, runs forked warm: edustat.warm)
           and three runs triggered through the API as from the UI: cold, nothing changed, one
           school changed
  served-cold  the same with `edustat serve --cold-start` (each run starts a new interpreter)

edustat runs talk to a Prefect server started once for the bench (edustat.procs); Prefect's own
start-up is measured apart: the server's start until healthy, and a trivial flow against an
ephemeral (temporary) server vs against the running one.

CPU s = user + system of the scenario's process tree (os.wait4); peak = the largest single
process (ru_maxrss) and the sum over the tree sampled every 0.1 s (psutil); server CPU = what the
Prefect server spent during the scenario. Served runs: wall = the run's start to its end on the
server (its wait to be picked up is printed apart); CPU and peak = what the run's own process and
its children used, as the flow logs it at its end (a served run is a fresh process). The load average before and after is printed with every
line: the machine may be shared. Results: <dir>/results.json (one entry per size, appended to
the file's `runs`). Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIZES = {"city": 100, "province": 730, "smoke": 4}  # smoke: a quick check of the bench itself
ALL = ["floor", "obvious", "cold", "warm", "one", "dask", "served", "served-cold"]
DEFAULT = {"city": ["floor", "obvious", "cold", "warm", "one", "served", "served-cold"],
           "province": ["floor", "cold", "warm", "one", "served"],
           "smoke": ["floor", "obvious", "cold", "warm", "one"]}
YEAR, PERIOD = "2022-2023", "dau_nam"
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "GX_ANALYTICS_ENABLED": "False",
         "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}

# ---------------------------------------------------------------------------------------
# Children
# ---------------------------------------------------------------------------------------

def child_floor(inbox: Path) -> None:
    """The fastest reader reading every cell of every sheet, nothing else."""
    import fastexcel

    cells = 0
    for f in sorted(inbox.glob("*.xlsx")):
        r = fastexcel.read_excel(str(f))
        for name in r.sheet_names:
            tbl = r.load_sheet(name, header_row=None, dtypes="string", skip_rows=0).to_arrow()
            cells += tbl.num_rows * tbl.num_columns
    print(json.dumps({"cells": cells}))


def child_flow() -> None:
    """A trivial Prefect flow: what Prefect costs before any work (import, server, flow run)."""
    from prefect import flow

    @flow
    def nothing() -> int:
        return 1

    t = time.perf_counter()
    nothing()
    print(json.dumps({"flow_s": time.perf_counter() - t}))


# ---------------------------------------------------------------------------------------
# Measuring a child
# ---------------------------------------------------------------------------------------

def _tree(pid: int):
    import psutil

    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.Error:
        return []


def _tree_cpu(pid: int) -> float:
    import psutil

    total = 0.0
    for p in _tree(pid):
        try:
            c = p.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return total


def measure(cmd: list[str], env: dict | None = None, server_pid: int | None = None, cwd: Path = ROOT) -> dict:
    """Run `cmd`; wall, CPU (tree), peak RSS (largest process and sampled tree sum), stdout."""
    import psutil

    load0 = os.getloadavg()
    server0 = _tree_cpu(server_pid) if server_pid else 0.0
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err)
    peak_sum = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss = 0
            for p in _tree(proc.pid):
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            peak_sum[0] = max(peak_sum[0], rss)
            done.wait(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    done.set()
    th.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    return {"wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "peak_mib": round(ru.ru_maxrss / 1024), "peak_tree_mib": round(peak_sum[0] / 2**20),
            "server_cpu_s": round(_tree_cpu(server_pid) - server0, 2) if server_pid else None,
            "rc": proc.returncode, "load_before": round(load0[0], 2), "load_after": round(os.getloadavg()[0], 2),
            "stdout": stdout, "stderr": stderr}


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}


def child_stages(run_id: str | None = None) -> None:
    """Seconds per task of the server's latest flow run, or of `run_id` (the flow's own tasks:
    read, cast, …)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as c:
        runs = ([c.read_flow_run(run_id)] if run_id else c.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1))
        if not runs:
            return print("{}")
        trs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs[0].id])))
    out = {}
    for tr in sorted(trs, key=lambda t: t.start_time or t.expected_start_time):
        if tr.start_time and tr.end_time:
            name = re.sub(r"^.*\((.*)\)$", r"\1", tr.name.rsplit("-", 1)[0])  # "… (read + structure)-abc" → "read + structure"
            out[name] = round(out.get(name, 0) + (tr.end_time - tr.start_time).total_seconds(), 2)
    print(json.dumps({"flow_s": round(runs[0].total_run_time.total_seconds(), 2), "tasks": out}))


# ---------------------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------------------

def ensure_data(kind: str, base: Path, workers: int) -> Path:
    from edustat.synth import generate_city

    n = SIZES[kind]
    inbox = base / kind / "inbox"
    stamp = inbox / ".params"
    params = json.dumps({"schools": n, "seed": 7, "export_share": 0.2, "error_rate": 0.002})
    if not (stamp.exists() and stamp.read_text() == params):
        shutil.rmtree(inbox, ignore_errors=True)
        t = time.perf_counter()
        m = generate_city(inbox, schools=n, seed=7, school_year=YEAR, period=PERIOD, export_share=0.2,
                          error_rate=0.002, workers=workers)
        print(f"[{kind}] generated {len(m.schools)} schools, {m.total_learners:,} learners, {m.total_staff:,} staff "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
        stamp.write_text(params)
    return inbox


def served_deployment(client, serve: subprocess.Popen, failed: str):
    """The collection flow's deployment once `edustat serve` (the process `serve`) has registered
    it; exits with `failed` after 180 s or when the serve process ended."""
    deadline = time.monotonic() + 180
    while True:
        try:
            return client.read_deployment_by_name("edustat-collection/thu-thap")
        except Exception:
            if time.monotonic() > deadline or serve.poll() is not None:
                raise SystemExit(failed)
            time.sleep(0.2)


def change_one_school(inbox: Path) -> str:
    """One school resubmits: its last learner row deleted (new bytes, new content)."""
    import openpyxl

    one = next(p for p in sorted(inbox.glob("*.xlsx")) if p.name.startswith("7"))
    wb = openpyxl.load_workbook(one)
    ws = wb["HocSinh"] if "HocSinh" in wb.sheetnames else wb.worksheets[-2]
    ws.delete_rows(ws.max_row)
    tmp = one.with_suffix(".tmp")
    wb.save(tmp)
    os.replace(tmp, one)
    return one.name


def prefect_startup(base: Path) -> dict:
    """Prefect's fixed costs apart: a server's start until healthy; a trivial flow against an
    ephemeral (temporary, per-process) server vs against the running one."""
    from edustat.procs import start_prefect_server, stop_group, wait_healthy

    out = {}
    home = Path(tempfile.mkdtemp(prefix="bench-prefect-eph-"))
    env = dict(os.environ, **QUIET, PREFECT_HOME=str(home), PREFECT_LOGGING_LEVEL="WARNING")
    env.pop("PREFECT_API_URL", None)
    m = measure([sys.executable, __file__, "--child", "flow"], env=env)
    out["ephemeral_flow"] = {**_pick(m), **_last_json(m["stdout"])}
    shutil.rmtree(home, ignore_errors=True)
    home = Path(tempfile.mkdtemp(prefix="bench-prefect-srv-"))
    t = time.perf_counter()
    proc, url, senv = start_prefect_server(home, ui=False)
    try:
        ok = wait_healthy(url, 120)
        out["server_start_s"] = round(time.perf_counter() - t, 2) if ok else None
        m = measure([sys.executable, __file__, "--child", "flow"], env=dict(senv, **QUIET), server_pid=proc.pid)
        out["running_server_flow"] = {**_pick(m), **_last_json(m["stdout"])}
    finally:
        stop_group(proc)
        shutil.rmtree(home, ignore_errors=True)
    return out


USAGE = re.compile(r"CPU ([0-9.]+) s, bộ nhớ tối đa ([0-9]+) MiB")


def served_runs(inbox_src: Path, work: Path, senv: dict, cold_start: bool) -> dict:
    """`edustat serve` started once; cold, nothing changed and one school changed, each a run of
    the deployment triggered through the API (as the officer's Run button does)."""
    import psutil  # noqa: F401
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    tag = "served-cold" if cold_start else "served"
    inbox, data = work / f"inbox-{tag}", work / f"data-{tag}"
    for d in (inbox, data):
        shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(inbox_src, inbox, ignore=shutil.ignore_patterns(".params", "manifest.json"))
    env = dict(senv, **QUIET, PREFECT_LOGGING_LEVEL="INFO")
    cmd = [str(Path(sys.executable).parent / "edustat"), "serve", "--data-dir", str(data)] + (["--cold-start"] if cold_start else [])
    log = open(work / f"{tag}.log", "wb")
    t_serve = time.perf_counter()
    serve = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    out: dict = {}
    from edustat.procs import stop_group

    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: senv["PREFECT_API_URL"]}), get_client(sync_client=True) as c:
            dep = served_deployment(c, serve, f"edustat serve did not register its deployment (see {log.name})")
            out["serve_ready_s"] = round(time.perf_counter() - t_serve, 2)
            for step in ("cold", "warm", "one"):
                if step == "one":
                    out["changed"] = change_one_school(inbox)
                load0 = os.getloadavg()[0]
                t = time.perf_counter()
                run = c.create_flow_run_from_deployment(dep.id, parameters={
                    "school_year": YEAR, "period": PERIOD, "inbox": str(inbox), "data_dir": str(data)})
                while True:
                    run = c.read_flow_run(run.id)
                    if run.state and run.state.is_final():
                        break
                    time.sleep(0.1)
                total = time.perf_counter() - t
                use, until = None, time.monotonic() + 15  # the run's last log lines reach the server as it exits
                while use is None and time.monotonic() < until:
                    logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])),
                                       sort=LogSort.TIMESTAMP_DESC, limit=20)
                    use = next((USAGE.search(lg.message) for lg in logs if USAGE.search(lg.message)), None)
                    time.sleep(0.2 if use is None else 0)
                wall = (run.end_time - run.start_time).total_seconds() if run.start_time and run.end_time else None
                out[step] = {"wall_s": round(wall, 2) if wall is not None else None,
                             "cpu_s": float(use.group(1)) if use else None,
                             "peak_mib": int(use.group(2)) if use else None,
                             "pickup_s": round((run.start_time - run.created).total_seconds(), 2) if run.start_time else None,
                             "trigger_to_done_s": round(total, 2), "state": run.state.type.value,
                             "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2)}
                st = measure([sys.executable, __file__, "--child", "stages", "--run-id", str(run.id)], env=dict(senv, **QUIET))
                out[step].update(_last_json(st["stdout"]))
    finally:
        stop_group(serve, __import__("signal").SIGINT)
        log.close()
    return out


def _pick(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in ("stdout", "stderr")}


def bench(kind: str, scenarios: list[str], workers: int, base: Path, server, save=lambda res: None) -> dict:
    from edustat.procs import stop_group  # noqa: F401  (import check before the long part)

    src = ensure_data(kind, base, workers)
    files = sorted(src.glob("*.xlsx"))
    work = base / kind / "work"
    inbox = work / "inbox"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, inbox, ignore=shutil.ignore_patterns(".params", "manifest.json"))
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    learners = manifest.get("totals", {}).get("learners")
    proc, url, senv = server
    edustat = str(Path(sys.executable).parent / "edustat")
    data = work / "data"
    env = dict(senv, **QUIET, PREFECT_LOGGING_LEVEL="INFO")
    run = [edustat, "run", "--year", YEAR, "--period", PERIOD, "--inbox", str(inbox), "--data-dir", str(data)]
    res: dict = {"kind": kind, "schools": len(files), "learners": learners, "workers": workers, "cores": os.cpu_count(),
                 "scenarios": {}}
    for sc in scenarios:
        t0 = time.time()
        if sc == "floor":
            m = measure([sys.executable, __file__, "--child", "floor", "--inbox", str(inbox)])
            extra = _last_json(m["stdout"])
        elif sc == "obvious":
            out = work / "obvious"
            shutil.rmtree(out, ignore_errors=True)
            m = measure([sys.executable, str(ROOT / "scripts" / "obvious.py"), str(inbox), str(out), "--year", YEAR])
            extra = _last_json(m["stdout"])
        elif sc in ("cold", "warm", "one", "dask"):
            d = data
            cmd = list(run)
            if sc == "cold":
                shutil.rmtree(data, ignore_errors=True)
            if sc == "one":
                extra_name = change_one_school(inbox)
            if sc == "dask":
                d = work / "data-dask"
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(parents=True)
                cfgp = work / "dask.yaml"
                cfgp.write_text(f"task_runner: dask\nworkers: {workers}\n", encoding="utf-8")
                cmd = [edustat, "run", "--year", YEAR, "--period", PERIOD, "--inbox", str(inbox), "--data-dir", str(d),
                       "--config", str(cfgp)]
            m = measure(cmd, env=env, server_pid=proc.pid)
            st = measure([sys.executable, __file__, "--child", "stages"], env=dict(senv, **QUIET))
            extra = {**_last_json(st["stdout"]), "summary": m["stdout"].strip().splitlines()[-3:]}
            if sc == "one":
                extra["changed"] = extra_name
        elif sc in ("served", "served-cold"):
            res["scenarios"][sc] = served_runs(src, work, senv, cold_start=sc == "served-cold")
            save(res)
            for step, s in res["scenarios"][sc].items():
                if isinstance(s, dict):
                    print(f"[{kind}] {sc} {step:<5} wall {s['wall_s']} s  cpu {s['cpu_s']} s  peak {s['peak_mib']} MiB  "
                          f"picked up after {s['pickup_s']} s  {s['state']}  load {s['load_before']}→{s['load_after']}", flush=True)
            continue
        else:
            raise SystemExit(f"unknown scenario {sc}")
        if m["rc"] != 0:
            extra["error"] = m["stderr"].strip().splitlines()[-5:] + m["stdout"].strip().splitlines()[-5:]
        res["scenarios"][sc] = {**_pick(m), **extra}
        save(res)  # a long run interrupted still leaves its finished lines in results.json
        s = res["scenarios"][sc]
        print(f"[{kind}] {sc:<8} wall {s['wall_s']:7.2f} s  cpu {s['cpu_s']:7.2f} s  peak {s['peak_mib']:5d} MiB "
              f"(tree {s['peak_tree_mib']} MiB)  load {s['load_before']}→{s['load_after']}"
              + (f"  rc {m['rc']}" if m["rc"] else ""), flush=True)
    return res


def report(b: dict, startup: dict | None) -> None:
    sc = b["scenarios"]
    floor = sc.get("floor")
    print(f"\n== {b['kind']}: {b['schools']} schools"
          + (f", {b['learners']:,} learners" if b.get("learners") else "")
          + f"; {b['workers']} workers on {b['cores']} cores; load average (1 min) before→after each line")
    names = {"floor": "read floor (fastexcel)", "obvious": "obvious (pandas+openpyxl)", "cold": "edustat cold",
             "warm": "edustat warm, unchanged", "one": "edustat, one school changed", "dask": "edustat cold, Dask"}
    print(f"{'scenario':<30}{'wall s':>8}{'CPU s':>8}{'×floor':>8}{'×floor':>8}{'peak MiB':>10}{'tree MiB':>10}"
          f"{'server':>8}  load")
    print(f"{'':<30}{'':>8}{'':>8}{'wall':>8}{'CPU':>8}{'1 proc':>10}{'sum':>10}{'CPU s':>8}")
    for k, s in sc.items():
        if k.startswith("served"):
            continue
        fw = f"{s['wall_s'] / floor['wall_s']:.1f}" if floor and floor["wall_s"] else ""
        fc = f"{s['cpu_s'] / floor['cpu_s']:.1f}" if floor and floor["cpu_s"] else ""
        srv = f"{s['server_cpu_s']:.1f}" if s.get("server_cpu_s") is not None else ""
        print(f"{names.get(k, k):<30}{s['wall_s']:>8.2f}{s['cpu_s']:>8.2f}{fw:>8}{fc:>8}{s['peak_mib']:>10}"
              f"{s['peak_tree_mib']:>10}{srv:>8}  {s['load_before']}→{s['load_after']}" + ("  FAILED" if s.get("rc") else ""))
    ob, cold = sc.get("obvious"), sc.get("cold")
    if ob and cold:
        print(f"obvious / edustat cold: wall {ob['wall_s'] / cold['wall_s']:.2f}×, CPU {ob['cpu_s'] / cold['cpu_s']:.2f}× "
              f"(obvious: {ob.get('files')} files, {ob.get('outputs')} outputs, {ob.get('issues')} issues)")
    for k in ("cold", "warm", "one", "dask"):
        if k in sc and sc[k].get("tasks"):
            st = sc[k]["tasks"]
            print(f"tasks ({names[k]}), s: " + ", ".join(f"{s} {v:.1f}" for s, v in st.items())
                  + f"; flow run {sc[k].get('flow_s', 0):.1f} s; outside the flow run (imports, start-up) "
                  f"{sc[k]['wall_s'] - sc[k].get('flow_s', 0):.1f} s")
    for k in ("served", "served-cold"):
        if k not in sc:
            continue
        how = "each run a new interpreter (--cold-start)" if k == "served-cold" else "each run forked warm (edustat.warm)"
        print(f"edustat serve, runs triggered through the API, {how}; serve ready in {sc[k].get('serve_ready_s')} s:")
        for step in ("cold", "warm", "one"):
            s = sc[k].get(step)
            if not s:
                continue
            fc = f"{s['cpu_s'] / floor['cpu_s']:.1f}" if floor and floor["cpu_s"] and s.get("cpu_s") else ""
            print(f"  {names[step]:<28}{s['wall_s']!s:>8}{s['cpu_s']!s:>8}{'':>8}{fc:>8}{s['peak_mib']!s:>10}"
                  f"   picked up after {s['pickup_s']} s; {s['state']}; load {s['load_before']}→{s['load_after']}")
            if s.get("tasks"):
                print("    tasks, s: " + ", ".join(f"{n} {v:.1f}" for n, v in s["tasks"].items()))
    if startup:
        e, r = startup.get("ephemeral_flow", {}), startup.get("running_server_flow", {})
        print(f"Prefect apart: trivial flow with an ephemeral server {e.get('wall_s')} s wall / {e.get('cpu_s')} s CPU "
              f"(flow call {e.get('flow_s', 0):.1f} s); with a running server {r.get('wall_s')} s / {r.get('cpu_s')} s "
              f"(flow call {r.get('flow_s', 0):.1f} s); a server starts in {startup.get('server_start_s')} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=list(SIZES))
    ap.add_argument("--scenarios", help="comma-separated: " + ",".join(ALL) + " (default: all but dask; "
                    "the province skips obvious)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--dir", type=Path, default=ROOT / "build" / "bench")
    ap.add_argument("--no-prefect-startup", action="store_true", help="skip measuring Prefect's start-up apart")
    ap.add_argument("--child", choices=["floor", "flow", "stages"], help=argparse.SUPPRESS)
    ap.add_argument("--inbox", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--run-id", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "floor":
        return child_floor(args.inbox)
    if args.child == "flow":
        return child_flow()
    if args.child == "stages":
        return child_stages(args.run_id)
    os.environ.update(QUIET)
    from edustat.procs import start_prefect_server, stop_group, wait_healthy

    kinds = [args.only] if args.only else ["city", "province"]
    startup = None if args.no_prefect_startup else prefect_startup(args.dir)
    home = args.dir / "prefect-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    server = start_prefect_server(home, ui=False)
    results: list[dict] = []
    out = args.dir / "results.json"
    prev = json.loads(out.read_text()) if out.exists() else {"runs": []}
    entry = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "uname": os.uname().release,
             "prefect_startup": startup, "results": results}
    prev["runs"].append(entry)

    def save(current: dict | None = None) -> None:
        entry["results"] = results + ([current] if current is not None and current not in results else [])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(prev, ensure_ascii=False, indent=1), encoding="utf-8")

    try:
        if not wait_healthy(server[1], 120):
            raise SystemExit("the bench's Prefect server did not start")
        for kind in kinds:
            scen = args.scenarios.split(",") if args.scenarios else DEFAULT[kind]
            results.append(bench(kind, scen, args.workers, args.dir, server, save))
    finally:
        stop_group(server[0])
        save()
    for b in results:
        report(b, startup)
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
