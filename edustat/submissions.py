"""A period's submissions (the school workbooks): discover, keep the raw file, parse, check
structure (stage a), cast; then row rules (stage b, Great Expectations) and within-school
cross-row rules (stage c) over the whole collection. (Named apart from `flows/collect.py`,
the flow that orders these steps.) Results are plain data for the loader, the
feedback writer and the flow.
"""
from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from edustat.paths import UNIDENTIFIED, display_name, inside, school_code_for_path
from edustat.reader import (
    Limits,
    ParsedWorkbook,
    UnreadableWorkbook,
    file_sha256,
    open_regular,
    read_workbook,
)
from schemas import Contract, Sheet, load_codelist, load_contract
from schemas.rules import Catalogue, load_rules
from schemas.vocabulary import sheet_matcher
from transforms.cast import cast_key_values, cast_table
from transforms.concat import stack_files
from transforms.checks import check_frame, cross_row_issues, row_levels

log = logging.getLogger(__name__)

WORKBOOK_SUFFIXES = {".xlsx", ".xlsm"}
OTHER_SUFFIXES = {".xls", ".ods", ".csv", ".pdf", ".doc", ".docx", ".zip", ".rar"}
TABLE_SHEETS = ("rooms", "classes", "learners", "staff")
# casting's reports on how a cell was read → the rule family that tells the school
READ_FAMILIES = {"id_padded": "padded", "code_near": "near", "code_said": "said", "code_ambiguous": "ambiguous"}
ISSUE_COLUMNS = ["school_code", "file_hash", "file_name", "sheet", "excel_row", "column", "field", "header",
                 "rule_id", "severity", "value", "message", "fix"]
UNREADABLE_TEXT = {
    "empty": "tệp rỗng (0 byte)",
    "too_large": "tệp quá lớn",
    "encrypted_or_xls": "tệp có mật khẩu hoặc là định dạng Excel cũ (.xls)",
    "not_xlsx": "không phải tệp Excel .xlsx",
    "corrupt": "tệp bị hỏng hoặc tải về không trọn vẹn",
    "encrypted": "tệp có mật khẩu",
    "pdf": "tệp PDF, không phải tệp Excel .xlsx",
    "html": "trang web (HTML) đổi tên thành .xlsx, không phải tệp Excel",
    "text": "tệp văn bản/CSV đổi tên thành .xlsx, không phải tệp Excel",
    "zip_bomb": "tệp giải nén ra quá lớn ({detail}), không đọc để bảo vệ máy chủ",
    "too_many_rows": "một trang tính có quá nhiều dòng dữ liệu ({detail} dòng)",
    "symlink": "là liên kết (symlink) tới tệp khác; không đọc theo liên kết",
    "special": "không phải tệp thường (fifo, thiết bị hoặc socket); không đọc",
    "directory": "là một thư mục chứ không phải tệp",
    "not_regular": "không mở được như tệp thường ({detail})",
    "lock_file": "tệp khóa tạm của Excel (~$…) sinh ra khi tệp đang mở, không phải bài nộp",
    "os_error": "không đọc được tệp trên đĩa ({detail})",
    "parser_error": "nội dung tệp làm bộ đọc gặp lỗi ({detail})",
    "process_died": "tiến trình đọc tệp bị dừng đột ngột (tệp quá nặng hoặc làm bộ đọc hỏng)",
}


@dataclass
class FileResult:
    """One submitted file after ingest and the structure stage."""

    path: Path
    sha256: str
    raw_path: Path | None = None
    school: dict = field(default_factory=dict)  # the Truong sheet cast (values that cast)
    school_raw: dict = field(default_factory=dict)  # … and as submitted (text), for the rules
    school_rows: dict[str, int] = field(default_factory=dict)
    school_sheet: str | None = None
    levels: tuple[str, ...] = ()
    raw: dict[str, pd.DataFrame] = field(default_factory=dict)  # sheet id → text frame of the file
    sheet_names: dict[str, str] = field(default_factory=dict)  # sheet id → name in the file
    columns: dict[str, dict[str, str]] = field(default_factory=dict)  # sheet id → field → letter
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    issues: list[dict] = field(default_factory=list)  # stage a + casting notices
    unreadable: bool = False
    blocked: bool = False  # a structure error: row rules are not run on this file
    superseded: bool = False  # another file of the same school in this run is newer
    received_mtime: float = 0.0
    name: str = ""  # the file name as printable text (see edustat.paths.display_name)

    def __post_init__(self):
        if not self.name:
            self.name = display_name(self.path.name)

    @property
    def school_code(self) -> str | None:
        return self.school.get("school_code")

    def rows(self, sheet_id: str) -> int:
        counted = getattr(self.raw, "row_counts", None)  # a cached file not loaded (edustat.incremental)
        if counted is not None:
            return counted.get(sheet_id, 0)
        return len(self.raw.get(sheet_id, ()))


