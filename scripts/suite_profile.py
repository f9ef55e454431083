"""Where the test suite's time goes: py-spy's collapsed stacks of a whole `make test`, summed by
process, by test file, by function (inclusive), or split below one function (issue 12: the
suite is over its ten-minute budget and its cost is spread over many places).

Record (py-spy is not a dependency of edustat; any venv will do):

    python -m venv /tmp/spy && /tmp/spy/bin/pip install py-spy==0.3.14
    PYTHONDONTWRITEBYTECODE= /tmp/spy/bin/py-spy record --subprocesses --rate 25 --format raw \\
        --nonblocking -o build/suite.collapsed -- .venv/bin/python -m pytest -q -n 2 \\
        --dist loadfile --no-loadscope-reorder

Then:

    python scripts/suite_profile.py build/suite.collapsed                  # processes, functions
    python scripts/suite_profile.py build/suite.collapsed --by-file [--having 'generate_city (']
    python scripts/suite_profile.py build/suite.collapsed --below '_edit (bad_inputs/__init__.py' [--depth 2]

Samples are of threads that were running (or runnable: on a loaded machine a sample-second is
more than a CPU second), so read shares, not seconds. Round 17 (3 Dec 2026): importing 14 % of
the samples, GX's row rules 12 %, `edustat` subprocesses 10 %, the Prefect servers 10 %,
generating cities 6 %, openpyxl reading workbooks 6 %.
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
from collections.abc import Iterator

# (what the process's command line holds, its kind), first match wins
PROCESS_KINDS = (("screenshots", "screenshots"), ("edustat serve", "edustat serve"), ("edustat.cli", "edustat.cli"),
                 ("bin/edustat", "bin/edustat"), ("soffice", "soffice"), ("uvicorn", "prefect server"),
                 ("prefect", "prefect"), ("-u -c import sys", "pytest-xdist worker"), ("pytest", "pytest"))
TEST_FILE = re.compile(r"\((test_[a-z0-9_]+\.py|citycache\.py|warmrun\.py|conftest\.py)")


def _frame(f: str) -> str:
    """'name (path:line)' → 'name (path)', site-packages and the checkout's prefix dropped."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", f)
    if not m:
        return f
    return f"{m.group(1)} ({m.group(2).split('site-packages/')[-1]})"


def _kind(proc: str) -> str:
    return next((kind for needle, kind in PROCESS_KINDS if needle in proc), "other")


def stacks(path: str) -> Iterator[tuple[str, list[str], int]]:
    """(innermost process, frames outermost first, samples) per line of py-spy's raw output."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            # xdist's workers run `python -u -c import sys;exec(eval(...))`: one frame, not two
            frames = stack.replace("import sys;exec(", "import sys exec(").split(";")
            procs = [f for f in frames if f.startswith("process ")] or ["process ?"]
            yield procs[-1], [_frame(f) for f in frames if not f.startswith("process ")], int(n)


def _print(counter: collections.Counter, total: int, top: int) -> None:
    for key, n in counter.most_common(top):
        print(f"{n / total * 100:5.1f}%  {key[:160]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("collapsed")
    ap.add_argument("--by-file", action="store_true", help="samples by the test file on the stack")
    ap.add_argument("--having", help="only stacks with a frame starting so")
    ap.add_argument("--below", help="split the samples below the first frame starting so")
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args(argv)

    total = 0
    procs: collections.Counter = collections.Counter()
    functions: collections.Counter = collections.Counter()
    split: collections.Counter = collections.Counter()
    for proc, frames, n in stacks(args.collapsed):
        total += n
        if args.having and not any(f.startswith(args.having) for f in frames):
            continue
        if args.below:
            at = next((i for i, f in enumerate(frames) if f.startswith(args.below)), None)
            if at is not None:
                split[";".join(frames[at + 1:at + 1 + args.depth]) or "<self>"] += n
            continue
        if args.by_file:
            m = TEST_FILE.search(";".join(frames))
            split[m.group(1) if m else _kind(proc)] += n
            continue
        procs[_kind(proc)] += n
        for f in set(frames):
            functions[f] += n
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} samples")
    if args.below or args.by_file:
        _print(split, total, args.top)
        return 0
    print("-- by process")
    _print(procs, total, args.top)
    print("-- by function, inclusive")
    _print(functions, total, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
