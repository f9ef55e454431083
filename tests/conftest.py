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
