"""docker-compose: its services, their mounts, loopback-only ports and Grafana's
provisioning."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.deploy.files import (
    DASHBOARDS,
    DEPLOY,
    DOCKERFILE,
    compose,
    load_yaml,
    package_version,
    volume_mounts,
)
from tests.helpers import REPO


def test_compose_publishes_on_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert compose()["services"]["grafana"]["ports"]
    assert compose()["services"]["prometheus"]["ports"]


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
