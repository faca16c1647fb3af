"""Peak resident memory of a real exporter under steady polling and scrapes.

A real exporter process (``exposition-exporter-child``: scheduled polls every 5 s,
jobs of 50 runs) is sampled every second over ``--duration`` seconds while 4 scrapers
in processes of their own (``exposition-scrape-child``) read it without pause, once
plain and once gzip; beside its memory right after the first poll.
"""

from __future__ import annotations

import gzip
import http.client
import json
import secrets
import sys
import time
from dataclasses import dataclass

from benchmarks.common import (
    ACTIVE_FRACTION,
    child_credentials,
    emit,
    finish,
    proc_status,
    read_json,
    spawn_child,
)
from benchmarks.exposition import RUNS_PER_JOB, account

# Imported at module level, by the exporter child too, as the script this module came
# from did: the memory rows were measured with the simulator's modules loaded.
from qf_exporter.config.file import Config, Poll
from qf_exporter.simulator import QianfanSimulator, fleet_world
from qf_exporter.web.listen import bind

SCRAPERS = 4
ENCODINGS = ("identity", "gzip")


@dataclass(frozen=True)
class SteadyMemory:
    after_first_poll_mb: float
    peak_mb: float
    samples: int
    scrapes: int

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.after_first_poll_mb


def rss_mb(pid: int | str = "self") -> float:
    kb = proc_status("VmRSS", pid)
    return kb / 1024 if kb else float("nan")


def exporter_child(url: str, jobs: int) -> None:
    """The ``exposition-exporter-child`` subcommand: a real exporter, scheduled polls
    every 5 s, serving on loopback until told to quit."""
    from qf_exporter.app import Exporter

    ak, sk = child_credentials()
    # As the daemon runs: its heap frozen after each publication (util/heap.py).
    exporter = Exporter(Config(accounts=(account(url, jobs, ak, sk),),
                               poll=Poll(interval=5, finished_interval=1800, concurrency=4)),
                        settle_heap=True)
    exporter.start()
    exporter.poller.ready.wait()
    server = exporter.serve([bind("127.0.0.1", 0)], "/metrics", None)
    emit({"port": server.port, "rss_mb": rss_mb()})
    sys.stdin.readline()
    exporter.stop()


def scraper_child(port: int, encoding: str, seconds: float) -> None:
    """The ``exposition-scrape-child`` subcommand: scrape without pause for ``seconds``,
    reading each answer whole."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    end, count = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        conn.request("GET", "/metrics", headers={"Accept-Encoding": encoding})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"status {response.status}")
        if encoding == "gzip":
            gzip.decompress(body)
        count += 1
    emit({"scrapes": count})


def measure(jobs: int, encoding: str, seconds: float) -> SteadyMemory:
    ak, sk = "AK" + secrets.token_hex(8), secrets.token_hex(16)
    sim = QianfanSimulator(fleet_world(time.time, jobs, RUNS_PER_JOB, ACTIVE_FRACTION),
                           {ak: sk}).start()
    child = spawn_child("exposition-exporter-child", sim.url, str(jobs), ak=ak, sk=sk)
    try:
        started = read_json(child)
        scrapers = [spawn_child("exposition-scrape-child", str(started["port"]), encoding,
                                str(seconds)) for _ in range(SCRAPERS)]
        samples = []
        while any(s.poll() is None for s in scrapers):
            samples.append(rss_mb(child.pid))
            time.sleep(1.0)  # the sampling period, not a wait for anything
        scrapes = sum(json.loads(s.communicate()[0] or '{"scrapes": 0}')["scrapes"]
                      for s in scrapers)
    finally:
        finish(child)
        sim.stop()
    return SteadyMemory(after_first_poll_mb=started["rss_mb"], peak_mb=max(samples),
                        samples=len(samples), scrapes=scrapes)


def measure_both(jobs: int, seconds: float) -> dict[str, SteadyMemory]:
    """Plain scrapers, then gzip scrapers, each against a fresh exporter."""
    return {encoding: measure(jobs, encoding, seconds) for encoding in ENCODINGS}
