"""The per-key request budget on its own: a caller woken by stopping sends nothing.

The budget under concurrency, through the whole exporter: faults/test_retries.py."""

from __future__ import annotations

import threading

from qf_exporter.qianfan.budget import RateLimiter


def test_an_interrupted_wait_for_budget_sends_nothing() -> None:
    """Stopping the exporter wakes the callers waiting for budget; none of them then
    goes out over budget."""
    now = [100.0]
    stopping = threading.Event()
    limiter = RateLimiter(1, margin=0.0, clock=lambda: now[0], wait=stopping.wait)
    assert limiter.acquire()  # the first start is free
    stopping.set()
    assert not limiter.acquire()  # its turn was a second away: refused, not sent

