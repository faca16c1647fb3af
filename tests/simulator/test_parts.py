"""The simulator's parts without a socket: the gateway, the actions and the fault table.

The whole simulator is exercised over HTTP by most other tests; these pin what each
part decides on its own, so a change to one part shows here first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from qf_exporter.qianfan.signing import bce_timestamp, sign
from qf_exporter.simulator.actions import (
    ACTIONS,
    Ask,
    Failure,
    Result,
    describe_jobs,
    describe_task,
    describe_tasks,
    job_detail,
    route,
    target,
)
from qf_exporter.simulator.faults import FAULT_KINDS, KINDS, After, Call, ErrorCode, Fault
from qf_exporter.simulator.gateway import Budget, Denied, Signed, authenticate
from qf_exporter.simulator.scenario import World

AK, SK = "AKparts", "SKparts"
NOW = 1_735_689_600.0
PATH = "/v2/finetuning"
QUERY = [("Action", "DescribeFineTuningJobs")]


# --- the gateway --------------------------------------------------------------------------


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


# --- the actions --------------------------------------------------------------------------


@pytest.fixture
def world() -> World:
    world = World(lambda: NOW)
    world.add_job("job-a", created=NOW - 100)
    for k in range(5):
        world.add_run("job-a", f"task-a-{k}", created=NOW - 50 + k, wait=0, duration=1000)
    world.add_run("job-a", "task-later", created=NOW + 10)
    world.add_v1_run(7, 8, created=NOW - 10, wait=0, duration=100)
    return world


def test_a_task_page_names_the_next_marker_only_when_truncated(world: World) -> None:
    first = describe_tasks(world, Ask({"jobId": "job-a", "maxKeys": 2}, NOW))
    assert isinstance(first, Result)
    page: Any = first.value
    assert [t["taskId"] for t in page["taskList"]] == ["task-a-0", "task-a-1"]
    assert page["pageInfo"] == {"marker": "", "maxKeys": 2, "isTruncated": True,
                                "nextMarker": "task-a-2"}
    last = describe_tasks(world, Ask({"jobId": "job-a", "maxKeys": 2, "marker": "task-a-4"},
                                     NOW))
    assert isinstance(last, Result)
    last_page: Any = last.value
    assert [t["taskId"] for t in last_page["taskList"]] == ["task-a-4"]
    assert last_page["pageInfo"] == {"marker": "task-a-4", "maxKeys": 2, "isTruncated": False}
    assert all("runProgress" not in t for t in page["taskList"])  # only the detail has it


@pytest.mark.parametrize(("action", "body", "failure"), [
    (describe_tasks, {"jobId": "job-a", "maxKeys": 0},
     Failure(400, "InvalidParameter", 500001, "maxKeys must be a positive integer")),
    (describe_tasks, {"jobId": "job-a", "marker": "task-nope"},
     Failure(400, "InvalidParameter", 500001, "marker not found")),
    (describe_tasks, {"jobId": 1}, Failure(400, "InvalidParameter", 500001,
                                           "jobId must be a string")),
    (describe_tasks, {"jobId": "job-nope"}, Failure(400, "510301", 510301, "job not exist")),
    (describe_jobs, {"marker": 3}, Failure(400, "InvalidParameter", 500001,
                                           "marker must be a string")),
    (describe_task, {"taskId": "task-later"}, Failure(400, "510202", 510202,
                                                      "task not exist")),
    (job_detail, {"taskId": "7", "jobId": 8}, Failure(400, "", 500001, "param invalid")),
    (job_detail, {"taskId": 9, "jobId": 8}, Failure(400, "", 510202, "task not exist")),
    (job_detail, {"taskId": 7, "jobId": 9}, Failure(400, "", 510301, "job not exist")),
])
def test_actions_refuse_what_the_reference_refuses(world: World, action: Any,
                                                   body: dict[str, Any],
                                                   failure: Failure) -> None:
    assert action(world, Ask(body, NOW)) == failure


def test_odd_fields_mistype_the_runs_but_keep_their_ids(world: World) -> None:
    answer = describe_task(world, Ask({"taskId": "task-a-1"}, NOW, odd=True))
    assert isinstance(answer, Result)
    item: Any = answer.value
    assert item["taskId"] == "task-a-1" and item["runStatus"] == {"value": "Running"}


def test_routes_and_targets() -> None:
    assert route("/wenxinworkshop/finetune/jobDetail", "anything") == "jobDetail"
    assert route(PATH, "DescribeFineTuningTask") == "DescribeFineTuningTask"
    assert route(PATH, "jobDetail") is None
    assert route("/v2/other", "DescribeFineTuningJobs") is None
    assert set(ACTIONS) == {"jobDetail", "DescribeFineTuningTasks", "DescribeFineTuningJobs",
                            "DescribeFineTuningTask"}
    assert target("jobDetail", {"taskId": 7, "jobId": 8}) == "7/8"
    assert target("DescribeFineTuningTasks", {"jobId": "job-a"}) == "job-a"


# --- the fault table ----------------------------------------------------------------------


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
