"""Checks of what ships beside the code: Grafana dashboards, alert rules and their unit
tests, the Prometheus scrape config, Dockerfile, docker-compose, Kubernetes manifests and
the systemd unit.

Tests that need promtool fail (not skip) when CI=true and it is missing
(`apt-get install -y prometheus` provides it); elsewhere they are skipped.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboard_queries import iter_panels, panel_queries, substitute

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
DASHBOARDS = sorted((REPO / "grafana").glob("*.json"))
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_PROMETHEUS_CONFIG = DEPLOY / "docker-compose" / "prometheus.yml"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD_UNIT = DEPLOY / "systemd" / "qf-exporter.service"
DOCKERFILE = DEPLOY / "Dockerfile"

def _exported_metric_names() -> set[str]:
    """Every metric name the exporter can expose, read off a real exposition."""
    from qf_exporter.app import Exporter
    from qf_exporter.config import Account, Config, Secret

    exporter = Exporter(
        Config(accounts=(Account(name="x", access_key=Secret("a"), secret_key=Secret("b"),
                                 jobs=("job-x",)),)),
        process_metrics=False,
    )
    exporter.metrics.requests.labels("x", "a").inc()
    exporter.metrics.failures.labels("x", "a", "auth").inc()
    exporter.metrics.runs_left_out.labels("x", "max_runs").inc()
    names = set()
    for line in exporter.exposition().decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name if kind != "counter" or name.endswith("_total") else name + "_total")
    exporter.stop()
    return names


# Every metric the exporter exposes (SPEC section 4 and the exporter's own), plus `up`,
# plus the per-target last-success time SPEC section 4 defines (a rule annotation reads it;
# it is exposed once the target-grain health change is in).
KNOWN_METRICS = _exported_metric_names() | {
    "up",
    "qianfan_target_last_success_timestamp_seconds",
}
HISTOGRAMS = {"qianfan_api_request_duration_seconds"}
RUN_LABELS = ("account", "api", "job_id", "task_id")
STATUS_COLORS = {"failed": "red", "stopped": "orange", "running": "blue", "succeeded": "green"}


# --------------------------------------------------------------------------- helpers


def need_tool(name: str) -> str:
    """Path of a required external tool: fail under CI=true, skip elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found (apt-get install -y prometheus)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def run(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


all_panels = iter_panels  # every panel, rows' children included


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Panels that show data (rows and text panels only lay out the page)."""
    return [p for p in all_panels(dashboard["panels"]) if p.get("type") not in ("row", "text")]


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(ALERTS)["groups"] for r in g["rules"] if "alert" in r]


_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads: every qianfan_* identifier, and any other
    identifier directly followed by a label matcher or a range/offset."""
    bare = _STRING_RE.sub('""', expr)
    names = set(re.findall(r"\bqianfan_[a-zA-Z0-9_]*", bare))
    for match in _NAME_RE.finditer(bare):
        if bare[match.end() :].lstrip().startswith("{"):
            names.add(match.group())
    return names


def known(name: str) -> bool:
    if name in KNOWN_METRICS:
        return True
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return True
    return False


def variable_query_selectors(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL part of label_values(SELECTOR, label) variable queries."""
    out = []
    for var in dashboard["templating"]["list"]:
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query, re.S)
        assert match, f"variable {var['name']}: expected label_values(selector, label)"
        out.append(match.group(1))
    return out


def promtool_parses(exprs: list[str], tmp_path: Path) -> None:
    """Let promtool parse every expression (as recording rules; it has no parse-only
    command for expressions)."""
    promtool = need_tool("promtool")
    rules = {
        "groups": [
            {
                "name": "parse-check",
                "rules": [
                    {"record": f"parse_check_{i}", "expr": expr} for i, expr in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "parse-check.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of a compose service's short-syntax bind mounts."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


# ------------------------------------------------------------------------ dashboards


def test_there_are_two_dashboards() -> None:
    names = {p.name for p in DASHBOARDS}
    assert {"qianfan-fleet-overview.json", "qianfan-run-detail.json"} <= names


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_importable(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard.get("id") is None, "an exported dashboard carries no database id"
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_variables(path: Path) -> None:
    variables = {v["name"]: v for v in load_dashboard(path)["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource"
    # "prometheus" is the plugin type: it resolves to whatever Prometheus data source
    # exists, with file provisioning too (where __inputs are not replaced).
    assert datasource["query"] == "prometheus"
    expected = {"account": "account", "job": "job_id", "run": "task_id"}
    for name, label in expected.items():
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"]["uid"] == "${datasource}"
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert query.startswith("label_values(") and query.rstrip().endswith(f"{label})")
        assert var["includeAll"] is True and var["allValue"] == ".*"
        assert var["multi"] is True


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_queries_the_datasource_variable(path: Path) -> None:
    dashboard = load_dashboard(path)
    panels = query_panels(dashboard)
    assert len(panels) >= 8
    ids = [p["id"] for p in all_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        targets = [t for t in panel.get("targets", []) if t.get("expr")]
        assert targets, f"panel {title!r} has no query"
        for target in targets:
            assert target["datasource"]["uid"] == "${datasource}", title
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, title


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_run_queries_use_multi_value_matchers(path: Path) -> None:
    """Run series are filtered with regex matchers, so "All" and multi-select work."""
    for panel in query_panels(load_dashboard(path)):
        for target in panel["targets"]:
            expr = target["expr"]
            for var in ("account", "job", "run"):
                for match in re.finditer(rf"(\w+)\s*(=~|!~|=|!=)\s*\"\$\{{?{var}\b", expr):
                    assert match.group(2) == "=~", (panel["title"], expr)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_metric_names_are_known(path: Path) -> None:
    dashboard = load_dashboard(path)
    exprs = [t["expr"] for p in query_panels(dashboard) for t in p["targets"] if t.get("expr")]
    exprs += variable_query_selectors(dashboard)
    for expr in exprs:
        unknown = {n for n in metric_names(expr) if not known(n)}
        assert not unknown, f"unknown metric(s) {unknown} in {expr}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_units(path: Path) -> None:
    """Ratios as percent, timestamps as dates (in ms), durations and ages in seconds."""
    for panel in query_panels(load_dashboard(path)):
        title = panel["title"]
        exprs = " ".join(t["expr"] for t in panel["targets"])
        units = {panel["fieldConfig"]["defaults"].get("unit")} | {
            prop["value"]
            for override in panel["fieldConfig"].get("overrides", [])
            for prop in override["properties"]
            if prop["id"] == "unit"
        }
        if "deriv(" in exprs:  # estimated finish / time left
            assert units & {"dateTimeAsIso", "dtdurations", "s"}, title
        elif "_ratio" in exprs:
            assert "percentunit" in units, title
        if "_timestamp_seconds" in exprs and ("time() -" in exprs or "- time()" in exprs):
            assert units & {"s", "dtdurations"}, title
        elif "_timestamp_seconds" in exprs:
            assert "dateTimeAsIso" in units, title
            assert "* 1000" in exprs, f"{title}: Grafana date units expect milliseconds"
        elif "duration_seconds" in exprs:
            assert units & {"s", "dtdurations"}, title


def _status_colors(panel: dict[str, Any]) -> dict[str, str]:
    """status -> color, from value mappings or per-series color overrides."""
    colors: dict[str, str] = {}
    config = panel["fieldConfig"]
    mappings = list(config["defaults"].get("mappings", []))
    for override in config.get("overrides", []):
        for prop in override["properties"]:
            if prop["id"] == "mappings":
                mappings += prop["value"]
            if prop["id"] == "color" and override["matcher"]["id"] == "byName":
                colors[override["matcher"]["options"]] = prop["value"].get("fixedColor")
    for mapping in mappings:
        for option in mapping.get("options", {}).values():
            if isinstance(option, dict) and "text" in option:
                colors[option["text"]] = option.get("color")
    return colors


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_status_colors(path: Path) -> None:
    """Panels that show run status color it: failed red, stopped orange, ..."""
    colored = 0
    for panel in query_panels(load_dashboard(path)):
        colors = _status_colors(panel)
        shown = set(colors) & set(STATUS_COLORS)
        if not shown:
            continue
        colored += 1
        for status in shown:
            assert colors[status] == STATUS_COLORS[status], (panel["title"], status)
        assert colors.get("waiting", "grey") not in STATUS_COLORS.values(), panel["title"]
    assert colored >= 2


def test_fleet_overview_content() -> None:
    dashboard = load_dashboard(REPO / "grafana" / "qianfan-fleet-overview.json")
    text = json.dumps(dashboard)
    titles = {p["title"] for p in query_panels(dashboard)}
    assert {"Runs by status", "Runs by status over time", "Failed and stopped runs"} <= titles
    for needle in (
        "qianfan_finetune_run_error_info",
        "qianfan_finetune_run_progress_ratio",
        "qianfan_finetune_run_evaluation_ratio",
        "qianfan_last_successful_poll_timestamp_seconds",
        "qianfan_api_request_failures_total",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "qianfan_api_request_duration_seconds_bucket",
        "qianfan_up",
    ):
        assert needle in text, needle


def test_run_detail_content() -> None:
    dashboard = load_dashboard(REPO / "grafana" / "qianfan-run-detail.json")
    panels = query_panels(dashboard)
    types = {p["type"] for p in panels}
    assert "state-timeline" in types
    text = json.dumps(dashboard)
    for needle in (
        "qianfan_finetune_run_estimated_finish_timestamp_seconds",
        "qianfan_finetune_run_training_loss_min",
        "qianfan_finetune_run_loss_not_finite",
        "qianfan_finetune_run_training_loss",
        "qianfan_finetune_run_perplexity",
        "qianfan_finetune_run_duration_seconds",
        "qianfan_finetune_run_train_duration_seconds",
        "qianfan_finetune_run_evaluation_ratio",
    ):
        assert needle in text, needle
    # The run table links each run to its VisualDL page.
    links = [
        link
        for p in panels
        for override in p["fieldConfig"].get("overrides", [])
        if override["matcher"]["options"] == "vdl_link"
        for prop in override["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert links and links[0]["url"] == "${__value.raw}"
    assert any("vdl_link" in t["expr"] for p in panels for t in p["targets"])


def test_dashboard_links_point_at_shipped_dashboards() -> None:
    uids = {load_dashboard(p)["uid"] for p in DASHBOARDS}
    for path in DASHBOARDS:
        for uid in re.findall(r"/d/([\w-]+)", path.read_text(encoding="utf-8")):
            assert uid in uids, f"{path.name} links to unknown dashboard {uid}"


# ----------------------------------------------------- scrape job name and replicas

# A matcher on Prometheus' `job` label with a literal value (a dashboard variable is fine).
_LITERAL_JOB_MATCHER = re.compile(r'(?<![\w.])job\s*(?:=~|!~|=|!=)\s*["\'](?!\$)')
# The `up` metric, read bare or with matchers (not inside a longer identifier).
_UP = re.compile(r"(?<![\w:\.])up(?![\w:])")


def every_query() -> list[tuple[str, str]]:
    """(where, PromQL) for every rule expression, every query in a rule annotation, and
    every panel and variable query of every dashboard."""
    out = []
    for rule in alert_rules():
        out.append((rule["alert"], rule["expr"]))
        for annotation in rule["annotations"].values():
            queries = re.findall(r'"([^"]*qianfan_\w+[^"]*)"', annotation)
            out += [(rule["alert"], q) for q in queries]
    for path in DASHBOARDS:
        dashboard = load_dashboard(path)
        for panel in query_panels(dashboard):
            out += [(f"{path.name}: {panel['title']}", t["expr"]) for t in panel["targets"]]
        out += [(f"{path.name}: variable", s) for s in variable_query_selectors(dashboard)]
    return out


def test_no_rule_or_panel_names_the_scrape_job() -> None:
    """The scrape job may be called anything (a ServiceMonitor makes up its own name)."""
    queries = every_query()
    assert len(queries) > 40
    for where, expr in queries:
        assert not _LITERAL_JOB_MATCHER.search(expr), (where, expr)
        assert "qf-exporter" not in expr, (where, expr)
    assert _LITERAL_JOB_MATCHER.search('up{job="qf-exporter"}')  # the pattern works
    assert not _LITERAL_JOB_MATCHER.search('up{job=~"$scrape_job"}')


def test_up_is_read_only_for_the_exporters_own_targets() -> None:
    """`up` covers every target of a Prometheus: each use is joined on (job, instance)
    with a series only qf-exporter exposes, kept with last_over_time so a dead target
    (whose build_info stopped) still matches."""
    uses = 0
    for where, expr in every_query():
        bare = _STRING_RE.sub('""', expr)
        if not _UP.search(bare):
            continue
        uses += 1
        assert re.search(
            r"and on\(job, instance\)\s*last_over_time\(qianfan_exporter_build_info[{\[]", bare
        ), (where, expr)
    assert uses >= 2  # QianfanExporterDown and the "Exporter scraped" panel


def test_fleet_dashboard_selects_exporters_by_their_own_series() -> None:
    dashboard = load_dashboard(REPO / "grafana" / "qianfan-fleet-overview.json")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name, label in (("scrape_job", "job"), ("instance", "instance")):
        var = variables[name]
        query = var["query"]["query"]
        assert query.startswith("label_values(qianfan_exporter_build_info"), name
        assert query.endswith(f", {label})"), name
        assert var["includeAll"] is True and var["allValue"] == ".*" and var["multi"] is True
    (scraped,) = [p for p in query_panels(dashboard) if p["title"] == "Exporter scraped"]
    assert 'up{job=~"$scrape_job", instance=~"$instance"}' in scraped["targets"][0]["expr"]


def test_run_panels_merge_replicas() -> None:
    """Two replicas export every run twice: panels that count or join runs reduce each
    run series to one per run first (max by the run's labels), or they would count each
    run twice and their joins would fail with "many-to-many matching"."""
    for path in DASHBOARDS:
        for panel in query_panels(load_dashboard(path)):
            for target in panel["targets"]:
                expr = target["expr"]
                if re.match(r"\s*(sum|count)\b", expr) and "qianfan_finetune_run_" in expr:
                    assert "max by (account, api, job_id, task_id" in expr, panel["title"]
                for match in re.finditer(r"group_left\s*\([^)]*\)\s*(\S+)", expr):
                    assert match.group(1) in ("max", "topk"), (panel["title"], expr)


# ------------------------------------------------------------------ dashboard queries


@pytest.mark.parametrize(
    "variables",
    [
        {},
        {"account": "default", "job": "job-abc", "run": "task-123"},
        {"account": "default|team-b", "job": ".*", "run": ".*", "datasource": "prometheus"},
    ],
    ids=["defaults", "one-run", "multi"],
)
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panel_queries_substitute_every_variable(path: Path, variables: dict[str, str]) -> None:
    queries = panel_queries(path, variables)
    expected = sum(
        1 for p in query_panels(load_dashboard(path)) for t in p["targets"] if t.get("expr")
    )
    assert len(queries) == expected
    for title, expr in queries:
        assert "$" not in expr and "[[" not in expr, (title, expr)
    for name, value in variables.items():
        if name != "datasource":
            assert any(f'"{value}"' in expr for _, expr in queries), name


def test_substitute_forms() -> None:
    values = {"a": "x", "ab": "y", "__range": "1h"}
    assert substitute("$a $ab ${a} ${ab:regex} [[a]] [$__range]", values) == "x y x y x [1h]"
    with pytest.raises(KeyError):
        substitute("$missing", values)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panel_queries_are_valid_promql(path: Path, tmp_path: Path) -> None:
    variables = {"account": "default", "job": "job-abc", "run": "task-123"}
    exprs = [expr for _, expr in panel_queries(path, variables)]
    dashboard = load_dashboard(path)
    values = {"account": ".*", "job": ".*", "run": ".*", "scrape_job": ".*", "instance": ".*"}
    exprs += [substitute(s, values) for s in variable_query_selectors(dashboard)]
    promtool_parses(exprs, tmp_path)


# ----------------------------------------------------------------------- alert rules


def test_promtool_check_rules() -> None:
    promtool = need_tool("promtool")
    result = run([promtool, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    promtool = need_tool("promtool")
    result = run([promtool, "test", "rules", str(ALERTS_TEST)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config() -> None:
    promtool = need_tool("promtool")
    result = run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_compose_config(tmp_path: Path) -> None:
    """The compose Prometheus config, with alerts.yml beside it as in the container."""
    promtool = need_tool("promtool")
    shutil.copy(COMPOSE_PROMETHEUS_CONFIG, tmp_path / "prometheus.yml")
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    result = run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == ["alerts.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "qf-exporter"
    assert job["scrape_interval"] == "30s"
    assert job["static_configs"] == [{"targets": ["localhost:9788"]}]
    # Tests rewrite the target textually: it must appear exactly once.
    assert PROMETHEUS_CONFIG.read_text(encoding="utf-8").count("localhost:9788") == 1


def test_compose_prometheus_config_matches_the_shipped_one() -> None:
    shipped = load_yaml(PROMETHEUS_CONFIG)
    composed = load_yaml(COMPOSE_PROMETHEUS_CONFIG)
    composed["scrape_configs"][0]["static_configs"] = shipped["scrape_configs"][0]["static_configs"]
    assert composed == shipped
    services = compose()["services"]
    host = load_yaml(COMPOSE_PROMETHEUS_CONFIG)["scrape_configs"][0]["static_configs"][0][
        "targets"
    ][0].split(":")[0]
    assert host in services


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
        "QianfanAuthFailing",
        "QianfanTargetDown",
    } <= names


def test_run_alerts_name_the_job_and_run() -> None:
    # The names come from one info series per run (`topk by`), so that replicas, which
    # export it once each and may briefly disagree on its other labels (upstream_status),
    # never make the join fail.
    join = re.compile(
        r"\*\s*on\(account, api, job_id, task_id\)\s*group_left\(job_name, task_name\)\s*"
        r"topk by \(account, api, job_id, task_id\) \(1,\s*qianfan_finetune_run_info\)"
    )
    for rule in alert_rules():
        if "qianfan_finetune_run_" not in rule["expr"]:
            continue
        assert join.search(rule["expr"]), rule["alert"]
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        assert "$labels.job_name" in text and "$labels.task_id" in text, rule["alert"]


def test_alert_metric_names_are_known() -> None:
    for rule in alert_rules():
        exprs = [rule["expr"]]
        # Queries inside annotation templates, e.g. {{ query "..." }}.
        for annotation in rule["annotations"].values():
            exprs += re.findall(r'"([^"]*qianfan_\w+[^"]*)"', annotation)
        for expr in exprs:
            unknown = {n for n in metric_names(expr) if not known(n)}
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


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def readme_sections() -> dict[str, tuple[str, str]]:
    """anchor -> (heading, text up to the next heading of any level)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    readme = re.sub(r"(?ms)^```.*?^```", "", readme)  # no headings inside code blocks
    parts = re.split(r"(?m)^(#{1,6} .*)$", readme)
    return {
        github_anchor(parts[i].lstrip("#")): (parts[i], parts[i + 1])
        for i in range(1, len(parts), 2)
    }


def test_every_alert_has_a_runbook_in_the_readme() -> None:
    """runbook_url: README.md#<anchor> (relative to the repository) of the alert's own
    section under "Runbooks", which says what the alert means and what to do."""
    sections = readme_sections()
    assert "runbooks" in sections
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    runbooks = readme[readme.index("\n### Runbooks\n") :]
    runbooks = runbooks[: runbooks.index("\n## ", 1)]
    for rule in alert_rules():
        name = rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url == f"README.md#{name.lower()}", name
        anchor = url.partition("#")[2]
        assert anchor in sections, f"{name}: no README heading for #{anchor}"
        heading, text = sections[anchor]
        assert heading == f"#### {name}" and f"\n{heading}\n" in runbooks, name
        assert len(text.split()) >= 40, f"{name}: the runbook says too little"
    assert github_anchor("Two identical replicas for availability") == (
        "two-identical-replicas-for-availability"
    )


# ------------------------------------------------------------ Kubernetes PrometheusRule


def test_prometheusrule_is_generated_from_alerts() -> None:
    script = KUBERNETES / "make-prometheusrule.py"
    result = run([sys.executable, str(script), "--check"])
    assert result.returncode == 0, result.stderr
    rule = load_yaml(KUBERNETES / "prometheusrule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == load_yaml(ALERTS)


def test_prometheusrule_regeneration_is_identical(tmp_path: Path) -> None:
    """Regenerating into a copy of the tree gives byte-identical output."""
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY / "prometheus", copy / "prometheus")
    shutil.copytree(KUBERNETES, copy / "kubernetes")
    (copy / "kubernetes" / "prometheusrule.yaml").unlink()
    result = run([sys.executable, str(copy / "kubernetes" / "make-prometheusrule.py")])
    assert result.returncode == 0, result.stderr
    assert (copy / "kubernetes" / "prometheusrule.yaml").read_bytes() == (
        KUBERNETES / "prometheusrule.yaml"
    ).read_bytes()


# ------------------------------------------------------------------- Kubernetes base


def test_kustomization_names_existing_files() -> None:
    kustomization = load_yaml(KUBERNETES / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).is_file(), resource
    for generator in kustomization.get("configMapGenerator", []):
        for entry in generator.get("files", []):
            assert (KUBERNETES / entry.split("=")[-1]).is_file(), entry
    # The example secret holds placeholders: applying it with the base would overwrite
    # the real keys.
    assert "secret.example.yaml" not in kustomization["resources"]
    kinds = {
        doc["kind"]
        for resource in kustomization["resources"]
        for doc in load_yaml_all(KUBERNETES / resource)
    }
    assert {"Deployment", "Service", "ServiceMonitor", "PrometheusRule"} <= kinds


def test_kubernetes_manifests_parse() -> None:
    for path in sorted(KUBERNETES.glob("*.yaml")):
        docs = load_yaml_all(path)
        assert docs, path.name
        for doc in docs:
            if path.name in ("kustomization.yaml", "config.yaml"):
                continue
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path.name


def _pod_spec(path: Path) -> dict[str, Any]:
    (doc,) = [d for d in load_yaml_all(path) if d["kind"] in ("Deployment", "StatefulSet")]
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def test_workloads_wire_config_secret_and_probes() -> None:
    secret = load_yaml(KUBERNETES / "secret.example.yaml")
    service = load_yaml(KUBERNETES / "service.yaml")
    monitor = load_yaml(KUBERNETES / "servicemonitor.yaml")
    generator = load_yaml(KUBERNETES / "kustomization.yaml")["configMapGenerator"][0]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    for name in ("deployment.yaml", "statefulset-sharded.yaml"):
        pod = _pod_spec(KUBERNETES / name)
        (container,) = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
        assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
        assert container["ports"][0]["containerPort"] == 9788
        refs = {
            e["valueFrom"]["secretKeyRef"]["key"]
            for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert refs == set(secret["stringData"]), name
        assert {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        } == {secret["metadata"]["name"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["config"]["configMap"]["name"] == generator["name"]
        assert "--config.file=/etc/qf-exporter/config.yaml" in container["args"]


def test_sharded_statefulset() -> None:
    pod = _pod_spec(KUBERNETES / "statefulset-sharded.yaml")
    (doc,) = [
        d
        for d in load_yaml_all(KUBERNETES / "statefulset-sharded.yaml")
        if d["kind"] == "StatefulSet"
    ]
    (container,) = pod["containers"]
    replicas = doc["spec"]["replicas"]
    assert replicas == 3
    assert "--shard=$(SHARD)" in container["args"]
    assert f"--total-shards={replicas}" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SHARD"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )


def test_kustomize_build() -> None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed (optional)")
    result = run([kubectl, "kustomize", str(KUBERNETES)])
    assert result.returncode == 0, result.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(kinds) == sorted(
        ["ConfigMap", "Service", "Deployment", "ServiceMonitor", "PrometheusRule"]
    )


# ------------------------------------------------------------- Docker and compose


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert all(f.startswith("python:3.11-slim") for f in froms)
    for word, rest in instructions:
        if word in ("COPY", "ADD") and "--from=" not in rest:
            *sources, _dest = shlex.split(rest)
            for source in sources:
                assert (REPO / source).exists(), f"COPY source {source} is missing"
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and not users[-1].startswith(("root", "0"))
    assert ("EXPOSE", "9788") in instructions
    (healthcheck,) = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert "/-/healthy" in healthcheck and "urllib" in healthcheck
    assert ("ENTRYPOINT", '["qf-exporter"]') in instructions


def package_version() -> str:
    version: str = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"
    ]["version"]
    return version


def dockerfile_labels() -> dict[str, str]:
    labels: dict[str, str] = {}
    for word, rest in dockerfile_instructions():
        if word == "LABEL":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                labels[key] = value
    return labels


# An image reference to the exporter with a tag (not "qf-exporter:9788", a host and port).
_IMAGE_TAG = re.compile(r"(?<![\w/.-])qf-exporter:(latest|\d+\.\d+[\w.+-]*)")


def test_images_are_tagged_with_the_package_version() -> None:
    """No `latest`: the deploy files and README name the image of this version, and a
    version bump in pyproject.toml fails here until they follow."""
    import qf_exporter

    version = package_version()
    assert qf_exporter.__version__ == version, "reinstall: the installed metadata is old"
    assert dockerfile_labels()["org.opencontainers.image.version"] == version
    assert compose()["services"]["qf-exporter"]["image"] == f"qf-exporter:{version}"
    (image,) = load_yaml(KUBERNETES / "kustomization.yaml")["images"]
    assert image["name"] == "qf-exporter" and image["newTag"] == version
    for name in ("deployment.yaml", "statefulset-sharded.yaml"):
        (container,) = _pod_spec(KUBERNETES / name)["containers"]
        assert container["image"] == f"qf-exporter:{version}", name
    files = [REPO / "README.md", *sorted(p for p in DEPLOY.rglob("*") if p.is_file())]
    tags = {}
    for path in files:
        for tag in _IMAGE_TAG.findall(path.read_text(encoding="utf-8", errors="replace")):
            tags.setdefault(tag, []).append(path.relative_to(REPO).as_posix())
    assert set(tags) == {version}, tags


def test_dockerfile_oci_labels() -> None:
    labels = dockerfile_labels()
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]["text"]
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.title"] == "qf-exporter"
    # The runtime stage carries them (labels of a build stage do not reach the image).
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert text.rindex("\nFROM ") < text.index("\nLABEL ")


def test_license_is_the_apache_2_text() -> None:
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    assert re.match(r"\s*Apache License\s+Version 2\.0, January 2004\s", text)
    sections = re.findall(r"(?m)^\s+(\d)\. (\w[\w ]*)\.", text)
    assert [n for n, _ in sections] == [str(i) for i in range(1, 10)], sections
    assert "END OF TERMS AND CONDITIONS" in text


def test_compose_publishes_on_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert compose()["services"]["grafana"]["ports"]
    assert compose()["services"]["prometheus"]["ports"]


def test_dockerignore_keeps_the_copied_files() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, rest in dockerfile_instructions():
        if word == "COPY" and "--from=" not in rest:
            *sources, _dest = shlex.split(rest)
            assert set(sources) <= kept, sources


def test_compose_services_and_paths() -> None:
    data = compose()
    services = data["services"]
    assert {"qf-exporter", "prometheus", "alertmanager", "grafana"} <= set(services)
    exporter = services["qf-exporter"]
    assert "--demo" in exporter["command"]
    build = exporter["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert exporter["image"] == f"qf-exporter:{package_version()}"
    for name, service in services.items():
        for source, _target in volume_mounts(service):
            assert (DEPLOY / source).exists(), f"{name}: volume source {source} is missing"
    prometheus_targets = {t: s for s, t in volume_mounts(services["prometheus"])}
    assert prometheus_targets["/etc/prometheus/prometheus.yml"] == (
        "./docker-compose/prometheus.yml"
    )
    assert prometheus_targets["/etc/prometheus/alerts.yml"] == "./prometheus/alerts.yml"
    alertmanager_targets = {t: s for s, t in volume_mounts(services["alertmanager"])}
    assert (DEPLOY / alertmanager_targets["/etc/alertmanager/alertmanager.yml"]).is_file()


def _container_path_to_repo(service: dict[str, Any], container_path: str) -> Path:
    """The repository path a compose bind mount shows at container_path."""
    for source, target in volume_mounts(service):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return (DEPLOY / source / os.path.relpath(container_path, target)).resolve()
    raise AssertionError(f"{container_path} is not mounted")


def test_grafana_provisioning() -> None:
    grafana = compose()["services"]["grafana"]
    provisioning = _container_path_to_repo(grafana, "/etc/grafana/provisioning")
    assert provisioning == (DEPLOY / "grafana" / "provisioning").resolve()
    (datasource,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["uid"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True
    providers = load_yaml(provisioning / "dashboards" / "qianfan.yml")["providers"]
    for provider in providers:
        folder = _container_path_to_repo(grafana, provider["options"]["path"])
        assert folder == (REPO / "grafana").resolve()
        assert sorted(folder.glob("*.json")) == DASHBOARDS
    home = grafana["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert _container_path_to_repo(grafana, home).is_file()


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


# ------------------------------------------------------------------------- systemd


def systemd_unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    # Directives may repeat (SystemCallFilter=): keep the last, enough for these checks.
    text = SYSTEMD_UNIT.read_text(encoding="utf-8").replace("\\\n", " ")
    parser.read_string(text)
    return parser


def test_systemd_unit_is_hardened() -> None:
    unit = systemd_unit()
    service = unit["Service"]
    assert service["ExecStart"].split()[0].endswith("/qf-exporter")
    assert "--config.file=" in service["ExecStart"]
    assert "HUP" in service["ExecReload"] and "$MAINPID" in service["ExecReload"]
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }
    for key, value in expected.items():
        assert service.get(key) == value, key
    assert service["LoadCredential"].startswith("qianfan_sk:/")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # The config must point secret_key_file at the credential: the comment says where.
    text = SYSTEMD_UNIT.read_text(encoding="utf-8")
    assert "/run/credentials/qf-exporter.service/qianfan_sk" in text


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze not installed (optional)")
    # ExecStart must exist for `verify`; point it at a binary that does.
    text = SYSTEMD_UNIT.read_text(encoding="utf-8").replace(
        "/opt/qf-exporter/bin/qf-exporter", sys.executable
    )
    unit = tmp_path / "qf-exporter.service"
    unit.write_text(text, encoding="utf-8")
    result = run([analyze, "verify", str(unit)])
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_files_named_in_instructions_exist() -> None:
    """Repository paths quoted in the install comments of the deploy files."""
    for path in (SYSTEMD_UNIT, DOCKERFILE, COMPOSE, KUBERNETES / "kustomization.yaml"):
        text = path.read_text(encoding="utf-8")
        for ref in re.findall(
            r"(?<![\w/.])((?:deploy|grafana|tests)/[\w./-]+\w|config\.example\.yaml)", text
        ):
            if re.search(rf"image:\s*{re.escape(ref)}", text):
                continue  # a container image name, not a path
            assert (REPO / ref).exists(), f"{path.name} names missing {ref}"


# --------------------------------------------------- consistency with the exporter


def _exporter_help() -> str:
    result = run([sys.executable, "-m", "qf_exporter", "--help"])
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_flags_used_by_deploy_files_exist() -> None:
    flags: set[str] = set()
    compose_text = COMPOSE.read_text(encoding="utf-8")
    # Only the exporter's service (the others are Prometheus, Alertmanager, Grafana).
    exporter_block = compose_text[
        compose_text.index("\n  qf-exporter:") : compose_text.index("\n  prometheus:")
    ]
    texts = [
        exporter_block,
        (KUBERNETES / "deployment.yaml").read_text(encoding="utf-8"),
        (KUBERNETES / "statefulset-sharded.yaml").read_text(encoding="utf-8"),
        SYSTEMD_UNIT.read_text(encoding="utf-8"),
        DOCKERFILE.read_text(encoding="utf-8"),
    ]
    for text in texts:
        flags |= set(re.findall(r"(?<![\w-])(--(?:config|web|log|demo|shard|total)[\w.-]*)", text))
    help_text = _exporter_help()
    for flag in flags:
        assert flag in help_text, f"{flag} is not a qf-exporter flag"


def test_kubernetes_config_is_valid() -> None:
    env = {**os.environ, "QIANFAN_ACCESS_KEY": "AKexample", "QIANFAN_SECRET_KEY": "SKexample"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "qf_exporter",
            f"--config.file={KUBERNETES / 'config.yaml'}",
            "--config.check",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
