"""What the statistics officer sees of a run in the Prefect UI: the table of every expected
school, a Vietnamese summary (totals, what changed since the previous run of the same
collection, who is missing, days left before the deadline, where the forms are) and two
charts (learners by grade and sex; schools by status) as a markdown artifact with inline SVG
images (data: URIs, which the Prefect 3.9 UI renders itself — checked in Chromium by
scripts/screenshots.py), the flow-run name, and the run logger the stages write to.

Pure functions of data read by the caller; the flow publishes them as artifacts. Nothing
personal is logged or shown: counts, rule ids, school codes and file names only.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import json
import logging
from typing import Mapping

import pandas as pd

from edustat.pipeline import STATUS_TEXT, VN_TZ

PERIOD_TEXT = {"dau_nam": "đầu năm", "cuoi_nam": "cuối năm"}
RUN_LOGGER = "edustat.run"


def run_log() -> logging.Logger:
    """The stages' logger: INFO records go to the Prefect run's log (the UI's Logs tab) through
    Prefect's API handler, whatever PREFECT_LOGGING_LEVEL quiets Prefect's own loggers to, and
    never to the console (`edustat run` prints its own summary)."""
    log = logging.getLogger(RUN_LOGGER)
    if not any(type(h).__name__ == "APILogHandler" for h in log.handlers):
        from prefect.logging.handlers import APILogHandler

        log.addHandler(APILogHandler())
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def run_title(school_year: str, period: str, counts: Mapping[str, int] | None = None, files: int | None = None,
              partial: int = 0) -> str:
    """The flow-run name the UI lists: "2022-2023 đầu năm — 12 trường (9 tiếp nhận, 2 có lỗi, 1 tệp không đọc được)"."""
    head = f"{school_year} {PERIOD_TEXT.get(period, period)}"
    if counts is None:
        return head if files is None else f"{head} — {files} tệp"
    partial = partial or counts.get("partially_loaded", 0)
    schools = sum(counts.get(k, 0) for k in ("accepted", "accepted_with_warnings", "partially_loaded", "rejected"))
    parts = [f"{counts.get('accepted', 0) + counts.get('accepted_with_warnings', 0)} tiếp nhận"]
    if partial:
        parts.append(f"{partial} nạp một phần")
    if counts.get("rejected", 0):
        parts.append(f"{counts['rejected']} có lỗi")
    if counts.get("unreadable"):
        parts.append(f"{counts['unreadable']} tệp không đọc được")
    if counts.get("missing"):
        parts.append(f"{counts['missing']} chưa nộp")
    return f"{head} — {schools} trường ({', '.join(parts)})"


def default_deadline(school_year: str, period: str) -> dt.date:
    """Circular 24/2018: start-of-year data due 30/10, end-of-year 30/06 (report-forms.md);
    an office sets its own in config (`deadlines`)."""
    start = int(school_year[:4])
    return dt.date(start, 10, 30) if period == "dau_nam" else dt.date(start + 1, 6, 30)


def deadline_for(deadlines: Mapping[str, str], school_year: str, period: str) -> dt.date:
    value = deadlines.get(f"{school_year}/{period}")
    return dt.date.fromisoformat(value) if value else default_deadline(school_year, period)


def artifact_key(kind: str, school_year: str, period: str) -> str:
    """Stable keys (lowercase, digits, dashes) so the UI shows one history per collection."""
    return f"edustat-{kind}-{school_year}-{period.replace('_', '-')}"


def school_table(con, school_year: str, period: str, expected: list[str]) -> pd.DataFrame:
    """One row per expected or submitting school: status (missing included), counts, feedback."""
    subs = con.execute("""
        select s.school_code, coalesce(c.school_name, s.file_name) as school_name, s.status, s.version, s.in_core,
               s.n_learners, s.n_staff, s.n_errors, s.n_warnings, s.feedback_path,
               strftime(s.received_at, '%d/%m/%Y %H:%M') as received_at, cast(s.received_at as date) as received_date,
               s.certified
        from submission s
        left join (select distinct school_code, school_name from stg_school where school_year = ? and period = ?) c
          using (school_code)
        where s.school_year = ? and s.period = ?
          and (s.is_current or (s.school_code is null and s.run_id = (
               select max(run_id) from submission where school_year = s.school_year and period = s.period)))
        order by s.school_code""", [school_year, period, school_year, period]).df()
    names = dict(con.execute("select school_code, arg_max(school_name, school_year || period) from core_school group by 1").fetchall())
    missing = [c for c in expected if c not in set(subs["school_code"].dropna())]
    rows = [{"school_code": c, "school_name": names.get(c, ""), "status": "missing", "version": None, "n_learners": None,
             "n_staff": None, "n_errors": None, "n_warnings": None, "feedback_path": None, "received_at": None,
             "received_date": None, "in_core": None}
            for c in missing]
    table = pd.concat([subs, pd.DataFrame(rows)], ignore_index=True) if rows else subs
    order = {"rejected": 0, "unreadable": 1, "missing": 2, "partially_loaded": 3, "accepted_with_warnings": 4, "accepted": 5}
    table["_o"] = table["status"].map(order)
    return table.sort_values(["_o", "school_code"], na_position="last").drop(columns="_o").reset_index(drop=True)


PARTIAL_TEXT = "Nạp một phần (bỏ dòng lỗi)"
SHORT_STATUS = {"accepted": "Đã tiếp nhận", "accepted_with_warnings": "Có cảnh báo", "rejected": "Có lỗi",
                "unreadable": "Không đọc được", "missing": "Chưa nộp", "partial": "Nạp một phần", "late": "Nộp muộn, chờ xử lý"}


def status_text(status: str, in_core: object = None, short: bool = False) -> str:
    """A file with errors whose valid rows were loaded (load_policy: load_valid_rows) is said
    to be partially loaded, not simply rejected. `short`: the words of the UI's narrow table."""
    if status == "partially_loaded" or (status == "rejected" and in_core is True):
        return SHORT_STATUS["partial"] if short else PARTIAL_TEXT
    return SHORT_STATUS.get(status, status) if short else STATUS_TEXT.get(status, status)


def _clip(text: object, n: int = 30) -> str:
    text = text if isinstance(text, str) else ""
    return text if len(text) <= n else text[: n - 1] + "…"


def late_days(received: object, deadline: dt.date) -> int | None:
    """Days a submission came in after the collection's deadline (None: on time or not received)."""
    if received is None or (not isinstance(received, (dt.date, dt.datetime)) and pd.isna(received)):
        return None
    day = pd.Timestamp(received).date()
    return (day - deadline).days if day > deadline else None


def late_text(days: int | None, deadline: dt.date) -> str:
    # "sau hạn", not "muộn": "nộp muộn" is the status of a file held by a closed collection
    return f"nộp sau hạn {days} ngày (hạn {deadline:%d/%m/%Y})" if days else ""


def table_artifact_rows(table: pd.DataFrame, deadline: dt.date | None = None) -> list[dict]:
    """The per-school table for the UI: narrow columns (codes, short headers, numbers) so it
    fits a laptop screen; where the feedback files are is said once in the summary."""
    out = []
    for r in table.itertuples(index=False):
        late = late_days(getattr(r, "received_date", None), deadline) if deadline else None
        received = r.received_at[:10] if isinstance(r.received_at, str) else ""
        out.append({
            "Mã trường": r.school_code if isinstance(r.school_code, str) else "?",
            "Tên trường": _clip(r.school_name, 22),
            "Trạng thái": status_text(r.status, getattr(r, "in_core", None), short=True)
                          + (" · HT xác nhận" if _yes(getattr(r, "certified", None)) else ""),
            "Bản": "" if pd.isna(r.version) else int(r.version),
            "HS": "" if pd.isna(r.n_learners) else int(r.n_learners),
            "CB": "" if pd.isna(r.n_staff) else int(r.n_staff),
            "Lỗi": "" if pd.isna(r.n_errors) else int(r.n_errors),
            "C.báo": "" if pd.isna(r.n_warnings) else int(r.n_warnings),
            "Nhận": f"{received}, muộn {late} ngày" if late else received,
        })
    return out


def _yes(value: object) -> bool:
    return value is not None and not pd.isna(value) and bool(value)


def deadline_text(deadline: dt.date, today: dt.date, table: pd.DataFrame) -> str:
    """The deadline said relative to the collection: days left while it is open; once it has
    passed, who came in late and by how much against the deadline (never against today)."""
    days = (deadline - today).days
    if days > 0:
        return f"còn **{days} ngày** đến hạn nộp {deadline:%d/%m/%Y}"
    if days == 0:
        return f"**hôm nay là hạn nộp** ({deadline:%d/%m/%Y})"
    got = table[table["status"] != "missing"]
    lates = late_lines(table, deadline)
    missing = int((table["status"] == "missing").sum())
    parts = [f"đợt đã qua hạn nộp {deadline:%d/%m/%Y}: {len(got) - len(lates)} tệp nộp đúng hạn"]
    if lates:
        parts.append(f"{len(lates)} tệp nộp sau hạn")
    if missing:
        parts.append(f"{missing} trường chưa nộp")
    return ", ".join(parts)


def late_lines(table: pd.DataFrame, deadline: dt.date) -> list[str]:
    """One line per file received after the deadline, latest first: "74718003 Trường …: nộp
    muộn 3 ngày so với hạn 30/10/2022"."""
    out = []
    for r in table.itertuples(index=False):
        if r.status == "missing":
            continue
        days = late_days(getattr(r, "received_date", None), deadline)
        if days:
            code = r.school_code if isinstance(r.school_code, str) else "?"
            out.append((days, f"{code} {_clip(r.school_name, 60)}: {late_text(days, deadline)}"))
    return [line for _, line in sorted(out, key=lambda x: -x[0])]


def previous_summary(con, school_year: str, period: str, run_id: str) -> dict | None:
    row = con.execute("""select summary from run where school_year = ? and period = ? and run_id <> ?
                         order by started_at desc limit 1""", [school_year, period, run_id]).fetchone()
    return json.loads(row[0]) if row and row[0] else None


def _bar(n: int, top: int, width: int = 24) -> str:
    return "█" * max(1 if n else 0, round(width * n / top)) if top else ""


def learners_by_grade(con, school_year: str, period: str) -> pd.DataFrame:
    return con.execute("""
        select coalesce(cast(grade_number as varchar), case care_level when 'nha_tre' then 'Nhà trẻ' else 'Mẫu giáo' end) as grade,
               count(*) filter (where not is_female) as nam, count(*) filter (where is_female) as nu
        from core_learners where school_year = ? and period = ? and is_enrolled
        group by 1 order by min(coalesce(grade_number, case care_level when 'nha_tre' then -1 else 0 end))""",
                       [school_year, period]).df()


def summary_markdown(summary: dict, table: pd.DataFrame, previous: dict | None, deadline: dt.date,
                     today: dt.date, by_grade: pd.DataFrame) -> str:
    c, i = summary["counts"], summary["issues"]
    when = deadline_text(deadline, today, table)
    lines = [
        f"# Thu thập số liệu năm học {summary['school_year']}, kỳ {PERIOD_TEXT[summary['period']]}",
        f"Lần chạy `{summary['run_id']}` — {summary['files']} tệp đã xử lý; {when}.",
        "",
        "| Trạng thái | Số trường |", "|---|---:|",
        *[f"| {STATUS_TEXT[k]} | {c.get(k, 0)} |" for k in ("accepted", "accepted_with_warnings", "partially_loaded", "rejected", "unreadable", "missing")],
        "",
        f"Lỗi: **{i['error']}**, cảnh báo: {i['warning']}, lưu ý: {i['notice']}. "
        f"Học sinh, cán bộ, lớp đã nạp: {summary.get('learners_loaded', 0):,} dòng.",
    ]
    if previous:
        pc = previous.get("counts", {})
        delta = [f"{STATUS_TEXT[k]} {pc.get(k, 0)} → {c.get(k, 0)}" for k in STATUS_TEXT if pc.get(k, 0) != c.get(k, 0)]
        changed = _changed_schools(previous.get("schools", {}), summary.get("schools", {}))
        lines += ["", "## Thay đổi so với lần chạy trước", ("; ".join(delta) if delta else "Không thay đổi số trường theo trạng thái.")]
        lines += [f"- {code}: {STATUS_TEXT.get(a, a)} → {STATUS_TEXT.get(b, b)}" for code, a, b in changed[:30]]
    if summary.get("closed") or summary.get("late_waiting"):  # issue 11: the period lock
        lines += ["", "## Khóa kỳ và tệp nộp muộn",
                  ("Kỳ **đã khóa**: tệp đến sau được giữ lại, không thay đổi số liệu và biểu. " if summary.get("closed") else "")
                  + f"{summary.get('late_waiting', 0)} tệp nộp muộn đang chờ Phòng xử lý (edustat accept-late / edustat reopen)."]
    if summary.get("schools_in_core"):
        lines += ["", f"Hiệu trưởng đã xác nhận số liệu: {summary.get('certified_schools', 0)} / {summary['schools_in_core']} trường đã nạp."]
    lates = late_lines(table, deadline) if today > deadline else []
    if lates:
        lines += ["", f"## Nộp sau hạn ({len(lates)} tệp)"] + [f"- {t}" for t in lates[:30]]
    missing = table[table["status"] == "missing"]
    if len(missing):
        lines += ["", f"## Chưa nộp ({len(missing)} trường)"]
        lines += [f"- {r.school_code} {r.school_name or ''}".rstrip() for r in missing.itertuples(index=False)]
    if summary.get("reports_dir"):
        from edustat.pipeline import forms_line

        # honest: how many schools the forms cover, never "all pass" while schools are left out
        lines += ["", "## Biểu báo cáo", f"Thư mục: `{summary['reports_dir']}` ({', '.join(summary.get('forms', []))}): "
                  + forms_line(summary, english=False) + "."]
    from edustat.periods import summary_text_lines

    cross = summary_text_lines(summary.get("cross_period") or {})
    if cross:  # counts only: the messages are in each school's feedback
        lines += ["", "## So với kỳ trước (trường cần xác nhận)", cross[0]] + [f"- {t}" for t in cross[1:]]
    if summary.get("unreadable_files"):
        lines += ["", f"## Tệp không đọc được ({len(summary['unreadable_files'])})"]
        lines += [f"- `{name}`" for name in summary["unreadable_files"]]
    if summary.get("files"):
        lines += ["", f"Phản hồi cho từng trường: `{summary['feedback_dir']}`"]
    if summary.get("published"):
        lines += [f"Bản sao cho phân tích: `{summary['published']}`"]
    if len(by_grade):
        top = int(max(by_grade["nam"].max(), by_grade["nu"].max()))
        lines += ["", "## Học sinh theo khối và giới tính", "| Khối | Nam | | Nữ | |", "|---|---:|---|---:|---|"]
        lines += [f"| {r.grade} | {int(r.nam):,} | {_bar(int(r.nam), top)} | {int(r.nu):,} | {_bar(int(r.nu), top)} |"
                  for r in by_grade.itertuples(index=False)]
    return "\n".join(lines)


def _changed_schools(before: Mapping[str, str], after: Mapping[str, str]) -> list[tuple[str, str, str]]:
    return [(code, before.get(code, "missing"), status) for code, status in sorted(after.items())
            if before.get(code, "missing") != status]


def svg_bars(items: list[tuple[str, list[int]]], colors: list[str], legend: list[str]) -> str:
    """A horizontal (stacked) bar chart as a standalone SVG document: no script, no network."""
    top = max([sum(v) for _, v in items] + [1])
    h, label_w, bar_w = 28, 170, 420
    rows = []
    for i, (label, values) in enumerate(items):
        y = 30 + i * h
        x = label_w
        for v, col in zip(values, colors):
            w = bar_w * v / top
            rows.append(f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{h - 8}" fill="{col}"/>')
            x += w
        rows.append(f'<text x="{label_w - 8}" y="{y + h / 2 + 5}" text-anchor="end">{html.escape(str(label))}</text>')
        rows.append(f'<text x="{x + 6:.1f}" y="{y + h / 2 + 5}">{html.escape(" + ".join(f"{v:,}" for v in values))}</text>')
    leg, lx = [], label_w
    for col, text in zip(colors, legend):
        leg.append(f'<rect x="{lx}" y="6" width="14" height="14" fill="{col}"/><text x="{lx + 20}" y="18">{html.escape(text)}</text>')
        lx += 40 + 9 * len(text)
    width, height = label_w + bar_w + 110, 30 + len(items) * h + 6
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'font-family="DejaVu Sans, Arial, sans-serif" font-size="13"><rect width="100%" height="100%" fill="white"/>'
            f'{"".join(leg)}{"".join(rows)}</svg>')


def svg_data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def charts_markdown(summary: dict, table: pd.DataFrame, by_grade: pd.DataFrame) -> str:
    """The two charts as a markdown artifact the Prefect UI shows itself: each an SVG image
    embedded as a data: URI (no file, no link to follow), with its numbers as a table below
    for readers whose screen does not show images."""
    in_core = table["in_core"] if "in_core" in table else pd.Series(False, index=table.index)
    keys = table["status"].where(~((table["status"] == "rejected") & (in_core == True)), "partial")  # noqa: E712
    keys = keys.replace({"partially_loaded": "partial"})
    status_counts = keys.value_counts()
    statuses = ("accepted", "accepted_with_warnings", "partial", "rejected", "unreadable", "missing")
    labels = {**STATUS_TEXT, "partial": PARTIAL_TEXT}
    status_items = [(labels[st], [int(status_counts.get(st, 0))]) for st in statuses]
    grade_items = [(f"Khối {int(r.grade)}" if str(r.grade).isdigit() else str(r.grade), [int(r.nam), int(r.nu)])
                   for r in by_grade.itertuples(index=False)]
    title = f"Năm học {summary['school_year']}, kỳ {PERIOD_TEXT[summary['period']]}"
    lines = [f"# Biểu đồ — {title}", "", "## Trường theo trạng thái", "",
             f"![Số trường theo trạng thái]({svg_data_uri(svg_bars(status_items, ['#4472c4'], ['Số trường']))})", "",
             "| Trạng thái | Số trường |", "|---|---:|", *[f"| {t} | {v[0]} |" for t, v in status_items]]
    if grade_items:
        lines += ["", "## Học sinh đang học theo khối và giới tính", "",
                  f"![Học sinh theo khối và giới tính]({svg_data_uri(svg_bars(grade_items, ['#4472c4', '#ed7d31'], ['Nam', 'Nữ']))})",
                  "", "| Khối | Nam | Nữ |", "|---|---:|---:|", *[f"| {t} | {v[0]:,} | {v[1]:,} |" for t, v in grade_items]]
    return "\n".join(lines)


def today_vn() -> dt.date:
    return dt.datetime.now(VN_TZ).date()
