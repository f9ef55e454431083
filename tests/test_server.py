"""The officer's path end to end: a real `prefect server` on a loopback port with a temporary
PREFECT_HOME, `edustat serve` serving the deployments, a run triggered through the API with
parameters, then the forms, the register and the artifacts checked."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from edustat.cli import _wait_healthy
from edustat.procs import start_prefect_server, stop_group
from edustat.synth import generate_city

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]



def _stop(proc: subprocess.Popen, sig: int) -> None:
    """Stop a process group politely, then for good."""
    stop_group(proc, sig)


class _watch_forked_runs:
    """Samples the serve command's process tree while a run goes: the processes whose parent is
    its multiprocessing forkserver (the flow run's process, forked warm)."""

    def __init__(self, serve: subprocess.Popen):
        import threading

        self.forked_runs: set[int] = set()
        self._done = threading.Event()
        self._serve = serve
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._done.is_set():
            try:
                for p in psutil.Process(self._serve.pid).children(recursive=True):
                    try:
                        if "multiprocessing.forkserver" in " ".join(p.parent().cmdline()):
                            self.forked_runs.add(p.pid)
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server-home")
    server, url, env = start_prefect_server(home)
    try:
        assert _wait_healthy(url, 150), "prefect server did not become healthy"
        yield {"url": url, "env": env}
    finally:
        _stop(server, signal.SIGTERM)


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("served")
    data = work / "data"
    serve = subprocess.Popen([str(Path(sys.executable).parent / "edustat"), "serve", "--data-dir", str(data)],
                             env=prefect_server["env"], cwd=str(ROOT), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield {"data": data, "work": work, "serve": serve, **prefect_server}
    finally:
        _stop(serve, signal.SIGINT)


def test_a_run_triggered_through_the_api(served):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    inbox = served["work"] / "inbox"
    manifest = generate_city(inbox, schools=4, seed=5, school_year="2022-2023", period="dau_nam")
    with temporary_settings(updates={PREFECT_API_URL: served["url"]}):
        # the serving process registers the deployment shortly after it starts
        deadline = time.monotonic() + 120
        with get_client(sync_client=True) as client:
            while True:
                try:
                    client.read_deployment_by_name("edustat-collection/thu-thap")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            dep = client.read_deployment_by_name("edustat-collection/thu-thap")
            assert dep.schedules, "the collection deployment carries its schedules"
            assert all(s.schedule.timezone == "Asia/Ho_Chi_Minh" for s in dep.schedules)
        seen = _watch_forked_runs(served["serve"])
        run = run_deployment("edustat-collection/thu-thap", timeout=900, poll_interval=1,
                             parameters={"school_year": "2022-2023", "period": "dau_nam", "inbox": str(inbox)})
        seen.stop()
        assert run.state.is_completed(), run.state
        # the run's process was forked from the serve command's warm server (edustat.warm), not
        # started as a new interpreter
        assert seen.forked_runs, "no flow-run process forked from the warm server was seen"
        with get_client(sync_client=True) as client:
            keys = {"edustat-truong-2022-2023-dau-nam", "edustat-tong-ket-2022-2023-dau-nam", "edustat-bieu-do-2022-2023-dau-nam"}
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=sorted(keys))))
            assert {a.key for a in arts} == keys
            table = next(a for a in arts if a.key == "edustat-truong-2022-2023-dau-nam")
            assert len(table.data if isinstance(table.data, list) else __import__("json").loads(table.data)) == 4
            md = next(a for a in arts if a.key == "edustat-tong-ket-2022-2023-dau-nam").data
            assert "Thu thập số liệu năm học 2022-2023" in md and "hạn nộp" in md or "quá hạn" in md
    db = served["data"] / "curated" / "edustat.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    try:
        subs = con.execute("select count(*) from submission where school_year = '2022-2023'").fetchone()[0]
        cells = con.execute("select count(*) from rpt_form_cell").fetchone()[0]
    finally:
        con.close()
    assert subs == len(manifest.schools)
    assert cells > 0
    forms = list((served["data"] / "curated" / "reports" / "2022-2023" / "dau_nam").glob("*_city.xlsx"))
    assert forms


def test_the_served_run_graph_draws_vietnamese_task_names(prefect_server):
    """The server `start_prefect_server` (like `edustat server`) starts serves edustat's UI
    directory (edustat/prefect_ui.py): the V1 run graph's font has the Vietnamese letters."""
    import urllib.request

    import prefect

    from edustat import prefect_ui

    font_file, _ = prefect_ui.find_font_source(Path(prefect.__ui_static_path__))
    ui = prefect_server["url"].removesuffix("/api")
    with urllib.request.urlopen(f"{ui}/assets/{font_file.name}", timeout=30) as r:
        assert prefect_ui.patched_font_options().encode() in r.read()

