"""The simulated Qianfan HTTP server: V1 and V2 endpoints, a gateway, and faults.

It checks bce-auth-v1 signatures the way the real gateway does (403, empty body,
``X-Bce-Error-Code``), pages V2 listings, answers with the real error shapes, can
enforce a per-AK request budget over trailing one-second windows, and has fault
switches for the tests. It logs every request before answering it (so a client that
has its answer can count on the counts), knows its open connections (``stop()``
closes them, ``wait_idle()`` waits for them to end), and writes each answer in one
piece without Nagle's delay, as a real gateway would. It is shipped for ``--demo``
and is the tests' backbone.

Which answer carries what follows Baidu's reference pages (cited by title; the
simulator must never be more lenient than they are, and ``test_simulator_conformance``
keeps it so):

* ``DescribeFineTuningTasks`` (获取模型精调任务列表, seed 001): ``result.taskList`` items
  with taskId, jobId, jobName, jobDescription, model, trainMode, parameterScale,
  runStatus, metrics (only when Done), checkpointList, createTime, finishTime,
  errorMessage, errorCode; and ``result.pageInfo`` {marker, maxKeys, isTruncated,
  nextMarker (only when isTruncated)}. The items carry **no runProgress and no
  vdlLink**: that page's taskList table lists neither.
* ``DescribeFineTuningTask`` (获取模型精调任务详情): ``result`` with the fields above plus
  ``runProgress`` ("51%"; "只有任务运行状态运行中,才会返回此参数", i.e. only while
  runStatus is Running) and ``vdlLink``. The SDK's own mock server
  (python/qianfan/tests/utils/mock_server.py, ``finetune_v2_task_detail``) answers the
  same way, and its trainer and CLI read progress only from this call.
* ``DescribeFineTuningJobs`` (获取模型精调作业列表): ``result.jobList`` items {jobId,
  name, description, model, trainMode, createDate} and ``result.pageInfo``.
* V1 ``jobDetail`` (获取任务运行详情, seed 000): ``result`` {id, description, taskId,
  taskName, version, jobRunType, trainType, trainMode, peftType, trainStatus, progress
  (0..100), runTime, trainTime, startTime, finishTime, vdlLink}; errors as HTTP 200
  with {error_code, error_msg}.
* Some jobs spell the times createDate/finishDate, as the SDK's mock server does
  (``SimJob.date_spelling``); unset times are the "0000-00-00..." sentinels.
* Request bodies are checked as the reference types them: V2 ids are strings
  (``taskId``, ``jobId``), V1 ids are integers, ``maxKeys`` a positive integer (at most
  100 are returned), ``marker`` a string; anything else is refused with 400.
"""

from __future__ import annotations

import bisect
import calendar
import contextlib
import hmac
import json
import socket
import sys
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from qf_exporter.signing import parse_authorization, sign
from qf_exporter.simulator.scenario import SimJob, SimRun, World

ACTIONS_V2 = ("DescribeFineTuningTasks", "DescribeFineTuningJobs", "DescribeFineTuningTask")
# How far a request's x-bce-date may be in the future before the gateway refuses it.
CLOCK_SKEW = 900

FAULT_KINDS = frozenset(
    {
        "rate_limit_18",  # V1 shape: HTTP 200 {"error_code": 18}; V2: HTTP 429
        "http_429",  # HTTP 429 with Retry-After
        "http_500",
        "http_503",
        "code_2",
        "code_336100",
        "code_336501",  # RPM limit reached (the SDK's RPMLimitReached): a rate limit
        "code_500000",
        "code_500001",  # bad request: not retryable
        "code_14",  # IAM certification failed (an app API key used as AK/SK)
        "auth_403",  # the gateway refuses the signature: 403, empty body
        "unknown",  # 510202 / 510301
        "malformed_json",
        "truncated_json",
        "empty_200",
        "result_null",
        "list_not_list",  # taskList / jobList is not a list
        "wrong_types",  # a result whose fields have the wrong types
        "odd_fields",  # well-formed runs whose fields have the wrong types (answered 200)
        "delay",  # answer after ``seconds``
        "stall_body",  # send the headers and half the body, then nothing for ``seconds``
        "close",  # close the connection without an answer
        # A bad day (a broken gateway or proxy in between):
        "drip",  # a valid answer, one byte every ``seconds`` (default 1)
        "endless_body",  # a chunked body that never ends
        "gzip_bomb",  # ~1 MB of gzip that inflates to 1 GiB of spaces, then a valid answer
        "deep_json",  # JSON nested 100,000 deep
        "huge_error",  # an error whose message is 5 MB long and echoes the access key
    }
)
HUGE_MESSAGE = 5 * 1024 * 1024
DEEP = 100_000


