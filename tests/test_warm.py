"""Served runs start warm (edustat.warm): the runner's flow-run process is forked from a server
that has already imported edustat, Prefect and Great Expectations; it is still a process of its
own, reporting to the real (test-started) Prefect server."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from prefect import flow

from edustat import warm
from edustat.reports import list_forms

pytestmark = pytest.mark.slow


@flow(name="edustat-warm-probe")
def probe(out: str, linger: float = 0.0) -> None:
    """What the run's process had loaded when the flow started, and who forked it."""
    import time
    import multiprocessing

    from edustat import gxfast

    gx_state = {"gx_patched": gxfast.installed(), "gx_cache": gxfast.cache_size()}
    if linger:  # this run is killed in the middle of a validation: its GX cache full
        import great_expectations.expectations as gxe

        scope = gxfast.cached_configurations()  # kept open (referenced) until the kill
        scope.__enter__()
        gxe.ExpectColumnValuesToNotBeNull(column="x").configuration  # noqa: B018 - cached
    # written whole, then renamed: the kill test waits for the file to exist and may kill at once
    partial = Path(out).with_suffix(".partial")
    partial.write_text(json.dumps({
        **gx_state, "gx_cache_now": gxfast.cache_size(),
        "start_method": multiprocessing.get_start_method(),
        "matchers_cached": __import__("schemas.vocabulary").vocabulary.codelist_matcher.cache_info().currsize,
        "form_templates": sorted(__import__("edustat.formfast").formfast._templates),
        "gx_loaded": "great_expectations" in sys.modules, "edustat_loaded": "edustat.pipeline" in sys.modules,
        # the server built every committed expectation's graphs (edustat.warmup) without them
        "deferred": [n for n in ("scipy.stats", "altair") if __import__("edustat.gxload").gxload.is_deferred(n)],
        "gc_frozen": __import__("gc").get_freeze_count(),
        "pid": os.getpid(), "ppid": os.getppid(),
        "sigint_default": __import__("signal").getsignal(__import__("signal").SIGINT) is __import__("signal").default_int_handler,
        "flow_run_id": os.environ.get("PREFECT__FLOW_RUN_ID"),
    }))
    os.replace(partial, out)
    time.sleep(linger)


def test_install_replaces_the_runners_starter_and_only_for_the_pinned_prefect(monkeypatch):
    import prefect
    import prefect.flow_engine as engine
    import prefect.runner._starter_direct as starter

    original = starter.run_flow_in_subprocess
    try:
        assert warm.install() is None
        assert starter.run_flow_in_subprocess is warm.run_flow_in_warm_subprocess
        assert warm.install() is None, "installing twice keeps Prefect's own function underneath"
        assert warm._PREFECT_RUN_IN_SUBPROCESS is engine.run_flow_in_subprocess
    finally:
        starter.run_flow_in_subprocess = original
    monkeypatch.setattr(prefect, "__version__", "3.99.0")
    why = warm.install()
    assert why and "3.99.0" in why, "another Prefect version: runs start cold, and the serve log says why"
    assert starter.run_flow_in_subprocess is original


def _start_probe(out: Path, **params):
    """A probe run registered on the server and started as the served runner starts it."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(probe, parameters={"out": str(out), **params})
    return run, warm.run_flow_in_warm_subprocess(probe, flow_run=run)


def _completed(run) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run.id).state.is_completed()


def test_a_flow_run_forked_warm_completes_against_the_server(prefect_harness, tmp_path):
    assert warm.install() is None
    server_pid = warm.start()
    # Ctrl+C reaches the warm server too (the terminal's process group), maybe while it imports:
    # it goes on (no KeyboardInterrupt traceback, no server started again for the run)
    os.kill(server_pid, __import__("signal").SIGINT)
    out = tmp_path / "probe.json"
    run, process = _start_probe(out)
    process.join(300)
    assert process.exitcode == 0
    seen = json.loads(out.read_text())
    assert seen["gx_loaded"] and seen["edustat_loaded"], "the run's process found GX and edustat already imported"
    assert seen["deferred"] == ["scipy.stats", "altair"], "imported by GX in the server, never loaded (edustat.gxload)"
    assert seen["matchers_cached"] > 10, "the code lists' vocabulary was built once, in the warm server"
    assert seen["form_templates"] == sorted(list_forms()), "each built-in form's workbook layout made once, in the server"
    # the server's imports are out of the run's full garbage collections (edustat.warmup.freeze)
    assert seen["gc_frozen"] > 100_000, seen["gc_frozen"]
    assert seen["gx_patched"] and seen["gx_cache"] is None, "GX patched once in the server, no cache carried"
    assert seen["ppid"] == server_pid, "forked by the warm server, not spawned"
    assert seen["pid"] not in (os.getpid(), server_pid), "a process of its own"
    assert seen["start_method"] == "fork", "its pools fork from the run's process, as under `edustat run`"
    assert seen["sigint_default"], "a run stops on Ctrl+C (KeyboardInterrupt) as any Python process"
    assert _completed(run)


def test_a_killed_run_ends_alone_and_the_next_one_starts_warm(prefect_harness, tmp_path):
    """kill -9 of a served run's process: that run ends, the warm server stays and forks the next."""
    import signal
    import time

    assert warm.install() is None
    server_pid = warm.start()
    first = tmp_path / "first.json"
    _, process = _start_probe(first, linger=120)
    deadline = time.monotonic() + 120
    while not first.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.exists(), "the first run started"
    os.kill(process.pid, signal.SIGKILL)
    process.join(60)
    assert process.exitcode == -signal.SIGKILL
    second = tmp_path / "second.json"
    run2, again = _start_probe(second)
    again.join(300)
    assert again.exitcode == 0
    seen = json.loads(second.read_text())
    assert seen["ppid"] == server_pid and seen["gx_loaded"], "forked warm by the same server"
    assert json.loads(first.read_text())["gx_cache_now"] == 1, "the first run died inside a GX validation"
    assert seen["gx_patched"] and seen["gx_cache"] is None, "the next run sees a fresh GX state (edustat.gxfast)"
    assert _completed(run2)
