"""The simulated Qianfan's gateway: bce-auth-v1 signature checks and a per-key budget.

Both are free of HTTP. ``authenticate`` takes what a request carries and returns its
access key, or why the real gateway would refuse it (a 403 with an empty body and
``X-Bce-Error-Code``); ``Budget`` counts each access key's arrivals over trailing
one-second windows.
"""

from __future__ import annotations

import bisect
import calendar
import hmac
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from qf_exporter.qianfan.signing import AuthHeader, parse_authorization, sign

# How far a request's x-bce-date may be in the future before the gateway refuses it.
CLOCK_SKEW = 900


@dataclass(frozen=True)
class Denied:
    """Why the gateway refuses a request: ``X-Bce-Error-Code`` and its message."""

    code: str
    message: str


@dataclass(frozen=True)
class Signed:
    """What a request carries that its signature covers."""

    method: str
    path: str  # unquoted
    query: list[tuple[str, str]]
    headers: Mapping[str, str]  # by lower-case name; a missing header reads as ""


def authenticate(request: Signed, credentials: Mapping[str, str], now: float) -> str | Denied:
    """The request's access key if its signature holds at wall time ``now``."""
    auth = parse_authorization(request.headers.get("authorization", ""))
    if auth is None:
        return Denied("InvalidHTTPAuthHeader", "the Authorization header is invalid")
    secret = credentials.get(auth.access_key)
    if secret is None:
        return Denied("IamAccessKeyNotExist", "the access key does not exist")
    try:
        signed_at = calendar.timegm(time.strptime(auth.timestamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return Denied("InvalidHTTPAuthHeader", "the timestamp is invalid")
    if now > signed_at + auth.expiration or signed_at > now + CLOCK_SKEW:
        return Denied("RequestExpired", "the request has expired")
    if not {"host", "x-bce-date"} <= set(auth.signed_headers):
        return Denied("IamSignatureInvalid", "host and x-bce-date must be signed")
    if request.headers.get("x-bce-date", "") != auth.timestamp:
        return Denied("IamSignatureInvalid", "x-bce-date does not match the signature")
    if not _signature_holds(request, auth, secret, signed_at):
        return Denied("IamSignatureInvalid", "the signature does not match")
    return auth.access_key


def _signature_holds(request: Signed, auth: AuthHeader, secret: str, signed_at: int) -> bool:
    expected = sign(
        method=request.method,
        path=request.path,
        query=request.query,
        headers={name: request.headers.get(name, "") for name in auth.signed_headers},
        access_key=auth.access_key,
        secret_key=secret,
        timestamp=signed_at,
        expiration=auth.expiration,
        signed_headers=auth.signed_headers,
    )
    # The signature decides, not the order of the signed-header list: the official
    # SDK lists them unsorted (request-source;x-bce-date;host;content-type) and the
    # real gateway accepts it; the canonical headers are sorted either way.
    return hmac.compare_digest(expected.authorization.rsplit("/", 1)[-1], auth.signature)


class Budget:
    """Each access key's arrivals, to refuse those beyond ``qps`` in any trailing second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrivals: dict[str, list[float]] = {}

    def over(self, access_key: str, arrived: float, qps: float) -> bool:
        """True when this arrival makes a trailing one-second window exceed ``qps``."""
        with self._lock:
            # Handler threads check in roughly, not exactly, the order of arrival: keep
            # the stamps sorted and count those in (arrived - 1 s, arrived].
            window = self._arrivals.setdefault(access_key, [])
            bisect.insort(window, arrived)
            del window[: bisect.bisect_right(window, window[-1] - 2.0)]
            held = bisect.bisect_right(window, arrived) - bisect.bisect_right(
                window, arrived - 1.0
            )
            return held > qps
