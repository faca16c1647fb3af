"""The exporter end to end against the simulated Qianfan, with a clock the test moves.

/metrics must always agree with the simulator's own idea of every run.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable

import pytest

from qf_exporter.app import Exporter
from qf_exporter.config.file import Poll
from qf_exporter.simulator import QianfanSimulator, World
from tests.checks import assert_no_keys
from tests.helpers import (
    ACCESS_KEY,
    SECRET_KEY,
    ManualClock,
    account,
    http_get,
    parse_samples,
    promtool_check_metrics,
    scrape,
    series,
    serve,
    value,
)

STATUS_OF = {"waiting": "waiting", "running": "running", "succeeded": "succeeded",
             "failed": "failed", "stopped": "stopped"}


def assert_agrees(exporter: Exporter, world: World, clock: ManualClock) -> None:
    """Every visible simulated run is exported with the simulator's status and progress."""
    samples = scrape(exporter)
    now = clock()
    expected = 0
    for job in world.jobs.values():
        for run in world.visible_runs(job, now):
            expected += 1
            labels = {"api": "v2", "job_id": job.job_id, "task_id": run.task_id}
            status = run.status(now)
            assert value(samples, "qianfan_finetune_run_status", status=status, **labels) == 1
            progress = value(samples, "qianfan_finetune_run_progress_ratio", **labels)
            if status == "running":
                assert progress == pytest.approx(int(run.progress(now)) / 100)
            else:
                assert progress is None
            assert value(samples, "qianfan_finetune_run_checkpoints", **labels) == (
                len(run.checkpoint_list(now)) if status != "waiting" else 0)
            finish = value(samples, "qianfan_finetune_run_finish_timestamp_seconds", **labels)
            assert (finish is not None) == (status in ("succeeded", "failed", "stopped"))
    for (task_id, job_id), run in world.v1_runs.items():
        if run.created > now:
            continue
        expected += 1
        labels = {"api": "v1", "task_id": str(task_id), "job_id": str(job_id)}
        status = run.status(now)
        status = "running" if status == "waiting" else status
        assert value(samples, "qianfan_finetune_run_status", status=status, **labels) == 1
    assert len(series(samples, "qianfan_finetune_run_info")) == expected


def test_a_run_lives_its_whole_life(world: World, sim: QianfanSimulator, clock: ManualClock,
                                    make_exporter: Callable[..., Exporter]) -> None:
    world.add_job("job-life", "life of a run", created=clock() - 10)
    run = world.add_run("job-life", "task-life", created=clock() + 30, wait=60, duration=600,
                        checkpoints=5)
    exporter = make_exporter(account(sim, jobs=("job-life",)))
    poller = exporter.poller

    poller.poll_all()
    samples = scrape(exporter)
    assert series(samples, "qianfan_finetune_run_info") == {}
    assert value(samples, "qianfan_up", account="default") == 1
    assert value(samples, "qianfan_target_up", target="job-life", api="v2") == 1

    seen_progress = []
    for _ in range(16):
        clock.advance(60)
        poller.poll_all()
        assert_agrees(exporter, world, clock)
        samples = scrape(exporter)
        progress = value(samples, "qianfan_finetune_run_progress_ratio", task_id="task-life")
        if progress is not None:
            seen_progress.append(progress)
    assert run.status(clock()) == "succeeded"
    assert seen_progress == sorted(seen_progress) and len(set(seen_progress)) >= 5
    samples = scrape(exporter)
    assert value(samples, "qianfan_finetune_run_status", task_id="task-life",
                 status="succeeded") == 1
    assert value(samples, "qianfan_finetune_run_checkpoints", task_id="task-life") == 5
    assert len(series(samples, "qianfan_finetune_run_evaluation_ratio",
                      task_id="task-life")) == 4
    assert value(samples, "qianfan_finetune_run_finish_timestamp_seconds",
                 task_id="task-life") == run.ends
    assert value(samples, "qianfan_finetune_run_duration_seconds",
                 task_id="task-life") == run.ends - run.created


