"""Great Expectations suites generated from the rule catalogue, and the row-rule run.

`suite_dicts()` turns every row-stage rule of `schemas/rules.yaml` into expectations (rule id,
severity and message in each expectation's `meta`) — one suite per sheet × period, committed
under `expectations/` by `edustat expectations` and checked for drift by a test. Rows are
validated on the collection's concatenated check frames (one GX run per sheet, not per school:
GX costs ~50 ms a run before any row), with `_rowkey` as the unexpected-index column: up to
TWO_PASS_MAX_ROWS rows in two passes (every expectation with BOOLEAN_ONLY results, then the failed
ones for their rows), above that on narrow frames per column group (see `row_rule_outcomes`).
Great Expectations is imported only inside `run_row_rules` (its import takes seconds).
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Mapping

import pandas as pd

from schemas import Contract, Field, load_codelist, load_contract
from schemas.rules import Catalogue, load_rules

SUITE_DIR = Path(__file__).resolve().parents[1] / "expectations"
_REGEX = {
    "date": r"^\d{4}-\d{2}-\d{2}$",
    "year_or_date": r"^\d{4}-\d{2}-\d{2}$",
    "int": r"^\d+$",
    "school_year": r"^\d{4}-\d{4}$",
}
UNIQUE_KEYS = {  # rule → the columns that must be unique together within a school
    "student_code_unique": "student_code",
    "student_personal_id_unique": "personal_id",
    "staff_code_unique": "staff_code",
    "staff_personal_id_unique": "personal_id",
    "class_code_unique": "class_code",
    "room_type_unique": "_room_key",
}
BIG_LIST = 500  # code lists longer than this are checked through a membership flag
AGE_BOUNDS = {"student_birth_date_range": (0, 25), "staff_birth_date_range": (18, 65)}


def _condition(f: Field, period: str, sheet=None) -> str | None:
    """The pandas row condition under which `f` is required (levels and `when`)."""
    r = f.required
    parts = []
    # a field carried only by some levels is required only on rows of those levels
    levels = [lv for lv in ("MN", "TH", "THCS") if lv in f.levels and (not r.levels or lv in r.levels)]
    if len(levels) < 3:
        parts.append("(" + " or ".join(f"_is_{lv} == True" for lv in levels) + ")")
    if r.when_field:
        if r.when_in:
            parts.append("(" + " or ".join(f'{r.when_field} == "{v}"' for v in r.when_in) + ")")
        if r.when_not_in:
            # "not in" as "in the rest of the list": a blank or unknown value (reported by its
            # own rule) must not also make this field required
            other = sheet.field(r.when_field) if sheet is not None else None
            codes = [c for c in (other.codelist.codes if other is not None and other.codelist else ()) if c not in r.when_not_in]
            if codes:
                parts.append("(" + " or ".join(f'{r.when_field} == "{v}"' for v in codes) + ")")
            else:
                parts.append("(" + " and ".join(f'{r.when_field} != "{v}"' for v in r.when_not_in) + ")")
        if r.when_not_blank:
            parts.append(f"(_has_{r.when_field} == True)")
    return " and ".join(parts) or None


def condition_fields(contract: Contract, sheet_id: str) -> list[str]:
    """Fields whose presence some requirement tests (`_has_<field>` columns)."""
    return sorted({f.required.when_field for f in contract.sheet(sheet_id).fields if f.required.when_not_blank})


def _exp(type_: str, rule_id: str, field: str | None, **kwargs) -> dict:
    return {"type": type_, "kwargs": kwargs, "meta": {"rule_id": rule_id, "field": field}}


def suite_dicts(period: str, catalogue: Catalogue | None = None, contract: Contract | None = None) -> dict[str, dict]:
    """sheet id → GX suite as a plain dict (deterministic; no GX import needed)."""
    c = contract or load_contract()
    cat = catalogue or load_rules(contract=c)
    provinces = sorted("0" + p for p in load_codelist("moet-2020/DM_TINH").codes)
    suites = {}
    for sheet in c.sheets:
        fields = [f for f in sheet.fields if period in f.periods]
        exps: list[dict] = []
        for f in fields:
            def rid(family: str) -> str | None:
                x = cat.family_id(sheet.id, f.id, family)
                return x if x in cat and cat[x].stage == "row" else None
            req = rid("required")
            if req and (f.required.always or not f.required.periods or period in f.required.periods):
                cond = _condition(f, period, sheet)
                kw = {"column": f.id}
                if cond:
                    kw.update(row_condition=cond, condition_parser="pandas")
                exps.append(_exp("expect_column_values_to_not_be_null", req, f.id, **kw))
            code = rid("code")
            if code and len(f.codelist) > BIG_LIST:
                # GX slows to seconds on value sets of thousands (11k communes): membership is
                # computed into `_known_<field>` by the check frame and GX checks that flag
                exps.append(_exp("expect_column_values_to_be_in_set", code, f.id, column=f"_known_{f.id}",
                                 value_set=[True]))
            elif code:
                exps.append(_exp("expect_column_values_to_be_in_set", code, f.id, column=f.id,
                                 value_set=list(f.codelist.codes)))
            fmt = rid("format")
            if fmt:
                if f.type == "flag":
                    exps.append(_exp("expect_column_values_to_be_in_set", fmt, f.id, column=f.id, value_set=["0", "1"]))
                else:
                    exps.append(_exp("expect_column_values_to_match_regex", fmt, f.id, column=f.id,
                                     regex=f.pattern if f.type == "id" else _REGEX[f.type]))
        area = cat.areas[sheet.id]
        ids = {f.id for f in fields}
        if "personal_id" in ids:
            exps.append(_exp("expect_column_values_to_be_in_set", f"{area}_personal_id_province", "personal_id",
                             column="_pid_province", value_set=provinces))
            if {"sex", "birth_date"} <= ids:
                exps.append(_exp("expect_column_pair_values_to_be_equal", f"{area}_personal_id_sex_century", "personal_id",
                                 column_A="_pid_digit4", column_B="_expected_digit4", ignore_row_if="either_value_is_missing"))
                exps.append(_exp("expect_column_pair_values_to_be_equal", f"{area}_personal_id_birth_year", "personal_id",
                                 column_A="_pid_yy", column_B="_birth_yy", ignore_row_if="either_value_is_missing"))
        for rule_id, key in UNIQUE_KEYS.items():
            r = cat.rules.get(rule_id)
            if r and r.sheet == sheet.id and r.stage == "row":
                exps.append(_exp("expect_compound_columns_to_be_unique", rule_id, r.field,
                                 column_list=["_school", key], ignore_row_if="any_value_is_missing"))
        for rule_id, (lo, hi) in AGE_BOUNDS.items():
            r = cat.rules.get(rule_id)
            if r and r.sheet == sheet.id:
                exps.append(_exp("expect_column_values_to_be_between", rule_id, r.field, column="_age",
                                 min_value=lo, max_value=hi))
        for e in exps:
            rule = cat[e["meta"]["rule_id"]]
            e["meta"].update(severity=rule.severity, message=rule.message)
        suites[sheet.id] = {
            "name": f"{sheet.id}.{period}",
            "expectations": exps,
            "meta": {"generated_from": "schemas/rules.yaml + schemas/submission.yaml", "sheet": sheet.name,
                     "period": period, "contract_version": c.version},
        }
    return suites


def write_suites(directory: Path = SUITE_DIR) -> list[Path]:
    """(Re)generate `expectations/<sheet>.<period>.json`; never hand-edit those files."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    c = load_contract()
    for period in c.periods:
        for sheet_id, suite in suite_dicts(period, contract=c).items():
            p = directory / f"{sheet_id}.{period}.json"
            p.write_text(json.dumps(suite, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            paths.append(p)
    return paths


def load_suite(sheet_id: str, period: str, directory: Path = SUITE_DIR) -> dict:
    return json.loads((directory / f"{sheet_id}.{period}.json").read_text(encoding="utf-8"))


ROW_KEY = "_rowkey"
# What a run returns: every failing row's key (COMPLETE: not only the first 20), never the
# pandas "query" GX builds by default — the list of every failing index as text, which cost
# ~15% of GX's time (scripts/measure_gx.py, scripts/measure_stages.py).
RESULT_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": [ROW_KEY],
                 "return_unexpected_index_query": False}


def _condition_columns(condition: str | None, columns) -> set[str]:
    """The frame's columns a pandas row condition names."""
    if not condition:
        return set()
    return {w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", condition) if w in columns}


def _class_name(type_: str) -> str:
    return "".join(w.capitalize() for w in type_.split("_"))


# How a sheet's suite is run (issue 12; scripts/measure_gx_school.py, scripts/measure_stages.py):
# - "two" (a sheet of at most TWO_PASS_MAX_ROWS check rows: one school, a city): GX's cost there
#   is per expectation, not per row, and a COMPLETE result costs ~2.4x a BOOLEAN_ONLY one (more
#   metrics per expectation — unexpected values, index lists — each planned by rebuilding the
#   expectation's configuration). Every expectation is first run with BOOLEAN_ONLY (each rule
#   gets its own GX result, under its rule id), then only those that failed again with
#   RESULT_FORMAT, for their failing rows.
# - "narrow" (a larger sheet: a province): the rows dominate, and GX filters the whole frame it
#   is given for every row condition and every failing expectation (a take of every column).
#   Expectations that read the same columns are run together on a frame of only those columns
#   (and `_rowkey`), once with RESULT_FORMAT; a second pass would only add its cost there.
# - "one": the whole suite once with RESULT_FORMAT on the sheet's frame (the earlier path;
#   tests compare the others with it).
# Inside each validation, edustat.gxfast builds an expectation's configuration once (GX 1.24.1
# rebuilds it ~70 times per expectation and pass), its domain object once and each row
# condition's filtered frame once: ~45% of the "two" run's CPU on one school. Measured and not
# done: a context / data source / suite built once per process (the forkserver) and reused:
# ~10 ms of CPU once the sheets share one asset, not worth sharing a mutable context.
BOOLEAN_FORMAT = {"result_format": "BOOLEAN_ONLY"}
TWO_PASS_MAX_ROWS = 50_000  # measured: two passes win at 28k rows (a province's staff), narrow runs at 411k; a tie at 55k
STRATEGIES = ("auto", "one", "two", "narrow")
STRATEGY = "auto"  # run_row_rules' strategy (tests set "one" for the earlier path)
OUTCOME_COLUMNS = ["sheet_id", "rule_id", "type", "success", "failing_rows", "passes"]


def _check(r, spec: dict) -> None:
    """GX's result `r` is the one of expectation `spec` (results come in the suite's order)."""
    if r.expectation_config.meta["rule_id"] != spec["meta"]["rule_id"] or r.expectation_config.type != spec["type"]:
        raise RuntimeError(f"GX's results are out of order at {spec['meta']['rule_id']}")
    _raise_if_exception(r)


def _raise_if_exception(r) -> None:
    """An expectation GX could not evaluate is an error, never a pass or a failure without rows.
    GX 1.24.1 says so in two shapes: {"raised_exception": True, ...} for the expectation, or,
    when one of its metrics failed, {"<metric id>": {"raised_exception": True, ...}, ...} with
    no top-level flag (found by tests/test_gx_cost.py: a bad row condition was a silent fail)."""
    info = r.exception_info or {}
    raised = [info] if info.get("raised_exception") else [
        v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    if raised:
        meta = r.expectation_config.meta
        raise RuntimeError(f"GX could not evaluate {meta['rule_id']}: {raised[0].get('exception_message')}")


def _columns_of(kwargs: dict) -> list[str]:
    return [c for c in (kwargs.get("column"), kwargs.get("column_A"), kwargs.get("column_B"),
                        *kwargs.get("column_list", [])) if c]


def strategy_for(rows: int, strategy: str = "auto") -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    if strategy != "auto":
        return strategy
    return "two" if rows <= TWO_PASS_MAX_ROWS else "narrow"


def _source():
    """A new ephemeral GX context's pandas data source, quiet (GX is imported here)."""
    import logging

    from edustat import gxload  # noqa: F401  (SciPy's statistics and Altair lazy, before GX)

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no "temporary directory" line for the officer
    # string row conditions are deprecated for GX 2.0 (Condition objects replace them); the
    # pinned 1.24.1 supports them and they serialise plainly into the committed suites
    warnings.filterwarnings("ignore", message="(The condition_parser|Passing a string to the row_condition)", category=DeprecationWarning)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx.data_sources.add_pandas("edustat")


def _batch_definition(source):
    # one asset for every sheet (the frame is the batch parameter): each asset and batch
    # definition GX adds re-serialises the context's whole config as YAML (~5 ms each)
    return source.add_dataframe_asset("checks").add_batch_definition_whole_dataframe("all")


def prime_graphs(periods: tuple[str, ...] | None = None) -> int:
    """Build, once for the process, the metric graph of every committed expectation for both
    result formats a run asks for (edustat.gxfast: GX builds it again for every expectation of
    every validation, ~20% of a school's row rules). The warm server calls it, so each forked run
    finds them; GX's own code builds them, on an empty frame of the suite's columns under the
    batch a run validates (no row is evaluated). Returns how many graphs the process holds."""
    from edustat import gxload  # noqa: F401  (before GX: see edustat.gxload)

    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.validator.v1_validator import Validator as V1Validator

    from edustat import gxfast

    if gxfast.install() is not None:
        return 0
    batch_definition = _batch_definition(_source())
    for path in sorted(SUITE_DIR.glob("*.json")):
        sheet_id, period = path.stem.split(".")
        if periods is not None and period not in periods:
            continue
        spec = load_suite(sheet_id, period)
        columns = sorted({ROW_KEY, *(c for e in spec["expectations"] for c in _columns_of(e["kwargs"]))})
        suite = gx.ExpectationSuite(name=f"{sheet_id}.{period}", expectations=[
            getattr(gxe, _class_name(e["type"]))(**e["kwargs"], meta=e["meta"]) for e in spec["expectations"]])
        data = {"dataframe": pd.DataFrame({c: pd.Series(dtype="string") for c in columns})}
        for result_format in (BOOLEAN_FORMAT, RESULT_FORMAT):
            validator = V1Validator(batch_definition=batch_definition, batch_parameters=data, result_format=result_format)
            with gxfast.cached_configurations():
                gxfast.build_graphs(validator, suite)
    return gxfast.graphs_held()


def row_rule_outcomes(frames: Mapping[str, pd.DataFrame], period: str, *, strategy: str = "auto"
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate each sheet's concatenated check frame with its committed suite.

    Returns (outcomes, failing): `outcomes` has one row per expectation GX evaluated, in suite
    order (OUTCOME_COLUMNS: its rule id, GX's success, how many rows failed, 1 or 2 passes);
    `failing` one row per (check-frame row, failed rule): `_rowkey`, rule_id. `strategy`: see
    the comment above (auto: "two" up to TWO_PASS_MAX_ROWS rows, else "narrow")."""
    from edustat import gxload  # noqa: F401  (before GX: see edustat.gxload)

    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.validator.v1_validator import Validator as V1Validator

    from edustat import gxfast  # each expectation's configuration built once per validation

    source = _source()
    found: list[pd.DataFrame] = []
    outcomes: list[dict] = []
    batch_definition = None
    for sheet_id, frame in frames.items():
        if frame is None or frame.empty:
            continue
        spec = load_suite(sheet_id, period)
        planned = []  # (expectation spec, the frame columns it reads)
        for e in spec["expectations"]:
            cols = _columns_of(e["kwargs"])
            if any(col not in frame.columns for col in cols):
                continue  # the column is absent for every school of this run (structure stage reported it)
            planned.append((e, {ROW_KEY, *cols, *_condition_columns(e["kwargs"].get("row_condition"), frame.columns)}))
        mode = strategy_for(len(frame), strategy)
        if mode == "narrow":
            groups: dict[frozenset, list[int]] = {}
            for i, (_, used) in enumerate(planned):
                groups.setdefault(frozenset(used), []).append(i)
            runs = list(groups.items())
        else:
            runs = [(frozenset().union(*(u for _, u in planned)) if planned else frozenset({ROW_KEY}),
                     list(range(len(planned))))]
        if batch_definition is None:
            batch_definition = _batch_definition(source)
        success: dict[int, bool] = {}
        keys_of: dict[int, list[int]] = {}
        passes: dict[int, int] = {}

        def make(indexes, name=f"{sheet_id}.{period}"):
            # one constructor call: add_expectation() one by one costs ~20x more
            return gx.ExpectationSuite(name=name, expectations=[
                getattr(gxe, _class_name(planned[i][0]["type"]))(**planned[i][0]["kwargs"], meta=planned[i][0]["meta"])
                for i in indexes])

        for g, (used, indexes) in enumerate(runs):
            # GX filters the whole frame for every metric of every expectation (row conditions,
            # failing rows): it sees only the columns its expectations name
            data = {"dataframe": frame[[col for col in frame.columns if col in used]]}
            if mode == "narrow":
                # GX hashes the frame each time it makes it a batch: batch.validate does it twice
                # (get_batch, then its validator), its v1 Validator once — on a province's rows
                # that is ~10% of the run. That Validator is what ValidationDefinition.run runs
                # (GX 1.24.1: the same call, then only metadata and storing): called directly,
                # the suite and definition are not added to the context nor the results
                # serialised into its store (~20% of a city's learners run, 40 groups)
                with gxfast.cached_configurations():
                    second = V1Validator(batch_definition=batch_definition, batch_parameters=data,
                                         result_format=RESULT_FORMAT).validate_expectation_suite(
                        make(indexes, f"{sheet_id}.{period}.{g}")).results
                for i, r in zip(indexes, second, strict=True):
                    _check(r, planned[i][0])
                    success[i] = bool(r.success)
                    passes[i] = 1
                    keys_of[i] = [] if r.success else [int(d[ROW_KEY]) for d in (r.result.get("unexpected_index_list") or [])]
                continue
            # GX's v1 Validator, as Batch.validate runs it (the same validator as a
            # ValidationDefinition, without storing and serialising the results: ~10% of GX's
            # time on a school's rows); it validates the suite as one metric graph (metrics that
            # expectations share are computed once). One Validator for both passes: it gets the
            # batch (and GX hashes the frame) once, where `get_batch` then `Batch.validate` did it
            # once plus once per pass; each pass reads its `result_format` when it starts
            validator = V1Validator(batch_definition=batch_definition, batch_parameters=data,
                                    result_format=BOOLEAN_FORMAT if mode == "two" else RESULT_FORMAT)
            if mode == "two":
                with gxfast.cached_configurations():
                    first = validator.validate_expectation_suite(make(indexes)).results
                for i, r in zip(indexes, first, strict=True):
                    _check(r, planned[i][0])
                    success[i] = bool(r.success)
                    passes[i] = 1
                indexes = [i for i in indexes if not success[i]]
                if not indexes:
                    continue
            validator.result_format = RESULT_FORMAT
            with gxfast.cached_configurations():
                second = validator.validate_expectation_suite(make(indexes)).results
            for i, r in zip(indexes, second, strict=True):
                _check(r, planned[i][0])
                if mode == "two" and r.success:  # GX said "failed" with BOOLEAN_ONLY
                    raise RuntimeError(f"GX's two passes disagree on {planned[i][0]['meta']['rule_id']}")
                success[i] = bool(r.success)
                passes[i] = passes.get(i, 0) + 1
                keys_of[i] = [] if r.success else [int(d[ROW_KEY]) for d in (r.result.get("unexpected_index_list") or [])]
        for i, (e, _) in enumerate(planned):
            rule_id = e["meta"]["rule_id"]
            keys = keys_of.get(i, [])
            if keys:
                found.append(pd.DataFrame({"_rowkey": keys, "rule_id": rule_id}))
            outcomes.append({"sheet_id": sheet_id, "rule_id": rule_id, "type": e["type"], "success": success[i],
                             "failing_rows": len(keys), "passes": passes[i]})
    out = pd.DataFrame(outcomes, columns=OUTCOME_COLUMNS)
    if not found:
        return out, pd.DataFrame({"_rowkey": pd.Series(dtype="int64"), "rule_id": pd.Series(dtype="string")})
    return out, pd.concat(found, ignore_index=True).drop_duplicates()


def run_row_rules(frames: Mapping[str, pd.DataFrame], period: str, severities: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Validate each sheet's concatenated check frame with its committed suite (see
    `row_rule_outcomes`). Grain: one row per (check-frame row, failed rule): `_rowkey`, rule_id."""
    return row_rule_outcomes(frames, period, strategy=STRATEGY)[1]
