"""The end-of-year forms (01-MN-CN, 02-TH-CN, 03-THCS-CN): reconstructions, checked against an
independent pandas count over `core_learners` of a small synthetic end-of-year city."""
from __future__ import annotations

from pathlib import Path

import duckdb
import openpyxl
import pandas as pd
import pytest

from edustat.reports import build_reports, compute_and_check, data_rows, load_form

YEAR, PERIOD = "2022-2023", "cuoi_nam"
FORMS = ("01-MN-CN", "02-TH-CN", "03-THCS-CN")
MEASURES = ("tong", "nu", "dtts", "dtts_nu")


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    """A 7-school end-of-year city (3 MN, 2 TH, 1 THCS, 1 TH+THCS), loaded without Prefect."""
    from edustat import pipeline, store
    from edustat.submissions import discover
    from edustat.config import load_config
    from edustat.synth import generate_city

    root = tmp_path_factory.mktemp("cn")
    generate_city(root / "inbox", schools=7, seed=5, school_year=YEAR, period=PERIOD)
    cfg = load_config(None, root / "data")
    con = store.connect(cfg.db_path)
    try:
        outcome = pipeline.run_collection(con, discover(root / "inbox"), cfg, YEAR, PERIOD, workers=1)
    finally:
        con.close()
    assert outcome.submissions["status"].str.startswith("accepted").all()
    return cfg.db_path


@pytest.fixture(scope="module")
def con(db):
    c = duckdb.connect(str(db))
    yield c
    c.close()


@pytest.fixture(scope="module")
def computed(con):
    return {code: (load_form(code), *compute_and_check(con, load_form(code), YEAR, PERIOD)) for code in FORMS}


@pytest.fixture(scope="module")
def learners(con) -> pd.DataFrame:
    """core_learners of the collection with the school's ownership group (independent of the views)."""
    lr = con.execute("select * from core_learners where school_year = ? and period = ?", [YEAR, PERIOD]).df()
    sc = con.execute("select school_code, ownership_group, levels from core_school where school_year = ? and period = ?",
                     [YEAR, PERIOD]).df()
    return lr.merge(sc, on="school_code", how="inner")


# ---------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("code", FORMS)
def test_definition_is_a_labelled_reconstruction(code):
    form = load_form(code)
    assert form["form_code"] == code and code.isascii()
    assert form["period"] == "cuoi_nam"
    assert form["source"]["kind"] == "reconstruction" and "no original found" in form["source"]["note"]
    codes = [row["code"] for _, row in data_rows(form)]
    assert codes == list(range(1, len(codes) + 1))
    block = form["sheets"][0]["title_block"]["rows"]
    texts = {v for r in block for v in r if v}
    assert {"Kỳ cuối năm học", "(có đến 31 tháng 5 năm báo cáo)", "Sở GDĐT tỉnh………..", "Bộ Giáo dục và Đào tạo"} <= texts
    groups = ["tong_so", *form["groups"]]
    for sheet in form["sheets"]:
        assert sheet["columns"] == [f"{g}.{m}" for g in groups for m in MEASURES]
        assert len(sheet["numbering"]) == 4 + len(sheet["columns"])
        assert all(len(r) == len(sheet["numbering"]) for r in sheet["header"]["rows"])
    reconciled = [row["code"] for _, row in data_rows(form) if row.get("reconcile") == "learners"]
    assert reconciled == [1]


# ---------------------------------------------------------------------------------------
# Identities and reconciliation
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("code", FORMS)
def test_every_check_passes(computed, code):
    form, cells, checks = computed[code]
    assert len(cells) and len(checks)
    bad = checks[~checks["ok"]]
    assert bad.empty, bad.head(10).to_string()
    assert {"rows_sum_to_total", "sub_row_le_parent", "core_equals_form_learners",
            "submission_equals_core"} <= set(checks["check_name"])


# ---------------------------------------------------------------------------------------
# Cross-check against pandas over core_learners
# ---------------------------------------------------------------------------------------

def _expected(frame: pd.DataFrame, groups: list[str]) -> dict[str, float]:
    grp = frame["ownership_group"].where(frame["ownership_group"].isin(groups), "tu_thuc")
    out = {}
    for g in ["tong_so", *groups]:
        sub = frame if g == "tong_so" else frame[grp == g]
        out[f"{g}.tong"] = float(len(sub))
        out[f"{g}.nu"] = float(sub["is_female"].sum())
        out[f"{g}.dtts"] = float(sub["is_dtts"].sum())
        out[f"{g}.dtts_nu"] = float((sub["is_dtts"] & sub["is_female"]).sum())
    return out


