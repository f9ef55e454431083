"""A nothing-changed run, two codes on the same state: wall and CPU per step, and every output
compared (issue 12: "nothing changed ≤ 2 s of work").

    python scripts/compare_nothing_changed.py --state S --data D --inbox I --base ROOT_A --head ROOT_B \
        [--reps 3] [--out result.json]

S is a data dir a collection of I has already run in, at the path D (kept as it is: copied to D
before every run; feedback and raw paths in the register are D's). Per repetition, base then
head (alternating): D made S again, then the flow's steps (flows/collect.py, without Prefect:
prepare with its consistency audit, find, read, reuse, feedback, forms, feedback written,
publish, summary, the artifacts' queries and texts) run twice in a process warmed as `edustat
serve`'s forkserver is (edustat.warm.PRELOAD imported, edustat.warmup built and frozen; from
feedback to artifacts inside `store.held` when the code has it, as the flow); the second run
is measured (the first is the nightly rerun's steady state: indexes in place).

With `--cold` (no --state): D starts empty and each code makes it with a cold run of its own
(cast, validate and load, as the flow does when nothing is reused; not measured), then the
FIRST nothing-changed rerun after it is the one measured (what a bench's rerun is, and what
the nightly run is after a day with changes). Only the reruns' summaries and artifacts are then
compared: the two cold runs ran at other times and their outputs hold those times (the forms'
build, the feedback workbooks, the snapshot), so output identity is what the --state mode
proves, not this one.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
YEAR, PERIOD = "2022-2023", "dau_nam"
STEPS = ("prepare", "find", "read", "reuse", "feedback", "forms", "feedback_written", "publish", "summary", "artifacts")


def _cpu() -> tuple[float, float]:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime


def child(root: Path, data: Path, inbox: Path, pin: str | None, runs: int, cold: bool = False) -> None:
    """The flow's steps on `data`, `runs` times, with the code at `root`; prints JSON."""
    import importlib

    sys.path.insert(0, str(root))
    os.chdir(root)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import edustat
    import edustat.incremental as inc

    assert Path(edustat.__file__).resolve().is_relative_to(root.resolve()), edustat.__file__
    if pin:
        inc._code_digest_impl = lambda: pin  # see the module's docstring
    from edustat.warm import PRELOAD

    for m in PRELOAD:
        importlib.import_module(m)
    from edustat import formbuild, officer, pipeline, store
    from edustat.config import load_config
    from edustat.publish import salt_for
    from edustat.store import expected_schools
    from edustat.submissions import discover

    cfg = load_config(None, data)
    y, p = YEAR, PERIOD
    out = []
    for n in range(runs + cold):
        times: dict[str, list[float]] = {}

        def stage(name, fn):
            t, (s0, c0) = time.perf_counter(), _cpu()
            try:
                return fn()
            finally:
                s1, c1 = _cpu()
                times[name] = [round(time.perf_counter() - t, 4), round(s1 - s0, 4), round(c1 - c0, 4)]

        def sess():
            return store.session(cfg.db_path, cfg.private_group)

        t0, c0 = time.perf_counter(), _cpu()
        run_id = pipeline.new_run_id()
        with pipeline.sole_writer(cfg):
            def prepare():
                pipeline.clean_temp_files(cfg)
                with sess() as con:
                    return pipeline.check_consistency(con, cfg, run_id)
            stage("prepare", prepare)
            files = stage("find", lambda: discover(inbox))
            results = stage("read", lambda: pipeline.ingest_all(files, cfg, y, p))
            outcome = stage("reuse", lambda: inc.unchanged_outcome(results, cfg, y, p, run_id))
            if outcome is None and cold and n == 0:  # the cold run that makes the state (flows/collect.py)
                frames = stage("cast", lambda: pipeline.assemble_all(results, cfg))
                issues = stage("validate", lambda: pipeline.validate_all(results, cfg, y, p, frames))

                def load():
                    with sess() as con:
                        return pipeline.load_all(con, results, issues, cfg, y, p, run_id, frames=frames)
                outcome = stage("load", load)
            elif outcome is None:
                raise SystemExit("not a nothing-changed run: the state and the inbox differ, or another code's key")
            outcome.incremental = pipeline.cache_stats(results)

            # the flow's tail shares one DuckDB instance (store.held) where the code has it
            tail = store.held(cfg.db_path, cfg.private_group) if hasattr(store, "held") else contextlib.nullcontext()
            tail.__enter__()

            def feedback():
                with sess() as con:
                    return pipeline.start_feedbacks(con, outcome, results, cfg)
            work = stage("feedback", feedback)

            def forms():
                with sess() as con:
                    return formbuild.build(con, cfg, y, p, incremental=cfg.incremental)
            reports = stage("forms", forms)

            def written():
                with sess() as con:
                    return pipeline.finish_feedbacks(con, work, outcome)
            stage("feedback_written", written)

            def publish():
                with sess() as con:
                    return inc.publish_if_changed(con, cfg, salt_for(cfg))[0]
            published = stage("publish", publish)
            outcome.publish_unchanged = published is None

            def summary():
                with sess() as con:
                    return pipeline.summary(con, outcome, cfg, reports,
                                            published=published.snapshot if published else None)
            summ = stage("summary", summary)

            def artifacts():
                with sess() as con:
                    expected = expected_schools(con, y, p, cfg.expected_schools)
                    table = officer.school_table(con, y, p, expected)
                    previous = officer.previous_summary(con, y, p, summ["run_id"])
                    by_grade = officer.learners_by_grade(con, y, p)
                deadline = officer.deadline_for(cfg.deadlines, y, p)
                return [officer.summary_markdown(summ, table, previous, deadline, officer.today_vn(), by_grade),
                        officer.table_artifact_rows(table, deadline), officer.charts_markdown(summ, table, by_grade)]
            arts = stage("artifacts", artifacts)
            tail.__exit__(None, None, None)
        c1 = _cpu()
        out.append({"steps": times, "wall": round(time.perf_counter() - t0, 4), "cpu": round(c1[0] - c0[0], 4),
                    "children_cpu": round(c1[1] - c0[1], 4), "load": os.getloadavg()[0],
                    "written": outcome.feedback_written, "forms_skipped": bool(getattr(reports, "skipped", False)),
                    "published": published is not None,
                    "summary": json.loads(json.dumps({k: v for k, v in summ.items() if k != "run_id"}, default=str)),
                    "artifacts": hashlib.sha256(json.dumps(arts, default=str, ensure_ascii=False)
                                                .replace(run_id, "RUN").encode()).hexdigest()})
    print(json.dumps(out[1:] if cold else out))


