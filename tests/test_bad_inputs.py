"""The bad-input corpus (tests/bad_inputs) in ONE real collection next to good schools from
`edustat synth`: `edustat run` as the officer runs it (a subprocess, a real Prefect flow, a
real DuckDB file), then `edustat status`. 0 tracebacks, every good school loaded, every bad
file named in the console and in the status, its expected outcome in the register, and
nothing written outside the data dir. The run is sent to the session's test-started Prefect
server (as `edustat server` serves an officer's runs), not to an ephemeral server of its own:
that start costs ~16 s and is proven by tests/test_cli_truth.py and tests/test_privacy.py."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from edustat.synth import generate_city
from tests.bad_inputs import BY_KIND, EXPECTED, build_corpus_city

YEAR, PERIOD = "2022-2023", "dau_nam"
ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edustat.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    root = tmp_path_factory.mktemp("bad")
    inbox, outside, data = root / "inbox", root / "outside", root / "data"
    built, good = build_corpus_city(inbox, outside, school_year=YEAR, period=PERIOD, tmp_path_factory=tmp_path_factory)
    outside_before = sorted(p.name for p in outside.iterdir())
    env = dict(os.environ, PREFECT_HOME=str(root / "prefect"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", GX_ANALYTICS_ENABLED="False",
               PREFECT_LOGGING_LEVEL="WARNING", EDUSTAT_SALT_FILE=str(root / "salt"),
               PREFECT_API_URL=PREFECT_API_URL.value())
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
    raw = data / "raw" / YEAR / PERIOD
    for entry in raw.iterdir():  # raw copies: by valid code, else unidentified / quarantine
        assert entry.name in ("_quarantine", "_unidentified") or (entry.name.isdigit() and len(entry.name) == 8), entry
    for code in subs.school_code.dropna():
        if not (code.isdigit() and len(code) == 8):
            row = subs[subs.school_code == code].iloc[0]
            assert Path(row.raw_path).parent == raw / "_unidentified", row.raw_path
            assert Path(row.feedback_path).name.startswith("khong_xac_dinh__"), row.feedback_path


def test_symlink_target_is_never_read_or_copied(corpus_run):
    secret = (corpus_run["outside"] / "bi_mat.xlsx").read_bytes()
    digest = hashlib.sha256(secret).hexdigest()
    for p in corpus_run["data"].rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert digest not in p.name
            if p.stat().st_size == len(secret):
                assert p.read_bytes() != secret, p
    assert digest not in set(corpus_run["subs"].file_hash)


# ------------------------------------------------------------------------------------------
# The pieces, without a collection (fast)
# ------------------------------------------------------------------------------------------

def test_a_corpus_edit_kept_for_the_session_is_the_edit_made_again(tmp_path, monkeypatch):
    """bad_inputs._edit's session memo: the same bytes and memo copy the edit made earlier
    (the mutation does not run again) — part for part what the edit makes afresh, but the save
    time in docProps/core.xml; other bytes or another memo are edited anew."""
    import zipfile

    import openpyxl

    import tests.bad_inputs as corpus

    def parts(p: Path) -> dict:
        with zipfile.ZipFile(p) as z:
            return {n: z.read(n) for n in z.namelist() if n != "docProps/core.xml"}

    src = tmp_path / "src.xlsx"
    wb = openpyxl.Workbook(); wb.active.title = "Truong"; wb.active.append(["Mã trường", "74718001"]); wb.save(src)
    calls = []

    def code(value):
        def mutate(wb):
            calls.append(value)
            corpus._set_school(wb, **{"Mã trường": value})
        return mutate

    monkeypatch.setattr(corpus, "EDITS", tmp_path / "edits")
    (tmp_path / "a").mkdir()
    first = corpus._edit(src, tmp_path / "a" / "x.xlsx", code("74718999"), memo="c1")
    again = corpus._edit(src, tmp_path / "x.xlsx", code("74718999"), memo="c1")
    assert calls == ["74718999"] and parts(again) == parts(first)
    monkeypatch.setattr(corpus, "EDITS", None)
    fresh = corpus._edit(src, tmp_path / "fresh.xlsx", code("74718999"), memo="c1")
    assert len(calls) == 2 and parts(fresh) == parts(again)
    assert openpyxl.load_workbook(again)["Truong"]["B1"].value == "74718999"
    monkeypatch.setattr(corpus, "EDITS", tmp_path / "edits")
    other = corpus._edit(src, tmp_path / "y.xlsx", code("74718998"), memo="c2")
    assert calls[-1] == "74718998" and openpyxl.load_workbook(other)["Truong"]["B1"].value == "74718998"
    src.write_bytes(other.read_bytes())  # other bytes, the same memo: edited anew
    corpus._edit(src, tmp_path / "z.xlsx", code("74718999"), memo="c1")
    assert len(calls) == 4


def test_school_code_names_a_path_only_with_its_format():
    from edustat.paths import school_code_for_path

    assert school_code_for_path("74718606") == "74718606"
    for bad in ("/abs/path", "../x", "./74718606", "7471 8606", "74718606\u200b", "７４７１８６０６", "", None, 74718606):
        assert school_code_for_path(bad) is None, bad


def test_inside_refuses_every_escape(tmp_path):
    from edustat.paths import UnsafePath, inside

    root = tmp_path / "data"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    assert inside(root, root / "a" / "b.xlsx") == (root / "a" / "b.xlsx").resolve()
    for bad in (root / ".." / "x.xlsx", Path("/etc/passwd"), root / "link" / "x.xlsx", root):
        with pytest.raises(UnsafePath):
            inside(root, bad)


def _same_as_inside(root, check, cases):
    """`check(path)` refuses what `inside(root, path)` refuses and otherwise gives the same path."""
    from edustat.paths import UnsafePath, inside

    for path in cases:
        try:
            want = inside(root, path)
        except UnsafePath:
            with pytest.raises(UnsafePath):
                check(path)
            continue
        assert check(path) == want, path


def test_inside_dirs_is_inside(tmp_path):
    """paths.inside_dirs (the feedback step's check, each directory resolved once) refuses and
    resolves exactly what `inside` does: a symlinked workbook pointing out, a linked directory,
    `..`, the root itself; and a symlink planted after the directory was resolved."""
    from edustat.paths import UnsafePath, inside, inside_dirs

    root = tmp_path / "data"
    (root / "fb" / "y" / "p").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path)
    (root / "fb" / "y" / "p" / "out.xlsx").symlink_to(tmp_path / "elsewhere.xlsx")
    (root / "fb" / "y" / "p" / "in.xlsx").symlink_to(root / "fb" / "kept.xlsx")
    (root / "fb" / "y" / "p" / "plain.xlsx").write_bytes(b"x")
    check = inside_dirs(root)
    cases = [root / "fb" / "y" / "p" / n for n in ("a.xlsx", "plain.xlsx", "out.xlsx", "in.xlsx", "..", ".")] + [
        root / "link" / "x.xlsx", root / ".." / "x.xlsx", Path("/etc/passwd"), root, root / "fb" / "y" / "p" / "a.xlsx"]
    _same_as_inside(root, check, cases)
    (root / "fb" / "y" / "p" / "late.xlsx").symlink_to(tmp_path / "x.xlsx")  # after the directory was resolved
    with pytest.raises(UnsafePath):
        check(root / "fb" / "y" / "p" / "late.xlsx")


def test_inside_dirs_resolves_directories_as_inside(tmp_path, monkeypatch):
    """inside_dirs resolves a directory from its parent's resolution (the read's raw copies, one
    directory per school): a symlinked directory at any depth (pointing in or out), `..` inside
    the path, an absent directory and a relative path give exactly what `inside` gives."""
    from edustat.paths import UnsafePath, inside, inside_dirs

    root = tmp_path / "data"
    raw = root / "raw" / "2022-2023" / "dau_nam"
    for code in ("11111111", "22222222"):
        (raw / code).mkdir(parents=True)
    (raw / "33333333").symlink_to(tmp_path)  # a school's directory planted as a link out
    (raw / "44444444").symlink_to(raw / "11111111")  # a link that stays inside
    (root / "raw" / "2023-2024").symlink_to(tmp_path / "elsewhere")  # a dangling link higher up
    (root / "raw" / "nested").mkdir()
    (root / "raw" / "nested" / "up").symlink_to(raw)
    cases = [raw / c / "f.xlsx" for c in ("11111111", "22222222", "33333333", "44444444", "absent")]
    cases += [root / "raw" / "2023-2024" / "dau_nam" / "11111111" / "f.xlsx",
              root / "raw" / "nested" / "up" / "11111111" / "f.xlsx",
              raw / ".." / "dau_nam" / "11111111" / "f.xlsx", raw / ".." / ".." / ".." / ".." / "f.xlsx",
              raw / "22222222" / "f.xlsx"]
    check = inside_dirs(root)
    _same_as_inside(root, check, cases)
    monkeypatch.chdir(tmp_path)  # a relative path: resolved against the working directory, as `inside` does
    rel = Path("data") / "raw" / "2022-2023" / "dau_nam" / "22222222" / "g.xlsx"
    assert inside_dirs(root)(rel) == inside(root, rel)
    # the point: many schools' directories, the common part resolved once (not once per directory)
    calls = []
    real = Path.resolve
    monkeypatch.setattr(Path, "resolve", lambda self, *a, **k: calls.append(self) or real(self, *a, **k))
    check = inside_dirs(root)
    for i in range(20):
        check(raw / f"5555{i:04d}" / "f.xlsx")
    assert len(calls) <= 2, calls  # the root, and the first directory's resolution from "/"


def test_undecodable_and_nfd_names_display_as_text():
    import unicodedata

    from edustat.paths import display_name, safe_stem

    name = os.fsdecode(b"Tr\xb0\xeaong.xlsx")
    assert display_name(name) == "Tr\ufffd\ufffdong.xlsx"
    display_name(name).encode("utf-8")  # storable
    nfd = unicodedata.normalize("NFD", "Trường Mầm non.xlsx")
    assert display_name(nfd) == "Trường Mầm non.xlsx"
    assert safe_stem("../../Trường Đức/../x.xlsx").isascii() and "/" not in safe_stem("../../a/b.xlsx")


def test_a_parser_crash_is_that_files_message(tmp_path, monkeypatch):
    import edustat.submissions as collect

    manifest = generate_city(tmp_path / "in", schools=1, seed=3, school_year=YEAR, period=PERIOD)
    path = tmp_path / "in" / manifest.schools[0].file

    def boom(*a, **k):
        raise RecursionError("hostile sheet")

    monkeypatch.setattr(collect, "_structure", boom)
    fr = collect.ingest_file(path, raw_root=tmp_path / "raw", school_year=YEAR, period=PERIOD)
    assert fr.unreadable and [i["rule_id"] for i in fr.issues] == ["file_unreadable"]
    assert "RecursionError" in fr.issues[0]["message"] and path.name in fr.issues[0]["message"]
    assert fr.raw_path.parent.name == "_quarantine"


def test_limits_are_configurable_and_checked_before_loading(tmp_path):
    import yaml

    from edustat.submissions import ingest_file
    from edustat.config import ConfigError, load_config

    manifest = generate_city(tmp_path / "in", schools=1, seed=3, school_year=YEAR, period=PERIOD)
    path = tmp_path / "in" / manifest.schools[0].file
    cfg_file = tmp_path / "edustat.yaml"
    cfg_file.write_text(yaml.safe_dump({"max_sheet_rows": 10, "max_uncompressed_mb": 1}), encoding="utf-8")
    cfg = load_config(cfg_file, tmp_path / "data")
    assert cfg.read_limits.max_sheet_rows == 10 and cfg.read_limits.max_uncompressed_bytes == 1 << 20
    fr = ingest_file(path, raw_root=cfg.raw_dir, school_year=YEAR, period=PERIOD, limits=cfg.read_limits)
    assert fr.unreadable and ("quá nhiều dòng" in fr.issues[0]["message"] or "quá lớn" in fr.issues[0]["message"])
    cfg_file.write_text(yaml.safe_dump({"max_sheet_rows": 0}), encoding="utf-8")
    with pytest.raises(ConfigError):
        load_config(cfg_file, tmp_path / "data")
    cfg_file.write_text(yaml.safe_dump({"salt_file": str(tmp_path / "data" / "curated" / "salt")}), encoding="utf-8")
    with pytest.raises(ConfigError):
        load_config(cfg_file, tmp_path / "data")


def test_invisible_characters_are_stripped_with_a_notice(tmp_path):
    import openpyxl

    from edustat.submissions import ingest_file

    manifest = generate_city(tmp_path / "in", schools=1, seed=3, school_year=YEAR, period=PERIOD)
    src = tmp_path / "in" / manifest.schools[0].file
    wb = openpyxl.load_workbook(src)
    ws = wb["HocSinh"]
    header = [c.value for c in ws[1]]
    col = header.index("Số định danh cá nhân") + 1
    rows = [r for r in range(2, ws.max_row + 1) if ws.cell(row=r, column=col).value][:2]
    clean = [ws.cell(row=r, column=col).value for r in rows]
    assert len(clean) == 2
    ws.cell(row=rows[0], column=col).value = "\u200b" + clean[0] + "\u00ad"
    ws.cell(row=rows[1], column=col).value = clean[1][:4] + "\u2060" + clean[1][4:] + "\ufeff"
    wb.save(src)
    fr = ingest_file(src, raw_root=tmp_path / "raw", school_year=YEAR, period=PERIOD)
    frame = fr.raw["learners"].set_index("excel_row")
    assert [frame.at[r, "personal_id"] for r in rows] == clean
    notes = [i for i in fr.issues if i["rule_id"] == "file_invisible_chars"]
    assert len(notes) == 1 and notes[0]["field"] == "personal_id" and "2 ô" in notes[0]["message"]
    assert notes[0]["severity"] == "notice"


def test_an_empty_inbox_is_a_completed_run(tmp_path, prefect_harness):
    """The nightly scheduled run before the first school submits: completes and says so."""
    from edustat.pipeline import format_summary
    from flows.collect import collection_flow

    (tmp_path / "inbox").mkdir()
    summary = collection_flow(school_year=YEAR, period=PERIOD, inbox=str(tmp_path / "inbox"),
                              data_dir=str(tmp_path / "data"))
    assert summary["files"] == 0 and summary["counts"]["accepted"] == 0
    text = format_summary(summary)
    assert "Chưa có trường nào nộp" in text and "all checks pass" not in text
    con = duckdb.connect(str(tmp_path / "data" / "curated" / "edustat.duckdb"), read_only=True)
    try:
        assert con.execute("select status from run").fetchall() == [("completed",)]
    finally:
        con.close()


def test_a_reader_process_that_dies_is_that_files_message(tmp_path, monkeypatch):
    """The OOM killer (or a crash in a native reader) takes a worker: the pool breaks, every
    file is read again alone, the one that kills its process gets the message."""
    from edustat.config import Config
    from edustat.pipeline import ingest_all

    manifest = generate_city(tmp_path / "in", schools=3, seed=5, school_year=YEAR, period=PERIOD)
    files = sorted((tmp_path / "in").glob("*.xlsx"))
    victim = files[1]
    monkeypatch.setenv("EDUSTAT_FAULT_READER_DIES", victim.name)
    results = ingest_all(files, Config(data_dir=tmp_path / "data", workers=2), YEAR, PERIOD)
    by_name = {fr.name: fr for fr in results}
    assert len(results) == 3
    dead = by_name[victim.name]
    assert dead.unreadable and "dừng đột ngột" in dead.issues[0]["message"] and victim.name in dead.issues[0]["message"]
    for s in manifest.schools:
        if s.file != victim.name:
            assert not by_name[s.file].unreadable and by_name[s.file].school_code == s.school_code
