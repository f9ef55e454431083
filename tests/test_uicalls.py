"""edustat.uicalls: the run's renames and artifacts go to the Prefect server in the background,
in order, linked to their run and task, and the flow waits for them before it ends (a real
flow run against the test-started server)."""
from __future__ import annotations

import threading

import pytest

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_renames_and_artifacts_are_sent_beside_the_run_in_order(monkeypatch):
    from prefect import flow, task
    from prefect.artifacts import create_markdown_artifact
    from prefect.cache_policies import NO_CACHE
    from prefect.client.orchestration import SyncPrefectClient, get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.runtime import flow_run as rt_flow_run

    from edustat import uicalls

    seen: list[str] = []
    first_may_go = threading.Event()
    real = SyncPrefectClient.set_flow_run_name

    def slow_first(self, flow_run_id, name):  # the first rename answers only once the flow went on
        if name == "tên 1":
            first_may_go.wait(10)
        seen.append(f"sent {name}")
        return real(self, flow_run_id, name)

    monkeypatch.setattr(SyncPrefectClient, "set_flow_run_name", slow_first)

    @task(cache_policy=NO_CACHE)
    def stage() -> str:
        from prefect.runtime import task_run

        uicalls.later("thử", lambda: create_markdown_artifact("# thử", key="edustat-uicalls-test"))
        return str(task_run.id)

    @flow
    def probe() -> dict:
        uicalls.rename("tên 1")
        seen.append("flow went on")  # the first rename has not been sent yet: it waits for the event
        task_run_id = stage()
        uicalls.rename("tên 2")  # asked for while the first is still on its way: sent after it
        first_may_go.set()
        failed = uicalls.drain()
        return {"id": str(rt_flow_run.id), "task_run_id": task_run_id, "failed": failed,
                "pending": uicalls.pending()}

    out = probe()
    assert seen == ["flow went on", "sent tên 1", "sent tên 2"]
    assert out["failed"] == [] and out["pending"] == 0
    with get_client(sync_client=True) as c:
        assert c.read_flow_run(out["id"]).name == "tên 2"  # the last name asked for wins
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["edustat-uicalls-test"])))
    assert [(str(a.flow_run_id), str(a.task_run_id)) for a in arts] == [(out["id"], out["task_run_id"])]


def test_a_failed_call_is_reported_by_drain_and_outside_a_run_calls_are_made_in_line():
    from prefect import flow

    from edustat import uicalls

    def boom():
        raise RuntimeError("có dữ liệu riêng tư ở đây")

    @flow
    def probe() -> list[str]:
        uicalls.later("bảng", boom)
        return uicalls.drain()

    assert probe() == ["bảng: RuntimeError"]  # the type, never the text
    done = []
    uicalls.later("ngoài lần chạy", lambda: done.append(1))
    assert done == [1] and uicalls.pending() == 0