@dataclass
class Fault:
    kind: str
    action: str | None = None  # only this action (jobDetail, DescribeFineTuningTasks, ...)
    target: str | None = None  # only this job id, task id or "task/job" V1 pair
    access_key: str | None = None  # only this account
    count: int | None = None  # how many requests it hits; None: until cleared
    seconds: float = 0.0  # "delay": how long; "http_429": the Retry-After value (default 1)
    # Set when the fault is cleared or the simulator stops: a "delay" ends early.
    released: threading.Event = field(default_factory=threading.Event, repr=False,
                                      compare=False)

    def matches(self, action: str, target: str, access_key: str) -> bool:
        return (
            (self.action is None or self.action == action)
            and (self.target is None or self.target == target)
            and (self.access_key is None or self.access_key == access_key)
            and (self.count is None or self.count > 0)
        )


@dataclass
class Logged:
    action: str
    access_key: str  # "" when the gateway refused the signature
    target: str
    arrived: float  # time.monotonic() when the request arrived (before it was answered)
    status: int  # the HTTP status sent; 0 when the connection was closed without an answer


@dataclass
class Stats:
    """What the simulator saw. Tests read it; the lock guards every field."""

    requests: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    auth_failures: int = 0
    log: deque[Logged] = field(default_factory=lambda: deque(maxlen=100_000))


