"""The Kubernetes manifests: the PrometheusRule generated from alerts.yml, the
kustomization, the workloads' wiring, the sharded StatefulSet and the config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.files import (
    ALERTS,
    DEPLOY,
    KUBERNETES,
    load_yaml,
    load_yaml_all,
    pod_spec,
    run,
)
from tests.helpers import REPO


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
        pod = pod_spec(KUBERNETES / name)
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
    pod = pod_spec(KUBERNETES / "statefulset-sharded.yaml")
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
