"""Retries and the request budget, through the whole exporter: backoff, Retry-After,
what is never retried, what is, and the per-key budget under concurrency.

Backoff waits do not sleep: the clients' sleep is replaced by one that moves the
test's clock (``virtual_backoff``).
"""

from __future__ import annotations

import gc
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import replace

import pytest

from qf_exporter.app import Exporter
from qf_exporter.polling.snapshot import AccountState
from qf_exporter.simulator import QianfanSimulator, World
from tests.fake_time import LockstepBudget
from tests.faults.fleet import (
    ACTION,
    NOT_RETRIED,
    POLL,
    REASON,
    TARGET,
    Fleet,
    accounts,
    failures,
    reads,
    virtual_backoff,
    virtual_budget,
)
from tests.helpers import (
    ACCESS_KEY,
    SECRET_KEY,
    ManualClock,
    account,
    scrape,
    series,
    value,
)

# --- 2. retries and the budget ---------------------------------------------------------


def test_backoff_is_exponential_capped_and_jittered_then_recovers(
    fleet: Fleet, make_exporter: Callable[..., Exporter]
) -> None:
    clock, sim = fleet.clock, fleet.sim
    a, b = accounts(sim, sim)
    exporter = make_exporter(a, b, poll=replace(POLL, retries=6))
    waits = virtual_backoff(exporter, clock)
    sim.add_fault("http_503", target="job-1", access_key=ACCESS_KEY, count=6)
    exporter.poller.poll_all()
    samples = scrape(exporter)
    # Six failures, six waits, the seventh attempt works: the target is up.
    assert reads(sim, "job-1") == 7
    assert value(samples, "qianfan_target_up", account="a", target="job-1") == 1
    assert value(samples, "qianfan_up", account="a") == 1
    assert failures(samples, "a", action="DescribeFineTuningTasks", reason="server") == 6
    assert value(samples, "qianfan_api_requests_total", account="a",
                 action="DescribeFineTuningTasks") == 7 + 1  # and job-2 once
    assert len(waits.delays) == 6
    for k, delay in enumerate(waits.delays):
        ceiling = min(10.0, 0.5 * 2**k)  # base 0.5 s, doubling, capped at 10 s
        assert ceiling / 2 <= delay <= ceiling, (k, delay)
    assert waits.delays[-1] <= 10.0 < 0.5 * 2**5

    # Jitter: targets that fail together do not retry in step.
    waits.clear()
    for target in ("job-1", "job-2", "101/201", "102/202"):
        sim.add_fault("http_500", target=target, access_key=ACCESS_KEY, count=1)
    clock.advance(60)
    exporter.poller.poll_all()
    assert len(waits.delays) == 4
    assert all(0.25 <= d <= 0.5 for d in waits.delays)
    assert len(set(waits.delays)) == 4
    assert value(scrape(exporter), "qianfan_up", account="a") == 1


def test_retry_after_is_honoured_within_the_poll_budget(
    fleet: Fleet, make_exporter: Callable[..., Exporter]
) -> None:
    clock, sim = fleet.clock, fleet.sim
    a, b = accounts(sim, sim)
    exporter = make_exporter(a, b, poll=replace(POLL, retries=10))
    waits = virtual_backoff(exporter, clock)
    # Retry-After: 25 s, every time. The read may take one interval (60 s): two waits
    # fit, a third would end past it, so the third answer is the last.
    sim.add_fault("http_429", target="job-1", access_key=ACCESS_KEY, seconds=25)
    started = clock()
    exporter.poller.poll_all()
    assert waits.delays == [25.0, 25.0]
    assert clock() - started == 50.0 <= POLL.interval
    assert reads(sim, "job-1") == 3
    samples = scrape(exporter)
    assert value(samples, "qianfan_target_up", account="a", target="job-1") == 0
    assert failures(samples, "a", action="DescribeFineTuningTasks", reason="rate_limited") == 3
    assert value(samples, "qianfan_target_up", account="a", target="job-2") == 1
    assert value(samples, "qianfan_up", account="b") == 1
    # A short Retry-After is waited out in full, even where the backoff would be shorter.
    sim.clear_faults()
    sim.add_fault("http_429", target="job-2", access_key=ACCESS_KEY, seconds=7, count=1)
    waits.clear()
    clock.advance(60)
    exporter.poller.poll_all()
    assert waits.delays == [7.0]
    assert value(scrape(exporter), "qianfan_up", account="a") == 1


