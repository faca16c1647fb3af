"""The fault table without a socket: every kind answers (or hands back to the normal
answer) through a recorded reply, and error codes are typed values."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from qf_exporter.simulator.faults import FAULT_KINDS, KINDS, After, Call, ErrorCode, Fault

AK = "AKparts"


class Recorded:
    """A ``faults.Reply`` that keeps what a fault wrote."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def answer_json(self, status: int, data: Any,
                    headers: Mapping[str, str] | None = None) -> int:
        self.sent.append(("json", (status, json.loads(json.dumps(data)), dict(headers or {}))))
        return status

    def answer_raw(self, status: int, body: bytes,
                   headers: Mapping[str, str] | None = None) -> int:
        self.sent.append(("raw", (status, len(body), dict(headers or {}))))
        return status

    def answer_error(self, v1: bool, status: int, code: str, number: int, message: str) -> int:
        self.sent.append(("error", (v1, status, code, number, message[:20])))
        return status

    def refuse(self, code: str, message: str) -> None:
        self.sent.append(("refuse", (code, message)))

    def begin(self, status: int, headers: Mapping[str, str]) -> None:
        self.sent.append(("begin", (status, dict(headers))))

    def write(self, chunk: bytes) -> None:
        self.sent.append(("write", len(chunk)))

    def drop(self) -> None:
        self.sent.append(("drop", None))


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
def test_every_fault_kind_answers_without_a_socket(kind: str) -> None:
    fault = Fault(kind)
    fault.released.set()  # slow kinds (delay, stall, drip, endless body) end at once
    reply = Recorded()
    after = fault.answer(reply, Call("DescribeFineTuningTasks", AK))
    follows = {"delay": After.ANSWER, "odd_fields": After.ODD_ANSWER,
               "huge_numbers": After.HUGE_NUMBERS}
    assert after is follows.get(kind, After.NOTHING)
    assert bool(reply.sent) == (after is After.NOTHING)  # an answer, or the normal one


def test_error_codes_are_typed_values_in_the_table() -> None:
    assert KINDS["code_336501"] == ErrorCode(336501, 429, "RequestLimitExceeded")
    assert KINDS["code_14"] == ErrorCode(14, 400, "AccessDenied")
    reply = Recorded()
    KINDS["code_500001"](reply, Fault("code_500001"), Call("jobDetail", AK))
    assert reply.sent == [("error", (True, 400, "InvalidParameter", 500001,
                                     "simulated error 5000"))]