def test_failed_and_stopped_runs_and_v1(world: World, sim: QianfanSimulator, clock: ManualClock,
                                        make_exporter: Callable[..., Exporter]) -> None:
    world.add_job("job-x", created=clock() - 10)
    world.add_run("job-x", "task-fail", created=clock() - 1000, wait=0, duration=600,
                  outcome="failed", end_fraction=0.5, error_code=500001,
                  error_message='bad "row" 12')
    world.add_run("job-x", "task-stop", created=clock() - 1000, wait=0, duration=600,
                  outcome="stopped", end_fraction=0.2)
    world.add_v1_run(10250, 6205, "sdk_test_7", created=clock() - 100, wait=0, duration=1000)
    exporter = make_exporter(account(sim, jobs=("job-x",), tasks=((10250, 6205),)))
    exporter.poller.poll_all()
    assert_agrees(exporter, world, clock)
    samples = scrape(exporter)
    errors = series(samples, "qianfan_finetune_run_error_info", task_id="task-fail")
    assert [dict(k)["error_message"] for k in errors] == ['bad "row" 12']
    assert series(samples, "qianfan_finetune_run_error_info", task_id="task-stop") == {}
    assert value(samples, "qianfan_finetune_run_progress_ratio", task_id="10250",
                 job_id="6205") == pytest.approx(0.1)
    assert value(samples, "qianfan_finetune_run_duration_seconds", task_id="10250") == 100
    assert value(samples, "qianfan_target_up", target="10250/6205", api="v1") == 1
    promtool_check_metrics(http_get(exporter).content)


