"""The one way tests fake a client's backoff sleep.

A client sleeps between retries with its injected ``sleep`` (the stop event only
says whether to give up). ``FakeSleep`` stands in for it: it returns at once,
records what it was asked to wait, and moves the test's clock by as much when it
has one.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol


class Advancing(Protocol):
    def advance(self, seconds: float) -> None: ...


class FakeSleep:
    """A sleep that does not sleep: recorded, and moving ``clock`` when given."""

    # Only the latest waits are kept, so that a soak of thousands of retries
    # does not grow the test's memory.
    KEPT = 256

    def __init__(self, clock: Advancing | None = None) -> None:
        self.clock = clock
        self._delays: deque[float] = deque(maxlen=self.KEPT)
        self._lock = threading.Lock()  # several workers may back off at once

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self._delays.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)

    @property
    def delays(self) -> list[float]:
        """The waits asked for, oldest first."""
        with self._lock:
            return list(self._delays)

    def clear(self) -> None:
        """Forget the waits recorded so far."""
        with self._lock:
            self._delays.clear()
