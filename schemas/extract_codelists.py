"""Extract the official code lists from the ministry's data-sync specification.

Source: `reference/moet/mo-ta-du-lieu-dau-nam_2020_sync-spec.xlsx` (MOET, 26/10/2020).
Every `DM_*` sheet is a ministry list ("DM Bộ"): a few title rows, then a header row starting
`STT | Mã | Tên …`; every `*_SME` sheet is a vendor mapping whose `MOET_CODE` column gives the
ministry code. One CSV per list is written to `schemas/codelists/moet-2020/` with columns
`code, label, label_folded` plus the sheet's other columns (snake-cased), and a
`manifest.json` records the source file's SHA-256 and each list's title and row count.

Run: `python -m schemas.extract_codelists --source ../shared/reference/moet/mo-ta-…xlsx`
(or `make codelists`). The output is committed; the test suite re-extracts and compares.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
from pathlib import Path

import openpyxl

from schemas.folding import fold, nfc

VINTAGE = "moet-2020"
OUT_DIR = Path(__file__).parent / "codelists" / VINTAGE


def _code_text(value: object, width: int) -> str:
    """Codes are text; some cells hold ints (15, 16 …) where their neighbours hold '15'."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = nfc(str(value))
    if text.isdigit() and len(text) < width:
        text = text.zfill(width)
    return text


def _snake(header: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", fold(header)).strip("_") or "col"


def _find_header(rows: list[tuple]) -> int:
    for i, row in enumerate(rows[:12]):
        if any(isinstance(c, str) and nfc(c).upper() == "STT" for c in row):
            return i
    raise ValueError("no 'STT' header row in the first 12 rows")


def read_list(ws) -> tuple[str, list[dict[str, str]], list[str]]:
    """One sheet → (title, rows, extra column names). Rows keep the sheet's order."""
    rows = [tuple(r) for r in ws.iter_rows(values_only=True)]
    h = _find_header(rows)
    title = next(
        (nfc(str(c)) for r in rows[:h] for c in r if isinstance(c, str) and nfc(c)), ws.title
    )
    header = [nfc(str(c)) if c is not None else "" for c in rows[h]]
    stt = next(i for i, c in enumerate(header) if c.upper() == "STT")
    is_sme = ws.title.endswith("_SME") or "CONSTANT_CODE" in header
    if is_sme and "MOET_CODE" in header:
        code_col, label_col = header.index("MOET_CODE"), header.index("CONSTANT_TITLE")
    elif is_sme:
        code_col, label_col = header.index("CONSTANT_CODE"), header.index("CONSTANT_TITLE")
    else:
        # "STT | Mã | Tên …" mostly; some lists put another column first (DM_LOAI_CAN_BO:
        # "Mã | Mã nhóm cán bộ | Tên trường dữ liệu"; DM_TRINH_DO_NGOAI_NGU: "Mã ngoại ngữ | Mã | Tên")
        code_col = header.index("Mã") if "Mã" in header else stt + 1
        names = [i for i, h in enumerate(header) if i > stt and fold(h).startswith("ten")]
        label_col = names[0] if names else code_col + 1
    extra = [
        (i, _snake(name))
        for i, name in enumerate(header)
        if name and i not in (stt, code_col, label_col)
    ]
    raw = [r for r in rows[h + 1 :] if len(r) > code_col and r[code_col] not in (None, "")]
    width = max(
        (len(nfc(str(r[code_col]))) for r in raw if isinstance(r[code_col], str)), default=1
    )
    out = []
    for r in raw:
        label = nfc(str(r[label_col])) if r[label_col] is not None else ""
        rec = {"code": _code_text(r[code_col], width), "label": label, "label_folded": fold(label)}
        for i, name in extra:
            v = r[i] if i < len(r) else None
            rec[name] = "" if v is None else nfc(str(int(v) if isinstance(v, float) and v.is_integer() else v))
        out.append(rec)
    return title, out, [name for _, name in extra]


SYNC_FIELD_SHEETS = ("TruongHocInfo", "LstLopHocInfo", "LstHocSinh", "LstCanBo")


def _write_sync_fields(wb, path: Path) -> None:
    """The sync spec's field names and their Vietnamese descriptions (columns B and E of the
    object sheets): header spellings of the ministry's own words (schemas/vocabulary.py)."""
    rows = []
    for name in SYNC_FIELD_SHEETS:
        for row in wb[name].iter_rows(min_row=3, values_only=True):
            row = list(row) + [None] * 6
            if isinstance(row[1], str) and row[1].strip():
                text = [" ".join(nfc(str(v)).split()) if v is not None else "" for v in (row[1], row[4], row[5])]
                rows.append([name, *text])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["sheet", "field", "description", "csdl_name"])
        w.writerows(rows)


def extract(source: Path, out_dir: Path = OUT_DIR) -> dict:
    """Write every list of `source` to `out_dir`; return the manifest."""
    wb = openpyxl.load_workbook(source, read_only=False, data_only=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.csv"):
        old.unlink()
    lists = {}
    for ws in wb.worksheets:
        name = ws.title
        if not (name.startswith("DM_") or name.endswith("_SME") or name.startswith("TIEU_CHI_")):
            continue
        title, rows, extra = read_list(ws)
        with open(out_dir / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["code", "label", "label_folded", *extra])
            w.writeheader()
            w.writerows(rows)
        lists[name] = {
            "title": title,
            "count": len(rows),
            "kind": "vendor_mapping" if name.endswith("_SME") else "moet",
        }
    (out_dir / "fields").mkdir(exist_ok=True)
    _write_sync_fields(wb, out_dir / "fields" / "sync_fields.csv")
    manifest = {
        "vintage": VINTAGE,
        "source_file": source.name,
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "lists": lists,
    }
    (out_dir / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    m = extract(args.source, args.out)
    print(f"{len(m['lists'])} code lists → {args.out}")


if __name__ == "__main__":
    main()
