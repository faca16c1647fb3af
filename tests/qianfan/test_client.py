"""The signed client against the simulated Qianfan: paging, errors, retries, budget."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from qf_exporter.config.file import Account, V1Target
from qf_exporter.qianfan import errors
from qf_exporter.qianfan.budget import RateLimiter
from qf_exporter.qianfan.client import QianfanClient
from qf_exporter.qianfan.models import v1_detail
from qf_exporter.qianfan.telemetry import ApiMetrics
from qf_exporter.simulator import QianfanSimulator, World
from qf_exporter.util.secrets import Secret
from tests.checks import assert_no_keys
from tests.fake_time import FakeSleep, LockstepBudget
from tests.helpers import ACCESS_KEY, SECRET_KEY, ManualClock, account


def make_client(acc: Account, clock: ManualClock, **kw: Any) -> QianfanClient:
    kw.setdefault("retries", 0)
    return QianfanClient(acc, metrics=ApiMetrics(CollectorRegistry()), clock=clock, **kw)


def job_detail(client: QianfanClient, pair: V1Target) -> Any:
    """A V1 run's detail object, once ``models`` has checked it is one."""
    return client.job_detail(pair, read=lambda result: v1_detail(result).raw)


def failures(client: QianfanClient, action: str, reason: str) -> float:
    value = client.metrics.failures.labels(client.account.name, action, reason)._value.get()
    return float(value)


def test_pages_through_more_than_100_runs(world: World, sim: QianfanSimulator,
                                          clock: ManualClock) -> None:
    world.add_job("job-big")
    for i in range(250):
        world.add_run("job-big", f"task-{i:04d}", created=clock() - 1000 + i)
    client = make_client(account(sim, jobs=("job-big",)), clock)
    items = client.describe_tasks("job-big")
    assert [i["taskId"] for i in items] == [f"task-{i:04d}" for i in range(250)]
    assert sim.request_count("DescribeFineTuningTasks") == 3  # 100 + 100 + 50
    bodies = [entry for entry in sim.logged() if entry.action == "DescribeFineTuningTasks"]
    assert len(bodies) == 3


def test_describe_jobs_and_task(world: World, sim: QianfanSimulator, clock: ManualClock) -> None:
    for j in range(120):
        world.add_job(f"job-{j:03d}", created=clock() - 10)
    world.add_run("job-000", "task-x", created=clock() - 5)
    client = make_client(account(sim, jobs=("job-000",)), clock)
    assert len(client.describe_jobs()) == 120
    assert client.describe_task("task-x")["taskId"] == "task-x"
    with pytest.raises(errors.NotFound):
        client.describe_task("task-nope")


def test_v1_job_detail(world: World, sim: QianfanSimulator, clock: ManualClock) -> None:
    world.add_v1_run(10250, 6205, "sdk_test_7", created=clock() - 100, duration=1000)
    client = make_client(account(sim, tasks=((10250, 6205),)), clock)
    result: dict[str, Any] = job_detail(client, V1Target(10250, 6205))
    assert result["trainStatus"] == "RUNNING" and result["taskName"] == "sdk_test_7"
    with pytest.raises(errors.NotFound) as info:
        job_detail(client, V1Target(10250, 9999))
    assert info.value.code == "510301"
    with pytest.raises(errors.NotFound) as info:
        job_detail(client, V1Target(1, 2))
    assert info.value.code == "510202"


