"""``--demo``: the simulated Qianfan on loopback, with generated credentials.

Nothing here reaches the network: the simulator listens on 127.0.0.1 on a free
port, its credentials are random and live only in this process.
"""

from __future__ import annotations

import secrets
import time

from qf_exporter.config.file import Account, Config, Poll, V1Target
from qf_exporter.simulator import QianfanSimulator, demo_world
from qf_exporter.util.secrets import Secret


def start_demo(speed: float = 1.0) -> tuple[QianfanSimulator, Config]:
    access_key = "demo-" + secrets.token_hex(8)
    secret_key = secrets.token_hex(16)
    world = demo_world(time.time, speed=speed)
    simulator = QianfanSimulator(world, {access_key: secret_key}, qps=10).start()
    account = Account(
        name="demo",
        access_key=Secret(access_key),
        secret_key=Secret(secret_key),
        endpoint=simulator.url,
        qps=5,
        jobs=tuple(sorted(world.jobs)),
        tasks=tuple(V1Target(task, job) for task, job in sorted(world.v1_runs)),
    )
    # Short intervals, so a newcomer sees runs move within seconds.
    poll = Poll(interval=5, finished_interval=60, stale_after=60, timeout=5, concurrency=4)
    return simulator, Config(accounts=(account,), poll=poll)
