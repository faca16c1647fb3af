"""The Helm chart (deploy/helm/qf-exporter), linted and rendered by a real helm: what it
makes is valid Kubernetes and prometheus-operator, wired as the exporter needs, and its
rules and dashboards are the shipped files."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from qf_exporter.cli import build_parser
from tests.deploy.files import ALERTS, DASHBOARDS, load_yaml, package_version
from tests.deploy.helm_chart import (
    CHART,
    CI_VALUES,
    container,
    crd_problems,
    kubernetes_problems,
    newest_kube_version,
    oldest_kube_version,
    one,
    render,
    render_error,
    render_notes,
    run_helm,
)
from tests.helpers import REPO

CREDENTIALS = {"QIANFAN_ACCESS_KEY": "AKexample", "QIANFAN_SECRET_KEY": "SKexample"}


def test_chart_version_is_the_package_version() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["version"] == chart["appVersion"] == package_version()


def test_ci_values_cover_the_cases() -> None:
    assert set(CI_VALUES) == {"default", "existing-secret", "sharded", "everything-on"}


@pytest.mark.parametrize("name", sorted(CI_VALUES))
def test_lint_strict(name: str) -> None:
    result = run_helm("lint", "--strict", str(CHART), "-f", str(CI_VALUES[name]))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("version", [oldest_kube_version(), newest_kube_version()])
@pytest.mark.parametrize("name", sorted(CI_VALUES))
def test_objects_are_valid_kubernetes(name: str, version: str) -> None:
    objects = render(name, kube_version=version)
    assert kubernetes_problems(objects, version) == []


def test_validation_finds_a_bad_object() -> None:
    (deployment,) = [o for o in render() if o["kind"] == "Deployment"]
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    assert kubernetes_problems([broken], newest_kube_version())
    unknown = {**deployment, "spec": {**deployment["spec"], "replica": 1}}
    assert "'replica' was unexpected" in kubernetes_problems([unknown], oldest_kube_version())[0]
    monitor = one(render("sharded"), "ServiceMonitor")
    endpoint = {**monitor["spec"]["endpoints"][0], "interval": "30 seconds"}
    assert crd_problems([{**monitor, "spec": {**monitor["spec"], "endpoints": [endpoint]}}])
    typo = {**monitor["spec"]["endpoints"][0], "scrapeTimout": "10s"}
    assert crd_problems([{**monitor, "spec": {**monitor["spec"], "endpoints": [typo]}}]) == [
        "ServiceMonitor spec.endpoints[].scrapeTimout"
    ]
    rule = one(render("everything-on"), "PrometheusRule")
    group = {**rule["spec"]["groups"][0], "rules": [{"alert": "A", "expr": "up", "fro": "5m"}]}
    assert crd_problems([{**rule, "spec": {"groups": [group]}}]) == [
        "PrometheusRule spec.groups[].rules[].fro"
    ]


def test_crd_objects_are_valid() -> None:
    objects = render("everything-on") + render("sharded")
    assert {o["kind"] for o in objects} >= {"ServiceMonitor", "PrometheusRule"}
    assert crd_problems(objects) == []


def test_kube_version_below_the_oldest_is_refused() -> None:
    major, minor, _ = oldest_kube_version().split(".")
    result = run_helm("template", str(CHART), "--kube-version", f"{major}.{int(minor) - 1}.0")
    assert result.returncode != 0 and "kubeVersion" in result.stderr, result.stderr


def test_default_is_one_deployment() -> None:
    objects = render()
    assert sorted(o["kind"] for o in objects) == [
        "ConfigMap", "Deployment", "Service", "ServiceAccount"
    ]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # A rollout never runs more pods than asked for (each one calls Qianfan).
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert one(objects, "Service")["spec"]["type"] == "ClusterIP"


def _shard_args(objects: list[dict[str, Any]], ordinal: int) -> list[str]:
    """The pod's arguments as Kubernetes expands them for the pod of this ordinal."""
    env = {e["name"]: e for e in container(objects).get("env", [])}
    field = env["SHARD"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.labels['apps.kubernetes.io/pod-index']"
    return [a.replace("$(SHARD)", str(ordinal)) for a in container(objects)["args"]]


def test_sharded_is_a_statefulset_of_distinct_shards() -> None:
    objects = render("sharded")
    shards = load_yaml(CI_VALUES["sharded"])["sharding"]["shards"]
    statefulset = one(objects, "StatefulSet")
    service = one(objects, "Service")
    assert not [o for o in objects if o["kind"] == "Deployment"]
    assert statefulset["spec"]["replicas"] == shards
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert f"--total-shards={shards}" in container(objects)["args"]
    parsed = [build_parser().parse_args(_shard_args(objects, i)) for i in range(shards)]
    assert sorted(a.shard for a in parsed) == list(range(shards))
    assert {a.total_shards for a in parsed} == {shards}


def test_sharded_before_pod_index_label_takes_the_ordinal_from_the_hostname(
    tmp_path: Path,
) -> None:
    """Before 1.28 there is no pod-index label: the pod's shell takes the ordinal from its
    name. Run that command with a stand-in qf-exporter that prints its arguments."""
    objects = render("sharded", kube_version=oldest_kube_version())
    spec = container(objects)
    assert "env" not in spec or "SHARD" not in {e["name"] for e in spec["env"]}
    stub = tmp_path / "qf-exporter"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n', encoding="utf-8")
    stub.chmod(0o755)
    name = one(objects, "StatefulSet")["metadata"]["name"]
    shards = set()
    for ordinal in range(one(objects, "StatefulSet")["spec"]["replicas"]):
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "HOSTNAME": f"{name}-{ordinal}"}
        out = subprocess.run(
            [*spec["command"], *spec["args"]], env=env, capture_output=True, text=True,
            timeout=30, check=True,
        ).stdout.splitlines()
        assert out[: len(spec["args"])] == spec["args"]
        shards.add(build_parser().parse_args(out).shard)
    assert shards == {0, 1, 2}


