"""The obvious implementation, as a competent analyst would write it in an afternoon: the
yardstick `make bench` compares edustat with (issue 12 item 4).

    python scripts/obvious.py INBOX OUT_DIR [--year 2022-2023]

Per file: `pandas.read_excel(sheet_name=None)` (openpyxl engine, every sheet), the header row
found by looking for a known header in the first rows, headers mapped with a plain dict built
from the contract's headers and aliases (lower-cased, exact), then row-by-row Python checks of a
representative subset of edustat's rules, an openpyxl copy of the school's workbook with the
failing cells marked (fill + comment) and a list of the problems, and at the end the city's
main counts (learners by grade × sex, classes by grade, staff by group × sex) written with
openpyxl. Prints one JSON line: files, rows, issues, outputs written, seconds.

The subset of rules it checks (the ones every school meets):
  - required fields that are always required (no level / period / condition refinements),
  - code-list membership (a code, its label or "code - label", case-insensitive),
  - dates (dd/mm/yyyy, yyyy-mm-dd or an Excel date) and age ranges (learners 0–25,
    staff 18–65), integers (≥ 0), id patterns (personal ID 12 digits, school code 8 digits),
  - within-school uniqueness of learner / staff / class codes and personal IDs,
  - cross-row: a learner's class exists; the learner's grade is the class's grade (unless the
    class is a combined one).

What it skips compared with edustat (so the comparison flatters it, not edustat):
  - no near-miss reading (typos, diacritic-less spellings, abbreviations, ambiguity warnings),
    no header fuzzing, no duplicate / unknown sheet handling, no invisible-character cleaning;
  - conditional requirements (by level, period, status), the personal-ID province / century /
    birth-year rules, the ~60 other cross-row rules (staff roles, class sizes, year results,
    transfers, admin units within the district, …) and the Great Expectations run;
  - file safety (zip bombs, symlinks, encrypted / legacy files: a failing file is just counted),
    no raw-file archive, no DuckDB load, no atomic commit, no published snapshot, no per-school
    forms, no form self-checks, no Prefect.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import openpyxl
import pandas as pd
from openpyxl.comments import Comment
from openpyxl.styles import PatternFill

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas import load_contract  # noqa: E402  (the contract's words only: headers, aliases, code lists)

RED = PatternFill("solid", fgColor="FFC7CE")
AGES = {"learners": (0, 25), "staff": (18, 65)}
UNIQUE = {"learners": ["student_code", "personal_id"], "staff": ["staff_code", "personal_id"], "classes": ["class_code"]}


def build_dictionaries():
    """header text → field id per sheet; sheet name → sheet id; code or label → code per field."""
    c = load_contract()
    sheets, headers, codes, fields = {}, {}, {}, {}
    for s in c.sheets:
        for name in (s.name, *s.aliases):
            sheets[name.strip().lower()] = s.id
        headers[s.id] = {}
        fields[s.id] = {f.id: f for f in s.fields}
        for f in s.fields:
            for h in (f.header, *f.aliases):
                headers[s.id][h.strip().lower()] = f.id
            cl = f.codelist
            if cl is not None:
                d = {}
                for code, label in zip(cl.codes, cl.labels):
                    d[code.lower()] = code
                    d[label.strip().lower()] = code
                    d[f"{code} - {label}".lower()] = code
                codes[(s.id, f.id)] = d
    return c, sheets, headers, codes, fields


def as_text(v) -> str | None:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return None
    s = str(v).strip()
    if s.endswith(".0") and s[:-2].isdigit():
        s = s[:-2]
    return s or None


def parse_date(s: str) -> dt.date | None:
    for fmt in ("%d/%m/%Y", "%Y-%m-%d", "%Y-%m-%d %H:%M:%S"):
        try:
            return dt.datetime.strptime(s, fmt).date()
        except ValueError:
            pass
    return None


def find_header(frame: pd.DataFrame, known: dict[str, str]) -> int | None:
    for i in range(min(10, len(frame))):
        row = [str(x).strip().lower() for x in frame.iloc[i].tolist() if isinstance(x, str)]
        if sum(1 for x in row if x in known) >= 2:
            return i
    return None


def check_file(path: Path, dicts, as_at: dt.date):
    """→ (school code, level-free tables {sheet: [row dicts]}, issues [(sheet, excel_row, col, message)])."""
    c, sheet_ids, headers, codes, fields = dicts
    book = pd.read_excel(path, sheet_name=None, header=None, dtype=object)
    issues, tables, school = [], {}, {}
    for name, frame in book.items():
        sid = sheet_ids.get(name.strip().lower())
        if sid is None:
            continue
        if sid == "school":
            for i, row in enumerate(frame.itertuples(index=False)):
                key = as_text(row[0])
                fid = headers["school"].get(key.lower()) if key else None
                if fid and len(row) > 1:
                    school[fid] = (as_text(row[1]), i + 1)
            continue
        h = find_header(frame, headers[sid])
        if h is None:
            issues.append((name, 1, None, "không tìm thấy dòng tiêu đề"))
            continue
        cols = {}  # column position → field id
        for j, x in enumerate(frame.iloc[h].tolist()):
            fid = headers[sid].get(str(x).strip().lower()) if isinstance(x, str) else None
            if fid:
                cols[j] = fid
        rows = []
        for i in range(h + 1, len(frame)):
            values = frame.iloc[i].tolist()
            if all(as_text(v) is None for v in values):
                continue
            if all(isinstance(v, (int, float)) and not pd.isna(v) and v == k + 1 for k, v in enumerate(values)):
                continue  # the column-numbering row of an export
            rec = {"_row": i + 1}
            for j, fid in cols.items():
                rec[fid] = values[j] if j < len(values) else None
            rows.append(rec)
        tables[sid] = (name, {fid: j for j, fid in cols.items()}, rows)
    for fid, f in fields["school"].items():
        v, r = school.get(fid, (None, None))
        if v is None and f.required.always:
            issues.append(("Truong", r or 1, 2, f"thiếu {f.header}"))
        elif v is not None and ("school", fid) in codes and v.lower() not in codes[("school", fid)]:
            issues.append(("Truong", r, 2, f"{f.header}: '{v}' không có trong danh mục"))
    code = school.get("school_code", (None, None))[0]
    if not code or not re.fullmatch(r"\d{8}", code):
        issues.append(("Truong", 2, 2, "mã trường phải có 8 chữ số"))
    for sid, (name, colpos, rows) in tables.items():
        seen = defaultdict(dict)
        for rec in rows:
            r = rec["_row"]
            for fid, f in fields[sid].items():
                if fid not in colpos:
                    continue
                raw = rec.get(fid)
                v = raw.date().isoformat() if isinstance(raw, dt.datetime) else as_text(raw)
                if v is not None and f.type == "id" and isinstance(raw, (int, float)) and f.pattern:
                    width = re.fullmatch(r"\^\\d\{(\d+)\}\$", f.pattern)  # Excel dropped the leading zeros
                    v = v.zfill(int(width.group(1))) if width else v
                col = colpos[fid] + 1
                if v is None:
                    if f.required.always and not f.required.levels and not f.required.when_field:
                        issues.append((name, r, col, f"thiếu {f.header}"))
                    continue
                if (sid, fid) in codes:
                    hit = codes[(sid, fid)].get(v.lower())
                    if hit is None:
                        issues.append((name, r, col, f"{f.header}: '{v}' không có trong danh mục"))
                    else:
                        rec[fid] = hit
                elif f.type in ("date", "year_or_date"):
                    d = parse_date(v) or (dt.date(int(v), 1, 1) if f.type == "year_or_date" and v.isdigit() and len(v) == 4 else None)
                    if d is None:
                        issues.append((name, r, col, f"{f.header}: '{v}' không phải ngày hợp lệ"))
                    elif fid == "birth_date" and sid in AGES:
                        lo, hi = AGES[sid]
                        age = (as_at - d).days // 365
                        if not lo <= age <= hi:
                            issues.append((name, r, col, f"{f.header}: tuổi {age} ngoài khoảng {lo}–{hi}"))
                elif f.type == "int":
                    if not v.isdigit():
                        issues.append((name, r, col, f"{f.header}: '{v}' không phải số nguyên ≥ 0"))
                elif f.type == "id" and f.pattern:
                    if not re.fullmatch(f.pattern, v):
                        issues.append((name, r, col, f"{f.header}: sai định dạng"))
                if fid in UNIQUE.get(sid, ()):
                    if v in seen[fid]:
                        issues.append((name, r, col, f"{f.header} trùng với dòng {seen[fid][v]}"))
                    else:
                        seen[fid][v] = r
    if "learners" in tables and "classes" in tables:
        name, colpos, rows = tables["learners"]
        grade_of = {as_text(c.get("class_code")): c.get("grade") for c in tables["classes"][2]}
        mixed = {as_text(c.get("class_code")) for c in tables["classes"][2] if as_text(c.get("mixed")) not in (None, "0")}
        for rec in rows:
            cc = as_text(rec.get("class_code"))
            if cc is None:
                continue
            if cc not in grade_of:
                issues.append((name, rec["_row"], colpos.get("class_code", 0) + 1, f"lớp '{cc}' không có trong trang Lop"))
            elif cc not in mixed and rec.get("grade") is not None and grade_of[cc] is not None and rec.get("grade") != grade_of[cc]:
                issues.append((name, rec["_row"], colpos.get("grade", 0) + 1, "khối của học sinh khác khối của lớp"))
    return code, {sid: t[2] for sid, t in tables.items()}, issues


def write_feedback(path: Path, issues, out: Path) -> None:
    """The school's own workbook, failing cells marked, and a list of the problems."""
    wb = openpyxl.load_workbook(path)
    for sheet, r, col, msg in issues:
        if sheet in wb.sheetnames and col:
            cell = wb[sheet].cell(row=r, column=col)
            cell.fill = RED
            cell.comment = Comment(msg, "edustat")
    ws = wb.create_sheet("PhanHoi", 0)
    ws.append(["Trang tính", "Dòng", "Cột", "Vấn đề"])
    for sheet, r, col, msg in issues:
        ws.append([sheet, r, col, msg])
    wb.save(out)


