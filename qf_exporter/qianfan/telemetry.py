"""The exporter's own metrics about talking to Qianfan (prometheus_client objects).

These are few and change on every request, so they live in an ordinary
prometheus_client registry. Run metrics do not: see ``render``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

# ``*_created`` series double the exporter's own series and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# API calls take tens of milliseconds to seconds; retries and timeouts reach ~10 s.
REQUEST_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "qianfan_api_requests",
            "Requests sent to the Qianfan API, retries included.",
            ["account", "action"],
            registry=registry,
        )
        self.failures = Counter(
            "qianfan_api_request_failures",
            "Requests to the Qianfan API that failed, by reason "
            "(rate_limited, auth, server, client, timeout, connection, invalid_response).",
            ["account", "action", "reason"],
            registry=registry,
        )
        self.duration = Histogram(
            "qianfan_api_request_duration_seconds",
            "Time from sending a request to the Qianfan API until its answer was read.",
            ["account", "action"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.runs_left_out = Counter(
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