def _assert_row(computed, code: str, row_code: int, frame: pd.DataFrame):
    form, cells, _ = computed[code]
    for scope in cells["scope"].unique():
        part = frame if scope == "city" else frame[frame["school_code"] == scope]
        got = cells[(cells["scope"] == scope) & (cells["row_code"] == row_code)].set_index("column_key")["value"].to_dict()
        assert got == _expected(part, form["groups"]), f"{code} row {row_code} scope {scope}"


def _row_code(code: str, label: str, occurrence: int = 0, after: int = 0) -> int:
    hits = [row["code"] for _, row in data_rows(load_form(code)) if row["label"] == label and row["code"] > after]
    return hits[occurrence]


def test_th_rows_match_pandas(computed, learners):
    th = learners[learners["level"] == "TH"]
    enrolled = th[th["is_enrolled"]]
    code = "02-TH-CN"
    _assert_row(computed, code, 1, enrolled)
    for g in range(1, 6):
        _assert_row(computed, code, 1 + g, enrolled[enrolled["grade_number"] == g])
    for i, c in enumerate("1234"):  # HTXS/HTT/HT/CHT toàn cấp, then lớp 3 block
        _assert_row(computed, code, 7 + i, enrolled[enrolled["year_result"] == c])
        g3 = enrolled[(enrolled["grade_number"] == 3) & (enrolled["year_result"] == c)]
        _assert_row(computed, code, 11 + 8 + i, g3)
    _assert_row(computed, code, _row_code(code, "Học sinh lớp 5 hoàn thành chương trình tiểu học"),
                enrolled[(enrolled["grade_number"] == 5) & (enrolled["completed_primary"] == 1)])
    retained = _row_code(code, "Học sinh lưu ban (ở lại lớp)")
    _assert_row(computed, code, retained, enrolled[enrolled["outcome"] == "3"])
    _assert_row(computed, code, retained + 1, enrolled[(enrolled["outcome"] == "3") & (enrolled["grade_number"] == 1)])
    drop = th[th["status"].isin(["05", "09"])]
    _assert_row(computed, code, _row_code(code, "Học sinh bỏ học trong năm học"), drop)
    _assert_row(computed, code, _row_code(code, "Học sinh chuyển đi trong năm học"), th[th["status"].isin(["04", "08"])])


def test_th_assessment_covers_every_enrolled_pupil_in_clean_data(computed):
    """The form asserts only `within` for the categories (a result may be blank where an office
    relaxes the required rule); on clean data they do add up to each grade."""
    _, cells, _ = computed["02-TH-CN"]
    v = cells.set_index(["scope", "row_code", "column_key"])["value"]
    for g in range(1, 6):
        first = 11 + 4 * (g - 1)
        assert sum(v[("city", first + i, "tong_so.tong")] for i in range(4)) == v[("city", 1 + g, "tong_so.tong")]


def test_thcs_rows_match_pandas(computed, learners):
    thcs = learners[learners["level"] == "THCS"]
    enrolled = thcs[thcs["is_enrolled"]]
    code = "03-THCS-CN"
    _assert_row(computed, code, 1, enrolled)
    new = enrolled[enrolled["assessment_scale"] == "new"]
    old = enrolled[enrolled["assessment_scale"] == "old"]
    # the notes' claim for 2022-2023: grades 6–7 on TT 22/2021, 8–9 on TT 58/2011
    assert set(new["grade"]) == {"06", "07"} and set(old["grade"]) == {"08", "09"}
    _assert_row(computed, code, 6, new)
    for i, c in enumerate("1234"):
        _assert_row(computed, code, 7 + i, new[new["conduct_code"] == c])
        _assert_row(computed, code, 11 + i, new[new["learning_code"] == c])
    _assert_row(computed, code, 15, old)
    for i, c in enumerate("1234"):
        _assert_row(computed, code, 16 + i, old[old["conduct_code"] == c])
    for i, c in enumerate("12345"):
        _assert_row(computed, code, 20 + i, old[old["learning_code"] == c])
    # labels as the scale's code lists (conduct/learning were submitted as labels)
    assert set(new.loc[new["conduct_code"] == "3", "conduct"]) <= {"Đạt"}
    assert set(old.loc[old["learning_code"] == "3", "learning"]) <= {"Trung bình"}
    grad = _row_code(code, "Học sinh lớp 9 được công nhận tốt nghiệp THCS")
    g9 = enrolled[(enrolled["grade_number"] == 9) & (enrolled["graduated"] == 1)]
    _assert_row(computed, code, grad, g9)
    for i, c in enumerate("123"):
        _assert_row(computed, code, grad + 1 + i, g9[g9["graduation_rank"] == c])
    _assert_row(computed, code, _row_code(code, "- Học sinh Giỏi"), enrolled[enrolled["title"] == "2"])
    drop = thcs[thcs["status"].isin(["05", "09"])]
    first = _row_code(code, "Học sinh bỏ học trong năm học")
    _assert_row(computed, code, first, drop)
    _assert_row(computed, code, _row_code(code, "- Chuyển sang học nghề"), drop[drop["dropout_reason"] == "08"])


