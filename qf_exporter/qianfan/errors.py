"""A small typed error hierarchy: every failure to read Qianfan has one ``reason``.

The reasons are the values of the ``reason`` label of
``qianfan_api_request_failures_total``. Messages never carry credentials: they are
built from status codes and the API's own error codes and texts only.
"""

from __future__ import annotations

REASONS = (
    "rate_limited",
    "auth",
    "server",
    "client",
    "timeout",
    "connection",
    "invalid_response",
)


class QianfanError(Exception):
    """A request to Qianfan failed. Subclasses fix ``reason`` and ``retryable``."""

    reason = "server"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        bits = [self.message]
        if self.status is not None:
            bits.append(f"http={self.status}")
        if self.code:
            bits.append(f"code={self.code}")
        if self.request_id:
            bits.append(f"request_id={self.request_id}")
        return " ".join(bits)


class RateLimited(QianfanError):
    reason = "rate_limited"
    retryable = True


class AuthError(QianfanError):
    reason = "auth"


class ServerError(QianfanError):
    reason = "server"
    retryable = True


class ClientError(QianfanError):
    """The request was refused as bad (500001, other 4xx). Retrying will not help."""

    reason = "client"


class NotFound(ClientError):
    """An unknown run or job (510202, 510301)."""


class Timeout(QianfanError):
    reason = "timeout"
    retryable = True


class ConnectionFailed(QianfanError):
    reason = "connection"
    retryable = True


class InvalidResponse(QianfanError):
    """The answer could not be understood (not JSON, or not of the expected shape)."""

    reason = "invalid_response"
    retryable = True


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
# * 500001 ("param invalid"): the V1 jobDetail reference page (seed 000), 错误码.
# * 510202 (task not exist), 510301 (job not exist): Qianfan's error code page, as
#   gathered in SPEC §1.
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
