"""GX without SciPy's statistics and Altair until something uses them (edustat.gxload): a fresh
process validating every committed suite leaves both unloaded (the saving cannot vanish
unnoticed), GX's own names for them load the real modules when touched, and a deferred module
runs its code once, in place, on first use — from any thread."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edustat import gxload

ROOT = Path(__file__).resolve().parents[1]

# a fresh interpreter (this worker may have imported GX already): validate the committed suites
# of both periods on a small city with row errors as a run does; then touch GX's own `stats` and
# `alt` (the warm server's building of every committed expectation's graphs: tests/test_warm.py)
FRESH = r"""
import json, sys
from pathlib import Path
from edustat import expectations as ex, pipeline
from edustat.config import Config
from edustat.incremental import materialise
from edustat.submissions import active, assemble, build_check_frames, discover
from edustat.synth import generate_city

LAZY = ("scipy.stats", "altair")
root, seen = Path(sys.argv[1]), {"imported_before": {n: n in sys.modules for n in LAZY + ("great_expectations",)}}
failed = 0
for period in ("dau_nam", "cuoi_nam"):
    inbox = root / period / "inbox"
    generate_city(inbox, schools=2, seed=5, school_year="2022-2023", period=period, error_rate=0.05)
    results = pipeline.ingest_all(discover(inbox), Config(data_dir=root / period / "data", workers=1, incremental=False),
                                  "2022-2023", period, 1)
    materialise([fr for fr in results if active(fr)])
    checks, _ = build_check_frames(results, "2022-2023", frames=assemble(results))
    outcomes, failing = ex.row_rule_outcomes(checks, period)  # as a run validates
    failed += len(failing)
seen["rules_failed"] = failed
from edustat import gxload  # imported by the validation, before GX
seen["lazy"] = list(gxload.LAZY)
seen["after_validation"] = {n: gxload.is_deferred(n) for n in gxload.LAZY}
from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
from great_expectations.expectations.metrics.column_aggregate_metrics import (
    column_parameterized_distribution_ks_test_p_value as ks)
seen["entropy"] = float(kl.stats.entropy([0.5, 0.5], [0.5, 0.5]))
seen["ks_p"] = float(ks.stats.kstest([0.1, 0.5, 0.9], "uniform").pvalue)
seen["chart"] = kl.alt.Chart.__name__
seen["after_touch"] = {n: gxload.is_deferred(n) for n in gxload.LAZY}
import altair, scipy.stats
seen["same_objects"] = kl.stats is scipy.stats is sys.modules["scipy.stats"] and kl.alt is altair
print("SEEN" + json.dumps(seen))
"""


@pytest.mark.slow
def test_validating_the_committed_suites_loads_neither_scipy_stats_nor_altair(tmp_path):
    r = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    seen = json.loads(r.stdout.split("SEEN", 1)[1])
    assert not any(seen["imported_before"].values()), seen["imported_before"]
    assert seen["lazy"] == ["scipy.stats", "altair"]
    assert seen["rules_failed"] > 0, "GX found row errors: the suites were evaluated on data"
    assert seen["after_validation"] == {"scipy.stats": True, "altair": True}, (
        "a validation of the committed suites loaded a module edustat.gxload defers: the saving is gone")
    # the names GX bound at import are the real modules once touched
    assert seen["entropy"] == 0.0 and 0 < seen["ks_p"] <= 1 and seen["chart"] == "Chart"
    assert seen["after_touch"] == {"scipy.stats": False, "altair": False}
    assert seen["same_objects"]


@pytest.fixture
def probe_package(tmp_path, monkeypatch):
    """A package `lazyprobe` with a submodule `sub` that counts how often its code runs."""
    pkg = tmp_path / "lazyprobe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sub.py").write_text(
        "import sys, time\n"
        "sys.lazyprobe_runs = getattr(sys, 'lazyprobe_runs', 0) + 1\n"
        "time.sleep(0.2)  # a slow import: other threads arrive while it runs\n"
        "VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(gxload, "LAZY", ("lazyprobe.sub", "json"))
    sys.lazyprobe_runs = 0
    yield
    for name in ("lazyprobe.sub", "lazyprobe"):
        sys.modules.pop(name, None)
    del sys.lazyprobe_runs


def test_a_deferred_module_runs_once_on_first_use_from_any_thread(probe_package):
    import json as json_before

    gxload.install()
    assert sys.modules["json"] is json_before, "an imported module is left as it is"
    assert gxload.is_deferred("lazyprobe.sub")
    from lazyprobe import sub  # noqa: I001 - the import statement itself runs nothing
    import lazyprobe.sub as sub_again

    assert sub is sub_again is sys.modules["lazyprobe.sub"]
    assert sys.lazyprobe_runs == 0 and gxload.is_deferred("lazyprobe.sub")
    got = []
    threads = [threading.Thread(target=lambda: got.append(sub.VALUE)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [42] * 8 and sys.lazyprobe_runs == 1, "run once, every thread saw the loaded module"
    assert not gxload.is_deferred("lazyprobe.sub") and type(sub).__name__ == "module"
    assert sub.__name__ == "lazyprobe.sub" and sub.__file__.endswith("sub.py")
    with pytest.raises(AttributeError):
        sub.missing  # noqa: B018
    assert sys.lazyprobe_runs == 1
