"""Biểu 01-MN-ĐN on a synthetic city: every coded row is defined, every query runs, every
identity and reconciliation of the form holds, a handful of rows equal an independent pandas
count over the curated tables, and the workbook renders with those figures."""
from __future__ import annotations

import datetime as dt

import openpyxl
import pandas as pd
import pytest
from dateutil.relativedelta import relativedelta

from edustat import pipeline, store
from edustat.config import Config
from edustat.reports import build_reports, check_form, compute_form, data_rows, load_form, reconcile_form
from edustat.synth import generate_city

YEAR, PERIOD, START = "2022-2023", "dau_nam", 2022
REF = dt.date(START, 9, 30)
GROUPS = ("cong_lap", "tu_thuc", "dan_lap")
# Restated here on purpose (not read from mappings.yaml / the views): the test is a second opinion.
OWNERSHIP = {"01": "cong_lap", "02": "tu_thuc", "09": "tu_thuc", "03": "dan_lap"}
ENROLLED = {"01", "02", "03", "06", "07", "10"}
TRAINING = {"tcsp": {"18", "15", "09", "10"}, "cdsp": {"17", "14"}, "dhsp": {"16", "13"}, "ths": {"02"},
            "ts": {"01"}, "chua_qua_dao_tao": {"11"}}


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """12 preschools (one nhà trẻ, two mẫu giáo, nine mầm non; công lập, tư thục and dân lập)
    loaded through the pipeline's own steps (no Prefect): ~40 s."""
    root = tmp_path_factory.mktemp("mn-city")
    inbox = root / "inbox"
    manifest = generate_city(inbox, schools=30, seed=7, school_year=YEAR, period=PERIOD,
                             export_share=0.3, error_rate=0.0, workers=2)
    files = [inbox / s.file for s in manifest.schools if "MN" in s.levels]
    cfg = Config(data_dir=root / "data", load_policy="load_valid_rows", workers=2)
    con = store.connect(cfg.db_path)
    pipeline.run_collection(con, files, cfg, YEAR, PERIOD)
    yield con, root
    con.close()


@pytest.fixture(scope="module")
def form():
    return load_form("01-MN-DN")


@pytest.fixture(scope="module")
def cells(city, form):
    con, _ = city
    return compute_form(con, form, YEAR, PERIOD)


@pytest.fixture(scope="module")
def value(cells):
    val = {(r.scope, r.row_code, r.column_key): r.value for r in cells.itertuples(index=False)}
    return lambda code, key="tong_so.tong", scope="city": val[(scope, code, key)]


def _core(con, table: str) -> pd.DataFrame:
    return con.execute(f"select * from {table} where school_year = ? and period = ?", [YEAR, PERIOD]).df()


@pytest.fixture(scope="module")
def schools(city) -> pd.DataFrame:
    df = _core(city[0], "core_school")
    df["g"] = df["ownership"].map(OWNERSHIP)
    return df.set_index("school_code")


@pytest.fixture(scope="module")
def children(city, schools) -> pd.DataFrame:
    df = _core(city[0], "core_learners")
    df = df[df["grade"].isin(["16", "17"]) & df["status"].isin(ENROLLED)].copy()
    df["g"] = df["school_code"].map(schools["g"])
    df["female"] = df["sex"] == "02"
    df["minority"] = df["ethnicity"].notna() & ~df["ethnicity"].isin(["01", "55"])
    birth = pd.to_datetime(df["birth_date"])
    df["months"] = [relativedelta(REF, b.date()).years * 12 + relativedelta(REF, b.date()).months for b in birth]
    df["years"] = START - birth.dt.year
    return df


@pytest.fixture(scope="module")
def teachers(city, schools) -> pd.DataFrame:
    df = _core(city[0], "core_staff")
    df = df[(df["staff_group"] == "03") & ~df["position"].isin(["01", "02"]) & df["status"].isin(["01", "07"])].copy()
    df["g"] = df["school_code"].map(schools["g"])
    df["age"] = START - pd.to_datetime(df["birth_date"]).dt.year
    return df


