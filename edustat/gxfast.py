"""Great Expectations' fixed cost on a few rows (issue 12: one school changed).

On one school's check frames GX's cost is per expectation, not per row, and about half of it is
GX 1.24.1 rebuilding each expectation's configuration: `Expectation.configuration` is a
property that serialises the whole pydantic model (`self.dict()`, value sets included) into a
new ExpectationConfiguration every time it is read, and the validator reads it ~70 times per
expectation and pass (domain, success and runtime kwargs of every metric it plans; measured with
scripts/measure_gx_school.py --profile).

`cached_configurations()` is a scope (one `Batch.validate` / `ValidationDefinition.run` of
edustat.expectations) in which an expectation's configuration is built once per expectation
object and then reused. It holds only within the scope and the thread that opened it: outside
it (any other GX use, another thread) the property is GX's own. Why reusing is exact here:
- inside a validation GX never changes an expectation object (`save` and `render` — the only
  methods that assign its fields — are not called without a GX Cloud context), and the objects
  it builds itself (`ExpectationConfiguration.to_domain_obj`) live only inside the validation;
- no caller changes the configuration it is given (the validator deep-copies before adding a
  batch id); a cached object is returned to callers that before each got an equal new one;
- the cache keeps each object alive and checks identity, so an id() cannot be reused by another
  object within the scope; the scope's cache is dropped when it ends (nothing outlives a run).
The same scope also builds the domain object of a configuration once (the validator builds it
twice: to plan the metrics, then to judge them) and filters the batch by a row condition once
(GX filters again for every metric: 39 queries became 12 on a school's rows), and gives a
metric's kwargs their id without GX's generic JSON conversion when they are plain JSON values
(`_fast_to_id`: GX builds ~3,000 metric configurations on one school's rows, each with two ids,
~15% of the validation's CPU; the same string, see there).
tests/test_gx_cost.py compares every outcome of every strategy with GX's own path (ENABLED off),
on a synthetic city and the hostile-input corpus.

Inside a scope, each expectation's metric graph is also kept for the process (`_graphs`): GX
builds it again for every expectation of every validation (its validation dependencies, then
the dependency graph of each metric: ~20% of a changed school's row rules), from nothing but
the expectation's type and kwargs, the run's result format, the engine's class and the batch
id (no data: the metric providers' dependencies read neither the frame nor the engine's state).
A kept graph's edges are reused as they are: GX sets a metric configuration's defaults and
dependencies while it builds the graph, never afterwards (checked: every kept edge's ids,
kwargs and dependencies unchanged after validations); the one other thing the build does, filling the
run's result-format defaults in place, is done by GX's own function on a kept one too. The warm
server primes them (`edustat.expectations.prime_graphs`, ~1 CPU s once), so a forked run builds
none; tests/test_gx_cost.py compares every committed expectation's kept graph with GX's own.

Likewise each expectation's validation dependencies, which GX computes a second time when it
judges the expectation on the resolved metrics (`metrics_validate`, ~7% of a school's row rules),
are kept for the process (`_dependencies`), from the same things as its graph (the evaluated
configuration carries the batch id); a kept one's metric configurations are only read (their ids
look the resolved metrics up), and the run's result format is filled in place by GX's own
`parse_result_format`, as the computation does.

The patch is installed only on the GX version it was checked against (PINNED_GX), with the
property it replaces being GX's own; otherwise `install()` says why and GX runs as it is
(slower, not wrong).
"""
from __future__ import annotations

import copy
import hashlib
import json
import threading
from contextlib import contextmanager

PINNED_GX = "1.24.1"
_state = threading.local()
_installed: dict = {}
ENABLED = True  # tests set False to compare with GX's own property


def _cached_configuration(self):
    cache = getattr(_state, "cache", None)
    if cache is None:
        return _installed["fget"](self)
    hit = cache.get(id(self))
    if hit is not None and hit[0] is self:
        return hit[1]
    configuration = _installed["fget"](self)
    cache[id(self)] = (self, configuration)
    return configuration


def _cached_domain_obj(self):
    cache = getattr(_state, "cache", None)
    if cache is None:
        return _installed["to_domain_obj"](self)
    key = ("domain", id(self))
    hit = cache.get(key)
    if hit is not None and hit[0] is self:
        return hit[1]
    obj = _installed["to_domain_obj"](self)
    cache[key] = (self, obj)
    return obj


