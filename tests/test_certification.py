"""Certification (issue 11, item 2): the principal's confirmation on the school sheet, read
from the template's cells and from what a clerk types; the register shows certified / not;
workbooks without the cells read as before; when the config requires it an uncertified school
is rejected (never loaded, whatever the load policy); forms can count only certified schools;
the principal's name never leaves the officer's database."""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import openpyxl
import pytest

from edustat import formbuild, store
from edustat.config import ConfigError, load_config
from edustat.pipeline import run_collection
from edustat.synth import generate_city

YEAR, PERIOD = "2022-2023", "dau_nam"
CERT_HEADERS = ("Hiệu trưởng xác nhận", "Họ tên hiệu trưởng", "Ngày xác nhận")


def _school_sheet(wb):
    return wb["Truong"]


def _drop_certification_rows(path: Path) -> None:
    """A workbook of before issue 11 (or an export): no certification rows at all."""
    wb = openpyxl.load_workbook(path)
    ws = _school_sheet(wb)
    for r in range(ws.max_row, 0, -1):
        if ws.cell(r, 1).value in CERT_HEADERS:
            ws.delete_rows(r)
    wb.save(path)


def _clerk_certifies(path: Path) -> None:
    """What a clerk types without the template's rows: own headers, words, a typed date."""
    _drop_certification_rows(path)
    wb = openpyxl.load_workbook(path)
    ws = _school_sheet(wb)
    r = ws.max_row + 1
    for i, (k, v) in enumerate((("Xác nhận của hiệu trưởng", "Đã xác nhận"), ("Người xác nhận", "Nguyễn Văn Hiệu"),
                                ("Ngày ký", "28/10/2022"))):
        ws.cell(r + i, 1).value, ws.cell(r + i, 2).value = k, v
    wb.save(path)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("cert")
    inbox = root / "inbox"
    manifest = generate_city(inbox, schools=3, seed=5, school_year=YEAR, period=PERIOD)
    (inbox / "manifest.json").unlink()
    files = {s.school_code: inbox / s.file for s in manifest.schools}
    codes = sorted(files)
    without, clerk, blank = codes  # one of each: no cells, a clerk's certification, the template's cells left blank
    _drop_certification_rows(files[without])
    _clerk_certifies(files[clerk])
    return {"root": root, "inbox": inbox, "files": files, "without": without, "clerk": clerk, "blank": blank}


def _run(city, name: str, config_text: str | None = None):
    data = city["root"] / name
    cfg_path = None
    if config_text:
        cfg_path = city["root"] / f"{name}.yaml"
        cfg_path.write_text(config_text, encoding="utf-8")
    cfg = load_config(cfg_path, data)
    with store.session(cfg.db_path) as con:
        out = run_collection(con, sorted(city["inbox"].iterdir()), cfg, YEAR, PERIOD, workers=1)
    return cfg, out


@pytest.fixture(scope="module")
def default_run(city):
    return _run(city, "default")


def test_the_template_has_the_three_cells_with_vietnamese_headers(tmp_path):
    from edustat.workbook import write_submission

    path = tmp_path / "mau.xlsx"
    write_submission(path, levels=("TH",), period=PERIOD, school_year=YEAR, school={})
    keys = [row[0] for row in openpyxl.load_workbook(path)["Truong"].iter_rows(values_only=True)]
    for header in CERT_HEADERS:
        assert header in keys


def test_certification_is_optional_and_the_register_shows_it(city, default_run):
    cfg, out = default_run
    subs = out.submissions.set_index("school_code")
    # nobody is rejected for missing cells when the config does not require them
    assert set(subs["status"]) <= {"accepted", "accepted_with_warnings"}, subs["status"]
    assert bool(subs.loc[city["clerk"], "certified"]) is True
    assert subs.loc[city["clerk"], "certified_on"] == dt.date(2022, 10, 28)
    assert bool(subs.loc[city["without"], "certified"]) is False
    assert bool(subs.loc[city["blank"], "certified"]) is False
    # the workbook without the rows reads exactly as before: no issue about them
    mine = out.issues[out.issues["school_code"] == city["without"]]
    assert not mine["field"].isin(["principal_confirmed", "principal_name", "confirmed_on"]).any()
    assert not (out.issues["rule_id"] == "file_not_certified").any()
    # the clerk's own headers were read (said as near readings or exact aliases, never dropped)
    clerk = out.issues[out.issues["school_code"] == city["clerk"]]
    assert not clerk["rule_id"].isin(["file_column_unknown", "file_column_unread"]).any(), clerk[["rule_id", "message"]]
    with duckdb.connect(str(cfg.db_path), read_only=True) as con:
        reg = dict(con.execute("select school_code, certified from submission").fetchall())
        cols = {r[0] for r in con.execute("select column_name from duckdb_columns() where table_name = 'submission'").fetchall()}
        name = con.execute("select principal_name from core_school where school_code = ?", [city["clerk"]]).fetchone()[0]
    assert reg[city["clerk"]] is True and reg[city["blank"]] is False
    assert "principal_name" not in cols  # the register never holds the name
    assert name == "Nguyễn Văn Hiệu"  # kept in the officer's database only


