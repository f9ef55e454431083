"""Nothing personal leaves the officer's database: a real collection with injected errors
(`edustat run` on `edustat synth --error-rate …`), then every output a non-officer can see is
scanned for the inputs' personal data — names, personal IDs (with and without their leading
zeros), student and staff codes, full birth dates (dd/mm/yyyy and ISO):

- the analysts' snapshot (published/edustat.duckdb, every table and column) and its Parquet tree;
- the report forms (reports/, every cell of every workbook) and the officer charts page;
- the Prefect database (artifacts and logs the dashboard shows);
- the console of `edustat run` and `edustat status`.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import duckdb
import pytest

from edustat.reader import read_workbook
from edustat.synth import generate_city

YEAR, PERIOD = "2022-2023", "dau_nam"
ROOT = Path(__file__).resolve().parents[1]
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
# Prefect's own catalogue, shipped with it (block documentation holds example dates that can
# equal a learner's birth date): not written by a run
PREFECT_STATIC = {"block_schema", "block_type", "block_schema_reference", "alembic_version", "configuration"}


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edustat.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


class Needles:
    """The personal data of the inputs, as sets for fast intersection with an output's tokens."""

    def __init__(self) -> None:
        self.names: set[str] = set()  # full names, lower-cased, single-spaced
        self.numbers: set[str] = set()  # IDs and codes, with and without leading zeros
        self.dates: set[dt.date] = set()
        self.max_words = 1

    def add_name(self, text: str) -> None:
        words = _WORD.findall(text.lower())
        if len(words) >= 2:
            self.names.add(" ".join(words))
            self.max_words = max(self.max_words, len(words))

    def add_number(self, text: str) -> None:
        digits = re.sub(r"\D", "", text)
        for v in (digits, digits.lstrip("0")):
            if len(v) >= 6:  # shorter runs are counts, years, codes of code lists
                self.numbers.add(v)

    def add_date(self, text: str) -> None:
        d = _parse_date(text)
        if d:
            self.dates.add(d)

    def find(self, text: str) -> dict[str, set]:
        """What of the needles occurs in `text`."""
        words = _WORD.findall(text.lower())
        names = set()
        for n in range(2, self.max_words + 1):
            for i in range(len(words) - n + 1):
                g = " ".join(words[i:i + n])
                if g in self.names:
                    names.add(g)
        numbers = set(re.findall(r"\d+", text)) & self.numbers
        dates = {d for d in map(_parse_date, _DATES.findall(text)) if d} & self.dates
        return {k: v for k, v in (("names", names), ("numbers", numbers), ("dates", dates)) if v}


_DATES = re.compile(r"\b\d{1,2}/\d{1,2}/\d{4}\b|\b\d{4}-\d{2}-\d{2}\b")


def _parse_date(text: str) -> dt.date | None:
    text = str(text).strip()[:10]
    for fmt in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    return None


def _needles(inbox: Path) -> Needles:
    n = Needles()
    for f in sorted(inbox.glob("*.xlsx")):
        parsed = read_workbook(f)
        for sid in ("learners", "staff"):
            data = parsed.sheets.get(sid)
            if data is None:
                continue
            frame = data.frame
            for col, add in (("full_name", n.add_name), ("personal_id", n.add_number), ("student_code", n.add_number),
                             ("staff_code", n.add_number), ("birth_date", n.add_date)):
                if col in frame:
                    for v in frame[col].dropna():
                        add(str(v))
    return n


