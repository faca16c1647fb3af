"""The run metrics through prometheus_client's generic collector path.

The exporter renders run metrics straight to bytes (``qf_exporter.exposition.render``); this
renders the same runs the way prometheus_client would, so that the tests can check
both give exactly the same samples and the benchmark can compare their speed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from qf_exporter.exposition.render import (
    _VALUE_FAMILIES,
    BASE_LABELS,
    ERROR,
    EVALUATION,
    FAMILIES,
    INFO,
    INFO_LABELS,
    STATUS,
    VDL_LINK,
)
from qf_exporter.qianfan.models import STATUSES, Run


class GenericRunCollector(Collector):
    """The same run metrics through prometheus_client's generic collector path."""

    def __init__(self, runs: Callable[[], Iterable[Run]]) -> None:
        self._runs = runs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ordered = sorted(self._runs(), key=lambda r: r.key)
        families = {f.name: GaugeMetricFamily(f.name, f.help, labels=()) for f in FAMILIES}
        for family in families.values():
            family._labelnames = ()  # labels differ per family; set per sample below
        for run in ordered:
            base = dict(zip(BASE_LABELS, run.key, strict=True))
            families[INFO.name].add_sample(
                INFO.name,
                dict(base, **{name: getattr(run, name) for name in INFO_LABELS}),
                1,
            )
            for state in STATUSES:
                families[STATUS.name].add_sample(
                    STATUS.name, dict(base, status=state), 1 if state == run.status else 0
                )
            for spec in _VALUE_FAMILIES:
                value = getattr(run, spec.attribute or "")
                if value is not None:
                    families[spec.name].add_sample(spec.name, base, value)
            for metric, score in run.evaluation:
                families[EVALUATION.name].add_sample(
                    EVALUATION.name, dict(base, metric=metric), score
                )
            if run.has_error:
                families[ERROR.name].add_sample(
                    ERROR.name,
                    dict(base, error_code=run.error_code, error_message=run.error_message),
                    1,
                )
            if run.vdl_link:
                families[VDL_LINK.name].add_sample(
                    VDL_LINK.name, dict(base, vdl_link=run.vdl_link), 1
                )
        yield from families.values()
