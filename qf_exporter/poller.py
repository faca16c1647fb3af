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
from qf_exporter.estimate import with_estimates
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
from qf_exporter.render import render_health
from qf_exporter.snapshot import AccountState, Snapshot, TargetState
from qf_exporter.store import Rendered, RunStore
from qf_exporter.telemetry import ApiMetrics

log = logging.getLogger(__name__)

TargetKey = tuple[str, str]  # (api, name): ("v2", "job-..."), ("v1", "10250/6205")
RunKey = tuple[str, str, str, str]  # Run.key: (account, api, job_id, task_id)
LEFT_OUT_REASONS = ("retention", "max_runs")
# Failures that say nothing about Qianfan accepting the account's credentials. Any other
# outcome of a call (a good answer, "no such job", a refused request) is an authoritative
# answer from Qianfan given after it accepted them. An answer that cannot be read is no
# such evidence: when every call gets one, Qianfan cannot be used either.
UNREACHED = frozenset(
    {"connection", "timeout", "auth", "server", "rate_limited", "invalid_response"}
)


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
        # Whether the latest poll that made a call reached Qianfan, and if not, why.
        # Before any call nothing has failed: an account with nothing to read is not down.
        self.up = True
        self.error = ""
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

    def adopt(
        self, previous: AccountState, left_out: dict[TargetKey, set[RunKey]] | None = None
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
        self.discovered = frozenset(name for (_, name), s in kept.items() if s.discovered)
        self.up, self.error = previous.up, previous.error
        self.last_success = previous.last_success
        self.last_duration = previous.poll_duration
        if left_out:
            self.left_out = {key: set(runs) for key, runs in left_out.items() if key in kept}
        runs = {run.key for state in kept.values() for run in state.runs}
        return replace(
            previous,
            targets=MappingProxyType(kept),
            runs=tuple(run for run in previous.runs if run.key in runs),
            discovered_jobs=len(self.discovered) if self.account.discover else None,
            discovery_error=previous.discovery_error if self.account.discover else "",
        )

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

    def _discover(self, now: float) -> bool | None:
        """List the account's jobs when due: True when listed, False when the listing
        failed, None when it was not due."""
        d = self.account.discovery
        # The scheduler fires every ``interval`` with some jitter: allow for it.
        slack = 0.1 * self.poll.interval
        if self.last_discovery is not None and now - self.last_discovery < d.interval - slack:
            return None
        try:
            raw = self.client.describe_jobs(deadline=now + self.read_budget)
            jobs = [job for job in (parse_job(item) for item in raw) if job is not None]
        except QianfanError as exc:
            self._discovery_failed(str(exc), exc.reason)
            return False
        except Exception as exc:  # a bug must not stop the configured targets' reads
            log.exception("unexpected error in job discovery",
                          extra={"account": self.account.name})
            self._discovery_failed(str(InvalidResponse(f"unexpected {type(exc).__name__}")),
                                   "invalid_response")
            return False
        self.discovered = frozenset(
            job.job_id
            for job in jobs
            if self._wanted(job, now) and self.shard.owns(self.account.name, job.job_id)
        )
        self.last_discovery = now
        self.discovery_error = ""
        log.debug("jobs discovered", extra={"account": self.account.name,
                                            "listed": len(jobs), "kept": len(self.discovered)})
        return True

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
            # One (reason, error) per call this poll made; reason "" for a good answer.
            outcomes: list[tuple[str, str]] = []
            if self.account.discover and not self.stop.is_set():
                listed = self._discover(now)
                if listed is not None:
                    outcomes.append(("", "") if listed else ("listing", self.discovery_error))
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
                # A job whose list was read but a run's detail was not (its runs were read
                # at this poll, the target is down) did reach Qianfan.
                reached = state.up or any(run.last_read >= now for run in state.runs)
                outcomes.append(("", "") if reached else (state.reason, state.error))
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
            self._health(outcomes)
            return self._state(end, time.perf_counter() - started, read=bool(due))

    def _health(self, outcomes: list[tuple[str, str]]) -> None:
        """Whether this poll reached Qianfan with accepted credentials (see the module doc)."""
        if self.discovery_error:  # the listing failed (it is retried every poll until it works)
            self.up, self.error = False, "job listing failed: " + self.discovery_error
        elif not outcomes:  # nothing was due: the previous poll's answer stands
            return
        elif any(reason not in UNREACHED for reason, _ in outcomes):
            self.up, self.error = True, ""
        else:
            reasons = ", ".join(sorted({reason for reason, _ in outcomes}))
            self.up = False
            self.error = f"every call failed ({reasons}): {outcomes[0][1]}"

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
        # Each run's progress history goes from this target's previous runs to the new ones.
        runs = with_estimates(state.runs, runs)
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
        return replace(state, up=False, runs=with_estimates(state.runs, runs),
                       last_attempt=started, error=str(exc), reason=exc.reason)

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

    def _state(self, end: float, duration: float, read: bool) -> AccountState:
        if self.up:
            self.last_success = end
        if read:  # a firing with nothing due is no poll: keep the last one's duration
            self.last_duration = duration
        return AccountState(
            name=self.account.name,
            targets=MappingProxyType(dict(self.targets)),
            up=self.up,
            polled=True,
            last_success=self.last_success,
            poll_duration=self.last_duration,
            discovery_error=self.discovery_error,
            discovered_jobs=len(self.discovered) if self.account.discover else None,
            runs=self._retained(end),
            error=self.error,
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
        self.store = RunStore()
        self._rendered = self.store.rendered(0, render_health(self._snapshot, list(self.accounts)))

    def _publish(self, before: Snapshot) -> None:
        """Bring the run store from ``before`` to the current snapshot, and render.

        Only the runs that changed are rendered again (``store.py``); the health
        metrics, a few lines per account and target, are rendered whole.
        """
        after = self._snapshot
        for name in before.accounts.keys() | after.accounts.keys():
            old, new = before.accounts.get(name), after.accounts.get(name)
            old_runs = old.runs if old is not None else ()
            new_runs = new.runs if new is not None else ()
            if old_runs is not new_runs:
                self.store.replace(old_runs, new_runs)
        health = render_health(after, list(self.accounts))
        self._rendered = self.store.rendered(after.generation, health)

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
                    # dict() copies in one step, even while an old poll is still running.
                    left_out = dict(before.left_out) if before is not None else None
                    shown[account.name] = poller.adopt(last, left_out)
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
