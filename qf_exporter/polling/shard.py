"""This replica's share of the targets (``--shard`` of ``--total-shards``).

The command line checks the two flags by building a ``Shard`` (its error names them).
Kept apart from the poller so that the flag check, ``--version`` and ``--config.check``
run without importing the HTTP client or the scheduler.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """This replica's share of the targets (``--shard`` of ``--total-shards``)."""

    index: int = 0
    total: int = 1

    def __post_init__(self) -> None:
        if self.total < 1 or not 0 <= self.index < self.total:
            raise ValueError(f"--shard must be between 0 and --total-shards - 1 "
                             f"(--shard={self.index} --total-shards={self.total})")

    def owns(self, account: str, target: str) -> bool:
        if self.total <= 1:
            return True
        digest = hashlib.sha256(f"{account}\x00{target}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.total == self.index
