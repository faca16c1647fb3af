"""Shared fixtures: a clock the tests move, a simulated Qianfan, accounts and exporters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from qf_exporter.app import Exporter
from qf_exporter.config import Account, Config, Poll, Secret, V1Target
from qf_exporter.simulator import QianfanSimulator, World

ACCESS_KEY = "AKtest0123456789abcdef"
SECRET_KEY = "SKsecret-0123456789abcdef-very-secret"


class ManualClock:
    """Wall time that moves only when a test says so (starts at the real time)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = float(int(start if start is not None else time.time()))
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def world(clock: ManualClock) -> World:
    return World(clock)


@pytest.fixture
def sim(world: World, clock: ManualClock) -> Iterator[QianfanSimulator]:
    simulator = QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}, wall_clock=clock)
    with simulator:
        yield simulator


def account(
    sim: QianfanSimulator,
    *,
    name: str = "default",
    jobs: tuple[str, ...] = (),
    tasks: tuple[tuple[int, int], ...] = (),
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    **kw: object,
) -> Account:
    # A budget high enough not to slow tests down, unless a test is about the budget.
    kw.setdefault("qps", 1000)
    return Account(
        name=name,
        access_key=Secret(access_key),
        secret_key=Secret(secret_key),
        endpoint=sim.url,
        jobs=jobs,
        tasks=tuple(V1Target(t, j) for t, j in tasks),
        **kw,  # type: ignore[arg-type]
    )


FAST_POLL = Poll(interval=60, finished_interval=1800, stale_after=600, timeout=5, concurrency=4,
                 retries=0)


@pytest.fixture
def make_exporter(
    clock: ManualClock,
) -> Iterator[Callable[..., Exporter]]:
    made: list[Exporter] = []

    def build(*accounts: Account, poll: Poll = FAST_POLL, **kw: object) -> Exporter:
        exporter = Exporter(Config(accounts=accounts, poll=poll), clock=clock,
                            process_metrics=False, **kw)  # type: ignore[arg-type]
        made.append(exporter)
        return exporter

    yield build
    for exporter in made:
        exporter.stop()


def require_tool(name: str) -> str:
    """The path of a Prometheus tool; missing fails under CI=true, else skips."""
    import os
    import shutil

    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed (apt-get install -y prometheus)")
        pytest.skip(f"{name} is not installed")
    return path


def promtool_check_metrics(text: bytes) -> None:
    import subprocess

    result = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text,
                            capture_output=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout.decode() + result.stderr.decode()
    )


def parse_samples(text: str | bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by name and label set (prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    if isinstance(text, bytes):
        text = text.decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            assert sample.timestamp is None, "no sample carries a timestamp"
            samples[key] = sample.value
    return samples


def series(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of one metric whose labels include ``labels``."""
    want = set(labels.items())
    return {lbls: v for (n, lbls), v in samples.items() if n == name and want <= lbls}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float | None:
    found = series(samples, name, **labels)
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
    return next(iter(found.values()), None)
