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


def test_a_city_validates_its_learners_row_rules_in_a_child_with_the_same_issues(collection, monkeypatch, tmp_path):
    """A collection below VALIDATE_IN_CHILD_ROWS with many learners: the learners' check frame
    and GX suite run in a forked child, the other sheets here; the issues are the same rows in
    the same order, and this process staged the load's frames meanwhile."""
    from edustat import expectations, headstart

    cfg, results, frames = collection
    monkeypatch.setattr(frames, "staged_ahead", None, raising=False)  # an earlier test's head start
    monkeypatch.setattr(isolate, "SPLIT_MIN_ROWS", 10**12)
    here = pipeline.validate_all(results, cfg, YEAR, PERIOD, frames)
    assert getattr(frames, "staged_ahead", None) is None
    log = tmp_path / "runs.txt"
    real = expectations.run_row_rules

    def spy(checks, period, *a, **k):
        with log.open("a") as fh:  # the child's calls leave no other trace in this process
            fh.write(f"{os.getpid()} {','.join(checks)}\n")
        return real(checks, period, *a, **k)

    monkeypatch.setattr(isolate, "SPLIT_MIN_ROWS", 1)
    monkeypatch.setattr(isolate, "second_core_free", lambda: True)  # the test machine may be busy
    monkeypatch.setattr(expectations, "run_row_rules", spy)
    there = pipeline.validate_all(results, cfg, YEAR, PERIOD, frames)
    runs = dict(line.split(" ") for line in log.read_text().splitlines())
    assert runs.get(str(os.getpid())) and "learners" not in runs[str(os.getpid())]
    assert [s for p, s in runs.items() if p != str(os.getpid())] == ["learners"]
    assert len(here) > 0 and (here["severity"] == "error").any()
    pd.testing.assert_frame_equal(there, here)
    made = headstart.take(results, frames, YEAR)  # staged here while the child validated
    assert made is not None
    raw, stg = made
    old_raw, old_stg = pipeline.staged_frames(results, frames, YEAR)
    for a, b in ((raw, old_raw), (stg, old_stg)):
        assert a.keys() == b.keys()
        for sid in a:
            pd.testing.assert_frame_equal(a[sid], b[sid])


def test_split_row_rule_hits_come_back_in_the_sheets_order():
    from edustat.submissions import _in_sheet_order

    rowindex = pd.DataFrame({"_rowkey": range(9), "_file": 0, "sheet_id": ["a"] * 3 + ["b"] * 3 + ["c"] * 3, "excel_row": 2})
    one_run = pd.DataFrame({"_rowkey": [2, 0, 2, 5, 3, 8, 6], "rule_id": ["r1", "r1", "r2", "r1", "r3", "r1", "r2"]})
    mine = one_run[one_run["_rowkey"].isin([0, 2, 6, 8])]
    theirs = one_run[one_run["_rowkey"].isin([3, 5])]
    got = _in_sheet_order([mine, theirs], rowindex, ["a", "b", "c"])
    pd.testing.assert_frame_equal(got, one_run)
    assert _in_sheet_order([None, None], rowindex, ["a"]) is None
    assert _in_sheet_order([mine.iloc[:0], theirs], rowindex, ["a", "b", "c"]) is theirs


def _value(x):
    return x * 2


def test_beside_gives_both_results_and_raises_what_either_side_raised():
    assert isolate.beside(_value, 21, here=lambda: os.getpid()) == (42, os.getpid())
    with pytest.raises(ValueError, match="Khối '05'"):
        isolate.beside(_boom, "raise", here=lambda: 1)
    with pytest.raises(isolate.ChildDied, match="exit code -9"):
        isolate.beside(_boom, "kill", here=lambda: 1)

    def fails_here():
        raise OSError("đĩa đầy")

    with pytest.raises(OSError, match="đĩa đầy"):
        isolate.beside(_value, 1, here=fails_here)
    done = []
    assert isolate.beside(_value, 2, here=lambda: 0, meanwhile=lambda: done.append(os.getpid())) == (4, 0)
    assert done == [os.getpid()]


def test_a_saturated_machine_validates_a_city_in_one_process(collection, monkeypatch):
    """No idle core: a child beside would only compete with this process (slower, not wrong)."""
    cfg, results, frames = collection
    monkeypatch.setattr(frames, "staged_ahead", None, raising=False)
    monkeypatch.setattr(isolate, "SPLIT_MIN_ROWS", 1)
    monkeypatch.setattr(os, "getloadavg", lambda: (6.5, 5.0, 4.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert not isolate.second_core_free()

    def no_child(*a, **k):
        raise AssertionError("forked on a saturated machine")

    monkeypatch.setattr(isolate, "beside", no_child)
    issues = pipeline.validate_all(results, cfg, YEAR, PERIOD, frames)
    assert len(issues) > 0 and getattr(frames, "staged_ahead", None) is None
    monkeypatch.setattr(os, "getloadavg", lambda: (2.2, 1.2, 1.0))  # this process and one other job
    assert isolate.second_core_free()
