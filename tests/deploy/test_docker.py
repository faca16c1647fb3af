"""The Dockerfile: base image, copied files, user, port, health check and OCI labels."""

from __future__ import annotations

import shlex
import tomllib

from tests.deploy.files import (
    DEPLOY,
    DOCKERFILE,
    dockerfile_instructions,
    dockerfile_labels,
)
from tests.helpers import REPO


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert all(f.startswith("python:3.11-slim") for f in froms)
    for word, rest in instructions:
        if word in ("COPY", "ADD") and "--from=" not in rest:
            *sources, _dest = shlex.split(rest)
            for source in sources:
                assert (REPO / source).exists(), f"COPY source {source} is missing"
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and not users[-1].startswith(("root", "0"))
    assert ("EXPOSE", "9788") in instructions
    (healthcheck,) = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert "/-/healthy" in healthcheck and "urllib" in healthcheck
    assert ("ENTRYPOINT", '["qf-exporter"]') in instructions


def test_dockerfile_oci_labels() -> None:
    labels = dockerfile_labels()
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]["text"]
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.title"] == "qf-exporter"
    # The runtime stage carries them (labels of a build stage do not reach the image).
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert text.rindex("\nFROM ") < text.index("\nLABEL ")


def test_dockerignore_keeps_the_copied_files() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, rest in dockerfile_instructions():
        if word == "COPY" and "--from=" not in rest:
            *sources, _dest = shlex.split(rest)
            assert set(sources) <= kept, sources
