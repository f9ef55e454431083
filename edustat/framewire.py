"""A reader process's text frames on their way back to the run: one Arrow IPC message per
frame instead of pickle's per column (issue 12). Pickling a city's 400 raw frames (~6,000
Arrow text columns, each reduced and rebuilt one by one, then every frame's blocks checked
again) cost ~0.15 CPU s in the readers and ~0.25 s in the run, more than reading the cells of
a tenth of the city.

Only the frame the reader builds travels this way (`reader._parse_table`): a RangeIndex from
0, an int64 `excel_row` first, then text columns in pandas' "string" dtype (one Arrow
large_string chunk each), unique str names, no attrs. It comes back as the reader builds it
(the same dict constructor over the same names, int64 values and Arrow arrays), so the
frame, its dtypes and its column index are those the reader made; any other frame (an empty
sheet's, one a future change makes differently) is pickled as before.
scripts/compare_ingest.py --workers 2 compares every frame of a run read this way with
main's; tests/test_reader_speed.py checks the round trip and the fallback.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from edustat.framehash import column_arrays

_LINEAGE = "excel_row"
_KINDS: dict[tuple, tuple] = {}


def _index_kind(names: tuple) -> tuple:
    """(type, dtype) of the column index a dict constructor gives these names (the same names
    come back in every file: remembered)."""
    hit = _KINDS.get(names)
    if hit is None:
        index = pd.Index(list(names))
        hit = (type(index), index.dtype)
        if len(_KINDS) < 10_000:
            _KINDS[names] = hit
    return hit


class Packed:
    """One frame as an Arrow IPC stream (schema and one record batch)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self):
        return (Packed, (self.data,))


def _plain(frame) -> list | None:
    """The frame's column arrays when it is a frame as the reader builds it, else None."""
    if type(frame) is not pd.DataFrame or frame.attrs or not frame.flags.allows_duplicate_labels:
        return None
    idx, cols = frame.index, frame.columns
    if type(idx) is not pd.RangeIndex or idx.start != 0 or idx.step != 1 or idx.name is not None:
        return None
    names = list(cols)
    if not names or names[0] != _LINEAGE or cols.name is not None or not all(type(c) is str for c in names) \
            or len(set(names)) != len(names):
        return None
    if _index_kind(tuple(names)) != (type(cols), cols.dtype):  # what the dict constructor makes of them
        return None
    arrays = column_arrays(frame)
    first = arrays[0]
    if type(first) is not np.ndarray or first.dtype != np.int64 or first.ndim != 1:
        return None
    for a in arrays[1:]:
        if type(a) is not pd.arrays.ArrowStringArray or a.dtype.storage != "pyarrow" or a.dtype.na_value is not pd.NA:
            return None
        chunks = a._pa_array
        if chunks.num_chunks != 1 or chunks.type != pa.large_string():
            return None
    return arrays


def pack(frame):
    """A Packed frame, or the frame itself when it is not one the reader builds."""
    arrays = _plain(frame)
    if arrays is None:
        return frame
    try:
        batch = pa.RecordBatch.from_arrays([pa.array(arrays[0], pa.int64())] + [a._pa_array.chunk(0) for a in arrays[1:]],
                                           names=list(frame.columns))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        return Packed(sink.getvalue().to_pybytes())
    except (pa.ArrowException, UnicodeError, ValueError, TypeError):
        return frame  # a name Arrow cannot hold: pickled as before


def unpack(value):
    """The frame `pack` was given."""
    if not isinstance(value, Packed):
        return value
    batch = pa.ipc.open_stream(pa.py_buffer(value.data)).read_next_batch()
    cols = batch.columns
    # as reader._parse_table builds it: a writable int64 array, then each text column wrapped
    data = {_LINEAGE: cols[0].to_numpy(zero_copy_only=False).astype("int64", copy=True)}
    for name, arr in zip(batch.schema.names[1:], cols[1:]):
        data[name] = pd.arrays.ArrowStringArray(pa.chunked_array([arr]))
    return pd.DataFrame(data, copy=False)


def pack_result(fr):
    """`fr` with its raw frames packed, for the trip back to the run (in place)."""
    if type(fr.raw) is dict and fr.raw:
        fr.raw = {sid: pack(frame) for sid, frame in fr.raw.items()}
    return fr


def unpack_result(fr):
    """`fr` with its raw frames as they were before `pack_result` (in place)."""
    if type(fr.raw) is dict and any(isinstance(v, Packed) for v in fr.raw.values()):
        fr.raw = {sid: unpack(v) for sid, v in fr.raw.items()}
    return fr
