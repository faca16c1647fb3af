"""Checks several test files make, written once: no credential in any output, and every
alert's runbook link and the README section it opens."""

from __future__ import annotations

import re

import pytest
import requests

from qf_exporter.app import Exporter
from tests.deploy.files import RUNBOOK_BASE
from tests.helpers import ACCESS_KEY, REPO, SECRET_KEY, Samples, parse_samples

# ----------------------------------------------------------------------- credentials


def assert_no_keys(*outputs: str | bytes, keys: tuple[str, ...] = (ACCESS_KEY, SECRET_KEY)) -> None:
    """None of ``keys`` (by default the tests' access and secret key) appears in any of
    ``outputs``: logs, pages, exceptions, a process's stdout or stderr."""
    for number, output in enumerate(outputs):
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
        for key in keys:
            assert key not in text, f"output {number} holds a credential ({key[:4]}...)"


def polled_without_keys(exporter: Exporter, logs: pytest.LogCaptureFixture,
                        keys: tuple[str, ...] = (ACCESS_KEY, SECRET_KEY)) -> Samples:
    """Poll once, then check that no key reaches ``/metrics``, ``/`` or the logs
    (the exporter serving on a free port); the samples of ``/metrics``."""
    exporter.serve("127.0.0.1", 0, "/metrics", None)
    logs.set_level("DEBUG")
    exporter.poller.poll_all()
    assert exporter.server is not None
    base = f"http://127.0.0.1:{exporter.server.port}"
    metrics = requests.get(base + "/metrics", timeout=10).text
    landing = requests.get(base + "/", timeout=10).text
    assert_no_keys(metrics, landing, logs.text, keys=keys)
    return parse_samples(metrics)


# -------------------------------------------------------------------------- runbooks


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def readme_sections() -> dict[str, tuple[str, str]]:
    """anchor -> (heading, text up to the next heading of any level)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    readme = re.sub(r"(?ms)^```.*?^```", "", readme)  # no headings inside code blocks
    parts = re.split(r"(?m)^(#{1,6} .*)$", readme)
    return {
        github_anchor(parts[i].lstrip("#")): (parts[i], parts[i + 1])
        for i in range(1, len(parts), 2)
    }


def runbook_url(alert: str) -> str:
    """Where ``alert``'s runbook_url points: this release's runbook page, then "#" and the
    alert's name in lower case."""
    return f"{RUNBOOK_BASE}#{alert.lower()}"


def assert_runbook(alert: str, url: str) -> None:
    """``url`` is ``alert``'s runbook link, and the README's "Runbooks" has a section
    ``#### <alert>`` under that anchor which says what the alert means and what to do."""
    assert url == runbook_url(alert), alert
    sections = readme_sections()
    anchor = url.partition("#")[2]
    assert anchor in sections, f"{alert}: no README heading for #{anchor}"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    runbooks = readme[readme.index("\n### Runbooks\n") :]
    runbooks = runbooks[: runbooks.index("\n## ", 1)]
    heading, text = sections[anchor]
    assert heading == f"#### {alert}" and f"\n{heading}\n" in runbooks, alert
    assert len(text.split()) >= 40, f"{alert}: the runbook says too little"
