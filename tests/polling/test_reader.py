"""V2 progress from the run detail, and a simulator that is no kinder than Baidu's reference.

Baidu's reference for ``DescribeFineTuningTasks``
(https://cloud.baidu.com/doc/WENXINWORKSHOP/s/klt73okdd) has no ``runProgress`` in its
``taskList``; ``DescribeFineTuningTask`` (https://cloud.baidu.com/doc/WENXINWORKSHOP/s/4lt73p0ia)
has it only while the run is Running. The exporter reads the list, then the detail of
every run the list shows as Running.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from qf_exporter.app import Exporter
from qf_exporter.polling import reader as reader_module
from qf_exporter.qianfan.client import QianfanClient
from qf_exporter.qianfan.models import Run, parse_v2_run
from qf_exporter.qianfan.telemetry import ApiMetrics
from qf_exporter.simulator import QianfanSimulator, World
from qf_exporter.simulator.scenario import demo_world
from tests.fake_time import LockstepBudget
from tests.helpers import (
    ACCESS_KEY,
    SECRET_KEY,
    ManualClock,
    Samples,
    account,
    parse_samples,
    value,
)

# Not in the taskList table of Baidu's DescribeFineTuningTasks page (above).
LIST_ONLY_FORBIDDEN = {"runprogress", "vdllink"}


def _client(sim: QianfanSimulator, clock: Callable[[], float]) -> QianfanClient:
    from prometheus_client import CollectorRegistry

    return QianfanClient(account(sim), metrics=ApiMetrics(CollectorRegistry()), clock=clock,
                         retries=0)


def test_the_simulated_list_has_no_progress_and_the_detail_has_it_while_running() -> None:
    """The demo world has runs in every state; no list item may carry runProgress."""
    clock = ManualClock()
    world = demo_world(clock)
    with QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}, wall_clock=clock) as sim:
        client = _client(sim, clock)
        seen_running = 0
        for job_id in world.jobs:
            for item in client.describe_tasks(job_id):
                assert not LIST_ONLY_FORBIDDEN & {key.lower() for key in item}, item
                detail = client.describe_task(item["taskId"])
                if detail["runStatus"] == "Running":
                    seen_running += 1
                    assert detail["runProgress"].endswith("%")
                    assert detail["vdlLink"].startswith("https://")
                else:
                    assert "runProgress" not in detail
        assert seen_running >= 3
        client.close()


def test_progress_comes_from_the_detail_of_each_running_run(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    world.add_job("job-1", created=clock() - 3600)
    world.add_run("job-1", "task-run", created=clock() - 100, wait=0, duration=400)
    world.add_run("job-1", "task-done", created=clock() - 3000, wait=0, duration=600)
    world.add_run("job-1", "task-wait", created=clock() - 10, wait=600, duration=600)
    exporter = make_exporter(account(sim, jobs=("job-1",)))
    exporter.poller.poll_all()
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_finetune_run_progress_ratio", task_id="task-run") == 0.25
    # A finished or waiting run needs no detail read, and has no progress.
    assert value(samples, "qianfan_finetune_run_progress_ratio", task_id="task-done") is None
    assert value(samples, "qianfan_finetune_run_progress_ratio", task_id="task-wait") is None
    assert [(e.action, e.target) for e in sim.logged()] == [
        ("DescribeFineTuningTasks", "job-1"), ("DescribeFineTuningTask", "task-run")]
    assert value(samples, "qianfan_api_requests_total",
                 action="DescribeFineTuningTask") == 1
    assert value(samples, "qianfan_target_up", target="job-1") == 1
    assert value(samples, "qianfan_finetune_run_vdl_link_info", task_id="task-run") == 1
    # The run moves on: the next poll reads its progress again.
    clock.advance(100)
    exporter.poller.poll_all()
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_finetune_run_progress_ratio", task_id="task-run") == 0.5
    # Once it is done it needs no detail read, and keeps the VisualDL link it had.
    clock.advance(300)
    exporter.poller.poll_all()
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_finetune_run_status", task_id="task-run",
                 status="succeeded") == 1
    assert value(samples, "qianfan_finetune_run_progress_ratio", task_id="task-run") is None
    assert value(samples, "qianfan_finetune_run_vdl_link_info", task_id="task-run") == 1
    assert sim.request_count("DescribeFineTuningTask") == 2


def test_a_failed_detail_read_keeps_the_run_and_downs_the_target(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    world.add_job("job-1", created=clock() - 3600)
    world.add_run("job-1", "task-run", created=clock() - 100, wait=0, duration=4000)
    world.add_job("job-2", created=clock() - 3600)
    world.add_run("job-2", "task-other", created=clock() - 100, wait=0, duration=400)
    exporter = make_exporter(account(sim, jobs=("job-1", "job-2")))
    sim.add_fault("http_500", action="DescribeFineTuningTask", target="task-run")
    exporter.poller.poll_all()
    samples = parse_samples(exporter.exposition())
    # The run is still exported from the list (status, start, ...), without progress.
    assert value(samples, "qianfan_finetune_run_status", task_id="task-run",
                 status="running") == 1
    assert value(samples, "qianfan_finetune_run_progress_ratio", task_id="task-run") is None
    assert value(samples, "qianfan_target_up", target="job-1") == 0
    assert value(samples, "qianfan_target_up", target="job-2") == 1
    assert value(samples, "qianfan_finetune_run_progress_ratio", task_id="task-other") == 0.25
    assert value(samples, "qianfan_finetune_run_last_read_timestamp_seconds",
                 task_id="task-run") == clock()
    assert value(samples, "qianfan_api_request_failures_total",
                 action="DescribeFineTuningTask", reason="server") == 1
    state = exporter.poller.snapshot.accounts["default"].targets[("v2", "job-1")]
    assert state.reason == "server" and "DescribeFineTuningTask" in state.error
    # Staleness goes by the runs' reads: a target whose details keep failing keeps its
    # runs past stale_after, since its list is read every poll.
    for _ in range(12):
        clock.advance(60)
        exporter.poller.poll_all()
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_finetune_run_status", task_id="task-run",
                 status="running") == 1
    # Once the detail answers again, the target is up with its progress.
    sim.clear_faults()
    exporter.poller.poll_all()
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_target_up", target="job-1") == 1
    assert value(samples, "qianfan_finetune_run_progress_ratio", task_id="task-run") is not None


def test_a_bug_while_reading_downs_only_that_target_as_a_bad_answer(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception that is no ``QianfanError`` (a bug in parsing, say) costs the one
    target its read, as ``invalid_response``, and is logged with its traceback."""
    for job_id in ("job-1", "job-2"):
        world.add_job(job_id, created=clock() - 3600)
        world.add_run(job_id, f"task-{job_id}", created=clock() - 100, duration=400)
    def buggy(fields: Any, *, job_id: str, **kw: Any) -> Run:
        if job_id == "job-1":
            raise ZeroDivisionError("a bug")
        return parse_v2_run(fields, job_id=job_id, **kw)

    monkeypatch.setattr("qf_exporter.polling.reader.parse_v2_run", buggy)
    exporter = make_exporter(account(sim, jobs=("job-1", "job-2")))
    with caplog.at_level(logging.ERROR, logger="qf_exporter.polling.reader"):
        exporter.poller.poll_all()
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_target_up", target="job-1") == 0
    assert value(samples, "qianfan_target_up", target="job-2") == 1
    assert value(samples, "qianfan_up") == 1  # job-2's answer shows Qianfan was reached
    state = exporter.poller.snapshot.accounts["default"].targets[("v2", "job-1")]
    assert (state.reason, state.error) == ("invalid_response", "unexpected ZeroDivisionError")
    (record,) = [r for r in caplog.records if r.name == "qf_exporter.polling.reader"]
    assert record.getMessage() == "unexpected error reading target"
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    assert getattr(record, "target", None) == "job-1"


