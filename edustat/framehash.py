"""`pandas.util.hash_pandas_object(frame.astype("string").fillna("\\x00"), index=False)` — the
row hashes `pipeline.content_hash` is made of — computed with one Arrow dictionary encoding
per frame instead of one per column (issue 12: hashing column by column was a quarter of the
read stage). Same values, bit for bit: each cell's text is hashed by pandas' own `hash_array`
(SipHash of its UTF-8), and the columns are combined by pandas' own `combine_hash_arrays`;
tests/test_reader.py checks it against pandas on frames with blanks, numbers and Unicode.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.core.util.hashing import _default_hash_key, combine_hash_arrays, hash_array

_NA_TEXT = "\x00"


def column_arrays(frame: pd.DataFrame) -> list:
    """The frame's column arrays (numpy or extension arrays), without building a Series each."""
    it = getattr(frame, "_iter_column_arrays", None)  # pandas internals: ~40x faster than items()
    return list(it()) if it is not None else [col.array for _, col in frame.items()]


def _text(values) -> pa.Array:
    """The column as `astype("string")` gives it, as one Arrow array (large_string). A numpy
    int64 column (every frame's `excel_row`) is written by Arrow's cast, not by pandas, which
    goes through one Python `str` per cell (a fifth of hashing a city): both write an int64
    in decimal, a minus sign before a negative one, nothing else (tests/test_reader_speed.py
    checks them on the extremes); such a column holds no missing value."""
    dtype = values.dtype
    if isinstance(values, np.ndarray) and dtype == np.int64:
        return pa.array(values, pa.int64()).cast(pa.large_string())
    if not (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow" and dtype.na_value is pd.NA):
        values = pd.array(values, copy=False).astype("string")
    arr = values._pa_array  # ArrowStringArray: a ChunkedArray
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return arr if arr.type == pa.large_string() else arr.cast(pa.large_string())


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """uint64 per row, equal to `hash_pandas_object(frame.astype("string").fillna("\\x00"),
    index=False).to_numpy()`. The frame must have at least one column."""
    n = len(frame)
    cols = [_text(values) for values in column_arrays(frame)]
    cells = pc.fill_null(pa.concat_arrays(cols), _NA_TEXT)
    encoded = pc.dictionary_encode(cells)
    hashed = hash_array(encoded.dictionary.to_numpy(zero_copy_only=False), "utf8", _default_hash_key,
                        categorize=False)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    per_cell = hashed.take(codes) if len(hashed) else np.zeros(len(codes), dtype=np.uint64)
    return combine_hash_arrays((per_cell[j * n:(j + 1) * n] for j in range(len(cols))), len(cols))
