"""The shipped Prometheus config, rules and dashboards, proven against a real Prometheus.

A real ``prometheus`` scrapes two real exporter processes (``python -m qf_exporter``, the
same configuration, both reading one simulated Qianfan: identical replicas, as docs/scaling.md
recommends for availability) with the shipped scrape config and alert rules, under a
scrape job that is NOT called ``qf-exporter`` (the rules and dashboards must not depend
on the name). Then:

- every query of every dashboard panel is evaluated through Prometheus' HTTP API with
  the template variables filled in, and must succeed and return data;
- every rule evaluates without error, and the failed and stopped runs raise exactly one
  QianfanRunFailed / QianfanRunStopped alert per run, not one per replica;
- no alert about the exporter's own health is pending or has fired while both run;
- a failed run's alert names its owner (`team`, from the configuration: "nlp" for the
  job the account "main" owns, none for the same job read by "broken") and links the
  run's page in the Qianfan console;
- stopping one exporter process fires QianfanExporterDown for that instance only
  (the last test: it leaves the stack with one replica).

The rules Prometheus loads are the shipped alerts.yml with one change: the `for:` of the
exporter-health alerts is shortened from minutes to 5s (``TEST_FOR``), so that "would
fire" is observable within the test. Everything else, expressions included, is as
shipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import requests
import yaml

from qf_exporter.simulator import QianfanSimulator, World
from tests.checks import assert_runbook
from tests.dashboard_queries import panel_queries
from tests.helpers import (
    ACCESS_KEY,
    REPO,
    SECRET_KEY,
    free_port,
    promql,
    require_tool,
)

DASHBOARDS = sorted((REPO / "grafana").glob("*.json"))
SCRAPE_JOB = "qianfan"  # anything but the shipped "qf-exporter"
EXPORTER_HEALTH_ALERTS = (
    "QianfanExporterDown", "QianfanExporterDataStale", "QianfanExporterConfigReloadFailed",
)
TEST_FOR = "5s"
RUN_ALERTS = ("QianfanRunFailed", "QianfanRunStopped")


def exporter_config(simulator: QianfanSimulator) -> dict[str, Any]:
    def account(name: str, **targets: Any) -> dict[str, Any]:
        return {"name": name, "endpoint": simulator.url, "qps": 50,
                "access_key": "${QIANFAN_ACCESS_KEY}", "secret_key": "${QIANFAN_SECRET_KEY}",
                **targets}

    return {
        # One account reads everything; the other cannot read one of its jobs, so the
        # health panels have something to show. The team nlp owns job-fleet in "main";
        # nobody owns it in "broken".
        "accounts": [
            account("main", jobs=[{"id": "job-fleet", "team": "nlp"}],
                    tasks=[{"task_id": 10250, "job_id": 6205}]),
            account("broken", jobs=["job-fleet", "job-missing"]),
        ],
        "poll": {"interval": "2s", "finished_interval": "60s", "stale_after": "60s",
                 "timeout": "2s", "retries": 2},
    }


def rules_for_test(path: Path) -> None:
    """The shipped alerts.yml with the exporter-health alerts' `for:` set to TEST_FOR."""
    rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
    shortened = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in EXPORTER_HEALTH_ALERTS:
                rule["for"] = TEST_FOR
                shortened += 1
    assert shortened == len(EXPORTER_HEALTH_ALERTS)
    path.write_text(yaml.safe_dump(rules, sort_keys=False))


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
    """Ask Prometheus (another process) until check() gives a true value (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def fleet_world(now: float) -> World:
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
    return world


def start_exporters(
    tmp: Path, config_file: Path, exporters: dict[str, subprocess.Popen[bytes]],
    logs: list[IO[str]],
) -> None:
    """Two exporters of one configuration, each logging to tmp/exporter-NAME.log."""
    env = {**os.environ, "QIANFAN_ACCESS_KEY": ACCESS_KEY, "QIANFAN_SECRET_KEY": SECRET_KEY}
    for name in ("a", "b"):
        address = f"127.0.0.1:{free_port()}"
        log = (tmp / f"exporter-{name}.log").open("w")
        logs.append(log)
        exporters[address] = subprocess.Popen(
            [sys.executable, "-m", "qf_exporter", f"--config.file={config_file}",
             f"--web.listen-address={address}"],
            stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=REPO,
        )


def write_prometheus_config(tmp: Path, targets: list[str]) -> Path:
    """The shipped prometheus.yml, scraping and evaluating every second."""
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    rules_for_test(tmp / "alerts.yml")
    config["rule_files"] = [str(tmp / "alerts.yml")]
    config.pop("alerting", None)
    (job,) = config["scrape_configs"]
    job["job_name"] = SCRAPE_JOB
    job["scrape_interval"] = "1s"
    job["static_configs"] = [{"targets": targets}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    return tmp / "prometheus.yml"


def stop_all(process: subprocess.Popen[bytes] | None,
             exporters: dict[str, subprocess.Popen[bytes]], logs: list[IO[str]]) -> None:
    if process is not None:
        process.terminate()
        process.wait(timeout=30)
    for exporter in exporters.values():
        if exporter.poll() is None:
            exporter.terminate()
            exporter.wait(timeout=30)
    for log in logs:
        log.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    prometheus = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    world = fleet_world(time.time())
    simulator = QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}).start()
    # Qianfan answers the first read with a rate limit: the failure panels have data.
    simulator.add_fault("rate_limit_18", count=1, target="10250/6205")

    config_file = tmp / "qf-exporter.yml"
    config_file.write_text(yaml.safe_dump(exporter_config(simulator)))
    exporters: dict[str, subprocess.Popen[bytes]] = {}
    logs: list[IO[str]] = []
    process: subprocess.Popen[bytes] | None = None

    def exporter_logs() -> str:
        return "".join(path.read_text() for path in sorted(tmp.glob("exporter-*.log")))

    try:
        start_exporters(tmp, config_file, exporters, logs)

        # Both exporters answer before Prometheus starts: otherwise, on a busy machine,
        # the "no exporter reports at all" case could truly hold for longer than TEST_FOR.
        def ready() -> bool:
            for address, exporter in exporters.items():
                assert exporter.poll() is None, exporter_logs()
                if requests.get(f"http://{address}/-/ready", timeout=5).status_code != 200:
                    return False
            return True

        wait_for("both exporters to be ready", ready, timeout=60)

        prometheus_yml = write_prometheus_config(tmp, list(exporters))
        port = free_port()
        log = (tmp / "prometheus.log").open("w")
        logs.append(log)
        process = subprocess.Popen(
            [prometheus, f"--config.file={prometheus_yml}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        api = f"http://127.0.0.1:{port}/api/v1"

        def scraped_both() -> bool:
            for exporter in exporters.values():
                assert exporter.poll() is None, exporter_logs()
            assert process is not None and process.poll() is None, (
                tmp / "prometheus.log").read_text()
            # 15 scrapes of each exporter, each of which has read the runs by now.
            scraped = promql(api, f'count_over_time(up{{job="{SCRAPE_JOB}"}}[1m]) >= 15')
            with_runs = promql(api, "count by (instance) (qianfan_finetune_run_info)")
            return len(scraped) == 2 and len(with_runs) == 2

        wait_for("Prometheus to scrape both exporters", scraped_both, timeout=120)
        yield {"api": api, "world": world, "exporters": exporters, "tmp": tmp,
               "scraping_since": time.time()}
    finally:
        stop_all(process, exporters, logs)
        simulator.stop()


def alerts(api: str) -> list[dict[str, Any]]:
    """Active (pending or firing) alerts."""
    found: list[dict[str, Any]] = requests.get(f"{api}/alerts", timeout=30).json()["data"][
        "alerts"
    ]
    return found


def run_key(alert: dict[str, Any]) -> tuple[str, ...]:
    labels = alert["labels"]
    return tuple(labels.get(k, "") for k in ("alertname", "account", "api", "job_id", "task_id"))


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


def test_fleet_counts_each_run_once(stack: dict[str, Any]) -> None:
    """Both replicas export every run; the fleet panels count runs, not series."""
    api = stack["api"]
    assert promql(api, 'count(qianfan_finetune_run_info{account="main", task_id="task-failed"})')[
        0]["value"][1] == "2"
    queries = panel_queries(REPO / "grafana/qianfan-fleet-overview.json", {"account": "main"})
    counts = {}
    for title, expr in queries:
        if title == "Runs by status":
            status = expr.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = promql(api, expr)[0]["value"][1]
    # job-fleet's five runs and the V1 run, once each (the V1 run may have finished).
    assert counts["failed"] == "1" and counts["stopped"] == "1", counts
    assert counts["waiting"] == "1", counts
    assert sum(int(v) for v in counts.values()) == 6, counts


def test_failed_run_alert_fires(stack: dict[str, Any]) -> None:
    def firing() -> list[dict[str, Any]]:
        return [a for a in alerts(stack["api"]) if a["labels"]["alertname"] == "QianfanRunFailed"
                and a["labels"].get("task_id") == "task-failed" and a["state"] == "firing"]

    failed = wait_for("QianfanRunFailed for task-failed", firing, timeout=60)
    labels = failed[0]["labels"]
    assert labels["account"] in ("main", "broken") and labels["job_id"] == "job-fleet"
    assert labels["severity"]
    assert "support bot SFT" in failed[0]["annotations"]["summary"]
    assert_runbook("QianfanRunFailed", failed[0]["annotations"]["runbook_url"])
    # The successful and still-running runs raise no run alert.
    quiet = {a["labels"].get("task_id") for a in alerts(stack["api"])
             if a["labels"]["alertname"] in RUN_ALERTS}
    assert not quiet & {"task-done", "task-running", "task-waiting"}


def test_a_failed_runs_alert_names_its_team_and_links_the_console(
    stack: dict[str, Any]
) -> None:
    """What Alertmanager routes by, and where the on-call person clicks, with two
    replicas: one alert per account, team="nlp" where nlp owns the job, team="" (no
    label) where nobody does; both link the run's training log."""
    wanted = {"main", "broken"}

    def firing() -> dict[str, dict[str, Any]]:
        found = {a["labels"]["account"]: a for a in alerts(stack["api"])
                 if a["labels"]["alertname"] == "QianfanRunFailed"
                 and a["labels"].get("task_id") == "task-failed" and a["state"] == "firing"}
        return found if set(found) == wanted else {}

    failed = wait_for("QianfanRunFailed for task-failed in both accounts", firing, timeout=60)
    assert failed["main"]["labels"]["team"] == "nlp"
    assert failed["broken"]["labels"].get("team", "") == ""
    for alert in failed.values():
        assert alert["annotations"]["console_url"] == (
            "https://console.bce.baidu.com/qianfan/train/sft/job-fleet/task-failed/detail/"
            "traininglog")
        assert_runbook("QianfanRunFailed", alert["annotations"]["runbook_url"])
    # The target's health says who owns it too.
    owners = {(r["metric"]["account"], r["metric"].get("team", ""))
              for r in promql(stack["api"], 'qianfan_target_up{target="job-fleet"}')}
    assert owners == {("main", "nlp"), ("broken", "")}


