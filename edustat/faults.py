"""Named points where a test can make a run crash, pause or fail, through the environment.

The fault-injection tests run the real `edustat run` in a subprocess and need it to die at a
precise place (a stage boundary, inside the load transaction) or to fail the way a full disk
does. Production code calls `point("load:staged")` at such places; without the variables below
a point is a dictionary lookup and nothing else.

- `EDUSTAT_CRASH_AT=<point>[,<point>…]`: SIGKILL the process group at that point (what a power
  cut or the OOM killer does to the run: no `finally`, no rollback, no Prefect state).
- `EDUSTAT_PAUSE_AT=<point>`: create the file named by `EDUSTAT_PAUSE_FILE` and sleep there
  (until killed), so a test can act while the run holds its lock or its transaction.
- `EDUSTAT_FAULT=<point>:<ERRNO>[:<n>]`: raise `OSError(<ERRNO>)` at that point, on its first
  `n` hits in this process only (default: every hit) — e.g. `load:written:EIO:1` fails the
  load's first attempt and lets Prefect's retry succeed; `load:staged:ENOSPC` is a full disk.
"""
from __future__ import annotations

import errno
import os
import signal
import time
from collections import Counter
from pathlib import Path

_hits: Counter = Counter()

# The points, in the order a collection run passes them (documentation; tests iterate it).
POINTS = (
    "find", "read", "cache:written", "cast", "validate", "load",  # start of each task: a stage boundary;
    # cache:written: a cache entry's temp file written, not yet renamed (edustat.incremental)
    "load:staged", "load:written", "load:committed",  # inside the load
    "feedback", "forms", "feedback:written",  # the feedback workers write while the forms are built
    "publish", "publish:written", "summary", "artifacts", "end",
)


def point(name: str) -> None:
    """Crash, pause or fail here if the environment asks for it."""
    crash = os.environ.get("EDUSTAT_CRASH_AT")
    if crash and name in crash.split(","):
        try:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        finally:  # not a group leader's group we may kill: at least this process
            os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get("EDUSTAT_PAUSE_AT")
    if pause and name == pause:
        marker = os.environ.get("EDUSTAT_PAUSE_FILE")
        if marker:
            Path(marker).write_text(str(os.getpid()), encoding="ascii")
        while True:
            time.sleep(3600)
    fault = os.environ.get("EDUSTAT_FAULT")
    if fault:
        parts = fault.rsplit(":", 2)
        # "<point>:<ERRNO>" or "<point>:<ERRNO>:<n>"; a point may itself contain ":"
        if len(parts) == 3 and not parts[2].isdigit():
            parts = [f"{parts[0]}:{parts[1]}", parts[2]]
        where, code = parts[0], parts[1]
        times = int(parts[2]) if len(parts) == 3 else None
        if where == name:
            _hits[name] += 1
            if times is None or _hits[name] <= times:
                import logging

                num = getattr(errno, code)
                logging.getLogger("edustat.faults").warning("injected fault %s at %s (hit %d)", code, name, _hits[name])
                raise OSError(num, f"{os.strerror(num)} (injected at {name})")
