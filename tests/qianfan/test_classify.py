"""``classify``: what each answer shape means, as a table, without a socket; the typed
error of an HTTP status and a code (``from_http``), and ``Retry-After``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qf_exporter.qianfan import errors
from qf_exporter.qianfan.classify import (
    MAX_UPSTREAM_MESSAGE,
    classify,
    cut_message,
    from_http,
    parse_json,
    retry_after,
)
from tests.checks import assert_no_keys

NOW = 1_700_000_000.0
AK, SK = "AKexample0123", "SKsecret4567"


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


# (status, headers, body) -> the result, or the error's type, reason, code and retry_after.
RESULTS: list[tuple[int, dict[str, str], bytes, Any]] = [
    (200, {}, body({"result": {"a": 1}}), {"a": 1}),
    (200, {}, body({"result": [], "log_id": 7}), []),
    (201, {}, body({"result": 0, "error_code": 0}), 0),
    (200, {}, body({"result": "x", "error_code": "0"}), "x"),
    (200, {}, body({"result": "x", "error_code": ""}), "x"),
]

ERRORS: list[tuple[int, dict[str, str], bytes, type[errors.QianfanError], str | None,
                   float | None]] = [
    # The API's own shape: HTTP 200 with error_code / error_msg.
    (200, {}, body({"error_code": 18, "error_msg": "qps"}), errors.RateLimited, "18", None),
    (200, {}, body({"error_code": 110, "error_msg": "token"}), errors.AuthError, "110", None),
    (200, {}, body({"error_code": 336100, "error_msg": "busy"}), errors.ServerError, "336100",
     None),
    (200, {}, body({"error_code": 510301, "error_msg": "gone"}), errors.NotFound, "510301", None),
    (200, {}, body({"error_code": 7, "error_msg": "no"}), errors.ClientError, "7", None),
    (200, {}, body({"error_code": "x7"}), errors.InvalidResponse, None, None),
    # The gateway's shape: a status, with the code in the body or the headers.
    (429, {"Retry-After": "3"}, b"", errors.RateLimited, None, 3.0),
    (429, {"Retry-After": "Tue, 14 Nov 2023 22:13:50 GMT"}, b"", errors.RateLimited, None,
     30.0),
    (403, {}, body({"code": "AccessDenied", "message": "no"}), errors.AuthError, "AccessDenied",
     None),
    (500, {"X-Bce-Error-Code": "InternalError"}, b"", errors.ServerError, "InternalError", None),
    (503, {}, b"<html>busy</html>", errors.ServerError, None, None),
    (400, {}, body({"code": "InvalidParameter", "message": "bad"}), errors.ClientError,
     "InvalidParameter", None),
    # A 2xx with the gateway's shape is refused like a 4xx.
    (200, {}, body({"code": "AccessDenied", "message": "no"}), errors.AuthError, "AccessDenied",
     None),
    # Answers that are no answer.
    (200, {}, b"", errors.InvalidResponse, None, None),
    (200, {}, b"  \n", errors.InvalidResponse, None, None),
    (200, {}, b"<html>", errors.InvalidResponse, None, None),
    (200, {}, body([1, 2]), errors.InvalidResponse, None, None),
    (200, {}, body({"other": 1}), errors.InvalidResponse, None, None),
    (200, {}, body({"result": None}), errors.InvalidResponse, None, None),
]


@pytest.mark.parametrize(("status", "headers", "answer", "expected"), RESULTS)
def test_a_good_answer_is_its_result(status: int, headers: dict[str, str], answer: bytes,
                                     expected: Any) -> None:
    assert classify(status, headers, answer, action="A", now=NOW) == expected


@pytest.mark.parametrize(("status", "headers", "answer", "kind", "code", "retry_after"), ERRORS)
def test_a_failed_answer_is_its_typed_error(
    status: int, headers: dict[str, str], answer: bytes, kind: type[errors.QianfanError],
    code: str | None, retry_after: float | None,
) -> None:
    error = classify(status, headers, answer, action="A", now=NOW)
    assert type(error) is kind
    assert isinstance(error, errors.QianfanError)
    assert error.code == code
    assert error.retry_after == retry_after
    assert str(error).startswith(("A", "HTTP", "Qianfan error")), str(error)


def test_the_request_id_is_kept_and_cut() -> None:
    error = classify(200, {}, body({"error_code": 7, "log_id": "r" * 500}), action="A", now=NOW)
    assert isinstance(error, errors.ClientError)
    assert error.request_id == "r" * 100


@pytest.mark.parametrize("answer", [
    body({"error_code": 7, "error_msg": f"bad key {AK}"}),
    body({"code": "AccessDenied", "message": f"{AK}:{SK} refused"}),
])
def test_credentials_never_come_back(answer: bytes) -> None:
    for status in (200, 403):
        error = classify(status, {}, answer, action="A", secrets=(AK, SK), now=NOW)
        assert isinstance(error, errors.QianfanError)
        assert_no_keys(str(error), keys=(AK, SK))
        assert "<redacted>" in str(error)


def test_a_secret_in_a_result_is_scrubbed_before_it_is_read() -> None:
    result = classify(200, {}, body({"result": {"taskName": f"run-{AK}"}}), action="A",
                      secrets=(AK, SK), now=NOW)
    assert result == {"taskName": "run-<redacted>"}


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,  # not caught by the look at the start
    b" \n[" + b"[" * 70 + b"]" * 71,
])
def test_pathological_nesting_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(body)


def test_ordinary_nesting_parses() -> None:
    assert parse_json(b'{"result": {"taskList": [{"metrics": {"a": [1]}}]}}')
    assert parse_json(b"[" * 60 + b"]" * 60)


def test_messages_are_cut() -> None:
    assert cut_message("x" * 1000) == "x" * MAX_UPSTREAM_MESSAGE + "…"
    assert cut_message("short") == "short"


def test_retry_after_as_an_http_date() -> None:
    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    assert retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now) == 30.0
    assert retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now) == 0.0  # in the past
    assert retry_after("12", now) == 12.0
    assert retry_after("100000", now) == 300.0  # capped
    assert retry_after("soon", now) is None
    assert retry_after("nan", now) is None


@pytest.mark.parametrize(
    ("status", "code", "error", "retried"),
    [
        (503, "336999", errors.ServerError, True),  # an unknown code under a 5xx
        (429, "99", errors.RateLimited, True),
        (400, "99", errors.ClientError, False),
        (200, "18", errors.RateLimited, True),
        (500, "14", errors.AuthError, False),  # a known code decides
        (200, "InternalError", errors.ServerError, True),
        (403, "RequestExpired", errors.AuthError, False),
        (400, "IamAccessKeyNotExist", errors.AuthError, False),
        (400, "InappropriateJSON", errors.ClientError, False),
        (404, "ResourceNotFound", errors.NotFound, False),
        (400, "ThrottlingException", errors.RateLimited, True),
    ],
)
def test_error_classification(status: int, code: str, error: type[errors.QianfanError],
                              retried: bool) -> None:
    err = from_http(status, code, "message")
    assert type(err) is error and err.retryable is retried
