"""The bad-input corpus (tests/bad_inputs) in ONE real collection next to good schools from
`edustat synth`: `edustat run` as the officer runs it (a subprocess, a real Prefect flow, a
real DuckDB file), then `edustat status`. 0 tracebacks, every good school loaded, every bad
file named in the console and in the status, its expected outcome in the register, and
nothing written outside the data dir."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from edustat.synth import generate_city
from tests.bad_inputs import BY_KIND, EXPECTED, NEEDS_OWN_SCHOOL, build_corpus

YEAR, PERIOD = "2022-2023", "dau_nam"
ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edustat.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    inbox, outside, data = root / "inbox", root / "outside", root / "data"
    n_good = 4
    manifest = generate_city(inbox, schools=len(NEEDS_OWN_SCHOOL) + n_good, seed=31, school_year=YEAR,
                             period=PERIOD, error_rate=0.0)
    (inbox / "manifest.json").unlink()
    by_size = sorted(manifest.schools, key=lambda s: (s.rows["learners"], s.school_code))
    donors = [inbox / s.file for s in by_size[:len(NEEDS_OWN_SCHOOL)]]
    good = by_size[len(NEEDS_OWN_SCHOOL):]
    codes = {s.school_code for s in manifest.schools}
    spare = [c for c in (f"74718{i:03d}" for i in range(999, 900, -1)) if c not in codes]
    built = build_corpus(inbox, donors=donors, good=inbox / good[0].file, good_code=good[0].school_code,
                         spare_codes=spare, outside=outside)
    outside_before = sorted(p.name for p in outside.iterdir())
    env = dict(os.environ, PREFECT_HOME=str(root / "prefect"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", GX_ANALYTICS_ENABLED="False",
               PREFECT_LOGGING_LEVEL="WARNING", EDUSTAT_SALT_FILE=str(root / "salt"))
    run = _cli("run", "--year", YEAR, "--period", PERIOD, "--inbox", str(inbox), "--data-dir", str(data), env=env)
    status = _cli("status", "--year", YEAR, "--period", PERIOD, "--data-dir", str(data), env=env)
    con = duckdb.connect(str(data / "curated" / "edustat.duckdb"), read_only=True)
    subs = con.execute("select * from submission").df()
    issues = con.execute("select * from validation_issue").df()
    con.close()
    return {"root": root, "inbox": inbox, "outside": outside, "data": data, "built": built, "good": good,
            "run": run, "status": status, "subs": subs, "issues": issues, "outside_before": outside_before}


def test_the_corpus_has_at_least_30_kinds():
    assert len(EXPECTED) >= 30 and len(BY_KIND) == len(EXPECTED)


def test_run_completes_without_a_traceback(corpus_run):
    run, status = corpus_run["run"], corpus_run["status"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert status.returncode == 0, status.stderr[-3000:]
    for out in (run.stdout, run.stderr, status.stdout, status.stderr):
        assert "Traceback" not in out, out[-3000:]


def test_every_good_school_is_loaded(corpus_run):
    subs = corpus_run["subs"].set_index("school_code")
    for s in corpus_run["good"]:
        row = subs.loc[s.school_code]
        assert row.status in ("accepted", "accepted_with_warnings"), (s.school_code, row.status)
        assert row.loaded_rows > 0 and row.n_learners == s.rows["learners"]


@pytest.mark.parametrize("kind", [e.kind for e in EXPECTED])
def test_each_bad_input_has_its_outcome(corpus_run, kind):
    exp, built = BY_KIND[kind], corpus_run["built"][kind]
    subs, issues = corpus_run["subs"], corpus_run["issues"]
    if exp.outcome == "copy":
        first, copy = built.names
        assert copy not in set(subs.file_name)
        row = subs[subs.file_name == first].iloc[0]
    else:
        mine = subs[subs.file_name.isin(built.names)]
        assert len(mine) == 1, (kind, built.names, subs.file_name.tolist())
        row = mine.iloc[0]
        if exp.outcome == "accepted":
            assert row.status in ("accepted", "accepted_with_warnings"), (kind, row.status, _errors(issues, row))
            assert row.loaded_rows > 0
            if built.code:
                assert row.school_code == built.code
        else:
            assert row.status == exp.outcome, (kind, row.status, _errors(issues, row))
    if exp.rule_id:
        found = issues[(issues.file_hash == row.file_hash) & (issues.rule_id == exp.rule_id)]
        assert len(found), (kind, exp.rule_id, _errors(issues, row))
        text = " ".join(found.message)
        assert exp.says in text, (kind, text)
        for name in built.names:  # a file-level message names the file (or both twins)
            if exp.rule_id in ("file_unreadable", "file_duplicate_submission"):
                assert name in text, (kind, name, text)


def _errors(issues, row):
    return issues[(issues.file_hash == row.file_hash) & (issues.severity == "error")][["rule_id", "message"]].head(5).values.tolist()


def test_every_bad_file_is_named_in_the_console_and_the_status(corpus_run):
    console, status = corpus_run["run"].stdout, corpus_run["status"].stdout
    for e in EXPECTED:
        if e.outcome == "accepted":
            continue
        for name in corpus_run["built"][e.kind].names:
            assert name in console, (e.kind, name)
            assert name in status, (e.kind, name)


def test_school_codes_never_name_a_path(corpus_run):
    data, outside = corpus_run["data"].resolve(), corpus_run["outside"]
    assert sorted(p.name for p in outside.iterdir()) == corpus_run["outside_before"]  # no victim.xlsx
    assert not (corpus_run["root"] / "x.xlsx").exists() and not (corpus_run["root"].parent / "x.xlsx").exists()
    subs = corpus_run["subs"]
    paths = [Path(p) for p in subs.feedback_path.dropna()] + [Path(p) for p in subs.raw_path.dropna()]
    assert len(subs.feedback_path.dropna()) == len(subs)
    assert subs.feedback_path.is_unique
    for p in paths:
        assert p.resolve().is_relative_to(data), p
        assert p.exists(), p
    # every file the run wrote is inside the data dir, named after a valid code or a hash
    good_code = corpus_run["good"][0].school_code
    own = subs[subs.school_code == good_code].feedback_path.iloc[0]
    other = subs[subs.school_code == f"./{good_code}"].feedback_path.iloc[0]
    assert Path(own).name == f"{good_code}.xlsx" and Path(other).name != Path(own).name
    for code in subs.school_code.dropna():
        if not (code.isdigit() and len(code) == 8):
            assert not (data / "raw" / YEAR / PERIOD / code).exists()


def test_symlink_target_is_never_read_or_copied(corpus_run):
    secret = (corpus_run["outside"] / "bi_mat.xlsx").read_bytes()
    digest = hashlib.sha256(secret).hexdigest()
    for p in corpus_run["data"].rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert digest not in p.name
            if p.stat().st_size == len(secret):
                assert p.read_bytes() != secret, p
    assert digest not in set(corpus_run["subs"].file_hash)
