"""The collection end to end on a synthetic city with injected errors, ministry-export-style
files and bad files: a real Prefect flow run, a real DuckDB file, real xlsx files."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import duckdb
import openpyxl
import pandas as pd
import pytest

from edustat.synth import generate_city

YEAR, PERIOD = "2022-2023", "dau_nam"
TABLES = ("core_school", "core_classes", "core_learners", "core_staff", "core_rooms", "submission",
          "validation_issue", "raw_learners", "stg_learners")


def _retag(src: Path, dest: Path, code: str, mutate=None) -> Path:
    """A copy of a school's workbook under another school code (so it is a distinct school)."""
    wb = openpyxl.load_workbook(src)
    ws = wb["Truong"]
    for row in ws.iter_rows(min_col=1, max_col=2):
        if row[0].value in ("Mã trường", "Mã trường học", "MA_TRUONG", "Ma truong"):
            row[1].value = code
    if mutate:
        mutate(wb)
    wb.save(dest)
    return dest


def _drop_sheet(name):
    def f(wb):
        del wb[name]
    return f


def _drop_column(sheet, header):
    def f(wb):
        ws = wb[sheet]
        for hr in range(1, 8):
            for cell in ws[hr]:
                if cell.value == header:
                    ws.delete_cols(cell.column)
                    return
    return f


