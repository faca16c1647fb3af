"""Checks several test files make, written once: no credential in any output, and every
alert's runbook link and the section of docs/alerts.md it opens."""

from __future__ import annotations

import pytest
import requests

from qf_exporter.app import Exporter
from tests.deploy.files import RUNBOOK_BASE
from tests.docs.markdown import sections
from tests.helpers import ACCESS_KEY, REPO, SECRET_KEY, Samples, parse_samples, serve

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
    serve(exporter)
    logs.set_level("DEBUG")
    exporter.poller.poll_all()
    assert exporter.server is not None
    base = f"http://127.0.0.1:{exporter.server.port}"
    metrics = requests.get(base + "/metrics", timeout=10).text
    landing = requests.get(base + "/", timeout=10).text
    assert_no_keys(metrics, landing, logs.text, keys=keys)
    return parse_samples(metrics)


# -------------------------------------------------------------------------- runbooks


ALERTS_PAGE = REPO / "docs" / "alerts.md"


def runbook_url(alert: str) -> str:
    """Where ``alert``'s runbook_url points: this release's runbook page, then "#" and the
    alert's name in lower case."""
    return f"{RUNBOOK_BASE}#{alert.lower()}"


def assert_runbook(alert: str, url: str) -> None:
    """``url`` is ``alert``'s runbook link, and docs/alerts.md's "Runbooks" has a section
    ``### <alert>`` under that anchor which says what the alert means and what to do."""
    assert url == runbook_url(alert), alert
    text = ALERTS_PAGE.read_text(encoding="utf-8")
    found = sections(text)
    anchor = url.partition("#")[2]
    assert anchor in found, f"{alert}: no heading in docs/alerts.md for #{anchor}"
    runbooks = text[text.index("\n## Runbooks\n") :]
    end = runbooks.find("\n## ", 1)  # Runbooks may be the page's last section
    runbooks = runbooks if end < 0 else runbooks[:end]
    heading, body = found[anchor]
    assert heading == f"### {alert}" and f"\n{heading}\n" in runbooks, alert
    assert len(body.split()) >= 40, f"{alert}: the runbook says too little"
