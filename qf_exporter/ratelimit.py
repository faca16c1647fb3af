"""A per-account request budget shared by every worker of that account.

Qianfan's gateway counts requests per AK over trailing one-second windows, so a
budget of ``qps`` means: no window of one second ever holds more than ``qps``
request starts. A token bucket would allow a burst of ``qps`` on top of a full
second; instead each caller reserves a start time at least one window after the
start ``qps`` places before it. Reservations are handed out under a lock, then
the caller waits outside it, so workers queue fairly and never busy-wait.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        qps: float,
        *,
        margin: float = 0.04,
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
        # gateway) cannot put qps+1 arrivals into one window. 20 ms was measurably
        # too little on a loaded 2-core machine against a local gateway; 40 ms costs
        # 4% of the budget when it is used up. Where the network jitters more, the
        # gateway's rate-limit answers widen it (``widen``).
        self.margin = margin
        self._clock = clock
        self._wait = wait or time.sleep
        self._starts: deque[float] = deque(maxlen=self.capacity)
        self._lock = threading.Lock()

    def reserve(self, deadline: float | None = None) -> float | None:
        """Book the next start time; ``None`` when it would fall after ``deadline``."""
        with self._lock:
            now = self._clock()
            slot = now
            if len(self._starts) == self.capacity:
                slot = max(now, self._starts[0] + self.window + self.margin)
            if deadline is not None and slot > deadline:
                return None
            self._starts.append(slot)
            return slot

    def widen(self, most: float = 0.25) -> None:
        """The gateway throttled us although we kept the budget: arrivals jitter more
        than the margin allows, so double it (up to ``most`` seconds)."""
        with self._lock:
            self.margin = min(most, max(self.margin * 2, 0.01))

    def acquire(self, deadline: float | None = None) -> bool:
        """Wait for this caller's turn. False (without waiting) if past ``deadline``.

        Also False when the wait was cut short: a ``wait`` such as ``Event.wait``
        that returns True (the exporter is stopping) must not release every waiting
        caller at once, over budget.
        """
        slot = self.reserve(deadline)
        if slot is None:
            return False
        delay = slot - self._clock()
        return not (delay > 0 and self._wait(delay) is True)
