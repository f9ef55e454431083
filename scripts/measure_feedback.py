"""Where a feedback workbook's time goes (issue 12): for the city's schools, CPU seconds of
reading the school's sheets (fastexcel), laying out PhanHoi, and writing the copy
(xlsxwriter, constant_memory on / off), against a receipt (PhanHoi alone). Prints numbers.

    python scripts/measure_feedback.py [--inbox build/incr/city/inbox] [--n 20]
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


def main() -> None:
    import pandas as pd
    import xlsxwriter

    from edustat import feedback as fb
    from edustat import feedback_xlsx as fx

    ap = argparse.ArgumentParser()
    ap.add_argument("--inbox", type=Path, default=ROOT / "build" / "incr" / "city" / "inbox")
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    files = sorted(args.inbox.glob("*.xlsx"))[: args.n]
    issues = pd.DataFrame(columns=list(fb.ISSUE_COLUMNS))
    school = {"school_code": "74718000", "school_name": "Trường thử"}
    counts = {"learners": 1, "staff": 1, "classes": 1}
    now = datetime.now()
    out = Path(tempfile.mkdtemp())
    t = {"read": 0.0, "phanhoi": 0.0, "write (constant_memory)": 0.0, "write (in memory)": 0.0, "receipt": 0.0}
    for i, f in enumerate(files):
        c = time.process_time()
        grids = fx._read_grids(f, "accepted_with_warnings")
        t["read"] += time.process_time() - c
        c = time.process_time()
        frame = fb._normalise(issues)
        content = fb._phanhoi(frame, school=school, status="accepted_with_warnings", counts=counts, school_year="2022-2023",
                              period="dau_nam", generated_at=now, sheet_order=[g.name for g in grids], marked={})
        t["phanhoi"] += time.process_time() - c
        for label, cm in (("write (constant_memory)", True), ("write (in memory)", False)):
            c = time.process_time()
            wb = xlsxwriter.Workbook(str(out / f"{i}-{cm}.xlsx"), {**fx._XLSX_OPTIONS, "constant_memory": cm})
            ws = wb.add_worksheet(fb.TEXT["sheet"])
            fx._render_xlsx(wb, ws, content)
            formats = fx._CellFormats(wb)
            for g in grids:
                fx._copy_sheet(wb, g, {}, formats)
            wb.close()
            t[label] += time.process_time() - c
        c = time.process_time()
        fb.write_receipt(out / f"{i}-receipt.xlsx", school=school, issues=issues, status="accepted", counts=counts,
                         school_year="2022-2023", period="dau_nam", generated_at=now,
                         received={"file": f.name, "version": 1, "hash": "0123456789ab…"})
        t["receipt"] += time.process_time() - c
    print(f"{len(files)} schools, CPU seconds per school:")
    for k, v in t.items():
        print(f"  {k:<26}{v / len(files):8.3f}")


if __name__ == "__main__":
    main()
