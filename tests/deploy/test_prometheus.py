"""The Prometheus scrape configs (the shipped one and the compose one): promtool
accepts them and they agree."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.deploy.files import (
    ALERTS,
    COMPOSE_PROMETHEUS_CONFIG,
    PROMETHEUS_CONFIG,
    compose,
    load_yaml,
    run,
)
from tests.helpers import require_tool


def test_promtool_check_config() -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_compose_config(tmp_path: Path) -> None:
    """The compose Prometheus config, with alerts.yml beside it as in the container."""
    promtool = require_tool("promtool")
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
