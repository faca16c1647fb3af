"""``BceAuth``: the pure signature, applied to a request as requests prepares it."""

from __future__ import annotations

import requests

from qf_exporter.qianfan.auth import BceAuth
from qf_exporter.qianfan.signing import bce_timestamp, sign


def test_signs_what_goes_on_the_wire_at_the_time_it_is_prepared() -> None:
    now = [1_700_000_000.0]
    auth = BceAuth("ak", "sk", lambda: now[0])
    request = requests.Request(
        "POST", "https://qianfan.example/v2/finetuning?Action=DescribeFineTuningTasks",
        headers={"Host": "qianfan.example"}, data=b"{}", auth=auth,
    )
    now[0] += 2000  # signed when prepared, not when built
    prepared = request.prepare()
    assert prepared.headers["x-bce-date"] == bce_timestamp(1_700_002_000.0)
    expected = sign(method="POST", path="/v2/finetuning",
                    query=[("Action", "DescribeFineTuningTasks")],
                    headers={"host": "qianfan.example", "x-bce-date": bce_timestamp(now[0])},
                    access_key="ak", secret_key="sk", timestamp=now[0])
    assert prepared.headers["Authorization"] == expected.authorization
    assert "sk" not in repr(auth)
