"""The run's page in the Qianfan console, built as the official SDK builds it."""

from __future__ import annotations

import pytest

from qf_exporter.qianfan.console import FINE_TUNING_LIST, run_page
from qf_exporter.qianfan.models import Run


@pytest.mark.parametrize(("mode", "prefix"), [
    ("SFT", "sft"), ("PostPretrain", "postPretrain"), ("DPO", "dpo"), ("sft", "sft"),
])
def test_a_v2_run_links_its_training_log(mode: str, prefix: str) -> None:
    # As python/qianfan/trainer/actions.py of baidubce/bce-qianfan-sdk writes log_link.
    assert run_page("v2", mode, "job-z8tcj7v5ecgr", "task-pf04v28vu8dp") == (
        f"https://console.bce.baidu.com/qianfan/train/{prefix}/job-z8tcj7v5ecgr/"
        "task-pf04v28vu8dp/detail/traininglog"
    )


@pytest.mark.parametrize(("api", "mode", "job", "task"), [
    ("v2", "KTO", "job-a", "task-a"),  # no entry in the SDK's log_prefix_mapping
    ("v2", "", "job-a", "task-a"),  # the answer did not say
    ("v2", "SomethingNew", "job-a", "task-a"),
    ("v1", "SFT", "6205", "10250"),  # V1 ids are not the console's V2 ids
    ("v2", "SFT", "", "task-a"),
])
def test_where_no_run_page_is_known_the_list_is_linked(
    api: str, mode: str, job: str, task: str
) -> None:
    assert run_page(api, mode, job, task) == FINE_TUNING_LIST
    assert FINE_TUNING_LIST.startswith("https://console.bce.baidu.com/qianfan/")


def test_an_odd_upstream_id_cannot_point_elsewhere() -> None:
    url = run_page("v2", "SFT", "job-a/../../iam?x=1#", "task a")
    assert url == ("https://console.bce.baidu.com/qianfan/train/sft/"
                   "job-a%2F..%2F..%2Fiam%3Fx%3D1%23/task%20a/detail/traininglog")


def test_the_run_shows_its_own_link() -> None:
    run = Run(account="a", api="v2", job_id="job-a", task_id="task-a", status="failed",
              upstream_status="Failed", train_mode="DPO")
    assert run.console_url == run_page("v2", "DPO", "job-a", "task-a")
