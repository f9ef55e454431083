"""GX's cost cut (issue 12) without changing what it finds: the two-pass run (BOOLEAN_ONLY for
every expectation, COMPLETE for the failed ones) and the narrow run (expectations grouped by the
columns they read, each group on a frame of only those columns) find exactly what the earlier
one-pass run finds — the same failing rows per rule and the same issue set of the collection —
on a synthetic city with injected errors and on the hostile-input corpus; every rule of a suite
still gets its own GX result under its rule id; GX's errors still stop the run."""
from __future__ import annotations

import pandas as pd
import pytest

from edustat import expectations as ex
from edustat import pipeline
from edustat.config import Config
from edustat.incremental import materialise
from edustat.submissions import active, assemble, build_check_frames, validate_collection
from edustat.synth import generate_city
from tests.bad_inputs import build_corpus_city

YEAR, PERIOD = "2022-2023", "dau_nam"


def _collection(inbox, data):
    from edustat.submissions import discover

    results = pipeline.ingest_all(discover(inbox), Config(data_dir=data, workers=1, incremental=False), YEAR, PERIOD, 1)
    materialise([fr for fr in results if active(fr)])
    frames = assemble(results)
    checks, _ = build_check_frames(results, YEAR, frames=frames)
    return {"results": results, "frames": frames, "checks": checks}


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("gxcity")
    generate_city(root / "inbox", schools=6, seed=12, school_year=YEAR, period=PERIOD, error_rate=0.03)
    (root / "inbox" / "manifest.json").unlink()
    return _collection(root / "inbox", root / "data")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("gxcorpus")
    build_corpus_city(root / "inbox", root / "outside", school_year=YEAR, period=PERIOD, tmp_path_factory=tmp_path_factory)
    return _collection(root / "inbox", root / "data")


