"""The typed data contract: sheets, fields, code lists and mappings, loaded from `schemas/`.

Everything that knows a header, an alias or a code goes through here:
`load_contract().sheet("learners").field("sex").codelist.resolve("Nữ") == "02"`.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml

from schemas.folding import header_key
from schemas.vocabulary import Matcher, Reading, codelist_matcher, value_entries

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~8x faster, same result (safe constructors)

ROOT = Path(__file__).parent
CODELIST_DIR = ROOT / "codelists"

Level = Literal["MN", "TH", "THCS"]
Period = Literal["dau_nam", "cuoi_nam"]
FIELD_TYPES = {"text", "code", "id", "date", "year_or_date", "int", "flag", "school_year"}
_FIELD_KEYS = {
    "id", "header", "aliases", "type", "codelist", "codes", "pattern", "levels", "periods",
    "required", "pii", "moet_field", "note",
}
_CODE_LABEL = re.compile(r"^\s*([0-9A-Za-z_]+)\s*[-–:.]\s+(.+)$")


class ContractError(ValueError):
    """The contract files disagree with themselves (a developer error, caught by tests)."""


@dataclass(frozen=True)
class CodeList:
    """One code list: codes in source order, their labels, and its vocabulary (codes, labels,
    the forms' words, written spellings: `schemas/vocabulary.py`)."""

    ref: str  # "<vintage>/<LIST>"
    codes: tuple[str, ...]
    labels: tuple[str, ...]
    attributes: tuple[dict[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.codes)

    def label(self, code: str) -> str:
        return self.labels[self.codes.index(code)]

    @property
    def matcher(self) -> Matcher:
        return codelist_matcher(self.ref, self.codes, self.labels)

    def read(self, value: object, near: bool = True) -> Reading:
        """A school's cell → how it was read: exact / said / near (accepted, the last two
        reported) or ambiguous / unknown. Accepts the code ("02", "2", 2.0), a label in any
        case or without diacritics, a form's label, a listed spelling or abbreviation, or
        "code - label" ("01 - Kinh")."""
        if value is None:
            return Reading(None, "unknown")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value).strip()
        if text.endswith(".0") and text[:-2].isdigit():
            text = text[:-2]
        m = _CODE_LABEL.match(text)
        if m:  # "01 - Kinh": a code and its own label
            hit = self.matcher.read(m.group(1), near=False)
            if hit.accepted and self.matcher.read(m.group(2), near=False).code == hit.code:
                return hit
        return self.matcher.read(text, near=near)

    def resolve(self, value: object) -> str | None:
        """The code of a cell spelled as the vocabulary has it (no near misses, no guesses)."""
        r = self.read(value, near=False)
        return r.code if r.how in ("exact", "said") else None

    def subset(self, codes: Iterable[str]) -> "CodeList":
        keep = [c for c in self.codes if c in set(codes)]
        missing = set(codes) - set(keep)
        if missing:
            raise ContractError(f"{self.ref}: codes {sorted(missing)} not in the list")
        pos = [self.codes.index(c) for c in keep]
        return CodeList(
            ref=self.ref,
            codes=tuple(keep),
            labels=tuple(self.labels[i] for i in pos),
            attributes=tuple(self.attributes[i] for i in pos) if self.attributes else (),
        )


@lru_cache(maxsize=None)
def load_codelist(ref: str) -> CodeList:
    """Read `schemas/codelists/<vintage>/<LIST>.csv` (written by the extractor or by hand)."""
    path = CODELIST_DIR / f"{ref}.csv"
    if not path.exists():
        raise ContractError(f"code list {ref!r} not found at {path}")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    seen: dict[str, int] = {}
    codes, labels, attrs = [], [], []
    for r in rows:
        code = r["code"]
        if code in seen:  # e.g. DM_KHOI lists "Khối 10" for two programmes; the code is unique
            continue
        seen[code] = len(codes)
        codes.append(code)
        labels.append(r["label"])
        attrs.append({k: v for k, v in r.items() if k not in ("code", "label", "label_folded")})
    bad = {e.code for e in value_entries(ref) if e.code not in seen}
    if bad:
        raise ContractError(f"vocabulary.yaml: {ref} maps to unknown codes {sorted(bad)}")
    return CodeList(ref, tuple(codes), tuple(labels), tuple(attrs))


@lru_cache(maxsize=None)
def _field_codelist(ref: str, codes: tuple[str, ...]) -> CodeList:
    """One object per (list, subset), so its resolver index is built once."""
    cl = load_codelist(ref)
    return cl.subset(codes) if codes else cl


@dataclass(frozen=True)
class Requirement:
    """When a field must be filled: always, never, for some levels/periods, or when another
    field of the row has (or lacks) certain values."""

    always: bool = False
    levels: tuple[str, ...] = ()
    periods: tuple[str, ...] = ()
    when_field: str | None = None
    when_in: tuple[str, ...] = ()
    when_not_in: tuple[str, ...] = ()
    when_not_blank: bool = False

    @classmethod
    def parse(cls, raw: Any) -> "Requirement":
        if raw is True:
            return cls(always=True)
        if raw in (False, None):
            return cls()
        if not isinstance(raw, dict) or set(raw) - {"levels", "periods", "when"}:
            raise ContractError(f"bad 'required': {raw!r}")
        when = raw.get("when") or {}
        if set(when) - {"field", "in", "not_in", "not_blank"}:
            raise ContractError(f"bad 'required.when': {when!r}")
        return cls(
            always=False,
            levels=tuple(raw.get("levels", ())),
            periods=tuple(raw.get("periods", ())),
            when_field=when.get("field"),
            when_in=tuple(str(v) for v in when.get("in", ())),
            when_not_in=tuple(str(v) for v in when.get("not_in", ())),
            when_not_blank=bool(when.get("not_blank", False)),
        )

    @property
    def is_required(self) -> bool:
        return self.always or bool(self.levels or self.periods or self.when_field)

    def applies(self, levels: Iterable[str], period: str) -> bool:
        """Required in this context, ignoring the row condition (`when_field`)."""
        if self.always:
            return True
        if not self.is_required:
            return False
        lv = set(levels)
        return (not self.levels or bool(lv & set(self.levels))) and (
            not self.periods or period in self.periods
        )


@dataclass(frozen=True)
class Field:
    id: str
    header: str
    type: str
    sheet_id: str
    aliases: tuple[str, ...] = ()
    codelist_ref: str | None = None
    codes: tuple[str, ...] = ()
    pattern: str | None = None
    levels: tuple[str, ...] = ("MN", "TH", "THCS")
    periods: tuple[str, ...] = ("dau_nam", "cuoi_nam")
    required: Requirement = field(default_factory=Requirement)
    pii: bool = False
    moet_field: str | None = None
    note: str | None = None

    @property
    def codelist(self) -> CodeList | None:
        if not self.codelist_ref:
            return None
        return _field_codelist(self.codelist_ref, self.codes)

    @property
    def match_keys(self) -> tuple[str, ...]:
        """Folded header and aliases: what a workbook's header cell is matched against."""
        keys = [header_key(self.header), *(header_key(a) for a in self.aliases)]
        return tuple(dict.fromkeys(keys))

    @property
    def hint(self) -> str:
        """One Vietnamese line on what a valid value looks like (template notes, fix texts)."""
        if self.type == "date":
            return "Ngày nhập dạng ngày/tháng/năm, ví dụ 05/09/2016."
        if self.type == "year_or_date":
            return "Nhập năm (1975) hoặc ngày/tháng/năm."
        if self.type == "id" and self.pattern:
            digits = "".join(ch for ch in self.pattern if ch.isdigit())
            return f"Nhập đủ {digits} chữ số, định dạng ô là Văn bản để giữ số 0 ở đầu."
        if self.type == "flag":
            return "1 = có, 0 hoặc để trống = không."
        if self.type == "int":
            return "Nhập số nguyên không âm."
        if self.type == "school_year":
            return "Nhập năm học dạng 2022-2023."
        if self.type == "code" and self.codelist is not None:
            cl = self.codelist
            if len(cl) <= 8:
                # our own identifier codes (dau_nam, dong_bang) are never shown: their labels are
                # what a person types or picks, and the reader accepts them
                if not any(ch.isdigit() for c in cl.codes for ch in c):
                    return "Chọn một trong: " + "; ".join(lab or c for c, lab in zip(cl.codes, cl.labels)) + "."
                return "; ".join(f"{c} = {lab}" for c, lab in zip(cl.codes, cl.labels))
            return f"Chọn trong danh sách ({len(cl)} mã); nhập mã hoặc tên đều được."
        return ""

    def applies(self, levels: Iterable[str], period: str) -> bool:
        """Does the workbook of a school serving `levels` in `period` carry this column?"""
        return bool(set(levels) & set(self.levels)) and period in self.periods


@dataclass(frozen=True)
class Sheet:
    id: str
    name: str
    title: str
    layout: Literal["table", "key_value"]
    fields: tuple[Field, ...]
    aliases: tuple[str, ...] = ()
    required: Requirement = field(default_factory=Requirement)
    key_header: str | None = None
    value_header: str | None = None

    def field(self, field_id: str) -> Field:
        for f in self.fields:
            if f.id == field_id:
                return f
        raise KeyError(f"{self.id}.{field_id}")

    @property
    def field_ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.fields)

    @property
    def match_keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([header_key(self.name), header_key(self.title), *map(header_key, self.aliases)]))

    def fields_for(self, levels: Iterable[str], period: str) -> tuple[Field, ...]:
        lv = tuple(levels)
        return tuple(f for f in self.fields if f.applies(lv, period))


