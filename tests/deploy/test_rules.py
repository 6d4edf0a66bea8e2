"""Prometheus rules: promtool checks the source and the rules the chart ships, unit-tests every
alert, and the chart's generated SLO group equals the one the unit tests ran against."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.deploy.tools import ROOT, RULE_TESTS, RULES, binary, by_kind, render


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=60)


def rendered_rules() -> dict:
    return by_kind(render(), "PrometheusRule")["likeness"]["spec"]


def test_source_rules_pass_promtool_check():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_prometheus_rule_passes_promtool_check(tmp_path):
    path = tmp_path / "rendered.rules.yaml"
    path.write_text(yaml.safe_dump(rendered_rules()))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def alerts(spec: dict) -> set[str]:
    return {r["alert"] for g in spec["groups"] for r in g["rules"] if "alert" in r}


def test_every_alert_has_a_firing_unit_test_and_a_runbook():
    source = yaml.safe_load(RULES.read_text())
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {t["alertname"] for case in tests for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    quiet = {t["alertname"] for case in tests for t in case.get("alert_rule_test", []) if not t.get("exp_alerts")}
    assert alerts(source) == fired == quiet, "each alert needs a case where it fires and one where it does not"
    runbook = (ROOT / "docs" / "operations.md").read_text()
    for name in alerts(source):
        assert re.search(rf"^#+ {name}\b", runbook, re.M), f"docs/operations.md has no section for {name}"


def test_chart_ships_the_tested_rules_with_slos_from_values():
    source = {g["name"]: g for g in yaml.safe_load(RULES.read_text())["groups"]}
    shipped = {g["name"]: g for g in rendered_rules()["groups"]}
    assert shipped.keys() == source.keys()
    for name in source:
        if name == "likeness-slo":
            def key(r):
                return (r["record"], tuple(sorted(r.get("labels", {}).items())), r["expr"])
            assert sorted(map(key, shipped[name]["rules"])) == sorted(map(key, source[name]["rules"])), \
                "values.yaml prometheusRule.slo and rules/likeness.rules.yaml disagree"
        else:
            assert shipped[name] == source[name]
    tuned = by_kind(render("--set", "prometheusRule.slo.rpcP95Seconds.GenerationService=90"), "PrometheusRule")
    slo = next(g for g in tuned["likeness"]["spec"]["groups"] if g["name"] == "likeness-slo")
    assert {"record": "likeness:slo_rpc_p95_seconds", "expr": "vector(90)",
            "labels": {"service": "GenerationService"}} in slo["rules"]
