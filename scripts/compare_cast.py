"""Proof that two versions of the cast stage give the same frames: every inbox is read and cast
(`pipeline.ingest_all` then `pipeline.assemble_all`, a cold run's steps, in a fresh data dir) by
each version's code, each in a process of its own (`--base` / `--new` name the checkouts to
import), and everything the cast produces is compared: each sheet's raw and typed frame
(columns, dtypes, index, values, exactly), the casting notices (every field of every issue, in
order) and the ambiguous cells.

    python scripts/compare_cast.py --base /work/main --new . INBOX [INBOX ...] [--corpus] [--mixed] [--workers N]

`--corpus` and `--mixed` add the inboxes `scripts/compare_ingest.py` builds (the hostile-files
corpus; a city of every layout and the ministry's own files). `--split always|never` forces the
cast's second process (`edustat.castsplit`) on or off in the new version, whatever the load.
Prints every difference; exit status 1 when there is one.
"""
from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from compare_ingest import PERIOD, YEAR, _diff, common_args, inboxes_of  # noqa: E402


def dump(inboxes: list[Path], out: Path, workers: int, split: str) -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    from edustat import pipeline
    from edustat.config import load_config
    from edustat.submissions import discover

    if split != "auto":
        try:
            from edustat import castsplit
        except ImportError:
            castsplit = None
        if castsplit is not None:
            castsplit.FORCE = split == "always"
    result = {"code": str(Path(pipeline.__file__).parents[1]), "inboxes": {}}
    for inbox in inboxes:
        data = Path(tempfile.mkdtemp(prefix="cast-data-"))
        cfg = load_config(None, data)
        results = pipeline.ingest_all(discover(inbox), cfg, YEAR, PERIOD, workers)
        t = time.process_time()
        frames = pipeline.assemble_all(results, cfg)
        cpu = time.process_time() - t
        result["inboxes"][str(inbox)] = {
            "raw": dict(frames.raw), "typed": dict(frames.typed), "notices": frames.notices,
            "ambiguous": sorted(frames.ambiguous), "covers": getattr(frames, "covers", None), "cpu": cpu}
        shutil.rmtree(data, ignore_errors=True)
    out.write_bytes(pickle.dumps(result))


def _run(code: Path, inboxes: list[Path], out: Path, workers: int, split: str) -> None:
    prog = (f"import sys; sys.path.insert(0, {str(code)!r}); sys.path.insert(1, {str(HERE.parent)!r}); "
            f"import compare_cast as c; from pathlib import Path; "
            f"c.dump([Path(p) for p in {[str(i) for i in inboxes]!r}], Path({str(out)!r}), {workers}, {split!r})")
    subprocess.run([sys.executable, "-c", prog], check=True, cwd=tempfile.gettempdir())


def main() -> None:
    ap = argparse.ArgumentParser()
    common_args(ap)
    ap.add_argument("--split", choices=("auto", "always", "never"), default="auto",
                    help="the new version's cast in two processes: as the load decides, always, never")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cmp-cast-"))
    inboxes = inboxes_of(args, tmp)
    _run(args.base.resolve(), inboxes, tmp / "base.pkl", args.workers, "auto")
    _run(args.new.resolve(), inboxes, tmp / "new.pkl", args.workers, args.split)
    base = pickle.loads((tmp / "base.pkl").read_bytes())
    new = pickle.loads((tmp / "new.pkl").read_bytes())
    diffs: list[str] = []
    for inbox in inboxes:
        a, b = base["inboxes"][str(inbox)], new["inboxes"][str(inbox)]
        for part in ("raw", "typed", "notices", "ambiguous", "covers"):
            _diff(a[part], b[part], f"{inbox.name}:{part}", diffs)
        rows = {sid: len(f) for sid, f in a["typed"].items()}
        print(f"{inbox}: rows {rows}, {len(a['notices'])} notices, {len(a['ambiguous'])} ambiguous; "
              f"cast CPU s {a['cpu']:.2f} → {b['cpu']:.2f}")
    print(f"base {base['code']} vs new {new['code']}: {len(diffs)} differences")
    for d in diffs[:200]:
        print("  " + d)
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