def discover(inbox: Path) -> list[Path]:
    """Every entry of the inbox (recursively, never through a symlink) a school may have meant
    as a submission: workbooks and what schools send by mistake, Excel lock files (~$…),
    directories named like a workbook (not entered), and every symlink and special file
    (fifo, device, socket) — those are refused with a message at ingest, never followed."""
    wanted = WORKBOOK_SUFFIXES | OTHER_SUFFIXES
    out: list[Path] = []
    for root, dirs, files in os.walk(inbox, followlinks=False):
        here = Path(root)
        for d in list(dirs):
            p = here / d
            if d.startswith("."):
                dirs.remove(d)
            elif os.path.islink(p) or p.suffix.lower() in WORKBOOK_SUFFIXES:
                dirs.remove(d)  # a symlinked dir is not followed; a dir named x.xlsx is named, not entered
                out.append(p)
        for f in files:
            p = here / f
            if f.startswith("."):
                continue
            try:
                mode = os.lstat(p).st_mode
            except OSError:
                continue
            if not stat.S_ISREG(mode) or p.suffix.lower() in wanted or p.suffix == "":
                out.append(p)
    return sorted(out, key=lambda p: os.fsencode(p))


def _refusal(path: Path) -> tuple[str, str] | None:
    """Why an inbox entry is not read at all (lstat: a symlink is judged, never followed)."""
    if path.name.startswith("~$"):
        return "lock_file", ""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        return "os_error", type(exc).__name__
    if stat.S_ISLNK(mode):
        return "symlink", ""
    if stat.S_ISDIR(mode):
        return "directory", ""
    if not stat.S_ISREG(mode):
        return "special", ""
    return None


def _issue(cat: Catalogue, rule_id: str, fr: FileResult, *, sheet=None, excel_row=None, column=None,
           field_id=None, header=None, value=None, detail=None) -> dict:
    r = cat[rule_id]
    fill = dict(header=header, value=value, sheet=sheet, detail=detail, file=fr.name)
    return {
        "school_code": fr.school_code, "file_hash": fr.sha256, "file_name": fr.name, "sheet": sheet,
        "excel_row": excel_row, "column": column, "field": field_id, "header": header, "rule_id": rule_id,
        "severity": r.severity, "value": value, "message": r.render(r.message, **fill), "fix": r.render(r.fix, **fill),
    }


def not_certified(cat: Catalogue, fr: FileResult, field_id: str, detail: str) -> dict:
    """The principal's confirmation is owed (config require_certification) and missing:
    stage a's issue, at the first missing cell of the school sheet (edustat.certify)."""
    return _issue(cat, "file_not_certified", fr, sheet=fr.school_sheet, excel_row=fr.school_rows.get(field_id),
                  field_id=field_id, detail=detail)


def _keep_raw(path: Path, sha: str, dest_dir: Path, root: Path, prove=None) -> Path:
    """Content-addressed, immutable copy: the same file twice is a no-op. The destination is
    proven inside `root` (the raw dir: `prove`, the caller's `paths.inside_dirs(root)` when it
    keeps many, is the same proof) and the source is read without following a symlink."""
    suffix = path.suffix.lower() if path.suffix.lower() in WORKBOOK_SUFFIXES | OTHER_SUFFIXES else ".bin"
    dest = (prove or (lambda p: inside(root, p)))(dest_dir / f"{sha}{suffix}")
    if not dest.exists():  # kept already: its directory exists (a rerun's 730 copies, no mkdir each)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".part")
        with open_regular(path) as src, open(tmp, "wb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
    return dest


def _fail(fr: FileResult, cat: Catalogue, reason: str, detail: str = "") -> FileResult:
    """The file becomes one message: it cannot be read (whatever the structure stage found
    before is dropped)."""
    fr.unreadable = fr.blocked = True
    fr.raw, fr.columns, fr.headers, fr.sheet_names = {}, {}, {}, {}
    fr.school, fr.school_raw, fr.school_rows, fr.levels = {}, {}, {}, ()
    if reason == "not_xlsx" and detail in UNREADABLE_TEXT:  # what it is instead: pdf, html, text
        reason = detail
    text = UNREADABLE_TEXT.get(reason, reason)
    text = text.format(detail=detail) if "{detail}" in text else text
    fr.issues = [_issue(cat, "file_unreadable", fr, detail=text)]
    return fr


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in str(v).replace("-", ".").split("."))


