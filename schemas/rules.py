"""The rule catalogue (`schemas/rules.yaml`) as typed data: families expanded over the
contract's fields, explicit rules, and an office's severity overrides."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import yaml

from schemas.contract import Contract, ContractError, Field, load_contract

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~8x faster, same result (safe constructors)

ROOT = Path(__file__).parent
SEVERITIES = ("error", "warning", "notice")
STAGES = ("file", "row", "cross_row", "cross_school", "cross_period")


@dataclass(frozen=True)
class Rule:
    id: str
    stage: str
    severity: str
    message: str
    fix: str
    source: str
    sheet: str | None = None  # contract sheet id
    field: str | None = None  # contract field id
    family: str | None = None  # required | code | near | said | ambiguous | format | padded

    def render(self, template: str, **values: object) -> str:
        """Fill {header} {value} {sheet} {detail} {file} {hint}; unknown keys stay blank."""
        safe = _Blank({k: ("" if v is None else v) for k, v in values.items()})
        return template.format_map(safe).strip()


class _Blank(dict):
    """Rule.render's values: a message never fails for a missing detail (one class, not one
    built per message: issue 12)."""

    def __missing__(self, key):
        return ""


@dataclass(frozen=True)
class Catalogue:
    rules: dict[str, Rule]
    areas: dict[str, str]

    def __getitem__(self, rule_id: str) -> Rule:
        return self.rules[rule_id]

    def __contains__(self, rule_id: str) -> bool:
        return rule_id in self.rules

    def family_id(self, sheet_id: str, field_id: str, family: str) -> str:
        return f"{self.areas[sheet_id]}_{field_id}_{family}"

    def by_stage(self, stage: str) -> list[Rule]:
        return [r for r in self.rules.values() if r.stage == stage]


def _families_for(f: Field) -> list[str]:
    out = []
    # a flag's blank is "no" (the spec: flags accept x / Có / 1 and blank): its column is
    # required (stage a), its cells are not — except a result owed by some rows (completed
    # the grade, when enrolled), where a blank is an answer missing, not a "no"
    if f.required.is_required and (f.type != "flag" or f.required.when_field):
        out.append("required")
    if f.type == "code":
        out.extend(["code", "near", "said", "ambiguous"])
    if f.type in ("date", "year_or_date", "int", "flag", "school_year") or (f.type == "id" and f.pattern):
        out.append("format")
    if f.type == "id" and f.pattern:
        out.append("padded")
    return out


@lru_cache(maxsize=None)
def _raw() -> dict:
    return yaml.load((ROOT / "rules.yaml").read_text(encoding="utf-8"), Loader=_YAML_LOADER)


def load_rules(severity_overrides: Mapping[str, str] | None = None, contract: Contract | None = None) -> Catalogue:
    """Expand the families over the contract, add the explicit rules (an explicit rule with a
    family rule's id replaces it), apply the YAML overrides, then the office's severities."""
    c = contract or load_contract()
    raw = _raw()
    areas = raw["areas"]
    rules: dict[str, Rule] = {}
    for sheet in c.sheets:
        for f in sheet.fields:
            for fam in _families_for(f):
                spec = raw["families"][fam]
                rid = f"{areas[sheet.id]}_{f.id}_{fam}"
                rules[rid] = Rule(rid, spec["stage"], spec["severity"], spec["message"], spec["fix"],
                                  spec["source"], sheet.id, f.id, fam)
    for rid, patch in (raw.get("overrides") or {}).items():
        if rid not in rules:
            raise ContractError(f"rules.yaml override for unknown family rule {rid}")
        rules[rid] = replace(rules[rid], **patch)
    for spec in raw["rules"]:
        rid = spec["id"]
        prev = rules.get(rid)
        rules[rid] = Rule(
            id=rid, stage=spec["stage"], severity=spec["severity"], message=spec["message"],
            fix=spec["fix"], source=spec["source"], sheet=spec.get("sheet"), field=spec.get("field"),
            family=prev.family if prev else None,
        )
    for rid, sev in (severity_overrides or {}).items():
        if rid not in rules:
            raise ContractError(f"severity override for unknown rule {rid!r}")
        if sev not in SEVERITIES:
            raise ContractError(f"severity {sev!r} for {rid}: use one of {SEVERITIES}")
        rules[rid] = replace(rules[rid], severity=sev)
    for r in rules.values():
        if r.stage not in STAGES or r.severity not in SEVERITIES:
            raise ContractError(f"rule {r.id}: stage {r.stage!r} / severity {r.severity!r}")
    return Catalogue(rules, areas)
