"""The Grafana dashboards: importable, their variables, panels, units and colours,
the metrics they read, and every panel query valid PromQL once its variables are
substituted."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard_queries import panel_queries, substitute
from tests.deploy.files import (
    DASHBOARDS,
    all_panels,
    known,
    load_dashboard,
    metric_names,
    promtool_parses,
    query_panels,
    variable_query_selectors,
)
from tests.helpers import REPO

STATUS_COLORS = {"failed": "red", "stopped": "orange", "running": "blue", "succeeded": "green"}


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
    expected = {"account": "account", "team": "team", "job": "job_id", "run": "task_id"}
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
            for var in ("account", "team", "job", "run"):
                for match in re.finditer(rf"(\w+)\s*(=~|!~|=|!=)\s*\"\$\{{?{var}\b", expr):
                    assert match.group(2) == "=~", (panel["title"], expr)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_metric_names_are_known(path: Path, known_metrics: set[str]) -> None:
    dashboard = load_dashboard(path)
    exprs = [t["expr"] for p in query_panels(dashboard) for t in p["targets"] if t.get("expr")]
    exprs += variable_query_selectors(dashboard)
    for expr in exprs:
        unknown = {n for n in metric_names(expr) if not known(n, known_metrics)}
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


def _status_colors(panel: dict[str, Any]) -> dict[str, str | None]:
    """status -> color, from value mappings or per-series color overrides."""
    colors: dict[str, str | None] = {}
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


def _links(panel: dict[str, Any], field: str) -> list[dict[str, Any]]:
    return [
        link
        for override in panel["fieldConfig"].get("overrides", [])
        if override["matcher"]["options"] == field
        for prop in override["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]


def test_run_detail_links_the_run_in_the_qianfan_console() -> None:
    """The run table shows the run's console_url (from its info series) as a link, beside
    the VisualDL link and the owning team."""
    dashboard = load_dashboard(REPO / "grafana" / "qianfan-run-detail.json")
    (table,) = [p for p in query_panels(dashboard) if _links(p, "console_url")]
    assert _links(table, "console_url")[0]["url"] == "${__value.raw}"
    assert _links(table, "vdl_link")
    (target,) = table["targets"]
    grouping = target["expr"].split(")", 1)[0]
    assert "console_url" in grouping and "team" in grouping


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_run_and_target_panels_follow_the_team_variable(path: Path) -> None:
    """Run series have no team label: each is kept only where its run's info series has
    the chosen team. Target health series carry team themselves."""
    owned = 'and on (account, api, job_id, task_id) qianfan_finetune_run_info{team=~"$team"}'
    dashboard = load_dashboard(path)
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            for m in re.finditer(r"(qianfan_(?:finetune_run|target)_\w+)\{([^}]*\$account[^}]*)\}"
                                 r"(\s*and on \(account, api, job_id, task_id\) "
                                 r"qianfan_finetune_run_info\{team=~\"\$team\"\})?",
                                 target["expr"]):
                name, matchers, joined = m.groups()
                if name == "qianfan_finetune_run_info" or name.startswith("qianfan_target_"):
                    assert 'team=~"$team"' in matchers, (panel["title"], name)
                else:
                    assert joined, (panel["title"], name)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("job", "run"):
        assert 'team=~"$team"' in variables[name]["query"]["query"], name
    assert owned in path.read_text(encoding="utf-8").replace('\\"', '"')


def test_dashboard_links_point_at_shipped_dashboards() -> None:
    uids = {load_dashboard(p)["uid"] for p in DASHBOARDS}
    for path in DASHBOARDS:
        for uid in re.findall(r"/d/([\w-]+)", path.read_text(encoding="utf-8")):
            assert uid in uids, f"{path.name} links to unknown dashboard {uid}"


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
    values = {"account": ".*", "team": ".*", "job": ".*", "run": ".*", "scrape_job": ".*",
              "instance": ".*"}
    exprs += [substitute(s, values) for s in variable_query_selectors(dashboard)]
    promtool_parses(exprs, tmp_path)