def _xlsx_text(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        return "\n".join(z.read(i).decode("utf-8", "replace") for i in z.namelist() if i.endswith(".xml"))


def _duckdb_text(con, tables: list[str]) -> dict[str, str]:
    out = {}
    for t in tables:
        cols = [r[0] for r in con.execute(f"select column_name from information_schema.columns where table_name = '{t}'").fetchall()]
        rows = con.execute(f'select {", ".join(f"cast({chr(34)}{c}{chr(34)} as varchar)" for c in cols)} from "{t}"').fetchall()
        out[t] = "\n".join(" | ".join("" if v is None else v for v in r) for r in rows) + "\n" + " ".join(cols)
    return out


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("privacy")
    inbox, data = root / "inbox", root / "data"
    generate_city(inbox, schools=5, seed=23, school_year=YEAR, period=PERIOD, export_share=0.4, error_rate=0.03)
    (inbox / "manifest.json").unlink()
    salt = root / "secrets" / "salt"
    env = dict(os.environ, PREFECT_HOME=str(root / "prefect"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", GX_ANALYTICS_ENABLED="False",
               PREFECT_LOGGING_LEVEL="INFO", EDUSTAT_SALT_FILE=str(salt))
    run = _cli("run", "--year", YEAR, "--period", PERIOD, "--inbox", str(inbox), "--data-dir", str(data), env=env)
    status = _cli("status", "--year", YEAR, "--period", PERIOD, "--data-dir", str(data), env=env)
    return {"root": root, "inbox": inbox, "data": data, "run": run, "status": status, "salt": salt,
            "needles": _needles(inbox), "prefect": root / "prefect"}


def test_the_run_had_personal_data_and_errors_to_leak(collection):
    assert collection["run"].returncode == 0, collection["run"].stderr[-3000:]
    n = collection["needles"]
    assert len(n.names) > 500 and len(n.numbers) > 1000 and len(n.dates) > 300
    con = duckdb.connect(str(collection["data"] / "curated" / "edustat.duckdb"), read_only=True)
    try:  # the officer's own database does hold them (the scan below can find what it looks for)
        issues = con.execute("select message from validation_issue").fetchall()
        text = "\n".join(r[0] for r in issues)
        assert n.find(text).get("numbers"), "no ID quoted in the officer's messages: the scan proves nothing"
        assert n.find(text).get("dates"), "no birth date quoted in the officer's messages"
    finally:
        con.close()


def test_the_snapshot_has_no_personal_data(collection):
    pub = collection["data"] / "curated" / "published"
    con = duckdb.connect(str(pub / "edustat.duckdb"), read_only=True)
    try:
        # dim_* are the ministry's public code lists (written from schemas/codelists, never from a
        # submission): a ward called "Lê Minh Xuân" is a place, not a learner
        tables = [r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()
                  if not r[0].startswith("dim_")]
        texts = _duckdb_text(con, tables)
    finally:
        con.close()
    assert "validation_issue" in texts and len(texts["validation_issue"]) > 1000
    leaks = {t: found for t, text in texts.items() if (found := collection["needles"].find(text))}
    assert leaks == {}, {t: {k: sorted(map(str, v))[:5] for k, v in f.items()} for t, f in leaks.items()}


def test_the_parquet_tree_has_no_personal_data(collection):
    pq = collection["data"] / "curated" / "published" / "parquet"
    files = sorted(pq.rglob("*.parquet"))
    assert files
    con = duckdb.connect()
    leaks = {}
    for f in files:
        con.execute(f"create or replace view v as select * from read_parquet('{f}')")
        text = _duckdb_text(con, ["v"])["v"]
        if found := collection["needles"].find(text):
            leaks[str(f.relative_to(pq))] = found
    assert leaks == {}, leaks


def test_reports_and_charts_have_no_personal_data(collection):
    curated = collection["data"] / "curated"
    files = sorted((curated / "reports").rglob("*.xlsx"))
    assert files
    leaks = {}
    for f in files:
        if found := collection["needles"].find(_xlsx_text(f)):
            leaks[f.name] = found
    for f in sorted((curated / "charts").rglob("*.html")):
        if found := collection["needles"].find(f.read_text(encoding="utf-8")):
            leaks[f.name] = found
    assert leaks == {}, leaks


def test_prefect_artifacts_and_logs_have_no_personal_data(collection):
    dbs = list(collection["prefect"].rglob("*.db"))
    assert dbs, "no Prefect database: the dashboard's data could not be scanned"
    leaks = {}
    for db in dbs:
        con = sqlite3.connect(db)
        try:
            for (table,) in con.execute("select name from sqlite_master where type = 'table'").fetchall():
                if table in PREFECT_STATIC:
                    continue
                rows = con.execute(f'select * from "{table}"').fetchall()
                text = "\n".join(" | ".join(str(v) for v in r if isinstance(v, (str, bytes))) for r in rows)
                if found := collection["needles"].find(text):
                    leaks[f"{db.name}:{table}"] = found
        finally:
            con.close()
    assert leaks == {}, leaks


def test_the_console_has_no_personal_data(collection):
    for out in (collection["run"], collection["status"]):
        text = out.stdout + out.stderr
        assert collection["needles"].find(text) == {}, text[-2000:]


def test_the_salt_lives_outside_the_data_tree_0600(collection):
    salt, data = collection["salt"], collection["data"]
    assert salt.exists() and stat.S_IMODE(salt.stat().st_mode) == 0o600
    assert not salt.resolve().is_relative_to(data.resolve())
    assert not [p for p in data.rglob("*salt*")]
    readme = (data / "curated" / "published" / "README.md").read_text(encoding="utf-8")
    assert "Rotating the salt" in readme and "EDUSTAT_SALT_FILE" in readme


def test_messages_are_published_without_values_that_identify_a_person(tmp_path):
    """Without a collection: issues whose value is personal by field, or looks personal in a
    field that is not (a name typed into the ethnicity column), or whose detail quotes an ID or
    a birth date, are published with no trace of it; harmless values stay for data quality."""
    from edustat.publish import publish
    from edustat.store import REGISTER_DDL

    con = duckdb.connect(str(tmp_path / "c.duckdb"))
    con.execute(REGISTER_DDL)
    rows = [
        ("personal_id", "079215001234", "Số định danh cá nhân '079215001234' phải gồm đúng 12 chữ số."),
        ("ethnicity", "Nguyễn Thị Hồng Nhung", "Dân tộc 'Nguyễn Thị Hồng Nhung' không có trong danh mục."),
        ("birth_date", "31/02/2015", "Ngày sinh '31/02/2015' không phải ngày hợp lệ."),
        ("grade", "7", "Khối '7' không khớp khối của lớp (số định danh 79215001234, sinh 2015-03-04)."),
        ("ethnicity", "99", "Dân tộc '99' không có trong danh mục."),
    ]
    for fid, value, msg in rows:
        con.execute("insert into validation_issue (run_id, school_year, period, school_code, file_hash, field, rule_id, "
                    "severity, value, message, fix) values ('r', ?, ?, '74718001', 'h', ?, 'x', 'error', ?, ?, ?)",
                    [YEAR, PERIOD, fid, value, msg, f"Sửa '{value}'."])
    res = publish(con, tmp_path / "pub", salt="s" * 32)
    con.close()
    out = duckdb.connect(str(res.snapshot), read_only=True)
    got = out.execute("select field, value, message, fix from validation_issue order by rowid").fetchall()
    out.close()
    text = repr(got)
    for secret in ("079215001234", "79215001234", "Nguyễn Thị Hồng Nhung", "31/02/2015", "2015-03-04"):
        assert secret not in text, (secret, got)
    assert got[4][1] == "99" and "'99'" in got[4][2]  # a code is not personal: kept for data quality
    assert got[3][1] == "7" and "Khối '7'" in got[3][2]


def scan_outputs(needles: Needles, data: Path, prefect_home: Path | None, console: str = "") -> dict[str, dict]:
    """Every non-officer output of a data dir, scanned: {where: what leaked}. Used by the tests
    above' pieces and, from the command line, on the demo:

        python -m tests.test_privacy --inbox data/sample/2022-2023/dau_nam --inbox … --data data --prefect .prefect
    """
    leaks: dict[str, dict] = {}
    pub = data / "curated" / "published"
    con = duckdb.connect(str(pub / "edustat.duckdb"), read_only=True)
    try:
        tables = [r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()]
        for t, text in _duckdb_text(con, tables).items():
            if found := needles.find(text):
                leaks[f"snapshot:{t}"] = found
    finally:
        con.close()
    con = duckdb.connect()
    for f in sorted((pub / "parquet").rglob("*.parquet")):
        con.execute(f"create or replace view v as select * from read_parquet('{f}')")
        if found := needles.find(_duckdb_text(con, ["v"])["v"]):
            leaks[f"parquet:{f.relative_to(pub)}"] = found
    con.close()
    for f in sorted((data / "curated" / "reports").rglob("*.xlsx")):
        if found := needles.find(_xlsx_text(f)):
            leaks[f"reports:{f.name}"] = found
    for f in sorted((data / "curated" / "charts").rglob("*.html")):
        if found := needles.find(f.read_text(encoding="utf-8")):
            leaks[f"charts:{f.name}"] = found
    for db in sorted(prefect_home.rglob("*.db")) if prefect_home else []:
        lite = sqlite3.connect(db)
        try:
            for (table,) in lite.execute("select name from sqlite_master where type = 'table'").fetchall():
                if table in PREFECT_STATIC:
                    continue
                rows = lite.execute(f'select * from "{table}"').fetchall()
                text = "\n".join(" | ".join(str(v) for v in r if isinstance(v, (str, bytes))) for r in rows)
                if found := needles.find(text):
                    leaks[f"prefect:{db.name}:{table}"] = found
        finally:
            lite.close()
    if found := needles.find(console):
        leaks["console"] = found
    return leaks


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Scan a data dir's non-officer outputs for the inputs' personal data.")
    ap.add_argument("--inbox", action="append", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--prefect", type=Path)
    ap.add_argument("--console", type=Path, help="a file holding the console output of the runs")
    a = ap.parse_args()
    needles = Needles()
    for inbox in a.inbox:
        one = _needles(inbox)
        needles.names |= one.names
        needles.numbers |= one.numbers
        needles.dates |= one.dates
        needles.max_words = max(needles.max_words, one.max_words)
    found = scan_outputs(needles, a.data, a.prefect, a.console.read_text(encoding="utf-8") if a.console else "")
    print(f"needles: {len(needles.names)} names, {len(needles.numbers)} IDs/codes, {len(needles.dates)} birth dates")
    print("leaks:", {k: {kk: sorted(map(str, vv))[:5] for kk, vv in v.items()} for k, v in found.items()} or "none")
    sys.exit(1 if found else 0)
