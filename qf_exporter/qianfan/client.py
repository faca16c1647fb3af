"""The signed Qianfan client: one account's requests, budgeted, signed and retried.

Layers, outermost first: ``call`` retries what can be retried with the ``Backoff``
policy (honouring ``Retry-After``, never past the caller's deadline), sleeping with
the injected ``sleep`` and giving up when the ``stop`` event is set; ``_attempt``
waits for the request's turn in the account's ``RateLimiter``, however long (a
``Deadline`` moves later by that wait; a stop during it raises ``NotSent``, which is
no failure and is counted nowhere); the session's ``BceAuth`` signs the request as
it goes out, after that wait (a signature made before a wait could expire); the
``transport`` reads the answer within its bounds (``watchdog``, ``bounded``), every
answer of one read counting against its ``ReadBudget``; and the pure ``classify``
turns it into a result or a typed ``QianfanError`` whose ``reason`` is counted.
Paging is the client's own: callers get the raw items, and ``models`` turns them into
runs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

from qf_exporter.config.file import Account
from qf_exporter.qianfan import bounded, errors
from qf_exporter.qianfan.auth import BceAuth
from qf_exporter.qianfan.backoff import Backoff
from qf_exporter.qianfan.budget import Deadline, NotSent, RateLimiter
from qf_exporter.qianfan.classify import classify
from qf_exporter.qianfan.errors import InvalidResponse, QianfanError
from qf_exporter.qianfan.models import Page, V1Ids, json_object, parse_page
from qf_exporter.qianfan.telemetry import ApiMetrics
from qf_exporter.qianfan.transport import Transport

log = logging.getLogger(__name__)

V1_JOB_DETAIL = "/wenxinworkshop/finetune/jobDetail"
V2_FINETUNING = "/v2/finetuning"
MAX_KEYS = 100  # the most one V2 page holds
# One listing's bounds (with its ReadBudget's bytes and values): 5,000 runs of a job,
# or jobs of an account, in 50 full pages. Past one, the listing is refused as an
# invalid answer: a server whose markers never end cannot hold a poll or its memory.
MAX_PAGES = 50
MAX_LISTED = 5_000

T = TypeVar("T")
Item = Mapping[str, Any]
# A call's deadline: a fixed wall time, or a read's ``Deadline`` that waits for budget
# move later.
When = float | Deadline | None


def _at(deadline: When) -> float | None:
    return deadline.at if isinstance(deadline, Deadline) else deadline


class QianfanClient:
    """One account's API calls, each retried, budgeted and signed (see the module doc)."""

    def __init__(
        self,
        account: Account,
        *,
        metrics: ApiMetrics,
        timeout: float = 10.0,
        retries: int = 3,
        pool_size: int = 4,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.time,
        stop: threading.Event | None = None,
        sleep: Callable[[float], object] | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        max_response_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.account = account
        self.metrics = metrics
        self.timeout = timeout
        self.retries = retries
        self.limiter = limiter or RateLimiter(account.qps)
        self.clock = clock
        # The stop event says whether to give up; ``sleep`` is how a backoff waits (by
        # default a wait on the stop event, so that stopping cuts it short).
        self.stop = stop or threading.Event()
        self.sleep: Callable[[float], object] = sleep or self.stop.wait
        self.backoff = Backoff(backoff_base, backoff_cap)
        self.transport = Transport(
            account.endpoint,
            BceAuth(account.access_key.reveal(), account.secret_key.reveal(), clock),
            pool_size=pool_size,
            max_response_bytes=max_response_bytes,
        )
        self._closed = False

    def drop_connections(self) -> None:
        """Close the pooled (idle) connections now; the next call opens a new one."""
        self.transport.drop_connections()

    def close(self) -> None:
        """Close every pooled connection for good. A call still under way fails, or
        closes its connection when it ends, rather than leave one in a dead pool.
        """
        self._closed = True
        self.transport.close()

    # --- the API calls -----------------------------------------------------------------

    def job_detail(self, pair: V1Ids, deadline: When = None, *,
                   read: Callable[[Any], T]) -> T:
        """V1: one run's detail, as ``read`` makes it of the ``result`` object.

        ``read`` (``models.parse_v1_run``) runs inside the retry loop, so an answer of
        the wrong shape is counted as ``invalid_response`` and retried like any other.
        """
        body = {"taskId": pair.task_id, "jobId": pair.job_id}
        return self.call("jobDetail", V1_JOB_DETAIL, None, body, deadline, parse=read)

    def describe_task(self, task_id: str, deadline: When = None,
                      budget: bounded.ReadBudget | None = None) -> Item:
        """V2: one run's detail (``result`` object); the only answer with ``runProgress``."""
        action = "DescribeFineTuningTask"
        return self.call(action, V2_FINETUNING, {"Action": action}, {"taskId": task_id},
                         deadline, parse=lambda result: json_object(result, f"{action}: result"),
                         budget=budget)

    def describe_tasks(self, job_id: str, deadline: When = None,
                       budget: bounded.ReadBudget | None = None) -> list[Item]:
        """V2: every run of a job, all pages, as the answers hold them."""
        return self._list("DescribeFineTuningTasks", {"jobId": job_id}, "taskList", deadline,
                          budget or self.read_budget())

    def describe_jobs(self, deadline: When = None) -> list[Item]:
        """V2: every fine-tuning job of the account, all pages, as the answers hold them."""
        return self._list("DescribeFineTuningJobs", {}, "jobList", deadline,
                          self.read_budget())

    def read_budget(self) -> bounded.ReadBudget:
        """The bounds of one read (``bounded.ReadBudget``): never less than one answer."""
        return bounded.ReadBudget(max(bounded.MAX_READ_BYTES,
                                       self.transport.max_response_bytes))

    def _list(self, action: str, body: dict[str, Any], list_key: str,
              deadline: When, budget: bounded.ReadBudget) -> list[Item]:
        items: list[Item] = []
        for page in self._pages(action, body, list_key, deadline, budget):
            items.extend(page.items)
        return items

    def _pages(
        self, action: str, body: dict[str, Any], list_key: str, deadline: When,
        budget: bounded.ReadBudget,
    ) -> Iterator[Page]:
        marker: str | None = None
        listing = _Listing(action, list_key)
        while True:
            request = dict(body, maxKeys=MAX_KEYS)
            if marker:
                request["marker"] = marker
            page = self.call(action, V2_FINETUNING, {"Action": action}, request, deadline,
                             parse=listing.page, budget=budget)
            yield page
            if not page.truncated:
                return
            marker = listing.marker_after(page)

    # --- one call, with retries --------------------------------------------------------

    def call(self, action: str, path: str, query: dict[str, str] | None, body: dict[str, Any],
             deadline: When = None, parse: Callable[[Any], T] = lambda result: result,
             budget: bounded.ReadBudget | None = None) -> T:
        """Send one API call, retrying what can be retried; returns ``parse(result)``.

        ``parse`` checks the answer's shape inside the retry loop, so an answer of the
        wrong shape is counted as ``invalid_response`` and retried like any other.
        Every answer read (retries too) counts against ``budget``: the read this call
        is part of (by default, the call alone).
        """
        budget = budget or self.read_budget()
        attempt = 0
        while True:
            try:
                return parse(self._attempt(action, path, query, body, deadline, budget))
            except QianfanError as exc:
                self.metrics.failures.labels(self.account.name, action, exc.reason).inc()
                if isinstance(exc, errors.RateLimited):
                    self.limiter.widen()
                delay = self._retry_delay(exc, attempt, deadline)
                if delay is None:
                    raise
                log.debug(
                    "retrying Qianfan call",
                    extra={"account": self.account.name, "action": action,
                           "reason": exc.reason, "delay": round(delay, 3)},
                )
                attempt += 1
                self.sleep(delay)
                if self.stop.is_set():
                    raise

    def _retry_delay(self, exc: QianfanError, attempt: int, deadline: When
                     ) -> float | None:
        """How long to wait before retrying, or None when the call must not be retried."""
        if not exc.retryable or attempt >= self.retries or self.stop.is_set() or self._closed:
            return None
        delay = self.backoff.delay(attempt, exc.retry_after)
        at = _at(deadline)
        if at is not None and self.clock() + delay >= at:
            return None
        return delay

    def _attempt(self, action: str, path: str, query: dict[str, str] | None,
                 body: dict[str, Any], deadline: When,
                 budget: bounded.ReadBudget) -> Any:
        """One request: wait for budget, send, read, classify."""
        self._wait_for_budget(action, deadline)
        payload = json.dumps(body, separators=(",", ":")).encode()
        url = self.account.endpoint + path
        if query:
            url += "?" + urlencode(list(query.items()))
        # One wall-clock deadline for this request: connect, headers and the whole body,
        # never past the poll's deadline.
        now, at = self.clock(), _at(deadline)
        timeout = self.timeout
        if at is not None:
            timeout = max(0.1, min(timeout, at - now))
        self.metrics.requests.labels(self.account.name, action).inc()
        started = time.perf_counter()
        try:
            status, headers, content = self.transport.exchange(action, url, payload, timeout)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.duration.labels(self.account.name, action).observe(elapsed)
            if self._closed:  # closed meanwhile: do not leave this connection pooled
                self.transport.drop_connections()
        budget.charge(action, content)  # before parsing: what it would cost is bounded
        answer = classify(status, headers, content, action=action,
                          secrets=self.account.secrets(), now=self.clock())
        if isinstance(answer, QianfanError):
            raise answer
        return answer

    def _wait_for_budget(self, action: str, deadline: When) -> None:
        """Wait for this request's turn in the account's budget, however long: waiting
        is no failure (only Qianfan's answers fail a read), and a ``Deadline`` moves
        later by the wait. A stop
        during the wait raises ``NotSent`` (the request was never sent)."""
        if self._closed:
            raise NotSent(f"{action}: the client was closed")
        asked = self.clock()
        granted = self.limiter.acquire()
        if isinstance(deadline, Deadline):
            deadline.extend(max(0.0, self.clock() - asked))
        if not granted or self._closed:
            raise NotSent(f"{action}: the exporter is stopping")


class _Listing:
    """One listing's pages so far and the markers that asked for them; a page past
    MAX_PAGES or MAX_LISTED is refused (inside the call, so that it is counted as the
    invalid answer it is)."""

    def __init__(self, action: str, list_key: str) -> None:
        self.action = action
        self.list_key = list_key
        self.pages = 0
        self.items = 0
        self.seen: set[str] = set()

    def page(self, result: Any) -> Page:
        page = parse_page(result, self.list_key)
        self.pages += 1
        self.items += len(page.items)
        if self.pages > MAX_PAGES:
            raise bounded.final(f"{self.action}: more than {MAX_PAGES} pages (MAX_PAGES)")
        if self.items > MAX_LISTED:
            raise bounded.final(f"{self.action}: more than {MAX_LISTED} items listed "
                                 "(MAX_LISTED)")
        return page

    def marker_after(self, page: Page) -> str:
        """The marker that asks for the page after ``page`` (a truncated one)."""
        # nextMarker is documented only as "returned when isTruncated is true"
        # (DescribeFineTuningTasks, https://cloud.baidu.com/doc/WENXINWORKSHOP/s/klt73okdd):
        # without one, go on from the last item's id (the BCE marker convention); a
        # marker seen before means no progress.
        marker = page.next_marker or page.last_id
        if not marker or marker in self.seen:
            raise InvalidResponse(f"{self.action}: isTruncated without a new nextMarker")
        self.seen.add(marker)
        return marker
