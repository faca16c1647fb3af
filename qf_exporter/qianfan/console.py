"""Links into the Qianfan console: the page an on-call person opens from an alert.

This is the one place that knows the console's addresses. A run's link is shown as the
``console_url`` label of ``qianfan_finetune_run_info``, which the run alerts join into
their annotations and the run-detail dashboard offers as a data link.
"""

from __future__ import annotations

from urllib.parse import quote

CONSOLE = "https://console.bce.baidu.com/qianfan"
# Where no page of the run itself is known (KTO, V1): the console's fine-tuning list.
FINE_TUNING_LIST = f"{CONSOLE}/train/sft/list"

# A V2 run's training-log page, built as the official SDK builds it (baidubce/bce-qianfan-sdk,
# python/qianfan/trainer/actions.py, commit 6cacf60 of 2025-12-12):
#   log_prefix_mapping = {TrainMode.SFT: "sft", TrainMode.PostPretrain: "postPretrain",
#                         TrainMode.DPO: "dpo"}
#   f"https://console.bce.baidu.com/qianfan/train/{log_prefix}/{self.job_id}/{self.task_id}"
#   "/detail/traininglog"
# KTO has no entry there (the SDK falls back to "sft", a page that does not show a KTO
# run), and a V1 run's ids are not V2 ids: those link the list instead.
_LOG_PREFIX = {"sft": "sft", "postpretrain": "postPretrain", "dpo": "dpo"}


def run_page(api: str, train_mode: str, job_id: str, task_id: str) -> str:
    """The console page of a run (V2: its job id and its task id, the run)."""
    prefix = _LOG_PREFIX.get(train_mode.lower())
    if api != "v2" or prefix is None or not job_id or not task_id:
        return FINE_TUNING_LIST
    # The ids are upstream strings: one with a "/" or "?" must not point elsewhere.
    return (f"{CONSOLE}/train/{prefix}/{quote(job_id, safe='')}/{quote(task_id, safe='')}"
            "/detail/traininglog")
