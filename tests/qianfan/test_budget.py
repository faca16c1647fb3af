"""The per-key request budget on its own: at most qps starts in any second, even when a
caller wakes late, and a caller woken by stopping sends nothing.

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


def test_rate_limiter_windows() -> None:
    now = [100.0]
    waits: list[float] = []

    def wait(d: float) -> None:
        waits.append(d)
        now[0] += d

    limiter = RateLimiter(3, margin=0.0, clock=lambda: now[0], wait=wait)
    starts = []
    for _ in range(9):
        limiter.acquire()
        starts.append(now[0])
    assert starts == [100, 100, 100, 101, 101, 101, 102, 102, 102]
    assert limiter.reserve(deadline=now[0] + 0.5) is None  # the next slot is at 103
    half = RateLimiter(0.5, margin=0.0, clock=lambda: now[0], wait=wait)
    half.acquire()
    t0 = now[0]
    half.acquire()
    assert now[0] - t0 == 2.0


def test_a_caller_that_woke_late_pushes_the_next_window_back() -> None:
    """On a busy machine a caller can wake after its slot: the ones booked a window
    after it then wait for a whole window after its real start, so no second ever
    holds more than qps starts however late the wake-ups."""
    now = [100.0]
    late = [0.3]  # the first wait oversleeps by 0.3 s

    def oversleeping_wait(d: float) -> None:
        now[0] += d + (late.pop() if late else 0.0)

    limiter = RateLimiter(2, margin=0.0, clock=lambda: now[0], wait=oversleeping_wait)
    starts = []
    for _ in range(5):
        assert limiter.acquire()
        starts.append(round(now[0], 6))
    assert starts == [100, 100, 101.3, 101.3, 102.3]

