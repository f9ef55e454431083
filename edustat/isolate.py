"""One step run in a forked child process, so that what it imports and allocates is handed back
to the system when it ends instead of staying in the flow's process.

Used for the row and cross-row validation of a large collection: Great Expectations' import
(~150 MiB) and what a province's validation leaves behind (~240 MiB of frames and results) would
otherwise stay in the flow's process through the load, whose peak they raise (issue 12: a
province ≤ 2 GiB). The child is forked, so it reads the parent's frames without copying or
pickling them; only its result (the issue rows) comes back through a pipe. Small collections
validate in the process (a child would pay GX's import again at every run of a test session).

A mid-sized collection (a city) validates in the process, but one sheet's row rules go to a
child (`beside`): the two cores share the work instead of one idling (issue 12, round 8).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
from typing import Any, Callable

# rows (every sheet) from which validation runs in a child: a province (~440 k) does, a city
# (~62 k) does not
VALIDATE_IN_CHILD_ROWS = 150_000
# below it, learner rows from which the learners sheet's row rules (its check frame and GX suite,
# about half of a city's validation) run in a child while this process validates the other
# sheets and stages the load's frames (submissions.validate_collection `aside`): a city (~55 k)
# does, one school or a test collection does not (a fork there costs more than it gives)
SPLIT_SHEET = "learners"
SPLIT_MIN_ROWS = 20_000


def second_core_free() -> bool:
    """Whether a child working beside this process can win wall time: the 1-minute load average
    (this process included) below the number of cores plus one. Measured on 2 cores (round 8), a
    city's validation and staging: at load ~2 (this process and one other job) split 1.3-1.7 s
    vs 2.1-2.9 s in one process; at load 6-7 split 7.6-9.2 s vs 5.8-6.3 s and ~30% more CPU
    (no idle core to win, only two processes competing). In between, not measured: one process."""
    try:
        return os.getloadavg()[0] < (os.cpu_count() or 1) + 1
    except OSError:  # no load average on this OS
        return False


class ChildDied(RuntimeError):
    """The child ended without a result (killed, out of memory)."""


def can_fork() -> bool:
    return "fork" in mp.get_all_start_methods() and not mp.current_process().daemon


def in_child(fn: Callable[..., Any], *args: Any, meanwhile: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) in a forked child; its result or its exception, as if called here.
    Where a fork is not possible (another OS, a daemonic worker) it is simply called here.

    `meanwhile`: work this process does while the child works (the second core), after the
    fork, so the child never sees what it changes. It is a head start, never part of the
    result: if it fails, that is logged and dropped (its consumer must do the work itself), and
    it is skipped where there is no child."""
    if not can_fork():
        return fn(*args, **kwargs)
    child, receive = _start(fn, args, kwargs)
    _head_start(meanwhile, fn)
    return _result(child, receive, fn)


def beside(fn: Callable[..., Any], *args: Any, here: Callable[[], Any],
           meanwhile: Callable[[], Any] | None = None, **kwargs: Any) -> tuple[Any, Any]:
    """(fn(*args, **kwargs) in a forked child, here() in this process at the same time): both
    results, each exception raised as if called here — this process's first (the child is then
    stopped: its result would be dropped). `meanwhile` (a head start, as in `in_child`) runs
    after here(), while the child may still work. Where a fork is not possible: fn, then here,
    in this process, and no head start."""
    if not can_fork():
        return fn(*args, **kwargs), here()
    child, receive = _start(fn, args, kwargs)
    try:
        mine = here()
    except BaseException:
        child.terminate()
        child.join()
        receive.close()
        raise
    _head_start(meanwhile, fn)
    return _result(child, receive, fn), mine


def _start(fn, args, kwargs):
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_run, args=(send, fn, args, kwargs), name=f"edustat-{getattr(fn, '__name__', 'step')}")
    child.start()
    send.close()
    return child, receive


def _head_start(meanwhile, fn) -> None:
    if meanwhile is None:
        return
    try:
        meanwhile()
    except Exception as exc:  # noqa: BLE001 - optional work; the child's result still counts
        logging.getLogger("edustat").warning("work beside the %s child dropped: %s: %s",
                                             getattr(fn, "__name__", "step"), type(exc).__name__, exc)


def _result(child, receive, fn) -> Any:
    try:
        kind, payload = receive.recv()
    except EOFError:
        child.join()
        raise ChildDied(f"{getattr(fn, '__name__', 'step')}: the child process ended without a result "
                        f"(exit code {child.exitcode})") from None
    finally:
        receive.close()
    child.join()
    if kind == "error":
        raise payload
    return payload


def _run(send, fn, args, kwargs) -> None:
    try:
        out = ("ok", fn(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        out = ("error", exc)
    try:
        send.send(out)
    except Exception:  # noqa: BLE001 - an exception (or result) that does not pickle: its text
        err = out[1] if out[0] == "error" else None
        send.send(("error", RuntimeError(f"{type(err).__name__}: {err}" if err is not None
                                         else "result could not be sent back")))
    send.close()