def write_city_forms(tables_by_school: dict, out: Path) -> int:
    learners, classes, staff = Counter(), Counter(), Counter()
    for tables in tables_by_school.values():
        for rec in tables.get("learners", []):
            learners[(rec.get("grade"), rec.get("sex"))] += 1
        for rec in tables.get("classes", []):
            classes[rec.get("grade")] += 1
        for rec in tables.get("staff", []):
            staff[(rec.get("staff_group"), rec.get("sex"))] += 1
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "HocSinh"
    ws.append(["Khối", "Giới tính", "Số học sinh"])
    for (g, s), n in sorted(learners.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        ws.append([g, s, n])
    ws = wb.create_sheet("Lop")
    ws.append(["Khối", "Số lớp"])
    for g, n in sorted(classes.items(), key=lambda kv: str(kv[0])):
        ws.append([g, n])
    ws = wb.create_sheet("CanBo")
    ws.append(["Nhóm", "Giới tính", "Số người"])
    for (g, s), n in sorted(staff.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        ws.append([g, s, n])
    wb.save(out)
    return sum(learners.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("inbox", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--year", default="2022-2023")
    args = ap.parse_args()
    t0 = time.perf_counter()
    dicts = build_dictionaries()
    as_at = dt.date(int(args.year[:4]), 9, 30)
    (args.out / "feedback").mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in args.inbox.iterdir() if p.suffix == ".xlsx")
    by_school, failed, n_issues, rows, outputs = {}, 0, 0, 0, 0
    for path in files:
        try:
            code, tables, issues = check_file(path, dicts, as_at)
            write_feedback(path, issues, args.out / "feedback" / f"{path.stem}_phanhoi.xlsx")
        except Exception as exc:  # one bad file must not stop the city
            print(f"{path.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed += 1
            continue
        outputs += 1
        n_issues += len(issues)
        rows += sum(len(t) for t in tables.values())
        by_school[code or path.stem] = tables
    learners = write_city_forms(by_school, args.out / "bieu_thanh_pho.xlsx")
    outputs += 1
    print(json.dumps({"files": len(files), "failed": failed, "rows": rows, "learners": learners, "issues": n_issues,
                      "outputs": outputs, "seconds": round(time.perf_counter() - t0, 2)}))


if __name__ == "__main__":
    main()
