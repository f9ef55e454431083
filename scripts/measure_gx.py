"""What Great Expectations costs edustat (issue 12 item 3): GX import, context / data source
set-up, the cost of one validation run against the number of expectations and of rows (so the
per-expectation overhead and the per-row cost separate), and what share of a city's validate
stage is GX.

    python scripts/measure_gx.py [--inbox build/bench/city/inbox] [--rows 1000,10000,100000]

Prints numbers (CPU seconds beside wall: the machine may be shared); asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


class Clock:
    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c

    def __str__(self):
        return f"{self.wall:7.3f} s wall {self.cpu:7.3f} s CPU"


def frame(n: int, bad: float = 0.002):
    """Rows like a collection's check frame: a share `bad` of the cells fail (0.2% as in the
    bench's cities; GX's cost grows with the failures it lists, see --bad)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    fail = rng.random((4, n)) < bad
    return pd.DataFrame({
        "_rowkey": np.arange(n),
        "a": pd.array(np.where(fail[0], None, rng.choice(["01", "02", "03"], n)), dtype="string"),
        "b": pd.array(np.where(fail[1], "x", rng.choice(["01", "02", "03"], n)), dtype="string"),
        "c": pd.array([f"{i:012d}" if not f else "12ab" for i, f in zip(rng.integers(0, 10**12, n), fail[2])], dtype="string"),
        "_age": np.where(fail[3], 40, rng.integers(0, 25, n)),
    })


def expectations(k: int):
    import great_expectations.expectations as gxe

    kinds = [lambda: gxe.ExpectColumnValuesToNotBeNull(column="a"),
             lambda: gxe.ExpectColumnValuesToBeInSet(column="b", value_set=["01", "02", "03"]),
             lambda: gxe.ExpectColumnValuesToMatchRegex(column="c", regex=r"^\d{12}$"),
             lambda: gxe.ExpectColumnValuesToBeBetween(column="_age", min_value=0, max_value=25)]
    return [kinds[i % len(kinds)]() for i in range(k)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inbox", type=Path, default=ROOT / "build" / "bench" / "city" / "inbox")
    ap.add_argument("--rows", default="1000,10000,100000")
    ap.add_argument("--counts", default="1,4,16,48")
    ap.add_argument("--bad", type=float, default=0.002, help="share of failing cells in the synthetic frames")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} (2 cores, shared)")
    with Clock() as t:
        import great_expectations as gx
    print(f"GX import                       {t}")
    from great_expectations.data_context.types.base import ProgressBarsConfig

    with Clock() as t:
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = ctx.data_sources.add_pandas("bench")
    print(f"context + pandas data source    {t}")

    def run(df, k: int, name: str) -> Clock:
        with Clock() as c:
            suite = ctx.suites.add(gx.ExpectationSuite(name=name, expectations=expectations(k)))
            batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
            vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"vd_{name}", data=batch, suite=suite))
            vd.run(batch_parameters={"dataframe": df},
                   result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["_rowkey"]})
        return c

    run(frame(100), 1, "warmup")
    rows = [int(x) for x in args.rows.split(",")]
    counts = [int(x) for x in args.counts.split(",")]
    print(f"\none validation run (suite + asset + run, COMPLETE results), CPU s; rows × expectations; "
          f"{args.bad:.1%} of cells fail")
    print(f"{'rows':>8}" + "".join(f"{k:>10}" for k in counts) + f"{'per exp.':>12}{'per exp.·1k rows':>18}")
    table = {}
    for n in rows:
        df = frame(n, args.bad)
        line = []
        for k in counts:
            c = run(df, k, f"r{n}k{k}")
            table[(n, k)] = c.cpu
            line.append(c.cpu)
        per_exp = (line[-1] - line[0]) / (counts[-1] - counts[0])
        print(f"{n:>8}" + "".join(f"{x:>10.3f}" for x in line) + f"{per_exp:>12.4f}{per_exp / n * 1000:>18.5f}")
    n0, n1 = rows[0], rows[-1]
    k1 = counts[-1]
    fixed_per_exp = (table[(n0, k1)] - table[(n0, counts[0])]) / (k1 - counts[0])
    print(f"\nper-expectation overhead (at {n0:,} rows): {fixed_per_exp * 1000:.1f} ms CPU; fixed per run: "
          f"{(table[(n0, counts[0])] - fixed_per_exp) * 1000:.0f} ms; per row per expectation: "
          f"{(table[(n1, k1)] - table[(n0, k1)]) / k1 / (n1 - n0) * 1e6:.2f} µs")

    if not args.inbox.is_dir():
        return print(f"(no {args.inbox}: run `make bench` once for the city's share)")
    from edustat import expectations as ex, pipeline, submissions as collect
    from edustat.submissions import discover
    from edustat.config import Config

    cfg = Config(data_dir=ROOT / "build" / "bench" / "measure-gx-data", workers=2)
    results = pipeline.ingest_all(discover(args.inbox), cfg, "2022-2023", "dau_nam", 2)
    frames = pipeline.assemble_all(results, cfg)
    spent = {}
    real = ex.run_row_rules

    def timed_rules(checks, period, *a, **kw):
        with Clock() as c:
            out = real(checks, period, *a, **kw)
        spent["gx"] = c
        spent["rows"] = sum(len(f) for f in checks.values())
        spent["exps"] = sum(len(ex.load_suite(s, period)["expectations"]) for s in checks)
        return out

    ex.run_row_rules = timed_rules
    try:
        with Clock() as whole:
            issues = collect.validate_collection(results, school_year="2022-2023", period="dau_nam", frames=frames)
    finally:
        ex.run_row_rules = real
    g = spent["gx"]
    print(f"\ncity validate stage ({len(results)} files, {spent['rows']:,} check rows, {spent['exps']} expectations "
          f"in {len(frames.raw)} suites, {len(issues):,} issues):")
    print(f"  whole stage                   {whole}")
    print(f"  GX (run_row_rules)            {g}   = {100 * g.cpu / whole.cpu:.0f}% of the stage's CPU")
    print(f"  the rest (check frames, cross-row rules, messages) {whole.cpu - g.cpu:.3f} s CPU")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
