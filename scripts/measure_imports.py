"""What a fresh edustat process pays before it reads a file, base against head, in CPU seconds
(resource.getrusage(RUSAGE_CHILDREN): the child and everything it waited for):

    python scripts/measure_imports.py --base /work/x-base --head /work/x [--pairs 7]
        [--modes gx,run,warm] [--api-url http://127.0.0.1:4291/api]

Each worktree is run with its own .venv. Modes, each run as base, head, base, head...:
  gx    a new interpreter that makes a GX data source as a validation does
        (`edustat.expectations._source()`: GX and what it imports);
  run   `edustat run` of a 4-school synthetic city (`edustat synth --schools 4 --seed 9`, made
        once) into a fresh data dir, against the running Prefect server at --api-url (start one
        with `prefect server start`; without --api-url each run starts its own ephemeral server,
        whose CPU is counted too);
  warm  the warm forkserver's start (edustat.warm.start() and one trivial process forked from
        it, so its preload and edustat.warmup are done): the server's own CPU from /proc.
Prints each pair and the medians; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

YEAR, PERIOD = "2022-2023", "dau_nam"
GX = "from edustat import expectations as ex; ex._source()"
WARM = """
import multiprocessing, os
from edustat import warm
pid = warm.start()
p = warm.context().Process(target=int)
p.start(); p.join()
with open(f"/proc/{pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
tick = os.sysconf("SC_CLK_TCK")
print("SERVER_CPU", (int(fields[11]) + int(fields[12])) / tick)
"""


def child_cpu(cmd: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{cmd} failed in {cwd}:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), r.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--head", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--modes", default="gx,run,warm")
    ap.add_argument("--api-url", default=None)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="measure-imports-"))
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", GX_ANALYTICS_ENABLED="False",
               PREFECT_LOGGING_LEVEL="WARNING", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
               PREFECT_HOME=str(work / "prefect-home"))
    if args.api_url:
        env["PREFECT_API_URL"] = args.api_url
    sides = {"base": args.base.resolve(), "head": args.head.resolve()}
    modes = args.modes.split(",")
    inbox = work / "inbox"
    if "run" in modes and not inbox.exists():
        subprocess.run([str(sides["base"] / ".venv/bin/edustat"), "synth", "--schools", "4", "--seed", "9",
                        "-o", str(inbox)], cwd=sides["base"], env=env, check=True, capture_output=True)
    found: dict[str, dict[str, list[float]]] = {m: {"base": [], "head": []} for m in modes}
    for i in range(args.pairs):
        for mode in modes:
            for side, root in sides.items():
                py = str(root / ".venv/bin/python")
                if mode == "gx":
                    cpu, _ = child_cpu([py, "-c", GX], root, env)
                elif mode == "run":
                    data = work / f"data-{side}-{i}"
                    shutil.rmtree(data, ignore_errors=True)
                    cpu, _ = child_cpu([str(root / ".venv/bin/edustat"), "run", "--year", YEAR, "--period", PERIOD,
                                        "--inbox", str(inbox), "--data-dir", str(data)], root, env)
                    shutil.rmtree(data, ignore_errors=True)
                else:
                    _, out = child_cpu([py, "-c", WARM], root, env)
                    cpu = float(out.split("SERVER_CPU")[1].split()[0])
                found[mode][side].append(cpu)
            b, h = found[mode]["base"][-1], found[mode]["head"][-1]
            print(f"pair {i + 1} {mode:4s} base {b:6.2f}  head {h:6.2f}  head-base {h - b:+6.2f} CPU s  "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    for mode in modes:
        b, h = found[mode]["base"], found[mode]["head"]
        diffs = [y - x for x, y in zip(b, h)]
        print(f"{mode}: base median {statistics.median(b):.2f}, head median {statistics.median(h):.2f}, "
              f"median of pair differences {statistics.median(diffs):+.2f} CPU s; head lower in "
              f"{sum(d < 0 for d in diffs)}/{len(diffs)} pairs")


if __name__ == "__main__":
    sys.exit(main())
