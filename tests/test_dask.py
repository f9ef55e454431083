"""The same collection flow fanned out on a local Dask cluster (prefect-dask), for a province
that outgrows one machine: the result equals the local run's."""
from __future__ import annotations

import duckdb
import pytest

from edustat.synth import generate_city

pytestmark = pytest.mark.slow


def test_collection_on_a_local_dask_cluster(tmp_path, prefect_harness):
    pytest.importorskip("prefect_dask")
    from prefect_dask import DaskTaskRunner

    from flows.collect import collection_flow

    inbox = tmp_path / "inbox"
    manifest = generate_city(inbox, schools=4, seed=9, school_year="2022-2023", period="dau_nam")
    config = tmp_path / "edustat.yaml"
    config.write_text("task_runner: dask\nworkers: 2\n", encoding="utf-8")
    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True,
                                            "dashboard_address": None})
    summary = collection_flow.with_options(task_runner=runner)(
        school_year="2022-2023", period="dau_nam", inbox=str(inbox), data_dir=str(tmp_path / "data"),
        config_path=str(config), publish=False)
    assert summary["files"] == len(manifest.schools)
    con = duckdb.connect(str(tmp_path / "data" / "curated" / "edustat.duckdb"), read_only=True)
    try:
        learners = con.execute("select count(*) from raw_learners").fetchone()[0]
    finally:
        con.close()
    assert learners == manifest.total_learners
