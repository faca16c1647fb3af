"""One answer for --once and /metrics, negotiated like the client libraries."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable, Iterator

import pytest
import requests
from prometheus_client import CollectorRegistry, Gauge, Metric, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from qf_exporter.app import Exporter
from qf_exporter.exposition.answer import (
    OPENMETRICS,
    PROCESS_EVERY,
    TEXT,
    Head,
    accepts_gzip,
    build,
    wants_openmetrics,
)
from qf_exporter.exposition.render import _HEALTH_HELP, FAMILIES
from qf_exporter.qianfan import telemetry
from qf_exporter.qianfan.telemetry import ApiMetrics
from tests.helpers import promtool_check_metrics, serve

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


@pytest.mark.parametrize(
    ("header", "want"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("gzip, deflate, br", True),
        ("gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("br, gzip;q=0, *", False),
        ("*", True),
        ("*;q=0", False),
        ("identity", False),
        ("", False),
        (None, False),
        ("gzip;q=abc", False),
    ],
)
def test_accept_encoding_with_q_values(header: str | None, want: bool) -> None:
    assert accepts_gzip(header) is want


@pytest.mark.parametrize(
    ("header", "want"),
    [
        (PROMETHEUS_ACCEPT, True),
        ("application/openmetrics-text; version=1.0.0", True),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text;q=0", False),
        ("text/plain;version=0.0.4", False),
        ("*/*", False),
        ("", False),
        (None, False),
    ],
)
def test_format_from_accept(header: str | None, want: bool) -> None:
    assert wants_openmetrics(header) is want


def test_pre_rendered_families_read_the_same_in_both_formats() -> None:
    """The same bytes serve both formats only because of this: gauges, no '"' in HELP."""
    for help_text in [f.help for f in FAMILIES] + list(_HEALTH_HELP.values()):
        assert '"' not in help_text


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    """The demo world, polled once, with process metrics (counters and all)."""
    from qf_exporter.simulator.demo import start_demo

    simulator, config = start_demo()
    exporter = Exporter(config)
    exporter.poller.poll_all(force=True)
    yield exporter
    exporter.stop()
    simulator.stop()


def test_openmetrics_answer_parses_strictly(exporter: Exporter) -> None:
    answer = build(exporter.registry, exporter.current_page.page, openmetrics_format=True)
    text = b"".join(answer).decode()
    assert answer.content_type == OPENMETRICS
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    families = list(parse_om(text))  # type: ignore[no-untyped-call]  # strict: raises on any error
    names = [f.name for f in families]
    assert len(names) == len(set(names)), "a family appears twice"
    counters = {f.name: f for f in families if f.type == "counter"}
    assert "qianfan_api_requests" in counters  # counter family named without _total...
    for family in counters.values():
        assert all(s.name == family.name + "_total" for s in family.samples)  # ...samples with
    assert "qianfan_up" in names and "qianfan_exporter_build_info" in names


def test_gzip_answers_are_the_same_text(exporter: Exporter) -> None:
    for om in (False, True):
        plain = build(exporter.registry, exporter.current_page.page, openmetrics_format=om)
        zipped = build(exporter.registry, exporter.current_page.page, openmetrics_format=om,
                       gzipped=True)
        assert zipped.gzipped and not plain.gzipped
        unzipped = gzip.decompress(b"".join(zipped))
        # Process metrics move between two calls: compare the families, not the values.
        names = [f.name for f in (parse_om if om else parse_text)(unzipped.decode())]
        assert names == [f.name for f in (parse_om if om else parse_text)(
            b"".join(plain).decode())]


def test_text_answer_is_what_once_prints_and_promtool_accepts(exporter: Exporter) -> None:
    text = exporter.exposition()
    assert build(exporter.registry, exporter.current_page.page).content_type == TEXT
    assert not text.endswith(b"# EOF\n")
    list(parse_text(text.decode()))
    promtool_check_metrics(text)


def test_the_server_negotiates(exporter: Exporter) -> None:
    server = serve(exporter)
    url = f"http://127.0.0.1:{server.port}/metrics"
    om = requests.get(url, headers={"Accept": PROMETHEUS_ACCEPT}, timeout=10)
    assert om.headers["Content-Type"] == OPENMETRICS
    assert om.headers["Content-Encoding"] == "gzip"  # requests asks for gzip by default
    list(parse_om(om.text))  # type: ignore[no-untyped-call]
    plain = requests.get(url, headers={"Accept-Encoding": "gzip;q=0"}, timeout=10)
    assert plain.headers["Content-Type"] == TEXT
    assert "Content-Encoding" not in plain.headers
    assert int(plain.headers["Content-Length"]) == len(plain.content)
    head = requests.head(url, headers={"Accept-Encoding": "identity"}, timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) > 0


def _api_head() -> tuple[Head, ApiMetrics, CollectorRegistry]:
    """A head of API metrics (counted) and nothing live, and a registry of the same."""
    whole = CollectorRegistry(auto_describe=False)
    metrics = ApiMetrics(whole)
    counted = CollectorRegistry(auto_describe=False)
    for collector in metrics.collectors():
        counted.register(collector)
    return Head(CollectorRegistry(), counted, telemetry.version), metrics, whole


def test_the_head_renders_the_api_metrics_again_after_every_kind_of_change() -> None:
    head, metrics, whole = _api_head()
    changes: list[Callable[[], object]] = [
        lambda: metrics.requests.labels("a", "DescribeFineTuningTask"),  # a new series at 0
        lambda: metrics.requests.labels("a", "DescribeFineTuningTask").inc(),
        lambda: metrics.failures.labels("a", "DescribeFineTuningTask", "timeout").inc(),
        lambda: metrics.duration.labels("a", "DescribeFineTuningTask").observe(0.3),
        lambda: metrics.runs_left_out.labels("a", "max_runs").inc(2),
        lambda: metrics.forget_account("a"),
    ]
    for change in changes:
        before = head.text(False).text
        change()
        assert head.text(False).text == generate_latest(whole) != before
        om = openmetrics.generate_latest(whole)  # type: ignore[no-untyped-call]
        assert head.text(True).text == om


def test_the_head_keeps_the_api_metrics_text_while_nothing_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    head, metrics, _ = _api_head()
    metrics.duration.labels("a", "DescribeFineTuningTask").observe(0.3)
    collected: list[str] = []
    collect = metrics.duration.collect

    def counting() -> object:
        collected.append("duration")
        return collect()

    monkeypatch.setattr(metrics.duration, "collect", counting)
    first = head.text(False).text
    assert [head.text(False).text for _ in range(5)] == [first] * 5
    assert collected == ["duration"]
    metrics.requests.labels("a", "DescribeFineTuningTask").inc()
    assert head.text(False).text != first and collected == ["duration"] * 2


def test_the_exporters_answer_renders_its_api_metrics_once_between_changes(
    exporter: Exporter, monkeypatch: pytest.MonkeyPatch,
) -> None:
    collected: list[int] = []
    collect = exporter.metrics.requests.collect

    def counting() -> Iterable[Metric]:
        collected.append(telemetry.version())
        return collect()

    monkeypatch.setattr(exporter.metrics.requests, "collect", counting)
    page = exporter.current_page.page
    first = b"".join(build(exporter.head, page))
    assert b"qianfan_api_requests_total{" in first and b"process_cpu_seconds_total" in first
    zipped = b"".join(build(exporter.head, page, gzipped=True))
    assert gzip.decompress(zipped) == first and len(collected) == 1  # not rendered again
    exporter.poller.poll_all(force=True)
    again = b"".join(build(exporter.head, page))
    assert len(collected) == 2
    assert again.count(b"# HELP qianfan_api_requests_total ") == 1


def test_the_head_keeps_its_text_and_segment_while_nothing_changes() -> None:
    state = [0]
    live = CollectorRegistry(auto_describe=False)
    Gauge("live_info", "Rendered when its key moves.", registry=live).set_function(
        lambda: float(state[0]))
    head = Head(live, live_version=lambda: state[0])
    first = head.text(False)
    assert head.text(False) is first and first.segment is first.segment
    state[0] = 1
    changed = head.text(False)
    assert changed is not first and b"live_info 1.0" in changed.text
    unkeyed = Head(live)
    assert unkeyed.text(False) is not unkeyed.text(False)  # no key: every time


def test_the_head_samples_the_process_metrics_at_most_every_process_every() -> None:
    process = CollectorRegistry(auto_describe=False)
    reads = Gauge("sampled_reads", "Times the process part was read.", registry=process)
    reads.set_function(lambda: len(collected) + 0.0)
    collected: list[float] = []
    collect = process.collect

    def counting() -> Iterable[Metric]:
        collected.append(now[0])
        return collect()

    now = [100.0]
    info = CollectorRegistry(auto_describe=False)
    Gauge("live_info", "Rendered at every scrape.", registry=info).set(1)
    head = Head(info, process=process, clock=lambda: now[0])
    process.collect = counting  # type: ignore[method-assign]
    first = head.text(False).text
    now[0] += PROCESS_EVERY / 2
    assert head.text(False).text == first and collected == [100.0]
    now[0] += PROCESS_EVERY / 2
    again = head.text(False).text
    assert again != first and len(collected) == 2
    assert again.index(b"sampled_reads") < again.index(b"live_info")
    om = head.text(True).text  # each format is sampled apart, and # EOF ends it once
    assert om.endswith(b"# EOF\n") and om.count(b"# EOF") == 1 and len(collected) == 3
