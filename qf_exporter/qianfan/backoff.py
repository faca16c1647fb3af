"""How long to wait before a retry: capped exponential backoff with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """Attempt k waits between half and all of ``min(cap, base * 2**k)`` seconds, and at
    least what the server's ``Retry-After`` asked for."""

    base: float = 0.5
    cap: float = 10.0
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        delay = min(self.cap, self.base * float(2**attempt))
        delay = delay / 2 + self.uniform(0, delay / 2)  # jitter spreads out retries
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay
