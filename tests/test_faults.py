"""Faults, retries and the request budget, through the whole exporter.

Each fault the simulated Qianfan can produce is injected into one target of one
account while the exporter polls (with a clock the test moves) and is scraped over
HTTP. In every case the exporter keeps serving, the target goes down with the right
``reason`` counted, every other target and account stays up, the target's last-read
runs stay until ``stale_after`` and then go (at once for an unknown job or run: that
answer is authoritative), and the next good poll brings it back.

Backoff waits do not sleep: the clients' sleep is replaced by one that moves the
test's clock (``virtual_backoff``).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest
import requests

from qf_exporter import errors
from qf_exporter.app import Exporter
from qf_exporter.classify import retry_after as _retry_after
from qf_exporter.config import Account, Poll
from qf_exporter.ratelimit import RateLimiter
from qf_exporter.simulator import FAULT_KINDS, QianfanSimulator, World
from tests.fake_time import FakeSleep
from tests.helpers import (
    ACCESS_KEY,
    SECRET_KEY,
    ManualClock,
    account,
    parse_samples,
    series,
    value,
)

AK_B, SK_B = "AKother0123456789abcdef", "SKother-0123456789abcdef-also-secret"
CREDENTIALS = {ACCESS_KEY: SECRET_KEY, AK_B: SK_B}

# stale_after is three intervals: a failing target keeps its runs for three polls.
POLL = Poll(interval=60, finished_interval=600, stale_after=180, timeout=5, concurrency=4,
            retries=0)
ACTION = {"v1": "jobDetail", "v2": "DescribeFineTuningTasks"}
# The target of account "a" that each fault hits. Account "b" reads the same job and
# V1 pair with its own access key, so only the fault's access-key filter spares it.
TARGET = {"v1": "101/201", "v2": "job-1"}
A_TARGETS = {("v2", "job-1"), ("v2", "job-2"), ("v1", "101/201"), ("v1", "102/202")}
B_TARGETS = {("v2", "job-1"), ("v1", "101/201")}

# fault kind -> the reason counted in qianfan_api_request_failures_total
REASON = {
    "rate_limit_18": "rate_limited",
    "http_429": "rate_limited",
    "http_500": "server",
    "http_503": "server",
    "code_2": "server",
    "code_336100": "server",
    "code_336501": "rate_limited",
    "code_500000": "server",
    "code_500001": "client",
    "code_14": "auth",
    "auth_403": "auth",
    "unknown": "client",
    "malformed_json": "invalid_response",
    "truncated_json": "invalid_response",
    "empty_200": "invalid_response",
    "result_null": "invalid_response",
    "list_not_list": "invalid_response",
    "wrong_types": "invalid_response",
    "delay": "timeout",
    "stall_body": "timeout",  # the answer stops halfway
    "close": "connection",
    # a bad day: only a total deadline, a size cap and a bounded parser survive these
    "drip": "timeout",
    "endless_body": "invalid_response",  # the size cap comes first on loopback
    "gzip_bomb": "invalid_response",
    "deep_json": "invalid_response",
    "huge_error": "server",
}
NOT_RETRIED = ("code_14", "auth_403", "code_500001", "unknown")
SLOW = ("delay", "stall_body", "drip")  # these need a short request timeout


def test_the_matrix_covers_every_fault_the_simulator_has() -> None:
    # "odd_fields" is no failure: see test_odd_field_types_are_absorbed_not_fatal.
    assert set(REASON) | {"odd_fields"} == set(FAULT_KINDS)


# --- helpers ---------------------------------------------------------------------------


def virtual_backoff(exporter: Exporter, clock: ManualClock) -> FakeSleep:
    """Backoff waits that move the test's clock instead of sleeping, and are recorded."""
    waits = FakeSleep(clock)
    for poller in exporter.poller.accounts.values():
        poller.client.sleep = waits
    return waits


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(exporter: Exporter) -> Samples:
    """/metrics over HTTP: it must answer 200 whatever Qianfan does."""
    if exporter.server is None:
        exporter.serve("127.0.0.1", 0, "/metrics", None)
    assert exporter.server is not None
    response = requests.get(f"http://127.0.0.1:{exporter.server.port}/metrics", timeout=10)
    assert response.status_code == 200
    return parse_samples(response.content)


def failures(samples: Samples, account_name: str, **labels: str) -> float:
    return sum(series(samples, "qianfan_api_request_failures_total", account=account_name,
                      **labels).values())