@pytest.mark.parametrize("kind", NOT_RETRIED)
@pytest.mark.parametrize("api", ["v1", "v2"])
def test_auth_and_client_errors_are_never_retried(
    kind: str, api: str, fleet: Fleet, make_exporter: Callable[..., Exporter]
) -> None:
    clock, sim = fleet.clock, fleet.sim
    a, b = accounts(sim, sim)
    exporter = make_exporter(a, b, poll=replace(POLL, retries=5))
    waits = virtual_backoff(exporter, clock)
    sim.add_fault(kind, target=TARGET[api], access_key=ACCESS_KEY)
    for k in (1, 2):
        exporter.poller.poll_all()
        assert reads(sim, TARGET[api]) == k  # one request per poll, no retry
        clock.advance(60)
    assert waits.delays == []
    samples = scrape(exporter)
    assert failures(samples, "a", action=ACTION[api], reason=REASON[kind]) == 2
    assert value(samples, "qianfan_target_up", account="a", api=api, target=TARGET[api]) == 0
    assert value(samples, "qianfan_up", account="b") == 1


@pytest.mark.parametrize("kind", ["malformed_json", "close", "code_336100", "rate_limit_18"])
def test_transient_faults_are_retried_within_one_poll(
    kind: str, fleet: Fleet, make_exporter: Callable[..., Exporter]
) -> None:
    clock, sim = fleet.clock, fleet.sim
    a, b = accounts(sim, sim)
    exporter = make_exporter(a, b, poll=replace(POLL, retries=2))
    waits = virtual_backoff(exporter, clock)
    for target in TARGET.values():
        sim.add_fault(kind, target=target, access_key=ACCESS_KEY, count=2)
    exporter.poller.poll_all()
    samples = scrape(exporter)
    assert value(samples, "qianfan_up", account="a") == 1
    for api, target in TARGET.items():
        assert reads(sim, target) == 3
        assert failures(samples, "a", action=ACTION[api], reason=REASON[kind]) == 2
    assert len(waits.delays) == 4


def test_budget_holds_with_many_targets_and_high_concurrency(
    clock: ManualClock, make_exporter: Callable[..., Exporter]
) -> None:
    """The gateway enforces qps per access key; the exporter never gets throttled."""
    qps = 20
    world = World(clock)
    jobs = tuple(f"job-{j:02d}" for j in range(30))
    pairs = tuple((1000 + t, 2000 + t) for t in range(10))
    for job in jobs:
        world.add_job(job, created=clock() - 3600)
        world.add_run(job, created=clock() - 600, wait=0, duration=6000)
    for t, j in pairs:
        world.add_v1_run(t, j, created=clock() - 600, wait=0, duration=6000)
    with QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}, qps=qps, wall_clock=clock) as sim:
        acc = account(sim, name="a", jobs=jobs, tasks=pairs, qps=qps)
        exporter = make_exporter(acc, poll=replace(POLL, concurrency=16, retries=3))
        # in lock step on the test's clock, backoff included: the windows cannot
        # depend on the load
        lockstep = LockstepBudget(clock, sim, exporter.poller.accounts["a"].limiter)
        waits = virtual_backoff(exporter, lockstep)
        # Retries spend the same budget.
        for target in ("job-03", "job-17", "1004/2004"):
            sim.add_fault("http_500", target=target, count=2)
        exporter.poller.poll_all()
        samples = scrape(exporter)
        assert value(samples, "qianfan_up", account="a") == 1
        assert len(series(samples, "qianfan_target_up", account="a")) == 40
        assert len(waits.delays) == 6
        # 30 job lists, 30 details (every job has one running run), 10 V1 reads, 6 retries
        assert sim.request_count() == 30 + 30 + 10 + 6
        assert sim.stats.throttled == 0
        assert failures(samples, "a", reason="rate_limited") == 0
        arrivals = sorted(e.arrived for e in sim.logged())
        # No trailing one-second window at the gateway holds more than qps arrivals.
        for i in range(len(arrivals) - qps):
            assert arrivals[i + qps] - arrivals[i] >= 1.0, i


