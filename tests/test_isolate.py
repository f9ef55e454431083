"""edustat.isolate: a large collection's validation runs in a forked child process (issue 12:
Great Expectations' import and what validation allocates leave the flow's process). The child
must give exactly the issues the process gives, raise what it raises, and say when it died."""
from __future__ import annotations

import os
import signal

import pandas as pd
import pytest

from edustat import isolate, pipeline
from edustat.config import Config
from edustat.synth import generate_city
from edustat.submissions import discover

YEAR, PERIOD = "2022-2023", "dau_nam"


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    inbox = tmp_path_factory.mktemp("iso") / "inbox"
    generate_city(inbox, schools=3, seed=9, school_year=YEAR, period=PERIOD, export_share=0.34, error_rate=0.02)
    cfg = Config(data_dir=inbox.parent / "data", workers=1, incremental=False)
    results = pipeline.ingest_all(discover(inbox), cfg, YEAR, PERIOD)
    return cfg, results, pipeline.assemble_all(results, cfg)


def test_a_large_collection_validates_in_a_child_with_the_same_issues(collection, monkeypatch):
    cfg, results, frames = collection
    here = pipeline.validate_all(results, cfg, YEAR, PERIOD, frames)
    calls = []
    real = isolate.in_child

    def spy(fn, *a, **k):
        calls.append(os.getpid())
        return real(fn, *a, **k)

    monkeypatch.setattr(isolate, "VALIDATE_IN_CHILD_ROWS", 1)
    monkeypatch.setattr(isolate, "in_child", spy)
    there = pipeline.validate_all(results, cfg, YEAR, PERIOD, frames)
    assert calls, "validation did not go to a child"
    assert len(here) > 0 and (here["severity"] == "error").any()
    pd.testing.assert_frame_equal(there, here)


def _boom(kind: str):
    if kind == "raise":
        raise ValueError("Khối '05' không hợp lệ")
    if kind == "unpicklable":
        class Local(Exception):
            pass
        raise Local("không gửi được")
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_child_raises_what_it_raised_and_says_when_it_died():
    assert isolate.in_child(sum, [1, 2, 3]) == 6
    with pytest.raises(ValueError, match="Khối '05'"):
        isolate.in_child(_boom, "raise")
    with pytest.raises(RuntimeError, match="Local: không gửi được"):
        isolate.in_child(_boom, "unpicklable")
    with pytest.raises(isolate.ChildDied, match="exit code -9"):
        isolate.in_child(_boom, "kill")
