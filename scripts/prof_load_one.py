"""Profile a warm in-process collection run where ONE school changed (issue 12), per pipeline step.

    BASE=<dir with data/ and inbox/, data in sync with an earlier inbox, one school's file since
    changed (bench.change_one_school, applied once so every run sees the same bytes)>
    WORK=<scratch dir> python scripts/prof_load_one.py <repo> <tag> [noprof]

Copies BASE to WORK/run-<tag>, runs collection_flow against a started Prefect server, prints
wall/CPU of load_all, summary, clean_temp_files, check_consistency and the slowest queries of
write_run, writes WORK/<tag>.prof and WORK/summary-<tag>.json. The code digest is pinned to the
value of $PIN_DIGEST (if set) so a code change does not invalidate BASE's cache: compare two
repos' runs on the same input (database: scripts/measure_stages.fingerprint)."""
import cProfile, pstats, os, sys, shutil, time, tempfile, json
from pathlib import Path
repo = sys.argv[1]; out = sys.argv[2]
BASE = os.environ["BASE"]; WORK = os.environ.get("WORK", "/tmp")
sys.path.insert(0, repo); sys.path.insert(0, repo + "/scripts")
os.environ.update({"GX_ANALYTICS_ENABLED": "False", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
from edustat.procs import start_prefect_server, wait_healthy, stop_group
home = Path(tempfile.mkdtemp())
proc, url, env = start_prefect_server(home, ui=False)
assert wait_healthy(url, 120)
os.environ["PREFECT_API_URL"] = url
from bench import change_one_school
import edustat.incremental as _inc
if os.environ.get("PIN_DIGEST"):
    _inc._code_digest_impl = lambda: os.environ["PIN_DIGEST"]  # BASE's cache stays valid
import great_expectations, edustat.warmup
from flows.collect import collection_flow
import flows.collect as fc
# per-task timing wrappers (wall + cpu) around the pipeline calls
timings = {}
def wrap(mod, name):
    f = getattr(mod, name)
    def w(*a, **k):
        t = time.perf_counter(); c = time.process_time()
        try: return f(*a, **k)
        finally: timings.setdefault(name, []).append((round(time.perf_counter() - t, 3), round(time.process_time() - c, 3)))
    setattr(mod, name, w)
import edustat.pipeline as pl
for n in ("load_all", "summary", "clean_temp_files", "check_consistency"):
    if hasattr(pl, n): wrap(pl, n)
import edustat.store as st_
qt = []
class P:
    def __init__(s, c): s._c = c
    def __getattr__(s, n): return getattr(s._c, n)
    def execute(s, q, *a, **k):
        t = time.perf_counter(); r = s._c.execute(q, *a, **k); qt.append((round(time.perf_counter() - t, 3), " ".join(str(q).split())[:110])); return r
for n in ("write_run",):
    f0 = getattr(st_, n)
    def w(con, *a, _f=f0, **k): return _f(P(con), *a, **k)
    setattr(st_, n, w); setattr(pl, n, w)
base = Path(WORK) / ("run-" + out); shutil.rmtree(base, ignore_errors=True)
shutil.copytree(BASE, base, symlinks=True)
kw = dict(school_year="2022-2023", period="dau_nam", inbox=str(base / "inbox"), data_dir=str(base / "data"))
# base/inbox already holds the one changed school (the same bytes for every run compared)
try:
    pr = cProfile.Profile() if "noprof" not in sys.argv else None
    t = time.perf_counter(); c = time.process_time()
    if pr: pr.enable()
    res = collection_flow(**kw)
    if pr: pr.disable()
    print("one changed in-process", round(time.perf_counter() - t, 2), "wall", round(time.process_time() - c, 2), "cpu")
    print(json.dumps(timings))
    for t_, q_ in sorted(qt, reverse=True)[:12]: print("Q", t_, q_)
    with open(f"{WORK}/summary-{out}.json", "w") as fh: json.dump(res, fh, default=str, sort_keys=True, ensure_ascii=False, indent=1)
    if pr:
        pr.dump_stats(f"{WORK}/{out}.prof")
finally:
    stop_group(proc)
