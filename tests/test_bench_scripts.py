"""The bench's yardstick and the lake demo produce what they claim: the obvious implementation
writes a feedback workbook per school and the city's counts (learners as the manifest says) and
finds injected errors; the lake's DuckDB query equals each province's own DuckDB."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openpyxl

from edustat.synth import generate_city

ROOT = Path(__file__).resolve().parents[1]


def test_obvious_implementation_writes_its_outputs(tmp_path):
    inbox = tmp_path / "inbox"
    manifest = generate_city(inbox, schools=3, seed=5, school_year="2022-2023", period="dau_nam", error_rate=0.02)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "obvious.py"), str(inbox), str(tmp_path / "out")],
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["files"] == 3 and res["failed"] == 0 and res["outputs"] == 4
    assert res["learners"] == manifest.total_learners  # template files: every learner read
    assert res["issues"] > 0  # 2% injected row errors: some are among the rules it checks
    feedback = sorted((tmp_path / "out" / "feedback").glob("*.xlsx"))
    assert len(feedback) == 3
    listed = sum(openpyxl.load_workbook(p, read_only=True)["PhanHoi"].max_row - 1 for p in feedback)
    assert listed == res["issues"]
    counts = openpyxl.load_workbook(tmp_path / "out" / "bieu_thanh_pho.xlsx", read_only=True)["HocSinh"]
    assert sum(r[2] for r in counts.iter_rows(min_row=2, values_only=True)) == manifest.total_learners


def test_lake_demo_query_equals_each_province(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "lake_demo.py"), "--dir", str(tmp_path), "--schools", "2"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "→ same" in out.stdout
    parts = sorted(p.relative_to(tmp_path / "lake").parts[:4] for p in (tmp_path / "lake").rglob("*.parquet"))
    assert ("core_learners", "year=2022-2023", "period=dau_nam", "province=01") in parts
    assert ("core_learners", "year=2022-2023", "period=dau_nam", "province=74") in parts
