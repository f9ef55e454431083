"""Certification: the principal's confirmation that a submission's data is right.

The office's guidance for 2022-2023 (../shared/reference/seed-office-guidance-2022-2023.txt,
line 115: "Hiệu trưởng cơ sở giáo dục tổ chức kiểm tra số liệu định kỳ và chịu trách nhiệm về
…") makes the principal answer for the data. The school sheet `Truong` carries three optional
cells (schemas/submission.yaml): "Hiệu trưởng xác nhận" (Có / Không, the checkbox), "Họ tên
hiệu trưởng" (the signature: the name written by the principal) and "Ngày xác nhận".

A submission is *certified* when the box says Có, a name is written and a date is given. The
register keeps `certified` and `certified_on` (never the name: it is personal data and stays in
stg_school / core_school, pseudonymised on publishing like every `pii` field).

Config `require_certification: true`: an uncertified submission is **rejected** (status
"rejected", not loaded, the rule `file_not_certified` tells the school what is missing), so a
school fixes it by sending the file again with the cells filled. Rejected rather than held:
held files wait for the officer, while the missing confirmation is the school's to give, and the
school learns of it from its feedback the same night. Workbooks without the cells (ministry and
vnEdu exports, older templates) read as before: uncertified, which matters only when required.
"""
from __future__ import annotations

import datetime as dt

import pandas as pd

FIELDS = ("principal_confirmed", "principal_name", "confirmed_on")
# what each missing piece is called in the school's message (the template's headers)
MISSING_TEXT = {"principal_confirmed": "ô 'Hiệu trưởng xác nhận' chưa chọn 'Có'",
                "principal_name": "chưa ghi 'Họ tên hiệu trưởng'",
                "confirmed_on": "chưa ghi 'Ngày xác nhận'"}


def missing(school: dict) -> list[str]:
    """The certification fields a cast school sheet lacks (empty list: certified)."""
    out = []
    if school.get("principal_confirmed") != 1:
        out.append("principal_confirmed")
    name = school.get("principal_name")
    if not (isinstance(name, str) and name.strip()):
        out.append("principal_name")
    if not isinstance(school.get("confirmed_on"), dt.date):
        out.append("confirmed_on")
    return out


def certification(fr) -> tuple[bool | None, dt.date | None]:
    """(certified, date) of a file; (None, None) for a file that could not be read."""
    if fr.unreadable or not fr.school_code:
        return None, None
    ok = not missing(fr.school)
    on = fr.school.get("confirmed_on")
    return ok, (on if ok and isinstance(on, dt.date) else None)


def issues(results, cat) -> pd.DataFrame:
    """One `file_not_certified` issue per readable, active file that lacks the confirmation
    (called only when the config requires certification)."""
    from edustat.submissions import active, not_certified

    rows = []
    for fr in results:
        if fr.unreadable or fr.blocked or not active(fr) or not fr.school_code:
            continue
        gaps = missing(fr.school)
        if not gaps:
            continue
        first = gaps[0]
        rows.append(not_certified(cat, fr, first, "; ".join(MISSING_TEXT[g] for g in gaps)))
    return pd.DataFrame(rows)
