"""What one Qianfan answer means: its ``result``, or the typed error it is.

``classify`` is a pure function of the answer (status, headers, body) and what the
caller knows (the action's name, the credentials to scrub, the time for an HTTP-date
``Retry-After``): no socket, no clock, so every answer shape is a row of a table test.
Both error shapes are read here: the gateway's (HTTP status, ``X-Bce-Error-*`` headers,
``code``/``message``) and the API's (HTTP 200 with ``error_code``/``error_msg``); the
code tables (``from_error_code``, ``from_http``) say which error class each one is.

The body is scrubbed of the account's credentials before anything reads it, as bytes
and again once decoded (``util.secrets``), and parsed within bounds: JSON that opens
with more than ``MAX_JSON_DEPTH`` nested arrays or objects, or nests deep enough
anywhere for the parser to raise ``RecursionError``, is an ``InvalidResponse``, never
an unclassified exception. An integer too long for Python's int parser (over 4,300
digits) is kept as its digits (a text, so no number), not a reason to refuse the
answer. Upstream messages are cut to ``MAX_UPSTREAM_MESSAGE`` characters.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from qf_exporter.qianfan.errors import (
    AuthError,
    ClientError,
    InvalidResponse,
    NotFound,
    QianfanError,
    RateLimited,
    ServerError,
)
from qf_exporter.util.secrets import Scrubber, redact, redact_bytes, scrubber

MAX_CODE = 100  # error codes and request ids are short; an odd upstream's are cut
MAX_RETRY_AFTER = 300.0
MAX_JSON_DEPTH = 64  # far deeper than any documented answer (at most 4 levels)
MAX_INT_DIGITS = 4000  # below Python's int parsing limit (4,300 digits)
# Upstream messages put into exceptions (and so into logs and the landing page) are
# cut to this many characters: a 5 MB error message is not logged whole every poll.
MAX_UPSTREAM_MESSAGE = 300


def classify(
    status: int,
    headers: Mapping[str, str],
    body: bytes | bytearray,
    *,
    action: str,
    secrets: Iterable[str] = (),
    now: float,
) -> Any | QianfanError:
    """The answer's ``result``, or the error it is (returned, for the caller to raise)."""
    secrets = tuple(secrets)
    # Upstream text may echo the credentials (a run named after the access key, an
    # error that quotes the request): scrub them before anything reads the answer, as
    # bytes and again once decoded (a JSON escape hides a key from the first).
    body = redact_bytes(body if isinstance(body, bytearray) else bytearray(body), secrets)
    data: Any = None
    try:
        data = None if is_blank(body) else parse_json(body, scrubber(secrets))
    except ValueError:
        data = None
    request_id = None
    if isinstance(data, dict):
        request_id = _text(data.get("requestId") or data.get("log_id"))[:MAX_CODE]
    if status >= 300 or status < 200:
        return _http_error(status, headers, data, action, secrets, request_id, now)
    if data is None:
        what = "an empty answer" if is_blank(body) else "an answer that is not JSON"
        return InvalidResponse(f"{action}: {what}", status=status)
    if not isinstance(data, dict):
        return InvalidResponse(f"{action}: the answer is not a JSON object", status=status)
    return _result(status, data, action, secrets, request_id)


def _http_error(
    status: int, headers: Mapping[str, str], data: Any, action: str,
    secrets: tuple[str, ...], request_id: str | None, now: float,
) -> QianfanError:
    """A gateway error: the status, and the code and message of the body or headers."""
    code = _text(headers.get("X-Bce-Error-Code"))[:MAX_CODE] or None
    message = headers.get("X-Bce-Error-Message", "")
    if isinstance(data, dict):
        code = _text(data.get("code") or data.get("error_code"))[:MAX_CODE] or code
        message = _text(data.get("message") or data.get("error_msg")) or message
    message = message[: 2 * MAX_UPSTREAM_MESSAGE]  # (see scrub)
    return from_http(
        status,
        code,
        scrub(f"{action}: {message}" if message else action, secrets),
        request_id,
        retry_after(headers.get("Retry-After"), now),
    )


