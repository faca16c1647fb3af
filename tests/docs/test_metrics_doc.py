"""docs/metrics.md's reference cannot drift from the code's metric definitions."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from qf_exporter.app import Exporter
from qf_exporter.config.file import Account, Config
from qf_exporter.util.secrets import Secret
from tests.docs import metrics_reference
from tests.docs.markdown import REPO


def test_the_metrics_reference_is_what_the_code_generates() -> None:
    doc = metrics_reference.DOC.read_text(encoding="utf-8")
    assert doc == metrics_reference.rewritten(doc), (
        "docs/metrics.md is out of date: run python -m tests.docs.metrics_reference"
    )


def test_the_reference_lists_every_metric_the_exporter_defines() -> None:
    rows = metrics_reference.all_rows()
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


def test_the_reference_is_what_a_real_exporter_exposes() -> None:
    """The reference is built from the four places metrics are defined; a metric defined
    anywhere else would be missing from it, and a real exporter's page would show it."""
    exporter = Exporter(
        Config(accounts=(Account(name="x", access_key=Secret("a"), secret_key=Secret("b"),
                                 jobs=("job-x",)),)),
        process_metrics=False,
    )
    try:
        text = exporter.exposition().decode()
    finally:
        exporter.stop()
    exposed = {f.name for f in text_string_to_metric_families(text)}
    documented = {name.removesuffix("_total") for name, *_ in metrics_reference.all_rows()}
    assert exposed == documented
