"""Served flow runs start warm: each run is forked from a process that has already imported
pandas, pyarrow, DuckDB, Prefect, Great Expectations and edustat.

Prefect 3's runner (`edustat serve`) starts every flow run in a new process: a deployment handed
to `serve()` as `python -m prefect.engine`, which loads the flow again from its entrypoint; a
flow handed to `Runner.add_flow` (flows/deploy.py) through `run_flow_in_subprocess`, with
multiprocessing's "spawn". Either way the run imports everything again, ~3 s, plus Great
Expectations' ~2.5 s when it validates: half of what a nightly run with one changed school cost.
Here the runner starts runs with a "forkserver" instead: one server process, started once with
the serve command, imports the modules below (and edustat.warmup builds the repository's own
caches); each run is a fork of it. A run still gets its own process (a crash, a kill -9 or a
leak ends with the run; memory is returned when it ends; a cancel signals that process, as
before), the same environment and the same Prefect engine entry point; only the imports are
already done. Inside the run, multiprocessing's default is set back to "fork", so its own pools
are its children, as under `edustat run`.

The forkserver imports modules only: no Python thread, file, connection or client is opened
there (a fork copies the forking thread alone). The native threads the imports start (numpy's
BLAS pool, Arrow's jemalloc background thread) register fork handlers; the flow itself already
forks from a process holding them (edustat.isolate, the read workers). Modules added to PRELOAD
must not open anything at import time. A module that fails to import there is skipped by
multiprocessing without a word: the run then imports it itself (slower, not wrong);
tests/test_warm.py checks that GX, edustat and the vocabulary are there.

Prefect's code names its direct starter's module-level `run_flow_in_subprocess` as the point to
patch (prefect/runner/_starter_direct.py: "patch the module to override"). `install()` replaces
it with a wrapper that hands Prefect's own function a forkserver context in place of "spawn";
it checks the pinned Prefect version and the names it relies on, and otherwise leaves Prefect
as it is (runs start cold, and the serve log says why).
"""
from __future__ import annotations

import multiprocessing
import signal
import threading
from typing import Any

PREFECT_VERSION = "3.9.1"  # the version whose runner internals install() was checked against
PRELOAD = (
    "numpy", "pandas", "pyarrow", "pyarrow.compute", "pyarrow.parquet", "duckdb", "fastexcel", "openpyxl",
    "xlsxwriter", "prefect", "prefect.flow_engine", "prefect.task_engine", "prefect.runtime",
    "prefect.client.orchestration",
    "edustat.gxload",  # before GX: SciPy's statistics and Altair, which our suites never use, stay lazy
    "great_expectations", "great_expectations.expectations",
    "edustat.expectations", "edustat.pipeline", "edustat.reports", "edustat.formbuild", "edustat.feedback",
    "edustat.feedback_patch", "edustat.formdelta", "edustat.publish", "edustat.publish_delta", "edustat.headstart",
    "edustat.officer", "flows.collect",
    # imported lazily at a run's first task (Prefect's run graph helpers, graphviz) or first
    # near-miss match (rapidfuzz): ~0.1 s of every served run's wall on the shared machine
    "prefect.utilities.visualization", "rapidfuzz", "rapidfuzz.process", "rapidfuzz.distance",
    "anyio._backends._asyncio", "rich._emoji_replace",
    "edustat.warmup",  # builds the repository's own caches (contract, vocabulary, form definitions)
)
_lock = threading.Lock()
_ctx: multiprocessing.context.ForkServerContext | None = None


def context(preload: tuple[str, ...] = PRELOAD) -> multiprocessing.context.ForkServerContext:
    """This process's forkserver context, its server importing `preload` when first used."""
    global _ctx
    with _lock:
        if _ctx is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(list(preload))
            _ctx = ctx
        return _ctx


def start(preload: tuple[str, ...] = PRELOAD) -> int:
    """Start the forkserver now (its imports take seconds: better at serve start than at the
    first run); returns the server's pid."""
    from multiprocessing import forkserver

    context(preload)
    # Ctrl+C in the officer's terminal reaches every process of its group: the forkserver
    # ignores SIGINT only once its imports are done (multiprocessing.forkserver.main), so a
    # Ctrl+C during them printed a KeyboardInterrupt traceback from an import. Started with
    # SIGINT ignored, it inherits that through exec (Python keeps an ignored SIGINT) and ends
    # with this process as before (its alive pipe); each run sets Python's handler back
    # (_run_as_forked), as a run forked from it had.
    main = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        forkserver.ensure_running()
    finally:
        if main:
            signal.signal(signal.SIGINT, before)
    return forkserver._forkserver._forkserver_pid  # noqa: SLF001 — read-only, for logs and tests


def _run_as_forked(target, *args):
    """The run's process, once forked: its own pools and children start as `edustat run`'s do
    (forked from this process, its children: their CPU counts in its usage and they end with
    it); a forkserver's child would otherwise start them from the forkserver too. SIGINT as in
    any Python process (KeyboardInterrupt): the forkserver was started with it ignored (`start`)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    multiprocessing.set_start_method("fork", force=True)
    return target(*args)


class _WarmContext:
    """The forkserver context, whose processes run their target through _run_as_forked."""

    def __init__(self, ctx):
        self._ctx = ctx

    def Process(self, *, target, args=(), **kwargs):  # noqa: N802 - multiprocessing's name
        return self._ctx.Process(target=_run_as_forked, args=(target, *args), **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._ctx, name)


class _Multiprocessing:
    """Stands in for the `multiprocessing` module inside one call of Prefect's
    run_flow_in_subprocess: its get_context("spawn") gives the warm forkserver context."""

    def __init__(self, ctx):
        self._ctx = _WarmContext(ctx)

    def get_context(self, method: str | None = None):
        return self._ctx

    def __getattr__(self, name: str):
        return getattr(multiprocessing, name)


def run_flow_in_warm_subprocess(*args: Any, **kwargs: Any):
    """Prefect's run_flow_in_subprocess (its environment, settings and control-channel handling
    unchanged), with the process forked from the warm server instead of spawned."""
    import prefect.flow_engine as engine

    shim = _Multiprocessing(context())
    with _lock:  # one start at a time: the module attribute is swapped for this call only
        saved = engine.multiprocessing
        engine.multiprocessing = shim  # type: ignore[assignment]
        try:
            return _PREFECT_RUN_IN_SUBPROCESS(*args, **kwargs)
        finally:
            engine.multiprocessing = saved


_PREFECT_RUN_IN_SUBPROCESS = None


def install() -> str | None:
    """Make Prefect's runner start flow runs from the warm forkserver. Returns None when done,
    else why not (the runs then start as Prefect starts them)."""
    global _PREFECT_RUN_IN_SUBPROCESS
    import prefect
    import prefect.flow_engine as engine

    try:
        import prefect.runner._starter_direct as starter
    except ImportError:
        return "prefect.runner._starter_direct không có trong phiên bản Prefect này"
    if prefect.__version__ != PREFECT_VERSION:
        return f"Prefect {prefect.__version__} khác {PREFECT_VERSION} (phiên bản đã kiểm tra)"
    if not (hasattr(starter, "run_flow_in_subprocess") and getattr(engine, "multiprocessing", None) is multiprocessing):
        return "cấu trúc Prefect khác với phiên bản đã kiểm tra"
    if starter.run_flow_in_subprocess is not run_flow_in_warm_subprocess:
        _PREFECT_RUN_IN_SUBPROCESS = engine.run_flow_in_subprocess
        starter.run_flow_in_subprocess = run_flow_in_warm_subprocess
    return None
