"""LOAD and PUBLISH when one school changed (issue 12), measured per repo, outputs compared.

Copies a bench work dir (default /work/bench-before/<kind>/work: data/ and inbox/, never
written) into `--dir`, brings it up to date once with `--repo`'s code (one warm-up run, the
flow's steps as `measure_incremental.one_run` orders them), then `--rounds` times: one school
re-sends its workbook with a learner fewer (`measure_incremental.change_one`: the same change
for every repo) and the steps run again. Prints wall and CPU seconds of load_all, of the forms
(build_forms_incremental) and of the publish of each round (and of its delta's
`publish_delta.apply`) (CPU: this process, DuckDB's threads included), the load average, and
writes `<dir>/<tag>-round<i>.json`: the database fingerprint (order-free hash of every table,
`measure_stages.fingerprint`), the snapshot's content (`measure_publish.snapshot_content`) and
an order-free hash of every Parquet table read the way analysts read it (hive glob). With
`--profile`, cProfile of load_all and publish of the last round into `<dir>/<tag>-*.prof`.

    python scripts/measure_load_publish.py --repo /work/main --tag before --only city
    python scripts/measure_load_publish.py --repo . --tag after --only city
    python scripts/measure_load_publish.py --compare <dir>/before-round0.json <dir>/after-round0.json
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cpu() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    return s.ru_utime + s.ru_stime


def parquet_content(tree: Path) -> dict:
    """Per table of the Parquet tree: rows and an order-free hash, read as analysts do."""
    import duckdb

    con = duckdb.connect()
    out = {}
    for t in sorted(p.name for p in tree.iterdir()):
        files = list((tree / t).rglob("*.parquet"))
        if not files:
            out[t] = [0, None]
            continue
        rel = con.execute(f"SELECT * FROM read_parquet('{tree / t}/**/*.parquet', hive_partitioning = true, union_by_name = true)")
        cols = [d[0] for d in rel.description]
        row = ", ".join(f'"{c}"' for c in sorted(cols))
        n, h = con.execute(f"SELECT count(*), sum(hash(struct_pack({row})) % 1000000007) FROM "
                           f"read_parquet('{tree / t}/**/*.parquet', hive_partitioning = true, union_by_name = true)").fetchone()
        out[t] = [n, str(h), sorted(cols)]
    return out


STABLE_SKIP = ("run_id",)  # and *_at, *_path: a run's clock and its data dir's paths


FILE_COLUMNS = ("file_hash", "content_hash")  # the changed workbook's bytes: openpyxl stamps the save time


def stable_columns(cols: list[str], skip: tuple = ()) -> list[str]:
    return [c for c in cols if c not in STABLE_SKIP + skip and not c.endswith(("_at", "_path"))]


def stable_content(snapshot: Path, tree: Path, skip: tuple = ()) -> dict:
    """Per table of the snapshot and of the Parquet tree (read as analysts read it: hive glob):
    rows and an order-free hash without the columns a run's clock or data dir sets
    (`stable_columns`), so two runs in two dirs compare: `stable.snapshot.<t>` must equal
    `stable.parquet.<t>` less the hive `year` column, and both the other run's."""
    import duckdb

    out = {}
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1").fetchall():
            cols = stable_columns([r[0] for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main' "
                "ORDER BY column_index", [t]).fetchall()], skip)
            row = ", ".join(f'"{c}"' for c in sorted(cols))
            out[f"snapshot.{t}"] = [str(v) for v in con.execute(
                f'SELECT count(*), coalesce(sum(hash(struct_pack({row})) % 1000000007), 0) FROM "{t}"').fetchone()]
    finally:
        con.close()
    con = duckdb.connect()
    for t in sorted(p.name for p in tree.iterdir()):
        if not list((tree / t).rglob("*.parquet")):
            out[f"parquet.{t}"] = ["0", "0"]
            continue
        src = f"read_parquet('{tree / t}/**/*.parquet', hive_partitioning = true, union_by_name = true)"
        cols = stable_columns([d[0] for d in con.execute(f"SELECT * FROM {src} LIMIT 0").description if d[0] != "year"], skip)
        row = ", ".join(f'"{c}"' for c in sorted(cols))
        out[f"parquet.{t}"] = [str(v) for v in con.execute(
            f"SELECT count(*), coalesce(sum(hash(struct_pack({row})) % 1000000007), 0) FROM {src}").fetchone()]
    con.close()
    return out


