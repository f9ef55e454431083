"""Issue 12, province cold: the cast and the load's staging stack the files' sheets column by
column (transforms.concat.stack_files), and the load's staged frames are made while validation
runs in its child (edustat.headstart). Outputs must be exactly what they were: the same frames
as pd.concat, the same casting notices, the same issues and the same database — checked on the
hostile-file corpus (files that fail structure, casting, reading) and on hand-made frames that
take the fallback path."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edustat import headstart, isolate, pipeline, store, submissions
from edustat.config import Config
from edustat.submissions import TABLE_SHEETS, active, discover
from edustat.synth import generate_city
from schemas import load_contract
from tests.bad_inputs import build_corpus_city
from transforms.concat import stack_files

YEAR, PERIOD = "2022-2023", "dau_nam"
ROOT = Path(__file__).resolve().parents[1]


def _pandas_stack(parts):
    """What the cast did before: pd.concat of each file's kept columns and its index."""
    return pd.concat([f.iloc[:, keep].assign(_file=i) for f, keep, i in parts], ignore_index=True)


def _old_staged_stack(parts):
    """What staged_frames did before: pd.concat of the parts, `_file` appended last (the new
    code moves `_file` last itself; this returns it last too)."""
    out = pd.concat([f.iloc[:, keep] for f, keep, _ in parts], ignore_index=True)
    out["_file"] = np.concatenate([np.full(len(f), i, dtype="int64") for f, _, i in parts])
    return out


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def _text(values):
    return pd.array(values, dtype="string")


# ---------------------------------------------------------------------------------------
# stack_files on hand-made frames
# ---------------------------------------------------------------------------------------

def test_differing_columns_are_stacked_in_order_of_first_appearance_with_blanks():
    a = pd.DataFrame({"excel_row": [5, 6], "full_name": _text(["An", None]), "grade": _text(["1", "2"])})
    b = pd.DataFrame({"grade": _text(["3"]), "excel_row": [9], "ethnicity": _text(["Kinh"])})
    c = pd.DataFrame({"excel_row": [4], "ethnicity": _text(["Tày"]), "full_name": _text(["Bình"])})
    parts = [(a, [0, 1, 2], 0), (b, [0, 1, 2], 3), (c, [0, 1, 2], 7)]
    got = stack_files(parts)
    _same(got, _pandas_stack(parts))
    assert list(got.columns) == ["excel_row", "full_name", "grade", "_file", "ethnicity"]
    assert got["_file"].tolist() == [0, 0, 3, 7]
    assert got["ethnicity"].isna().tolist() == [True, True, False, False]


def test_kept_positions_leave_the_other_columns_out():
    a = pd.DataFrame({"excel_row": [5], "extra:Ghi chú": _text(["x"]), "full_name": _text(["An"])})
    parts = [(a, [0, 2], 1)]
    _same(stack_files(parts), _pandas_stack(parts))
    assert "extra:Ghi chú" not in stack_files(parts).columns


@pytest.mark.parametrize("odd", ["object column", "int column missing from a file", "python strings",
                                 "float column", "a column named _file"])
def test_frames_the_fast_path_does_not_take_give_what_pandas_gives(odd):
    a = pd.DataFrame({"excel_row": [5, 6], "full_name": _text(["An", "Bình"])})
    b = pd.DataFrame({"excel_row": [7], "full_name": _text(["Chi"])})
    if odd == "object column":
        b["full_name"] = b["full_name"].astype(object)
    elif odd == "int column missing from a file":
        a["count"] = [1, 2]
    elif odd == "python strings":
        b["full_name"] = b["full_name"].astype(pd.StringDtype("python"))
    elif odd == "float column":
        a["count"], b["count"] = [1.5, None], [2.0]
    else:
        a["_file"], b["_file"] = [9, 9], [9]
    parts = [(a, list(range(a.shape[1])), 0), (b, list(range(b.shape[1])), 1)]
    _same(stack_files(parts), _pandas_stack(parts))


# ---------------------------------------------------------------------------------------
# The hostile-file corpus: cast, staging, validation and load as before
# ---------------------------------------------------------------------------------------

