"""Great Expectations imported without the modules edustat's expectations never use.

`import great_expectations` registers every expectation and metric GX ships, and three of them
import SciPy's statistics (`from scipy import stats`: the Kolmogorov-Smirnov p-value metrics and
the KL-divergence expectation, which also imports Altair for its charts) at the top of their
modules. edustat's committed suites use none of them, yet every process that validates paid for
both: ~2.5 s of SciPy and ~1 s of Altair (with jsonschema and narwhals) of GX's ~10 CPU s import
on this machine under load, once per `edustat run`, per test process, per warm-server start.

Importing this module (edustat.expectations does, before it imports GX; the warm server's
preload lists it before GX) puts a lazy module for each name in LAZY into `sys.modules`
(`_Deferred`): the name resolves and `import` finds it, nothing is executed until an attribute
of the module is first read, and then the real module's code runs in place, so any use of it
(GX's or anyone's) gets the real module — only the cost of never using it goes.
tests/test_gxload.py validates the committed suites in a fresh process and fails if either
module was loaded, and proves GX's own names load the real ones when touched.

A name already imported (by whatever came first) is left as it is: too late to save anything.
"""
from __future__ import annotations

import importlib.util
import sys
import threading
import types

# `scipy` itself (~0.04 s) stays eager: `from scipy import stats` asks the package for the
# submodule, and SciPy's own __getattr__ returns what sys.modules holds for it
LAZY = ("scipy.stats", "altair")
_lock = threading.RLock()
_loading: set[str] = set()


class _Deferred(types.ModuleType):
    """A module whose code has not run yet. Its import attributes (__spec__, __name__, __path__,
    __file__...) are set as the import system sets them, so `import altair` finds it without
    running it (the import statement reads __spec__; the standard library's LazyLoader loads on
    any attribute, that one included). Reading any other attribute runs the module's code in this
    very object, under a lock, as the import system would have run it, and returns the
    attribute: every name bound to it (GX's `stats`, `alt`) then holds the real module."""

    def __getattr__(self, attr: str):
        spec = self.__spec__
        with _lock:
            if type(self) is _Deferred and spec.name not in _loading:
                _loading.add(spec.name)
                spec._initializing = True
                try:
                    spec.loader.exec_module(self)
                    self.__class__ = types.ModuleType
                finally:
                    spec._initializing = False
                    _loading.discard(spec.name)
        if type(self) is _Deferred:  # read by its own code while it runs: not there yet
            raise AttributeError(f"partially initialized module {spec.name!r} has no attribute {attr!r}")
        return getattr(self, attr)


def _defer(name: str) -> None:
    spec = importlib.util.find_spec(name)  # imports the parent package (scipy), not the module
    if spec is None or spec.loader is None:
        return  # not installed: GX's own import fails as it would have
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _Deferred
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:  # as the import system binds a loaded submodule to its package
        setattr(sys.modules[parent], child, module)


def install() -> None:
    """Put LAZY's modules into sys.modules as deferred modules, unless already imported."""
    with _lock:
        for name in LAZY:
            if name not in sys.modules:
                _defer(name)


def is_deferred(name: str) -> bool:
    """True while `name` is a deferred module whose code has not run."""
    return type(sys.modules.get(name)) is _Deferred


install()
