"""Ad-hoc reports written as SQL (issue 11, item 4): `edustat report --form my-report.sql`.

An office writes one SELECT (or WITH … SELECT) over the documented views of one collection and
a header comment block; edustat runs it on a read-only connection and writes an Excel workbook
for the city and, when the result has a `school_code` column, one per school.

The file::

    -- title: Lớp học theo khối và số học sinh bình quân/lớp      (required, Vietnamese)
    -- period: dau_nam                 optional: refuse to run for the other period
    -- form_code: lop-theo-khoi        optional: default the file name (lower-case, a-z 0-9 -)
    -- label grade_label: Khối         optional, repeatable: a column's heading
    -- note: Sĩ số bình quân = số học sinh đang học / số lớp.    optional, printed under the table
    -- personal_in_city: yes           optional: keep personal columns in the city workbook
    select school_code, school_name, grade_label, count(*) as so_lop, ...
    from v_class group by all order by all

The views (`v_school`, `v_class`, `v_learner`, `v_staff`, `v_room`, `v_dropout`, and the
`dim_*` code-label tables) are the analysts' documented views (edustat.dictionary: the same
columns and labels as the published snapshot), built here over the officer's database and
already limited to the collection (`--year`, `--period`); `$school_year` and `$period` may
also be used in the query. The connection is in memory with the officer's database attached
read-only, file access is switched off and the configuration locked before the query runs.
Only one SELECT statement is accepted; anything else is refused with one Vietnamese line.

Privacy: the views hold personal data (names, personal IDs, learner/staff codes, birth dates,
disability, policy group, nutrition) because a school's own list may need them. A school's
workbook holds what the query selects, for that school only; with a personal column it is
written 0600 under data/curated/reports_private/ (not reports/, whose files a collection run
re-shares). The city workbook never holds a personal column unless the header says
`personal_in_city: yes` (it then goes to reports_private/ too). Nothing personal is printed or
logged.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

SQL_SUFFIX = ".sql"
KEYS = {"title", "period", "form_code", "label", "note", "personal_in_city"}
_CODE = re.compile(r"[a-z0-9][a-z0-9-]{0,59}")
_HEADER = re.compile(r"^--\s*([A-Za-z_]+)(?:\s+([A-Za-z_][A-Za-z0-9_]*))?\s*:\s*(.*?)\s*$")
# personal columns by name (the contract's pii fields and the personal codes), kept out of the
# city workbook unless asked for
PERSONAL = {"full_name", "personal_id", "student_code", "staff_code", "birth_date", "disability_type",
            "disability_type_label", "policy_group", "policy_group_label", "nutrition_status", "file_hash",
            "excel_row"}
DEFAULT_LABELS = {
    "school_code": "Mã trường", "school_name": "Tên trường", "commune_name": "Xã/phường", "district_name": "Quận/huyện",
    "grade": "Khối (mã)", "grade_label": "Khối", "grade_number": "Khối", "class_code": "Mã lớp", "class_name": "Tên lớp",
    "sex_label": "Giới tính", "ethnicity_label": "Dân tộc", "status_label": "Trạng thái", "subject_label": "Môn dạy",
    "position_label": "Chức vụ", "training_level_label": "Trình độ đào tạo", "n_learners": "Số học sinh",
    "full_name": "Họ và tên", "student_code": "Mã học sinh", "staff_code": "Mã cán bộ", "birth_date": "Ngày sinh",
    "ownership_label": "Loại hình", "level": "Cấp học",
}
STATEMENT_TEXT = {"DELETE": "xóa dữ liệu (DELETE)", "INSERT": "ghi dữ liệu (INSERT)", "UPDATE": "sửa dữ liệu (UPDATE)",
                  "ATTACH": "mở cơ sở dữ liệu khác (ATTACH)", "DETACH": "DETACH", "COPY": "ghi/đọc tệp (COPY)",
                  "CREATE": "tạo bảng (CREATE)", "DROP": "xóa bảng (DROP)", "ALTER": "sửa bảng (ALTER)",
                  "PRAGMA": "PRAGMA", "SET": "đổi cấu hình (SET)", "EXPORT": "xuất cơ sở dữ liệu (EXPORT)",
                  "LOAD": "nạp phần mở rộng (LOAD)", "CALL": "CALL", "TRANSACTION": "giao dịch (BEGIN/COMMIT)"}
PERIOD_TEXT = {"dau_nam": "đầu năm (số liệu có đến 30/9)", "cuoi_nam": "cuối năm (số liệu có đến 31/5)"}
MAX_ROWS = 200_000  # more than any office report: a runaway join is said, not written


class SqlReportError(ValueError):
    """The office's SQL report is wrong: one Vietnamese line naming the file."""


