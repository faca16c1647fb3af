"""The one way tests fake a client's backoff sleep, and its waits for budget.

A client sleeps between retries with its injected ``sleep`` (the stop event only
says whether to give up). ``FakeSleep`` stands in for it: it returns at once,
records what it was asked to wait, and moves the test's clock by as much when it
has one. ``LockstepBudget`` runs rate limiters and the simulated gateway's arrival
stamps on one manual clock, so that tests of the one-second windows do not depend on
how busy the machine is.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
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


class Stepping(Advancing, Protocol):
    def __call__(self) -> float: ...


class Limiter(Protocol):
    clock: Callable[[], float]
    wait: Callable[[float], object]
    started: int


class LockstepBudget:
    """Rate limiters and a simulated gateway on one manual clock, in lock step.

    A limiter's wait moves the clock to the caller's turn, but only once every request
    the limiters already let through has reached the gateway, which stamps arrivals
    with the same clock. So a request arrives at the very time its limiter let it go:
    the gateway's one-second windows hold exactly what the limiter allowed, however
    late a busy machine runs a thread, and the test costs no real time.
    """

    def __init__(self, clock: Stepping, gateway: Gateway, *limiters: Limiter) -> None:
        self.clock = clock
        self._limiters = list(limiters)
        self._arrived = 0
        self._changed = threading.Condition()
        gateway.arrival_clock = clock
        gateway.on_budget = self._arrival
        for limiter in limiters:
            limiter.clock = clock
            limiter.wait = self.wait

    def _arrival(self, _stamp: float, _throttled: bool) -> None:
        with self._changed:
            self._arrived += 1
            self._changed.notify_all()

    def advance(self, seconds: float) -> None:
        """Move the clock (a backoff's sleep, ``FakeSleep(lockstep)``) in step too."""
        self.wait(seconds)

    def wait(self, seconds: float) -> None:
        turn = self.clock() + seconds
        with self._changed:
            # Generous: only a request lost before the gateway could hold this up.
            self._changed.wait_for(
                lambda: self._arrived >= sum(limiter.started for limiter in self._limiters),
                timeout=30,
            )
        late = turn - self.clock()
        if late > 0:
            self.clock.advance(late)


class Gateway(Protocol):
    arrival_clock: Callable[[], float]
    on_budget: Callable[[float, bool], None] | None
