"""Item 3: one full poll's wall time against the pace the account's budget allows, with
the simulator enforcing the quota, and how many answers it throttled.

The pace is requests ÷ qps with each one-second window of the budget ``POLL_MARGIN``
(100 ms) longer: the rate limiter's margin for jitter between a request's start and its
arrival at the gateway (``qianfan/budget.py``), which costs 10 % of a budget that is
used up.

The requests are every job's list pages plus one DescribeFineTuningTask detail per
running run, where V2 progress comes from. The poll itself runs in the exporter process
of ``serve.py``; this module reads the gateway's side of it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks.common import size_label
from qf_exporter.qianfan.budget import RateLimiter

if TYPE_CHECKING:  # this module is imported by the exporter's child process
    from qf_exporter.simulator import QianfanSimulator

# The budget must be the bottleneck: 4 workers x 50 ms = 80 req/s > 20 qps.
POLL_QPS = 20
POLL_LATENCY = 0.05
POLL_CONCURRENCY = 4
# The slack the rate limiter keeps after each window of the budget (seconds).
POLL_MARGIN = RateLimiter(POLL_QPS).margin

Decision = tuple[float, bool]  # the gateway's arrival stamp, and whether it throttled


@dataclass(frozen=True)
class QuotaResult:
    wall: float
    requests: int
    list_pages: int
    details: int
    floor: float  # requests ÷ qps
    pace: float  # the same with the limiter's margin: what the budget lets through
    ratio: float  # wall ÷ pace
    throttled: int
    false_throttles: int
    worst_window: int
    over_windows: int
    up: bool
    targets_up: int


def window_counts(arrivals: list[float]) -> list[int]:
    """For each arrival (sorted), how many arrivals its trailing one-second window holds."""
    out, lo = [], 0
    for hi, t in enumerate(arrivals):
        while arrivals[lo] <= t - 1.0:
            lo += 1
        out.append(hi - lo + 1)
    return out


def false_throttles(decisions: list[Decision], arrivals: list[float]) -> int:
    """Throttled answers whose trailing window, counted from the gateway's own arrival
    stamps, held no more than qps requests: the simulator's mistakes."""
    count = 0
    for arrived, throttled in decisions:
        if throttled:
            n = bisect.bisect_right(arrivals, arrived) - bisect.bisect_right(
                arrivals, arrived - 1.0)
            count += n <= POLL_QPS
    return count


def observe(sim: QianfanSimulator) -> list[Decision]:
    """Observe (never change) the gateway's budget decisions from now on."""
    decisions: list[Decision] = []
    sim.on_budget = lambda arrived, throttled: decisions.append((arrived, throttled))
    return decisions


def result(sim: QianfanSimulator, decisions: list[Decision], wall: float, up: bool,
           targets_up: int) -> QuotaResult:
    """The poll the exporter timed at ``wall`` seconds, as the gateway saw it."""
    requests = sim.request_count()
    arrivals = sorted(a for a, _ in decisions)
    counts = window_counts(arrivals)
    floor = requests / POLL_QPS
    pace = RateLimiter(POLL_QPS).seconds_for(requests)
    return QuotaResult(
        wall=wall,
        requests=requests,
        list_pages=sim.request_count("DescribeFineTuningTasks"),
        details=sim.request_count("DescribeFineTuningTask"),
        floor=floor,
        pace=pace,
        ratio=wall / pace if pace else math.nan,
        throttled=sim.stats.throttled,
        false_throttles=false_throttles(decisions, arrivals),
        worst_window=max(counts) if counts else 0,
        over_windows=sum(1 for c in counts if c > POLL_QPS),
        up=up,
        targets_up=targets_up,
    )


def notes(runs: int, p: QuotaResult) -> list[str]:
    """Throttles (and whether the gateway was right) and targets the poll missed."""
    out = []
    if p.throttled:
        out.append(
            f"item 3, {size_label(runs)}: {p.throttled} throttled answers, "
            f"{p.false_throttles} of them false (the trailing window of the simulator's "
            f"own arrival stamps held ≤ {POLL_QPS}); busiest window {p.worst_window}")
    if not p.up:
        out.append(f"item 3, {size_label(runs)}: the poll did not read every target "
                   f"({p.targets_up} up)")
    return out
