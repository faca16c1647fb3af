"""The signals for the people who fine-tune, on a real Prometheus with the shipped rules.

A real ``prometheus`` scrapes a real exporter in front of the simulated Qianfan, whose
runs behave the way each alert is about: one whose loss turned NaN, one whose loss
climbs far above its best, one that has waited in the queue for hours; beside them a
healthy running run and a run that joined the queue minutes ago, which must stay quiet.
Prometheus and the exporter are started as in ``tests/system/test_prometheus_e2e.py``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from qf_exporter.app import Exporter
from qf_exporter.config.file import Config, Poll
from qf_exporter.simulator import QianfanSimulator, World, demo_world
from tests.checks import assert_runbook
from tests.helpers import (
    ACCESS_KEY,
    REPO,
    SECRET_KEY,
    ManualClock,
    account,
    free_port,
    parse_samples,
    promql,
    require_tool,
    series,
    serve,
    value,
)

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
# alert -> the simulated run it must fire for
EXPECTED = {
    "QianfanRunLossNotFinite": "task-nan",
    "QianfanRunLossDiverging": "task-diverging",
    "QianfanRunWaitingTooLong": "task-queued",
}
HOUR = 3600.0


def rules_with_short_for(tmp: Path) -> Path:
    """The shipped rules, with each new alert's `for:` cut to 2s.

    Only `for:` changes (QianfanRunWaitingTooLong's 5m would make this test wait five
    minutes; the loss alerts have none): expressions, windows and thresholds are the
    shipped ones, so the runs below must really have waited for hours, really have a
    NaN loss, really be above 1.5x their best.
    """
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in EXPECTED and rule["for"] != "0m":
                rule["for"] = "2s"
    path = tmp / "alerts.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return path


def ml_world(clock: Callable[[], float]) -> World:
    now = clock()
    world = World(clock)
    world.add_job("job-ml", "ml signals", created=now - 86400)
    # 20 checkpoints over 5h: after 1h, 3 checkpoints, the third one NaN.
    world.add_run("job-ml", "task-nan", created=now - HOUR, wait=60, duration=5 * HOUR,
                  outcome="running", checkpoints=20, loss="nan", loss_turn=2)
    # After 2h, 7 checkpoints: the best at the third, then 1.6x, 2.0x, 2.4x, 2.8x of it.
    world.add_run("job-ml", "task-diverging", created=now - 2 * HOUR, wait=60,
                  duration=5 * HOUR, outcome="running", checkpoints=20, loss="diverging",
                  loss_turn=3)
    # Created 3h ago, still in the queue.
    world.add_run("job-ml", "task-queued", created=now - 3 * HOUR, wait=24 * HOUR,
                  duration=HOUR)
    # Quiet ones: a healthy run as old as the diverging one, a run queued 10 minutes ago.
    world.add_run("job-ml", "task-healthy", created=now - 2 * HOUR, wait=60,
                  duration=5 * HOUR, outcome="running", checkpoints=20)
    world.add_run("job-ml", "task-just-queued", created=now - 600, wait=24 * HOUR,
                  duration=HOUR)
    return world


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    prometheus = require_tool("prometheus")
    world = ml_world(time.time)
    simulator = QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}).start()
    # Two identical replicas, as in docs/scaling.md's "Two identical replicas": every run's
    # series come twice, differing only in `instance`, and each alert must come once.
    config = Config(accounts=(account(simulator, name="main", jobs=("job-ml",)),),
                    poll=Poll(interval=1, finished_interval=60, stale_after=60, timeout=5,
                              retries=2))
    exporters = [Exporter(config), Exporter(config)]
    ports = [serve(exporter).port for exporter in exporters]
    for exporter in exporters:
        exporter.start()

    tmp = tmp_path_factory.mktemp("prometheus-ml")
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rules_with_short_for(tmp))]
    config.pop("alerting", None)
    (job,) = config["scrape_configs"]
    job["scrape_interval"] = "1s"
    job["static_configs"] = [{"targets": [f"127.0.0.1:{port}" for port in ports]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("w")
    process = subprocess.Popen(
        [prometheus, f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield {"api": f"http://127.0.0.1:{port}/api/v1", "process": process,
               "log": tmp / "prometheus.log"}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        for exporter in exporters:
            exporter.stop()
        simulator.stop()


def alerts(stack: dict[str, Any]) -> list[dict[str, Any]]:
    """Prometheus' active alerts; [] while it is still starting."""
    assert stack["process"].poll() is None, stack["log"].read_text()
    try:
        answer = requests.get(f"{stack['api']}/alerts", timeout=30).json()
    except requests.ConnectionError:
        return []
    found: list[dict[str, Any]] = answer["data"]["alerts"]
    return found


