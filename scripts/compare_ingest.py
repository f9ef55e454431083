"""Proof that two versions of the read stage give the same results: every file of one or more
inboxes is ingested by each version's code (each in a process of its own, `--code` naming the
repository checkout to import) and everything the read stage produces is compared:

- `reader.read_workbook` of every file: sheet names, each parsed sheet (header row, columns,
  headers, extra and duplicate headers, skipped numbering/total rows, near headers, invisible
  characters cleaned, and the frame: columns, dtypes, Arrow types, values, `excel_row`), the
  school sheet (values, rows, near keys, invisible), unknown / duplicate sheets — or the
  `UnreadableWorkbook` reason and detail;
- `pipeline.ingest_all` (one process, per-file cache on, as a cold run; `--workers 2`: in two
  reader processes, as a run does, the results coming back pickled): every FileResult field
  (school, raw text, rows, levels, sheet names, columns, headers, every issue with its message,
  flags, hashes, content hash) and its raw frames;
- the per-file Parquet cache entries written (schema, values, metadata but its version key, a
  hash of the code itself).

    python scripts/compare_ingest.py --base /work/main --new . INBOX [INBOX ...] [--corpus] [--workers N]

`--corpus` adds the hostile-files corpus of tests/bad_inputs (built once, into a temp dir);
`--mixed` a 40-school city of every layout (ministry exports, clerks' headers and typos, broken
files) and the ministry's own files (../shared/reference/moet).
Prints every difference; exit status 1 when there is one.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
YEAR, PERIOD = "2022-2023", "dau_nam"


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _frame(df):
    import pyarrow as pa

    types = []
    for c in df.columns:
        arr = df[c].array
        pa_arr = getattr(arr, "_pa_array", None)
        types.append(str(pa_arr.type) if pa_arr is not None else None)
    return {"columns": [str(c) for c in df.columns], "dtypes": [repr(t) for t in df.dtypes], "arrow": types,
            "index": repr(df.index), "frame": df}


def _parsed(pw):
    import dataclasses

    out = {"sheet_names": pw.sheet_names, "sha256": pw.sha256, "unknown": pw.unknown_sheets,
           "template_version": pw.template_version, "duplicate_sheets": pw.duplicate_sheets, "sheets": {}}
    for sid, sd in pw.sheets.items():
        d = {f.name: getattr(sd, f.name) for f in dataclasses.fields(sd) if f.name != "frame"}
        d["frame"] = _frame(sd.frame)
        out["sheets"][sid] = d
    out["school"] = dataclasses.asdict(pw.school) if pw.school is not None else None
    return out


def dump(inboxes: list[Path], out: Path, workers: int = 1) -> None:
    """Run in the process of one version (its checkout first on sys.path)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    from edustat import pipeline, reader
    from edustat.config import Config
    from edustat.submissions import discover

    result = {"code": str(Path(pipeline.__file__).resolve().parents[1]), "inboxes": {}}
    for inbox in inboxes:
        paths = discover(inbox)
        per_file = {}
        t = time.process_time()
        for p in paths:
            key = os.fsencode(p.relative_to(inbox)).decode("utf-8", "surrogateescape")
            try:
                per_file[key] = ("parsed", _parsed(reader.read_workbook(p)))
            except reader.UnreadableWorkbook as exc:
                per_file[key] = ("unreadable", exc.reason, exc.detail)
            except Exception as exc:  # noqa: BLE001 - compared like any result
                per_file[key] = ("error", type(exc).__name__)
        read_cpu = time.process_time() - t
        data = Path(tempfile.mkdtemp(prefix="cmp-ingest-"))
        cfg = Config(data_dir=data, workers=workers)
        t, kids = time.process_time(), _children_cpu()
        results = pipeline.ingest_all(paths, cfg, YEAR, PERIOD, workers)
        ingest_cpu = time.process_time() - t + _children_cpu() - kids
        frs = []
        for fr in results:
            d = {k: getattr(fr, k) for k in ("sha256", "school", "school_raw", "school_rows", "school_sheet", "levels",
                                             "sheet_names", "columns", "headers", "issues", "unreadable", "blocked",
                                             "superseded", "received_mtime", "name")}
            d["path"] = os.fsencode(fr.path.relative_to(inbox)).decode("utf-8", "surrogateescape")
            d["raw_path"] = str(fr.raw_path.relative_to(data)) if fr.raw_path else None
            d["content_hash"] = getattr(fr, "content_hash", None)
            d["bytes_sha"] = getattr(fr, "bytes_sha", None)
            d["raw"] = {sid: _frame(f) for sid, f in fr.raw.items()}
            frs.append(d)
        import pyarrow.parquet as pq

        cache = {}
        for p in sorted((data / "cache").rglob("*.parquet")):
            t_ = pq.read_table(p)
            meta = json.loads(pq.read_schema(p).metadata[b"edustat"])
            cache[str(p.relative_to(data))] = {"schema": str(t_.schema.remove_metadata()), "rows": t_.to_pydict(),
                                               "meta": meta}
        result["inboxes"][str(inbox)] = {"read": per_file, "ingest": frs, "cache": cache,
                                         "cpu": {"read_workbook": read_cpu, "ingest_all": ingest_cpu}}
    out.write_bytes(pickle.dumps(result))


