"""A per-account request budget shared by every worker of that account.

Qianfan's gateway counts requests per AK over trailing one-second windows, so a
budget of ``qps`` means: no window of one second ever holds more than ``qps``
request starts. A token bucket would allow a burst of ``qps`` on top of a full
second; instead each caller reserves a start time at least one window after the
start ``qps`` places before it. Reservations are handed out under a lock, then
the caller waits outside it, so workers queue fairly and never busy-wait.

Waiting for budget is never a failure (only Qianfan's answers, or their absence
within the timeout, fail a read): a caller waits for its turn however
far away it is, and only a stop (the exporter or the account's poller closing) ends
the wait, with ``NotSent``. ``Deadline`` is how a read bounds its time with Qianfan
without counting those waits.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable


class NotSent(Exception):
    """A request's wait for budget was cut short by a stop: it was never sent, so it
    is no failure of Qianfan's and is counted nowhere."""


class Deadline:
    """When a read must give up on Qianfan: a point in (wall) time that moves later by
    every wait for the account's budget, so that a read which waited its turn still
    has its whole time for Qianfan's answers and retries."""

    def __init__(self, at: float) -> None:
        self.at = at

    def extend(self, seconds: float) -> None:
        self.at += seconds


class RateLimiter:
    def __init__(
        self,
        qps: float,
        *,
        margin: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        if qps <= 0:
            raise ValueError("qps must be > 0")
        # A fractional budget below 1 becomes one request per 1/qps seconds; above 1
        # the fraction is dropped rather than risk a second window over budget.
        self.capacity = max(1, math.floor(qps))
        self.window = 1.0 if qps >= 1 else 1.0 / qps
        # The gateway timestamps arrivals, not our starts: keep some slack so that
        # jitter between start and arrival (a late wake-up, a request that has to open
        # a TCP/TLS connection while the one a second later reuses one, a busy
        # gateway) cannot put qps+1 arrivals into one window. 20 ms, then 40 ms, were
        # measurably too little on a loaded 2-core machine against a local gateway
        # (a start delayed past them was refused); 100 ms also covers the jitter of a
        # real network path and costs 10% of the budget when it is used up. Where the
        # network jitters more, the gateway's rate-limit answers widen it (``widen``).
        self.margin = margin
        self.clock = clock
        self.wait = wait or time.sleep
        self.qps = qps
        self._starts: deque[float] = deque(maxlen=self.capacity)  # booked slots
        # When the latest callers actually went: a caller that woke late (a busy
        # machine) started after its slot, and the one booked a window after it must
        # not go before a whole window has passed since.
        self._started: deque[float] = deque(maxlen=self.capacity)
        self._lock = threading.Lock()
        self.granted = 0  # slots booked so far (a poll counts what it needed)
        self.started = 0  # callers let through so far

    def reserve(self, deadline: float | None = None) -> float | None:
        """Book the next start time; ``None`` when it would fall after ``deadline``."""
        with self._lock:
            now = self.clock()
            slot = now
            if len(self._starts) == self.capacity:
                slot = max(now, self._starts[0] + self.window + self.margin)
            if deadline is not None and slot > deadline:
                return None
            self._starts.append(slot)
            self.granted += 1
            return slot

    def adopt(self, previous: RateLimiter) -> None:
        """Go on from the starts of the limiter this one replaces (a reload), so that
        the requests it let through in the last window still count."""
        with previous._lock:
            starts, started = list(previous._starts), list(previous._started)
        with self._lock:
            self._starts.extend(starts)
            self._started.extend(started)

    def seconds_for(self, requests: int) -> float:
        """About how long ``requests`` take at this budget, margin included."""
        return requests / self.capacity * (self.window + self.margin)

    def widen(self, most: float = 0.25) -> None:
        """The gateway throttled us although we kept the budget: arrivals jitter more
        than the margin allows, so double it (up to ``most`` seconds)."""
        with self._lock:
            self.margin = min(most, max(self.margin * 2, 0.01))

    def acquire(self, deadline: float | None = None) -> bool:
        """Wait for this caller's turn. False (without waiting) if past ``deadline``.

        Without a deadline it waits however long its turn is away. Also False when
        the wait was cut short: a ``wait`` such as ``Event.wait``
        that returns True (the exporter is stopping) must not release every waiting
        caller at once, over budget.
        """
        slot = self.reserve(deadline)
        if slot is None:
            return False
        while True:
            delay = slot - self.clock()
            if delay > 0 and self.wait(delay) is True:
                return False
            later = self._start()
            if later is None:
                return True
            slot = later

    def _start(self) -> float | None:
        """Go now (None) if the last ``capacity`` starts all lie a window and the
        margin back; else the time to try again."""
        with self._lock:
            now = self.clock()
            if len(self._started) == self.capacity:
                free = self._started[0] + self.window + self.margin
                if now < free:
                    return free
            self._started.append(now)
            self.started += 1
            return None
