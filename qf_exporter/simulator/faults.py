"""The simulated Qianfan's faults: a table from each kind's name to how it answers.

Each kind is a small function (or, where kinds differ only by a number, an instance of
a small class whose fields are that number, typed) that writes its answer through a
``Reply`` and says what follows: nothing (the fault was the answer), the normal answer
(a delay), or the normal answer with fields of the wrong types. ``KINDS`` is the
table; ``sim.add_fault(kind, ...)`` accepts exactly its names.
"""

from __future__ import annotations

import enum
import json
import threading
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from qf_exporter.simulator.actions import V1_ACTION

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

    def answer(self, reply: Reply, call: Call) -> After:
        """Answer ``call`` as this fault's kind does (see ``KINDS``)."""
        return KINDS[self.kind](reply, self, call)


class After(enum.Enum):
    """What follows a fault's answer."""

    NOTHING = "nothing"  # the fault was the answer
    ANSWER = "answer"  # the normal answer
    ODD_ANSWER = "odd answer"  # the normal answer, its runs' fields of the wrong types


@dataclass(frozen=True)
class Call:
    """The request a fault answers."""

    action: str
    access_key: str

    @property
    def v1(self) -> bool:
        return self.action == V1_ACTION


class Reply(Protocol):
    """How a fault answers: the HTTP handler's writing, as the fault table sees it."""

    def answer_json(self, status: int, data: Any,
                    headers: Mapping[str, str] | None = None) -> int: ...

    def answer_raw(self, status: int, body: bytes,
                   headers: Mapping[str, str] | None = None) -> int: ...

    def answer_error(self, v1: bool, status: int, code: str, number: int,
                     message: str) -> int: ...

    def refuse(self, code: str, message: str) -> None:
        """The gateway's 403 with an empty body."""

    def begin(self, status: int, headers: Mapping[str, str]) -> None:
        """Status and headers (not yet sent); a body follows, then the connection closes."""

    def write(self, chunk: bytes) -> None:
        """Send ``chunk`` (and anything before it) now. OSError when the client is gone."""

    def drop(self) -> None:
        """Close the connection without an answer."""


FaultAnswer = Callable[[Reply, Fault, Call], After]


# --- error answers ------------------------------------------------------------------------


def _rate_limit_18(reply: Reply, fault: Fault, call: Call) -> After:
    reply.answer_error(call.v1, 429, "RequestLimitExceeded", 18,
                       "Open api qps request limit reached")
    return After.NOTHING


def _http_429(reply: Reply, fault: Fault, call: Call) -> After:
    retry_after = f"{fault.seconds:g}" if fault.seconds else "1"
    reply.answer_json(429, {"requestId": request_id(), "code": "RequestLimitExceeded",
                            "message": "too many requests"}, {"Retry-After": retry_after})
    return After.NOTHING


@dataclass(frozen=True)
class ServerError:
    """An HTTP 5xx in the V2 shape, whichever API was called."""

    status: int

    def __call__(self, reply: Reply, fault: Fault, call: Call) -> After:
        reply.answer_json(self.status, {"requestId": request_id(), "code": "InternalError",
                                        "message": "internal error"})
        return After.NOTHING


@dataclass(frozen=True)
class ErrorCode:
    """Error ``number`` in the API's own shape (V1: HTTP 200; V2: ``status``, ``code``)."""

    number: int
    status: int
    code: str

    def __call__(self, reply: Reply, fault: Fault, call: Call) -> After:
        reply.answer_error(call.v1, self.status, self.code, self.number,
                           f"simulated error {self.number}")
        return After.NOTHING


def _auth_403(reply: Reply, fault: Fault, call: Call) -> After:
    reply.refuse("IamSignatureInvalid", "simulated signature failure")
    return After.NOTHING


