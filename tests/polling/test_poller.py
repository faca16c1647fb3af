"""The poller: a long poll publishes what it has read so far, in step with its reads."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from qf_exporter.config.file import Config
from qf_exporter.polling import poller as poller_module
from qf_exporter.polling.poller import Poller
from qf_exporter.polling.snapshot import Snapshot
from qf_exporter.qianfan.telemetry import ApiMetrics
from qf_exporter.simulator import QianfanSimulator, World
from tests.helpers import FAST_POLL, ManualClock, account

JOBS = ("job-a", "job-b", "job-c")


class Recorder:
    """A subscriber that keeps every snapshot it is handed."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def publish(self, before: Snapshot, after: Snapshot, accounts: Iterable[str]) -> None:
        self.snapshots.append(after)


def jobs_shown(snapshot: Snapshot) -> list[str]:
    state = snapshot.accounts.get("default")
    return sorted({run.job_id for run in state.runs}) if state else []


def test_a_long_poll_publishes_each_target_as_it_is_read(
    clock: ManualClock, world: World, sim: QianfanSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the pace at 0, every read of a poll after the first is published as it
    completes: a change is on the page when its target is read, not when the whole poll
    ends. The first poll is published whole (before it, the account is not ready, and a
    target not read yet would show as down for no fault)."""
    monkeypatch.setattr(poller_module, "PUBLISH_EVERY", 0.0)
    for job_id in JOBS:
        world.add_job(job_id, created=clock() - 600)
        world.add_run(job_id, f"task-{job_id}", created=clock() - 300, duration=3600)
    recorder = Recorder()
    poller = Poller(Config(accounts=(account(sim, jobs=JOBS),), poll=replace(FAST_POLL,
                                                                               concurrency=1)),
                    ApiMetrics(CollectorRegistry()), clock=clock, subscriber=recorder)
    try:
        poller.poll_account("default")
        first = len(recorder.snapshots)
        clock.advance(60)
        poller.poll_account("default", force=True)
    finally:
        poller.stop()
    assert [jobs_shown(s) for s in recorder.snapshots[:first]] == [[], list(JOBS)]
    assert recorder.snapshots[first - 1].ready
    # The second poll: one publication per read (one worker: one job at a time), each
    # with one more run read at the new time, then the poll's end.
    fresh = [sum(run.last_read == clock() for run in s.accounts["default"].runs)
             for s in recorder.snapshots[first:]]
    assert fresh[:3] == [1, 2, 3]
    assert fresh[-1] == 3


def test_a_short_poll_publishes_once(
    clock: ManualClock, world: World, sim: QianfanSimulator
) -> None:
    """At the default pace a poll that ends within it is published once, whole."""
    for job_id in JOBS:
        world.add_job(job_id, created=clock() - 600)
        world.add_run(job_id, f"task-{job_id}", created=clock() - 300, duration=3600)
    recorder = Recorder()
    poller = Poller(Config(accounts=(account(sim, jobs=JOBS),), poll=FAST_POLL),
                    ApiMetrics(CollectorRegistry()), clock=clock, subscriber=recorder)
    try:
        poller.poll_account("default")
    finally:
        poller.stop()
    assert [jobs_shown(s) for s in recorder.snapshots] == [[], list(JOBS)]


def test_a_read_is_published_on_time_while_no_other_read_completes(
    clock: ManualClock, world: World, sim: QianfanSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read followed by a pause (the budget lets reads through in bursts; here a
    listing that takes long) is published after PUBLISH_EVERY, not at the next read."""
    monkeypatch.setattr(poller_module, "PUBLISH_EVERY", 0.05)
    for job_id in ("job-a", "job-b"):
        world.add_job(job_id, created=clock() - 600)
        world.add_run(job_id, f"task-{job_id}", created=clock() - 300, duration=3600)
    seen = threading.Condition()
    snapshots: list[Snapshot] = []

    class Notifying(Recorder):
        def publish(self, before: Snapshot, after: Snapshot, accounts: Iterable[str]) -> None:
            with seen:
                snapshots.append(after)
                seen.notify_all()

    def fresh(job_id: str) -> bool:
        state = snapshots[-1].accounts.get("default")
        return state is not None and any(
            run.job_id == job_id and run.last_read == clock() for run in state.runs)

    poller = Poller(Config(accounts=(account(sim, jobs=("job-a", "job-b")),),
                           poll=replace(FAST_POLL, concurrency=2, timeout=60)),
                    ApiMetrics(CollectorRegistry()), clock=clock, subscriber=Notifying())
    second = threading.Thread(target=poller.poll_account, args=("default", True))
    try:
        poller.poll_account("default")
        clock.advance(60)
        # Answered when the fault is cleared (below), or after 60 s.
        sim.add_fault("delay", action="DescribeFineTuningTasks", target="job-b", seconds=60)
        second.start()
        with seen:
            assert seen.wait_for(lambda: fresh("job-a"), timeout=30)
        assert not fresh("job-b") and second.is_alive()  # job-b's answer is still due
    finally:
        sim.clear_faults()
        if second.ident is not None:
            second.join(timeout=30)
        poller.stop()
    assert fresh("job-a") and fresh("job-b")
