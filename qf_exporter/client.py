"""The signed Qianfan client: one account's requests, budgeted, signed and retried.

Each request waits for its turn in the account's ``RateLimiter``, is signed just
before it goes out (a signature made before a wait could expire), and its failure,
if any, becomes a typed ``QianfanError`` whose ``reason`` is counted. Retryable
failures are retried with capped exponential backoff and jitter, honouring
``Retry-After``, but never past the caller's deadline.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError

from qf_exporter import errors, upstream
from qf_exporter.config import Account, redact
from qf_exporter.errors import InvalidResponse, QianfanError
from qf_exporter.models import Fields, Page, parse_page
from qf_exporter.ratelimit import RateLimiter
from qf_exporter.signing import bce_timestamp, sign
from qf_exporter.telemetry import ApiMetrics

log = logging.getLogger(__name__)

V1_JOB_DETAIL = "/wenxinworkshop/finetune/jobDetail"
V2_FINETUNING = "/v2/finetuning"
MAX_KEYS = 100  # the most one V2 page holds
MAX_PAGES = 10_000  # a guard against a server whose markers never end
SIGNATURE_EXPIRATION = 1800
MAX_CODE = 100  # error codes and request ids are short; an odd upstream's are cut

T = TypeVar("T")


class QianfanClient:
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
        self.stop = stop or threading.Event()
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_response_bytes = max_response_bytes
        self._host = urlsplit(account.endpoint).netloc
        self._session = requests.Session()
        self._session.trust_env = False  # never send IAM-signed calls through a stray proxy
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 1), max_retries=0)
        upstream.watch_pools(adapter.poolmanager)  # each request's deadline can cut its socket
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._closed = False

    def drop_connections(self) -> None:
        """Close the pooled (idle) connections now; the next call opens a new one.

        ``Session.close()`` alone does not: urllib3 2 forgets its pools without closing
        them, and a pool that an exception's traceback holds in a reference cycle (as
        after a timeout or a dropped connection) keeps its sockets open until the
        garbage collector happens to run.
        """
        for adapter in self._session.adapters.values():
            pools = getattr(getattr(adapter, "poolmanager", None), "pools", None)
            if pools is not None:
                # (urllib3's container refuses plain iteration; keys() is a copy)
                for key in pools.keys():  # noqa: SIM118
                    pool = pools.get(key)
                    if pool is not None:
                        pool.close()
        self._session.close()

    def close(self) -> None:
        """Close every pooled connection for good. A call still under way fails, or
        closes its connection when it ends, rather than leave one in a dead pool.
        """
        self._closed = True
        self.drop_connections()

    # --- the API calls -----------------------------------------------------------------

    def job_detail(
        self, task_id: int, job_id: int, deadline: float | None = None
    ) -> Mapping[str, Any]:
        """V1: one run's detail (``result`` object)."""
        return self.call(
            "jobDetail",
            V1_JOB_DETAIL,
            None,
            {"taskId": task_id, "jobId": job_id},
            deadline,
            parse=_v1_detail,
        )

    def describe_task(self, task_id: str, deadline: float | None = None) -> Mapping[str, Any]:
        """V2: one run's detail (``result`` object); the only answer with ``runProgress``."""
        return self.call(
            "DescribeFineTuningTask",
            V2_FINETUNING,
            {"Action": "DescribeFineTuningTask"},
            {"taskId": task_id},
            deadline,
            parse=_v2_detail,
        )

    def describe_tasks(self, job_id: str, deadline: float | None = None) -> list[dict[str, Any]]:
        """V2: every run of a job, all pages."""
        items: list[dict[str, Any]] = []
        for page in self._pages("DescribeFineTuningTasks", {"jobId": job_id}, "taskList", deadline):
            items.extend(dict(item) for item in page.items)
        return items

    def describe_jobs(self, deadline: float | None = None) -> list[dict[str, Any]]:
        """V2: every fine-tuning job of the account, all pages."""
        items: list[dict[str, Any]] = []
        for page in self._pages("DescribeFineTuningJobs", {}, "jobList", deadline):
            items.extend(dict(item) for item in page.items)
        return items

    def _pages(
        self, action: str, body: dict[str, Any], list_key: str, deadline: float | None
    ) -> Iterator[Page]:
        marker: str | None = None
        seen: set[str] = set()
        id_key = list_key.removesuffix("List") + "Id"  # taskList -> taskId, jobList -> jobId
        for _ in range(MAX_PAGES):
            request = dict(body, maxKeys=MAX_KEYS)
            if marker:
                request["marker"] = marker
            page = self.call(
                action,
                V2_FINETUNING,
                {"Action": action},
                request,
                deadline,
                parse=lambda result: parse_page(result, list_key),
            )
            yield page
            if not page.truncated:
                return
            # SPEC marks nextMarker optional: without one, go on from the last item's id
            # (the BCE marker convention); a marker seen before means no progress.
            next_marker = page.next_marker or _last_id(page, id_key)
            if not next_marker or next_marker in seen:
                raise InvalidResponse(f"{action}: isTruncated without a new nextMarker")
            seen.add(next_marker)
            marker = next_marker
        raise InvalidResponse(f"{action}: more than {MAX_PAGES} pages")

    # --- one call, with retries --------------------------------------------------------

    def call(
        self,
        action: str,
        path: str,
        query: dict[str, str] | None,
        body: dict[str, Any],
        deadline: float | None = None,
        parse: Callable[[Any], T] = lambda result: result,
    ) -> T:
        """Send one API call, retrying what can be retried; returns ``parse(result)``.

        ``parse`` checks the answer's shape inside the retry loop, so an answer of the
        wrong shape is counted as ``invalid_response`` and retried like any other.
        """
        attempt = 0
        while True:
            try:
                return parse(self._attempt(action, path, query, body, deadline))
            except QianfanError as exc:
                self.metrics.failures.labels(self.account.name, action, exc.reason).inc()
                if isinstance(exc, errors.RateLimited):
                    self.limiter.widen()
                if (not exc.retryable or attempt >= self.retries or self.stop.is_set()
                        or self._closed):
                    raise
                delay = min(self.backoff_cap, self.backoff_base * 2**attempt)
                delay = delay / 2 + random.uniform(0, delay / 2)  # jitter spreads out retries
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                if deadline is not None and self.clock() + delay >= deadline:
                    raise
                log.debug(
                    "retrying Qianfan call",
                    extra={"account": self.account.name, "action": action,
                           "reason": exc.reason, "delay": round(delay, 3)},
                )
                attempt += 1
                if self.stop.wait(delay):
                    raise

    def _attempt(
        self,
        action: str,
        path: str,
        query: dict[str, str] | None,
        body: dict[str, Any],
        deadline: float | None,
    ) -> Any:
        monotonic_deadline = None
        if deadline is not None:
            monotonic_deadline = time.monotonic() + (deadline - self.clock())
        if self._closed:
            raise errors.ConnectionFailed(f"{action}: the client was closed")
        if not self.limiter.acquire(monotonic_deadline):
            if self.stop.is_set():
                raise errors.ConnectionFailed(f"{action}: the exporter is stopping")
            # The limiter's next free slot is past the deadline, and waiting only
            # moves it later: retrying cannot help.
            err = errors.Timeout(f"{action}: no request budget left before the poll deadline")
            err.retryable = False
            raise err
        payload = json.dumps(body, separators=(",", ":")).encode()
        query_items = list((query or {}).items())
        url = self.account.endpoint + path
        if query_items:
            url += "?" + urlencode(query_items)
        now = self.clock()
        headers = {
            "Host": self._host,
            "Content-Type": "application/json",
            # Only what this client can inflate within its size cap (requests would also
            # offer br and zstd when those libraries happen to be installed).
            "Accept-Encoding": "gzip, deflate",
            "x-bce-date": bce_timestamp(now),
        }
        headers["Authorization"] = sign(
            method="POST",
            path=path,
            query=query_items,
            headers=headers,
            access_key=self.account.access_key.reveal(),
            secret_key=self.account.secret_key.reveal(),
            timestamp=now,
            expiration=SIGNATURE_EXPIRATION,
        ).authorization
        # One wall-clock deadline for this request: connect, headers and the whole body,
        # never past the poll's deadline.
        timeout = self.timeout
        if deadline is not None:
            timeout = max(0.1, min(timeout, deadline - now))
        self.metrics.requests.labels(self.account.name, action).inc()
        started = time.perf_counter()
        try:
            with upstream.watched(time.monotonic() + timeout) as watch:
                status, response_headers, content = self._exchange(
                    action, url, payload, headers, timeout, watch
                )
        finally:
            self.metrics.duration.labels(self.account.name, action).observe(
                time.perf_counter() - started
            )
            if self._closed:  # closed meanwhile: do not leave this connection pooled
                self.drop_connections()
        return self._result(action, status, response_headers, content)

    def _exchange(
        self,
        action: str,
        url: str,
        payload: bytes,
        headers: dict[str, str],
        timeout: float,
        watch: upstream.Watch,
    ) -> tuple[int, Mapping[str, str], bytearray]:
        """Send one request and read its whole answer under ``watch``: status, headers, body."""
        try:
            # Redirects are not followed: a signed call has one right address, and
            # requests would resend a redirected POST as a GET. The body is streamed,
            # so that its size and its time are ours to bound.
            response = self._session.post(url, data=payload, headers=headers,
                                          timeout=(timeout, timeout), allow_redirects=False,
                                          stream=True)
            try:
                content = upstream.read_body(
                    response.raw, response.headers.get("Content-Encoding", ""), watch,
                    self.max_response_bytes,
                )
            except BaseException:
                watch.discard_connection()  # the rest of this answer must not be read
                response.close()
                raise
        except upstream.DeadlinePassed:
            raise errors.Timeout(f"{action}: no whole answer within {timeout:g}s") from None
        except upstream.TooLarge:
            raise InvalidResponse(
                f"{action}: the answer is larger than {self.max_response_bytes} bytes"
            ) from None
        except requests.Timeout:
            raise errors.Timeout(f"{action}: no answer within {timeout:g}s") from None
        except (requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError, ProtocolError):
            if watch.fired:
                raise errors.Timeout(f"{action}: no whole answer within {timeout:g}s") from None
            raise InvalidResponse(f"{action}: the answer was cut off or garbled") from None
        except (requests.RequestException, OSError, HTTPError) as exc:
            # A read timeout while the body is read surfaces as a ConnectionError, and a
            # socket the watchdog shut down as any of these.
            if watch.fired or isinstance(exc, ReadTimeoutError) or any(
                isinstance(arg, ReadTimeoutError) for arg in exc.args
            ):
                raise errors.Timeout(f"{action}: no answer within {timeout:g}s") from None
            raise errors.ConnectionFailed(
                f"{action}: cannot reach {self._host}: {type(exc).__name__}"
            ) from None
        return response.status_code, response.headers, content

    def _result(
        self, action: str, status: int, headers: Mapping[str, str], content: bytearray
    ) -> Any:
        # Upstream text may echo the credentials (a run named after the access key, an
        # error that quotes the request): scrub them before anything reads the answer.
        content = upstream.scrub_bytes(content, self.account.secrets())
        data: Any = None
        try:
            data = None if upstream.is_blank(content) else upstream.parse_json(content)
        except ValueError:
            data = None
        request_id = None
        if isinstance(data, dict):
            request_id = _text(data.get("requestId") or data.get("log_id"))[:MAX_CODE]
        if status >= 300 or status < 200:
            code = _text(headers.get("X-Bce-Error-Code"))[:MAX_CODE] or None
            message = headers.get("X-Bce-Error-Message", "")
            if isinstance(data, dict):
                code = _text(data.get("code") or data.get("error_code"))[:MAX_CODE] or code
                message = _text(data.get("message") or data.get("error_msg")) or message
            message = message[: 2 * upstream.MAX_UPSTREAM_MESSAGE]  # (see _scrub)
            raise errors.from_http(
                status,
                code,
                self._scrub(f"{action}: {message}" if message else action),
                request_id,
                _retry_after(headers.get("Retry-After"), self.clock()),
            )
        if data is None:
            what = "an empty answer" if upstream.is_blank(content) else "an answer that is not JSON"
            raise InvalidResponse(f"{action}: {what}", status=status)
        if not isinstance(data, dict):
            raise InvalidResponse(f"{action}: the answer is not a JSON object", status=status)
        code_value = data.get("error_code")
        if code_value not in (None, 0, "0", ""):
            message = self._scrub(_text(data.get("error_msg")) or "")
            try:
                code_int = int(code_value)
            except (TypeError, ValueError, OverflowError):
                raise InvalidResponse(
                    f"{action}: error_code {self._scrub(repr(code_value))}"
                ) from None
            raise errors.from_error_code(code_int, f"{action}: {message}", request_id)
        if "result" not in data:
            if data.get("code"):
                raise errors.from_http(
                    status, _text(data.get("code"))[:MAX_CODE],
                    self._scrub(_text(data.get("message"))),
                    request_id,
                )
            raise InvalidResponse(f"{action}: the answer has no result", status=status)
        if data["result"] is None:
            raise InvalidResponse(f"{action}: result is null", status=status)
        return data["result"]

    def _scrub(self, text: str) -> str:
        """Upstream messages may echo the access key; never let one through. They are
        cut too: a multi-megabyte message must not be logged whole on every poll.
        (Cut twice: a secret across the first cut is beyond the second.)"""
        head = text[: 2 * upstream.MAX_UPSTREAM_MESSAGE]
        return upstream.cut_message(redact(head, self.account.secrets()))


def _last_id(page: Page, id_key: str) -> str | None:
    if not page.items:
        return None
    value = Fields(page.items[-1]).text(id_key)
    return value or None


def _v1_detail(result: Any) -> Mapping[str, Any]:
    if not isinstance(result, Mapping):
        raise InvalidResponse("jobDetail: result is not a JSON object")
    # Every real jobDetail answer names the run's status; one without it is not one.
    if not any(str(key).lower() == "trainstatus" for key in result):
        raise InvalidResponse("jobDetail: result has no trainStatus")
    return result


def _v2_detail(result: Any) -> Mapping[str, Any]:
    if not isinstance(result, Mapping):
        raise InvalidResponse("DescribeFineTuningTask: result is not a JSON object")
    return result


def _text(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)


MAX_RETRY_AFTER = 300.0


def _retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number, or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER))
