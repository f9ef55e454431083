"""Text normalisation used everywhere a school's text meets the contract.

`fold` is the diacritic-insensitive matching key: NFC → decompose → drop combining marks,
đ/Đ → d, case-folded, whitespace collapsed, a trailing `(*)` or `*` dropped.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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
    """NFC + trim + collapsed whitespace for a text column, in Arrow (no Python loop);
    blanks become NA. Grain: one value per cell."""
    arr = pa.array(values.astype("string").to_numpy(dtype=object, na_value=None), type=pa.string())
    arr = pc.utf8_normalize(arr, "NFC")
    # RE2's \s is ASCII only: add the no-break and ideographic spaces Excel users paste
    arr = pc.replace_substring_regex(arr, r"[\s\x{00A0}\x{2007}\x{202F}\x{3000}]+", " ")
    arr = pc.utf8_trim_whitespace(arr)
    arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
    # .array: positional, whatever the input's index (a Series argument would be re-aligned)
    return pd.Series(arr.to_pandas(types_mapper=lambda t: pd.StringDtype() if t == pa.string() else None).array,
                     index=values.index, dtype="string")


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
