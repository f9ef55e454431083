"""Stack the per-file text frames of one sheet into the collection's frame, column by column.

Grain: one row per submitted row of every file, in file order; the result is exactly what
`pd.concat([f.iloc[:, keep].assign(_file=i) …], ignore_index=True)` gives (same columns in the
same order, same dtypes, same values), without its cost: for a province (730 files × 4 sheets,
~2,900 frames whose columns differ between template versions) pandas' concat aligns and
re-blocks every frame (~5 s + ~3 s of `iloc`/`assign`, scripts/measure_stages.py); here each
text column is one Arrow chunked array made of the files' own buffers (no copy), a column a
file lacks is a null chunk, and the integer columns are one numpy concatenate.

Only frames whose columns are all Arrow-backed text or int64 take this path; anything else
(an object column from a hostile file, an int column missing from a file: pandas would make
it float) falls back to `pd.concat`, so the result is the same in every case.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

_TEXT = pd.StringDtype("pyarrow")


def _is_text(dtype) -> bool:
    return isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow" and dtype.na_value is pd.NA


def _column_arrays(frame: pd.DataFrame) -> list:
    """The frame's column arrays in order, the ones `frame.iloc[:, j].array` holds (the same
    buffers), without building a Series per column (issue 12: ~6,000 of them a city)."""
    it = getattr(frame, "_iter_column_arrays", None)  # pandas internals
    return list(it()) if it is not None else [frame.iloc[:, j].array for j in range(frame.shape[1])]


def stack_files(parts: Sequence[tuple[pd.DataFrame, list[int], int]]) -> pd.DataFrame:
    """[(file's frame, positions of the columns kept, file index)] → one frame with those
    columns (union, in order of first appearance) and `_file`, on a RangeIndex from 0."""
    kinds: dict[str, str] = {}  # column → "text" | "int"
    present: dict[str, int] = {}
    slow = False
    for frame, keep, _ in parts:
        names, dtypes = list(frame.columns), list(frame.dtypes)
        for j in keep:
            col, dtype = names[j], dtypes[j]
            kind = "text" if _is_text(dtype) else ("int" if dtype == np.dtype("int64") else None)
            if kind is None or kinds.setdefault(col, kind) != kind or col == "_file":
                slow = True
                break
            present[col] = present.get(col, 0) + 1
        kinds.setdefault("_file", "file")  # each part's last column: new columns of later parts come after it
        if slow or not isinstance(frame.columns, pd.Index) or frame.columns.has_duplicates:
            slow = True
            break
    if slow or any(kinds[c] == "int" and n != len(parts) for c, n in present.items()):
        return pd.concat([f.iloc[:, keep].assign(_file=i) for f, keep, i in parts], ignore_index=True)
    lengths = [len(f) for f, _, _ in parts]
    total = int(sum(lengths))
    # each kept column's array, by name, per file (one lookup per cell block, not per row)
    positions = []
    for f, keep, _ in parts:
        names, arrays = list(f.columns), _column_arrays(f)
        positions.append({names[j]: arrays[j] for j in keep})
    data: dict[str, object] = {}
    for col, kind in kinds.items():
        if kind == "file":
            data[col] = np.repeat(np.array([i for _, _, i in parts], dtype="int64"), lengths)
            continue
        if kind == "int":
            data[col] = np.concatenate([np.asarray(pos[col]) for pos in positions])
            continue
        chunks: list[pa.Array] = []
        for (f, _, _), pos, n in zip(parts, positions, lengths):
            if not n:
                continue
            if col in pos:
                chunks.extend(pos[col]._pa_array.chunks)
            else:
                chunks.append(pa.nulls(n, pa.large_string()))
        arr = pa.chunked_array([c.cast(pa.large_string()) for c in chunks], type=pa.large_string())
        data[col] = pd.arrays.ArrowStringArray(arr)
    return pd.DataFrame(data, index=pd.RangeIndex(total), copy=False)