def _people(frame: pd.DataFrame) -> dict[str, float]:
    """The people-sheet columns of one row, counted directly."""
    out = {}
    for g in ("tong_so", *GROUPS):
        part = frame if g == "tong_so" else frame[frame["g"] == g]
        out[f"{g}.tong"] = len(part)
        out[f"{g}.nu"] = int(part["female"].sum())
        out[f"{g}.dtts"] = int(part["minority"].sum())
        out[f"{g}.dtts_nu"] = int((part["minority"] & part["female"]).sum())
    return out


def _assert_row(value, code: int, expected: dict[str, float]) -> None:
    got = {k: value(code, k) for k in expected}
    assert got == {k: float(v) for k, v in expected.items()}, code


# ------------------------------------------------------------------------------- definition

def test_every_coded_row_is_defined_and_reconciles_the_right_populations(form):
    rows = [row for _, row in data_rows(form)]
    assert [r["code"] for r in rows] == list(range(1, 213))
    for r in rows:
        assert ("count" in r) != ("sum" in r), r["code"]
    recon = {r["code"]: r["reconcile"] for r in rows if "reconcile" in r}
    assert recon == {83: "learners", 55: "classes"}
    # the form's own partitions are declared as checks
    parts = {r["code"]: r["parts"] for r in rows if "parts" in r}
    assert parts[1] == [2, 15, 33] and parts[55] == [56, 69] and parts[83] == [84, 90]
    assert parts[96] == [97, 98, 99, 100] and parts[101] == [102, 103, 104, 105, 106]
    assert parts[123] == [124, 139] and parts[156] == [157, 162] and parts[167] == [168, 181]


def test_the_sample_exercises_the_form(value, schools):
    assert set(schools["g"]) == set(GROUPS)
    assert value(2) >= 1 and value(15) >= 1 and value(33) >= 1
    for code in (56, 69, 84, 90, 120, 124, 168, 181, 194, 203):
        assert value(code) > 0, code


# ------------------------------------------------------------------------------- checks

def test_every_identity_and_reconciliation_holds(city, form, cells):
    con, _ = city
    checks = check_form({**form, "school_year": YEAR}, cells)
    recon = reconcile_form(con, form, cells, YEAR, PERIOD)
    assert len(checks) > 10_000 and len(recon) > 0
    bad = checks[~checks["ok"]]
    assert bad.empty, bad.head(20).to_string()
    bad = recon[~recon["ok"]]
    assert bad.empty, bad.to_string()
    names = set(checks["check_name"])
    assert {"rows_sum_to_total", "sub_row_le_parent", "total_equals_groups", "contracts_le_total",
            "rooms_total"} <= names


# ------------------------------------------------------------------------------- second opinion

def test_schools_by_type(value, schools):
    mn = schools[schools["education_level"].isin(["01", "02", "03"])]
    assert value(1) == len(mn)
    for code, edu in ((2, "03"), (15, "02"), (33, "01")):
        for g in GROUPS:
            assert value(code, f"{g}.tong") == ((mn["education_level"] == edu) & (mn["g"] == g)).sum(), (code, g)
    assert value(54) == schools["satellite_sites"].sum()


def test_children_total_and_by_care_level(value, children):
    _assert_row(value, 83, _people(children))
    _assert_row(value, 84, _people(children[children["grade"] == "16"]))
    _assert_row(value, 90, _people(children[children["grade"] == "17"]))


def test_children_by_age_band(value, children):
    creche = children[children["grade"] == "16"]
    bands = {97: creche["months"] <= 12, 98: creche["months"].between(13, 24),
             99: creche["months"].between(25, 36), 100: creche["months"] > 36}
    for code, mask in bands.items():
        _assert_row(value, code, _people(creche[mask]))
    kg = children[children["grade"] == "17"]
    years = {102: kg["years"] < 3, 103: kg["years"] == 3, 104: kg["years"] == 4, 105: kg["years"] == 5,
             106: kg["years"] >= 6}
    for code, mask in years.items():
        _assert_row(value, code, _people(kg[mask]))


