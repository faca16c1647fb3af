"""The files that ship beside the code, and small readers for them shared by the deploy
tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from tests.dashboard_queries import iter_panels
from tests.helpers import REPO, require_tool

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
# Histograms among the exported metrics (their _bucket/_count/_sum series are known too).
HISTOGRAMS = {"qianfan_api_request_duration_seconds"}


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


# A PromQL string literal, and an identifier.
STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads: every qianfan_* identifier, and any other
    identifier directly followed by a label matcher or a range/offset."""
    bare = STRING_RE.sub('""', expr)
    names = set(re.findall(r"\bqianfan_[a-zA-Z0-9_]*", bare))
    for match in NAME_RE.finditer(bare):
        if bare[match.end() :].lstrip().startswith("{"):
            names.add(match.group())
    return names


def known(name: str, metrics: set[str]) -> bool:
    """Whether ``name`` is one of ``metrics`` (the exporter's, see the known_metrics fixture)."""
    if name in metrics:
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
    promtool = require_tool("promtool")
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


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def package_version() -> str:
    version: str = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"
    ]["version"]
    return version


# Where every alert's runbook_url points: this release's runbook page (one literal in
# alerts.yml that users replace), then "#" and the alert's name in lower case.
RUNBOOK_BASE = (
    f"https://github.com/qf-exporter/qf-exporter/blob/v{package_version()}/docs/alerts.md"
)


def dockerfile_labels() -> dict[str, str]:
    labels: dict[str, str] = {}
    for word, rest in dockerfile_instructions():
        if word == "LABEL":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                labels[key] = value
    return labels


def pod_spec(path: Path) -> dict[str, Any]:
    (doc,) = [d for d in load_yaml_all(path) if d["kind"] in ("Deployment", "StatefulSet")]
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec
