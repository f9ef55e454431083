"""pipeline.staged_frames: the raw_ frames staged for the load — the files' rows concatenated
once, each row with its file and, when the file had columns outside the contract, those
cells as JSON (only that file's own columns, text cells only)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from edustat.pipeline import staged_frames
from edustat.submissions import FileResult, Frames


def _result(code: str, raw: pd.DataFrame) -> FileResult:
    fr = FileResult(path=Path(f"{code}.xlsx"), sha256=f"hash-{code}", school={"school_code": code}, levels=("TH",))
    fr.raw = {"learners": raw}
    fr.sheet_names = {"learners": "HocSinh"}
    return fr


def test_raw_rows_keep_their_file_and_only_their_own_extra_cells():
    a = pd.DataFrame({"excel_row": [5, 6], "full_name": ["An", "Bình"], "extra:Ghi chú": ["x", None],
                      "extra:SĐT": [None, "0901"]}, dtype="string").astype({"excel_row": "int64"})
    b = pd.DataFrame({"excel_row": [5], "full_name": ["Chi"]}, dtype="string").astype({"excel_row": "int64"})
    c = pd.DataFrame({"excel_row": [7], "extra:SĐT": ["0912"], "full_name": ["Dũng"]},
                     dtype="string").astype({"excel_row": "int64"})
    results = [_result("79000001", a), _result("79000002", b), _result("79000003", c)]
    raw, _ = staged_frames(results, Frames(raw={}, typed={}, notices=[]), "2022-2023")
    got = raw["learners"]
    assert got["full_name"].tolist() == ["An", "Bình", "Chi", "Dũng"]
    assert got["_file"].tolist() == [0, 0, 1, 2]
    assert got["excel_row"].tolist() == [5, 6, 5, 7]
    assert got["school_code"].tolist() == ["79000001", "79000001", "79000002", "79000003"]
    extras = [None if pd.isna(v) else json.loads(v) for v in got["extra_columns"]]
    assert extras == [{"Ghi chú": "x"}, {"SĐT": "0901"}, None, {"SĐT": "0912"}]
    assert not any(col.startswith("extra:") for col in got.columns)


def test_no_extra_columns_no_extra_column():
    b = pd.DataFrame({"excel_row": [5], "full_name": ["Chi"]}, dtype="string").astype({"excel_row": "int64"})
    raw, _ = staged_frames([_result("79000002", b)], Frames(raw={}, typed={}, notices=[]), "2022-2023")
    assert "extra_columns" not in raw["learners"].columns
    assert raw["learners"]["_file"].tolist() == [0]


def _staged_raw_tables(results, frames, cast_raw):
    from edustat.pipeline import staged_sheets
    from edustat.store import arrow_schema, to_arrow
    from schemas import load_contract

    c = load_contract()
    return {sid: to_arrow(raw.assign(school_year="2022-2023", period="dau_nam"), arrow_schema(c.sheet(sid), "raw"))
            for sid, raw, _ in staged_sheets(results, frames, "2022-2023", cast_raw=cast_raw) if raw is not None}


def test_the_cast_steps_stack_stages_the_same_raw_rows():
    """The load stages the cast step's stack of the files (issue 12: not stacked twice): the
    same raw_ rows, extra cells included; a stack of other rows is not taken."""
    from edustat.submissions import assemble
    import edustat.pipeline as pipeline

    a = pd.DataFrame({"excel_row": [5, 6], "full_name": ["An", "Bình"], "extra:Ghi chú": ["x", None],
                      "extra:SĐT": [None, "0901"]}, dtype="string").astype({"excel_row": "int64"})
    b = pd.DataFrame({"excel_row": [5], "full_name": ["Chi"], "sex": ["02"]}, dtype="string").astype({"excel_row": "int64"})
    c = pd.DataFrame({"excel_row": [7], "extra:SĐT": ["0912"], "full_name": ["Dũng"]},
                     dtype="string").astype({"excel_row": "int64"})
    results = [_result("79000001", a), _result("79000002", b), _result("79000003", c)]
    frames = assemble(results)
    taken = []
    real = pipeline._same_rows
    pipeline._same_rows = lambda cast, parts: taken.append(real(cast, parts)) or taken[-1]
    try:
        reused = _staged_raw_tables(results, frames, cast_raw=True)
        assert taken == [True]
        stacked = _staged_raw_tables(results, frames, cast_raw=False)
        assert reused.keys() == stacked.keys() and all(reused[s].equals(stacked[s]) for s in reused)
        assert reused["learners"].column("full_name").to_pylist() == ["An", "Bình", "Chi", "Dũng"]
        # the cast of other files (one fewer): not the rows to stage, stacked anew
        other = assemble([results[0], results[1]])
        again = _staged_raw_tables(results, other, cast_raw=True)
        assert taken[-1] is False
        assert all(again[s].equals(stacked[s]) for s in stacked)
    finally:
        pipeline._same_rows = real
    assert "extra_columns" not in frames.raw["learners"].columns  # the cast's frame itself unchanged
    assert "school_code" not in frames.raw["learners"].columns
