"""When polls happen: one APScheduler job per account fires its polls, each in a
scheduler thread (executor) of its own. What a poll reads is ``cadence``'s.

A poll that hangs (a server that never answers, a stuck DNS lookup) holds only its
own account's thread: every other account keeps its schedule. A replaced account
gets a new executor, so a poll of its old settings that is still stuck cannot hold
back the new one either.

A poll that runs past the next firing (a budget that cannot hold the interval) makes
that firing skipped, not queued: the next poll starts at the firing after it ends.
APScheduler warns of every such skip; the poller says it once, with the numbers, so
those warnings are dropped (``_SkippedFirings``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerPool
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger


class _SkippedFirings(logging.Filter):
    """Drops APScheduler's warning for a firing skipped while the poll still runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


_SKIPS = _SkippedFirings()


class AccountScheduler:
    """Calls ``fire(account)`` every interval for each scheduled account."""

    def __init__(self, fire: Callable[[str], None]) -> None:
        self._fire = fire
        self._scheduler = BackgroundScheduler(
            executors={"default": SchedulerPool(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC",
        )
        # account -> (alias, executor) of the scheduler executor that runs its polls
        self._executors: dict[str, tuple[str, SchedulerPool]] = {}
        self._serial = 0
        logger = logging.getLogger("apscheduler.scheduler")
        if _SKIPS not in logger.filters:
            logger.addFilter(_SKIPS)

    def start(self) -> None:
        self._scheduler.start()

    def schedule(self, name: str, interval: float) -> None:
        """(Re)schedule an account's polls, first at once, in a new executor."""
        self._serial += 1
        alias = f"account:{name}:{self._serial}"
        executor = SchedulerPool(max_workers=1)
        self._scheduler.add_executor(executor, alias=alias)
        self._scheduler.add_job(
            self._fire,
            IntervalTrigger(seconds=interval),
            args=[name],
            id=f"poll:{name}",
            name=f"poll {name}",
            executor=alias,
            next_run_time=datetime.now(tz=UTC),
            replace_existing=True,
        )
        self._drop_executor(name)
        self._executors[name] = (alias, executor)

    def keep_only(self, names: Container[str]) -> None:
        """Stop firing for every account not in ``names``."""
        for job in self._scheduler.get_jobs():
            if job.id.removeprefix("poll:") not in names:
                job.remove()
        for name in list(self._executors):
            if name not in names:
                self._drop_executor(name)

    def shutdown(self) -> None:
        """Stop firing; returns at once, even while a poll is still running."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _drop_executor(self, name: str) -> None:
        old = self._executors.pop(name, None)
        if old is None:
            return
        alias, executor = old
        self._scheduler.remove_executor(alias, shutdown=False)
        executor.shutdown(wait=False)  # never wait for a poll that may hang