def reads(sim: QianfanSimulator, target: str, access_key: str = ACCESS_KEY) -> int:
    return sum(1 for e in sim.logged() if e.target == target and e.access_key == access_key)


def run_labels(api: str, target: str, world: World) -> list[dict[str, str]]:
    """The label sets (api, job_id, task_id) of the runs a target holds."""
    if api == "v1":
        task_id, job_id = target.split("/")
        return [{"api": "v1", "task_id": task_id, "job_id": job_id}]
    return [{"api": "v2", "job_id": target, "task_id": run.task_id}
            for run in world.jobs[target].runs]


@dataclass
class Fleet:
    world: World
    clock: ManualClock
    sim: QianfanSimulator


@pytest.fixture
def fleet(clock: ManualClock) -> Iterator[Fleet]:
    """Two jobs and two V1 runs, all training for 100 minutes (1% a minute)."""
    world = World(clock)
    for job in ("job-1", "job-2"):
        world.add_job(job, created=clock() - 3600)
        world.add_run(job, f"task-{job}-a", created=clock() - 600, wait=0, duration=6000)
        world.add_run(job, f"task-{job}-b", created=clock() - 1200, wait=0, duration=6000)
    world.add_v1_run(101, 201, created=clock() - 600, wait=0, duration=6000)
    world.add_v1_run(102, 202, created=clock() - 900, wait=0, duration=6000)
    with QianfanSimulator(world, CREDENTIALS, wall_clock=clock) as sim:
        yield Fleet(world, clock, sim)


def accounts(sim_a: QianfanSimulator, sim_b: QianfanSimulator,
             qps: float = 1000) -> tuple[Account, Account]:
    a = account(sim_a, name="a", jobs=("job-1", "job-2"), tasks=((101, 201), (102, 202)),
                qps=qps)
    b = account(sim_b, name="b", jobs=("job-1",), tasks=((101, 201),), access_key=AK_B,
                secret_key=SK_B, qps=qps)
    return a, b


# --- 1. the fault matrix ---------------------------------------------------------------


@dataclass
class Case:
    kind: str  # a simulator fault, or "refused"
    api: str  # "v1", "v2", or "both" (the whole account)

    @property
    def reason(self) -> str:
        return "connection" if self.kind == "refused" else REASON[self.kind]

    @property
    def affected(self) -> set[tuple[str, str]]:
        return set(A_TARGETS) if self.api == "both" else {(self.api, TARGET[self.api])}


