"""The GX suites are generated from the rule catalogue and never drift from it; every rule
of the catalogue is wired into the stage that runs it."""
import json
from pathlib import Path

from edustat.expectations import SUITE_DIR, suite_dicts, write_suites
from edustat.periods import CROSS_PERIOD_RULES
from edustat.store import CROSS_SCHOOL_SQL
from schemas.rules import load_rules

ROOT = Path(__file__).resolve().parents[1]


def test_committed_suites_equal_a_fresh_generation(tmp_path):
    write_suites(tmp_path)
    committed = sorted(p.name for p in SUITE_DIR.glob("*.json"))
    assert committed == sorted(p.name for p in tmp_path.glob("*.json"))
    for name in committed:
        assert (SUITE_DIR / name).read_text(encoding="utf-8") == (tmp_path / name).read_text(encoding="utf-8"), (
            f"{name} drifted from schemas/rules.yaml: run `edustat expectations`")


def test_every_expectation_carries_its_rule_and_message(contract):
    cat = load_rules()
    for period in contract.periods:
        for sheet_id, suite in suite_dicts(period).items():
            for e in suite["expectations"]:
                rule = cat[e["meta"]["rule_id"]]
                assert e["meta"]["message"] == rule.message and e["meta"]["severity"] == rule.severity
                assert rule.stage == "row"


def test_every_rule_is_wired_into_its_stage():
    cat = load_rules()
    in_suites = {e["meta"]["rule_id"] for p in SUITE_DIR.glob("*.json")
                 for e in json.loads(p.read_text(encoding="utf-8"))["expectations"]}
    checks = (ROOT / "transforms" / "checks.py").read_text(encoding="utf-8")
    collect = (ROOT / "edustat" / "submissions.py").read_text(encoding="utf-8")
    unwired = []
    for r in cat.rules.values():
        if r.stage == "row":
            # padded / near / said / ambiguous come from casting (transforms/cast.py, rendered
            # in edustat/submissions.py); required: the test below
            ok = r.id in in_suites or r.family in ("padded", "near", "said", "ambiguous", "required")
        elif r.stage == "cross_row":
            ok = f'"{r.id}"' in checks
        elif r.stage == "cross_school":
            ok = r.id in CROSS_SCHOOL_SQL
        elif r.stage == "cross_period":
            ok = r.id in CROSS_PERIOD_RULES
        else:
            ok = f'"{r.id}"' in collect
        if not ok:
            unwired.append(r.id)
    assert not unwired, unwired


def test_required_family_rules_reach_a_suite():
    cat = load_rules()
    in_suites = {e["meta"]["rule_id"] for p in SUITE_DIR.glob("*.json")
                 for e in json.loads(p.read_text(encoding="utf-8"))["expectations"]}
    required = {r.id for r in cat.rules.values() if r.family == "required"}
    assert required <= in_suites, sorted(required - in_suites)
