"""Identifiers from files are data, never paths.

Every path edustat writes that is named after something a school sent (its school code, its
file name) goes through this module:

- `school_code_for_path` gives a school code only when it matches its format (8 digits),
  otherwise None: the caller files the thing under `_unidentified/` with the file's hash;
- `display_name` turns a file name that is not valid UTF-8 (zips made on Windows) into text
  that can be printed, stored and written into a workbook;
- `safe_stem` gives a file-name-safe ASCII stem of a file name;
- `inside` proves a path (resolved, symlinks followed) lies inside a root, or raises
  `UnsafePath`. Every writer calls it on the path it is about to write.
"""
from __future__ import annotations

import os
import re
import stat
import unicodedata
from pathlib import Path
from typing import Callable

SCHOOL_CODE = re.compile(r"\d{8}")  # regulations.md §2.3 [INF: 8 digits observed]
UNIDENTIFIED = "_unidentified"
_UNSAFE_CHARS = re.compile(r"[^0-9A-Za-z_.-]+")


class UnsafePath(ValueError):
    """A path that would leave its root: a bug or a hostile input, never written."""


def school_code_for_path(code: object) -> str | None:
    """The school code if it may name a file or directory (exactly 8 ASCII digits), else None."""
    if isinstance(code, str) and SCHOOL_CODE.fullmatch(code) and code.isascii():
        return code
    return None


def inside(root: Path, path: Path) -> Path:
    """`path` resolved, after proving it is inside `root` (both resolved: `..` and symlinks
    of existing parents cannot take it out). Raises UnsafePath otherwise."""
    root_r = Path(root).resolve()
    path_r = Path(path).resolve()
    if not path_r.is_relative_to(root_r) or path_r == root_r:
        raise UnsafePath(f"{path} is outside {root}")
    return path_r


def inside_dirs(root: Path) -> "Callable[[Path], Path]":
    """`inside(root, path)` for many paths, each directory resolved once (issue 12: the feedback
    step proves a province's 730 paths in one directory; each `resolve` walked every component
    again). Exactly `inside`: `Path.resolve` (os.path.realpath, not strict) of `dir/name` is the
    resolved `dir` joined with `name` when `name` is a plain name that is not a symlink; any
    other last component (a symlink, `..`, `.`) is resolved in full by `inside` itself. The
    directories are resolved at their first use within one caller's pass, as `inside` would
    resolve them then.

    A directory is resolved the same way, from its parent's resolution (memoised too): the read
    proves a province's 730 raw copies, each in its school's own directory, so a cache of whole
    directories alone resolved every component of each again (~0.07 CPU s). `realpath(d/n)` is
    `realpath(d)/n` when `n` is a plain name that is not a symlink (realpath walks the
    components one by one; an absent one is taken as it is); a symlinked, `.`/`..` or root
    component is resolved in full by `Path.resolve`, as before."""
    root_r = Path(root).resolve()
    dirs: dict[Path, Path] = {}

    def resolved_dir(d: Path) -> Path:
        got = dirs.get(d)
        if got is None:
            parent = d.parent
            if d.name in ("", ".", "..") or parent == d or _is_link(d):
                got = d.resolve()
            else:
                got = resolved_dir(parent) / d.name
            dirs[d] = got
        return got

    def check(path: Path) -> Path:
        path = Path(path)
        name = path.name
        if name in ("", ".", "..") or path.parent == path:
            return inside(root, path)
        if _is_link(path):
            return inside(root, path)
        path_r = resolved_dir(path.parent) / name
        if not path_r.is_relative_to(root_r) or path_r == root_r:
            raise UnsafePath(f"{path} is outside {root}")
        return path_r
    return check


def _is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False  # absent (or unreachable): realpath appends the name as it is


def display_name(name: str) -> str:
    """A file name as text: undecodable bytes (kept by Python as surrogates) become U+FFFD,
    control characters are dropped, NFC."""
    raw = os.fsencode(name)
    text = raw.decode("utf-8", errors="replace")
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc")
    return unicodedata.normalize("NFC", text) or "?"


def safe_stem(name: str, limit: int = 60) -> str:
    """An ASCII, separator-free stem of a file name (diacritics removed), at most `limit` chars."""
    stem = Path(display_name(name)).stem
    stem = unicodedata.normalize("NFKD", stem.replace("đ", "d").replace("Đ", "D"))
    stem = "".join(ch for ch in stem if not unicodedata.combining(ch))
    stem = _UNSAFE_CHARS.sub("_", stem).strip("._")
    return stem[:limit] or "tep"