def _cached_row_filter(self, data, row_condition, domain_kwargs):
    """A string row condition filtered once per frame: GX filters the batch again for every
    metric of an expectation (~3 each) and every expectation with the same condition. GX already
    hands the unfiltered batch frame itself to every metric; the filtered one is shared alike
    (pandas 3: copy-on-write)."""
    cache = getattr(_state, "cache", None)
    # GX 1.24 hands a string condition over as {"type": "pass_through", "pass_through_filter": ...}
    plain = isinstance(row_condition, str) or (
        isinstance(row_condition, dict) and all(isinstance(v, str) for v in row_condition.values()))
    if cache is None or not plain:
        return _installed["row_filter"](self, data, row_condition, domain_kwargs)
    condition = row_condition if isinstance(row_condition, str) else tuple(sorted(row_condition.items()))
    key = ("rows", id(data), condition, domain_kwargs.get("condition_parser"))
    hit = cache.get(key)
    if hit is not None and hit[0] is data:
        return hit[1]
    rows = _installed["row_filter"](self, data, row_condition, domain_kwargs)
    cache[key] = (data, rows)
    return rows


def _plain(value) -> bool:
    """`value` is made of exact str/int/bool/float (not NaN)/None, lists, tuples and dicts with
    str keys: GX's `convert_to_json_serializable` gives back an equal structure for it (a tuple
    as a list, which `json.dumps` writes alike), so `json.dumps` of the value itself is the same
    text. Anything else (NaN, which GX writes as null; numpy scalars; sets; subclasses; models)
    is not plain."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return value == value
    if t is list or t is tuple:
        return all(_plain(v) for v in value)
    if t is dict or t is _installed.get("iddict"):
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


def _fast_to_id(self, id_keys=None, id_ignore_keys=None):
    """GX 1.24.1's `IDDict.to_id`, the same steps, without the generic conversion when the
    values are plain (`_plain`): md5 of `json.dumps(..., sort_keys=True)` of the same dict.
    Outside a scope, or with any value not plain, GX's own."""
    if getattr(_state, "cache", None) is None:
        return _installed["to_id"](self, id_keys, id_ignore_keys)
    keys = self.keys() if id_keys is None else id_keys
    ignore = self._id_ignore_keys if id_ignore_keys is None else id_ignore_keys
    keys = set(keys) - set(ignore)
    if len(keys) <= 1:
        return _installed["to_id"](self, id_keys, id_ignore_keys)
    data = {k: self[k] for k in keys}
    if not all(type(k) is str and _plain(v) for k, v in data.items()):
        return _installed["to_id"](self, id_keys, id_ignore_keys)
    return hashlib.md5(json.dumps(data, sort_keys=True).encode("utf-8"), usedforsecurity=False).hexdigest()


_SUBGRAPHS = "_generate_metric_dependency_subgraphs_for_each_expectation_configuration"
_graphs: dict = {}  # (engine class, batch id, expectation, runtime configuration) -> GX's metric edges
GRAPHS = True  # tests set False to compare with GX's own graph building


def _config_key(configuration) -> str | None:
    """The text of what GX builds an expectation's metric graph from (its type and kwargs; its
    meta too, which GX does not read there), or None when a value is not plain."""
    parts = {"type": configuration.type, "kwargs": dict(configuration.kwargs), "meta": configuration.meta or {}}
    if not all(_plain(v) for v in (parts["type"], parts["kwargs"], parts["meta"])):
        return None
    return json.dumps(parts, sort_keys=True)


def _cached_subgraphs(self, expectation_configurations, processed_configurations, catch_exceptions,
                      runtime_configuration=None):
    """GX 1.24.1's `Validator._generate_metric_dependency_subgraphs_for_each_expectation_configuration`
    with each expectation's metric graph built once per process (see `_graphs`)."""
    own = _installed["subgraphs"]
    if getattr(_state, "cache", None) is None or not GRAPHS:
        return own(self, expectation_configurations, processed_configurations, catch_exceptions, runtime_configuration)
    from great_expectations.expectations.expectation_configuration import parse_result_format
    from great_expectations.validator.validation_graph import ExpectationValidationGraph, ValidationGraph

    engine, batch_id = self._execution_engine, self.active_batch_id
    runtime = runtime_configuration if runtime_configuration is not None else {}
    runtime_key = json.dumps(runtime, sort_keys=True) if _plain(runtime) else None
    graphs, evrs = [], []
    for configuration in expectation_configurations:
        key = _config_key(configuration) if runtime_key is not None and configuration.type is not None else None
        full = None if key is None else (type(engine), batch_id, key, runtime_key)
        edges = None if full is None else _graphs.get(full)
        if edges is None:
            got, failed, done = own(self, [configuration], processed_configurations, catch_exceptions, runtime_configuration)
            graphs.extend(got)
            evrs.extend(failed)
            if full is not None and got and not failed:
                _graphs[full] = tuple(got[0].graph.edges)
            continue
        # what GX's own build leaves behind besides the graph: each expectation's
        # `get_validation_dependencies` fills the run's result format's defaults in place
        # (`parse_result_format` on the very dict); resolving and judging read it afterwards
        if isinstance(runtime.get("result_format"), dict):
            parse_result_format(runtime["result_format"])
        evaluated_config = copy.deepcopy(configuration)  # as GX: the batch id on a copy
        if batch_id:
            evaluated_config.kwargs.update({"batch_id": batch_id})
        graphs.append(ExpectationValidationGraph(configuration=evaluated_config,
                                                 graph=ValidationGraph(execution_engine=engine, edges=list(edges))))
        processed_configurations.append(evaluated_config)
    return graphs, evrs, processed_configurations


