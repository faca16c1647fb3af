"""The simulated Qianfan's four actions, one function each, free of HTTP.

Each takes the world and a decoded request (``Ask``) and returns the ``result`` to
send or the error the real API would answer (``Failure``); the HTTP handler only
wraps either in the API's envelope. Which answer carries what follows Baidu's
reference pages (cited by title and address, all under
https://cloud.baidu.com/doc/WENXINWORKSHOP/s/; the simulator must never be more lenient
than they are):

* ``DescribeFineTuningTasks`` (获取模型精调任务列表, .../klt73okdd): ``result.taskList`` items
  with taskId, jobId, jobName, jobDescription, model, trainMode, parameterScale,
  runStatus, metrics (only when Done), checkpointList, createTime, finishTime,
  errorMessage, errorCode; and ``result.pageInfo`` {marker, maxKeys, isTruncated,
  nextMarker (only when isTruncated)}. The items carry **no runProgress and no
  vdlLink**: that page's taskList table lists neither.
* ``DescribeFineTuningTask`` (获取模型精调任务详情, .../4lt73p0ia): ``result`` with the
  fields above plus ``runProgress`` ("51%"; "只有任务运行状态运行中,才会返回此参数", i.e.
  only while runStatus is Running) and ``vdlLink``. The SDK's own mock server
  (baidubce/bce-qianfan-sdk, python/qianfan/tests/utils/mock_server.py,
  ``finetune_v2_task_detail``) answers the same way, and its trainer and CLI read
  progress only from this call.
* ``DescribeFineTuningJobs`` (获取模型精调作业列表, .../zlt73o1hv): ``result.jobList``
  items {jobId, name, description, model, trainMode, createDate} and
  ``result.pageInfo``.
* V1 ``jobDetail`` (获取任务运行详情, .../wlmrgowee): ``result`` {id, description, taskId,
  taskName, version, jobRunType, trainType, trainMode, peftType, trainStatus, progress
  (0..100), runTime, trainTime, startTime, finishTime, vdlLink}; errors as HTTP 200
  with {error_code, error_msg}.
* Some jobs spell the times createDate/finishDate, as the SDK's mock server does
  (``SimJob.date_spelling``); unset times are the "0000-00-00..." sentinels.
* Request bodies are checked as the reference types them: V2 ids are strings
  (``taskId``, ``jobId``), V1 ids are integers, ``maxKeys`` a positive integer (at most
  100 are returned), ``marker`` a string; anything else is refused with 400.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qf_exporter.simulator.scenario import World

V1_PATH = "/wenxinworkshop/finetune/jobDetail"
V2_PATH = "/v2/finetuning"
V1_ACTION = "jobDetail"

Item = dict[str, object]


@dataclass(frozen=True)
class Ask:
    """One request to an action, its body decoded."""

    body: dict[str, Any]
    now: float  # the world's clock when the request is answered
    odd: bool = False  # "odd_fields": the runs' fields come with the wrong types
    next_marker: bool = True  # a truncated page names its nextMarker (or leaves it out)


@dataclass(frozen=True)
class Result:
    """A successful answer's ``result``."""

    value: object


@dataclass(frozen=True)
class Failure:
    """An error answer. V2 sends ``status`` with {code, message}; V1 sends HTTP 200
    with {error_code: number, error_msg: message}."""

    status: int
    code: str
    number: int
    message: str


Answer = Result | Failure
Action = Callable[[World, Ask], Answer]


def _invalid(message: str) -> Failure:
    return Failure(400, "InvalidParameter", 500001, message)


def job_detail(world: World, ask: Ask) -> Answer:
    """V1 ``jobDetail``: one run, named by its integer task and job ids."""
    task_id, job_id = ask.body.get("taskId"), ask.body.get("jobId")
    if not isinstance(task_id, int) or not isinstance(job_id, int):
        return Failure(400, "", 500001, "param invalid")
    if not world.knows_v1_task(task_id):
        return Failure(400, "", 510202, "task not exist")
    detail = world.v1_detail(task_id, job_id, ask.now)
    if detail is None:
        return Failure(400, "", 510301, "job not exist")
    return Result(_odd(detail) if ask.odd else detail)


