"""The forms delta (issue 12, edustat.formdelta): an incremental build that sums the city's cells
from the stored cells of the unchanged schools gives exactly what a full build gives — every
stored cell and check, every workbook cell and XML part (scripts/compare_forms.py), the recorded
cells digest — after one school changed, a school withdrawn, a school whose change moves the
city's checks (a failed reconciliation, sub-row and female checks), on the sample city and on a
copy damaged with NULLs and contradictions. The delta is refused (and the form computed in full)
when the stored cells are not proven to be the last build's, or a value is not a whole number;
summing without that proof gives a wrong city, which the comparison catches. The cells digest
from kept blocks equals the digest of the whole text."""
from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from pathlib import Path

import duckdb
import pytest

from edustat import formbuild, formdelta
from edustat.config import Config
from test_forms_speed import damage_core  # the same damaged copy as the speed tests

ROOT = Path(__file__).resolve().parents[1]
YEAR, PERIOD = "2022-2023", "dau_nam"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


compare = _script("compare_forms")
delta_script = _script("profile_forms_delta")


def _cfg(data: Path) -> Config:
    return Config(data_dir=data, workers=1, load_policy="load_valid_rows")


def _build(data: Path, incremental: bool):
    con = duckdb.connect(str(_cfg(data).db_path))
    try:
        return formbuild.build(con, _cfg(data), YEAR, PERIOD, incremental=incremental)
    finally:
        con.close()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict[str, Path]:
    """The sample city loaded by the real pipeline, and a copy damaged in core; each primed by
    a first incremental build (every scope, fingerprints recorded)."""
    from edustat import pipeline, store
    from edustat.submissions import discover
    from edustat.synth import generate_city

    work = tmp_path_factory.mktemp("delta")
    inbox = work / "inbox"
    generate_city(inbox, schools=8, seed=12, school_year=YEAR, period=PERIOD, export_share=0.3)
    data = work / "data"
    cfg = _cfg(data)
    con = store.connect(cfg.db_path)
    try:
        pipeline.run_collection(con, discover(inbox), cfg, YEAR, PERIOD, "delta-test", workers=1)
    finally:
        con.close()
    damaged = work / "damaged"
    delta_script.copy_data(data, damaged, reports=False)
    damage_core(damaged / "curated" / "edustat.duckdb")
    for d in (data, damaged):
        first = _build(d, incremental=True)
        assert first.forms and len(first.files) > 3
    return {"city": data, "damaged": damaged}


def _schools(data: Path, level: str | None = None) -> list[str]:
    con = duckdb.connect(str(data / "curated" / "edustat.duckdb"), read_only=True)
    try:
        sql = "select school_code from core_school where school_year = ? and period = ?"
        if level:
            sql += f" and list_contains(string_split(levels, ','), '{level}')"
        return [r[0] for r in con.execute(sql + " order by 1", [YEAR, PERIOD]).fetchall()]
    finally:
        con.close()


def _twin(src: Path, tmp: Path, mutate, monkeypatch=None) -> tuple[object, object, Path, Path]:
    """The same change applied to two copies: an incremental build (the delta) and a full
    build from scratch into an empty reports dir."""
    inc, full = tmp / "inc", tmp / "full"
    delta_script.copy_data(src, inc)
    delta_script.copy_data(src, full, reports=False)
    for d in (inc, full):
        con = duckdb.connect(str(d / "curated" / "edustat.duckdb"))
        try:
            mutate(con)
        finally:
            con.close()
    r_inc = _build(inc, incremental=True)
    r_full = _build(full, incremental=False)
    return r_inc, r_full, inc, full


def _diffs(inc: Path, full: Path, skip_files: set[str] = frozenset()) -> list[str]:
    out = compare.compare_tables(full / "curated" / "edustat.duckdb", inc / "curated" / "edustat.duckdb")
    wb, n, _ = compare.compare_reports(full / "curated" / "reports", inc / "curated" / "reports")
    assert n > 3
    return out + [d for d in wb if not any(s in d for s in skip_files)]


def _change(school: str, withdraw: bool = False):
    return lambda con: delta_script.change_school(con, YEAR, PERIOD, school, withdraw)


@pytest.mark.parametrize("which", ["city", "damaged"])
def test_one_school_changed_the_delta_equals_a_full_build(loaded, tmp_path, which):
    school = _schools(loaded[which])[0]
    r_inc, r_full, inc, full = _twin(loaded[which], tmp_path, _change(school))
    assert r_inc.scopes == ["city", school]
    assert r_inc.delta and all(v is None for v in r_inc.delta.values()), r_inc.delta  # the delta was used
    assert _diffs(inc, full) == []
    assert r_inc.failed_checks == r_full.failed_checks and r_inc.checks == r_full.checks


def test_a_school_withdrawn_the_delta_equals_a_full_build(loaded, tmp_path):
    school = _schools(loaded["city"])[-1]
    had = sorted(p.name for p in (loaded["city"] / "curated" / "reports").rglob(f"*_{school}.xlsx"))
    assert had, "the earlier build wrote the school's own workbooks"
    r_inc, _, inc, full = _twin(loaded["city"], tmp_path, _change(school, withdraw=True))
    assert school in r_inc.scopes and all(v is None for v in r_inc.delta.values()), r_inc.delta
    # the withdrawn school's own workbooks of the earlier build are removed: the folder is what
    # a full build from scratch writes, nothing more
    assert not list((inc / "curated" / "reports").rglob(f"*_{school}.xlsx"))
    assert _diffs(inc, full) == []