def ingest_file(path: Path, *, raw_root: Path, school_year: str, period: str,
                contract: Contract | None = None, catalogue: Catalogue | None = None,
                limits: Limits | None = None) -> FileResult:
    """Parse one file and run the structure stage. Never raises for a bad file: whatever goes
    wrong reading, parsing or checking it becomes that file's message."""
    c = contract or load_contract()
    cat = catalogue or load_rules(contract=c)
    path = Path(path)
    quarantine = raw_root / school_year / period / "_quarantine"
    refused = _refusal(path)
    if refused:  # not read: its hash names the entry (path), so two refusals never collide
        fr = FileResult(path=path, sha256=hashlib.sha256(b"refused:" + os.fsencode(path)).hexdigest())
        return _fail(fr, cat, *refused)
    fr = FileResult(path=path, sha256="")
    try:
        fr.sha256 = file_sha256(path)
        fr.received_mtime = os.lstat(path).st_mtime
    except OSError as exc:
        fr.sha256 = hashlib.sha256(b"unreadable:" + os.fsencode(path)).hexdigest()
        return _fail(fr, cat, "os_error", type(exc).__name__)
    try:
        if path.suffix.lower() not in WORKBOOK_SUFFIXES:
            raise UnreadableWorkbook("not_xlsx", path.suffix)
        parsed = read_workbook(path, c, limits)
        _structure(fr, parsed, c, cat, school_year, period)
    except UnreadableWorkbook as exc:
        _fail(fr, cat, exc.reason, exc.detail)
    except Exception as exc:  # a hostile sheet: this file's message, never the run's end
        log.warning("reading %s failed: %s", fr.name, type(exc).__name__, exc_info=True)
        _fail(fr, cat, "parser_error", type(exc).__name__)
    code = school_code_for_path(fr.school_code)
    dest = quarantine if fr.unreadable else raw_root / school_year / period / (code or UNIDENTIFIED)
    fr.raw_path = _keep_raw(path, fr.sha256, dest, raw_root)
    return fr


def file_died(path: Path, *, catalogue: Catalogue | None = None) -> FileResult:
    """The message of a file whose reading process died (killed for memory, a crash in a
    native reader): nothing of it is kept but its name and hash."""
    cat = catalogue or load_rules()
    path = Path(path)
    try:
        sha = file_sha256(path)
    except OSError:
        sha = hashlib.sha256(b"unreadable:" + os.fsencode(path)).hexdigest()
    return _fail(FileResult(path=path, sha256=sha), cat, "process_died")


