"""The vocabulary: every spelling a school may use for a code or a header, and how a cell
that is not one of them is read.

One index per code list and one per sheet's headers, each entry with its source:

- generated: codes (and "2" for "02"), official labels, the report forms' row labels that
  stand for one code (`where: room_type = '13'`), for headers the contract's header and
  aliases, the ministry field name and the sync spec's description of it;
- written: `schemas/vocabulary.yaml` (abbreviations, spec words, clerks' spellings).

Reading a cell (`Matcher.read`):
1. exact, on `header_key` (no diacritics, case, decorations, separators) and again with
   abbreviations spelled out: one code → `exact`; two codes on the same footing →
   `ambiguous` (never guessed); an entry marked `said` → `said` (accepted, reported);
2. otherwise a near miss: the entries within `max_edits` letters (rapidfuzz OSA distance on
   the folded key: 1 for keys up to 10 characters, 2 up to 20, then 3); one code nearest →
   `near` (accepted with a warning naming it); two equally near → `ambiguous`. Numbers must
   agree (`Phường 1` is never `Phường 7`) and a changed word must be a typo, not another word
   of the vocabulary (`Phòng họp` is never `Phòng học`).

The limits were measured with scripts/measure_vocabulary.py (typo'd entries vs deliberately
wrong values; the numbers are in the README and tests/test_vocabulary.py keeps them).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

import yaml

from schemas.folding import bare_key, expand, header_key

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~8x faster, same result (safe constructors)

ROOT = Path(__file__).parent
NEAR_MIN_LENGTH = 4  # shorter keys ("ht", "07") are never read as near misses
# Edits (letters left out, added, changed, or two swapped: OSA distance on the folded key) a
# near miss may be from a vocabulary entry, by the key's length; measured with
# scripts/measure_vocabulary.py (README: "How a cell is read").
NEAR_EDITS = ((10, 1), (20, 2), (10_000, 3))


def max_edits(length: int) -> int:
    return next(e for upto, e in NEAR_EDITS if length <= upto)
_DIGITS = re.compile(r"\d+")
TIER_CODE, TIER_LABEL, TIER_WORD, TIER_BARE = 0, 1, 2, 3


@dataclass(frozen=True)
class Entry:
    spelling: str
    code: str
    source: str
    tier: int
    said: str | None = None  # accepted but reported (the spelling does not pin one code)


@dataclass(frozen=True)
class Reading:
    """How one cell was read. `how`: exact | said | near | ambiguous | unknown."""

    code: str | None
    how: str
    spelling: str | None = None  # the vocabulary entry it was read as
    candidates: tuple[str, ...] = ()
    score: float | None = None
    note: str | None = None

    @property
    def accepted(self) -> bool:
        return self.code is not None


@dataclass
class Matcher:
    """An index over entries: key → tier → codes (and the entry that put each there)."""

    entries: list[Entry] = field(default_factory=list)
    abbreviations: Mapping[str, str] = field(default_factory=dict)
    headers: bool = False  # header matching also drops parenthesised parts and splits FieldNames

    def __post_init__(self) -> None:
        self._index: dict[str, dict[int, dict[str, Entry]]] = {}
        for e in self.entries:
            for key in self._keys(e.spelling, e.tier):
                self._index.setdefault(key, {}).setdefault(e.tier, {}).setdefault(e.code, e)
        self._fuzzy_keys = [k for k, tiers in self._index.items()
                            if len(k) >= NEAR_MIN_LENGTH and min(tiers) > TIER_CODE and not k.isdigit()]

    def _keys(self, spelling: str, tier: int) -> list[str]:
        key = header_key(spelling)
        if tier == TIER_CODE:
            return [key, spelling.strip().casefold()]
        keys = [key, expand_all(key, self.abbreviations)]
        return [k for k in dict.fromkeys(keys) if k]

    def _exact(self, key: str) -> Reading | None:
        tiers = self._index.get(key)
        if not tiers:
            return None
        best = tiers[min(tiers)]
        if len(best) > 1:
            return Reading(None, "ambiguous", candidates=tuple(sorted(best)))
        code, entry = next(iter(best.items()))
        if entry.said:
            return Reading(code, "said", spelling=entry.spelling, note=entry.said)
        return Reading(code, "exact", spelling=entry.spelling)

    def read(self, value: object, near: bool = True) -> Reading:
        if value is None:
            return Reading(None, "unknown")
        text = str(value).strip()
        if not text:
            return Reading(None, "unknown")
        raw_key = text.casefold()
        for key in dict.fromkeys([raw_key, header_key(text)]):
            hit = self._exact(key)
            if hit:
                return hit
        key = header_key(text)
        expanded = expand_all(key, self.abbreviations)
        keys = [expanded]
        if self.headers:  # "Nhóm tuổi (MN)" is "Nhóm tuổi"; a ministry field name: MaLopHocCn
            bare = bare_key(text)
            keys += [bare, expand_all(bare, self.abbreviations), header_key(_snake(text))]
        for k in dict.fromkeys(keys):
            hit = self._exact(k) if k else None
            if hit:
                return hit
        if not near or len(key) < NEAR_MIN_LENGTH or not re.search(r"[a-z]", key):
            return Reading(None, "unknown")
        return self._near(expanded)

    def resembling(self, value: str, codes, min_score: float = 75.0) -> list[str]:
        """The codes among `codes` one of whose spellings resembles `value` (rapidfuzz
        token_set_ratio on the folded keys): an unknown header that may be a missing field."""
        from rapidfuzz import fuzz

        key = expand_all(header_key(value), self.abbreviations)
        if len(key) < 3:
            return []
        out = []
        for code in codes:
            spellings = [k for k, tiers in self._index.items() if any(code in t for t in tiers.values())]
            if any(fuzz.token_set_ratio(key, k) >= min_score for k in spellings):
                out.append(code)
        return out

    def _near(self, key: str) -> Reading:
        from rapidfuzz import process
        from rapidfuzz.distance import OSA

        digits = _DIGITS.findall(key)
        best: dict[str, tuple[int, str]] = {}
        for cand, edits, _ in process.extract(key, self._fuzzy_keys, scorer=OSA.distance, limit=12,
                                              score_cutoff=max_edits(len(key))):
            if _DIGITS.findall(cand) != digits or not _typo_of(key, cand):
                continue
            tiers = self._index[cand]
            for code, entry in tiers[min(tiers)].items():
                if code not in best or edits < best[code][0]:
                    best[code] = (int(edits), entry.spelling)
        if not best:
            return Reading(None, "unknown")
        ranked = sorted(best.items(), key=lambda kv: kv[1][0])
        top_code, (top, spelling) = ranked[0]
        rivals = [c for c, (e, _) in ranked[1:] if e <= top]
        if rivals:  # two codes equally near: never guessed
            return Reading(None, "ambiguous", candidates=tuple([top_code, *rivals]), score=top)
        return Reading(top_code, "near", spelling=spelling, score=top)


def _typo_of(query: str, candidate: str) -> bool:
    """A near miss is a typo, not another word. Every word of the query that the candidate
    lacks must be close to a word the query lacks, and when it is itself a word of the
    vocabulary, only a letter left out or doubled ("hieu trong" → "hieu truong") — never one
    letter for another ("phong hop", a meeting room, is not "phong hoc")."""
    from rapidfuzz import fuzz

    q, c = query.split(), candidate.split()
    missing = [t for t in c if t not in q]
    for tok in (t for t in q if t not in c):
        if tok in known_words():
            if not any(_one_letter_apart(tok, m) for m in missing):
                return False
        elif not any(fuzz.ratio(tok, m) >= 50 for m in missing):
            return False
    return True


def _one_letter_apart(a: str, b: str) -> bool:
    """b is a with one letter added (or a is b with one added), or two neighbours swapped."""
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    if abs(len(a) - len(b)) != 1:
        return False
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


@lru_cache(maxsize=None)
def known_words() -> frozenset[str]:
    """Every word of every label of every code list, of the written vocabulary and of the
    contract's headers: what a near miss may not silently turn into another."""
    words: set[str] = set()
    for path in (ROOT / "codelists").glob("*/*.csv"):
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if len(rows) > 300:  # place and country names: proper names, not the words clerks mistype
            continue
        for row in rows:
            if True:
                for col in ("label", "description"):
                    if row.get(col):
                        words.update(header_key(row[col]).split())
    for section in ("values", "headers"):
        for groups in (written().get(section) or {}).values():
            for group in groups or []:
                for k, v in (group.get("spellings") or group.get("fields") or {}).items():
                    for text in [str(k), *(v if isinstance(v, list) else [])]:
                        words.update(header_key(text).split())
    contract = yaml.load((ROOT / "submission.yaml").read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    for sheet in contract["sheets"]:
        for f in sheet["fields"]:
            for text in [f["header"], *f.get("aliases", [])]:
                words.update(header_key(text).split())
    abbr = abbreviations()
    for k, v in abbr.items():
        if k != "__phrases__":
            words.update(v.split())
    return frozenset(w for w in words if len(w) > 1 and not w.isdigit())


def expand_all(key: str, abbreviations: Mapping[str, str]) -> str:
    """Phrases first (longest first), then single tokens. The phrase order and the token map
    are prepared once per abbreviations mapping, and results remembered (header matching asks
    for the same keys in every file: this was ~15% of reading a city)."""
    phrases, tokens, memo = _prepared(abbreviations)
    out = memo.get(key)
    if out is None:
        text = f" {key} "
        for short, long_ in phrases:
            text = text.replace(short, long_)
        out = expand(text.strip(), tokens)
        if len(memo) < 200_000:
            memo[key] = out
    return out


# id → (the mapping itself, kept alive so its id is never reused; phrases; tokens; memo).
# The mappings are built once (lru_cached loaders) and never mutated after.
_PREPARED: dict[int, tuple] = {}


def _prepared(abbreviations: Mapping[str, str]) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str]]:
    hit = _PREPARED.get(id(abbreviations))
    if hit is None or hit[0] is not abbreviations:
        phrases = abbreviations.get("__phrases__", {})
        hit = (abbreviations, [(f" {p} ", f" {phrases[p]} ") for p in sorted(phrases, key=lambda p: -len(p))],
               {k: v for k, v in abbreviations.items() if k != "__phrases__"}, {})
        _PREPARED[id(abbreviations)] = hit
    return hit[1], hit[2], hit[3]


