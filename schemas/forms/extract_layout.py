"""Extract the layout of a real ministry form export into a form-definition skeleton.

Run once per real export (`python -m schemas.forms.extract_layout --source … --out …`); the
result was then completed by hand with each row's definition (`count`/`sum`/`where`) and is
maintained as data from then on. It records, per sheet: the title block, the header rows and
their merged ranges verbatim, the A/B/C/1/2… numbering row, the column keys
(`<group>.<measure>`) read from the header, and every row (TT, label, unit, Mã số, and the
cells the export marks `#`). The test suite re-reads the exports and checks that every row
code and label is in our definition, in the same sheet and order.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import openpyxl
import yaml
from openpyxl.utils import get_column_letter

from schemas.folding import fold, nfc

GROUPS = {"tong so": "tong_so", "cong lap": "cong_lap", "tu thuc": "tu_thuc", "dan lap": "dan_lap"}
MEASURES = {
    "tong so": "tong", "tong": "tong", "nu": "nu", "kien co": "kien_co", "ban kien co": "ban_kien_co", "tam": "tam",
    "hdlv khong xac dinh thoi han": "vien_chuc_khong_xac_dinh", "hdlv xac dinh thoi han": "vien_chuc_xac_dinh",
    "hop dong lao dong": "hop_dong_lao_dong",
}


def _text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    t = nfc(str(v))
    return t or None


def _merged_value(ws, row: int, col: int):
    for rng in ws.merged_cells.ranges:
        if rng.min_row <= row <= rng.max_row and rng.min_col <= col <= rng.max_col:
            return ws.cell(rng.min_row, rng.min_col).value
    return ws.cell(row, col).value


def _column_keys(ws, header_top: int, header_rows: int, first_col: int, last_col: int) -> list[str]:
    keys = []
    for col in range(first_col, last_col + 1):
        path = [fold(str(_merged_value(ws, r, col) or "")) for r in range(header_top, header_top + header_rows)]
        group = GROUPS.get(path[0], path[0])
        rest = [p for p in path[1:] if p]
        # the deepest header cell names the measure; "Dân tộc thiểu số" above it makes it dtts
        leaf = rest[-1] if rest else "tong so"
        measure = MEASURES.get(leaf, leaf)
        if "dan toc thieu so" in rest:
            measure = "dtts" if measure == "tong" else "dtts_nu" if measure == "nu" else measure
        keys.append(f"{group}.{measure}")
    return keys


def _static(ws, rows: list[list]) -> dict:
    """A sheet of another shape (01-MN-ĐN 'Ngân sách': budget figures no school submits):
    kept verbatim so the form stays complete; its cells are left for the office to fill."""
    width = max((i for r in rows for i, v in enumerate(r) if v is not None), default=0) + 1
    return {"name": ws.title, "static": {"rows": [r[:width] for r in rows], "merges": sorted(str(m) for m in ws.merged_cells.ranges)},
            "widths": {get_column_letter(i): round(ws.column_dimensions[get_column_letter(i)].width or 9, 1) for i in range(1, width + 1)}}


def _sheet(ws, first: bool) -> dict:
    rows = [[_text(c) for c in r] for r in ws.iter_rows(values_only=True)]
    # the numbering row: B..D are A, B, C
    num_row = next((i for i, r in enumerate(rows) if len(r) > 3 and r[1] == "A" and r[2] == "B" and r[3] == "C"), None)
    if num_row is None:
        return _static(ws, rows)
    # the header starts at the first row whose column D says "Mã số" (any case)
    head_top = next(i for i, r in enumerate(rows) if len(r) > 3 and r[3] and fold(r[3]) == "ma so")
    last_col = max(i for i, v in enumerate(rows[num_row]) if v is not None)
    title_block = [r[: last_col + 1] for r in rows[:head_top]] if first else []
    header = [r[: last_col + 1] for r in rows[head_top:num_row]]
    merges = sorted(
        str(m) for m in ws.merged_cells.ranges if head_top + 1 <= m.min_row <= num_row and m.max_row <= num_row
    )
    title_merges = sorted(str(m) for m in ws.merged_cells.ranges if m.max_row <= head_top) if first else []
    keys = _column_keys(ws, head_top + 1, num_row - head_top, 5, last_col + 1)
    out_rows = []
    for r in rows[num_row + 1 :]:
        if not any(r[: last_col + 1]):
            continue
        tt, label, unit, code = (r + [None] * 4)[:4]
        if label is None and tt is None:
            continue
        row: dict = {}
        if tt:
            row["tt"] = tt
        row["label"] = label or ""
        if unit:
            row["unit"] = unit
        if code is not None and re.fullmatch(r"\d+", code):
            row["code"] = int(code)
            na = [k for k, v in zip(keys, r[4 : last_col + 1]) if v == "#"]
            if na:
                row["na"] = na
        elif code:
            row["note_cells"] = r[: last_col + 1]
        out_rows.append(row)
    sheet = {"name": ws.title, "columns": keys, "header": {"rows": header, "merges": merges},
             "numbering": rows[num_row][: last_col + 1], "rows": out_rows}
    if first:
        sheet["title_block"] = {"rows": title_block, "merges": title_merges}
    widths = {get_column_letter(i): round(ws.column_dimensions[get_column_letter(i)].width or 9, 1)
              for i in range(1, last_col + 2)}
    sheet["widths"] = widths
    return sheet


def extract(source: Path) -> dict:
    wb = openpyxl.load_workbook(source)
    sheets = [ws for ws in wb.worksheets if ws.title != "Errors"]
    return {"sheets": [_sheet(ws, i == 0) for i, ws in enumerate(sheets)]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    layout = extract(args.source)
    args.out.write_text(yaml.safe_dump(layout, allow_unicode=True, sort_keys=False, width=200), encoding="utf-8")
    print(f"{sum(len(s.get('rows', [])) for s in layout['sheets'])} rows → {args.out}")


if __name__ == "__main__":
    main()