@pytest.fixture(scope="module", params=["city", "corpus"])
def collection(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def oracle(collection):
    """The earlier path: each sheet's whole suite once with COMPLETE results, GX as it is (each
    expectation's configuration rebuilt whenever GX reads it: edustat.gxfast off)."""
    from edustat import gxfast

    gxfast.ENABLED = False
    try:
        return ex.row_rule_outcomes(collection["checks"], PERIOD, strategy="one")
    finally:
        gxfast.ENABLED = True


@pytest.fixture(scope="module")
def outcomes_of(collection):
    """`row_rule_outcomes` of the collection with edustat's settings as shipped, one validation
    per strategy for the tests that only read it (what it finds is the same each time: the
    tests below prove a second validation equal to the first)."""
    made: dict[str, tuple] = {}

    def get(strategy: str) -> tuple:
        if strategy not in made:
            made[strategy] = ex.row_rule_outcomes(collection["checks"], PERIOD, strategy=strategy)
        return made[strategy]

    return get


def _same_as_oracle(got: tuple, oracle: tuple) -> None:
    """What a strategy finds is what GX's one pass finds: the failing rows in the same order,
    each rule's verdict and count (`passes` differs by strategy and is checked apart)."""
    outcomes, found = got
    pd.testing.assert_frame_equal(_sorted(found), _sorted(oracle[1]))
    assert found.reset_index(drop=True).equals(oracle[1].reset_index(drop=True))  # same order too
    cols = ["sheet_id", "rule_id", "type", "success", "failing_rows"]
    pd.testing.assert_frame_equal(outcomes[cols], oracle[0][cols])


def _sorted(found: pd.DataFrame) -> pd.DataFrame:
    return found.astype({"_rowkey": "int64", "rule_id": "string"}).sort_values(["rule_id", "_rowkey"]).reset_index(drop=True)


def test_the_collections_have_row_errors_for_gx_to_find(collection, oracle):
    outcomes, found = oracle
    assert len(found) > 0 and (~outcomes["success"]).sum() > 0
    assert outcomes["success"].sum() > 0  # and rules that pass


@pytest.mark.parametrize("strategy", ["two", "narrow", "auto"])
def test_each_strategy_finds_what_the_one_pass_run_finds(oracle, outcomes_of, strategy):
    _same_as_oracle(outcomes_of(strategy), oracle)


@pytest.mark.parametrize("strategy", ["two", "narrow"])
def test_every_rule_of_a_suite_gets_its_own_gx_result(collection, outcomes_of, strategy):
    outcomes, found = outcomes_of(strategy)
    for sheet_id, frame in collection["checks"].items():
        expected = [e["meta"]["rule_id"] for e in ex.load_suite(sheet_id, PERIOD)["expectations"]
                    if all(c in frame.columns for c in ex._columns_of(e["kwargs"]))]
        assert expected, sheet_id
        assert outcomes.loc[outcomes["sheet_id"] == sheet_id, "rule_id"].tolist() == expected
    counts = found.groupby("rule_id").size()
    for row in outcomes.itertuples():
        assert row.failing_rows == (0 if row.success else counts.get(row.rule_id, 0))
        # two passes: a failed rule was run again for its rows; a passing one only once
        assert row.passes == (1 if (strategy == "narrow" or row.success) else 2)


def test_the_collections_issue_set_is_unchanged(collection, monkeypatch):
    def issues():
        return validate_collection(collection["results"], school_year=YEAR, period=PERIOD, frames=collection["frames"])

    now = issues()
    monkeypatch.setattr(ex, "STRATEGY", "one")
    before = issues()
    assert len(now) > 0
    pd.testing.assert_frame_equal(now, before)


def test_auto_picks_two_passes_for_a_school_and_narrow_runs_for_a_province():
    assert ex.strategy_for(1_725) == "two"
    assert ex.strategy_for(ex.TWO_PASS_MAX_ROWS) == "two"
    assert ex.strategy_for(411_439) == "narrow"
    assert ex.strategy_for(10, "one") == "one"
    with pytest.raises(ValueError):
        ex.strategy_for(10, "fast")


@pytest.mark.parametrize("strategy", ["two", "narrow", "one"])
def test_a_changed_suite_is_used_at_once_and_gx_errors_still_stop_the_run(city, monkeypatch, strategy):
    """Nothing of a suite outlives a run (no cache to go stale when the rules change), and an
    expectation GX cannot evaluate is an error, not a pass."""
    real = ex.load_suite
    checks = {"learners": city["checks"]["learners"]}
    base, _ = ex.row_rule_outcomes(checks, PERIOD, strategy=strategy)

    def changed(sheet_id, period, *a, **k):
        suite = real(sheet_id, period, *a, **k)
        e = dict(suite["expectations"][0], kwargs={"column": ex.ROW_KEY, "min_value": 0, "max_value": 0},
                 type="expect_column_values_to_be_between")
        e["meta"] = dict(e["meta"], rule_id="test_rowkey_zero")
        return dict(suite, expectations=[*suite["expectations"], e])

    monkeypatch.setattr(ex, "load_suite", changed)
    outcomes, found = ex.row_rule_outcomes(checks, PERIOD, strategy=strategy)
    assert outcomes["rule_id"].tolist() == [*base["rule_id"], "test_rowkey_zero"]
    assert set(found.loc[found["rule_id"] == "test_rowkey_zero", "_rowkey"]) == set(checks["learners"][ex.ROW_KEY]) - {0}

    def broken(sheet_id, period, *a, **k):
        suite = real(sheet_id, period, *a, **k)
        e = dict(suite["expectations"][0], kwargs={"column": ex.ROW_KEY, "row_condition": "_is_TH == == True",
                                                   "condition_parser": "pandas"},
                 type="expect_column_values_to_not_be_null")
        return dict(suite, expectations=[*suite["expectations"], e])

    monkeypatch.setattr(ex, "load_suite", broken)
    with pytest.raises(RuntimeError, match="GX could not evaluate"):
        ex.row_rule_outcomes(checks, PERIOD, strategy=strategy)


def test_gx_builds_each_configuration_once_per_validation(city, monkeypatch):
    """edustat.gxfast: inside a validation an expectation's configuration is built once, not
    at each of GX's ~70 reads (what it finds is compared with GX's own path above)."""
    from edustat import gxfast

    assert gxfast.install() is None and gxfast.installed()
    real, builds = gxfast._installed["fget"], []
    monkeypatch.setitem(gxfast._installed, "fget", lambda self: builds.append(1) or real(self))
    real_filter, filtered = gxfast._installed["row_filter"], []

    def row_filter(engine, data, condition, kwargs):
        filtered.append((id(gxfast._state.cache), id(data), str(condition)))
        return real_filter(engine, data, condition, kwargs)

    monkeypatch.setitem(gxfast._installed, "row_filter", row_filter)
    outcomes, _ = ex.row_rule_outcomes(city["checks"], PERIOD, strategy="two")
    runs = int(outcomes["passes"].sum())  # expectation × pass
    assert 0 < len(builds) <= 3 * runs, f"{len(builds)} configurations built for {runs} expectation runs"
    assert filtered and len(filtered) == len(set(filtered)), "a frame filtered once per condition and validation"
    assert gxfast.cache_size() is None, "nothing of the cache outlives the validation"


def test_a_configuration_is_reused_only_inside_a_scope_and_on_its_thread():
    import threading

    import great_expectations.expectations as gxe

    from edustat import gxfast

    e = gxe.ExpectColumnValuesToNotBeNull(column="x", meta={"rule_id": "r"})
    assert e.configuration is not e.configuration, "outside a scope: GX's own property"
    other: list[bool] = []
    with gxfast.cached_configurations():
        first = e.configuration
        assert e.configuration is first and gxfast.cache_size() == 1
        f = gxe.ExpectColumnValuesToNotBeNull(column="y", meta={"rule_id": "s"})
        assert f.configuration.kwargs["column"] == "y" and f.configuration is f.configuration
        t = threading.Thread(target=lambda: other.append(e.configuration is e.configuration))
        t.start()
        t.join()
    assert other == [False], "another thread does not see this scope"
    assert gxfast.cache_size() is None and e.configuration is not first
    assert e.configuration.to_json_dict() == first.to_json_dict()


def test_gxfast_patches_only_the_pinned_gx(monkeypatch):
    import great_expectations as gx

    from edustat import gxfast

    monkeypatch.setattr(gxfast, "_installed", {})
    monkeypatch.setattr(gx, "__version__", "1.99.0")
    why = gxfast.install()
    assert why and "1.99.0" in why and not gxfast.installed()
    with gxfast.cached_configurations():
        assert gxfast.cache_size() is None, "another GX: no cache, GX as it is"


def test_a_metric_id_is_gxs_own_inside_a_validation(city, monkeypatch):
    """edustat.gxfast._fast_to_id: every id GX asks for while validating (both strategies) is the
    text GX's own `IDDict.to_id` gives, and most are made without GX's JSON conversion."""
    from great_expectations.core.id_dict import IDDict

    from edustat import gxfast

    assert gxfast.install() is None
    own, seen = gxfast._installed["to_id"], []

    def checked(self, id_keys=None, id_ignore_keys=None):
        got = gxfast._fast_to_id(self, id_keys, id_ignore_keys)
        want = own(self, id_keys, id_ignore_keys)
        assert got == want, (dict(self), got, want)
        if gxfast.cache_size() is not None:
            keys = set(self.keys() if id_keys is None else id_keys) - set(
                self._id_ignore_keys if id_ignore_keys is None else id_ignore_keys)
            seen.append(len(keys) > 1 and all(type(k) is str and gxfast._plain(self[k]) for k in keys))
        return got

    monkeypatch.setattr(IDDict, "to_id", checked)
    # the metric configurations GX builds for an expectation's graph and its judging, not the
    # ones kept for the process (which make no id again)
    monkeypatch.setattr(gxfast, "GRAPHS", False)
    monkeypatch.setattr(gxfast, "DEPENDENCIES", False)
    for strategy in ("two", "narrow"):
        ex.row_rule_outcomes(city["checks"], PERIOD, strategy=strategy)
    assert sum(seen) > len(seen) / 2, f"{sum(seen)} of {len(seen)} ids made the short way"


def test_a_metric_id_of_values_gx_converts_is_gxs_own():
    import math

    import numpy as np
    from great_expectations.core.id_dict import IDDict

    from edustat import gxfast

    assert gxfast.install() is None
    own = gxfast._installed["to_id"]
    cases = [
        {"column": "x", "batch_id": "b"},
        {"column": "x", "value_set": ["01", "02", 3, 4.5, True, None], "mostly": 1.0},
        {"column": "x", "row_condition": {"type": "pass_through", "pass_through_filter": "_is_TH == True"}},
        {"column": "x", "value_set": ("a", "b"), "nested": [{"k": [1, (2, 3)]}]},
        {"column": "x", "min_value": math.nan, "max_value": math.inf},
        {"column": "x", "n": np.int64(3), "f": np.float64(0.1)},
        {"column": "x", "s": {"b", "a"}},
        {"column": "x", 7: "seven"},
        {"column": "x", "d": {1: "one"}},
        {"column": "x", "d": IDDict({"a": 1, "b": [None]})},
        {"column": "x"},
        {},
    ]
    with gxfast.cached_configurations():
        for case in cases:
            d = IDDict(case)
            assert d.to_id() == own(d), case
            assert d.to_id(id_ignore_keys={"column"}) == own(d, None, {"column"}), case
            assert d.to_id(id_keys=list(case)[:2]) == own(d, list(case)[:2]), case
    assert not gxfast._plain({"v": math.nan}) and not gxfast._plain(np.int64(3)) and not gxfast._plain({1: "a"})


def _graph_ids(graphs) -> list:
    return [(g.configuration.to_json_dict(), [e.id for e in g.graph.edges]) for g in graphs]


def test_metric_graphs_kept_are_the_ones_gx_builds():
    """edustat.gxfast keeps each expectation's metric graph for the process (the warm server
    primes them): for every expectation of every committed suite, in both result formats a run
    asks for, what a validation gets is what GX's own code builds now — the same configurations
    and the same edges in the same order — and it builds none itself."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.validator.v1_validator import Validator as V1Validator

    from edustat import gxfast

    assert ex.prime_graphs() > 0
    held = gxfast.graphs_held()
    batch_definition = ex._batch_definition(ex._source())
    compared = 0
    for path in sorted(ex.SUITE_DIR.glob("*.json")):
        sheet_id, period = path.stem.split(".")
        spec = ex.load_suite(sheet_id, period)
        columns = sorted({ex.ROW_KEY, *(c for e in spec["expectations"] for c in ex._columns_of(e["kwargs"]))})
        suite = gx.ExpectationSuite(name=path.stem, expectations=[
            getattr(gxe, ex._class_name(e["type"]))(**e["kwargs"], meta=e["meta"]) for e in spec["expectations"]])
        frame = pd.DataFrame({c: pd.Series(["x"], dtype="string") for c in columns})
        for result_format in (ex.BOOLEAN_FORMAT, ex.RESULT_FORMAT):
            wrapped = V1Validator(batch_definition=batch_definition, batch_parameters={"dataframe": frame},
                                  result_format=result_format)._wrapped_validator
            with gxfast.cached_configurations():
                configs = wrapped.process_expectations_for_validation(suite.expectation_configurations, None)
                runtime_own, runtime_kept = ({"result_format": dict(result_format)} for _ in range(2))
                own = gxfast._installed["subgraphs"](wrapped, configs, [], True, runtime_own)
                kept = getattr(wrapped, gxfast._SUBGRAPHS)(configs, [], True, runtime_kept)
            assert not own[1] and not kept[1]
            # GX's build fills the run's result format's defaults in place; so does a kept graph
            assert runtime_kept == runtime_own and list(runtime_kept["result_format"]) == list(runtime_own["result_format"])
            assert runtime_own != {"result_format": result_format}
            assert _graph_ids(kept[0]) == _graph_ids(own[0]) and len(kept[0]) == len(configs)
            assert [c.to_json_dict() for c in kept[2]] == [c.to_json_dict() for c in own[2]]
            compared += len(configs)
    assert compared > 400 and gxfast.graphs_held() == held, "every graph was kept by the priming"


def test_a_primed_validation_builds_no_graph_and_finds_the_same(city, monkeypatch):
    from edustat import gxfast

    ex.prime_graphs()
    gxfast.GRAPHS = False
    try:
        want = ex.row_rule_outcomes(city["checks"], PERIOD, strategy="two")
    finally:
        gxfast.GRAPHS = True
    builds: list[int] = []
    own = gxfast._installed["subgraphs"]
    monkeypatch.setitem(gxfast._installed, "subgraphs", lambda *a: builds.append(len(a[1])) or own(*a))
    got = ex.row_rule_outcomes(city["checks"], PERIOD, strategy="two")
    assert builds == [], "every expectation's graph came from the primed ones"
    pd.testing.assert_frame_equal(got[0], want[0])
    pd.testing.assert_frame_equal(got[1], want[1])


@pytest.mark.parametrize("strategy", ["two", "narrow", "one"])
def test_gx_judges_by_dependencies_kept_for_the_process_and_finds_the_same(collection, oracle, monkeypatch, strategy):
    """Each expectation's validation dependencies (the metrics GX judges it by) computed once per
    process (edustat.gxfast `_dependencies`): a later validation computes none (GX's
    `get_metric_kwargs`, which computing them calls for every metric, is not called once the
    graphs are primed) and finds what GX's own judging finds (the oracle: GX's own path, gxfast
    off), every outcome and failing row, the second validation exactly what the first found."""
    import great_expectations.expectations.expectation as gx_expectation

    from edustat import gxfast

    ex.prime_graphs()
    monkeypatch.setattr(gxfast, "_dependencies", {})
    calls: list[int] = []
    own = gx_expectation.get_metric_kwargs
    monkeypatch.setattr(gx_expectation, "get_metric_kwargs", lambda *a, **k: calls.append(1) or own(*a, **k))
    assert gxfast.DEPENDENCIES and gxfast.dependencies_held() == 0
    first = None
    for run in range(2):
        calls.clear()
        got = ex.row_rule_outcomes(collection["checks"], PERIOD, strategy=strategy)
        assert (len(calls) > 0) == (run == 0), "the first run computes each expectation's dependencies, the second none"
        assert gxfast.dependencies_held() > 0
        _same_as_oracle(got, oracle)
        if first is None:
            first = got
        else:
            pd.testing.assert_frame_equal(got[0], first[0])
            pd.testing.assert_frame_equal(got[1], first[1])