def test_identical_replicas_alert_once_per_run(stack: dict[str, Any]) -> None:
    api = stack["api"]
    expected = {(name, account, "v2", "job-fleet", task)
                for name, task in (("QianfanRunFailed", "task-failed"),
                                   ("QianfanRunStopped", "task-stopped"))
                for account in ("main", "broken")}

    def all_firing() -> list[dict[str, Any]]:
        found = [a for a in alerts(api) if a["labels"]["alertname"] in RUN_ALERTS]
        firing = {run_key(a) for a in found if a["state"] == "firing"}
        return found if expected <= firing else []

    found = wait_for("the failed and stopped run alerts", all_firing, timeout=60)
    per_run = Counter(run_key(a) for a in found)
    assert set(per_run) == expected, per_run
    assert all(n == 1 for n in per_run.values()), per_run
    assert not any("instance" in a["labels"] or "job" in a["labels"] for a in found), found


def test_rules_evaluate_without_error(stack: dict[str, Any]) -> None:
    """With two replicas exporting the same runs: no rule fails (no "many-to-many")."""
    api = stack["api"]
    # Evaluations after both replicas' runs are in Prometheus (the fixture waited for it).
    since = time.time()

    def rules_evaluated_since() -> dict[str, dict[str, Any]]:
        groups = requests.get(f"{api}/rules", timeout=30).json()["data"]["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        evaluated = all(
            g["lastEvaluation"] and _rfc3339(g["lastEvaluation"]) > since for g in groups
        )
        return rules if evaluated else {}

    rules = wait_for("a rule evaluation", rules_evaluated_since)
    assert {"QianfanRunFailed", "QianfanRunStopped", "QianfanRunProgressStalled",
            "QianfanExporterDown", "QianfanExporterDataStale", "QianfanRateLimited",
            "QianfanAuthFailing", "QianfanTargetDown"} <= set(rules)
    broken = {name: (r["health"], r.get("lastError")) for name, r in rules.items()
              if r["health"] != "ok" or r.get("lastError")}
    assert not broken, broken