def test_detail_reads_share_the_accounts_budget(
    clock: ManualClock, make_exporter: Callable[..., Exporter]
) -> None:
    """Lists and details together never exceed qps in any one-second window."""
    qps = 10
    world = World(clock)
    for j in range(6):
        world.add_job(f"job-{j}", created=clock() - 3600)
        for r in range(3):
            world.add_run(f"job-{j}", f"task-{j}-{r}", created=clock() - 100, wait=0,
                          duration=1000)
    with QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}, qps=qps, wall_clock=clock) as sim:
        jobs = tuple(world.jobs)
        exporter = make_exporter(account(sim, jobs=jobs, qps=qps))
        # in lock step on the test's clock: the windows cannot depend on the load
        LockstepBudget(clock, sim, exporter.poller.accounts["default"].limiter)
        exporter.poller.poll_all()
        samples = parse_samples(exporter.exposition())
        assert value(samples, "qianfan_up") == 1
        assert sim.request_count("DescribeFineTuningTask") == 18
        assert sim.stats.throttled == 0
        arrivals = sorted(e.arrived for e in sim.logged())
        assert len(arrivals) == 6 + 18
        for i in range(len(arrivals) - qps):
            assert arrivals[i + qps] - arrivals[i] >= 1.0, i


def test_demo_shows_progress_read_through_the_detail(
    make_exporter: Callable[..., Exporter], clock: ManualClock
) -> None:
    """``--demo``'s world: its running V2 runs export progress, read from the detail,
    and it climbs as the runs move on."""
    world = demo_world(clock)
    with QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}, wall_clock=clock) as sim:
        exporter = make_exporter(account(sim, name="demo", jobs=tuple(sorted(world.jobs))))
        exporter.poller.poll_all()
        first = _v2_progress(parse_samples(exporter.exposition()))
        # Long enough for the slowest demo run (5 h, NaN and diverging loss) to move a
        # whole percent, Qianfan's resolution.
        clock.advance(300)
        exporter.poller.poll_all()
        samples = parse_samples(exporter.exposition())
        later = _v2_progress(samples)
    assert len(first) >= 3
    still_running = [task for task in first if task in later]
    assert still_running and all(later[task] > first[task] for task in still_running)
    details = value(samples, "qianfan_api_requests_total", action="DescribeFineTuningTask")
    assert details is not None and details >= len(first) + len(still_running)


