"""A clock for driving the simulated world by hand, in the tests and the benchmark."""

from __future__ import annotations

import threading
import time


class ManualClock:
    """Wall time that moves only when told to (starts at the real time, whole seconds)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = float(int(start if start is not None else time.time()))
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