def _result(
    status: int, data: dict[str, Any], action: str, secrets: tuple[str, ...],
    request_id: str | None,
) -> Any | QianfanError:
    """A JSON object answered with 2xx: its ``result``, or the API error it carries."""
    code_value = data.get("error_code")
    if code_value not in (None, 0, "0", ""):
        message = scrub(_text(data.get("error_msg")) or "", secrets)
        try:
            code_int = int(code_value)
        except (TypeError, ValueError, OverflowError):
            return InvalidResponse(f"{action}: error_code {scrub(repr(code_value), secrets)}")
        return from_error_code(code_int, f"{action}: {message}", request_id)
    if "result" not in data:
        if data.get("code"):
            return from_http(
                status, _text(data.get("code"))[:MAX_CODE],
                scrub(_text(data.get("message")), secrets),
                request_id,
            )
        return InvalidResponse(f"{action}: the answer has no result", status=status)
    if data["result"] is None:
        return InvalidResponse(f"{action}: result is null", status=status)
    return data["result"]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Upstream messages may echo the access key, or a long piece of it (a header is
    never JSON-decoded); never let one through. They are cut too: a multi-megabyte
    message must not be logged whole on every poll. (Cut twice: a secret across the
    first cut is beyond the second.)"""
    secrets = tuple(secrets)
    head = text[: 2 * MAX_UPSTREAM_MESSAGE]
    return cut_message(scrubber(secrets).text(redact(head, secrets)))


def retry_after(value: str | None, now: float) -> float | None:
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
        seconds = when.timestamp() - now
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


def _text(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)


# --- the answer's JSON -------------------------------------------------------------------


_OPENING = re.compile(rb"[\s\[{]*")


def too_deep(body: bytes | bytearray, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the answer opens with more than ``limit`` nested arrays or objects.

    A cheap look at the start, before the parser, that catches the usual bomb
    (``[[[[...``); anything deeper further in makes the parser raise
    ``RecursionError``, which ``parse_json`` turns into ``ValueError`` as well.
    """
    opening = _OPENING.match(body, 0, 4 * limit)
    run = opening.group() if opening else b""
    return len(run) - len(run.translate(None, b"[{")) > limit


def is_blank(body: bytes | bytearray) -> bool:
    """Empty or only whitespace (without copying a body of many megabytes)."""
    return not body or body.isspace()