def test_a_failing_target_keeps_its_runs_until_stale(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    world.add_job("job-a", created=clock() - 10)
    world.add_job("job-b", created=clock() - 10)
    world.add_run("job-a", "task-a", created=clock() - 100, duration=10_000)
    world.add_run("job-b", "task-b", created=clock() - 100, duration=10_000)
    poll = Poll(interval=60, finished_interval=1800, stale_after=300, timeout=5, retries=0)
    exporter = make_exporter(account(sim, jobs=("job-a", "job-b")), poll=poll)
    exporter.poller.poll_all()
    first_read = clock()
    sim.add_fault("http_500", target="job-a")

    for _ in range(5):  # 300 s: still within stale_after
        clock.advance(60)
        exporter.poller.poll_all(force=False)
        samples = scrape(exporter)
        assert value(samples, "qianfan_target_up", target="job-a") == 0
        assert value(samples, "qianfan_target_error_info", target="job-a",
                     reason="server") == 1
        assert value(samples, "qianfan_target_up", target="job-b") == 1
        assert series(samples, "qianfan_target_error_info", target="job-b") == {}
        # job-b was read: Qianfan is reachable with these credentials, one job is not.
        assert value(samples, "qianfan_up", account="default") == 1
        assert value(samples, "qianfan_last_successful_poll_timestamp_seconds") == clock()
        assert value(samples, "qianfan_target_last_success_timestamp_seconds",
                     target="job-a") == first_read
        assert value(samples, "qianfan_target_last_success_timestamp_seconds",
                     target="job-b") == clock()
        assert value(samples, "qianfan_finetune_run_info", task_id="task-a") == 1
        assert value(samples, "qianfan_api_request_failures_total",
                     action="DescribeFineTuningTasks", reason="server") is not None
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = scrape(exporter)
    assert value(samples, "qianfan_finetune_run_info", task_id="task-a") is None  # stale: gone
    assert value(samples, "qianfan_finetune_run_info", task_id="task-b") == 1
    assert value(samples, "qianfan_target_last_success_timestamp_seconds",
                 target="job-a") == first_read

    sim.clear_faults()
    clock.advance(60)
    exporter.poller.poll_all(force=False)
    samples = scrape(exporter)
    assert value(samples, "qianfan_finetune_run_info", task_id="task-a") == 1
    assert value(samples, "qianfan_up", account="default") == 1
    assert value(samples, "qianfan_last_successful_poll_timestamp_seconds") == clock()


def test_one_account_failing_leaves_the_other_up(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    world.add_job("job-a", created=clock() - 10)
    world.add_run("job-a", "task-a", created=clock() - 100)
    good = account(sim, name="good", jobs=("job-a",))
    bad = account(sim, name="bad", jobs=("job-a",), secret_key="not-the-secret")
    exporter = make_exporter(good, bad)
    exporter.poller.poll_all()
    samples = scrape(exporter)
    assert value(samples, "qianfan_up", account="good") == 1
    assert value(samples, "qianfan_up", account="bad") == 0
    assert value(samples, "qianfan_api_request_failures_total", account="bad",
                 action="DescribeFineTuningTasks", reason="auth") == 1
    assert value(samples, "qianfan_finetune_run_info", account="good", task_id="task-a") == 1
    assert value(samples, "qianfan_finetune_run_info", account="bad", task_id="task-a") is None


def test_adaptive_intervals(world: World, sim: QianfanSimulator, clock: ManualClock,
                            make_exporter: Callable[..., Exporter]) -> None:
    world.add_job("job-done", created=clock() - 10)
    world.add_job("job-busy", created=clock() - 10)
    world.add_run("job-done", "task-old", created=clock() - 10_000, duration=600)
    world.add_run("job-busy", "task-now", created=clock() - 100, duration=100_000)
    exporter = make_exporter(account(sim, jobs=("job-done", "job-busy")))
    exporter.poller.poll_all()
    # A new run appears in the finished job right away.
    world.add_run("job-done", "task-new", created=clock() + 1, duration=100_000)

    def reads(job: str) -> int:
        return sum(1 for e in sim.logged() if e.target == job)

    found_after = None
    for minute in range(1, 31):
        clock.advance(60)
        exporter.poller.poll_all(force=False)
        samples = scrape(exporter)
        if found_after is None and value(samples, "qianfan_finetune_run_info",
                                         task_id="task-new") == 1:
            found_after = minute
    assert reads("job-busy") == 31  # every interval
    assert reads("job-done") == 2  # at start and after finished_interval
    assert found_after == 30  # found within finished_interval
    # Now the job has a running run: it is read every interval again.
    before = reads("job-done")
    for _ in range(3):
        clock.advance(60)
        exporter.poller.poll_all(force=False)
    assert reads("job-done") == before + 3


def test_scrapes_never_reach_qianfan(world: World, sim: QianfanSimulator, clock: ManualClock,
                                     make_exporter: Callable[..., Exporter]) -> None:
    world.add_job("job-a", created=clock() - 10)
    world.add_run("job-a", "task-a", created=clock() - 100)
    exporter = make_exporter(account(sim, jobs=("job-a",), tasks=()))
    exporter.poller.poll_all()
    before = sim.request_count()
    bodies = {http_get(exporter).content for _ in range(25)}
    bodies |= {http_get(exporter, headers={"Accept-Encoding": "gzip"}).content
               for _ in range(25)}
    assert sim.request_count() == before
    assert len(bodies) >= 1


def test_gzip_and_plain_agree(world: World, sim: QianfanSimulator, clock: ManualClock,
                              make_exporter: Callable[..., Exporter]) -> None:
    world.add_job("job-a", created=clock() - 10)
    world.add_run("job-a", "task-a", created=clock() - 100)
    exporter = make_exporter(account(sim, jobs=("job-a",)))
    exporter.poller.poll_all()
    serve(exporter)
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", exporter.server.port)  # type: ignore[union-attr]
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    response = conn.getresponse()
    assert response.getheader("Content-Encoding") == "gzip"
    zipped = gzip.decompress(response.read())
    conn.close()
    plain = http_get(exporter, headers={"Accept-Encoding": "identity"}).content
    assert parse_samples(zipped) == parse_samples(plain)
    assert http_get(exporter).headers["Content-Type"].startswith("text/plain; version=0.0.4")


def test_health_readiness_and_landing(world: World, sim: QianfanSimulator, clock: ManualClock,
                                      make_exporter: Callable[..., Exporter]) -> None:
    world.add_job("job-a", created=clock() - 10)
    world.add_run("job-a", "task-a", created=clock() - 100)
    world.add_run("job-a", "task-b", created=clock() - 10_000, duration=60, outcome="failed")
    exporter = make_exporter(account(sim, jobs=("job-a",)))
    assert http_get(exporter, "/-/healthy").status_code == 200
    assert http_get(exporter, "/-/ready").status_code == 503
    samples = scrape(exporter)
    assert value(samples, "qianfan_up", account="default") == 0  # always present
    assert value(samples, "qianfan_exporter_build_info") == 1
    exporter.poller.poll_all()
    assert http_get(exporter, "/-/ready").status_code == 200
    page = http_get(exporter, "/").text
    assert 'href="/metrics"' in page and 'href="/-/healthy"' in page and "/-/ready" in page
    assert "default" in page and "reachable" in page
    assert "<td>1</td>" in page  # one running, one failed
    assert http_get(exporter, "/nope").status_code == 404
    assert_no_keys(page)


def test_scheduler_drives_polls(world: World, clock: ManualClock) -> None:
    """With the real scheduler and clock, the first poll makes the exporter ready."""
    import time

    from qf_exporter.config.file import Config

    world.clock = time.time
    world.add_job("job-a", created=time.time() - 10)
    world.add_run("job-a", "task-a", created=time.time() - 100)
    simulator = QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY})
    with simulator:
        exporter = Exporter(Config(accounts=(account(simulator, jobs=("job-a",)),)),
                            process_metrics=False)
        exporter.start()
        try:
            assert exporter.poller.ready.wait(timeout=30)
            samples = parse_samples(exporter.exposition())
            assert value(samples, "qianfan_finetune_run_info", task_id="task-a") == 1
        finally:
            exporter.stop()


