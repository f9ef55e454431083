"""Next year's start-of-year workbook, prefilled from a school's accepted data (issue 11,
item 5): `edustat template --from-year 2022-2023 --school X`.

From the officer's DuckDB (core_* tables: the accepted version of each school) it takes the
school's latest collection of the from-year — end of year (cuoi_nam) when the school has one,
else start of year (dau_nam) — and writes the next school year's dau_nam workbook in the
template's layout (edustat.workbook, the same writer as the blank template) with:

- the school sheet, school year advanced, period dau_nam;
- rooms as declared at the from-year's start (rooms are a start-of-year sheet);
- staff still working (status 01 Đang làm việc, 07 Chuyển đến → 01; 04 Chờ nghỉ hưu kept and
  named in the notes); moved out / reassigned / retired / seconded (02, 03, 05, 06) removed;
- classes advanced one grade (names "3A" → "4A", "Mầm 1" → "Chồi 1" where the grade is the
  name's first number or the MN age word; others kept and named in the notes), the top grade's
  classes (5 in primary, 9 in lower secondary, 5-6-year-olds in preschool) dropped;
- learners on the roll promoted with their MOET codes and personal data: Lên lớp → next grade,
  Lưu ban → same grade, Rèn luyện/kiểm tra lại trong hè → next grade (named in the notes: the
  school confirms), grade-5 completers, grade-9 leavers, preschool leavers, dropouts and
  transfers out removed; end-of-year-only fields are not in a dau_nam workbook; this year's
  status events (status date, dropout reason, health check) cleared; entry type Lên lớp / Lưu
  ban.

A notes sheet (GhiChu) tells the school what was carried over, from which collection, and
what it must check. The workbook holds personal data: written 0600 (0640 with the office's
group), only inside the data dir, named after a school code only once it has its format.
Nothing personal is printed or logged: the CLI line and `RolloverResult.summary` are counts.
"""
from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from schemas import load_contract

ENROLLED = ("01", "02", "03", "06", "07", "10")  # DM_TRANG_THAI_HOC_SINH: still on the roll
TRANSFERRED_OUT = ("04", "08", "11")
DROPPED_OUT = ("05", "09", "12")
STAFF_KEEP = ("01", "04", "07")  # DM_TRANG_THAI_CAN_BO: working, awaiting retirement, transferred in
STAFF_GONE = {"02": "đã chuyển đi", "03": "đã điều động", "05": "đã nghỉ hưu", "06": "đã biệt phái"}
TOP_GRADE = {"TH": 5, "THCS": 9}
FIRST_GRADE = {"TH": 1, "THCS": 6}
# preschool: the class's age group (DM_NHOM_TUOI_MN) advances; 01-03 are crèche groups (grade
# 16 Nhóm trẻ), 04-06 kindergarten (17 Lớp mẫu giáo); 06 (5-6 tuổi) leaves for primary
MN_NEXT_AGE = {"01": "02", "02": "03", "03": "04", "04": "05", "05": "06"}
MN_AGE_WORD = {"04": "Mầm", "05": "Chồi", "06": "Lá"}  # the customary names of 3-4, 4-5, 5-6
ENTRY_PROMOTED, ENTRY_RETAINED = "4", "3"  # edustat/ENTRY_TYPE: Lên lớp, Lưu ban
PERIOD_TEXT = {"dau_nam": "đầu năm (số liệu có đến 30/9)", "cuoi_nam": "cuối năm (số liệu có đến 31/5)"}


class RolloverError(ValueError):
    """The school cannot be rolled over: one Vietnamese line for the officer."""


