"""Health at the right grain: an account is down only when Qianfan itself
cannot be used with its credentials; a target that cannot be read is that target's
problem, named on the landing page and in ``qianfan_target_up``."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import MappingProxyType

import requests

from qf_exporter.app import Exporter
from qf_exporter.exposition.render import render_health
from qf_exporter.polling.snapshot import AccountState, Budget, Snapshot
from qf_exporter.simulator import QianfanSimulator, World
from qf_exporter.web.landing import landing_page
from tests.checks import assert_no_keys
from tests.helpers import (
    ACCESS_KEY,
    SECRET_KEY,
    ManualClock,
    account,
    account_cell,
    down_rows,
    parse_samples,
    promtool_check_metrics,
    series,
    serve,
    value,
)

GOOD_JOBS = ("job-a", "job-b", "job-c", "job-d")


def page_of(exporter: Exporter) -> str:
    if exporter.server is None:
        serve(exporter)
    assert exporter.server is not None
    answer = requests.get(f"http://127.0.0.1:{exporter.server.port}/", timeout=10)
    assert answer.status_code == 200
    return answer.text


def five_jobs(world: World, clock: ManualClock) -> None:
    for job in GOOD_JOBS:
        world.add_job(job, created=clock() - 3600)
        world.add_run(job, f"task-{job}", created=clock() - 600, wait=0, duration=6000)


def test_one_unknown_job_is_that_targets_problem_not_an_outage(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    five_jobs(world, clock)
    exporter = make_exporter(account(sim, jobs=(*GOOD_JOBS, "job-typo")))
    started = clock()
    for poll in range(3):
        exporter.poller.poll_all(force=False)
        samples = parse_samples(exporter.exposition())
        assert value(samples, "qianfan_up", account="default") == 1
        # The account's last good poll moves on with every poll.
        assert value(samples, "qianfan_last_successful_poll_timestamp_seconds",
                     account="default") == clock() == started + 60 * poll
        assert value(samples, "qianfan_target_up", target="job-typo") == 0
        assert value(samples, "qianfan_target_error_info", target="job-typo",
                     reason="client") == 1
        assert value(samples, "qianfan_target_last_success_timestamp_seconds",
                     target="job-typo") is None  # never read
        for job in GOOD_JOBS:
            assert value(samples, "qianfan_target_up", target=job) == 1
            assert value(samples, "qianfan_target_last_success_timestamp_seconds",
                         target=job) == clock()
            assert value(samples, "qianfan_finetune_run_info", task_id=f"task-{job}") == 1
        assert len(series(samples, "qianfan_target_error_info")) == 1
        clock.advance(60)
    promtool_check_metrics(exporter.exposition())

    page = page_of(exporter)
    assert account_cell(page, "default") == "reachable"
    assert "DOWN" not in page
    (row,) = down_rows(page)
    assert row[:4] == ["default", "v2", "job-typo", "client"]
    assert "510301" in row[4]  # the API's own "no such job" code, from its answer
    assert row[5] == "never"


def test_bad_credentials_make_the_account_down(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    five_jobs(world, clock)
    good = account(sim, name="good", jobs=GOOD_JOBS)
    bad = account(sim, name="bad", jobs=GOOD_JOBS, tasks=((1, 2),),
                  secret_key="not-the-secret")
    exporter = make_exporter(good, bad)
    exporter.poller.poll_all()
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_up", account="bad") == 0
    assert value(samples, "qianfan_up", account="good") == 1
    assert value(samples, "qianfan_last_successful_poll_timestamp_seconds",
                 account="bad") is None
    assert set(series(samples, "qianfan_target_up", account="bad").values()) == {0}
    assert len(series(samples, "qianfan_target_error_info", account="bad",
                      reason="auth")) == len(GOOD_JOBS) + 1
    assert series(samples, "qianfan_target_last_success_timestamp_seconds",
                  account="bad") == {}

    page = page_of(exporter)
    assert account_cell(page, "good") == "reachable"
    cell = account_cell(page, "bad")
    assert cell.startswith("DOWN: every call failed (auth)")
    # Every target that is down is listed, each with its reason: none is left out.
    rows = down_rows(page)
    assert sorted((r[0], r[2], r[3]) for r in rows) == sorted(
        [("bad", job, "auth") for job in GOOD_JOBS] + [("bad", "1/2", "auth")])
    assert_no_keys(page, keys=(ACCESS_KEY, SECRET_KEY, "not-the-secret"))


def test_the_account_is_down_only_when_every_call_fails(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    five_jobs(world, clock)
    exporter = make_exporter(account(sim, jobs=GOOD_JOBS[:2], tasks=((1, 2),)))
    world.add_v1_run(1, 2, created=clock() - 60, wait=0, duration=6000)
    exporter.poller.poll_all()
    first = clock()
    # Server errors on every V2 job, rate limits on the V1 pair: nothing reached Qianfan.
    sim.add_fault("http_500", action="DescribeFineTuningTasks")
    sim.add_fault("rate_limit_18", action="jobDetail")
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_up") == 0
    assert value(samples, "qianfan_last_successful_poll_timestamp_seconds") == first
    state = exporter.poller.snapshot.accounts["default"]
    assert state.error.startswith("every call failed (rate_limited, server)")
    assert not state.every_target_read
    # Runs stay (until stale_after) while Qianfan cannot be read.
    assert len(series(samples, "qianfan_finetune_run_info")) == 3

    # The V1 pair answers again: Qianfan is reached, the jobs are still failing.
    sim.clear_faults()
    sim.add_fault("http_500", action="DescribeFineTuningTasks")
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_up") == 1
    assert value(samples, "qianfan_last_successful_poll_timestamp_seconds") == clock()
    assert {dict(k)["target"]: v for k, v in series(samples, "qianfan_target_up").items()} \
        == {"job-a": 0, "job-b": 0, "1/2": 1}
    assert exporter.poller.snapshot.accounts["default"].error == ""


def test_answers_that_cannot_be_read_on_every_call_are_no_proof_of_access(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    five_jobs(world, clock)
    exporter = make_exporter(account(sim, jobs=GOOD_JOBS))
    sim.add_fault("malformed_json", target=GOOD_JOBS[0])
    exporter.poller.poll_all()
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_up") == 1  # the other jobs were read
    assert value(samples, "qianfan_target_error_info", target=GOOD_JOBS[0],
                 reason="invalid_response") == 1
    sim.add_fault("malformed_json")
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_up") == 0
    assert exporter.poller.snapshot.accounts["default"].error.startswith(
        "every call failed (invalid_response)")


def test_an_account_whose_budget_cannot_hold_the_interval_says_so() -> None:
    """The lag and the budget a replica uses are exported per account, and the landing
    page says, for that account only, what a cycle needs and how late reads are."""
    behind = AccountState(name="team", up=True, polled=True,
                          budget=Budget(qps=1.5, lag=62.0, needs=140, holds=97.1))
    on_time = AccountState(name="other", up=True, polled=True, budget=Budget(qps=5.0))
    snapshot = Snapshot(MappingProxyType({"team": behind, "other": on_time}))
    text = render_health(snapshot, ["team", "other"])
    samples = parse_samples(text)
    assert value(samples, "qianfan_poll_lag_seconds", account="team") == 62
    assert value(samples, "qianfan_poll_lag_seconds", account="other") == 0
    assert value(samples, "qianfan_rate_budget_qps", account="team") == 1.5
    promtool_check_metrics(text)
    page = landing_page(snapshot, telemetry_path="/metrics", version="1")
    lines = re.findall(r"<p class=behind>(.*?)</p>", page)
    assert lines == ["team: the request budget (1.5 requests/s) cannot hold poll.interval: "
                     "a cycle needs 140 requests, about 97s; targets are read up to 62s "
                     "late."]
