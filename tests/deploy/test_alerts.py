"""The alert rules: promtool accepts them and their unit tests, each alert has its
labels, annotations, firing and silent tests, known metrics, an absolute runbook link
and a runbook in docs/alerts.md; run and target alerts carry the owning team."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from tests.checks import assert_runbook, runbook_url
from tests.deploy.files import (
    ALERTS,
    ALERTS_TEST,
    KUBERNETES,
    RUNBOOK_BASE,
    alert_rules,
    known,
    load_yaml,
    metric_names,
    run,
)
from tests.docs.markdown import sections
from tests.helpers import REPO, require_tool


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "test", "rules", str(ALERTS_TEST)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_description_and_for() -> None:
    rules = alert_rules()
    assert len(rules) >= 8
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name
        assert "for" in rule, f"{name}: state the `for:` explicitly"


def test_required_alerts_exist() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert {
        "QianfanRunFailed",
        "QianfanRunStopped",
        "QianfanRunProgressStalled",
        "QianfanExporterDown",
        "QianfanExporterDataStale",
        "QianfanRateLimited",
        "QianfanPollBehind",
        "QianfanAuthFailing",
        "QianfanTargetDown",
    } <= names


def test_run_alerts_name_the_job_and_run() -> None:
    # The names come from one info series per run (`topk by`), so that replicas, which
    # export it once each and may briefly disagree on its other labels (upstream_status),
    # never make the join fail.
    join = re.compile(
        r"\*\s*on\(account, api, job_id, task_id\)\s*group_left\(job_name, task_name, team\)"
        r"\s*topk by \(account, api, job_id, task_id\) \(1,\s*qianfan_finetune_run_info\)"
    )
    for rule in alert_rules():
        if "qianfan_finetune_run_" not in rule["expr"]:
            continue
        assert join.search(rule["expr"]), rule["alert"]
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        assert "$labels.job_name" in text and "$labels.task_id" in text, rule["alert"]


def test_run_and_target_alerts_carry_the_team_and_run_alerts_link_the_console() -> None:
    """docs/alerts.md, "Routing by team": every run and target alert has the owner's `team`
    label, for routing; a run alert's console_url annotation is its info series'
    console_url label."""
    console = re.compile(
        r"query \(printf \"topk\(1, qianfan_finetune_run_info\{account=%q,api=%q,job_id=%q,"
        r"task_id=%q\}\)\" \$labels\.account \$labels\.api \$labels\.job_id \$labels\.task_id\)"
        r".*label \"console_url\""
    )
    run_alerts = target_alerts = 0
    for rule in alert_rules():
        expr, name = rule["expr"], rule["alert"]
        if "qianfan_finetune_run_" in expr:
            run_alerts += 1
            assert "group_left(job_name, task_name, team)" in expr, name
            assert console.search(rule["annotations"]["console_url"]), name
        elif "qianfan_target_" in expr:
            target_alerts += 1
            assert "by (account, api, target, team)" in expr, name
    assert run_alerts >= 6 and target_alerts >= 1


def test_alert_metric_names_are_known(known_metrics: set[str]) -> None:
    for rule in alert_rules():
        exprs = [rule["expr"]]
        # Queries inside annotation templates, e.g. {{ query "..." }}.
        for annotation in rule["annotations"].values():
            exprs += re.findall(r'"([^"]*qianfan_\w+[^"]*)"', annotation)
        for expr in exprs:
            unknown = {n for n in metric_names(expr) if not known(n, known_metrics)}
            assert not unknown, f"{rule['alert']}: unknown metric(s) {unknown}"


def test_every_alert_has_firing_and_silent_unit_tests() -> None:
    tests = load_yaml(ALERTS_TEST)
    assert tests["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested staying silent"
    assert (firing | silent) <= names, "tests name alerts that do not exist"


def test_failed_run_alert_clears_after_its_window() -> None:
    """A unit test evaluates QianfanRunFailed firing and, later, silent for one run."""
    tests = load_yaml(ALERTS_TEST)

    def minutes(value: str) -> int:
        match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?", value)
        assert match
        return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)

    for case in tests["tests"]:
        checks = [
            c for c in case.get("alert_rule_test", []) if c["alertname"] == "QianfanRunFailed"
        ]
        fired = [minutes(c["eval_time"]) for c in checks if c.get("exp_alerts")]
        quiet = [minutes(c["eval_time"]) for c in checks if not c.get("exp_alerts")]
        if fired and any(q > max(fired) for q in quiet):
            return
    pytest.fail("no test shows QianfanRunFailed clearing after it fired")


def test_every_runbook_url_is_absolute_under_one_base() -> None:
    """A notification (Slack, e-mail, pager) can only open an absolute link. The base is
    this release's runbook page, one literal in alerts.yml that a user (or a chart)
    replaces; the anchor is the alert's name."""
    text = ALERTS.read_text(encoding="utf-8")
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["annotations"]["runbook_url"] == runbook_url(name), name
    # Outside comments, the base appears only in runbook links: replacing it changes
    # nothing else.
    uses = [line.strip() for line in text.splitlines()
            if RUNBOOK_BASE in line and not line.lstrip().startswith("#")]
    assert len(uses) == len(alert_rules())
    assert all(line.startswith(f"runbook_url: '{RUNBOOK_BASE}#") for line in uses), uses
    assert "README.md#" not in text


def test_the_rule_generator_puts_the_runbooks_elsewhere() -> None:
    mine = "https://wiki.example.com/qf-exporter/alerts"
    result = subprocess.run(
        [sys.executable, str(KUBERNETES / "make-prometheusrule.py"), f"--runbook-base={mine}",
         "--output=-"], capture_output=True, text=True, timeout=60, check=True,
    )
    groups = yaml.safe_load(result.stdout)["spec"]["groups"]
    rules = [r for g in groups for r in g["rules"] if "alert" in r]
    assert {r["annotations"]["runbook_url"] for r in rules} == {
        f"{mine}#{r['alert'].lower()}" for r in alert_rules()
    }
    assert RUNBOOK_BASE not in result.stdout


def test_every_alert_has_a_runbook_in_the_docs() -> None:
    """Each alert has its own section under "Runbooks" in docs/alerts.md, which says what
    the alert means and what to do; the anchor of its runbook_url is that section's, and
    the runbook base is that page of the release."""
    assert RUNBOOK_BASE.endswith("/docs/alerts.md")
    assert "runbooks" in sections((REPO / "docs" / "alerts.md").read_text(encoding="utf-8"))
    for rule in alert_rules():
        assert_runbook(rule["alert"], rule["annotations"]["runbook_url"])
