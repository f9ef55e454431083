"""Forms 02-TH-ĐN and 03-THCS-ĐN on a small synthetic city: every row defined, every query
runs, the forms' own identities and the reconciliation hold, and a sample of rows equals an
independent pandas computation over the curated tables."""
from __future__ import annotations


import openpyxl
import pandas as pd
import pytest

from edustat import store
from edustat.config import Config
from edustat.reports import build_reports, compute_and_check, data_rows, load_form
from tests.citycache import loaded_city

YEAR, PERIOD = "2022-2023", "dau_nam"
FORMS = ("02-TH-DN", "03-THCS-DN")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """6 schools (seed 7): public TH and THCS, a private TH and a private mountain PTCS (TH+THCS),
    2 preschools; loaded through the real read → validate → load steps (no Prefect)."""
    root = tmp_path_factory.mktemp("forms0203")
    # the session's loaded city, shared with test_sql_reports and test_adhoc_reports (tests/citycache.py)
    loaded_city(root, tmp_path_factory, schools=6, seed=7, school_year=YEAR, period=PERIOD, export_share=0.3,
                load_policy="load_valid_rows", workers=2, run_id="test-city")
    cfg = Config(data_dir=root / "data", load_policy="load_valid_rows", workers=2)
    con = store.connect(cfg.db_path)
    yield con
    con.close()


@pytest.fixture(scope="module")
def computed(db):
    return {code: (load_form(code), *compute_and_check(db, load_form(code), YEAR, PERIOD)) for code in FORMS}


def core(con, table: str) -> pd.DataFrame:
    return con.execute(f"select * from {table} where school_year = ? and period = ?", [YEAR, PERIOD]).df()


def _schools(con, level: str) -> pd.DataFrame:
    s = core(con, "core_school")
    s = s[s["levels"].str.split(",").apply(lambda lv: level in lv)].copy()
    s["grp"] = s["ownership_group"].where(s["ownership_group"] == "cong_lap", "tu_thuc")
    return s


def cell(cells: pd.DataFrame, code: int, key: str = "tong_so.tong", scope: str = "city") -> float:
    hit = cells[(cells["scope"] == scope) & (cells["row_code"] == code) & (cells["column_key"] == key)]["value"]
    assert len(hit) == 1, (code, key, scope)
    return hit.iloc[0]


def code_of(form: dict, label: str, after: int = 0) -> int:
    """The first row code after `after` whose label is `label` (labels repeat across blocks)."""
    return next(r["code"] for _, r in data_rows(form) if r["code"] > after and r["label"] == label)


# ---------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("code", FORMS)
def test_every_row_defined_and_codes_run(code):
    form = load_form(code)
    codes = [r["code"] for _, r in data_rows(form)]
    assert codes == list(range(1, len(codes) + 1))
    assert {r.get("reconcile") for _, r in data_rows(form)} >= {"schools", "classes", "learners", "staff"}
    assert sum(1 for _, r in data_rows(form) if r.get("reconcile")) == 4


def test_thcs_mirrors_th_structure():
    th, thcs = load_form("02-TH-DN"), load_form("03-THCS-DN")
    assert thcs["level"] == "THCS" and thcs["period"] == "dau_nam" and thcs["source"]["kind"] == "reconstruction"
    assert [s["name"] for s in thcs["sheets"]] == [s["name"] for s in th["sheets"]]
    for a, b in zip(th["sheets"], thcs["sheets"]):
        assert a["columns"] == b["columns"] and a["header"] == b["header"] and a["numbering"] == b["numbering"]
    block = [v for r in thcs["sheets"][0]["title_block"]["rows"] for v in r if v]
    assert "Sở GDĐT tỉnh………..".strip() in [v.strip() for v in block] and "Bộ Giáo dục và Đào tạo" in block
    labels = [r["label"] for _, r in data_rows(thcs)]
    for g in range(6, 10):
        assert f"- Lớp {g}" in labels and f"- Học sinh lớp {g}" in labels
        assert f"- Học sinh {g + 5} tuổi học lớp {g}" in labels
    assert "- Dưới 11 tuổi" in labels and "- Trên 14 tuổi" in labels
    vsm = next(r for _, r in data_rows(thcs) if r["label"].startswith("Học sinh dân tộc thiểu số rất ít người"))
    assert set(vsm["na"]) == {f"{g}.{m}" for g in ("tong_so", "cong_lap", "tu_thuc") for m in ("dtts", "dtts_nu")}


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("code", FORMS)
def test_all_checks_pass(computed, code):
    form, cells, checks = computed[code]
    assert len(cells) and len(checks)
    bad = checks[~checks["ok"]]
    assert bad.empty, bad.head(20).to_string()
    names = set(checks["check_name"])
    assert {"rows_sum_to_total", "sub_row_le_parent", "total_equals_groups", "core_equals_form_learners",
            "core_equals_form_staff", "core_equals_form_classes", "core_equals_form_schools"} <= names


