"""Make the sample city teach: what `make demo` adds to the clean sample so a newcomer sees
every outcome of a collection.

In the sample inbox (made by `edustat synth`), deterministically:
- one school's learner sheet gets two cells a clerk mistyped (sex "X"): with the demo's
  `load_policy: load_valid_rows` the school is loaded without those rows (partially loaded);
- one school's workbook loses its staff sheet: a structure error, nothing of it is loaded (rejected);
- a file that is not a workbook at all arrives (unreadable).
Schools whose synthetic data carry warnings stay "accepted with warnings"; the rest accepted.
Every file's time is set inside the collection window (the last ones after the deadline), so
the summary's "nộp sau hạn N ngày (hạn …)" reads as in a real collection.
With `--config`, also writes a demo config (`load_policy: load_valid_rows`, as config/demo.yaml).

Running it again on a regenerated sample gives the same cells, so a second `make demo` keeps
every school at version 1 (the register compares content, not file bytes).

    python scripts/demo_faults.py data/sample/2022-2023/dau_nam --config data/sample/edustat.yaml
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from openpyxl import load_workbook


def header_row(ws, header: str) -> tuple[int, int] | None:
    for row in ws.iter_rows(min_row=1, max_row=15):
        for cell in row:
            if isinstance(cell.value, str) and cell.value.strip() == header:
                return cell.row, cell.column
    return None


def add_faults(inbox: Path, config: Path | None = None) -> str:
    """Add the faults to `inbox` and write the demo config; returns what was done (Vietnamese)."""
    manifest = json.loads((inbox / "manifest.json").read_text(encoding="utf-8"))
    template = sorted((s for s in manifest["schools"] if s["style"] == "template"), key=lambda s: s["school_code"])
    if len(template) < 2:
        raise SystemExit("demo_faults: the sample needs two template-style schools")
    partial, rejected = template[0], template[1]

    path = inbox / partial["file"]
    wb = load_workbook(path)
    ws = wb[partial["sheets"]["learners"]]
    at = header_row(ws, "Giới tính")
    if at is None:
        raise SystemExit(f"demo_faults: no 'Giới tính' header in {path.name}")
    row, col = at
    for r in (row + 3, row + 7):
        ws.cell(r, col).value = "X"
    wb.save(path)

    path = inbox / rejected["file"]
    wb = load_workbook(path)
    del wb[rejected["sheets"]["staff"]]
    wb.save(path)

    (inbox / "bang_tinh_gui_nham.xlsx").write_text("Đây không phải tệp Excel\n", encoding="utf-8")
    received = set_received_times(inbox, manifest)
    if config is not None:
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("# the demo: a school's rows without errors are loaded even when others have errors\n"
                          "load_policy: load_valid_rows\n", encoding="utf-8")
    return (f"Mẫu minh họa: {partial['school_code']} có 2 ô sai (nạp một phần), {rejected['school_code']} thiếu trang "
            f"cán bộ (chưa tiếp nhận), bang_tinh_gui_nham.xlsx không phải tệp Excel (không đọc được); {received}")


def set_received_times(inbox: Path, manifest: dict) -> str:
    """Files arrive during the collection window, as they would: one every 3 days, the last two
    after the deadline (edustat takes a file's time in the inbox
    as the time it was received)."""
    import datetime as dt
    import os

    from edustat.officer import default_deadline

    params = manifest["params"]
    deadline = default_deadline(params["school_year"], params["period"])
    names = sorted(s["file"] for s in manifest["schools"]) + ["bang_tinh_gui_nham.xlsx"]
    # the last two arrive 1 and 4 days after the deadline
    start = dt.datetime.combine(deadline - dt.timedelta(days=3 * (len(names) - 2) - 1), dt.time(9, 30),
                                tzinfo=dt.timezone(dt.timedelta(hours=7)))
    late = 0
    for i, name in enumerate(names):
        when = start + dt.timedelta(days=3 * i)
        late += when.date() > deadline
        os.utime(inbox / name, (when.timestamp(), when.timestamp()))
    return f"tệp đến từ {start:%d/%m/%Y}, {late} tệp sau hạn {deadline:%d/%m/%Y}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inbox", type=Path)
    ap.add_argument("--config", type=Path, help="also write the demo config here (make demo uses config/demo.yaml)")
    args = ap.parse_args()
    print(add_faults(args.inbox, args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