def digest_of(root: Path) -> str:
    got = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                          "from edustat.incremental import code_digest; print(code_digest())", str(root)],
                         capture_output=True, text=True, check=True, cwd=root)
    return got.stdout.strip()


def files_of(data: Path) -> dict:
    """sha256 and mtime of every file under curated/ (the database apart: fingerprinted); the
    names under raw/ and cache/."""
    out: dict = {"curated": {}, "raw": [], "cache": []}
    for f in sorted((data / "curated").rglob("*")):
        if f.is_file() and not (f.parent == data / "curated" and f.name.startswith("edustat.duckdb")):
            out["curated"][f.relative_to(data).as_posix()] = [hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns]
    for part in ("raw", "cache"):
        out[part] = sorted(f.relative_to(data).as_posix() for f in (data / part).rglob("*") if f.is_file())
    return out


def database_of(data: Path) -> dict:
    import duckdb

    sys.path.insert(0, str(HERE))
    from measure_stages import fingerprint

    con = duckdb.connect(str(data / "curated" / "edustat.duckdb"), read_only=True)
    try:
        db = {r["table"]: [int(r["rows"]), int(r["hash"])] for r in fingerprint(con).to_dict("records")}
        # run.summary names its run: compared without it
        db.pop("run", None)
        db["run.summary"] = sorted(json.dumps({k: v for k, v in json.loads(s).items() if k != "run_id"}, sort_keys=True)
                                   for (s,) in con.execute("select summary from run where summary is not null").fetchall())
    finally:
        con.close()
    return db