@pytest.mark.parametrize("code", FORMS)
def test_other_decompositions_sum(computed, code):
    """The engine checks one `parts` list per row; the other exact splits are checked here:
    pupils by age and by region, vice-principals by region, teachers by age band."""
    form, cells, _ = computed[code]
    rows = {r["code"]: r for _, r in data_rows(form)}
    by_label = lambda lab, after=0: code_of(form, lab, after)  # noqa: E731
    pupils = next(c for c, r in rows.items() if r.get("reconcile") == "learners")
    ages = [c for c, r in rows.items() if r.get("within") == pupils and r.get("where", "").startswith("age ")]
    assert len(ages) == (7 if code == "02-TH-DN" else 6)
    region = [by_label("- Trung du, đồng bằng, thành phố", pupils), by_label("- Miền núi, vùng sâu, hải đảo", pupils)]
    pht = by_label("Phó hiệu trưởng")
    pht_region = [by_label("- Trung du, đồng bằng, thành phố", pht), by_label("- Miền núi vùng sâu, hải đảo", pht)]
    gv = by_label("Giáo viên")
    bands = [c for c, r in rows.items() if r.get("within") == gv]
    assert len(bands) == 6
    for scope in cells["scope"].unique():
        for key in ("tong_so.tong", "tong_so.nu", "cong_lap.tong", "tu_thuc.dtts"):
            for total, parts in ((pupils, ages), (pupils, region), (pht, pht_region), (gv, bands)):
                assert cell(cells, total, key, scope) == sum(cell(cells, p, key, scope) for p in parts), (total, key, scope)