def test_the_principals_name_is_not_published(default_run, tmp_path):
    from edustat.publish import publish

    cfg, _ = default_run
    with store.session(cfg.db_path) as con:
        result = publish(con, tmp_path / "pub", salt="test-salt", pseudonymise=True)
    with duckdb.connect(str(result.snapshot), read_only=True) as snap:
        cols = {r[0] for r in snap.execute("select column_name from duckdb_columns()").fetchall()}
        text = " ".join(str(v) for (v,) in snap.execute("select school_name from core_school").fetchall())
    assert "principal_name" not in cols and "Nguyễn Văn Hiệu" not in text


def test_required_certification_rejects_the_uncertified_even_under_load_valid_rows(city):
    cfg, out = _run(city, "required", "require_certification: true\nload_policy: load_valid_rows\n")
    subs = out.submissions.set_index("school_code")
    assert subs.loc[city["clerk"], "status"] in ("accepted", "accepted_with_warnings")
    for code in (city["without"], city["blank"]):
        assert subs.loc[code, "status"] == "rejected"
        msg = out.issues[(out.issues["school_code"] == code) & (out.issues["rule_id"] == "file_not_certified")]
        assert len(msg) == 1 and msg["severity"].iloc[0] == "error"
        assert "Hiệu trưởng xác nhận" in msg["message"].iloc[0] + msg["fix"].iloc[0]
    with duckdb.connect(str(cfg.db_path), read_only=True) as con:
        in_core = {r[0] for r in con.execute("select school_code from core_school").fetchall()}
        learners = {r[0] for r in con.execute("select distinct school_code from core_learners").fetchall()}
    assert in_core == learners == {city["clerk"]}


def test_forms_can_be_limited_to_certified_schools(city, default_run, tmp_path):
    cfg, _ = default_run
    with store.session(cfg.db_path) as con:
        all_ = formbuild.build(con, cfg, YEAR, PERIOD)
        all_schools = con.execute("select count(*) from form_build_version where build_id = ?", [all_.build_id]).fetchone()[0]
        only = formbuild.build(con, cfg, YEAR, PERIOD, certified_only=True)
        recorded = con.execute("select school_code, certified from form_build_version where build_id = ?",
                               [only.build_id]).fetchall()
        scopes = {r[0] for r in con.execute("""select distinct scope from rpt_form_cell
                                              where school_year = ? and period = ? and form_code in (select unnest(?))""",
                                             [YEAR, PERIOD, only.forms]).fetchall()}
        learners = con.execute("select count(*) from core_learners where school_code = ? and is_enrolled",
                               [city["clerk"]]).fetchone()[0]
        flag = con.execute("select certified_only from form_build where build_id = ?", [only.build_id]).fetchone()[0]
    assert all_schools == 3 and len(all_.forms) == 3
    assert recorded == [(city["clerk"], True)] and flag is True
    assert scopes == {"city", city["clerk"]}  # no form of an uncertified school
    assert {p.name.split("_")[1] for p in only.files} == {"city.xlsx", f"{city['clerk']}.xlsx"}
    # the city form counts exactly the certified school's learners (its reconciliation check)
    form = next(p.name.split("_")[0] for p in only.files if p.name.endswith(f"_{city['clerk']}.xlsx"))
    with duckdb.connect(str(cfg.db_path), read_only=True) as con:
        check = con.execute("""select expected, actual, ok from rpt_form_check where school_year = ? and period = ?
                               and form_code = ? and scope = 'city' and check_name = 'core_equals_form_learners'""",
                            [YEAR, PERIOD, form]).fetchall()
    assert check == [(learners, learners, True)]
    assert openpyxl.load_workbook(next(p for p in only.files if p.name == f"{form}_city.xlsx")).sheetnames


def test_a_non_boolean_setting_is_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("require_certification: có\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="require_certification phải là true hoặc false"):
        load_config(p, tmp_path / "data")
