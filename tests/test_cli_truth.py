"""The command line tells the truth: unknown schools and forms are errors, messages name only
files that exist, unreadable files are named on the console and in `edustat status`, and a
re-saved copy of a workbook (same cells, other bytes) is not a new version."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edustat import store
from edustat.config import load_config
from edustat.pipeline import run_collection
from edustat.synth import generate_city
from tests.inproc import edustat

YEAR, PERIOD = "2022-2023", "dau_nam"
EDUSTAT = str(Path(sys.executable).parent / "edustat")
pytestmark = pytest.mark.slow


def cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_HOME=str(cwd / ".prefect"))
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([EDUSTAT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def resave(src: Path, dest: Path) -> None:
    """The same workbook saved again: every zip member's timestamp changed, cells untouched."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=(2023, 1, 2, 3, 4, 6))
            info.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(info, zin.read(item.filename))


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """`edustat run --no-publish` over 3 schools and one unreadable file (one Prefect run)."""
    work = tmp_path_factory.mktemp("cli-truth")
    inbox = work / "inbox"
    manifest = generate_city(inbox, schools=3, seed=21, school_year=YEAR, period=PERIOD)
    (inbox / "manifest.json").unlink()
    (inbox / "bang_tinh_hong.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    proc = cli("run", "--year", YEAR, "--period", PERIOD, "--inbox", str(inbox), "--data-dir", "data", "--no-publish", cwd=work)
    return {"work": work, "inbox": inbox, "proc": proc, "codes": sorted(s.school_code for s in manifest.schools)}


def test_no_publish_names_no_snapshot(ran):
    out = ran["proc"].stdout
    assert ran["proc"].returncode == 0, ran["proc"].stderr
    assert not (ran["work"] / "data" / "curated" / "published" / "edustat.duckdb").exists()
    assert "published" not in out and "analyst snapshot" not in out
    for path in re.findall(r"(?:feedback|database): (\S+)", out):  # every path printed exists
        assert (ran["work"] / path).exists(), path


def test_unreadable_file_named_on_console_and_in_status(ran):
    assert "bang_tinh_hong.xlsx" in ran["proc"].stdout
    st = cli("status", "--year", YEAR, "--period", PERIOD, "--data-dir", "data", cwd=ran["work"])
    assert st.returncode == 0, st.stderr
    assert "bang_tinh_hong.xlsx" in st.stdout and "Không đọc được tệp" in st.stdout
    for code in ran["codes"]:
        assert code in st.stdout


def test_report_for_an_unknown_school_is_an_error(ran):
    r = cli("report", "--year", YEAR, "--period", PERIOD, "--data-dir", "data", "--school", "99999999", cwd=ran["work"])
    assert r.returncode != 0
    assert r.stderr.startswith("Lỗi: không có trường mã 99999999") and "Traceback" not in r.stderr
    assert "Đã lập" not in r.stdout
    # the other refusals run the same command in this process (tests/inproc.py); this one and the
    # status above are real `edustat` processes
    r = edustat("report", "--year", YEAR, "--period", PERIOD, "--data-dir", "data", "--school", "7471", cwd=ran["work"])
    assert r.returncode != 0 and "8 chữ số" in r.stderr


def test_report_for_an_unknown_form_is_an_error(ran):
    r = edustat("report", "--year", YEAR, "--period", PERIOD, "--data-dir", "data", "--form", "02-TH-CN", cwd=ran["work"])
    assert r.returncode != 0
    assert "không có biểu 02-TH-CN cho kỳ đầu năm" in r.stderr and "02-TH-DN" in r.stderr
    r = edustat("report", "--year", YEAR, "--period", PERIOD, "--data-dir", "data", "--form", "XYZ", cwd=ran["work"])
    assert r.returncode != 0 and "XYZ" in r.stderr


def test_resaved_copy_is_the_same_version(tmp_path):
    inbox = tmp_path / "inbox"
    manifest = generate_city(inbox, schools=2, seed=5, school_year=YEAR, period=PERIOD)
    files = sorted(inbox / s.file for s in manifest.schools)
    again = tmp_path / "again"
    again.mkdir()
    for f in files:
        resave(f, again / f.name)
        assert hashlib.sha256(f.read_bytes()).digest() != hashlib.sha256((again / f.name).read_bytes()).digest()
    cfg = load_config(None, tmp_path / "data")
    with store.session(cfg.db_path) as con:
        run_collection(con, files, cfg, YEAR, PERIOD, workers=1)
        first = con.execute("select school_code, version, file_hash, content_hash from submission order by 1").fetchall()
        run_collection(con, sorted(again.iterdir()), cfg, YEAR, PERIOD, workers=1)
        second = con.execute("select school_code, version, file_hash, content_hash from submission order by 1").fetchall()
        core = con.execute("select count(distinct file_hash) from core_school").fetchone()[0]
    assert first == second, "a re-saved copy is the version already registered"
    assert all(v == 1 and ch for _, v, _, ch in second)
    assert core == 2

    # a real change (one cell) is a new version
    changed = tmp_path / "changed"
    changed.mkdir()
    src = files[0]
    from openpyxl import load_workbook

    wb = load_workbook(src)
    ws = wb["Lop"] if "Lop" in wb.sheetnames else wb.worksheets[2]
    last = ws.max_row
    ws.cell(last, 2).value = f"{ws.cell(last, 2).value} (sửa)"
    wb.save(changed / src.name)
    with store.session(cfg.db_path) as con:
        run_collection(con, [changed / src.name], cfg, YEAR, PERIOD, workers=1)
        versions = dict(con.execute("select school_code, max(version) from submission group by 1").fetchall())
    assert sorted(versions.values()) == [1, 2]
