"""The official ``qianfan`` SDK as a client of the simulated Qianfan.

A client nobody here wrote checks that the simulator speaks the real protocol: the
SDK signs its own way (it lists the signed headers unsorted and signs
``content-type`` and ``request-source`` too), sends its own request bodies, and reads
the answers the way its trainer and CLI do (``int(result["runProgress"][:-1])``).
The SDK is pointed at the simulator with its console base-URL setting,
``QIANFAN_CONSOLE_API_BASE_URL``, and given IAM keys through ``QIANFAN_ACCESS_KEY`` /
``QIANFAN_SECRET_KEY`` (its console calls need no other endpoint: no IAM or token call).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from qf_exporter.simulator import QianfanSimulator, World
from tests.helpers import ACCESS_KEY, SECRET_KEY

qianfan = pytest.importorskip("qianfan", reason="the official SDK is a test dependency")

V2_STATUS = {"waiting": "Waiting", "running": "Running", "succeeded": "Done",
             "failed": "Failed", "stopped": "Stopped"}


@pytest.fixture
def sdk_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[QianfanSimulator]:
    # The SDK signs with the real time, so the simulator lives on it too.
    world = World(time.time)
    now = time.time()
    world.add_job("job-sdk", "sdk job", created=now - 86400)
    world.add_run("job-sdk", "task-running", created=now - 1000, wait=0, duration=4000)
    world.add_run("job-sdk", "task-done", created=now - 9000, wait=0, duration=1000)
    world.add_run("job-sdk", "task-failed", created=now - 8000, wait=0, duration=1000,
                  outcome="failed", end_fraction=0.5, error_code=500001,
                  error_message="bad sample")
    world.add_run("job-sdk", "task-waiting", created=now - 10, wait=3600, duration=1000)
    world.add_job("job-other", "other job", created=now - 3600, date_spelling=True)
    world.add_v1_run(10250, 6205, "sdk_test_7", created=now - 100, wait=0, duration=1000)
    with QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}) as sim:
        monkeypatch.setenv("QIANFAN_CONSOLE_API_BASE_URL", sim.url)
        monkeypatch.setenv("QIANFAN_ACCESS_KEY", ACCESS_KEY)
        monkeypatch.setenv("QIANFAN_SECRET_KEY", SECRET_KEY)
        _reset_sdk_config(monkeypatch)
        yield sim
    _reset_sdk_config(monkeypatch)


def _reset_sdk_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads its environment once into a global config: read it again."""
    import qianfan.config

    monkeypatch.setattr(qianfan.config, "_GLOBAL_CONFIG", None)


def _body(response: Any) -> dict[str, Any]:
    body = response.body
    assert isinstance(body, dict)
    return body


def test_sdk_v1_get_job(sdk_sim: QianfanSimulator) -> None:
    from qianfan.resources import FineTune

    result = _body(FineTune.get_job(10250, 6205))["result"]
    run = sdk_sim.world.v1_runs[(10250, 6205)]
    assert result["taskId"] == 10250 and result["id"] == 6205
    assert result["trainStatus"] == "RUNNING"
    assert abs(result["progress"] - run.progress(time.time())) < 1
    assert sdk_sim.stats.auth_failures == 0


def test_sdk_v2_task_list_and_detail(sdk_sim: QianfanSimulator) -> None:
    from qianfan.resources import FineTune

    world = sdk_sim.world
    listed = _body(FineTune.V2.task_list(job_id="job-sdk", max_keys=100))["result"]
    assert listed["pageInfo"]["isTruncated"] is False
    items = {item["taskId"]: item for item in listed["taskList"]}
    now = time.time()
    job = world.jobs["job-sdk"]
    assert set(items) == {run.task_id for run in job.runs}
    for run in job.runs:
        assert items[run.task_id]["runStatus"] == V2_STATUS[run.status(now)]
        assert "runProgress" not in items[run.task_id]  # the list never has it
    for run in job.runs:
        detail = _body(FineTune.V2.task_detail(task_id=run.task_id))["result"]
        assert detail["runStatus"] == V2_STATUS[run.status(time.time())]
        if detail["runStatus"] == "Running":
            # As the SDK's CLI reads it (qianfan/common/cli/trainer.py).
            progress = int(detail["runProgress"][:-1])
            assert abs(progress - run.progress(time.time())) <= 1
        else:
            assert "runProgress" not in detail
    failed = _body(FineTune.V2.task_detail(task_id="task-failed"))["result"]
    assert failed["errorCode"] == 500001 and failed["errorMessage"] == "bad sample"
    assert sdk_sim.stats.auth_failures == 0


def test_sdk_v2_task_list_pages_with_its_own_marker(sdk_sim: QianfanSimulator) -> None:
    from qianfan.resources import FineTune

    first = _body(FineTune.V2.task_list(job_id="job-sdk", max_keys=3))["result"]
    assert first["pageInfo"]["isTruncated"] is True
    marker = first["pageInfo"]["nextMarker"]
    second = _body(FineTune.V2.task_list(job_id="job-sdk", marker=marker,
                                         max_keys=3))["result"]
    ids = [t["taskId"] for t in first["taskList"] + second["taskList"]]
    assert ids == [run.task_id for run in sdk_sim.world.jobs["job-sdk"].runs]


def test_sdk_v2_job_list(sdk_sim: QianfanSimulator) -> None:
    from qianfan.resources import FineTune

    result = _body(FineTune.V2.job_list())["result"]
    jobs = {job["jobId"]: job for job in result["jobList"]}
    assert set(jobs) == {"job-sdk", "job-other"}
    assert jobs["job-sdk"]["name"] == "sdk job"
    assert jobs["job-other"]["createDate"].endswith("Z")


def test_sdk_errors_come_back_as_the_sdk_expects(sdk_sim: QianfanSimulator) -> None:
    """An unknown run: the SDK raises its own error with Baidu's code, not a parse error."""
    from qianfan.errors import QianfanError
    from qianfan.resources import FineTune

    with pytest.raises(QianfanError) as info:
        FineTune.V2.task_detail(task_id="task-nope")
    assert "510202" in str(info.value)
