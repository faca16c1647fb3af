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
        margin: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        if qps <= 0:
            raise ValueError("qps must be > 0")
        # A fractional budget below 1 becomes one request per 1/qps seconds; above 1
        # the fraction is dropped rather than risk a second window over budget.
        self.capacity = max(1, math.floor(qps))
        self.window = 1.0 if qps >= 1 else 1.0 / qps
        # The gateway timestamps arrivals, not our starts: keep a little slack so
        # jitter in send time cannot put qps+1 arrivals into one window.
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

    def acquire(self, deadline: float | None = None) -> bool:
        """Wait for this caller's turn. False (without waiting) if past ``deadline``."""
        slot = self.reserve(deadline)
        if slot is None:
            return False
        delay = slot - self._clock()
        if delay > 0:
            self._wait(delay)
        return True