def _structure(fr: FileResult, parsed: ParsedWorkbook, c: Contract, cat: Catalogue, school_year: str, period: str) -> None:
    school_sheet = c.sheet("school")
    for sid, names in parsed.duplicate_sheets.items():
        fr.issues.append(_issue(cat, "file_sheet_duplicate", fr, sheet=names[0], value=len(names),
                                detail=", ".join(f"'{n}'" for n in names)))
        fr.blocked = True
    if parsed.school is not None:
        for fid in parsed.school.invisible:
            fr.issues.append(_issue(cat, "file_invisible_chars", fr, sheet=parsed.school.name,
                                    excel_row=parsed.school.rows.get(fid), column=parsed.school.value_column,
                                    field_id=fid, header=school_sheet.field(fid).header, detail=1))
    for data in parsed.sheets.values():
        for fid, n in data.invisible.items():
            fr.issues.append(_issue(cat, "file_invisible_chars", fr, sheet=data.name, column=data.columns.get(fid),
                                    field_id=fid, header=data.headers.get(fid), detail=n))
    if parsed.school is not None:
        values, problems = cast_key_values(parsed.school.values, school_sheet, parsed.school.rows)
        fr.school = {k: v for k, v in values.items() if v is not None}
        fr.school_raw = dict(parsed.school.values)
        fr.school_rows = dict(parsed.school.rows)
        fr.school_sheet = parsed.school.name
        fr.sheet_names["school"] = parsed.school.name
        for fid, (found, _) in parsed.school.near_keys.items():
            fr.issues.append(_issue(cat, "file_header_near", fr, sheet=parsed.school.name, excel_row=parsed.school.rows.get(fid),
                                    column="A", field_id=fid, header=school_sheet.field(fid).header, value=found))
        raw_code = parsed.school.values.get("school_code")
        if raw_code and "school_code" not in fr.school:
            fr.school["school_code"] = raw_code
        # a name read inside the school's own district is no near miss nor ambiguity to report
        in_context = _resolve_admin_in_context(fr.school, parsed.school.values)
        # most files cast cleanly: no pandas filter of an empty problem table (~1 ms a file)
        reported = problems[problems["kind"].isin(list(READ_FAMILIES)) & ~problems["field"].isin(list(in_context))] \
            if len(problems) else problems
        for rec in reported.itertuples(index=False):
            fr.issues.append(_issue(cat, cat.family_id("school", rec.field, READ_FAMILIES[rec.kind]), fr, sheet=fr.school_sheet,
                                    excel_row=int(rec.excel_row), column=parsed.school.value_column, field_id=rec.field,
                                    header=school_sheet.field(rec.field).header, value=rec.value,
                                    detail=None if pd.isna(rec.detail) else rec.detail))
    else:
        fr.issues.append(_issue(cat, "file_sheet_missing", fr, sheet=school_sheet.name, detail=school_sheet.title))
    if not fr.school_code:
        fr.issues.append(_issue(cat, "file_school_code_missing", fr, sheet=fr.school_sheet))
        fr.blocked = True
        return
    kv_row = lambda fid: fr.school_rows.get(fid)  # noqa: E731
    got_year = fr.school.get("school_year")
    if got_year and got_year != school_year:
        fr.issues.append(_issue(cat, "file_year_mismatch", fr, sheet=fr.school_sheet, excel_row=kv_row("school_year"),
                                column="B", field_id="school_year", value=got_year, detail=school_year))
        fr.blocked = True
    got_period = fr.school.get("period")
    if got_period and got_period != period:
        fr.issues.append(_issue(cat, "file_period_mismatch", fr, sheet=fr.school_sheet, excel_row=kv_row("period"),
                                column="B", field_id="period", value=got_period, detail=period))
        fr.blocked = True
    fr.levels = c.levels_of(fr.school.get("education_level", ""))
    if not fr.levels:
        fr.issues.append(_issue(cat, "file_level_unknown", fr, sheet=fr.school_sheet, excel_row=kv_row("education_level"),
                                column="B", field_id="education_level", value=(parsed.school.values.get("education_level") if parsed.school else None)))
        fr.blocked = True
        return
    version = parsed.template_version
    if version and _version_key(version) < _version_key(c.min_template_version):
        fr.issues.append(_issue(cat, "file_template_stale", fr, sheet=fr.school_sheet, excel_row=kv_row("template_version"),
                                column="B", value=version, detail=c.version))
        fr.blocked = True
    for sheet in c.sheets:
        if sheet.layout != "table":
            continue
        data = parsed.sheets.get(sheet.id)
        required_sheet = sheet.required.applies(fr.levels, period)
        if data is None or data.header_row == 0:
            if required_sheet:
                fr.issues.append(_issue(cat, "file_sheet_missing", fr, sheet=sheet.name, detail=sheet.title))
                fr.blocked = True
            continue
        fr.sheet_names[sheet.id] = data.name
        fr.columns[sheet.id] = data.columns
        fr.headers[sheet.id] = data.headers
        for f in sheet.fields_for(fr.levels, period):
            r = f.required
            if f.id not in data.columns and r.applies(fr.levels, period) and _column_needed(f, sheet, data.frame):
                fr.issues.append(_issue(cat, "file_column_missing", fr, sheet=data.name, field_id=f.id, header=f.header))
                fr.blocked = True
        for fid, (found, _) in data.near_headers.items():
            fr.issues.append(_issue(cat, "file_header_near", fr, sheet=data.name, column=data.columns.get(fid), field_id=fid,
                                    header=sheet.field(fid).header, value=found))
        absent = [f.id for f in sheet.fields_for(fr.levels, period) if f.id not in data.columns]
        matcher = sheet_matcher(sheet)
        for header, letter in data.extra_columns.items():
            # never silent: an unknown column that resembles a field the sheet lacks is said (a
            # warning naming the field); other extra columns (STT, Ghi chú…) are a notice
            maybe = matcher.resembling(header, absent) if absent else []
            rule = "file_column_unread" if maybe else "file_column_unknown"
            fr.issues.append(_issue(cat, rule, fr, sheet=data.name, column=letter, header=header,
                                    detail=", ".join(f"'{sheet.field(fid).header}'" for fid in maybe)))
        for header in data.duplicate_headers:
            fr.issues.append(_issue(cat, "file_header_duplicate", fr, sheet=data.name, header=header))
        if required_sheet and sheet.id in ("classes", "learners", "staff") and not len(data.frame):
            # a header and no row: a school has classes, learners and staff — loading it would
            # put a school of nobody into the forms
            fr.issues.append(_issue(cat, "file_sheet_empty", fr, sheet=data.name, detail=sheet.title))
            fr.blocked = True
        # casting happens once per sheet over the whole collection (assemble): per-column
        # pandas work costs milliseconds, which per school and per column adds up to minutes
        fr.raw[sheet.id] = data.frame


def _column_needed(f, sheet: Sheet, frame: pd.DataFrame) -> bool:
    """A column required only `when` another field has some values is missing only if some
    row has them (no dropout reason column is needed where nobody dropped out)."""
    r = f.required
    if not r.when_field:
        return True
    if r.when_field not in frame.columns:
        return False
    other = sheet.field(r.when_field)
    values = frame[r.when_field].dropna().astype(str)
    if r.when_not_blank:
        return bool((values.str.strip() != "").any())
    resolve = other.codelist.resolve if other.codelist is not None else (lambda v: v)
    codes = {resolve(v) for v in values.unique()}
    codes.discard(None)
    if r.when_in:
        return bool(codes & set(r.when_in))
    return bool(codes - set(r.when_not_in))


