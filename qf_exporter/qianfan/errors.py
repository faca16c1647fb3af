"""The typed errors of a request to Qianfan: every failure has one ``reason``.

A small hierarchy, one class per reason (and ``NotFound``, the refused request that
says a run or job is gone); ``REASONS`` are the values of the ``reason`` label of
``qianfan_api_request_failures_total``. Which answer is which error is decided in
``classify``. Messages never carry credentials: they are built from status codes and
the API's own error codes and texts, scrubbed there.
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