def _v2_progress(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["task_id"]: v for (name, labels), v in samples.items()
        if name == "qianfan_finetune_run_progress_ratio" and dict(labels)["api"] == "v2"
    }


def test_the_demo_as_shipped_reads_progress_through_the_detail() -> None:
    """``--demo`` itself (its simulator, account and poll settings): one poll exports
    progress for its running V2 runs, and every one came from a detail read."""
    from qf_exporter.simulator.demo import start_demo

    simulator, config = start_demo()
    exporter = Exporter(config, process_metrics=False)
    try:
        exporter.poller.poll_all()
        samples = parse_samples(exporter.exposition())
    finally:
        exporter.stop()
        simulator.stop()
    progress = _v2_progress(samples)
    running = {dict(labels)["task_id"] for (name, labels), v in samples.items()
               if name == "qianfan_finetune_run_status" and v == 1
               and dict(labels)["status"] == "running" and dict(labels)["api"] == "v2"}
    assert running and set(progress) == running
    assert simulator.request_count("DescribeFineTuningTask") == len(running)


def test_a_settled_run_that_reads_the_same_is_not_parsed_again(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter], monkeypatch: pytest.MonkeyPatch,
) -> None:
    world.add_job("job-1", created=clock() - 3600)
    world.add_run("job-1", "task-run", created=clock() - 100, wait=0, duration=4000)
    world.add_run("job-1", "task-done", created=clock() - 3000, wait=0, duration=600)
    parsed: list[str] = []

    def counting(raw: Any, **kw: Any) -> Run:
        run = parse_v2_run(raw, **kw)
        parsed.append(run.task_id)
        return run

    monkeypatch.setattr(reader_module, "parse_v2_run", counting)
    exporter = make_exporter(account(sim, jobs=("job-1",)))
    exporter.poller.poll_all()
    first = _run_samples(exporter, "task-done")
    assert sorted(parsed) == ["task-done", "task-run"]
    clock.advance(60)
    exporter.poller.poll_all()
    # The running run is parsed at every read; the ended one only read again.
    assert parsed[2:] == ["task-run"]
    again = _run_samples(exporter, "task-done")
    assert _last_read(again) == clock() != _last_read(first)
    assert again == first
    # Fields that change upstream are parsed again, whatever the run's status.
    next(run for run in world.jobs["job-1"].runs if run.task_id == "task-done").metrics = {
        "BLEU-4": "42%"}
    clock.advance(60)
    exporter.poller.poll_all()
    assert sorted(parsed[3:]) == ["task-done", "task-run"]
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_finetune_run_evaluation_ratio", task_id="task-done",
                 metric="BLEU-4") == 0.42


def _run_samples(exporter: Exporter, task_id: str) -> Samples:
    """One run's samples; its last-read time taken out (``_last_read``)."""
    return {key: v for key, v in parse_samples(exporter.exposition()).items()
            if ("task_id", task_id) in key[1]}


def _last_read(samples: Samples) -> float:
    (key,) = [key for key in samples
              if key[0] == "qianfan_finetune_run_last_read_timestamp_seconds"]
    return samples.pop(key)


def test_an_ended_run_without_a_finish_time_is_not_settled() -> None:
    # Its duration runs to the read time, so each read must parse it.
    ended = Run("a", "v2", "job", "task", "failed", "Fail", start_time=1.0)
    assert ended.final and not ended.settled
    assert Run("a", "v2", "job", "task", "failed", "Fail", start_time=1.0,
               finish_time=2.0).settled
    assert not Run("a", "v2", "job", "task", "running", "Running", start_time=1.0).settled
