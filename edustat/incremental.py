"""Incremental runs (issue 12): what a run may reuse from the runs before it.

During a collection window the office runs nightly while schools trickle in; most files have
not changed since the last run. This module keeps, per submitted file, what reading it and
validating it produced, and, per output, what it was made from, so a run redoes only what
changed:

- **Per-file cache** `<data>/cache/<sha[:2]>/<sha256 of the file's bytes>-<name hash>.parquet`:
  the parsed file (`FileResult` of `submissions.ingest_file`: its sheets as read, the school sheet
  cast, the structure stage's issues) and, once validated, its row and cross-row issues
  (`….issues.parquet`, kept by column since format 2: a run with one school changed
  concatenates the other files' columns instead of rebuilding ~41k issue dicts). An entry is used only when its *version key* matches: a hash of the
  contract, rules catalogue, code lists, vocabulary, form definitions, edustat's own code, and
  the configuration that changes a file's result (severity overrides, read limits) — and its
  school year, period and file name (messages name the file). A corrupt, foreign or stale
  entry is ignored and recomputed (and overwritten). Entries hold personal data: written with
  private modes (0600/0640), atomically (temp file + rename, inside the data dir proven, never
  through a symlink). Cross-school rules are never cached: they run on the whole collection in
  the load.
- **Collection state** (table `incremental_collection`): the fingerprint of the collection a
  load committed (every file's hash, name, time and how it was settled + the version key +
  load policy), written in the load's own transaction. A run whose collection has the same
  fingerprint, whose files all hit the cache and whose register still holds that load's rows
  skips cast, validation and load: the register and issues of that load are its outcome.
- **Output state** (table `incremental_output`): per feedback workbook and per form scope the
  fingerprint of what it was made from, written after the file is in place. A workbook is
  rewritten only when its fingerprint changed or the file is gone; forms render only the
  scopes that changed (the changed schools and the city; a form none of whose schools changed
  is kept as it is, when proven: edustat.formdelta.unchanged_city, city_markers — kind
  'form_city', one row per form); the analysts' snapshot is published
  only when the database state it copies changed.

A kill at any point leaves a state a rerun completes: an entry is either whole or absent; a
state row is written after (feedback, forms) or together with (load) what it stands for.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

CACHE_FORMAT = 2  # 2: an issues entry keeps its issues by column (`issue_columns`), not by row
_ROOT = Path(__file__).resolve().parents[1]
# what a file's result depends on besides its bytes: the declarations and the code that reads them
_KEY_SOURCES = ("schemas", "edustat", "transforms", "expectations")
_KEY_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".csv"}
_SHEET_COL = "__edustat_sheet"


# ---------------------------------------------------------------------------------------
# Version key
# ---------------------------------------------------------------------------------------

def code_digest() -> str:
    """sha256 over edustat's version and every source / declaration file it reads (contract,
    rules catalogue, code lists, vocabulary, forms, expectations, the code)."""
    return _code_digest_impl()


@lru_cache(maxsize=1)
def _code_digest_impl() -> str:
    import edustat

    h = hashlib.sha256(f"format {CACHE_FORMAT}\x00{getattr(edustat, '__version__', '?')}\x00".encode())
    for top in _KEY_SOURCES:
        base = _ROOT / top
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*"), key=lambda q: q.as_posix()):
            if p.is_file() and p.suffix in _KEY_SUFFIXES and "__pycache__" not in p.parts:
                h.update(p.relative_to(_ROOT).as_posix().encode() + b"\x00")
                h.update(p.read_bytes())
                h.update(b"\x00")
    return h.hexdigest()


def version_key(severity: dict | None, limits) -> str:
    """The code digest + the configuration that changes one file's result."""
    conf = {"severity": sorted((severity or {}).items()),
            "limits": [getattr(limits, f) for f in sorted(vars(limits))] if limits is not None else None}
    return hashlib.sha256((code_digest() + json.dumps(conf, default=str)).encode()).hexdigest()


def cache_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "cache"


# ---------------------------------------------------------------------------------------
# Per-file entries
# ---------------------------------------------------------------------------------------

class _Unloaded:
    """The sheets of a cached file before `materialise`: any use is a bug, said loudly. Not a
    dict, so that walkers of task inputs (Prefect) pass it by instead of iterating it."""

    def _no(self, *a, **k):
        raise RuntimeError("cached file's sheets used before edustat.incremental.materialise")

    __getitem__ = __contains__ = __iter__ = __len__ = get = keys = items = values = _no

    def __init__(self, row_counts: dict[str, int] | None = None):
        # rows per sheet as read (FileResult.rows answers from them: the register counts a file's
        # rows without loading its sheets); None for an entry written without them
        self.row_counts = row_counts

    def __reduce__(self):  # a cached result crosses processes (Dask, Prefect) unloaded
        return (_Unloaded, (self.row_counts,))


@dataclass
class Hit:
    """How a cached FileResult came to be (kept on the result as `fr.cache`)."""

    entry: Path
    bytes_sha: str
    ingest_hit: bool
    issues_hit: bool = False
    issues: pd.DataFrame | None = None  # the file's validation issues (identity columns refilled)


def _entry_paths(root: Path, sha: str, name: str) -> tuple[Path, Path]:
    tag = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    # `(root / sha[:2] / base).with_suffix(...)` as it was: `base` (hex digits and "-") has no
    # suffix to replace, so the suffix is appended; one join fewer and no with_suffix per entry
    sub, base = root / sha[:2], f"{sha}-{tag}"
    return sub / f"{base}.parquet", sub / f"{base}.issues.parquet"


def _meta_key(vkey: str, school_year: str, period: str, name: str, sha: str) -> dict:
    return {"format": CACHE_FORMAT, "version": vkey, "school_year": school_year, "period": period, "name": name,
            "sha256": sha}


