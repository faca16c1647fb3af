"""bce-auth-v1: the worked example of Baidu's 生成认证字符串 page
(https://cloud.baidu.com/doc/Reference/s/njwvz1yfu), fixed answers for Qianfan's calls, and
agreement with Baidu's own signer."""

from __future__ import annotations

import random
import string

import pytest

from qf_exporter.qianfan.signing import (
    bce_timestamp,
    canonical_query,
    encode,
    parse_authorization,
    sign,
)


def test_known_answer_bos_put() -> None:
    parts = sign(
        method="PUT",
        path="/v1/bucket/object1",
        query=[("A", None), ("b", ""), ("C", "d")],
        headers={"Host": "bce.baidu.com", "abc": "123", "x-bce-meta-key1": "ABC"},
        access_key="my_ak",
        secret_key="my_sk",
        timestamp=1402639056,
        expiration=1800,
        signed_headers=["host", "x-bce-meta-key1"],
    )
    assert parts.authorization == (
        "bce-auth-v1/my_ak/2014-06-13T05:57:36Z/1800/host;x-bce-meta-key1/"
        "80c9672aca2ea9af4bb40b9a8ff458d72df94e97d550840727f3a929af271d25"
    )


def test_known_answer_finetuning_v2() -> None:
    parts = sign(
        method="POST",
        path="/v2/finetuning",
        query=[("Action", "DescribeFineTuningTasks")],
        headers={"Host": "qianfan.baidubce.com", "x-bce-date": "2014-06-13T05:57:36Z"},
        access_key="my_ak",
        secret_key="my_sk",
        timestamp=1402639056,
    )
    assert parts.authorization.endswith(
        "/host;x-bce-date/1ce094f37bab400dc2da705e9deb54f8a192fe909e88ea9168b0169b4c3b6879"
    )
    assert parts.canonical_request == (
        "POST\n/v2/finetuning\nAction=DescribeFineTuningTasks\n"
        "host:qianfan.baidubce.com\nx-bce-date:2014-06-13T05%3A57%3A36Z"
    )


def test_v1_call_has_empty_query_line() -> None:
    parts = sign(
        method="POST",
        path="/wenxinworkshop/finetune/jobDetail",
        query=[],
        headers={"Host": "qianfan.baidubce.com", "x-bce-date": "2014-06-13T05:57:36Z"},
        access_key="my_ak",
        secret_key="my_sk",
        timestamp=1402639056,
    )
    assert parts.canonical_request.split("\n")[2] == ""


def test_encoding_is_rfc3986_upper_case() -> None:
    assert encode("a b:c/d~e-f_g.h") == "a%20b%3Ac%2Fd~e-f_g.h"
    assert encode("中") == "%E4%B8%AD"
    assert canonical_query([("b", "2"), ("a", "x y"), ("A", None)]) == "A=&a=x%20y&b=2"


def test_timestamp_format() -> None:
    assert bce_timestamp(1402639056.9) == "2014-06-13T05:57:36Z"


def test_parse_authorization_round_trip() -> None:
    parts = sign(method="POST", path="/", query=[], headers={"host": "h", "x-bce-date": "d"},
                 access_key="ak", secret_key="sk", timestamp=0)
    auth = parse_authorization(parts.authorization)
    assert auth is not None
    assert (auth.access_key, auth.expiration, auth.signed_headers) == (
        "ak", 1800, ("host", "x-bce-date"))
    assert parse_authorization("Bearer x") is None
    assert parse_authorization("bce-auth-v1/a/b/notanumber/host/sig") is None


# --- against Baidu's own signer (bce-python-sdk) ---------------------------------------

_ODD = string.ascii_letters + string.digits + " -._~!*'();:@&=+$,/?#[]%中文é\"\\"


def _random_text(rng: random.Random, low: int = 0, high: int = 12) -> str:
    return "".join(rng.choice(_ODD) for _ in range(rng.randint(low, high)))


def test_matches_baidu_sdk_signer_on_generated_requests() -> None:
    bce_signer = pytest.importorskip("baidubce.auth.bce_v1_signer")
    from baidubce.auth.bce_credentials import BceCredentials

    rng = random.Random(20240916)
    for case in range(400):
        ak = "ak" + _random_text(rng, 1, 8).replace("/", "")
        sk = _random_text(rng, 1, 20)
        ts = rng.randint(1_000_000_000, 2_000_000_000)
        expiration = rng.choice([60, 1800, 3600])
        method = rng.choice(["GET", "POST", "PUT", "DELETE"])
        path = "/" + "/".join(
            "".join(rng.choice(string.ascii_letters + string.digits + "-_.~") for _ in range(5))
            for _ in range(rng.randint(1, 3))
        )
        query = {}
        for _ in range(rng.randint(0, 5)):
            query[_random_text(rng, 1, 6)] = rng.choice([None, "", _random_text(rng)])
        headers = {"host": "qianfan.baidubce.com", "x-bce-date": bce_timestamp(ts)}
        for _ in range(rng.randint(0, 6)):
            name = "x-bce-" + "".join(rng.choice(string.ascii_lowercase) for _ in range(6))
            headers[name] = _random_text(rng, 1, 15).strip() or "v"
        signed = sorted(headers)  # Baidu signs every x-bce-* header; so do we, here
        ours = sign(method=method, path=path, query=list(query.items()), headers=headers,
                    access_key=ak, secret_key=sk, timestamp=ts, expiration=expiration,
                    signed_headers=signed)
        theirs = bce_signer.sign(
            BceCredentials(ak, sk),
            method.encode(),
            path.encode(),
            {k.encode(): v.encode() for k, v in headers.items()},
            {k.encode(): (v.encode() if v is not None else None) for k, v in query.items()},
            timestamp=ts,
            expiration_in_seconds=expiration,
            headers_to_sign=[h.encode() for h in signed],
        )
        assert ours.authorization == theirs.decode(), f"case {case}: {method} {path} {query}"
