"""Exporter health metrics, collected from the current snapshot at scrape time.

A small collector in the prometheus_client style: ``collect()`` reads one
snapshot and yields ``qianfan_up`` (always, even before the first poll and on
failure), ``qianfan_target_up``, the poll timings and the number of discovered
jobs, plus build, reload and shard info.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qf_exporter.snapshot import Snapshot


@dataclass
class ReloadState:
    successful: bool = True
    last_success: float = 0.0


class HealthCollector(Collector):
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        accounts: Callable[[], list[str]],
        version: str,
        reload_state: ReloadState,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self._snapshot = snapshot
        self._accounts = accounts
        self._version = version
        self._reload = reload_state
        self._shard = shard

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        up = GaugeMetricFamily(
            "qianfan_up",
            "1 when the latest poll of the account reached Qianfan, authenticated and "
            "read every target.",
            labels=["account"],
        )
        target_up = GaugeMetricFamily(
            "qianfan_target_up",
            "1 when the latest read of the target (a V2 job id, or a V1 task/job pair) "
            "succeeded.",
            labels=["account", "api", "target"],
        )
        last = GaugeMetricFamily(
            "qianfan_last_successful_poll_timestamp_seconds",
            "End of the latest poll of the account that read every target.",
            labels=["account"],
        )
        duration = GaugeMetricFamily(
            "qianfan_poll_duration_seconds",
            "Wall time of the account's latest poll.",
            labels=["account"],
        )
        discovered = GaugeMetricFamily(
            "qianfan_discovered_jobs",
            "Jobs that discovery (discover: true) currently polls for the account: those "
            "DescribeFineTuningJobs lists that pass the filters and this shard owns.",
            labels=["account"],
        )
        for name in self._accounts():
            state = snapshot.accounts.get(name)
            up.add_metric([name], 1 if state is not None and state.up else 0)
            if state is None:
                continue
            for (api, target), target_state in sorted(state.targets.items()):
                target_up.add_metric([name, api, target], 1 if target_state.up else 0)
            if state.last_success is not None:
                last.add_metric([name], state.last_success)
            if state.poll_duration is not None:
                duration.add_metric([name], state.poll_duration)
            if state.discovered_jobs is not None:
                discovered.add_metric([name], state.discovered_jobs)
        yield from (up, target_up, last, duration, discovered)
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
