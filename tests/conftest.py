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
# fresh clone's `make test` of da04a3a on 2 workers (3 Dec 2026, round 16's head); only the order
# matters. `make test` hands the files out in collection order (--no-loadscope-reorder), so the
# longest go first and the short ones fill in at the end (handed out by test count, the longest
# files started in the last third and one worker sat idle 163 s while the other finished them).
# A file not listed runs after the listed ones, in collection order.
FILE_SECONDS = {
    "test_incremental.py": 276, "test_faults.py": 178, "test_forms_delta.py": 140,
    "test_period_lock.py": 121, "test_gx_cost.py": 119, "test_publish_delta.py": 107, "test_ui.py": 104,
    "test_server.py": 91, "test_privacy.py": 58, "test_cli_truth.py": 58, "test_bad_inputs.py": 49,
    "test_forms_speed.py": 49, "test_province_cold.py": 47, "test_rules.py": 44, "test_rollover.py": 44,
    "test_render.py": 37, "test_cross_period.py": 35, "test_reports.py": 32, "test_bench_scripts.py": 28,
    "test_vocabulary.py": 27, "test_pipeline.py": 27, "test_adhoc_reports.py": 24, "test_dask.py": 24,
    "test_sql_reports.py": 22, "test_feedback_patch.py": 20, "test_feedback.py": 20,
    "test_certification.py": 18, "test_form_01_mn.py": 17, "test_form_cn.py": 16, "test_warm.py": 14,
    "test_publish.py": 14, "test_synth.py": 13, "test_gxload.py": 13, "test_snapshot_analyst.py": 12,
    "test_load_reuse.py": 10, "test_isolate.py": 10, "test_lock.py": 10, "test_codelists.py": 9,
    "test_reader_speed.py": 9, "test_formfast.py": 9, "test_end_of_year_independent.py": 7,
    "test_castsplit.py": 6, "test_side_by_side.py": 5, "test_template.py": 5, "test_form_02_03.py": 4,
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
