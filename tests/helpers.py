"""What tests share that is not a fixture: the fake clock, accounts on the simulator,
scraping an exporter and reading its exposition, and the Prometheus tools.

Fixtures that build these live in ``tests/conftest.py``.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from qf_exporter.app import Exporter
from qf_exporter.config.file import Account, Poll, V1Target
from qf_exporter.simulator import ManualClock as ManualClock  # where the tests take it from
from qf_exporter.simulator import QianfanSimulator, SimJob, SimRun, World
from qf_exporter.util.secrets import Secret
from qf_exporter.web.listen import bind
from qf_exporter.web.routes import ExporterHTTPServer

REPO = Path(__file__).resolve().parent.parent  # the repository's root

ACCESS_KEY = "AKtest0123456789abcdef"
SECRET_KEY = "SKsecret-0123456789abcdef-very-secret"

# Every sample of an exposition: (name, label set) -> value.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ------------------------------------------------------------------------ the clock


# ------------------------------------------------------------- a Qianfan that hangs


class GatedWorld(World):
    """A world whose V2 run listings wait, while ``closed``, until the test opens ``gate``."""

    def __init__(self, clock: Callable[[], float], *, closed: bool = True) -> None:
        super().__init__(clock)
        self.closed = closed
        self.gate = threading.Event()
        self.stuck = 0  # listings that reached the gate
        self.arrived = threading.Condition()

    def visible_runs(self, job: SimJob, now: float) -> list[SimRun]:
        if self.closed:
            with self.arrived:
                self.stuck += 1
                self.arrived.notify_all()
            self.gate.wait()
        return super().visible_runs(job, now)

    def wait_stuck(self, count: int = 1) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: self.stuck >= count, timeout=30)


# -------------------------------------------------------------- accounts and polls


def account(
    sim: QianfanSimulator,
    *,
    name: str = "default",
    jobs: tuple[str, ...] = (),
    tasks: tuple[tuple[int, int], ...] = (),
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    **kw: object,
) -> Account:
    """An account on ``sim``; V1 ``tasks`` are (task_id, job_id) pairs."""
    # A budget high enough not to slow tests down, unless a test is about the budget.
    kw.setdefault("qps", 1000)
    return Account(
        name=name,
        access_key=Secret(access_key),
        secret_key=Secret(secret_key),
        endpoint=sim.url,
        jobs=jobs,
        tasks=tuple(V1Target(t, j) for t, j in tasks),
        **kw,  # type: ignore[arg-type]
    )


FAST_POLL = Poll(interval=60, finished_interval=1800, stale_after=600, timeout=5, concurrency=4,
                 retries=0)


# ------------------------------------------------------------------------ scraping


def serve(exporter: Exporter, **settings: Any) -> ExporterHTTPServer:
    """Start the exporter's HTTP server on a free loopback port, serving /metrics (its
    other settings as keywords of ``Exporter.serve``)."""
    web_config = settings.pop("web_config", None)
    return exporter.serve([bind("127.0.0.1", 0)], "/metrics", web_config, **settings)


def http_get(exporter: Exporter, path: str = "/metrics", **kw: object) -> requests.Response:
    """GET ``path`` from the exporter's HTTP server (started on a free port if need be)."""
    if exporter.server is None:
        serve(exporter)
    assert exporter.server is not None
    return requests.get(f"http://127.0.0.1:{exporter.server.port}{path}", timeout=10,
                        **kw)  # type: ignore[arg-type]


def scrape(exporter: Exporter) -> Samples:
    """What Prometheus sees: /metrics over HTTP answers 200, and its samples."""
    response = http_get(exporter)
    assert response.status_code == 200
    return parse_samples(response.content)


# ------------------------------------------------------------- reading expositions


def parse_samples(text: str | bytes) -> Samples:
    """Every sample of an exposition, by name and label set (prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    if isinstance(text, bytes):
        text = text.decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            assert sample.timestamp is None, "no sample carries a timestamp"
            samples[key] = sample.value
    return samples


def series(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of one metric whose labels include ``labels``."""
    want = set(labels.items())
    return {lbls: v for (n, lbls), v in samples.items() if n == name and want <= lbls}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` with ``labels`` (None if there is none)."""
    found = series(samples, name, **labels)
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
    return next(iter(found.values()), None)


# ---------------------------------------------------------- the landing page


def down_rows(page: str) -> list[list[str]]:
    """The cells of each row of the page's "Targets down" table, unescaped."""
    section = page.split("<h2>Targets down</h2>", 1)[1]
    rows = re.findall(r"<tr>(.*?)</tr>", section, flags=re.S)
    return [[html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)]
            for row in rows if "<td" in row]


def account_cell(page: str, name: str) -> str:
    """The "Qianfan" cell of the account's row in the accounts table."""
    section = page.split("<h2>Accounts</h2>", 1)[1].split("<h2>", 1)[0]
    for row in re.findall(r"<tr>(.*?)</tr>", section, flags=re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
        if cells and html.unescape(cells[0]) == name:
            return html.unescape(cells[1])
    raise AssertionError(f"no row for account {name!r}")



# ---------------------------------------------------------------- Prometheus tools


def require_tool(name: str) -> str:
    """The path of a Prometheus tool; missing fails under CI=true, else skips."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed (apt-get install -y prometheus)")
        pytest.skip(f"{name} is not installed")
    return path


def promtool_check_metrics(text: bytes) -> None:
    """promtool finds nothing to say about an exposition."""
    result = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text,
                            capture_output=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout.decode() + result.stderr.decode()
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a process to come)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def promql(api: str, expr: str) -> list[dict[str, Any]]:
    """The result of an instant query through Prometheus' HTTP API (``api`` ends in /api/v1)."""
    answer = requests.get(f"{api}/query", params={"query": expr}, timeout=30).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    result = answer["data"]["result"]
    return result if isinstance(result, list) else [result]


def status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M)
    assert match, field
    return int(match.group(1)) * 1024


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True
