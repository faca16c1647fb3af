"""Scale out: discovery, many accounts, retention and max_runs, sharding.

Everything runs against the simulated Qianfan with a clock the test moves, except
the scheduler test, which needs real time to show that one hung account does not
hold back another.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from qf_exporter.app import Exporter
from qf_exporter.config import Account, Config, Discovery, Poll
from qf_exporter.patterns import compile_pattern
from qf_exporter.poller import Shard
from qf_exporter.simulator import QianfanSimulator, SimJob, SimRun, World
from tests.helpers import (
    ManualClock,
    account,
    parse_samples,
    series,
    value,
)

DAY = 86400.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def acct(sim: QianfanSimulator, **kw: object) -> Account:
    """An account on ``sim`` with a budget that does not slow the tests down."""
    kw.setdefault("qps", 1000.0)
    return account(sim, **kw)  # type: ignore[arg-type]


def samples_of(exporter: Exporter) -> Samples:
    return parse_samples(exporter.exposition())


def exported(samples: Samples, **labels: str) -> set[tuple[str, str, str, str]]:
    """(account, api, job_id, task_id) of every exported run."""
    runs = set()
    for lbls in series(samples, "qianfan_finetune_run_info", **labels):
        d = dict(lbls)
        runs.add((d["account"], d["api"], d["job_id"], d["task_id"]))
    return runs


def targets_up(samples: Samples, **labels: str) -> dict[str, float]:
    return {dict(k)["target"]: v for k, v in series(samples, "qianfan_target_up", **labels).items()}


def requested(sim: QianfanSimulator, action: str, since: int = 0) -> list[str]:
    """The targets of ``action`` requests the simulator answered, after entry ``since``."""
    return [e.target for e in sim.logged()[since:] if e.action == action]


class GatedWorld(World):
    """A world whose V2 run listings hang until the test opens ``gate``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.gate = threading.Event()
        self.stuck = 0  # listings that reached the gate
        self.arrived = threading.Condition()

    def visible_runs(self, job: SimJob, now: float) -> list[SimRun]:
        with self.arrived:
            self.stuck += 1
            self.arrived.notify_all()
        self.gate.wait()
        return super().visible_runs(job, now)

    def wait_stuck(self, count: int = 1) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: self.stuck >= count, timeout=30)


@pytest.fixture
def start_sim(clock: ManualClock) -> Iterator[Callable[..., QianfanSimulator]]:
    """More simulated Qianfans, each with its own world and keys."""
    started: list[QianfanSimulator] = []

    def start(world: World, credentials: dict[str, str],
              wall_clock: Callable[[], float] = clock) -> QianfanSimulator:
        simulator = QianfanSimulator(world, credentials, wall_clock=wall_clock).start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        if isinstance(simulator.world, GatedWorld):
            simulator.world.gate.set()  # let hung handlers finish before stopping
        simulator.stop()


# --- discovery ---------------------------------------------------------------------------


