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
    HUGE_NUMBERS = "huge numbers"  # the normal answer, its times and steps 401 digits long


@dataclass(frozen=True)
class Call:
    """The request a fault answers."""

    action: str
    access_key: str
    secret_key: str = ""  # the account's, for answers that echo it

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


def _huge_numbers(reply: Reply, fault: Fault, call: Call) -> After:
    return After.HUGE_NUMBERS


# --- hostile answers ------------------------------------------------------------------------


def _escaped_keys(reply: Reply, fault: Fault, call: Call) -> After:
    """A well-formed answer whose strings hold the account's keys written with JSON
    escapes (``"\\u0041K..."``, all or every other character), and split in halves
    across two fields."""
    ak, sk = call.access_key, call.secret_key
    half = len(ak) // 2
    run = {"taskId": "task-@AKU@", "jobName": "team @AKM@", "taskName": "@SKU@",
           "model": "@SKM@", "runStatus": "Failed", "errorCode": "500001",
           "errorMessage": "signed by @AKM@ with @SKU@",
           "metrics": {"@AKU@": "50%", "BLEU-4": "17.03%"}}
    split = {"taskId": "task-split", "taskName": ak[:half], "jobName": ak[half:],
             "trainMode": sk[: len(sk) // 2], "parameterScale": sk[len(sk) // 2 :],
             "runStatus": "Failed"}
    result: dict[str, Any]
    if call.v1:
        result = {"trainStatus": "FAIL", "taskName": "@AKU@", "version": "@SKM@",
                  "trainType": "@AKM@"}
    elif call.action == "DescribeFineTuningTask":
        result = run
    elif call.action == "DescribeFineTuningJobs":
        result = {"jobList": [{"jobId": "job-@AKM@", "name": "@SKU@"}],
                  "pageInfo": {"isTruncated": False}}
    else:
        result = {"taskList": [run, split], "pageInfo": {"isTruncated": False}}
    body = json.dumps({"requestId": request_id(), "log_id": request_id(), "result": result})
    for token, text in (("@AKU@", escaped(ak)), ("@AKM@", escaped(ak, every=2)),
                        ("@SKU@", escaped(sk)), ("@SKM@", escaped(sk, every=2))):
        body = body.replace(token, text)
    reply.answer_raw(200, body.encode())
    return After.NOTHING


def _escaped_error(reply: Reply, fault: Fault, call: Call) -> After:
    """An error whose message holds both keys, JSON-escaped."""
    message = f"request signed by @AKU@ with @SKM@ ({call.action})"
    if call.v1:
        data: dict[str, Any] = {"error_code": 336100, "error_msg": message,
                                "log_id": request_id()}
    else:
        data = {"requestId": request_id(), "code": "InternalError", "message": message}
    body = json.dumps(data).replace("@AKU@", escaped(call.access_key))
    body = body.replace("@SKM@", escaped(call.secret_key, every=2))
    reply.answer_raw(200 if call.v1 else 500, body.encode())
    return After.NOTHING


def escaped(text: str, every: int = 1) -> str:
    """``text`` as the inside of a JSON string, every ``every``-th character written as
    a ``\\u`` escape (upper-case hex for odd ones, which JSON allows too)."""
    out = []
    for i, char in enumerate(text):
        if i % every:
            out.append(json.dumps(char)[1:-1])
        else:
            out.append(f"\\u{ord(char):04x}" if i % 2 == 0 else f"\\u{ord(char):04X}")
    return "".join(out)


@dataclass(frozen=True)
class EndlessListing:
    """A listing whose every page says there is another: ``items`` items a page (far
    past the 100 that ``maxKeys`` allows, when a gateway in between ignores it), each
    page with a fresh ``nextMarker``."""

    items: int

    def __call__(self, reply: Reply, fault: Fault, call: Call) -> After:
        jobs = call.action == "DescribeFineTuningJobs"
        key, id_key = ("jobList", "jobId") if jobs else ("taskList", "taskId")
        base = uuid.uuid4().hex
        items = ",".join(
            json.dumps({id_key: f"{base}-{i}", "runStatus": "Done", "taskName": f"run {i}",
                        "jobName": "endless", "model": "ERNIE-Speed",
                        "createTime": "2024-05-01T10:00:00Z"}, separators=(",", ":"))
            for i in range(self.items)
        )
        body = json.dumps({"requestId": request_id(), "result": {
            key: ["@ITEMS@"],
            "pageInfo": {"isTruncated": True, "nextMarker": f"{base}-next",
                         "maxKeys": self.items}}}).replace('"@ITEMS@"', items)
        reply.answer_raw(200, body.encode())
        return After.NOTHING


HUGE = 10**400  # 401 digits: no float holds it


def huge_numbers(result: Any) -> Any:
    """``result`` with every time, duration and checkpoint step 401 digits long, and
    the value of its first evaluation metric too (the "huge_numbers" fault)."""
    if isinstance(result, list):
        return [huge_numbers(item) for item in result]
    if not isinstance(result, dict):
        return result
    out = {key: HUGE if key in _HUGE_FIELDS else huge_numbers(value)
           for key, value in result.items()}
    metrics = out.get("metrics")
    if isinstance(metrics, dict) and metrics:
        out["metrics"] = dict(metrics, **{min(metrics): HUGE})
    return out


_HUGE_FIELDS = frozenset({"createTime", "createDate", "startTime", "finishTime",
                          "finishDate", "runTime", "trainTime", "step"})


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
    "huge_numbers": _huge_numbers,  # the runs' times and steps, a metric: 401-digit integers
    "escaped_keys": _escaped_keys,  # names holding the account's keys as JSON \u escapes
    "escaped_error": _escaped_error,  # an error message quoting the keys, \u-escaped
    "endless_listing": EndlessListing(100),  # every page says there is another
    "endless_wide_listing": EndlessListing(20_000),  # the same, 20,000 items a page
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