def test_rules_are_alerts_yml() -> None:
    rule = one(render("everything-on"), "PrometheusRule")
    assert rule["spec"] == load_yaml(ALERTS)


def test_runbook_base_is_a_value() -> None:
    """prometheusRule.runbookBaseURL moves every runbook link, and nothing else, to the
    user's own copy of the runbooks."""
    mine = "https://wiki.example.org/qianfan/alerts"
    rule = one(
        render("everything-on", f"prometheusRule.runbookBaseURL={mine}"), "PrometheusRule"
    )
    shipped = load_yaml(ALERTS)
    for group, ours in zip(shipped["groups"], rule["spec"]["groups"], strict=True):
        for want, got in zip(group["rules"], ours["rules"], strict=True):
            url = want.get("annotations", {}).get("runbook_url")
            if url is not None:
                want["annotations"]["runbook_url"] = f"{mine}#{url.rsplit('#', 1)[1]}"
            assert got == want
    assert "runbookBaseURL" in render_error("prometheusRule.runbookBaseURL=not a url")


def test_dashboards_are_grafana_files_byte_for_byte() -> None:
    maps = [
        o for o in render("everything-on")
        if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"]["labels"]
    ]
    data = {k: v for m in maps for k, v in m["data"].items()}
    assert data == {p.name: p.read_text(encoding="utf-8") for p in DASHBOARDS}
    for m in maps:
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert m["metadata"]["annotations"] == {"grafana_folder": "Qianfan"}