@dataclass
class RolloverResult:
    school_code: str
    from_year: str
    to_year: str
    source_period: str
    levels: tuple[str, ...]
    school: dict
    tables: dict[str, pd.DataFrame]
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    path: Path | None = None

    def summary(self) -> str:
        """One line for the officer: counts only (nothing personal)."""
        c = self.counts
        return (f"trường {self.school_code}: từ số liệu {self.from_year} kỳ "
                f"{'cuối năm' if self.source_period == 'cuoi_nam' else 'đầu năm'} → mẫu {self.to_year} đầu năm: "
                f"{c.get('classes', 0)} lớp, {c.get('learners', 0)} học sinh "
                f"({c.get('promoted', 0)} lên lớp, {c.get('retained', 0)} lưu ban), "
                f"{c.get('staff', 0)} cán bộ; đã bỏ {c.get('leavers', 0)} học sinh ra khỏi danh sách; "
                f"{c.get('to_check', 0)} điểm cần trường kiểm tra (trang {_notes_sheet()})")


def _notes_sheet() -> str:
    from edustat.workbook import NOTES_SHEET

    return NOTES_SHEET


def next_year(school_year: str) -> str:
    start = int(school_year[:4]) + 1
    return f"{start}-{start + 1}"


# ---------------------------------------------------------------------------------------
# Reading the school's accepted data
# ---------------------------------------------------------------------------------------

def _fields(sheet_id: str) -> list[str]:
    return [f.id for f in load_contract().sheet(sheet_id).fields]


def _frame(con: duckdb.DuckDBPyConnection, table: str, cols: list[str], school: str, year: str, period: str,
           order: str) -> pd.DataFrame:
    have = {r[0] for r in con.execute("select column_name from information_schema.columns where table_name = ?",
                                      [table]).fetchall()}
    sel = ", ".join(f'"{c}"' for c in cols if c in have)
    return con.execute(f"select {sel} from {table} where school_code = ? and school_year = ? and period = ? "
                       f"order by {order}", [school, year, period]).df()


def schools_with_data(con: duckdb.DuckDBPyConnection, from_year: str) -> list[str]:
    """Every school with accepted data in either collection of the year."""
    return [r[0] for r in con.execute("select distinct school_code from core_school where school_year = ? order by 1",
                                      [from_year]).fetchall()]


def load_school(con: duckdb.DuckDBPyConnection, school_code: str, from_year: str) -> tuple[str, dict, dict[str, pd.DataFrame]]:
    """(period used, school row, sheet frames) of the school's latest accepted collection."""
    periods = {r[0] for r in con.execute("select period from core_school where school_code = ? and school_year = ?",
                                         [school_code, from_year]).fetchall()}
    if not periods:
        raise RolloverError(f"trường {school_code} không có số liệu được tiếp nhận trong năm học {from_year} "
                            "(kỳ đầu năm hay cuối năm); không lập được mẫu điền sẵn")
    period = "cuoi_nam" if "cuoi_nam" in periods else "dau_nam"
    school = con.execute("select * from core_school where school_code = ? and school_year = ? and period = ?",
                         [school_code, from_year, period]).df().iloc[0].to_dict()
    frames = {
        "classes": _frame(con, "core_classes", _fields("classes") + ["level"], school_code, from_year, period,
                          "grade, class_name, class_code"),
        "learners": _frame(con, "core_learners", _fields("learners") + ["level"], school_code, from_year, period,
                           "grade, class_code, excel_row"),
        "staff": _frame(con, "core_staff", _fields("staff"), school_code, from_year, period, "excel_row"),
    }
    rooms_period = period
    if not con.execute("select count(*) from core_rooms where school_code = ? and school_year = ? and period = ?",
                       [school_code, from_year, period]).fetchone()[0]:
        rooms_period = "dau_nam"  # rooms are declared at the start of the year
    frames["rooms"] = _frame(con, "core_rooms", _fields("rooms"), school_code, from_year, rooms_period, "excel_row")
    return period, school, frames


# ---------------------------------------------------------------------------------------
# Advancing classes
# ---------------------------------------------------------------------------------------

_FIRST_NUMBER = re.compile(r"(?<!\d)(\d{1,2})(?!\d)")


