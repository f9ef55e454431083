"""`edustat <args>` as a real process of its own, forked from a process that has already imported
what a run imports: the served path's warm start (edustat.warm) for the tests' chains of runs.

Why: each `edustat run` subprocess pays a Python start and ~9–10 CPU s of imports (Prefect,
Great Expectations, pandas) before it reads a file; the kill -9 chain alone starts a dozen.
Here a zygote process per environment imports `edustat.warm.PRELOAD` once (as `edustat serve`'s
forkserver does for the officer's runs) and forks one child per command. The child is a process
of its own, in a session and process group of its own (what SIGKILL of the group hits, as with
`start_new_session=True`), with the caller's environment, working directory, stdin closed and
stdout/stderr to files; it runs `edustat.cli.main` with the arguments and exits through the
interpreter's normal exit (its atexit handlers run: Prefect's log and event flush), so its exit
code — or the signal that killed it — is the command's.

What it does not prove is the console script and what a fresh interpreter does at start (an
import-time warning on stderr, Prefect's settings read from an environment that differs from the
zygote's): a zygote serves only callers whose environment equals the one it was started with,
apart from `PER_RUN` (read by edustat at the moment it acts, never at import), and every test
file using it keeps real `edustat` subprocesses of the same command (see each caller).
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# edustat reads these when it acts (edustat.faults.point), never at import: they may differ per run
PER_RUN = frozenset({"EDUSTAT_CRASH_AT", "EDUSTAT_PAUSE_AT", "EDUSTAT_PAUSE_FILE", "EDUSTAT_FAULT"})

_ZYGOTE = r'''
import importlib, json, os, sys, traceback
from edustat.cli import _prefect_env
_prefect_env()  # as `edustat run` sets it before it imports Prefect
from edustat.warm import PRELOAD
for name in PRELOAD:
    try:
        importlib.import_module(name)
    except Exception:  # the run imports it itself (slower, not wrong), as under edustat serve
        pass
from edustat.cli import main
sys.stdout.write("ready\n"); sys.stdout.flush()
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
            os.dup2(os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(req["env"])
            sys.argv = ["edustat", *req["args"]]
            sys.stdin = open(os.devnull, encoding="utf-8")
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        sys.exit(code)  # the interpreter's own exit: atexit handlers, buffers flushed
    sys.stdout.write(json.dumps({"pid": pid}) + "\n"); sys.stdout.flush()
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n"); sys.stdout.flush()
'''


class Zygote:
    """One pre-imported process started with `env`; `run` forks a command from it (one at a time)."""

    def __init__(self, env: dict[str, str]):
        self.env = {k: v for k, v in env.items() if k not in PER_RUN}
        self._lock = threading.Lock()
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE], env=self.env, cwd=str(ROOT),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        ready = self.proc.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"the zygote did not start: {ready!r} (exit {self.proc.poll()})")

    def serves(self, env: dict[str, str]) -> bool:
        return {k: v for k, v in env.items() if k not in PER_RUN} == self.env

    def run(self, args: list[str], env: dict[str, str], cwd: Path | str = ROOT, timeout: float = 600,
            started=None) -> subprocess.CompletedProcess:
        """`edustat *args` forked from the zygote; `started(pid)` is called once it runs (its pid
        is its process group's id). A timeout kills the group and fails."""
        if not self.serves(env):
            raise ValueError("this zygote was started with another environment: "
                             f"{sorted(set(env.items()) ^ set(self.env.items()))[:6]}")
        with self._lock, tempfile.TemporaryDirectory(prefix="warmrun-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            req = {"args": [str(a) for a in args], "env": dict(env), "cwd": str(cwd), "stdout": str(out),
                   "stderr": str(err)}
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            pid = json.loads(self.proc.stdout.readline())["pid"]
            if started is not None:
                started(pid)
            done: list[int] = []
            reader = threading.Thread(target=lambda: done.append(json.loads(self.proc.stdout.readline())["returncode"]),
                                      daemon=True)
            reader.start()
            reader.join(timeout)
            if reader.is_alive():
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                reader.join(30)
                raise AssertionError(f"edustat {' '.join(map(str, args))} timed out after {timeout} s\n"
                                     f"{out.read_text(encoding='utf-8', errors='replace')[-3000:]}\n"
                                     f"{err.read_text(encoding='utf-8', errors='replace')[-3000:]}")
            return subprocess.CompletedProcess(["edustat", *map(str, args)], done[0],
                                               out.read_text(encoding="utf-8", errors="replace"),
                                               err.read_text(encoding="utf-8", errors="replace"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


_zygotes: list[Zygote] = []


def zygote(env: dict[str, str]) -> Zygote:
    """The zygote of this environment (started on first use, ended with the test process)."""
    for z in _zygotes:
        if z.serves(env) and z.proc.poll() is None:
            return z
    z = Zygote(env)
    if not _zygotes:
        atexit.register(lambda: [x.close() for x in _zygotes])
    _zygotes.append(z)
    return z


def release(env: dict[str, str]) -> None:
    """End the zygote of this environment, if one was started (a test module's teardown: its
    memory is not held for the rest of the session)."""
    for z in [z for z in _zygotes if z.serves(env)]:
        z.close()
        _zygotes.remove(z)
