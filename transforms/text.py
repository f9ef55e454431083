"""Text normalisation of whole columns (Arrow, no Python loop per cell).

The scalar keys (`nfc`, `fold`, `header_key`…) live in `schemas.folding`, a leaf module the
contract and the steps both use; they are re-exported here for the steps.
"""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from schemas.folding import fold, header_key, nfc, strip_accents  # noqa: F401 - re-exported

def arrow_strings(values: pd.Series) -> pa.Array:
    """A column as an Arrow string array (nulls for NA): an Arrow-backed text column's own
    buffers, without a Python string per cell; any other column through its text."""
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        return values.array.__arrow_array__().cast(pa.string()).combine_chunks()
    return pa.array(values.astype("string").to_numpy(dtype=object, na_value=None), type=pa.string())


_SPACES = r"[\s\x{00A0}\x{2007}\x{202F}\x{3000}]+"  # RE2: \s is [\t\n\f\r ]
# The UTF-8 of what makes `_SPACES`' replacement change a cell: a character of the class other
# than " ", or two spaces in a row. UTF-8 sequences never start inside another character's.
_SPACE_NEEDLES = (b"\t", b"\n", b"\x0c", b"\r", b"  ", "\u00a0".encode(), "\u2007".encode(),
                  "\u202f".encode(), "\u3000".encode())


def _may_fold_spaces(arr: pa.Array) -> bool:
    """False only when no cell of `arr` (a string array) holds a needle of `_SPACE_NEEDLES`: its
    data buffer, which holds every cell's bytes, is searched at memchr speed (issue 12: the
    regex replacement was most of the cast's text normalisation, and real columns rarely need
    it). A needle across two cells or outside the slice only means the regex runs."""
    if arr.null_count == len(arr):
        return False
    data = arr.buffers()[2] if arr.type in (pa.string(), pa.large_string()) else None
    if data is None:
        return True
    raw = data.to_pybytes()
    return any(n in raw for n in _SPACE_NEEDLES)


def nfc_series(values: pd.Series) -> pd.Series:
    """NFC + trim + collapsed whitespace for a text column, in Arrow (no Python loop);
    blanks become NA. Grain: one value per cell."""
    arr = arrow_strings(values)
    arr = pc.utf8_normalize(arr, "NFC")  # invisible characters: removed by the reader, cell by cell
    # RE2's \s is ASCII only: add the no-break and ideographic spaces Excel users paste
    if _may_fold_spaces(arr):  # else every run of the class is one " ": the regex changes nothing
        arr = pc.replace_substring_regex(arr, _SPACES, " ")
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
