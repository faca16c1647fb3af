"""The simulated actions without a socket: pages and markers, what the reference refuses,
odd fields, and which route and target a request has."""

from __future__ import annotations

from typing import Any

import pytest

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
from qf_exporter.simulator.scenario import World

NOW = 1_735_689_600.0
PATH = "/v2/finetuning"


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
