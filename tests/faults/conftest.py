"""The fault tests' fixture: a fleet served by a simulated Qianfan on the test's clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qf_exporter.simulator import QianfanSimulator, World
from tests.faults.fleet import CREDENTIALS, Fleet
from tests.helpers import ManualClock


@pytest.fixture
def fleet(clock: ManualClock) -> Iterator[Fleet]:
    """Two jobs and two V1 runs, all training for 100 minutes (1% a minute)."""
    world = World(clock)
    for job in ("job-1", "job-2"):
        world.add_job(job, created=clock() - 3600)
        world.add_run(job, f"task-{job}-a", created=clock() - 600, wait=0, duration=6000)
        world.add_run(job, f"task-{job}-b", created=clock() - 1200, wait=0, duration=6000)
    world.add_v1_run(101, 201, created=clock() - 600, wait=0, duration=6000)
    world.add_v1_run(102, 202, created=clock() - 900, wait=0, duration=6000)
    with QianfanSimulator(world, CREDENTIALS, wall_clock=clock) as sim:
        yield Fleet(world, clock, sim)
