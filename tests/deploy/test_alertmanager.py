"""The Alertmanager config: valid, naming real alerts, grouping run alerts per run."""

from __future__ import annotations

import re
import shutil
from typing import Any

from tests.deploy.files import (
    DEPLOY,
    alert_rules,
    load_yaml,
    run,
)


def test_alertmanager_config() -> None:
    config = load_yaml(DEPLOY / "alertmanager" / "alertmanager.yml")
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    names = {r["alert"] for r in alert_rules()}
    for rule in config.get("inhibit_rules", []):
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            for alert in re.findall(r"Qianfan\w+", matcher):
                assert alert in names, alert
    amtool = shutil.which("amtool")
    if amtool:
        result = run([amtool, "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")])
        assert result.returncode == 0, result.stdout + result.stderr


def _route_for(route: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """The Alertmanager route an alert lands in (first matching child, depth first;
    only `name="v"` / `name=~"re"` matchers, which is all the shipped file uses), with
    group_by inherited from the parent as Alertmanager does."""
    for child in route.get("routes", []):
        matched = True
        for matcher in child.get("matchers", []):
            m = re.fullmatch(r'(\w+)(=~|=)"(.*)"', matcher)
            assert m, matcher
            name, op, value = m.groups()
            actual = labels.get(name, "")
            matched &= bool(re.fullmatch(value, actual)) if op == "=~" else actual == value
        if matched:
            inherited = {"group_by": route.get("group_by", []), **child}
            return _route_for(inherited, labels)
    return route


def test_alertmanager_groups_run_alerts_per_run_not_per_instance() -> None:
    """Replicas must not split a run's notification; the exporter's own process alerts
    are per instance."""
    config = load_yaml(DEPLOY / "alertmanager" / "alertmanager.yml")
    for rule in alert_rules():
        name = rule["alert"]
        group_by = _route_for(config["route"], {"alertname": name})["group_by"]
        assert "..." not in group_by, name
        if name in ("QianfanExporterDown", "QianfanExporterConfigReloadFailed"):
            assert "instance" in group_by, name
            continue
        assert "instance" not in group_by and "pod" not in group_by, name
        if "qianfan_finetune_run_" in rule["expr"]:
            assert {"alertname", "account", "job_id", "task_id"} <= set(group_by), name


def test_alertmanager_routes_a_teams_alerts_to_that_team() -> None:
    """Run and target alerts carry `team`: an owned one goes to its team's receiver, an
    unowned one (team="" is no label at all) to the default; both stay grouped per run
    or target."""
    config = load_yaml(DEPLOY / "alertmanager" / "alertmanager.yml")
    receivers = {r["name"] for r in config["receivers"]}
    owned = [r["alert"] for r in alert_rules()
             if re.search(r"qianfan_(finetune_run|target)_", r["expr"])]
    assert len(owned) >= 7
    for name in owned:
        for team, receiver in (("nlp", "team-nlp"), ("vision", "team-vision"),
                               ("", "qianfan"), ("someone-else", "qianfan")):
            labels = {"alertname": name, "team": team} if team else {"alertname": name}
            route = _route_for(config["route"], labels)
            assert route.get("receiver", config["route"]["receiver"]) == receiver, (name, team)
            assert receiver in receivers
            assert "instance" not in route["group_by"], name
            assert {"alertname", "account"} <= set(route["group_by"]), name
