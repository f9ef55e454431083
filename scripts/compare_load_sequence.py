"""The database after each run of a sequence of incremental runs, one repo's code per process,
compared table by table with another repo's (issue 12: a change to the load proven
output-identical beyond one rerun).

The sequence, on a copy of a bench inbox (`--src`: a dir with `inbox/`; never written):
cold, nothing changed, one school changed (a learner fewer), that school changed back (its
earlier content in a new file), its very first file's bytes sent again, a cross-school conflict appearing (one school's first learner given another
in-core school's student code) and disappearing, a school withdrawn (its file removed), that
school's file unreadable, then restored. The edited workbooks are made once by `--prepare`
(openpyxl stamps the save time: the same bytes for every repo, so the same file hashes).

    python scripts/compare_load_sequence.py --prepare --src /work/bench-ref/city/work --dir D
    python scripts/compare_load_sequence.py --repo /work/main --tag base --dir D [--policy load_valid_rows]
    python scripts/compare_load_sequence.py --repo . --tag head --dir D [--policy load_valid_rows]
    python scripts/compare_load_sequence.py --compare D/base-reject_school.json D/head-reject_school.json

Per run: every table's rows and order-free hash (`measure_stages.fingerprint`: without run ids,
times and paths), the published snapshot and Parquet tree's stable content
(`measure_load_publish.stable_content`) and the register's statuses. `--compare` names every
table that differs at any step; a table present in one repo's database only (new kept data)
and the bookkeeping tables whose keys hold the code's digest (`BOOKKEEPING`) are listed apart."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
YEAR, PERIOD = "2022-2023", "dau_nam"


def prepare(src: Path, out: Path) -> None:
    """The edited workbooks and which schools they are (out/files, out/plan.json)."""
    import duckdb
    import openpyxl

    inbox = src / "inbox"
    con = duckdb.connect(str(src / "data" / "curated" / "edustat.duckdb"), read_only=True)
    accepted = [c for (c,) in con.execute(
        "select school_code from submission where in_core and is_current and status = 'accepted' order by 1").fetchall()]
    con.close()
    names = {p.name.split("_")[0]: p.name for p in inbox.glob("*.xlsx")}
    accepted = [c for c in accepted if c in names]
    changed, conflict, other, withdrawn = accepted[0], accepted[1], accepted[2], accepted[3]
    files = out / "files"
    files.mkdir(parents=True, exist_ok=True)

    def edit(code: str, tag: str, fn) -> None:
        wb = openpyxl.load_workbook(inbox / names[code])
        fn(wb["HocSinh"])
        wb.save(files / f"{tag}.xlsx")

    edit(changed, "changed", lambda ws: ws.delete_rows(ws.max_row))
    # back to the first content in a new file (openpyxl writes other bytes); the step after it
    # sends the first file's very bytes again (before round 11 that stopped the run under
    # reject_school: store.next_versions kept its old number, so the register's current version
    # was not the one in core)
    edit(changed, "restored", lambda ws: None)
    def first_learner(ws) -> int:  # the first row whose first cell is a student code (a title row may come first)
        return next(i for i, row in enumerate(ws.iter_rows(max_col=1, values_only=True), 1)
                    if row and str(row[0] or "").strip().isdigit())

    wb = openpyxl.load_workbook(inbox / names[other])
    ws = wb["HocSinh"]
    code = ws.cell(row=first_learner(ws), column=1).value
    wb.close()

    def give(ws):
        ws.cell(row=first_learner(ws), column=1).value = code
    edit(conflict, "conflict", give)
    (files / "unreadable.xlsx").write_bytes(b"not a workbook\n")
    (out / "plan.json").write_text(json.dumps({"changed": names[changed], "conflict": names[conflict],
                                               "other": names[other], "withdrawn": names[withdrawn],
                                               "shared_code": code}, indent=1))
    print(json.dumps(json.loads((out / "plan.json").read_text()), indent=1))


def steps(plan: dict, src_inbox: Path, files: Path):
    """(label, the inbox change to make before the run)."""
    def put(name: str, source: Path):
        return lambda inbox: shutil.copyfile(source, inbox / name)
    return [
        ("cold", None),
        ("nothing changed", None),
        ("one changed", put(plan["changed"], files / "changed.xlsx")),
        ("changed back", put(plan["changed"], files / "restored.xlsx")),
        ("the first file again", put(plan["changed"], src_inbox / plan["changed"])),
        ("conflict appears", put(plan["conflict"], files / "conflict.xlsx")),
        ("conflict disappears", put(plan["conflict"], src_inbox / plan["conflict"])),
        ("withdrawn", lambda inbox: (inbox / plan["withdrawn"]).unlink()),
        ("unreadable", put(plan["withdrawn"], files / "unreadable.xlsx")),
        ("restored", put(plan["withdrawn"], src_inbox / plan["withdrawn"])),
    ]


def run(repo: Path, tag: str, out: Path, src: Path, policy: str, skip: tuple[str, ...] = ()) -> None:
    sys.path.insert(0, str(repo))
    sys.path.insert(0, str(HERE))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import duckdb

    import edustat
    assert Path(edustat.__file__).resolve().is_relative_to(repo.resolve()), edustat.__file__
    from edustat.config import Config
    from measure_incremental import one_run
    from measure_load_publish import stable_content
    from measure_stages import fingerprint

    plan = json.loads((out / "plan.json").read_text())
    work = out / f"{tag}-{policy}"
    shutil.rmtree(work, ignore_errors=True)
    inbox = work / "inbox"
    shutil.copytree(src / "inbox", inbox)
    os.environ["EDUSTAT_SALT_FILE"] = str(out / "salt")  # one salt for every repo compared
    if not Path(os.environ["EDUSTAT_SALT_FILE"]).exists():
        Path(os.environ["EDUSTAT_SALT_FILE"]).write_text("0" * 64 + "\n")
        os.chmod(os.environ["EDUSTAT_SALT_FILE"], 0o600)
    cfg = Config(data_dir=work / "data", workers=2, incremental=True, load_policy=policy)
    record = []
    for i, (label, change) in enumerate(steps(plan, src / "inbox", out / "files")):
        if label in skip:
            continue
        if change:
            change(inbox)
        r = one_run(cfg, inbox, f"seq-{i}")
        con = duckdb.connect(str(cfg.db_path), read_only=True)
        try:
            db = {rec["table"]: [rec["rows"], rec["hash"]] for rec in fingerprint(con).to_dict("records")}
            statuses = con.execute("""select status, count(*) from submission where is_current
                                      group by 1 order by 1""").fetchall()
        finally:
            con.close()
        stable = stable_content(cfg.published_dir / "edustat.duckdb", cfg.published_dir / "parquet")
        record.append({"step": label, "database": db, "stable": stable, "statuses": statuses})
        print(f"{tag} {policy} {i} {label}: {r['total']:.1f} s, statuses {statuses}", flush=True)
        (out / f"{tag}-{policy}.json").write_text(json.dumps(record, default=str, sort_keys=True, indent=0))  # so far


BOOKKEEPING = ("publish_delta_", "incremental_output")  # as measure_load_publish.BOOKKEEPING


def compare(a: Path, b: Path) -> int:
    x, y = json.loads(a.read_text()), json.loads(b.read_text())
    bad = 0
    for sx, sy in zip(x, y):
        only = sorted(set(sx["database"]) ^ set(sy["database"]))
        diff = sorted(t for t in set(sx["database"]) & set(sy["database"]) if sx["database"][t] != sy["database"][t])
        books = [t for t in diff if t.startswith(BOOKKEEPING)]  # the code digest is in their keys: differs by design
        diff = [t for t in diff if t not in books]
        stable = sorted(k for k in set(sx["stable"]) | set(sy["stable"]) if sx["stable"].get(k) != sy["stable"].get(k))
        same = not diff and not stable and sx["statuses"] == sy["statuses"]
        bad += not same
        print(f"{sx['step']:<20} {'IDENTICAL' if same else 'DIFFERENT'} ({len(sx['database'])} tables; "
              f"statuses {sx['statuses']}){'; in one only: ' + ', '.join(only) if only else ''}"
              f"{'; bookkeeping differs: ' + ', '.join(books) if books else ''}")
        for t in diff:
            print("   database", t, sx["database"][t], "|", sy["database"][t])
        for k in stable:
            print("   stable", k, sx["stable"].get(k), "|", sy["stable"].get(k))
    if len(x) != len(y):
        print(f"steps: {len(x)} vs {len(y)}")
        bad += 1
    return bad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--src", type=Path, default=Path("/work/bench-ref/city/work"))
    ap.add_argument("--dir", type=Path, required=False)
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--tag", default="run")
    ap.add_argument("--policy", default="reject_school", choices=["reject_school", "load_valid_rows"])
    ap.add_argument("--compare", nargs=2, type=Path)
    ap.add_argument("--skip", default="", help="steps left out, comma-separated labels")
    args = ap.parse_args()
    if args.compare:
        sys.exit(1 if compare(*args.compare) else 0)
    if args.prepare:
        prepare(args.src, args.dir)
        return
    run(args.repo.resolve(), args.tag, args.dir, args.src, args.policy, tuple(x for x in args.skip.split(",") if x))


if __name__ == "__main__":
    main()
