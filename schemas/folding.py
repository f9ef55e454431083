"""Text keys for matching a school's words to the contract: a leaf module (stdlib only) that
the contract (`schemas/`) and the steps (`transforms/`, `edustat/`) both use.

- `nfc`: NFC, trimmed, inner whitespace (line breaks, NBSP) collapsed; invisible characters
  (zero-width spaces, BOM, soft hyphen) removed.
- `fold`: the diacritic-insensitive key of a label: no diacritics, đ → d, case-folded, a
  trailing `(*)` / `*` dropped.
- `header_key`: `fold` of a header with a clerk's decorations dropped: `(*)` anywhere,
  `(nếu có)`, `(dd/mm/yyyy)`, a trailing `:`, `*`, a leading numbering `1.`; separators
  (`/ - _ , .`) read as spaces, so `MA_TRUONG`, `Mã trường:` and `Mã⏎trường (*)` are one key.
- `bare_key`: `header_key` with every parenthesised part dropped (`Nhóm tuổi (MN)` → `nhom tuoi`).
- `expand`: abbreviations spelled out token by token (`GV` → `giao vien`, `P.HT` → `pho hieu
  truong`), from the vocabulary's abbreviation table.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Mapping

_WS = re.compile(r"\s+")
# Invisible characters a copy from a web page or a PDF leaves in codes and IDs: soft hyphen,
# Mongolian vowel separator, zero-width space / joiners, direction marks, embeddings and
# isolates, word joiner and invisible operators, byte-order mark. One definition: the reader
# strips them from every cell, the keys here from every header and label.
INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_REQUIRED_MARK = re.compile(r"\s*(\(\s*\*\s*\)|\*)\s*$")
_DD = str.maketrans({"đ": "d", "Đ": "D"})
# decorations a clerk adds to a header, matched on the folded text
_DECORATION = re.compile(
    r"\(\s*\*\s*\)|\*|\(\s*(neu co|bat buoc|khong bat buoc|dd/mm/yyyy|dd/mm/yy|ngay/thang/nam|nam)\s*\)"
)
_LEADING_NUMBER = re.compile(r"^\s*(\d{1,2}|[ivx]{1,4})[.)]\s+")
_SEPARATORS = re.compile(r"[_/\\,;:.\-–—|+&]+")
_PAREN = re.compile(r"\([^)]*\)|\[[^\]]*\]")


def nfc(value: str) -> str:
    """NFC-normalise and trim, collapsing inner whitespace (incl. NBSP and newlines) and
    dropping invisible characters a copy-paste brings along."""
    return _WS.sub(" ", INVISIBLE.sub("", unicodedata.normalize("NFC", value))).strip()


@lru_cache(maxsize=65536)
def fold(value: str) -> str:
    """The matching key of a header or a label: no diacritics, lower case, single spaces."""
    text = _REQUIRED_MARK.sub("", nfc(value))
    text = unicodedata.normalize("NFD", text.translate(_DD))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _WS.sub(" ", text.casefold()).strip()


@lru_cache(maxsize=65536)
def header_key(value: str) -> str:
    """`fold` without decorations and with separators as spaces: the key a header cell, a
    key of the Truong sheet and a coded value are matched on."""
    text = fold(value)
    text = _DECORATION.sub(" ", text)
    text = _LEADING_NUMBER.sub("", text)
    text = _SEPARATORS.sub(" ", text)
    return _WS.sub(" ", text).strip()


@lru_cache(maxsize=65536)
def bare_key(value: str) -> str:
    """`header_key` with every parenthesised part dropped: `Hỗ trợ ăn trưa (MN)` → `ho tro an trua`."""
    return header_key(_PAREN.sub(" ", fold(value)))


def expand(key: str, abbreviations: Mapping[str, str]) -> str:
    """Spell out abbreviation tokens of a key (`phong gd the chat` → `phong giao duc the chat`).
    Dotted forms are split first (`p.ht` is two tokens after `header_key`)."""
    return " ".join(abbreviations.get(tok, tok) for tok in key.split())


def strip_accents(value: str) -> str:
    """'Họ và tên' → 'Ho va ten' (case kept): how offices type without a Vietnamese keyboard."""
    text = unicodedata.normalize("NFD", nfc(value).translate(_DD))
    return unicodedata.normalize("NFC", "".join(ch for ch in text if not unicodedata.combining(ch)))
