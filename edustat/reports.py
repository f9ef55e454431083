"""The Circular 24/2018 report forms: one generic engine over form definitions.

A form is a YAML file in `schemas/forms/` (layout copied from the ministry's exports, each
row's indicator written next to it as a count or sum over a report view with a SQL `where`).
This module:
- builds the report views of a collection and form level (`rpt_school`, `rpt_class`,
  `rpt_learner`, `rpt_learner_all`, `rpt_staff`, `rpt_room`);
- computes every cell with ONE grouped query per entity (all rows and measures of the form as
  filtered aggregates, grouped by school × ownership group), so the city and every school
  come out of the same pass;
- checks each produced form (its own identities and a reconciliation with the curated rows);
- stores every cell in `rpt_form_cell` and every check in `rpt_form_check`;
- renders the workbook (values, not formulas) in the ministry's layout with xlsxwriter.
"""
from __future__ import annotations

import gc
import os
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import duckdb
import numpy as np
import pandas as pd
import yaml

FORMS_DIR = Path(__file__).resolve().parents[1] / "schemas" / "forms"
ENTITIES = ("school", "class", "learner", "learner_all", "staff", "room")
PEOPLE_MEASURES = {
    "tong": "true",
    "nu": "is_female",
    "dtts": "is_dtts",
    "dtts_nu": "is_dtts and is_female",
    "vien_chuc_khong_xac_dinh": "contract_bucket = 'vien_chuc_khong_xac_dinh'",
    "vien_chuc_xac_dinh": "contract_bucket = 'vien_chuc_xac_dinh'",
    "hop_dong_lao_dong": "contract_bucket = 'hop_dong_lao_dong'",
}
ROOM_VALUES = {"tong": "tong", "kien_co": "permanent", "ban_kien_co": "semi_permanent", "tam": "temporary"}
CELL_COLUMNS = ["school_year", "period", "form_code", "scope", "row_code", "column_key", "value"]
CHECK_COLUMNS = ["school_year", "period", "form_code", "scope", "check_name", "row_code", "column_key",
                 "expected", "actual", "ok", "message"]


class FormError(ValueError):
    """A form definition is inconsistent (a developer / office error, caught by tests)."""


# ---------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------

def load_form(form_code: str) -> dict:
    """A built-in form by code, or an office's ad-hoc report given as the path of its YAML
    (see `load_adhoc`; cached per file version, so an edited file is read again by a
    long-running server while each rendered workbook does not re-read it)."""
    if is_adhoc_ref(form_code):
        path = Path(form_code)
        try:
            st = path.stat()
        except OSError:
            return load_adhoc(path)  # raises the office's message
        return _load_adhoc_version(str(path.resolve()), st.st_mtime_ns, st.st_size)
    return _load_builtin(form_code)


@lru_cache(maxsize=64)
def _load_adhoc_version(path: str, mtime_ns: int, size: int) -> dict:
    return load_adhoc(path)


@lru_cache(maxsize=None)
def _load_builtin(form_code: str) -> dict:
    path = FORMS_DIR / f"{form_code}.yaml"
    if not path.exists():
        raise FormError(f"no form definition {path}")
    # libyaml's parser when present (the same SafeConstructor builds the objects; ~10× faster)
    form = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    _check_definition(form)
    return form


def list_forms(period: str | None = None) -> list[str]:
    """Form codes, optionally of one period (read from each file's `period:` line, so a form
    being edited for the other period never stops this one)."""
    out = []
    for path in sorted(FORMS_DIR.glob("*.yaml")):
        if period is not None:
            m = re.search(r"^period:\s*(\S+)", path.read_text(encoding="utf-8"), re.M)
            if not m or m.group(1) != period:
                continue
        out.append(path.stem)
    return out


def data_rows(form: dict) -> Iterable[tuple[dict, dict]]:
    """(sheet, row) for every row that carries a Mã số."""
    for sheet in form["sheets"]:
        for row in sheet.get("rows", []):
            if "code" in row:
                yield sheet, row


ROW_KEYS = {"tt", "label", "unit", "code", "na", "count", "sum", "entity", "where", "within", "parts", "reconcile", "note"}


def _check_definition(form: dict) -> None:
    codes = [row["code"] for _, row in data_rows(form)]
    if len(codes) != len(set(codes)):
        raise FormError(f"{form['form_code']}: duplicate row codes")
    columns_of = {row["code"]: tuple(sheet["columns"]) for sheet, row in data_rows(form)}
    for sheet, row in data_rows(form):
        unknown = set(row) - ROW_KEYS
        if unknown:  # a misspelt `wehre:` would silently count everything
            raise FormError(f"{form['form_code']} row {row['code']}: unknown keys {sorted(unknown)}")
        if row.get("reconcile") and row["reconcile"] not in RECONCILE:
            raise FormError(f"{form['form_code']} row {row['code']}: reconcile must be one of {sorted(RECONCILE)}")
        for ref in [*(p for g in _part_groups(row) for p in g), *([row["within"]] if "within" in row else [])]:
            if columns_of.get(ref) not in (None, tuple(sheet["columns"])):
                # compared column by column: a row on a sheet of other columns would never be
                # checked (or be compared across units)
                raise FormError(f"{form['form_code']} row {row['code']}: row {ref} has other columns")
        if "count" not in row and "sum" not in row:
            raise FormError(f"{form['form_code']} row {row['code']}: no definition (count/sum)")
        entity = row.get("count") or row.get("entity")
        if entity not in ENTITIES:
            raise FormError(f"{form['form_code']} row {row['code']}: unknown entity {entity!r}")
        for key in row.get("na", []):
            if key not in sheet["columns"]:
                raise FormError(f"{form['form_code']} row {row['code']}: na {key} is not a column")
        for ref in [*(p for g in _part_groups(row) for p in g), *([row["within"]] if "within" in row else [])]:
            if ref not in codes:
                raise FormError(f"{form['form_code']} row {row['code']}: refers to unknown row {ref}")


def _part_groups(row: dict) -> list[list[int]]:
    """`parts: [a, b]` or several splits of the same total: `parts: [[a, b], [c, d, e]]`."""
    parts = row.get("parts") or []
    return [list(p) for p in parts] if parts and isinstance(parts[0], list) else ([list(parts)] if parts else [])


def _entity(row: dict) -> str:
    return row.get("count") or row.get("entity")


# ---------------------------------------------------------------------------------------
# Ad-hoc reports: an office's own YAML, turned into a form the same engine computes,
# checks, stores and renders
# ---------------------------------------------------------------------------------------

class AdhocError(FormError):
    """An office's ad-hoc definition is wrong: the message is one Vietnamese line for the office."""


ADHOC_KEYS = {"title", "level", "period", "form_code", "count", "unit", "columns", "by_ownership",
              "splits", "rows", "note", "sheet"}
ADHOC_ROW_KEYS = {"id", "tt", "label", "unit", "count", "sum", "entity", "where", "within", "parts", "split",
                  "reconcile", "note"}
ENTITY_TEXT = {"school": "trường", "class": "lớp, nhóm trẻ", "learner": "học sinh đang học",
               "learner_all": "mọi học sinh có trong danh sách, kể cả đã chuyển đi, bỏ học",
               "staff": "cán bộ, giáo viên, nhân viên đang làm việc", "room": "phòng"}
LEVEL_TEXT = {"MN": "Giáo dục mầm non", "TH": "Giáo dục tiểu học", "THCS": "Giáo dục trung học cơ sở"}
ADHOC_MEASURES = {  # the columns an ad-hoc report may ask for, by what it counts
    "school": ("tong",), "class": ("tong",), "room": tuple(ROOM_VALUES),
    "learner": tuple(PEOPLE_MEASURES)[:4], "learner_all": tuple(PEOPLE_MEASURES)[:4], "staff": tuple(PEOPLE_MEASURES),
}
MEASURE_HEAD = {"tong": "Tổng số", "nu": "Nữ", "dtts": "Dân tộc thiểu số", "dtts_nu": "Nữ dân tộc thiểu số",
                "vien_chuc_khong_xac_dinh": "Viên chức HĐLV không xác định thời hạn",
                "vien_chuc_xac_dinh": "Viên chức HĐLV xác định thời hạn", "hop_dong_lao_dong": "Hợp đồng lao động",
                "kien_co": "Kiên cố", "ban_kien_co": "Bán kiên cố", "tam": "Tạm"}
_ADHOC_CODE = re.compile(r"[a-z0-9][a-z0-9-]{0,59}")
_SQL_FORBIDDEN = re.compile(r";|--|/\*|\*/")
# a report cell selected by a name, an ID, a code or a full birth date would describe one person
# (brief: nothing personal leaves the officer's database): ad-hoc conditions may not use them
_PERSONAL = re.compile(r"\b(full_name|personal_id|student_code|staff_code|birth_date)\b", re.I)


def is_adhoc_ref(ref: str) -> bool:
    """A `--form` value naming a file (`reports/x.yaml`, `./x.yml`) rather than a form code."""
    ref = str(ref)
    return ref.lower().endswith((".yaml", ".yml")) or "/" in ref or os.sep in ref


def _adhoc_fail(where: str, message: str) -> None:
    raise AdhocError(f"{where}: {message}")