def _encode(value):
    import datetime as dt

    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):  # numpy scalar
        return _encode(value.item())
    if isinstance(value, dt.datetime):
        return {"__t": "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {"__t": "date", "v": value.isoformat()}
    if isinstance(value, (list, tuple)):
        return {"__t": "tuple" if isinstance(value, tuple) else "list", "v": [_encode(v) for v in value]}
    if isinstance(value, dict):
        return {"__t": "dict", "v": [[_encode(k), _encode(v)] for k, v in value.items()]}
    raise TypeError(f"not cacheable: {type(value).__name__}")


def _decode(value):
    """What `_encode` wrote, decoded: the encoded items inside first, then the value itself by
    `_decode_hook` (only a dict is an encoded value: plain values pass without a call each)."""
    if isinstance(value, dict) and "__t" in value:
        t, v = value["__t"], value["v"]
        if t in ("tuple", "list"):
            v = [_decode(x) if isinstance(x, dict) else x for x in v]
        elif t == "dict":
            v = [[_decode(k) if isinstance(k, dict) else k, _decode(x) if isinstance(x, dict) else x] for k, x in v]
        return _decode_hook({"__t": t, "v": v})
    return value


def _decode_hook(value: dict):
    """`_decode` as json.loads' object_hook: each encoded value decoded as the parser makes it,
    innermost first, instead of walking the parsed entry again (a province's 730 read entries:
    0.30 → 0.22 CPU s). The same values for whatever `_encode` wrote: it writes every dict as
    an encoded one, so the only JSON objects in its output are encoded values (a payload's
    items, already decoded, are taken as they are: `_decode` decodes exactly the items that are
    encoded values); the entry's other objects (the entry, "fr", "sheets", "rows") have no
    "__t" key and pass unchanged. Only for entries read through `_entry_meta(hook=...)`."""
    if "__t" not in value:
        return value
    import datetime as dt

    t, v = value["__t"], value["v"]
    if t == "datetime":
        return dt.datetime.fromisoformat(v)
    if t == "date":
        return dt.date.fromisoformat(v)
    if t == "tuple":
        return tuple(v)
    if t == "list":
        return v
    if t == "dict":
        return dict(v)
    return value


_META_FIELDS = ("school", "school_raw", "school_rows", "school_sheet", "levels", "sheet_names", "columns", "headers",
                "issues", "unreadable", "blocked")


def _write_atomic(data_dir: Path, dest: Path, table, metadata: dict) -> tuple[bytes, bytes] | None:
    """Parquet written beside `dest` and renamed over it; `dest` proven inside the data dir;
    private mode from the start (personal data). Returns what edustat.metaindex keeps of the
    entry as written — the identity of the file now at `dest` and its footer's metadata bytes
    (`metaindex.written`) — or None when the file at `dest` after the rename is not the one
    written (another inode: someone else's, never recorded)."""
    import pyarrow.parquet as pq

    from edustat import metaindex
    from edustat.paths import inside

    inside(data_dir, dest)
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if dest.parent.is_symlink() or dest.is_symlink():
        raise OSError(f"refusing to write through a symlink: {dest}")
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    raw = json.dumps(metadata, ensure_ascii=False).encode("utf-8")
    try:
        with os.fdopen(fd, "wb") as fh:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"edustat": raw})
            pq.write_table(table, fh, use_dictionary=False, write_statistics=False)  # cells mostly unique; read whole
            fh.flush()
            mine = os.fstat(fh.fileno())
        from edustat import faults

        faults.point("cache:written")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # the identity a later lookup compares (the rename changed the file's ctime: taken after it),
    # only when the name still holds the very file written
    return metaindex.identity_of(dest, mine, raw)


def _entry_meta(path: Path, vkey: str, school_year: str, period: str, name: str, sha: str,
                hook=None) -> dict | None:
    """An entry's metadata when it was written for this file, collection and version key;
    None otherwise (absent, corrupt, stale: a miss). `hook`: see `_decode_hook`."""
    from edustat.metaindex import read_meta

    meta = read_meta(path, hook)  # through the collection's index when a scope is open (edustat.metaindex)
    return _keyed(meta, vkey, school_year, period, name, sha)


def _keyed(meta: dict | None, vkey: str, school_year: str, period: str, name: str, sha: str) -> dict | None:
    """`meta` when it was written for this file, collection and version key, else None."""
    if meta is None:
        return None
    key = {k: meta.get(k) for k in ("format", "version", "school_year", "period", "name", "sha256")}
    return meta if key == _meta_key(vkey, school_year, period, name, sha) else None


def _read_meta(path: Path, hook=None):
    """(metadata dict, ParquetFile) of an entry, or None when absent, a symlink or unreadable
    (`hook`: the JSON parser's object_hook)."""
    import pyarrow.parquet as pq

    try:
        st = os.lstat(path)
    except OSError:
        return None
    import stat as stat_

    if not stat_.S_ISREG(st.st_mode):
        return None
    fh = None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        fh = os.fdopen(fd, "rb")
        pf = pq.ParquetFile(fh)
        raw = (pf.schema_arrow.metadata or {}).get(b"edustat")
        meta = json.loads(raw.decode("utf-8"), object_hook=hook) if raw else None
        if isinstance(meta, dict):
            return meta, pf, fh
    except Exception:  # noqa: BLE001 - a corrupt entry is a miss
        pass
    if fh is not None:
        fh.close()
    return None


def store_ingest(data_dir: Path, fr, vkey: str, school_year: str, period: str) -> None:
    """Keep what ingesting `fr` produced (before settling). Best effort: a failure to cache
    never fails the file (the next run reads it again)."""
    import pyarrow as pa

    if not fr.sha256 or fr.raw_path is None or fr.superseded:
        return
    try:
        meta = _meta_key(vkey, school_year, period, fr.name, fr.sha256)
        meta["fr"] = {k: _encode(getattr(fr, k)) for k in _META_FIELDS}
        meta["content_hash"] = fr.content_hash = _content_hash(fr)  # settling needs it: computed once
        sheets, parts = {}, []
        for sid, frame in fr.raw.items():
            sheets[sid] = [[str(c), str(t)] for c, t in zip(frame.columns, frame.dtypes)]
            part = _arrow_table(frame)
            part = part.rename_columns([f"{sid}\x1f{c}" for c in frame.columns])
            parts.append(part.append_column(_SHEET_COL, pa.array([sid] * len(frame), pa.string())))
        meta["sheets"] = sheets
        meta["rows"] = {sid: int(len(frame)) for sid, frame in fr.raw.items()}
        # one file: the sheets one under the other, each with its own columns (nulls elsewhere)
        table = (pa.concat_tables(parts, promote_options="default") if parts
                 else pa.table({_SHEET_COL: pa.array([], pa.string())}))
        table = table.replace_schema_metadata(None)
        path, _ = _entry_paths(cache_dir(data_dir), fr.sha256, fr.name)
        kept = _write_atomic(data_dir, path, table, meta)
        if kept is not None:  # for the run's index of read entries (`pipeline.ingest_all`: metaindex.written)
            fr._cache_written = (str(path), kept)  # type: ignore[attr-defined]
    except OSError:
        raise_if_operator_fault()
    except (TypeError, ValueError):
        return  # a value the cache cannot keep faithfully: not cached


def _arrow_table(frame: pd.DataFrame):
    """`pa.Table.from_pandas(frame, preserve_index=False)` without its pandas metadata (dropped
    from the entry anyway): the Arrow text columns as they are, without pandas' per-column
    type inference (a fifth of writing the cache)."""
    import pyarrow as pa

    if frame.columns.has_duplicates or not all(isinstance(c, str) for c in frame.columns):
        return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    from edustat.framehash import column_arrays

    arrays = []
    for values in column_arrays(frame):
        dtype = values.dtype
        if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
            arrays.append(values._pa_array)
        elif isinstance(values, np.ndarray) and dtype == np.int64:
            arrays.append(pa.chunked_array([pa.array(values, pa.int64())]))
        else:  # anything else: pandas' own conversion
            return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    return pa.Table.from_arrays(arrays, names=list(frame.columns))


