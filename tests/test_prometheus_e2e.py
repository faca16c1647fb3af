"""The shipped Prometheus config, rules and dashboards, proven against a real Prometheus.

A real ``prometheus`` scrapes a real exporter (simulated Qianfan behind it) with the
shipped scrape config and alert rules; then every query of every dashboard panel is
evaluated through Prometheus' HTTP API with the template variables filled in, and the
failed-run alert must become active for the simulator's failed run.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from qf_exporter.app import Exporter
from qf_exporter.config import Config, Poll
from qf_exporter.simulator import QianfanSimulator, World
from tests.conftest import ACCESS_KEY, SECRET_KEY, account, require_tool
from tests.dashboard_queries import panel_queries

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "grafana").glob("*.json"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    prometheus = require_tool("prometheus")
    now = time.time()
    world = World(time.time)
    world.add_job("job-fleet", "support bot SFT", created=now - 86400)
    world.add_run("job-fleet", "task-done", created=now - 7200, wait=60, duration=3000)
    world.add_run("job-fleet", "task-failed", created=now - 1200, wait=0, duration=1000,
                  outcome="failed", end_fraction=0.6, error_code=500001,
                  error_message='dataset row 12 has no "response"')
    world.add_run("job-fleet", "task-stopped", created=now - 900, wait=0, duration=1000,
                  outcome="stopped", end_fraction=0.5)
    # Moves a whole percent every 3 s, so rates and the finish estimate have data.
    world.add_run("job-fleet", "task-running", created=now - 90, wait=0, duration=300)
    world.add_run("job-fleet", "task-waiting", created=now - 5, wait=3600, duration=300)
    world.add_v1_run(10250, 6205, "sdk_test_7", created=now - 60, wait=0, duration=3000)
    simulator = QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}).start()
    # Qianfan answers the first read with a rate limit, and one account cannot read one of
    # its jobs: the health panels have something to show.
    simulator.add_fault("rate_limit_18", count=1, target="10250/6205")
    main = account(simulator, name="main", jobs=("job-fleet",), tasks=((10250, 6205),))
    broken = account(simulator, name="broken", jobs=("job-fleet", "job-missing"))
    exporter = Exporter(
        Config(accounts=(main, broken),
               poll=Poll(interval=1, finished_interval=60, stale_after=60, timeout=5,
                         retries=2)),
    )
    server = exporter.serve("127.0.0.1", 0, "/metrics", None)
    exporter.start()

    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ROOT / "deploy/prometheus/alerts.yml")]
    config.pop("alerting", None)
    (job,) = config["scrape_configs"]
    job["scrape_interval"] = "1s"
    job["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
    tmp = tmp_path_factory.mktemp("prometheus")
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("w")
    process = subprocess.Popen(
        [prometheus, f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        # Prometheus is another process: ask it until it has 15 scrapes (bounded).
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp / "prometheus.log").read_text()
            try:
                answer = query(api, 'count_over_time(up{job="qf-exporter"}[1m]) >= 15')
                if answer:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "Prometheus never scraped the exporter"
            time.sleep(0.5)
        yield {"api": api, "world": world, "log": tmp / "prometheus.log"}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        exporter.stop()
        simulator.stop()


def query(api: str, expr: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{api}/query", params={"query": expr}, timeout=30).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    result = answer["data"]["result"]
    return result if isinstance(result, list) else [result]


# The fleet overview as opened (every job and run of an account). The run detail for one
# run of each kind: a panel is for some kinds only (evaluation scores exist once a run is
# done, an error once it failed, train duration for V1 runs), so each query must work for
# every run and return data for at least one of them.
VIEWS = {
    "qianfan-fleet-overview.json": [{"account": "main"}],
    "qianfan-run-detail.json": [
        {"account": "main", "job": "job-fleet", "run": run}
        for run in ("task-running", "task-done", "task-failed", "task-stopped")
    ] + [{"account": "main", "job": "6205", "run": "10250"}],
}


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_returns_data(stack: dict[str, Any], dashboard: Path) -> None:
    with_data: dict[str, bool] = {}
    for variables in VIEWS[dashboard.name]:
        queries = panel_queries(dashboard, variables)
        assert queries
        for index, (title, expr) in enumerate(queries):
            answer = requests.get(f"{stack['api']}/query", params={"query": expr},
                                  timeout=30).json()
            assert answer["status"] == "success", f"{title}: {expr}: {answer}"
            key = f"{index}: {title}"
            with_data[key] = with_data.get(key, False) or bool(answer["data"]["result"])
    empty = [key for key, found in with_data.items() if not found]
    assert not empty, "queries without data for any run:\n" + "\n".join(empty)


def test_failed_run_alert_fires(stack: dict[str, Any]) -> None:
    deadline = time.monotonic() + 60
    while True:
        alerts = requests.get(f"{stack['api']}/alerts", timeout=30).json()["data"]["alerts"]
        failed = [a for a in alerts if a["labels"]["alertname"] == "QianfanRunFailed"
                  and a["labels"].get("task_id") == "task-failed" and a["state"] == "firing"]
        if failed:
            break
        assert time.monotonic() < deadline, f"no QianfanRunFailed alert: {alerts}"
        time.sleep(0.5)
    labels = failed[0]["labels"]
    assert labels["account"] in ("main", "broken") and labels["job_id"] == "job-fleet"
    assert labels["severity"]
    assert "support bot SFT" in failed[0]["annotations"]["summary"]
    # The successful and still-running runs raise no run alert.
    quiet = {a["labels"].get("task_id") for a in alerts
             if a["labels"]["alertname"] in ("QianfanRunFailed", "QianfanRunStopped")}
    assert not quiet & {"task-done", "task-running", "task-waiting"}


def test_rules_load_healthy(stack: dict[str, Any]) -> None:
    rules = requests.get(f"{stack['api']}/rules", timeout=30).json()["data"]["groups"]
    names = {r["name"]: r for g in rules for r in g["rules"]}
    assert {"QianfanRunFailed", "QianfanRunStopped", "QianfanRunProgressStalled",
            "QianfanExporterDown", "QianfanExporterDataStale", "QianfanRateLimited",
            "QianfanAuthFailing", "QianfanTargetDown"} <= set(names)
    assert all(r["health"] == "ok" for r in names.values()), names
