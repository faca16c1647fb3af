"""The simulated gateway without a socket: bce-auth-v1 checked as the real gateway checks
it, and the per-access-key budget of a trailing second.

The whole simulator is exercised over HTTP by most other tests; these pin what the
gateway decides on its own, so a change to it shows here first.
"""

from __future__ import annotations

import pytest

from qf_exporter.qianfan.signing import bce_timestamp, sign
from qf_exporter.simulator.gateway import Budget, Denied, Signed, authenticate

AK, SK = "AKparts", "SKparts"
NOW = 1_735_689_600.0
PATH = "/v2/finetuning"
QUERY = [("Action", "DescribeFineTuningJobs")]


def signed(*, ts: float = NOW, secret: str = SK, names: tuple[str, ...] = ("host", "x-bce-date"),
           **override: str) -> Signed:
    """A request signed with ``secret`` at ``ts``, then with ``override`` headers set."""
    headers = {"host": "127.0.0.1:1", "x-bce-date": bce_timestamp(ts)}
    headers["authorization"] = sign(method="POST", path=PATH, query=QUERY, headers=headers,
                                    access_key=AK, secret_key=secret, timestamp=ts,
                                    signed_headers=names).authorization
    headers.update({name.replace("_", "-"): value for name, value in override.items()})
    return Signed("POST", PATH, QUERY, headers)


def test_a_good_signature_gives_its_access_key() -> None:
    assert authenticate(signed(), {AK: SK}, NOW) == AK
    # More signed headers than the two required are fine.
    assert authenticate(signed(names=("host", "x-bce-date", "content-type")), {AK: SK},
                        NOW) == AK


@pytest.mark.parametrize(("request_", "now", "code", "message"), [
    (signed(authorization="nope"), NOW, "InvalidHTTPAuthHeader",
     "the Authorization header is invalid"),
    (signed(authorization=f"bce-auth-v1/{AK}/today/1800/host;x-bce-date/x"), NOW,
     "InvalidHTTPAuthHeader", "the timestamp is invalid"),
    (signed(), NOW + 1801, "RequestExpired", "the request has expired"),
    (signed(ts=NOW + 901), NOW, "RequestExpired", "the request has expired"),
    (signed(names=("host",)), NOW, "IamSignatureInvalid",
     "host and x-bce-date must be signed"),
    (signed(x_bce_date=bce_timestamp(NOW + 1)), NOW, "IamSignatureInvalid",
     "x-bce-date does not match the signature"),
    (signed(secret="wrong"), NOW, "IamSignatureInvalid", "the signature does not match"),
], ids=["garbage", "timestamp", "expired", "future", "unsigned-date", "date-mismatch",
        "wrong-secret"])
def test_the_gateway_refuses_as_the_real_one(request_: Signed, now: float, code: str,
                                             message: str) -> None:
    assert authenticate(request_, {AK: SK}, now) == Denied(code, message)


def test_an_unknown_access_key_is_refused() -> None:
    assert authenticate(signed(), {"AKother": SK}, NOW) == Denied(
        "IamAccessKeyNotExist", "the access key does not exist")


def test_the_budget_counts_a_trailing_second_per_access_key() -> None:
    budget = Budget()
    assert [budget.over(AK, t, 2) for t in (10.0, 10.2, 10.4)] == [False, False, True]
    assert budget.over("AKother", 10.5, 2) is False  # its own window
    assert budget.over(AK, 11.3, 2) is False  # 10.0 and 10.2 have left the window
