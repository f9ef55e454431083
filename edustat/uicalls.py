"""What a run tells the Prefect UI (its name, the officer's artifacts), sent beside the stages
instead of between them.

Each call is one request to the Prefect server: renaming the run after the files are found and
again with the counts at its end, and the three artifacts. Made in line, each holds the run
for one round trip (measured 0.02-0.15 s on the shared 2-core machine, more under load): the
read waits for the first rename, the end of the run for the artifacts and the last rename.
Here they are sent by a background thread of the run's own process, in the run's context
(`contextvars.copy_context()`: the flow's client, the run's and the task's ids, as Prefect's
own thread task runner does), while the flow goes on; `drain()` at the end of the flow waits
for them, so a run is Completed only once the UI shows its final name and its artifacts, and a
failed call is logged in the run's log as before (from the flow's thread: a background thread
has no run to log to).

Renames are sent in the order they were asked for (the last name wins); a call that fails is
a warning, never a failed run (a name or an artifact is not worth the data). With no flow run
(a stage's function called directly, tests), the call is made in line, as before.
"""
from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

# Requests in flight at once: the renames (one after another) and the artifacts beside them.
WORKERS = 3
DRAIN_SECONDS = 60  # a server that does not answer does not hold the run for ever

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pending: list[tuple[Any, str, Future]] = []  # (flow run id, what, its future)
_last_rename: dict[Any, Future] = {}  # per flow run: its last rename


def _flow_run_id():
    """The current flow run's id, or None outside a flow run."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx.flow_run.id if ctx and ctx.flow_run else None


def _submit(what: str, fn: Callable[[], Any]) -> Future | None:
    """Run fn in the background in a copy of the caller's context; None when not in a run."""
    global _pool
    run_id = _flow_run_id()
    if run_id is None:
        fn()
        return None
    ctx = contextvars.copy_context()
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="edustat-ui")
        fut = _pool.submit(ctx.run, fn)
        _pending.append((run_id, what, fut))
    return fut


def rename(name: str) -> None:
    """Rename the current flow run, in the background, after any rename asked for before."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if run_id is None or _flow_run_id() is None:  # no run to rename
        return
    with _lock:
        before = _last_rename.get(_flow_run_id())

    def send() -> None:
        if before is not None:
            try:
                before.result()
            except Exception:  # noqa: BLE001 — reported by drain() for its own call
                pass
        client = get_client(sync_client=True)  # the flow's own client (the copied context)
        client.set_flow_run_name(run_id, name)

    fut = _submit("đổi tên lần chạy", send)
    if fut is not None:
        with _lock:
            _last_rename[_flow_run_id()] = fut


def later(what: str, fn: Callable[[], Any]) -> None:
    """fn (e.g. one artifact's creation) in the background, in the caller's run context."""
    _submit(what, fn)


def drain(timeout: float = DRAIN_SECONDS) -> list[str]:
    """Wait for every call the current flow run sent; returns one line per call that failed or
    did not finish (what, and the exception's type: never its text, which may quote the data)."""
    import time

    run_id = _flow_run_id()
    with _lock:
        mine = [p for p in _pending if p[0] == run_id]
        _pending[:] = [p for p in _pending if p[0] != run_id]
        _last_rename.pop(run_id, None)
    failed, until = [], time.monotonic() + timeout
    for _, what, fut in mine:
        try:
            fut.result(timeout=max(0.0, until - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 — TimeoutError included
            failed.append(f"{what}: {type(exc).__name__}")
    return failed


def pending() -> int:
    """Calls sent and not yet drained (tests)."""
    with _lock:
        return sum(1 for _, _, f in _pending if not f.done())