@dataclass(frozen=True)
class Contract:
    version: str
    min_template_version: str
    levels: tuple[str, ...]
    periods: tuple[str, ...]
    sheets: tuple[Sheet, ...]
    mappings: dict[str, Any]

    def sheet(self, sheet_id: str) -> Sheet:
        for s in self.sheets:
            if s.id == sheet_id:
                return s
        raise KeyError(sheet_id)

    def levels_of(self, education_level: str) -> tuple[str, ...]:
        """DM_NHOM_CAP_HOC code → the levels (MN/TH/THCS) that school serves."""
        return tuple(self.mappings["education_level_levels"].get(education_level, ()))

    def codelist(self, ref: str) -> CodeList:
        return load_codelist(ref)


def _parse_field(raw: dict, sheet_id: str) -> Field:
    unknown = set(raw) - _FIELD_KEYS
    if unknown:
        raise ContractError(f"{sheet_id}.{raw.get('id')}: unknown keys {sorted(unknown)}")
    if raw.get("type") not in FIELD_TYPES:
        raise ContractError(f"{sheet_id}.{raw.get('id')}: type {raw.get('type')!r}")
    if raw["type"] == "code" and not raw.get("codelist"):
        raise ContractError(f"{sheet_id}.{raw['id']}: a code field needs a codelist")
    return Field(
        id=raw["id"],
        header=raw["header"],
        type=raw["type"],
        sheet_id=sheet_id,
        aliases=tuple(raw.get("aliases", ())),
        codelist_ref=raw.get("codelist"),
        codes=tuple(str(c) for c in raw.get("codes", ())),
        pattern=raw.get("pattern"),
        levels=tuple(raw.get("levels", ("MN", "TH", "THCS"))),
        periods=tuple(raw.get("periods", ("dau_nam", "cuoi_nam"))),
        required=Requirement.parse(raw.get("required", False)),
        pii=bool(raw.get("pii", False)),
        moet_field=raw.get("moet_field"),
        note=raw.get("note"),
    )


