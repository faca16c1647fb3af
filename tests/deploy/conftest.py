"""Fixtures of the deploy tests: what the exporter really exposes, built once on demand."""

from __future__ import annotations

import pytest

from qf_exporter.app import Exporter
from qf_exporter.config.file import Account, Config
from qf_exporter.util.secrets import Secret


def _exported_metric_names() -> set[str]:
    """Every metric name the exporter can expose, read off a real exposition."""
    exporter = Exporter(
        Config(accounts=(Account(name="x", access_key=Secret("a"), secret_key=Secret("b"),
                                 jobs=("job-x",)),)),
        process_metrics=False,
    )
    exporter.metrics.requests.labels("x", "a").inc()
    exporter.metrics.failures.labels("x", "a", "auth").inc()
    exporter.metrics.runs_left_out.labels("x", "max_runs").inc()
    names = set()
    for line in exporter.exposition().decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name if kind != "counter" or name.endswith("_total") else name + "_total")
    exporter.stop()
    return names


@pytest.fixture(scope="session")
def known_metrics() -> set[str]:
    """Every metric the exporter exposes (docs/metrics.md), plus `up`, plus the
    per-target last-success time that section defines (a rule annotation reads it;
    it is exposed once the target-grain health change is in)."""
    return _exported_metric_names() | {
        "up",
        "qianfan_target_last_success_timestamp_seconds",
    }