# ---------------------------------------------------------------------------------------
# The written and generated parts
# ---------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def written() -> dict:
    return yaml.load((ROOT / "vocabulary.yaml").read_text(encoding="utf-8"), Loader=_YAML_LOADER) or {}


@lru_cache(maxsize=None)
def abbreviations() -> dict:
    """Token → spelled out; `__phrases__` → multi-word abbreviations. Keys are header keys."""
    tokens: dict[str, str] = {}
    phrases: dict[str, str] = {}
    for group in written().get("abbreviations", []):
        for k, v in (group.get("tokens") or {}).items():
            tokens[header_key(str(k))] = header_key(str(v))
        for k, v in (group.get("phrases") or {}).items():
            phrases[header_key(str(k))] = header_key(str(v))
    return {**tokens, "__phrases__": phrases}


def value_entries(ref: str) -> list[Entry]:
    """The written spellings of one code list."""
    out = []
    for group in written().get("values", {}).get(ref, []) or []:
        for spelling, code in (group.get("spellings") or {}).items():
            out.append(Entry(str(spelling), str(code), group.get("source", ""), TIER_WORD, group.get("said")))
    return out


_ROOM = re.compile(r"^\s*(?:care_level = '\w+' and )?room_type = '(\w+)'(?: and care_level is null)?\s*$")
_ROLE = re.compile(r"^\s*role = '(\w+)'\s*$")