def test_a_whole_build_removes_the_workbooks_of_a_school_no_longer_in_core(loaded, tmp_path):
    """`edustat report` (a whole build) over a folder an earlier build filled: a school taken
    out of core since keeps no workbook; every other file is the one the build wrote."""
    school = _schools(loaded["city"])[-1]
    data = tmp_path / "data"
    delta_script.copy_data(loaded["city"], data)
    before = {p.name for p in (data / "curated" / "reports").rglob("*.xlsx")}
    assert any(n.endswith(f"_{school}.xlsx") for n in before)
    con = duckdb.connect(str(data / "curated" / "edustat.duckdb"))
    try:
        _change(school, withdraw=True)(con)
    finally:
        con.close()
    result = _build(data, incremental=False)
    after = {p.name for p in (data / "curated" / "reports").rglob("*.xlsx")}
    assert after == {Path(p).name for p in result.files}
    assert sorted(Path(p).name for p in result.removed) == sorted(n for n in before if n.endswith(f"_{school}.xlsx"))


def test_a_change_that_moves_the_city_checks_equals_a_full_build(loaded, tmp_path):
    """Non-additive outputs: the checks. Learners of a level the school does not declare (the
    city's reconciliation with core fails), more girls than learners in a sub-row is impossible,
    so: every learner of the school female and DTTS — the city's female/DTTS checks and every
    row identity are computed again from the summed cells."""
    th = _schools(loaded["city"], "TH")
    school = th[0]

    def mutate(con):
        con.execute("""update core_learners set level = 'THCS' where school_year = ? and period = ? and school_code = ?
                       and excel_row in (select excel_row from core_learners where school_year = ? and period = ?
                                         and school_code = ? and level = 'TH' order by excel_row limit 2)""",
                    [YEAR, PERIOD, school, YEAR, PERIOD, school])
        con.execute("update core_learners set is_female = true, is_dtts = true where school_year = ? and period = ? "
                    "and school_code = ?", [YEAR, PERIOD, school])
        con.execute("update submission set version = version + 1 where school_year = ? and period = ? "
                    "and school_code = ? and in_core", [YEAR, PERIOD, school])

    r_inc, r_full, inc, full = _twin(loaded["city"], tmp_path, mutate)
    assert all(v is None for v in r_inc.delta.values()), r_inc.delta
    assert _diffs(inc, full) == []
    con = duckdb.connect(str(inc / "curated" / "edustat.duckdb"), read_only=True)
    try:  # the change did move the city's checks: a reconciliation fails in the city
        failed = con.execute("""select count(*) from rpt_form_check where scope = 'city' and not ok
                                and check_name like 'core_equals_form_%'""").fetchone()[0]
    finally:
        con.close()
    assert failed >= 1


def test_stored_cells_not_proven_are_not_summed(loaded, tmp_path):
    """A stored cell of an unchanged school changed by hand: its fingerprint differs from the
    one recorded when it was stored, so the city is computed in full (and equals a full build's
    city); summing it anyway (the proof disabled) gives a wrong city, which the comparison finds."""
    schools = _schools(loaded["city"])
    changed, other = schools[0], schools[1]

    def mutate(con):
        delta_script.change_school(con, YEAR, PERIOD, changed)
        con.execute("""update rpt_form_cell set value = value + 7 where scope = ? and column_key = 'tong_so.tong'
                       and value is not null""", [other])

    r_inc, _, inc, full = _twin(loaded["city"], tmp_path, mutate)
    assert r_inc.delta and all(v and "changed since" in v for k, v in r_inc.delta.items()
                               if other in _schools(loaded["city"], _level(k))), r_inc.delta
    city = _city_diffs(inc, full)
    assert city == []
    assert _recorded_digest_is_the_cells(inc)  # the digest from kept blocks: of the cells as stored


def _recorded_digest_is_the_cells(data: Path) -> bool:
    """The cells digest the last build recorded = the digest of the whole text of the stored cells."""
    con = duckdb.connect(str(data / "curated" / "edustat.duckdb"), read_only=True)
    try:
        recorded, forms = con.execute("select cells_digest, forms from form_build order by built_at desc, build_id desc "
                                      "limit 1").fetchone()
        return recorded == formbuild.cells_digest(con, YEAR, PERIOD, forms)
    finally:
        con.close()


def test_summing_unproven_cells_would_be_caught(loaded, tmp_path, monkeypatch):
    schools = _schools(loaded["city"])
    changed, other = schools[0], schools[1]
    monkeypatch.setattr(formdelta, "_stored_ok", lambda *a, **k: None)  # the proof disabled

    def mutate(con):
        delta_script.change_school(con, YEAR, PERIOD, changed)
        con.execute("""update rpt_form_cell set value = value + 7 where scope = ? and column_key = 'tong_so.tong'
                       and value is not null""", [other])

    r_inc, _, inc, full = _twin(loaded["city"], tmp_path, mutate)
    assert all(v is None for v in r_inc.delta.values())
    assert any("only in" in d or "differs" in d or "≠" in d for d in _city_diffs(inc, full))