def advance_name(name: str, grade: int) -> str | None:
    """'3A' → '4A', 'Lớp 6A1' → 'Lớp 7A1': the name's first number is the grade; None when it
    is not (the name cannot be advanced with confidence)."""
    m = _FIRST_NUMBER.search(name or "")
    if not m or int(m.group(1)) != grade:
        return None
    return name[:m.start()] + str(grade + 1) + name[m.end():]


def advance_mn_name(name: str, new_age: str) -> str | None:
    """'Mầm 1' → 'Chồi 1', 'Lớp Chồi A' → 'Lớp Lá A': the customary MN age word, advanced to
    the word of the new age group; None for any other name."""
    text = unicodedata.normalize("NFC", name or "")
    olds = [w for age, w in MN_AGE_WORD.items() if MN_NEXT_AGE.get(age) == new_age]
    for old in olds:
        m = re.search(rf"\b{old}\b", text, flags=re.IGNORECASE)
        if m:
            return text[:m.start()] + MN_AGE_WORD[new_age] + text[m.end():]
    return None


def _plain(v):
    """A school-sheet value as the template writes it: None for blank, 1 not 1.0, text as text."""
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v.item() if hasattr(v, "item") else v


def _grade_code(n: int) -> str:
    return f"{n:02d}"


def _is_blank(v) -> bool:
    return v is None or (not isinstance(v, str) and pd.isna(v))


def _advance_classes(classes: pd.DataFrame, levels: tuple[str, ...]) -> tuple[pd.DataFrame, dict[str, str], list[str], list[str]]:
    """(next year's classes, old code → new code, names kept as they were, classes dropped)."""
    rows, mapping, kept, dropped = [], {}, [], []
    for rec in classes.to_dict("records"):
        grade, name, code = str(rec.get("grade") or ""), str(rec.get("class_name") or ""), str(rec.get("class_code") or "")
        new = dict(rec, _old_code=code)
        if grade in ("16", "17"):  # preschool: the age group advances
            age = None if _is_blank(rec.get("mn_age_group")) else str(rec["mn_age_group"])
            if age == "06":
                dropped.append(name)
                continue
            if age not in MN_NEXT_AGE:
                kept.append(f"{name} (không rõ nhóm tuổi: giữ nguyên)")
                rows.append(new)
                mapping[code] = code
                continue
            new_age = MN_NEXT_AGE[age]
            new["mn_age_group"] = new_age
            new["grade"] = "16" if new_age in ("01", "02", "03") else "17"
            new_name = advance_mn_name(name, new_age)
            if new_name is None:
                kept.append(name)
            else:
                new["class_name"] = new_name
        else:
            try:
                g = int(grade)
            except ValueError:
                kept.append(f"{name} (khối '{grade}' không rõ: giữ nguyên)")
                rows.append(new)
                mapping[code] = code
                continue
            level = "TH" if g <= 5 else "THCS"
            if g >= TOP_GRADE[level]:
                dropped.append(name)
                continue
            new["grade"] = _grade_code(g + 1)
            new_name = advance_name(name, g)
            if new_name is None:
                kept.append(name)
            else:
                new["class_name"] = new_name
                new_code = advance_name(code, g)  # a code written like the name ("6A1") moves with it
                if new_code is not None:
                    new["class_code"] = new_code
        rows.append(new)
        mapping[code] = str(new["class_code"])
    # an advanced code can meet a code kept as it was ("2A" kept, "1A" → "2A"): the later one
    # gets a suffix, and its learners follow it
    taken: set[str] = set()
    for new in rows:
        code = str(new["class_code"])
        if code in taken:
            fresh = _unique_code(code, taken | {str(r["class_code"]) for r in rows})
            mapping[str(new["_old_code"])] = fresh
            new["class_code"] = fresh
            code = fresh
        taken.add(code)
    out = pd.DataFrame(rows, columns=classes.columns)
    return out, mapping, kept, dropped


