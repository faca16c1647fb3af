"""The exporter process shared by items 2, 3 and 5 (``serve-child``).

The simulator (in the parent) enforces qps=20 with 50 ms latency; a fresh exporter
child polls it once (item 3: wall time; item 5: RSS and CPU), then serves ``/metrics``
to the scrapers (item 2). Exporter and simulator are separate processes, as the
exporter and the gateway are: neither stalls the other.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchmarks import quota, scrape
from benchmarks.common import (
    ACCOUNT,
    ACTIVE_FRACTION,
    RUNS_PER_JOB,
    Settings,
    child_credentials,
    cpu_seconds,
    emit,
    finish,
    make_account,
    proc_status,
    read_json,
    spawn_child,
    start_simulator,
    tell,
)
from benchmarks.memory import MemoryResult
from benchmarks.quota import QuotaResult
from benchmarks.scrape import ScrapesResult


@dataclass(frozen=True)
class ServeResult:
    quota: QuotaResult
    memory: MemoryResult
    scrapes: ScrapesResult | None


def reset_peak() -> bool:
    """Reset VmHWM, so that the peak read after the scrapes is theirs alone."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(url: str, jobs: int, qps: float) -> None:
    """The ``serve-child`` subcommand: one full poll under the account's budget (which
    renders the snapshot once), then RSS and CPU, then serve ``/metrics`` until told."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ak, sk = child_credentials()
    rss_start = proc_status("VmRSS")
    from qf_exporter.app import Exporter
    from qf_exporter.config.file import Config, Poll
    from qf_exporter.web.listen import bind

    account = make_account(url, jobs, ak, sk, qps=qps)
    # As the daemon runs: its heap frozen after each publication (util/heap.py), so
    # that no full collection of the 10,000 runs' objects stops the scrapes.
    exporter = Exporter(Config(accounts=(account,),
                               poll=Poll(concurrency=quota.POLL_CONCURRENCY)),
                        settle_heap=True)
    rss_imported = proc_status("VmRSS")
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    state = exporter.poller.poll_account(ACCOUNT, force=True)
    cpu_poll = cpu_seconds() - cpu0
    wall_poll = time.perf_counter() - wall0
    rss_after = proc_status("VmRSS")
    hwm_after = proc_status("VmHWM")
    hwm_reset = reset_peak()
    server = exporter.serve([bind("127.0.0.1", 0)], "/metrics", None)
    emit({
        "port": server.port,
        "runs": len(state.runs),
        "up": state.up,
        "targets_up": sum(1 for t in state.targets.values() if t.up),
        "targets": len(state.targets),
        "rss_start_kb": rss_start,
        "rss_imported_kb": rss_imported,
        "rss_after_poll_kb": rss_after,
        "hwm_after_poll_kb": hwm_after,
        "cpu_poll_s": cpu_poll,
        "wall_poll_s": wall_poll,
        "hwm_reset": hwm_reset,
    })
    answer_stats(cpu_seconds())
    exporter.stop()


def answer_stats(cpu_serve0: float) -> None:
    """Answer the parent's ``stats`` lines until it says ``quit``."""
    for line in sys.stdin:
        if line.strip() == "stats":
            emit({"rss_kb": proc_status("VmRSS"), "hwm_kb": proc_status("VmHWM"),
                  "cpu_serving_s": cpu_seconds() - cpu_serve0})
        elif line.strip() == "quit":
            break


def memory_result(first: dict[str, Any], stats: dict[str, Any] | None,
                  scrapes_served: int) -> MemoryResult:
    return MemoryResult(
        rss_start_kb=first["rss_start_kb"],
        rss_imported_kb=first["rss_imported_kb"],
        rss_after_poll_kb=first["rss_after_poll_kb"],
        hwm_after_poll_kb=first["hwm_after_poll_kb"],
        cpu_poll_s=first["cpu_poll_s"],
        wall_poll_s=first["wall_poll_s"],
        hwm_reset=first["hwm_reset"],
        targets_up=first["targets_up"],
        targets=first["targets"],
        hwm_serving_kb=None if stats is None else stats["hwm_kb"],
        cpu_serving_s=None if stats is None else stats["cpu_serving_s"],
        scrapes_served=scrapes_served,
    )


def measure(jobs: int, ak: str, sk: str, settings: Settings, with_scrapes: bool) -> ServeResult:
    """Items 3 and 5 for one size, and item 2 when ``with_scrapes``."""
    from qf_exporter.simulator import fleet_world

    world = fleet_world(time.time, jobs, RUNS_PER_JOB, ACTIVE_FRACTION)
    sim = start_simulator(world, ak, sk, qps=quota.POLL_QPS, latency=quota.POLL_LATENCY)
    decisions = quota.observe(sim)
    proc = spawn_child("serve-child", sim.url, str(jobs), str(quota.POLL_QPS), ak=ak, sk=sk)
    try:
        first = read_json(proc)
        poll = quota.result(sim, decisions, first["wall_poll_s"], first["up"],
                            first["targets_up"])
        if not with_scrapes:
            return ServeResult(poll, memory_result(first, None, 0), None)
        scrapes = scrape.measure(first["port"], settings)
        tell(proc, "stats")
        stats = read_json(proc)
        return ServeResult(poll, memory_result(first, stats, scrape.served(settings)), scrapes)
    finally:
        finish(proc)
        sim.stop()
