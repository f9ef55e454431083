"""Measure how the vocabulary reads near misses: typo'd spellings (should be read as their
code) against deliberately wrong values (should be read as nothing).

    python scripts/measure_vocabulary.py            # the table for the README / closing note

For every coded field of the contract (the big place lists excepted: their names are read in
the school's own district first), every vocabulary entry of 6+ characters gets four typos
(a letter left out, two neighbours swapped, a letter doubled, a letter changed); the wrong
values are the labels of *other* code lists and a list of things clerks write that are no
entry at all. Each limit setting of `schemas.vocabulary.NEAR_EDITS` is tried.
"""
from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas import load_contract  # noqa: E402
from schemas import vocabulary as V  # noqa: E402
from schemas.folding import header_key  # noqa: E402

BIG = {"moet-2020/DM_XA", "moet-2020/DM_HUYEN", "moet-2020/DM_TINH", "moet-2020/DM_NUOC"}
# Things clerks write that are no entry of the field's list (rooms, positions, statuses…)
WRONG_WORDS = (
    "Phòng họp", "Nhà xe", "Kho", "Phòng hội đồng", "Phòng hiệu trưởng", "Sân chơi", "Nhà vệ sinh",
    "Bác sĩ", "Lao công", "Tạp vụ", "Hợp đồng thời vụ", "Giáo viên hợp đồng", "Đang nghỉ phép",
    "Chuyển trường", "Phòng hóa", "Phòng sinh", "Hiệu phó chuyên môn", "Thực tập sinh",
    "Không rõ", "Chưa có", "Đã nghỉ", "Tạm nghỉ", "Nghỉ ốm", "Phòng chờ", "Nhà ăn",
    "Đại học kinh tế", "Cử nhân", "Kỹ sư", "Trung học phổ thông", "Lớp 10", "Lớp 12",
)
SETTINGS = {
    "1 edit ≤10, 2 ≤20, 3 beyond (chosen)": ((10, 1), (20, 2), (10_000, 3)),
    "1 edit always": ((10_000, 1),),
    "2 edits always": ((10_000, 2),),
    "1 ≤6, 2 ≤14, 3 ≤24, 4 beyond": ((6, 1), (14, 2), (24, 3), (10_000, 4)),
}


def typos(text: str, rng: random.Random) -> list[tuple[str, str]]:
    t = text
    out = []
    i = rng.randrange(1, len(t) - 1)
    out.append(("left out", t[:i] + t[i + 1:]))
    i = rng.randrange(1, len(t) - 2)
    out.append(("swapped", t[:i] + t[i + 1] + t[i] + t[i + 2:]))
    i = rng.randrange(1, len(t) - 1)
    out.append(("doubled", t[:i] + t[i] + t[i:]))
    i = rng.randrange(1, len(t) - 1)
    out.append(("changed", t[:i] + rng.choice("abcdeghiklmnopqrstuvxy") + t[i + 1:]))
    return [(k, v) for k, v in out if header_key(v) != header_key(t)]


def measure(edits) -> dict:
    V.NEAR_EDITS = edits
    V.codelist_matcher.cache_clear()
    c = load_contract()
    rng = random.Random(2022)
    pos, neg = Counter(), Counter()
    false_examples, wrong_examples = [], []
    fields = [f for s in c.sheets for f in s.fields if f.type == "code" and f.codelist_ref not in BIG]
    seen_lists = {}
    for f in fields:
        seen_lists.setdefault(f.codelist_ref, f)
    for ref, f in seen_lists.items():
        cl = f.codelist
        entries = {e.spelling: e.code for e in V.codelist_entries(ref, cl.codes, cl.labels) if e.tier > V.TIER_CODE}
        for spelling, code in entries.items():
            if len(header_key(spelling)) < 6:
                continue
            for kind, typo in typos(spelling, rng):
                r = cl.read(typo)
                outcome = ("exact" if r.how in ("exact", "said") else r.how) if r.code in (code, None) else "WRONG CODE"
                if r.how == "ambiguous":
                    outcome = "ambiguous"
                if outcome == "WRONG CODE" and len(wrong_examples) < 12:
                    wrong_examples.append(f"{ref}: '{typo}' (typo of '{spelling}' = {code}) → {r.code} ({r.spelling})")
                pos[(kind, outcome)] += 1
        own = {header_key(s) for s in entries}
        others = [lab for other, g in seen_lists.items() if other != ref for lab in g.codelist.labels if lab]
        for wrong in list(dict.fromkeys([*WRONG_WORDS, *others])):
            if header_key(wrong) in own or cl.read(wrong, near=False).accepted:
                continue  # a real entry of this list, not a wrong value
            r = cl.read(wrong)
            neg[r.how] += 1
            if r.accepted and len(false_examples) < 12:
                false_examples.append(f"{ref}: '{wrong}' → {r.code} ({r.spelling})")
    return {"pos": pos, "neg": neg, "false": false_examples, "wrong": wrong_examples}


def main() -> None:
    print("| limits | typos read as their code | typos read as another code | typos ambiguous | typos unread "
          "| wrong values read as a code (false interpretations) | wrong values tried |")
    print("|---|---|---|---|---|---|---|")
    details = {}
    for name, edits in SETTINGS.items():
        m = measure(edits)
        pos, neg = m["pos"], m["neg"]
        n_pos = sum(pos.values())
        right = sum(v for (k, o), v in pos.items() if o in ("near", "exact"))
        wrong = sum(v for (k, o), v in pos.items() if o == "WRONG CODE")
        amb = sum(v for (k, o), v in pos.items() if o == "ambiguous")
        n_neg = sum(neg.values())
        false = neg.get("near", 0) + neg.get("said", 0) + neg.get("exact", 0)
        print(f"| {name} | {right}/{n_pos} ({100 * right / n_pos:.1f} %) | {wrong} ({100 * wrong / n_pos:.2f} %) | {amb} "
              f"| {n_pos - right - wrong - amb} | {false} ({100 * false / max(n_neg, 1):.2f} %) | {n_neg} |")
        details[name] = m
    chosen = details[next(iter(SETTINGS))]
    print("\nChosen setting, typos by kind (outcome: count):")
    by_kind: dict[str, Counter] = {}
    for (k, o), v in chosen["pos"].items():
        by_kind.setdefault(k, Counter())[o] += v
    for k, cnt in by_kind.items():
        print(f"  {k}: {dict(cnt)}")
    print("False interpretations (chosen setting):", chosen["false"] or "none")
    print("Typos read as another code (chosen setting):")
    for line in chosen["wrong"]:
        print("  " + line)


if __name__ == "__main__":
    main()
