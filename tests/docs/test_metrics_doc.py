"""docs/metrics.md's reference cannot drift from the code's metric definitions."""

from __future__ import annotations

from tests.docs import metrics_reference
from tests.docs.markdown import REPO


def test_the_metrics_reference_is_what_the_code_generates() -> None:
    doc = metrics_reference.DOC.read_text(encoding="utf-8")
    assert doc == metrics_reference.rewritten(doc), (
        "docs/metrics.md is out of date: run python -m tests.docs.metrics_reference"
    )


def test_the_reference_lists_every_metric_the_exporter_defines() -> None:
    rows = (metrics_reference.run_rows() + metrics_reference.health_rows()
            + metrics_reference.telemetry_rows() + metrics_reference.info_rows())
    names = [name for name, *_ in rows]
    assert len(names) == len(set(names))
    block = metrics_reference.reference()
    for name, kind, _labels, help_text in rows:
        assert help_text, f"{name} has no HELP"
        assert f"| `{name}` | {kind} |" in block
    for name, _kind, labels, _help in metrics_reference.run_rows():
        assert labels[:4] == ("account", "api", "job_id", "task_id"), name
    # The hand-written explanations above the reference name every metric too.
    doc = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    prose = doc[: doc.index(metrics_reference.BEGIN)]
    missing = [name for name in names if f"`{name}" not in prose]
    assert missing == []