def load_adhoc(path: str | Path) -> dict:
    """Read an ad-hoc report definition and return it as a form the engine accepts
    (sheets/columns/header/numbering/rows as in schemas/forms/*.yaml), or raise AdhocError
    with one Vietnamese sentence naming the file and the row.

    The office writes only: title, level, rows (label + count/sum + where), optionally the
    period, the columns (measures: tong, nu, dtts…), by_ownership, a default `count:`/`unit:`,
    row ids for `parts`/`within`, and `splits` (a list of sub-rows repeated under a row, whose
    sum must equal it). Codes, header, numbering, title block and widths are derived here;
    every `where`/`sum` is tried against the real report views (empty) so a wrong column or
    SQL is reported now, with its row, and not half-way through a run."""
    import unicodedata

    path = Path(path)
    name = path.name
    if not path.is_file():
        raise AdhocError(f"không tìm thấy tệp định nghĩa báo cáo {path}")
    try:
        doc = yaml.safe_load(unicodedata.normalize("NFC", path.read_text(encoding="utf-8")))
    except UnicodeDecodeError:
        raise AdhocError(f"{name}: tệp không phải văn bản UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (dòng {mark.line + 1}, cột {mark.column + 1})" if mark else ""
        raise AdhocError(f"{name}: tệp YAML sai cú pháp{at}; kiểm tra thụt lề và dấu hai chấm") from None
    if not isinstance(doc, dict):
        _adhoc_fail(name, "tệp phải là một bảng khóa: giá trị (title, level, rows…)")
    unknown = sorted(set(map(str, doc)) - ADHOC_KEYS)
    if unknown:
        _adhoc_fail(name, f"khóa không được hỗ trợ: {', '.join(unknown)}; các khóa dùng được: {', '.join(sorted(ADHOC_KEYS))}")
    for key in ("title", "level", "rows"):
        if doc.get(key) in (None, "", []):
            _adhoc_fail(name, f"thiếu khóa bắt buộc '{key}'")
    title = str(doc["title"]).strip()
    level = str(doc["level"]).strip()
    if level not in LEVEL_TEXT:
        _adhoc_fail(name, f"cấp học '{level}' không có; dùng MN, TH hoặc THCS")
    period = doc.get("period")
    if period is not None and period not in ("dau_nam", "cuoi_nam"):
        _adhoc_fail(name, f"kỳ '{period}' không có; dùng dau_nam hoặc cuoi_nam (hoặc bỏ khóa period)")
    code = str(doc.get("form_code") or path.stem).strip()
    if not _ADHOC_CODE.fullmatch(code):
        _adhoc_fail(name, f"mã báo cáo '{code}' chỉ được gồm chữ thường không dấu, chữ số và dấu gạch ngang "
                          "(vd hoc-sinh-khuyet-tat); đổi tên tệp hoặc khai báo form_code")
    if code in {p.stem for p in FORMS_DIR.glob("*.yaml")} or code.upper() in {p.stem.upper() for p in FORMS_DIR.glob("*.yaml")}:
        _adhoc_fail(name, f"mã báo cáo '{code}' trùng một biểu của Thông tư 24/2018; đặt form_code khác")
    measures = doc.get("columns", ["tong"])
    if isinstance(measures, str):
        measures = [measures]
    if not isinstance(measures, list) or not measures:
        _adhoc_fail(name, "columns phải là danh sách, vd [tong, nu]")
    measures = [str(m) for m in measures]
    bad = [m for m in measures if m not in MEASURE_HEAD]
    if bad:
        _adhoc_fail(name, f"cột {', '.join(bad)} không có; dùng: {', '.join(MEASURE_HEAD)}")
    if len(set(measures)) != len(measures):
        _adhoc_fail(name, "columns có cột lặp lại")
    by_ownership = doc.get("by_ownership", True)
    if not isinstance(by_ownership, bool):
        _adhoc_fail(name, "by_ownership phải là true hoặc false")
    default_entity, default_unit = doc.get("count"), doc.get("unit")
    splits = doc.get("splits") or {}
    if not isinstance(splits, dict):
        _adhoc_fail(name, "splits phải là bảng tên → danh sách dòng con (label, where)")
    for sname, items in splits.items():
        if not isinstance(items, list) or not items:
            _adhoc_fail(name, f"splits '{sname}' phải là danh sách dòng con")
        for it in items:
            if not isinstance(it, dict) or not it.get("label") or "where" not in it or set(it) - {"label", "where"}:
                _adhoc_fail(name, f"splits '{sname}': mỗi dòng con gồm đúng hai khóa label và where")
    if not isinstance(doc["rows"], list):
        _adhoc_fail(name, "rows phải là danh sách các dòng")

    # the level's ownership groups: those of its built-in forms, so Tổng số = Σ groups as on them
    groups = ["cong_lap", "tu_thuc", "dan_lap"] if level == "MN" else ["cong_lap", "tu_thuc"]
    shown = ["tong_so", *(groups if by_ownership else [])]
    columns = [f"{g}.{m}" for g in shown for m in measures]

    rows_out: list[dict] = []
    ids: dict[str, int] = {}
    pending: list[tuple[dict, dict, str]] = []  # (out row, source row, where-said) for parts/within by id
    next_code = 1
    data_keys = {"count", "sum", "entity", "where", "split", "parts", "within", "reconcile", "id"}
    for i, row in enumerate(doc["rows"], start=1):
        if not isinstance(row, dict):
            _adhoc_fail(name, f"dòng thứ {i} của rows phải là bảng khóa (label, where…)")
        label = str(row.get("label") or "").strip()
        said = f"{name}, dòng '{label}'" if label else f"{name}, dòng thứ {i}"
        if not label:
            _adhoc_fail(said, "thiếu label (tên dòng)")
        unknown = sorted(set(map(str, row)) - ADHOC_ROW_KEYS)
        if unknown:
            hint = " (dùng id và parts/within; mã số được đánh tự động)" if "code" in unknown else ""
            _adhoc_fail(said, f"khóa không được hỗ trợ: {', '.join(unknown)}{hint}")
        out = {k: row[k] for k in ("tt", "note") if k in row}
        out["label"] = label
        if not (set(row) & data_keys):
            rows_out.append(out)  # a heading line: no number
            continue
        entity = row.get("count") or row.get("entity") or default_entity
        if entity is None:
            _adhoc_fail(said, "thiếu count (đếm gì: " + ", ".join(f"{k} = {v}" for k, v in ENTITY_TEXT.items()) + ")")
        if entity not in ENTITIES:
            _adhoc_fail(said, f"đối tượng '{entity}' không có; dùng một trong: "
                              + ", ".join(f"{k} ({v})" for k, v in ENTITY_TEXT.items()))
        not_here = [m for m in measures if m not in ADHOC_MEASURES[entity]]
        if not_here:
            _adhoc_fail(said, f"cột {', '.join(not_here)} không áp dụng cho {entity} ({ENTITY_TEXT[entity]}); "
                              f"dùng: {', '.join(ADHOC_MEASURES[entity])}")
        if row.get("reconcile") is not None and row["reconcile"] not in RECONCILE:
            _adhoc_fail(said, f"reconcile phải là một trong {', '.join(sorted(RECONCILE))}")
        for key in ("where", "sum"):
            if key in row and (not isinstance(row[key], (str, bool)) or _SQL_FORBIDDEN.search(str(row[key]))):
                _adhoc_fail(said, f"{key} phải là một điều kiện SQL trên một dòng, không có ; hay chú thích")
            if key in row and _PERSONAL.search(str(row[key])):
                _adhoc_fail(said, f"{key} không được dùng thông tin cá nhân ({_PERSONAL.search(str(row[key])).group(1)}): "
                                  "báo cáo chỉ chứa số liệu tổng hợp, không chọn từng người")
        out.update({"unit": row.get("unit", default_unit) or "", "code": next_code})
        if "sum" in row:
            out.update({"sum": str(row["sum"]), "entity": entity})
        else:
            out["count"] = entity
        where = row.get("where")
        if where is not None:
            out["where"] = "true" if where is True else ("false" if where is False else str(where))
        if row.get("reconcile"):
            out["reconcile"] = row["reconcile"]
        if "id" in row:
            rid = str(row["id"])
            if rid in ids:
                _adhoc_fail(said, f"id '{rid}' đã dùng cho một dòng khác")
            ids[rid] = next_code
        next_code += 1
        rows_out.append(out)
        pending.append((out, row, said))
        if "split" in row:
            sname = row["split"]
            if sname not in splits:
                _adhoc_fail(said, f"split '{sname}' không có trong splits (có: {', '.join(map(str, splits)) or 'không có'})")
            children = []
            for it in splits[sname]:
                if _SQL_FORBIDDEN.search(str(it["where"])) or _PERSONAL.search(str(it["where"])):
                    _adhoc_fail(said, f"splits '{sname}', dòng '{it['label']}': where không được có ; hay chú thích, "
                                      "không được dùng thông tin cá nhân (họ tên, mã định danh, mã học sinh, ngày sinh)")
                child_label = str(it["label"]).strip()
                if not child_label.startswith(("-", "+")):
                    child_label = f"- {child_label}"
                child = {"label": child_label, "unit": out["unit"], "code": next_code,
                         "where": f"({out.get('where', 'true')}) and ({it['where']})"}
                child.update({"sum": out["sum"], "entity": entity} if "sum" in out else {"count": entity})
                children.append(next_code)
                next_code += 1
                rows_out.append(child)
                pending.append((child, {"label": child_label, "_split": (sname, it["label"])}, f"{said}, dòng con '{child_label}'"))
            out["parts"] = [children]

    def ref(said: str, r: object) -> int:
        if str(r) not in ids:
            _adhoc_fail(said, f"không có dòng nào có id '{r}'" + (f" (các id: {', '.join(ids)})" if ids else " (chưa dòng nào khai báo id)"))
        return ids[str(r)]

    for out, row, said in pending:
        if "parts" in row:
            groups_ = row["parts"] if row["parts"] and isinstance(row["parts"][0], list) else [row["parts"]]
            resolved = [[ref(said, r) for r in g] for g in groups_]
            out["parts"] = [*out.get("parts", []), *resolved]
        if "within" in row:
            out["within"] = ref(said, row["within"])
    if next_code == 1:
        _adhoc_fail(name, "không có dòng số liệu nào (mỗi dòng cần count/sum hoặc where)")

    ncols = 4 + len(columns)
    header_rows, merges = _adhoc_header(shown, measures, ncols)
    nb = 5  # title block rows; the header starts on row 6
    merges = [_shift_merge(m, nb) for m in merges]
    block = [[None, title.upper(), None, "- Đơn vị báo cáo:"], [None, LEVEL_TEXT[level], None, "Sở GDĐT tỉnh……….."],
             [None, "(báo cáo theo yêu cầu của Phòng GD&ĐT)", None, "- Đơn vị nhận báo cáo:"],
             [None, None, None, "Bộ Giáo dục và Đào tạo"], [None] * 4]
    form = {
        "form_code": code, "number": title, "title": title, "level": level, "groups": groups,
        "source": {"kind": "adhoc", "file": str(path)},
        "sheets": [{
            "name": str(doc.get("sheet") or "Báo cáo")[:31], "columns": columns,
            "header": {"rows": header_rows, "merges": merges},
            "numbering": [None, "A", "B", "C", *[str(i) for i in range(1, len(columns) + 1)]],
            "rows": rows_out,
            "title_block": {"rows": block, "merges": ["B1:C1", "B2:C2", "B3:C3"]},
            "widths": _adhoc_widths(title.upper(), len(columns)),
        }],
    }
    if period:
        form["period"] = period
    if doc.get("note"):
        form["note"] = str(doc["note"])
    try:
        _check_definition(form)
    except AdhocError:
        raise
    except FormError as exc:
        raise AdhocError(f"{name}: định nghĩa không nhất quán ({exc})") from None
    _probe_sql(form, name, pending)
    return form


def _adhoc_header(shown: list[str], measures: list[str], ncols: int) -> tuple[list[list], list[str]]:
    """One header row (a column per group) when a single measure is asked; else two rows:
    the group over its measures."""
    from xlsxwriter.utility import xl_col_to_name

    first = ["TT", "Chỉ tiêu", "Đơn vị tính", "Mã số"]
    if len(measures) == 1:
        return [first + [GROUP_TEXT[g] for g in shown]], []
    top, sub, merges = list(first), [None] * 4, [f"{c}1:{c}2" for c in "ABCD"]
    for i, g in enumerate(shown):
        start = 4 + i * len(measures)
        top += [GROUP_TEXT[g]] + [None] * (len(measures) - 1)
        sub += [MEASURE_HEAD[m] for m in measures]
        merges.append(f"{xl_col_to_name(start)}1:{xl_col_to_name(start + len(measures) - 1)}1")
    return [top, sub], merges


def _adhoc_widths(title: str, nvalues: int) -> dict[str, float]:
    """TT, Chỉ tiêu, Đơn vị tính, Mã số, then narrow value columns; Chỉ tiêu wide enough for
    the bold title (merged over Chỉ tiêu and Đơn vị tính) to stay on one line."""
    from xlsxwriter.utility import xl_col_to_name

    from edustat.layout import text_points, wrap_points

    unit_w, label_w = 11.0, 40.0
    while label_w < 90 and wrap_points(label_w) + wrap_points(unit_w) < text_points(title, FONT_PT, True) * 1.05:
        label_w += 1.0
    widths = {"A": 6.0, "B": label_w, "C": unit_w, "D": 7.0}
    widths.update({xl_col_to_name(4 + i): 10.0 for i in range(nvalues)})
    return widths


def _shift_merge(m: str, rows: int) -> str:
    def shift(cell: str) -> str:
        col = cell.rstrip("0123456789")
        return f"{col}{int(cell[len(col):]) + rows}"
    a, b = m.split(":")
    return f"{shift(a)}:{shift(b)}"


def _probe_sql(form: dict, name: str, rows: list[tuple[dict, dict, str]]) -> None:
    """Run every row's filtered aggregate once on empty report views (in memory, no access to
    files): a misspelt column or bad SQL fails here, named by its row."""
    from edustat import store

    con = duckdb.connect(":memory:")
    try:
        store.ensure_tables(con)
        con.execute(REPORT_DDL)
        con.execute("set enable_external_access = false")
        create_views(con, "2000-2001", form.get("period", "dau_nam"), form["level"], form["groups"])
        measures = sorted({c.split(".", 1)[1] for c in form["sheets"][0]["columns"]})
        for out, _, said in rows:
            entity = _entity(out)
            for m in measures:
                try:
                    con.execute(f"select {_measure_sql(entity, out, m)} from rpt_{entity}").fetchall()
                except (duckdb.Error, FormError) as exc:
                    text = str(exc).strip()
                    miss = re.search(r'Referenced column "?([^"\s]+)"? not found', text)
                    if miss:
                        import difflib

                        cols = [r[0] for r in con.execute(f"select column_name from (describe rpt_{entity})").fetchall()]
                        near = difflib.get_close_matches(miss.group(1), cols, n=1)
                        hint = f"có phải '{near[0]}'?" if near else "xem danh sách cột trong README"
                        raise AdhocError(f"{said}: where/sum dùng cột '{miss.group(1)}' không có trong dữ liệu "
                                         f"{ENTITY_TEXT[entity]} (bảng rpt_{entity}); {hint}") from None
                    first = text.splitlines()[0] if text else type(exc).__name__
                    raise AdhocError(f"{said}: where/sum không phải điều kiện SQL hợp lệ ({first})") from None
    finally:
        con.close()


# ---------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------

def _lit(value: str) -> str:
    if not re.fullmatch(r"[0-9A-Za-z_\-]+", value):
        raise ValueError(f"unsafe literal {value!r}")
    return f"'{value}'"


def create_views(con: duckdb.DuckDBPyConnection, school_year: str, period: str, level: str, groups: list[str],
                 only: str | None = None) -> None:
    """Temp views of one collection × level. `grp` is the form's ownership column group of a
    school (a group the form has no column for is counted with tư thục, the forms' non-public
    group — e.g. a dân lập primary school on 02-TH-ĐN). `only`: the name of a table of
    school_code — the views hold those schools' rows only (edustat.formdelta)."""
    y, p, lv = _lit(school_year), _lit(period), _lit(level)
    if only is not None and not re.fullmatch(r"[a-z_]+", only):
        raise ValueError(f"unsafe table name {only!r}")
    # a school's rows only ever join its own school: filtering each scan gives the same rows
    def o_(col: str = "school_code") -> str:
        return f" and {col} in (select school_code from {only})" if only else ""
    o = o_()
    start = int(school_year[:4])
    grp_case = "case " + " ".join(f"when ownership_group = {_lit(g)} then {_lit(g)}" for g in groups) + " else 'tu_thuc' end"
    # `only` (a delta: a few schools' rows): the schools' view is kept as a temp table of its
    # rows — every other view joins it, and DuckDB plans its CTEs again inside each entity's
    # query (~5-8 ms each on a city; issue 12). Nothing writes core between here and the
    # queries of the same delta (formdelta.compute_and_check_delta), which drops it after.
    school_rows = f"{only}_school" if only else None
    con.execute(f"""
    create or replace temp {'table ' + school_rows if only else 'view rpt_school'} as
    with schools as (
        select * from core_school
        where school_year = {y} and period = {p} and list_contains(string_split(levels, ','), {lv}){o}
    ),
    classes as (
        select school_code,
               count(*) filter (where level = {lv}) as n_classes,
               count(*) filter (where care_level = 'nha_tre') as n_groups_nha_tre,
               count(*) filter (where care_level = 'mau_giao') as n_classes_mau_giao
        from core_classes where school_year = {y} and period = {p}{o} group by 1
    ),
    learners as (
        select school_code,
               count(*) as n_learners,
               count(*) filter (where is_disabled and coalesce(special_education, '0') = '0') as n_disabled_inclusive
        from core_learners where school_year = {y} and period = {p} and level = {lv} and is_enrolled{o} group by 1
    ),
    final as (
        select s.*, {grp_case} as grp,
               coalesce(c.n_classes, 0) as n_classes, coalesce(c.n_groups_nha_tre, 0) as n_groups_nha_tre,
               coalesce(c.n_classes_mau_giao, 0) as n_classes_mau_giao,
               coalesce(l.n_learners, 0) as n_learners, coalesce(l.n_disabled_inclusive, 0) as n_disabled_inclusive
        from schools s left join classes c using (school_code) left join learners l using (school_code)
    )
    select * from final""")
    if only:
        con.execute(f"create or replace temp view rpt_school as select * from {school_rows}")
    school_attrs = ("s.grp, s.region, s.ethnic_semi_boarding as school_semi_boarding, "
                    "s.special_school as school_special, s.two_sessions as school_two_sessions, "
                    "s.mn_school_type")
    con.execute(f"""
    create or replace temp view rpt_learner_all as
    with learners as (
        select * from core_learners where school_year = {y} and period = {p} and level = {lv}{o}
    ),
    final as (
        select l.*, {school_attrs},
               -- completed months at the reference date (30/9 of the start year; 31/5 at year end)
               date_diff('month', l.birth_date, make_date({start + (1 if period == 'cuoi_nam' else 0)},
                         {5 if period == 'cuoi_nam' else 9}, {31 if period == 'cuoi_nam' else 30})) as age_months
        from learners l join rpt_school s using (school_code)
    )
    select * from final""")
    con.execute("create or replace temp view rpt_learner as select * from rpt_learner_all where is_enrolled")
    con.execute(f"""
    create or replace temp view rpt_class as
    with classes as (
        select * from core_classes where school_year = {y} and period = {p}
          and (level = {lv} or ({lv} = 'MN' and care_level is not null)){o}
    ),
    sizes as (
        select school_code, class_code, count(*) as n_learners,
               count(*) filter (where is_disabled) as n_disabled
        from core_learners where school_year = {y} and period = {p} and is_enrolled{o} group by 1, 2
    ),
    final as (
        select c.*, coalesce(z.n_learners, 0) as n_learners, coalesce(z.n_disabled, 0) as n_disabled, {school_attrs}
        from classes c join rpt_school s using (school_code) left join sizes z using (school_code, class_code)
    )
    select * from final""")
    con.execute(f"""
    create or replace temp view rpt_staff as
    select st.*, {school_attrs}
    from core_staff st join rpt_school s using (school_code)
    where st.school_year = {y} and st.period = {p} and st.is_active and st.level = {lv}{o_("st.school_code")}""")
    con.execute(f"""
    create or replace temp view rpt_room as
    select r.*, coalesce(r.permanent, 0) + coalesce(r.semi_permanent, 0) + coalesce(r.temporary, 0) as tong, {school_attrs}
    from core_rooms r join rpt_school s using (school_code)
    where r.school_year = {y} and r.period = {p}{o_("r.school_code")}""")


# ---------------------------------------------------------------------------------------
# Compute
# ---------------------------------------------------------------------------------------

def _measure_sql(entity: str, row: dict, measure: str) -> str:
    where = row.get("where", "true")
    if entity == "room":
        value = row.get("sum", ROOM_VALUES[measure]) if measure == "tong" or "sum" not in row else ROOM_VALUES[measure]
        if measure != "tong":
            value = ROOM_VALUES[measure]
        return f"coalesce(sum({value}) filter (where ({where})), 0)"
    pred = PEOPLE_MEASURES.get(measure)
    if pred is None:
        raise FormError(f"measure {measure!r} is not defined for {entity}")
    if "sum" in row:
        return f"coalesce(sum({row['sum']}) filter (where ({where}) and ({pred})), 0)"
    return f"count(*) filter (where ({where}) and ({pred}))"


def compute_form(con: duckdb.DuckDBPyConnection, form: dict, school_year: str, period: str,
                 schools: Iterable[str] | None = None) -> pd.DataFrame:
    """Every cell of the form for the city and each school.
    Grain: rows of the report views → one row per (scope, row_code, column_key)."""
    create_views(con, school_year, period, form["level"], form["groups"])
    school_list = [r[0] for r in con.execute("select school_code from rpt_school order by 1").fetchall()]
    if schools is not None:
        wanted = set(schools)
        school_list = [s for s in school_list if s in wanted]
    by_entity: dict[str, list[tuple[dict, dict]]] = {}
    for sheet, row in data_rows(form):
        by_entity.setdefault(_entity(row), []).append((sheet, row))
    long_parts = []
    for entity, rows in by_entity.items():
        long = _entity_long(con, form, entity, rows)
        if long is None:
            long = _entity_long_sql(con, form, entity, rows)
        if long is not None and len(long):
            long_parts.append(long)
    cells = _assemble(form, pd.concat(long_parts, ignore_index=True) if long_parts else
                      pd.DataFrame(columns=["school_code", "grp", "value", "row_code", "measure"]), school_list)
    cells.insert(0, "form_code", form["form_code"])
    cells.insert(0, "period", period)
    cells.insert(0, "school_year", school_year)
    return cells[CELL_COLUMNS]


def _cell_terms(entity: str, row: dict, measure: str) -> tuple[str, str | None, str | None]:
    """The aggregate `_measure_sql` writes, as its three terms: (where, measure predicate or
    None, summed expression or None for a count): the cell is Σ value over the rows where
    both conditions are true (a NULL condition counts as false, as in FILTER)."""
    where = row.get("where", "true")
    if entity == "room":
        value = row.get("sum", ROOM_VALUES[measure]) if measure == "tong" else ROOM_VALUES[measure]
        return where, None, value
    pred = PEOPLE_MEASURES.get(measure)
    if pred is None:
        raise FormError(f"measure {measure!r} is not defined for {entity}")
    return where, pred, row.get("sum")


def _entity_long(con: duckdb.DuckDBPyConnection, form: dict, entity: str,
                 rows: list[tuple[dict, dict]]) -> pd.DataFrame | None:
    """The long cells (school_code, grp, value, row_code, measure) of one entity's rows, from
    ONE projection that evaluates each distinct condition and summed expression once per
    record, the filtered sums then taken per (school, group) in numpy — what the grouped
    query of filtered aggregates computes (hundreds of them cost DuckDB ~1 ms each even on a
    few hundred records). Exact: counts, and sums of integer expressions, are integers (float64
    is exact below 2**53). None when a summed expression is not of an integer type (the
    caller then runs the filtered aggregates)."""
    import numpy as np

    exprs: dict[tuple[str, str], str] = {}

    def alias(kind: str, text: str) -> str:
        return exprs.setdefault((kind, text), f"e{len(exprs)}")

    specs = []
    for sheet, row in rows:
        for m in sorted({c.split(".", 1)[1] for c in sheet["columns"]}):
            where, pred, value = _cell_terms(entity, row, m)
            specs.append((row["code"], m, alias("b", where), pred and alias("b", pred), value and alias("v", value)))
    cols = [f"coalesce((({text}) and true), false) as {a}" if kind == "b" else f"({text}) as {a}"
            for (kind, text), a in exprs.items()]
    try:
        # run at once (a relation, `con.sql`, binds the statement once to learn its columns and
        # again when it runs: ~5 ms more for each of a build's 15 projections); the same table
        tbl = con.execute(f"select school_code, grp, {', '.join(cols)} from rpt_{entity}").to_arrow_table()
    except duckdb.Error as exc:
        raise FormError(f"{form['form_code']} ({entity}): {exc}") from exc
    import pyarrow as pa

    for (kind, _), a in exprs.items():
        t = tbl.schema.field(a).type
        if kind == "v" and not (pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_null(t)):
            return None
    empty = pd.DataFrame({"school_code": pd.Series(dtype=object), "grp": pd.Series(dtype=object),
                          "value": pd.Series(dtype="float64"), "row_code": pd.Series(dtype="int64"),
                          "measure": pd.Series(dtype=object)})
    if tbl.num_rows == 0:
        return empty
    groups = _first_pairs(tbl.column("school_code"), tbl.column("grp"))
    if groups is None:  # a NULL key: pandas factorizes the pairs
        keys = pd.MultiIndex.from_arrays([tbl.column("school_code").to_pandas(), tbl.column("grp").to_pandas()])
        gid, uniq = keys.factorize()
        ng = len(uniq)
    else:
        gid, ng = groups[0], groups[1]
    arrays = {}
    for (kind, _), a in exprs.items():
        col = tbl.column(a)
        if kind == "b":
            arrays[a] = col.to_numpy(zero_copy_only=False).astype(bool)
        else:  # NULL adds nothing to a sum
            arrays[a] = col.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).astype("float64")
    values = []
    for _, _, w, pr, v in specs:
        mask = arrays[w] & arrays[pr] if pr else arrays[w]
        weights = np.where(mask, arrays[v], 0.0) if v else mask.astype("float64")
        values.append(np.bincount(gid, weights=weights, minlength=ng))
    n = len(specs)
    row_code = np.repeat(np.array([s[0] for s in specs], dtype="int64"), ng)
    if groups is None:
        return pd.DataFrame({
            "school_code": np.tile(uniq.get_level_values(0).to_numpy(dtype=object), n),
            "grp": np.tile(uniq.get_level_values(1).to_numpy(dtype=object), n),
            "value": np.concatenate(values),
            "row_code": row_code,
            "measure": np.repeat(np.array([s[1] for s in specs], dtype=object), ng),
        })
    # the text columns made in Arrow from indexes (pandas converts a column of repeated Python
    # strings one value at a time: ~0.05 CPU s a cold city), the same values and dtype
    measures, measure_at = np.unique(np.array([s[1] for s in specs], dtype=object), return_inverse=True)
    return pd.DataFrame({
        "school_code": _texts(groups[2], np.tile(np.arange(ng), n)),
        "grp": _texts(groups[3], np.tile(np.arange(ng), n)),
        "value": np.concatenate(values),
        "row_code": row_code,
        "measure": _texts(measures, np.repeat(measure_at.reshape(-1), ng)),
    })


