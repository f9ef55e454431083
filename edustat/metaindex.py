"""The per-file cache's metadata of a collection in one file (issue 12: one school changed).

Every entry of edustat.incremental keeps what it is (its key: format, version, collection,
file name and hash) and what was read or validated (FileResult fields, issues) as JSON in its
Parquet footer. A run with one school changed opens every other file's two entries only to
read that JSON back: ~1,460 Parquet footers for a province, ~0.7 s of the read and validation
stages (pyarrow opening each file and building its schema; measured 1 Dec 2026 on the shared
2-core machine: read_meta 0.72 + 0.49 s, of which parsing the JSON 0.41 + 0.11 s).

An index keeps, per entry looked up in the last run of a collection, the entry's file identity
(inode, size, mtime and ctime in ns) and the very bytes of its footer's JSON. A lookup whose
entry file has the same identity parses those bytes (the same bytes, the same parser: the same
metadata as from the footer); any other entry (new, rewritten, replaced, moved, not in the
index) is read from its footer as before. Entries are only ever written whole under a new name
and renamed over the old one (`incremental._write_atomic`), so a rewritten entry is another
inode with new times. The index is a hint, never the truth: an index that is missing, corrupt,
of another format or planted as a symlink is an empty one, and the key in the metadata is still
checked by the caller as before.

A caller that only needs to know whether an entry passes its checks (a nothing-changed run
asks it of every issues entry, then takes the issues from the database: a province's 13.7 MB
of JSON parsed for a yes) may record the yes beside the bytes (`mark`, a token naming the key
the entry was checked against) and ask for it next time (`checked`): a yes holds only for the
same file identity and the same token, so a rewritten entry, another key (version, collection,
name, bytes) or an index of another format is asked again, from the bytes. The yes is a hint of
the same standing as the bytes beside it: whoever could plant a yes for an entry's identity
could as well plant the bytes that pass.

The run that writes an entry records it too (`written`, inside the scope of the run's lookups):
the identity of the file the writer renamed into place, taken after the rename and only when the
name still holds that very inode (`identity_of`), with the very bytes it put in the footer, and
for an issues entry the yes its bytes give (parsed back and checked as a lookup would). So the
first rerun after a cold or changed run reads no footer and parses no issues entry, as the
second did; a later rename, rewrite or touch of the entry is another identity: a miss.

The index is written when its lookups differed from it (an entry read from its footer, a yes
recorded, an entry written, or entries no longer looked up), holding only the entries of that scope: an entry
pruned because its file is gone is not looked up, so its metadata (personal data) leaves the
index with the next write. Written like the entries: private, beside its final name, renamed
over it.

    with metaindex.scope(cache_root, "ingest", school_year, period):
        ... incremental._entry_meta(...) ...   # consults the scope's index
"""
from __future__ import annotations

import hashlib
import json
import os
import stat as stat_
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

FORMAT = b"edustat-meta-index 2"  # 2: a checked-token field per entry (`mark`)
_state = threading.local()
_UNCHECKED = b"-"