def test_each_signal_fires_for_its_run_and_only_for_it(stack: dict[str, Any]) -> None:
    # Prometheus is another process: ask it until every alert fires (bounded).
    deadline = time.monotonic() + 120
    while True:
        active = alerts(stack)
        firing = {(a["labels"]["alertname"], a["labels"].get("task_id"))
                  for a in active if a["state"] == "firing"}
        if set(EXPECTED.items()) <= firing:
            break
        assert time.monotonic() < deadline, f"not all of {EXPECTED} fire: {active}"
        time.sleep(0.5)
    # Nothing else is active for these alerts: not the healthy run, not the run queued
    # 10 minutes ago, not one run's alert for another run, not one alert per replica.
    ours = [a for a in active if a["labels"]["alertname"] in EXPECTED]
    assert sorted((a["labels"]["alertname"], a["labels"]["task_id"]) for a in ours) == sorted(
        EXPECTED.items())
    # Both replicas are scraped, and the joins over their twin series evaluate cleanly.
    assert len(_query(stack, 'up{job="qf-exporter"} == 1')) == 2
    groups = requests.get(f"{stack['api']}/rules", timeout=30).json()["data"]["groups"]
    health = {r["name"]: (r["health"], r.get("lastError", "")) for g in groups
              for r in g["rules"] if r["name"] in EXPECTED}
    assert health == dict.fromkeys(EXPECTED, ("ok", "")), health
    for alert in ours:
        labels = alert["labels"]
        assert labels["job_name"] == "ml signals" and labels["account"] == "main"
        assert "instance" not in labels  # aggregated by run: one alert per run
        assert_runbook(labels["alertname"], alert["annotations"]["runbook_url"])
        assert labels["severity"] == (
            "critical" if labels["alertname"] == "QianfanRunLossNotFinite" else "warning")
    waiting = next(a for a in ours if a["labels"]["alertname"] == "QianfanRunWaitingTooLong")
    assert 3 * HOUR <= float(waiting["value"]) < 3 * HOUR + 600  # waited since creation
    diverging = next(a for a in ours if a["labels"]["alertname"] == "QianfanRunLossDiverging")
    # Checkpoints 5, 6 and 7 are 2.0, 2.4 and 2.8 times the best: the value is the least.
    assert float(diverging["value"]) == pytest.approx(2.0, rel=0.01)


def test_estimated_finish_is_start_plus_elapsed_over_progress(stack: dict[str, Any]) -> None:
    """No progress change seen yet (1 % takes 3 minutes): the estimate is from the start."""
    deadline = time.monotonic() + 120
    # Per replica (each has read the run at its own times): estimate - (start + elapsed / p).
    on = "on(instance, account, api, job_id, task_id)"
    expr = (f'qianfan_finetune_run_estimated_finish_timestamp_seconds{{task_id="task-healthy"}}'
            f' - {on} (qianfan_finetune_run_start_timestamp_seconds + {on}'
            f' (qianfan_finetune_run_last_read_timestamp_seconds'
            f' - {on} qianfan_finetune_run_start_timestamp_seconds)'
            f' / {on} qianfan_finetune_run_progress_ratio)')
    while len(result := _query(stack, expr)) < 2:
        assert time.monotonic() < deadline, f"no estimated finish for task-healthy: {result}"
        time.sleep(0.5)
    assert [abs(float(r["value"][1])) < 1e-3 for r in result] == [True, True], result
    for task in ("task-queued", "task-just-queued"):  # waiting runs have none
        assert not _query(stack, 'qianfan_finetune_run_estimated_finish_timestamp_seconds'
                                 f'{{task_id="{task}"}}')


def _query(stack: dict[str, Any], expr: str) -> list[dict[str, Any]]:
    alerts(stack)  # Prometheus still runs
    try:
        return promql(stack["api"], expr)
    except requests.ConnectionError:
        return []


# --- without Prometheus ------------------------------------------------------------------


def test_demo_world_has_a_run_of_each_kind(
        clock: ManualClock, make_exporter: Callable[..., Exporter]) -> None:
    """`--demo` shows a newcomer each signal: the same runs, read by the exporter."""
    world = demo_world(clock)
    with QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}, wall_clock=clock) as sim:
        exporter = make_exporter(account(
            sim, jobs=tuple(sorted(world.jobs)), tasks=tuple(sorted(world.v1_runs))))
        exporter.poller.poll_all()
        samples = parse_samples(exporter.exposition())
    running = {dict(k)["task_id"] for k, v in series(
        samples, "qianfan_finetune_run_status", status="running").items() if v == 1}
    not_finite = {dict(k)["task_id"] for k, v in series(
        samples, "qianfan_finetune_run_loss_not_finite").items() if v == 1}
    assert len(not_finite & running) == 1
    diverging = {
        dict(k)["task_id"] for k, recent in series(
            samples, "qianfan_finetune_run_training_loss_recent_min").items()
        if recent > 1.5 * (value(samples, "qianfan_finetune_run_training_loss_min",
                                 **dict(k)) or 0)
    }
    assert len(diverging & running) == 1
    waiting = {dict(k)["task_id"] for k, v in series(
        samples, "qianfan_finetune_run_status", status="waiting").items() if v == 1}
    long_waiting = {
        task for task in waiting
        if clock() - (value(samples, "qianfan_finetune_run_start_timestamp_seconds",
                            task_id=task) or clock()) > 2 * HOUR
    }
    assert len(long_waiting) == 1


def test_each_new_alert_has_a_runbook_in_the_docs() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"]
             for r in g["rules"] if "alert" in r}
    for name in EXPECTED:
        assert_runbook(name, rules[name]["annotations"]["runbook_url"])