@lru_cache(maxsize=None)
def load_contract(path: Path | None = None) -> Contract:
    """Parse `schemas/submission.yaml` + `schemas/mappings.yaml` and check them."""
    raw = yaml.load((path or ROOT / "submission.yaml").read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    mappings = yaml.load((ROOT / "mappings.yaml").read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    sheets = []
    for s in raw["sheets"]:
        fields = tuple(_parse_field(f, s["id"]) for f in s["fields"])
        ids = [f.id for f in fields]
        if len(ids) != len(set(ids)):
            raise ContractError(f"sheet {s['id']}: duplicate field ids")
        sheets.append(
            Sheet(
                id=s["id"],
                name=s["name"],
                title=s.get("title", s["name"]),
                layout=s["layout"],
                fields=fields,
                aliases=tuple(s.get("aliases", ())),
                required=Requirement.parse(s.get("required", False)),
                key_header=s.get("key_header"),
                value_header=s.get("value_header"),
            )
        )
    contract = Contract(
        version=str(raw["contract_version"]),
        min_template_version=str(raw["min_template_version"]),
        levels=tuple(raw["levels"]),
        periods=tuple(raw["periods"]),
        sheets=tuple(sheets),
        mappings=mappings,
    )
    _check(contract)
    return contract


def _check(c: Contract) -> None:
    """Cross-file consistency: code lists exist, header keys are unambiguous per sheet,
    `when` conditions name real fields."""
    for s in c.sheets:
        owner: dict[str, str] = {}
        for f in s.fields:
            if f.codelist_ref:
                f.codelist  # noqa: B018 - loads, and checks `codes` ⊆ list
            if f.required.when_field and f.required.when_field not in s.field_ids:
                raise ContractError(f"{s.id}.{f.id}: 'when' names unknown field")
            for key in f.match_keys:
                if key in owner and owner[key] != f.id:
                    raise ContractError(f"{s.id}: header key {key!r} of {f.id} also names {owner[key]}")
                owner[key] = f.id
