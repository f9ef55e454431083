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
