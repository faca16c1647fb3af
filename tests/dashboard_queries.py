"""Extract the PromQL queries of the shipped Grafana dashboards, ready to run.

``panel_queries(path, variables)`` returns ``(panel title, expr)`` for every query target
of every panel (rows included, collapsed or not), with Grafana's template variables
replaced so that each expr is plain PromQL that Prometheus can evaluate.

Replaced forms: ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]``. Values come
from, in this order:
  1. ``variables`` (e.g. ``{"account": "default", "run": "task-abc"}``; values are used
     as given: they land inside ``=~"..."`` matchers, so a value is a regular expression);
  2. Grafana's built-in interval and range variables (``$__range``, ``$__rate_interval``,
     ``$__interval`` and their ``_s`` / ``_ms`` forms), with the defaults below;
  3. the dashboard's own template variables: ``allValue`` when the variable has
     ``includeAll`` (the dashboards use ``.*``), else its current value.
A variable that none of these know raises ``KeyError``, so a typo in a dashboard cannot
silently produce a query that still contains ``$``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# Defaults for Grafana's built-in variables. $__rate_interval is at least four scrape
# intervals (30s here); $__range is the dashboard's time range.
BUILTIN_DEFAULTS: dict[str, str] = {
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__rate_interval": "2m",
    "__rate_interval_ms": "120000",
    "__interval": "1m",
    "__interval_ms": "60000",
}

# ${name}, ${name:format}, [[name]], [[name:format]], $name (longest forms first).
_VAR_RE = re.compile(
    r"\$\{(?P<braced>\w+)(?::[^}]*)?\}"
    r"|\[\[(?P<bracketed>\w+)(?::[^\]]*)?\]\]"
    r"|\$(?P<plain>\w+)"
)


def iter_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in panels:
        out.append(panel)
        # Rows keep their children in "panels" when collapsed.
        out.extend(iter_panels(panel.get("panels") or []))
    return out


def _dashboard_defaults(dashboard: dict[str, Any]) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        name = var.get("name")
        if not name:
            continue
        if var.get("includeAll") and var.get("allValue"):
            defaults[name] = str(var["allValue"])
            continue
        value = (var.get("current") or {}).get("value")
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, str) and value and "$" not in value:
            defaults[name] = value
        elif var.get("type") == "datasource":
            defaults[name] = "prometheus"
    return defaults


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace every template variable of ``expr`` with ``values[name]``."""

    def repl(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bracketed") or match.group("plain")
        if name not in values:
            raise KeyError(f"unknown template variable {name!r} in query: {expr}")
        return values[name]

    return _VAR_RE.sub(repl, expr)


def panel_queries(dashboard_path: str | Path, variables: dict[str, str]) -> list[tuple[str, str]]:
    """(panel title, PromQL expr with template variables substituted) for every target."""
    dashboard = json.loads(Path(dashboard_path).read_text(encoding="utf-8"))
    values = {**_dashboard_defaults(dashboard), **BUILTIN_DEFAULTS, **variables}
    queries: list[tuple[str, str]] = []
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if not expr or target.get("hide"):
                continue
            queries.append((str(panel.get("title", "")), substitute(expr, values)))
    return queries