def test_closing_the_exporter_closes_its_connections_at_once(
    fleet: Fleet, make_exporter: Callable[..., Exporter]
) -> None:
    """After timeouts and dropped connections, stopping closes every connection to
    Qianfan right away, not whenever the garbage collector next runs."""
    clock, sim = fleet.clock, fleet.sim
    a, b = accounts(sim, sim)
    exporter = make_exporter(a, b, poll=replace(POLL, timeout=0.5, retries=1))
    virtual_backoff(exporter, clock)
    gc.disable()  # what urllib3 leaves in reference cycles stays there
    try:
        for kind in ("close", "delay", "http_500", "stall_body"):
            sim.add_fault(kind, target="job-1", count=1, seconds=60)
            exporter.poller.poll_all()
            sim.clear_faults()
        assert sim.connections > 0  # kept alive for the next poll
        exporter.stop()
        assert sim.wait_idle(timeout=10), f"{sim.connections} connections left open"
    finally:
        gc.enable()


def test_a_read_that_waits_long_for_budget_is_read_not_failed(
    fleet: Fleet, make_exporter: Callable[..., Exporter], caplog: pytest.LogCaptureFixture
) -> None:
    """With one request per 10 s and a 1 s interval, every target waits its turn and is
    read: waiting for the account's own budget is no failure, nothing is
    counted as failed, one log line says the budget cannot hold the interval, and the
    next poll's lag says how far behind it is."""
    clock, sim = fleet.clock, fleet.sim
    a = account(sim, name="a", jobs=("job-1", "job-2"), tasks=((101, 201), (102, 202)),
                qps=0.1)
    exporter = make_exporter(a, poll=replace(POLL, interval=1, timeout=0.5, retries=3))
    budget_waits = virtual_budget(exporter, clock)
    started = clock()
    with caplog.at_level(logging.INFO, logger="qf_exporter.polling.poller"):
        exporter.poller.poll_all()
    samples = scrape(exporter)
    # 2 lists, 2 running runs' details each, 2 V1 details: one every 10 s
    assert sim.request_count() == 8
    assert set(series(samples, "qianfan_target_up", account="a").values()) == {1}
    assert failures(samples, "a") == 0
    assert clock() - started >= 70 and len(budget_waits.delays) == 7
    assert value(samples, "qianfan_rate_budget_qps", account="a") == 0.1
    behind = [r for r in caplog.records if "cannot hold poll.interval" in r.getMessage()]
    assert len(behind) == 1
    numbers = behind[0].__dict__
    assert numbers["requests_per_cycle"] == 8 and numbers["budget_qps"] == 0.1
    assert numbers["holds_interval"] > 70

    with caplog.at_level(logging.INFO, logger="qf_exporter.polling.poller"):
        exporter.poller.poll_account("a")  # due at 1 s, read 70 s later
    samples = scrape(exporter)
    assert sim.request_count() == 16 and failures(samples, "a") == 0
    assert (value(samples, "qianfan_poll_lag_seconds", account="a") or 0) >= 69
    assert len([r for r in caplog.records if "cannot hold" in r.getMessage()]) == 1


