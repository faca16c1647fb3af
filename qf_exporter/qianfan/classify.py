"""What one Qianfan answer means: its ``result``, or the typed error it is.

``classify`` is a pure function of the answer (status, headers, body) and what the
caller knows (the action's name, the credentials to scrub, the time for an HTTP-date
``Retry-After``): no socket, no clock, so every answer shape is a row of a table test.
Both error shapes are read here: the gateway's (HTTP status, ``X-Bce-Error-*`` headers,
``code``/``message``) and the API's (HTTP 200 with ``error_code``/``error_msg``).
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterable, Mapping
from typing import Any

from qf_exporter.config.file import redact
from qf_exporter.qianfan import errors, upstream
from qf_exporter.qianfan.errors import InvalidResponse, QianfanError

MAX_CODE = 100  # error codes and request ids are short; an odd upstream's are cut
MAX_RETRY_AFTER = 300.0


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
    body = upstream.scrub_bytes(body if isinstance(body, bytearray) else bytearray(body),
                                secrets)
    data: Any = None
    try:
        data = None if upstream.is_blank(body) else upstream.parse_json(
            body, upstream.scrubber(secrets))
    except ValueError:
        data = None
    request_id = None
    if isinstance(data, dict):
        request_id = _text(data.get("requestId") or data.get("log_id"))[:MAX_CODE]
    if status >= 300 or status < 200:
        return _http_error(status, headers, data, action, secrets, request_id, now)
    if data is None:
        what = "an empty answer" if upstream.is_blank(body) else "an answer that is not JSON"
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
    message = message[: 2 * upstream.MAX_UPSTREAM_MESSAGE]  # (see scrub)
    return errors.from_http(
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
        return errors.from_error_code(code_int, f"{action}: {message}", request_id)
    if "result" not in data:
        if data.get("code"):
            return errors.from_http(
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
    head = text[: 2 * upstream.MAX_UPSTREAM_MESSAGE]
    return upstream.cut_message(upstream.scrubber(secrets).text(redact(head, secrets)))


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