def prune_cache(data_dir: Path, results: Iterable, vkey: str, school_year: str, period: str) -> int:
    """After a committed load: remove the entries no run will use again — those of this
    collection for files it no longer holds (a school re-sent: its earlier file's entry), those
    written under another version key (edustat, the rules or the config changed), corrupt ones
    and anything that is not a regular file (never followed). Entries of other collections under
    the current key stay. Returns how many were removed. Deleting only, so a kill part-way leaves
    a cache the next run uses or prunes; entries hold personal data, so none outlives its use."""
    root = cache_dir(data_dir)
    # kept entries as text, compared with each DirEntry.path as it comes (a province's ~1,460
    # entries: a Path made and hashed for each cost ~0.1 s): the same test, since `root` is a
    # Path (its text normalised) and scandir joins it and a bare name with one "/", exactly as
    # str(root / sub / name) writes it
    keep: set[str] = set()
    for fr in results:
        sha = getattr(fr, "bytes_sha", None) or (fr.cache.bytes_sha if getattr(fr, "cache", None) else None)
        if sha:
            keep.update(str(p) for p in _entry_paths(root, sha, fr.name))
    removed = 0
    try:
        subdirs = list(os.scandir(root))
    except OSError:
        return 0
    for sub in subdirs:
        if not sub.is_dir(follow_symlinks=False):
            if sub.is_symlink() or sub.name.endswith(".parquet"):
                removed += _remove(Path(sub.path))
            continue
        for entry in os.scandir(sub.path):
            if entry.path in keep and entry.is_file(follow_symlinks=False):
                continue
            path = Path(entry.path)
            if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                removed += _remove(path)
                continue
            if not entry.name.endswith(".parquet"):
                continue  # a temp file being written by no one (the run holds the writer lock): left to clean_temp_files
            got = _read_meta(path)
            if got is not None:
                got[2].close()
            meta = got[0] if got is not None else None
            if (meta is None or meta.get("format") != CACHE_FORMAT or meta.get("version") != vkey
                    or (meta.get("school_year"), meta.get("period")) == (school_year, period)):
                removed += _remove(path)
    return removed