CASES = [Case(kind, api) for kind in sorted(REASON) for api in ("v1", "v2")]
CASES.append(Case("refused", "both"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.kind}-{c.api}")
def test_fault(case: Case, fleet: Fleet, make_exporter: Callable[..., Exporter]) -> None:
    world, clock, sim = fleet.world, fleet.clock, fleet.sim
    # Account "a" talks to its own gateway when the test closes that one's port.
    own = QianfanSimulator(world, CREDENTIALS, wall_clock=clock).start() \
        if case.kind == "refused" else None
    try:
        a, b = accounts(own or sim, sim)
        poll = replace(POLL, timeout=0.5) if case.kind in SLOW else POLL
        exporter = make_exporter(a, b, poll=poll)
        check_fault(case, fleet, exporter, own)
    finally:
        if own is not None:
            own.stop()


def check_fault(case: Case, fleet: Fleet, exporter: Exporter,
                own: QianfanSimulator | None) -> None:
    world, clock, sim = fleet.world, fleet.clock, fleet.sim
    poller = exporter.poller
    poller.poll_all(force=False)
    samples = scrape(exporter)
    for api, target in A_TARGETS:
        assert value(samples, "qianfan_target_up", account="a", api=api, target=target) == 1
    read_at = clock()
    kept = {  # the affected runs' last-read values, which must stay while the fault lasts
        frozenset(labels.items()): value(samples, "qianfan_finetune_run_progress_ratio",
                                         account="a", **labels)
        for api, target in case.affected for labels in run_labels(api, target, world)
    }
    assert kept and all(v is not None and 0 < v < 1 for v in kept.values())

    # The fault starts.
    if own is not None:
        port = int(own.url.rsplit(":", 1)[1])
        own.stop()  # nothing listens on the port any more: connections are refused
    else:
        sim.add_fault(case.kind, target=TARGET[case.api], access_key=ACCESS_KEY,
                      seconds=60.0 if case.kind in SLOW else 0.0)
    per_poll = {action: sum(1 for api, _ in case.affected if ACTION[api] == action)
                for action in ACTION.values()}
    # A configured job or run that the API says does not exist loses its runs at once
    # (the answer is authoritative); every other failure keeps them until stale_after.
    keeps_runs = case.kind != "unknown"

    for k in range(1, 5):  # three polls within stale_after, a fourth past it
        clock.advance(60)
        poller.poll_all(force=False)
        samples = scrape(exporter)
        for api, target in A_TARGETS:
            expected = 0 if (api, target) in case.affected else 1
            assert value(samples, "qianfan_target_up", account="a", api=api,
                         target=target) == expected, (api, target)
        for api, target in B_TARGETS:
            assert value(samples, "qianfan_target_up", account="b", api=api,
                         target=target) == 1
        # One target failing is that target's problem: account a is down only when
        # every call failed (here: its gateway refused every connection).
        assert value(samples, "qianfan_up", account="a") == (0 if case.api == "both" else 1)
        assert value(samples, "qianfan_up", account="b") == 1
        for api, target in case.affected:
            assert value(samples, "qianfan_target_error_info", account="a", api=api,
                         target=target, reason=case.reason) == 1
            assert value(samples, "qianfan_target_last_success_timestamp_seconds",
                         account="a", api=api, target=target) == read_at
        # The right reason, once per failed request (no retries here), and no other.
        for action, count in per_poll.items():
            assert failures(samples, "a", action=action, reason=case.reason) == k * count
        assert failures(samples, "a") == k * sum(per_poll.values())
        assert failures(samples, "b") == 0
        # Last-read values stay (the simulator's runs moved on) until stale_after.
        for labels, progress in kept.items():
            got = value(samples, "qianfan_finetune_run_progress_ratio", account="a",
                        **dict(labels))
            last = value(samples, "qianfan_finetune_run_last_read_timestamp_seconds",
                         account="a", **dict(labels))
            if keeps_runs and k <= 3:
                assert got == progress and last == read_at, (k, dict(labels))
            else:
                assert got is None and last is None, (k, dict(labels))
        # Everything else is read afresh.
        for api, target in (A_TARGETS - case.affected):
            for labels in run_labels(api, target, world):
                assert value(samples, "qianfan_finetune_run_last_read_timestamp_seconds",
                             account="a", **labels) == clock()
        for api, target in B_TARGETS:
            for labels in run_labels(api, target, world):
                assert value(samples, "qianfan_finetune_run_last_read_timestamp_seconds",
                             account="b", **labels) == clock()
    assert value(samples, "qianfan_last_successful_poll_timestamp_seconds",
                 account="a") == (read_at if case.api == "both" else clock())

    # The fault ends: the next poll recovers.
    if own is not None:
        own = QianfanSimulator(world, CREDENTIALS, port=port, wall_clock=clock).start()
    else:
        sim.clear_faults()
    try:
        clock.advance(60)
        poller.poll_all(force=False)
        samples = scrape(exporter)
        for api, target in A_TARGETS:
            assert value(samples, "qianfan_target_up", account="a", api=api,
                         target=target) == 1
        assert value(samples, "qianfan_up", account="a") == 1
        assert value(samples, "qianfan_last_successful_poll_timestamp_seconds",
                     account="a") == clock()
        for labels, progress in kept.items():
            got = value(samples, "qianfan_finetune_run_progress_ratio", account="a",
                        **dict(labels))
            assert got is not None and progress is not None and got > progress
            assert value(samples, "qianfan_finetune_run_last_read_timestamp_seconds",
                         account="a", **dict(labels)) == clock()
        assert len(series(samples, "qianfan_finetune_run_info", account="a")) == 6
    finally:
        if own is not None:
            own.stop()


def test_odd_field_types_are_absorbed_not_fatal(
    fleet: Fleet, make_exporter: Callable[..., Exporter]
) -> None:
    """Fields of the wrong type inside well-formed runs: the run is read, the odd fields
    are left out (never NaN), and the target stays up."""
    world, clock, sim = fleet.world, fleet.clock, fleet.sim
    job = world.add_job("job-odd", created=clock() - 3600)
    run = world.add_run("job-odd", "task-odd", created=clock() - 600, wait=0, duration=6000)
    world.add_v1_run(103, 203, created=clock() - 600, wait=0, duration=6000)
    a = account(sim, name="a", jobs=("job-odd",), tasks=((103, 203),), qps=1000)
    exporter = make_exporter(a, poll=POLL)
    sim.add_fault("odd_fields")
    exporter.poller.poll_all()
    samples = scrape(exporter)
    assert value(samples, "qianfan_target_up", target="job-odd") == 1
    assert value(samples, "qianfan_target_up", target="103/203") == 1
    assert value(samples, "qianfan_finetune_run_status", task_id="task-odd",
                 status="unknown") == 1
    assert value(samples, "qianfan_finetune_run_status", task_id="103", status="unknown") == 1
    for name in ("qianfan_finetune_run_progress_ratio",
                 "qianfan_finetune_run_start_timestamp_seconds",
                 "qianfan_finetune_run_finish_timestamp_seconds",
                 "qianfan_finetune_run_training_loss"):
        assert value(samples, name, task_id="task-odd") is None, name
    assert value(samples, "qianfan_finetune_run_checkpoints", task_id="task-odd") == 0
    assert all(v == v for v in samples.values())  # no NaN anywhere
    assert failures(samples, "a") == 0
    sim.clear_faults()
    exporter.poller.poll_all()
    samples = scrape(exporter)
    assert value(samples, "qianfan_finetune_run_status", task_id="task-odd",
                 status=run.status(clock())) == 1
    assert job.runs and value(samples, "qianfan_finetune_run_progress_ratio",
                              task_id="task-odd") is not None


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


def test_retry_after_as_an_http_date() -> None:
    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    assert _retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now) == 30.0
    assert _retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now) == 0.0  # in the past
    assert _retry_after("12", now) == 12.0
    assert _retry_after("100000", now) == 300.0  # capped
    assert _retry_after("soon", now) is None
    assert _retry_after("nan", now) is None


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
        waits = virtual_backoff(exporter, clock)
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


