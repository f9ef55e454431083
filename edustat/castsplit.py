"""The cast's columns on both cores: a forked child casts about half of them while this process
casts the rest (issue 12, round 9: a city's cast ran on one core, the other idle).

Why the result is the same: each column's cast (`transforms.cast.cast_columns`) reads only
that column and the sheet's `excel_row`, and nothing else; the child is forked after every
sheet is stacked, so it reads the same frames, and it sends back its typed columns and problem
frames (pickled: values, dtypes and index as they were); `transforms.cast.typed_table` then puts
each sheet together in its fields' order, exactly as `cast_table` does in one process. Which
process casts a column changes nothing but the time: `scripts/compare_cast.py --split always`
compares every frame, notice and problem with the cast in one process.

When: a collection of at least `MIN_ROWS` rows (a city; one school or a test collection casts
faster than a fork costs) and a free core (`isolate.second_core_free`, as the validation's split:
on a saturated machine two processes only compete). The fork happens between the read and the
validation, where the validation's own child is forked too (`isolate.beside`): the read's
DuckDB session (settling) is closed, no thread of this process is inside DuckDB. A child that
dies (out of memory) costs only time: its columns are cast here.

Measured (round 9, a machine at load 7-15, so in CPU seconds): the city's cast 0.53-0.72 CPU s
in one process; split, 0.10-0.12 before the fork (stacking), 0.26-0.29 here and 0.25-0.30 in the
child side by side, 0.02 receiving, 0.05 after: a critical path of 0.44-0.48 s for 0.69-0.77 CPU s
(the fork, the child's page copies and the pickled columns: +0.15-0.2 CPU s, on a core that
was idle). Province (411 k learners): 3.7-4.1 CPU s in one process; split 2.8-3.2 here + 1.6-1.7
in the child; the parent peaked ~80 MiB above the frames it keeps, far below the load's peak.
"""
from __future__ import annotations

import pandas as pd

from schemas import Field, Sheet

MIN_ROWS = 20_000
# None: as the load and the size say; True / False: always / never (scripts/compare_cast.py, tests)
FORCE: bool | None = None

# relative cost of one cell's cast by field type (measured on a city's learners, round 9: a
# date column ~35 ms for 55 k rows, an ID ~25, text or int ~9, a 0/1 flag ~6.5, a code ~4.3);
# a column with no value at all costs about a blank cell's cast
_WEIGHT = {"date": 0.64, "year_or_date": 0.64, "id": 0.45, "text": 0.15, "int": 0.16, "school_year": 0.3,
           "flag": 0.12, "code": 0.08}
_BLANK_COST = 1000.0


def _blank(values: pd.Series) -> bool:
    pa_array = getattr(values.array, "_pa_array", None)
    if pa_array is not None:
        return pa_array.null_count == len(values)
    return not values.notna().any()


def _plan(jobs: list[tuple[str, Field]], raws: dict[str, pd.DataFrame]) -> tuple[list, list]:
    """(this process's columns, the child's): heaviest first, each to the lighter side."""
    def cost(job):
        sid, f = job
        values = raws[sid][f.id]
        return _BLANK_COST if _blank(values) else len(values) * _WEIGHT.get(f.type, 0.3)

    here, there, load = [], [], [0.0, 0.0]
    for weight, job in sorted(((cost(job), job) for job in jobs), key=lambda wj: wj[0], reverse=True):
        side = 0 if load[0] <= load[1] else 1
        (here if side == 0 else there).append(job)
        load[side] += weight
    return here, there


def _cast(raws: dict[str, pd.DataFrame], jobs: list[tuple[str, Field]]) -> dict[tuple[str, str], tuple]:
    from transforms.cast import cast_columns

    out = {}
    for sid, f in jobs:
        for fid, done in cast_columns(raws[sid], [f]).items():
            out[(sid, fid)] = done
    return out


def _cast_in_child(raws: dict[str, pd.DataFrame], jobs: list[tuple[str, Field]]) -> dict[tuple[str, str], tuple]:
    """`_cast` in the forked child. gc.freeze first: the child's collections then skip the
    objects it inherited (the collection's frames and results, the imports), which they would
    walk, and copy page by page, for nothing (as the read's workers do)."""
    import gc

    gc.freeze()
    return _cast(raws, jobs)


def _split(rows: int) -> bool:
    from edustat import isolate

    if FORCE is not None:
        return FORCE and isolate.can_fork()
    return rows >= MIN_ROWS and isolate.can_fork() and isolate.second_core_free()


def cast_sheets(raws: dict[str, pd.DataFrame], sheets: dict[str, Sheet]) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """{sheet id: `cast_table(raw, sheet.fields)`} for each stacked sheet, its columns cast in two
    processes when `_split` says so."""
    from transforms.cast import typed_table

    jobs = [(sid, f) for sid, raw in raws.items() for f in sheets[sid].fields if f.id in raw.columns]
    if _split(sum(len(raw) for raw in raws.values())):
        from edustat import isolate

        here, there = _plan(jobs, raws)
        done: dict = {}
        try:
            theirs, _ = isolate.beside(_cast_in_child, raws, there, here=lambda: done.update(_cast(raws, here)))
        except isolate.ChildDied:
            theirs = _cast(raws, there)
        done.update(theirs)
    else:
        done = _cast(raws, jobs)
    out = {}
    for sid, raw in raws.items():
        fields = sheets[sid].fields
        out[sid] = typed_table(raw, fields, {fid: v for (s, fid), v in done.items() if s == sid})
    return out