def _resolve_admin_in_context(school: dict, raw: Mapping[str, str | None]) -> set[str]:
    """Names of communes and districts repeat across the country ("Phường Phú Hòa" is in
    Thủ Dầu Một and in Pleiku): a name is looked up among the units of the school's own
    district / province first. Returns the fields so resolved."""
    resolved: set[str] = set()
    for fid, parent, ref, attr in (("district_code", "province_code", "moet-2020/DM_HUYEN", "ma_tp"),
                                   ("commune_code", "district_code", "moet-2020/DM_XA", "ma_qh")):
        value, parent_code = raw.get(fid), school.get(parent)
        if not value or not parent_code:
            continue
        inside = _units_within(ref, attr, str(parent_code))
        hit = inside.resolve(value) if inside is not None else None
        if hit:
            school[fid] = hit
            resolved.add(fid)
    return resolved


@lru_cache(maxsize=4096)
def _units_within(ref: str, attr: str, parent_code: str):
    """The communes of a district / districts of a province, as a code list (cached)."""
    cl = load_codelist(ref)
    inside = [c for c, a in zip(cl.codes, cl.attributes) if a.get(attr) == parent_code]
    return cl.subset(inside) if inside else None


def mark_superseded(results: list[FileResult], cat: Catalogue) -> None:
    """The very same bytes twice (readable or not, whatever their school): one is kept, the
    others are named in its notice. Two different files of one school in one run: the newest
    (by file time) is used."""
    by_hash: dict[str, list[FileResult]] = {}
    for fr in results:
        by_hash.setdefault(fr.sha256, []).append(fr)
    for frs in by_hash.values():
        if len(frs) > 1:
            frs.sort(key=lambda fr: (fr.unreadable, fr.name))  # keep a readable twin (a copy may be misnamed)
            for dup in frs[1:]:
                dup.superseded = True
                dup.issues = []  # the same bytes say the same things: once, on the twin kept
            frs[0].issues.append(_issue(cat, "file_duplicate_submission", frs[0], value=len(frs),
                                        detail=", ".join(fr.name for fr in frs)))
    by_school: dict[str, list[FileResult]] = {}
    for fr in results:
        if fr.school_code and not fr.unreadable and not fr.superseded:
            by_school.setdefault(fr.school_code, []).append(fr)
    for code, frs in by_school.items():
        if len(frs) < 2:
            continue
        frs.sort(key=lambda fr: (fr.received_mtime, fr.name))
        names = ", ".join(fr.name for fr in frs)
        for old in frs[:-1]:
            old.superseded = True
        newest = frs[-1]
        newest.issues.append(_issue(cat, "file_same_school_twice", newest, value=code, detail=names))


# ---------------------------------------------------------------------------------------
# Stage b and c over the collection
# ---------------------------------------------------------------------------------------

def _start_year(school_year: str) -> int:
    return int(school_year[:4])


@dataclass
class Frames:
    """The collection's rows, one frame per sheet: every active file (readable, structure
    passed, not superseded) concatenated, with `_file` (index into the results), `_rowkey`
    (unique over all sheets) and `excel_row`. `raw` is text as read; `typed` is cast."""

    raw: dict[str, pd.DataFrame]
    typed: dict[str, pd.DataFrame]
    notices: list[dict]  # casting notices (IDs that lost their leading zeros, values read as a code)
    ambiguous: set[tuple[int, str]] = field(default_factory=set)  # (_rowkey, field) never guessed

    def of_file(self, sheet_id: str, file_index: int, typed: bool = True) -> pd.DataFrame:
        frame = (self.typed if typed else self.raw).get(sheet_id)
        if frame is None:
            return pd.DataFrame()
        return frame[frame["_file"] == file_index]


def active(fr: FileResult) -> bool:
    return not (fr.unreadable or fr.blocked or fr.superseded) and bool(fr.school_code)


