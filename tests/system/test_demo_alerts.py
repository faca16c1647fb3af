"""The demo shows what the product is for within a minute.

``qf-exporter --demo`` next to a real Prometheus with the shipped alert rules: a run
fails and another is stopped within the first minute, and ``QianfanRunFailed`` and
``QianfanRunStopped`` fire within 90 s. The demo world keeps producing such events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from qf_exporter.simulator import demo_world
from tests.helpers import REPO, free_port, require_tool

RULES = REPO / "deploy/prometheus/alerts.yml"
ALERT_WINDOW = 3600  # the run alerts fire while a run finished less than 1h ago
DEADLINE = 90  # seconds from the exporter's start


def recent_endings(world: Any, now: float) -> dict[str, set[str]]:
    """The runs that are failed or stopped at ``now`` and ended within the alert window."""
    ended: dict[str, set[str]] = {"failed": set(), "stopped": set()}
    for job in world.jobs.values():
        for run in world.visible_runs(job, now):
            status = run.status(now)
            if status in ended and now - run.ends < ALERT_WINDOW:
                ended[status].add(run.task_id)
    return ended


def test_the_demo_world_fails_and_stops_a_run_in_its_first_minute_and_keeps_doing_so(
) -> None:
    clock = [1_700_000_000.0]
    world = demo_world(lambda: clock[0])
    start = clock[0]
    assert recent_endings(world, start) == {"failed": set(), "stopped": set()}
    first_minute = recent_endings(world, start + 60)
    assert first_minute["failed"] and first_minute["stopped"]
    # From then on there is always a failed and a stopped run within the alert window,
    # each hour brings new ones, and the job's listing stays bounded.
    seen: dict[str, set[str]] = {"failed": set(), "stopped": set()}
    for hour in range(1, 25):
        clock[0] = start + hour * 3600
        ended = recent_endings(world, clock[0])
        assert ended["failed"] - seen["failed"] and ended["stopped"] - seen["stopped"], hour
        for status, runs in ended.items():
            seen[status] |= runs
    assert all(len(world.visible_runs(job, clock[0])) <= 60 for job in world.jobs.values())


@pytest.fixture
def demo_and_prometheus(tmp_path: Path) -> Iterator[dict[str, Any]]:
    prometheus = require_tool("prometheus")
    exporter_port, prometheus_port = free_port(), free_port()
    started = time.monotonic()
    exporter_log = (tmp_path / "exporter.log").open("w")
    exporter = subprocess.Popen(
        [sys.executable, "-m", "qf_exporter", "--demo",
         f"--web.listen-address=127.0.0.1:{exporter_port}"],
        stdout=exporter_log, stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")},
    )
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        # Deliberately not called qf-exporter: nothing may depend on the job's name.
        "scrape_configs": [{
            "job_name": "qianfan-demo",
            "scrape_interval": "1s",
            "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
        }],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus_log = (tmp_path / "prometheus.log").open("w")
    server = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=prometheus_log, stderr=subprocess.STDOUT,
    )
    try:
        yield {"api": f"http://127.0.0.1:{prometheus_port}/api/v1", "started": started,
               "exporter": exporter, "prometheus": server, "logs": tmp_path}
    finally:
        server.terminate()
        exporter.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        exporter.wait(timeout=30)
        prometheus_log.close()
        exporter_log.close()


def firing(api: str) -> list[dict[str, Any]]:
    try:
        answer = requests.get(f"{api}/alerts", timeout=10).json()
    except requests.ConnectionError:  # Prometheus is still starting
        return []
    assert answer["status"] == "success", answer
    return [a for a in answer["data"]["alerts"] if a["state"] == "firing"]


def test_demo_run_alerts_fire_within_90_seconds(demo_and_prometheus: dict[str, Any]) -> None:
    api, started = demo_and_prometheus["api"], demo_and_prometheus["started"]
    wanted = {"QianfanRunFailed", "QianfanRunStopped"}
    # Prometheus and the exporter are other processes: ask Prometheus until both alerts
    # fire, or the deadline passes.
    while True:
        for name in ("exporter", "prometheus"):
            process = demo_and_prometheus[name]
            assert process.poll() is None, (demo_and_prometheus["logs"] / f"{name}.log"
                                            ).read_text()
        alerts = firing(api)
        if wanted <= {a["labels"]["alertname"] for a in alerts}:
            break
        assert time.monotonic() - started < DEADLINE, f"not firing within {DEADLINE}s: {alerts}"
        time.sleep(0.5)
    runs: dict[str, set[str]] = {name: set() for name in wanted}
    for alert in alerts:
        labels = alert["labels"]
        if labels["alertname"] in wanted:
            assert labels["account"] == "demo" and labels["severity"]
            runs[labels["alertname"]].add(labels["task_id"])
    assert "task-demo-nightly-fails-first" in runs["QianfanRunFailed"]
    assert "task-demo-nightly-stopped-first" in runs["QianfanRunStopped"]