@pytest.mark.parametrize(
    ("kind", "error", "reason"),
    [
        ("rate_limit_18", errors.RateLimited, "rate_limited"),
        ("http_429", errors.RateLimited, "rate_limited"),
        ("http_500", errors.ServerError, "server"),
        ("http_503", errors.ServerError, "server"),
        ("code_2", errors.ServerError, "server"),
        ("code_336100", errors.ServerError, "server"),
        ("code_336501", errors.RateLimited, "rate_limited"),
        ("code_500000", errors.ServerError, "server"),
        ("code_500001", errors.ClientError, "client"),
        ("code_14", errors.AuthError, "auth"),
        ("auth_403", errors.AuthError, "auth"),
        ("unknown", errors.NotFound, "client"),
        ("malformed_json", errors.InvalidResponse, "invalid_response"),
        ("truncated_json", errors.InvalidResponse, "invalid_response"),
        ("empty_200", errors.InvalidResponse, "invalid_response"),
        ("result_null", errors.InvalidResponse, "invalid_response"),
        ("list_not_list", errors.InvalidResponse, "invalid_response"),
        ("wrong_types", errors.InvalidResponse, "invalid_response"),
        ("close", errors.ConnectionFailed, "connection"),
    ],
)
@pytest.mark.parametrize("api", ["v1", "v2"])
def test_every_fault_is_classified(world: World, sim: QianfanSimulator, clock: ManualClock,
                                   kind: str, error: type[Exception], reason: str,
                                   api: str) -> None:
    world.add_job("job-1")
    world.add_run("job-1", created=clock() - 10)
    world.add_v1_run(1, 2, created=clock() - 10)
    client = make_client(account(sim, jobs=("job-1",), tasks=((1, 2),)), clock)
    sim.add_fault(kind, count=1)
    action = "jobDetail" if api == "v1" else "DescribeFineTuningTasks"
    with pytest.raises(error) as info:
        if api == "v1":
            job_detail(client, V1Target(1, 2))
        else:
            client.describe_tasks("job-1")
    assert info.value.reason == reason  # type: ignore[attr-defined]
    assert failures(client, action, reason) == 1
    # The fault is spent: the next call works.
    if api == "v1":
        assert job_detail(client, V1Target(1, 2))["taskId"] == 1
    else:
        assert len(client.describe_tasks("job-1")) == 1


def test_timeout_is_classified(world: World, sim: QianfanSimulator, clock: ManualClock) -> None:
    world.add_job("job-1")
    sim.add_fault("delay", seconds=0.5, count=1)
    client = make_client(account(sim, jobs=("job-1",)), clock, timeout=0.1)
    with pytest.raises(errors.Timeout):
        client.describe_tasks("job-1")
    assert failures(client, "DescribeFineTuningTasks", "timeout") == 1


def test_refused_connection_is_classified(clock: ManualClock) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    acc = Account(name="x", access_key=Secret("a"), secret_key=Secret("b"),
                  endpoint=f"http://127.0.0.1:{port}", jobs=("job-1",))
    client = make_client(acc, clock)
    with pytest.raises(errors.ConnectionFailed):
        client.describe_tasks("job-1")


def test_wrong_secret_is_auth_and_not_retried(world: World, sim: QianfanSimulator,
                                              clock: ManualClock) -> None:
    world.add_job("job-1")
    sleep = FakeSleep()
    client = make_client(account(sim, jobs=("job-1",), secret_key="wrong"), clock,
                         retries=3, sleep=sleep)
    with pytest.raises(errors.AuthError) as info:
        client.describe_tasks("job-1")
    assert info.value.code == "IamSignatureInvalid"
    assert sim.request_count() == 1 and sleep.delays == []
    assert_no_keys(str(info.value), keys=("wrong", SECRET_KEY))


def test_client_errors_are_not_retried(world: World, sim: QianfanSimulator,
                                       clock: ManualClock) -> None:
    world.add_job("job-1")
    sleep = FakeSleep()
    client = make_client(account(sim, jobs=("job-1",)), clock, retries=3, sleep=sleep)
    sim.add_fault("code_500001")
    with pytest.raises(errors.ClientError):
        client.describe_tasks("job-1")
    assert sim.request_count() == 1 and sleep.delays == []


def test_retries_back_off_exponentially_with_jitter_and_recover(
    world: World, sim: QianfanSimulator, clock: ManualClock
) -> None:
    world.add_job("job-1")
    sleep = FakeSleep()
    client = make_client(account(sim, jobs=("job-1",)), clock, retries=4, sleep=sleep,
                         backoff_base=0.5, backoff_cap=2.0)
    sim.add_fault("http_500", count=4)
    assert client.describe_tasks("job-1") == []
    assert sim.request_count() == 5
    # Attempt k waits between half and all of min(cap, base * 2**k).
    for k, delay in enumerate(sleep.delays):
        ceiling = min(2.0, 0.5 * 2**k)
        assert ceiling / 2 <= delay <= ceiling
    assert failures(client, "DescribeFineTuningTasks", "server") == 4