def assemble(results: list[FileResult], contract: Contract | None = None, catalogue: Catalogue | None = None) -> Frames:
    """Concatenate and cast the collection's sheets: one `cast_table` per sheet, not per file."""
    c = contract or load_contract()
    cat = catalogue or load_rules(contract=c)
    raw_out, typed_out, notices = {}, {}, []
    ambiguous: set[tuple[int, str]] = set()
    next_key = 0
    school_sheet = c.sheet("school")
    act = [(i, fr) for i, fr in enumerate(results) if active(fr)]
    if act:
        keys = pd.RangeIndex(next_key, next_key + len(act))
        next_key += len(act)
        meta = {"_file": [i for i, _ in act], "excel_row": [0] * len(act), "_rowkey": keys.to_numpy()}
        # as submitted (the rules see the text of a value that did not cast) and cast — typed
        # like cast_table's output, so one school's blank never turns another's 0 into 0.0
        raw_kv = pd.DataFrame({f.id: [fr.school_raw.get(f.id, fr.school.get(f.id)) for _, fr in act]
                               for f in school_sheet.fields}, index=keys).astype("string")
        kinds = {"int": "Int64", "flag": "Int8"}
        typed_kv = pd.DataFrame({f.id: [fr.school.get(f.id) for _, fr in act] for f in school_sheet.fields},
                                index=keys).astype({f.id: kinds.get(f.type, "object") for f in school_sheet.fields})
        raw_out["school"] = raw_kv.assign(**meta)
        typed_out["school"] = typed_kv.assign(**meta)
    stacked: dict[str, pd.DataFrame] = {}
    for sid in TABLE_SHEETS:
        sheet = c.sheet(sid)
        ids = [f.id for f in sheet.fields]
        parts = []
        for i, fr in enumerate(results):
            if active(fr) and sid in fr.raw and len(fr.raw[sid]):
                f = fr.raw[sid]
                # by position: a label lookup hashes the (Arrow-backed) column index each time
                keep = [j for j, col in enumerate(f.columns) if col in ids or col == "excel_row"]
                parts.append((f, keep, i))
        if not parts:
            continue
        raw = stack_files(parts)  # = pd.concat of f.iloc[:, keep].assign(_file=i), column by column
        raw.index = pd.RangeIndex(next_key, next_key + len(raw))
        next_key += len(raw)
        raw["_rowkey"] = raw.index
        for fid in ids:  # absent optional columns are blank, so conditions can test them
            if fid not in raw:
                raw[fid] = pd.Series(pd.NA, index=raw.index, dtype="string")
        stacked[sid] = raw
    from edustat.castsplit import cast_sheets  # every sheet's columns, on both cores when worth it

    cast = cast_sheets(stacked, {sid: c.sheet(sid) for sid in stacked})
    for sid, raw in stacked.items():
        typed, problems = cast[sid]
        typed["_file"], typed["_rowkey"] = raw["_file"], raw["_rowkey"]
        raw_out[sid], typed_out[sid] = raw, typed
        said = problems[problems["kind"].isin(list(READ_FAMILIES))]
        if len(said):
            files = raw.loc[said["row_index"].to_numpy(), "_file"].to_numpy()
            for rec, file_i in zip(said.itertuples(index=False), files):
                fr = results[int(file_i)]
                rid = cat.family_id(sid, rec.field, READ_FAMILIES[rec.kind])
                notices.append(_issue(cat, rid, fr, sheet=fr.sheet_names.get(sid), excel_row=int(rec.excel_row),
                                      column=fr.columns.get(sid, {}).get(rec.field), field_id=rec.field,
                                      header=fr.headers.get(sid, {}).get(rec.field), value=rec.value,
                                      detail=None if pd.isna(rec.detail) else rec.detail))
                if rec.kind == "code_ambiguous":
                    ambiguous.add((int(rec.row_index), rec.field))
    return Frames(raw_out, typed_out, notices, ambiguous)


def build_check_frames(results: list[FileResult], school_year: str, contract: Contract | None = None,
                       frames: Frames | None = None) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The check frame of each sheet over the whole collection (one call per sheet), and the
    rowindex: `_rowkey` → file, sheet, excel_row."""
    c = contract or load_contract()
    frames = frames or assemble(results, c)
    return check_frames(results, school_year, c, frames, list(frames.raw)), row_index(frames)


def row_index(frames: Frames) -> pd.DataFrame:
    """`_rowkey` → file, sheet, excel_row: one row per row of every sheet, in the sheets' order."""
    index = [pd.DataFrame({"_rowkey": raw["_rowkey"].to_numpy(), "_file": raw["_file"].to_numpy(),
                           "sheet_id": sid, "excel_row": raw["excel_row"].to_numpy()})
             for sid, raw in frames.raw.items()]
    return pd.concat(index, ignore_index=True) if index else pd.DataFrame(columns=["_rowkey", "_file", "sheet_id", "excel_row"])


def _in_sheet_order(parts: list[pd.DataFrame | None], rowindex: pd.DataFrame, sheets: list[str]) -> pd.DataFrame | None:
    """Row-rule hits computed in parts (sheets split between two processes) as one run over
    every sheet gives them: sheet after sheet in `sheets` order, each sheet's rows in the order
    its own run gave (a stable sort). A `_rowkey` belongs to one sheet, so no hit of one part
    repeats one of another (the one run's drop_duplicates had nothing more to drop)."""
    got = [p for p in parts if p is not None]
    if not got:
        return None
    full = [p for p in got if len(p)]
    if len(full) < 2:
        return full[0] if full else got[0]
    both = pd.concat(full, ignore_index=True)
    rank = rowindex["sheet_id"].map({sid: i for i, sid in enumerate(sheets)}).to_numpy()
    sheet_rank = pd.Series(rank, index=rowindex["_rowkey"].to_numpy()).reindex(both["_rowkey"].to_numpy()).to_numpy()
    return both.iloc[np.argsort(sheet_rank, kind="stable")].reset_index(drop=True)