def _unique_code(base: str, taken: set[str]) -> str:
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


# ---------------------------------------------------------------------------------------
# Promoting learners
# ---------------------------------------------------------------------------------------

def _decision(rec: dict, source_period: str) -> str:
    """promote | retain | summer (promoted, to confirm) | unknown (promoted, no result) | dropout."""
    if source_period != "cuoi_nam":
        return "unknown"
    outcome = None if _is_blank(rec.get("outcome")) else str(rec["outcome"])
    if outcome == "1":
        return "promote"
    if outcome == "2":
        return "summer"
    if outcome == "3":
        return "retain"
    if outcome == "4":
        return "dropout"
    # no outcome: primary's own end-of-year fields decide when they are there
    done = rec.get("completed_grade")
    if not _is_blank(rec.get("year_result")) and str(rec["year_result"]) == "4":
        return "retain"
    if not _is_blank(done):
        return "promote" if int(done) == 1 else "retain"
    return "unknown"


def roll_school(con: duckdb.DuckDBPyConnection, school_code: str, from_year: str) -> RolloverResult:
    period, school_row, frames = load_school(con, school_code, from_year)
    to_year = next_year(from_year)
    levels = tuple(str(school_row.get("levels") or "").split(",")) if school_row.get("levels") else ()
    levels = tuple(lv for lv in ("MN", "TH", "THCS") if lv in levels)
    if not levels:
        raise RolloverError(f"trường {school_code}: không xác định được cấp học; không lập được mẫu điền sẵn")
    contract = load_contract()
    school = {f.id: _plain(school_row.get(f.id)) for f in contract.sheet("school").fields if f.id in school_row}
    school.update(school_code=school_code, school_year=to_year, period="dau_nam")
    school.pop("template_version", None)  # the writer stamps the current contract version

    counts: dict[str, int] = {}
    checks: list[str] = []

    classes, class_map, kept_names, dropped = _advance_classes(frames["classes"], levels)
    old_classes = {str(r["class_code"]): r for r in frames["classes"].to_dict("records")}
    class_columns = list(classes.columns)
    class_rows = classes.to_dict("records")  # dicts: one lookup per learner stays cheap
    grade_of = {str(r["class_code"]): str(r["grade"]) for r in class_rows}

    learners = frames["learners"].copy()
    out_rows, summer, unknown = [], [], 0
    leavers = {"chuyển đi": 0, "thôi học / bỏ học": 0, "hoàn thành chương trình tiểu học": 0,
               "hoàn thành lớp 9": 0, "ra trường mầm non (5-6 tuổi)": 0}
    promoted = retained = 0
    created: list[str] = []

    def class_for(grade: str, prefer_name: str, template_code: str | None) -> str:
        """A class of `grade` for a learner kept in it: the one now named as the learner's old
        class, else the first of that grade, else a class re-created from the old one."""
        same = [r for r in class_rows if str(r["grade"]) == grade]
        if same:
            named = [r for r in same if str(r["class_name"]) == prefer_name]
            return str((named or same)[0]["class_code"])
        base = dict(old_classes.get(template_code) or {"class_name": prefer_name, "mixed": 0, "two_sessions": 0,
                                                       "boarding": 0})
        base.update(grade=grade, class_name=prefer_name or f"Khối {int(grade)}")
        code = str(base["class_name"]).replace(" ", "")
        if code in grade_of:
            code = _unique_code(code, set(grade_of))
        base["class_code"] = code
        class_rows.append(base)
        grade_of[code] = grade
        created.append(str(base["class_name"]))
        return code

    for rec in learners.to_dict("records"):
        st = str(rec.get("status") or "")
        if st in TRANSFERRED_OUT:
            leavers["chuyển đi"] += 1
            continue
        if st in DROPPED_OUT or st not in ENROLLED:
            leavers["thôi học / bỏ học"] += 1
            continue
        grade = str(rec.get("grade") or "")
        old_code = str(rec.get("class_code") or "")
        old_class = old_classes.get(old_code, {})
        new = {k: v for k, v in rec.items()}
        if grade in ("16", "17"):
            age = None if _is_blank(old_class.get("mn_age_group")) else str(old_class["mn_age_group"])
            if age == "06" or (not _is_blank(rec.get("mn_completed_programme")) and int(rec["mn_completed_programme"]) == 1):
                leavers["ra trường mầm non (5-6 tuổi)"] += 1
                continue
            target = class_map.get(old_code)
            if target is None:
                target = class_for(grade, str(old_class.get("class_name") or old_code), old_code)
            new["class_code"] = target
            new["grade"] = grade_of[target]
            new["entry_type"] = None
            new["mn_new_entrant"] = 0
            promoted += 1
        else:
            d = _decision(rec, period)
            if d == "dropout":
                leavers["thôi học / bỏ học"] += 1
                continue
            g = int(grade)
            level = "TH" if g <= 5 else "THCS"
            if d == "retain":
                new["entry_type"] = ENTRY_RETAINED
                new["class_code"] = class_for(grade, str(old_class.get("class_name") or ""), old_code)
                retained += 1
            else:
                if g >= TOP_GRADE[level]:
                    leavers["hoàn thành chương trình tiểu học" if level == "TH" else "hoàn thành lớp 9"] += 1
                    continue
                new_grade = _grade_code(g + 1)
                new["grade"] = new_grade
                new["entry_type"] = ENTRY_PROMOTED
                target = class_map.get(old_code)
                if target is None or grade_of.get(target) != new_grade:
                    old_name = str(old_class.get("class_name") or "")
                    target = class_for(new_grade, advance_name(old_name, g) or old_name, old_code)
                new["class_code"] = target
                promoted += 1
                if d == "summer":
                    summer.append(str(rec.get("student_code") or ""))
                elif d == "unknown":
                    unknown += 1
        # this year's events do not carry over
        new.update(status="01", status_date=None, dropout_reason=None, health_checked=None, nutrition_status=None)
        out_rows.append(new)

    learners_out = pd.DataFrame(out_rows, columns=learners.columns)
    classes = pd.DataFrame(class_rows, columns=class_columns)

    staff = frames["staff"]
    st_status = staff["status"].astype(str)
    staff_out = staff[st_status.isin(STAFF_KEEP)].copy()
    awaiting = int((staff_out["status"].astype(str) == "04").sum())
    staff_out.loc[staff_out["status"].astype(str) == "07", "status"] = "01"
    staff_gone = {STAFF_GONE.get(s, f"trạng thái {s}"): int(n) for s, n in st_status[~st_status.isin(STAFF_KEEP)].value_counts().items()}

    counts.update(classes=len(classes), learners=len(learners_out), promoted=promoted, retained=retained,
                  staff=len(staff_out), leavers=sum(leavers.values()), staff_removed=sum(staff_gone.values()),
                  classes_dropped=len(dropped), classes_created=len(created), names_kept=len(kept_names))

    # ---- the notes sheet ---------------------------------------------------------------
    first = [f"MẪU ĐIỀN SẴN NĂM HỌC {to_year} — KỲ ĐẦU NĂM (số liệu có đến 30/9): trường {school.get('school_name') or ''} ({school_code})",
             f"Số liệu điền sẵn lấy từ số liệu đã được Phòng tiếp nhận năm học {from_year}, kỳ {PERIOD_TEXT[period]}."
             + ("" if period == "cuoi_nam" else " Trường chưa có số liệu cuối năm được tiếp nhận: chưa có kết quả lên lớp, mọi học sinh đang học được coi là lên lớp."),
             "Nhà trường chỉ cần sửa những gì thay đổi: thêm học sinh, cán bộ mới; bỏ người đã đi; sửa lớp; kiểm tra các điểm dưới đây. "
             "Tệp có thông tin cá nhân: chỉ gửi qua kênh Phòng GD&ĐT quy định."]
    lines = [f"Lớp: {len(classes)} lớp ({len(classes) - len(created)} lớp năm trước lên một khối"
             + (f", {len(created)} lớp lập lại cho học sinh lưu ban: {', '.join(created)}" if created else "") + ")."]
    if dropped:
        lines.append(f"Đã bỏ {len(dropped)} lớp cuối cấp (học sinh đã ra trường): {', '.join(dropped)}.")
    if kept_names:
        lines.append(f"KIỂM TRA: {len(kept_names)} tên lớp không đổi được theo khối mới (tên không bắt đầu bằng số khối "
                     f"hay Mầm/Chồi/Lá), đã giữ nguyên tên: {', '.join(kept_names)}. Hãy sửa tên lớp.")
        checks.append("tên lớp")
    starts = [f"lớp {FIRST_GRADE[lv]}" for lv in levels if lv in FIRST_GRADE] + (["nhóm trẻ, lớp mẫu giáo mới"] if "MN" in levels else [])
    lines.append(f"THÊM MỚI: lớp đầu cấp ({', '.join(starts)}) và học sinh mới tuyển, chuyển đến chưa có trong danh sách.")
    lines.append(f"Học sinh: {len(learners_out)} học sinh ({promoted} lên lớp, {retained} lưu ban ở lại khối cũ; "
                 "Loại nhập học đã ghi Lên lớp / Lưu ban; Trạng thái đã đặt Đang học).")
    gone = [f"{n} {what}" for what, n in leavers.items() if n]
    if gone:
        lines.append(f"Đã bỏ khỏi danh sách: {', '.join(gone)}.")
    if summer:
        lines.append(f"KIỂM TRA: {len(summer)} học sinh rèn luyện / kiểm tra lại trong hè đã được xếp lên lớp; nếu không đạt, "
                     f"chuyển về khối cũ và ghi Loại nhập học Lưu ban. Mã học sinh: {', '.join(summer)}.")
        checks.append("thi lại")
    if unknown:
        lines.append(f"KIỂM TRA: {unknown} học sinh chưa có kết quả cuối năm đã được xếp lên lớp.")
        checks.append("chưa có kết quả")
    if "TH" in levels and "THCS" in levels:
        lines.append("Trường nhiều cấp: học sinh hoàn thành chương trình tiểu học không tự chuyển lên lớp 6; "
                     "nếu học tiếp tại trường, thêm vào lớp 6 với Loại nhập học phù hợp.")
    lines.append("Các thông tin của năm trước đã xóa: Ngày trạng thái, Lý do thôi học"
                 + (", Khám sức khỏe, Tình trạng dinh dưỡng (khám lại năm nay)" if "MN" in levels else "")
                 + ". Kết quả cuối năm không có trong mẫu đầu năm.")
    lines.append(f"Cán bộ: {len(staff_out)} người còn làm việc"
                 + (f"; đã bỏ {', '.join(f'{n} {w}' for w, n in staff_gone.items())}" if staff_gone else "") + ".")
    if awaiting:
        lines.append(f"KIỂM TRA: {awaiting} cán bộ ở trạng thái Chờ nghỉ hưu được giữ lại; bỏ khỏi danh sách nếu đã nghỉ.")
        checks.append("chờ nghỉ hưu")
    sent = con.execute("select n_learners, n_staff from submission where school_code = ? and school_year = ? and period = ? "
                       "and is_current and in_core", [school_code, from_year, period]).fetchone()
    if sent and ((sent[0] or 0) > len(learners) or (sent[1] or 0) > len(staff)):
        lines.append(f"KIỂM TRA: bản nộp năm trước có {sent[0]} học sinh, {sent[1]} cán bộ; chỉ {len(learners)} học sinh, "
                     f"{len(staff)} cán bộ được tiếp nhận (dòng có lỗi không được nạp) — các dòng đó không có trong mẫu này.")
        checks.append("dòng chưa tiếp nhận")
    lines.append("Phòng học: điền sẵn theo số liệu đầu năm học trước; sửa nếu có thay đổi."
                 if len(frames["rooms"]) else "Phòng học: năm trước không có số liệu; nhập mới.")
    counts["to_check"] = len(checks)
    notes = first + lines

    tables = {"classes": classes.drop(columns=["level"], errors="ignore"),
              "learners": learners_out.drop(columns=["level"], errors="ignore"),
              "staff": staff_out, "rooms": frames["rooms"]}
    return RolloverResult(school_code=school_code, from_year=from_year, to_year=to_year, source_period=period,
                          levels=levels, school=school, tables=tables, notes=notes, counts=counts)