def _unknown(reply: Reply, fault: Fault, call: Call) -> After:
    # A listing or V1 detail names a job; a task detail names a task.
    code = 510301 if call.action in ("DescribeFineTuningTasks", V1_ACTION) else 510202
    reply.answer_error(call.v1, 400, str(code), code, "not exist")
    return After.NOTHING


# --- broken answers -----------------------------------------------------------------------


@dataclass(frozen=True)
class RawBody:
    """HTTP 200 with exactly ``body``."""

    body: bytes

    def __call__(self, reply: Reply, fault: Fault, call: Call) -> After:
        reply.answer_raw(200, self.body)
        return After.NOTHING


def _result_null(reply: Reply, fault: Fault, call: Call) -> After:
    reply.answer_json(200, {"requestId": request_id(), "log_id": request_id(), "result": None})
    return After.NOTHING


def _list_not_list(reply: Reply, fault: Fault, call: Call) -> After:
    key = "jobList" if call.action == "DescribeFineTuningJobs" else "taskList"
    reply.answer_json(200, {"requestId": request_id(),
                            "result": {key: {"oops": 1}, "pageInfo": {"isTruncated": False}}})
    return After.NOTHING


def _wrong_types(reply: Reply, fault: Fault, call: Call) -> After:
    if call.v1:
        reply.answer_json(200, {"log_id": request_id(), "result": ["not", "an", "object"]})
    else:
        reply.answer_json(200, {"requestId": request_id(), "result": {
            "taskList": ["task-1", 2], "pageInfo": {"isTruncated": False}}})
    return After.NOTHING


def _odd_fields(reply: Reply, fault: Fault, call: Call) -> After:
    return After.ODD_ANSWER


# --- slow and dropped answers -------------------------------------------------------------


def _delay(reply: Reply, fault: Fault, call: Call) -> After:
    fault.released.wait(fault.seconds)
    return After.ANSWER