def test_no_exporter_health_alert_while_healthy(stack: dict[str, Any]) -> None:
    api = stack["api"]
    since = stack["scraping_since"]
    # At least a few rule evaluations while both exporters are being scraped.
    wait_for("rule evaluations", lambda: all(
        g["lastEvaluation"] and _rfc3339(g["lastEvaluation"]) > since + 5
        for g in requests.get(f"{api}/rules", timeout=30).json()["data"]["groups"]))
    active = [a for a in alerts(api) if a["labels"]["alertname"] in EXPORTER_HEALTH_ALERTS]
    assert not active, active
    # Nor was one pending or firing at any evaluation since Prometheus has been scraping
    # both exporters. (Before its first scrape, Prometheus knows no exporter, and with
    # the test's 5s `for:` "no exporter reports at all" can truly fire during its
    # start-up on a busy machine; the shipped 5m does not.)
    names = "|".join(EXPORTER_HEALTH_ALERTS)
    window = int(time.time() - since)  # whole seconds, all after `since`
    ever = promql(api, f'max_over_time(ALERTS{{alertname=~"{names}"}}[{window}s])')
    assert not ever, ever


def test_exporter_down_fires_when_its_process_stops(stack: dict[str, Any]) -> None:
    """Kept last in this module: it stops one of the two exporters for good."""
    api = stack["api"]
    address, process = list(stack["exporters"].items())[1]
    process.terminate()
    assert process.wait(timeout=30) == 0

    def down() -> list[dict[str, Any]]:
        return [a for a in alerts(api) if a["labels"]["alertname"] == "QianfanExporterDown"
                and a["state"] == "firing"]

    (alert,) = wait_for("QianfanExporterDown to fire", down)
    assert alert["labels"]["instance"] == address
    assert alert["labels"]["job"] == SCRAPE_JOB
    assert alert["labels"]["severity"] == "critical"
    assert address in alert["annotations"]["summary"]
    # Only that exporter: the other still runs, so "no exporter reports" stays silent.
    assert len(down()) == 1
    # The fleet overview keeps showing the dead exporter, as DOWN (0), beside the live one.
    (expr,) = [expr for title, expr in panel_queries(
        REPO / "grafana/qianfan-fleet-overview.json", {}) if title == "Exporter scraped"]
    scraped = {r["metric"]["instance"]: r["value"][1] for r in promql(api, expr)}
    assert scraped[address] == "0" and len(scraped) == 2, scraped
    assert set(scraped.values()) == {"0", "1"}, scraped


def _rfc3339(value: str) -> float:
    from datetime import datetime

    # Prometheus gives nanoseconds ("2026-11-29T10:00:00.123456789Z"); keep microseconds.
    head, _, fraction = value.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    return stamp + float("0." + (fraction or "0")[:6])