@lru_cache(maxsize=None)
def form_labels() -> dict[str, tuple[tuple[str, str, str], ...]]:
    """The report forms' labels of rows that stand for exactly one code of a list:
    {list ref: ((label, code, source), …)}. Rooms by `room_type = 'xx'`; staff roles by
    `role = 'x'` whose mapping names exactly one position."""
    mappings = yaml.load((ROOT / "mappings.yaml").read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    role_position: dict[str, str] = {}
    for rule in mappings.get("staff_roles", []):
        if set(rule) == {"role", "position"} and len(rule["position"]) == 1 and rule["role"] not in role_position:
            role_position[rule["role"]] = rule["position"][0]
    out: dict[str, list[tuple[str, str, str]]] = {"edustat/ROOM_TYPE": [], "edustat/POSITION": []}
    for path in sorted((ROOT / "forms").glob("*.yaml")):
        form = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
        for row in _rows(form):
            label, where = row.get("label"), row.get("where")
            if not isinstance(label, str) or not isinstance(where, str):
                continue
            label = re.sub(r"^[\s\-+•]+|[\s:]+$", "", label)
            src = f"form {path.stem} row {row.get('tt') or row.get('code') or ''}".strip()
            if m := _ROOM.match(where):
                out["edustat/ROOM_TYPE"].append((label, m.group(1), src))
            elif (m := _ROLE.match(where)) and m.group(1) in role_position:
                out["edustat/POSITION"].append((label, role_position[m.group(1)], src))
    return {k: tuple(v) for k, v in out.items()}


def _rows(obj) -> Iterable[dict]:
    if isinstance(obj, dict):
        if "label" in obj and "where" in obj:
            yield obj
        for v in obj.values():
            yield from _rows(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _rows(v)


def codelist_entries(ref: str, codes: Iterable[str], labels: Iterable[str]) -> list[Entry]:
    """Every entry of a code list: codes, labels, form labels, written spellings."""
    out: list[Entry] = []
    for code, label in zip(codes, labels):
        out.append(Entry(code, code, "code", TIER_CODE))
        if code.isdigit() and str(int(code)) != code:
            out.append(Entry(str(int(code)), code, "code without its leading zero", TIER_CODE))
        if label:
            out.append(Entry(label, code, "official label", TIER_LABEL))
    known = set(codes)
    for label, code, src in form_labels().get(ref, ()):
        if code in known:
            out.append(Entry(label, code, src, TIER_WORD))
    out.extend(e for e in value_entries(ref) if e.code in known)
    return out


# ---------------------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------------------

SYNC_SHEETS = {"school": "TruongHocInfo", "classes": "LstLopHocInfo", "learners": "LstHocSinh", "staff": "LstCanBo"}


@lru_cache(maxsize=None)
def sync_fields() -> dict[tuple[str, str], tuple[str, str]]:
    """(sync sheet, field) → (description, csdl name), from the ministry's sync spec."""
    path = ROOT / "codelists" / "moet-2020" / "fields" / "sync_fields.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        return {(r["sheet"], r["field"]): (r["description"], r["csdl_name"]) for r in csv.DictReader(fh)}


def _snake(name: str) -> str:
    """MaHocSinh → Ma_Hoc_Sinh (header_key then reads it as 'ma hoc sinh')."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)


def header_entries(sheet_id: str, fields) -> list[Entry]:
    """Every header spelling of a sheet's fields; `code` is the field id. Generated spellings
    that would name two fields are left out (they are not anyone's words to honour)."""
    out: list[Entry] = []
    for f in fields:
        out.append(Entry(f.header, f.id, "contract header", TIER_LABEL))
        out.extend(Entry(a, f.id, "contract alias", TIER_LABEL) for a in f.aliases)
    for group in written().get("headers", {}).get(sheet_id, []) or []:
        for fid, spellings in (group.get("fields") or {}).items():
            out.extend(Entry(str(s), fid, group.get("source", ""), TIER_LABEL) for s in spellings)
    generated: list[Entry] = []
    sync_sheet = SYNC_SHEETS.get(sheet_id)
    for f in fields:
        if not f.moet_field:
            continue
        generated.append(Entry(_snake(f.moet_field), f.id, "ministry field name", TIER_WORD))
        desc = sync_fields().get((sync_sheet, f.moet_field)) if sync_sheet else None
        if desc and desc[0] and len(bare_key(desc[0]).split()) <= 7:
            generated.append(Entry(desc[0], f.id, "sync spec description", TIER_WORD))
    taken = {header_key(e.spelling): e.code for e in out}
    owners: dict[str, set[str]] = {}
    for e in generated:
        owners.setdefault(header_key(e.spelling), set()).add(e.code)
    out.extend(e for e in generated if len(owners[header_key(e.spelling)]) == 1
               and taken.get(header_key(e.spelling), e.code) == e.code)
    # decorations a clerk adds inside the header: "Nhóm tuổi (MN)" is also "Nhóm tuổi"
    bare: dict[str, set[str]] = {}
    for e in list(out):
        bare.setdefault(bare_key(e.spelling), set()).add(e.code)
    out.extend(Entry(k, next(iter(codes)), "header without its parenthesised part", TIER_BARE)
               for k, codes in bare.items() if k and len(codes) == 1 and k not in taken)
    return out


@lru_cache(maxsize=None)
def _codelist_matcher(ref: str, codes: tuple[str, ...], labels: tuple[str, ...]) -> Matcher:
    return Matcher(codelist_entries(ref, codes, labels), abbreviations())


# The matchers above are cached by their arguments, whose hash is computed again on every call:
# for the wards' list (11,162 codes and labels) 0.7 ms, asked several times per file, and every
# sheet's fields (their code lists inside) for each header look-up — a tenth of reading a city
# (issue 12). These memos find the matcher by the arguments' identity first: the argument
# objects kept alive beside it (so an id is never reused), the cached function still the one
# building and holding every matcher, and cleared with it; what they return is the object the
# cached function returns for those arguments.
_BY_ID: dict[tuple, tuple] = {}


def _by_id(key: tuple, args: tuple, build) -> Matcher:
    hit = _BY_ID.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], args)):
        return hit[1]
    matcher = build(*args)
    if len(_BY_ID) > 4096:  # sublists made per file (edustat.submissions' admin context): bounded
        _BY_ID.clear()
    _BY_ID[key] = (args, matcher)
    return matcher


def codelist_matcher(ref: str, codes: tuple[str, ...], labels: tuple[str, ...]) -> Matcher:
    return _by_id(("list", ref, id(codes), id(labels)), (ref, codes, labels), _codelist_matcher)


def sheet_matcher(sheet) -> Matcher:
    return _by_id(("sheet", sheet.id, id(sheet.fields)), (sheet.id, sheet.fields), _sheet_matcher)


@lru_cache(maxsize=None)
def _sheet_matcher(sheet_id: str, fields) -> Matcher:
    return Matcher(header_entries(sheet_id, fields), abbreviations(), headers=True)


def _cache_clear() -> None:
    _BY_ID.clear()
    _codelist_matcher.cache_clear()


codelist_matcher.cache_clear = _cache_clear  # type: ignore[attr-defined]
codelist_matcher.cache_info = _codelist_matcher.cache_info  # type: ignore[attr-defined]