def parse_json(body: bytes | bytearray, scrubber: Scrubber | None = None) -> Any:
    """The JSON value of ``body`` (its strings scrubbed by ``scrubber``); ``ValueError``
    when it is not JSON (or too deep)."""
    if too_deep(body):
        raise ValueError("nested too deeply")
    try:
        try:
            data = json.loads(body)
        except ValueError as exc:
            if "integer string conversion" not in str(exc):
                raise
            # Only an answer with such an integer pays for parsing integers in Python.
            data = json.loads(body, parse_int=_integer)
        if scrubber is None or scrubber.clean(body):
            return data
        return scrubber.value(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _integer(digits: str) -> int | str:
    """A JSON integer; past MAX_INT_DIGITS its digits as text (no number reads it)."""
    return int(digits) if len(digits) <= MAX_INT_DIGITS else digits


def cut_message(text: str, limit: int = MAX_UPSTREAM_MESSAGE) -> str:
    """An upstream message short enough for a log line or a page."""
    return text if len(text) <= limit else text[:limit] + "…"


# --- the code tables ---------------------------------------------------------------------


# Qianfan's numeric error codes (V1 ``error_code``; sometimes seen in V2 bodies too),
# in one place, each with where it comes from:
# * 2, 4, 13, 14, 17, 18, 19, 110, 111, 336100, 336501, 500000: the official SDK's
#   ``qianfan.consts.APIErrorCode`` (baidubce/bce-qianfan-sdk, python/qianfan/consts.py):
#   ServiceUnavailable 2, RequestLimitReached 4, GetServiceTokenFailed 13,
#   IAMCertificationFailed 14, DailyLimitReached 17, QPSLimitReached 18,
#   TotalRequestLimitReached 19, APITokenInvalid 110, APITokenExpired 111,
#   ServerHighLoad 336100, RPMLimitReached 336501, ConsoleInternalError 500000. The SDK
#   retries 18, 336100 and 500000 on console calls (``ConsoleRetryErrCodes``) and adds
#   2 and 336501 for its other calls (``RetryErrCodes``); 336501 is a rate limit.
# * 500001 ("param invalid"): the 错误码 section of the V1 jobDetail reference
#   (获取任务运行详情, https://cloud.baidu.com/doc/WENXINWORKSHOP/s/wlmrgowee).
# * 510202 (task not exist), 510301 (job not exist): Qianfan's error code page
#   (错误码说明, https://cloud.baidu.com/doc/WENXINWORKSHOP/s/tlmyncueh).
RATE_LIMIT_CODES = frozenset({4, 17, 18, 19, 336501})
AUTH_CODES = frozenset({13, 14, 110, 111})
SERVER_CODES = frozenset({2, 336100, 500000})
NOT_FOUND_CODES = frozenset({510202, 510301})


def from_error_code(code: int, message: str, request_id: str | None = None) -> QianfanError:
    """Classify a numeric Qianfan error code."""
    kind: type[QianfanError] = ClientError
    if code in RATE_LIMIT_CODES:
        kind = RateLimited
    elif code in AUTH_CODES:
        kind = AuthError
    elif code in SERVER_CODES:
        kind = ServerError
    elif code in NOT_FOUND_CODES:
        kind = NotFound
    return kind(f"Qianfan error {code}: {message}", code=str(code), request_id=request_id)


# V2 and gateway error code names (``code`` in the body, or ``X-Bce-Error-Code``),
# matched lower-cased on parts of the name.
_RATE_LIMIT_WORDS = ("throttl", "ratelimit", "limitexceeded", "toomanyrequests", "qpslimit")
_AUTH_WORDS = ("auth", "accessdenied", "signature", "accesskey", "expired", "forbidden",
               "permission", "unauthorized")
_SERVER_WORDS = ("internalerror", "serviceunavailable", "serverbusy", "internal_error",
                 "backenderror", "gatewaytimeout")
_NOT_FOUND_WORDS = ("notfound", "notexist", "nosuch")


def from_http(
    status: int,
    code: str | None,
    message: str,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> QianfanError:
    """Classify a non-2xx answer from the V2 API or the gateway (or a 2xx with a code).

    A known numeric code decides; otherwise the code's name, then the HTTP status.
    """
    text = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if code and code.isdigit():
        number = int(code)
        known = number in RATE_LIMIT_CODES | AUTH_CODES | SERVER_CODES | NOT_FOUND_CODES
        # An unknown number says nothing more than the status (a 503 stays retryable);
        # under a 2xx or 4xx it is a refused request, as ``from_error_code`` has it.
        if known or (status < 500 and status != 429):
            err = from_error_code(number, message, request_id)
            err.status = status
            err.retry_after = retry_after
            return err
    lowered = (code or "").lower()
    kind: type[QianfanError] = ClientError
    if status == 429 or any(w in lowered for w in _RATE_LIMIT_WORDS):
        kind = RateLimited
    elif (status in (401, 403) or lowered.startswith("iam")
          or any(w in lowered for w in _AUTH_WORDS)):
        kind = AuthError
    elif status >= 500 or any(w in lowered for w in _SERVER_WORDS):
        kind = ServerError
    elif status == 404 or any(w in lowered for w in _NOT_FOUND_WORDS):
        kind = NotFound
    return kind(text, status=status, code=code, request_id=request_id, retry_after=retry_after)
