"""What the statistics officer sees of a run in the Prefect UI: the table of every expected
school, a Vietnamese summary (totals, what changed since the previous run of the same
collection, who is missing, days left before the deadline, where the forms are) and two
charts (learners by grade and sex; schools by status), as markdown bars and an HTML file.

Pure functions of data read by the caller; the flow publishes them as artifacts.
"""
from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path
from typing import Mapping

import pandas as pd

from edustat.pipeline import STATUS_TEXT, VN_TZ

PERIOD_TEXT = {"dau_nam": "đầu năm", "cuoi_nam": "cuối năm"}


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
        select s.school_code, coalesce(c.school_name, s.file_name) as school_name, s.status, s.version,
               s.n_learners, s.n_staff, s.n_errors, s.n_warnings, s.feedback_path,
               strftime(s.received_at, '%d/%m/%Y %H:%M') as received_at
        from submission s
        left join (select distinct school_code, school_name from stg_school where school_year = ? and period = ?) c
          using (school_code)
        where s.school_year = ? and s.period = ? and s.is_current
        order by s.school_code""", [school_year, period, school_year, period]).df()
    names = dict(con.execute("select school_code, arg_max(school_name, school_year || period) from core_school group by 1").fetchall())
    missing = [c for c in expected if c not in set(subs["school_code"].dropna())]
    rows = [{"school_code": c, "school_name": names.get(c, ""), "status": "missing", "version": None, "n_learners": None,
             "n_staff": None, "n_errors": None, "n_warnings": None, "feedback_path": None, "received_at": None}
            for c in missing]
    table = pd.concat([subs, pd.DataFrame(rows)], ignore_index=True) if rows else subs
    order = {"rejected": 0, "unreadable": 1, "missing": 2, "partially_loaded": 3, "accepted_with_warnings": 4, "accepted": 5}
    table["_o"] = table["status"].map(order)
    return table.sort_values(["_o", "school_code"], na_position="last").drop(columns="_o").reset_index(drop=True)


def table_artifact_rows(table: pd.DataFrame) -> list[dict]:
    out = []
    for r in table.itertuples(index=False):
        out.append({
            "Mã trường": r.school_code or "?", "Tên trường": r.school_name or "",
            "Trạng thái": STATUS_TEXT.get(r.status, r.status),
            "Bản nộp": "" if pd.isna(r.version) else int(r.version),
            "Học sinh": "" if pd.isna(r.n_learners) else int(r.n_learners),
            "Cán bộ": "" if pd.isna(r.n_staff) else int(r.n_staff),
            "Lỗi": "" if pd.isna(r.n_errors) else int(r.n_errors),
            "Cảnh báo": "" if pd.isna(r.n_warnings) else int(r.n_warnings),
            "Nhận lúc": r.received_at or "", "Tệp phản hồi": r.feedback_path or "",
        })
    return out


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
    days = (deadline - today).days
    when = (f"còn **{days} ngày** đến hạn nộp {deadline:%d/%m/%Y}" if days > 0 else
            f"**hôm nay là hạn nộp** ({deadline:%d/%m/%Y})" if days == 0 else
            f"đã **quá hạn {-days} ngày** (hạn {deadline:%d/%m/%Y})")
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
    missing = table[table["status"] == "missing"]
    if len(missing):
        lines += ["", f"## Chưa nộp ({len(missing)} trường)"]
        lines += [f"- {r.school_code} {r.school_name or ''}".rstrip() for r in missing.itertuples(index=False)]
    if summary.get("reports_dir"):
        bad = summary.get("form_checks_failed", 0)
        lines += ["", "## Biểu báo cáo", f"Thư mục: `{summary['reports_dir']}` ({', '.join(summary.get('forms', []))}). "
                  + ("Mọi phép kiểm tra của biểu đều đạt." if not bad else f"**{bad} phép kiểm tra không đạt** — xem trang KiemTra.")]
    lines += ["", f"Phản hồi cho từng trường: `{summary['feedback_dir']}`",
              f"Bản sao cho phân tích: `{summary['published']}`"]
    if len(by_grade):
        top = int(max(by_grade["nam"].max(), by_grade["nu"].max()))
        lines += ["", "## Học sinh theo khối và giới tính", "| Khối | Nam | | Nữ | |", "|---|---:|---|---:|---|"]
        lines += [f"| {r.grade} | {int(r.nam):,} | {_bar(int(r.nam), top)} | {int(r.nu):,} | {_bar(int(r.nu), top)} |"
                  for r in by_grade.itertuples(index=False)]
    return "\n".join(lines)


def _changed_schools(before: Mapping[str, str], after: Mapping[str, str]) -> list[tuple[str, str, str]]:
    return [(code, before.get(code, "missing"), status) for code, status in sorted(after.items())
            if before.get(code, "missing") != status]


def charts_html(path: Path, summary: dict, table: pd.DataFrame, by_grade: pd.DataFrame) -> Path:
    """A self-contained HTML page (inline SVG, no network) with the two charts."""
    def bars(items: list[tuple[str, list[int]]], colors: list[str], legend: list[str]) -> str:
        top = max([sum(v) for _, v in items] + [1])
        h, rows = 26, []
        for i, (label, values) in enumerate(items):
            x = 140
            for v, col in zip(values, colors):
                w = 520 * v / top
                rows.append(f'<rect x="{x:.1f}" y="{i * h + 4}" width="{w:.1f}" height="{h - 8}" fill="{col}"/>')
                x += w
            rows.append(f'<text x="134" y="{i * h + h / 2 + 5}" text-anchor="end">{html.escape(str(label))}</text>')
            rows.append(f'<text x="{x + 6:.1f}" y="{i * h + h / 2 + 5}">{" + ".join(f"{v:,}" for v in values)}</text>')
        leg = " ".join(f'<span style="color:{c}">■</span> {html.escape(t)}' for c, t in zip(colors, legend))
        return f'<p>{leg}</p><svg width="760" height="{len(items) * h + 8}" font-family="sans-serif" font-size="13">{"".join(rows)}</svg>'

    status_counts = table["status"].value_counts()
    status_items = [(STATUS_TEXT[s], [int(status_counts.get(s, 0))]) for s in
                    ("accepted", "accepted_with_warnings", "partially_loaded", "rejected", "unreadable", "missing")]
    grade_items = [(f"Khối {r.grade}" if str(r.grade).isdigit() else r.grade, [int(r.nam), int(r.nu)])
                   for r in by_grade.itertuples(index=False)]
    title = f"Năm học {summary['school_year']}, kỳ {PERIOD_TEXT[summary['period']]}"
    page = f"""<!doctype html><html lang="vi"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>
<body style="font-family:sans-serif;max-width:820px;margin:2em auto">
<h1>{html.escape(title)}</h1><p>Lần chạy {html.escape(summary['run_id'])}</p>
<h2>Trường theo trạng thái</h2>{bars(status_items, ["#4472c4"], ["Số trường"])}
<h2>Học sinh theo khối và giới tính</h2>{bars(grade_items, ["#4472c4", "#ed7d31"], ["Nam", "Nữ"])}
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def today_vn() -> dt.date:
    return dt.datetime.now(VN_TZ).date()