_TEXT_DTYPE = pd.Series(["x"]).dtype  # what pandas makes of a column of Python strings


def _first_pairs(left, right):
    """(group of each row, number of groups, each group's left value, its right value) of two
    Arrow text columns, the groups numbered in order of first appearance — what a pandas
    MultiIndex.factorize of the pairs gives, from Arrow's dictionary encoding (the MultiIndex
    of a cold city's records cost ~0.1 CPU s: issue 12). None when a value is NULL or not text
    (the MultiIndex then decides)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if left.null_count or right.null_count or not all(
            pa.types.is_string(c.type) or pa.types.is_large_string(c.type) for c in (left, right)):
        return None
    codes = []
    for col in (left, right):
        enc = pc.dictionary_encode(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
        codes.append((enc.indices.to_numpy(zero_copy_only=False).astype("int64"),
                      np.array(enc.dictionary.to_pylist(), dtype=object)))
    (li, ld), (ri, rd) = codes
    pair = li * max(len(rd), 1) + ri
    uniq, first, inv = np.unique(pair, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # groups in order of first appearance
    rank = np.empty(len(order), dtype="int64")
    rank[order] = np.arange(len(order))
    pairs = uniq[order]
    return rank[inv.reshape(-1)], len(pairs), ld[pairs // max(len(rd), 1)], rd[pairs % max(len(rd), 1)]


def _texts(labels: np.ndarray, at: np.ndarray):
    """pandas' text column of labels[at] (labels: Python strings), made in Arrow from the
    indexes (a column of repeated Python strings is converted one value at a time); the
    object array pandas infers its dtype from when its text dtype is not Arrow's."""
    import pyarrow as pa

    if not (isinstance(_TEXT_DTYPE, pd.StringDtype) and _TEXT_DTYPE.storage == "pyarrow"):
        return labels[at]
    arr = pa.DictionaryArray.from_arrays(pa.array(at, type=pa.int64()), pa.array(labels.tolist(), type=pa.large_string()))
    return pd.array(arr.cast(pa.large_string()), dtype="str")


def _entity_long_sql(con: duckdb.DuckDBPyConnection, form: dict, entity: str,
                     rows: list[tuple[dict, dict]]) -> pd.DataFrame | None:
    """The long cells of one entity's rows from one grouped query of filtered aggregates
    (`_measure_sql`): any summed expression; None when the entity has no records."""
    selects, keys = [], []
    for sheet, row in rows:
        measures = sorted({c.split(".", 1)[1] for c in sheet["columns"]})
        for m in measures:
            alias = f"c{row['code']}__{m}"
            selects.append(f'{_measure_sql(entity, row, m)} as "{alias}"')
            keys.append((alias, row["code"], m))
    sql = f"select school_code, grp, {', '.join(selects)} from rpt_{entity} group by all"
    try:
        wide = con.execute(sql).df()
    except duckdb.Error as exc:
        raise FormError(f"{form['form_code']} ({entity}): {exc}") from exc
    if wide.empty:
        return None
    long = wide.melt(id_vars=["school_code", "grp"], var_name="alias", value_name="value")
    meta = pd.DataFrame(keys, columns=["alias", "row_code", "measure"])
    return long.merge(meta, on="alias").drop(columns="alias")


def _assemble(form: dict, long: pd.DataFrame, schools: list[str]) -> pd.DataFrame:
    """Per school and for the city: each sheet column `<group>.<measure>` of each row; the
    tong_so group is the sum over groups; '#' cells (na) are NULL. The grid of (scope, row,
    column) comes from the definition, the values from one bincount over integer cell keys
    (`_assemble_keyed`) or, when that cannot be exact, two group-bys (`_assemble_grouped`)."""
    keyed = _assemble_keyed(form, long, schools)
    return keyed if keyed is not None else _assemble_grouped(form, long, schools)


def _sums_exact(values: np.ndarray, times: int = 1) -> bool:
    """Whether float64 sums of `values` (each added `times` times) are the same in any order:
    every value finite and whole and `times`·Σ|value| < 2**53 (float64 adds whole numbers below
    2**53 exactly). The integer-key paths below use it; where it fails, pandas' compensated
    group-bys decide."""
    return not len(values) or bool(np.isfinite(values).all() and (values == np.round(values)).all()
                                   and times * np.abs(values).sum() < 2.0 ** 53)


