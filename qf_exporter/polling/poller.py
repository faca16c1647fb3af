"""The background poller: reads each account's targets into immutable snapshots.

An account's poll is a sequence of steps, each in a module of its own:

1. list the account's jobs when discovery is due (``discovery.py``), and bring the
   target set up to date (``targets.py``);
2. pick the targets that are due, read longest ago first (``cadence.py``), and read
   them, ``concurrency`` at a time (``reader.py``), each waiting for its turn in the
   account's budget however long that takes; a discovered job the API no longer
   knows is dropped at once;
3. drop the runs of targets that stayed down past ``stale_after`` (``cadence.py``);
4. decide whether the poll reached Qianfan (``reachability.py``);
5. leave out what retention and ``max_runs`` keep out, counting each such run once
   (``retention.py``).

``Poller`` swaps each account's new state into the snapshot in one step and hands
the snapshot before and after to its subscriber (the page, ``exposition/pages.py``).
Once an account's first poll has ended, a poll that runs longer than ``PUBLISH_EVERY``
also hands over what it has read so far at that pace (with the health of the last poll
that ended), so a change is on the page soon after its target is read, not only when
the whole poll ends. ``scheduler.py`` fires each account's polls every
``poll.interval``. Accounts never share a worker, a client, a budget or a scheduler
thread, so one account's failures, slowness or throttling never delay another's poll.

With ``--total-shards=N`` each replica uses ``qps / N`` of an account's budget: the
shards share one access key, and so its quota. A poll that needs more than the
interval's worth of that budget simply takes longer (the next firing waits for it);
``qianfan_poll_lag_seconds`` says by how much, and one log line says when it starts.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import MappingProxyType
from typing import Protocol

from qf_exporter.config.file import Account, Config, Poll
from qf_exporter.polling import cadence
from qf_exporter.polling.discovery import JobDiscovery
from qf_exporter.polling.reachability import Health, Outcome
from qf_exporter.polling.reader import Read, TargetReader
from qf_exporter.polling.retention import LeftOutCounter, retain
from qf_exporter.polling.scheduler import AccountScheduler
from qf_exporter.polling.shard import Shard
from qf_exporter.polling.snapshot import (
    AccountState,
    Budget,
    Snapshot,
    TargetKey,
    TargetState,
)
from qf_exporter.polling.targets import Targets
from qf_exporter.qianfan.budget import Deadline, RateLimiter
from qf_exporter.qianfan.client import QianfanClient
from qf_exporter.qianfan.errors import REASONS
from qf_exporter.qianfan.models import Run
from qf_exporter.qianfan.telemetry import ApiMetrics
from qf_exporter.util.heap import HeapSettler

log = logging.getLogger(__name__)

# While a poll runs, what it has read so far is published at most this often: a change
# waits at most this long (and the render of what changed) after its target is read.
# Each publication renders only the runs read since the one before, so a shorter pace
# costs a little fixed work per publication (listing the page's blocks, the health).
# At 10,000 runs, 0.5 s and 0.25 s took the p99 from a change upstream to /metrics from
# 7.3 s to 6.5 s and 6.3 s (interval 5s; docs/benchmark.md, "Freshness").
PUBLISH_EVERY = 0.25


class Subscriber(Protocol):
    """What the poller publishes each new snapshot to (the page, ``exposition/pages.py``)."""

    def publish(self, before: Snapshot, after: Snapshot, accounts: Iterable[str]) -> None: ...


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

    The steps are other modules' (``discovery``, ``cadence``, ``reader``,
    ``retention``, ``reachability``); this class calls them in order and keeps what
    lasts from one poll to the next.
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
        self.account, self.poll, self.clock, self.stop = account, poll, clock, stop
        # How long one read may spend on Qianfan (answers, retries, backoff): a poll's
        # interval, or the request timeout when that is longer (the configured timeout
        # of one request is never cut short). Waits for budget come on top.
        self.time_per_read = max(poll.interval, poll.timeout)
        # Set when this poller closes (the exporter stops, or a reload replaces it):
        # every wait for budget or backoff of its reads ends at once, sending nothing.
        self.halt = threading.Event()
        # The shards share the account's access key, so its quota.
        self.limiter = RateLimiter(account.qps / shard.total, wait=self.halt.wait)
        self.client = QianfanClient(
            account, metrics=metrics, timeout=poll.timeout, retries=poll.retries,
            pool_size=poll.concurrency, limiter=self.limiter,
            clock=clock, stop=self.halt, max_response_bytes=poll.max_response_bytes,
        )
        zero_counters(account, metrics)
        owns = functools.partial(shard.owns, account.name)
        self.targets = Targets(account, owns)
        self.discovery = JobDiscovery(account, poll, self.client, owns)
        self.reader = TargetReader(account.name, self.client, clock, self.time_per_read)
        self.left_out = LeftOutCounter(account.name, metrics.runs_left_out)
        self.health = Health()
        self.workers = ThreadPoolExecutor(
            max_workers=poll.concurrency, thread_name_prefix=f"poll-{account.name}"
        )
        self._cap_warned = False
        self._budget = Budget(self.limiter.qps)
        # What the last poll that ended published (None before the first ends): a long
        # poll publishes it with what it has read so far (see PUBLISH_EVERY).
        self._shown: AccountState | None = None
        # Called with the state so far while a long poll runs (see PUBLISH_EVERY).
        self.progress: Callable[[AccountState], object] | None = None
        self._lock = threading.Lock()  # one poll of this account at a time
        self._warn_cap(len(self.targets.pairs), "v1_pairs",
                       "the configured V1 pairs alone exceed max_runs: the oldest runs "
                       "will not be exported (see qianfan_runs_left_out_total)")

    def close(self) -> None:
        self.halt.set()
        self.workers.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def adopt(self, previous: AccountState, left_out: LeftOutCounter | None = None
              ) -> AccountState:
        """Take over the last snapshot of this account from before a reload.

        Targets that the new settings still poll keep their state (runs, health, last
        success) and are all due at the first poll under the new settings; targets they no
        longer poll go at once. Returns the state to serve until that first poll completes.
        """
        kept = self.targets.adopt(previous.targets)
        self.discovery.jobs = frozenset(name for (_, name), s in kept.items() if s.discovered)
        self.health.adopt(previous)
        if previous.budget is not None:
            self._budget = replace(previous.budget, qps=self.limiter.qps)
        if left_out is not None:
            self.left_out.adopt(left_out.counted, kept)
        # The kept targets' runs, as they are now (their owner may have changed).
        runs = {run.key: run for state in kept.values() for run in state.runs}
        return replace(
            previous,
            targets=MappingProxyType(kept),
            runs=tuple(runs[run.key] for run in previous.runs if run.key in runs),
            discovered_jobs=len(self.discovery.jobs) if self.account.discover else None,
            discovery_error=previous.discovery_error if self.account.discover else "",
        )

    def poll_once(self, force: bool = False) -> AccountState:
        with self._lock:
            started = time.perf_counter()
            now = self.clock()
            granted = self.limiter.granted
            outcomes: list[Outcome] = []
            listed: bool | None = None
            if self.account.discover and not self.stop.is_set():
                listed = self.discovery.refresh(now, Deadline(now + self.time_per_read))
                if listed is not None:
                    outcomes.append(Outcome() if listed
                                    else Outcome("listing", self.discovery.error))
            self.targets.sync(self.discovery.jobs,
                              self.discovery.teams if listed else None)
            states = self.targets.states
            lag = cadence.lag(states.values(), now, self.poll)
            due = sorted((key for key, state in states.items()
                          if force or cadence.due(state, now, self.poll)),
                         key=lambda key: cadence.read_order(states[key]))
            outcomes += self._read(due, now)
            end = self.clock()
            _expire(self.account.name, self.targets.states, end, self.poll)
            self.health.update(outcomes, self.discovery.error)
            if due:
                self._weigh(lag, self.limiter.granted - granted)
            return self._state(end, time.perf_counter() - started, read=bool(due))

    def _weigh(self, lag: float, requests: int) -> None:
        """Keep the lag, and whether the budget can hold the interval for the requests
        this poll needed; say so once when that changes."""
        holds = self.limiter.seconds_for(requests)
        behind = holds > self.poll.interval
        fields = {"account": self.account.name, "requests_per_cycle": requests,
                  "budget_qps": round(self.limiter.qps, 3),
                  "interval": self.poll.interval, "holds_interval": round(holds, 1)}
        if behind and self._budget.needs is None:
            log.warning("the request budget cannot hold poll.interval: targets are read "
                        "less often (see qianfan_poll_lag_seconds)", extra=fields)
        elif not behind and self._budget.needs is not None:
            log.info("the request budget holds poll.interval again", extra=fields)
        self._budget = Budget(self.limiter.qps, lag, requests if behind else None,
                              holds if behind else None)

    def _read(self, due: list[TargetKey], now: float) -> list[Outcome]:
        """Read the due targets with the account's workers; one outcome per read, in the
        order of ``due``. Each read is kept as it completes, and what the poll has read
        so far is handed to ``progress`` every ``PUBLISH_EVERY`` seconds."""
        states, outcomes = self.targets.states, {}
        todo = {key: (states[key], self.targets.pair(key)) for key in due}
        published, unpublished = time.monotonic(), False
        for item in self.reader.read_all(self.workers, todo, now, self.stop, PUBLISH_EVERY):
            if item is not None:
                outcomes[item[0]] = self._keep(*item, now)
                unpublished = True
            # On time also while no read completes: the budget lets reads through in
            # bursts, and a read just before a pause would otherwise wait for its end.
            if (unpublished and self._shown is not None and self.progress is not None
                    and time.monotonic() - published >= PUBLISH_EVERY):
                self.progress(self._interim(self._shown, outcomes))
                published, unpublished = time.monotonic(), False
        return [outcomes[key] for key in due if key in outcomes]

    def _keep(self, key: TargetKey, read: Read, now: float) -> Outcome:
        """Keep a target's read (of a poll that started at ``now``); its outcome."""
        if read.vanished and key not in self.targets.configured:
            log.info("discovered job vanished upstream, dropping it",
                     extra={"account": self.account.name, "target": key[1]})
            del self.targets.states[key]
            self.discovery.forget(key[1])
        else:
            self.targets.states[key] = read.state
        return Outcome.of_read(read.state, now)

    def _state(self, end: float, duration: float, read: bool) -> AccountState:
        self.health.polled(end, duration, read)
        states = self.targets.states
        retained = retain(states, end, self.poll.finished_retention, self.account.max_runs)
        if retained.over_cap is not None:
            self._warn_cap(retained.over_cap, "runs", "more runs than max_runs: the oldest "
                           "are not exported (see qianfan_runs_left_out_total)")
        self.left_out.count(states, retained.left_out)
        self._shown = self._account_state(retained.runs)
        return self._shown

    def _interim(self, shown: AccountState, read: Iterable[TargetKey]) -> AccountState:
        """The account while a poll runs: as last published, the targets ``read`` so far
        up to date (one not read yet waits for the poll's end, as it would have), the
        health of the last poll that ended; left-out runs are counted at the end."""
        targets = _brought_up_to_date(shown.targets, self.targets.states, read)
        retained = retain(targets, self.clock(), self.poll.finished_retention,
                          self.account.max_runs)
        return self._account_state(retained.runs, targets)

    def _account_state(self, runs: tuple[Run, ...],
                       targets: Mapping[TargetKey, TargetState] | None = None) -> AccountState:
        return AccountState(
            name=self.account.name,
            targets=MappingProxyType(dict(self.targets.states if targets is None else targets)),
            up=self.health.up, polled=True, last_success=self.health.last_success,
            poll_duration=self.health.last_duration, discovery_error=self.discovery.error,
            discovered_jobs=len(self.discovery.jobs) if self.account.discover else None,
            runs=runs, error=self.health.error, budget=self._budget,
        )

    def _warn_cap(self, runs: int, what: str, message: str) -> None:
        """Warn once per poller that ``max_runs`` leaves runs out."""
        cap = self.account.max_runs
        if cap is None or runs <= cap or self._cap_warned:
            return
        self._cap_warned = True
        log.warning(message, extra={"account": self.account.name, "max_runs": cap, what: runs})


