"""Rendering: exact text (golden file), agreement with prometheus_client, promtool."""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
from pathlib import Path
from types import MappingProxyType

from prometheus_client import CollectorRegistry, generate_latest

from qf_exporter.config.file import V1Target
from qf_exporter.exposition.answer import gzip_answer
from qf_exporter.exposition.render import FAMILIES, render_health
from qf_exporter.polling.estimate import with_estimates
from qf_exporter.polling.snapshot import AccountState, Snapshot, TargetState
from qf_exporter.qianfan.models import Run, parse_v1_run, parse_v2_run
from tests.examples import V1_SDK_EXAMPLE, V2_EXAMPLE
from tests.exposition.pages import full_page, page_text, render_runs
from tests.generic_collector import GenericRunCollector
from tests.helpers import parse_samples, promtool_check_metrics, series, value

GOLDEN = Path(__file__).parent.parent / "golden" / "runs.prom"


def sample_runs() -> list[Run]:
    read = 1_705_400_000.25
    runs = [
        # An owned run: the team comes from the configuration (docs/configuration.md,
        # "Who owns a run").
        dataclasses.replace(
            parse_v2_run(V2_EXAMPLE, account="team-a", job_id="job-ftp4icwebtnc", read_at=read),
            team="nlp",
        ),
        parse_v2_run(
            {
                "taskId": "task-run-2", "jobName": 'quote " back \\ slash\nnewline',
                "runStatus": "Running", "runProgress": "51%",
                "createTime": "2024-01-16T09:48:35Z",
                "checkpointList": [{"step": 100, "perplexity": 4.25, "trainingLoss": 1.4473}],
                "vdlLink": "https://console.bce.baidu.com/qianfan/visualdl/index?x=1",
            },
            account="team-a", job_id="job-ftp4icwebtnc", read_at=read,
        ),
        parse_v2_run(
            {"taskId": "task-run-3", "runStatus": "Failed", "errorCode": 500001,
             "errorMessage": "数据集格式错误", "createDate": "2024-01-16T09:48:35Z",
             "finishDate": "2024-01-16T09:50:00Z"},
            account="team-a", job_id="job-other", read_at=read,
        ),
        parse_v2_run({"taskId": "task-run-4", "runStatus": ""}, account="team-a",
                     job_id="job-other", read_at=read),
        parse_v1_run(V1_SDK_EXAMPLE, account="team-b", pair=V1Target(10250, 6205),
                     read_at=read),
    ]
    # A first read, as the poller makes it: the running run's finish is estimated from start.
    return list(with_estimates((), runs))


def test_golden_text() -> None:
    text = render_runs(sample_runs()).decode()
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_fast_and_generic_paths_parse_to_the_same_samples() -> None:
    runs = sample_runs()
    registry = CollectorRegistry()
    registry.register(GenericRunCollector(lambda: runs))
    assert parse_samples(render_runs(runs)) == parse_samples(generate_latest(registry))


def test_pieces_do_not_change_the_text() -> None:
    """Runs rendered apart and joined family by family (as the run store's buckets are)
    give the text of all of them rendered at once: where they are cut must not show."""
    runs = [
        dataclasses.replace(run, job_id=f"job-{i:04d}")
        for i in range(211)
        for run in sample_runs()
    ]
    whole = render_runs(runs)
    for size in (1, 2, 7, 500):
        assert render_runs(runs, size) == whole
    assert whole.count(b"\n# HELP ") == len(FAMILIES) - 1
    assert len(series(parse_samples(whole), "qianfan_finetune_run_info")) == len(runs)


def test_promtool_accepts_the_text() -> None:
    promtool_check_metrics(render_runs(sample_runs()))
    promtool_check_metrics(render_runs([]))


