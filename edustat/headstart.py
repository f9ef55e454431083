"""The load's staged frames prepared while validation runs in its child process.

A large collection validates in a forked child (edustat.isolate) while the flow's process only
waits: one of the two cores idles for the whole validation (~18 s for a province). The load's
first step, `pipeline.staged_frames` (the raw_/stg_ frames: the files' sheets stacked, the
typed rows derived), depends on the read and cast results only, not on the issues, so it is
done then, in the parent, after the fork (the child validates the frames as they were).

The frames are a head start, never a result: they are kept on the `Frames` object with a
signature of the collection they were made from, and the load takes them once (`take`) only if
that signature still holds; otherwise — and on every retry of the load, since taking them
removes them — the load makes them itself, as before. Same frames either way (tests/
test_province_cold.py): `staged_frames` is a pure function of (results, frames, school year).
"""
from __future__ import annotations

from typing import Callable

from edustat.submissions import active


def _signature(results: list, school_year: str) -> tuple:
    return (id(results), school_year, tuple((fr.sha256, fr.school_code, active(fr)) for fr in results))


def ahead(results: list, frames, school_year: str | None) -> Callable[[], None] | None:
    """What to do beside validation: the staged frames of a whole-collection cast (not of an
    incremental run's partial cast, whose staging `incremental.plan_staging` decides)."""
    if frames is None or school_year is None or getattr(frames, "covers", None) is not None:
        return None

    def stage() -> None:
        from edustat.pipeline import staged_frames

        frames.staged_ahead = (_signature(results, school_year), *staged_frames(results, frames, school_year))

    return stage


def take(results: list, frames, school_year: str) -> tuple[dict, dict] | None:
    """The staged frames made ahead for exactly this collection, once; None: make them."""
    kept = getattr(frames, "staged_ahead", None)
    if kept is None:
        return None
    frames.staged_ahead = None  # once: a retried load stages from the top
    sig, raw, stg = kept
    return (raw, stg) if sig == _signature(results, school_year) else None
