"""Any scrape job name, any number of replicas: no rule or panel names the job, `up`
is read only for the exporter's own targets, and run panels merge replicas."""

from __future__ import annotations

import re

from tests.deploy.files import (
    DASHBOARDS,
    STRING_RE,
    alert_rules,
    load_dashboard,
    query_panels,
    variable_query_selectors,
)
from tests.helpers import REPO

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
        bare = STRING_RE.sub('""', expr)
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