def _assemble_keyed(form: dict, long: pd.DataFrame, schools: list[str]) -> pd.DataFrame | None:
    """`_assemble_grouped`'s frame (same rows, order, dtypes, values), its sums by np.bincount
    over one integer per (scope, row, column): the group-bys' merges and cross join cost
    ~15 ms a form even for one school (issue 12). None — the group-bys decide — when a sum
    could depend on its order (a value not a whole number, infinite, or Σ|value| ≥ 2**53:
    float64 adds whole numbers below 2**53 exactly in any order; pandas' sums are compensated),
    or a school is listed twice or is named 'city' (the merges would pair rows otherwise)."""
    if len(set(schools)) != len(schools) or "city" in schools:
        return None
    grid = [(row["code"], key, key in set(row.get("na", []))) for sheet, row in data_rows(form) for key in sheet["columns"]]
    base = pd.DataFrame(grid, columns=["row_code", "column_key", "na"])
    scopes = pd.Series(["city", *schools])
    ng, ns = len(base), len(scopes)
    cell_of = {}  # (row, key) → its cell number (a pair the grid has twice shares one)
    for row_code, key, _ in grid:
        cell_of.setdefault((row_code, key), len(cell_of))
    nc = len(cell_of)
    sums = np.zeros((ns, nc))  # row 0: the city
    if schools and len(long):
        mine = long[long["school_code"].isin(schools) & long["grp"].isin(form["groups"])]
        value = pd.to_numeric(mine["value"], errors="coerce").astype("float64").to_numpy()
        keep = ~np.isnan(value)  # the group-bys' sums skip NaN
        value = value[keep]
        if not _sums_exact(value, times=2):  # each value summed into its group's and tong_so's cell
            return None
        school = pd.Index(scopes[1:]).get_indexer(mine["school_code"].to_numpy(dtype=object)[keep]) + 1
        # (row, group, measure) factorised: the cell of each combination looked up once
        r_at, r_uni = pd.factorize(mine["row_code"].to_numpy()[keep])
        g_at, g_uni = pd.factorize(mine["grp"].to_numpy(dtype=object)[keep])
        m_at, m_uni = pd.factorize(mine["measure"].to_numpy(dtype=object)[keep])
        if (r_at < 0).any() or (g_at < 0).any() or (m_at < 0).any():
            return None  # a NULL key: the group-bys drop it
        # the grid as a (row, column) table of cell numbers, -1 where the grid has no cell
        row_no = {r: i for i, r in enumerate(dict.fromkeys(r for r, _, _ in grid))}
        key_no = {k: i for i, k in enumerate(dict.fromkeys(k for _, k, _ in grid))}
        table = np.full((len(row_no) + 1, len(key_no) + 1), -1, dtype="int64")  # last row / column: none
        for (r, k), c in cell_of.items():
            table[row_no[r], key_no[k]] = c
        rows = np.array([row_no.get(int(r), len(row_no)) for r in r_uni], dtype="int64")[r_at]
        at, weights = [], []
        for key_of in (lambda g, m: f"{g}.{m}", lambda g, m: f"tong_so.{m}"):
            keys = np.array([[key_no.get(key_of(g, m), len(key_no)) for m in m_uni] for g in g_uni],
                            dtype="int64").reshape(len(g_uni), len(m_uni))
            cells = table[rows, keys[g_at, m_at]]
            ok = cells >= 0  # a (row, column) not in the grid: the left merge dropped it
            at.append(school[ok] * nc + cells[ok])
            weights.append(value[ok])
        # (float64 even with no cell: numpy's bincount of nothing is integer)
        sums = np.bincount(np.concatenate(at), weights=np.concatenate(weights),
                           minlength=ns * nc).astype("float64").reshape(ns, nc)
        sums[0] = sums[1:].sum(axis=0)
    cell = np.array([cell_of[(r, k)] for r, k, _ in grid], dtype="int64")
    out = pd.DataFrame({"scope": scopes.take(np.repeat(np.arange(ns), ng)).reset_index(drop=True),
                        "row_code": base["row_code"].take(np.tile(np.arange(ng), ns)).reset_index(drop=True),
                        "column_key": base["column_key"].take(np.tile(np.arange(ng), ns)).reset_index(drop=True),
                        "value": sums[:, cell].reshape(-1)})
    na = np.tile(base["na"].to_numpy(dtype=bool), ns)
    out["value"] = out["value"].where(~na)
    out["value"] = out["value"].astype(object).where(out["value"].notna(), None)
    return out


def _assemble_grouped(form: dict, long: pd.DataFrame, schools: list[str]) -> pd.DataFrame:
    long = long[long["school_code"].isin(schools) & long["grp"].isin(form["groups"])] if schools else long.iloc[0:0]
    long = long.assign(value=pd.to_numeric(long["value"], errors="coerce").astype("float64"))
    by_group = long.assign(column_key=long["grp"] + "." + long["measure"])
    total = long.assign(column_key="tong_so." + long["measure"])
    per_school = pd.concat([by_group, total]).groupby(["school_code", "row_code", "column_key"])["value"].sum()
    city = per_school.groupby(level=["row_code", "column_key"]).sum()
    grid = [(row["code"], key, key in set(row.get("na", []))) for sheet, row in data_rows(form) for key in sheet["columns"]]
    base = pd.DataFrame(grid, columns=["row_code", "column_key", "na"])
    out = pd.DataFrame({"scope": ["city", *schools]}).merge(base, how="cross")
    values = pd.concat([city.rename("value").reset_index().assign(scope="city"),
                        per_school.rename("value").reset_index().rename(columns={"school_code": "scope"})])
    out = out.merge(values, on=["scope", "row_code", "column_key"], how="left")
    out["value"] = out["value"].astype("float64").fillna(0.0).where(~out["na"])
    out["value"] = out["value"].astype(object).where(out["value"].notna(), None)
    return out[["scope", "row_code", "column_key", "value"]]


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------

