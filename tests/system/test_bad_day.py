"""A bad day upstream, through the whole exporter.

Qianfan (or a proxy in between) drips an answer one byte a second, sends a body that
never ends, a gzip bomb, JSON nested 100,000 deep, a multi-megabyte error message, or
a run named after the access key. In each case ``/metrics`` keeps answering (also
while the poll is under way), that one target goes down with the right reason, every
other target and the other account carry on, the process's peak resident memory
grows by less than the default size cap (32 MiB; the gzip bomb alone would inflate to
1 GiB), and no credential reaches the metrics, the landing page or the logs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from qf_exporter.app import Exporter
from qf_exporter.config.file import Poll
from qf_exporter.qianfan.classify import MAX_UPSTREAM_MESSAGE
from qf_exporter.simulator import QianfanSimulator, World
from tests.checks import assert_no_keys, polled_without_keys
from tests.helpers import (
    ACCESS_KEY,
    SECRET_KEY,
    ManualClock,
    account,
    parse_samples,
    reset_peak_rss,
    scrape,
    serve,
    status_bytes,
    value,
)

AK_B, SK_B = "AKbadday0123456789abcdef", "SKbadday-0123456789abcdef-secret"
CAP = 8 * 1024 * 1024  # the size cap configured here: a 5 MB error message fits
MEMORY_BOUND = 32 * 1024 * 1024  # the default cap: peak RSS must grow by less
POLL = Poll(interval=60, finished_interval=600, stale_after=600, timeout=3, concurrency=4,
            retries=0, max_response_bytes=CAP)

# fault -> (action it hits, reason counted)
BAD = {
    "drip": "timeout",
    "endless_body": "invalid_response",
    "gzip_bomb": "invalid_response",
    "deep_json": "invalid_response",
    "huge_error": "server",
}


@pytest.fixture
def world(clock: ManualClock) -> World:
    world = World(clock)
    for job in ("job-bad", "job-good"):
        world.add_job(job, created=clock() - 3600)
        world.add_run(job, f"task-{job}", created=clock() - 600, wait=0, duration=6000)
    world.add_v1_run(101, 201, created=clock() - 600, wait=0, duration=6000)
    return world


@pytest.fixture
def sim(world: World, clock: ManualClock) -> Iterator[QianfanSimulator]:
    with QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY, AK_B: SK_B},
                          wall_clock=clock) as simulator:
        yield simulator


def _exporter(sim: QianfanSimulator, make_exporter: Callable[..., Exporter]) -> Exporter:
    a = account(sim, name="a", jobs=("job-bad", "job-good"), tasks=((101, 201),))
    b = account(sim, name="b", jobs=("job-bad",), access_key=AK_B, secret_key=SK_B)
    exporter = make_exporter(a, b, poll=POLL)
    serve(exporter)
    return exporter


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_answer_downs_one_target_and_nothing_else(
    kind: str, sim: QianfanSimulator, make_exporter: Callable[..., Exporter],
    caplog: pytest.LogCaptureFixture
) -> None:
    exporter = _exporter(sim, make_exporter)
    exporter.poller.poll_all()  # a good poll first: everything is up
    assert value(scrape(exporter), "qianfan_up", account="a") == 1
    sim.add_fault(kind, action="DescribeFineTuningTasks", target="job-bad",
                  access_key=ACCESS_KEY, seconds=1.0)
    caplog.set_level(logging.DEBUG)
    resettable = reset_peak_rss()
    before = status_bytes("VmRSS")
    polling = threading.Thread(target=exporter.poller.poll_all)
    polling.start()
    # /metrics answers while the bad answer is being read.
    during = scrape(exporter)
    assert value(during, "qianfan_target_up", account="a", target="job-good") == 1
    polling.join(timeout=60)
    assert not polling.is_alive()
    grown = status_bytes("VmHWM") - before
    print(f"MEASURED {kind}: peak RSS +{grown / 2**20:.1f} MiB")
    samples = scrape(exporter)

    assert value(samples, "qianfan_target_up", account="a", target="job-bad") == 0
    assert value(samples, "qianfan_api_request_failures_total", account="a",
                 action="DescribeFineTuningTasks", reason=BAD[kind]) == 1
    assert value(samples, "qianfan_target_up", account="a", target="job-good") == 1
    assert value(samples, "qianfan_target_up", account="a", target="101/201") == 1
    assert value(samples, "qianfan_target_up", account="b", target="job-bad") == 1
    assert value(samples, "qianfan_up", account="b") == 1
    # The bad target's runs stay as last read (stale_after has not passed).
    assert value(samples, "qianfan_finetune_run_status", account="a",
                 task_id="task-job-bad", status="running") == 1
    if resettable:
        assert grown < MEMORY_BOUND, f"peak RSS grew by {grown / 2**20:.1f} MiB"
    state = exporter.poller.snapshot.accounts["a"].targets[("v2", "job-bad")]
    assert state.reason == BAD[kind]
    assert len(state.error) < MAX_UPSTREAM_MESSAGE + 200  # shown on the landing page
    for record in caplog.records:
        line = record.getMessage() + " " + " ".join(str(v) for v in vars(record).values())
        assert_no_keys(line)
        assert len(line) < 20_000, "an upstream message was logged whole"


def test_the_size_cap_is_what_the_config_says(
    sim: QianfanSimulator, make_exporter: Callable[..., Exporter]
) -> None:
    """The 5 MB error fits in 8 MiB and is read as a server error; under a 1 MiB cap
    the same answer is refused as too large."""
    a = account(sim, name="a", jobs=("job-bad",))
    exporter = make_exporter(a, poll=replace(POLL, max_response_bytes=1024 * 1024))
    sim.add_fault("huge_error", target="job-bad")
    exporter.poller.poll_all()
    samples = exporter.exposition()
    assert value(parse_samples(samples), "qianfan_api_request_failures_total",
                 action="DescribeFineTuningTasks", reason="invalid_response") == 1
    state = exporter.poller.snapshot.accounts["a"].targets[("v2", "job-bad")]
    assert "larger than 1048576 bytes" in state.error


def test_a_run_named_after_the_access_key_never_shows_it(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter], caplog: pytest.LogCaptureFixture
) -> None:
    """Upstream strings that echo the credentials are scrubbed before they reach a
    label, a page or a log line."""
    world.add_job("job-leak", f"team {ACCESS_KEY} job", created=clock() - 3600)
    world.add_run("job-leak", "task-leak", created=clock() - 900, wait=0, duration=600,
                  outcome="failed", end_fraction=0.5, error_code=500001,
                  error_message=f"cannot use {SECRET_KEY} here")
    world.add_v1_run(102, 202, f"v1 {ACCESS_KEY}", created=clock() - 600, wait=0,
                     duration=6000)
    a = account(sim, name="a", jobs=("job-leak",), tasks=((102, 202),))
    exporter = make_exporter(a, poll=POLL)
    sim.add_fault("huge_error", target="job-good")  # an error echoing the key, too
    samples = polled_without_keys(exporter, caplog)
    assert value(samples, "qianfan_finetune_run_info", task_id="task-leak",
                 job_name="team <redacted> job") == 1
    assert value(samples, "qianfan_finetune_run_error_info", task_id="task-leak",
                 error_message="cannot use <redacted> here") == 1
    assert value(samples, "qianfan_finetune_run_info", task_id="102",
                 task_name="v1 <redacted>") == 1