def describe_task(world: World, ask: Ask) -> Answer:
    """V2 ``DescribeFineTuningTask``: one run's detail, the only answer with progress."""
    task_id = ask.body.get("taskId")
    if not isinstance(task_id, str) or not task_id:
        return _invalid("taskId must be a string")
    item = world.task_detail(task_id, ask.now)
    if item is None:
        return Failure(400, "510202", 510202, "task not exist")
    return Result(_odd(item) if ask.odd else item)


def describe_tasks(world: World, ask: Ask) -> Answer:
    """V2 ``DescribeFineTuningTasks``: a page of one job's runs."""
    keys, problem = _page_args(ask.body)
    if problem:
        return _invalid(problem)
    job_id = ask.body.get("jobId")
    if not isinstance(job_id, str) or not job_id:
        return _invalid("jobId must be a string")
    items = world.task_list(job_id, ask.now)
    if items is None:
        return Failure(400, "510301", 510301, "job not exist")
    if ask.odd:
        items = [_odd(item) for item in items]
    return _page(items, "taskId", "taskList", keys, ask)


def describe_jobs(world: World, ask: Ask) -> Answer:
    """V2 ``DescribeFineTuningJobs``: a page of the account's jobs."""
    keys, problem = _page_args(ask.body)
    if problem:
        return _invalid(problem)
    return _page(world.job_list(ask.now), "jobId", "jobList", keys, ask)


ACTIONS: dict[str, Action] = {
    V1_ACTION: job_detail,
    "DescribeFineTuningTasks": describe_tasks,
    "DescribeFineTuningJobs": describe_jobs,
    "DescribeFineTuningTask": describe_task,
}


def route(path: str, action: str) -> str | None:
    """The action a request's path and ``Action`` query name; None when none."""
    if path == V1_PATH:
        return V1_ACTION
    if path == V2_PATH and action in ACTIONS and action != V1_ACTION:
        return action
    return None


def target(action: str, body: dict[str, Any]) -> str:
    """What a request reads, as faults and the request log name it."""
    if action == V1_ACTION:
        return f"{body.get('taskId')}/{body.get('jobId')}"
    return str(body.get("jobId") or body.get("taskId") or "")


# --- paging -------------------------------------------------------------------------------


def _page_args(body: dict[str, Any]) -> tuple[int, str]:
    keys = body.get("maxKeys", 10)
    if isinstance(keys, bool) or not isinstance(keys, int) or keys < 1:
        return 0, "maxKeys must be a positive integer"
    marker = body.get("marker")
    if marker is not None and not isinstance(marker, str):
        return 0, "marker must be a string"
    return min(keys, 100), ""


def _page(items: list[Item], id_key: str, list_key: str, keys: int, ask: Ask) -> Answer:
    """The page of ``items`` from ``marker`` on (an item's id), ``keys`` long."""
    if ask.body.get("pageReverse") is True:
        items.reverse()
    ids = [item[id_key] for item in items]
    marker = ask.body.get("marker")
    start = 0
    if marker:
        if marker not in ids:
            return _invalid("marker not found")
        start = ids.index(marker)
    page = items[start : start + keys]
    truncated = start + keys < len(items)
    info: dict[str, Any] = {"marker": marker or "", "maxKeys": keys, "isTruncated": truncated}
    if truncated and ask.next_marker:
        info["nextMarker"] = ids[start + keys]
    return Result({list_key: page, "pageInfo": info})


# --- odd fields ---------------------------------------------------------------------------

# Values of the wrong type for a run's fields ("odd_fields"); ids stay readable.
_ODD_VALUES: dict[str, Any] = {
    "trainStatus": ["RUNNING"], "runStatus": {"value": "Running"}, "progress": "lots",
    "runProgress": {"percent": 51}, "runTime": [1], "trainTime": {"s": 1},
    "startTime": {"t": 1}, "finishTime": ["never"], "createTime": [2024], "createDate": True,
    "finishDate": {"d": 0}, "metrics": ["BLEU-4", "17%"], "checkpointList": "many",
    "errorCode": {"code": 1}, "errorMessage": ["no"], "jobName": {"n": 1}, "taskName": [1],
    "model": None, "trainMode": 3.5, "parameterScale": False, "version": {"v": 1},
    "vdlLink": ["x"], "trainType": [], "peftType": {},
}


def _odd(item: Item) -> Item:
    return {key: _ODD_VALUES.get(key, value) for key, value in item.items()}