def _expire(account: str, states: dict[TargetKey, TargetState], now: float,
            poll: Poll) -> None:
    """Drop the runs of the targets that stayed down past ``stale_after``."""
    for key, state in list(states.items()):
        expired = cadence.expire(state, now, poll)
        if expired is not state:
            log.info("dropping stale runs", extra={"account": account, "target": state.name})
            states[key] = expired


def _brought_up_to_date(shown: Mapping[TargetKey, TargetState],
                        states: Mapping[TargetKey, TargetState],
                        read: Iterable[TargetKey]) -> dict[TargetKey, TargetState]:
    """The targets as ``shown``, those ``read`` since as they are in ``states`` now (or
    gone, when they vanished upstream)."""
    targets = dict(shown)
    for key in read:
        if key in states:
            targets[key] = states[key]
        else:
            targets.pop(key, None)
    return targets


class Poller:
    """Every account's poller, the scheduler that drives them, and the snapshot."""

    def __init__(
        self,
        config: Config,
        metrics: ApiMetrics,
        *,
        shard: Shard | None = None,
        clock: Callable[[], float] = time.time,
        subscriber: Subscriber | None = None,
        heap: HeapSettler | None = None,
    ) -> None:
        self.metrics = metrics
        self.shard = shard or Shard()
        self.clock = clock
        self.subscriber = subscriber
        self.heap = heap  # settled after each publication (util/heap.py)
        self.stop_event = threading.Event()
        self.config = config
        self.accounts = {account.name: self._account_poller(account, config.poll)
                         for account in config.accounts}
        self._snapshot = Snapshot()
        self._swap = threading.Lock()
        self.ready = threading.Event()
        self._scheduler: AccountScheduler | None = None
        self._publish(self._snapshot)

    def _publish(self, before: Snapshot) -> None:
        """Hand the subscriber the snapshot from ``before`` to the current one (called
        under the swap lock, so it sees every snapshot in order)."""
        if self.subscriber is not None:
            self.subscriber.publish(before, self._snapshot, list(self.accounts))

    def _account_poller(self, account: Account, poll: Poll) -> AccountPoller:
        """A new poller of one account, on this replica's shard, clock and stop, whose
        long polls publish what they have read so far."""
        poller = AccountPoller(account, poll, self.metrics, shard=self.shard,
                               clock=self.clock, stop=self.stop_event)
        poller.progress = functools.partial(self._swap_in, account.name, poller)
        return poller

    # --- reading the state -------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    # --- polling ---------------------------------------------------------------------------

    def poll_account(self, name: str, force: bool = False) -> AccountState:
        poller = self.accounts[name]
        state = poller.poll_once(force=force)
        self._swap_in(name, poller, state)
        return state

    def _swap_in(self, name: str, poller: AccountPoller, state: AccountState) -> None:
        """Make ``state`` the account's in the snapshot (unless a reload replaced its
        poller meanwhile) and publish the change."""
        with self._swap:
            if self.accounts.get(name) is not poller:  # reloaded away meanwhile
                return
            before = self._snapshot
            # Runs the poll did not read are the same objects as before, so comparing
            # even 10,000 of them costs an identity check each.
            if before.accounts.get(name) == state:
                return
            self._snapshot = before.with_account(state)
            self._publish(before)
            snapshot = self._snapshot
        if self.heap is not None:
            self.heap.settle()
        if snapshot.ready:
            self.ready.set()

    def poll_all(self, force: bool = True) -> Snapshot:
        """Poll every account now, in parallel; used by ``--once`` and the tests."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.accounts))) as pool:
            list(pool.map(lambda n: self.poll_account(n, force), list(self.accounts)))
        return self._snapshot

    def _scheduled_poll(self, name: str) -> None:
        """A firing: poll the account, and poll it again at once for as long as a poll
        runs past the interval (the firings it overran were skipped, so waiting for
        the next one would leave every target a further interval late)."""
        poller = self.accounts.get(name)
        while poller is not None and not self.stop_event.is_set():
            started = self.clock()
            try:
                self.poll_account(name)
            except Exception:  # keep the schedule alive whatever happens
                log.exception("poll failed", extra={"account": name})
                return
            overran = self.clock() - started >= self.config.poll.interval
            if not overran or self.accounts.get(name) is not poller:  # or reloaded away
                return

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._scheduler = AccountScheduler(self._scheduled_poll)
        for name in self.accounts:
            self._scheduler.schedule(name, self.config.poll.interval)
        self._scheduler.start()

    def stop(self) -> None:
        """Stop polling; returns at once, even while a poll waits for Qianfan."""
        self.stop_event.set()
        if self._scheduler is not None:
            self._scheduler.shutdown()
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
            keep = self._replace_pollers(config)
        if self._scheduler is not None:
            self._reschedule(keep)

    def _replace_pollers(self, config: Config) -> frozenset[str]:
        """Swap in the pollers of ``config`` and the snapshot they serve (under the swap
        lock); returns the accounts whose poller stayed."""
        old, previous = self.accounts, self._snapshot.accounts
        same_poll = config.poll == self.config.poll
        keep = {name: poller for name, poller in old.items()
                if same_poll and any(a == poller.account and a.owners == poller.account.owners
                                     for a in config.accounts)}
        self.config, self.accounts = config, {}
        shown: dict[str, AccountState] = {}
        for account in config.accounts:
            last, before = previous.get(account.name), old.get(account.name)
            if account.name in keep:
                self.accounts[account.name] = keep[account.name]
                if last is not None:
                    shown[account.name] = last
                continue
            poller = self._account_poller(account, config.poll)
            if before is not None:
                poller.limiter.adopt(before.limiter)
            self.accounts[account.name] = poller
            if last is not None:
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
        return frozenset(keep)

    def _reschedule(self, keep: frozenset[str]) -> None:
        """Unschedule removed accounts, and schedule the new and changed ones."""
        if self._scheduler is None:
            return
        self._scheduler.keep_only(self.accounts)
        for name in self.accounts:
            if name not in keep:
                self._scheduler.schedule(name, self.config.poll.interval)
