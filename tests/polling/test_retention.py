"""What is kept: finished runs past their retention and runs over the cap left out,
oldest first, and each left-out run counted once.

The same through the whole exporter: scale_out/test_retention.py."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from qf_exporter.polling.retention import LeftOutCounter, retain
from qf_exporter.polling.snapshot import TargetState
from qf_exporter.qianfan.telemetry import ApiMetrics
from tests.polling.runs import NOW, run


def test_retain_leaves_out_by_retention_then_by_cap_oldest_first() -> None:
    runs = (
        run("old-done", "succeeded", start=NOW - 9000, finish=NOW - 8000),
        run("new-done", "failed", start=NOW - 500, finish=NOW - 100),
        run("a", start=NOW - 300),
        run("b", start=NOW - 200),
        run("no-start"),
    )
    targets = {("v2", "j"): TargetState("v2", "j", up=True, runs=runs)}
    retained = retain(targets, NOW, retention=3600, cap=2)
    assert [r.task_id for r in retained.runs] == ["b", "a"]
    assert [(o.run.task_id, o.reason) for o in retained.left_out] == [
        ("old-done", "retention"), ("new-done", "max_runs"), ("no-start", "max_runs")]
    assert retained.over_cap == 4
    assert retain(targets, NOW, retention=None, cap=None).runs == runs


def test_a_left_out_run_is_counted_once_until_a_good_read_drops_it() -> None:
    metrics = ApiMetrics(CollectorRegistry())
    counter = LeftOutCounter("a", metrics.runs_left_out)
    old = run("old", "succeeded", start=NOW - 9000, finish=NOW - 8000)
    targets = {("v2", "j"): TargetState("v2", "j", up=True, runs=(old,))}

    def counted() -> float:
        return float(metrics.runs_left_out.labels("a", "retention")._value.get())

    for _ in range(3):
        counter.count(targets, retain(targets, NOW, 3600, None).left_out)
    assert counted() == 1
    counter.count({("v2", "j"): TargetState("v2", "j", up=True)}, ())  # gone from the job
    counter.count(targets, retain(targets, NOW, 3600, None).left_out)  # and back
    assert counted() == 2

