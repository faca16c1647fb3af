"""The background poller: reads each account's targets into immutable snapshots.

APScheduler fires one job per account every ``poll.interval``. Each firing reads
the targets that are due, with the account's ``concurrency``, and swaps in a new
snapshot in one step:

* a target with a waiting or running run (or none yet) is due every ``interval``;
* a target whose runs are all final is due every ``finished_interval``, so new
  runs of a finished job are still found within ``finished_interval``;
* a target whose last read failed is retried every ``interval``, and keeps its
  last-read runs (with ``qianfan_target_up`` 0) until ``stale_after``.

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
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from types import MappingProxyType

from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerPool
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from qf_exporter.client import QianfanClient
from qf_exporter.config import Account, Config, Poll
from qf_exporter.errors import REASONS, InvalidResponse, NotFound, QianfanError
from qf_exporter.models import (
    Fields,
    Job,
    Run,
    map_status,
    parse_job,
    parse_v1_run,
    parse_v2_run,
)
from qf_exporter.ratelimit import RateLimiter
from qf_exporter.render import Rendered, render, render_health
from qf_exporter.snapshot import AccountState, Snapshot, TargetState
from qf_exporter.telemetry import ApiMetrics

log = logging.getLogger(__name__)

TargetKey = tuple[str, str]  # (api, name): ("v2", "job-..."), ("v1", "10250/6205")
RunKey = tuple[str, str, str, str]  # Run.key: (account, api, job_id, task_id)
LEFT_OUT_REASONS = ("retention", "max_runs")


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
        self.stop = stop
        # How long one read (with its retries and waits for budget) may take: a poll's
        # interval, or the request timeout when that is longer (the configured timeout
        # of one request is never cut short).
        self.read_budget = max(poll.interval, poll.timeout)
        self.client = QianfanClient(
            account,
            metrics=metrics,
            timeout=poll.timeout,
            retries=poll.retries,
            pool_size=poll.concurrency,
            # A wait for budget ends early when the exporter stops.
            limiter=RateLimiter(account.qps, wait=stop.wait),
            clock=clock,
            stop=stop,
            max_response_bytes=poll.max_response_bytes,
        )
        self._zero_counters()
        self.workers = ThreadPoolExecutor(
            max_workers=poll.concurrency, thread_name_prefix=f"poll-{account.name}"
        )
        self.targets: dict[TargetKey, TargetState] = {}
        self.discovered: frozenset[str] = frozenset()
        self.last_discovery: float | None = None
        self.discovery_error = ""
        # Runs counted in qianfan_runs_left_out_total, by target: each run is counted
        # once, however many polls leave it out and whatever the reason. A run is
        # forgotten when its target goes away or a good read no longer lists it.
        self.left_out: dict[TargetKey, set[RunKey]] = {}
        self.last_success: float | None = None
        self.last_duration: float | None = None
        self._cap_warned = False
        self._lock = threading.Lock()  # one poll of this account at a time
        self._configured = frozenset(self._configured_keys())
        for key in sorted(self._configured):
            self.targets[key] = TargetState(api=key[0], name=key[1])
        for reason in LEFT_OUT_REASONS:  # present at 0 from the start, for rate() and alerts
            metrics.runs_left_out.labels(account.name, reason)
        self._warn_cap_from_config()

    def _zero_counters(self) -> None:
        """Start the request counters at 0 for the calls this account will make, so that
        ``rate()`` and ``increase()`` see the first failure (alerts otherwise start late)."""
        actions = []
        if self.account.tasks:
            actions.append("jobDetail")
        if self.account.jobs or self.account.discover:
            # V2 progress comes from each running run's detail (see _read_v2).
            actions += ["DescribeFineTuningTasks", "DescribeFineTuningTask"]
        if self.account.discover:
            actions.append("DescribeFineTuningJobs")
        for action in actions:
            self.metrics.requests.labels(self.account.name, action)
            for reason in REASONS:
                self.metrics.failures.labels(self.account.name, action, reason)

    def close(self) -> None:
        self.workers.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    # --- which targets ----------------------------------------------------------------

    def _configured_keys(self) -> list[TargetKey]:
        keys: list[TargetKey] = [("v2", job) for job in self.account.jobs]
        keys += [("v1", pair.name) for pair in self.account.tasks]
        return [k for k in keys if self.shard.owns(self.account.name, k[1])]

    def _warn_cap_from_config(self) -> None:
        cap = self.account.max_runs
        pairs = sum(1 for api, _ in self._configured if api == "v1")
        if cap is not None and pairs > cap:
            self._cap_warned = True
            log.warning(
                "the configured V1 pairs alone exceed max_runs: the oldest runs will not be "
                "exported (see qianfan_runs_left_out_total)",
                extra={"account": self.account.name, "max_runs": cap, "v1_pairs": pairs},
            )

    def _discover(self, now: float) -> None:
        d = self.account.discovery
        # The scheduler fires every ``interval`` with some jitter: allow for it.
        slack = 0.1 * self.poll.interval
        if self.last_discovery is not None and now - self.last_discovery < d.interval - slack:
            return
        try:
            raw = self.client.describe_jobs(deadline=now + self.read_budget)
            jobs = [job for job in (parse_job(item) for item in raw) if job is not None]
        except QianfanError as exc:
            self._discovery_failed(str(exc), exc.reason)
            return
        except Exception as exc:  # a bug must not stop the configured targets' reads
            log.exception("unexpected error in job discovery",
                          extra={"account": self.account.name})
            self._discovery_failed(str(InvalidResponse(f"unexpected {type(exc).__name__}")),
                                   "invalid_response")
            return
        self.discovered = frozenset(
            job.job_id
            for job in jobs
            if self._wanted(job, now) and self.shard.owns(self.account.name, job.job_id)
        )
        self.last_discovery = now
        self.discovery_error = ""
        log.debug("jobs discovered", extra={"account": self.account.name,
                                            "listed": len(jobs), "kept": len(self.discovered)})

    def _discovery_failed(self, error: str, reason: str) -> None:
        """Keep the previous job list; the account reads as down until a listing works."""
        self.discovery_error = error
        log.warning(
            "job discovery failed, keeping the previous job list",
            extra={"account": self.account.name, "reason": reason, "error": error},
        )

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
        """Add discovered jobs, drop jobs that vanished upstream (configured ones stay)."""
        wanted = self._configured | {("v2", job) for job in self.discovered}
        for key in list(self.targets):
            if key not in wanted:
                del self.targets[key]
        for key in sorted(wanted - self.targets.keys()):
            self.targets[key] = TargetState(
                api=key[0], name=key[1], discovered=key not in self._configured
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
            if self.account.discover and not self.stop.is_set():
                self._discover(now)
            self._sync_targets()
            due = [
                key for key, state in self.targets.items() if force or self.due(state, now)
            ]
            futures: dict[TargetKey, Future[tuple[TargetState, bool]]] = {}
            for key in due:
                if self.stop.is_set():
                    break
                try:
                    futures[key] = self.workers.submit(self._read, key, now)
                except RuntimeError:  # the workers were shut down: the exporter is stopping
                    break
            for key, future in futures.items():
                try:
                    state, vanished = future.result()
                except CancelledError:  # stopping: this read never started
                    continue
                if vanished and key not in self._configured:
                    # A discovered job the API no longer knows: drop it now, not at
                    # the next listing (which adds it back should it reappear).
                    log.info("discovered job vanished upstream, dropping it",
                             extra={"account": self.account.name, "target": key[1]})
                    del self.targets[key]
                    self.discovered = self.discovered - {key[1]}
                    continue
                self.targets[key] = state
            end = self.clock()
            for key, state in list(self.targets.items()):
                self.targets[key] = self._expire(state, end)
            up = all(s.up for s in self.targets.values()) and not self.discovery_error
            return self._state(up, end, time.perf_counter() - started, read=bool(due))

    def _read(self, key: TargetKey, started: float) -> tuple[TargetState, bool]:
        """The target's new state, and whether the API says it does not exist."""
        api, name = key
        state = self.targets[key]
        deadline = self.clock() + self.read_budget
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
                runs, read_at, partial = self._read_v2(name, deadline, state.runs)
                if partial is not None:
                    return self._partly_read(state, runs, started, partial), False
        except QianfanError as exc:
            log.warning(
                "cannot read target",
                extra={"account": self.account.name, "api": api, "target": name,
                       "reason": exc.reason, "error": str(exc)},
            )
            failed = replace(state, up=False, last_attempt=started, error=str(exc),
                             reason=exc.reason)
            if isinstance(exc, NotFound):
                # An authoritative answer: the job (or V1 run) is gone, and its runs too.
                return replace(failed, runs=()), True
            return failed, False
        except Exception as exc:  # a bug must not kill the poller: report it as a bad answer
            log.exception("unexpected error reading target",
                          extra={"account": self.account.name, "target": name})
            err = InvalidResponse(f"unexpected {type(exc).__name__}")
            return replace(state, up=False, last_attempt=started, error=str(err),
                           reason=err.reason), False
        return replace(state, up=True, runs=runs, last_attempt=started, last_success=read_at,
                       error="", reason=""), False

    def _read_v2(
        self, job_id: str, deadline: float, previous: tuple[Run, ...] = ()
    ) -> tuple[tuple[Run, ...], float, QianfanError | None]:
        """A V2 job's runs: the list, then the detail of every run it shows as Running.

        Baidu's reference for ``DescribeFineTuningTasks`` has no ``runProgress`` in its
        items; ``DescribeFineTuningTask`` has it, "only while runStatus is Running"
        (the SDK's trainer and CLI read progress the same way). The detail reads share
        the account's budget and this read's deadline. A failed one keeps the run as
        the list has it and is returned, so that the target reads as down.
        """
        items = self.client.describe_tasks(job_id, deadline)
        read_at = self.clock()
        by_key: dict[str, dict[str, object]] = {}
        for item in items:
            task_id = Fields(item).text("taskId")
            if task_id:
                by_key[task_id] = item
        failure: QianfanError | None = None
        for task_id, item in by_key.items():
            if failure is not None or not _running(item):
                continue
            try:
                detail = self.client.describe_task(task_id, deadline)
            except QianfanError as exc:
                failure = exc  # the rest keep their list fields: the budget is likely gone
                continue
            by_key[task_id] = _with_detail(item, detail)
        runs = tuple(
            parse_v2_run(item, account=self.account.name, job_id=job_id, read_at=read_at)
            for item in by_key.values()
        )
        return _keep_vdl_links(runs, previous), read_at, failure

    def _partly_read(self, state: TargetState, runs: tuple[Run, ...], started: float,
                     exc: QianfanError) -> TargetState:
        """The list was read but a run's detail was not: fresh runs, target down."""
        log.warning(
            "cannot read a run's detail",
            extra={"account": self.account.name, "api": "v2", "target": state.name,
                   "reason": exc.reason, "error": str(exc)},
        )
        return replace(state, up=False, runs=runs, last_attempt=started, error=str(exc),
                       reason=exc.reason)

    def _expire(self, state: TargetState, now: float) -> TargetState:
        # Runs read by a partial read (a job's list without a run's detail) are fresh
        # although the target is down: staleness goes by when its runs were last read.
        last_read = max((run.last_read for run in state.runs), default=None)
        if (
            not state.up
            and state.runs
            and (last_read is None or now - last_read > self.poll.stale_after)
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
            discovered_jobs=len(self.discovered) if self.account.discover else None,
            runs=self._retained(end),
        )

    def _retained(self, now: float) -> tuple[Run, ...]:
        """Every run of every target, less what retention and ``max_runs`` leave out."""
        runs = [(key, run) for key, state in self.targets.items() for run in state.runs]
        left: list[tuple[TargetKey, Run, str]] = []
        retention = self.poll.finished_retention
        if retention is not None:
            kept = []
            for key, run in runs:
                finished = run.finish_time if run.final else None
                if finished is not None and now - finished > retention:
                    left.append((key, run, "retention"))
                else:
                    kept.append((key, run))
            runs = kept
        cap = self.account.max_runs
        if cap is not None and len(runs) > cap:
            if not self._cap_warned:
                self._cap_warned = True
                log.warning(
                    "more runs than max_runs: the oldest are not exported "
                    "(see qianfan_runs_left_out_total)",
                    extra={"account": self.account.name, "max_runs": cap, "runs": len(runs)},
                )
            # Newest first by start time; a run without one counts as the oldest.
            runs.sort(key=lambda kr: (kr[1].start_time or 0.0, kr[1].key), reverse=True)
            left += [(key, run, "max_runs") for key, run in runs[cap:]]
            runs = runs[:cap]
        self._count_left_out(left)
        return tuple(run for _, run in runs)

    def _count_left_out(self, left: list[tuple[TargetKey, Run, str]]) -> None:
        for key in list(self.left_out):
            state = self.targets.get(key)
            if state is None:  # the target went away, and its runs with it
                del self.left_out[key]
            elif state.up:  # a good read lists every run the job still has
                self.left_out[key] &= {run.key for run in state.runs}
        for key, run, reason in left:
            counted = self.left_out.setdefault(key, set())
            if run.key not in counted:
                counted.add(run.key)
                self.metrics.runs_left_out.labels(self.account.name, reason).inc()


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
        self._swap = threading.Lock()
        self.ready = threading.Event()
        self._scheduler: BackgroundScheduler | None = None
        # account -> (alias, executor) of the scheduler executor that runs its polls
        self._executors: dict[str, tuple[str, SchedulerPool]] = {}
        self._executor_serial = 0
        self._build(config)
        self._rendered = self._render(runs_changed=True)

    def _render(self, runs_changed: bool) -> Rendered:
        """Render the current snapshot; the run text only when the runs changed."""
        snapshot = self._snapshot
        health = render_health(snapshot, list(self.accounts))
        previous = None if runs_changed else self._rendered
        return render(snapshot.runs(), snapshot.generation, health, previous)

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
            # Compare the runs (up to 10,000 of them) once; only if they are the same is
            # the rest of the state worth a look.
            runs_changed = previous is None or previous.runs != state.runs
            if not runs_changed and previous == state:
                return state
            self._snapshot = self._snapshot.with_account(state)
            self._rendered = self._render(runs_changed)
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
            self._rendered = self._render(runs_changed=True)
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


def _running(item: Mapping[str, object]) -> bool:
    return map_status(Fields(item).text("runStatus", "status"), "v2") == "running"


def _keep_vdl_links(runs: tuple[Run, ...], previous: tuple[Run, ...]) -> tuple[Run, ...]:
    """Only a running run's detail has its VisualDL link: a run that has finished keeps
    the link it had while it ran (the dashboards link to it)."""
    links = {run.task_id: run.vdl_link for run in previous if run.vdl_link}
    if not links:
        return runs
    return tuple(
        replace(run, vdl_link=links[run.task_id])
        if not run.vdl_link and run.task_id in links else run
        for run in runs
    )


def _with_detail(item: dict[str, object], detail: object) -> dict[str, object]:
    """A list item with every field the run's detail has and the item lacks
    (``runProgress``, ``vdlLink``, ...). The list's own fields are kept."""
    if not isinstance(detail, Mapping):
        return item
    have = {str(key).lower() for key, value in item.items() if value is not None}
    merged = dict(item)
    for key, value in detail.items():
        if str(key).lower() not in have:
            merged[str(key)] = value
    return merged


def _utcnow() -> object:
    from datetime import UTC, datetime

    return datetime.now(tz=UTC)