def test_an_interrupted_wait_for_budget_sends_nothing() -> None:
    """Stopping the exporter wakes the callers waiting for budget; none of them then
    goes out over budget."""
    now = [100.0]
    stopping = threading.Event()
    limiter = RateLimiter(1, margin=0.0, clock=lambda: now[0], wait=stopping.wait)
    assert limiter.acquire()  # the first start is free
    stopping.set()
    assert not limiter.acquire()  # its turn was a second away: refused, not sent


@pytest.mark.parametrize(
    ("status", "code", "error", "retried"),
    [
        (503, "336999", errors.ServerError, True),  # an unknown code under a 5xx
        (429, "99", errors.RateLimited, True),
        (400, "99", errors.ClientError, False),
        (200, "18", errors.RateLimited, True),
        (500, "14", errors.AuthError, False),  # a known code decides
        (200, "InternalError", errors.ServerError, True),
        (403, "RequestExpired", errors.AuthError, False),
        (400, "IamAccessKeyNotExist", errors.AuthError, False),
        (400, "InappropriateJSON", errors.ClientError, False),
        (404, "ResourceNotFound", errors.NotFound, False),
        (400, "ThrottlingException", errors.RateLimited, True),
    ],
)
def test_error_classification(status: int, code: str, error: type[errors.QianfanError],
                              retried: bool) -> None:
    err = errors.from_http(status, code, "message")
    assert type(err) is error and err.retryable is retried


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


def test_a_read_that_cannot_get_budget_in_time_fails_at_once(
    fleet: Fleet, make_exporter: Callable[..., Exporter]
) -> None:
    """With one request per 10 s and a read budget of 1 s, one target is read and the
    others fail at once with reason timeout: no waiting past the budget, no retries
    (waiting only moves the next free slot later), nothing sent over budget."""
    clock, sim = fleet.clock, fleet.sim
    a = account(sim, name="a", jobs=("job-1", "job-2"), tasks=((101, 201), (102, 202)),
                qps=0.1)
    exporter = make_exporter(a, poll=replace(POLL, interval=1, timeout=0.5, retries=3))
    waits = virtual_backoff(exporter, clock)
    exporter.poller.poll_all()
    samples = scrape(exporter)
    assert sim.request_count() == 1
    assert sum(series(samples, "qianfan_target_up", account="a").values()) == 1
    assert failures(samples, "a", reason="timeout") == 3
    assert failures(samples, "a") == 3
    assert sum(series(samples, "qianfan_api_requests_total", account="a").values()) == 1
    assert waits.delays == []