def is_sql_ref(ref: str) -> bool:
    return str(ref).lower().endswith(SQL_SUFFIX)


@dataclass
class SqlReport:
    path: Path
    title: str
    form_code: str
    sql: str
    period: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    personal_in_city: bool = False
    columns: list[str] = field(default_factory=list)  # as the probe on empty views found them


# ---------------------------------------------------------------------------------------
# Reading and checking a definition
# ---------------------------------------------------------------------------------------

def load_sql_report(path: str | Path) -> SqlReport:
    """Read, parse and check a .sql report: header, one SELECT statement, and a run on empty
    views (a wrong column or view is reported now, not after the data is read)."""
    path = Path(path)
    name = path.name
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise SqlReportError(f"không tìm thấy tệp báo cáo {path}") from None
    try:
        text = unicodedata.normalize("NFC", raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise SqlReportError(f"{name}: tệp không phải văn bản UTF-8") from None
    meta: dict = {"labels": {}, "notes": []}
    lines = text.splitlines()
    body_start = 0
    for i, line in enumerate(lines):
        s = line.strip()
        if not s:
            body_start = i + 1
            continue
        if not s.startswith("--"):
            break
        body_start = i + 1
        m = _HEADER.match(s)
        if not m or m.group(1).lower() not in KEYS:
            continue  # a plain comment line
        key, arg, value = m.group(1).lower(), m.group(2), m.group(3)
        if key == "label":
            if not arg:
                raise SqlReportError(f"{name}: dòng '-- label' cần tên cột, vd: -- label so_lop: Số lớp")
            meta["labels"][arg] = value
        elif key == "note":
            meta["notes"].append(value)
        elif arg:
            raise SqlReportError(f"{name}: dòng '-- {key} {arg}:' không hợp lệ; viết '-- {key}: …'")
        else:
            meta[key] = value
    sql = "\n".join(lines[body_start:]).strip()
    if not meta.get("title"):
        raise SqlReportError(f"{name}: thiếu dòng tiêu đề ở đầu tệp, vd: -- title: Lớp học theo khối")
    period = meta.get("period") or None
    if period not in (None, "dau_nam", "cuoi_nam"):
        raise SqlReportError(f"{name}: kỳ '{period}' không có; dùng dau_nam hoặc cuoi_nam (hoặc bỏ dòng period)")
    code = meta.get("form_code") or _code_from_name(path.stem)
    if not _CODE.fullmatch(code):
        raise SqlReportError(f"{name}: mã báo cáo '{code}' chỉ được gồm chữ thường không dấu, chữ số và dấu gạch ngang")
    from edustat.reports import list_forms

    if code in {c.lower() for c in list_forms()}:
        raise SqlReportError(f"{name}: mã báo cáo '{code}' trùng một biểu của Thông tư 24/2018; đặt form_code khác")
    flag = str(meta.get("personal_in_city", "no")).strip().lower()
    if flag not in ("yes", "no", "true", "false", "có", "không"):
        raise SqlReportError(f"{name}: personal_in_city phải là yes hoặc no")
    report = SqlReport(path=path.resolve(), title=meta["title"], form_code=code, sql=sql, period=period,
                       labels=meta["labels"], notes=meta["notes"], personal_in_city=flag in ("yes", "true", "có"))
    check_statement(report)
    report.columns = _probe(report)
    unknown = sorted(set(report.labels) - set(report.columns))
    if unknown:
        raise SqlReportError(f"{name}: '-- label' cho cột không có trong kết quả: {', '.join(unknown)} "
                             f"(các cột: {', '.join(report.columns)})")
    return report


def _code_from_name(stem: str) -> str:
    s = unicodedata.normalize("NFKD", stem.replace("đ", "d").replace("Đ", "D"))
    s = "".join(ch for ch in s if not unicodedata.combining(ch)).lower()
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")[:60] or "bao-cao"


def check_statement(report: SqlReport) -> None:
    """Exactly one statement, and a SELECT (WITH … SELECT, FROM …, VALUES count as SELECT)."""
    name = report.path.name
    if not report.sql:
        raise SqlReportError(f"{name}: không có câu lệnh SELECT sau phần tiêu đề")
    con = duckdb.connect(":memory:")
    try:
        statements = con.extract_statements(report.sql)
    except duckdb.Error as exc:
        raise SqlReportError(f"{name}: câu lệnh SQL sai cú pháp ({_first_line(exc)})") from None
    finally:
        con.close()
    if len(statements) != 1:
        raise SqlReportError(f"{name}: chỉ được một câu lệnh SELECT (tệp có {len(statements)} câu lệnh, ngăn bởi dấu ;)")
    kind = statements[0].type.name
    if kind != "SELECT":
        raise SqlReportError(f"{name}: chỉ chấp nhận câu lệnh SELECT để đọc số liệu; không chạy lệnh "
                             f"{STATEMENT_TEXT.get(kind, kind)}")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


# ---------------------------------------------------------------------------------------
# The views, on a locked in-memory connection over the officer's database (read-only)
# ---------------------------------------------------------------------------------------

def _lit(value: str) -> str:
    if not re.fullmatch(r"[0-9A-Za-z_\-]+", value):
        raise ValueError(f"unsafe literal {value!r}")
    return f"'{value}'"


def open_views(db_path: Path | None, school_year: str, period: str) -> duckdb.DuckDBPyConnection:
    """An in-memory connection whose views show one collection of the officer's database
    (attached read-only); `db_path` None: empty tables of the contract (to probe a query).
    File access is off and the configuration locked before it is returned."""
    from edustat import dictionary
    from edustat.store import SHEETS, ensure_tables

    con = duckdb.connect(":memory:")
    try:
        if db_path is None:
            con.execute("create schema src")
            con.execute("use src")
            ensure_tables(con)
            con.execute("use memory")
        else:
            path = str(Path(db_path).resolve()).replace("'", "''")
            con.execute(f"attach '{path}' as src (read_only)")
        y, p = _lit(school_year), _lit(period)
        for sid in SHEETS:
            con.execute(f"create view core_{sid} as select * from src.core_{sid} where school_year = {y} and period = {p}")
        tables: dict[str, list[str]] = {}
        for t, c in con.execute("""select table_name, column_name from information_schema.columns
                                   where table_catalog = 'memory' and table_schema = 'main' and table_name like 'core\\_%' escape '\\'
                                   order by table_name, ordinal_position""").fetchall():
            tables.setdefault(t, []).append(c)
        dims = dictionary.column_dims()
        used = [d for (sid, col), d in dims.items() if col in tables.get(f"core_{sid}", [])]
        used += [dictionary.Dim("dim_period", "edustat/PERIOD"), dictionary.Dim("dim_chuan_dao_tao", "moet-2020/DM_CHUAN_DAO_TAO")]
        dictionary._write_dims(con, used)
        dictionary._create_views(con, tables, dims)
        con.execute("""
            create view v_class as
            with sizes as (
                select school_code, class_code, count(*) filter (where is_enrolled) as n_learners,
                       count(*) filter (where is_enrolled and is_female) as n_female
                from core_learners group by 1, 2)
            select c.*, s.school_name, s.commune_name, s.district_name, k.label as grade_label,
                   coalesce(z.n_learners, 0) as n_learners, coalesce(z.n_female, 0) as n_female
            from core_classes c
            left join v_school s using (school_year, period, school_code)
            left join dim_khoi k on k.code = c.grade
            left join sizes z using (school_code, class_code)""")
        con.execute("""
            create view v_room as
            select r.*, s.school_name, coalesce(r.permanent, 0) + coalesce(r.semi_permanent, 0) + coalesce(r.temporary, 0) as total
            from core_rooms r left join v_school s using (school_year, period, school_code)""")
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
        return con
    except BaseException:
        con.close()
        raise


def _params(sql: str, school_year: str, period: str) -> dict:
    found = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", sql))
    values = {"school_year": school_year, "period": period}
    return {k: values[k] for k in found if k in values}


def _probe(report: SqlReport) -> list[str]:
    """The query's columns, from a run on empty views; its error as one line otherwise."""
    con = open_views(None, "2000-2001", report.period or "dau_nam")
    try:
        return _execute(con, report, "2000-2001", report.period or "dau_nam", probe=True).columns.tolist()
    finally:
        con.close()


def _execute(con, report: SqlReport, school_year: str, period: str, probe: bool = False) -> pd.DataFrame:
    name = report.path.name
    unknown = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", report.sql)) - {"school_year", "period"}
    if unknown:
        raise SqlReportError(f"{name}: tham số ${sorted(unknown)[0]} không có; dùng $school_year hoặc $period")
    try:
        rel = con.execute(report.sql, _params(report.sql, school_year, period))
        frame = rel.df() if probe else pd.DataFrame(rel.fetchmany(MAX_ROWS + 1), columns=[d[0] for d in rel.description])
    except duckdb.PermissionException:
        raise SqlReportError(f"{name}: báo cáo không được đọc tệp hay cơ sở dữ liệu ngoài các bảng số liệu") from None
    except duckdb.Error as exc:
        raise SqlReportError(f"{name}: câu lệnh không chạy được trên các bảng v_school, v_class, v_learner, v_staff, "
                             f"v_room ({_first_line(exc)})") from None
    if len(frame) > MAX_ROWS:
        raise SqlReportError(f"{name}: kết quả quá {MAX_ROWS:,} dòng; kiểm tra điều kiện nối bảng (join) hoặc gộp nhóm")
    dupes = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if dupes:
        raise SqlReportError(f"{name}: kết quả có cột trùng tên: {', '.join(dupes)}; đặt tên khác bằng 'as'")
    return frame


# ---------------------------------------------------------------------------------------
# Running and writing
# ---------------------------------------------------------------------------------------

@dataclass
class SqlReportResult:
    form_code: str
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    schools: int = 0
    omitted_in_city: list[str] = field(default_factory=list)
    failed_checks: int = 0


def run_sql_report(db_path: Path, reports_dir: Path, data_dir: Path, report: SqlReport, school_year: str, period: str,
                   school: str | None = None, group: str | int | None = None) -> SqlReportResult:
    """Run the query for one collection; write the city workbook and (with a school_code
    column) one per school — or, with `school`, that school's and the city's."""
    from edustat.reports import _names

    con = open_views(db_path, school_year, period)
    try:
        frame = _execute(con, report, school_year, period)
        names, district, _ = _names(con, school_year, period)  # core_school here is the collection's
    finally:
        con.close()
    result = SqlReportResult(form_code=report.form_code, rows=len(frame))
    personal = [c for c in frame.columns if c in PERSONAL]
    city = frame if report.personal_in_city else frame.drop(columns=personal)
    result.omitted_in_city = [] if report.personal_in_city else personal
    by_school: dict[str, pd.DataFrame] = {}
    if "school_code" in frame.columns:
        for code, part in frame.groupby(frame["school_code"].astype("string").fillna(""), sort=True):
            if code and (school is None or code == school):
                by_school[str(code)] = part
    checks = _checks(frame, by_school, school, {c: _label(report, c) for c in frame.columns})
    result.failed_checks = sum(1 for c in checks if not c[2])
    unit = f"Phòng GD&ĐT {district}".strip()
    scope_city = f"Toàn {district}" if district else "Toàn đơn vị"
    notes = list(report.notes)
    if result.omitted_in_city:
        notes.append("Biểu toàn đơn vị không ghi các cột thông tin cá nhân: " + ", ".join(_label(report, c) for c in personal)
                     + " (có trong biểu của từng trường).")
    # a workbook with personal columns goes under reports_private/, not reports/: a collection
    # run re-shares everything under reports/ (pipeline.share_outputs) after making it
    private_dir = private_reports_dir(data_dir)
    city_private = bool(personal) and report.personal_in_city
    out = _path(private_dir if city_private else reports_dir, data_dir, school_year, period, report.form_code, "city")
    _write(out, report, city, school_year, period, unit, scope_city, notes, checks, private=city_private, group=group)
    result.files.append(out)
    for code, part in by_school.items():
        label = f"{names.get(code, code)} ({code})"
        out = _path(private_dir if personal else reports_dir, data_dir, school_year, period, report.form_code, code)
        _write(out, report, part, school_year, period, names.get(code, code), label, list(report.notes),
               [], private=bool(personal), group=group)
        result.files.append(out)
    result.schools = len(by_school)
    return result


def private_reports_dir(data_dir: Path) -> Path:
    """Where SQL reports holding personal columns are written (0600): data/curated/reports_private."""
    return Path(data_dir) / "curated" / "reports_private"


def _path(reports_dir: Path, data_dir: Path, school_year: str, period: str, code: str, scope: str) -> Path:
    from edustat.paths import UNIDENTIFIED, inside, school_code_for_path

    name = scope if scope == "city" else (
        school_code_for_path(scope) or f"{UNIDENTIFIED}_{hashlib.sha256(str(scope).encode()).hexdigest()[:8]}")
    out = Path(reports_dir) / school_year / period / f"{code}_{name}.xlsx"
    inside(data_dir, out)
    return out


def _checks(frame: pd.DataFrame, by_school: dict[str, pd.DataFrame], school: str | None,
            labels: dict[str, str]) -> list[tuple[str, str, bool]]:
    """(what, detail, ok): the split into school workbooks is whole (rows, and every numeric
    column's sum), and rows without a school code are said."""
    out: list[tuple[str, str, bool]] = [("Số dòng của báo cáo", f"{len(frame):,}", True)]
    if len(frame) == 0:
        out.append(("Báo cáo không có dòng nào", "câu lệnh không trả về số liệu cho kỳ này", False))
        return out
    if "school_code" not in frame.columns or school is not None:
        return out
    codes = frame["school_code"].astype("string").fillna("")
    blank = int((codes == "").sum())
    split_rows = sum(len(p) for p in by_school.values())
    out.append(("Tổng số dòng các biểu từng trường + dòng không có mã trường = số dòng toàn đơn vị",
                f"{split_rows:,} + {blank:,} = {len(frame):,}", split_rows + blank == len(frame)))
    if blank:
        out.append(("Dòng không có mã trường (chỉ có trong biểu toàn đơn vị)", f"{blank:,}", False))
    for col in frame.columns:  # counts (integer columns); an average's sum means nothing
        if col != "school_code" and pd.api.types.is_integer_dtype(frame[col]):
            whole = int(frame.loc[codes != "", col].sum())
            parts = int(sum(p[col].sum() for p in by_school.values()))
            out.append((f"Cột '{labels.get(col, col)}': tổng các biểu từng trường = toàn đơn vị (các dòng có mã trường)",
                        f"{parts:,} / {whole:,}", parts == whole))
    return out


def _label(report: SqlReport, col: str) -> str:
    return report.labels.get(col) or DEFAULT_LABELS.get(col) or col


def _write(path: Path, report: SqlReport, frame: pd.DataFrame, school_year: str, period: str, unit: str,
           scope_label: str, notes: list[str], checks: list, private: bool, group) -> None:
    """Title, unit, period and scope, the table (headers repeated on every page), notes; A4
    fitted to the page width (landscape when wide); a KiemTra sheet for the city."""
    import xlsxwriter

    from edustat.layout import MARGIN_IN, PAPER, column_points, printable_width
    from edustat.store import private_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if private:  # 0600 before the first byte
        tmp.unlink(missing_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
    wb = xlsxwriter.Workbook(str(tmp), {"strings_to_numbers": False, "strings_to_formulas": False, "strings_to_urls": False})
    wb.set_properties({"title": f"{report.title} {school_year} — {scope_label}", "author": "edustat"})
    base = {"font_name": "Times New Roman", "font_size": 12}
    cell = {**base, "border": 1, "valign": "top", "text_wrap": True}
    f = {
        "title": wb.add_format({**base, "bold": True, "font_size": 14, "align": "center", "valign": "vcenter", "text_wrap": True}),
        "sub": wb.add_format({**base, "italic": True, "align": "center"}),
        "unit": wb.add_format({**base, "bold": True}),
        "head": wb.add_format({**cell, "bold": True, "align": "center", "valign": "vcenter", "bg_color": "#F2F2F2"}),
        "text": wb.add_format(cell),
        "int": wb.add_format({**cell, "num_format": "#,##0", "align": "right"}),
        "dec": wb.add_format({**cell, "num_format": "#,##0.0", "align": "right"}),
        "date": wb.add_format({**cell, "num_format": "dd/mm/yyyy"}),
        "note": wb.add_format({**base, "italic": True, "text_wrap": True, "valign": "top"}),
        "ok": wb.add_format({**cell, "align": "center", "bg_color": "#C6EFCE"}),
        "bad": wb.add_format({**cell, "align": "center", "bg_color": "#FFC7CE", "bold": True}),
    }
    cols = list(frame.columns) or ["(không có cột)"]
    ws = wb.add_worksheet("BaoCao")
    from edustat.layout import rows_height, wrap_points, wrapped_lines

    widths = []
    for c in cols:  # Times New Roman 12 runs ~1.2 character units a letter
        values = frame[c].dropna().astype(str).str.len() if c in frame.columns and len(frame) else pd.Series([0])
        longest = int(values.max()) if len(values) else 0
        head = _label(report, c)
        widths.append(float(max(8, min(42, max(round(longest * 1.2) + 2, max((len(w) for w in head.split()), default=4) + 3,
                                                min(len(head), 16) + 2)))))
    for i, w in enumerate(widths):
        ws.set_column(i, i, w)
    last = len(cols) - 1
    total_pt = sum(column_points(w) for w in widths)
    landscape = total_pt > printable_width("A4", False)
    ws.set_paper(PAPER["A4"][2])
    ws.set_margins(**MARGIN_IN)
    ws.set_landscape() if landscape else ws.set_portrait()
    ws.fit_to_pages(1, 0)  # one page wide, as many pages down as the rows need
    ws.set_footer(f"&L{report.title}&RTrang &P/&N")
    ws.write_string(0, 0, unit, f["unit"])
    row = 1
    ws.set_row(row, 40)
    if last:
        ws.merge_range(row, 0, row, last, report.title.upper(), f["title"])
    else:
        ws.write_string(row, 0, report.title.upper(), f["title"])
    row += 1
    sub = f"Năm học {school_year}, kỳ {PERIOD_TEXT.get(period, period)} — {scope_label}"
    if last:
        ws.merge_range(row, 0, row, last, sub, f["sub"])
    else:
        ws.write_string(row, 0, sub, f["sub"])
    row += 2
    header_row = row
    ws.set_row(row, rows_height(max(wrapped_lines(_label(report, c), wrap_points(w), 12, True) for c, w in zip(cols, widths)), 12))
    for i, c in enumerate(cols):
        ws.write_string(row, i, _label(report, c), f["head"])
    ws.repeat_rows(header_row, header_row)
    ws.freeze_panes(header_row + 1, 0)
    row += 1
    texts = [i for i, c in enumerate(cols) if c in frame.columns and frame[c].dtype == object]
    for rec in frame.itertuples(index=False):
        lines = max([wrapped_lines(str(rec[i]), wrap_points(widths[i]), 12) for i in texts if isinstance(rec[i], str)] or [1])
        if lines > 1:  # spreadsheet programs do not grow rows written by xlsxwriter
            ws.set_row(row, rows_height(lines, 12))
        for i, v in enumerate(rec):
            _cell(ws, row, i, v, f)
        row += 1
    if not len(frame):
        ws.write_string(row, 0, "Không có số liệu.", f["note"])
        row += 1
    row += 1
    full = sum(wrap_points(w) for w in widths)
    for note in [*notes, f"Nguồn: {report.path.name}; lập ngày {dt.date.today():%d/%m/%Y} bằng edustat."]:
        ws.set_row(row, rows_height(wrapped_lines(note, full, 12), 12))
        if last:
            ws.merge_range(row, 0, row, last, note, f["note"])
        else:
            ws.write_string(row, 0, note, f["note"])
        row += 1
    if checks:
        k = wb.add_worksheet("KiemTra")
        k.set_column(0, 0, 70)
        k.set_column(1, 1, 24)
        k.set_column(2, 2, 10)
        k.set_paper(PAPER["A4"][2])
        k.set_margins(**MARGIN_IN)
        k.fit_to_pages(1, 0)
        for i, h in enumerate(("Kiểm tra", "Số liệu", "Kết quả")):
            k.write_string(0, i, h, f["head"])
        for r, (what, detail, ok) in enumerate(checks, start=1):
            k.write_string(r, 0, what, f["text"])
            k.write_string(r, 1, detail, f["text"])
            k.write_string(r, 2, "Đạt" if ok else "Xem lại", f["ok"] if ok else f["bad"])
    wb.close()
    if private:
        private_file(tmp, group)
    os.replace(tmp, path)


def _cell(ws, r: int, c: int, v, f) -> None:
    import numbers

    if v is None or (not isinstance(v, str) and not isinstance(v, (dt.date, dt.datetime)) and pd.isna(v)):
        ws.write_blank(r, c, None, f["text"])
    elif isinstance(v, (bool,)) or type(v).__name__ == "bool_":
        ws.write_string(r, c, "Có" if v else "Không", f["text"])
    elif isinstance(v, numbers.Number):
        x = float(v)
        ws.write_number(r, c, x, f["dec"] if isinstance(v, float) or not x.is_integer() else f["int"])
    elif isinstance(v, (dt.date, dt.datetime, pd.Timestamp)):
        ws.write_string(r, c, v.strftime("%d/%m/%Y"), f["date"])
    else:
        ws.write_string(r, c, str(v), f["text"])
