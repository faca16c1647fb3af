"""What a release must keep consistent: image tags equal the package version, the
license text, the paths and flags the deploy files name exist."""

from __future__ import annotations

import re
import sys
import tomllib

from tests.deploy.files import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    KUBERNETES,
    SYSTEMD_UNIT,
    compose,
    dockerfile_labels,
    load_yaml,
    package_version,
    pod_spec,
    run,
)
from tests.helpers import REPO

# An image reference to the exporter with a tag (not "qf-exporter:9788", a host and port).
_IMAGE_TAG = re.compile(r"(?<![\w/.-])qf-exporter:(latest|\d+\.\d+[\w.+-]*)")


def test_images_are_tagged_with_the_package_version() -> None:
    """No `latest`: the deploy files, README and docs name the image of this version, and a
    version bump in pyproject.toml fails here until they follow."""
    import qf_exporter

    version = package_version()
    assert qf_exporter.__version__ == version, "reinstall: the installed metadata is old"
    assert dockerfile_labels()["org.opencontainers.image.version"] == version
    assert compose()["services"]["qf-exporter"]["image"] == f"qf-exporter:{version}"
    (image,) = load_yaml(KUBERNETES / "kustomization.yaml")["images"]
    assert image["name"] == "qf-exporter" and image["newTag"] == version
    for name in ("deployment.yaml", "statefulset-sharded.yaml"):
        (container,) = pod_spec(KUBERNETES / name)["containers"]
        assert container["image"] == f"qf-exporter:{version}", name
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
             *sorted(p for p in DEPLOY.rglob("*") if p.is_file())]
    tags: dict[str, list[str]] = {}
    for path in files:
        for tag in _IMAGE_TAG.findall(path.read_text(encoding="utf-8", errors="replace")):
            tags.setdefault(tag, []).append(path.relative_to(REPO).as_posix())
    assert set(tags) == {version}, tags


def test_license_is_the_apache_2_text() -> None:
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    assert re.match(r"\s*Apache License\s+Version 2\.0, January 2004\s", text)
    sections = re.findall(r"(?m)^\s+(\d)\. (\w[\w ]*)\.", text)
    assert [n for n, _ in sections] == [str(i) for i in range(1, 10)], sections
    assert "END OF TERMS AND CONDITIONS" in text


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
