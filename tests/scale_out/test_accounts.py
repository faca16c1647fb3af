"""Many accounts: each with its own keys, endpoint, budget and targets; one hung
account delays no other (the scheduler test needs real time to show it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from qf_exporter.app import Exporter
from qf_exporter.config.file import Config, Poll
from qf_exporter.polling.snapshot import AccountState
from qf_exporter.simulator import QianfanSimulator, World
from tests.helpers import GatedWorld, ManualClock, series, value
from tests.scale_out.common import (
    DAY,
    acct,
    exported,
    samples_of,
)


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
    assert {run.job_id for run in exported(samples, account="b")} == {"job-b1", "job-b2"}
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
    start_sim: Callable[..., QianfanSimulator], monkeypatch: pytest.MonkeyPatch
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
    poll_account = exporter.poller.poll_account

    def poll_and_tell(name: str, force: bool = False) -> AccountState:
        try:
            return poll_account(name, force)
        finally:
            with polled:
                polled.notify_all()

    monkeypatch.setattr(exporter.poller, "poll_account", poll_and_tell)

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
        assert {run.job_id for run in exported(samples)} == {"job-b1", "job-b2"}

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
