"""Cross-period checks (stage e): this run's files against earlier collections in core_*.

Run inside the load transaction (`pipeline._load_in_transaction`, next to the cross-school
rules), as DuckDB SQL over the run's staged rows (`stg_*` of the run's files) and the accepted
rows (`core_*`) of the compared collection. Learners are matched by MOET student code, staff by
personal ID — never by name. Rules and severities are in the catalogue (stage cross_period);
swing thresholds in the config (`swing_thresholds`).

- end of year N against start of year N (same school): the flow identity per grade
  (start + arrivals − departures − dropouts = end, `student_flow_identity`) and learners of
  the start who are absent at the end without a leaving status (`student_vanished`);
- start of year N+1 against end of year N (any school of the city): promoted learners one grade
  up (`student_promoted_not_up`), retained learners in the same grade
  (`student_retained_moved`), grade-9 graduates, grade-5 completers and preschool completers
  gone from their level (`student_leaver_still_present`);
- both: a staff member's training level is never lowered (`staff_training_lowered`, against the
  collection just before);
- year over year (same period of the previous year): learners, classes and staff per school
  beyond a threshold (`school_*_swing`).

A school whose compared collection is not in core gets none of these (nothing is said): a first
collection, or a school new this year, is never an error. Messages name rows, grades, school
codes and counts — never a code, ID or name (they reach the school's feedback and the officer's
summary, and `publish` scrubs nothing it does not need to).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import pandas as pd

from schemas import load_contract
from schemas.rules import Catalogue

PERIOD_TEXT = {"dau_nam": "đầu năm", "cuoi_nam": "cuối năm"}
DEFAULT_SWING_THRESHOLDS = {"learners": 0.20, "classes": 0.30, "staff": 0.20}
ARRIVING = ("02", "06")   # chuyển đến kỳ 1 / kỳ 2 (during the year; 10 = summer, after 31/5)
DEPARTED = ("04", "08")   # chuyển đi kỳ 1 / kỳ 2 (the end-of-year forms' rows)
DROPPED = ("05", "09")    # thôi học kỳ 1 / kỳ 2
LEAVING = ("04", "05", "08", "09", "11", "12")  # any leaving status explains an absence

# the catalogue's cross_period rules, each emitted below (tests/test_expectations.py checks the wiring)
CROSS_PERIOD_RULES = ("student_flow_identity", "student_vanished", "student_promoted_not_up", "student_retained_moved",
                      "student_leaver_still_present", "staff_training_lowered", "school_learners_swing",
                      "school_classes_swing", "school_staff_swing")

OUT_COLUMNS = ["school_code", "file_hash", "sheet_name", "excel_row", "rule_id", "field", "value", "fill"]


def previous_year(school_year: str) -> str:
    y = int(school_year[:4]) - 1
    return f"{y}-{y + 1}"


def compared_text(school_year: str, period: str) -> str:
    return f"{PERIOD_TEXT[period]} {school_year}"


def _has(con, school_year: str, period: str) -> bool:
    """Is the collection in core? (The tables exist: the load creates them before staging; a
    failing query here would abort the load's transaction, so none is caught.)"""
    return bool(con.execute("select count(*) from core_school where school_year = ? and period = ?",
                            [school_year, period]).fetchall()[0][0])


def _rows(df: pd.DataFrame, rule_id: str, field: str | None, fill_cols: Iterable[str], compared: str,
          value_col: str | None = None) -> list[dict]:
    out = []
    for rec in df.to_dict("records"):
        fill = {c: rec.get(c) for c in fill_cols}
        fill["compared"] = compared
        out.append({"school_code": rec["school_code"], "file_hash": rec["file_hash"], "sheet_name": rec.get("sheet_name"),
                    "excel_row": rec.get("excel_row"), "rule_id": rule_id, "field": field,
                    "value": rec.get(value_col) if value_col else None, "fill": fill})
    return out


def _end_vs_start(con, school_year: str) -> list[dict]:
    """End of year N (the run's files) against the start of year N of the same school."""
    if not _has(con, school_year, "dau_nam"):
        return []
    ref = f"{school_year[:4]}-09-30"  # the start-of-year census date: arrivals are after it
    base = f"""
    with cur as (
        select s.school_code, s.file_hash, s.sheet_name, s.excel_row, s.student_code, s.grade, s.status,
               s.is_enrolled, s.status in {ARRIVING} and (s.status_date is null or s.status_date > date '{ref}') as arrived
        from stg_learners s join _run_files f using (school_code, file_hash)
        where s.school_year = $y and s.period = 'cuoi_nam'
    ),
    prev as (
        select c.school_code, c.sheet_name, c.excel_row, c.student_code, c.grade
        from core_learners c
        where c.school_year = $y and c.period = 'dau_nam' and c.is_enrolled
          and c.school_code in (select school_code from _run_files)
    ),
    compared as (select distinct school_code from core_school where school_year = $y and period = 'dau_nam'
                 and school_code in (select school_code from _run_files)),
    vanished as (
        select p.school_code, p.sheet_name as prev_sheet, p.excel_row as prev_row, p.grade
        from prev p
        where p.student_code is not null
          and not exists (select 1 from cur c where c.school_code = p.school_code and c.student_code = p.student_code)
    )"""
    vanished = con.execute(base + """
        select v.school_code, f.file_hash, v.prev_sheet, v.prev_row, v.grade from vanished v join _run_files f using (school_code)
        order by v.school_code, v.prev_row""", {"y": school_year}).df()
    flow = con.execute(base + """,
    appeared as (
        select c.school_code, c.grade, c.excel_row from cur c
        where c.is_enrolled and not c.arrived and c.student_code is not null
          and not exists (select 1 from prev p where p.school_code = c.school_code and p.student_code = c.student_code)
    ),
    start_n as (select school_code, grade, count(*) as n from prev group by all),
    counts as (
        select school_code, grade,
               count(*) filter (where arrived) as arrivals,
               count(*) filter (where status in """ + str(DEPARTED) + """) as departures,
               count(*) filter (where status in """ + str(DROPPED) + """) as dropouts,
               count(*) filter (where is_enrolled) as end_n
        from cur group by all
    ),
    lost as (select school_code, grade, count(*) as n from vanished group by all),
    new_rows as (select school_code, grade, list(excel_row order by excel_row) as rows from appeared group by all),
    keys as (select school_code, grade from start_n union select school_code, grade from counts),
    final as (
        select k.school_code, f.file_hash, k.grade,
               coalesce(s.n, 0) as start, coalesce(c.arrivals, 0) as arrivals, coalesce(c.departures, 0) as departures,
               coalesce(c.dropouts, 0) as dropouts, coalesce(c.end_n, 0) as "end", coalesce(l.n, 0) as vanished,
               a.rows
        from keys k join compared using (school_code) join _run_files f using (school_code)
        left join start_n s using (school_code, grade) left join counts c using (school_code, grade)
        left join lost l using (school_code, grade) left join new_rows a using (school_code, grade)
        where k.grade is not null
    )
    select * from final
    where "end" - (start + arrivals - departures - dropouts) + vanished <> 0
    order by school_code, grade""", {"y": school_year}).df()
    compared = compared_text(school_year, "dau_nam")
    out = _rows(vanished.assign(sheet_name=None, excel_row=None), "student_vanished", None,
                ["prev_row", "prev_sheet", "grade"], compared)
    if len(flow):
        flow["expected"] = flow["start"] + flow["arrivals"] - flow["departures"] - flow["dropouts"]
        flow["diff"] = [f"{d:+d}" for d in flow["end"] - flow["expected"]]
        rows = []
        for r in flow["rows"]:
            r = [int(x) for x in r] if r is not None and len(r) else []
            rows.append(r)
        flow["rows"] = [("; học sinh đang học không có ở đầu năm và không ghi 'Chuyển đến': dòng "
                         + ", ".join(map(str, r[:10])) + (" …" if len(r) > 10 else "")) if r else "" for r in rows]
        flow["excel_row"] = [r[0] if r else None for r in rows]
        flow["sheet_name"] = None
        out += _rows(flow, "student_flow_identity", "grade",
                     ["grade", "start", "arrivals", "departures", "dropouts", "expected", "end", "diff", "rows"], compared, "grade")
    return out


_LEFT_AS = {"g9": "tốt nghiệp THCS", "g5": "hoàn thành chương trình tiểu học", "mn": "hoàn thành chương trình mầm non"}


def _start_vs_end(con, school_year: str) -> list[dict]:
    """Start of year N+1 (the run's files) against the end of year N of every school."""
    prev_year = previous_year(school_year)
    if not _has(con, prev_year, "cuoi_nam"):
        return []
    df = con.execute("""
    with cur as (
        select s.school_code, s.file_hash, s.sheet_name, s.excel_row, s.student_code, s.grade, s.grade_number, s.level
        from stg_learners s join _run_files f using (school_code, file_hash)
        where s.school_year = $y and s.period = 'dau_nam' and s.is_enrolled and s.student_code is not null
    ),
    prev as (
        select school_code as prev_school, excel_row as prev_row, student_code, grade as prev_grade,
               grade_number as prev_gn, level as prev_level, outcome, completed_primary, graduated, mn_completed_programme
        from core_learners
        where school_year = $py and period = 'cuoi_nam' and is_enrolled and student_code is not null
        qualify row_number() over (partition by student_code order by school_code, excel_row) = 1
    ),
    joined as (select * from cur join prev using (student_code)),
    judged as (
        select *,
            case
                when prev_gn = 9 and graduated = 1 then 'g9'
                when prev_gn = 5 and completed_primary = 1 and coalesce(grade_number, 0) between 1 and 5 then 'g5'
                when prev_level = 'MN' and mn_completed_programme = 1 and level = 'MN' then 'mn'
            end as left_as
        from joined
    ),
    final as (
        select school_code, file_hash, sheet_name, excel_row, grade, prev_school, prev_row, prev_grade,
               case
                   when left_as is not null then 'student_leaver_still_present'
                   when outcome = '1' and prev_gn between 1 and 8 and coalesce(grade_number, -1) <> prev_gn + 1
                       then 'student_promoted_not_up'
                   when outcome = '3' and grade is distinct from prev_grade then 'student_retained_moved'
               end as rule_id,
               left_as, lpad(cast(prev_gn + 1 as varchar), 2, '0') as expected
        from judged
    )
    select * from final where rule_id is not null order by school_code, excel_row""",
                     {"y": school_year, "py": prev_year}).df()
    compared = compared_text(prev_year, "cuoi_nam")
    out = []
    for rule_id, part in df.groupby("rule_id", sort=True):
        part = part.assign(left_as=part["left_as"].map(_LEFT_AS))
        out += _rows(part, rule_id, "grade", ["grade", "prev_school", "prev_row", "prev_grade", "left_as", "expected"],
                     compared, "grade")
    return out


def _staff_lowered(con, school_year: str, period: str) -> list[dict]:
    """The same personal ID never has a lower training level than in the collection before."""
    py, pp = (school_year, "dau_nam") if period == "cuoi_nam" else (previous_year(school_year), "cuoi_nam")
    if not _has(con, py, pp):
        return []
    ranks = load_contract().mappings["training_rank"]
    con.register("_training_rank", pd.DataFrame({"code": list(ranks), "rank": [int(v) for v in ranks.values()]}))
    df = con.execute("""
        with cur as (
            select s.school_code, s.file_hash, s.sheet_name, s.excel_row, s.personal_id, s.training_level, r.rank
            from stg_staff s join _run_files f using (school_code, file_hash)
            join _training_rank r on r.code = s.training_level
            where s.school_year = $y and s.period = $p and s.personal_id is not null
        ),
        prev as (
            select c.school_code as prev_school, c.excel_row as prev_row, c.personal_id, c.training_level as prev_level, r.rank as prev_rank
            from core_staff c join _training_rank r on r.code = c.training_level
            where c.school_year = $py and c.period = $pp and c.personal_id is not null
            qualify row_number() over (partition by c.personal_id order by r.rank desc, c.school_code, c.excel_row) = 1
        )
        select cur.* exclude (personal_id), prev.* exclude (personal_id) from cur join prev using (personal_id)
        where cur.rank < prev.prev_rank
        order by school_code, excel_row""", {"y": school_year, "p": period, "py": py, "pp": pp}).df()
    con.unregister("_training_rank")
    if df.empty:
        return []
    labels = load_contract().sheet("staff").field("training_level").codelist
    df["now_label"] = df["training_level"].map(lambda c: labels.label(c) or c)
    df["prev_label"] = df["prev_level"].map(lambda c: labels.label(c) or c)
    return _rows(df, "staff_training_lowered", "training_level", ["now_label", "prev_label", "prev_school", "prev_row"],
                 compared_text(py, pp), "training_level")


_SWING_SQL = {
    "learners": ("learners", "is_enrolled"),
    "classes": ("classes", "true"),
    "staff": ("staff", "is_active"),
}


def _swings(con, school_year: str, period: str, thresholds: Mapping[str, float | None]) -> list[dict]:
    """Per school and indicator, this run against the same period of the previous year."""
    py = previous_year(school_year)
    if not _has(con, py, period):
        return []
    out = []
    for indicator, (sid, cond) in _SWING_SQL.items():
        limit = thresholds.get(indicator)
        if not limit:
            continue
        df = con.execute(f"""
        with compared as (select distinct school_code from core_school where school_year = $py and period = $p),
        now as (
            select f.school_code, f.file_hash, count(s.school_code) filter (where {cond}) as now,
                   any_value(s.sheet_name) as sheet_name
            from _run_files f left join stg_{sid} s
              on s.school_code = f.school_code and s.file_hash = f.file_hash and s.school_year = $y and s.period = $p
            group by all
        ),
        before as (
            select school_code, count(*) filter (where {cond}) as prev
            from core_{sid} where school_year = $py and period = $p group by all
        ),
        final as (
            select n.school_code, n.file_hash, n.sheet_name, n.now, coalesce(b.prev, 0) as prev
            from now n join compared using (school_code) left join before b using (school_code)
        )
        select * from final where prev > 0 and abs(now - prev) > $limit * prev
        order by school_code""", {"y": school_year, "p": period, "py": py, "limit": float(limit)}).df()
        if df.empty:
            continue
        df["pct"] = [f"{(n - p) / p * 100:+.0f} %" for n, p in zip(df["now"], df["prev"])]
        df["threshold"] = f"{limit * 100:.0f} %"
        df["excel_row"] = None
        out += _rows(df, f"school_{indicator}_swing", None, ["prev", "now", "pct", "threshold"], compared_text(py, period))
    return out


def cross_period_findings(con, run_files: Mapping[str, str], school_year: str, period: str,
                          thresholds: Mapping[str, float | None] | None = None) -> pd.DataFrame:
    """run_files: school code → file hash of this run's file for that school. One row per
    finding (OUT_COLUMNS): the school, its file, the row of the current file when there is one
    (`excel_row` None otherwise), the rule, and `fill` (the message's values)."""
    if not run_files:
        return pd.DataFrame(columns=OUT_COLUMNS)
    thresholds = DEFAULT_SWING_THRESHOLDS if thresholds is None else thresholds
    con.register("_run_files", pd.DataFrame({"school_code": list(run_files), "file_hash": list(run_files.values())}))
    rows = _end_vs_start(con, school_year) if period == "cuoi_nam" else _start_vs_end(con, school_year)
    rows += _staff_lowered(con, school_year, period)
    rows += _swings(con, school_year, period, thresholds)
    con.unregister("_run_files")
    return pd.DataFrame(rows, columns=OUT_COLUMNS)


def cross_period_issues(con, loadable: list, school_year: str, period: str, cat: Catalogue,
                        thresholds: Mapping[str, float | None] | None = None) -> pd.DataFrame:
    """The findings as issue rows of the run's files (the columns `validation_issue` holds),
    rendered from the catalogue: `loadable` are the run's active FileResults."""
    by_hash = {fr.sha256: fr for fr in loadable}
    found = cross_period_findings(con, {fr.school_code: fr.sha256 for fr in loadable}, school_year, period, thresholds)
    rows = []
    for rec in found.itertuples(index=False):
        fr = by_hash[rec.file_hash]
        rule = cat[rec.rule_id]
        sid = rule.sheet
        field = rec.field
        header = fr.headers.get(sid, {}).get(field) if field else None
        sheet = rec.sheet_name if isinstance(rec.sheet_name, str) else fr.sheet_names.get(sid)
        row = None if rec.excel_row is None or pd.isna(rec.excel_row) else int(rec.excel_row)
        fill = {k: ("" if v is None or (not isinstance(v, str) and pd.isna(v)) else
                    (str(int(v)) if isinstance(v, float) and float(v).is_integer() else str(v))) for k, v in rec.fill.items()}
        fill.update(header=header, sheet=sheet)
        rows.append({"school_code": rec.school_code, "file_hash": rec.file_hash, "file_name": fr.name, "sheet": sheet,
                     "excel_row": row, "column": fr.columns.get(sid, {}).get(field) if (field and row) else None,
                     "field": field, "header": header, "rule_id": rule.id, "severity": rule.severity,
                     "value": None if rec.value is None or pd.isna(rec.value) else str(rec.value),
                     "message": rule.render(rule.message, **fill), "fix": rule.render(rule.fix, **fill)})
    return pd.DataFrame(rows, columns=["school_code", "file_hash", "file_name", "sheet", "excel_row", "column", "field",
                                       "header", "rule_id", "severity", "value", "message", "fix"])


RULE_TEXT = {  # the officer's summary: what each cross-period rule found (counts only)
    "student_flow_identity": "sĩ số đầu năm + đến − đi − thôi học ≠ cuối năm",
    "student_vanished": "học sinh đầu năm không còn, không có trạng thái rời trường",
    "student_promoted_not_up": "học sinh lên lớp không ở khối trên",
    "student_retained_moved": "học sinh lưu ban không ở khối cũ",
    "student_leaver_still_present": "học sinh đã tốt nghiệp / hoàn thành cấp học vẫn còn",
    "staff_training_lowered": "trình độ đào tạo của cán bộ bị hạ",
    "school_learners_swing": "số học sinh biến động vượt ngưỡng",
    "school_classes_swing": "số lớp biến động vượt ngưỡng",
    "school_staff_swing": "số cán bộ biến động vượt ngưỡng",
}


def summary_counts(issues: pd.DataFrame) -> dict:
    """For the officer: cross-period findings by rule and by school × rule (counts only:
    the messages stay in the schools' feedback)."""
    empty = {"total": 0, "schools": 0, "by_rule": {}, "by_school": {}}
    if issues is None or len(issues) == 0 or "rule_id" not in issues:
        return empty
    mine = issues[issues["rule_id"].isin(list(RULE_TEXT))]
    if mine.empty:
        return empty
    by_school: dict[str, dict[str, int]] = {}
    for (code, rule), n in mine.groupby(["school_code", "rule_id"]).size().items():
        by_school.setdefault(str(code), {})[rule] = int(n)
    return {"total": int(len(mine)), "schools": len(by_school),
            "by_rule": {k: int(v) for k, v in mine["rule_id"].value_counts().sort_index().items()},
            "by_school": by_school}


def summary_text_lines(counts: dict) -> list[str]:
    """Vietnamese lines for the officer (format_summary and the Prefect artifact)."""
    if not counts or not counts.get("total"):
        return []
    lines = [f"{counts['total']} điểm cần trường xác nhận ở {counts['schools']} trường: "
             + "; ".join(f"{RULE_TEXT.get(r, r)} {n}" for r, n in counts["by_rule"].items())]
    for code, rules in list(counts["by_school"].items())[:30]:
        lines.append(f"{code}: " + ", ".join(f"{RULE_TEXT.get(r, r)} {n}" for r, n in rules.items()))
    if len(counts["by_school"]) > 30:
        lines.append(f"(+{len(counts['by_school']) - 30} trường, xem tệp phản hồi)")
    return lines