_dependencies: dict = {}  # (engine class, evaluated expectation, runtime configuration) -> GX's metrics by name
DEPENDENCIES = True  # tests set False to compare with GX's own judging


def _cached_metrics_validate(self, metrics, runtime_configuration=None, execution_engine=None, **kwargs):
    """GX 1.24.1's `Expectation.metrics_validate`, the same steps, with the expectation's
    validation dependencies (which metrics it judges by) taken once per process: GX computes
    them again for every expectation it judges (`get_validation_dependencies`: its
    configuration's kwargs and the run's result format, ~7% of a school's row rules), from
    the same things as its metric graph (`_graphs`: the expectation's type, kwargs — the batch
    id among them, this is the evaluated configuration — and the run's configuration, and the
    engine's class; no data). A kept one's metric configurations are only read (their ids
    look up the resolved metrics); what the computation leaves behind — the run's result format
    with its defaults filled in place — is done by GX's own `parse_result_format` on a hit."""
    own = _installed["metrics_validate"]
    if getattr(_state, "cache", None) is None or not DEPENDENCIES or runtime_configuration is None:
        return own(self, metrics, runtime_configuration=runtime_configuration, execution_engine=execution_engine, **kwargs)
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult
    from great_expectations.core.result_format import ResultFormat
    from great_expectations.expectations.expectation import _validate_dependencies_against_available_metrics
    from great_expectations.expectations.expectation_configuration import parse_result_format
    from great_expectations.validator.validator import ValidationDependencies

    configuration = self.configuration
    key = None
    if isinstance(runtime_configuration.get("result_format"), dict) and _plain(runtime_configuration) \
            and configuration.type is not None:
        config_key = _config_key(configuration)
        if config_key is not None:
            key = (type(execution_engine), config_key, json.dumps(runtime_configuration, sort_keys=True))
    kept = None if key is None else _dependencies.get(key)
    if kept is None:
        validation_dependencies = self.get_validation_dependencies(
            execution_engine=execution_engine, runtime_configuration=runtime_configuration)
        if key is not None:
            _dependencies[key] = tuple(validation_dependencies.metric_configurations.items())
    else:
        # GX's `get_validation_dependencies` fills the run's result format in place (the
        # very dict, through `_get_runtime_kwargs`) and gives it as the dependencies' own
        validation_dependencies = ValidationDependencies(
            metric_configurations=dict(kept), result_format=parse_result_format(runtime_configuration["result_format"]))
    # from here on GX 1.24.1's `metrics_validate` as it is
    runtime_configuration["result_format"] = validation_dependencies.result_format
    _validate_dependencies_against_available_metrics(
        validation_dependencies=validation_dependencies.get_metric_configurations(), metrics=metrics)
    provided_metrics = {
        metric_name: metrics[metric_configuration.id]
        for metric_name, metric_configuration in validation_dependencies.metric_configurations.items()
    }
    expectation_validation_result = self._validate(
        metrics=provided_metrics, runtime_configuration=runtime_configuration, execution_engine=execution_engine)
    result_format = parse_result_format(runtime_configuration.get("result_format", {}))
    if result_format.get("result_format") == ResultFormat.BOOLEAN_ONLY:
        preserved_result = {}
        if result_format.get("return_unexpected_index_query", False):
            if isinstance(expectation_validation_result, ExpectationValidationResult):
                current_result = expectation_validation_result.result or {}
            else:
                current_result = expectation_validation_result.get("result", {})
            if "unexpected_index_query" in current_result:
                preserved_result["unexpected_index_query"] = current_result["unexpected_index_query"]
            if "unexpected_index_column_names" in current_result:
                preserved_result["unexpected_index_column_names"] = current_result["unexpected_index_column_names"]
        if isinstance(expectation_validation_result, ExpectationValidationResult):
            expectation_validation_result.result = preserved_result
        else:
            expectation_validation_result["result"] = preserved_result
    return self._build_evr(raw_response=expectation_validation_result)


