"""Golden files for the report forms: the shipped sample city (the one `make demo` builds)
run through ingest → validate → load → reports, and every produced workbook dumped to a
comparable JSON (sheet names, cell values, merged ranges, number formats).

`python -m edustat.golden` (or `make golden`) rewrites `tests/golden/`; the test suite
rebuilds the same in a temp dir and compares. Regenerate only on purpose, and review the diff.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import openpyxl

SAMPLE = {"schools": 10, "seed": 2022, "school_year": "2022-2023", "export_share": 0.3}
GOLDEN_DIR = Path(__file__).resolve().parents[1] / "tests" / "golden"


def build_sample(work: Path) -> dict[str, list[Path]]:
    """Generate the sample city for both periods and run the pipeline on it (no Prefect:
    the same steps the flow composes). Returns period → rendered workbooks."""
    from edustat import pipeline, store
    from edustat.submissions import discover
    from edustat.config import Config
    from edustat.reports import build_reports
    from edustat.synth import generate_city

    cfg = Config(data_dir=work / "data", workers=1, load_policy="load_valid_rows")
    year = SAMPLE["school_year"]
    out = {}
    for period in ("dau_nam", "cuoi_nam"):
        inbox = work / "inbox" / period
        generate_city(inbox, schools=SAMPLE["schools"], seed=SAMPLE["seed"], school_year=year, period=period,
                      export_share=SAMPLE["export_share"])
        con = store.connect(cfg.db_path)
        try:
            pipeline.run_collection(con, discover(inbox), cfg, year, period, f"golden-{period}", workers=1)
            out[period] = build_reports(con, cfg.reports_dir, year, period).files
        finally:
            con.close()
    return out


def dump_workbook(path: Path) -> dict:
    """What a golden comparison looks at: sheets, values, merges, number formats."""
    wb = openpyxl.load_workbook(path)
    out = {}
    for ws in wb.worksheets:
        cells, formats = [], set()
        for row in ws.iter_rows():
            values = [c.value for c in row]
            while values and values[-1] is None:
                values.pop()
            cells.append(values)
            formats.update(c.number_format for c in row if c.value is not None)
        while cells and not cells[-1]:
            cells.pop()
        out[ws.title] = {"cells": cells, "merges": sorted(str(m) for m in ws.merged_cells.ranges),
                         "number_formats": sorted(formats)}
    return out


def write_golden(directory: Path = GOLDEN_DIR) -> list[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        produced = build_sample(Path(tmp))
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        written = []
        for period, files in produced.items():
            for f in files:
                target = directory / period / f"{f.stem}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(dump_workbook(f), ensure_ascii=False, indent=0, default=str) + "\n",
                                  encoding="utf-8")
                written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=GOLDEN_DIR)
    args = ap.parse_args(argv)
    paths = write_golden(args.out)
    print(f"{len(paths)} golden files → {args.out}")


if __name__ == "__main__":
    main()