def content(data: Path) -> dict:
    sys.path.insert(0, str(HERE))
    from measure_cold_load_publish import tree_content
    from measure_publish import snapshot_content

    pub = data / "curated" / "published"
    return {"database": database_of(data), "files": files_of(data), "snapshot": snapshot_content(pub / "edustat.duckdb"),
            "parquet": tree_content(pub / "parquet") if (pub / "parquet").is_dir() else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", type=Path)
    ap.add_argument("--state", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--inbox", type=Path, required=True)
    ap.add_argument("--base", type=Path)
    ap.add_argument("--head", type=Path)
    ap.add_argument("--pin")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--cold", action="store_true", help="each code's own cold run, then its first rerun measured")
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.data, a.inbox, a.pin, a.runs, a.cold)
    if bool(a.cold) == bool(a.state):
        raise SystemExit("either --state S or --cold")
    pin = a.pin or digest_of(a.base)  # --pin: the digest of the code S was made with, when not the base's
    res: dict = {"runs": [], "content": {}}
    for rep in range(a.reps):
        for tag, root in (("base", a.base), ("head", a.head)):
            shutil.rmtree(a.data, ignore_errors=True)
            if a.cold:
                a.data.mkdir(parents=True)
            else:
                shutil.copytree(a.state, a.data, symlinks=True)
            env = dict(os.environ, PYTHONPATH=str(root))
            got = subprocess.run([sys.executable, __file__, "--child", str(root), "--data", str(a.data), "--inbox",
                                  str(a.inbox), "--pin", pin, "--runs", str(a.runs)] + (["--cold"] if a.cold else []),
                                 capture_output=True, text=True, env=env)
            if got.returncode:
                raise SystemExit(f"{tag}: {got.stderr[-2000:]}")
            runs = json.loads(got.stdout.strip().splitlines()[-1])
            last = runs[0] if a.cold else runs[-1]  # cold: the first rerun after it
            res["runs"].append({"rep": rep, "code": tag, **{k: v for k, v in last.items() if k != "summary"}})
            print(f"rep {rep} {tag:<4} wall {last['wall']:6.3f}  CPU {last['cpu']:6.3f} (+children {last['children_cpu']:.3f})"
                  f"  load {last['load']:.2f}  written {last['written']} forms skipped {last['forms_skipped']} "
                  f"published {last['published']}", flush=True)
            print("    " + "  ".join(f"{k} {v[1]:.3f}" for k, v in last["steps"].items()), flush=True)
            if not a.cold and len(runs) > 1:  # the first run on the copied state: every index a miss
                print(f"    (its first run: CPU {runs[0]['cpu']:.3f}; " + "  ".join(
                    f"{k} {v[1]:.3f}" for k, v in runs[0]["steps"].items()) + ")", flush=True)
            if rep == a.reps - 1:
                res["content"][tag] = {**({} if a.cold else content(a.data)), "summaries": [r["summary"] for r in runs],
                                       "artifacts": [r["artifacts"] for r in runs]}
    x, y = res["content"]["base"], res["content"]["head"]
    bad = 0
    for part in x:
        same = x[part] == y[part]
        bad += not same
        print(f"{part}: {'IDENTICAL' if same else 'DIFFERENT'}")
        if not same and isinstance(x[part], dict):
            for k in sorted(set(x[part]) | set(y[part])):
                xa, ya = x[part].get(k), y[part].get(k)
                if xa != ya and isinstance(xa, list) and isinstance(ya, list) and all(isinstance(v, str) for v in xa + ya):
                    print("   ", k, "only base:", sorted(set(xa) - set(ya))[:10], "only head:", sorted(set(ya) - set(xa))[:10])
                elif xa != ya:
                    print("   ", k, str(xa)[:300], "|", str(ya)[:300])
    for tag in ("base", "head"):
        rs = [r for r in res["runs"] if r["code"] == tag]
        print(f"{tag}: CPU " + " / ".join(f"{r['cpu']:.3f}" for r in rs) + "; wall " + " / ".join(f"{r['wall']:.3f}" for r in rs)
              + "; load " + " / ".join(f"{r['load']:.2f}" for r in rs))
    if a.out:
        a.out.write_text(json.dumps(res, ensure_ascii=False, default=str))
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
