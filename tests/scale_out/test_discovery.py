"""Job discovery: every page read, filters, the job list's own refresh interval, jobs
that vanish, and a listing that fails."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from qf_exporter.app import Exporter
from qf_exporter.config.file import Discovery
from qf_exporter.config.patterns import compile_pattern
from qf_exporter.simulator import QianfanSimulator, World
from tests.helpers import ManualClock, value
from tests.scale_out.common import (
    DAY,
    acct,
    exported,
    requested,
    samples_of,
    targets_up,
)


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
    assert {run.job_id for run in exported(samples)} == {"job-keep", "job-aging", "job-mine"}
    assert set(targets_up(samples)) == {"job-keep", "job-aging", "job-mine"}
    assert set(requested(sim, "DescribeFineTuningTasks")) == {"job-keep", "job-aging",
                                                              "job-mine"}
    assert value(samples, "qianfan_discovered_jobs") == 2

    # Two days on, job-aging is older than max_age: the next listing lets it go.
    clock.advance(2 * DAY)
    exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run.job_id for run in exported(samples)} == {"job-keep", "job-mine"}
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
    assert {run.job_id for run in exported(samples)} == {"job-live", "job-gone-done"}
    assert targets_up(samples) == {"job-live": 1, "job-gone-done": 1, "job-conf": 0}
    # "No such job" is an answer from Qianfan: the account is reachable, one job is not.
    assert value(samples, "qianfan_up") == 1

    # The next listing no longer has the finished job: it goes too.
    clock.advance(540)
    exporter.poller.poll_all(force=False)
    samples = samples_of(exporter)
    assert {run.job_id for run in exported(samples)} == {"job-live"}
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
        assert {run.job_id for run in exported(samples)} == {"job-a", "job-b", "job-conf"}
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
    assert {run.job_id for run in exported(samples)} == {"job-a", "job-b", "job-conf", "job-new"}


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


def test_a_bug_in_the_listing_fails_it_as_a_bad_answer_and_the_configured_jobs_are_read(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception that is no ``QianfanError`` while listing fails the listing as
    ``invalid_response`` (logged with its traceback); the configured jobs are read."""
    world.add_job("job-conf", created=clock() - DAY)
    world.add_run("job-conf", "task-conf", created=clock() - 100, duration=DAY)

    def buggy(item: Any) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr("qf_exporter.polling.discovery.parse_job", buggy)
    exporter = make_exporter(acct(sim, jobs=("job-conf",), discover=True))
    with caplog.at_level(logging.ERROR, logger="qf_exporter.polling.discovery"):
        exporter.poller.poll_all()
    samples = samples_of(exporter)
    assert value(samples, "qianfan_up") == 0
    assert targets_up(samples) == {"job-conf": 1}
    assert exported(samples) == {("default", "v2", "job-conf", "task-conf")}
    state = exporter.poller.snapshot.accounts["default"]
    assert state.discovery_error == "unexpected KeyError"
    assert state.error == "job listing failed: unexpected KeyError"
    (record,) = [r for r in caplog.records if r.name == "qf_exporter.polling.discovery"
                 and r.levelno == logging.ERROR]
    assert record.getMessage() == "unexpected error in job discovery"
    assert record.exc_info is not None and record.exc_info[0] is KeyError
