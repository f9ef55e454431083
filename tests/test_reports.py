"""The report forms on the shipped sample city: golden files, identities, reconciliation,
hand-computable rows against an independent pandas computation, LibreOffice rendering."""
from __future__ import annotations

import json
import shutil
import subprocess

import duckdb
import pytest

from edustat.golden import GOLDEN_DIR, build_sample, dump_workbook

YEAR = "2022-2023"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    work = tmp_path_factory.mktemp("sample")
    files = build_sample(work)
    db = work / "data" / "curated" / "edustat.duckdb"
    return {"files": files, "db": db, "work": work}


def _q(db, sql, params=()):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def test_forms_equal_the_golden_files(sample):
    produced = {f"{p}/{f.stem}": f for p, files in sample["files"].items() for f in files}
    golden = {f"{p.parent.name}/{p.stem}": p for p in GOLDEN_DIR.glob("*/*.json")}
    assert sorted(produced) == sorted(golden), "forms differ from tests/golden: run `make golden` and review"
    for key, path in produced.items():
        want = json.loads(golden[key].read_text(encoding="utf-8"))
        got = json.loads(json.dumps(dump_workbook(path), ensure_ascii=False, default=str))
        assert got.keys() == want.keys(), key
        for sheet in want:
            assert got[sheet]["merges"] == want[sheet]["merges"], (key, sheet)
            assert got[sheet]["number_formats"] == want[sheet]["number_formats"], (key, sheet)
            assert got[sheet]["cells"] == want[sheet]["cells"], (key, sheet)


def test_every_form_passes_its_identities_and_reconciliation(sample):
    bad = _q(sample["db"], "select * from rpt_form_check where not ok")
    assert bad.empty, bad.head(20).to_string()
    kinds = set(_q(sample["db"], "select distinct check_name from rpt_form_check")["check_name"])
    assert {"total_equals_groups", "female_le_total", "dtts_female_le_min", "submission_equals_core",
            "core_equals_form_learners", "core_equals_form_staff"} <= kinds


def test_cells_land_in_duckdb_with_the_contract_keys(sample):
    cells = _q(sample["db"], "select distinct form_code, scope, column_key from rpt_form_cell")
    assert set(cells.form_code) >= {"01-MN-DN", "02-TH-DN", "03-THCS-DN"}
    schools = set(_q(sample["db"], "select school_code from core_school where period = 'dau_nam'")["school_code"])
    assert set(cells.scope) - {"city"} <= schools and "city" in set(cells.scope)
    assert cells.column_key.str.fullmatch(r"(tong_so|cong_lap|tu_thuc|dan_lap)\.[a-z_]+").all()


def _cell(db, form, row, key="tong_so.tong", scope="city", period="dau_nam"):
    df = _q(db, "select value from rpt_form_cell where school_year = ? and period = ? and form_code = ? and scope = ? "
                "and row_code = ? and column_key = ?", [YEAR, period, form, scope, row, key])
    return None if df.empty else df["value"].iloc[0]


def test_primary_totals_equal_an_independent_pandas_count(sample):
    db = sample["db"]
    learners = _q(db, "select l.*, s.ownership from core_learners l join core_school s using (school_year, period, school_code) "
                      "where l.school_year = ? and l.period = 'dau_nam'", [YEAR])
    th = learners[(learners.level == "TH") & learners.status.isin(["01", "02", "03", "06", "07", "10"])]
    assert _cell(db, "02-TH-DN", 37) == len(th)
    assert _cell(db, "02-TH-DN", 37, "tong_so.nu") == (th.sex == "02").sum()
    dtts = ~th.ethnicity.isin(["01", "55"])
    assert _cell(db, "02-TH-DN", 37, "tong_so.dtts") == dtts.sum()
    assert _cell(db, "02-TH-DN", 37, "tong_so.dtts_nu") == (dtts & (th.sex == "02")).sum()
    assert _cell(db, "02-TH-DN", 37, "cong_lap.tong") == (th.ownership == "01").sum()
    for grade, row in zip(["01", "02", "03", "04", "05"], [40, 41, 42, 43, 44]):
        assert _cell(db, "02-TH-DN", row) == (th.grade == grade).sum(), grade
    # per school too
    code = th.school_code.iloc[0]
    assert _cell(db, "02-TH-DN", 37, scope=code) == (th.school_code == code).sum()


def test_teachers_by_training_level_equal_an_independent_count(sample):
    db = sample["db"]
    staff = _q(db, "select * from core_staff where school_year = ? and period = 'dau_nam' and level = 'TH' "
                   "and status in ('01', '07') and role = 'giao_vien'", [YEAR])
    buckets = {"18": "tcsp", "15": "tcsp", "09": "tcsp", "10": "tcsp", "17": "cdsp", "14": "cdsp", "16": "dhsp",
               "13": "dhsp", "02": "ths", "01": "ts"}
    b = staff.training_level.map(buckets).fillna("other")
    assert _cell(db, "02-TH-DN", 96) == len(staff)
    for bucket, row in [("tcsp", 97), ("cdsp", 98), ("dhsp", 99), ("ths", 100), ("ts", 101)]:
        assert _cell(db, "02-TH-DN", row) == (b == bucket).sum(), bucket


@pytest.mark.libreoffice
def test_a_form_opens_in_libreoffice(sample, tmp_path):
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if not soffice:
        pytest.skip("LibreOffice not installed (make pdf-check installs it)")
    form = next(f for f in sample["files"]["dau_nam"] if f.stem == "02-TH-DN_city")
    res = subprocess.run([soffice, "--headless", f"-env:UserInstallation=file://{tmp_path}/lo", "--convert-to", "pdf",
                          "--outdir", str(tmp_path), str(form)], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    pdf = tmp_path / "02-TH-DN_city.pdf"
    assert pdf.exists() and pdf.read_bytes()[:4] == b"%PDF"