def test_retry_after_is_honoured(world: World, sim: QianfanSimulator, clock: ManualClock) -> None:
    world.add_job("job-1")
    sleep = FakeSleep()
    client = make_client(account(sim, jobs=("job-1",)), clock, retries=2, sleep=sleep,
                         backoff_base=0.01)
    sim.add_fault("http_429", count=1)  # Retry-After: 1
    assert client.describe_tasks("job-1") == []
    assert sleep.delays == [1.0]


def test_retries_stop_at_the_deadline(world: World, sim: QianfanSimulator,
                                      clock: ManualClock) -> None:
    world.add_job("job-1")
    sleep = FakeSleep()
    client = make_client(account(sim, jobs=("job-1",)), clock, retries=10, sleep=sleep,
                         backoff_base=4.0, backoff_cap=4.0)
    sim.add_fault("http_503")
    with pytest.raises(errors.ServerError):
        client.describe_tasks("job-1", deadline=clock() + 1.0)  # no room for a 2-4 s wait
    assert sim.request_count() == 1 and sleep.delays == []


def test_signs_after_waiting_for_its_turn(world: World, sim: QianfanSimulator,
                                          clock: ManualClock) -> None:
    """A signature made before a long wait would have expired (1800 s)."""
    world.add_job("job-1")

    class SlowLimiter(RateLimiter):
        def acquire(self, deadline: float | None = None) -> bool:
            clock.advance(2000)
            return True

    client = make_client(account(sim, jobs=("job-1",)), clock, limiter=SlowLimiter(5))
    assert client.describe_tasks("job-1") == []


def test_shared_budget_is_never_exceeded(world: World, clock: ManualClock) -> None:
    """With the simulator enforcing qps per AK, many concurrent workers see no rejection.

    The limiter and the gateway's stamps go in lock step on the test's clock, so a busy
    machine cannot move an arrival away from the time its limiter let it go."""
    world.add_job("job-1")
    simulator = QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}, qps=10, wall_clock=clock)
    with simulator:
        client = make_client(account(simulator, jobs=("job-1",), qps=10), clock,
                             pool_size=8)
        LockstepBudget(clock, simulator, client.limiter)
        threads = [threading.Thread(target=lambda: [client.describe_tasks("job-1")
                                                    for _ in range(4)]) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert simulator.request_count() == 32
        assert simulator.stats.throttled == 0
        arrivals = sorted(e.arrived for e in simulator.logged())
        # No trailing one-second window holds more than qps arrivals.
        for i in range(len(arrivals) - 10):
            assert arrivals[i + 10] - arrivals[i] > 1.0


def test_upstream_messages_never_echo_credentials(clock: ManualClock) -> None:
    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"requestId": "r", "code": "AccessDenied",
                               "message": f"key {ACCESS_KEY} / {SECRET_KEY} denied"}).encode()
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        acc = Account(name="x", access_key=Secret(ACCESS_KEY), secret_key=Secret(SECRET_KEY),
                      endpoint=f"http://127.0.0.1:{server.server_address[1]}", jobs=("j",))
        with pytest.raises(errors.AuthError) as info:
            make_client(acc, clock).describe_tasks("j")
        text = str(info.value) + repr(info.value) + info.value.message
        assert_no_keys(text)
        assert "<redacted>" in text
    finally:
        server.shutdown()
        server.server_close()


def test_a_rate_limit_answer_widens_the_margin(world: World, sim: QianfanSimulator,
                                               clock: ManualClock) -> None:
    world.add_job("job-1")
    client = make_client(account(sim, jobs=("job-1",)), clock)
    before = client.limiter.margin
    sim.add_fault("rate_limit_18", count=1)
    with pytest.raises(errors.RateLimited):
        client.describe_tasks("job-1")
    assert client.limiter.margin == 2 * before
    for _ in range(10):
        client.limiter.widen()
    assert client.limiter.margin == 0.25


def test_pages_without_next_marker_go_on_from_the_last_item(
    world: World, sim: QianfanSimulator, clock: ManualClock
) -> None:
    world.add_job("job-big")
    for i in range(250):
        world.add_run("job-big", f"task-{i:04d}", created=clock() - 1000 + i)
    sim.send_next_marker = False
    client = make_client(account(sim, jobs=("job-big",)), clock)
    ids = {item["taskId"] for item in client.describe_tasks("job-big")}
    assert ids == {f"task-{i:04d}" for i in range(250)}
