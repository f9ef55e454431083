"""The feedback engines side by side on large synthetic workbooks (issue 12): wall seconds of
`write_feedback` for each engine on 10,000 learner rows with 500 issues, and on 1,000 rows ×
30 columns with 100 issues. Prints numbers; the test suite checks these workbooks' correctness
at a smaller size (tests/test_feedback.py), never their time.

    python scripts/measure_feedback_engines.py [--rows 10000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def long_source(path: Path, rows: int) -> Path:
    import openpyxl

    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("HocSinh")
    ws.append(["STT", "Mã", "Họ và tên", "Ngày sinh", "Giới tính", "Dân tộc", "Lớp", "Khối",
               "Trạng thái", "Số định danh", "Ghi chú", "Tổng"])
    for i in range(1, rows + 1):
        ws.append([i, f"74{i:08d}", f"Học sinh {i}", "05/09/2014", "Nam", "Kinh", "3A1", "3",
                   "Đang học", f"0742140{i:05d}", None, f"=A{i + 1}*2"])
    wb.save(path)
    return path


def wide_source(path: Path, rows: int = 1000, cols: int = 30) -> Path:
    import openpyxl

    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("HocSinh")
    ws.append([f"Cột {j}" for j in range(1, cols + 1)])
    for i in range(1, rows + 1):
        ws.append([i if j % 3 == 0 else datetime(2014, 1 + j % 12, 1 + i % 28) if j % 3 == 1 else f"Giá trị {i}-{j}"
                   for j in range(cols)])
    wb.save(path)
    return path


def issue(sheet, row, col, rule, sev, value=None) -> dict:
    return {"sheet": sheet, "excel_row": row, "column": col, "field": None, "header": None, "rule_id": rule,
            "severity": sev, "value": value, "message": f"Thông báo {rule} {value or ''}".strip(), "fix": f"Sửa {rule}"}


def long_issues(rows: int) -> list[dict]:
    out = [issue("HocSinh", 2 + (i * 19) % rows, "CEJ"[i % 3], f"student_rule_{i % 7}",
                 ("error", "warning", "notice")[i % 3], f"v{i}") for i in range(450)]
    return out + [issue("HocSinh", 100 + i, None, "student_duplicate_row", "error") for i in range(50)]


def wide_issues(rows: int = 1000, cols: int = 30) -> list[dict]:
    from openpyxl.utils import get_column_letter

    letters = [get_column_letter(j) for j in range(1, cols + 1)]
    return [issue("HocSinh", 2 + (i * 37) % rows, letters[i % cols], f"student_rule_{i % 7}",
                  ("error", "warning", "notice")[i % 3], f"v{i}") for i in range(100)]


def main() -> None:
    import pandas as pd

    from edustat.feedback import ENGINES, ISSUE_COLUMNS, write_feedback

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    cases = {f"{args.rows:,} rows, 500 issues": (long_source(tmp / "long.xlsx", args.rows), long_issues(args.rows)),
             "1,000 rows × 30 columns, 100 issues": (wide_source(tmp / "wide.xlsx"), wide_issues())}
    for label, (src, rows) in cases.items():
        issues = pd.DataFrame(rows, columns=list(ISSUE_COLUMNS))
        for engine in ENGINES:
            started = time.perf_counter()
            out = write_feedback(src, tmp / engine / f"{src.stem}.xlsx", school={"school_code": "74000123",
                                 "school_name": "Trường TH Phú Hòa"}, issues=issues, status="rejected",
                                 counts={"learners": args.rows}, school_year="2022-2023", period="dau_nam",
                                 generated_at=datetime(2022, 10, 3, 14, 30), engine=engine)
            print(f"write_feedback ({engine:8}) {label}: {time.perf_counter() - started:6.2f} s, "
                  f"{out.stat().st_size / 1e6:.1f} MB", flush=True)


if __name__ == "__main__":
    main()