def test_a_wrong_aggregation_is_caught(loaded, tmp_path, monkeypatch):
    """The comparison can fail: a delta that sums the '#' (not applicable) cells as zeros
    instead of leaving them empty — a non-additive cell summed — differs from a full build."""
    school = _schools(loaded["city"])[0]
    real = formdelta.compute_and_check_delta

    def wrong(con, form, school_year, period, changed):
        cells, checks, reason = real(con, form, school_year, period, changed)
        city = cells["scope"] == "city"
        cells.loc[city, "value"] = cells.loc[city, "value"].map(lambda v: 0.0 if v is None else v)
        return cells, checks, reason

    monkeypatch.setattr(formdelta, "compute_and_check_delta", wrong)
    # every form summed (none kept as it was): the forms with '#' cells are those of TH and THCS
    monkeypatch.setattr(formdelta, "unchanged_city", lambda *a, **k: None)
    r_inc, _, inc, full = _twin(loaded["city"], tmp_path, _change(school))
    assert all(v is None for v in r_inc.delta.values())
    assert any("rpt_form_cell" in d for d in _diffs(inc, full))


def test_a_value_not_whole_is_computed_in_full(loaded, tmp_path):
    """Stored cells that are not whole numbers (a summed expression of decimals) may sum to
    another last bit in another order: the form is computed in full."""
    schools = _schools(loaded["city"])
    changed, other = schools[0], schools[1]

    def mutate(con):
        delta_script.change_school(con, YEAR, PERIOD, changed)
        con.execute("""update rpt_form_cell set value = value + 0.1 where scope = ? and value is not null""", [other])
        forms = [r[0] for r in con.execute("select distinct form_code from rpt_form_cell where scope = ?",
                                           [other]).fetchall()]
        for f in forms:  # as if the engine had stored them: their fingerprint recorded
            formdelta.record_stored(con, f, YEAR, PERIOD, [other])

    r_inc, _, inc, full = _twin(loaded["city"], tmp_path, mutate)
    reasons = [v for v in r_inc.delta.values() if v]
    assert reasons and all("whole number" in v for v in reasons), r_inc.delta
    assert _city_diffs(inc, full) == []


def _level(form_code: str) -> str:
    return form_code.split("-")[1]


def _city_diffs(inc: Path, full: Path) -> list[str]:
    """The city's cells, checks and workbooks (scopes rebuilt), compared."""
    out = []
    con = duckdb.connect()
    try:
        con.execute(f"attach '{full / 'curated' / 'edustat.duckdb'}' as ref (read_only)")
        con.execute(f"attach '{inc / 'curated' / 'edustat.duckdb'}' as new (read_only)")
        for table, cols in compare.TABLES.items():
            for a, b in (("ref", "new"), ("new", "ref")):
                rows = con.execute(f"select {cols} from {a}.{table} where scope = 'city' except all "
                                   f"select {cols} from {b}.{table} where scope = 'city'").fetchall()
                out += [f"{table}: only in {a}: {r}" for r in rows]
    finally:
        con.close()
    for ref in sorted((full / "curated" / "reports").rglob("*_city.xlsx")):
        out += compare.compare_workbook(ref, inc / "curated" / "reports" / ref.relative_to(full / "curated" / "reports"))
    return out


def test_the_digest_from_kept_blocks_equals_the_whole_text_digest(loaded, tmp_path):
    data = tmp_path / "d"
    delta_script.copy_data(loaded["damaged"], data)
    con = duckdb.connect(str(data / "curated" / "edustat.duckdb"))
    try:
        forms = [r[0] for r in con.execute("select distinct form_code from rpt_form_cell order by 1").fetchall()]

        def both() -> str:
            a = formbuild.cells_digest(con, YEAR, PERIOD, forms, cache=True)
            assert a == formbuild.cells_digest(con, YEAR, PERIOD, forms)
            return a

        first = both()
        assert con.execute("select count(*) from form_cell_block").fetchone()[0] > 1  # blocks kept
        assert both() == first  # from the kept blocks
        school = con.execute("select min(scope) from rpt_form_cell where scope <> 'city'").fetchone()[0]
        con.execute("update rpt_form_cell set value = value + 1 where scope = ? and value is not null", [school])
        changed = both()
        assert changed != first
        con.execute("update rpt_form_cell set value = null where scope = 'city' and row_code = "
                    "(select min(row_code) from rpt_form_cell)")
        con.execute("delete from rpt_form_cell where scope = ?", [school])
        assert both() not in (first, changed)
        zero = con.execute("select row_code, column_key from rpt_form_cell where scope = 'city' and value = 0 "
                           "order by all limit 1").fetchone()
        assert zero is not None
        row = con.execute("select * from rpt_form_cell where scope = 'city' and row_code = ? and column_key = ?",
                          list(zero)).df().assign(value=-0.0)  # DuckDB's own arithmetic gives 0.0; a frame can hold -0.0
        con.execute("delete from rpt_form_cell where scope = 'city' and row_code = ? and column_key = ?", list(zero))
        con.register("_neg", row)
        con.execute("insert into rpt_form_cell select * from _neg")
        con.unregister("_neg")
        assert con.execute("select printf('%.10g', value) from rpt_form_cell where scope = 'city' and row_code = ? "
                           "and column_key = ?", list(zero)).fetchone()[0] == "-0"
        assert both() not in (first, changed)  # 0 and -0 print differently: the block is made again
        con.execute("update form_cell_block set block = 'x' || block")  # a kept block spoilt: its fingerprint
        con.execute("update form_cell_block set n = n + 1")  # no longer matches, so it is made again
        both()
    finally:
        con.close()