def _stall_body(reply: Reply, fault: Fault, call: Call) -> After:
    """The headers and half the body, then nothing for ``seconds``."""
    body = json.dumps({"requestId": request_id(), "log_id": request_id(),
                       "result": {"taskList": [], "trainStatus": "RUNNING"}}).encode()
    reply.begin(200, {"Content-Length": str(len(body))})
    reply.write(body[: len(body) // 2])
    fault.released.wait(fault.seconds)  # then the client has given up on this answer
    return After.NOTHING


def _close(reply: Reply, fault: Fault, call: Call) -> After:
    reply.drop()
    return After.NOTHING


# --- a bad day (a broken gateway or proxy in between) -------------------------------------


def _drip(reply: Reply, fault: Fault, call: Call) -> After:
    """Headers at once, then a valid body one byte at a time: only a total deadline
    stops a client from waiting for it (per-read timeouts never fire)."""
    body = valid_answer(call)
    reply.begin(200, {"Content-Length": str(len(body))})
    try:
        reply.write(b"")  # the headers go out before the first byte's wait
        for i in range(len(body)):
            if fault.released.wait(fault.seconds or 1.0):
                return After.NOTHING
            reply.write(body[i : i + 1])
    except OSError:
        pass  # the client gave up
    return After.NOTHING


def _endless_body(reply: Reply, fault: Fault, call: Call) -> After:
    reply.begin(200, {"Transfer-Encoding": "chunked"})
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * (64 * 1024))
    try:
        while not fault.released.is_set():
            reply.write(chunk)
    except OSError:
        pass  # the client gave up
    return After.NOTHING


def _gzip_bomb(reply: Reply, fault: Fault, call: Call) -> After:
    reply.answer_raw(200, gzip_bomb() + _gzip(valid_answer(call)), {"Content-Encoding": "gzip"})
    return After.NOTHING


def _huge_error(reply: Reply, fault: Fault, call: Call) -> After:
    """An error 5 MB long that echoes the access key, written a piece at a time: the
    simulator shares a test's process, whose memory bounds the exporter's, so it holds
    64 KiB of it at once, not three copies of 5 MB."""
    suffix = json.dumps(f" (request signed by {call.access_key})")[1:-1]
    if call.v1:  # the V1 API answers errors with HTTP 200
        status, head = 200, '{"error_code": 336100, "error_msg": "'
        tail = f'{suffix}", "log_id": "{request_id()}"}}'
    else:
        status = 500
        head = f'{{"requestId": "{request_id()}", "code": "InternalError", "message": "'
        tail = f'{suffix}"}}'
    first, last = head.encode(), tail.encode()
    reply.begin(status, {"Content-Length": str(len(first) + HUGE_MESSAGE + len(last))})
    piece = b"x" * (64 * 1024)
    try:
        reply.write(first)
        for _ in range(HUGE_MESSAGE // len(piece)):
            reply.write(piece)
        reply.write(last)
    except OSError:
        pass  # the client gave up (its size cap)
    return After.NOTHING


KINDS: dict[str, FaultAnswer] = {
    "rate_limit_18": _rate_limit_18,  # V1 shape: HTTP 200 {"error_code": 18}; V2: HTTP 429
    "http_429": _http_429,  # HTTP 429 with Retry-After: ``seconds`` (default 1)
    "http_500": ServerError(500),
    "http_503": ServerError(503),
    "code_2": ErrorCode(2, 500, "InternalError"),
    "code_336100": ErrorCode(336100, 500, "InternalError"),
    # RPM limit reached (the SDK's RPMLimitReached): a rate limit
    "code_336501": ErrorCode(336501, 429, "RequestLimitExceeded"),
    "code_500000": ErrorCode(500000, 500, "InternalError"),
    "code_500001": ErrorCode(500001, 400, "InvalidParameter"),  # bad request: not retryable
    # IAM certification failed (an app API key used as AK/SK)
    "code_14": ErrorCode(14, 400, "AccessDenied"),
    "auth_403": _auth_403,  # the gateway refuses the signature: 403, empty body
    "unknown": _unknown,  # 510202 / 510301
    "malformed_json": RawBody(b'{"result": {"taskList": [,]}'),
    "truncated_json": RawBody(b'{"requestId": "x", "result": {"taskList": [{"taskId": "ta'),
    "empty_200": RawBody(b""),
    "result_null": _result_null,
    "list_not_list": _list_not_list,  # taskList / jobList is not a list
    "wrong_types": _wrong_types,  # a result whose fields have the wrong types
    "odd_fields": _odd_fields,  # well-formed runs whose fields have the wrong types (200)
    "delay": _delay,  # answer after ``seconds``
    "stall_body": _stall_body,  # headers and half the body, then nothing for ``seconds``
    "close": _close,  # close the connection without an answer
    # A bad day (a broken gateway or proxy in between):
    "drip": _drip,  # a valid answer, one byte every ``seconds`` (default 1)
    "endless_body": _endless_body,  # a chunked body that never ends
    "gzip_bomb": _gzip_bomb,  # ~1 MB of gzip inflating to 1 GiB of spaces, then an answer
    "deep_json": RawBody(b"[" * DEEP + b"]" * DEEP),  # JSON nested 100,000 deep
    "huge_error": _huge_error,  # an error 5 MB long that echoes the access key
}
FAULT_KINDS = frozenset(KINDS)


def valid_answer(call: Call) -> bytes:
    """A well-formed answer with nothing in it (what a bad-day fault wraps)."""
    if call.v1:
        result: dict[str, Any] = {"trainStatus": "RUNNING", "taskId": 0}
    elif call.action == "DescribeFineTuningTask":
        result = {"taskId": "task-none", "runStatus": "Running"}
    else:
        key = "jobList" if call.action == "DescribeFineTuningJobs" else "taskList"
        result = {key: [], "pageInfo": {"isTruncated": False}}
    answer = {"requestId": request_id(), "log_id": request_id(), "result": result}
    return json.dumps(answer).encode()


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


def request_id() -> str:
    return str(uuid.uuid4())
