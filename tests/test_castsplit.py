"""edustat.castsplit: a city's cast runs its columns in two processes (issue 12, round 9). The
frames, notices and problems must be exactly those of the cast in one process, whichever
process casts a column, and a child that dies costs only time."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from edustat import castsplit, isolate, pipeline
from edustat.config import Config
from edustat.submissions import discover
from edustat.synth import generate_city

YEAR, PERIOD = "2022-2023", "dau_nam"


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    inbox = tmp_path_factory.mktemp("cast") / "inbox"
    # clerks' headers and typos, wrong codes and dates: notices (codes read near a spelling,
    # IDs re-padded) and problems in many columns
    generate_city(inbox, schools=4, seed=21, school_year=YEAR, period=PERIOD, export_share=0.3, error_rate=0.05,
                  clerk_share=0.5, typo_rate=0.05)
    cfg = Config(data_dir=inbox.parent / "data", workers=1, incremental=False)
    return cfg, pipeline.ingest_all(discover(inbox), cfg, YEAR, PERIOD)


def _same(a, b) -> None:
    assert list(a.raw) == list(b.raw) and list(a.typed) == list(b.typed)
    for sid in a.raw:
        pd.testing.assert_frame_equal(a.raw[sid], b.raw[sid], check_exact=True)
        pd.testing.assert_frame_equal(a.typed[sid], b.typed[sid], check_exact=True)
    assert a.notices == b.notices and a.ambiguous == b.ambiguous


def test_a_city_casts_its_columns_in_two_processes_with_the_same_frames(collection, monkeypatch):
    cfg, results = collection
    monkeypatch.setattr(castsplit, "FORCE", False)
    here = pipeline.assemble_all(results, cfg)
    forks = []
    real = isolate.beside

    def spy(fn, *a, **k):
        forks.append(fn.__name__)
        return real(fn, *a, **k)

    monkeypatch.setattr(isolate, "beside", spy)
    monkeypatch.setattr(castsplit, "FORCE", None)
    monkeypatch.setattr(castsplit, "MIN_ROWS", 1)
    monkeypatch.setattr(isolate, "second_core_free", lambda: True)
    split = pipeline.assemble_all(results, cfg)
    assert forks == ["_cast_in_child"], "the cast did not use a second process"
    assert len(here.notices) > 0 and any(len(f) for f in here.typed.values())
    _same(split, here)
    # both processes had columns of the learners sheet to cast
    jobs = [(sid, f) for sid, raw in here.raw.items() if sid != "school"
            for f in __import__("schemas").load_contract().sheet(sid).fields if f.id in raw.columns]
    mine, theirs = castsplit._plan(jobs, {sid: raw for sid, raw in here.raw.items() if sid != "school"})
    assert {sid for sid, _ in mine} & {sid for sid, _ in theirs} >= {"learners"}


def test_a_small_collection_or_a_busy_machine_casts_in_one_process(collection, monkeypatch):
    cfg, results = collection
    forks = []
    monkeypatch.setattr(isolate, "beside", lambda fn, *a, **k: forks.append(fn) or (_ for _ in ()).throw(AssertionError))
    pipeline.assemble_all(results, cfg)  # below MIN_ROWS
    monkeypatch.setattr(castsplit, "MIN_ROWS", 1)
    monkeypatch.setattr(isolate, "second_core_free", lambda: False)
    pipeline.assemble_all(results, cfg)
    assert not forks


def test_a_cast_child_that_dies_costs_only_time(collection, monkeypatch):
    cfg, results = collection
    here = pipeline.assemble_all(results, cfg)
    monkeypatch.setattr(castsplit, "FORCE", True)
    monkeypatch.setattr(castsplit, "_cast_in_child", lambda raws, jobs: os._exit(137))  # killed, as by the OOM killer
    _same(pipeline.assemble_all(results, cfg), here)
