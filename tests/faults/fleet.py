"""The fleet the fault tests poll: two accounts over one simulated Qianfan (two jobs and
two V1 runs), the fault kinds with the reasons they are counted under, and helpers that
read what the exporter made of them."""

from __future__ import annotations

from dataclasses import dataclass

from qf_exporter.app import Exporter
from qf_exporter.config.file import Account, Poll
from qf_exporter.simulator import QianfanSimulator, World
from tests.fake_time import Advancing, FakeSleep
from tests.helpers import ACCESS_KEY, SECRET_KEY, ManualClock, Samples, account, series

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
    # hostile answers: an error quoting the keys in JSON escapes, listings without end
    "escaped_error": "server",
    "endless_listing": "invalid_response",  # V1: a listing is no run's detail
    "endless_wide_listing": "invalid_response",
}
NOT_RETRIED = ("code_14", "auth_403", "code_500001", "unknown")
SLOW = ("delay", "stall_body", "drip")  # these need a short request timeout


def virtual_backoff(exporter: Exporter, clock: Advancing) -> FakeSleep:
    """Backoff waits that move the test's clock instead of sleeping, and are recorded."""
    waits = FakeSleep(clock)
    for poller in exporter.poller.accounts.values():
        poller.client.sleep = waits
    return waits



def virtual_budget(exporter: Exporter, clock: ManualClock) -> FakeSleep:
    """Waits for the request budget that move the test's clock instead of sleeping
    (recorded): a budget of one request a minute costs the test no time."""
    waits = FakeSleep(clock)
    for poller in exporter.poller.accounts.values():
        poller.limiter.clock = clock
        poller.limiter.wait = waits
    return waits


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


def accounts(sim_a: QianfanSimulator, sim_b: QianfanSimulator,
             qps: float = 1000) -> tuple[Account, Account]:
    a = account(sim_a, name="a", jobs=("job-1", "job-2"), tasks=((101, 201), (102, 202)),
                qps=qps)
    b = account(sim_b, name="b", jobs=("job-1",), tasks=((101, 201),), access_key=AK_B,
                secret_key=SK_B, qps=qps)
    return a, b

