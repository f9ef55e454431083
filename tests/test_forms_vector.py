"""The forms step's vectorised helpers (issue 12, round 16) against the pandas operations they
replace, on synthetic cells: check_form's wide grid (`_pivot_first` vs pivot_table, "first"),
its order (`_stable_order` vs a stable sort_values), `scope_values` (blocks vs the loop),
`_first_pairs` (Arrow dictionary codes vs MultiIndex.factorize) and `_as_arrow` (the rows DuckDB
inserts from it vs from the pandas frame). Each case includes what the fast path must not get
wrong: shuffled rows, duplicated keys, NaN/NULL values and keys."""
from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from edustat import reports as R


def _cells(seed: int, scopes: int = 4, shuffle: bool = True, nulls: bool = True, dups: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    keys = ["tong_so.tong", "tong_so.nu", "cong_lap.tong", "cong_lap.nu", "tu_thuc.tong", "tu_thuc.nu"]
    grid = [(s, r, k) for s in ["city", *[f"7471{i:04d}" for i in range(scopes)]] for r in (1, 2, 3, 10) for k in keys]
    cells = pd.DataFrame(grid, columns=["scope", "row_code", "column_key"])
    cells["value"] = rng.integers(0, 50, len(cells)).astype(float).astype(object)
    if nulls:
        cells.loc[cells.index[rng.random(len(cells)) < 0.2], "value"] = None
    if dups:
        extra = cells.sample(10, random_state=seed).assign(value=7.0)
        cells = pd.concat([cells, extra], ignore_index=True)
    if shuffle:
        cells = cells.sample(frac=1, random_state=seed).reset_index(drop=True)
    return cells


@pytest.mark.parametrize("seed", range(6))
def test_pivot_first_equals_pivot_table(seed):
    values = _cells(seed, shuffle=seed % 2 == 0, dups=seed % 3 != 0)
    values = values.assign(value=pd.to_numeric(values["value"], errors="coerce").astype("float64"))
    wide = values.pivot_table(index=["scope", "row_code"], columns="column_key", values="value", aggfunc="first")
    scope, row, columns, grid = R._pivot_first(values)
    assert scope.equals(wide.index.get_level_values(0)) and scope.dtype == wide.index.get_level_values(0).dtype
    assert row.equals(wide.index.get_level_values(1))
    assert columns == list(wide.columns)
    np.testing.assert_array_equal(grid, wide.to_numpy(dtype="float64", na_value=np.nan))


def test_pivot_first_leaves_no_value_to_pivot_table():
    values = _cells(1).assign(value=np.nan)
    assert R._pivot_first(values) is None


def test_check_form_equals_its_pandas_path(monkeypatch):
    form = {**R.load_form("01-MN-DN"), "school_year": "2022-2023"}
    cells = []
    for _, row in R.data_rows(form):
        for key in ("tong_so.tong", "tong_so.nu", "cong_lap.tong", "cong_lap.nu", "tu_thuc.tong", "tu_thuc.nu"):
            for scope in ("city", "74710001", "74710002"):
                cells.append((scope, row["code"], key, float((row["code"] * 7 + len(key) + len(scope)) % 40)))
    cells = pd.DataFrame(cells, columns=["scope", "row_code", "column_key", "value"]).sample(frac=1, random_state=3)
    cells["value"] = cells["value"].astype(object)
    cells.loc[cells.index[::11], "value"] = None
    fast = R.check_form(form, cells)
    assert len(fast) and not fast["ok"].all()  # the case has failed checks
    monkeypatch.setattr(R, "_pivot_first", lambda values: None)
    monkeypatch.setattr(R, "_stable_order", lambda frame, by: None)
    monkeypatch.setattr(R, "_texts", lambda labels, at: labels[at])
    slow = R.check_form(form, cells)
    pd.testing.assert_frame_equal(fast, slow)
    assert list(fast.dtypes) == list(slow.dtypes)


@pytest.mark.parametrize("seed", range(4))
def test_stable_order_equals_a_stable_sort(seed):
    rng = np.random.default_rng(seed)
    n = 400
    frame = pd.DataFrame({"scope": rng.choice(["city", "74710002", "74710001", "Trường ấ"], n),
                          "row_code": rng.integers(1, 6, n), "check_name": rng.choice(["b", "a", "c"], n),
                          "column_key": rng.choice(["x.nu", "x.tong", "a.tong"], n), "i": np.arange(n)})
    by = ["scope", "row_code", "check_name", "column_key"]
    order = R._stable_order(frame, by)
    assert frame.take(order).reset_index(drop=True).equals(frame.sort_values(by, kind="stable").reset_index(drop=True))
    frame.loc[3, "scope"] = None  # a NULL: sort_values decides (it puts it last)
    assert R._stable_order(frame, by) is None


@pytest.mark.parametrize("shuffle", [False, True])
def test_scope_values_equals_the_loop(shuffle):
    cells = _cells(5, shuffle=shuffle)
    want: dict = {}
    for scope, code, key, value in zip(cells["scope"].tolist(), cells["row_code"].tolist(),
                                       cells["column_key"].tolist(), cells["value"].tolist()):
        want.setdefault(scope, {})[(code, key)] = value
    got = R.scope_values(cells)
    assert list(got) == list(want)
    for scope in want:
        assert list(got[scope].items()) == list(want[scope].items())


def test_first_pairs_equal_multiindex_factorize():
    rng = np.random.default_rng(0)
    left = pa.chunked_array([pa.array(rng.choice(["b", "a", "c", "ấ"], 300).tolist()),
                             pa.array(rng.choice(["b", "d"], 100).tolist())])
    right = pa.array(rng.choice(["cong_lap", "tu_thuc"], 400).tolist())
    gid, n, lv, rv = R._first_pairs(left, right)
    codes, uniq = pd.MultiIndex.from_arrays([left.to_pandas(), right.to_pandas()]).factorize()
    np.testing.assert_array_equal(gid, codes)
    assert n == len(uniq)
    assert list(lv) == list(uniq.get_level_values(0)) and list(rv) == list(uniq.get_level_values(1))
    assert R._first_pairs(pa.array(["a", None]), pa.array(["x", "y"])) is None  # NULL: pandas decides


def test_as_arrow_inserts_the_rows_pandas_inserts():
    checks = pd.DataFrame({"scope": ["city", "74710001", None], "row_code": [1.0, np.nan, 3.0],
                           "expected": [1.0, np.nan, 2.5], "ok": [True, False, True],
                           "message": ["Nữ ≤ Tổng số", None, "x"]})
    con = duckdb.connect()
    con.execute("create table t (scope varchar, row_code integer, expected double, ok boolean, message varchar)")
    con.register("_a", checks)
    con.execute("insert into t select * from _a")
    con.unregister("_a")
    arrow = R._as_arrow(checks)
    assert isinstance(arrow, pa.Table)
    con.register("_b", arrow)
    con.execute("create table u as select * from t limit 0")
    con.execute("insert into u select * from _b")
    assert con.execute("select count(*) from (select * from t except all select * from u)").fetchone()[0] == 0
    assert con.execute("select count(*) from (select * from u except all select * from t)").fetchone()[0] == 0
    assert con.execute("select count(*) from u where expected is null and row_code is null").fetchone()[0] == 1


def test_as_arrow_leaves_a_column_of_mixed_types_to_duckdbs_own_scan():
    """A column Arrow cannot type (numbers and texts mixed): the frame itself is handed back,
    and DuckDB's scan of it inserts the rows as before."""
    frame = pd.DataFrame({"scope": ["city", "74710001"], "value": pd.Series([1, "hai"], dtype=object)})
    assert R._as_arrow(frame) is frame
    con = duckdb.connect()
    con.execute("create table t (scope varchar, value varchar)")
    con.register("_f", R._as_arrow(frame))
    con.execute("insert into t select * from _f")
    assert con.execute("select value from t order by scope").fetchall() == [("hai",), ("1",)]  # 74710001, city