def _wrong_dimension(path: Path) -> None:
    """Rewrite <dimension ref> of every sheet to A1:B2 (some exports do; regulations §5.1)."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.startswith("xl/worksheets/sheet"):
                text = data.decode("utf-8")
                if "<dimension" in text:
                    text = re.sub(r'<dimension ref="[^"]+"\s*/>', '<dimension ref="A1:B2"/>', text)
                else:  # xlsxwriter writes one too; keep the test honest if it does not
                    text = text.replace("<sheetViews>", '<dimension ref="A1:B2"/><sheetViews>', 1)
                data = text.encode("utf-8")
            zout.writestr(item, data)
    tmp.replace(path)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("city")
    inbox = root / "inbox"
    manifest = generate_city(inbox, schools=8, seed=11, school_year=YEAR, period=PERIOD,
                             export_share=0.4, error_rate=0.01)
    schools = {s.school_code: s for s in manifest.schools}
    first = sorted(schools)[0]
    src = inbox / schools[first].file
    bad = {
        "khong_phai_excel.xlsx": "file_unreadable",
        "tai_ve_do_dang.xlsx": "file_unreadable",
        "co_mat_khau.xlsx": "file_unreadable",
        "thieu_trang_canbo.xlsx": "file_sheet_missing",
        "thieu_cot_gioi_tinh.xlsx": "file_column_missing",
    }
    (inbox / "khong_phai_excel.xlsx").write_text("Họ và tên;Ngày sinh\n", encoding="utf-8")
    (inbox / "tai_ve_do_dang.xlsx").write_bytes(src.read_bytes()[:2000])
    (inbox / "co_mat_khau.xlsx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 4000)
    _retag(src, inbox / "thieu_trang_canbo.xlsx", "74718991", _drop_sheet("CanBo"))
    _retag(src, inbox / "thieu_cot_gioi_tinh.xlsx", "74718992", _drop_column("HocSinh", "Giới tính"))
    # a real school's file with a wrong stored dimension must load as if it were right
    dim_school = sorted(schools)[1]
    _wrong_dimension(inbox / schools[dim_school].file)
    return {"root": root, "inbox": inbox, "manifest": manifest, "bad": bad, "dim_school": dim_school,
            "manifest_json": json.loads((inbox / "manifest.json").read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def first_run(city, prefect_harness):
    from flows.collect import collection_flow

    data = city["root"] / "data"
    summary = collection_flow(school_year=YEAR, period=PERIOD, inbox=str(city["inbox"]), data_dir=str(data))
    return {"data": data, "summary": summary, "db": data / "curated" / "edustat.duckdb"}


def _q(db: Path, sql: str, params=()):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def _counts(db: Path) -> dict[str, int]:
    return {t: int(_q(db, f"select count(*) n from {t}")["n"][0]) for t in TABLES}


def test_every_injected_error_is_reported_at_its_cell(city, first_run):
    issues = _q(first_run["db"], "select school_code, sheet, excel_row, rule_id from validation_issue")
    got = set(map(tuple, issues.astype({"excel_row": "Int64"}).astype(object).values.tolist()))
    injected = [e for e in city["manifest"].errors]
    assert injected, "the generator injected nothing"
    missed = [(e.school_code, e.sheet, e.excel_row, e.rule) for e in injected
              if (e.school_code, e.sheet, e.excel_row, e.rule) not in got]
    assert not missed


def test_clean_schools_have_no_errors(city, first_run):
    with_errors = {e.school_code for e in city["manifest"].errors}
    clean = [s.school_code for s in city["manifest"].schools if s.clean]
    assert not set(clean) & with_errors
    assert clean
    errs = _q(first_run["db"], "select school_code, rule_id, count(*) n from validation_issue where severity = 'error' group by all")
    assert errs[errs.school_code.isin(clean)].empty, errs[errs.school_code.isin(clean)]
    subs = _q(first_run["db"], "select school_code, status, loaded_rows, n_learners, n_staff, n_classes, n_rooms from submission")
    for code in clean:
        row = subs[subs.school_code == code].iloc[0]
        assert row.status in ("accepted", "accepted_with_warnings")
        assert row.loaded_rows == row.n_learners + row.n_staff + row.n_classes + row.n_rooms


def test_export_style_files_load_like_template_files(city, first_run):
    schools = city["manifest"].schools
    exported = [s for s in schools if s.style != "template"]
    assert exported, "no ministry-export-style file in the sample"
    core = _q(first_run["db"], "select school_code, count(*) n from core_learners group by 1")
    loaded = dict(zip(core.school_code, core.n))
    with_errors = {e.school_code for e in city["manifest"].errors}
    for s in exported:
        if s.school_code not in with_errors:
            assert loaded.get(s.school_code) == s.rows["learners"], s.school_code


def test_wrong_dimension_file_is_read_whole(city, first_run):
    code = city["dim_school"]
    entry = next(s for s in city["manifest"].schools if s.school_code == code)
    n = _q(first_run["db"], "select n_learners from submission where school_code = ?", [code])["n_learners"][0]
    assert n == entry.rows["learners"]


def test_bad_files_get_one_clear_message_each(city, first_run):
    issues = _q(first_run["db"], "select file_name, rule_id, severity, message from validation_issue")
    subs = _q(first_run["db"], "select file_name, status from submission")
    for name, rule in city["bad"].items():
        mine = issues[(issues.file_name == name) & (issues.severity == "error")]
        assert list(mine.rule_id) == [rule], (name, mine)
        assert name in mine.message.iloc[0] or rule != "file_unreadable"
        status = subs[subs.file_name == name].status.iloc[0]
        assert status == ("unreadable" if rule == "file_unreadable" else "rejected")
    # and each still gets a feedback workbook explaining it
    fb = Path(first_run["summary"]["feedback_dir"])
    assert len(list(fb.glob("*.xlsx"))) == len(subs)


def test_summary_counts(city, first_run):
    s = first_run["summary"]
    assert s["files"] == len(city["manifest"].schools) + len(city["bad"])
    c = s["counts"]
    assert c["unreadable"] == 3
    assert c["accepted"] + c["accepted_with_warnings"] + c["rejected"] + c["unreadable"] == s["files"]


def test_feedback_workbook_marks_injected_cells(city, first_run):
    err = city["manifest"].errors[0]
    path = Path(first_run["summary"]["feedback_dir"]) / f"{err.school_code}.xlsx"
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames[0] == "PhanHoi"
    cell = wb[err.sheet][err.cell]
    assert cell.comment is not None and cell.fill.fgColor.rgb.endswith(("FFC7CE", "FFEB9C"))


def test_rerun_is_a_noop(city, first_run, prefect_harness):
    from flows.collect import collection_flow

    before = _counts(first_run["db"])
    versions = _q(first_run["db"], "select file_hash, version, received_at from submission order by 1")
    collection_flow(school_year=YEAR, period=PERIOD, inbox=str(city["inbox"]), data_dir=str(first_run["data"]))
    assert _counts(first_run["db"]) == before
    after = _q(first_run["db"], "select file_hash, version, received_at from submission order by 1")
    pd.testing.assert_frame_equal(versions, after)


def test_resubmission_replaces_only_that_school(city, first_run, prefect_harness, tmp_path):
    from flows.collect import collection_flow

    db = first_run["db"]
    subs = _q(db, "select school_code, file_hash, status from submission where is_current and status like 'accepted%'")
    target = subs.school_code.iloc[0]
    others_before = _q(db, "select school_code, file_hash, count(*) n from core_learners where school_code <> ? group by all order by 1", [target])
    entry = next(s for s in city["manifest"].schools if s.school_code == target)
    inbox2 = tmp_path / "inbox2"
    inbox2.mkdir()
    src = city["inbox"] / entry.file
    wb = openpyxl.load_workbook(src)
    ws = wb["HocSinh"]
    header_row = next(r for r in range(1, 10) if any(c.value in ("Họ và tên", "Họ tên", "Ho va ten") for c in ws[r]))
    last = ws.max_row
    ws.delete_rows(last)  # one learner left the school
    wb.save(inbox2 / entry.file)
    collection_flow(school_year=YEAR, period=PERIOD, inbox=str(inbox2), data_dir=str(first_run["data"]))
    after = _q(db, "select school_code, file_hash, count(*) n from core_learners where school_code <> ? group by all order by 1", [target])
    pd.testing.assert_frame_equal(others_before, after)
    mine = _q(db, "select version, is_current, in_core, n_learners from submission where school_code = ? order by version", [target])
    assert mine.version.tolist() == [1, 2]
    assert mine.is_current.tolist() == [False, True] and mine.in_core.tolist() == [False, True]
    n = _q(db, "select count(*) n from core_learners where school_code = ?", [target])["n"][0]
    assert n == entry.rows["learners"] - 1 == mine.n_learners.iloc[1]
    assert header_row >= 1


def test_analyst_can_read_the_snapshot_while_a_writer_holds_the_database(first_run):
    snapshot = first_run["data"] / "curated" / "published" / "edustat.duckdb"
    writer = duckdb.connect(str(first_run["db"]))  # the pipeline's single writer
    try:
        code = ("import duckdb,sys; c=duckdb.connect(sys.argv[1], read_only=True); "
                "print(c.execute('select count(*) from core_learners').fetchone()[0])")
        res = subprocess.run([sys.executable, "-c", code, str(snapshot)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert int(res.stdout.strip()) > 0
        cli = shutil.which("duckdb")
        if cli:
            res = subprocess.run([cli, "-readonly", str(snapshot), "-c", "select count(*) from core_learners"],
                                 capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stderr
    finally:
        writer.close()
    cols = _q(snapshot, "select column_name from information_schema.columns where table_name = 'core_learners'")
    assert "full_name" not in set(cols.column_name) and "birth_year" in set(cols.column_name)


def test_missing_schools_come_from_the_configured_list(first_run, tmp_path):
    from edustat.store import missing_schools

    con = duckdb.connect(str(first_run["db"]), read_only=True)
    try:
        m = missing_schools(con, YEAR, PERIOD, ["74718001", "99999999"])
    finally:
        con.close()
    assert set(m.school_code) <= {"74718001", "99999999"} and "99999999" in set(m.school_code)


def test_the_run_graph_links_each_step_to_the_steps_whose_results_it_takes(first_run, prefect_harness):
    """The collection reaches the steps wrapped in `opaque` (Prefect does not walk into it: for a
    province that walk cost half the run); the UI's graph must still draw read → cast → validate
    → load → feedback → (forms) → feedback written."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["edustat-collection"])),
                                     sort=FlowRunSort.START_TIME_ASC)
        # this module's first run (other modules of the session run flows on the same server)
        run = next(r for r in runs if r.parameters.get("data_dir") == str(first_run["data"]))
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    by_id = {t.id: t for t in tasks}

    def sources(name: str) -> dict[str, set[str]]:
        t = next(t for t in tasks if f"({name})" in t.name)
        return {arg: {by_id[i.id].name.split(" (")[-1].split(")")[0] for i in ins if getattr(i, "id", None) in by_id}
                for arg, ins in t.task_inputs.items()}

    assert sources("cast")["results"] == {"read + structure"}
    v = sources("validate, Great Expectations")
    assert v["results"] == {"read + structure"} and v["frames"] == {"cast"}
    ld = sources("load")
    assert ld["frames"] == {"cast"} and ld["issues"] == {"validate, Great Expectations"}
    assert sources("feedback")["outcome"] == {"load"}
    # the feedback workbooks are written while the forms are built (issue 12): the step that
    # waits for them takes the started work and runs after the forms, before the publish
    fw = sources("feedback written")
    assert fw["work"] == {"feedback"} and fw["outcome"] == {"load"}
    named = {t.name.split(" (")[-1].split(")")[0]: t for t in tasks}
    assert named["feedback"].end_time <= named["report forms"].start_time
    assert named["report forms"].end_time <= named["feedback written"].start_time
    assert named["feedback written"].end_time <= named["publish"].start_time