@pytest.mark.parametrize("code", FORMS)
def test_dropout_reasons_add_up_to_the_dropouts(computed, code):
    form, cells, _ = computed[code]
    rows = [row for _, row in data_rows(form)]
    drop = next(r["code"] for r in rows if r["where"] == "status in ('05', '09')")
    reasons = [r["code"] for r in rows if "dropout_reason" in r["where"]]
    assert len(reasons) >= 5
    v = cells.set_index(["scope", "row_code", "column_key"])["value"]
    for scope in cells["scope"].unique():
        for key in form["sheets"][0]["columns"]:
            assert sum(v[(scope, r, key)] for r in reasons) == v[(scope, drop, key)]


def test_mn_rows_match_pandas(computed, learners):
    mn = learners[learners["level"] == "MN"]
    enrolled = mn[mn["is_enrolled"]]
    code = "01-MN-CN"
    _assert_row(computed, code, 1, enrolled)
    _assert_row(computed, code, 2, enrolled[enrolled["care_level"] == "nha_tre"])
    mg = enrolled[enrolled["care_level"] == "mau_giao"]
    _assert_row(computed, code, 3, mg)
    _assert_row(computed, code, 4, mg[mg["age"] == 5])
    _assert_row(computed, code, 5, mg[mg["mn_completed_programme"] == 1])
    _assert_row(computed, code, 6, mg[(mg["mn_completed_programme"] == 1) & (mg["age"] == 5)])
    for first, care in ((7, "nha_tre"), (12, "mau_giao")):
        chk = enrolled[(enrolled["care_level"] == care) & (enrolled["health_checked"] == 1)]
        _assert_row(computed, code, first, chk)
        for i, c in enumerate(["01", "02", "03", "04"]):
            _assert_row(computed, code, first + 1 + i, chk[chk["nutrition_status"] == c])
    _assert_row(computed, code, 17, mn[mn["status"].isin(["05", "09"])])
    _assert_row(computed, code, _row_code(code, "Trẻ em chuyển đi trong năm học"), mn[mn["status"].isin(["04", "08"])])


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------

def test_rendered_workbooks(con, computed, tmp_path):
    res = build_reports(con, tmp_path, YEAR, PERIOD, forms=list(FORMS))
    assert res.failed_checks == 0 and set(res.forms) == set(FORMS)
    for code in FORMS:
        form, cells, _ = computed[code]
        wb = openpyxl.load_workbook(tmp_path / YEAR / PERIOD / f"{code}_city.xlsx")
        assert wb.sheetnames == [s["name"] for s in form["sheets"]] + ["KiemTra"]
        first = wb.worksheets[0]
        block = [first.cell(r, c).value for r in range(1, 5) for c in (2, 4)]
        assert "Kỳ cuối năm học" in block and "Sở GDĐT tỉnh………..".strip() not in block
        assert "Bộ Giáo dục và Đào tạo" not in block  # placeholders replaced by the header
        city = cells[cells["scope"] == "city"].set_index(["row_code", "column_key"])["value"]
        seen = set()
        for sheet, ws in zip(form["sheets"], wb.worksheets):
            for r in ws.iter_rows(values_only=True):
                if isinstance(r[3], int) and r[1] and not str(r[1]).startswith("Mã"):
                    seen.add(r[3])
                    assert list(r[4:4 + len(sheet["columns"])]) == [city[(r[3], k)] for k in sheet["columns"]]
        assert seen == {row["code"] for _, row in data_rows(form)}
        assert "CÁC PHÉP KIỂM TRA KHÔNG ĐẠT" not in [c.value for c in wb["KiemTra"]["A"]]
        assert "tất cả đều đạt" in wb["KiemTra"]["A3"].value