def test_nutrition_and_policy_rows(value, children):
    kg = children[children["grade"] == "17"]
    checked = kg[kg["health_checked"] == 1]
    _assert_row(value, 112, _people(checked))
    for code, status in ((113, "01"), (114, "02"), (115, "03"), (116, "04")):
        _assert_row(value, code, _people(checked[checked["nutrition_status"] == status]))
    _assert_row(value, 117, _people(kg[kg["tuition_exempt"] == 1]))
    _assert_row(value, 121, _people(kg[(kg["years"] == 5) & (kg["lunch_support"] == 1)]))


def test_teachers_by_training_level_and_age(value, teachers):
    for top, care in ((168, "nha_tre"), (181, "mau_giao")):
        mine = teachers[teachers["mn_care_level"] == care]
        for g in GROUPS:
            assert value(top, f"{g}.tong") == (mine["g"] == g).sum(), (top, g)
        for i, bucket in enumerate(("tcsp", "cdsp", "dhsp", "ths", "ts", "chua_qua_dao_tao"), start=1):
            assert value(top + i) == mine["training_level"].isin(TRAINING[bucket]).sum(), (top + i, bucket)
        for i, (lo, hi) in enumerate(((20, 29), (30, 39), (40, 49), (50, 54), (55, 59), (60, 99)), start=7):
            assert value(top + i) == mine["age"].between(lo, hi).sum(), (top + i, lo)
    public = teachers[teachers["g"] == "cong_lap"]
    assert value(167, "cong_lap.vien_chuc_khong_xac_dinh") == (public["contract_type"] == "07").sum()


def test_groups_and_classes_by_size(city, value, children):
    classes = _core(city[0], "core_classes")
    size = children.groupby(["school_code", "class_code"]).size().rename("n")
    classes = classes.join(size, on=["school_code", "class_code"]).fillna({"n": 0})
    assert value(55) == classes["grade"].isin(["16", "17"]).sum()
    caps = {"01": 15, "02": 20, "03": 25, "04": 25, "05": 30, "06": 35}
    codes = {"01": 61, "02": 63, "03": 65, "04": 75, "05": 77, "06": 79}
    for ag, cap in caps.items():
        mine = classes[classes["mn_age_group"] == ag]
        assert value(codes[ag]) == (mine["n"] < cap).sum(), ag
        assert value(codes[ag] + 1) == (mine["n"] >= cap).sum(), ag
    assert value(70) == (classes["mn_age_group"] == "06").sum()


def test_rooms(city, value):
    rooms = _core(city[0], "core_rooms")
    kg_class = rooms[(rooms["care_level"] == "mau_giao") & (rooms["room_type"] == "01")]
    assert value(203, "tong_so.kien_co") == kg_class["permanent"].sum()
    assert value(203) == kg_class[["permanent", "semi_permanent", "temporary"]].fillna(0).to_numpy().sum()
    kitchen = rooms[rooms["room_type"] == "14"]
    assert value(201) + value(211) == kitchen[["permanent", "semi_permanent", "temporary"]].fillna(0).to_numpy().sum()


# ------------------------------------------------------------------------------- workbook

def test_the_workbook_renders_the_figures(city, value):
    con, root = city
    result = build_reports(con, root / "reports", YEAR, PERIOD, forms=["01-MN-DN"])
    assert result.forms == ["01-MN-DN"] and result.failed_checks == 0
    path = next(p for p in result.files if p.name == "01-MN-DN_city.xlsx")
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Trường-Lớp", "Học sinh", "Cán bộ", "Phòng học", "Ngân sách", "KiemTra"]
    for sheet, code in (("Trường-Lớp", 1), ("Trường-Lớp", 55), ("Học sinh", 83), ("Cán bộ", 167), ("Phòng học", 203)):
        row = next(r for r in wb[sheet].iter_rows(values_only=True) if r[3] == code)
        assert row[4] == value(code), (sheet, code)
    assert "tất cả đều đạt" in wb["KiemTra"]["A3"].value
