"""Typed errors: which error, and whether it is retried, for an HTTP status and a code."""

from __future__ import annotations

import pytest

from qf_exporter.qianfan import errors


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
    err = errors.from_http(status, code, "message")
    assert type(err) is error and err.retryable is retried