def _remove(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return 0  # a directory where an entry should be: not ours to delete recursively
        path.unlink()
        return 1
    except OSError:
        return 0


def raise_if_operator_fault() -> None:
    """A full disk or a read-only dir is the run's fault to report, not a cache miss."""
    import sys

    from edustat.pipeline import is_operator_fault

    exc = sys.exc_info()[1]
    if exc is not None and is_operator_fault(exc):
        raise exc


def _content_hash(fr) -> str | None:
    from edustat.pipeline import content_hash

    return content_hash(fr)


def lookup(path: Path, data_dir: Path, vkey: str, school_year: str, period: str, raw_root: Path, prove=None):
    """The cached FileResult of the file at `path` (sheets not loaded: see `materialise`), or
    None. The raw copy is kept as a cold read would (content-addressed: a no-op when present;
    `prove`: the caller's `paths.inside_dirs(raw_root)`, see `submissions._keep_raw`)."""
    from edustat.submissions import FileResult, _keep_raw, _refusal
    from edustat.paths import UNIDENTIFIED, display_name, school_code_for_path
    from edustat.reader import file_sha256

    path = Path(path)
    if _refusal(path):
        return None
    try:
        sha = file_sha256(path)
        mtime = os.lstat(path).st_mtime
    except OSError:
        return None
    name = display_name(path.name)
    entry, issues_entry = _entry_paths(cache_dir(data_dir), sha, name)
    meta = _entry_meta(entry, vkey, school_year, period, name, sha, hook=_decode_hook)  # "fr" decoded as parsed
    if meta is None:
        return None
    try:
        vals = meta["fr"]
        fr = FileResult(path=path, sha256=sha, received_mtime=mtime, **vals)
        fr.levels = tuple(fr.levels)
        rows = meta.get("rows")
        fr.raw = _Unloaded({str(k): int(v) for k, v in rows.items()} if isinstance(rows, dict) else None)
        fr.content_hash = meta.get("content_hash")  # type: ignore[attr-defined]
        fr.cache = Hit(entry=entry, bytes_sha=sha, ingest_hit=True)  # type: ignore[attr-defined]
        fr._cache_sheets = meta["sheets"]  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a malformed entry is a miss
        return None
    code = school_code_for_path(fr.school_code)
    dest = raw_root.joinpath(school_year, period, "_quarantine" if fr.unreadable else (code or UNIDENTIFIED))
    fr.raw_path = _keep_raw(path, sha, dest, raw_root, prove)
    return fr


def materialise(results: Iterable) -> None:
    """Load the sheets of cached results (before casting); a cold result is left as it is.
    An entry that cannot be read now (removed, corrupt) is read from the file again."""
    import pyarrow.parquet as pq

    for fr in results:
        if not isinstance(fr.raw, _Unloaded):
            continue
        hit: Hit = fr.cache  # type: ignore[attr-defined]
        try:
            fd = os.open(hit.entry, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                table = pq.read_table(fh)
            meta = json.loads(table.schema.metadata[b"edustat"].decode("utf-8"))
            if meta.get("sha256") != hit.bytes_sha or meta.get("sheets") != fr._cache_sheets:  # type: ignore[attr-defined]
                raise ValueError("entry changed under the run")
            import pyarrow as pa
            import pyarrow.compute as pc

            raw = {}
            mapper = {pa.string(): pd.StringDtype(), pa.large_string(): pd.StringDtype()}.get
            for sid, cols in meta["sheets"].items():
                part = table.filter(pc.equal(table[_SHEET_COL], sid)).select([f"{sid}\x1f{c}" for c, _ in cols])
                out = part.to_pandas(types_mapper=mapper)
                out.columns = [c for c, _ in cols]
                # only the columns Arrow did not give back in their dtype (astype copies every column)
                recast = {c: t for c, t in cols if str(out[c].dtype) != t}
                out = out.astype(recast) if recast else out
                raw[sid] = out.set_axis(pd.RangeIndex(len(out)))
            fr.raw = raw
        except Exception:  # noqa: BLE001 - read the file again, as a cold run would
            fresh = _reingest(fr)
            fr.raw = fresh.raw
            hit.ingest_hit = False


def _reingest(fr):
    from edustat.submissions import ingest_file

    from schemas.rules import load_rules

    ctx = fr._cache_ctx  # type: ignore[attr-defined]
    return ingest_file(fr.path, raw_root=ctx["raw_root"], school_year=ctx["school_year"], period=ctx["period"],
                       catalogue=load_rules(ctx["severity"]), limits=ctx["limits"])


# ---------------------------------------------------------------------------------------
# Validation issues per file
# ---------------------------------------------------------------------------------------

_ID_COLS = ("school_code", "file_hash", "file_name")


# the columns an issues entry keeps (identity columns are refilled per run: `lookup_issues`)
_KEPT_COLS = ("sheet", "excel_row", "column", "field", "header", "rule_id", "severity", "value", "message", "fix")


def _decode_column(values: list) -> list:
    # only a dict is an encoded value (see _encode): plain values pass without a call each
    return [_decode(v) if isinstance(v, dict) else v for v in values]


def lookup_issues(fr, data_dir: Path, vkey: str, school_year: str, period: str) -> dict[str, list] | None:
    """The file's validation issues (row rules, cross-row rules, casting notices) as a cold
    validation gave them, by column (every one of ISSUE_COLUMNS, identity columns refilled for
    this run); None on a miss."""
    hit = getattr(fr, "cache", None)
    if hit is None:
        return None
    _, path = _entry_paths(cache_dir(data_dir), hit.bytes_sha, fr.name)
    return _issues_of(_entry_meta(path, vkey, school_year, period, fr.name, hit.bytes_sha), fr)


def _issues_of(meta: dict | None, fr) -> dict[str, list] | None:
    """`lookup_issues` on an entry's metadata already read and keyed (`_entry_meta`)."""
    if meta is None:
        return None
    try:
        kept, n = meta["issue_columns"], meta["n_issues"]
        if not isinstance(kept, dict) or set(kept) != set(_KEPT_COLS) or not isinstance(n, int) \
                or any(not isinstance(kept[c], list) or len(kept[c]) != n for c in _KEPT_COLS):
            return None  # a malformed entry is a miss
        encoded = meta["encoded_columns"]  # the columns holding a typed value (a date, a list...)
        if not isinstance(encoded, list) or not set(encoded) <= set(_KEPT_COLS):
            return None
        ident = {"school_code": fr.school_code, "file_hash": fr.sha256, "file_name": fr.name}
        from edustat.submissions import ISSUE_COLUMNS

        return {c: [ident[c]] * n if c in ident else _decode_column(kept[c]) if c in encoded else kept[c]
                for c in ISSUE_COLUMNS}
    except Exception:  # noqa: BLE001 - a malformed entry is a miss
        return None


def _issues_token(vkey: str, school_year: str, period: str, name: str, sha: str) -> bytes:
    """What a yes recorded for an issues entry stands for: `lookup_issues` gave its issues
    under this key (the version key digests the code, `lookup_issues` included)."""
    key = json.dumps(["issues-ok", _meta_key(vkey, school_year, period, name, sha)], ensure_ascii=True)
    return hashlib.sha256(key.encode()).hexdigest().encode()


def issues_entry_ok(fr, data_dir: Path, vkey: str, school_year: str, period: str) -> bool:
    """Whether `lookup_issues` would give the file's issues (a hit), without building them.
    Inside a scope of the issues index (edustat.metaindex), a yes is recorded beside the
    entry's bytes and, for the same entry file under the same key, given again without parsing
    them (a province's nothing-changed rerun parsed 13.7 MB of issues JSON only for this)."""
    from edustat import metaindex

    hit = getattr(fr, "cache", None)
    if hit is None:
        return False
    _, path = _entry_paths(cache_dir(data_dir), hit.bytes_sha, fr.name)
    token = _issues_token(vkey, school_year, period, fr.name, hit.bytes_sha)
    if metaindex.checked(path, token):
        return True
    if lookup_issues(fr, data_dir, vkey, school_year, period) is None:
        return False
    metaindex.mark(path, token)
    return True


def _by_column(records: list[dict]) -> dict[str, list]:
    from edustat.submissions import ISSUE_COLUMNS

    return {c: [rec.get(c) for rec in records] for c in ISSUE_COLUMNS}


def store_issues(fr, issues: list[dict], data_dir: Path, vkey: str, school_year: str, period: str) -> None:
    """Keep a file's validation issues (best effort, as `store_ingest`). The entry is a
    Parquet file whose metadata holds the issues by column (typed JSON: one list per kept
    column, so a warm run concatenates lists instead of rebuilding a dict per issue); its one
    row counts them."""
    import pyarrow as pa

    sha = getattr(fr, "bytes_sha", None) or (fr.cache.bytes_sha if getattr(fr, "cache", None) else None)
    if not sha:
        return
    try:
        meta = _meta_key(vkey, school_year, period, fr.name, sha)
        meta["n_issues"] = len(issues)
        meta["issue_columns"] = {c: [_encode(None if (not isinstance(v, (str, list, tuple, dict)) and pd.isna(v)) else v)
                                     for v in (rec.get(c) for rec in issues)] for c in _KEPT_COLS}
        meta["encoded_columns"] = [c for c, vals in meta["issue_columns"].items() if any(isinstance(v, dict) for v in vals)]
        table = pa.table({"issues": [len(issues)]})
        _, path = _entry_paths(cache_dir(data_dir), sha, fr.name)
        kept = _write_atomic(data_dir, path, table, meta)
    except OSError:
        raise_if_operator_fault()
        return
    except (TypeError, ValueError):
        return
    if kept is not None:
        # recorded in the open scope's index (validate_incremental's) with the yes that
        # `issues_entry_ok` would give: the very bytes written, parsed as a lookup parses them
        # and checked by the same function (`_issues_of`), under the same key and token
        try:
            back = json.loads(kept[1].decode("utf-8"))
        except ValueError:
            back = None
        ok = _issues_of(_keyed(back if isinstance(back, dict) else None, vkey, school_year, period, fr.name, sha), fr)
        from edustat import metaindex

        metaindex.written(path, kept, _issues_token(vkey, school_year, period, fr.name, sha) if ok is not None else None)


_ALL_COLS = set(_KEPT_COLS) | set(_ID_COLS)

REUSE_CAST_FRAMES = True  # tests and scripts/measure: False casts the subset again, as before


def frames_of_subset(frames, todo: list[int]):
    """The cast step's frames (`assemble_changed`: the files read anew, `_file` indexing the
    whole results) as `assemble([results[i] for i in todo])` makes them, when they cover exactly
    the files `todo` (sorted): the same rows, row keys, notices and ambiguous cells, with `_file`
    renumbered to the subset's positions. New frames; the cast step's stay as they are (the load
    uses them). None when they cover other files (then the subset is cast again)."""
    covers = getattr(frames, "covers", None)
    if not REUSE_CAST_FRAMES or frames is None or covers is None or set(covers) != set(todo):
        return None
    from edustat.submissions import Frames

    position = {i: k for k, i in enumerate(todo)}

    def renumbered(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(_file=frame["_file"].map(position).astype(frame["_file"].dtype))

    out = Frames({sid: renumbered(f) for sid, f in frames.raw.items()},
                 {sid: renumbered(f) for sid, f in frames.typed.items()},
                 list(frames.notices), set(frames.ambiguous))
    out.covers = frozenset(position.values())  # type: ignore[attr-defined]  # a partial cast: no headstart
    return out


def validate_incremental(results: list, cfg, school_year: str, period: str, frames=None) -> pd.DataFrame:
    """Stages b and c per file: a file validated before (cache hit, same version key) keeps its
    issues; the others are validated together (frames of the whole collection when they are all
    of it). Row rules and cross-row rules see one file's rows only (rows are matched within their
    own file), so a file's issues do not depend on the other files: the same rows cold or warm.
    Not the same row ORDER: a warm run lists the structure stage's issues of every file, then each
    file's own issues in results order; a cold validation of the whole collection orders them
    otherwise (seen on the city, 1 Dec 2026; tests compare the frames sorted).
    Cross-school rules run later, in the load, on the whole collection."""
    from edustat import metaindex

    vkey = version_key(cfg.severity, cfg.read_limits)
    # one scope of the issues index for the lookups and the entries written (`store_issues`
    # records them): the index saved holds every active file's entry with its yes, so the next
    # run's `unchanged_outcome` parses none of them (edustat.metaindex)
    with metaindex.scope(cache_dir(cfg.data_dir), "issues", school_year, period):
        return _validate_incremental(results, cfg, school_year, period, frames, vkey)


def _validate_incremental(results: list, cfg, school_year: str, period: str, frames, vkey: str) -> pd.DataFrame:
    from edustat.submissions import ISSUE_COLUMNS, active
    from schemas.rules import load_rules

    from edustat import metaindex

    act = [i for i, fr in enumerate(results) if active(fr)]
    per_file: dict[int, dict[str, list]] = {}  # by column (ISSUE_COLUMNS)
    for i in act:
        fr = results[i]
        got = lookup_issues(fr, cfg.data_dir, vkey, school_year, period)
        if got is not None:
            per_file[i] = got
            fr.cache.issues_hit = True
            # the yes `issues_entry_ok` asks for: `lookup_issues` gave the issues, under this key
            metaindex.mark(_entry_paths(cache_dir(cfg.data_dir), fr.cache.bytes_sha, fr.name)[1],
                           _issues_token(vkey, school_year, period, fr.name, fr.cache.bytes_sha))
    todo = [i for i in act if i not in per_file]
    if todo:
        sub = [results[i] for i in todo]
        materialise(sub)
        whole = frames if (frames is not None and len(todo) == len(act) and getattr(frames, "covers", None) is None) else None
        from edustat.pipeline import validate_isolated

        if whole is None:
            # a subset keeps its own file indexes inside validate_collection: pass it alone
            # (with the cast step's frames of exactly these files, renumbered, when there are)
            found = validate_isolated(sub, school_year=school_year, period=period,
                                      catalogue=load_rules(cfg.severity), frames=frames_of_subset(frames, todo))
        else:
            found = validate_isolated(results, school_year=school_year, period=period,
                                      catalogue=load_rules(cfg.severity), frames=frames)
        n_structure = sum(len(fr.issues) for fr in (sub if whole is None else results))
        rest = found.iloc[n_structure:]
        recs = rest.astype(object).where(rest.notna(), None).to_dict("records")
        by_hash: dict[str, list[dict]] = {}
        for rec in recs:
            by_hash.setdefault(rec["file_hash"], []).append(rec)
        for i in todo:
            fr = results[i]
            mine = by_hash.get(fr.sha256, [])
            for rec in mine:
                if rec.get("excel_row") is not None:
                    rec["excel_row"] = int(rec["excel_row"])
            per_file[i] = _by_column(mine)
            if cfg.incremental:
                store_issues(fr, mine, cfg.data_dir, vkey, school_year, period)
    structure = [iss for fr in results for iss in fr.issues]
    if any(iss.keys() != _ALL_COLS for iss in structure):  # not every column given: as a cold validation builds it
        issues = structure
        for i in act:
            issues.extend(dict(zip(ISSUE_COLUMNS, row)) for row in zip(*(per_file[i][c] for c in ISSUE_COLUMNS)))
        frame = pd.DataFrame(issues, columns=ISSUE_COLUMNS)
    else:
        # the same rows as the list of dicts a cold validation gives pandas, as tuples in the
        # same column order: pandas infers each column's dtype from the same values the same
        # way (list of dicts and list of lists share its object-array conversion)
        columns = {c: [iss[c] for iss in structure] for c in ISSUE_COLUMNS}
        for i in act:
            for c in ISSUE_COLUMNS:
                columns[c].extend(per_file[i][c])
        frame = pd.DataFrame(list(zip(*(columns[c] for c in ISSUE_COLUMNS))), columns=ISSUE_COLUMNS)
    frame["excel_row"] = frame["excel_row"].astype("Int64")
    return frame


# ---------------------------------------------------------------------------------------
# The collection: a load skipped when nothing changed
# ---------------------------------------------------------------------------------------

STATE_DDL = """
create table if not exists incremental_collection (
    school_year varchar, period varchar, fingerprint varchar, run_id varchar,
    primary key (school_year, period));
create table if not exists incremental_output (
    school_year varchar, period varchar, kind varchar, key varchar, fingerprint varchar, files varchar,
    primary key (school_year, period, kind, key));
"""


# configuration that cannot change what a load writes; every other key (present or future, e.g.
# thresholds of rules run in the load) is part of the collection's fingerprint
_NOT_FOR_LOAD = {"data_dir", "workers", "task_runner", "dask_address", "feedback_engine", "feedback_full_copy",
                 "salt_file", "private_group", "lock_wait_seconds", "deadlines", "schedules", "incremental",
                 "pseudonymise_published", "expected_schools"}


def _load_config(cfg) -> list:
    import dataclasses

    return sorted((f.name, repr(getattr(cfg, f.name))) for f in dataclasses.fields(cfg) if f.name not in _NOT_FOR_LOAD)


def collection_fingerprint(results: list, cfg, school_year: str, period: str) -> str:
    """What a load of these results depends on: each file as settled (hash, bytes, name, time,
    school, flags, content hash, its issues), the version key and the configuration the load
    reads (load policy, …). The state of the other collections is added by `_with_others`."""
    h = hashlib.sha256(json.dumps([version_key(cfg.severity, cfg.read_limits), _load_config(cfg), school_year,
                                   period]).encode())
    for fr in results:
        hit = getattr(fr, "cache", None)
        h.update(json.dumps([fr.sha256, getattr(fr, "bytes_sha", None) or (hit.bytes_sha if hit else None), fr.name,
                             fr.received_mtime, fr.school_code, fr.unreadable, fr.blocked, fr.superseded,
                             getattr(fr, "content_hash", None), len(fr.issues),
                             hashlib.sha256(json.dumps(_encode(fr.issues), sort_keys=True).encode()).hexdigest()],
                            default=str).encode())
    return h.hexdigest()


def _with_others(con, school_year: str, period: str, fingerprint: str) -> str:
    """The fingerprint joined with every other collection's last load: rules run in the load may
    compare with other collections (cross-period checks), so a load elsewhere since means this
    collection is loaded again."""
    others = con.execute("select school_year, period, fingerprint, run_id from incremental_collection "
                         "where not (school_year = ? and period = ?) order by all", [school_year, period]).fetchall()
    return hashlib.sha256(json.dumps([fingerprint, others], default=str).encode()).hexdigest()


def record_load(con, school_year: str, period: str, fingerprint: str | None, run_id: str) -> None:
    """Inside the load's transaction: what this load stood for (None: not reusable)."""
    con.execute(STATE_DDL)
    if fingerprint is not None:
        fingerprint = _with_others(con, school_year, period, fingerprint)
    con.execute("insert or replace into incremental_collection values (?, ?, ?, ?)",
                [school_year, period, fingerprint, run_id])


def unchanged_outcome(results: list, cfg, school_year: str, period: str, run_id: str):
    """The outcome of the last load when this run would load exactly the same thing: every file
    read and validated from the cache, the collection's fingerprint equal to the one the last
    load committed, and the register still holding that load's rows. None otherwise."""
    from edustat.submissions import active
    from edustat.pipeline import _REGISTER_COLUMNS, RunOutcome
    from edustat.store import session

    if not cfg.incremental or not results or not Path(cfg.db_path).exists():
        return None
    from edustat.submissions import _refusal

    if any(getattr(fr, "cache", None) is None and not _refusal(fr.path) for fr in results):
        return None  # a file read anew (a refused entry — symlink, lock file — is never read: its message is the same)
    from edustat import metaindex

    vkey = version_key(cfg.severity, cfg.read_limits)
    # the same lookups as validate_incremental's, through the same index (edustat.metaindex): a
    # province's 730 issues entries were opened as Parquet files every nothing-changed run
    # (~0.15 CPU s); each entry is checked whole (key, columns) as lookup_issues does, once per
    # entry file and key (`issues_entry_ok`: the yes kept in the index, ~0.1 CPU s of JSON).
    # Every active file is looked up (no stop at the first miss), so the index saved holds the
    # entries validate_incremental's scope looks up, not the first few of them.
    with metaindex.scope(cache_dir(cfg.data_dir), "issues", school_year, period):
        missed = [fr for fr in results if active(fr) and not issues_entry_ok(fr, cfg.data_dir, vkey, school_year, period)]
    if missed:
        return None
    fp = collection_fingerprint(results, cfg, school_year, period)
    counted = [fr.sha256 for fr in results if not fr.superseded]
    with session(cfg.db_path) as con:
        con.execute(STATE_DDL)
        row = con.execute("select fingerprint, run_id from incremental_collection where school_year = ? and period = ?",
                          [school_year, period]).fetchone()
        if not row or row[0] != _with_others(con, school_year, period, fp):
            return None
        subs = con.execute("select * from submission where school_year = ? and period = ? and run_id = ?",
                           [school_year, period, row[1]]).df()
        if sorted(subs["file_hash"]) != sorted(counted):
            return None  # another writer changed the register since
        issues = _issues_frame(con, school_year, period, row[1])
    for fr in results:
        if active(fr):
            fr.cache.issues_hit = True
    order = {h: i for i, h in enumerate(counted)}
    subs = subs.sort_values("file_hash", key=lambda s: s.map(order)).reset_index(drop=True)
    cols = [c for c in _REGISTER_COLUMNS if c in subs.columns]
    cols.insert(cols.index("file_hash") + 1, "content_hash") if "content_hash" in subs.columns else None
    subs = subs[cols].astype({"version": "Int32", "n_learners": "Int32", "n_staff": "Int32", "n_classes": "Int32",
                              "n_rooms": "Int32", "n_errors": "Int32", "n_warnings": "Int32", "n_notices": "Int32",
                              "loaded_rows": "Int32"})
    issues["excel_row"] = issues["excel_row"].astype("Int64")
    loaded = {r.school_code: int(r.loaded_rows or 0) for r in subs.itertuples(index=False)
              if r.status in ("accepted", "accepted_with_warnings", "partially_loaded") and isinstance(r.school_code, str)}
    out = RunOutcome(run_id, school_year, period, subs, issues, loaded)
    out.reused = True  # type: ignore[attr-defined]
    return out


def _issues_frame(con, school_year: str, period: str, run_id: str) -> pd.DataFrame:
    """The issues a load recorded, as `.df()` then `excel_row` made Int64 gave them (the same
    dtypes and values: text as pandas' Arrow-backed str, nulls as its NaN), through one Arrow
    table: a province's ~49k issues × 13 columns cost 0.18 CPU s through `.df()`, 0.05 s so
    (tests/test_incremental.py compares the two)."""
    import pyarrow as pa

    sql = """select school_code, file_hash, file_name, sheet, excel_row, "column", field, header,
                    rule_id, severity, value, message, fix
             from validation_issue where school_year = $1 and period = $2 and run_id = $3"""
    params = [school_year, period, run_id]
    table = con.sql(sql, params=params).to_arrow_table()
    if not table.num_rows:  # `.df()` of no rows types every column object: as before
        empty = con.execute(sql, params).df()
        empty["excel_row"] = empty["excel_row"].astype("Int64")
        return empty
    return table.to_pandas(types_mapper={pa.int32(): pd.Int64Dtype()}.get)  # excel_row, the only integer


# ---------------------------------------------------------------------------------------
# Outputs: feedback workbooks and form scopes written only when what they show changed
# ---------------------------------------------------------------------------------------

def outputs_done(con, school_year: str, period: str, kind: str) -> dict[str, str]:
    con.execute(STATE_DDL)
    rows = con.execute("select key, fingerprint from incremental_output where school_year = ? and period = ? and kind = ?",
                       [school_year, period, kind]).fetchall()
    return dict(rows)


def record_outputs(con, school_year: str, period: str, kind: str, made: dict[str, str],
                   files: dict[str, list[str]] | None = None) -> None:
    con.execute(STATE_DDL)
    con.register("_made", pd.DataFrame({"key": list(made), "fingerprint": list(made.values()),
                                        "files": [json.dumps((files or {}).get(k, [])) for k in made]}))
    con.execute("""insert or replace into incremental_output
                   select ?, ?, ?, key, fingerprint, files from _made""", [school_year, period, kind])
    con.unregister("_made")


def issue_row_hashes(issues: pd.DataFrame):
    """One 64-bit hash per issue row (every column as text), for `feedback_fingerprint`: computed
    once for the run's issues — a row's hash does not depend on the other rows, so a school's
    slice of it equals hashing the school's issues alone (one pandas pass, not one per school)."""
    body = issues.astype("string").fillna("\x00") if len(issues) else issues
    return pd.util.hash_pandas_object(body, index=False).to_numpy() if len(issues) else None


def feedback_fingerprint(source, kwargs: dict, sub, row_hashes=None, n_issues: int | None = None) -> str:
    """What a feedback workbook shows: the file (bytes hash, version, status, counts), the
    school, its issues, the engine / receipt choice and the code that writes it. `row_hashes`:
    the school's rows of `issue_row_hashes` (computed here when not given). `n_issues` (with
    `row_hashes`): the school's issue count when kwargs["issues"] is only a frame of the same
    columns (the feedback step takes a school's rows only for a workbook it writes)."""
    issues = kwargs["issues"]
    n = len(issues) if n_issues is None else n_issues
    if n and row_hashes is None:
        row_hashes = issue_row_hashes(issues)
    digest = hashlib.sha256(row_hashes.tobytes()).hexdigest() if n else "-"
    parts = [code_digest(), str(source), sub.file_hash, None if pd.isna(sub.version) else int(sub.version), sub.status,
             sub.file_name, kwargs["counts"], kwargs["school"], kwargs["engine"], kwargs.get("received"),
             list(issues.columns), digest, kwargs["school_year"], kwargs["period"]]
    return hashlib.sha256(json.dumps(parts, default=str, ensure_ascii=False).encode("utf-8")).hexdigest()


def _outputs_with_files(con, school_year: str, period: str, kind: str) -> dict[str, tuple[str, list[str]]]:
    con.execute(STATE_DDL)
    rows = con.execute("select key, fingerprint, files from incremental_output where school_year = ? and period = ? and kind = ?",
                       [school_year, period, kind]).fetchall()
    return {k: (f, json.loads(files or "[]")) for k, f, files in rows}


@dataclass
class FormsOutcome:
    """What the forms step did: `result` the ReportResult of what was rendered (totals of
    checks over every scope, not only the rendered ones); `scopes` rendered; `skipped`."""

    result: object
    scopes: list[str] = field(default_factory=list)
    skipped: bool = False
    made: dict[str, str] = field(default_factory=dict)  # scope → fingerprint, to record with the build
    files: dict[str, list[str]] = field(default_factory=dict)
    cities: dict[str, str] = field(default_factory=dict)  # form → its city workbook's marker (formdelta.city_markers)

    def record(self, con, school_year: str, period: str) -> None:
        """Record the rendered scopes as done. The caller does it in the transaction that records
        the build (edustat.formbuild), so a kill between the two cannot leave scopes marked done
        whose build was never recorded (a rerun would skip them)."""
        if self.made:
            record_outputs(con, school_year, period, "form", self.made, self.files)
        if self.cities:
            from edustat.formdelta import CITY_KIND

            record_outputs(con, school_year, period, CITY_KIND, self.cities)


def build_forms_incremental(con, cfg, school_year: str, period: str, record: bool = True) -> FormsOutcome:
    """The Circular 24/2018 forms for the scopes whose data changed: each school whose version
    in core changed (or left core) and the city (which sums them all); nothing when none did and
    every file is in place. Failed checks are counted over every scope of the collection.
    `record=False`: the caller records the scopes done (`FormsOutcome.record`) in its own
    transaction."""
    from edustat.reports import REPORT_DDL, ReportResult, _form_path, _names, build_reports, list_forms

    rows = con.execute("""select school_code, file_hash, version, loaded_rows from submission
                          where school_year = ? and period = ? and in_core order by school_code""",
                       [school_year, period]).fetchall() if _has_table(con, "submission") else []
    _, district, province = _names(con, school_year, period) if rows else ({}, "", "")
    base = [code_digest(), district, province, list_forms(period)]

    def fp(parts) -> str:
        return hashlib.sha256(json.dumps(base + [parts], default=str).encode()).hexdigest()

    fps = {code: fp([code, fh, v, n]) for code, fh, v, n in rows}
    fps_city = fp(sorted(fps.items()))
    done = _outputs_with_files(con, school_year, period, "form")

    def in_place(scope: str) -> bool:
        return all(Path(f).is_file() and not Path(f).is_symlink() for f in done[scope][1])

    changed = [c for c, f in fps.items() if c not in done or done[c][0] != f or not in_place(c)]
    gone = [c for c, (f, _) in done.items() if c != "city" and c not in fps and f != ""]
    city = "city" not in done or done["city"][0] != fps_city or not in_place("city")
    if not (changed or gone or city):
        con.execute(REPORT_DDL)
        forms_, checks, failed = con.execute(
            """select list(distinct form_code order by form_code), (select count(*) from rpt_form_check
                   where school_year = $1 and period = $2),
                  (select count(*) from rpt_form_check where school_year = $1 and period = $2 and not ok)
               from rpt_form_cell where school_year = $1 and period = $2""", [school_year, period]).fetchone()
        return FormsOutcome(ReportResult(files=[], cells=0, checks=int(checks), failed_checks=int(failed),
                                         forms=list(forms_ or [])), [], skipped=True)
    everything = len(changed) == len(fps) and not [c for c in done if c != "city" and c in fps and c not in changed]
    from edustat.formdelta import CITY_KIND, city_markers

    forms_all = list_forms(period)
    # forms whose city workbook is the render of the stored city cells and checks: one none of
    # whose schools changed is kept as it is (formdelta.unchanged_city proves it)
    marked = outputs_done(con, school_year, period, CITY_KIND) if not everything else {}
    reuse = [f for f, m in city_markers(con, cfg.reports_dir, school_year, period, [f for f in forms_all if f in marked],
                                        district, province).items() if marked.get(f) == m]
    result = build_reports(con, cfg.reports_dir, school_year, period, workers=cfg.workers,
                           schools=None if everything else changed + gone, delta=True, reuse=reuse)
    files: dict[str, list[str]] = {}
    ending: dict[str, list[str]] = {}  # every "_…" ending of each file's name → the files (one pass, not scopes × files)
    for p in result.files:
        n = Path(p).name
        for i in (i for i, ch in enumerate(n) if ch == "_"):
            ending.setdefault(n[i:], []).append(str(p))
    from edustat.paths import inside_dirs

    inside_ = inside_dirs(cfg.reports_dir)
    for scope in ["city", *changed]:
        name = _form_path(cfg.reports_dir, school_year, period, "X", scope, inside_).name[1:]  # "_<scope>.xlsx"
        files[scope] = list(ending.get(name, []))  # = the files whose name ends with it
    made = {"city": fps_city, **{c: fps[c] for c in changed}, **{c: "" for c in gone}}
    cities = city_markers(con, cfg.reports_dir, school_year, period, result.forms, district, province)
    outcome = FormsOutcome(result, ["city", *changed, *gone], made=made, files=files, cities=cities)
    if record:
        outcome.record(con, school_year, period)
    con.execute(REPORT_DDL)
    result.checks, result.failed_checks = (int(x) for x in con.execute(
        "select count(*), count(*) filter (where not ok) from rpt_form_check where school_year = ? and period = ?",
        [school_year, period]).fetchone())
    return outcome


def _has_table(con, name: str) -> bool:
    return bool(con.execute("select count(*) from information_schema.tables where table_name = ?", [name]).fetchone()[0])


# ---------------------------------------------------------------------------------------
# The analysts' snapshot: published when what it copies changed
# ---------------------------------------------------------------------------------------

def publish_fingerprint(con, cfg, salt: str) -> str:
    """The state the snapshot copies, as far as runs change it: every collection's last load
    (fingerprint + run), every form scope's state, the rows of every table published (a change
    made by another command), the pseudonymisation choice and the salt."""
    from edustat.publish import _ident, _select_tables, salt_fingerprint

    con.execute(STATE_DDL)
    loads = con.execute("select * from incremental_collection order by all").fetchall()
    forms = con.execute("select school_year, period, key, fingerprint from incremental_output where kind = 'form' "
                        "order by all").fetchall()
    counts = [(t, con.execute(f"select count(*) from {_ident(t)}").fetchone()[0]) for t in _select_tables(con, None)]
    parts = [code_digest(), loads, forms, counts, cfg.pseudonymise_published, salt_fingerprint(salt)]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def publish_if_changed(con, cfg, salt: str):
    """Publish the analysts' snapshot unless the one in place was made from this very state.
    Returns (PublishResult or None when skipped, fingerprint)."""
    from edustat.publish import SNAPSHOT_NAME, publish

    fp = publish_fingerprint(con, cfg, salt)
    done = outputs_done(con, "*", "*", "publish")
    snap = Path(cfg.published_dir) / SNAPSHOT_NAME
    if cfg.incremental and done.get("snapshot") == fp and snap.is_file() and not snap.is_symlink():
        return None, fp
    result = publish(con, cfg.published_dir, salt=salt, pseudonymise=cfg.pseudonymise_published)
    # publishing writes none of what `publish_fingerprint` reads (only publish_delta_* state): fp still holds
    record_outputs(con, "*", "*", "publish", {"snapshot": fp})
    return result, fp


# ---------------------------------------------------------------------------------------
# Cast and staging: only the files whose staged rows are not already what they would be
# ---------------------------------------------------------------------------------------

STAGED_DDL = """
create table if not exists incremental_staged (
    school_year varchar, period varchar, file_hash varchar, version varchar,
    primary key (school_year, period, file_hash));
"""


class _NotHere:
    """A file left out of a partial cast / staging: inactive for `collect.assemble` and
    `pipeline.staged_frames`, which keep the others' indexes into the results."""

    unreadable, blocked, superseded, school_code = True, False, False, None


def _only(results: list, keep: set[int]) -> list:
    return [fr if i in keep else _NotHere() for i, fr in enumerate(results)]


def assemble_changed(results: list, cfg):
    """`collect.assemble` of the files read anew (cache misses) only, when some active files
    came from the cache: their staged rows from the load that read them are reused (see
    `plan_staging`). Such frames carry `covers` (the results indexes cast); a cold run (every
    active file read anew) casts the whole collection, as before, with `covers` None."""
    from edustat.submissions import active, assemble
    from schemas.rules import load_rules

    act = [i for i, fr in enumerate(results) if active(fr)]
    fresh = {i for i in act if not (getattr(results[i], "cache", None) is not None and results[i].cache.ingest_hit)}
    if not cfg.incremental or len(fresh) == len(act):
        materialise(results)
        return assemble(results, catalogue=load_rules(cfg.severity))
    materialise([results[i] for i in fresh])
    frames = assemble(_only(results, fresh), catalogue=load_rules(cfg.severity))
    frames.covers = frozenset(fresh)  # type: ignore[attr-defined]
    return frames


def plan_staging(con, results: list, frames, cfg, school_year: str, period: str):
    """Which active files the load stages: those cast in this run (`frames.covers`) and every
    other whose staged rows are not proven to be what staging it now would write — staged by a
    load with this version key (`incremental_staged`), with exactly the file's rows in every
    raw_/stg_ sheet. Returns (results with the others left out, frames of the files to stage).
    Cross-school rules and the copy into core still read every active file's staged rows."""
    from edustat.submissions import TABLE_SHEETS, active, assemble
    from schemas.rules import load_rules

    covers = set(frames.covers)
    # the register counts every file's rows: from the entry, or (an entry without counts) loaded
    materialise([fr for fr in results if isinstance(fr.raw, _Unloaded) and fr.raw.row_counts is None])
    act = [i for i, fr in enumerate(results) if active(fr)]
    others = [i for i in act if i not in covers]
    vkey = version_key(cfg.severity, cfg.read_limits)
    proven: set[int] = set()
    if others:
        from edustat.store import ensure_tables

        ensure_tables(con)  # a first load into this database: nothing staged yet (as load_all would)
        con.execute(STAGED_DDL)
        con.register("_cand", pd.DataFrame({"file_hash": [results[i].sha256 for i in others]}))
        try:
            ok = {h for (h,) in con.execute(
                """select file_hash from incremental_staged where school_year = ? and period = ? and version = ?
                   and file_hash in (select file_hash from _cand)""", [school_year, period, vkey]).fetchall()}
            counts: dict[tuple[str, str, str], int] = {}
            for sid in ("school", *TABLE_SHEETS):
                for layer in ("raw", "stg"):
                    for h, n in con.execute(
                            f"""select file_hash, count(*) from {layer}_{sid} where school_year = ? and period = ?
                                and file_hash in (select file_hash from _cand) group by 1""",
                            [school_year, period]).fetchall():
                        counts[(layer, sid, h)] = int(n)
        finally:
            con.unregister("_cand")
        for i in others:
            fr = results[i]
            if fr.sha256 not in ok:
                continue
            want = {"school": 1, **{sid: fr.rows(sid) for sid in TABLE_SHEETS}}
            if all(counts.get((layer, sid, fr.sha256), 0) == n for sid, n in want.items() for layer in ("raw", "stg")):
                proven.add(i)
    todo = set(act) - proven
    if todo != covers:  # files to stage again that this run did not cast: cast them with the others
        materialise([results[i] for i in todo])
        frames = assemble(_only(results, todo), catalogue=load_rules(cfg.severity))
    return _only(results, todo), frames


def record_staged(con, school_year: str, period: str, hashes: list[str], vkey: str) -> None:
    """Inside the load's transaction: the files this load staged, under which version key."""
    con.execute(STAGED_DDL)
    if not hashes:
        return
    con.register("_staged", pd.DataFrame({"file_hash": sorted(set(hashes))}))
    try:
        con.execute("""insert or replace into incremental_staged
                       select ?, ?, file_hash, ? from _staged""", [school_year, period, vkey])
    finally:
        con.unregister("_staged")
