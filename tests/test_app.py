"""Reloads never blank the data.

A reload that changes an account or any ``poll:`` key keeps serving each surviving
account's last snapshot (runs, ``qianfan_up``, target states) until that account's
first poll under the new configuration completes; only removed accounts and removed
targets disappear, and at once. A reload of a file that is refused (broken, a FIFO, or
failing in an unexpected way) keeps the running configuration and sets
``qianfan_config_last_reload_successful`` to 0.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from qf_exporter.app import Exporter
from qf_exporter.config.file import Config, load_config
from qf_exporter.simulator import QianfanSimulator, World
from qf_exporter.util.secrets import Secret
from tests.checks import assert_no_keys
from tests.config_text import AK, CORPUS, GOOD, SK
from tests.helpers import (
    ACCESS_KEY,
    FAST_POLL,
    SECRET_KEY,
    GatedWorld,
    ManualClock,
    Samples,
    account,
    parse_samples,
    series,
    serve,
    value,
)


@pytest.fixture
def gated(clock: ManualClock) -> Iterator[tuple[GatedWorld, QianfanSimulator]]:
    world = GatedWorld(clock, closed=False)
    with QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}, wall_clock=clock) as simulator:
        try:
            yield world, simulator
        finally:
            world.gate.set()


def jobs_of(world: World, clock: ManualClock, count: int) -> tuple[str, ...]:
    ids = tuple(f"job-{k:03d}" for k in range(count))
    for k, job in enumerate(ids):
        world.add_job(job, created=clock() - 86400)
        # Every fifth run is finished; the rest train for days.
        world.add_run(job, f"task-{job}", created=clock() - 600, wait=0,
                      duration=60 if k % 5 == 0 else 86400 * 10)
    return ids


def runs_in(samples: Samples, account_name: str = "default") -> set[tuple[str, str]]:
    return {(dict(k)["job_id"], dict(k)["task_id"])
            for k in series(samples, "qianfan_finetune_run_info", account=account_name)}


def targets_in(samples: Samples, account_name: str = "default") -> dict[str, float]:
    return {dict(k)["target"]: v
            for k, v in series(samples, "qianfan_target_up", account=account_name).items()}


class Scraper(threading.Thread):
    """Scrapes /metrics over HTTP again and again until stopped, keeping every answer."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.scrapes: list[Samples] = []
        self.done = threading.Event()
        self.more = threading.Condition()
        self.error: BaseException | None = None

    def run(self) -> None:
        with requests.Session() as session:
            while not self.done.is_set():
                try:
                    answer = session.get(self.url, timeout=10)
                    assert answer.status_code == 200
                    samples = parse_samples(answer.content)
                except BaseException as exc:  # reported by the test
                    self.error = exc
                    return
                with self.more:
                    self.scrapes.append(samples)
                    self.more.notify_all()

    def wait_for(self, count: int) -> None:
        """Until ``count`` more scrapes have been made."""
        with self.more:
            target = len(self.scrapes) + count
            assert self.more.wait_for(lambda: len(self.scrapes) >= target or self.error,
                                      timeout=60)
        assert self.error is None, self.error


