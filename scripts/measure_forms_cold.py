"""The cold report-forms step as a served run's flow makes it (formbuild.build with the
configured workers and incremental setting, on a data dir loaded but never built: every scope
computed, stored, rendered, recorded and digested), after edustat.warmup's form templates (a
served run inherits them from the warm server). Wall, this process's CPU and its workers' CPU.

    python scripts/measure_forms_cold.py --prepare INBOX LOADED_DIR    # once: read … load
    python scripts/measure_forms_cold.py LOADED_DIR [--out DIR] [--profile] [--top 40]

LOADED_DIR is never changed: it is copied to --out (removed first) and the forms are built
there. Measures; asserts nothing.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def prepare(inbox: Path, data: Path, y: str, p: str) -> None:
    from edustat import pipeline, store
    from edustat.config import load_config
    from edustat.submissions import discover

    shutil.rmtree(data, ignore_errors=True)
    cfg = load_config(None, data)
    results = pipeline.ingest_all(discover(inbox), cfg, y, p)
    frames = pipeline.assemble_all(results, cfg)
    issues = pipeline.validate_all(results, cfg, y, p, frames)
    with store.session(cfg.db_path, cfg.private_group) as con:
        pipeline.load_all(con, results, issues, cfg, y, p, "measure", frames=frames)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", type=Path, nargs="+")
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("/tmp/measure-forms-cold"))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--year", default="2022-2023")
    ap.add_argument("--period", default="dau_nam")
    args = ap.parse_args()
    if args.prepare:
        prepare(args.paths[0], args.paths[1], args.year, args.period)
        return
    from edustat import formbuild, store, warmup
    from edustat.config import load_config

    shutil.rmtree(args.out, ignore_errors=True)
    shutil.copytree(args.paths[0], args.out, symlinks=True)
    cfg = load_config(None, args.out)
    warmup.warm()
    prof = cProfile.Profile(time.process_time)  # CPU seconds of this process (its DuckDB threads too)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t, s = time.perf_counter(), time.process_time()
    with store.session(cfg.db_path, cfg.private_group) as con:
        if args.profile:
            prof.enable()
        result = formbuild.build(con, cfg, args.year, args.period, incremental=cfg.incremental)
        if args.profile:
            prof.disable()
    wall, cpu = time.perf_counter() - t, time.process_time() - s
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
    print(f"forms cold: {len(result.files)} files, {result.cells:,} cells; wall {wall:.2f} s, CPU {cpu:.2f} s "
          f"+ workers {child:.2f} s = {cpu + child:.2f} s (load {os.getloadavg()[0]:.2f})")
    if args.profile:
        st = pstats.Stats(prof)
        st.sort_stats("cumulative").print_stats(args.top)
        st.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
