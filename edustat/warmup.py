"""Imported by the warm forkserver only (edustat.warm.PRELOAD): what every run would build at
its start from the repository's own files, built once so each forked run inherits it — the
contract, the code lists and their vocabulary matchers (folding every spelling of every list:
~0.5 s the first time a process reads a file), the sheets' header matchers, the built-in
form definitions and the layout each of their workbooks is made from (edustat.formfast: ~0.2 s
a form, once per run otherwise).

Only what ships with the code: nothing of the office's data dir or config (a served run reads
those itself, each run); no file, connection or thread stays open. Restarting `edustat serve`
after upgrading edustat rebuilds it, as it re-imports the code.
"""
from __future__ import annotations

from edustat import reports
from schemas import load_contract
from schemas.vocabulary import sheet_matcher


def warm() -> int:
    """Builds the caches; returns how many matchers it built (for tests)."""
    built = 0
    contract = load_contract()
    for sheet in contract.sheets:
        sheet_matcher(sheet)
        built += 1
        for field in sheet.fields:
            codes = field.codelist
            if codes is not None:
                codes.matcher  # noqa: B018 - the cached property is the point
                built += 1
    from edustat import formfast

    for path in sorted(reports.FORMS_DIR.glob("*.yaml")):
        form = reports.load_form(path.stem)
        if formfast.proven():  # the layout each workbook of it is made from
            formfast.template(path.stem, form)
    formfast.new_build()
    # GX's expectation configurations are built once per validation (edustat.gxfast): the patch
    # is a function on GX's class, nothing mutable; each run's cache lives in its validation only
    from edustat import expectations, gxfast

    gxfast.install()
    # each committed expectation's metric graph, as GX builds it, for both result formats
    # (edustat.gxfast `_graphs`: ~20% of a changed school's row rules; ~1 CPU s here, once)
    expectations.prime_graphs()
    return built


def freeze() -> int:
    """Everything imported and built so far lives as long as the server: moved out of the
    cyclic garbage collector's generations (gc.freeze), after collecting what is garbage now.
    A forked run inherits ~450k such objects (Prefect, GX, pandas, pydantic models); unfrozen,
    every full collection of the run walked them all again — 0.4 s each on an idle machine, and
    a one-changed province run makes several (measured 1 Dec 2026; `gc.collect()` after the
    imports: 0.396 s, after freezing: 0.000 s). Frozen objects are still freed by reference
    counting; only cycles among them stay (none is garbage at this point: just collected).
    Returns how many objects are frozen (for tests)."""
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


warm()
freeze()  # last: PRELOAD imports this module after every other one (edustat.warm)
