"""Exporter metadata collected at scrape time: build, configuration reloads, shard.

A small collector in the prometheus_client style. The per-account and per-target
health (``qianfan_up``, ``qianfan_last_successful_poll_timestamp_seconds``,
``qianfan_target_up``, ``qianfan_target_last_success_timestamp_seconds``,
``qianfan_target_error_info``, poll timings, discovered jobs) changes only with a
poll, so it is rendered with the run metrics (``render.render_health``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass
class ReloadState:
    """Whether the latest configuration reload succeeded, and when one last did."""

    successful: bool = True
    last_success: float = 0.0


class InfoCollector(Collector):
    """The exporter's build, configuration reload and shard metadata, at each scrape."""

    def __init__(
        self,
        version: str,
        reload_state: ReloadState,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self._version = version
        self._reload = reload_state
        self._shard = shard

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "qianfan_exporter_build_info",
            "qf-exporter's version (value 1).",
            labels=["version"],
        )
        build.add_metric([self._version], 1)
        yield build
        reload_ok = GaugeMetricFamily(
            "qianfan_config_last_reload_successful",
            "1 when the latest configuration reload succeeded (SIGHUP or POST /-/reload).",
        )
        reload_ok.add_metric([], 1 if self._reload.successful else 0)
        yield reload_ok
        reload_ts = GaugeMetricFamily(
            "qianfan_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
        )
        reload_ts.add_metric([], self._reload.last_success)
        yield reload_ts
        shard = GaugeMetricFamily(
            "qianfan_exporter_shard_info",
            "This replica's shard (--shard) of --total-shards (value 1).",
            labels=["shard", "total_shards"],
        )
        shard.add_metric([str(self._shard[0]), str(self._shard[1])], 1)
        yield shard
