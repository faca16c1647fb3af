"""Item 4: API requests per hour in steady state, adaptive polling against a fixed 60 s
interval, on a virtual clock (no waiting an hour), detail reads counted on both sides."""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.common import (
    ACCOUNT,
    ACTIVE_FRACTION,
    RUNS_PER_JOB,
    Settings,
    make_account,
    size_label,
    start_simulator,
)
from qf_exporter.config.file import Account, Config, Poll
from qf_exporter.polling.poller import Poller
from qf_exporter.simulator import ManualClock, QianfanSimulator, World


@dataclass(frozen=True)
class SteadyResult:
    jobs: int
    active_jobs: int
    running_runs: int
    adaptive_details_per_hour: float
    first_poll: int
    adaptive_per_hour: float
    fixed_per_hour: float
    fixed_measured_per_hour: float
    reduction: float
    per_minute_min: int
    per_minute_max: int
    all_up: bool


@dataclass
class Measured:
    """What one poller's minutes cost, as the simulator counted them."""

    per_hour: float = 0.0
    details_per_hour: float = 0.0
    first_poll: int = 0
    per_minute: tuple[int, ...] = ()
    all_up: bool = True


def poller(account: Account, poll: Poll, clock: ManualClock) -> Poller:
    from prometheus_client import CollectorRegistry

    from qf_exporter.qianfan.telemetry import ApiMetrics

    return Poller(Config(accounts=(account,), poll=poll), ApiMetrics(CollectorRegistry()),
                  clock=clock)


def adaptive(sim: QianfanSimulator, p: Poller, clock: ManualClock,
             settings: Settings) -> Measured:
    """A warm-up hour (the first poll reads all), then the measured hour."""
    m = Measured()
    for minute in range(settings.warmup_minutes):
        m.all_up &= p.poll_account(ACCOUNT).up
        if minute == 0:
            m.first_poll = sim.request_count()
        clock.advance(60)
    base = sim.request_count()
    base_details = sim.request_count("DescribeFineTuningTask")
    per_minute = []
    for _ in range(settings.measure_minutes):
        before = sim.request_count()
        m.all_up &= p.poll_account(ACCOUNT).up
        per_minute.append(sim.request_count() - before)
        clock.advance(60)
    m.per_hour = (sim.request_count() - base) * 60.0 / settings.measure_minutes
    m.details_per_hour = ((sim.request_count("DescribeFineTuningTask") - base_details)
                          * 60.0 / settings.measure_minutes)
    m.per_minute = tuple(per_minute)
    return m


def fixed(sim: QianfanSimulator, p: Poller, clock: ManualClock, minutes: int) -> Measured:
    """The fixed interval, checked over a few minutes after a first poll."""
    m = Measured()
    m.all_up &= p.poll_account(ACCOUNT).up
    clock.advance(60)
    base = sim.request_count()
    for _ in range(minutes):
        m.all_up &= p.poll_account(ACCOUNT).up
        clock.advance(60)
    m.per_hour = (sim.request_count() - base) * 60.0 / minutes
    return m


def running(world: World, clock: ManualClock) -> tuple[int, int]:
    """Jobs with an active run, and running runs (each also read through its detail)."""
    active_jobs = sum(
        1 for job in world.jobs.values() if any(r.outcome == "running" for r in job.runs)
    )
    running_runs = sum(
        1 for job in world.jobs.values() for r in job.runs if r.status(clock()) == "running"
    )
    return active_jobs, running_runs


def measure(jobs: int, ak: str, sk: str, settings: Settings) -> SteadyResult:
    from qf_exporter.simulator import fleet_world

    clock = ManualClock()
    world = fleet_world(clock, jobs, RUNS_PER_JOB, ACTIVE_FRACTION)
    active_jobs, running_runs = running(world, clock)
    # No budget enforcement and no latency: only the request count matters here.
    sim = start_simulator(world, ak, sk, qps=None, latency=0.0, wall_clock=clock)
    account = make_account(sim.url, jobs, ak, sk, qps=100_000)
    try:
        p = poller(account, Poll(interval=60, finished_interval=1800, concurrency=4), clock)
        a = adaptive(sim, p, clock, settings)
        p.stop()
        p = poller(account, Poll(interval=60, finished_interval=60, concurrency=4), clock)
        f = fixed(sim, p, clock, settings.fixed_minutes)
        p.stop()
    finally:
        sim.stop()
    computed = (jobs + running_runs) * 60.0  # every job's list and every running run's detail
    return SteadyResult(
        jobs=jobs, active_jobs=active_jobs, running_runs=running_runs,
        adaptive_details_per_hour=a.details_per_hour, first_poll=a.first_poll,
        adaptive_per_hour=a.per_hour, fixed_per_hour=computed,
        fixed_measured_per_hour=f.per_hour,
        reduction=computed / a.per_hour if a.per_hour else math.inf,
        per_minute_min=min(a.per_minute), per_minute_max=max(a.per_minute),
        all_up=a.all_up and f.all_up,
    )


def notes(runs: int, st: SteadyResult) -> list[str]:
    if not st.all_up:
        return [f"item 4, {size_label(runs)}: a poll did not read every target"]
    return []
