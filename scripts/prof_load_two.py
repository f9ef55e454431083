"""The LOAD and PREPARE of a one-school-changed run as a SECOND run sees them (issue 12): two
collection flows in one data dir, in place (a copied data dir is another database file: its
prepare audits and its load proves every school by content, so only a run after a run of the
same code shows what that code keeps), against a started Prefect server, GX imported first.

    python scripts/prof_load_two.py <repo> <tag> [BASE] [SECOND]

BASE (default /tmp/h14-load-base): a dir with data/ and inbox/, data in sync with an earlier
inbox and one school's file since changed (bench.change_one_school applied once). SECOND
(default /tmp/h14-load-h/second): the workbook(s) of a second school changed, made once (the
same bytes for every repo). Copies BASE to $WORK/load-two-<tag> (WORK default /tmp), runs the flow (the first
school), copies SECOND into its inbox, runs the flow again and prints, for that second run,
the flow's wall/CPU s and the wall/CPU s of prepare's and the load's parts (load_all,
check_consistency, the store's and incremental's steps). The code digest is pinned to main's
of 3 Dec 2026 so BASE's cache stays valid for every repo compared: compare CPU s in
alternating pairs."""

import os, sys, shutil, time, tempfile, json, resource
from pathlib import Path
repo, tag = sys.argv[1], sys.argv[2]
sys.path.insert(0, repo); sys.path.insert(0, repo + "/scripts")
os.environ.update({"GX_ANALYTICS_ENABLED": "False", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
from edustat.procs import start_prefect_server, wait_healthy, stop_group
home = Path(tempfile.mkdtemp(prefix="load-two-prefect-"))
proc, url, env = start_prefect_server(home, ui=False)
assert wait_healthy(url, 120)
os.environ["PREFECT_API_URL"] = url
import edustat
assert edustat.__file__.startswith(repo)
import edustat.incremental as _inc
_inc._code_digest_impl = lambda: "3228eca26d5172ca2697cb002783c97ee1d9203a47f4b774f329c3161a52ac8a"
import great_expectations, edustat.warmup
from flows.collect import collection_flow
import edustat.pipeline as pl
def cpu():
    s = resource.getrusage(resource.RUSAGE_SELF); return s.ru_utime + s.ru_stime
timings = {}
def wrap(mod, name):
    f = getattr(mod, name)
    def w(*a, **k):
        t = time.perf_counter(); c = cpu()
        try: return f(*a, **k)
        finally: timings.setdefault(name, []).append((round(time.perf_counter() - t, 3), round(cpu() - c, 3)))
    setattr(mod, name, w)
for n in ("load_all", "check_consistency", "clean_temp_files"):
    wrap(pl, n)
import edustat.store as st_
for n in ("stamped_core_schools", "unchanged_core_schools", "cross_school_issues", "inconsistencies", "write_run", "stage_sheets"):
    if hasattr(st_, n):
        wrap(st_, n)
        if hasattr(pl, n): setattr(pl, n, getattr(st_, n))
import edustat.incremental as inc_
for n in ("plan_staging", "record_staged", "record_load", "prune_cache"):
    wrap(inc_, n)
base = Path(os.environ.get("WORK", "/tmp")) / f"load-two-{tag}"; shutil.rmtree(base, ignore_errors=True)
shutil.copytree(sys.argv[3] if len(sys.argv) > 3 else "/tmp/h14-load-base", base, symlinks=True)
kw = dict(school_year="2022-2023", period="dau_nam", inbox=str(base / "inbox"), data_dir=str(base / "data"))
try:
    collection_flow(**kw)
    for p in Path(sys.argv[4] if len(sys.argv) > 4 else "/tmp/h14-load-h/second").glob("*.xlsx"):
        shutil.copyfile(p, base / "inbox" / p.name)
    timings.clear()
    t = time.perf_counter(); c = cpu()
    collection_flow(**kw)
    out = {"flow": (round(time.perf_counter() - t, 2), round(cpu() - c, 2)), **timings, "load1": round(os.getloadavg()[0], 2)}
    print(json.dumps(out))
finally:
    stop_group(proc)
