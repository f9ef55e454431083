"""The per-file cache's metadata index (edustat.metaindex): a lookup through the index gives
exactly what the entry's own Parquet footer gives, reads no footer of an entry it indexed, and
never serves an entry that was rewritten, replaced or removed since. Real Parquet entries
written by edustat.incremental's own writer; no Prefect, no workbook (fast)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pyarrow as pa
import pytest

from edustat import incremental, metaindex

YEAR, PERIOD, VKEY = "2022-2023", "dau_nam", "v" * 64


def _entry(data: Path, i: int, version: str = VKEY, note: str = "") -> tuple[Path, dict]:
    root = incremental.cache_dir(data)
    sha = f"{i:064x}"
    path, _ = incremental._entry_paths(root, sha, f"truong-{i}.xlsx")
    meta = incremental._meta_key(version, YEAR, PERIOD, f"truong-{i}.xlsx", sha)
    meta["fr"] = {"headers": {"__t": "dict", "v": [["Họ và tên", f"cột {i}{note}"]]}, "nan": float("nan")}
    incremental._write_atomic(data, path, pa.table({"x": [i]}), meta)
    return path, meta


def _lookup(data: Path, path: Path, i: int, version: str = VKEY):
    return incremental._entry_meta(path, version, YEAR, PERIOD, f"truong-{i}.xlsx", f"{i:064x}")


def _same(a: dict | None, b: dict | None) -> bool:  # NaN != NaN: compare the JSON text
    import json

    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.fixture()
def data(tmp_path) -> tuple[Path, list[tuple[Path, dict]]]:
    d = tmp_path / "data"
    return d, [_entry(d, i) for i in range(6)]


def _scope(d: Path):
    return metaindex.scope(incremental.cache_dir(d), "issues", YEAR, PERIOD)


def test_a_second_scope_reads_no_footer_and_gets_what_the_footers_say(data):
    d, entries = data
    with _scope(d) as idx:
        first = [_lookup(d, p, i) for i, (p, _) in enumerate(entries)]
    assert idx.footers == len(entries)
    index = metaindex.index_path(incremental.cache_dir(d), "issues", YEAR, PERIOD)
    assert stat.S_IMODE(index.stat().st_mode) == 0o600  # it holds what the entries hold
    with _scope(d) as idx:
        second = [_lookup(d, p, i) for i, (p, _) in enumerate(entries)]
    assert idx.footers == 0, "every entry came from the index"
    outside = [_lookup(d, p, i) for i, (p, _) in enumerate(entries)]  # no scope: the footers
    assert all(_same(a, b) and _same(a, c) for a, b, c in zip(first, second, outside))
    assert second[0]["fr"]["headers"]["v"][0][1] == "cột 0"


def test_a_rewritten_or_removed_entry_is_never_served_from_the_index(data):
    d, entries = data
    with _scope(d):
        for i, (p, _) in enumerate(entries):
            _lookup(d, p, i)
    _entry(d, 1, version="w" * 64)  # rewritten under another version key: now a miss
    _, changed = _entry(d, 2, note=" (sửa)")  # same key, other content
    entries[3][0].unlink()
    with _scope(d) as idx:
        got = [_lookup(d, p, i) for i, (p, _) in enumerate(entries)]
        assert _lookup(d, entries[1][0], 1, version="w" * 64)["version"] == "w" * 64
    assert idx.footers == 2  # the two rewritten entries only
    assert got[1] is None and got[3] is None
    assert got[2]["fr"]["headers"]["v"][0][1] == "cột 2 (sửa)" and _same(got[2], changed)
    # the removed entry's metadata (personal data in real entries) left the index with it
    index = metaindex.index_path(incremental.cache_dir(d), "issues", YEAR, PERIOD)
    assert "truong-3.xlsx".encode() not in index.read_bytes()
    assert "truong-4.xlsx".encode() in index.read_bytes()


def test_a_corrupt_or_planted_index_is_an_empty_one(data, tmp_path):
    d, entries = data
    index = metaindex.index_path(incremental.cache_dir(d), "issues", YEAR, PERIOD)
    with _scope(d):
        for i, (p, _) in enumerate(entries):
            _lookup(d, p, i)
    good = index.read_bytes()
    index.write_bytes(good[: len(good) // 2])  # cut short
    with _scope(d) as idx:
        assert all(_same(_lookup(d, p, i), m) for i, (p, m) in enumerate(entries))
    assert idx.footers == len(entries)
    # a planted index naming a wrong meta for a real entry's identity: still only a hint whose
    # key the caller checks; a symlinked index is neither read nor written through
    outside = tmp_path / "outside.index"
    outside.write_bytes(good.replace("cột 0".encode(), "cột X".encode()))
    index.unlink()
    index.symlink_to(outside)
    with _scope(d) as idx:
        assert _lookup(d, entries[0][0], 0)["fr"]["headers"]["v"][0][1] == "cột 0"
    assert idx.footers == len([entries[0]]) and not index.is_symlink()
    assert "cột X".encode() in outside.read_bytes()
    assert os.stat(index).st_mode & 0o077 == 0


def _issues_entry(data: Path, i: int, n: int = 2, version: str = VKEY) -> Path:
    """An issues entry as incremental.store_issues writes it, for a cached file `i`."""
    fr = _cached(data, i)
    issues = [{"sheet": "learners", "excel_row": 5 + k, "column": "C", "field": "ho_ten", "header": "Họ và tên",
               "rule_id": "r1", "severity": "error", "value": f"giá trị {k}", "message": "sai", "fix": "sửa"}
              for k in range(n)]
    incremental.store_issues(fr, issues, data, version, YEAR, PERIOD)
    return incremental._entry_paths(incremental.cache_dir(data), fr.cache.bytes_sha, fr.name)[1]


def _cached(data: Path, i: int):
    from types import SimpleNamespace

    sha = f"{i:064x}"
    return SimpleNamespace(name=f"truong-{i}.xlsx", sha256=sha, school_code=f"{i:08d}",
                           cache=SimpleNamespace(bytes_sha=sha))


def test_a_checked_issues_entry_is_a_yes_without_its_json_only_for_the_same_file_and_key(data, monkeypatch):
    d, _ = data
    paths = [_issues_entry(d, i) for i in range(4)]
    ok = lambda i, version=VKEY: incremental.issues_entry_ok(_cached(d, i), d, version, YEAR, PERIOD)  # noqa: E731
    with _scope(d) as idx:
        assert all(ok(i) for i in range(4))
    assert idx.footers == 4 and idx.marked == 4
    parsed = []
    real = metaindex.json.loads
    monkeypatch.setattr(metaindex.json, "loads", lambda *a, **k: parsed.append(1) or real(*a, **k))
    with _scope(d) as idx:
        assert all(ok(i) for i in range(4))
    assert idx.footers == 0 and idx.marked == 0 and not parsed, "every yes came from the index"
    # a yes is for one key: another version key asks the bytes (and they say no: a miss)
    with _scope(d):
        assert not ok(0, version="w" * 64) and all(ok(i) for i in range(1, 4))
    assert len(parsed) == 1
    # a rewritten entry (a malformed one here) is asked again, from its new bytes
    incremental._write_atomic(d, paths[1], pa.table({"issues": [1]}),
                              {**incremental._meta_key(VKEY, YEAR, PERIOD, "truong-1.xlsx", f"{1:064x}"),
                               "n_issues": 3, "issue_columns": {}, "encoded_columns": []})
    paths[2].unlink()
    parsed.clear()
    with _scope(d) as idx:
        assert [ok(i) for i in range(4)] == [True, False, False, True]
    assert idx.footers == 1 and len(parsed) == 1  # the rewritten entry only
    with _scope(d) as idx:  # and its no is not remembered as a yes
        assert not ok(1)
    assert len(parsed) == 2


def test_an_index_of_the_first_format_is_an_empty_one(data):
    d, entries = data
    index = metaindex.index_path(incremental.cache_dir(d), "issues", YEAR, PERIOD)
    with _scope(d):
        for i, (p, _) in enumerate(entries):
            _lookup(d, p, i)
    lines = index.read_bytes().split(b"\n")
    # format 1: name, identity, bytes (no token field), as round 10 wrote it
    old = [b"edustat-meta-index 1"] + [b"\t".join(line.split(b"\t", 3)[:2] + line.split(b"\t", 3)[3:])
                                       for line in lines[1:-1]] + [b""]
    index.write_bytes(b"\n".join(old))
    with _scope(d) as idx:
        assert all(_same(_lookup(d, p, i), m) for i, (p, m) in enumerate(entries))
    assert idx.footers == len(entries)


def test_an_entry_written_inside_a_scope_is_recorded_as_its_footer_says_and_only_for_that_file(data, monkeypatch):
    """The run that writes an entry records it (`metaindex.written`): the bytes its footer
    holds and the identity of the file renamed into place; an issues entry with the yes
    `issues_entry_ok` gives. The next scope reads no footer and parses no issues entry; an
    entry touched, rewritten or replaced since is asked again from its own bytes."""
    d, _ = data
    with _scope(d) as idx:
        entries = [_entry(d, 10 + i) for i in range(3)]
        for p, _ in entries:
            metaindex.written(p, (metaindex._identity(os.lstat(p)), metaindex._footer(p)[0]))
        paths = [_issues_entry(d, i) for i in range(3)]  # store_issues records them itself
    assert idx.footers == 0 and idx.recorded == 6
    lines = metaindex.index_path(incremental.cache_dir(d), "issues", YEAR, PERIOD).read_bytes().split(b"\n")
    kept = {ln.split(b"\t", 3)[0].decode(): ln.split(b"\t", 3) for ln in lines[1:-1]}
    for p in paths:  # the very bytes of the footer, the identity of the file in place
        name = p.relative_to(incremental.cache_dir(d)).as_posix()
        assert kept[name][3] == metaindex._footer(p)[0] and kept[name][1] == metaindex._identity(os.lstat(p))
    parsed = []
    real = metaindex.json.loads
    monkeypatch.setattr(metaindex.json, "loads", lambda *a, **k: parsed.append(1) or real(*a, **k))
    ok = lambda i: incremental.issues_entry_ok(_cached(d, i), d, VKEY, YEAR, PERIOD)  # noqa: E731
    with _scope(d) as idx:
        assert all(ok(i) for i in range(3))
        assert not parsed
        assert all(_same(_lookup(d, p, 10 + i), m) for i, (p, m) in enumerate(entries))
    assert idx.footers == 0
    # touched (another mtime), replaced by another file, rewritten with other bytes: each a miss
    os.utime(paths[0], ns=(1, 1))
    other = paths[1].with_name("other.parquet")
    incremental._write_atomic(d, other, pa.table({"issues": [1]}),
                              {**incremental._meta_key(VKEY, YEAR, PERIOD, "truong-1.xlsx", f"{1:064x}"),
                               "n_issues": 3, "issue_columns": {}, "encoded_columns": []})
    os.replace(other, paths[1])
    parsed.clear()
    with _scope(d) as idx:
        assert [ok(i) for i in range(3)] == [True, False, True]
    assert idx.footers == 2 and len(parsed) == 2


def test_a_written_entry_that_fails_its_check_or_was_replaced_is_not_recorded_as_a_yes(data, monkeypatch):
    d, _ = data
    fr = _cached(d, 7)
    checked = []
    real = incremental._issues_of
    with _scope(d) as idx:  # bytes the lookup's check refuses: written, recorded without a yes
        monkeypatch.setattr(incremental, "_issues_of", lambda meta, fr: checked.append(meta) and None)
        incremental.store_issues(fr, [{"sheet": "x"}], d, VKEY, YEAR, PERIOD)
        monkeypatch.setattr(incremental, "_issues_of", real)
    assert idx.recorded == 1 and len(checked) == 1 and checked[0]["n_issues"] == 1  # the bytes parsed back
    assert list(idx.seen.values())[0][1] == metaindex._UNCHECKED
    with _scope(d) as idx:  # asked from the bytes (which pass): no yes was taken for granted
        assert incremental.issues_entry_ok(fr, d, VKEY, YEAR, PERIOD)
    assert idx.marked == 1
    # the name holding another file than the one written: nothing to record
    path = incremental._entry_paths(incremental.cache_dir(d), fr.cache.bytes_sha, fr.name)[1]
    mine = os.stat(path)
    other = path.with_name("other")
    other.write_bytes(path.read_bytes())
    os.replace(other, path)
    assert metaindex.identity_of(path, mine, b"{}") is None
