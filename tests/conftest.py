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

# Seconds each test file took (its tests' setup + call + teardown) in `make test` of bbb0609 on
# 2 workers at load 8-11 (3 Dec 2026); only the order matters. `make test` hands the files out
# in collection order (--no-loadscope-reorder), so the longest go first and the short ones
# fill in at the end: handed out by test count, test_period_lock (4 tests, 322 s), test_ui
# (235 s) and test_cli_truth (189 s) started in the last third, test_server (118 s) and
# test_dask (63 s) last, and one worker sat idle 163 s while the other finished them. A file
# not listed runs after the listed ones, in collection order.
FILE_SECONDS = {
    "test_faults.py": 600, "test_incremental.py": 581, "test_forms_delta.py": 334, "test_period_lock.py": 323,
    "test_ui.py": 235, "test_cli_truth.py": 189, "test_bad_inputs.py": 177, "test_privacy.py": 173,
    "test_forms_speed.py": 162, "test_publish_delta.py": 138, "test_rollover.py": 124, "test_render.py": 121,
    "test_server.py": 118, "test_reports.py": 116, "test_gx_cost.py": 114, "test_cross_period.py": 111,
    "test_rules.py": 107, "test_bench_scripts.py": 105, "test_province_cold.py": 100, "test_pipeline.py": 97,
    "test_sql_reports.py": 86, "test_vocabulary.py": 73, "test_adhoc_reports.py": 67, "test_dask.py": 63,
    "test_form_01_mn.py": 61, "test_certification.py": 61, "test_warm.py": 60, "test_form_cn.py": 56,
    "test_feedback_patch.py": 44, "test_synth.py": 42, "test_isolate.py": 41, "test_snapshot_analyst.py": 39,
    "test_feedback.py": 38, "test_codelists.py": 33, "test_formfast.py": 31, "test_publish.py": 25,
    "test_form_02_03.py": 24, "test_lock.py": 24, "test_castsplit.py": 18,
    "test_end_of_year_independent.py": 17, "test_load_reuse.py": 16, "test_reader_speed.py": 14,
    "test_side_by_side.py": 12, "test_template.py": 9,
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
