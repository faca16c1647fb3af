"""bce-auth-v1 request signing (Baidu Cloud IAM AK/SK), as a pure function.

Everything the signature depends on is an argument: the request's method, path,
query and headers, the keys, and the signing time. Nothing here reads a clock or
the network, so the known answers in the tests pin it down exactly.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

# RFC 3986 unreserved characters stay; everything else is %XX in upper case.
_UNRESERVED = "-._~"


def encode(value: str, keep_slash: bool = False) -> str:
    """RFC 3986 percent-encoding as bce-auth-v1 wants it (``:`` becomes ``%3A``)."""
    return quote(value, safe=_UNRESERVED + ("/" if keep_slash else ""))


def bce_timestamp(epoch_seconds: float) -> str:
    """The signing time in the form the gateway expects: ``2014-06-13T05:57:36Z``."""
    return datetime.fromtimestamp(int(epoch_seconds), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_query(query: Iterable[tuple[str, str | None]]) -> str:
    """``enc(k)=enc(v)`` pairs, sorted, ``&``-joined; a pair without a value is ``k=``."""
    pairs = [
        f"{encode(k)}={encode(v or '')}" for k, v in query if k.lower() != "authorization"
    ]
    return "&".join(sorted(pairs))


def canonical_headers(headers: Mapping[str, str], signed: Iterable[str]) -> str:
    """The signed headers as ``enc(lowercase name):enc(trimmed value)``, sorted."""
    wanted = {name.lower() for name in signed}
    lines = []
    for name, value in headers.items():
        lower = name.strip().lower()
        trimmed = str(value).strip()
        # Baidu's own signer leaves out headers whose value is empty.
        if lower in wanted and trimmed:
            lines.append(f"{encode(lower)}:{encode(trimmed)}")
    return "\n".join(sorted(lines))


@dataclass(frozen=True)
class SignedParts:
    """The pieces of one signature; ``authorization`` is the header value."""

    authorization: str
    canonical_request: str


def sign(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str | None]],
    headers: Mapping[str, str],
    access_key: str,
    secret_key: str,
    timestamp: float,
    expiration: int = 1800,
    signed_headers: Iterable[str] = ("host", "x-bce-date"),
) -> SignedParts:
    """Compute the ``Authorization`` header for one request.

    ``headers`` must already hold every header named in ``signed_headers`` with the
    exact value that goes on the wire (``x-bce-date`` equal to ``bce_timestamp``).
    """
    signed = sorted({h.lower() for h in signed_headers})
    auth_prefix = f"bce-auth-v1/{access_key}/{bce_timestamp(timestamp)}/{expiration}"
    signing_key = hmac.new(
        secret_key.encode(), auth_prefix.encode(), hashlib.sha256
    ).hexdigest()
    canonical_request = "\n".join(
        [
            method.upper(),
            encode(path, keep_slash=True),
            canonical_query(query),
            canonical_headers(headers, signed),
        ]
    )
    signature = hmac.new(
        signing_key.encode(), canonical_request.encode(), hashlib.sha256
    ).hexdigest()
    return SignedParts(
        authorization=f"{auth_prefix}/{';'.join(signed)}/{signature}",
        canonical_request=canonical_request,
    )


@dataclass(frozen=True)
class AuthHeader:
    """A parsed ``Authorization`` header (what a gateway checks)."""

    access_key: str
    timestamp: str
    expiration: int
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> AuthHeader | None:
    """Split a bce-auth-v1 header into its parts; ``None`` when it is not one."""
    parts = value.split("/")
    if len(parts) != 6 or parts[0] != "bce-auth-v1":
        return None
    try:
        expiration = int(parts[3])
    except ValueError:
        return None
    signed = tuple(h for h in parts[4].split(";") if h)
    return AuthHeader(parts[1], parts[2], expiration, signed, parts[5])
