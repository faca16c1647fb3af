"""The background poller: reads each account's targets into immutable snapshots.

APScheduler fires one job per account every ``poll.interval``. Each firing reads
the targets that are due, with the account's ``concurrency``, and swaps in a new
snapshot in one step:

* a target with a waiting or running run (or none yet) is due every ``interval``;
* a target whose runs are all final is due every ``finished_interval``, so new
  runs of a finished job are still found within ``finished_interval``;
* a target whose last read failed is retried every ``interval``, and keeps its
  last-read runs (with ``qianfan_target_up`` 0) until ``stale_after``.

Health at the right grain: an account is up (``qianfan_up``) when its latest poll
reached Qianfan with accepted credentials. Any authoritative answer counts, "no such
job" included: a mistyped job id is that target's problem (``qianfan_target_up`` 0),
not an account outage. The account is down only when every call of the poll failed
with a connection, timeout, auth, server or rate-limit error (or an answer that could
not be read), or when the job listing (discovery) failed. A firing with nothing due
makes no call and keeps the previous poll's answer; an account with nothing to read at
all is not down.

Accounts never share a worker, a client, a budget or a scheduler thread (each
account's job runs in its own one-thread executor), so one account's failures,
slowness or throttling never delay another's poll.

Discovery (``discover: true``) lists the account's jobs with
``DescribeFineTuningJobs`` every ``discovery.interval`` (not every poll), keeps
those the filters want and this shard owns, and adds them to the configured
targets. A failed listing keeps the previous list (the account reads as down);
a discovered job that the API says no longer exists is dropped at once.

Retention and cardinality: runs that finished more than ``finished_retention``
ago, and runs beyond the account's ``max_runs`` (oldest first), are read but not
exported; ``qianfan_runs_left_out_total`` counts each such run once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Protocol

from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerPool
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from qf_exporter import schedule
from qf_exporter.client import QianfanClient
from qf_exporter.config import Account, Config, Poll
from qf_exporter.discovery import JobDiscovery
from qf_exporter.errors import REASONS
from qf_exporter.ratelimit import RateLimiter
from qf_exporter.reachability import Health, Outcome
from qf_exporter.reader import Read, TargetReader
from qf_exporter.retention import LeftOutCounter, TargetKey, retain
from qf_exporter.snapshot import AccountState, Snapshot, TargetState
from qf_exporter.telemetry import ApiMetrics

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    """What the poller publishes each new snapshot to (``pages.Pages``)."""

    def publish(self, before: Snapshot, after: Snapshot, accounts: Iterable[str]) -> None: ...


@dataclass(frozen=True)
class Shard:
    """This replica's share of the targets (``--shard`` of ``--total-shards``)."""

    index: int = 0
    total: int = 1

    def __post_init__(self) -> None:
        if self.total < 1 or not 0 <= self.index < self.total:
            raise ValueError(f"shard {self.index} of {self.total}: need 0 <= shard < total")

    def owns(self, account: str, target: str) -> bool:
        if self.total <= 1:
            return True
        digest = hashlib.sha256(f"{account}\x00{target}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.total == self.index


def zero_counters(account: Account, metrics: ApiMetrics) -> None:
    """Start the request counters at 0 for the calls an account will make, so that
    ``rate()`` and ``increase()`` see the first failure (alerts otherwise start late)."""
    actions = []
    if account.tasks:
        actions.append("jobDetail")
    if account.jobs or account.discover:
        # V2 progress comes from each running run's detail (see reader.py).
        actions += ["DescribeFineTuningTasks", "DescribeFineTuningTask"]
    if account.discover:
        actions.append("DescribeFineTuningJobs")
    for action in actions:
        metrics.requests.labels(account.name, action)
        for reason in REASONS:
            metrics.failures.labels(account.name, action, reason)


class AccountPoller:
    """One account's polls: its client, its workers, its targets and their states.

    The steps are other modules' (``discovery``, ``schedule``, ``reader``,
    ``retention``); this class calls them in order and keeps what lasts from one poll
    to the next.
    """

    def __init__(
        self,
        account: Account,
        poll: Poll,
        metrics: ApiMetrics,
        *,
        shard: Shard,
        clock: Callable[[], float],
        stop: threading.Event,
    ) -> None:
        self.account = account
        self.poll = poll
        self.shard = shard
        self.clock = clock
        self.stop = stop
        # How long one read (with its retries and waits for budget) may take: a poll's
        # interval, or the request timeout when that is longer (the configured timeout
        # of one request is never cut short).
        self.read_budget = max(poll.interval, poll.timeout)
        self.client = QianfanClient(
            account, metrics=metrics, timeout=poll.timeout, retries=poll.retries,
            pool_size=poll.concurrency,
            # A wait for budget ends early when the exporter stops.
            limiter=RateLimiter(account.qps, wait=stop.wait),
            clock=clock, stop=stop, max_response_bytes=poll.max_response_bytes,
        )
        zero_counters(account, metrics)
        self.reader = TargetReader(account.name, self.client, clock, self.read_budget)
        self.discovery = JobDiscovery(account, poll, self.client,
                                      lambda job: shard.owns(account.name, job))
        self.left_out = LeftOutCounter(account.name, metrics.runs_left_out)
        self.workers = ThreadPoolExecutor(
            max_workers=poll.concurrency, thread_name_prefix=f"poll-{account.name}"
        )
        # V1 targets by their key, so that a read gets the typed pair.
        self._pairs = {("v1", pair.name): pair for pair in account.tasks
                       if shard.owns(account.name, pair.name)}
        self._configured = frozenset(
            [("v2", job) for job in account.jobs if shard.owns(account.name, job)]
            + list(self._pairs))
        self.targets: dict[TargetKey, TargetState] = {
            key: TargetState(api=key[0], name=key[1]) for key in sorted(self._configured)
        }
        self.health = Health()
        self._cap_warned = False
        self._lock = threading.Lock()  # one poll of this account at a time
        self._warn_cap(len(self._pairs), "v1_pairs",
                       "the configured V1 pairs alone exceed max_runs: the oldest runs "
                       "will not be exported (see qianfan_runs_left_out_total)")

    def close(self) -> None:
        self.workers.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def adopt(self, previous: AccountState, left_out: LeftOutCounter | None = None
              ) -> AccountState:
        """Take over the last snapshot of this account from before a reload.

        Targets that the new settings still poll keep their state (runs, health, last
        success) and are all due at the first poll under the new settings; targets they no
        longer poll go at once. With discovery on, previously discovered jobs stay until
        the first listing under the new settings says otherwise. Returns the state to
        serve until that first poll completes.
        """
        kept: dict[TargetKey, TargetState] = {}
        for key, state in previous.targets.items():
            if key in self._configured:
                kept[key] = replace(state, discovered=False, last_attempt=None)
            elif (self.account.discover and key[0] == "v2"
                  and self.shard.owns(self.account.name, key[1])):
                kept[key] = replace(state, discovered=True, last_attempt=None)
        self.targets.update(kept)
        self.discovery.jobs = frozenset(name for (_, name), s in kept.items() if s.discovered)
        self.health.adopt(previous)
        if left_out is not None:
            self.left_out.adopt(left_out.counted, kept)
        runs = {run.key for state in kept.values() for run in state.runs}
        return replace(
            previous,
            targets=MappingProxyType(kept),
            runs=tuple(run for run in previous.runs if run.key in runs),
            discovered_jobs=len(self.discovery.jobs) if self.account.discover else None,
            discovery_error=previous.discovery_error if self.account.discover else "",
        )

    def poll_once(self, force: bool = False) -> AccountState:
        with self._lock:
            started = time.perf_counter()
            now = self.clock()
            outcomes: list[Outcome] = []
            if self.account.discover and not self.stop.is_set():
                listed = self.discovery.refresh(now, now + self.read_budget)
                if listed is not None:
                    outcomes.append(Outcome() if listed
                                    else Outcome("listing", self.discovery.error))
            self._sync_targets()
            due = [key for key, state in self.targets.items()
                   if force or schedule.due(state, now, self.poll)]
            outcomes += self._read(due, now)
            end = self.clock()
            for key, state in list(self.targets.items()):
                self.targets[key] = self._expire(state, end)
            self.health.update(outcomes, self.discovery.error)
            return self._state(end, time.perf_counter() - started, read=bool(due))

    def _sync_targets(self) -> None:
        """Add discovered jobs, drop jobs that vanished upstream (configured ones stay)."""
        wanted = self._configured | {("v2", job) for job in self.discovery.jobs}
        for key in list(self.targets):
            if key not in wanted:
                del self.targets[key]
        for key in sorted(wanted - self.targets.keys()):
            self.targets[key] = TargetState(
                api=key[0], name=key[1], discovered=key not in self._configured
            )

    def _read(self, due: list[TargetKey], now: float) -> list[Outcome]:
        """Read the due targets with the account's workers; one outcome per read."""
        futures: dict[TargetKey, Future[Read]] = {}
        for key in due:
            if self.stop.is_set():
                break
            try:
                futures[key] = self.workers.submit(
                    self.reader.read, self.targets[key], now, self._pairs.get(key))
            except RuntimeError:  # the workers were shut down: the exporter is stopping
                break
        outcomes = []
        for key, future in futures.items():
            try:
                read = future.result()
            except CancelledError:  # stopping: this read never started
                continue
            state = read.state
            # A job whose list was read but a run's detail was not (its runs were read
            # at this poll, the target is down) did reach Qianfan.
            reached = state.up or any(run.last_read >= now for run in state.runs)
            outcomes.append(Outcome() if reached else Outcome(state.reason, state.error))
            if read.vanished and key not in self._configured:
                log.info("discovered job vanished upstream, dropping it",
                         extra={"account": self.account.name, "target": key[1]})
                del self.targets[key]
                self.discovery.forget(key[1])
                continue
            self.targets[key] = state
        return outcomes

    def _expire(self, state: TargetState, now: float) -> TargetState:
        expired = schedule.expire(state, now, self.poll)
        if expired is not state:
            log.info("dropping stale runs", extra={"account": self.account.name,
                                                   "target": state.name})
        return expired

    def _state(self, end: float, duration: float, read: bool) -> AccountState:
        self.health.polled(end, duration, read)
        retained = retain(self.targets, end, self.poll.finished_retention,
                          self.account.max_runs)
        if retained.over_cap is not None:
            self._warn_cap(retained.over_cap, "runs", "more runs than max_runs: the oldest "
                           "are not exported (see qianfan_runs_left_out_total)")
        self.left_out.count(self.targets, retained.left_out)
        return AccountState(
            name=self.account.name,
            targets=MappingProxyType(dict(self.targets)),
            up=self.health.up,
            polled=True,
            last_success=self.health.last_success,
            poll_duration=self.health.last_duration,
            discovery_error=self.discovery.error,
            discovered_jobs=len(self.discovery.jobs) if self.account.discover else None,
            runs=retained.runs,
            error=self.health.error,
        )

    def _warn_cap(self, runs: int, what: str, message: str) -> None:
        """Warn once per poller that ``max_runs`` leaves runs out."""
        cap = self.account.max_runs
        if cap is None or runs <= cap or self._cap_warned:
            return
        self._cap_warned = True
        log.warning(message, extra={"account": self.account.name, "max_runs": cap, what: runs})


class Poller:
    """Every account's poller, the scheduler that drives them, and the snapshot."""

    def __init__(
        self,
        config: Config,
        metrics: ApiMetrics,
        *,
        shard: Shard | None = None,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[Snapshot], None] | None = None,
        subscriber: Subscriber | None = None,
    ) -> None:
        self.metrics = metrics
        self.shard = shard or Shard()
        self.clock = clock
        self.on_change = on_change
        self.subscriber = subscriber
        self.stop_event = threading.Event()
        self.config = config
        self.accounts: dict[str, AccountPoller] = {}
        self._snapshot = Snapshot()
        self._swap = threading.Lock()
        self.ready = threading.Event()
        self._scheduler: BackgroundScheduler | None = None
        # account -> (alias, executor) of the scheduler executor that runs its polls
        self._executors: dict[str, tuple[str, SchedulerPool]] = {}
        self._executor_serial = 0
        self._build(config)
        self._publish(self._snapshot)

    def _publish(self, before: Snapshot) -> None:
        """Hand the subscriber the snapshot from ``before`` to the current one (called
        under the swap lock, so it sees every snapshot in order)."""
        if self.subscriber is not None:
            self.subscriber.publish(before, self._snapshot, list(self.accounts))

    def _build(self, config: Config) -> None:
        for account in config.accounts:
            self.accounts[account.name] = AccountPoller(
                account, config.poll, self.metrics, shard=self.shard, clock=self.clock,
                stop=self.stop_event,
            )

    # --- reading the state -------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    # --- polling ---------------------------------------------------------------------------

    def poll_account(self, name: str, force: bool = False) -> AccountState:
        poller = self.accounts[name]
        state = poller.poll_once(force=force)
        with self._swap:
            if self.accounts.get(name) is not poller:  # reloaded away meanwhile
                return state
            before = self._snapshot
            # Runs the poll did not read are the same objects as before, so comparing
            # even 10,000 of them costs an identity check each.
            if before.accounts.get(name) == state:
                return state
            self._snapshot = before.with_account(state)
            self._publish(before)
            snapshot = self._snapshot
        if snapshot.ready:
            self.ready.set()
        if self.on_change:
            self.on_change(snapshot)
        return state

    def poll_all(self, force: bool = True) -> Snapshot:
        """Poll every account now, in parallel; used by ``--once`` and the tests."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.accounts))) as pool:
            list(pool.map(lambda n: self.poll_account(n, force), list(self.accounts)))
        return self._snapshot

    def _scheduled_poll(self, name: str) -> None:
        if self.stop_event.is_set() or name not in self.accounts:
            return
        try:
            self.poll_account(name)
        except Exception:  # keep the schedule alive whatever happens
            log.exception("poll failed", extra={"account": name})

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        scheduler = BackgroundScheduler(
            executors={"default": SchedulerPool(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC",
        )
        self._scheduler = scheduler
        for name in self.accounts:
            self._schedule(name)
        scheduler.start()

    def _schedule(self, name: str) -> None:
        """(Re)schedule an account's polls, in a scheduler thread of its own.

        A poll that hangs (a server that never answers, a stuck DNS lookup) holds only
        its own account's thread: every other account keeps its schedule. A replaced
        account gets a new executor, so a poll of its old settings that is still stuck
        cannot hold back the new one either.
        """
        if self._scheduler is None:
            return
        self._executor_serial += 1
        alias = f"account:{name}:{self._executor_serial}"
        executor = SchedulerPool(max_workers=1)
        self._scheduler.add_executor(executor, alias=alias)
        self._scheduler.add_job(
            self._scheduled_poll,
            IntervalTrigger(seconds=self.config.poll.interval),
            args=[name],
            id=f"poll:{name}",
            name=f"poll {name}",
            executor=alias,
            next_run_time=_utcnow(),
            replace_existing=True,
        )
        self._drop_executor(name)
        self._executors[name] = (alias, executor)

    def _drop_executor(self, name: str) -> None:
        old = self._executors.pop(name, None)
        if old is None or self._scheduler is None:
            return
        alias, executor = old
        self._scheduler.remove_executor(alias, shutdown=False)
        executor.shutdown(wait=False)  # never wait for a poll that may hang

    def stop(self) -> None:
        """Stop polling; returns at once, even while a poll waits for Qianfan."""
        self.stop_event.set()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for poller in self.accounts.values():
            poller.close()

    def reload(self, config: Config) -> None:
        """Switch to a new, already validated config in one step.

        Accounts whose settings did not change keep their poller, state and budget.
        Changed ones (or all, when ``poll:`` changed) get a new poller that takes over
        their last snapshot: their runs, ``qianfan_up`` and target states keep being
        served until the first poll under the new settings completes, so a reload never
        blanks the data. Only removed accounts, and targets that a surviving account no
        longer polls, disappear, at once.
        """
        with self._swap:
            old = self.accounts
            previous = self._snapshot.accounts
            keep = {
                name: poller
                for name, poller in old.items()
                if any(a == poller.account for a in config.accounts)
                and config.poll == self.config.poll
            }
            self.config = config
            self.accounts = {}
            shown: dict[str, AccountState] = {}
            for account in config.accounts:
                if account.name in keep:
                    self.accounts[account.name] = keep[account.name]
                    if account.name in previous:
                        shown[account.name] = previous[account.name]
                    continue
                poller = AccountPoller(
                    account, config.poll, self.metrics, shard=self.shard,
                    clock=self.clock, stop=self.stop_event,
                )
                self.accounts[account.name] = poller
                last = previous.get(account.name)
                if last is not None:
                    before = old.get(account.name)
                    shown[account.name] = poller.adopt(
                        last, before.left_out if before is not None else None)
            for name, poller in old.items():
                if self.accounts.get(name) is not poller:
                    poller.close()
                    if name not in self.accounts:
                        self.metrics.forget_account(name)
            published = self._snapshot
            self._snapshot = published.with_accounts(shown)
            self._publish(published)
        if self._scheduler is not None:
            for job in self._scheduler.get_jobs():
                if job.id.removeprefix("poll:") not in self.accounts:
                    job.remove()
            for name in list(self._executors):
                if name not in self.accounts:
                    self._drop_executor(name)
            for name in self.accounts:
                if name not in keep:
                    self._schedule(name)
        if self.on_change:
            self.on_change(self._snapshot)


def _utcnow() -> object:
    from datetime import UTC, datetime

    return datetime.now(tz=UTC)