def _diff(a, b, where: str, out: list[str]) -> None:
    import pandas as pd

    if isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame):
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True, check_dtype=True, check_index_type=True,
                                          check_column_type=True, check_frame_type=True, check_names=True)
        except AssertionError as exc:
            out.append(f"{where}: frames differ: {str(exc)[:300]}")
        return
    if type(a) is not type(b):
        out.append(f"{where}: type {type(a).__name__} != {type(b).__name__}")
        return
    if isinstance(a, dict):
        if list(a) != list(b):
            out.append(f"{where}: keys {list(a)[:20]} != {list(b)[:20]}")
        for k in a:
            if k in b:
                _diff(a[k], b[k], f"{where}.{k}", out)
        return
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            out.append(f"{where}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{where}[{i}]", out)
        return
    if isinstance(a, float) and a != a and b != b:
        return
    if a != b:
        out.append(f"{where}: {a!r:.200} != {b!r:.200}")


def _run(code: Path, inboxes: list[Path], out: Path, workers: int = 1) -> None:
    prog = (f"import sys; sys.path.insert(0, {str(code)!r}); sys.path.insert(1, {str(HERE.parent)!r}); "
            f"import compare_ingest as c; from pathlib import Path; "
            f"c.dump([Path(p) for p in {[str(i) for i in inboxes]!r}], Path({str(out)!r}), {workers})")
    subprocess.run([sys.executable, "-c", prog], check=True, cwd=tempfile.gettempdir())


def _corpus(root: Path) -> Path:
    """The hostile-files corpus next to good schools, as tests/test_bad_inputs.py builds it."""
    sys.path.insert(0, str(HERE.parents[1]))
    from tests.bad_inputs import build_corpus_city

    inbox, outside = root / "inbox", root / "outside"
    build_corpus_city(inbox, outside, school_year=YEAR, period=PERIOD)
    return inbox


def _mixed(root: Path) -> list[Path]:
    """A city of every layout (ministry exports, clerks' reworded headers and typos, broken
    files, row errors) and the real ministry files of ../shared/reference/moet."""
    sys.path.insert(0, str(HERE.parents[1]))
    import shutil

    from edustat.synth import generate_city

    city = root / "mixed"
    generate_city(city, schools=40, seed=12, school_year=YEAR, period=PERIOD, export_share=0.3, clerk_share=0.4,
                  typo_rate=0.05, error_rate=0.02, broken=3)
    (city / "manifest.json").unlink()
    out = [city]
    moet = HERE.parents[2] / "shared" / "reference" / "moet"
    if moet.is_dir():
        ref = root / "moet"
        ref.mkdir()
        for p in moet.glob("*.xlsx"):
            shutil.copy(p, ref / p.name)
        out.append(ref)
    return out


def common_args(ap: argparse.ArgumentParser) -> None:
    """The arguments every two-checkout comparison of the read takes (compare_cast.py too)."""
    ap.add_argument("inboxes", nargs="*", type=Path)
    ap.add_argument("--base", type=Path, required=True, help="checkout of the reference version (e.g. main)")
    ap.add_argument("--new", type=Path, default=HERE.parents[1])
    ap.add_argument("--corpus", action="store_true", help="add the hostile-files corpus (tests/bad_inputs)")
    ap.add_argument("--mixed", action="store_true", help="add a city of every layout and the ministry's own files")
    ap.add_argument("--workers", type=int, default=1, help="reader processes of ingest_all (1: all in this one)")


def inboxes_of(args: argparse.Namespace, tmp: Path) -> list[Path]:
    """The inboxes named, plus the corpus and the mixed city when asked for (built under `tmp`)."""
    inboxes = [p.resolve() for p in args.inboxes]
    if args.corpus:
        inboxes.append(_corpus(tmp / "corpus"))
    if args.mixed:
        inboxes.extend(_mixed(tmp))
    return inboxes


def main() -> None:
    ap = argparse.ArgumentParser()
    common_args(ap)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cmp-"))
    inboxes = inboxes_of(args, tmp)
    _run(args.base.resolve(), inboxes, tmp / "base.pkl", args.workers)
    _run(args.new.resolve(), inboxes, tmp / "new.pkl", args.workers)
    base = pickle.loads((tmp / "base.pkl").read_bytes())
    new = pickle.loads((tmp / "new.pkl").read_bytes())
    diffs: list[str] = []
    for inbox in inboxes:
        a, b = base["inboxes"][str(inbox)], new["inboxes"][str(inbox)]
        for entry in list(a["cache"].values()) + list(b["cache"].values()):
            entry["meta"].pop("version", None)  # the version key hashes the code: differs by construction
        for part in ("read", "ingest", "cache"):
            _diff(a[part], b[part], f"{inbox.name}:{part}", diffs)
        n_frames = sum(len(d["raw"]) for d in a["ingest"])
        print(f"{inbox}: {len(a['read'])} files, {n_frames} raw frames, {len(a['cache'])} cache entries; "
              f"CPU s read_workbook {a['cpu']['read_workbook']:.2f} → {b['cpu']['read_workbook']:.2f}, "
              f"ingest_all {a['cpu']['ingest_all']:.2f} → {b['cpu']['ingest_all']:.2f}")
    print(f"base {base['code']} vs new {new['code']}: {len(diffs)} differences")
    for d in diffs[:200]:
        print("  " + d)
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
