"""Cross-period checks (edustat/periods.py) over a synthetic city spanning two school years:
start and end of 2022-2023 and the start of 2023-2024 (`synth --continue-previous-year`), run
through the real pipeline into one real DuckDB file.

The clean city gives no cross-period finding. Then schools resubmit workbooks edited as a
clerk's mistakes would be (openpyxl on the generated files): each injected inconsistency is
reported against the right school, the right learner row and the right rule — and nothing else —
in the issues, the school's feedback workbook and the officer's summary, with no personal value
in any message."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from edustat import pipeline, store
from edustat.submissions import discover
from edustat.config import load_config
from edustat.periods import RULE_TEXT
from edustat.synth import generate_city

SEED, SCHOOLS = 3, 4
Y1, Y2 = "2022-2023", "2023-2024"
PERIODS = ((Y1, "dau_nam", False), (Y1, "cuoi_nam", False), (Y2, "dau_nam", True))
CROSS = set(RULE_TEXT)


# ---------------------------------------------------------------------------------------
# Workbook helpers: sheets read by header, rows as dicts with their Excel row
# ---------------------------------------------------------------------------------------

def _sheet(path: Path, name: str) -> tuple[dict[str, int], list[dict]]:
    wb = openpyxl.load_workbook(path, read_only=True)
    rows = list(wb[name].iter_rows(values_only=True))
    wb.close()
    head = {h: i for i, h in enumerate(rows[0]) if h}
    return head, [dict({h: r[i] for h, i in head.items()}, _row=k + 2) for k, r in enumerate(rows[1:]) if any(r)]


def _edit(path: Path, sheet: str, changes: dict[int, dict[str, object]], delete: list[int] = ()) -> None:
    """Set cells (excel row → header → value), then delete rows (bottom first)."""
    wb = openpyxl.load_workbook(path)
    ws = wb[sheet]
    col = {c.value: c.column for c in ws[1] if c.value}
    for row, cells in changes.items():
        for header, value in cells.items():
            ws.cell(row=row, column=col[header]).value = value
    for row in sorted(delete, reverse=True):
        ws.delete_rows(row)
    wb.save(path)


def _run(con, cfg, files, year, period):
    results = pipeline.ingest_all(files, cfg, year, period, workers=1)
    frames = pipeline.assemble_all(results, cfg)
    issues = pipeline.validate_all(results, cfg, year, period, frames)
    outcome = pipeline.load_all(con, results, issues, cfg, year, period, pipeline.new_run_id(), frames=frames)
    feedback = pipeline.write_feedbacks(con, outcome, results, cfg)
    summary = pipeline.summary(con, outcome, cfg)
    return outcome, feedback, summary


def _found(outcome) -> set[tuple]:
    iss = outcome.issues
    cp = iss[iss["rule_id"].isin(CROSS)]
    return {(r.school_code, r.rule_id, None if pd.isna(r.excel_row) else int(r.excel_row)) for r in cp.itertuples(index=False)}


# ---------------------------------------------------------------------------------------
# The city: three collections, clean
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_years")
    inboxes, manifests = {}, {}
    for year, period, cont in PERIODS:
        inbox = root / f"{year}_{period}"
        manifests[(year, period)] = generate_city(inbox, schools=SCHOOLS, seed=SEED, school_year=year, period=period,
                                                  continues=cont)
        inboxes[(year, period)] = inbox
    cfg = load_config(None, root / "data")
    con = store.connect(cfg.db_path)
    clean = {}
    try:
        for year, period, _ in PERIODS:
            clean[(year, period)] = _run(con, cfg, discover(inboxes[(year, period)]), year, period)
    finally:
        con.close()
    schools = {s.school_code: s for s in manifests[(Y1, "dau_nam")].schools}
    by_level = {}
    for code, s in sorted(schools.items()):
        by_level.setdefault(tuple(s.levels), []).append(code)
    return dict(root=root, cfg=cfg, inboxes=inboxes, clean=clean, schools=schools, by_level=by_level)


def _path(city, year, period, code) -> Path:
    return city["inboxes"][(year, period)] / city["schools"][code].file


def test_the_next_year_continues_the_cohort(city):
    """Promoted learners keep their code one grade up; leavers are gone; staff keep their IDs."""
    th = city["by_level"][("TH",)][0]
    _, end = _sheet(_path(city, Y1, "cuoi_nam", th), "HocSinh")
    _, start = _sheet(_path(city, Y2, "dau_nam", th), "HocSinh")
    now = {r["Mã định danh Bộ GD&ĐT"]: r for r in start}
    moved = {(r["Khối"], now[r["Mã định danh Bộ GD&ĐT"]]["Khối"]) for r in end if r["Mã định danh Bộ GD&ĐT"] in now}
    assert {("01", "02"), ("02", "03"), ("03", "04"), ("04", "05")} <= moved
    assert all(int(b) - int(a) in (0, 1) for a, b in moved)
    # a primary school's grade-5 completers leave; only the retained stay in grade 5
    completers = [r for r in end if r["Khối"] == "05" and str(r.get("Kết quả lên lớp")) == "1"]
    assert completers and not [r for r in completers if r["Mã định danh Bộ GD&ĐT"] in now]
    _, s1 = _sheet(_path(city, Y1, "cuoi_nam", th), "CanBo")
    _, s2 = _sheet(_path(city, Y2, "dau_nam", th), "CanBo")
    assert {r["Số định danh cá nhân"] for r in s1} == {r["Số định danh cá nhân"] for r in s2}
    assert sum(1 for r in start if r["Mã định danh Bộ GD&ĐT"] not in {e["Mã định danh Bộ GD&ĐT"] for e in end}) > 0


def test_a_clean_two_year_city_gives_no_cross_period_finding(city):
    for key, (outcome, _, summary) in city["clean"].items():
        assert outcome.submissions["status"].str.startswith("accepted").all(), key
        assert _found(outcome) == set(), key
        assert summary["cross_period"]["total"] == 0
        assert "cross-period" not in pipeline.format_summary(summary)


# ---------------------------------------------------------------------------------------
# Injected inconsistencies, resubmitted as new versions of the schools' files
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def injected(city, tmp_path_factory):
    root = tmp_path_factory.mktemp("injected")
    th = city["by_level"][("TH",)][0]
    thcs = city["by_level"][("THCS",)][0]
    mn, mn2 = city["by_level"][("MN",)][:2]
    code, grade, status = "Mã định danh Bộ GD&ĐT", "Khối", "Trạng thái"
    expected: dict[str, set] = {"end": set(), "start": set()}
    truth: dict[str, dict] = {}

    # --- end of 2022-2023 against its start -------------------------------------------------
    end_dir = root / "end"
    end_dir.mkdir()
    # (1) TH: a learner present at the start is deleted from the end-of-year list (no status)
    src = shutil.copy(_path(city, Y1, "cuoi_nam", th), end_dir)
    _, rows = _sheet(Path(src), "HocSinh")
    victim = next(r for r in rows if r[status] == "01" and r[grade] == "03")
    _, start_rows = _sheet(_path(city, Y1, "dau_nam", th), "HocSinh")
    start_row = next(r["_row"] for r in start_rows if r[code] == victim[code])
    _edit(Path(src), "HocSinh", {}, delete=[victim["_row"]])
    expected["end"].add((th, "student_vanished", None))
    truth["vanished"] = dict(school=th, start_row=start_row, grade="03")
    # (2) THCS: a pupil who arrived during the year written as "Đang học" without a date
    src = shutil.copy(_path(city, Y1, "cuoi_nam", thcs), end_dir)
    _, rows = _sheet(Path(src), "HocSinh")
    arrival = next(r for r in rows if r[status] in ("02", "06") and r["Ngày trạng thái"]
                   and r["Ngày trạng thái"][-4:] == "2023")
    _edit(Path(src), "HocSinh", {arrival["_row"]: {status: "01", "Ngày trạng thái": None}})
    expected["end"].add((thcs, "student_flow_identity", arrival["_row"]))
    truth["flow"] = dict(school=thcs, row=arrival["_row"], grade=arrival[grade])

    # --- start of 2023-2024 against the end of 2022-2023 ------------------------------------
    start_dir = root / "start"
    start_dir.mkdir()
    _, end_th = _sheet(_path(city, Y1, "cuoi_nam", th), "HocSinh")
    _, end_thcs = _sheet(_path(city, Y1, "cuoi_nam", thcs), "HocSinh")
    # (3) TH: a pupil promoted from grade 2 written in grade 2 again (and a grade-2 class)
    src = Path(shutil.copy(_path(city, Y2, "dau_nam", th), start_dir))
    _, classes = _sheet(src, "Lop")
    class_of = {g: next(c["Mã lớp"] for c in classes if c["Khối"] == g and not c.get("Lớp ghép")) for g in ("02", "03", "04")}
    _, rows = _sheet(src, "HocSinh")
    promoted = {r[code] for r in end_th if r[grade] == "02" and str(r.get("Kết quả lên lớp")) == "1"}
    pupil = next(r for r in rows if r[code] in promoted and r[grade] == "03")
    _edit(src, "HocSinh", {pupil["_row"]: {grade: "02", "Mã lớp": class_of["02"]}})
    expected["start"].add((th, "student_promoted_not_up", pupil["_row"]))
    truth["promoted"] = dict(school=th, row=pupil["_row"],
                             prev_row=next(r["_row"] for r in end_th if r[code] == pupil[code]))
    # (4) THCS: a retained pupil written one grade up; (5) a grade-9 graduate still listed
    src = Path(shutil.copy(_path(city, Y2, "dau_nam", thcs), start_dir))
    _, classes = _sheet(src, "Lop")
    _, rows = _sheet(src, "HocSinh")
    retained = {r[code]: r for r in end_thcs if str(r.get("Kết quả lên lớp")) == "3" and r[grade] in ("06", "07", "08")}
    kept = next(r for r in rows if r[code] in retained)
    up = f"{int(kept[grade]) + 1:02d}"
    up_class = next(c["Mã lớp"] for c in classes if c["Khối"] == up)
    graduate = next(r for r in end_thcs if r[grade] == "09" and str(r.get("Tốt nghiệp THCS")) == "1")
    seat = next(r for r in rows if r[grade] == "09" and r["_row"] != kept["_row"])
    _edit(src, "HocSinh", {
        kept["_row"]: {grade: up, "Mã lớp": up_class},
        seat["_row"]: {h: graduate[h] for h in (code, "Số định danh cá nhân", "Họ và tên", "Ngày sinh", "Giới tính",
                                                "Dân tộc")},
    })
    expected["start"] |= {(thcs, "student_retained_moved", kept["_row"]),
                          (thcs, "student_leaver_still_present", seat["_row"])}
    truth["retained"] = dict(school=thcs, row=kept["_row"], prev_row=retained[kept[code]]["_row"])
    truth["graduate"] = dict(school=thcs, row=seat["_row"], prev_row=graduate["_row"])
    # (6) MN: a teacher's training level lowered (ĐH/CĐ → Trung cấp sư phạm)
    src = Path(shutil.copy(_path(city, Y2, "dau_nam", mn), start_dir))
    _, staff = _sheet(src, "CanBo")
    teacher = next(r for r in staff if r["Trình độ đào tạo"] in ("16", "17", "02"))
    _edit(src, "CanBo", {teacher["_row"]: {"Trình độ đào tạo": "18"}})
    expected["start"].add((mn, "staff_training_lowered", teacher["_row"]))
    truth["staff"] = dict(school=mn, row=teacher["_row"])
    # (7) the other MN school forgets a third of its children: a swing beyond ±20 %
    src = Path(shutil.copy(_path(city, Y2, "dau_nam", mn2), start_dir))
    _, rows = _sheet(src, "HocSinh")
    _edit(src, "HocSinh", {}, delete=[r["_row"] for r in rows[::3]])
    expected["start"].add((mn2, "school_learners_swing", None))
    _, last_year = _sheet(_path(city, Y1, "dau_nam", mn2), "HocSinh")  # year over year: the same period
    truth["swing"] = dict(school=mn2, before=sum(1 for r in last_year if r[status] in ("01", "02")),
                          after=len(rows) - len(rows[::3]))
    assert truth["swing"]["after"] < 0.8 * truth["swing"]["before"]

    cfg = city["cfg"]
    con = store.connect(cfg.db_path)
    try:
        end = _run(con, cfg, discover(end_dir), Y1, "cuoi_nam")
        start = _run(con, cfg, discover(start_dir), Y2, "dau_nam")
    finally:
        con.close()
    return dict(end=end, start=start, expected=expected, truth=truth, cfg=cfg)


def _messages(outcome, rule_id: str) -> list[str]:
    iss = outcome.issues
    return iss.loc[iss["rule_id"] == rule_id, "message"].tolist()


def test_every_injected_inconsistency_is_reported_and_nothing_else(injected):
    for key in ("end", "start"):
        outcome = injected[key][0]
        assert outcome.submissions["status"].str.startswith("accepted").all(), outcome.submissions
        assert _found(outcome) == injected["expected"][key], key


def test_findings_name_the_learner_the_rule_and_the_compared_collection(injected):
    t = injected["truth"]
    end, start = injected["end"][0], injected["start"][0]
    (msg,) = _messages(end, "student_vanished")
    assert msg.startswith("So với đầu năm 2022-2023: ")
    assert f"dòng {t['vanished']['start_row']} (trang HocSinh, khối 03)" in msg
    (msg,) = _messages(end, "student_flow_identity")
    assert msg.startswith("So với đầu năm 2022-2023: khối " + t["flow"]["grade"])
    assert "(chênh +1)" in msg and msg.endswith(f"dòng {t['flow']['row']}.")
    (msg,) = _messages(start, "student_promoted_not_up")
    assert msg.startswith("So với cuối năm 2022-2023: ")
    assert f"từ khối 02 (trường {t['promoted']['school']}, dòng {t['promoted']['prev_row']})" in msg
    assert "ghi khối 02, không phải khối 03" in msg
    (msg,) = _messages(start, "student_retained_moved")
    assert f"dòng {t['retained']['prev_row']})" in msg
    (msg,) = _messages(start, "student_leaver_still_present")
    assert f"đã tốt nghiệp THCS (trường {t['graduate']['school']}, dòng {t['graduate']['prev_row']})" in msg
    (msg,) = _messages(start, "staff_training_lowered")
    assert "'Trung cấp sư phạm'" in msg
    (msg,) = _messages(start, "school_learners_swing")
    sw = t["swing"]
    assert msg.startswith(f"So với đầu năm 2022-2023: số học sinh đang học {sw['before']} → {sw['after']}")
    assert "vượt ngưỡng ±20 %" in msg
    iss = start.issues
    row = iss[iss["rule_id"] == "staff_training_lowered"].iloc[0]
    assert (row["sheet"], row["field"], row["severity"]) == ("CanBo", "training_level", "warning")
    assert row["column"] and row["header"] == "Trình độ đào tạo"


def test_no_personal_value_in_any_cross_period_message(injected, city):
    """Codes, IDs, names and birth dates of the city never appear in a finding's text."""
    personal: set[str] = set()
    for (year, period), inbox in city["inboxes"].items():
        for s in city["schools"].values():
            for sheet, cols in (("HocSinh", ("Mã định danh Bộ GD&ĐT", "Số định danh cá nhân", "Họ và tên", "Ngày sinh")),
                                ("CanBo", ("Mã cán bộ", "Số định danh cá nhân", "Họ và tên", "Ngày sinh"))):
                _, rows = _sheet(inbox / s.file, sheet)
                personal |= {str(r[c]) for r in rows for c in cols if r.get(c)}
    for key in ("end", "start"):
        iss = injected[key][0].issues
        cp = iss[iss["rule_id"].isin(CROSS)]
        assert len(cp)
        for text in pd.concat([cp["message"], cp["fix"]]):
            assert not re.search(r"\d{9,}", text), text
            assert not [p for p in personal if p in text and len(p) > 6], text
        assert cp.loc[cp["field"] != "training_level", "value"].dropna().isin(["01", "02", "03", "04", "05", "06", "07", "08", "09", "16", "17"]).all()