# ---------------------------------------------------------------------------------------
# Independent computation over the core tables
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("code,level,grades", [("02-TH-DN", "TH", range(1, 6)), ("03-THCS-DN", "THCS", range(6, 10))])
def test_rows_match_pandas(db, computed, code, level, grades):
    form, cells, _ = computed[code]
    schools = _schools(db, level)
    assert len(schools) >= 2
    grp = schools.set_index("school_code")["grp"]
    lr = core(db, "core_learners")
    lr = lr[(lr["level"] == level) & lr["is_enrolled"] & lr["school_code"].isin(grp.index)].copy()
    lr["grp"] = lr["school_code"].map(grp)
    st = core(db, "core_staff")
    st = st[(st["level"] == level) & st["is_active"] & st["school_code"].isin(grp.index)].copy()
    st["grp"] = st["school_code"].map(grp)
    cl = core(db, "core_classes")
    cl = cl[(cl["level"] == level) & cl["school_code"].isin(grp.index)]

    assert cell(cells, 1) == len(schools)
    for g in ("cong_lap", "tu_thuc"):
        assert cell(cells, 1, f"{g}.tong") == (schools["grp"] == g).sum()
    classes = next(r["code"] for _, r in data_rows(form) if r.get("reconcile") == "classes")
    assert cell(cells, classes) == len(cl)
    for i, g in enumerate(grades, start=1):
        assert cell(cells, classes + i) == (cl["grade_number"] == g).sum()

    pupils = next(r["code"] for _, r in data_rows(form) if r.get("reconcile") == "learners")
    assert cell(cells, pupils) == len(lr)
    assert cell(cells, pupils, "tong_so.nu") == lr["is_female"].sum()
    assert cell(cells, pupils, "tong_so.dtts") == lr["is_dtts"].sum()
    assert cell(cells, pupils, "tong_so.dtts_nu") == (lr["is_dtts"] & lr["is_female"]).sum()
    for g in ("cong_lap", "tu_thuc"):
        assert cell(cells, pupils, f"{g}.tong") == (lr["grp"] == g).sum()
        assert cell(cells, pupils, f"{g}.nu") == (lr["is_female"] & (lr["grp"] == g)).sum()
    for g in grades:
        c = code_of(form, f"- Học sinh lớp {g}")
        assert cell(cells, c) == (lr["grade_number"] == g).sum()
        assert cell(cells, c, "tong_so.nu") == ((lr["grade_number"] == g) & lr["is_female"]).sum()
        on = code_of(form, f"- Học sinh {g + 5} tuổi học lớp {g}")
        assert cell(cells, on) == ((lr["grade_number"] == g) & (lr["birth_year"] == 2022 - g - 5)).sum()
    first = grades[0]
    assert cell(cells, code_of(form, "- Học sinh mới tuyển đầu cấp")) == (
        (lr["grade_number"] == first) & lr["entry_type"].isin(["0", "2"])).sum()
    assert cell(cells, code_of(form, "- Học sinh lưu ban năm học trước đang học lại trong năm học này")) == (
        lr["entry_type"] == "3").sum()
    inclusive = lr["disability_type"].notna() & lr["special_education"].fillna("0").eq("0")
    assert cell(cells, code_of(form, "- Học sinh khuyết tật học hòa nhập")) == inclusive.sum()

    staff = next(r["code"] for _, r in data_rows(form) if r.get("reconcile") == "staff")
    assert cell(cells, staff) == len(st)
    assert cell(cells, staff, "cong_lap.vien_chuc_khong_xac_dinh") == (
        (st["grp"] == "cong_lap") & (st["contract_type"] == "07")).sum()
    gv = st[st["role"] == "giao_vien"]
    gv_code = code_of(form, "Giáo viên")
    assert cell(cells, gv_code) == len(gv)
    assert cell(cells, gv_code, "tong_so.nu") == gv["is_female"].sum()
    buckets = {"- Trung cấp sư phạm": "tcsp", "- Cao đẳng sư phạm": "cdsp", "- Đại học sư phạm": "dhsp", "- Thạc sĩ": "ths",
               "- Tiến sĩ, Tiến sỹ khoa học": "ts"}
    for label, b in buckets.items():
        assert cell(cells, code_of(form, label, gv_code)) == (gv["training_bucket"] == b).sum(), label
    assert cell(cells, code_of(form, "- Khác", gv_code)) == (~gv["training_bucket"].isin(list(buckets.values()))).sum()
    assert cell(cells, code_of(form, "- Từ 30 - 39 tuổi")) == gv["age"].between(30, 39).sum()
    assert cell(cells, code_of(form, "GV Tổng phụ trách Đội TNTP HCM")) == (
        st["extra_duty"].isin(["07", "09", "10"]) & ~st["position"].isin(["01", "02"])).sum()


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------

def test_render(db, tmp_path, computed):
    res = build_reports(db, tmp_path, YEAR, PERIOD, forms=list(FORMS))
    assert res.failed_checks == 0 and set(res.forms) == set(FORMS)
    city = {p.name: p for p in res.files if p.name.endswith("_city.xlsx")}
    assert set(city) == {f"{c}_city.xlsx" for c in FORMS}
    for code in FORMS:
        form, cells, _ = computed[code]
        wb = openpyxl.load_workbook(city[f"{code}_city.xlsx"])
        assert [ws.title for ws in wb.worksheets] == [s["name"] for s in form["sheets"]] + ["KiemTra"]
        ws = wb["III"]
        pupils = next(r["code"] for _, r in data_rows(form) if r.get("reconcile") == "learners")
        found = [row for row in ws.iter_rows(values_only=True) if row[3] == pupils]
        assert found and found[0][4] == cell(cells, pupils)
        vsm = [row for row in ws.iter_rows(values_only=True) if str(row[1]).startswith("Học sinh dân tộc thiểu số rất ít")]
        assert vsm[0][6] == "#" and vsm[0][7] == "#"
    top = openpyxl.load_workbook(city["03-THCS-DN_city.xlsx"])["I"]
    assert top.cell(1, 2).value == "BÁO CÁO THỐNG KÊ GIÁO DỤC TRUNG HỌC CƠ SỞ"