def _cells_that_do_not_cast(path: Path) -> None:
    """What a clerk types: a date that does not exist, a count in words, an ID that lost its
    leading zero in Excel (a casting notice), a sex written out in lower case."""
    import openpyxl

    wb = openpyxl.load_workbook(path)
    ws = wb["HocSinh"]
    head = {c.value: c.column for c in ws[1]}
    ws.cell(2, head["Ngày sinh"], "31/02/2011")
    ws.cell(3, head["Số định danh cá nhân"], 74211041407)
    ws.cell(4, head["Giới tính"], "nữ")
    ws.cell(5, head["Khối"], "lớp sáu")
    wb.save(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cold")
    inbox, outside = root / "inbox", root / "outside"
    build_corpus_city(inbox, outside, school_year=YEAR, period=PERIOD, tmp_path_factory=tmp_path_factory)
    # and schools whose cells do not cast (row errors, ministry exports: casting notices)
    generate_city(root / "errors", schools=3, seed=9, school_year=YEAR, period=PERIOD, export_share=0.34,
                  error_rate=0.02)
    _cells_that_do_not_cast(next(p for p in sorted((root / "errors").glob("*.xlsx"))))
    cfg = Config(data_dir=root / "data", workers=1)
    results = pipeline.ingest_all(discover(inbox) + discover(root / "errors"), cfg, YEAR, PERIOD)
    return root, cfg, results


def test_the_corpus_has_files_that_fail_and_files_that_pass(corpus):
    _, _, results = corpus
    assert any(fr.unreadable for fr in results) and any(fr.blocked and not fr.unreadable for fr in results)
    assert sum(active(fr) for fr in results) >= 4


def test_the_corpus_sheets_stack_as_pandas_stacks_them(corpus):
    _, _, results = corpus
    c = load_contract()
    for sid in TABLE_SHEETS:
        ids = {f.id for f in c.sheet(sid).fields}
        parts = [(fr.raw[sid], [j for j, col in enumerate(fr.raw[sid].columns) if col in ids or col == "excel_row"], i)
                 for i, fr in enumerate(results) if active(fr) and sid in fr.raw and len(fr.raw[sid])]
        assert parts
        _same(stack_files(parts), _pandas_stack(parts))


def test_cast_gives_the_frames_and_notices_pandas_concat_gave(corpus, monkeypatch):
    _, cfg, results = corpus
    new = submissions.assemble(results)
    monkeypatch.setattr(submissions, "stack_files", _pandas_stack)
    old = submissions.assemble(results)
    for layer in ("raw", "typed"):
        assert getattr(new, layer).keys() == getattr(old, layer).keys()
        for sid in getattr(new, layer):
            _same(getattr(new, layer)[sid], getattr(old, layer)[sid])
    assert new.notices == old.notices and {n["rule_id"] for n in new.notices}
    # cells that did not cast are in the comparison: written, and NA once typed
    failed = 0
    for sid, typed in new.typed.items():
        for col in typed.columns:
            if col in new.raw[sid] and col not in ("excel_row", "_file", "_rowkey") and typed[col].dtype != "string":
                failed += int((new.raw[sid][col].notna() & typed[col].isna()).sum())
    assert failed > 0
    assert new.ambiguous == old.ambiguous


def test_staged_frames_are_what_they_were(corpus, monkeypatch):
    _, _, results = corpus
    frames = submissions.assemble(results)
    new = pipeline.staged_frames(results, frames, YEAR)
    monkeypatch.setattr(pipeline, "stack_files", _old_staged_stack)
    old = pipeline.staged_frames(results, submissions.assemble(results), YEAR)
    for a, b in zip(new, old):
        assert a.keys() == b.keys()
        for sid in a:
            _same(a[sid], b[sid])
    assert "extra_columns" in new[0]["learners"].columns  # the corpus has columns outside the contract


def _fingerprint(db: Path) -> pd.DataFrame:
    spec = importlib.util.spec_from_file_location("measure_stages", ROOT / "scripts" / "measure_stages.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    con = store.connect(db)
    try:
        return mod.fingerprint(con)
    finally:
        con.close()


def _run_stages(results, data: Path, *, child: bool, monkeypatch) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    cfg = Config(data_dir=data, workers=1)
    seen = {}
    real_take = headstart.take

    def take(*a):
        got = real_take(*a)
        seen["taken"] = got is not None
        return got

    monkeypatch.setattr(isolate, "VALIDATE_IN_CHILD_ROWS", 1 if child else 10**12)
    monkeypatch.setattr(headstart, "take", take)
    frames = pipeline.assemble_all(results, cfg)
    issues = pipeline.validate_all(results, cfg, YEAR, PERIOD, frames)
    seen["ahead"] = getattr(frames, "staged_ahead", None) is not None
    con = store.connect(cfg.db_path)
    try:
        outcome = pipeline.load_all(con, results, issues, cfg, YEAR, PERIOD, "test", frames=frames)
    finally:
        con.close()
    assert getattr(frames, "staged_ahead", None) is None  # taken once, or let go
    return issues, outcome.submissions, seen | {"fp": _fingerprint(cfg.db_path)}


def test_staging_beside_the_validation_child_gives_the_same_issues_and_database(corpus, monkeypatch, tmp_path):
    _, _, results = corpus
    before = _run_stages(results, tmp_path / "inline", child=False, monkeypatch=monkeypatch)
    after = _run_stages(results, tmp_path / "child", child=True, monkeypatch=monkeypatch)
    assert not before[2]["ahead"] and before[2]["taken"] is False
    assert after[2]["ahead"] and after[2]["taken"] is True
    pd.testing.assert_frame_equal(after[0], before[0])
    assert (before[0]["severity"] == "error").any()
    _same(after[2]["fp"], before[2]["fp"])
    keep = ["school_code", "status", "n_errors", "n_warnings", "loaded_rows"]
    pd.testing.assert_frame_equal(after[1][keep], before[1][keep])
    assert set(before[1]["status"]) >= {"accepted", "unreadable", "rejected"}


def test_staged_frames_made_ahead_are_taken_once_and_only_for_their_collection(corpus):
    _, _, results = corpus
    frames = submissions.assemble(results)
    headstart.ahead(results, frames, YEAR)()
    assert headstart.take(results, frames, "2023-2024") is None  # another collection: made again
    headstart.ahead(results, frames, YEAR)()
    assert headstart.take(list(results), frames, YEAR) is None  # not the same results
    headstart.ahead(results, frames, YEAR)()
    raw, stg = headstart.take(results, frames, YEAR)
    assert headstart.take(results, frames, YEAR) is None  # a retried load stages from the top
    old_raw, old_stg = pipeline.staged_frames(results, frames, YEAR)
    for a, b in ((raw, old_raw), (stg, old_stg)):
        for sid in a:
            _same(a[sid], b[sid])
    partial = submissions.assemble(results)
    partial.covers = frozenset({0})  # an incremental run's partial cast: plan_staging decides
    assert headstart.ahead(results, partial, YEAR) is None


def test_a_failure_beside_the_child_is_dropped_and_the_childs_result_counts(caplog):
    box = []

    def fail():
        box.append("parent")
        raise RuntimeError("không đủ bộ nhớ")

    assert isolate.in_child(_child_sees, box, meanwhile=fail) == []  # forked before the parent wrote
    assert box == ["parent"]
    assert "dropped" in caplog.text


def _child_sees(box):
    return list(box)


def test_a_failure_beside_validation_leaves_the_load_to_stage_itself(corpus, monkeypatch, tmp_path):
    _, _, results = corpus
    cfg = Config(data_dir=tmp_path / "data", workers=1)
    monkeypatch.setattr(isolate, "VALIDATE_IN_CHILD_ROWS", 1)

    def broken(*a, **k):
        raise OSError("disk")

    frames = pipeline.assemble_all(results, cfg)
    with monkeypatch.context() as m:
        m.setattr(pipeline, "staged_frames", broken)
        issues = pipeline.validate_all(results, cfg, YEAR, PERIOD, frames)
    assert getattr(frames, "staged_ahead", None) is None
    con = store.connect(cfg.db_path)
    try:
        outcome = pipeline.load_all(con, results, issues, cfg, YEAR, PERIOD, "test", frames=frames)
    finally:
        con.close()
    assert sum(outcome.loaded.values()) > 0


@pytest.mark.skipif(not isolate.can_fork(), reason="no fork on this platform")
def test_the_parent_works_while_the_child_validates():
    """The head start runs in the flow's process, not in the child (it is the second core)."""
    where = []
    isolate.in_child(os.getpid, meanwhile=lambda: where.append(os.getpid()))
    assert where == [os.getpid()]


def test_coded_columns_are_looked_up_as_pandas_map_looked_them_up():
    from transforms.cast import map_text

    text = pd.Series(_text(["Kinh", None, "Tày", "kinh", "Kinh", "Hoa"]), index=[4, 5, 6, 7, 8, 9])
    mapping = {"Kinh": "01", "Tày": "02", "kinh": None, "Hoa": 4}
    want = text.map(mapping, na_action="ignore").astype("string")
    got = map_text(text, mapping)
    pd.testing.assert_series_equal(got, want, check_exact=True)
    assert got.tolist() == ["01", pd.NA, "02", pd.NA, "01", "4"]
    plain = text.astype(object)  # not Arrow-backed: pandas' own map
    pd.testing.assert_series_equal(map_text(plain, mapping), want, check_exact=True)