def test_findings_reach_the_school_feedback_and_the_officer_summary(injected):
    from edustat import officer

    for key in ("end", "start"):
        outcome, feedback, summary = injected[key]
        cp = outcome.issues[outcome.issues["rule_id"].isin(CROSS)]
        for school, part in cp.groupby("school_code"):
            fh = outcome.submissions.loc[outcome.submissions["school_code"] == school, "file_hash"].iloc[0]
            wb = openpyxl.load_workbook(feedback[fh], read_only=True)
            texts = {str(v) for v in (c for row in wb["PhanHoi"].iter_rows(values_only=True) for c in row) if v}
            wb.close()
            for msg in part["message"]:
                assert msg in texts, (school, msg)
        counts = summary["cross_period"]
        assert counts["total"] == len(cp) and counts["schools"] == cp["school_code"].nunique()
        assert counts["by_school"] == {s: g["rule_id"].value_counts().to_dict() for s, g in cp.groupby("school_code")}
        text = pipeline.format_summary(summary)
        assert f"So với kỳ trước / cross-period: {len(cp)} điểm cần trường xác nhận" in text
        for school in cp["school_code"].unique():
            assert f"    - {school}: " in text
        md = officer.summary_markdown(summary, pd.DataFrame(columns=["status", "school_code", "school_name"]), None,
                                      pd.Timestamp("2030-01-01").date(), pd.Timestamp("2023-06-01").date(),
                                      pd.DataFrame(columns=["grade", "nam", "nu"]))
        assert "## So với kỳ trước (trường cần xác nhận)" in md
        assert json.loads(json.dumps(summary))["cross_period"] == counts  # recorded in the run table as JSON


