"""Soak: a few thousand polls with random faults, and nothing grows.

Two accounts poll a small simulated Qianfan, alternately, 3000 times, while a seeded
random number generator injects every kind of fault the simulator has (one poll
in three gets one). The clock moves 30 s per poll, so each account is polled every
interval, as the scheduler would. After a warm-up, and again at the end, the test
brings the exporter to the same quiet point (a clean poll, idle connections closed)
and compares: the number of threads, the number of open file descriptors, and the
memory traced by ``tracemalloc``. Run with ``pytest -s`` to see the numbers.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from qf_exporter.app import Exporter
from qf_exporter.config.file import Config, Poll
from qf_exporter.simulator import FAULT_KINDS, QianfanSimulator, World
from tests.fake_time import FakeSleep
from tests.helpers import ACCESS_KEY, SECRET_KEY, ManualClock, account, scrape, series, serve

AK_B, SK_B = "AKsoak0123456789abcdef", "SKsoak-0123456789abcdef-secret"
POLLS = 3000
WARMUP = 500
SEED = 20240611
# Memory that may legitimately appear after the warm-up (about 25 KiB measured): label
# sets of the failure counter seen for the first time, and strings the interpreter's
# method cache holds on to (http.server's "do_POST" lookups in the simulator). A leak
# of 100 bytes per poll would be 250 KiB.
MEMORY_SLACK = 128 * 1024

POLL = Poll(interval=60, finished_interval=600, stale_after=300, timeout=0.25, concurrency=3,
            retries=2)
TARGETS = ("job-1", "job-2", "job-3", "job-4", "101/201", "102/202")


class Counting(logging.Handler):
    """Counts the exporter's log records, so that none is kept (pytest's capture would
    keep every one) and an unexpected error can be found."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[tuple[str, str]] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[(record.levelname, record.msg)] += 1


@dataclass
class Point:
    polls: int
    threads: int
    fds: int
    memory: int

    def __str__(self) -> str:
        return (f"after {self.polls:4d} polls: {self.threads} threads, {self.fds} open fds, "
                f"{self.memory / 1024:.1f} KiB traced")


def small_world(clock: ManualClock) -> World:
    """Runs in every state, all settled within the warm-up (so that both measuring
    points export the same series). Jobs 1 and the first V1 run train on throughout
    and are read every interval; the others are finished and read every
    ``finished_interval``, unless a fault makes them fail."""
    world = World(clock)
    now = clock()
    for j, outcome in enumerate(("running", "succeeded", "failed", "stopped"), start=1):
        world.add_job(f"job-{j}", created=now - 86400)
        world.add_run(f"job-{j}", created=now - 20000, wait=60, duration=3600)
        world.add_run(f"job-{j}", created=now - 900, wait=60, duration=600, outcome=outcome,
                      end_fraction=0.5, error_code=500001, error_message="bad sample")
    world.add_v1_run(101, 201, created=now - 600, wait=0, duration=10**7)
    world.add_v1_run(102, 202, created=now - 6000, wait=0, duration=3000)
    return world


def handler_threads() -> list[threading.Thread]:
    """The exporter's HTTP connection threads (socketserver's ThreadingMixIn)."""
    return [t for t in threading.enumerate() if t.name.endswith("(process_request_thread)")]


SLOW_KINDS = ("delay", "stall_body")  # each costs POLL.timeout of real time
KINDS = sorted(FAULT_KINDS - set(SLOW_KINDS))


@contextmanager
def counted_logs() -> Iterator[Counting]:
    """The exporter's log records, counted instead of kept, for the block's duration."""
    logger = logging.getLogger("qf_exporter")
    counting = Counting()
    saved = logger.propagate, logger.level
    logger.addHandler(counting)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield counting
    finally:
        logger.removeHandler(counting)
        logger.propagate = saved[0]
        logger.setLevel(saved[1])


