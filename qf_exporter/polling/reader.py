"""Reading one target: a V1 run's detail, or a V2 job's runs with their details.

``TargetReader.read`` returns the target's new state as a ``Read``: the state, and
whether the API says the target no longer exists. A read never raises a failure: a
failure is the target's (``up`` false, with the error and its reason), and so is a bug
(as ``invalid_response``: ``bug_as_bad_answer``, which discovery uses too). Only a stop
while it waits for budget ends it with ``NotSent``: then it did not happen, and
``read_all`` leaves it out. Each run's progress history carries over from the
target's previous runs (``with_estimates``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import CancelledError, Executor, Future
from dataclasses import dataclass, replace

from qf_exporter.config.file import V1Target
from qf_exporter.polling.estimate import with_estimates
from qf_exporter.polling.snapshot import TargetKey, TargetState
from qf_exporter.qianfan.bounded import ReadBudget
from qf_exporter.qianfan.budget import Deadline, NotSent
from qf_exporter.qianfan.client import QianfanClient
from qf_exporter.qianfan.errors import InvalidResponse, NotFound, QianfanError
from qf_exporter.qianfan.models import (
    Fields,
    Run,
    fingerprint,
    parse_v1_run,
    parse_v2_run,
    running,
    v2_listing,
)

log = logging.getLogger(__name__)


def bug_as_bad_answer(exc: Exception, logger: logging.Logger, message: str,
                      **context: str) -> InvalidResponse:
    """A bug met while reading an answer (any exception that is not a ``QianfanError``),
    logged with its traceback, as the bad answer it costs: the one read or listing fails
    as ``invalid_response`` and the poll carries on. Call it in the ``except`` block."""
    logger.exception(message, extra=context)
    return InvalidResponse(f"unexpected {type(exc).__name__}")


@dataclass(frozen=True)
class Read:
    """A target's state after a read, and whether the API says it does not exist."""

    state: TargetState
    vanished: bool = False


@dataclass(frozen=True)
class _V2Runs:
    """A V2 job's runs as read, and the failed detail read that left some of them
    with their list fields only (None when every detail was read)."""

    runs: tuple[Run, ...]
    read_at: float
    failure: QianfanError | None