def test_swing_thresholds_are_configurable(tmp_path):
    from edustat.config import ConfigError

    cfg = tmp_path / "edustat.yaml"
    cfg.write_text("swing_thresholds: {learners: 0.5, staff: null}\n", encoding="utf-8")
    c = load_config(cfg, tmp_path / "data")
    assert c.swing_thresholds == {"learners": 0.5, "classes": 0.3, "staff": None}
    for bad in ("{pupils: 0.2}", "{learners: -1}", "{learners: abc}", "0.2"):
        cfg.write_text(f"swing_thresholds: {bad}\n", encoding="utf-8")
        with pytest.raises(ConfigError):
            load_config(cfg, tmp_path / "data")


def test_swings_per_indicator_and_threshold_in_a_real_duckdb(tmp_path):
    """Every swing rule on hand-made core/stg rows: beyond the threshold (either way) is
    reported, at it is not, a school absent last year and a switched-off indicator say nothing."""
    from edustat.periods import cross_period_findings

    con = store.connect(tmp_path / "s.duckdb")
    store.ensure_tables(con)
    # last year: schools A, B with 10 classes, 10 staff, 100 learners; C absent
    counts_now = {"A": (13, 10, 60), "B": (7, 13, 121), "C": (50, 50, 500)}  # classes, staff, learners
    for code in ("A", "B"):
        con.execute("insert into core_school (school_year, period, school_code, file_hash) values (?, 'dau_nam', ?, ?)",
                    [Y1, code, f"old{code}"])
        con.execute(f"insert into core_classes (school_year, period, school_code, file_hash, excel_row) "
                    f"select '{Y1}', 'dau_nam', '{code}', 'old{code}', range from range(10)")
        con.execute(f"insert into core_staff (school_year, period, school_code, file_hash, excel_row, is_active) "
                    f"select '{Y1}', 'dau_nam', '{code}', 'old{code}', range, true from range(10)")
        con.execute(f"insert into core_learners (school_year, period, school_code, file_hash, excel_row, is_enrolled) "
                    f"select '{Y1}', 'dau_nam', '{code}', 'old{code}', range, range < 100 from range(104)")
    for code, (n_cls, n_staff, n_learn) in counts_now.items():
        for table, n, flag in (("classes", n_cls, ""), ("staff", n_staff, ", is_active"), ("learners", n_learn, ", is_enrolled")):
            con.execute(f"insert into stg_{table} (school_year, period, school_code, file_hash, sheet_name, excel_row{flag}) "
                        f"select '{Y2}', 'dau_nam', '{code}', 'new{code}', '{table}', range + 2{', true' if flag else ''} from range({n})")
    run = {c: f"new{c}" for c in counts_now}
    found = cross_period_findings(con, run, Y2, "dau_nam", {"learners": 0.2, "classes": 0.3, "staff": 0.3})
    got = {(r.school_code, r.rule_id, r.fill["prev"], r.fill["now"]) for r in found.itertuples()}
    # A: classes +30 % (at the threshold: not), learners −40 %; B: classes −30 % (not), staff +30 % (not),
    # learners +21 %; C had no collection last year: nothing
    assert got == {("A", "school_learners_swing", 100, 60), ("B", "school_learners_swing", 100, 121)}
    found = cross_period_findings(con, run, Y2, "dau_nam", {"learners": None, "classes": 0.25, "staff": 0.25})
    assert {(r.school_code, r.rule_id) for r in found.itertuples()} == {
        ("A", "school_classes_swing"), ("B", "school_classes_swing"), ("B", "school_staff_swing")}
    # no earlier collection at all: nothing, never an error
    assert cross_period_findings(con, run, Y1, "dau_nam").empty
    con.close()