class _Server(ThreadingHTTPServer):
    """One thread per connection, each known to the simulator (see ``wait_idle``)."""

    daemon_threads = True
    request_queue_size = 128
    sim: QianfanSimulator

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve, args=(request, client_address), daemon=True,
            name="qianfan-simulator-connection",
        )
        thread.start()
        self.sim._opened(request, thread)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout) or a connection the simulator closed on
        # purpose ("close", stop()) is part of the game, not a server error.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class QianfanSimulator:
    """A simulated Qianfan on loopback. ``start()``, use ``url``, ``stop()``."""

    def __init__(
        self,
        world: World,
        credentials: dict[str, str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        qps: float | None = None,
        latency: float = 0.0,
        wall_clock: Callable[[], float] = time.time,
        log_size: int = 100_000,
    ) -> None:
        self.world = world
        self.credentials = dict(credentials)  # access key -> secret key
        self.qps = qps  # enforce this budget per access key (None: do not)
        self.latency = latency
        # Some answers leave out pageInfo.nextMarker (SPEC marks it optional).
        self.send_next_marker = True
        self.wall_clock = wall_clock
        self.stats = Stats(log=deque(maxlen=log_size))
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._arrivals: dict[str, list[float]] = {}
        self._task_jobs: dict[str, str] = {}  # task id -> job id (see _find_task)
        handler = type("Handler", (_Handler,), {"sim": self})
        self._server = _Server((host, port), handler)
        self._server.sim = self
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> QianfanSimulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="qianfan-simulator",
            daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close every open connection, as a crashed gateway would.

        Clients with a kept-alive connection see it closed, and new connections to
        the port are refused.
        """
        if self._thread:
            self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        with self._lock:
            for fault in self.faults:
                fault.released.set()
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self.wait_idle(timeout=5)

    @property
    def connections(self) -> int:
        """How many client connections are open now."""
        with self._lock:
            self._prune()
            return len(self._connections)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every client connection is closed and its thread has ended.

        False if ``timeout`` passed first. Clients must close their connections
        (kept-alive ones stay open until they do).
        """
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                self._prune()
                threads = list(self._connections.values())
            if not threads:
                return True
            for thread in threads:
                thread.join(None if end is None else max(0.0, end - time.monotonic()))
                if thread.is_alive():
                    return False

    def __enter__(self) -> QianfanSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults and counts ------------------------------------------------------------

    def add_fault(self, kind: str, **kw: Any) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        fault = Fault(kind, **kw)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            for fault in self.faults:
                fault.released.set()
            self.faults.clear()

    def request_count(self, action: str | None = None) -> int:
        with self._lock:
            if action is None:
                return sum(self.stats.requests.values())
            return self.stats.requests[action]

    def logged(self) -> list[Logged]:
        with self._lock:
            return list(self.stats.log)

    def _take_fault(self, action: str, target: str, access_key: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(action, target, access_key):
                    if fault.count is not None:
                        fault.count -= 1
                    return fault
        return None

    def _over_budget(self, access_key: str, arrived: float) -> bool:
        """True when this arrival makes a trailing one-second window exceed ``qps``."""
        if self.qps is None:
            return False
        with self._lock:
            # Handler threads check in roughly, not exactly, the order of arrival: keep
            # the stamps sorted and count those in (arrived - 1 s, arrived].
            window = self._arrivals.setdefault(access_key, [])
            bisect.insort(window, arrived)
            del window[: bisect.bisect_right(window, window[-1] - 2.0)]
            held = bisect.bisect_right(window, arrived) - bisect.bisect_right(
                window, arrived - 1.0
            )
            if held > self.qps:
                self.stats.throttled += 1
                return True
            return False

    def _record(
        self, action: str, access_key: str, target: str, status: int, arrived: float
    ) -> None:
        with self._lock:
            self.stats.requests[action] += 1
            self.stats.log.append(Logged(action, access_key, target, arrived, status))

    def _find_task(self, task_id: str, now: float) -> tuple[SimJob, SimRun] | None:
        """The job and run of a task id (an index, so a fleet's details stay cheap)."""
        world = self.world
        job = world.jobs.get(self._task_jobs.get(task_id, ""))
        if job is None or not any(r.task_id == task_id for r in job.runs):
            self._task_jobs = {r.task_id: j.job_id for j in world.jobs.values() for r in j.runs}
            job = world.jobs.get(self._task_jobs.get(task_id, ""))
        if job is None:
            return None
        for run in world.visible_runs(job, now):
            if run.task_id == task_id:
                return job, run
        return None

    def _opened(self, conn: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._prune()
            self._connections[conn] = thread

    def _prune(self) -> None:
        for conn, thread in list(self._connections.items()):
            if not thread.is_alive():
                del self._connections[conn]


class _Handler(BaseHTTPRequestHandler):
    sim: QianfanSimulator
    protocol_version = "HTTP/1.1"
    server_version = "qianfan-simulator"
    # Headers and body go out in one write, without Nagle's delay: a real gateway
    # does not make a kept-alive client wait for its delayed ACK (~40 ms) per answer.
    disable_nagle_algorithm = True
    wbufsize = -1  # buffered; BaseHTTPRequestHandler flushes after each request
    # What the current request is, for the request log: (action, access key, target).
    _meta: list[str] | None = None
    _arrived = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests and the demo have their own logs

    def do_GET(self) -> None:
        self._meta = None
        self._send(405, {"requestId": _rid(), "code": "MethodNotAllowed", "message": "use POST"})

    def parse_request(self) -> bool:
        # The arrival is stamped as soon as the request line is in, before the headers
        # are parsed: the gateway's budget counts arrivals.
        self._arrived = time.monotonic()
        return super().parse_request()

    def do_POST(self) -> None:
        arrived = self._arrived
        self._meta = None
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = parse_qsl(split.query, keep_blank_values=True)
        action = dict(query).get("Action", "")
        v1 = path == "/wenxinworkshop/finetune/jobDetail"
        if v1:
            action = "jobDetail"
        elif path != "/v2/finetuning" or action not in ACTIONS_V2:
            self._send(404, {"requestId": _rid(), "code": "NotFound", "message": "no such API"})
            return
        # Every request is logged before its answer goes out, so that a client that
        # has its answer can count on the simulator's counts including it.
        self._meta = [action, "", ""]
        access_key = self._authenticate(path, query)
        if access_key is None:
            return
        self._meta[1] = access_key
        try:
            body = json.loads(raw_body or b"{}")
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            self._error(v1, 400, "InappropriateJSON", 500001, "request body is not JSON")
            return
        target = self._meta[2] = _target(action, body)
        if self.sim._over_budget(access_key, arrived):
            self._error(v1, 429, "RequestLimitExceeded", 18, "Open api qps request limit reached")
            return
        if self.sim.latency:
            time.sleep(self.sim.latency)
        fault = self.sim._take_fault(action, target, access_key)
        if fault is not None and self._fault(fault, v1, action):
            return
        self._answer(v1, action, body, odd=fault is not None and fault.kind == "odd_fields")

    def _log(self, status: int) -> None:
        if self._meta is not None:
            action, access_key, target = self._meta
            self._meta = None  # once per request
            self.sim._record(action, access_key, target, status, self._arrived)

    # --- the gateway --------------------------------------------------------------------

    def _authenticate(self, path: str, query: list[tuple[str, str]]) -> str | None:
        header = self.headers.get("Authorization", "")
        auth = parse_authorization(header)
        if auth is None:
            self._refuse("InvalidHTTPAuthHeader", "the Authorization header is invalid")
            return None
        secret = self.sim.credentials.get(auth.access_key)
        if secret is None:
            self._refuse("IamAccessKeyNotExist", "the access key does not exist")
            return None
        try:
            signed_at = calendar.timegm(time.strptime(auth.timestamp, "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            self._refuse("InvalidHTTPAuthHeader", "the timestamp is invalid")
            return None
        now = self.sim.wall_clock()
        if now > signed_at + auth.expiration or signed_at > now + CLOCK_SKEW:
            self._refuse("RequestExpired", "the request has expired")
            return None
        if not {"host", "x-bce-date"} <= set(auth.signed_headers):
            self._refuse("IamSignatureInvalid", "host and x-bce-date must be signed")
            return None
        if self.headers.get("x-bce-date") != auth.timestamp:
            self._refuse("IamSignatureInvalid", "x-bce-date does not match the signature")
            return None
        headers = {name: self.headers.get(name, "") for name in auth.signed_headers}
        expected = sign(
            method=self.command,
            path=path,
            query=query,
            headers=headers,
            access_key=auth.access_key,
            secret_key=secret,
            timestamp=signed_at,
            expiration=auth.expiration,
            signed_headers=auth.signed_headers,
        )
        # The signature decides, not the order of the signed-header list: the official
        # SDK lists them unsorted (request-source;x-bce-date;host;content-type) and the
        # real gateway accepts it; the canonical headers are sorted either way.
        if not hmac.compare_digest(expected.authorization.rsplit("/", 1)[-1],
                                   auth.signature):
            self._refuse("IamSignatureInvalid", "the signature does not match")
            return None
        return auth.access_key

    def _refuse(self, code: str, message: str) -> None:
        with self.sim._lock:
            self.sim.stats.auth_failures += 1
        self._log(403)
        self.send_response(403)
        self.send_header("X-Bce-Error-Code", code)
        self.send_header("X-Bce-Error-Message", message)
        self.send_header("X-Bce-Request-Id", _rid())
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None

    # --- answers ------------------------------------------------------------------------

    def _answer(self, v1: bool, action: str, body: dict[str, Any], odd: bool = False) -> int:
        world = self.sim.world
        now = world.clock()
        with world.lock:
            if v1:
                task_id, job_id = body.get("taskId"), body.get("jobId")
                if not isinstance(task_id, int) or not isinstance(job_id, int):
                    return self._error(True, 400, "", 500001, "param invalid")
                if task_id not in world.v1_task_names:
                    return self._error(True, 400, "", 510202, "task not exist")
                if (task_id, job_id) not in world.v1_runs:
                    return self._error(True, 400, "", 510301, "job not exist")
                if world.v1_runs[(task_id, job_id)].created > now:
                    return self._error(True, 400, "", 510301, "job not exist")
                detail = world.v1_detail(task_id, job_id, now)
                return self._send(200, {"log_id": _rid(), "result": _odd(detail) if odd
                                        else detail})
            if action == "DescribeFineTuningTask":
                task_id = body.get("taskId")
                if not isinstance(task_id, str) or not task_id:
                    return self._error(False, 400, "InvalidParameter", 500001,
                                       "taskId must be a string")
                found_run = self.sim._find_task(task_id, now)
                if found_run is None:
                    return self._error(False, 400, "510202", 510202, "task not exist")
                item = world.v2_task(*found_run, now, detail=True)
                return self._ok(_odd(item) if odd else item)
            keys, problem = _page_args(body)
            if problem:
                return self._error(False, 400, "InvalidParameter", 500001, problem)
            if action == "DescribeFineTuningTasks":
                job_id = body.get("jobId")
                if not isinstance(job_id, str) or not job_id:
                    return self._error(False, 400, "InvalidParameter", 500001,
                                       "jobId must be a string")
                found = world.jobs.get(job_id)
                if found is None:
                    return self._error(False, 400, "510301", 510301, "job not exist")
                items = [(r.task_id, world.v2_task(found, r, now))
                         for r in world.visible_runs(found, now)]
                if odd:
                    items = [(i, _odd(item)) for i, item in items]
                list_key = "taskList"
            else:
                items = [(j.job_id, world.job_listing(j)) for j in world.jobs.values()
                         if j.created <= now]
                list_key = "jobList"
        if body.get("pageReverse") is True:
            items.reverse()
        ids = [i for i, _ in items]
        marker = body.get("marker")
        start = 0
        if marker:
            if marker not in ids:
                return self._error(False, 400, "InvalidParameter", 500001, "marker not found")
            start = ids.index(marker)
        page = items[start : start + keys]
        truncated = start + keys < len(items)
        info: dict[str, Any] = {"marker": marker or "", "maxKeys": keys, "isTruncated": truncated}
        if truncated and self.sim.send_next_marker:
            info["nextMarker"] = ids[start + keys]
        return self._ok({list_key: [item for _, item in page], "pageInfo": info})

    def _fault(self, fault: Fault, v1: bool, action: str) -> bool:
        """Answer with a fault. False when the normal answer follows (a delay, odd fields)."""
        kind = fault.kind
        if kind == "odd_fields":
            return False
        if kind == "delay":
            fault.released.wait(fault.seconds)
            return False
        if kind == "rate_limit_18":
            self._error(v1, 429, "RequestLimitExceeded", 18, "Open api qps request limit reached")
        elif kind == "http_429":
            retry_after = f"{fault.seconds:g}" if fault.seconds else "1"
            self._send(429, {"requestId": _rid(), "code": "RequestLimitExceeded",
                             "message": "too many requests"}, {"Retry-After": retry_after})
        elif kind in ("http_500", "http_503"):
            self._send(int(kind[-3:]), {"requestId": _rid(), "code": "InternalError",
                                        "message": "internal error"})
        elif kind.startswith("code_"):
            code = int(kind[5:])
            status = 400 if code in (500001, 14) else 429 if code == 336501 else 500
            name = {500: "InternalError", 429: "RequestLimitExceeded"}.get(
                status, "AccessDenied" if code == 14 else "InvalidParameter")
            self._error(v1, status, name, code, f"simulated error {code}")
        elif kind == "auth_403":
            self._refuse("IamSignatureInvalid", "simulated signature failure")
        elif kind == "unknown":
            code = 510301 if action in ("DescribeFineTuningTasks", "jobDetail") else 510202
            self._error(v1, 400, str(code), code, "not exist")
        elif kind == "malformed_json":
            self._raw(200, b'{"result": {"taskList": [,]}')
        elif kind == "truncated_json":
            self._raw(200, b'{"requestId": "x", "result": {"taskList": [{"taskId": "ta')
        elif kind == "empty_200":
            self._raw(200, b"")
        elif kind == "result_null":
            self._send(200, {"requestId": _rid(), "log_id": _rid(), "result": None})
        elif kind == "list_not_list":
            key = "jobList" if action == "DescribeFineTuningJobs" else "taskList"
            self._ok({key: {"oops": 1}, "pageInfo": {"isTruncated": False}})
        elif kind == "wrong_types":
            if v1:
                self._send(200, {"log_id": _rid(), "result": ["not", "an", "object"]})
            else:
                self._ok({"taskList": ["task-1", 2], "pageInfo": {"isTruncated": False}})
        elif kind == "stall_body":
            body = json.dumps({"requestId": _rid(), "log_id": _rid(),
                               "result": {"taskList": [], "trainStatus": "RUNNING"}}).encode()
            self._log(200)
            self.send_response(200)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            fault.released.wait(fault.seconds)
            self.close_connection = True  # the client has given up on this answer
        elif kind == "close":
            self._log(0)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self._bad_day(fault, v1, action)
        return True

    def _bad_day(self, fault: Fault, v1: bool, action: str) -> None:
        kind = fault.kind
        if kind == "drip":
            self._drip(fault, _valid_answer(v1, action))
        elif kind == "endless_body":
            self._endless(fault)
        elif kind == "gzip_bomb":
            self._raw(200, gzip_bomb() + _gzip(_valid_answer(v1, action)),
                      {"Content-Encoding": "gzip"})
        elif kind == "deep_json":
            self._raw(200, b"[" * DEEP + b"]" * DEEP)
        elif kind == "huge_error":
            access_key = self._meta[1] if self._meta else ""
            message = "x" * HUGE_MESSAGE + f" (request signed by {access_key})"
            self._error(v1, 500, "InternalError", 336100, message)

    def _drip(self, fault: Fault, body: bytes) -> None:
        """Headers at once, then the body one byte at a time: only a total deadline
        stops a client from waiting for it (per-read timeouts never fire)."""
        self._log(200)
        self.send_response(200)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.flush()
            for i in range(len(body)):
                if fault.released.wait(fault.seconds or 1.0):
                    return
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
        except OSError:
            return  # the client gave up

    def _endless(self, fault: Fault) -> None:
        self._log(200)
        self.send_response(200)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * (64 * 1024))
        try:
            while not fault.released.is_set():
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:
            return  # the client gave up

    # --- writing ----------------------------------------------------------------------------

    def _ok(self, result: Any) -> int:
        return self._send(200, {"requestId": _rid(), "result": result})

    def _error(self, v1: bool, status: int, code: str, number: int, message: str) -> int:
        if v1:  # the V1 API answers errors with HTTP 200
            return self._send(200, {"error_code": number, "error_msg": message, "log_id": _rid()})
        return self._send(status, {"requestId": _rid(), "code": code or str(number),
                                   "message": message})

    def _send(self, status: int, data: Any, headers: dict[str, str] | None = None) -> int:
        body = json.dumps(data, ensure_ascii=False).encode()
        return self._raw(status, body, headers)

    def _raw(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> int:
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        return status


def _valid_answer(v1: bool, action: str) -> bytes:
    """A well-formed answer with nothing in it (what a bad-day fault wraps)."""
    if v1:
        result: dict[str, Any] = {"trainStatus": "RUNNING", "taskId": 0}
    elif action == "DescribeFineTuningTask":
        result = {"taskId": "task-none", "runStatus": "Running"}
    else:
        key = "jobList" if action == "DescribeFineTuningJobs" else "taskList"
        result = {key: [], "pageInfo": {"isTruncated": False}}
    return json.dumps({"requestId": _rid(), "log_id": _rid(), "result": result}).encode()


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


_BOMB: list[bytes] = []
_BOMB_LOCK = threading.Lock()


def gzip_bomb() -> bytes:
    """1 GiB of spaces as ~1 MB of gzip: one 64 MiB member, sent 16 times (a gzip body
    may hold several members). Made once per process: compressing takes a moment."""
    with _BOMB_LOCK:
        if not _BOMB:
            compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            block = b" " * (1024 * 1024)
            member = b"".join(compressor.compress(block) for _ in range(64))
            _BOMB.append((member + compressor.flush()) * 16)
        return _BOMB[0]


def _rid() -> str:
    return str(uuid.uuid4())


# Values of the wrong type for a run's fields ("odd_fields"); ids stay readable.
_ODD_VALUES: dict[str, Any] = {
    "trainStatus": ["RUNNING"], "runStatus": {"value": "Running"}, "progress": "lots",
    "runProgress": {"percent": 51}, "runTime": [1], "trainTime": {"s": 1},
    "startTime": {"t": 1}, "finishTime": ["never"], "createTime": [2024], "createDate": True,
    "finishDate": {"d": 0}, "metrics": ["BLEU-4", "17%"], "checkpointList": "many",
    "errorCode": {"code": 1}, "errorMessage": ["no"], "jobName": {"n": 1}, "taskName": [1],
    "model": None, "trainMode": 3.5, "parameterScale": False, "version": {"v": 1},
    "vdlLink": ["x"], "trainType": [], "peftType": {},
}


def _odd(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _ODD_VALUES.get(key, value) for key, value in item.items()}


def _target(action: str, body: dict[str, Any]) -> str:
    if action == "jobDetail":
        return f"{body.get('taskId')}/{body.get('jobId')}"
    return str(body.get("jobId") or body.get("taskId") or "")


def _page_args(body: dict[str, Any]) -> tuple[int, str]:
    keys = body.get("maxKeys", 10)
    if isinstance(keys, bool) or not isinstance(keys, int) or keys < 1:
        return 0, "maxKeys must be a positive integer"
    marker = body.get("marker")
    if marker is not None and not isinstance(marker, str):
        return 0, "marker must be a string"
    return min(keys, 100), ""