# ---------------------------------------------------------------------------------------
# Writing, privately, inside the data dir
# ---------------------------------------------------------------------------------------

def default_path(data_dir: Path, result: RolloverResult) -> Path:
    """data/curated/templates/<next year>/mau_<school code>_dau_nam.xlsx (school code checked)."""
    from edustat.paths import inside, school_code_for_path

    code = school_code_for_path(result.school_code)
    if code is None:
        raise RolloverError("mã trường không hợp lệ (phải gồm 8 chữ số); không ghi tệp")
    path = Path(data_dir) / "curated" / "templates" / result.to_year / f"mau_{code}_dau_nam.xlsx"
    inside(data_dir, path)
    return path


def write_rollover(result: RolloverResult, path: Path, data_dir: Path, group: str | int | None = None) -> Path:
    """Write the prefilled workbook at `path` (proven inside `data_dir`): into a private
    temporary file beside it (0600 before the first byte), then renamed over the target."""
    from edustat.paths import inside
    from edustat.store import private_file
    from edustat.workbook import write_submission

    target = inside(data_dir, Path(path))
    if target.suffix.lower() != ".xlsx":
        raise RolloverError(f"tệp ghi ra phải có đuôi .xlsx ({Path(path).name})")
    target.parent.mkdir(parents=True, exist_ok=True)
    inside(data_dir, target.parent)
    fd, tmp = tempfile.mkstemp(prefix=".mau_", suffix=".xlsx", dir=target.parent)  # mode 0600
    os.close(fd)
    try:
        write_submission(Path(tmp), levels=result.levels, period="dau_nam", school_year=result.to_year,
                         school=result.school, tables=result.tables, notes=result.notes)
        private_file(Path(tmp), group)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    result.path = target
    return target