def test_a_reload_that_adds_a_job_never_drops_a_run_series(
    gated: tuple[GatedWorld, QianfanSimulator], clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    world, sim = gated
    jobs = jobs_of(world, clock, 100)
    world.add_job("job-new", created=clock() - 60)
    world.add_run("job-new", "task-job-new", created=clock() - 30, wait=0, duration=86400)
    before = account(sim, jobs=jobs)
    exporter = make_exporter(before)
    server = serve(exporter)
    exporter.poller.poll_all()
    everything = runs_in(parse_samples(exporter.exposition()))
    assert len(everything) == 100
    last_good = clock()

    scraper = Scraper(server.port)
    scraper.start()
    try:
        scraper.wait_for(3)
        clock.advance(30)
        world.closed = True  # the first poll under the new settings hangs on every read
        exporter.poller.reload(Config(accounts=(replace(before, jobs=(*jobs, "job-new")),),
                                      poll=FAST_POLL))
        poll = threading.Thread(target=exporter.poller.poll_account, args=("default",),
                                daemon=True)
        poll.start()
        world.wait_stuck()
        scraper.wait_for(5)  # scrapes while that poll has not completed
        assert poll.is_alive()
        world.gate.set()
        poll.join(timeout=60)
        assert not poll.is_alive()
        scraper.wait_for(2)
    finally:
        scraper.done.set()
        scraper.join(timeout=30)
    assert scraper.error is None, scraper.error

    assert len(scraper.scrapes) >= 10
    for samples in scraper.scrapes:
        assert everything <= runs_in(samples)
        assert value(samples, "qianfan_up", account="default") == 1
        assert value(samples, "qianfan_last_successful_poll_timestamp_seconds",
                     account="default") in (last_good, clock())
        targets = targets_in(samples)
        assert all(targets[job] == 1 for job in jobs), targets
    final = scraper.scrapes[-1]
    assert runs_in(final) == everything | {("job-new", "task-job-new")}
    assert targets_in(final)["job-new"] == 1
    assert value(final, "qianfan_last_successful_poll_timestamp_seconds") == clock()


def test_a_reload_drops_removed_accounts_and_targets_at_once_and_keeps_the_rest(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    jobs = jobs_of(world, clock, 6)
    world.add_v1_run(1, 2, created=clock() - 60, wait=0, duration=86400)
    team = account(sim, name="team", jobs=jobs, tasks=((1, 2),))
    other = account(sim, name="other", jobs=jobs[:2])
    exporter = make_exporter(team, other)
    exporter.poller.poll_all()
    polled_at = clock()
    samples = parse_samples(exporter.exposition())
    assert len(runs_in(samples, "team")) == 7 and len(runs_in(samples, "other")) == 2

    # A reload drops account "other", two of team's jobs and its V1 pair, and changes
    # the poll interval (so "team" gets a new poller too).
    clock.advance(10)
    new_team = replace(team, jobs=jobs[:4], tasks=())
    exporter.poller.reload(Config(accounts=(new_team,),
                                  poll=replace(FAST_POLL, interval=30)))
    samples = parse_samples(exporter.exposition())
    assert runs_in(samples, "other") == set()
    assert value(samples, "qianfan_up", account="other") is None
    assert targets_in(samples, "other") == {}
    assert runs_in(samples, "team") == {(job, f"task-{job}") for job in jobs[:4]}
    assert targets_in(samples, "team") == dict.fromkeys(jobs[:4], 1)
    assert value(samples, "qianfan_up", account="team") == 1
    assert value(samples, "qianfan_last_successful_poll_timestamp_seconds",
                 account="team") == polled_at
    assert value(samples, "qianfan_target_last_success_timestamp_seconds",
                 target=jobs[0]) == polled_at

    # The first poll under the new settings reads every kept target again.
    before = sim.request_count("DescribeFineTuningTasks")
    exporter.poller.poll_all(force=False)
    assert sim.request_count("DescribeFineTuningTasks") == before + 4
    samples = parse_samples(exporter.exposition())
    assert runs_in(samples, "team") == {(job, f"task-{job}") for job in jobs[:4]}
    assert value(samples, "qianfan_last_successful_poll_timestamp_seconds",
                 account="team") == clock()


def test_new_credentials_that_fail_keep_the_runs_until_stale(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    jobs = jobs_of(world, clock, 3)
    team = account(sim, name="team", jobs=jobs)
    exporter = make_exporter(team)
    exporter.poller.poll_all()
    polled_at = clock()
    clock.advance(10)
    exporter.poller.reload(Config(accounts=(replace(team, secret_key=Secret("wrong")),),
                                  poll=FAST_POLL))
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_up", account="team") == 1  # until the first new poll
    assert len(runs_in(samples, "team")) == 3

    exporter.poller.poll_all(force=False)
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_up", account="team") == 0
    assert set(targets_in(samples, "team").values()) == {0}
    # The runs read before stay until stale_after, as for any other failure.
    assert len(runs_in(samples, "team")) == 3
    assert value(samples, "qianfan_last_successful_poll_timestamp_seconds",
                 account="team") == polled_at
    clock.advance(FAST_POLL.stale_after)
    exporter.poller.poll_all(force=False)
    assert runs_in(parse_samples(exporter.exposition()), "team") == set()


def test_discovered_jobs_survive_a_reload_until_the_next_listing(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    jobs = jobs_of(world, clock, 3)
    team = account(sim, name="team", jobs=jobs[:1], discover=True)
    exporter = make_exporter(team)
    exporter.poller.poll_all()
    everything = {(job, f"task-{job}") for job in jobs}
    assert runs_in(parse_samples(exporter.exposition()), "team") == everything

    # A new budget: the discovered jobs are still served, and listed again at once.
    world.remove_job(jobs[2])
    exporter.poller.reload(Config(accounts=(replace(team, qps=500),), poll=FAST_POLL))
    samples = parse_samples(exporter.exposition())
    assert runs_in(samples, "team") == everything
    assert value(samples, "qianfan_discovered_jobs", account="team") == 2
    listings = sim.request_count("DescribeFineTuningJobs")
    exporter.poller.poll_all(force=False)
    assert sim.request_count("DescribeFineTuningJobs") == listings + 1
    samples = parse_samples(exporter.exposition())
    assert runs_in(samples, "team") == everything - {(jobs[2], f"task-{jobs[2]}")}

    # Discovery turned off: the discovered job goes at once, the configured one stays.
    exporter.poller.reload(Config(accounts=(replace(team, discover=False),), poll=FAST_POLL))
    samples = parse_samples(exporter.exposition())
    assert runs_in(samples, "team") == {(jobs[0], f"task-{jobs[0]}")}
    assert targets_in(samples, "team") == {jobs[0]: 1}
    assert value(samples, "qianfan_discovered_jobs", account="team") is None


def test_runs_left_out_are_not_counted_again_after_a_reload(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    jobs = jobs_of(world, clock, 2)  # job-000's run finished 540 s ago
    poll = replace(FAST_POLL, finished_retention=100)
    team = account(sim, name="team", jobs=jobs)
    exporter = make_exporter(team, poll=poll)
    exporter.poller.poll_all()
    samples = parse_samples(exporter.exposition())
    assert runs_in(samples, "team") == {(jobs[1], f"task-{jobs[1]}")}
    assert value(samples, "qianfan_runs_left_out_total", reason="retention") == 1
    exporter.poller.reload(Config(accounts=(replace(team, qps=500),), poll=poll))
    exporter.poller.poll_all(force=False)
    samples = parse_samples(exporter.exposition())
    assert value(samples, "qianfan_runs_left_out_total", reason="retention") == 1


# --- refused reloads keep the running configuration --------------------------------


def reload_successful(exporter: Exporter) -> float | None:
    return value(parse_samples(exporter.exposition()), "qianfan_config_last_reload_successful")


@pytest.fixture
def reloadable(tmp_path: Path) -> Iterator[tuple[Exporter, Path]]:
    path = tmp_path / "config.yaml"
    path.write_text(GOOD, encoding="utf-8")
    exporter = Exporter(load_config(path), config_path=str(path), process_metrics=False)
    yield exporter, path
    exporter.stop()


BROKEN_ON_RELOAD = [
    *sorted(p.name for p in CORPUS.glob("yaml-*.yaml")),
    "secret-file-dev-zero.yaml",
    "interval-too-long.yaml",
    "timeout-huge.yaml",
    "regex-backreference.yaml",
]


@pytest.mark.parametrize("name", BROKEN_ON_RELOAD)
def test_reload_refuses_a_broken_file_and_keeps_the_old_config(
    reloadable: tuple[Exporter, Path], name: str
) -> None:
    exporter, path = reloadable
    running = exporter.poller.config
    assert reload_successful(exporter) == 1
    path.write_text((CORPUS / name).read_text("utf-8"), encoding="utf-8")

    ok, message = exporter.reload()

    assert not ok
    assert message.startswith("configuration refused, still running the previous one:")
    assert reload_successful(exporter) == 0
    assert exporter.poller.config is running

    path.write_text(GOOD.replace("job-a", "job-b"), encoding="utf-8")
    assert exporter.reload() == (True, "configuration reloaded")
    assert reload_successful(exporter) == 1
    assert exporter.poller.config.accounts[0].jobs == ("job-b",)


def test_reload_refuses_a_fifo_secret_key_file(reloadable: tuple[Exporter, Path]) -> None:
    exporter, path = reloadable
    fifo = path.parent / "sk"
    os.mkfifo(fifo)
    path.write_text(
        f"accounts: [{{name: prod, access_key: {AK}, secret_key_file: {fifo}, jobs: [j]}}]\n",
        encoding="utf-8",
    )
    ok, message = exporter.reload()  # O_NONBLOCK: returns at once, no writer needed
    assert not ok and "is not a regular file (a FIFO)" in message
    assert reload_successful(exporter) == 0


def test_reload_survives_an_unexpected_error(
    reloadable: tuple[Exporter, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should checking ever fail with something other than ConfigError, the reload is
    still refused and reported, not a dead reload thread with the metric left at 1."""
    exporter, path = reloadable

    def broken(_path: str) -> Config:
        raise RecursionError(f"maximum recursion depth exceeded near {SK}")

    monkeypatch.setattr("qf_exporter.app.load_config", broken)
    ok, message = exporter.reload()
    assert not ok
    assert message.endswith(f"{path}: cannot be loaded (RecursionError)")
    assert_no_keys(message, keys=(SK,))
    assert reload_successful(exporter) == 0