def test_run_that_vanishes_upstream_is_dropped(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    job = world.add_job("job-a", created=clock() - 10)
    world.add_run("job-a", "task-a", created=clock() - 100)
    exporter = make_exporter(account(sim, jobs=("job-a",)))
    exporter.poller.poll_all()
    assert value(parse_samples(exporter.exposition()), "qianfan_finetune_run_info",
                 task_id="task-a") == 1
    job.runs.clear()
    exporter.poller.poll_all()
    assert value(parse_samples(exporter.exposition()), "qianfan_finetune_run_info",
                 task_id="task-a") is None


def test_unchanged_snapshot_is_not_rendered_again(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    world.add_job("job-a", created=clock() - 10)
    world.add_run("job-a", "task-a", created=clock() - 10_000, duration=60)
    exporter = make_exporter(account(sim, jobs=("job-a",)))
    exporter.poller.poll_all()
    first = exporter.current_page.page
    clock.advance(60)
    exporter.poller.poll_all(force=False)  # nothing due: the job is final
    # The run text is reused as it is; only the small health part (poll time) is new.
    assert exporter.current_page.page.runs is first.runs
    assert exporter.current_page.page.runs_deflated is first.runs_deflated
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_last_successful_poll_timestamp_seconds") == clock()
    clock.advance(1800)
    exporter.poller.poll_all(force=False)
    assert exporter.current_page.page.runs is not first.runs


def test_failure_counters_start_at_zero(world: World, sim: QianfanSimulator, clock: ManualClock,
                                        make_exporter: Callable[..., Exporter]) -> None:
    """rate() and increase() need a 0 before the first failure, or alerts start late."""
    exporter = make_exporter(account(sim, jobs=("job-a",), tasks=((1, 2),)))
    samples = parse_samples(exporter.exposition())
    failures = series(samples, "qianfan_api_request_failures_total", account="default")
    # jobDetail, DescribeFineTuningTasks and DescribeFineTuningTask (the detail reads)
    assert len(failures) == 3 * 7 and set(failures.values()) == {0}
    assert value(samples, "qianfan_api_requests_total", action="jobDetail") == 0
    assert value(samples, "qianfan_api_requests_total", action="DescribeFineTuningTask") == 0