def check_frames(results: list[FileResult], school_year: str, c: Contract, frames: Frames,
                 sheets: list[str]) -> dict[str, pd.DataFrame]:
    """The check frame of each of these sheets over the whole collection (one call per sheet)."""
    from edustat.expectations import condition_fields

    start = _start_year(school_year)
    grades = c.mappings["grades"]
    out = {}
    for sid in sheets:
        raw, typed = frames.raw[sid], frames.typed[sid]
        levels_of_file = raw["_file"].map({i: fr.levels for i, fr in enumerate(results)})
        levels = row_levels(typed, levels_of_file, grades, by_grade=sid == "learners")
        cf = check_frame(raw, typed, c.sheet(sid).fields, levels, pd.Series(start, index=raw.index),
                         condition_fields(c, sid))
        cf["_school"] = raw["_file"].map({i: fr.school_code for i, fr in enumerate(results)})
        if sid == "rooms":
            care = cf["care_level"] if "care_level" in cf else pd.Series("", index=cf.index)
            cf["_room_key"] = (cf["room_type"].fillna("") + "|" + care.fillna("")).where(cf["room_type"].notna(), pd.NA)
        out[sid] = cf
    return out


def _admin_maps() -> dict[str, dict[str, str]]:
    xa = load_codelist("moet-2020/DM_XA")
    huyen = load_codelist("moet-2020/DM_HUYEN")
    return {
        "district_of": {c: a["ma_qh"] for c, a in zip(xa.codes, xa.attributes)},
        "province_of": {c: a["ma_tp"] for c, a in zip(huyen.codes, huyen.attributes)},
    }


def scales(c: Contract) -> dict:
    """The THCS assessment scales' code lists (labels, rank codes and synonyms all resolve)."""
    refs = set()
    for conf in c.mappings["assessment_scales"]["THCS"].values():
        refs.update(v for k, v in conf.items() if k in ("conduct", "learning"))
    return {ref: load_codelist(ref) for ref in refs}


def validate_collection(results: list[FileResult], *, school_year: str, period: str,
                        catalogue: Catalogue | None = None, contract: Contract | None = None,
                        frames: Frames | None = None, aside: str | None = None,
                        meanwhile: Callable[[], Any] | None = None) -> pd.DataFrame:
    """Stages b and c for every active file; returns issue rows (ISSUE_COLUMNS), stage a
    issues and casting notices included, one row per failing cell.

    `aside` (a sheet id): that sheet's row rules (its check frame and GX suite) run in a forked
    child (edustat.isolate.beside) while this process runs the other sheets' and the cross-row
    rules, then `meanwhile` (a head start, see isolate.in_child). The same issues in the same
    order: a sheet's row-rule hits are computed as before (one GX suite per sheet, whole), and
    put back in the sheets' order (`_in_sheet_order`) before anything reads them."""
    from edustat.expectations import run_row_rules

    c = contract or load_contract()
    cat = catalogue or load_rules(contract=c)
    frames = frames or assemble(results, c, cat)

    def row_hits(sheets: list[str]) -> pd.DataFrame | None:
        """Stage b of these sheets: one row per (check-frame row, failed rule)."""
        checks = check_frames(results, school_year, c, frames, sheets)
        return run_row_rules(checks, period) if checks else None

    def cross_rows() -> pd.DataFrame:
        """Stage c: every school at once (rows are matched within their own file by `_file`)."""
        start = _start_year(school_year)
        admin, scale_labels = _admin_maps(), scales(c)
        school_rows = frames.raw["school"].set_index("_file")["_rowkey"] if "school" in frames.raw else pd.Series(dtype="int64")
        schools = pd.DataFrame([{"_file": i, "levels": fr.levels, "_rowkey": school_rows.get(i),
                                 **{k: fr.school.get(k) for k in ("commune_code", "district_code", "province_code")}}
                                for i, fr in enumerate(results) if active(fr)],
                               columns=["_file", "levels", "_rowkey", "commune_code", "district_code", "province_code"]).set_index("_file")
        tables = {sid: frames.typed[sid] for sid in TABLE_SHEETS if sid in frames.typed}
        if "learners" in tables and "year_result" in frames.raw.get("learners", {}):
            # which cells were written at all (a value that did not cast is not a blank)
            tables["learners"] = tables["learners"].assign(
                _written_year_result=frames.raw["learners"]["year_result"].astype("string").str.strip().fillna("").ne("").to_numpy())
        return cross_row_issues(tables, schools=schools, period=period, start_year=start, mappings=c.mappings,
                                scales=scale_labels, admin=admin)

    rowindex = row_index(frames)
    sheets = list(frames.raw)
    if aside is not None and aside in sheets:
        from edustat import isolate

        import great_expectations  # noqa: F401 - once, before the fork: the child inherits it

        theirs, (mine, cross) = isolate.beside(
            row_hits, [aside], here=lambda: (row_hits([s for s in sheets if s != aside]), cross_rows()),
            meanwhile=meanwhile)
        rows = _in_sheet_order([mine, theirs], rowindex, sheets)
    else:
        rows, cross = row_hits(sheets), cross_rows()
    found = ([] if rows is None else [rows]) + [cross]
    columns = ["_rowkey", "rule_id", "detail", "field"]
    hits = (pd.concat([f for f in found if len(f)], ignore_index=True) if any(len(f) for f in found)
            else pd.DataFrame(columns=columns)).reindex(columns=columns)
    issues = [iss for fr in results for iss in fr.issues] + list(frames.notices)
    if len(hits) and frames.ambiguous:
        # an ambiguous spelling is reported once, with its candidates, not also as "not in the list"
        fam = hits["rule_id"].map(lambda rid: cat[rid].family if rid in cat else None)
        fld = hits["field"].where(hits["field"].notna(), hits["rule_id"].map(lambda rid: cat[rid].field if rid in cat else None))
        dup = [(fm == "code" and (int(k), f) in frames.ambiguous) for k, f, fm in zip(hits["_rowkey"], fld, fam)]
        hits = hits[~pd.Series(dup, index=hits.index)]
    if len(hits):
        hits["_rowkey"] = hits["_rowkey"].astype("int64")
        hits = hits.merge(rowindex, on="_rowkey", how="left")
        issues.extend(_render_hits(hits, results, cat, c, frames))
    frame = pd.DataFrame(issues, columns=ISSUE_COLUMNS)
    frame["excel_row"] = frame["excel_row"].astype("Int64")
    return frame


