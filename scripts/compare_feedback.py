"""Two sets of feedback workbooks member by member (issue 12): the same workbooks, each with
the same zip members in the same order, each member's bytes identical (but the creation
time xlsxwriter writes into a receipt's docProps/core.xml). Differences are named
(workbook, member, first differing offset and the text around it). Exit 1 on any difference.

    python scripts/compare_feedback.py BEFORE_DIR AFTER_DIR

Write both sets with the same "generated at" (scripts/measure_feedback_step.py --keep does).
"""
from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

_STAMP = re.compile(rb'(?<=W3CDTF">)\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ')


def compare(before: Path, after: Path) -> list[str]:
    problems = []
    a = {p.relative_to(before) for p in before.rglob("*.xlsx")}
    b = {p.relative_to(after) for p in after.rglob("*.xlsx")}
    for name in sorted(a ^ b):
        problems.append(f"{name}: only in {'before' if name in a else 'after'}")
    members = 0
    for name in sorted(a & b):
        with zipfile.ZipFile(before / name) as za, zipfile.ZipFile(after / name) as zb:
            na, nb = za.namelist(), zb.namelist()
            if na != nb:
                problems.append(f"{name}: members {na} != {nb}")
                continue
            for m in na:
                x, y = za.read(m), zb.read(m)
                if m == "docProps/core.xml":  # xlsxwriter's clock (a receipt's creation time)
                    x, y = (_STAMP.sub(b"<stamp/>", v) for v in (x, y))
                members += 1
                if x != y:
                    at = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
                    problems.append(f"{name} {m}: differs at byte {at}: {x[max(0, at - 60):at + 60]!r} != "
                                    f"{y[max(0, at - 60):at + 60]!r}")
    print(f"{len(a & b)} workbooks, {members} members compared, {len(problems)} differences")
    return problems


def main() -> None:
    problems = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    for p in problems[:40]:
        print(p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
