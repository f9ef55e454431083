"""Text normalisation used everywhere a school's text meets the contract.

`fold` is the diacritic-insensitive matching key: NFC → decompose → drop combining marks,
đ/Đ → d, case-folded, whitespace collapsed, a trailing `(*)` or `*` dropped.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import pandas as pd

_WS = re.compile(r"\s+")
_REQUIRED_MARK = re.compile(r"\s*(\(\s*\*\s*\)|\*)\s*$")
_DD = str.maketrans({"đ": "d", "Đ": "D"})


def nfc(value: str) -> str:
    """NFC-normalise and trim, collapsing inner whitespace (incl. NBSP and newlines)."""
    return _WS.sub(" ", unicodedata.normalize("NFC", value)).strip()


@lru_cache(maxsize=65536)
def fold(value: str) -> str:
    """The matching key of a header or a label: no diacritics, lower case, single spaces."""
    text = _REQUIRED_MARK.sub("", nfc(value))
    text = unicodedata.normalize("NFD", text.translate(_DD))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _WS.sub(" ", text.casefold()).strip()


def nfc_series(values: pd.Series) -> pd.Series:
    """NFC + trim for a text column; blanks become NA. Grain: one value per cell."""
    out = values.astype("string").map(nfc, na_action="ignore")
    return out.mask(out == "")


def fold_series(values: pd.Series) -> pd.Series:
    """`fold` for a text column, evaluated once per distinct value (columns repeat a lot)."""
    s = values.astype("string")
    uniques = s.dropna().unique()
    mapping = {u: fold(u) for u in uniques}
    return s.map(mapping, na_action="ignore").astype("string")


def strip_accents(value: str) -> str:
    """'Họ và tên' → 'Ho va ten' (case kept): how offices type without a Vietnamese keyboard."""
    text = unicodedata.normalize("NFD", nfc(value).translate(_DD))
    return unicodedata.normalize("NFC", "".join(ch for ch in text if not unicodedata.combining(ch)))
