"""`edustat.synth.generate_city` made once per test session for the same arguments and copied
to each caller (the bad-input corpus's city, 18 schools, is ~20 CPU s to generate and three
test files build on it). Under pytest-xdist the workers of one run share the cache through the
run's base temporary directory (the parent of every worker's own), one builder at a time
(an exclusive lock per argument set); without xdist it lives in the session's own.
Generation is seeded, so a copy is what a fresh generation would write."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path


def _root(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "edustat-city-cache"
    root.mkdir(exist_ok=True)
    return root


def generate_city(out_dir: Path, tmp_path_factory, **args):
    """generate_city(out_dir, **args), from the session's cache when it was made already."""
    from edustat.synth import generate_city as generate

    root = _root(tmp_path_factory)
    key = hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()[:20]
    made = root / key
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (made / "manifest.pickle").is_file():
            work = root / f"{key}.partial"
            shutil.rmtree(work, ignore_errors=True)
            manifest = generate(work / "city", **args)
            (work / "manifest.pickle").write_bytes(pickle.dumps(manifest))
            work.rename(made)
    shutil.copytree(made / "city", out_dir, dirs_exist_ok=True)
    return pickle.loads((made / "manifest.pickle").read_bytes())


def loaded_city(work: Path, tmp_path_factory, *, load_policy: str, workers: int, run_id: str, **args) -> None:
    """`work/inbox` = generate_city(**args) and `work/data` = what `pipeline.run_collection`
    loads from it (read → cast → validate → load, no Prefect) with a Config of `load_policy` and
    `workers`, made once per test session for the same arguments and copied to each caller
    (three test files load the same city of six schools: ~20 CPU s each). The copy is what a
    fresh load would leave, except that the register's `raw_path`s name the raw copies in the
    cache (absolute paths; none of the callers reads them)."""
    from edustat import pipeline, store
    from edustat.config import Config
    from edustat.submissions import discover
    from edustat.synth import generate_city as generate

    root = _root(tmp_path_factory)
    key = "loaded-" + hashlib.sha256(json.dumps(dict(args, load_policy=load_policy, workers=workers, run_id=run_id),
                                                sort_keys=True, default=str).encode()).hexdigest()[:20]
    made = root / key
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (made / "work" / "data").is_dir():
            partial = root / f"{key}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            generate(partial / "work" / "inbox", **args)
            cfg = Config(data_dir=partial / "work" / "data", load_policy=load_policy, workers=workers)
            con = store.connect(cfg.db_path)
            try:
                pipeline.run_collection(con, discover(partial / "work" / "inbox"), cfg, args["school_year"],
                                        args["period"], run_id)
            finally:
                con.close()
            partial.rename(made)
    shutil.copytree(made / "work", work, symlinks=True, dirs_exist_ok=True)