def dependencies_held() -> int:
    return len(_dependencies)


def build_graphs(validator, suite) -> None:
    """What GX's v1 `validator` does before it evaluates `suite` (GX 1.24.1's
    `_validate_expectation_configs`: the configurations processed, the run's configuration
    `{"result_format": <a copy of the validator's>}`), then only the graph of each expectation:
    kept in this process (`_graphs`); nothing is evaluated. Inside a scope."""
    from copy import copy as shallow

    wrapped = validator._wrapped_validator
    configs = wrapped.process_expectations_for_validation(suite.expectation_configurations, None)
    getattr(wrapped, _SUBGRAPHS)(configs, [], True, {"result_format": shallow(validator.result_format)})


def graphs_held() -> int:
    return len(_graphs)


def install() -> str | None:
    """Make `Expectation.configuration`, `ExpectationConfiguration.to_domain_obj`,
    `PandasExecutionEngine._apply_row_condition_filter`, `IDDict.to_id`,
    `Expectation.metrics_validate` and the validator's per-expectation graph building take the
    scope's shortcuts (all six or none; idempotent).
    Returns None when installed, else why not."""
    if _installed:
        return None
    import great_expectations as gx
    from great_expectations.expectations.expectation import Expectation

    if gx.__version__ != PINNED_GX:
        return f"Great Expectations {gx.__version__} is not {PINNED_GX} (the version checked)"
    from great_expectations.execution_engine.pandas_execution_engine import PandasExecutionEngine
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    prop = Expectation.__dict__.get("configuration")
    if not isinstance(prop, property) or prop.fget is None or prop.fget.__qualname__ != "Expectation.configuration":
        return "Expectation.configuration is not the property checked"
    from great_expectations.core.id_dict import IDDict

    for cls, name in ((ExpectationConfiguration, "to_domain_obj"), (PandasExecutionEngine, "_apply_row_condition_filter"),
                      (IDDict, "to_id")):
        if getattr(cls.__dict__.get(name), "__qualname__", None) != f"{cls.__name__}.{name}":
            return f"{cls.__name__}.{name} is not the function checked"
    from great_expectations.validator.validator import Validator

    if getattr(Validator.__dict__.get(_SUBGRAPHS), "__qualname__", None) != f"Validator.{_SUBGRAPHS}":
        return f"Validator.{_SUBGRAPHS} is not the function checked"
    if getattr(Expectation.__dict__.get("metrics_validate"), "__qualname__", None) != "Expectation.metrics_validate":
        return "Expectation.metrics_validate is not the function checked"
    _installed["metrics_validate"] = Expectation.__dict__["metrics_validate"]
    Expectation.metrics_validate = _cached_metrics_validate
    _installed["subgraphs"] = Validator.__dict__[_SUBGRAPHS]
    setattr(Validator, _SUBGRAPHS, _cached_subgraphs)
    _installed["iddict"] = IDDict
    _installed["to_id"] = IDDict.to_id
    IDDict.to_id = _fast_to_id
    _installed["row_filter"] = PandasExecutionEngine._apply_row_condition_filter
    PandasExecutionEngine._apply_row_condition_filter = _cached_row_filter
    _installed["to_domain_obj"] = ExpectationConfiguration.to_domain_obj
    ExpectationConfiguration.to_domain_obj = _cached_domain_obj
    _installed["fget"] = prop.fget
    _installed["property"] = prop
    Expectation.configuration = property(_cached_configuration, doc=prop.__doc__)
    return None


def installed() -> bool:
    return bool(_installed)


@contextmanager
def cached_configurations():
    """A scope in which each expectation object's configuration is built once (see above).
    Nested scopes share the outer one's cache."""
    if not ENABLED or install() is not None or getattr(_state, "cache", None) is not None:
        yield
        return
    _state.cache = {}
    try:
        yield
    finally:
        _state.cache = None


def cache_size() -> int | None:
    """Entries of this thread's open scope (None outside a scope): for tests."""
    cache = getattr(_state, "cache", None)
    return None if cache is None else len(cache)
