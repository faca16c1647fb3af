"""The background poller: reads each account's targets into immutable snapshots.

APScheduler fires one job per account every ``poll.interval``. Each firing reads
the targets that are due, with the account's ``concurrency``, and swaps in a new
snapshot in one step:

* a target with a waiting or running run (or none yet) is due every ``interval``;
* a target whose runs are all final is due every ``finished_interval``, so new
  runs of a finished job are still found within ``finished_interval``;
* a target whose last read failed is retried every ``interval``, and keeps its
  last-read runs (with ``qianfan_target_up`` 0) until ``stale_after``.

Accounts never share a worker, a client or a budget, so one account's failures
or throttling never delay another's poll.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from types import MappingProxyType

from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerPool
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from qf_exporter.client import QianfanClient
from qf_exporter.config import Account, Config, Poll
from qf_exporter.errors import InvalidResponse, QianfanError
from qf_exporter.models import Job, Run, parse_job, parse_v1_run, parse_v2_run
from qf_exporter.render import Rendered, render
from qf_exporter.snapshot import AccountState, Snapshot, TargetState
from qf_exporter.telemetry import ApiMetrics

log = logging.getLogger(__name__)

TargetKey = tuple[str, str]  # (api, name): ("v2", "job-..."), ("v1", "10250/6205")


@dataclass(frozen=True)
class Shard:
    """This replica's share of the targets (``--shard`` of ``--total-shards``)."""

    index: int = 0
    total: int = 1

    def owns(self, account: str, target: str) -> bool:
        if self.total <= 1:
            return True
        digest = hashlib.sha256(f"{account}\x00{target}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.total == self.index


class AccountPoller:
    """One account: its client, its workers, its targets and their states."""

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
        self.metrics = metrics
        self.shard = shard
        self.clock = clock
        self.client = QianfanClient(
            account,
            metrics=metrics,
            timeout=poll.timeout,
            retries=poll.retries,
            pool_size=poll.concurrency,
            clock=clock,
            stop=stop,
        )
        self.workers = ThreadPoolExecutor(
            max_workers=poll.concurrency, thread_name_prefix=f"poll-{account.name}"
        )
        self.targets: dict[TargetKey, TargetState] = {}
        self.discovered: tuple[str, ...] = ()
        self.last_discovery: float | None = None
        self.discovery_error = ""
        self.left_out: dict[str, set[tuple[str, str, str, str]]] = {}
        self.last_success: float | None = None
        self.last_duration: float | None = None
        self._lock = threading.Lock()  # one poll of this account at a time
        for key in self._configured_keys():
            self.targets[key] = TargetState(api=key[0], name=key[1])

    def close(self) -> None:
        self.workers.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    # --- which targets ----------------------------------------------------------------

    def _configured_keys(self) -> list[TargetKey]:
        keys: list[TargetKey] = [("v2", job) for job in self.account.jobs]
        keys += [("v1", pair.name) for pair in self.account.tasks]
        return [k for k in keys if self.shard.owns(self.account.name, k[1])]

    def _discover(self, now: float) -> None:
        d = self.account.discovery
        if self.last_discovery is not None and now - self.last_discovery < d.interval:
            return
        try:
            raw = self.client.describe_jobs(deadline=now + self.poll.interval)
        except QianfanError as exc:
            self.discovery_error = str(exc)
            log.warning(
                "job discovery failed",
                extra={"account": self.account.name, "reason": exc.reason, "error": str(exc)},
            )
            return
        jobs = [job for job in (parse_job(item) for item in raw) if job is not None]
        self.discovered = tuple(
            sorted(
                job.job_id
                for job in jobs
                if self._wanted(job, now) and self.shard.owns(self.account.name, job.job_id)
            )
        )
        self.last_discovery = now
        self.discovery_error = ""

    def _wanted(self, job: Job, now: float) -> bool:
        d = self.account.discovery
        if d.include and not any(p.search(job.name) for p in d.include):
            return False
        if any(p.search(job.name) for p in d.exclude):
            return False
        if d.models and job.model not in d.models:
            return False
        if d.train_modes and job.train_mode not in d.train_modes:
            return False
        return not (
            d.max_age is not None
            and job.create_time is not None
            and now - job.create_time > d.max_age
        )

    def _sync_targets(self) -> None:
        """Add discovered jobs, drop jobs that vanished upstream."""
        wanted = set(self._configured_keys()) | {("v2", job) for job in self.discovered}
        for key in list(self.targets):
            if key not in wanted:
                del self.targets[key]
        for key in sorted(wanted):
            if key not in self.targets:
                self.targets[key] = TargetState(
                    api=key[0], name=key[1], discovered=key[1] in self.discovered
                )

    def due(self, state: TargetState, now: float) -> bool:
        if state.last_attempt is None or not state.up:
            period = self.poll.interval
        else:
            period = self.poll.interval if state.active else self.poll.finished_interval
        if state.last_attempt is None:
            return True
        # The scheduler fires every ``interval``; allow for its jitter.
        return now - state.last_attempt >= period - 0.1 * self.poll.interval

    # --- one poll -------------------------------------------------------------------------

    def poll_once(self, force: bool = False) -> AccountState:
        with self._lock:
            started = time.perf_counter()
            now = self.clock()
            if self.account.discover:
                self._discover(now)
            self._sync_targets()
            due = [
                key for key, state in self.targets.items() if force or self.due(state, now)
            ]
            futures = {key: self.workers.submit(self._read, key, now) for key in due}
            for key, future in futures.items():
                self.targets[key] = future.result()
            end = self.clock()
            for key, state in list(self.targets.items()):
                self.targets[key] = self._expire(state, end)
            up = all(s.up for s in self.targets.values()) and not self.discovery_error
            return self._state(up, end, time.perf_counter() - started, read=bool(due))

    def _read(self, key: TargetKey, started: float) -> TargetState:
        api, name = key
        state = self.targets[key]
        deadline = self.clock() + self.poll.interval
        try:
            if api == "v1":
                task_id, job_id = (int(x) for x in name.split("/"))
                result = self.client.job_detail(task_id, job_id, deadline)
                read_at = self.clock()
                runs: tuple[Run, ...] = (
                    parse_v1_run(
                        result,
                        account=self.account.name,
                        task_id=task_id,
                        job_id=job_id,
                        read_at=read_at,
                    ),
                )
            else:
                items = self.client.describe_tasks(name, deadline)
                read_at = self.clock()
                by_key: dict[str, Run] = {}
                for item in items:
                    run = parse_v2_run(item, account=self.account.name, job_id=name,
                                       read_at=read_at)
                    if run.task_id:
                        by_key[run.task_id] = run
                runs = tuple(by_key.values())
        except QianfanError as exc:
            log.warning(
                "cannot read target",
                extra={"account": self.account.name, "api": api, "target": name,
                       "reason": exc.reason, "error": str(exc)},
            )
            return replace(state, up=False, last_attempt=started, error=str(exc),
                           reason=exc.reason)
        except Exception as exc:  # a bug must not kill the poller: report it as a bad answer
            log.exception("unexpected error reading target",
                          extra={"account": self.account.name, "target": name})
            err = InvalidResponse(f"unexpected {type(exc).__name__}")
            return replace(state, up=False, last_attempt=started, error=str(err),
                           reason=err.reason)
        return replace(state, up=True, runs=runs, last_attempt=started, last_success=read_at,
                       error="", reason="")

    def _expire(self, state: TargetState, now: float) -> TargetState:
        if (
            not state.up
            and state.runs
            and (state.last_success is None or now - state.last_success > self.poll.stale_after)
        ):
            log.info("dropping stale runs", extra={"account": self.account.name,
                                                   "target": state.name})
            return replace(state, runs=())
        return state

    def _state(self, up: bool, end: float, duration: float, read: bool) -> AccountState:
        if up:
            self.last_success = end
        if read:  # a firing with nothing due is no poll: keep the last one's duration
            self.last_duration = duration
        return AccountState(
            name=self.account.name,
            targets=MappingProxyType(dict(self.targets)),
            up=up,
            polled=True,
            last_success=self.last_success,
            poll_duration=self.last_duration,
            discovery_error=self.discovery_error,
            runs=self._retained(end),
        )

    def _retained(self, now: float) -> tuple[Run, ...]:
        """Every run of every target, less what retention and ``max_runs`` leave out."""
        runs = [run for state in self.targets.values() for run in state.runs]
        left: dict[str, list[Run]] = {"retention": [], "max_runs": []}
        retention = self.poll.finished_retention
        if retention is not None:
            kept: list[Run] = []
            for run in runs:
                finished = run.finish_time if run.final else None
                old = finished is not None and now - finished > retention
                (left["retention"] if old else kept).append(run)
            runs = kept
        cap = self.account.max_runs
        if cap is not None and len(runs) > cap:
            runs.sort(key=lambda r: (r.start_time or 0.0, r.key), reverse=True)
            left["max_runs"] = runs[cap:]
            runs = runs[:cap]
        for reason, dropped in left.items():
            keys = {run.key for run in dropped}
            new = keys - self.left_out.get(reason, set())
            if new:
                self.metrics.runs_left_out.labels(self.account.name, reason).inc(len(new))
            self.left_out[reason] = keys
        return tuple(runs)


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
    ) -> None:
        self.metrics = metrics
        self.shard = shard or Shard()
        self.clock = clock
        self.on_change = on_change
        self.stop_event = threading.Event()
        self.config = config
        self.accounts: dict[str, AccountPoller] = {}
        self._snapshot = Snapshot()
        self._rendered = render((), 0)
        self._swap = threading.Lock()
        self.ready = threading.Event()
        self._scheduler: BackgroundScheduler | None = None
        self._build(config)

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

    @property
    def rendered(self) -> Rendered:
        return self._rendered

    # --- polling ---------------------------------------------------------------------------

    def poll_account(self, name: str, force: bool = False) -> AccountState:
        poller = self.accounts[name]
        state = poller.poll_once(force=force)
        with self._swap:
            if self.accounts.get(name) is not poller:  # reloaded away meanwhile
                return state
            previous = self._snapshot.accounts.get(name)
            if previous == state:
                return state
            self._snapshot = self._snapshot.with_account(state)
            if previous is None or previous.runs != state.runs:
                self._rendered = render(self._snapshot.runs(), self._snapshot.generation)
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
            executors={"default": SchedulerPool(max_workers=max(2, len(self.accounts) + 1))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC",
        )
        self._scheduler = scheduler
        for name in self.accounts:
            self._schedule(name)
        scheduler.start()

    def _schedule(self, name: str) -> None:
        if self._scheduler is None:
            return
        self._scheduler.add_job(
            self._scheduled_poll,
            IntervalTrigger(seconds=self.config.poll.interval),
            args=[name],
            id=f"poll:{name}",
            name=f"poll {name}",
            next_run_time=_utcnow(),
            replace_existing=True,
        )

    def stop(self) -> None:
        self.stop_event.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        for poller in self.accounts.values():
            poller.close()

    def reload(self, config: Config) -> None:
        """Switch to a new, already validated config in one step.

        Accounts whose settings did not change keep their state and budget; changed
        ones start over; removed ones disappear from the metrics.
        """
        with self._swap:
            old = self.accounts
            keep = {
                name: poller
                for name, poller in old.items()
                if any(a == poller.account for a in config.accounts)
                and config.poll == self.config.poll
            }
            self.config = config
            self.accounts = {}
            for account in config.accounts:
                if account.name in keep:
                    self.accounts[account.name] = keep[account.name]
                else:
                    self.accounts[account.name] = AccountPoller(
                        account, config.poll, self.metrics, shard=self.shard,
                        clock=self.clock, stop=self.stop_event,
                    )
            for name, poller in old.items():
                if self.accounts.get(name) is not poller:
                    poller.close()
                    if name not in self.accounts:
                        self.metrics.forget_account(name)
            self._snapshot = self._snapshot.without_accounts(set(keep))
            self._rendered = render(self._snapshot.runs(), self._snapshot.generation)
        if self._scheduler is not None:
            for job in self._scheduler.get_jobs():
                if job.id.removeprefix("poll:") not in self.accounts:
                    job.remove()
            for name in self.accounts:
                if name not in keep:
                    self._schedule(name)
        if self.on_change:
            self.on_change(self._snapshot)


def _utcnow() -> object:
    from datetime import UTC, datetime

    return datetime.now(tz=UTC)