def test_spec_details() -> None:
    samples = parse_samples(render_runs(sample_runs()))
    done = {"account": "team-a", "api": "v2", "job_id": "job-ftp4icwebtnc",
            "task_id": "task-0tgmn4a7h4i6"}
    # Six status series per run, exactly one of them 1.
    for task in ("task-0tgmn4a7h4i6", "task-run-2", "task-run-3", "task-run-4", "10250"):
        statuses = series(samples, "qianfan_finetune_run_status", task_id=task)
        assert len(statuses) == 6 and sum(statuses.values()) == 1
    assert value(samples, "qianfan_finetune_run_status", task_id="task-run-4",
                 status="unknown") == 1
    # A Done run: no progress series; checkpoints present and 0; no error_info.
    assert value(samples, "qianfan_finetune_run_progress_ratio", **done) is None
    assert value(samples, "qianfan_finetune_run_checkpoints", **done) == 0
    assert value(samples, "qianfan_finetune_run_error_info", **done) is None
    assert value(samples, "qianfan_finetune_run_evaluation_ratio", metric="BLEU-4",
                 **done) == 0.1703
    # A running run: no finish timestamp; progress and latest checkpoint.
    assert value(samples, "qianfan_finetune_run_finish_timestamp_seconds",
                 task_id="task-run-2") is None
    assert value(samples, "qianfan_finetune_run_progress_ratio", task_id="task-run-2") == 0.51
    assert value(samples, "qianfan_finetune_run_training_loss", task_id="task-run-2") == 1.4473
    # Label strings come back exactly, escapes and all.
    info = series(samples, "qianfan_finetune_run_info", task_id="task-run-2")
    assert dict(next(iter(info)))["job_name"] == 'quote " back \\ slash\nnewline'
    error = series(samples, "qianfan_finetune_run_error_info", task_id="task-run-3")
    assert dict(next(iter(error))) == {
        "account": "team-a", "api": "v2", "job_id": "job-other", "task_id": "task-run-3",
        "error_code": "500001", "error_message": "数据集格式错误"}
    # V1: the configured pair, the version, no checkpoints, no train-duration gaps.
    v1 = {"api": "v1", "task_id": "10250", "job_id": "6205"}
    assert dict(next(iter(series(samples, "qianfan_finetune_run_info", **v1))))["version"] == "5"
    assert value(samples, "qianfan_finetune_run_checkpoints", **v1) is None
    assert value(samples, "qianfan_finetune_run_train_duration_seconds", **v1) == 0
    assert value(samples, "qianfan_finetune_run_start_timestamp_seconds", **v1) == 1697797149


def test_every_family_has_help_and_type() -> None:
    text = render_runs([]).decode()
    for family in FAMILIES:
        assert f"# HELP {family.name} " in text and f"# TYPE {family.name} gauge" in text
        assert "_total" not in family.name


def test_gzip_answer_matches_text() -> None:
    page = full_page(sample_runs(), 7)
    assert gzip.decompress(b"".join(gzip_answer(page))) == page_text(page)
    assert page.generation == 7


def test_render_health_exposition() -> None:
    targets = {
        ("v1", "10250/6205"): TargetState(api="v1", name="10250/6205", up=True,
                                          last_success=1700000000.5, team="nlp"),
        ("v2", 'job-"q"'): TargetState(api="v2", name='job-"q"', up=False,
                                       error="no such job", reason="client"),
        ("v2", "job-b"): TargetState(api="v2", name="job-b", up=False, reason="server",
                                     error="http=500", last_success=1699999000.0),
    }
    state = AccountState(name="team", targets=MappingProxyType(targets), up=True, polled=True,
                         last_success=1700000001.0, poll_duration=0.25)
    snapshot = Snapshot(MappingProxyType({"team": state}))
    text = render_health(snapshot, ["team", "later"])
    lines = [line for line in text.decode().splitlines() if not line.startswith("#")]
    assert lines == [
        'qianfan_up{account="later"} 0',
        'qianfan_up{account="team"} 1',
        'qianfan_target_up{account="team",api="v1",target="10250/6205",team="nlp"} 1',
        'qianfan_target_up{account="team",api="v2",target="job-\\"q\\"",team=""} 0',
        'qianfan_target_up{account="team",api="v2",target="job-b",team=""} 0',
        'qianfan_target_last_success_timestamp_seconds{account="team",api="v1",'
        'target="10250/6205",team="nlp"} 1700000000.5',
        'qianfan_target_last_success_timestamp_seconds{account="team",api="v2",'
        'target="job-b",team=""} 1699999000.0',
        'qianfan_target_error_info{account="team",api="v2",target="job-\\"q\\"",team="",'
        'reason="client"} 1',
        'qianfan_target_error_info{account="team",api="v2",target="job-b",team="",'
        'reason="server"} 1',
        'qianfan_last_successful_poll_timestamp_seconds{account="team"} 1700000001.0',
        'qianfan_poll_duration_seconds{account="team"} 0.25',
    ]
    helps = re.findall(r"^# HELP (\S+) ", text.decode(), flags=re.M)
    assert {"qianfan_up", "qianfan_target_up", "qianfan_target_last_success_timestamp_seconds",
            "qianfan_target_error_info",
            "qianfan_last_successful_poll_timestamp_seconds"} <= set(helps)
    promtool_check_metrics(text)