def _identity(st: os.stat_result) -> bytes:
    return b"%d %d %d %d" % (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def index_path(root: Path, kind: str, school_year: str, period: str) -> Path:
    tag = hashlib.sha256(f"{kind}\x1f{school_year}\x1f{period}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return Path(root) / f"meta-{tag}.index"


class Index:
    """One scope's index: the entries it was given (`old`) and those looked up (`seen`)."""

    def __init__(self, root: Path, path: Path):
        self.root, self.path = Path(root), path
        # name -> (file identity, checked token or _UNCHECKED, the metadata's JSON bytes)
        self.old: dict[str, tuple[bytes, bytes, bytes]] = _load(path)
        self.seen: dict[str, tuple[bytes, bytes, bytes]] = {}
        self.footers = 0  # entries read from their Parquet footer (tests, measures)
        self.marked = 0  # yeses recorded in this scope (`mark`)
        self.recorded = 0  # entries this run wrote, recorded as written (`written`)

    def _indexed(self, entry: Path) -> tuple[str | None, bytes | None, tuple | None]:
        """(name, identity, the index's record for this very file or None); identity None when
        `entry` is absent or not a regular file."""
        try:
            st = os.lstat(entry)
        except OSError:
            return None, None, None
        if not stat_.S_ISREG(st.st_mode):
            return None, None, None
        name = _rel(self.root, entry)
        ident = _identity(st)
        if name is not None:
            for got in (self.seen.get(name), self.old.get(name)):  # looked up already in this scope, or before
                if got is not None and got[0] == ident:
                    self.seen[name] = got
                    return name, ident, got
        return name, ident, None

    def raw(self, entry: Path) -> bytes | None:
        """The JSON bytes of `entry`'s metadata: from the index when the file is the one
        indexed, else from its footer; None when absent, not a regular file or unreadable."""
        name, ident, got = self._indexed(entry)
        if ident is None:
            return None
        if got is not None:
            return got[2]
        self.footers += 1
        read = _footer(entry)
        if read is None:
            return None
        raw, st = read
        if name is not None and b"\n" not in raw:  # one line per entry (json.dumps escapes newlines)
            self.seen[name] = (_identity(st), _UNCHECKED, raw)
        return raw

    def checked(self, entry: Path, token: bytes) -> bool:
        """Whether the index records a yes under `token` for this very file."""
        _, _, got = self._indexed(entry)
        return got is not None and got[1] == token

    def mark(self, entry: Path, token: bytes) -> None:
        """Record a yes under `token` for the bytes this scope last gave for `entry` (those the
        caller checked, from the file of the identity kept with them)."""
        name = _rel(self.root, entry)
        got = self.seen.get(name) if name is not None else None
        if got is not None and got[1] != token:
            self.seen[name] = (got[0], token, got[2])
            self.marked += 1

    def written(self, entry: Path, ident: bytes, raw: bytes, token: bytes) -> None:
        """Record an entry this run wrote: `ident` (`identity_of`), its footer's bytes `raw` and
        the yes they give under `token` (`_UNCHECKED`: none)."""
        name = _rel(self.root, entry)
        if name is not None and b"\n" not in raw:
            self.seen[name] = (ident, token, raw)
            self.recorded += 1

    def save(self) -> None:
        if self.footers == 0 and self.marked == 0 and self.recorded == 0 and self.seen.keys() == self.old.keys():
            return
        lines = [FORMAT]
        lines.extend(b"%s\t%s\t%s\t%s" % (name.encode("utf-8"), ident, token, raw)
                     for name, (ident, token, raw) in self.seen.items())
        _write_private(self.root, self.path, b"\n".join(lines) + b"\n")


def identity_of(entry: Path, mine: os.stat_result, raw: bytes) -> tuple[bytes, bytes] | None:
    """(identity, raw) of the file now at `entry` when it is the very file a writer wrote
    (`mine`: its fstat before the rename: same device and inode, same size); None otherwise
    (another file renamed over it since, or gone: never recorded as ours)."""
    try:
        st = os.lstat(entry)
    except OSError:
        return None
    if not stat_.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino, st.st_size) != (mine.st_dev, mine.st_ino, mine.st_size):
        return None
    return _identity(st), raw


def _rel(root: Path, entry: Path) -> str | None:
    """The entry's path under the cache root (an entry's name holds no tab or newline)."""
    top, path = str(root), str(entry)
    if top != "/" and path.startswith(top + "/"):
        # `relative_to(root).as_posix()` without two Paths made per lookup: a Path's text is
        # its parts joined by "/" (no part holds one), so this prefix is exactly root's parts
        rel = path[len(top) + 1:]
    else:
        try:
            rel = Path(entry).relative_to(root).as_posix()
        except ValueError:
            return None
    return None if ("\t" in rel or "\n" in rel) else rel


def _footer(entry: Path) -> tuple[bytes, os.stat_result] | None:
    """The footer's edustat metadata bytes and the identity of the file they came from (as
    incremental._read_meta opens it: never through a symlink)."""
    import pyarrow.parquet as pq

    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        try:
            st = os.fstat(fh.fileno())
            raw = (pq.ParquetFile(fh).schema_arrow.metadata or {}).get(b"edustat")
        except Exception:  # noqa: BLE001 - a corrupt entry is a miss
            return None
    return (raw, st) if raw else None


def _load(path: Path) -> dict[str, tuple[bytes, bytes, bytes]]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return {}
    try:
        with os.fdopen(fd, "rb") as fh:
            if not stat_.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return {}
            data = fh.read()
    except OSError:
        return {}
    lines = data.split(b"\n")
    if not lines or lines[0] != FORMAT or lines[-1] != b"":  # another format, or cut short
        return {}
    out: dict[str, tuple[bytes, bytes, bytes]] = {}
    for line in lines[1:-1]:
        parts = line.split(b"\t", 3)
        if len(parts) != 4:
            return {}
        try:
            out[parts[0].decode("utf-8")] = (parts[1], parts[2], parts[3])
        except UnicodeDecodeError:
            return {}
    return out


def _write_private(root: Path, dest: Path, data: bytes) -> None:
    """Best effort (an index is never worth failing a run), but a full disk or a read-only
    directory is the run's fault to report, as for the entries."""
    if dest.is_symlink():
        dest.unlink()
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        from edustat.incremental import raise_if_operator_fault

        raise_if_operator_fault()


@contextmanager
def scope(root: Path, kind: str, school_year: str, period: str):
    """Entry lookups of this thread within the block consult (and refresh) the collection's
    index of `kind`; saved when the block ends without an exception. A root not made yet (a
    cold run's: the entries' writer makes it) opens an empty scope, saved only if the root is a
    real directory by then; a symlink, or anything else that is not a directory, opens none."""
    root = Path(root)
    if getattr(_state, "index", None) is not None or root.is_symlink() or (root.exists() and not root.is_dir()):
        yield None
        return
    idx = Index(root, index_path(root, kind, school_year, period))
    _state.index = idx
    try:
        yield idx
    finally:
        _state.index = None
    if root.is_dir() and not root.is_symlink():
        idx.save()


def checked(entry: Path, token: bytes) -> bool:
    """Whether the open scope's index records a yes under `token` for this very entry file
    (False without a scope)."""
    idx = getattr(_state, "index", None)
    return idx is not None and idx.checked(entry, token)


def mark(entry: Path, token: bytes) -> None:
    """Record, in the open scope's index, a yes under `token` for the bytes the scope last gave
    for `entry` (`read_meta` through the scope; nothing without a scope). `token`: no tab or
    newline."""
    idx = getattr(_state, "index", None)
    if idx is not None and b"\t" not in token and b"\n" not in token:
        idx.mark(entry, token)


def written(entry: Path, kept: tuple[bytes, bytes] | None, token: bytes | None = None) -> None:
    """Record in the open scope's index an entry this run has just written (`kept`: what
    `incremental._write_atomic` returned, None: nothing) with, when `token` is given, the yes
    its bytes were checked to give (as `mark`). Nothing without a scope."""
    idx = getattr(_state, "index", None)
    if idx is None or kept is None or (token is not None and (b"\t" in token or b"\n" in token)):
        return
    idx.written(entry, kept[0], kept[1], _UNCHECKED if token is None else token)


def read_meta(entry: Path, hook=None) -> dict | None:
    """An entry's metadata (a dict) as incremental._read_meta gives it, through the open
    scope's index when there is one. `hook`: the JSON parser's object_hook (a hook that fails
    makes the entry a miss)."""
    idx = getattr(_state, "index", None)
    if idx is None:
        from edustat.incremental import _read_meta

        got = _read_meta(entry, hook)
        if got is None:
            return None
        got[2].close()
        return got[0]
    raw = idx.raw(entry)
    if raw is None:
        return None
    try:
        meta = json.loads(raw.decode("utf-8"), object_hook=hook)
    except ValueError:
        return None
    except Exception:  # noqa: BLE001 - the hook's: a malformed entry is a miss
        if hook is None:
            raise
        return None
    return meta if isinstance(meta, dict) else None