def test_a_budget_short_of_a_cycle_reads_every_target_at_every_poll(
    fleet: Fleet, make_exporter: Callable[..., Exporter]
) -> None:
    """A budget that holds about half of a cycle: every poll still reads every target,
    longest ago first, and none is ever reported down; the polls are late, by the lag."""
    clock, sim = fleet.clock, fleet.sim
    a = account(sim, name="a", jobs=("job-1", "job-2"), tasks=((101, 201), (102, 202)),
                qps=2)
    # 8 requests a cycle at 2 a second: about 4 s, with an interval of 2 s
    exporter = make_exporter(a, poll=replace(POLL, interval=2, timeout=1,
                                             concurrency=1))
    virtual_budget(exporter, clock)
    orders = []
    for _ in range(3):
        since = len(sim.logged())
        exporter.poller.poll_account("a")
        orders.append([e.target for e in sim.logged()[since:]
                       if e.action in ("jobDetail", "DescribeFineTuningTasks")])
        samples = scrape(exporter)
        assert set(series(samples, "qianfan_target_up", account="a").values()) == {1}
        assert failures(samples, "a") == 0
    assert all(sorted(order) == sorted(["job-1", "job-2", "101/201", "102/202"])
               for order in orders)
    # The same turn each time: a target read late in one poll is read late in the
    # next, so each waits one poll period between reads, and none waits longer.
    assert orders[0] == orders[1] == orders[2]
    assert (value(samples, "qianfan_poll_lag_seconds", account="a") or 0) > 0


def test_stopping_ends_every_wait_for_budget_at_once(
    fleet: Fleet, make_exporter: Callable[..., Exporter]
) -> None:
    """One request per 100 s: the first read goes out, the others wait; stopping the
    exporter ends their waits, sends nothing more and counts no failure."""
    sim = fleet.sim
    a = account(sim, name="a", jobs=("job-1", "job-2"), tasks=((101, 201), (102, 202)),
                qps=0.01)
    exporter = make_exporter(a, poll=replace(POLL, concurrency=1))
    limiter = exporter.poller.accounts["a"].limiter
    waiting, wait = threading.Event(), limiter.wait

    def wait_for_turn(seconds: float) -> object:
        waiting.set()  # the first read is done, the second waits for its turn
        return wait(seconds)

    limiter.wait = wait_for_turn
    polling = threading.Thread(target=exporter.poller.poll_all)
    polling.start()
    assert waiting.wait(timeout=60)
    exporter.poller.stop()
    polling.join(timeout=60)  # the wait would otherwise last 100 s
    assert not polling.is_alive()
    assert sim.request_count() == 1
    assert failures(scrape(exporter), "a") == 0


def test_a_poll_that_overran_the_interval_is_followed_at_once(
    fleet: Fleet, make_exporter: Callable[..., Exporter]
) -> None:
    """The firings a long poll overran are skipped; the next poll starts as soon as it
    ends, not at the next firing, so targets are late by the overrun only."""
    clock, sim = fleet.clock, fleet.sim
    a = account(sim, name="a", jobs=("job-1", "job-2"), tasks=((101, 201), (102, 202)),
                qps=2)
    # 8 requests a cycle at 2 a second: about 4 s of virtual time, with an interval of 2 s
    exporter = make_exporter(a, poll=replace(POLL, interval=2, timeout=1, concurrency=1))
    virtual_budget(exporter, clock)
    poller, polled = exporter.poller, threading.Event()
    polls: list[tuple[float, float]] = []  # (start, end) on the virtual clock
    poll_account = poller.poll_account

    def counted(name: str, force: bool = False) -> AccountState:
        start = clock()
        state = poll_account(name, force)
        polls.append((start, clock()))
        if len(polls) == 3:
            poller.stop_event.set()  # ends the firing's run of polls
            polled.set()
        return state

    poller.poll_account = counted  # type: ignore[method-assign]
    poller.start()  # fires at once; no second firing comes within this test's time
    assert polled.wait(timeout=60)
    exporter.stop()
    assert len(polls) == 3
    assert all(end - start > 2 for start, end in polls)  # each ran past the interval
    # and the next began where it ended, not at a later firing
    assert all(ended == began for (_, ended), (began, _) in itertools.pairwise(polls))
    samples = scrape(exporter)
    assert set(series(samples, "qianfan_target_up", account="a").values()) == {1}
    assert failures(samples, "a") == 0
    assert sim.request_count("jobDetail") == 6  # every target read at every poll
