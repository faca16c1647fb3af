"""The exporter's own metrics about talking to Qianfan (prometheus_client objects).

These are few and change on every request, so they live in an ordinary
prometheus_client registry. Run metrics do not: see ``render``. Every change to them
moves ``version()``, so a scrape renders them again only after one (``answer.Head``).
"""

from __future__ import annotations

import itertools
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

# ``*_created`` series double the exporter's own series and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# API calls take tens of milliseconds to seconds; retries and timeouts reach ~10 s.
REQUEST_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


_TICKS = itertools.count(1)
_version = 0
_M = TypeVar("_M", bound=MetricWrapperBase)


def version() -> int:
    """Moves after every change to these metrics (any instance's: a new label set, a
    count, an observation, a removal). A render that read it before it began holds
    every change made before that read."""
    return _version


def _changed() -> None:
    global _version
    _version = next(_TICKS)  # next() is atomic; a value may be skipped, never reused


class _Tracked(MetricWrapperBase):
    """Moves ``version()`` after any change of label sets; a label set's children are
    of the same class, so their counts and observations move it too."""

    def labels(self: _M, *labelvalues: object, **labelkwargs: object) -> _M:
        child = super().labels(*labelvalues, **labelkwargs)
        _changed()  # a label set may have been made, which renders as a series
        return child

    def remove(self, *labelvalues: Any) -> None:
        super().remove(*labelvalues)
        _changed()

    def clear(self) -> None:
        super().clear()
        _changed()


class _Counter(_Tracked, Counter):
    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        super().inc(amount, exemplar)
        _changed()


class _Histogram(_Tracked, Histogram):
    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        super().observe(amount, exemplar)
        _changed()


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = _Counter(
            "qianfan_api_requests",
            "Requests sent to the Qianfan API, retries included.",
            ["account", "action"],
            registry=registry,
        )
        self.failures = _Counter(
            "qianfan_api_request_failures",
            "Requests to the Qianfan API that failed, by reason "
            "(rate_limited, auth, server, client, timeout, connection, invalid_response).",
            ["account", "action", "reason"],
            registry=registry,
        )
        self.duration = _Histogram(
            "qianfan_api_request_duration_seconds",
            "Time from sending a request to the Qianfan API until its answer was read.",
            ["account", "action"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.runs_left_out = _Counter(
            "qianfan_runs_left_out",
            "Runs read from Qianfan but not exported, by reason (max_runs, retention).",
            ["account", "reason"],
            registry=registry,
        )

    def forget_account(self, account: str) -> None:
        """Drop an account's series (it left the configuration)."""
        for metric in (self.requests, self.failures, self.duration, self.runs_left_out):
            for labels in list(metric._metrics):  # no public API lists label sets
                if labels and labels[0] == account:
                    metric.remove(*labels)

    def collectors(self) -> tuple[Counter | Histogram, ...]:
        """The four metrics, for a registry of their own (``answer.Head``'s counted part)."""
        return (self.requests, self.failures, self.duration, self.runs_left_out)