BOOKKEEPING = ("publish_delta_", "incremental_output")  # what publishing / caching recorded: differs by design


def compare(a: Path, b: Path) -> int:
    x, y = json.loads(a.read_text()), json.loads(b.read_text())
    bad = 0
    for part in ("database", "snapshot", "parquet", "stable", "across_runs"):
        if part not in x or part not in y:
            continue
        same = x[part] == y[part]
        keys = sorted(k for k in set(x[part]) | set(y[part]) if x[part].get(k) != y[part].get(k)) \
            if isinstance(x[part], dict) else []
        real = [k for k in keys if not (part == "database" and k.startswith(BOOKKEEPING))]
        bad += part in ("stable", "database") and bool(real)
        print(f"{part}: {'IDENTICAL' if same else ('DIFFERENT' if real else 'bookkeeping only differs')}")
        for k in keys:
            print("  ", k, x[part].get(k), "|", y[part].get(k))
    for k, v in x.get("stable", {}).items():  # the Parquet tree holds the snapshot's rows
        if k.startswith("parquet.") and x["stable"].get("snapshot." + k[8:]) != v:
            print("   Parquet and snapshot differ:", k, v, x["stable"].get("snapshot." + k[8:]))
            bad += 1
    return bad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--tag", default="run")
    ap.add_argument("--only", choices=["city", "province"], default="city")
    ap.add_argument("--src", type=Path, default=Path("/work/bench-before"))
    ap.add_argument("--dir", type=Path, default=Path("/tmp/loadpub-mlp"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--compare", nargs=2, type=Path)
    ap.add_argument("--queries", action="store_true", help="time every query of load and publish (last round)")
    ap.add_argument("--reference", action="store_true",
                    help="each round also run on a copy of the data dir taken before it with every school's core rows "
                         "rewritten (store.REUSE_UNCHANGED_CORE off) and a full publish; outputs compared")
    args = ap.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))

    repo = args.repo.resolve()
    sys.path.insert(0, str(repo))
    sys.path.insert(0, str(HERE))  # this checkout's measure_* helpers (one_run drives repo's edustat)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations  # noqa: F401  (paid once, apart)
    import duckdb

    import edustat
    assert Path(edustat.__file__).resolve().is_relative_to(repo), edustat.__file__
    import edustat.pipeline as pl
    import edustat.incremental as inc
    from edustat.config import Config
    from measure_incremental import change_one, one_run
    from measure_publish import snapshot_content
    from measure_stages import fingerprint

    base = args.dir / f"{args.tag}-{args.only}"
    shutil.rmtree(base, ignore_errors=True)
    base.parent.mkdir(parents=True, exist_ok=True)
    work = args.src / args.only / "work"
    served = "" if (work / "data").is_dir() else "-served"  # the province's bench kept only its served run
    shutil.copytree(work / f"data{served}", base / "data", symlinks=True)
    shutil.copytree(work / f"inbox{served}", base / "inbox", symlinks=True)
    os.environ["EDUSTAT_SALT_FILE"] = str(args.dir / f"salt-{args.only}")  # one salt for every repo compared
    if not Path(os.environ["EDUSTAT_SALT_FILE"]).exists():
        Path(os.environ["EDUSTAT_SALT_FILE"]).write_text("0" * 64 + "\n")
        os.chmod(os.environ["EDUSTAT_SALT_FILE"], 0o600)
    cfg = Config(data_dir=base / "data", workers=args.workers, incremental=True)
    inbox = base / "inbox"

    seen: dict[str, list] = {}
    profiles: dict[str, cProfile.Profile] = {}

    def timed(mod, name, label):
        f = getattr(mod, name)

        def w(*a, **k):
            pr = profiles.get(label)
            t, c = time.perf_counter(), cpu()
            if pr:
                pr.enable()
            try:
                return f(*a, **k)
            finally:
                if pr:
                    pr.disable()
                seen.setdefault(label, []).append((time.perf_counter() - t, cpu() - c))
        setattr(mod, name, w)

    queries: list = []
    if args.queries:
        import contextlib
        import edustat.store as st

        class Timed:
            def __init__(self, c):
                self._c = c

            def __getattr__(self, n):
                return getattr(self._c, n)

            def execute(self, q, *a, **k):
                t0 = time.perf_counter()
                r = self._c.execute(q, *a, **k)
                if profiles:
                    queries.append((time.perf_counter() - t0, " ".join(str(q).split())[:140]))
                return r

        real_session = st.session

        @contextlib.contextmanager
        def session(*a, **k):
            with real_session(*a, **k) as c:
                yield Timed(c)
        st.session = session
    timed(pl, "load_all", "load")
    timed(inc, "publish_if_changed", "publish")
    timed(inc, "build_forms_incremental", "forms")
    import edustat.publish_delta as pdl
    timed(pdl, "apply", "apply")  # the delta's row replacement, inside the publish
    t = time.perf_counter()
    one_run(cfg, inbox, "m-warm")
    print(f"warm-up {time.perf_counter() - t:.1f} s")
    rows = []
    for i in range(args.rounds):
        changed = change_one(inbox)
        seen.clear()
        if args.profile and i == args.rounds - 1:
            profiles.update(load=cProfile.Profile(), publish=cProfile.Profile(), forms=cProfile.Profile())
        ref = base / f"ref-{i}" / "data"
        if args.reference:
            shutil.copytree(cfg.data_dir, ref, symlinks=True)
        r = one_run(cfg, inbox, f"m-one-{i}")
        load, pub = seen.get("load", [(0, 0)])[-1], seen.get("publish", [(0, 0)])[-1]
        forms = seen.get("forms", [(0, 0)])[-1]
        rows.append((changed, load, pub, r["total"], os.getloadavg()[0], forms, seen.get("apply", [(0, 0)])[-1]))

        def content(c):
            con = duckdb.connect(str(c.db_path), read_only=True)
            try:
                db = {rec["table"]: [rec["rows"], rec["hash"]] for rec in fingerprint(con).to_dict("records")}
            finally:
                con.close()
            return {"database": db, "snapshot": snapshot_content(c.published_dir / "edustat.duckdb"),
                    "parquet": parquet_content(c.published_dir / "parquet"),
                    "stable": stable_content(c.published_dir / "edustat.duckdb", c.published_dir / "parquet"),
                    # before/after runs of two checkouts: the changed workbook differs in its bytes only
                    "across_runs": stable_content(c.published_dir / "edustat.duckdb", c.published_dir / "parquet",
                                                  FILE_COLUMNS)}
        out = content(cfg)
        (args.dir / f"{args.tag}-{args.only}-round{i}.json").write_text(json.dumps(out, default=str, sort_keys=True, indent=0))
        if args.reference:
            import edustat.publish_delta as pd_
            import edustat.store as st
            plan, reuse = pd_.plan, getattr(st, "REUSE_UNCHANGED_CORE", None)
            pd_.plan = lambda *a, **k: (None, "reference: full publish")
            st.REUSE_UNCHANGED_CORE = False
            try:
                cref = Config(data_dir=ref, workers=args.workers, incremental=True)
                one_run(cref, inbox, f"m-one-{i}")
            finally:
                pd_.plan, st.REUSE_UNCHANGED_CORE = plan, reuse
            want = content(cref)
            (args.dir / f"{args.tag}-{args.only}-round{i}-ref.json").write_text(
                json.dumps(want, default=str, sort_keys=True, indent=0))
            print(f"round {i}: against the reference (full rewrite, full publish):", flush=True)
            compare(args.dir / f"{args.tag}-{args.only}-round{i}.json", args.dir / f"{args.tag}-{args.only}-round{i}-ref.json")
    for t_, q_ in sorted(queries, reverse=True)[:25]:
        print(f"Q {t_:.3f} {q_}")
    for label, pr in profiles.items():
        pr.dump_stats(str(args.dir / f"{args.tag}-{args.only}-{label}.prof"))
    print(f"\n== {args.only} ({args.tag}: {repo}): one school changed; 2 cores, shared")
    print(f"{'round':<6}{'school':<10}{'load wall':>10}{'load cpu':>9}{'forms wall':>11}{'forms cpu':>10}"
          f"{'pub wall':>9}{'pub cpu':>8}{'apply cpu':>10}{'run':>7}{'load1':>7}")
    for i, (changed, ld, pb, total, la, fm, ap_) in enumerate(rows):
        print(f"{i:<6}{changed[:8]:<10}{ld[0]:>10.2f}{ld[1]:>9.2f}{fm[0]:>11.2f}{fm[1]:>10.2f}"
              f"{pb[0]:>9.2f}{pb[1]:>8.2f}{ap_[1]:>10.3f}{total:>7.2f}{la:>7.2f}")


if __name__ == "__main__":
    main()