def test_discovery_reads_every_page_and_polls_every_job(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    ids = [f"job-d{j:03d}" for j in range(130)]  # two pages of DescribeFineTuningJobs
    for job_id in ids:
        world.add_job(job_id, created=clock() - DAY)
        world.add_run(job_id, f"task-{job_id}", created=clock() - 100, duration=10_000)
    exporter = make_exporter(acct(sim, discover=True))
    exporter.poller.poll_all()

    samples = samples_of(exporter)
    assert exported(samples) == {("default", "v2", j, f"task-{j}") for j in ids}
    assert targets_up(samples, api="v2") == dict.fromkeys(ids, 1)
    assert value(samples, "qianfan_up", account="default") == 1
    assert value(samples, "qianfan_discovered_jobs", account="default") == 130
    assert sim.request_count("DescribeFineTuningJobs") == 2
    assert sorted(requested(sim, "DescribeFineTuningTasks")) == ids


def test_discovery_filters_and_configured_jobs_stay(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    now = clock()
    jobs = {  # job id: (name, model, train mode, created)
        "job-keep": ("prod-sft-chat", "ERNIE-Speed-8K", "SFT", now - DAY),
        "job-aging": ("prod-sft-aging", "ERNIE-Speed-8K", "SFT", now - 6 * DAY),
        "job-tmp": ("prod-sft-tmp", "ERNIE-Speed-8K", "SFT", now - DAY),  # exclude
        "job-dev": ("dev-sft", "ERNIE-Speed-8K", "SFT", now - DAY),  # include
        "job-lite": ("prod-lite", "ERNIE-Lite-8K", "SFT", now - DAY),  # models
        "job-dpo": ("prod-dpo", "ERNIE-Speed-8K", "DPO", now - DAY),  # train_modes
        "job-old": ("prod-old", "ERNIE-Speed-8K", "SFT", now - 30 * DAY),  # max_age
        "job-mine": ("dev-configured", "ERNIE-Lite-8K", "DPO", now - 30 * DAY),  # configured
    }
    for job_id, (name, model, mode, created) in jobs.items():
        world.add_job(job_id, name, model=model, train_mode=mode, created=created)
        world.add_run(job_id, f"task-{job_id}", created=now - 100, duration=100 * DAY)
    discovery = Discovery(
        interval=3600,
        include=(compile_pattern(r"^prod-"),),  # RE2, as load_config compiles them
        exclude=(compile_pattern(r"-tmp$"),),
        models=("ERNIE-Speed-8K",),
        train_modes=("SFT",),
        max_age=7 * DAY,
    )
    exporter = make_exporter(
        acct(sim, jobs=("job-mine",), discover=True, discovery=discovery))
    exporter.poller.poll_all()
    samples = samples_of(exporter)
    assert {run[2] for run in exported(samples)} == {"job-keep", "job-aging", "job-mine"}
    assert set(targets_up(samples)) == {"job-keep", "job-aging", "job-mine"}
    assert set(requested(sim, "DescribeFineTuningTasks")) == {"job-keep", "job-aging",
                                                              "job-mine"}
    assert value(samples, "qianfan_discovered_jobs") == 2

    # Two days on, job-aging is older than max_age: the next listing lets it go.
    clock.advance(2 * DAY)
    exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run[2] for run in exported(samples)} == {"job-keep", "job-mine"}
    assert set(targets_up(samples)) == {"job-keep", "job-mine"}


def test_the_job_list_refreshes_at_its_own_interval(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    start = clock()
    world.add_job("job-a", created=start - DAY)
    world.add_run("job-a", "task-a", created=start - 100, duration=100 * DAY)
    world.add_job("job-late", created=start + 30)  # appears upstream half a minute in
    world.add_run("job-late", "task-late", created=start + 30, duration=100 * DAY)
    exporter = make_exporter(acct(sim, discover=True, discovery=Discovery(interval=600)))

    listings: list[int] = []
    found = None
    for minute in range(21):  # polls at 0, 60, ..., 1200 s
        exporter.poller.poll_all(force=False)
        listings.append(sim.request_count("DescribeFineTuningJobs"))
        if found is None and exported(samples_of(exporter), job_id="job-late"):
            found = minute * 60
        clock.advance(60)
    # One listing at start, one every 600 s; the runs are read every poll.
    assert listings == [1] * 10 + [2] * 10 + [3]
    assert found == 600
    assert requested(sim, "DescribeFineTuningTasks").count("job-a") == 21


def test_jobs_that_vanish_upstream_are_dropped(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    now = clock()
    for job_id in ("job-live", "job-gone", "job-gone-done", "job-conf"):
        world.add_job(job_id, created=now - DAY)
    for job_id in ("job-live", "job-gone", "job-conf"):
        world.add_run(job_id, f"task-{job_id}", created=now - 100, duration=100 * DAY)
    world.add_run("job-gone-done", "task-job-gone-done", created=now - DAY, duration=600)
    exporter = make_exporter(acct(sim, jobs=("job-conf",), discover=True,
                                     discovery=Discovery(interval=600)))
    exporter.poller.poll_all()
    assert len(exported(samples_of(exporter))) == 4
    for job_id in ("job-gone", "job-gone-done", "job-conf"):
        world.remove_job(job_id)

    # A minute later: the running job is read, the API says it no longer exists, and
    # it goes at once. The finished job is not due yet; the configured one stays down.
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run[2] for run in exported(samples)} == {"job-live", "job-gone-done"}
    assert targets_up(samples) == {"job-live": 1, "job-gone-done": 1, "job-conf": 0}
    # "No such job" is an answer from Qianfan: the account is reachable, one job is not.
    assert value(samples, "qianfan_up") == 1

    # The next listing no longer has the finished job: it goes too.
    clock.advance(540)
    exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run[2] for run in exported(samples)} == {"job-live"}
    assert targets_up(samples) == {"job-live": 1, "job-conf": 0}
    assert value(samples, "qianfan_discovered_jobs") == 1


def test_a_failing_listing_keeps_the_previous_job_list(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    now = clock()
    for job_id in ("job-a", "job-b", "job-conf"):
        world.add_job(job_id, created=now - DAY)
        world.add_run(job_id, f"task-{job_id}", created=now - 100, duration=100 * DAY)
    exporter = make_exporter(acct(sim, jobs=("job-conf",), discover=True,
                                     discovery=Discovery(interval=600)))
    exporter.poller.poll_all()
    assert value(samples_of(exporter), "qianfan_up") == 1

    sim.add_fault("http_500", action="DescribeFineTuningJobs")
    world.add_job("job-new", created=clock())
    world.add_run("job-new", "task-job-new", created=clock(), duration=100 * DAY)
    for minute in range(1, 13):  # the refresh at 600 s fails, and is tried every poll
        clock.advance(60)
        before = len(sim.logged())
        exporter.poller.poll_all(force=False)
        samples = samples_of(exporter)
        assert value(samples, "qianfan_up") == (0 if minute >= 10 else 1)
        assert targets_up(samples) == {"job-a": 1, "job-b": 1, "job-conf": 1}
        assert {run[2] for run in exported(samples)} == {"job-a", "job-b", "job-conf"}
        assert sorted(requested(sim, "DescribeFineTuningTasks", before)) == [
            "job-a", "job-b", "job-conf"]
    assert value(samples, "qianfan_api_request_failures_total",
                 action="DescribeFineTuningJobs", reason="server") == 3  # 600, 660, 720 s
    last_good = value(samples, "qianfan_last_successful_poll_timestamp_seconds")
    assert last_good == now + 540  # the last poll before the listing failed

    sim.clear_faults()  # the failed listing is tried again at the next poll
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert value(samples, "qianfan_up") == 1
    assert {run[2] for run in exported(samples)} == {"job-a", "job-b", "job-conf", "job-new"}


def test_a_listing_that_never_worked_still_reads_the_configured_jobs(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    world.add_job("job-conf", created=clock() - DAY)
    world.add_run("job-conf", "task-conf", created=clock() - 100, duration=DAY)
    sim.add_fault("list_not_list", action="DescribeFineTuningJobs")
    exporter = make_exporter(acct(sim, jobs=("job-conf",), discover=True))
    exporter.poller.poll_all()
    samples = samples_of(exporter)
    assert value(samples, "qianfan_up") == 0
    assert targets_up(samples) == {"job-conf": 1}
    assert exported(samples) == {("default", "v2", "job-conf", "task-conf")}
    assert value(samples, "qianfan_discovered_jobs") == 0
    assert "jobList" in exporter.poller.snapshot.accounts["default"].discovery_error
    assert value(samples, "qianfan_api_request_failures_total",
                 action="DescribeFineTuningJobs", reason="invalid_response") == 1


# --- many accounts -----------------------------------------------------------------------

KEY_A, SECRET_A = "AKteamA0123456789abcdef", "SKteamA-secret-0123456789abcdef"
KEY_B, SECRET_B = "AKteamB0123456789abcdef", "SKteamB-secret-0123456789abcdef"


def two_teams(clock: Callable[[], float], world_a: World, world_b: World) -> None:
    now = clock()
    world_a.add_job("job-a", created=now - DAY)
    world_a.add_run("job-a", "task-a", created=now - 100, duration=100 * DAY)
    world_a.add_v1_run(11, 21, created=now - 100, duration=100 * DAY)
    for job_id in ("job-b1", "job-b2"):
        world_b.add_job(job_id, created=now - DAY)
        world_b.add_run(job_id, f"task-{job_id}", created=now - 100, duration=100 * DAY)


def test_each_account_has_its_own_keys_endpoint_budget_and_targets(
    clock: ManualClock, start_sim: Callable[..., QianfanSimulator],
    make_exporter: Callable[..., Exporter]
) -> None:
    world_a, world_b = World(clock), World(clock)
    two_teams(clock, world_a, world_b)
    sim_a = start_sim(world_a, {KEY_A: SECRET_A})
    sim_b = start_sim(world_b, {KEY_B: SECRET_B})
    exporter = make_exporter(
        acct(sim_a, name="a", jobs=("job-a",), tasks=((11, 21),), access_key=KEY_A,
                secret_key=SECRET_A, qps=2),
        acct(sim_b, name="b", discover=True, access_key=KEY_B, secret_key=SECRET_B, qps=7),
    )
    exporter.poller.poll_all()
    samples = samples_of(exporter)
    assert exported(samples) == {
        ("a", "v2", "job-a", "task-a"), ("a", "v1", "21", "11"),
        ("b", "v2", "job-b1", "task-job-b1"), ("b", "v2", "job-b2", "task-job-b2"),
    }
    assert value(samples, "qianfan_up", account="a") == 1
    assert value(samples, "qianfan_up", account="b") == 1
    # Each simulator saw only its own account's key and targets.
    # (and the detail of each running V2 run, for its progress)
    assert {(e.access_key, e.action, e.target) for e in sim_a.logged()} == {
        (KEY_A, "DescribeFineTuningTasks", "job-a"), (KEY_A, "jobDetail", "11/21"),
        (KEY_A, "DescribeFineTuningTask", "task-a")}
    assert {(e.access_key, e.action, e.target) for e in sim_b.logged()} == {
        (KEY_B, "DescribeFineTuningJobs", ""),
        (KEY_B, "DescribeFineTuningTasks", "job-b1"),
        (KEY_B, "DescribeFineTuningTasks", "job-b2"),
        (KEY_B, "DescribeFineTuningTask", "task-job-b1"),
        (KEY_B, "DescribeFineTuningTask", "task-job-b2")}
    assert exporter.poller.accounts["a"].client.limiter.capacity == 2
    assert exporter.poller.accounts["b"].client.limiter.capacity == 7
    assert exporter.poller.accounts["a"].client.limiter is not (
        exporter.poller.accounts["b"].client.limiter)

    # Account a is throttled and then refused: b does not notice.
    sim_a.add_fault("rate_limit_18", action="DescribeFineTuningTasks")
    sim_a.add_fault("auth_403", action="jobDetail")
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert value(samples, "qianfan_up", account="a") == 0
    assert value(samples, "qianfan_up", account="b") == 1
    assert value(samples, "qianfan_api_request_failures_total", account="a",
                 action="DescribeFineTuningTasks", reason="rate_limited") == 1
    assert value(samples, "qianfan_api_request_failures_total", account="a",
                 action="jobDetail", reason="auth") == 1
    # b's failure counters exist from the start (at 0), and stay there.
    b_failures = series(samples, "qianfan_api_request_failures_total", account="b")
    assert b_failures and set(b_failures.values()) == {0}
    assert value(samples, "qianfan_last_successful_poll_timestamp_seconds",
                 account="b") == clock()


def test_a_hung_account_does_not_delay_another_accounts_poll(
    clock: ManualClock, start_sim: Callable[..., QianfanSimulator],
    make_exporter: Callable[..., Exporter]
) -> None:
    world_a, world_b = GatedWorld(clock), World(clock)
    two_teams(clock, world_a, world_b)
    sim_a = start_sim(world_a, {KEY_A: SECRET_A})
    sim_b = start_sim(world_b, {KEY_B: SECRET_B})
    # A request may take 30 s: account a's poll hangs until the gate opens.
    poll = Poll(interval=60, finished_interval=1800, stale_after=600, timeout=30, retries=0)
    exporter = make_exporter(
        acct(sim_a, name="a", jobs=("job-a",), access_key=KEY_A, secret_key=SECRET_A),
        acct(sim_b, name="b", jobs=("job-b1", "job-b2"), access_key=KEY_B,
                secret_key=SECRET_B),
        poll=poll,
    )
    hung = threading.Thread(target=exporter.poller.poll_account, args=("a",), daemon=True)
    hung.start()
    world_a.wait_stuck()

    state = exporter.poller.poll_account("b")
    assert state.up
    samples = samples_of(exporter)
    assert value(samples, "qianfan_up", account="b") == 1
    assert value(samples, "qianfan_last_successful_poll_timestamp_seconds",
                 account="b") == clock()
    assert {run[2] for run in exported(samples, account="b")} == {"job-b1", "job-b2"}
    assert value(samples, "qianfan_finetune_run_last_read_timestamp_seconds",
                 account="b", job_id="job-b1") == clock()
    assert hung.is_alive()  # a is still waiting for its answer
    assert value(samples, "qianfan_up", account="a") == 0
    assert exported(samples, account="a") == set()

    world_a.gate.set()
    hung.join(timeout=30)
    assert not hung.is_alive()
    samples = samples_of(exporter)
    assert value(samples, "qianfan_up", account="a") == 1
    assert exported(samples, account="a") == {("a", "v2", "job-a", "task-a")}
    assert sim_b.request_count("DescribeFineTuningTasks") == 2


def test_the_scheduler_keeps_polling_an_account_while_another_hangs(
    start_sim: Callable[..., QianfanSimulator]
) -> None:
    """Real scheduler, real time: b is polled again and again while a's poll hangs."""
    world_a, world_b = GatedWorld(time.time), World(time.time)
    two_teams(time.time, world_a, world_b)
    sim_a = start_sim(world_a, {KEY_A: SECRET_A}, wall_clock=time.time)
    sim_b = start_sim(world_b, {KEY_B: SECRET_B}, wall_clock=time.time)
    poll = Poll(interval=0.2, finished_interval=0.2, stale_after=60, timeout=30, retries=0)
    exporter = Exporter(
        Config(accounts=(
            acct(sim_a, name="a", jobs=("job-a",), access_key=KEY_A, secret_key=SECRET_A),
            acct(sim_b, name="b", jobs=("job-b1", "job-b2"), access_key=KEY_B,
                    secret_key=SECRET_B),
        ), poll=poll),
        process_metrics=False,
    )
    polled = threading.Condition()

    def on_change(_snapshot: object) -> None:
        with polled:
            polled.notify_all()

    exporter.poller.on_change = on_change

    def b_reads() -> int:
        return sim_b.request_count("DescribeFineTuningTasks")

    try:
        exporter.start()
        world_a.wait_stuck()
        stuck_at = b_reads()
        with polled:
            assert polled.wait_for(lambda: b_reads() >= stuck_at + 10, timeout=30)
        # All the while, a's one poll waited for its answer: it never finished.
        assert world_a.stuck == 1
        assert "a" not in exporter.poller.snapshot.accounts
        samples = samples_of(exporter)
        assert value(samples, "qianfan_up", account="b") == 1
        assert value(samples, "qianfan_up", account="a") == 0
        assert {run[2] for run in exported(samples)} == {"job-b1", "job-b2"}

        # Stopping does not wait for the hung poll.
        stopper = threading.Thread(target=exporter.stop, daemon=True)
        stopper.start()
        stopper.join(timeout=20)
        assert not stopper.is_alive()
        after_stop = b_reads()
    finally:
        world_a.gate.set()
        exporter.stop()
    assert sim_a.request_count() <= 1
    assert b_reads() <= after_stop + 2  # at most the reads already under way


# --- retention and max_runs ----------------------------------------------------------------


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
    assert {run[3] for run in exported(samples)} == {"task-recent", "task-running"}
    assert left_out(samples, "retention") == 2
    assert left_out(samples, "max_runs") == 0  # present from the start
    assert targets_up(samples) == {"job-a": 1, "10250/6205": 1}  # the targets are still read

    for _ in range(29):  # task-recent finished 30 min ago: it goes 30 min from now
        clock.advance(60)
        exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run[3] for run in exported(samples)} == {"task-recent", "task-running"}
    assert left_out(samples, "retention") == 2
    for _ in range(5):  # gone once it finished more than an hour ago, counted once
        clock.advance(60)
        exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run[3] for run in exported(samples)} == {"task-running"}
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
    assert {run[3] for run in exported(samples)} == {"task-running"}
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
    assert {run[3] for run in exported(samples)} == {"task-2", "task-3", "task-4"}
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
    assert {run[3] for run in exported(samples)} == {"task-3", "task-4", "task-5"}
    assert left_out(samples, "max_runs") == 3  # task-2 is left out now

    # task-5 vanishes upstream: task-2 is back. A new run pushes it out again: it was
    # counted already, the run that left is not counted at all.
    job.runs[:] = [r for r in job.runs if r.task_id != "task-5"]
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run[3] for run in exported(samples)} == {"task-2", "task-3", "task-4"}
    world.add_run("job-a", "task-6", created=clock(), duration=100 * DAY)
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run[3] for run in exported(samples)} == {"task-3", "task-4", "task-6"}
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
    assert {run[3] for run in exported(samples, account="capped")} == {
        "task-0", "task-1", "task-2"}
    assert left_out(samples, "retention", "capped") == 1
    assert left_out(samples, "max_runs", "capped") == 0
    assert {run[3] for run in exported(samples, account="free")} == {
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


# --- sharding ------------------------------------------------------------------------------


def test_shards_export_every_run_once_and_split_the_requests(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    now = clock()
    configured = tuple(f"job-c{j:02d}" for j in range(20))
    discovered = [f"job-d{j:02d}" for j in range(40)]
    runs: set[tuple[str, str, str, str]] = set()
    for j, job_id in enumerate((*configured, *discovered)):
        world.add_job(job_id, created=now - DAY)
        for r in range(1 + j % 3):
            world.add_run(job_id, f"task-{job_id}-{r}", created=now - 1000 + r,
                          duration=100 * DAY)
            runs.add(("default", "v2", job_id, f"task-{job_id}-{r}"))
    pairs = tuple((7000 + k, 9000 + k) for k in range(9))
    for v1_task, v1_job in pairs:
        world.add_v1_run(v1_task, v1_job, created=now - 100, duration=DAY)
        runs.add(("default", "v1", str(v1_job), str(v1_task)))
    assert len(runs) == 9 + sum(1 + j % 3 for j in range(60))

    replicas = [
        make_exporter(acct(sim, jobs=configured, tasks=pairs, discover=True),
                      shard=Shard(i, 3))
        for i in range(3)
    ]
    shares: list[set[tuple[str, str, str, str]]] = []
    v2_reads: list[set[str]] = []
    v1_reads: list[set[str]] = []
    for replica in replicas:
        since = len(sim.logged())
        replica.poller.poll_all()
        samples = samples_of(replica)
        assert value(samples, "qianfan_up") == 1
        shares.append(exported(samples))
        tasks = requested(sim, "DescribeFineTuningTasks", since)
        details = requested(sim, "jobDetail", since)
        assert len(tasks) == len(set(tasks)) and len(details) == len(set(details))
        v2_reads.append(set(tasks))
        v1_reads.append(set(details))
        assert requested(sim, "DescribeFineTuningJobs", since) == [""]  # each lists all
        assert set(targets_up(samples)) == set(tasks) | set(details)
        assert {run[2] for run in shares[-1] if run[1] == "v2"} == set(tasks)

    for i in range(3):
        assert shares[i] and v2_reads[i] and v1_reads[i], f"shard {i} got nothing"
        for k in range(i + 1, 3):
            assert not shares[i] & shares[k]
            assert not v2_reads[i] & v2_reads[k]
            assert not v1_reads[i] & v1_reads[k]
    assert set().union(*shares) == runs
    assert set().union(*v2_reads) == {*configured, *discovered}
    assert set().union(*v1_reads) == {f"{t}/{j}" for t, j in pairs}
    for i, replica in enumerate(replicas):
        assert value(samples_of(replica), "qianfan_exporter_shard_info", shard=str(i),
                     total_shards="3") == 1


def test_shard_assignment_is_fixed_across_processes() -> None:
    expected = {  # sha256 of "account\0target": the same in every process and release
        ("default", "job-a"): 0,
        ("default", "job-c"): 1,
        ("default", "10250/6205"): 2,
        ("team-b", "7263/4612"): 0,
    }
    for (acct, target), owner in expected.items():
        assert [i for i in range(3) if Shard(i, 3).owns(acct, target)] == [owner]
    assert [i for i in range(5) if Shard(i, 5).owns("prod", "job-fleet00042")] == [3]
    assert all(Shard().owns("default", t) for t in ("job-a", "10250/6205"))

    names = [f"job-{k:04d}" for k in range(600)]
    here = [next(i for i in range(4) if Shard(i, 4).owns("default", n)) for n in names]
    assert all(90 <= here.count(i) <= 210 for i in range(4))  # each shard gets a fair share
    script = (
        "import json, sys; from qf_exporter.poller import Shard; "
        "names = json.loads(sys.argv[1]); "
        "print(json.dumps([next(i for i in range(4) if Shard(i, 4).owns('default', n)) "
        "for n in names]))"
    )
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", script, json.dumps(names)], env=env,
                             capture_output=True, text=True, check=True, timeout=60,
                             cwd=os.path.dirname(os.path.dirname(__file__)))
        assert json.loads(out.stdout) == here

    for bad in ((3, 3), (-1, 3), (0, 0)):
        with pytest.raises(ValueError):
            Shard(*bad)