def rollover(db_path: Path, data_dir: Path, from_year: str, school: str, output: Path | None = None,
             group: str | int | None = None, failed: list[str] | None = None) -> list[RolloverResult]:
    """Roll one school (or every school of the year: school="all") over to next year's
    start-of-year workbook; read-only on the database. With "all", a school that cannot be
    rolled over is appended to `failed` (one line each) and the others are written."""
    failed = failed if failed is not None else []
    con = duckdb.connect(str(db_path), read_only=True)
    results: list[RolloverResult] = []
    try:
        codes = schools_with_data(con, from_year) if school == "all" else [school]
        if not codes:
            raise RolloverError(f"không có trường nào có số liệu được tiếp nhận năm học {from_year}")
        if school != "all":
            results.append(roll_school(con, school, from_year))
        else:  # one school's failure is that school's message; the others go on
            for code in codes:
                try:
                    results.append(roll_school(con, code, from_year))
                except (RolloverError, ValueError, KeyError) as exc:
                    failed.append(f"trường {code}: {exc}" if isinstance(exc, RolloverError) else
                                  f"trường {code}: không lập được mẫu điền sẵn ({type(exc).__name__})")
    finally:
        con.close()
    for r in results:
        path = output if (output is not None and school != "all") else default_path(data_dir, r)
        write_rollover(r, path, data_dir, group)
    return results
