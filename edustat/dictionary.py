"""What makes the analysts' snapshot readable alone: code-label tables, comments, labelled
views and a generated data dictionary.

`annotate_snapshot(path)` opens a freshly written snapshot file (before publish swaps it in)
and adds, from the contract (`schemas/submission.yaml`, the code lists, `mappings.yaml`):

- `dim_<list>(code, label)` for every code list a published column uses (sex, ethnicity,
  grade, status, training level, commune, …), so no repo CSV is needed to read a code;
- `COMMENT ON` every table, view and column: the workbook's Vietnamese header and an English
  gloss (what it is, its type, the `dim_` table that labels it, whether it is personal data);
- views with labels joined in: `v_learner`, `v_staff`, `v_dropout`, `v_school`;
- `DATA_DICTIONARY.md` beside the snapshot, generated from the snapshot's own catalogue, so
  the document and the file cannot disagree.

Views are created with unqualified names on a connection to the snapshot file itself, so they
bind when an analyst opens the file anywhere. Nothing here reads personal values.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import duckdb

from schemas import load_codelist, load_contract

DICTIONARY_NAME = "DATA_DICTIONARY.md"
SHEET_GLOSS = {
    "school": "schools: one row per school and collection (the Truong sheet)",
    "rooms": "classrooms by type and build quality (the PhongHoc sheet)",
    "classes": "classes / preschool groups (the Lop sheet)",
    "learners": "learners (pupils, children): one row per learner on the roll (the HocSinh sheet)",
    "staff": "staff: managers, teachers, employees (the CanBo sheet)",
}
KEY_GLOSS = {
    "school_year": ("Năm học", "school year, e.g. 2022-2023"),
    "period": ("Kỳ báo cáo", "collection: dau_nam = start of year (data as at 30/9), cuoi_nam = end of year (31/5); labels in dim_period"),
    "school_code": ("Mã trường", "8-digit ministry school code; join to v_school"),
    "file_hash": ("Mã tệp", "sha256 of the workbook the row came from (lineage)"),
    "sheet_name": ("Tên trang tính", "sheet of the workbook the row came from"),
    "excel_row": ("Dòng Excel", "row number in that sheet"),
    "version": ("Bản nộp", "the school's submission version this row belongs to"),
    "birth_year": ("Năm sinh", "year of birth (the full birth date is never published)"),
}
DERIVED_GLOSS = {
    "levels": ("Cấp học của trường", "school levels taught, e.g. TH or TH+THCS"),
    "ownership_group": ("Nhóm loại hình", "ownership group used by the forms: cong_lap (public), tu_thuc (private), dan_lap (people-founded)"),
    "mn_school_type": ("Loại trường mầm non", "preschool type: nha_tre (crèche), mau_giao (kindergarten), mam_non (both), …"),
    "level": ("Cấp học của dòng", "level the row is reported under: MN, TH, THCS"),
    "grade_number": ("Lớp (số)", "grade 1-9 as a number; null for preschool"),
    "care_level": ("Nhà trẻ / Mẫu giáo", "preschool care level: nha_tre (crèche) or mau_giao (kindergarten)"),
    "size_cap": ("Sĩ số tối đa", "maximum class size allowed for this class (Circular 28/2020, 32/2020)"),
    "age": ("Tuổi", "age in the school year (start year minus birth year)"),
    "is_female": ("Nữ", "true for a female learner/staff member (sex = 02)"),
    "is_dtts": ("Dân tộc thiểu số", "true for an ethnic minority (ethnicity not Kinh or foreign)"),
    "is_enrolled": ("Đang học", "true while on the roll at the reporting date (status counts as enrolled)"),
    "is_on_age": ("Đúng độ tuổi", "true when the learner's age is the standard age for the grade"),
    "assessment_scale": ("Thang đánh giá", "end-of-year assessment scale applying to the grade and year (TT22/TT58/TT27/TT30)"),
    "conduct_code": ("Rèn luyện / hạnh kiểm (mã)", "conduct result as a code of its scale"),
    "learning_code": ("Học tập / học lực (mã)", "learning result as a code of its scale"),
    "is_very_small_minority": ("DTTS rất ít người", "true for a very small ethnic minority (Decree 57/2017 list)"),
    "is_disabled": ("Khuyết tật", "true when a disability type is given"),
    "role": ("Vai trò trong biểu", "staff role on the forms: hieu_truong, pho_hieu_truong, giao_vien, tong_phu_trach_doi, nv_*"),
    "training_bucket": ("Nhóm trình độ đào tạo", "training level grouped as on the forms (e.g. dai_hoc, cao_dang, trung_cap)"),
    "training_standard_derived": ("Chuẩn đào tạo (đã suy)", "training standard: 01 meets, 02 above, 03 below (given, else derived from level and training); labels in dim_chuan_dao_tao"),
    "contract_bucket": ("Nhóm hợp đồng", "contract group as on the forms (vien_chuc, hop_dong, …)"),
    "age_band": ("Nhóm tuổi", "teachers' age band of the forms, e.g. 30-39"),
    "is_active": ("Đang làm việc", "true for staff working at the reporting date (status 01 or 07)"),
    "extra_columns": ("Cột thêm", "columns of the workbook the contract does not know, as JSON"),
}
TABLE_GLOSS = {
    "submission": ("Sổ đăng ký tệp nộp", "the submission register: one row per file received, its version, status and counts"),
    "validation_issue": ("Lỗi và cảnh báo", "every validation issue of every file: rule id, severity, Vietnamese message (values of personal fields are blanked)"),
    "rpt_form_cell": ("Ô của biểu báo cáo", "every computed cell of the Circular 24/2018 report forms, city and per school"),
    "rpt_form_check": ("Kiểm tra của biểu", "the forms' arithmetic identities and whether each holds"),
    "publish_info": ("Thông tin bản sao", "when this snapshot was published and how it was pseudonymised"),
    "run": ("Lần chạy", "one row per pipeline run"),
}
REGISTER_COLUMNS = {
    "status": ("Trạng thái", "accepted | accepted_with_warnings | partially_loaded | rejected | unreadable | late; labels in dim_submission_status"),
    "n_learners": ("Số học sinh", "learner rows in the file"), "n_staff": ("Số cán bộ", "staff rows in the file"),
    "n_classes": ("Số lớp", "class rows in the file"), "n_rooms": ("Số dòng phòng học", "room rows in the file"),
    "n_errors": ("Số lỗi", "errors found"), "n_warnings": ("Số cảnh báo", "warnings found"),
    "n_notices": ("Số lưu ý", "notices found"), "loaded_rows": ("Số dòng đã nạp", "rows loaded into core_* from this file"),
    "is_current": ("Bản mới nhất", "true for the school's newest version"),
    "in_core": ("Đang dùng", "true for the version core_* tables hold"),
    "content_hash": ("Mã nội dung", "hash of the file's cells: a re-saved copy with the same cells is the same version"),
    "certified": ("Hiệu trưởng đã xác nhận", "true when the school sheet carries the principal's confirmation (Có, name, date)"),
    "certified_on": ("Ngày xác nhận", "the date the principal confirmed the data"),
    "received_at": ("Nhận lúc", "when the file was first received (Asia/Ho_Chi_Minh)"),
    "file_name": ("Tên tệp", "name of the file as received"), "run_id": ("Lần chạy", "the run that processed the file"),
    "rule_id": ("Mã quy tắc", "rule id in schemas/rules.yaml"), "severity": ("Mức độ", "error | warning | notice"),
    "message": ("Thông báo", "the Vietnamese message shown to the school"), "fix": ("Cách sửa", "how to fix it"),
    "raw_path": ("Bản lưu tệp", "where the officer's machine keeps the file as received (not shipped with the snapshot)"),
    "feedback_path": ("Tệp phản hồi", "the feedback workbook written for the school (on the officer's machine)"),
    "sheet": ("Trang tính", "sheet of the workbook the issue is on"), "column": ("Cột", "Excel column letter"),
    "field": ("Trường dữ liệu", "field id of the contract (schemas/submission.yaml)"),
    "header": ("Tiêu đề cột", "the column header as the school's file wrote it"),
    "value": ("Giá trị", "the cell's value (blank when the field is personal data)"),
    "form_code": ("Mã biểu", "report form code of Circular 24/2018, e.g. 02-TH-DN"),
    "scope": ("Phạm vi", "city = the whole office, else the 8-digit school code"),
    "row_code": ("Mã dòng", "row number of the form"), "column_key": ("Mã cột", "column key of the form"),
    "check_name": ("Phép kiểm tra", "name of the arithmetic identity checked"),
    "expected": ("Giá trị kỳ vọng", "value the identity expects"), "actual": ("Giá trị thực", "value found"),
    "ok": ("Đạt", "true when the identity holds"),
    "published_at": ("Công bố lúc", "when this snapshot was published (UTC)"),
    "pseudonymised": ("Đã ẩn danh", "true when identifiers are salted hashes and names dropped"),
    "salt_fingerprint": ("Dấu vân tay muối", "first 8 hex of sha256(salt): tells two snapshots' salts apart"),
    "tables": ("Các bảng", "tables published"), "pii_kept": ("Dữ liệu cá nhân giữ lại", "personal-data columns kept for statistics"),
    "started_at": ("Bắt đầu", "when the run started"), "finished_at": ("Kết thúc", "when the run finished"),
    "files": ("Số tệp", "files processed"), "summary": ("Tổng kết", "the run's summary as JSON"), "inbox": ("Thư mục nộp", "inbox folder"),
}
STATUS_LABELS = {"accepted": "Đã tiếp nhận", "accepted_with_warnings": "Tiếp nhận, có cảnh báo",
                 "rejected": "Chưa tiếp nhận (có lỗi)", "unreadable": "Không đọc được tệp",
                 "late": "Nộp muộn — chờ Phòng xử lý"}
DROPOUT_STATUSES = ("05", "09", "12")  # DM_TRANG_THAI_HOC_SINH: thôi học kỳ 1 / kỳ 2 / trong hè


@dataclass(frozen=True)
class Dim:
    table: str
    ref: str


def dim_name(ref: str) -> str:
    """moet-2020/DM_GIOI_TINH → dim_gioi_tinh; edustat/PERIOD → dim_period."""
    name = ref.split("/", 1)[1].lower()
    return "dim_" + (name[3:] if name.startswith("dm_") else name)


def column_dims() -> dict[tuple[str, str], Dim]:
    """(sheet id, field id) → the dim table labelling that code column."""
    out = {}
    for sheet in load_contract().sheets:
        for f in sheet.fields:
            if f.codelist is not None:
                ref = f.codelist.ref
                out[(sheet.id, f.id)] = Dim(dim_name(ref), ref)
    return out


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _tables(con) -> dict[str, list[str]]:
    rows = con.execute("""select table_name, column_name from information_schema.columns
                          where table_catalog = current_database() and table_schema = 'main'
                          order by table_name, ordinal_position""").fetchall()
    out: dict[str, list[str]] = {}
    for t, c in rows:
        out.setdefault(t, []).append(c)
    return out


@lru_cache(maxsize=None)
def _dim_rows(ref: str):
    """A code list's (code, label) rows as an Arrow table, made once per process (code lists
    are read once per process too: `load_codelist`; the table is never changed). Each full
    publish writes ~35 dim tables (~12,000 rows): a pandas frame of each every time cost
    ~0.1 CPU s a publish (issue 12); DuckDB stores the same text (VARCHAR, NULL for None) in
    the same order from either."""
    import pyarrow as pa

    cl = load_codelist(ref)
    return pa.table({"code": pa.array(list(cl.codes), type=pa.string()),
                     "label": pa.array(list(cl.labels), type=pa.string())})


def _write_dims(con, dims: list[Dim]) -> None:
    for d in sorted(set(dims), key=lambda d: d.table):
        con.execute(f"create or replace table {_q(d.table)} (code varchar primary key, label varchar)")
        con.register("_dim", _dim_rows(d.ref))
        con.execute(f"insert into {_q(d.table)} select code, label from _dim")
        con.unregister("_dim")
        con.execute(f"comment on table {_q(d.table)} is {_lit(f'Danh mục {d.ref} — code list {d.ref}: code → Vietnamese label')}")
        con.execute(f"comment on column {_q(d.table)}.code is {_lit('Mã — code as stored in the data tables')}")
        con.execute(f"comment on column {_q(d.table)}.label is {_lit('Tên — Vietnamese label')}")
    con.execute("create or replace table dim_submission_status (code varchar primary key, label varchar)")
    con.execute("insert into dim_submission_status values " + ", ".join(f"({_lit(k)}, {_lit(v)})" for k, v in STATUS_LABELS.items()))
    con.execute(f"comment on table dim_submission_status is {_lit('Trạng thái tệp nộp — submission status labels')}")
    con.execute(f"comment on column dim_submission_status.code is {_lit('Mã — status as stored in submission.status')}")
    con.execute(f"comment on column dim_submission_status.label is {_lit('Tên — Vietnamese label')}")


def _comment_columns(con, tables: dict[str, list[str]], dims: dict[tuple[str, str], Dim]) -> None:
    c = load_contract()
    fields = {(s.id, f.id): f for s in c.sheets for f in s.fields}
    for table, cols in tables.items():
        if table.startswith("dim_"):  # commented where they are written
            continue
        sid = table[5:] if table.startswith("core_") else None
        if sid in SHEET_GLOSS:
            sheet = c.sheet(sid)
            con.execute(f"comment on table {_q(table)} is {_lit(f'{sheet.title} — {SHEET_GLOSS[sid]}; accepted version of each school')}")
        elif table in TABLE_GLOSS:
            vi, en = TABLE_GLOSS[table]
            con.execute(f"comment on table {_q(table)} is {_lit(f'{vi} — {en}')}")
        for col in cols:
            text = ("Giá trị — the number in that cell of the form" if (table, col) == ("rpt_form_cell", "value")
                    else "Thông báo — what the check says" if (table, col) == ("rpt_form_check", "message")
                    else _column_text(sid, col, fields, dims))
            if text:
                con.execute(f"comment on column {_q(table)}.{_q(col)} is {_lit(text)}")


def _column_text(sid: str | None, col: str, fields, dims) -> str:
    f = fields.get((sid, col)) if sid else None
    if col in KEY_GLOSS:
        vi, en = KEY_GLOSS[col]
        return f"{vi} — {en}"
    if f is not None:
        gloss = col.replace("_", " ")
        bits = [f"{f.header} — {gloss} ({f.type}"]
        d = dims.get((sid, col))
        if d:
            bits.append(f"; code of {d.ref}, labels in {d.table}")
        if col in ("personal_id", "student_code", "staff_code"):
            bits.append("; pseudonymised: a salted hash, stable across collections")
        elif f.pii:
            bits.append("; personal data, kept for statistics only")
        return "".join(bits) + ")"
    if col in DERIVED_GLOSS:
        vi, en = DERIVED_GLOSS[col]
        return f"{vi} — derived by edustat: {en}"
    if col in REGISTER_COLUMNS:
        vi, en = REGISTER_COLUMNS[col]
        return f"{vi} — {en}"
    return f"{col.replace('_', ' ')}"


def _label(alias: str, col: str, dim: str, cols: list[str], name: str | None = None) -> tuple[str, str]:
    """(select item, join) labelling `alias.col` from `dim`, when the column exists."""
    if col not in cols:
        return "", ""
    j = f"{dim}_{col}"
    return f", {j}.label as {_q(name or col + '_label')}", f" left join {dim} {j} on {j}.code = {alias}.{_q(col)}"


def _create_views(con, tables: dict[str, list[str]], dims: dict[tuple[str, str], Dim]) -> list[str]:
    made = []
    if "core_school" in tables:
        cols = tables["core_school"]
        sel, joins = "", ""
        for col in ("commune_code", "district_code", "province_code", "ownership", "education_level", "region",
                    "national_standard"):
            d = dims.get(("school", col))
            if d:
                name = {"commune_code": "commune_name", "district_code": "district_name", "province_code": "province_name"}.get(col)
                s, j = _label("s", col, d.table, cols, name)
                sel, joins = sel + s, joins + j
        con.execute(f"create or replace view v_school as select s.*{sel} from core_school s{joins}")
        con.execute(f"comment on view v_school is {_lit('Trường, có tên xã/phường, quận/huyện và nhãn — schools with ward/commune, district and code labels')}")
        made.append("v_school")
    school_cols = ", sc.school_name, sc.commune_code, sc.commune_name, sc.district_name"
    school_join = (" left join v_school sc on sc.school_year = {a}.school_year and sc.period = {a}.period "
                   "and sc.school_code = {a}.school_code")
    for view, table, sid, labelled, gloss in (
        ("v_learner", "core_learners", "learners",
         ("sex", "ethnicity", "grade", "status", "dropout_reason", "entry_type", "nationality", "outcome", "year_result"),
         "Học sinh, có nhãn giới tính, dân tộc, khối, trạng thái và xã/phường của trường — learners with labels"),
        ("v_staff", "core_staff", "staff",
         ("sex", "ethnicity", "staff_group", "position", "contract_type", "training_level", "training_standard", "subject", "status"),
         "Cán bộ, giáo viên, nhân viên, có nhãn — staff with labels"),
    ):
        if table not in tables or "v_school" not in made:
            continue
        cols = tables[table]
        sel, joins = "", ""
        for col in labelled:
            d = dims.get((sid, col))
            if d:
                s, j = _label("t", col, d.table, cols)
                sel, joins = sel + s, joins + j
        if sid == "staff" and "training_standard_derived" in cols:
            s, j = _label("t", "training_standard_derived", "dim_chuan_dao_tao", cols, "training_standard_derived_label")
            sel, joins = sel + s, joins + j
        con.execute(f"create or replace view {view} as select t.*{school_cols}{sel} from {table} t"
                    f"{school_join.format(a='t')}{joins}")
        con.execute(f"comment on view {view} is {_lit(gloss)}")
        made.append(view)
    if "v_learner" in made:
        codes = ", ".join(_lit(c) for c in DROPOUT_STATUSES)
        con.execute(f"create or replace view v_dropout as select * from v_learner where status in ({codes})")
        con.execute(f"comment on view v_dropout is {_lit('Học sinh thôi học (trạng thái 05, 09, 12) với lý do — dropouts with their reason')}")
        made.append("v_dropout")
    # the base tables' column comments, read once (not one catalogue scan per column)
    # (the snapshot's own catalogue only: publish annotates it attached beside the officer's database)
    comments = {(t, c): cm for t, c, cm in con.execute(
        "select table_name, column_name, comment from duckdb_columns() where database_name = current_database()").fetchall()}
    for view in made:
        for col in [r[0] for r in con.execute(
                "select column_name from information_schema.columns where table_catalog = current_database() "
                f"and table_name = {_lit(view)}").fetchall()]:
            base = {"v_school": "core_school", "v_learner": "core_learners", "v_staff": "core_staff", "v_dropout": "core_learners"}[view]
            row = (comments[(base, col)],) if (base, col) in comments else None
            text = row[0] if row and row[0] else (
                f"Nhãn của {col[:-6]} — label of {col[:-6]}" if col.endswith("_label")
                else {"commune_name": "Tên xã/phường của trường — the school's ward/commune name",
                      "district_name": "Tên quận/huyện — district name", "province_name": "Tên tỉnh — province name",
                      "school_name": "Tên trường — school name", "commune_code": "Mã xã của trường — the school's commune code"}
                .get(col, col.replace("_", " ")))
            con.execute(f"comment on column {_q(view)}.{_q(col)} is {_lit(text)}")
    return made


def annotate_snapshot(snapshot: Path) -> list[str]:
    """Add dims, comments and views to the snapshot file at `snapshot` (not yet swapped in).
    Returns the views created."""
    con = duckdb.connect(str(snapshot))
    try:
        views = annotate(con)
        con.execute("checkpoint")
        return views
    finally:
        con.close()


def annotate(con) -> list[str]:
    """`annotate_snapshot` on a connection whose current database is the snapshot: its own
    connection, or a cursor of the publishing connection after `USE <alias>` of the attached
    temp file (issue 12: no second open and checkpoint of the file). Every catalogue read is
    narrowed to the current database and every name written is unqualified, so both give the
    same tables, comments and views (a view's text names no database either way)."""
    tables = {t: c for t, c in _tables(con).items() if not t.startswith(("dim_", "v_"))}
    all_dims = column_dims()
    used = [d for (sid, col), d in all_dims.items() if col in tables.get(f"core_{sid}", [])]
    used.append(Dim("dim_period", "edustat/PERIOD"))
    if "core_staff" in tables:
        used.append(Dim("dim_chuan_dao_tao", "moet-2020/DM_CHUAN_DAO_TAO"))
    # one transaction: hundreds of catalogue statements, one commit
    con.execute("begin transaction")
    try:
        _write_dims(con, used)
        _comment_columns(con, tables, all_dims)
        views = _create_views(con, tables, all_dims)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return views


def dictionary_markdown(snapshot: Path) -> str:
    """The data dictionary, read back from the snapshot's own catalogue and comments."""
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        return dictionary_text(con)
    finally:
        con.close()


def dictionary_text(con) -> str:
    """`dictionary_markdown` on a connection whose current database is the snapshot (see `annotate`)."""
    here = "schema_name = 'main' and database_name = current_database()"
    objs = con.execute(f"""select table_name, 'table' as kind, comment from duckdb_tables() where {here}
                          union all select view_name, 'view', comment from duckdb_views() where {here} and not internal
                          order by 1""").fetchall()
    cols = con.execute(f"""select table_name, column_name, data_type, comment from duckdb_columns()
                          where {here} and not internal order by table_name, column_index""").fetchall()
    dims = {t: con.execute(f"select count(*) from {_q(t)}").fetchone()[0] for t, k, _ in objs if t.startswith("dim_")}
    by: dict[str, list] = {}
    for t, c, ty, cm in cols:
        by.setdefault(t, []).append((c, ty, cm))
    lines = ["# edustat analyst snapshot — data dictionary",
             "",
             "Generated from the snapshot's own catalogue (`COMMENT ON` text taken from the data contract,",
             "schemas/submission.yaml). Each column comment is the workbook's Vietnamese header, then an English gloss.",
             "",
             "Open it: `edustat sql --snapshot edustat.duckdb` (read-only shell), or from Python",
             "`duckdb.connect('edustat.duckdb', read_only=True)`. Start with the views: they carry the labels.",
             "",
             "Personal data: names are dropped, birth dates become `birth_year`, student/staff codes and personal IDs",
             "are salted hashes (stable across collections). See `publish_info`.",
             "",
             "## Contents", ""]
    order = ([o for o in objs if o[1] == "view"] + [o for o in objs if o[1] == "table" and not o[0].startswith("dim_")]
             + [o for o in objs if o[0].startswith("dim_")])
    for name, kind, comment in order:
        extra = f", {dims[name]} codes" if name in dims else ""
        lines.append(f"- `{name}` ({kind}{extra}) — {comment or ''}")
    for name, kind, comment in order:
        if name.startswith("dim_"):
            continue
        lines += ["", f"## `{name}` ({kind})", "", comment or "", "", "| column | type | meaning |", "|---|---|---|"]
        lines += [f"| `{c}` | {ty} | {(cm or '').replace('|', '/')} |" for c, ty, cm in by.get(name, [])]
    lines += ["", "## Code lists (`dim_*`: code, label)", ""]
    lines += [f"- `{name}` — {comment or ''} ({dims[name]} codes)" for name, kind, comment in order if name.startswith("dim_")]
    return "\n".join(lines) + "\n"


def write_dictionary(snapshot: Path | None, out_dir: Path, text: str | None = None) -> Path:
    """Write DATA_DICTIONARY.md into `out_dir` atomically (temp file + rename): `text` when
    given (`dictionary_text` read before the file was detached), else read from `snapshot`."""
    out = Path(out_dir) / DICTIONARY_NAME
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex}")
    tmp.write_text(dictionary_markdown(snapshot) if text is None else text, encoding="utf-8")
    os.replace(tmp, out)
    return out
