"""Retention and max_runs: old finished runs and runs over the cap are left out, and
each left-out run is counted once."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from qf_exporter.app import Exporter
from qf_exporter.config.file import Poll
from qf_exporter.simulator import QianfanSimulator, World
from tests.helpers import ManualClock, Samples, value
from tests.scale_out.common import (
    DAY,
    acct,
    exported,
    samples_of,
    targets_up,
)


def left_out(samples: Samples, reason: str, account_name: str = "default") -> float | None:
    return value(samples, "qianfan_runs_left_out_total", account=account_name, reason=reason)


def test_finished_retention_drops_old_runs_and_counts_each_once(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    now = clock()
    world.add_job("job-a", created=now - 10 * DAY)
    world.add_run("job-a", "task-old", created=now - 3 * DAY, wait=0, duration=3600)
    world.add_run("job-a", "task-recent", created=now - 7200, wait=0, duration=5400)  # 30 min
    world.add_run("job-a", "task-running", created=now - 100, duration=100 * DAY)
    world.add_v1_run(10250, 6205, created=now - 2 * DAY, wait=0, duration=600)
    poll = Poll(interval=60, finished_interval=1800, stale_after=600, timeout=5, retries=0,
                finished_retention=3600)
    exporter = make_exporter(acct(sim, jobs=("job-a",), tasks=((10250, 6205),)), poll=poll)
    exporter.poller.poll_all()
    samples = samples_of(exporter)
    assert {run.task_id for run in exported(samples)} == {"task-recent", "task-running"}
    assert left_out(samples, "retention") == 2
    assert left_out(samples, "max_runs") == 0  # present from the start
    assert targets_up(samples) == {"job-a": 1, "10250/6205": 1}  # the targets are still read

    for _ in range(29):  # task-recent finished 30 min ago: it goes 30 min from now
        clock.advance(60)
        exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run.task_id for run in exported(samples)} == {"task-recent", "task-running"}
    assert left_out(samples, "retention") == 2
    for _ in range(5):  # gone once it finished more than an hour ago, counted once
        clock.advance(60)
        exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run.task_id for run in exported(samples)} == {"task-running"}
    assert left_out(samples, "retention") == 3
    counts = exporter.poller.snapshot.accounts["default"].status_counts()
    assert counts["running"] == 1 and sum(counts.values()) == 1  # the landing page agrees


def test_a_left_out_run_is_counted_once_even_across_a_stale_outage(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    world.add_job("job-a", created=clock() - 10 * DAY)
    world.add_run("job-a", "task-old", created=clock() - 3 * DAY, wait=0, duration=3600)
    world.add_run("job-a", "task-running", created=clock() - 100, duration=100 * DAY)
    poll = Poll(interval=60, finished_interval=1800, stale_after=300, timeout=5, retries=0,
                finished_retention=3600)
    exporter = make_exporter(acct(sim, jobs=("job-a",)), poll=poll)
    exporter.poller.poll_all()
    assert left_out(samples_of(exporter), "retention") == 1
    sim.add_fault("http_500", target="job-a")
    for _ in range(7):  # past stale_after: the runs are dropped
        clock.advance(60)
        exporter.poller.poll_all(force=False)
    assert exported(samples_of(exporter)) == set()
    sim.clear_faults()
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run.task_id for run in exported(samples)} == {"task-running"}
    assert left_out(samples, "retention") == 1


def test_max_runs_keeps_the_newest_and_counts_each_run_once(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    now = clock()
    job = world.add_job("job-a", created=now - DAY)
    for k in range(5):  # task-0 is the oldest
        world.add_run("job-a", f"task-{k}", created=now - 1000 + 100 * k, duration=100 * DAY)
    exporter = make_exporter(acct(sim, jobs=("job-a",), max_runs=3))
    exporter.poller.poll_all()
    samples = samples_of(exporter)
    assert {run.task_id for run in exported(samples)} == {"task-2", "task-3", "task-4"}
    assert left_out(samples, "max_runs") == 2
    assert left_out(samples, "retention") == 0

    for _ in range(3):  # the same runs left out poll after poll: still counted once
        clock.advance(60)
        exporter.poller.poll_all(force=False)
    assert left_out(samples_of(exporter), "max_runs") == 2

    world.add_run("job-a", "task-5", created=clock(), duration=100 * DAY)
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run.task_id for run in exported(samples)} == {"task-3", "task-4", "task-5"}
    assert left_out(samples, "max_runs") == 3  # task-2 is left out now

    # task-5 vanishes upstream: task-2 is back. A new run pushes it out again: it was
    # counted already, the run that left is not counted at all.
    job.runs[:] = [r for r in job.runs if r.task_id != "task-5"]
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run.task_id for run in exported(samples)} == {"task-2", "task-3", "task-4"}
    world.add_run("job-a", "task-6", created=clock(), duration=100 * DAY)
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run.task_id for run in exported(samples)} == {"task-3", "task-4", "task-6"}
    assert left_out(samples, "max_runs") == 3
    assert len(exporter.poller.snapshot.accounts["default"].targets[("v2", "job-a")].runs) == 6


def test_max_runs_applies_after_retention_and_per_account(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    now = clock()
    world.add_job("job-a", created=now - 10 * DAY)
    world.add_run("job-a", "task-old", created=now - 3 * DAY, wait=0, duration=3600)
    for k in range(3):
        world.add_run("job-a", f"task-{k}", created=now - 500 + 100 * k, duration=100 * DAY)
    poll = Poll(interval=60, finished_interval=1800, stale_after=600, timeout=5, retries=0,
                finished_retention=DAY)
    exporter = make_exporter(acct(sim, name="capped", jobs=("job-a",), max_runs=3),
                             acct(sim, name="free", jobs=("job-a",)), poll=poll)
    exporter.poller.poll_all()
    samples = samples_of(exporter)
    assert {run.task_id for run in exported(samples, account="capped")} == {
        "task-0", "task-1", "task-2"}
    assert left_out(samples, "retention", "capped") == 1
    assert left_out(samples, "max_runs", "capped") == 0
    assert {run.task_id for run in exported(samples, account="free")} == {
        "task-0", "task-1", "task-2"}
    assert left_out(samples, "max_runs", "free") == 0


def cap_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.levelno == logging.WARNING and "max_runs" in r.getMessage()]


def test_a_warning_when_the_targets_exceed_max_runs(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="qf_exporter")
    pairs = tuple((10250, 6200 + k) for k in range(5))
    for task_id, job_id in pairs:
        world.add_v1_run(task_id, job_id, created=clock() - 100, duration=DAY)
    make_exporter(acct(sim, name="v1s", tasks=pairs, max_runs=3))
    warned = cap_warnings(caplog)  # at start-up, before any poll
    assert len(warned) == 1 and getattr(warned[0], "account", None) == "v1s"
    assert sim.request_count() == 0

    caplog.clear()
    world.add_job("job-a", created=clock() - DAY)
    for k in range(5):
        world.add_run("job-a", f"task-{k}", created=clock() - 100 + k, duration=DAY)
    exporter = make_exporter(acct(sim, name="v2s", jobs=("job-a",), max_runs=3))
    assert cap_warnings(caplog) == []  # a V2 job may have any number of runs
    for _ in range(3):
        exporter.poller.poll_all()
        clock.advance(60)
    warned = cap_warnings(caplog)
    assert len(warned) == 1 and getattr(warned[0], "account", None) == "v2s"

    caplog.clear()
    exporter = make_exporter(acct(sim, name="roomy", jobs=("job-a",), max_runs=5))
    exporter.poller.poll_all()
    assert cap_warnings(caplog) == []
