"""The Helm chart's tools for its tests: a real helm (from .tools/, which
tests/deploy/tools/install.sh fills, or on PATH), rendering with it, and validating what it
renders against the Kubernetes schemas (kubernetes-validate) and prometheus-operator's CRD
schemas (@kubernetes-models/prometheus-operator, run by node)."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.files import DEPLOY, load_yaml
from tests.helpers import REPO

CHART = DEPLOY / "helm" / "qf-exporter"
CI_VALUES = {p.name.removesuffix("-values.yaml"): p for p in sorted((CHART / "ci").glob("*.yaml"))}
TOOLS = REPO / ".tools"
CRD_VALIDATOR = Path(__file__).parent / "tools" / "validate-crds.mjs"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
_INSTALL = "bash tests/deploy/tools/install.sh"


def _required(path: str | None, what: str) -> str:
    """A tool's path; missing fails under CI=true (.ci/run installs it), else skips."""
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is missing: run {_INSTALL}")
        pytest.skip(f"{what} is missing ({_INSTALL} installs it)")
    return path


def helm() -> str:
    local = TOOLS / "bin" / "helm"
    return _required(str(local) if local.is_file() else shutil.which("helm"), "helm")


def node_modules() -> str:
    modules = TOOLS / "node_modules" / "@kubernetes-models" / "prometheus-operator"
    _required(str(modules) if modules.is_dir() else None, "@kubernetes-models/prometheus-operator")
    return str(TOOLS / "node_modules")


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def oldest_kube_version() -> str:
    """The lowest version Chart.yaml's kubeVersion admits (">=1.25.0-0" -> "1.25.0")."""
    constraint = load_yaml(CHART / "Chart.yaml")["kubeVersion"]
    match = re.fullmatch(r">=\s*v?(\d+\.\d+\.\d+)(-0)?", constraint)
    assert match, f"kubeVersion {constraint!r}: expected a plain lower bound"
    return match.group(1)


def newest_kube_version() -> str:
    version: str = kubernetes_validate.latest_version()  # "1.37.0"
    return version


@functools.cache
def _render(values: tuple[str, ...], sets: tuple[str, ...], kube_version: str | None) -> str:
    args = ["template", "release", str(CHART), "--namespace", "monitoring"]
    for path in values:
        args += ["-f", path]
    for item in sets:
        # key=@path: the file's text (helm --set-file)
        args += ["--set-file", item.replace("=@", "=", 1)] if "=@" in item else ["--set", item]
    if kube_version:
        args += ["--kube-version", kube_version]
    result = run_helm(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(
    values: str | None = None, *sets: str, kube_version: str | None = None
) -> list[dict[str, Any]]:
    """The objects `helm template` makes of the chart with a ci/ values file (by its short
    name: "sharded") and --set items (key=@path: --set-file)."""
    files = (str(CI_VALUES[values]),) if values else ()
    text = _render(files, sets, kube_version)
    return [d for d in yaml.safe_load_all(text) if d]


def render_error(*sets: str) -> str:
    """What helm says when it refuses to render the chart with these --set items."""
    args = ["template", "release", str(CHART)]
    for item in sets:
        args += ["--set", item]
    result = run_helm(*args)
    assert result.returncode != 0, f"helm rendered {sets}"
    return result.stderr


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (workload,) = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    (found,) = workload["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = found
    return result


def kubernetes_problems(objects: list[dict[str, Any]], version: str) -> list[str]:
    """Every object but the CRDs' against Kubernetes' own schemas, strictly (unknown fields
    are problems too)."""
    problems = []
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            problems.append(f"{obj['kind']} {obj['metadata']['name']}: {path}: {error.message}")
    return problems


# Where prometheus-operator's objects hold structures, and the model whose declaration
# lists their fields (the compiled validators check types, patterns and required fields,
# but let unknown fields through, as the API server's pruning would drop them silently).
_CRD_PARTS = {
    "ServiceMonitor": [
        ("spec", "ServiceMonitorSpec"),
        ("spec.endpoints[]", "Endpoint"),
        ("spec.endpoints[].tlsConfig", "TLSConfig"),
        ("spec.endpoints[].basicAuth", "BasicAuth"),
        ("spec.endpoints[].relabelings[]", "RelabelConfig"),
        ("spec.endpoints[].metricRelabelings[]", "RelabelConfig"),
    ],
    "PrometheusRule": [
        ("spec", "PrometheusRuleSpec"),
        ("spec.groups[]", "RuleGroup"),
        ("spec.groups[].rules[]", "Rule"),
    ],
}


def _parts(node: Any, path: list[str]) -> list[Any]:
    """What a path like spec.endpoints[].relabelings[] reaches in an object."""
    if not path:
        return [node]
    key, rest = path[0], path[1:]
    inner = node.get(key.removesuffix("[]")) if isinstance(node, dict) else None
    if inner is None:
        return []
    items = inner if key.endswith("[]") else [inner]
    return [found for item in items for found in _parts(item, rest)]


def _model_fields(model: str) -> set[str]:
    declaration = Path(node_modules(), "@kubernetes-models", "prometheus-operator",
                       "monitoring.coreos.com", "v1", f"{model}.d.ts")
    return set(re.findall(r'(?m)^    "(\w+)"\??:', declaration.read_text(encoding="utf-8")))


def crd_unknown_fields(objects: list[dict[str, Any]]) -> list[str]:
    """Fields the prometheus-operator objects hold that their CRDs do not define."""
    problems = []
    for obj in objects:
        for path, model in _CRD_PARTS.get(obj["kind"], []):
            fields = _model_fields(model)
            assert fields, model
            for part in _parts(obj, path.split(".")):
                problems += [f"{obj['kind']} {path}.{k}" for k in sorted(set(part) - fields)]
    return problems


def crd_problems(objects: list[dict[str, Any]]) -> list[str]:
    """The prometheus-operator objects against the CRDs' schemas."""
    node = _required(shutil.which("node"), "node")
    result = subprocess.run(
        [node, str(CRD_VALIDATOR), node_modules()],
        input=json.dumps([o for o in objects if o["kind"] in CRD_KINDS]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    problems: list[str] = json.loads(result.stdout)
    return problems + crd_unknown_fields(objects)


def render_notes(tmp_path: Path, values: str) -> str:
    """NOTES.txt as `helm install` prints it (helm template leaves it out): a copy of the
    chart renders it through tpl into a ConfigMap."""
    chart = tmp_path / "qf-exporter"
    shutil.copytree(CHART, chart, symlinks=False)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "notes.txt")
    (chart / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "files/notes.txt") . | toJson }}}\n',
        encoding="utf-8",
    )
    result = run_helm(
        "template", "release", str(chart), "-f", str(CI_VALUES[values]),
        "--show-only", "templates/notes.yaml",
    )
    assert result.returncode == 0, result.stderr
    notes: str = yaml.safe_load(result.stdout)["data"]["notes"]
    return notes