def test_packaged_chart_holds_the_real_rules_and_dashboards(tmp_path: Path) -> None:
    """The chart reads alerts.yml and grafana/ through links; `helm package` must put their
    content in the archive, not the links."""
    result = run_helm("package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (archive,) = tmp_path.glob("qf-exporter-*.tgz")
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert not [m.name for m in members.values() if m.issym() or m.islnk()]

        def content(name: str) -> bytes:
            member = tar.extractfile(members[f"qf-exporter/files/{name}"])
            assert member is not None
            return member.read()

        assert content("alerts.yml") == ALERTS.read_bytes()
        for path in DASHBOARDS:
            assert content(f"dashboards/{path.name}") == path.read_bytes()
    assert archive.name == f"qf-exporter-{package_version()}.tgz"


def _secret_refs(objects: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container(objects).get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_credentials_from_an_existing_secret() -> None:
    objects = render("existing-secret")
    assert not [o for o in objects if o["kind"] == "Secret"]
    assert _secret_refs(objects) == {
        "QIANFAN_ACCESS_KEY": ("qianfan-iam", "ak"),
        "QIANFAN_SECRET_KEY": ("qianfan-iam", "sk"),
    }


def test_credentials_in_a_secret_the_chart_makes() -> None:
    objects = render("sharded")
    secret = one(objects, "Secret")
    name = secret["metadata"]["name"]
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == CREDENTIALS
    assert _secret_refs(objects) == {k: (name, k) for k in CREDENTIALS}
    assert not _secret_refs(render())  # none given, none wired


def _checksums(*sets: str) -> dict[str, str]:
    objects = render(None, *sets)
    (workload,) = [o for o in objects if o["kind"] == "Deployment"]
    annotations: dict[str, str] = workload["spec"]["template"]["metadata"]["annotations"]
    return annotations


def test_changed_config_or_credentials_roll_the_pods() -> None:
    base = _checksums()
    assert _checksums() == base
    changed = _checksums("config.content.poll.interval=2m")
    assert changed["checksum/config"] != base["checksum/config"]
    keys = _checksums("credentials.accessKey=a", "credentials.secretKey=b")
    assert keys["checksum/credentials"] != base["checksum/credentials"]


def test_existing_configmap_is_mounted() -> None:
    objects = render(None, "config.existingConfigMap=mine", "config.key=qf.yaml")
    assert not [o for o in objects if o["kind"] == "ConfigMap"]
    (workload,) = [o for o in objects if o["kind"] == "Deployment"]
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "mine"
    assert "--config.file=/etc/qf-exporter/config/qf.yaml" in container(objects)["args"]


def test_config_from_a_file_keeps_its_text() -> None:
    example = REPO / "config.example.yaml"
    (config_map,) = [o for o in render(None, f"config.content=@{example}")
                     if o["kind"] == "ConfigMap"]
    assert config_map["data"]["config.yaml"] == example.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(CI_VALUES))
def test_rendered_config_passes_config_check(name: str, tmp_path: Path) -> None:
    objects = render(name)
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap" and "config.yaml" in o["data"]]
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"], encoding="utf-8")
    args = [a for a in container(objects)["args"] if not a.startswith("--config.file=")]
    # The flags the chart passes are the exporter's (the values they need are checked
    # where they are known: the web config file is the user's).
    build_parser().parse_args([a.replace("$(SHARD)", "0") for a in args])
    result = subprocess.run(
        [sys.executable, "-m", "qf_exporter", f"--config.file={path}", "--config.check"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, **CREDENTIALS},
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(CI_VALUES))
def test_restricted_security_context_probes_and_resources(name: str) -> None:
    objects = render(name)
    (workload,) = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    pod = workload["spec"]["template"]["spec"]
    spec = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    context = spec["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert spec["resources"]["requests"]["memory"] and spec["resources"]["limits"]["memory"]
    if name != "everything-on":  # basic auth: see test_web_config_*
        assert spec["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
        assert spec["readinessProbe"]["httpGet"]["path"] == "/-/ready"


def test_web_config_with_tls_and_basic_auth() -> None:
    objects = render("everything-on")
    spec = container(objects)
    assert "--web.config.file=/etc/qf-exporter/web/web-config.yml" in spec["args"]
    (workload,) = [o for o in objects if o["kind"] == "Deployment"]
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    assert volumes["web-config"]["secret"]["secretName"] == "qf-exporter-web"
    # Basic auth covers every path and kubelet has no password: the port is probed.
    assert spec["livenessProbe"]["tcpSocket"] == {"port": "http-metrics"}
    assert "httpGet" not in spec["readinessProbe"]
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    values = load_yaml(CI_VALUES["everything-on"])["serviceMonitor"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == values["tlsConfig"]
    assert endpoint["basicAuth"] == values["basicAuth"]
    for key in ("interval", "scrapeTimeout", "relabelings", "metricRelabelings"):
        assert endpoint[key] == values[key], key


def test_web_config_with_tls_only_probes_over_https() -> None:
    objects = render(None, "webConfig.existingSecret=web", "webConfig.tls=true")
    spec = container(objects)
    assert spec["livenessProbe"]["httpGet"] == {
        "path": "/-/healthy", "port": "http-metrics", "scheme": "HTTPS"
    }
    assert spec["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_pdb_and_network_policy() -> None:
    objects = render("everything-on")
    selector = one(objects, "Deployment")["spec"]["selector"]
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"] == selector
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["podSelector"] == selector
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]
    assert ingress["from"] == load_yaml(CI_VALUES["everything-on"])["networkPolicy"]["ingressFrom"]
    assert {p["port"] for rule in policy["egress"] for p in rule["ports"]} == {53, 443}


def test_extra_args_follow_the_charts() -> None:
    args = container(render("everything-on"))["args"]
    assert args[-1] == "--web.telemetry-path=/metrics"
    assert args[0].startswith("--config.file=")


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("replicas=-1", "replicas"),
        ("sharding.shards=0", "sharding.shards"),
        ("serviceMonitor.interval=30 seconds", "serviceMonitor.interval"),
        ("log.level=verbose", "log.level"),
        ("image.pullPolicy=Sometimes", "image.pullPolicy"),
        ("extraArgs[0]=shard", "extraArgs.0"),
        ("containerPort=70000", "containerPort"),
        ("servicemonitor.enabled=true", "servicemonitor"),
        ("credentials.accessKey=only-one", "set both accessKey and secretKey"),
    ],
)
def test_bad_values_are_refused(item: str, says: str) -> None:
    assert says in render_error(item)


def test_basic_auth_without_scrape_credentials_is_refused() -> None:
    error = render_error(
        "webConfig.existingSecret=web", "webConfig.basicAuth=true", "serviceMonitor.enabled=true"
    )
    assert "serviceMonitor.basicAuth" in error


# Values that are one Kubernetes (or qf-exporter) object, listed whole.
_WHOLE = {"config.content", "strategy", "podSecurityContext", "securityContext",
          "livenessProbe", "readinessProbe", "resources"}


def _leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in _WHOLE:
            out += _leaves(value, f"{path}.")
        else:
            out.append(path)
    return out


def test_chart_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    missing = [p for p in _leaves(values) if f"| `{p}` |" not in readme]
    assert missing == []


def test_notes_say_what_was_installed(tmp_path: Path) -> None:
    sharded = render_notes(tmp_path / "a", "sharded")
    assert "--total-shards=3" in sharded and "exec sts/release-qf-exporter" in sharded
    assert "WARNING: no credentials" in render_notes(tmp_path / "b", "default")
    secured = render_notes(tmp_path / "c", "everything-on")
    assert "curl -k -u USER https://" in secured and "probes check the port only" in secured
    assert "WARNING" not in secured