def test_forms_without_a_changed_school_run_no_entity_query(loaded, tmp_path, monkeypatch):
    """A primary school changed: only the forms it is in query its rows (the others' restricted
    views are empty, so their entity queries are skipped), and the result is a full build's."""
    from edustat import reports

    levels = {}
    for d in ("TH", "MN", "THCS"):
        for s in _schools(loaded["city"], d):
            levels.setdefault(s, set()).add(d)
    school = next(s for s, lv in sorted(levels.items()) if lv == {"TH"})
    queried: list[str] = []
    real = reports._entity_long

    def counted(con, form, entity, rows):
        queried.append(form["form_code"])
        return real(con, form, entity, rows)

    monkeypatch.setattr(reports, "_entity_long", counted)
    r_inc, _, inc, full = _twin(loaded["city"], tmp_path, _change(school))
    assert r_inc.delta and all(v is None for v in r_inc.delta.values()), r_inc.delta
    # the incremental build queried only the TH form (the full build then queried every form)
    inc_forms = queried[:queried.index(next(f for f in queried if _level(f) != "TH"))] if any(
        _level(f) != "TH" for f in queried) else queried
    assert inc_forms and {_level(f) for f in inc_forms} == {"TH"}
    assert _diffs(inc, full) == []


def _check_form_reference(form: dict, cells):
    """reports.check_form as it was before issue 12 (a DataFrame per check): the oracle."""
    import pandas as pd

    from edustat.reports import _part_groups, data_rows

    cols = ["school_year", "period", "form_code", "scope", "check_name", "row_code", "column_key",
            "expected", "actual", "ok", "message"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    values = cells.assign(value=pd.to_numeric(cells["value"], errors="coerce").astype("float64"))
    wide = values.pivot_table(index=["scope", "row_code"], columns="column_key", values="value", aggfunc="first")
    out: list = []

    def emit(name, key, expected, actual, ok, msg):
        valid = expected.notna() & actual.notna()
        if valid.any():
            idx = expected.index[valid]
            out.append(pd.DataFrame({"scope": idx.get_level_values(0), "row_code": idx.get_level_values(1),
                                     "check_name": name, "column_key": key, "expected": expected[valid].to_numpy(),
                                     "actual": actual[valid].to_numpy(), "ok": ok[valid].to_numpy(), "message": msg}))

    def col(key):
        return wide[key] if key in wide.columns else pd.Series(float("nan"), index=wide.index)

    measures = {k.split(".", 1)[1] for k in wide.columns}
    for m in sorted(measures):
        parts = [f"{g}.{m}" for g in form["groups"] if f"{g}.{m}" in wide.columns]
        if f"tong_so.{m}" in wide.columns and parts:
            total = col(f"tong_so.{m}")
            psum = wide[parts].sum(axis=1, min_count=len(parts)).where(wide[parts].notna().all(axis=1))
            emit("total_equals_groups", f"tong_so.{m}", psum, total, (psum - total).abs() < 1e-9, "Tổng số = tổng các loại hình")
    for g in ["tong_so", *form["groups"]]:
        t, nu, dt_, dtnu = (col(f"{g}.{m}") for m in ("tong", "nu", "dtts", "dtts_nu"))
        emit("female_le_total", f"{g}.nu", t, nu, nu <= t, "Nữ ≤ Tổng số")
        emit("dtts_le_total", f"{g}.dtts", t, dt_, dt_ <= t, "DTTS ≤ Tổng số")
        low = pd.concat([dt_, nu], axis=1).min(axis=1, skipna=False)
        emit("dtts_female_le_min", f"{g}.dtts_nu", low, dtnu, dtnu <= low, "DTTS nữ ≤ min(DTTS, Nữ)")
        contract = [f"{g}.{m}" for m in ("vien_chuc_khong_xac_dinh", "vien_chuc_xac_dinh", "hop_dong_lao_dong")]
        if all(k in wide.columns for k in contract):
            csum = wide[contract].sum(axis=1, min_count=3)
            emit("contracts_le_total", f"{g}.tong", t, csum, csum <= t, "Viên chức + hợp đồng lao động ≤ Tổng số")
        rooms = [f"{g}.{m}" for m in ("kien_co", "ban_kien_co", "tam")]
        if all(k in wide.columns for k in rooms):
            rsum = wide[rooms].sum(axis=1, min_count=3)
            emit("rooms_total", f"{g}.tong", rsum, t, (rsum - t).abs() < 1e-9, "Tổng số = kiên cố + bán kiên cố + tạm")
    long = values.loc[values["value"].notna(), ["scope", "row_code", "column_key", "value"]]
    within = pd.DataFrame([(row["code"], row["within"]) for _, row in data_rows(form) if "within" in row],
                          columns=["row_code", "parent"])
    if len(within):
        w = long.merge(within, on="row_code").merge(
            long.rename(columns={"row_code": "parent", "value": "expected"}), on=["scope", "parent", "column_key"])
        out.append(pd.DataFrame({"scope": w["scope"], "row_code": w["row_code"], "check_name": "sub_row_le_parent",
                                 "column_key": w["column_key"], "expected": w["expected"], "actual": w["value"],
                                 "ok": w["value"] <= w["expected"] + 1e-9,
                                 "message": "Mã số " + w["row_code"].astype(str) + " ≤ mã số " + w["parent"].astype(str)}))
    groups = [(row["code"], gi, p, len(g), ", ".join(map(str, g)))
              for _, row in data_rows(form) for gi, g in enumerate(_part_groups(row)) for p in g]
    if groups:
        pg = pd.DataFrame(groups, columns=["row_code", "gi", "part", "n", "parts"])
        pp = long.rename(columns={"row_code": "part"}).merge(pg, on="part")
        agg = pp.groupby(["scope", "row_code", "gi", "column_key", "n", "parts"], as_index=False).agg(
            expected=("value", "sum"), found=("value", "size"))
        agg = agg[agg["found"] == agg["n"]].merge(long, on=["scope", "row_code", "column_key"])
        out.append(pd.DataFrame({"scope": agg["scope"], "row_code": agg["row_code"], "check_name": "rows_sum_to_total",
                                 "column_key": agg["column_key"], "expected": agg["expected"], "actual": agg["value"],
                                 "ok": (agg["expected"] - agg["value"]).abs() < 1e-9,
                                 "message": "Mã số " + agg["row_code"].astype(str) + " = tổng các mã số " + agg["parts"]}))
    if not out:
        return pd.DataFrame(columns=cols)
    res = pd.concat(out, ignore_index=True)
    res["school_year"] = form.get("school_year")
    res["period"] = None
    res["form_code"] = form["form_code"]
    res["ok"] = res["ok"].astype(bool)
    return res.sort_values(["scope", "row_code", "check_name", "column_key"], kind="stable")[cols].reset_index(drop=True)


@pytest.mark.parametrize("which", ["city", "damaged"])
def test_check_form_equals_a_frame_per_check(loaded, which):
    """reports.check_form (the checks' rows as arrays, one frame) gives the very frame the
    frame-per-check implementation gave — on the stored cells of every scope, as stored
    (None for '#') and perturbed so that every kind of check fails somewhere."""
    import numpy as np
    import pandas as pd

    from edustat import reports

    con = duckdb.connect(str(loaded[which] / "curated" / "edustat.duckdb"), read_only=True)
    try:
        stored = con.execute("select * from rpt_form_cell where school_year = ? and period = ? order by all",
                             [YEAR, PERIOD]).df()
    finally:
        con.close()
    failed = set()
    n = 0
    for code, cells in stored.groupby("form_code"):
        form = {**reports.load_form(code), "school_year": YEAR}
        rng = np.random.default_rng(len(cells))
        bumped = cells.assign(value=cells["value"] + rng.integers(0, 3, len(cells)) * (rng.random(len(cells)) < 0.2))
        for c in (cells, cells.assign(value=cells["value"].astype(object).where(cells["value"].notna(), None)),
                  bumped, cells.iloc[:0]):
            got, want = reports.check_form(form, c), _check_form_reference(form, c)
            pd.testing.assert_frame_equal(got, want)
            failed |= set(got.loc[~got["ok"], "check_name"]) if len(got) else set()
            n += len(got)
    assert n > 1000
    assert {"total_equals_groups", "female_le_total", "rows_sum_to_total", "sub_row_le_parent"} <= failed, failed


def test_hash_text_is_the_hash_of_the_values_one_after_another():
    """formbuild._hash_text hashes an Arrow string array's values in place: sliced arrays,
    empty and Vietnamese values, large strings — the same sha256 as the text joined."""
    import hashlib

    import pyarrow as pa

    values = ["", "01-MN-ĐN,city,1,tong_so.tong,12\n", "", "Trường Mầm non Hoa Sen\n", "x", ""]
    for typ in (pa.string(), pa.large_string()):
        arr = pa.array(values, type=typ)
        for a, b in ((0, len(values)), (1, 4), (2, 3), (3, 3), (0, 1)):
            part = arr.slice(a, b - a)
            h = hashlib.sha256()
            formbuild._hash_text(h, part)
            assert h.hexdigest() == hashlib.sha256("".join(values[a:b]).encode("utf-8")).hexdigest(), (typ, a, b)


# ---------------------------------------------------------------------------------------
# A form none of whose schools changed is kept as it is (formdelta.unchanged_city)
# ---------------------------------------------------------------------------------------

kept_script = _script("compare_forms_kept")


def _kept_twin(src: Path, tmp: Path, mutate, monkeypatch) -> tuple[object, list[str], Path]:
    """The same change applied to two copies, each built incrementally: "ref" with keeping
    disabled (every form summed, checked, stored and its city rendered again, as before) and
    "new"; returns new's result and every difference: the results, every rpt_ row, workbook
    (XML part by part), form_scope_stored, form_cell_block, the form scopes done, the build."""
    ref, new = tmp / "ref", tmp / "new"
    for d in (ref, new):
        delta_script.copy_data(src, d)
        con = duckdb.connect(str(d / "curated" / "edustat.duckdb"))
        try:
            mutate(con)
        finally:
            con.close()
    with monkeypatch.context() as m:
        m.setattr(formdelta, "unchanged_city", lambda *a, **k: None)
        r_ref = _build(ref, incremental=True)
    r_new = _build(new, incremental=True)
    assert _recorded_digest_is_the_cells(new)
    out = [f"result.{a}: {getattr(r_ref, a)} ≠ {getattr(r_new, a)}" for a in ("forms", "cells", "checks", "failed_checks",
                                                                           "scopes") if getattr(r_ref, a) != getattr(r_new, a)]
    if [p.relative_to(ref) for p in r_ref.files] != [p.relative_to(new) for p in r_new.files]:
        out.append(f"result.files: {r_ref.files} ≠ {r_new.files}")
    dbs = [d / "curated" / "edustat.duckdb" for d in (ref, new)]
    out += compare.compare_tables(*dbs)
    out += kept_script.compare_db(*dbs, ref, new, YEAR, PERIOD)
    wb, n, _ = compare.compare_reports(ref / "curated" / "reports", new / "curated" / "reports")
    assert n > 3
    return r_new, out + wb, new


def _only_level(data: Path, level: str) -> str:
    levels: dict[str, set] = {}
    for lv in ("MN", "TH", "THCS"):
        for s in _schools(data, lv):
            levels.setdefault(s, set()).add(lv)
    return next(s for s, lv in sorted(levels.items()) if lv == {level})


def _forms(data: Path) -> list[str]:
    con = duckdb.connect(str(data / "curated" / "edustat.duckdb"), read_only=True)
    try:
        return [r[0] for r in con.execute("select distinct form_code from rpt_form_cell order by 1").fetchall()]
    finally:
        con.close()


def test_a_form_without_a_changed_school_is_kept_as_it_was(loaded, tmp_path, monkeypatch):
    """A primary school changed: the preschool and lower-secondary forms are not summed, checked,
    stored or rendered again (their city workbooks are the very files of the last build), and
    everything the build writes or reports is what it is when they are built again."""
    school = _only_level(loaded["city"], "TH")
    r, diffs, new = _kept_twin(loaded["city"], tmp_path, _change(school), monkeypatch)
    assert diffs == []
    others = [f for f in _forms(loaded["city"]) if _level(f) != "TH"]
    assert others and r.kept == others, r.kept
    for f in others:  # not written again: the copy's file, with its time
        path = next((new / "curated" / "reports").rglob(f"{f}_city.xlsx"))
        src = loaded["city"] / "curated" / "reports" / path.relative_to(new / "curated" / "reports")
        assert path.stat().st_mtime_ns == src.stat().st_mtime_ns


def _learner_level(school: str, level: str):
    def mutate(con):
        con.execute("""update core_learners set level = ? where school_year = ? and period = ? and school_code = ?
                       and excel_row = (select min(excel_row) from core_learners where school_year = ? and period = ?
                                        and school_code = ? and is_enrolled)""",
                    [level, YEAR, PERIOD, school, YEAR, PERIOD, school])
        con.execute("update submission set version = version + 1 where school_year = ? and period = ? "
                    "and school_code = ? and in_core", [YEAR, PERIOD, school])
    return mutate


def _levels_set(school: str, levels: str):
    def mutate(con):
        con.execute("update core_school set levels = ? where school_year = ? and period = ? and school_code = ?",
                    [levels, YEAR, PERIOD, school])
        con.execute("update submission set version = version + 1 where school_year = ? and period = ? "
                    "and school_code = ? and in_core", [YEAR, PERIOD, school])
    return mutate


@pytest.mark.parametrize("case", ["learner_of_another_level", "left_the_form", "withdrawn"])
def test_a_form_a_change_reaches_is_built_again(loaded, tmp_path, monkeypatch, case):
    """A change that reaches a form other than the school's own is never kept, and the result
    equals building every form again: a primary school's learner recorded at lower-secondary
    level (the THCS form's reconciliation counts every school's learners of its level); a
    preschool whose level changed to primary (it left the MN form, whose reconciliation counts
    learners and classes of level MN — unchanged: only the school's stored cells in the form
    and the city's sum show it); a lower-secondary school withdrawn."""
    if case == "learner_of_another_level":
        school, reached, untouched = _only_level(loaded["city"], "TH"), "THCS", "MN"
        mutate = _learner_level(school, "THCS")
    elif case == "left_the_form":
        school, reached, untouched = _only_level(loaded["city"], "MN"), "MN", "THCS"
        mutate = _levels_set(school, "TH")
    else:
        school, reached, untouched = _only_level(loaded["city"], "THCS"), "THCS", "MN"
        mutate = _change(school, withdraw=True)
    r, diffs, _ = _kept_twin(loaded["city"], tmp_path, mutate, monkeypatch)
    assert diffs == []
    assert not any(_level(f) == reached for f in r.kept), r.kept
    assert any(_level(f) == untouched for f in r.kept), r.kept  # the form it does not reach is kept


def test_a_city_workbook_not_of_the_stored_cells_is_rendered_again(loaded, tmp_path, monkeypatch):
    """The marker recorded with the last build proves a kept form's city workbook is the render
    of its stored cells and checks: a workbook written since by anything else (here: another
    form's city workbook in its place, as a build killed after rendering and before storing
    could leave) is rendered again."""
    school = _only_level(loaded["city"], "TH")
    mn = next(f for f in _forms(loaded["city"]) if _level(f) == "MN")
    th = next(f for f in _forms(loaded["city"]) if _level(f) == "TH")

    def mutate(con):
        _change(school)(con)
        path = con.execute("select database_list.path from duckdb_databases() database_list "
                           "where database_name = current_database()").fetchone()[0]
        reports_dir = Path(path).parent / "reports"
        target = next(reports_dir.rglob(f"{mn}_city.xlsx"))
        shutil.copyfile(next(reports_dir.rglob(f"{th}_city.xlsx")), target)

    r, diffs, _ = _kept_twin(loaded["city"], tmp_path, mutate, monkeypatch)
    assert diffs == []
    assert mn not in r.kept and r.kept, r.kept


@pytest.mark.parametrize("seed", range(40))
def test_check_form_row_identities_equal_the_merges(seed):
    """check_form's sub-row and rows-sum checks (integer keys, one bincount: issue 12) give the
    frame of the merges and group-by they replaced (`_check_form_reference`) on random forms:
    rows with a parent, rows split into parts several ways (a part in two splits, a repeated
    part), missing cells, fractions and huge values (the group-by's sum then decides), −0.0,
    row codes stored as int32, scopes as str or object, cells in any order."""
    import numpy as np
    import pandas as pd

    from edustat import reports

    rng = np.random.default_rng(seed)
    codes = sorted(rng.choice(np.arange(1, 60), size=int(rng.integers(4, 12)), replace=False).tolist())
    rows = []
    for c in codes:
        row = {"code": int(c)}
        others = [x for x in codes if x != c]
        if rng.random() < 0.4:
            row["within"] = int(rng.choice(others))
        if rng.random() < 0.5:
            splits = [sorted(rng.choice(others, size=int(rng.integers(1, min(4, len(others)) + 1)),
                                        replace=bool(rng.random() < 0.2)).tolist())
                      for _ in range(int(rng.integers(1, 3)))]
            row["parts"] = [[int(p) for p in s] for s in splits] if len(splits) > 1 else [int(p) for p in splits[0]]
        rows.append(row)
    groups = ["cong_lap", "tu_thuc"]
    columns = [f"{g}.{m}" for g in ["tong_so", *groups] for m in ("tong", "nu")]
    form = {"form_code": "R", "school_year": YEAR, "groups": groups, "sheets": [{"columns": columns, "rows": rows}]}
    scopes = ["city", *(f"7470{i:04d}" for i in range(int(rng.integers(1, 5))))]
    kind = rng.integers(0, 4)
    recs = []
    for s in scopes:
        for r in codes:
            for k in columns:
                if rng.random() < 0.08:
                    continue  # a cell not there at all
                v = float(rng.integers(0, 30))
                if rng.random() < 0.1:
                    v = None
                elif kind == 1 and rng.random() < 0.2:
                    v = v + 0.1
                elif kind == 2 and rng.random() < 0.05:
                    v = -0.0
                elif kind == 3 and rng.random() < 0.02:
                    v = 2.0 ** 53 + 2.0
                recs.append((YEAR, PERIOD, "R", s, r, k, v))
    cells = pd.DataFrame(recs, columns=["school_year", "period", "form_code", "scope", "row_code", "column_key", "value"])
    cells = cells.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    variants = [cells, cells.astype({"row_code": "int32"}), cells.astype({"scope": object, "column_key": object}),
                cells.assign(value=cells["value"].astype("float64"))]
    for c in variants:
        pd.testing.assert_frame_equal(reports.check_form(form, c), _check_form_reference(form, c))


def _summed_city_reference(con, form, school_year, period, others, mine):
    """formdelta._summed_city as it was before issue 12's round 14 (a temp table of the
    schools, an empty frame unioned, the sums fetched as a frame): the oracle."""
    import pandas as pd

    from edustat.formdelta import EXACT_LIMIT
    from edustat.reports import data_rows

    if mine is None:
        mine = pd.DataFrame({"row_code": pd.Series(dtype="int64"), "column_key": pd.Series(dtype=object),
                             "value": pd.Series(dtype="float64")})
    con.register("_delta_mine", mine.assign(value=pd.to_numeric(mine["value"]).astype("float64"))[
        ["row_code", "column_key", "value"]])
    con.execute("create or replace temp table _delta_others as select unnest(?::varchar[]) as scope", [others])
    try:
        summed = con.execute("""
            select row_code, column_key, sum(value) as value,
                   coalesce(bool_and(value = round(value)), true) as whole, coalesce(sum(abs(value)), 0) as mass
            from (select row_code, column_key, value from rpt_form_cell
                  where school_year = ? and period = ? and form_code = ? and scope in (select scope from _delta_others)
                  union all select row_code::integer, column_key, value from _delta_mine)
            group by all""", [school_year, period, form["form_code"]]).df()
    finally:
        con.unregister("_delta_mine")
        con.execute("drop table if exists _delta_others")
    if len(summed) and not (bool(summed["whole"].all()) and float(summed["mass"].max()) < EXACT_LIMIT):
        return None
    value = {(int(r), k): v for r, k, v in zip(summed["row_code"], summed["column_key"], summed["value"])}
    city = [(row["code"], key, None if key in set(row.get("na", [])) else
             (0.0 if pd.isna(value.get((row["code"], key), 0.0)) else float(value.get((row["code"], key), 0.0))))
            for sheet, row in data_rows(form) for key in sheet["columns"]]
    city = pd.DataFrame(city, columns=["row_code", "column_key", "value"]).assign(scope="city")
    city["value"] = city["value"].astype(object).where(city["value"].notna(), None)
    return city


@pytest.mark.parametrize("seed", range(30))
def test_summed_city_equals_the_frame_version(seed):
    """formdelta._summed_city (the schools as a parameter, the sums as tuples, no empty frame
    unioned: issue 12) gives what the temp-table and frame version gave — None in the same
    cases (a fraction, a sum ≥ 2**53, NaN stored: pandas' max skipped it) and the same city
    frame otherwise (NULL and '#' cells, −0.0, cells no school has), with and without the
    changed schools' new cells."""
    import numpy as np
    import pandas as pd

    from edustat import formdelta
    from edustat.reports import REPORT_DDL

    rng = np.random.default_rng(seed)
    columns = ["tong_so.tong", "tong_so.nu", "cong_lap.tong"]
    rows = [{"code": c, **({"na": ["tong_so.nu"]} if c == 3 else {})} for c in (1, 2, 3, 4)]
    form = {"form_code": "S", "groups": ["cong_lap"], "sheets": [{"columns": columns, "rows": rows}]}
    con = duckdb.connect()
    con.execute(REPORT_DDL)
    schools = [f"7470{i:04d}" for i in range(int(rng.integers(0, 6)))]
    kind = int(rng.integers(0, 5))
    recs = []
    for s in [*schools, "7479999"]:  # the last: stored but not one of the schools summed
        for r in (1, 2, 3):  # row 4: no school has it
            for k in columns:
                if rng.random() < 0.15:
                    continue
                v = float(rng.integers(0, 20))
                x = rng.random()
                if x < 0.1:
                    v = None
                elif kind == 1 and x < 0.2:
                    v = v + 0.5
                elif kind == 2 and x < 0.2:
                    v = -0.0
                elif kind == 3 and x < 0.12:
                    v = 2.0 ** 53
                elif kind == 4 and x < 0.12:
                    v = float("nan")
                recs.append((YEAR, PERIOD, "S", s, r, k, v))
    cells = pd.DataFrame(recs, columns=["school_year", "period", "form_code", "scope", "row_code", "column_key", "value"])
    con.register("_c", cells)
    con.execute("insert into rpt_form_cell select * from _c")
    mine = pd.DataFrame({"row_code": [1, 2, 4], "column_key": ["tong_so.tong", "cong_lap.tong", "tong_so.tong"],
                         "value": [3, None, 2.0]})
    for m in (None, mine, mine.iloc[:0]):
        got = formdelta._summed_city(con, form, YEAR, PERIOD, schools, m)
        want = _summed_city_reference(con, form, YEAR, PERIOD, schools, m)
        if want is None:
            assert got is None
        else:
            pd.testing.assert_frame_equal(got, want)
            assert [str(v) for v in got["value"]] == [str(v) for v in want["value"]]  # −0.0 kept as it was


@pytest.mark.parametrize("seed", range(40))
def test_assemble_keyed_equals_the_group_bys(seed):
    """reports._assemble (one bincount over integer cell keys: issue 12) gives the frame of the
    group-bys, merges and cross join (`_assemble_grouped`) on random long cells: schools and
    groups not in the form, rows and measures not in the grid, a row on two sheets, '#' cells,
    NaN, −0.0, fractions and huge values (the group-bys then decide), no school, one school
    listed twice."""
    import numpy as np
    import pandas as pd

    from edustat import reports

    rng = np.random.default_rng(seed)
    groups = ["cong_lap", "tu_thuc"]
    measures = ["tong", "nu", "dtts"]
    cols = [f"{g}.{m}" for g in ["tong_so", *groups] for m in measures[:2]]
    rows = [{"code": c, **({"na": [cols[int(rng.integers(0, len(cols)))]]} if rng.random() < 0.3 else {})}
            for c in (1, 2, 3, 5)]
    sheets = [{"columns": cols, "rows": rows}]
    if rng.random() < 0.3:
        sheets.append({"columns": cols[:3], "rows": [{"code": 2}, {"code": 7}]})
    form = {"form_code": "A", "groups": groups, "sheets": sheets}
    pool = [f"7470{i:04d}" for i in range(6)]
    schools = sorted(rng.choice(pool, size=int(rng.integers(0, 5)), replace=False).tolist())
    kind = int(rng.integers(0, 5))
    recs = []
    for _ in range(int(rng.integers(0, 300))):
        v = float(rng.integers(0, 40))
        x = rng.random()
        if x < 0.05:
            v = float("nan")
        elif kind == 1 and x < 0.15:
            v += 0.25
        elif kind == 2 and x < 0.2:
            v = -0.0
        elif kind == 3 and x < 0.08:
            v = 2.0 ** 52
        recs.append((str(rng.choice(pool)), str(rng.choice([*groups, "dan_lap"])), v,
                     int(rng.choice([1, 2, 3, 4, 5, 7])), str(rng.choice(measures))))
    long = pd.DataFrame(recs, columns=["school_code", "grp", "value", "row_code", "measure"]).astype(
        {"row_code": "int64", "value": "float64"})
    for sc in (schools, schools[:1], [], schools + schools[:1]):
        got, want = reports._assemble(form, long, sc), reports._assemble_grouped(form, long, sc)
        pd.testing.assert_frame_equal(got, want)
        assert [repr(v) for v in got["value"]] == [repr(v) for v in want["value"]]  # −0.0 as it was
