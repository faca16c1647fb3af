"""Signing as a requests auth: bce-auth-v1 applied to a request just before it goes out.

``BceAuth`` wraps the pure ``signing.sign`` with the account's keys and a clock, so
that the signing time is read when requests prepares the request, that is after the
request has waited for its turn in the budget (a signature made before a long wait
could expire).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from requests import PreparedRequest
from requests.auth import AuthBase

from qf_exporter.qianfan.signing import bce_timestamp, sign

SIGNATURE_EXPIRATION = 1800


class BceAuth(AuthBase):
    """Adds ``x-bce-date`` and the ``Authorization`` it signs to each request."""

    def __init__(self, access_key: str, secret_key: str, clock: Callable[[], float]) -> None:
        self._access_key = access_key
        self._secret_key = secret_key
        self._clock = clock

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        url = urlsplit(request.url or "")
        now = self._clock()
        request.headers["x-bce-date"] = bce_timestamp(now)
        headers = {"Host": request.headers.get("Host") or url.netloc,
                   "x-bce-date": request.headers["x-bce-date"]}
        request.headers["Authorization"] = sign(
            method=request.method or "POST",
            path=url.path,
            query=parse_qsl(url.query, keep_blank_values=True),
            headers=headers,
            access_key=self._access_key,
            secret_key=self._secret_key,
            timestamp=now,
            expiration=SIGNATURE_EXPIRATION,
        ).authorization
        return request

    def __repr__(self) -> str:  # never the keys
        return "BceAuth(<redacted>)"
