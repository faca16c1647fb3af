"""Parsing: every quirk of Qianfan's answers, starting from the examples of Baidu's API
pages: 获取任务运行详情 (V1 jobDetail, https://cloud.baidu.com/doc/WENXINWORKSHOP/s/wlmrgowee) and
获取模型精调任务列表 (DescribeFineTuningTasks, https://cloud.baidu.com/doc/WENXINWORKSHOP/s/klt73okdd)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from qf_exporter.config.file import V1Target
from qf_exporter.qianfan.errors import InvalidResponse
from qf_exporter.qianfan.models import (
    BEIJING,
    Run,
    parse_job,
    parse_page,
    parse_v1_run,
    parse_v2_run,
    percent,
    timestamp,
)
from tests.examples import V1_HTTP_EXAMPLE, V1_SDK_EXAMPLE, V2_EXAMPLE


def v1(raw: Mapping[str, object]) -> Run:
    return parse_v1_run(raw, account="a", pair=V1Target(10250, 6205), read_at=1_800_000_000)


def v2(raw: Mapping[str, object]) -> Run:
    return parse_v2_run(raw, account="a", job_id="job-ftp4icwebtnc", read_at=1_705_400_000)


def test_v1_sdk_example() -> None:
    run = v1(V1_SDK_EXAMPLE)
    assert (run.api, run.task_id, run.job_id) == ("v1", "10250", "6205")
    assert run.status == "stopped" and run.upstream_status == "STOP"
    assert run.task_name == "sdk_test_7" and run.version == "5"
    assert run.model == "ernieBotLite-v201-8k" and run.parameter_scale == "ALL"
    assert run.progress == 0.0
    assert run.duration == 267452 and run.train_duration == 0
    # 18:19:09 Beijing time is 10:19:09 UTC.
    assert run.start_time == 1697797149
    assert run.finish_time is None  # the sentinel
    assert run.checkpoints is None  # V1 has no checkpoints: no series
    assert run.vdl_link.startswith("https://console.bce.baidu.com/")


def test_v1_http_example_lower_case_finishtime() -> None:
    run = parse_v1_run(V1_HTTP_EXAMPLE, account="a", pair=V1Target(7263, 4612), read_at=0)
    # Labelled with the configured pair, not the ids the answer repeats.
    assert (run.task_id, run.job_id) == ("7263", "4612")
    assert run.status == "succeeded"
    assert run.progress == pytest.approx(0.99)
    assert run.finish_time == run.start_time + 3600  # type: ignore[operator]
    assert run.start_time == 1683216000  # 2023-05-05 00:00 +08:00


def test_v2_seed_example() -> None:
    run = v2(V2_EXAMPLE)
    assert run.status == "succeeded" and run.upstream_status == "Done"
    assert (run.job_name, run.model, run.train_mode, run.parameter_scale) == (
        "job-name", "ERNIE-Speed-8K", "SFT", "FullFineTuning")
    assert dict(run.evaluation) == pytest.approx(
        {"BLEU-4": 0.1703, "ROUGE-1": 0.3083, "ROUGE-2": 0.1237, "ROUGE-L": 0.2914})
    assert run.start_time == 1705398515 and run.finish_time == 1705402115
    assert run.duration == 3600
    assert run.progress is None  # a Done run has no runProgress: no made-up 1.0
    assert run.checkpoints == 0  # present for every V2 run
    assert run.checkpoint_step is None and run.training_loss is None
    assert run.error_code == "" and run.error_message == ""
    assert run.train_duration is None


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("RUNNING", "running"), ("FINISH", "succeeded"), ("STOP", "stopped"),
        ("FAIL", "failed"), ("running", "running"), ("", "unknown"), ("PAUSED", "unknown"),
    ],
)
def test_v1_statuses(raw: str, status: str) -> None:
    run = v1(dict(V1_SDK_EXAMPLE, trainStatus=raw))
    assert run.status == status and run.upstream_status == raw


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("Waiting", "waiting"), ("Running", "running"), ("Done", "succeeded"),
        ("Stopped", "stopped"), ("Failed", "failed"), ("", "unknown"),
        ("Preparing", "unknown"), ("DONE", "succeeded"),
    ],
)
def test_v2_statuses(raw: str, status: str) -> None:
    run = v2(dict(V2_EXAMPLE, runStatus=raw))
    assert run.status == status and run.upstream_status == raw


def test_missing_status_is_unknown() -> None:
    raw = dict(V2_EXAMPLE)
    del raw["runStatus"]
    assert v2(raw).status == "unknown"


@pytest.mark.parametrize(
    ("value", "ratio"),
    [
        ("17.03%", 0.1703), ("51%", 0.51), (" 5 % ", 0.05), ("17.03", 0.1703), (51, 0.51),
        (0, 0.0), ("", None), ("-", None), (None, None), ("n/a", None), ("NaN", None),
        ("inf%", None), (True, None), ([], None),
    ],
)
def test_percentages(value: object, ratio: float | None) -> None:
    assert percent(value) == (pytest.approx(ratio) if ratio is not None else None)


def test_evaluation_values_that_are_not_numbers_give_no_series() -> None:
    run = v2(dict(V2_EXAMPLE, metrics={"BLEU-4": "-", "ROUGE-1": "", "ROUGE-2": None,
                                       "ROUGE-L": "12%"}))
    assert len(run.evaluation) == 1
    ((metric, score),) = run.evaluation
    assert metric == "ROUGE-L" and score == pytest.approx(0.12)
    assert v2(dict(V2_EXAMPLE, metrics="oops")).evaluation == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-16T09:48:35Z", 1705398515),
        ("2024-01-16T17:48:35+08:00", 1705398515),
        ("2024-01-16 17:48:35", 1705398515),  # no zone: Beijing time
        ("0000-00-00T00:00:00Z", None),
        ("0000-00-00 00:00:00", None),
        ("", None), ("yesterday", None), (None, None), (0, None),
        (1705398515, 1705398515), (1705398515000, 1705398515),
    ],
)
def test_timestamps(value: object, expected: float | None) -> None:
    assert timestamp(value, BEIJING) == expected


def test_field_names_any_case_and_date_spelling() -> None:
    raw = {
        "TASKID": "task-1", "runstatus": "Failed", "CreateDate": "2024-01-16T09:48:35Z",
        "finishdate": "2024-01-16T09:58:35Z", "ERRORCODE": 500001,
        "errormessage": "bad data", "CheckPointList": [],
    }
    run = v2(raw)
    assert run.task_id == "task-1" and run.status == "failed"
    assert run.start_time == 1705398515 and run.finish_time == 1705399115
    assert run.duration == 600
    assert (run.error_code, run.error_message) == ("500001", "bad data")


def test_running_v2_run() -> None:
    raw = {
        "taskId": "task-2", "runStatus": "Running", "runProgress": "51%",
        "createTime": "2024-01-16T09:48:35Z", "finishTime": "0000-00-00T00:00:00Z",
        "checkpointList": [
            {"step": 200, "perplexity": 3.1, "trainingLoss": 1.13},
            {"step": 100, "perplexity": "4.2", "trainingLoss": "1.43"},
            {"step": "x", "perplexity": 9, "trainingLoss": 9},
            "not-an-object",
        ],
        "errorCode": 0, "errorMessage": "",
    }
    run = v2(raw)
    assert run.status == "running" and run.progress == pytest.approx(0.51)
    assert run.finish_time is None
    assert run.duration == 1_705_400_000 - 1705398515  # poll time minus creation
    assert run.checkpoints == 3  # the three objects; latest is the highest step
    assert (run.checkpoint_step, run.training_loss, run.perplexity) == (200, 1.13, 3.1)
    assert run.error_code == "0" and not run.has_error  # code 0 and no message: no error


def test_unfinished_run_never_has_a_finish_time() -> None:
    raw = dict(V2_EXAMPLE, runStatus="Running")
    assert v2(raw).finish_time is None
    assert v1(dict(V1_HTTP_EXAMPLE, trainStatus="RUNNING")).finish_time is None


def test_checkpoint_list_null_or_missing_gives_zero() -> None:
    assert v2(dict(V2_EXAMPLE, checkpointList=None)).checkpoints == 0
    assert v2(dict(V2_EXAMPLE, checkpointList="x")).checkpoints == 0


def test_error_message_cut_to_200() -> None:
    run = v2(dict(V2_EXAMPLE, runStatus="Failed", errorCode=1, errorMessage="x" * 500))
    assert len(run.error_message) == 200


def test_wrong_shapes_raise_invalid_response() -> None:
    with pytest.raises(InvalidResponse):
        parse_v1_run(["a"], account="a", pair=V1Target(1, 1), read_at=0)
    with pytest.raises(InvalidResponse):
        parse_page({"taskList": {"a": 1}}, "taskList")
    with pytest.raises(InvalidResponse):
        parse_page({"taskList": ["task-1"]}, "taskList")
    with pytest.raises(InvalidResponse):
        parse_page(None, "taskList")


def test_fields_of_wrong_type_are_absent_not_fatal() -> None:
    raw = dict(V1_SDK_EXAMPLE, progress="lots", runTime=[1], startTime=5.5e30, taskName={"a": 1})
    run = v1(raw)
    assert run.progress is None and run.duration is None and run.task_name == ""


def test_page_info() -> None:
    page = parse_page({"taskList": [{"taskId": "t"}],
                       "pageInfo": {"isTruncated": True, "nextMarker": "t2"}}, "taskList")
    assert page.truncated and page.next_marker == "t2" and len(page.items) == 1
    assert not parse_page({"taskList": []}, "taskList").truncated


def test_parse_job() -> None:
    job = parse_job({"jobId": "job-1", "name": "n", "model": "m", "trainMode": "SFT",
                     "createDate": "2024-01-16T09:48:35Z"})
    assert job is not None and job.create_time == 1705398515
    assert parse_job({"name": "no id"}) is None


def test_long_label_values_are_cut_to_the_documented_bound() -> None:
    from qf_exporter.qianfan.models import MAX_LABEL_LENGTH

    run = v2(dict(V2_EXAMPLE, jobName="名" * 1000, metrics={"M" * 500: "1%"},
                  model='quote " and \\ and \n' * 50))
    assert MAX_LABEL_LENGTH == 256
    assert len(run.job_name) == 256 and len(run.model) == 256
    assert len(run.evaluation[0][0]) == 256
    # Lone surrogates (valid in JSON escapes) never make the exposition unencodable.
    assert v2(dict(V2_EXAMPLE, jobName="a\ud800b")).job_name.encode("utf-8")


def test_a_message_with_code_0_is_an_error_with_the_raw_code() -> None:
    run = v2(dict(V2_EXAMPLE, runStatus="Failed", errorCode=0, errorMessage="OOM"))
    assert run.has_error and (run.error_code, run.error_message) == ("0", "OOM")
    assert not v2(dict(V2_EXAMPLE, errorCode="0", errorMessage="")).has_error
    assert v2(dict(V2_EXAMPLE, errorCode=336100, errorMessage="")).has_error


def test_percentages_read_as_written() -> None:
    # 30.83 / 100 is 0.30829999999999996 in binary floating point; the API wrote 30.83 %.
    assert repr(percent("30.83%")) == "0.3083"
    assert repr(percent("12.37%")) == "0.1237"
    run = v1(dict(V1_SDK_EXAMPLE, progress=99.9))
    assert repr(run.progress) == "0.999"


# --- loss health from checkpointList -------------------------------------------------


def checkpoints(*losses: object, perplexity: object = 3.0) -> dict[str, object]:
    """A running V2 run whose checkpoints have these losses, at steps 100, 200, ..."""
    return {
        "taskId": "task-loss", "runStatus": "Running",
        "checkpointList": [
            {"step": 100 * (k + 1), "perplexity": perplexity, "trainingLoss": loss}
            for k, loss in enumerate(losses)
        ],
    }


def test_lowest_loss_of_all_and_of_the_latest_three_checkpoints() -> None:
    run = v2(checkpoints(2.0, 0.8, 1.5, 1.9, 2.4))
    assert run.training_loss == 2.4
    assert run.training_loss_min == 0.8
    assert run.training_loss_recent_min == 1.5  # steps 300, 400, 500
    assert run.loss_not_finite == 0
    # Fewer than three checkpoints with a loss: no recent minimum.
    run = v2(checkpoints(2.0, 0.8))
    assert (run.training_loss_min, run.training_loss_recent_min) == (0.8, None)
    # No checkpoints: none of the three, but the flag is there for every V2 run.
    run = v2(checkpoints())
    assert (run.training_loss_min, run.training_loss_recent_min, run.loss_not_finite) == (
        None, None, 0)
    assert v1(V1_SDK_EXAMPLE).loss_not_finite is None  # V1 has no checkpoints


def test_checkpoints_are_ordered_by_step_not_by_position() -> None:
    raw = checkpoints()
    raw["checkpointList"] = [
        {"step": 500, "perplexity": 9.0, "trainingLoss": 2.2},
        {"step": 100, "perplexity": 9.0, "trainingLoss": 0.5},
        {"step": 400, "perplexity": 9.0, "trainingLoss": 2.1},
        {"step": 300, "perplexity": 9.0, "trainingLoss": 2.0},
    ]
    run = v2(raw)
    assert (run.training_loss, run.training_loss_min, run.training_loss_recent_min) == (
        2.2, 0.5, 2.0)


@pytest.mark.parametrize(
    "loss", [float("nan"), float("inf"), float("-inf"), "nan", "NaN", " -inf ", "Infinity",
             "1e999"],
)
def test_a_non_finite_latest_loss_is_flagged_not_dropped(loss: object) -> None:
    run = v2(checkpoints(2.0, 1.0, loss))
    assert run.loss_not_finite == 1
    assert run.training_loss is None  # never exported as NaN
    assert run.training_loss_min == 1.0  # the finite ones still count
    assert run.checkpoint_step == 300


def test_a_non_finite_latest_perplexity_is_flagged() -> None:
    assert v2(checkpoints(2.0, 1.0, perplexity="NaN")).loss_not_finite == 1
    assert v2(checkpoints(2.0, 1.0, perplexity=float("inf"))).perplexity is None


@pytest.mark.parametrize("loss", [None, "", "-", "n/a", True])
def test_a_missing_or_unreadable_loss_is_unknown_not_non_finite(loss: object) -> None:
    run = v2(checkpoints(2.0, loss))
    assert run.loss_not_finite == 0
    assert run.training_loss is None and run.training_loss_min == 2.0


def test_an_older_non_finite_loss_is_not_flagged_once_a_finite_one_follows() -> None:
    run = v2(checkpoints(2.0, "NaN", 1.5))
    assert (run.loss_not_finite, run.training_loss, run.training_loss_min) == (0, 1.5, 1.5)


# --- odd values stay local --------------------------------------------------------------

HUGE = 10**400  # 401 digits: float() of it raises OverflowError


@pytest.mark.parametrize(
    "value",
    [HUGE, -HUGE, 1e300, 253402300800_000, "9999-12-31T23:59:59-23:00",
     "0001-01-01T00:00:00+08:00",
     "0001-01-01T00:00:00", -5, float("nan"), True, [1], {"t": 1}],
)
def test_times_that_cannot_be_read_or_are_out_of_range_are_missing(value: object) -> None:
    assert timestamp(value, BEIJING) is None


def test_a_huge_integer_drops_one_field_and_keeps_the_run() -> None:
    run = v2(dict(V2_EXAMPLE, createTime=HUGE, finishTime=HUGE, runProgress=HUGE,
                  metrics={"BLEU-4": HUGE, "ROUGE-1": "50%"},
                  checkpointList=[{"step": HUGE, "trainingLoss": 0.5},
                                  {"step": 10, "trainingLoss": HUGE, "perplexity": HUGE}]))
    assert run.task_id == V2_EXAMPLE["taskId"] and run.status == "succeeded"
    assert run.start_time is None and run.finish_time is None and run.duration is None
    assert run.progress is None
    assert run.evaluation == (("ROUGE-1", 0.5),)
    assert run.checkpoints == 2 and run.checkpoint_step == 10
    assert run.training_loss is None and run.perplexity is None
    one = v1(dict(V1_SDK_EXAMPLE, runTime=HUGE, startTime=HUGE, progress=-HUGE))
    assert one.duration is None and one.start_time is None and one.progress is None
    job = parse_job({"jobId": "job-1", "createDate": HUGE})
    assert job is not None and job.create_time is None


def test_ids_that_differ_past_the_cut_or_in_surrogates_stay_distinct() -> None:
    from qf_exporter.qianfan.models import MAX_LABEL_LENGTH, v2_listing

    long = "t" * MAX_LABEL_LENGTH
    ids = [long + "1", long + "2", "t\ud800", "t\udbff", "t\ufffd", "task-1"]
    listed = v2_listing([{"taskId": i, "runStatus": "Done"} for i in ids])
    assert len(listed) == len(ids)
    assert "task-1" in listed and "t\ufffd" in listed  # ordinary ids as they are
    for key in listed:
        assert len(key) <= MAX_LABEL_LENGTH and key.encode("utf-8")
        assert v2(listed[key].raw).task_id == key
    jobs = {parse_job({"jobId": i}).job_id for i in ids}  # type: ignore[union-attr]
    assert len(jobs) == len(ids)


def test_checkpoints_read_are_bounded_and_all_are_counted() -> None:
    from qf_exporter.qianfan.models import MAX_CHECKPOINTS

    many = [{"step": k, "trainingLoss": 1.0 / k} for k in range(1, MAX_CHECKPOINTS + 501)]
    run = v2(dict(V2_EXAMPLE, checkpointList=many))
    assert run.checkpoints == MAX_CHECKPOINTS + 500
    assert run.checkpoint_step == MAX_CHECKPOINTS + 500
    assert run.training_loss_min == pytest.approx(1.0 / (MAX_CHECKPOINTS + 500))
