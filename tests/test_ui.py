"""What the statistics officer sees in the Prefect UI: the run's name, the stages' INFO logs
(counts, durations, file names; nothing personal), the custom-run form's descriptions and
choices, the artifacts (a narrow table, a summary whose deadline is the collection's, charts
as inline SVG the UI renders itself). A real flow run against the test Prefect server."""
from __future__ import annotations

import base64
import datetime as dt
import re
import xml.etree.ElementTree as ET

import duckdb
import pandas as pd
import pytest

from edustat import officer
from edustat.synth import generate_city

YEAR, PERIOD = "2022-2023", "dau_nam"


def _table(statuses_received: list[tuple[str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame([{"school_code": f"7471800{i}", "school_name": f"Trường {i}", "status": st, "version": 1,
                          "n_learners": 10, "n_staff": 2, "n_errors": 0, "n_warnings": 0, "feedback_path": "/x/y.xlsx",
                          "received_at": (f"{pd.Timestamp(r):%d/%m/%Y %H:%M}" if r else None),
                          "received_date": (pd.Timestamp(r).date() if r else None), "in_core": st != "missing"}
                         for i, (st, r) in enumerate(statuses_received)])


def test_deadline_of_a_closed_collection_is_said_against_the_collection():
    deadline = dt.date(2022, 10, 30)
    table = _table([("accepted", "2022-10-20"), ("accepted", "2022-11-02"), ("rejected", "2022-10-30"), ("missing", None)])
    text = officer.deadline_text(deadline, dt.date(2026, 11, 30), table)
    assert text == "đợt đã qua hạn nộp 30/10/2022: 2 tệp nộp đúng hạn, 1 tệp nộp sau hạn, 1 trường chưa nộp"
    assert officer.late_lines(table, deadline) == ["74718001 Trường 1: nộp sau hạn 3 ngày (hạn 30/10/2022)"]
    summary = {"school_year": YEAR, "period": PERIOD, "run_id": "r", "files": 3, "issues": {"error": 0, "warning": 0, "notice": 0},
               "counts": {"accepted": 2, "accepted_with_warnings": 0, "rejected": 1, "unreadable": 0, "missing": 1},
               "feedback_dir": "f"}
    md = officer.summary_markdown(summary, table, None, deadline, dt.date(2026, 11, 30), pd.DataFrame(columns=["grade", "nam", "nu"]))
    assert "nộp sau hạn 3 ngày (hạn 30/10/2022)" in md and "nộp muộn" not in md
    assert "quá hạn" not in md and "1492" not in md
    rows = officer.table_artifact_rows(table, deadline)
    assert rows[1]["Nhận"] == "02/11/2022, muộn 3 ngày" and rows[0]["Nhận"] == "20/10/2022"


def test_deadline_of_an_open_collection_counts_the_days_left():
    table = _table([("accepted", "2022-10-01")])
    assert officer.deadline_text(dt.date(2022, 10, 30), dt.date(2022, 10, 25), table) == "còn **5 ngày** đến hạn nộp 30/10/2022"
    assert "hôm nay là hạn nộp" in officer.deadline_text(dt.date(2022, 10, 30), dt.date(2022, 10, 30), table)


def test_school_table_is_narrow():
    rows = officer.table_artifact_rows(_table([("accepted", "2022-10-01"), ("rejected", "2022-10-02")]), dt.date(2022, 10, 30))
    assert len(rows[0]) <= 9
    assert not any("/" in str(v) and v.endswith(".xlsx") for r in rows for v in map(str, r.values())), "no file paths"
    assert sum(len(k) for k in rows[0]) < 70  # short headers


def test_partially_loaded_is_said():
    assert officer.status_text("rejected", True) == "Nạp một phần (bỏ dòng lỗi)"
    assert officer.status_text("rejected", False) == "Chưa tiếp nhận (có lỗi)"


def test_run_title():
    counts = {"accepted": 8, "accepted_with_warnings": 2, "rejected": 2, "unreadable": 1, "missing": 0}
    assert officer.run_title(YEAR, PERIOD, counts) == "2022-2023 đầu năm — 12 trường (10 tiếp nhận, 2 có lỗi, 1 tệp không đọc được)"
    assert officer.run_title(YEAR, "cuoi_nam") == "2022-2023 cuối năm"


def test_charts_are_inline_svg_images():
    summary = {"school_year": YEAR, "period": PERIOD, "run_id": "r"}
    by_grade = pd.DataFrame({"grade": ["Nhà trẻ", "1", "2"], "nam": [5, 40, 38], "nu": [6, 37, 41]})
    md = officer.charts_markdown(summary, _table([("accepted", "2022-10-01"), ("missing", None)]), by_grade)
    uris = re.findall(r"!\[[^\]]+\]\((data:image/svg\+xml;base64,[A-Za-z0-9+/=]+)\)", md)
    assert len(uris) == 2
    for uri in uris:
        root = ET.fromstring(base64.b64decode(uri.split(",", 1)[1]))
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert not list(root.iter("{http://www.w3.org/2000/svg}script"))
    assert "Khối 1" in base64.b64decode(uris[1].split(",", 1)[1]).decode("utf-8")
    assert "file://" not in md


def test_custom_run_form_offers_choices_and_says_what_each_parameter_is():
    from prefect.utilities.callables import parameter_schema

    from flows.collect import collection_flow, reports_flow

    for fl in (collection_flow, reports_flow):
        props = parameter_schema(fl.fn).model_dump()["properties"]
        assert props["period"]["enum"] == ["dau_nam", "cuoi_nam"]
        assert "auto" in props["school_year"]["enum"] and YEAR in props["school_year"]["enum"]
        for name, p in props.items():
            assert p.get("description"), name
            assert re.search(r"[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]", p["description"]), (name, p["description"])


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory, prefect_harness):
    from flows.collect import collection_flow

    work = tmp_path_factory.mktemp("ui-run")
    inbox = work / "inbox"
    generate_city(inbox, schools=2, seed=3, school_year=YEAR, period=PERIOD)
    (inbox / "manifest.json").unlink()
    (inbox / "tep_hong.xlsx").write_bytes(b"not a workbook")
    state = collection_flow(school_year=YEAR, period=PERIOD, inbox=str(inbox), data_dir=str(work / "data"),
                            publish=False, forms=False, return_state=True)
    assert state.is_completed(), state
    return {"id": state.state_details.flow_run_id, "db": work / "data" / "curated" / "edustat.duckdb"}


def test_the_run_is_named_after_what_ran_and_logs_every_stage(flow_run):
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    time.sleep(3)  # the log worker ships records in batches
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run["id"])
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run["id"]])), limit=200)
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run["id"]])))
    assert run.name == "2022-2023 đầu năm — 2 trường (2 tiếp nhận, 1 tệp không đọc được)", run.name
    info = [lg.message for lg in logs if lg.level == 20]
    for stage in ("Tìm thấy 3 tệp", "Đã đọc 3 tệp", "Đã ghép", "Đã kiểm tra", "Đã nạp DuckDB", "Đã ghi 3 tệp phản hồi",
                  "Đã tạo 3 báo cáo", "Lần chạy"):
        assert any(m.startswith(stage) for m in info), (stage, info)
    assert any("tep_hong.xlsx" in m for m in info), "the unreadable file is named"
    assert not any("công bố" in m.lower() for m in info), "publish=False: nothing said about a snapshot"
    con = duckdb.connect(str(flow_run["db"]), read_only=True)
    try:
        names = [n for (n,) in con.execute("select full_name from raw_learners where full_name is not null limit 200").fetchall()]
        names += [n for (n,) in con.execute("select full_name from raw_staff where full_name is not null limit 50").fetchall()]
    finally:
        con.close()
    text = "\n".join(info)
    assert names and not [n for n in names if n in text], "no personal names in the run log"
    kinds = {a.key: a.type for a in arts}
    assert kinds == {"edustat-truong-2022-2023-dau-nam": "table", "edustat-tong-ket-2022-2023-dau-nam": "markdown",
                     "edustat-bieu-do-2022-2023-dau-nam": "markdown"}
    chart = next(a for a in arts if a.key.startswith("edustat-bieu-do"))
    assert chart.data.count("data:image/svg+xml;base64,") == 2
    summary = next(a for a in arts if a.key.startswith("edustat-tong-ket")).data
    assert "tep_hong.xlsx" in summary and "Bản sao cho phân tích" not in summary


@pytest.mark.slow
def test_screenshots_script_checks_what_the_officer_sees(tmp_path):
    """`make screenshots` end to end: a real server, a real run, headless Chromium; the script
    exits non-zero when the run name, the stage logs or the chart images are not on the pages."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium not installed (make screenshots installs it)")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "scripts" / "screenshots.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["1-danh-sach-lan-chay.png", "2-lan-chay-nhat-ky.png", "3-lan-chay-bao-cao.png", "4-tong-ket.png",
                    "5-bang-truong.png", "6-bieu-do.png", "7-chay-tuy-chinh.png"]
    assert all((tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "nộp sau hạn" in (tmp_path / "4-tong-ket.txt").read_text(encoding="utf-8")
