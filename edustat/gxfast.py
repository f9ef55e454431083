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
  it builds itself (`ExpectationConfiguration.to_domain_obj`, twice per expectation) live only
  inside the validation;
- no caller changes the configuration it is given (the validator deep-copies before adding a
  batch id); a cached object is returned to callers that before each got an equal new one;
- the cache keeps each object alive and checks identity, so an id() cannot be reused by another
  object within the scope; the scope's cache is dropped when it ends (nothing outlives a run).
tests/test_gx_fast.py runs the rules with and without the scope and compares every outcome.

The patch is installed only on the GX version it was checked against (PINNED_GX), with the
property it replaces being GX's own; otherwise `install()` says why and GX runs as it is
(slower, not wrong).
"""
from __future__ import annotations

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


def install() -> str | None:
    """Patch `Expectation.configuration` to consult the scope's cache (idempotent). Returns None
    when installed, else why not."""
    if _installed:
        return None
    import great_expectations as gx
    from great_expectations.expectations.expectation import Expectation

    if gx.__version__ != PINNED_GX:
        return f"Great Expectations {gx.__version__} is not {PINNED_GX} (the version checked)"
    prop = Expectation.__dict__.get("configuration")
    if not isinstance(prop, property) or prop.fget is None or prop.fget.__qualname__ != "Expectation.configuration":
        return "Expectation.configuration is not the property checked"
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

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