def _hit_values(hits: pd.DataFrame, cat: Catalogue, frames: Frames) -> pd.Series:
    """The submitted text of each hit's cell (None when blank or not a table sheet's column):
    one lookup per (sheet, field) over the collection, not one frame slice per file."""
    values = pd.Series(None, index=hits.index, dtype=object)
    rule_field = {rid: cat[rid].field for rid in hits["rule_id"].unique()}
    fids = [f if isinstance(f, str) else rule_field[r] for f, r in zip(hits["field"], hits["rule_id"])]
    for (sid, fid), idx in pd.Series(hits.index, index=hits.index).groupby([hits["sheet_id"], pd.Series(fids, index=hits.index)]):
        raw = frames.raw.get(sid)
        if sid == "school" or raw is None or not isinstance(fid, str) or fid not in raw.columns:
            continue
        got = raw[fid].reindex(hits.loc[idx.to_numpy(), "_rowkey"].to_numpy())
        values.loc[idx.to_numpy()] = [None if pd.isna(v) else str(v) for v in got.to_numpy(dtype=object)]
    return values


def _render_hits(hits: pd.DataFrame, results: list[FileResult], cat: Catalogue, c: Contract, frames: Frames) -> list[dict]:
    out = []
    values = _hit_values(hits, cat, frames)
    for (file_i, sid), grp in hits.groupby(["_file", "sheet_id"], sort=True):
        fr = results[int(file_i)]
        for value, rec in zip(values.loc[grp.index].to_numpy(), grp.itertuples(index=False)):
            rule = cat[rec.rule_id]
            fid = rec.field if isinstance(rec.field, str) else rule.field  # a rule over several columns names its cell
            if sid == "school":
                excel_row = fr.school_rows.get(fid)
                column = "B"
                raw_value = fr.school_raw.get(fid, fr.school.get(fid))  # as submitted
                value = None if raw_value is None else str(raw_value)
                header = c.sheet("school").field(fid).header if fid else None
            else:
                excel_row = int(rec.excel_row)
                column = fr.columns.get(sid, {}).get(fid)
                header = fr.headers.get(sid, {}).get(fid) or (c.sheet(sid).field(fid).header if fid else None)
            detail = None if pd.isna(rec.detail) else rec.detail
            fill = dict(header=header, value=value, sheet=fr.sheet_names.get(sid), detail=detail, file=fr.name,
                        hint=c.sheet(sid).field(fid).hint if fid else "")
            out.append({
                "school_code": fr.school_code, "file_hash": fr.sha256, "file_name": fr.name,
                "sheet": fr.sheet_names.get(sid), "excel_row": excel_row, "column": column, "field": fid,
                "header": header, "rule_id": rule.id, "severity": rule.severity, "value": value,
                "message": rule.render(rule.message, **fill), "fix": rule.render(rule.fix, **fill),
            })
    return out