def inject_faults(sim: QianfanSimulator, rng: random.Random, injected: Counter[str]) -> None:
    """Before a poll: one in three gets a random fault, one in a hundred a slow one."""
    sim.clear_faults()
    if rng.random() < 0.33:
        kind = rng.choice(KINDS)
        sim.add_fault(kind, target=rng.choice((*TARGETS, None)),
                      access_key=rng.choice((ACCESS_KEY, AK_B, None)),
                      count=rng.choice((1, 2, 3, None)))
        injected[kind] += 1
    if rng.random() < 0.01:
        kind = rng.choice(SLOW_KINDS)
        sim.add_fault(kind, target=rng.choice(TARGETS), seconds=30, count=1)
        injected[kind] += 1


def measure(polls: int, sim: QianfanSimulator, exporter: Exporter) -> Point:
    """Bring the exporter to the same quiet point, then count."""
    poller = exporter.poller
    sim.clear_faults()
    for name in poller.accounts:
        state = poller.poll_account(name, force=True)
        assert state.up, {k: v.error for k, v in state.targets.items() if not v.up}
    samples = scrape(exporter)
    assert sum(series(samples, "qianfan_up").values()) == 2
    assert len(series(samples, "qianfan_finetune_run_info")) == 4 * 2 + 2 + 2 * 2 + 1
    for account_poller in poller.accounts.values():
        account_poller.client.drop_connections()
    assert sim.wait_idle(timeout=30), "a connection to Qianfan was left open"
    for thread in handler_threads():
        thread.join(timeout=30)
    assert not handler_threads(), "an HTTP connection thread did not end"
    gc.collect()
    return Point(polls, threading.active_count(), len(os.listdir("/proc/self/fd")),
                 tracemalloc.get_traced_memory()[0])


@pytest.mark.slow
def test_soak_nothing_grows(clock: ManualClock) -> None:
    world = small_world(clock)
    sim = QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY, AK_B: SK_B}, wall_clock=clock,
                           log_size=200).start()
    a = account(sim, name="a", jobs=TARGETS[:4], tasks=((101, 201), (102, 202)), qps=300)
    b = account(sim, name="b", jobs=("job-1", "job-4"), tasks=((101, 201),), access_key=AK_B,
                secret_key=SK_B, qps=300)
    exporter = Exporter(Config(accounts=(a, b), poll=POLL), clock=clock, process_metrics=False)
    serve(exporter)
    poller = exporter.poller
    for account_poller in poller.accounts.values():
        account_poller.client.sleep = FakeSleep()  # retries at once
    with counted_logs() as counting:
        rng = random.Random(SEED)
        faults_injected: Counter[str] = Counter()
        points: list[Point] = []
        started = time.perf_counter()
        tracemalloc.start()
        try:
            for i in range(POLLS):
                if i == WARMUP or (i % 1000 == 0 and i > 0):
                    points.append(measure(i, sim, exporter))
                    print(points[-1])
                inject_faults(sim, rng, faults_injected)
                poller.poll_account(("a", "b")[i % 2])
                if i % 50 == 0:
                    assert b"qianfan_up" in exporter.exposition()
                clock.advance(POLL.interval / 2)
            points.append(measure(POLLS, sim, exporter))
            print(points[-1])
        finally:
            tracemalloc.stop()
            sim.clear_faults()
            exporter.stop()
            sim.stop()
    elapsed = time.perf_counter() - started
    warm, end = points[0], points[-1]
    print(f"soak: {POLLS} polls in {elapsed:.1f}s; threads {warm.threads} -> {end.threads}, "
          f"fds {warm.fds} -> {end.fds}, traced memory {warm.memory / 1024:.1f} KiB -> "
          f"{end.memory / 1024:.1f} KiB ({(end.memory - warm.memory) / 1024:+.1f} KiB)")
    print(f"faults injected: {dict(sorted(faults_injected.items()))}")
    print(f"log records: {sum(counting.counts.values())}")

    assert set(faults_injected) == set(FAULT_KINDS)  # every kind was exercised
    # Nothing unexpected was logged: every failure was a classified QianfanError.
    assert not [key for key in counting.counts if key[0] in ("ERROR", "CRITICAL")], \
        counting.counts
    for point in points[1:]:
        assert point.threads == warm.threads, points
        assert point.fds == warm.fds, points
    assert end.memory - warm.memory < MEMORY_SLACK, points
