"""Shared fixtures. Prefect/GX settings make runs offline and quiet (stack-findings §3)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

# Seconds each test file took (its tests' setup + call + teardown, pytest's junit times) in a
# whole run of a7d5ed7 on 2 workers at load 5-10 (3 Dec 2026, round 16), test_faults and
# test_gx_cost scaled by what round 16 cut from them, test_gxload estimated; only the order
# matters. `make test` hands the files out in collection order (--no-loadscope-reorder), so the
# longest go first and the short ones fill in at the end (handed out by test count, the longest
# files started in the last third and one worker sat idle 163 s while the other finished them).
# A file not listed runs after the listed ones, in collection order.
FILE_SECONDS = {
    "test_gx_cost.py": 269, "test_incremental.py": 250, "test_province_cold.py": 241,
    "test_publish_delta.py": 214, "test_rules.py": 198, "test_faults.py": 187, "test_server.py": 162,
    "test_forms_delta.py": 148, "test_cross_period.py": 146, "test_adhoc_reports.py": 133,
    "test_pipeline.py": 132, "test_vocabulary.py": 132, "test_bench_scripts.py": 118,
    "test_period_lock.py": 117, "test_rollover.py": 116, "test_sql_reports.py": 116, "test_ui.py": 102,
    "test_render.py": 98, "test_certification.py": 93, "test_dask.py": 89, "test_reports.py": 80,
    "test_forms_speed.py": 79, "test_form_01_mn.py": 74, "test_feedback_patch.py": 73,
    "test_bad_inputs.py": 67, "test_cli_truth.py": 60, "test_privacy.py": 60, "test_gxload.py": 60,
    "test_warm.py": 55, "test_isolate.py": 53, "test_feedback.py": 48, "test_form_cn.py": 47,
    "test_synth.py": 40, "test_snapshot_analyst.py": 37, "test_publish.py": 32,
    "test_form_02_03.py": 32, "test_load_reuse.py": 31, "test_castsplit.py": 30,
    "test_reader_speed.py": 30, "test_codelists.py": 28, "test_lock.py": 25,
    "test_end_of_year_independent.py": 23, "test_formfast.py": 19, "test_template.py": 18,
    "test_side_by_side.py": 16,
}


@pytest.fixture(scope="session")
def moet_dir() -> Path:
    """../shared/reference/moet, or skip (the reference folder travels beside the repo)."""
    d = SHARED / "reference" / "moet"
    if not d.is_dir():
        pytest.skip(f"reference folder {d} absent: tests against the ministry originals skipped")
    return d


@pytest.fixture(scope="session")
def contract():
    from schemas import load_contract

    return load_contract()


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server for the session's flow runs (started on first use:
    migrations on a fresh SQLite take ~15 s on 2 cores)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def pytest_collection_modifyitems(session, config, items):
    """Test files longest first (FILE_SECONDS); the tests of a file keep their order and stay
    together, so module fixtures are made once as before. Every worker sorts the same
    collection the same way (xdist requires identical collections)."""
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        first.setdefault(item.nodeid.split("::")[0], i)

    def key(item):
        path = item.nodeid.split("::")[0]
        return -FILE_SECONDS.get(path.rsplit("/", 1)[-1], 0), first[path]

    items.sort(key=key)