class TargetReader:
    """Reads the targets of one account with its client, each within ``time_per_read``."""

    def __init__(
        self,
        account: str,
        client: QianfanClient,
        clock: Callable[[], float],
        time_per_read: float,
    ) -> None:
        self.account = account
        self.client = client
        self.clock = clock
        # How long one read may spend on Qianfan (answers, retries, backoff); its
        # waits for the account's budget come on top (``Deadline``).
        self.time_per_read = time_per_read

    def read(self, state: TargetState, started: float, pair: V1Target | None = None) -> Read:
        """The target's state after reading it (``pair`` for a V1 target); its runs
        carry the target's owner."""
        read = self._read(state, started, pair)
        return replace(read, state=read.state.owned_by(state.team))

    def _read(self, state: TargetState, started: float, pair: V1Target | None) -> Read:
        deadline = Deadline(self.clock() + self.time_per_read)
        runs: tuple[Run, ...]
        try:
            if pair is not None:
                runs = (self._read_v1(pair, deadline),)
                read_at = runs[0].last_read
            else:
                v2 = self._read_v2(state.name, deadline, state.runs)
                if v2.failure is not None:
                    return Read(self._partly_read(state, v2.runs, started, v2.failure))
                runs, read_at = v2.runs, v2.read_at
        except QianfanError as exc:
            return self._failed(state, started, exc)
        except NotSent:
            raise
        except Exception as exc:  # a bug must not kill the poller
            err = bug_as_bad_answer(exc, log, "unexpected error reading target",
                                    account=self.account, target=state.name)
            return Read(replace(state, up=False, last_attempt=started, error=str(err),
                                reason=err.reason))
        # Each run's progress history goes from this target's previous runs to the new ones.
        return Read(replace(state, up=True, runs=with_estimates(state.runs, runs),
                            last_attempt=started, last_success=read_at, error="", reason=""))

    def read_all(
        self,
        workers: Executor,
        due: Mapping[TargetKey, tuple[TargetState, V1Target | None]],
        started: float,
        stop: threading.Event,
        tick: float | None = None,
    ) -> Iterator[tuple[TargetKey, Read] | None]:
        """Read the ``due`` targets (state and pair, by key) in parallel on ``workers``,
        yielding each read as it completes, and None after each ``tick`` seconds in
        which none did (so that the caller can act on time between reads).

        Once ``stop`` is set, no more reads start; reads that never started, or whose
        wait for budget the stop cut short, are left out.
        """
        futures: dict[Future[Read], TargetKey] = {}
        # Not concurrent.futures.as_completed: a future cancelled by the workers'
        # shutdown (cancel_futures) never wakes it, while done callbacks do run.
        done: queue.SimpleQueue[Future[Read]] = queue.SimpleQueue()
        for key, (state, pair) in due.items():
            if stop.is_set():
                break
            try:
                future = workers.submit(self.read, state, started, pair)
            except RuntimeError:  # the workers were shut down: the exporter is stopping
                break
            futures[future] = key
            future.add_done_callback(done.put)
        left = len(futures)
        while left:
            try:
                future = done.get(timeout=tick)
            except queue.Empty:
                yield None
                continue
            left -= 1
            try:
                read = future.result()
            except (CancelledError, NotSent):  # stopping: this read never happened
                continue
            yield futures[future], read

    def _failed(self, state: TargetState, started: float, exc: QianfanError) -> Read:
        log.warning(
            "cannot read target",
            extra={"account": self.account, "api": state.api, "target": state.name,
                   "reason": exc.reason, "error": str(exc)},
        )
        failed = replace(state, up=False, last_attempt=started, error=str(exc),
                         reason=exc.reason)
        if isinstance(exc, NotFound):
            # An authoritative answer: the job (or V1 run) is gone, and its runs too.
            return Read(replace(failed, runs=()), vanished=True)
        return Read(failed)

    def _read_v1(self, pair: V1Target, deadline: Deadline) -> Run:
        return self.client.job_detail(
            pair, deadline,
            read=lambda result: parse_v1_run(result, account=self.account, pair=pair,
                                             read_at=self.clock()),
        )

    def _read_v2(self, job_id: str, deadline: Deadline, previous: tuple[Run, ...]) -> _V2Runs:
        """A V2 job's runs: the list, then the detail of every run it shows as Running.

        Baidu's reference for ``DescribeFineTuningTasks`` has no ``runProgress`` in its
        items; ``DescribeFineTuningTask`` has it, "only while runStatus is Running"
        (the SDK's trainer and CLI read progress the same way). The detail reads share
        the account's budget and this read's deadline. A failed one keeps the run as
        the list has it and is returned, so that the target reads as down.
        """
        budget = self.client.read_budget()  # the listing and the details, together
        listed = v2_listing(self.client.describe_tasks(job_id, deadline, budget))
        read_at = self.clock()
        failure = self._add_details(listed, deadline, budget)
        runs = _parsed(listed, previous, account=self.account, job_id=job_id,
                       read_at=read_at)
        return _V2Runs(_keep_vdl_links(runs, previous), read_at, failure)

    def _add_details(self, listed: dict[str, Fields], deadline: Deadline,
                     budget: ReadBudget) -> QianfanError | None:
        """Add each running run's detail to its listed fields; the first failure stops
        the rest (they keep their list fields: the budget is likely gone)."""
        for task_id, fields in listed.items():
            if not running(fields):
                continue
            try:
                detail = self.client.describe_task(task_id, deadline, budget)
            except QianfanError as exc:
                return exc
            listed[task_id] = fields.with_detail(detail)
        return None

    def _partly_read(self, state: TargetState, runs: tuple[Run, ...], started: float,
                     exc: QianfanError) -> TargetState:
        """The list was read but a run's detail was not: fresh runs, target down."""
        log.warning(
            "cannot read a run's detail",
            extra={"account": self.account, "api": "v2", "target": state.name,
                   "reason": exc.reason, "error": str(exc)},
        )
        return replace(state, up=False, runs=with_estimates(state.runs, runs),
                       last_attempt=started, error=str(exc), reason=exc.reason)


def _parsed(listed: Mapping[str, Fields], previous: tuple[Run, ...], *, account: str,
            job_id: str, read_at: float) -> tuple[Run, ...]:
    """The listed runs, parsed; a settled run whose fields read the same as last time
    is the run as it was, read again at ``read_at`` (what parsing them would give)."""
    before = {run.task_id: run for run in previous if run.settled and run.source}
    runs = []
    for task_id, fields in listed.items():
        source = fingerprint(fields.raw)
        last = before.get(task_id)
        if last is not None and last.source == source:
            runs.append(replace(last, last_read=read_at))
        else:
            runs.append(parse_v2_run(fields, account=account, job_id=job_id,
                                     read_at=read_at, source=source))
    return tuple(runs)


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
