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


def nfc_series(values: pd.Series) -> pd.Series:
    """NFC + trim + collapsed whitespace for a text column, in Arrow (no Python loop);
    blanks become NA. Grain: one value per cell."""
    arr = arrow_strings(values)
    arr = pc.utf8_normalize(arr, "NFC")  # invisible characters: removed by the reader, cell by cell
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