def check_form(form: dict, cells: pd.DataFrame) -> pd.DataFrame:
    """The form's own identities, per scope: total = Σ groups; female ≤ total; DTTS ≤ total;
    DTTS-female ≤ min(DTTS, female); public contract columns ≤ total; rooms total = Σ
    conditions; and the definition's `parts` (sum) and `within` (≤ parent) rows.
    Vectorised over scopes: one wide frame (scope × row, one column per column key)."""
    cols = ["school_year", "period", "form_code", "scope", "check_name", "row_code", "column_key",
            "expected", "actual", "ok", "message"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    import numpy as np

    values = cells.assign(value=pd.to_numeric(cells["value"], errors="coerce").astype("float64"))
    pivot = _pivot_first(values)
    if pivot is None:
        wide = values.pivot_table(index=["scope", "row_code"], columns="column_key", values="value", aggfunc="first")
        wide_scope, wide_row = wide.index.get_level_values(0), wide.index.get_level_values(1)
        grid, columns = wide.to_numpy(dtype="float64", na_value=np.nan), list(wide.columns)
    else:
        wide_scope, wide_row, columns, grid = pivot
    out: list[pd.DataFrame] = []
    # the identity checks' rows as numpy arrays, one frame at the end (a frame per check cost
    # ~1 ms each: most of a delta build's checks; issue 12) — the same rows in the same order
    emitted: dict[str, list] = {k: [] for k in ("scope", "check_name", "column_key", "expected", "actual", "ok",
                                                "message")}
    labels: dict[str, dict[str, int]] = {"check_name": {}, "column_key": {}, "message": {}}

    # the wide frame's columns as numpy arrays (pandas Series arithmetic and frame column
    # selections cost ~0.1 CPU s a form on 2 scopes: issue 12); the same operations in the same
    # order (a sum across columns is numpy's sum of the (rows, columns) block, as pandas does)
    at = {k: i for i, k in enumerate(columns)}
    missing = np.full(len(grid), np.nan)

    def emit(name: str, key: str, expected: np.ndarray, actual: np.ndarray, ok: np.ndarray, msg: str) -> None:
        valid = ~np.isnan(expected) & ~np.isnan(actual)
        n = int(valid.sum())
        if n:
            # the wide rows' positions, and each text's number among its column's texts: the
            # columns are made once below (a column of n repeated Python strings, or a boolean
            # selection of Arrow text, is converted value by value: ~0.05 CPU s a cold city)
            emitted["scope"].append(np.flatnonzero(valid))
            for k, text in (("check_name", name), ("column_key", key), ("message", msg)):
                emitted[k].append(np.full(n, labels[k].setdefault(text, len(labels[k])), dtype="int64"))
            emitted["expected"].append(expected[valid])
            emitted["actual"].append(actual[valid])
            emitted["ok"].append(ok[valid])

    def col(key: str) -> np.ndarray:
        return grid[:, at[key]] if key in at else missing

    def full_sum(keys: list[str]) -> np.ndarray:
        """Σ of the columns per row, NaN where one of them is (sum(axis=1, min_count=len))."""
        block = grid[:, [at[k] for k in keys]]
        nan = np.isnan(block)
        return np.where(nan.any(axis=1), np.nan, np.where(nan, 0.0, block).sum(axis=1))

    with np.errstate(invalid="ignore"):  # comparisons with NaN are False, as in pandas
        measures = {k.split(".", 1)[1] for k in columns}
        for m in sorted(measures):
            parts = [f"{g}.{m}" for g in form["groups"] if f"{g}.{m}" in at]
            if f"tong_so.{m}" in at and parts:
                total = col(f"tong_so.{m}")
                psum = full_sum(parts)
                emit("total_equals_groups", f"tong_so.{m}", psum, total, np.abs(psum - total) < 1e-9,
                     "Tổng số = tổng các loại hình")
        for g in ["tong_so", *form["groups"]]:
            t, nu, dt_, dtnu = (col(f"{g}.{m}") for m in ("tong", "nu", "dtts", "dtts_nu"))
            emit("female_le_total", f"{g}.nu", t, nu, nu <= t, "Nữ ≤ Tổng số")
            emit("dtts_le_total", f"{g}.dtts", t, dt_, dt_ <= t, "DTTS ≤ Tổng số")
            low = np.minimum(dt_, nu)  # NaN when either is (min(axis=1, skipna=False))
            emit("dtts_female_le_min", f"{g}.dtts_nu", low, dtnu, dtnu <= low, "DTTS nữ ≤ min(DTTS, Nữ)")
            contract = [f"{g}.{m}" for m in ("vien_chuc_khong_xac_dinh", "vien_chuc_xac_dinh", "hop_dong_lao_dong")]
            if all(k in at for k in contract):
                csum = full_sum(contract)
                emit("contracts_le_total", f"{g}.tong", t, csum, csum <= t, "Viên chức + hợp đồng lao động ≤ Tổng số")
            rooms = [f"{g}.{m}" for m in ("kien_co", "ban_kien_co", "tam")]
            if all(k in at for k in rooms):
                rsum = full_sum(rooms)
                emit("rooms_total", f"{g}.tong", rsum, t, np.abs(rsum - t) < 1e-9, "Tổng số = kiên cố + bán kiên cố + tạm")
    if emitted["scope"]:
        rows = np.concatenate(emitted["scope"])
        texts = {k: _texts(np.array(list(labels[k]), dtype=object), np.concatenate(emitted[k])) for k in labels}
        # (appended to an empty slice: Index.append infers the dtype of what it joins, as the
        # pieces' append did)
        out.append(pd.DataFrame({"scope": wide_scope[:0].append(wide_scope.take(rows)),
                                 "row_code": wide_row[:0].append(wide_row.take(rows)),
                                 "check_name": texts["check_name"], "column_key": texts["column_key"],
                                 "expected": np.concatenate(emitted["expected"]),
                                 "actual": np.concatenate(emitted["actual"]), "ok": np.concatenate(emitted["ok"]),
                                 "message": texts["message"]}))
    # row identities: each cell with its parent row's / its parts' cells of the same scope and
    # column, found by integer keys (pandas merges and a group-by cost ~0.02-0.03 CPU s a form
    # even on 2 scopes: issue 12); the joins below are the fallback, the same rows
    long = values.loc[values["value"].notna(), ["scope", "row_code", "column_key", "value"]]
    within = pd.DataFrame([(row["code"], row["within"]) for _, row in data_rows(form) if "within" in row],
                          columns=["row_code", "parent"])
    groups = [(row["code"], gi, p, len(g), ", ".join(map(str, g)))
              for _, row in data_rows(form) for gi, g in enumerate(_part_groups(row)) for p in g]
    keyed = _CellKeys.of(long, [within["parent"].to_numpy(dtype="int64"),
                                np.array([g[0] for g in groups], dtype="int64")]) if len(within) or groups else None
    if len(within):
        w = _within_rows(long, within, keyed) if keyed is not None else None
        out.append(w if w is not None else _within_rows_merged(long, within))
    if groups:
        pg = pd.DataFrame(groups, columns=["row_code", "gi", "part", "n", "parts"])
        agg = _parts_rows(long, pg, keyed) if keyed is not None else None
        out.append(agg if agg is not None else _parts_rows_merged(long, pg))
    if not out:
        return pd.DataFrame(columns=cols)
    res = pd.concat(out, ignore_index=True)
    res["school_year"] = form.get("school_year")
    res["period"] = None
    res["form_code"] = form["form_code"]
    res["ok"] = res["ok"].astype(bool)
    order = _stable_order(res, ["scope", "row_code", "check_name", "column_key"])
    if order is None:
        return res.sort_values(["scope", "row_code", "check_name", "column_key"], kind="stable")[cols].reset_index(drop=True)
    return res[cols].take(order).reset_index(drop=True)


def _pivot_first(values: pd.DataFrame):
    """check_form's wide frame without pivot_table (~0.1 CPU s a cold city's forms: issue 12):
    (scope of each row, row_code of each row, column keys, the (rows, columns) float64 grid) —
    what `values.pivot_table(index=["scope", "row_code"], columns="column_key", values="value",
    aggfunc="first")` gives: its rows the (scope, row_code) pairs, its columns the keys, each
    with a value that is not NaN, both sorted; a cell the first such value of its key, NaN where
    none. None (pivot_table then decides) when no value is kept."""
    v = values["value"].to_numpy(dtype="float64", na_value=np.nan)
    sc, sc_u = pd.factorize(values["scope"], sort=True)
    rc, rc_u = pd.factorize(values["row_code"], sort=True)
    ck, ck_u = pd.factorize(values["column_key"], sort=True)
    keep = np.flatnonzero(~np.isnan(v) & (sc >= 0) & (rc >= 0) & (ck >= 0))  # groupby's dropna, "first"
    if not len(keep):
        return None
    pair = sc[keep].astype("int64") * len(rc_u) + rc[keep]
    pairs, pair_at = np.unique(pair, return_inverse=True)
    keys, key_at = np.unique(ck[keep], return_inverse=True)  # the keys with a value, in sorted order
    cell = pair_at.reshape(-1) * len(keys) + key_at.reshape(-1)
    _, first = np.unique(cell, return_index=True)  # each cell's first value
    grid = np.full(len(pairs) * len(keys), np.nan)
    grid[cell[first]] = v[keep][first]
    return (sc_u.take(pairs // len(rc_u)), rc_u.take(pairs % len(rc_u)), ck_u.take(keys).tolist(),
            grid.reshape(len(pairs), len(keys)))


def _stable_order(frame: pd.DataFrame, by: list[str]) -> np.ndarray | None:
    """The positions `frame.sort_values(by, kind="stable")` puts its rows in, from one int64 key
    of the columns' sorted codes (~0.06 CPU s a cold city's checks: issue 12); None (sort_values
    decides) when a column holds a NULL (sorted last there) or the key would not fit."""
    key = np.zeros(len(frame), dtype="int64")
    span = 1
    for col in by:
        codes, uniq = pd.factorize(frame[col], sort=True)
        if (codes < 0).any():
            return None
        span *= max(len(uniq), 1)
        if span >= 2 ** 62:
            return None
        key = key * max(len(uniq), 1) + codes
    return np.argsort(key, kind="stable")


class _CellKeys:
    """The long cells' (scope, row_code, column_key) as one int64 each, and a lookup of any
    (scope, row, column) in them — the keys of the merges check_form made. `None` (from `of`)
    when the cells hold a key twice (a merge would then give every pairing: the merges run)."""

    def __init__(self, scope: np.ndarray, key: np.ndarray, rows: np.ndarray, nrows: int, nkeys: int,
                 row_code: np.ndarray) -> None:
        self.scope, self.key, self.rows, self.nrows, self.nkeys = scope, key, rows, nrows, nkeys
        self.row_code = row_code
        self.code = (scope * nrows + np.searchsorted(rows, row_code)) * nkeys + key
        self.order = np.argsort(self.code, kind="stable")
        self.sorted = self.code[self.order]

    @classmethod
    def of(cls, long: pd.DataFrame, other_rows: list[np.ndarray]) -> "_CellKeys | None":
        if not pd.api.types.is_integer_dtype(long["row_code"].dtype):
            return None  # NULL or fractional row codes (never stored so): the merges decide
        scope, _ = pd.factorize(long["scope"])
        key, uniq = pd.factorize(long["column_key"])
        if (scope < 0).any() or (key < 0).any():
            return None  # a NULL scope or column key: the merges decide
        row_code = long["row_code"].to_numpy(dtype="int64")
        rows = np.unique(np.concatenate([row_code, *other_rows]))
        keys = cls(scope.astype("int64"), key.astype("int64"), rows, len(rows), max(len(uniq), 1), row_code)
        if len(keys.sorted) and (np.diff(keys.sorted) == 0).any():
            return None
        return keys

    def find(self, scope: np.ndarray, row_code: np.ndarray, key: np.ndarray) -> np.ndarray:
        """Index into the long cells of each (scope, row_code, key) asked, -1 where none."""
        code = (scope * self.nrows + np.searchsorted(self.rows, row_code)) * self.nkeys + key
        pos = np.searchsorted(self.sorted, code)
        hit = pos < len(self.sorted)
        hit[hit] = self.sorted[pos[hit]] == code[hit]
        return np.where(hit, self.order[np.minimum(pos, len(self.order) - 1)], -1)


def _within_rows(long: pd.DataFrame, within: pd.DataFrame, keys: _CellKeys) -> pd.DataFrame | None:
    """sub_row_le_parent: each cell of a row with a `within` parent, against the parent's cell
    of the same scope and column — the rows, order and dtypes of `_within_rows_merged` (the
    cells' order: an inner merge keeps its left side's). None when a row has two parents."""
    child = within["row_code"].to_numpy(dtype="int64")
    parent_of = within["parent"].to_numpy(dtype="int64")
    if len(np.unique(child)) != len(child):
        return None
    order = np.argsort(child, kind="stable")
    pos = np.searchsorted(child[order], keys.row_code)
    has = (pos < len(child)) & (child[order][np.minimum(pos, len(child) - 1)] == keys.row_code)
    mine = np.flatnonzero(has)
    parent = parent_of[order][pos[mine]]
    at = keys.find(keys.scope[mine], parent, keys.key[mine])
    ok = at >= 0
    mine, parent, at = mine[ok], parent[ok], at[ok]
    if not len(mine):
        return None  # no row: the merges' empty frame, whatever dtypes it has
    row_code = long["row_code"].iloc[mine].reset_index(drop=True).astype(np.result_type(
        long["row_code"].dtype, within["row_code"].dtype))
    value = long["value"].to_numpy()
    actual, expected = value[mine], value[at]
    return pd.DataFrame({"scope": long["scope"].iloc[mine].reset_index(drop=True), "row_code": row_code,
                         "check_name": "sub_row_le_parent",
                         "column_key": long["column_key"].iloc[mine].reset_index(drop=True),
                         "expected": expected, "actual": actual, "ok": actual <= expected + 1e-9,
                         "message": "Mã số " + row_code.astype(str) + " ≤ mã số " + pd.Series(parent).astype(str)})


def _within_rows_merged(long: pd.DataFrame, within: pd.DataFrame) -> pd.DataFrame:
    w = long.merge(within, on="row_code").merge(
        long.rename(columns={"row_code": "parent", "value": "expected"}), on=["scope", "parent", "column_key"])
    return pd.DataFrame({"scope": w["scope"], "row_code": w["row_code"], "check_name": "sub_row_le_parent",
                         "column_key": w["column_key"], "expected": w["expected"], "actual": w["value"],
                         "ok": w["value"] <= w["expected"] + 1e-9,
                         "message": "Mã số " + w["row_code"].astype(str) + " ≤ mã số " + w["parent"].astype(str)})


def _parts_rows(long: pd.DataFrame, pg: pd.DataFrame, keys: _CellKeys) -> pd.DataFrame | None:
    """rows_sum_to_total: per scope, column and split of a row into parts (`pg`: one row per
    part of each split), the parts' cells summed when every part has one, against the row's
    cell — the rows of `_parts_rows_merged`, each split's after the earlier splits' of the
    same cell (the merged rows' order as far as check_form's stable sort can tell). None when
    a sum could depend on its order (values not all whole, or too large: float64 is exact
    for whole numbers below 2**53 in any order; pandas' group sum is compensated)."""
    part = pg["part"].to_numpy(dtype="int64")
    # splits numbered in (row, split) order: ties of one cell come out in split order
    split_row, split_gi = pg["row_code"].to_numpy(dtype="int64"), pg["gi"].to_numpy(dtype="int64")
    split_n = pg["n"].to_numpy(dtype="int64")
    pairs = np.unique(np.stack([split_row, split_gi], axis=1), axis=0)
    split = np.searchsorted(pairs[:, 0] * (split_gi.max() + 1) + pairs[:, 1], split_row * (split_gi.max() + 1) + split_gi)
    first = {}
    for j, sp in enumerate(split):
        first.setdefault(int(sp), j)  # a split's n and text (the same on each of its part rows)
    # every (part row of pg) × (cell of that part): the merge's pairs
    by_row = np.argsort(keys.row_code, kind="stable")
    sorted_rows = keys.row_code[by_row]
    lo, hi = np.searchsorted(sorted_rows, part, "left"), np.searchsorted(sorted_rows, part, "right")
    count = hi - lo
    starts = np.repeat(lo - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
    cell = by_row[starts]
    sp = np.repeat(split, count)
    value = long["value"].to_numpy(dtype="float64")
    v = value[cell]
    if not _sums_exact(v):
        return None
    nsplit = len(pairs)
    group = (keys.scope[cell] * nsplit + sp) * keys.nkeys + keys.key[cell]
    uniq, inv = np.unique(group, return_inverse=True)
    expected = np.bincount(inv, weights=v, minlength=len(uniq))
    found = np.bincount(inv, minlength=len(uniq))
    g_scope, rest = np.divmod(uniq, nsplit * keys.nkeys)
    g_split, g_key = np.divmod(rest, keys.nkeys)
    rep = np.array([first[int(x)] for x in g_split], dtype="int64") if len(g_split) else np.zeros(0, "int64")
    full = found == split_n[rep]
    g_scope, g_split, g_key, expected, rep = g_scope[full], g_split[full], g_key[full], expected[full], rep[full]
    total_row = split_row[rep]
    at = keys.find(g_scope, total_row, g_key)
    ok = at >= 0
    at, expected, rep, total_row = at[ok], expected[ok], rep[ok], total_row[ok]
    if not len(at):
        return None  # no row: the merges' empty frame, whatever dtypes it has
    # the same (scope, row, column) in split order, as the group-by sorted them
    order = np.lexsort((pairs[g_split[ok], 1], at))
    at, expected, rep, total_row = at[order], expected[order], rep[order], total_row[order]
    actual = value[at]
    row_code = pd.Series(total_row, dtype=pg["row_code"].dtype)
    return pd.DataFrame({"scope": long["scope"].iloc[at].reset_index(drop=True), "row_code": row_code,
                         "check_name": "rows_sum_to_total",
                         "column_key": long["column_key"].iloc[at].reset_index(drop=True),
                         "expected": expected, "actual": actual, "ok": np.abs(expected - actual) < 1e-9,
                         "message": "Mã số " + row_code.astype(str) + " = tổng các mã số "
                         + pg["parts"].iloc[rep].reset_index(drop=True)})


def _parts_rows_merged(long: pd.DataFrame, pg: pd.DataFrame) -> pd.DataFrame:
    pp = long.rename(columns={"row_code": "part"}).merge(pg, on="part")
    agg = pp.groupby(["scope", "row_code", "gi", "column_key", "n", "parts"], as_index=False).agg(
        expected=("value", "sum"), found=("value", "size"))
    agg = agg[agg["found"] == agg["n"]].merge(long, on=["scope", "row_code", "column_key"])
    return pd.DataFrame({"scope": agg["scope"], "row_code": agg["row_code"], "check_name": "rows_sum_to_total",
                         "column_key": agg["column_key"], "expected": agg["expected"], "actual": agg["value"],
                         "ok": (agg["expected"] - agg["value"]).abs() < 1e-9,
                         "message": "Mã số " + agg["row_code"].astype(str) + " = tổng các mã số " + agg["parts"]})


RECONCILE = {  # what a form's `reconcile:` row counts, and the curated rows it must equal —
    # counted straight from core (not through the report views), so a row the views would
    # drop (a learner whose grade is of a level the school does not declare) shows up here
    "learners": "select school_code, count(*) from core_learners where school_year = $y and period = $p and level = $lv and is_enrolled group by 1",
    "staff": "select school_code, count(*) from core_staff where school_year = $y and period = $p and level = $lv and is_active group by 1",
    "classes": "select school_code, count(*) from core_classes where school_year = $y and period = $p and (level = $lv or ($lv = 'MN' and care_level is not null)) group by 1",
    "schools": "select school_code, 1 from core_school where school_year = $y and period = $p and list_contains(string_split(levels, ','), $lv)",
}


def reconcile_form(con: duckdb.DuckDBPyConnection, form: dict, cells: pd.DataFrame, school_year: str, period: str) -> pd.DataFrame:
    """Per school and city: rows in the accepted submissions = rows in core = the form's totals.
    Views must be those of this form (compute_form creates them)."""
    out = []
    # only the totals reconciled below are looked up: the rows with `reconcile:`, column tong_so.tong
    wanted = [row["code"] for _, row in data_rows(form) if row.get("reconcile")]
    sel = cells[(cells["column_key"] == "tong_so.tong") & cells["row_code"].isin(wanted)]
    val = {(s, c, k): v for s, c, k, v in zip(sel["scope"].tolist(), sel["row_code"].tolist(),
                                               sel["column_key"].tolist(), sel["value"].tolist())}
    scopes = cells["scope"].unique().tolist()
    # accepted submissions (the version core holds) = core rows, per school, all sheets
    sub = dict(con.execute("""select school_code, loaded_rows from submission
                              where school_year = ? and period = ? and in_core""", [school_year, period]).fetchall())
    core = {}
    for t in ("core_rooms", "core_classes", "core_learners", "core_staff"):
        for code, n in con.execute(f"select school_code, count(*) from {t} where school_year = ? and period = ? group by 1",
                                   [school_year, period]).fetchall():
            core[code] = core.get(code, 0) + n
    in_form = {r[0] for r in con.execute("select school_code from rpt_school").fetchall()}
    for code in sorted(in_form):
        out.append((school_year, period, form["form_code"], code, "submission_equals_core", None, None,
                    sub.get(code), core.get(code, 0), sub.get(code) == core.get(code, 0),
                    "Số dòng đã tiếp nhận = số dòng trong cơ sở dữ liệu"))
    for sheet, row in data_rows(form):
        what = row.get("reconcile")
        if not what:
            continue
        counts = dict(con.execute(RECONCILE[what], {"y": school_year, "p": period, "lv": form["level"]}).fetchall())
        for scope in scopes:
            expected = sum(counts.values()) if scope == "city" else counts.get(scope, 0)
            actual = val.get((scope, row["code"], "tong_so.tong"))
            out.append((school_year, period, form["form_code"], scope, f"core_equals_form_{what}", row["code"],
                        "tong_so.tong", expected, actual, actual is not None and abs(expected - actual) < 1e-9,
                        f"Số {what} trong cơ sở dữ liệu = mã số {row['code']} của biểu"))
    return pd.DataFrame(out, columns=CHECK_COLUMNS)


# ---------------------------------------------------------------------------------------
# Store and render
# ---------------------------------------------------------------------------------------

REPORT_DDL = """
create table if not exists rpt_form_cell (school_year varchar, period varchar, form_code varchar, scope varchar,
    row_code integer, column_key varchar, value double);
create table if not exists rpt_form_check (school_year varchar, period varchar, form_code varchar, scope varchar,
    check_name varchar, row_code integer, column_key varchar, expected double, actual double, ok boolean, message varchar);
"""


def store_cells(con: duckdb.DuckDBPyConnection, form_code: str, school_year: str, period: str,
                cells: pd.DataFrame, checks: pd.DataFrame, scopes: Iterable[str] | None = None) -> None:
    """Replace the form's cells and checks of this collection (only `scopes` when given)."""
    con.execute(REPORT_DDL)
    con.execute("begin transaction")
    try:
        cond, params = "school_year = ? and period = ? and form_code = ?", [school_year, period, form_code]
        if scopes is not None:
            scopes = list(scopes)
            cond += " and scope in (select unnest(?))"
            params.append(scopes)
        con.execute(f"delete from rpt_form_cell where {cond}", params)
        con.execute(f"delete from rpt_form_check where {cond}", params)
        con.register("_cells", _as_arrow(cells.astype({"row_code": "int64", "value": "float64"})))
        con.execute("insert into rpt_form_cell select * from _cells")
        con.unregister("_cells")
        if len(checks):
            c = checks.assign(school_year=school_year, period=period)[CHECK_COLUMNS]
            con.register("_checks", _as_arrow(c.astype({"expected": "float64", "actual": "float64"})))
            con.execute("insert into rpt_form_check select * from _checks")
            con.unregister("_checks")
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise


def _as_arrow(frame: pd.DataFrame):
    """The frame as an Arrow table for DuckDB to insert: what DuckDB's scan of the pandas frame
    reads (a NaN of a float column, a missing text: NULL), column by column without its scan of
    Python objects (~15 % of a cold city's stores: issue 12). The frame itself when a column is
    not of one Arrow type (DuckDB's own analysis then decides)."""
    import pyarrow as pa

    try:
        return pa.table({c: pa.Array.from_pandas(frame[c]) for c in frame.columns})
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
        return frame


@dataclass
class ReportHeader:
    unit: str  # Đơn vị báo cáo
    recipient: str  # Đơn vị nhận báo cáo
    school_year: str
    scope_label: str


def render_form(form: dict, cells: pd.DataFrame | None, checks: pd.DataFrame, scope: str, path: Path, header: ReportHeader,
                values: dict | None = None) -> Path:
    """Write the form for one scope as an .xlsx in the ministry's layout (values, not formulas),
    set up to print legibly on A4 (see `_page_setup`). `values`: the scope's cells as
    {(row_code, column_key): value} (`scope_values`), instead of `cells`."""
    import xlsxwriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    val = values if values is not None else scope_values(cells[cells["scope"] == scope]).get(scope, {})
    # in_memory: the parts are zipped from memory, not from one temporary file each (the same bytes)
    wb = xlsxwriter.Workbook(str(tmp), {"strings_to_numbers": False, "strings_to_formulas": False, "strings_to_urls": False,
                                        "in_memory": True})
    wb.set_properties({"title": f"{form['number']} {header.school_year} — {header.scope_label}", "author": "edustat"})
    f = _formats(wb)
    for sheet in form["sheets"]:
        ws = wb.add_worksheet(sheet["name"])
        if "static" in sheet:
            _render_static(ws, sheet, f, form, header)
            continue
        _render_sheet(ws, sheet, f, val, header, form)
    if len(checks) and not (checks["scope"] == scope).all():
        checks = checks[checks["scope"] == scope]
    _render_checks(wb, f, checks, form, header)
    wb.close()
    os.replace(tmp, path)
    return path


@lru_cache(maxsize=1 << 16)
def _wrapped_lines(text: str, width_points: float, font_pt: float, bold: bool = False) -> int:
    """layout.wrapped_lines, remembered: every school's workbook of a form wraps the same
    labels in the same columns (a pure function of its arguments)."""
    from edustat.layout import wrapped_lines

    return wrapped_lines(text, width_points, font_pt, bold)


def scope_values(cells: pd.DataFrame) -> dict[str, dict[tuple[int, object], object]]:
    """{scope: {(row_code, column_key): value}} of long cells, in one pass (row codes as int,
    values as float or None, as render_form writes them). Each scope's cells in one block (as
    every build stores them): each scope's dict made by one dict(zip(...)) of its slice (the
    loop below cost ~0.1 CPU s a cold city: issue 12); the same dicts, keys and order."""
    out: dict[str, dict] = {}
    at, uniq = pd.factorize(cells["scope"])
    # first-appearance codes that never decrease: one block a scope (a NULL scope, coded -1: the loop)
    if len(at) and (at >= 0).all() and (np.diff(at) >= 0).all():
        codes, keys, values = cells["row_code"].tolist(), cells["column_key"].tolist(), cells["value"].tolist()
        bounds = np.flatnonzero(np.diff(at)) + 1
        for scope, a, b in zip(uniq.tolist(), [0, *bounds.tolist()], [*bounds.tolist(), len(at)]):
            out[scope] = dict(zip(zip(codes[a:b], keys[a:b]), values[a:b]))
        return out
    for scope, code, key, value in zip(cells["scope"].tolist(), cells["row_code"].tolist(),
                                       cells["column_key"].tolist(), cells["value"].tolist()):
        d = out.get(scope)
        if d is None:
            d = out[scope] = {}
        d[(code, key)] = value
    return out


def _col_index(letter: str) -> int:
    n = 0
    for ch in letter:
        n = n * 26 + (ord(ch.upper()) - 64)
    return n - 1


FONT_PT = 12  # the ministry's forms: Times New Roman 12
DEFAULT_WIDTH = 12.58  # the ministry exports' default column width (value columns)
MIN_SCALE = 0.74  # printed text ≥ 8.9 pt (12 pt × 0.74): below this a sheet is split, not shrunk
SPLIT_SCALES = (1.0, 0.95, 0.9, 0.85, 0.8, 0.74)
REPEAT_COLS = 4  # TT, Chỉ tiêu, Đơn vị tính, Mã số: printed on every page of a split sheet


def _formats(wb) -> dict:
    base = {"font_name": "Times New Roman", "font_size": FONT_PT}
    cell = {**base, "border": 1, "valign": "vcenter"}
    return {
        "title": wb.add_format({**base, "bold": True, "align": "center", "valign": "vcenter"}),
        "title_sub": wb.add_format({**base, "align": "center", "valign": "vcenter"}),
        "scope": wb.add_format({**base, "italic": True, "align": "center", "valign": "vcenter"}),
        "text": wb.add_format({**base, "valign": "vcenter"}),
        "italic": wb.add_format({**base, "italic": True, "text_wrap": True, "valign": "top"}),
        "head": wb.add_format({**cell, "bold": True, "align": "center", "text_wrap": True, "bg_color": "#F2F2F2"}),
        "head_sub": wb.add_format({**cell, "align": "center", "text_wrap": True, "bg_color": "#F2F2F2"}),
        "num_head": wb.add_format({**base, "italic": True, "border": 1, "align": "center"}),
        "label": wb.add_format({**cell, "text_wrap": True}),
        "label_b": wb.add_format({**cell, "text_wrap": True, "bold": True}),
        "center": wb.add_format({**cell, "align": "center", "text_wrap": True}),
        "center_b": wb.add_format({**cell, "align": "center", "bold": True, "text_wrap": True}),
        "value": wb.add_format({**cell, "num_format": "#,##0", "align": "center"}),
        "value_b": wb.add_format({**cell, "num_format": "#,##0", "bold": True, "align": "center"}),
        "na": wb.add_format({**cell, "align": "center"}),
        # KiemTra
        "k_head": wb.add_format({**cell, "bold": True, "align": "center", "text_wrap": True, "bg_color": "#F2F2F2"}),
        "k_text": wb.add_format({**cell, "text_wrap": True}),
        "k_num": wb.add_format({**cell, "align": "center", "num_format": "#,##0"}),
        "k_ok": wb.add_format({**cell, "align": "center", "bg_color": "#C6EFCE"}),
        "k_bad": wb.add_format({**cell, "align": "center", "bg_color": "#FFC7CE", "bold": True, "num_format": "#,##0"}),
        "k_id": wb.add_format({**base, "font_size": 9, "font_color": "#808080"}),
        "k_para": wb.add_format({**base, "text_wrap": True, "valign": "top"}),
        "k_title": wb.add_format({**base, "bold": True, "font_size": 13, "align": "center", "valign": "vcenter", "text_wrap": True}),
    }


_BLOCK_FILL = {"Sở GDĐT tỉnh………..": "unit", "Bộ Giáo dục và Đào tạo": "recipient"}


def _widths(sheet: dict, ncols: int) -> list[float]:
    """Column widths (character units): the ministry's where the definition records them,
    its default (12.58) elsewhere."""
    given = {_col_index(k): float(v) for k, v in (sheet.get("widths") or {}).items()}
    return [max(3.0, given.get(i, DEFAULT_WIDTH)) for i in range(ncols)]


SPLIT_LABEL_WIDTH = 36.0  # the Chỉ tiêu column of a sheet printed across pages (repeated on each)


def _print_widths(widths: list[float]) -> list[float]:
    """The ministry's widths, except that a sheet too wide for one A4 page gets a narrower
    label column (its labels wrap): that column is printed again on every page of the split."""
    from edustat.layout import column_points, printable_width

    if printable_width("A4", True) / sum(column_points(w) for w in widths) >= MIN_SCALE:
        return widths
    return [widths[0], min(widths[1], SPLIT_LABEL_WIDTH), *widths[2:]]


def _page_setup(ws, widths: list[float], repeat_rows: tuple[int, int] | None, breaks_at: list[set[int]],
                footer: str, heights: tuple[float, float] = (0.0, 0.0), paper: str = "A4") -> dict:
    """Print on `paper`: portrait when the sheet fits its width at ≥ 90 %, landscape fitted to
    the width when that keeps text ≥ MIN_SCALE; otherwise split across pages at a fixed scale,
    the label columns and header rows repeated on each, breaking at column groups
    (`breaks_at`: sets of column indexes where a page may start, most preferred first).
    `heights`: the repeated rows' and all rows' heights (points) — LibreOffice reads "fit to
    1 page wide, any number tall" as "fit on one page", so the number of pages tall is given
    (generously: the width decides the scale). Returns what was chosen (for tests and the report)."""
    from edustat.layout import MARGIN_IN, PAPER, column_points, printable_height, printable_width

    total = sum(column_points(w) for w in widths)
    ws.set_paper(PAPER[paper][2])
    ws.set_margins(**MARGIN_IN)
    ws.set_footer(f"&L&\"Times New Roman\"&12{footer}&R&\"Times New Roman\"&12Trang &P/&N",
                  {"scale_with_doc": False})
    if repeat_rows:
        ws.repeat_rows(*repeat_rows)
    portrait = printable_width(paper, False)
    landscape = printable_width(paper, True)
    def tall(landscape_: bool) -> int:
        room = printable_height(paper, landscape_) - heights[0]
        return max(1, int(heights[1] // max(room, 100.0)) + 2)

    if portrait / total >= 0.85:
        ws.set_portrait()
        ws.fit_to_pages(1, tall(False))
        return {"orientation": "portrait", "scale": min(1.0, portrait / total), "pages_wide": 1}
    ws.set_landscape()
    if landscape / total >= MIN_SCALE:
        ws.fit_to_pages(1, tall(True))
        return {"orientation": "landscape", "scale": min(1.0, landscape / total), "pages_wide": 1}
    fixed = sum(column_points(w) for w in widths[:REPEAT_COLS])
    best = None
    room_h = printable_height(paper, True)
    for scale in SPLIT_SCALES:  # the fewest pages (wide × tall), then the largest text
        chunks = _split_columns([column_points(w) for w in widths], REPEAT_COLS, landscape * 0.97 / scale - fixed,
                                breaks_at)
        if not chunks:
            continue
        body_room = room_h * 0.97 / scale - heights[0]
        pages = len(chunks) * max(1, -(-int(heights[1] - heights[0]) // max(int(body_room), 50)))
        # a page break inside a column group cuts its merged header: only to save pages
        inside = sum(1 for c in chunks[1:] if c[0] not in breaks_at[0])
        if best is None or (pages, inside) < best[0]:
            best = ((pages, inside), scale, chunks)
    _, scale, chunks = best
    ws.set_print_scale(int(round(scale * 100)))
    ws.repeat_columns(0, REPEAT_COLS - 1)
    ws.set_v_pagebreaks([c[0] for c in chunks[1:]])
    return {"orientation": "landscape", "scale": scale, "pages_wide": len(chunks)}


def _split_columns(points: list[float], first: int, room: float, breaks_at: list[set[int]]) -> list[tuple[int, int]] | None:
    """Columns first… into page chunks of at most `room` points each, each chunk starting at
    the most preferred break it can (a column group before a sub-group before any column)."""
    chunks, start, n = [], first, len(points)
    while start < n:
        used, end = 0.0, start
        while end < n and used + points[end] <= room:
            used += points[end]
            end += 1
        if end == start:
            return None  # one column wider than the page
        if end < n:
            for level in breaks_at:
                cands = [c for c in level if start < c <= end]
                if cands:
                    end = max(cands)
                    break
        chunks.append((start, end))
        start = end
    return chunks


def _header_breaks(sheet: dict, ncols: int) -> list[set[int]]:
    """Where a split page may start: at a top-level column group of the header (Tổng số, Công
    lập, Tư thục…), else at a second-level one, else anywhere."""
    from xlsxwriter.utility import xl_cell_to_rowcol

    levels: list[set[int]] = []
    rows = sheet["header"]["rows"]
    offset = _first_header_row(sheet)
    for level in range(min(2, len(rows))):
        starts = set()
        for c in range(REPEAT_COLS, ncols):
            v = rows[level][c] if c < len(rows[level]) else None
            if v not in (None, ""):
                starts.add(c)
        for m in sheet["header"]["merges"]:
            r1, c1 = xl_cell_to_rowcol(m.split(":")[0])
            if r1 - offset == level and c1 >= REPEAT_COLS:
                starts.add(c1)
        levels.append(starts)
    levels.append(set(range(REPEAT_COLS, ncols)))
    return levels


def _render_static(ws, sheet: dict, f: dict, form: dict, header: ReportHeader) -> None:
    from edustat.layout import rows_height, wrap_points

    rows = sheet["static"]["rows"]
    ncols = max(len(r) for r in rows)
    widths = _widths(sheet, ncols)
    for i, w in enumerate(widths):
        ws.set_column(i, i, w)
    merged = _merge_map(sheet["static"]["merges"], 0)
    need: dict[int, float] = {}
    for r, values in enumerate(rows):
        for c, v in enumerate(values):
            if (r, c) in merged["skip"]:
                continue
            fmt = (f["head"] if r == 0 else f["head_sub"]) if r < 3 else f["label"]
            if (r, c) in merged["ranges"]:
                r2, c2 = merged["ranges"][(r, c)]
                ws.merge_range(r, c, r2, c2, v if v is not None else "", fmt)
            else:
                r2, c2 = r, c
                if v is not None:
                    ws.write_string(r, c, str(v), fmt)
                elif r >= 3:
                    ws.write_blank(r, c, None, fmt)
            if v is not None:
                width = sum(wrap_points(widths[i]) for i in range(c, c2 + 1))
                h = rows_height(_wrapped_lines(str(v), width, FONT_PT, r < 3), FONT_PT) / (r2 - r + 1)
                need[r] = max(need.get(r, 0), h)
    for r in range(len(rows)):
        ws.set_row(r, max(15.75, need.get(r, 15.75)))
    total_h = sum(max(15.75, need.get(r, 15.75)) for r in range(len(rows)))
    note_row = len(rows) + 1
    note = form.get("static_note", "Số liệu ngân sách do Phòng GD&ĐT / Sở GD&ĐT nhập từ quyết toán, "
                                   "dự toán; các trường không nộp các chỉ tiêu này nên edustat để trống.")
    ws.merge_range(note_row, 0, note_row, ncols - 1, note, f["italic"])
    ws.set_row(note_row, rows_height(_wrapped_lines(note, sum(wrap_points(w) for w in widths), FONT_PT), FONT_PT))
    _page_setup(ws, widths, (0, 2), [set(range(REPEAT_COLS, ncols))], f"{form['number']} — {header.scope_label}",
                (sum(max(15.75, need.get(r, 15.75)) for r in range(3)), total_h + 60))


def _merge_map(merges: list[str], offset: int) -> dict:
    from xlsxwriter.utility import xl_cell_to_rowcol

    ranges, skip = {}, set()
    for m in merges:
        a, b = m.split(":")
        r1, c1 = xl_cell_to_rowcol(a)
        r2, c2 = xl_cell_to_rowcol(b)
        ranges[(r1 + offset, c1)] = (r2 + offset, c2)
        for r in range(r1, r2 + 1):
            for c in range(c1, c2 + 1):
                if (r, c) != (r1, c1):
                    skip.add((r + offset, c))
    return {"ranges": ranges, "skip": skip}


def _render_sheet(ws, sheet: dict, f: dict, val: dict, header: ReportHeader, form: dict) -> dict:
    """One sheet of a form in the ministry's layout: its title block (with the scope written
    in the block's own blank row, so the table starts on the ministry's row), header rows
    sized to their text, the numbering row, then every row. Returns the page set-up."""
    from edustat.layout import line_height, rows_height, wrap_points

    ncols = len(sheet["numbering"])
    widths = _print_widths(_widths(sheet, ncols))
    pts = [wrap_points(w) for w in widths]
    for i, w in enumerate(widths):
        ws.set_column(i, i, w)
    row_i = 0
    one_line = max(15.75, line_height(FONT_PT))
    if "title_block" in sheet:
        block = sheet["title_block"]
        merged = _merge_map(block["merges"], 0)
        blank = [r for r, values in enumerate(block["rows"]) if not any(v not in (None, "") for v in values)]
        for r, values in enumerate(block["rows"]):
            ws.set_row(r, one_line)
            for c, v in enumerate(values):
                if v is None or (r, c) in merged["skip"]:
                    continue
                text = str(v)
                if text in _BLOCK_FILL:
                    text = getattr(header, _BLOCK_FILL[text])
                fmt = (f["title"] if r == 0 else f["title_sub"]) if c <= 2 else f["text"]
                if (r, c) in merged["ranges"]:
                    r2, c2 = merged["ranges"][(r, c)]
                    ws.merge_range(r, c, r2, c2, text, fmt)
                else:
                    ws.write_string(r, c, text, fmt)
        scope = f"Năm học {header.school_year} — {header.scope_label}"
        if blank:  # the block's first blank row (the ministry leaves two before the table)
            ws.merge_range(blank[0], 1, blank[0], 2, scope, f["scope"])
            row_i = len(block["rows"])
        else:
            ws.merge_range(len(block["rows"]), 1, len(block["rows"]), 2, scope, f["scope"])
            row_i = len(block["rows"]) + 1
    head_top = row_i
    nhead = len(sheet["header"]["rows"])
    merged = _merge_map(sheet["header"]["merges"], head_top - _first_header_row(sheet))
    need_single: dict[int, float] = {}
    need_span: list[tuple[int, int, float]] = []
    for r, values in enumerate(sheet["header"]["rows"]):
        rr = head_top + r
        fmt = f["head"] if r == 0 else f["head_sub"]
        for c in range(ncols):
            v = values[c] if c < len(values) else None
            if (rr, c) in merged["skip"]:
                continue
            text = "" if v is None else str(v)
            r2, c2 = merged["ranges"].get((rr, c), (rr, c))
            if (r2, c2) != (rr, c):
                ws.merge_range(rr, c, r2, c2, text, fmt)
            else:
                ws.write(rr, c, text, fmt)
            if text:
                h = rows_height(_wrapped_lines(text, sum(pts[c:c2 + 1]), FONT_PT, r == 0), FONT_PT)
                if r2 == rr:
                    need_single[rr] = max(need_single.get(rr, one_line), h)
                else:
                    need_span.append((rr, r2, h))
    heights = {rr: need_single.get(rr, one_line) for rr in range(head_top, head_top + nhead)}
    for r1, r2, h in need_span:  # a cell over several rows: the deficit goes to its last row
        have = sum(heights[r] for r in range(r1, r2 + 1))
        if have < h:
            heights[r2] += h - have
    for rr, h in heights.items():
        ws.set_row(rr, round(h, 2))
    row_i = head_top + nhead
    for c, v in enumerate(sheet["numbering"]):
        ws.write(row_i, c, "" if v is None else (int(v) if str(v).isdigit() else str(v)), f["num_head"])
    repeat = (head_top, row_i)
    body_h = 0.0
    ws.freeze_panes(row_i + 1, REPEAT_COLS)
    row_i += 1
    for row in sheet["rows"]:
        bold = bool(row.get("tt")) and "code" in row and not str(row.get("label", "")).startswith(("-", "+"))
        if "note_cells" in row:
            body_h += _render_note(ws, row_i, row["note_cells"], ncols, pts, f)
            row_i += 1
            continue
        label_bold = bool((bold or "code" not in row) and row.get("tt"))
        label = row.get("label", "") or ""
        lines = max(_wrapped_lines(label, pts[1], FONT_PT, label_bold),
                    _wrapped_lines(str(row.get("tt") or ""), pts[0], FONT_PT, True),
                    _wrapped_lines(str(row.get("unit") or ""), pts[2], FONT_PT))
        h = max(one_line, rows_height(lines, FONT_PT)) if lines > 1 else one_line
        ws.set_row(row_i, h)
        body_h += h
        ws.write(row_i, 0, row.get("tt") or "", f["center_b"] if row.get("tt") else f["center"])
        ws.write(row_i, 1, label, f["label_b"] if label_bold else f["label"])
        ws.write(row_i, 2, row.get("unit") or "", f["center"])
        if "code" in row:
            ws.write_number(row_i, 3, row["code"], f["center"])
            na = set(row.get("na", []))
            for c, key in enumerate(sheet["columns"], start=4):
                if key in na:
                    ws.write_string(row_i, c, "#", f["na"])
                else:
                    v = val.get((row["code"], key))
                    ws.write_number(row_i, c, 0 if v is None else v, f["value_b"] if bold else f["value"])
        else:
            ws.write(row_i, 3, "", f["center"])
            for c in range(4, ncols):
                ws.write_blank(row_i, c, None, f["value"])
        row_i += 1
    head_h = sum(heights.values()) + one_line
    return _page_setup(ws, widths, repeat, _header_breaks(sheet, ncols),
                       f"{form['number']} — {header.scope_label} — năm học {header.school_year}",
                       (head_h, head_h + body_h))


def _render_note(ws, r: int, cells: list, ncols: int, pts: list[float], f: dict) -> float:
    """A footnote row (the ministry's "Ghi chú: …"): each text merged up to the next text, the
    last to the table's right edge, wrapped, the row as tall as its longest piece."""
    from edustat.layout import line_height, rows_height

    starts = [c for c, v in enumerate(cells[:ncols]) if v not in (None, "")]
    lines = 1
    for i, c in enumerate(starts):
        end = (starts[i + 1] - 1) if i + 1 < len(starts) else ncols - 1
        text = str(cells[c])
        if end > c:
            ws.merge_range(r, c, r, end, text, f["italic"])
        else:
            ws.write_string(r, c, text, f["italic"])
        lines = max(lines, _wrapped_lines(text, sum(pts[c:end + 1]), FONT_PT))
    h = max(15.75, rows_height(lines, FONT_PT) if lines > 1 else line_height(FONT_PT))
    ws.set_row(r, h)
    return h


def _first_header_row(sheet: dict) -> int:
    """The Excel row index (0-based) the header had in the ministry's file, so its merge
    ranges (recorded in that file's coordinates) can be shifted to ours."""
    return len(sheet["title_block"]["rows"]) if "title_block" in sheet else 0


# What each check means, said as a sentence (KiemTra): check_name → text
CHECK_TEXT = {
    "rows_sum_to_total": "Dòng tổng = tổng các dòng chia ra của nó",
    "sub_row_le_parent": "Dòng \"trong đó\" không lớn hơn dòng chứa nó",
    "total_equals_groups": "Cột Tổng số = tổng các loại hình (công lập + tư thục{dl})",
    "female_le_total": "Số nữ không lớn hơn tổng số",
    "dtts_le_total": "Số người dân tộc thiểu số không lớn hơn tổng số",
    "dtts_female_le_min": "Số nữ dân tộc thiểu số không lớn hơn số dân tộc thiểu số, cũng không lớn hơn số nữ",
    "contracts_le_total": "Viên chức (HĐLV không xác định và xác định thời hạn) + hợp đồng lao động không lớn hơn tổng số",
    "rooms_total": "Tổng số phòng = kiên cố + bán kiên cố + tạm",
    "core_equals_form_schools": "Số trường trong cơ sở dữ liệu = dòng tổng số trường của biểu",
    "core_equals_form_classes": "Số lớp (nhóm) trong cơ sở dữ liệu = dòng tổng số lớp của biểu",
    "core_equals_form_learners": "Số học sinh (trẻ em) trong cơ sở dữ liệu = dòng tổng số học sinh của biểu",
    "core_equals_form_staff": "Số cán bộ, giáo viên, nhân viên trong cơ sở dữ liệu = dòng tổng số của biểu",
    "submission_equals_core": "Số dòng tiếp nhận từ tệp của trường = số dòng đã nạp vào cơ sở dữ liệu",
}
GROUP_TEXT = {"tong_so": "Tổng số", "cong_lap": "Công lập", "tu_thuc": "Tư thục", "dan_lap": "Dân lập"}
MEASURE_TEXT = {"tong": "tổng số", "nu": "nữ", "dtts": "dân tộc thiểu số", "dtts_nu": "nữ dân tộc thiểu số",
                "vien_chuc_khong_xac_dinh": "viên chức HĐLV không xác định thời hạn",
                "vien_chuc_xac_dinh": "viên chức HĐLV xác định thời hạn", "hop_dong_lao_dong": "hợp đồng lao động",
                "kien_co": "kiên cố", "ban_kien_co": "bán kiên cố", "tam": "tạm"}


def check_text(name: str, form: dict) -> str:
    """The Vietnamese sentence of a check (an unknown check keeps a generic sentence: its id
    is only in the hidden developer column)."""
    text = CHECK_TEXT.get(name, "Phép kiểm tra nội bộ của biểu")
    return text.replace("{dl}", " + dân lập" if "dan_lap" in form.get("groups", []) else "")


def column_text(key: object) -> str:
    """`cong_lap.nu` → "Công lập – nữ" (what a person reads instead of the column key)."""
    if not isinstance(key, str) or "." not in key:
        return ""
    g, m = key.split(".", 1)
    return GROUP_TEXT.get(g, g) if m == "tong" else f"{GROUP_TEXT.get(g, g)} – {MEASURE_TEXT.get(m, m)}"


def _short_check_text(rec, form: dict) -> str:
    """One failure, in a line: the row identity in words, or the check's short sentence."""
    msg = rec.message if isinstance(rec.message, str) else ""
    if rec.check_name in ("sub_row_le_parent", "rows_sum_to_total") and msg.startswith("Mã số"):
        return msg.replace("≤", "không quá")
    if rec.check_name.startswith("core_equals_form_") and rec.row_code is not None and not pd.isna(rec.row_code):
        what = {"learners": "học sinh", "staff": "cán bộ", "classes": "lớp", "schools": "trường"}.get(
            rec.check_name.rsplit("_", 1)[1], "dòng")
        return f"Số {what} trong cơ sở dữ liệu = mã số {int(rec.row_code)}"
    return SHORT_CHECK_TEXT.get(rec.check_name, check_text(rec.check_name, form))


SHORT_CHECK_TEXT = {
    "total_equals_groups": "Tổng số = tổng các loại hình",
    "female_le_total": "Nữ không quá tổng số",
    "dtts_le_total": "Dân tộc thiểu số không quá tổng số",
    "dtts_female_le_min": "Nữ dân tộc thiểu số không quá số nữ, số dân tộc thiểu số",
    "contracts_le_total": "Viên chức + hợp đồng không quá tổng số",
    "rooms_total": "Tổng số phòng = kiên cố + bán kiên cố + tạm",
    "submission_equals_core": "Số dòng tiếp nhận = số dòng đã nạp",
}
def _vn_int(n: int) -> str:
    return f"{n:,}".replace(",", ".")


KIEMTRA_WIDTHS = [40.0, 8.0, 22.0, 8.0, 8.0]  # A4 portrait at ≥ 10 pt even where columns print 1/3 wider


def _render_checks(wb, f: dict, checks: pd.DataFrame, form: dict, header: ReportHeader) -> None:
    """The KiemTra sheet, in Vietnamese: what was checked (one sentence per kind of check, how
    many times, how many failed), then every failure on one line each (~45 to a printed
    page). The check ids stay in a last, grey column outside the print area, for developers."""
    from edustat.layout import MARGIN_IN, PAPER, rows_height, wrap_points

    ws = wb.add_worksheet("KiemTra")
    cols = KIEMTRA_WIDTHS
    for i, w in enumerate(cols):
        ws.set_column(i, i, w)
    ws.set_column(5, 5, 16, f["k_id"])
    pts = [wrap_points(w) for w in cols]
    table_w = sum(pts)
    n = len(checks)
    ok = checks["ok"].astype(bool) if n else None
    # (no failure, as in nearly every workbook: no boolean take of every column of the checks)
    bad = checks if not n else checks.iloc[0:0] if ok.all() else checks[~ok]
    title = f"KIỂM TRA SỐ LIỆU {form['number'].upper()}"
    ws.merge_range(0, 0, 0, 4, title, f["k_title"])
    ws.set_row(0, rows_height(_wrapped_lines(title, table_w, 13, True), 13))
    if not n:
        summary = "Chưa có phép kiểm tra nào (biểu không có số liệu)."
    elif len(bad):
        summary = f"{_vn_int(n)} phép kiểm tra, {_vn_int(len(bad))} không đạt: xem danh sách bên dưới."
    else:
        summary = f"{_vn_int(n)} phép kiểm tra, tất cả đều đạt: số liệu của biểu nhất quán."
    src = form["source"]
    origin = ("Bố cục, tên dòng và mã số theo biểu mẫu xuất từ phần mềm của Bộ GDĐT (Thông tư 24/2018)."
              if src["kind"] == "real_export" else
              f"Báo cáo theo yêu cầu, định nghĩa trong tệp {Path(src['file']).name} (không thuộc Thông tư 24/2018)."
              if src["kind"] == "adhoc" else
              "Biểu dựng lại: chưa có bản gốc của Bộ GDĐT cho biểu này; bố cục cột theo biểu đầu năm cùng cấp học.")
    r = 1
    for text in (f"{header.scope_label} — năm học {header.school_year}", summary, origin):
        ws.merge_range(r, 0, r, 4, text, f["k_para"])
        ws.set_row(r, rows_height(_wrapped_lines(text, table_w, FONT_PT), FONT_PT))
        r += 1
    r += 1
    head_row = r
    ws.write_string(r, 0, "Nội dung kiểm tra", f["k_head"])
    ws.merge_range(r, 1, r, 2, "Số lần kiểm tra", f["k_head"])
    ws.merge_range(r, 3, r, 4, "Không đạt", f["k_head"])
    ws.write_string(r, 5, "mã kiểm tra", f["k_id"])
    ws.set_row(r, rows_height(_wrapped_lines("Không đạt", pts[3] + pts[4], FONT_PT, True), FONT_PT))
    r += 1
    if n:
        from collections import Counter

        names = checks["check_name"].tolist()
        total = Counter(names)
        failed = Counter(nm for nm, good in zip(names, ok.tolist()) if not good)
        order = {name: i for i, name in enumerate(CHECK_TEXT)}  # the form's own identities first
        for name in sorted(total, key=lambda v: (order.get(v, len(order)), v)):
            t, fl = total[name], failed[name]
            text = check_text(name, form)
            ws.write_string(r, 0, text, f["k_text"])
            ws.merge_range(r, 1, r, 2, int(t), f["k_num"])
            ws.merge_range(r, 3, r, 4, int(fl), f["k_bad"] if fl else f["k_ok"])
            ws.write_string(r, 5, name, f["k_id"])
            ws.set_row(r, rows_height(_wrapped_lines(text, pts[0], FONT_PT), FONT_PT))
            r += 1
    repeat = (head_row, head_row)
    if len(bad):
        r += 1
        ws.merge_range(r, 0, r, 4, "CÁC PHÉP KIỂM TRA KHÔNG ĐẠT", f["title"])
        r += 1
        repeat = (r, r)
        for c, h in enumerate(["Nội dung", "Mã số", "Cột", "Phải là", "Trên biểu"]):
            ws.write_string(r, c, h, f["k_head"])
        ws.write_string(r, 5, "mã kiểm tra", f["k_id"])
        ws.set_row(r, rows_height(_wrapped_lines("Trên biểu", pts[4], FONT_PT, True), FONT_PT))
        for rec in bad.head(2000).astype(object).itertuples(index=False):
            r += 1
            text = _short_check_text(rec, form)
            col = column_text(rec.column_key)
            ws.write_string(r, 0, text, f["k_text"])
            ws.write(r, 1, "" if rec.row_code is None or pd.isna(rec.row_code) else int(rec.row_code), f["k_num"])
            ws.write_string(r, 2, col, f["k_text"])
            ws.write(r, 3, "" if rec.expected is None or pd.isna(rec.expected) else rec.expected, f["k_num"])
            ws.write(r, 4, "" if rec.actual is None or pd.isna(rec.actual) else rec.actual, f["k_bad"])
            ws.write_string(r, 5, rec.check_name, f["k_id"])
            lines = max(_wrapped_lines(text, pts[0], FONT_PT), _wrapped_lines(col, pts[2], FONT_PT))
            ws.set_row(r, rows_height(lines, FONT_PT))
        if len(bad) > 2000:
            r += 2
            more = f"… và {_vn_int(len(bad) - 2000)} phép kiểm tra không đạt khác (xem bảng rpt_form_check)."
            ws.merge_range(r, 0, r, 4, more, f["k_para"])
    ws.repeat_rows(*repeat)
    ws.set_portrait()
    ws.set_paper(PAPER["A4"][2])
    ws.set_margins(**MARGIN_IN)
    ws.print_area(0, 0, max(r, head_row), 4)  # the id column is for developers: not printed
    ws.fit_to_pages(1, max(1, r // 30 + 2))  # LibreOffice reads "0 pages tall" as one page
    ws.set_footer(f"&L&\"Times New Roman\"&12{form['number']} — {header.scope_label}&R&\"Times New Roman\"&12Trang &P/&N",
                  {"scale_with_doc": False})


# ---------------------------------------------------------------------------------------
# The whole step
# ---------------------------------------------------------------------------------------

@dataclass
class ReportResult:
    files: list[Path] = field(default_factory=list)
    cells: int = 0
    checks: int = 0
    failed_checks: int = 0
    forms: list[str] = field(default_factory=list)


def _names(con, school_year: str, period: str) -> tuple[dict[str, str], str, str]:
    from schemas import load_codelist

    rows = con.execute("select school_code, school_name, district_code, province_code from core_school "
                       "where school_year = ? and period = ?", [school_year, period]).fetchall()
    names = {r[0]: r[1] or r[0] for r in rows}
    district = pd.Series([r[2] for r in rows]).mode()
    province = pd.Series([r[3] for r in rows]).mode()
    huyen, tinh = load_codelist("moet-2020/DM_HUYEN"), load_codelist("moet-2020/DM_TINH")
    d = huyen.label(district.iloc[0]) if len(district) and district.iloc[0] in huyen.codes else ""
    p = tinh.label(province.iloc[0]) if len(province) and province.iloc[0] in tinh.codes else ""
    return names, d, p


def compute_and_check(con: duckdb.DuckDBPyConnection, form: dict, school_year: str, period: str,
                      scopes: Iterable[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every cell of a form and every check of it (identities + reconciliation); with `scopes`
    the cells and checks of those scopes only (the city still sums every school; checks are
    per scope, so a scope's checks are the same either way)."""
    cells = compute_form(con, form, school_year, period)
    if scopes is not None:
        cells = cells[cells["scope"].isin(list(scopes))]
    if cells.empty:
        return cells, pd.DataFrame(columns=CHECK_COLUMNS)
    checks = check_form({**form, "school_year": school_year}, cells)
    checks["period"] = period
    return cells, pd.concat([checks, reconcile_form(con, form, cells, school_year, period)], ignore_index=True)


def build_reports(con: duckdb.DuckDBPyConnection, reports_dir: Path, school_year: str, period: str,
                  school: str | None = None, forms: Iterable[str] | None = None, workers: int = 2,
                  schools: Iterable[str] | None = None, delta: bool = False,
                  reuse: Iterable[str] | None = None) -> ReportResult:
    """Compute, check, store and render every form of the period, for the city and per school
    (or only for `school`: its own forms and the city forms, which include it; or only for
    `schools`, the city included: an incremental run's changed schools). `delta` (with
    `schools`): the city's cells summed from the stored cells of the other schools when that is
    proven exact (edustat.formdelta; `result.delta` says, per form, None or why not). `reuse`
    (with `delta`): forms whose city workbook is proven the render of the stored city cells and
    checks (formdelta.city_markers); one of them none of whose schools changed is kept as it is
    (formdelta.unchanged_city: not computed, stored or rendered; `result.kept` lists them).
    A workbook of a form and scope the build covers that it did not write — a school taken out
    of core (withdrawn, rejected) or out of the form's level since an earlier build — is removed
    (`result.removed`): the folder holds what a build from scratch would write."""
    result = ReportResult()
    if delta and schools is not None:
        schools = list(schools)
        result.delta = {}  # type: ignore[attr-defined]
        result.kept = []  # type: ignore[attr-defined]
    reuse = set(reuse or ()) if delta and schools is not None else set()
    jobs: list = []  # a kept form's city workbook: its path (in place), else what renders it
    names, district, province = _names(con, school_year, period)
    from edustat.paths import inside_dirs

    inside_ = inside_dirs(reports_dir)
    keys: list[str] = []  # every form this build covers, rendered, kept or found empty
    for code in forms or list_forms(period):
        form = load_form(code)
        key = form["form_code"]  # = code for a built-in form; an ad-hoc one is loaded by its path
        keys.append(key)
        scopes = ["city", school] if school else (["city", *schools] if schools is not None else None)
        if key in reuse:
            from edustat.formdelta import unchanged_city

            kept = unchanged_city(con, form, school_year, period, schools)
            if kept is not None:  # the same cells, checks and workbook as a build would write
                result.cells += kept[0]
                result.checks += kept[1]
                result.failed_checks += kept[2]
                result.forms.append(key)
                result.delta[key] = None  # type: ignore[attr-defined]
                result.kept.append(key)  # type: ignore[attr-defined]
                jobs.append(_form_path(reports_dir, school_year, period, key, "city", inside_))
                continue
        if delta and schools is not None:
            from edustat.formdelta import compute_and_check_delta

            cells, checks, result.delta[key] = compute_and_check_delta(con, form, school_year, period, schools)
        else:
            cells, checks = compute_and_check(con, form, school_year, period, scopes)
        if cells.empty:
            continue
        if scopes is not None:
            cells = cells[cells["scope"].isin(scopes)]
            checks = checks[checks["scope"].isin(scopes)]
        store_cells(con, key, school_year, period, cells, checks, scopes)
        from edustat.formdelta import record_stored

        record_stored(con, key, school_year, period, scopes)  # what a later delta may sum
        result.cells += len(cells)
        result.checks += len(checks)
        result.failed_checks += int((~checks["ok"].astype(bool)).sum())  # object dtype when a form has no identities
        result.forms.append(key)
        values_by, checks_by = scope_values(cells), dict(tuple(checks.groupby("scope")))
        for scope in cells["scope"].unique():
            if scope == "city":
                header = ReportHeader(unit=f"Phòng GD&ĐT {district}".strip(), recipient=f"Sở GD&ĐT {province}".strip(),
                                      school_year=school_year, scope_label=f"Toàn {district}" if district else "Toàn đơn vị")
            else:
                header = ReportHeader(unit=names.get(scope, scope), recipient=f"Phòng GD&ĐT {district}".strip(),
                                      school_year=school_year, scope_label=f"{names.get(scope, scope)} ({scope})")
            out = _form_path(reports_dir, school_year, period, key, scope, inside_)
            jobs.append((code, values_by[scope], checks_by.get(scope, checks.iloc[0:0]), scope, out, header))
    done = iter(_render_all([j for j in jobs if isinstance(j, tuple)], workers))
    result.files = [j if isinstance(j, Path) else next(done) for j in jobs]
    covered = (["city", school] if school else ["city", *schools] if schools is not None
               else ["city", *_collection_schools(con, school_year, period, names)])
    result.removed = _remove_unwritten(reports_dir, school_year, period, keys, covered, result.files,  # type: ignore[attr-defined]
                                       inside_)
    return result


def _collection_schools(con, school_year: str, period: str, names: dict[str, str]) -> list[str]:
    """Every school a whole build covers: those in core (`names`) and those in the register
    (a school whose file was rejected or withdrawn is there, not in core)."""
    codes = set(names)
    try:
        codes.update(r[0] for r in con.execute("select distinct school_code from submission where school_year = ? "
                                               "and period = ? and school_code is not null",
                                               [school_year, period]).fetchall())
    except duckdb.CatalogException:  # a database with core tables only (scripts, tests)
        pass
    return sorted(codes)


def _remove_unwritten(reports_dir: Path, school_year: str, period: str, keys: list[str], scopes: list[str],
                      written: list[Path], inside_) -> list[Path]:
    """The workbooks of `keys` × `scopes` this build did not write, removed (their paths are made
    by `_form_path`: a school code never names a file unless it is one, and each is proven
    inside the reports dir; a symlink is removed as a link, never followed). Returns them."""
    kept = {Path(p) for p in written}
    removed = []
    for key in keys:
        for scope in scopes:
            out = _form_path(reports_dir, school_year, period, key, scope, inside_)
            if out not in kept and (out.is_symlink() or out.is_file()):
                out.unlink()
                removed.append(out)
    return removed


def _form_path(reports_dir: Path, school_year: str, period: str, code: str, scope: str, inside_=None) -> Path:
    """<form>_<city | school code>.xlsx; a school code without its format never names a file
    (edustat.paths), and the path is proven inside the reports dir — by `inside_` when given
    (`paths.inside_dirs(reports_dir)`: the same proof, each directory resolved once for a
    build's paths; resolving every path's components again cost ~0.1 CPU s a cold city)."""
    import hashlib

    from edustat.paths import UNIDENTIFIED, inside, school_code_for_path

    name = scope if scope == "city" else (
        school_code_for_path(scope) or f"{UNIDENTIFIED}_{hashlib.sha256(str(scope).encode()).hexdigest()[:8]}")
    out = Path(reports_dir) / school_year / period / f"{code}_{name}.xlsx"
    if inside_ is not None:
        inside_(out)
    else:
        inside(reports_dir, out)
    return out


def _render_job(job: tuple) -> Path:
    """render_form, from the form's prerendered layout (edustat.formfast: the same parts)."""
    from edustat import formfast

    code, values, checks, scope, out, header = job
    return formfast.render(code, load_form(code), values, checks, scope, out, header)


def _render_all(jobs: list[tuple], workers: int) -> list[Path]:
    """Write the workbooks, in worker processes when there are many (xlsxwriter is pure Python)."""
    from edustat import formfast

    formfast.new_build()  # a template is kept only for the very definition it was made from
    if workers > 1 and len(jobs) > 4:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        global _FORKED_JOBS
        chunk = max(1, len(jobs) // (workers * 4))
        ctx = multiprocessing.get_context()
        if ctx.get_start_method() != "fork":
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                return list(pool.map(_render_job, jobs, chunksize=chunk))
        # forked workers inherit the jobs (set before the pool forks them): only their indexes
        # are sent, not every school's values and checks pickled through a pipe
        with _FORKED_LOCK:  # two builds in one process's threads never see each other's jobs
            _FORKED_JOBS = jobs
            try:
                # gc.freeze (in each worker, first): a worker's collections skip the objects it
                # inherited, which they walked — and copied, page by page — for nothing (this
                # process's own generations are left as they are: a server froze its imports)
                with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=gc.freeze) as pool:
                    # an index costs nothing to send: smaller chunks, a shorter tail (~12 ms a job)
                    return list(pool.map(_render_forked, range(len(jobs)), chunksize=max(1, len(jobs) // (workers * 16))))
            finally:
                _FORKED_JOBS = []
    return [_render_job(j) for j in jobs]


_FORKED_JOBS: list[tuple] = []  # the jobs a forked worker reads (set by _render_all before the fork)
_FORKED_LOCK = threading.Lock()


def _render_forked(i: int) -> Path:
    return _render_job(_FORKED_JOBS[i])
