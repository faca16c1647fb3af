"""Hostile upstream answers, through the client and the whole exporter.

Keys written with JSON escapes, or split across fields, never reach the metrics, the
landing page or the logs; a listing that never ends, or one answer of a million
values, costs a bounded amount and downs only its own target; one run's evaluation
series are bounded in number, distinct, and ratios in 0..1. Memory is measured with
tracemalloc and asserted with generous margins (never a time).
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from qf_exporter.app import Exporter
from qf_exporter.config.file import Account, Poll
from qf_exporter.qianfan.classify import parse_json
from qf_exporter.qianfan.client import MAX_PAGES, QianfanClient
from qf_exporter.qianfan.errors import InvalidResponse
from qf_exporter.qianfan.models import MAX_EVALUATION_METRICS, MAX_LABEL_LENGTH, parse_v2_run
from qf_exporter.qianfan.telemetry import ApiMetrics
from qf_exporter.simulator import QianfanSimulator
from qf_exporter.simulator.faults import escaped
from qf_exporter.util.secrets import FRAGMENT, REDACTED, Secret, redact_bytes, scrubber
from tests.checks import polled_without_keys
from tests.helpers import (
    ACCESS_KEY,
    SECRET_KEY,
    ManualClock,
    account,
    reset_peak_rss,
    scrape,
    status_bytes,
    value,
)
from tests.system import test_bad_day

POLL = Poll(interval=60, finished_interval=600, stale_after=600, timeout=10, concurrency=4,
            retries=0)
KEYS = (ACCESS_KEY, SECRET_KEY)
MIB = 1024 * 1024
# The bad day's world (jobs "job-bad" and "job-good", V1 pair 101/201) and simulator.
world = test_bad_day.world
sim = test_bad_day.sim


def fragments(text: str, keys: tuple[str, ...] = KEYS) -> list[str]:
    """The runs of FRAGMENT characters of a key that ``text`` holds."""
    n = FRAGMENT
    return [key[i : i + n] for key in keys for i in range(len(key) - n + 1)
            if key[i : i + n] in text]


# --- credentials after decoding ------------------------------------------------------------


def test_escaped_keys_never_reach_the_metrics_the_page_or_the_logs(
    sim: QianfanSimulator, make_exporter: Callable[..., Exporter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = account(sim, name="a", jobs=("job-bad", "job-good"), tasks=((101, 201),),
                discover=True)
    exporter = make_exporter(a, poll=POLL)
    for action in ("DescribeFineTuningJobs", "DescribeFineTuningTasks", "jobDetail"):
        sim.add_fault("escaped_keys", action=action, target=None if "Jobs" in action
                      else ("job-bad" if "Tasks" in action else "101/201"))
    sim.add_fault("escaped_error", target="job-good")
    samples = polled_without_keys(exporter, caplog)
    # The escaped runs were read, their names scrubbed: a label, never a key; the
    # escaped error downs its target.
    for name, labels, want in [
        ("run_info", {"task_id": "task-<redacted>", "job_name": "team <redacted>"}, 1),
        ("run_evaluation_ratio", {"task_id": "task-<redacted>", "metric": "<redacted>"}, 0.5),
        ("run_info", {"task_id": "101", "task_name": "<redacted>"}, 1),
        ("run_info", {"task_id": "task-split", "train_mode": "<redacted>",
                      "parameter_scale": "<redacted>"}, 1),
    ]:
        assert value(samples, f"qianfan_finetune_{name}", **labels) == want, (name, labels)
    assert value(samples, "qianfan_target_up", target="job-good") == 0
    state = exporter.poller.snapshot.accounts["a"].targets[("v2", "job-good")]
    assert "<redacted>" in state.error
    # No label value holds a long piece of a key: a key split in halves across two
    # fields leaves each field at most its half, which the secret key's halves exceed.
    for _, label_set in samples:
        for _, label_value in label_set:
            assert not fragments(label_value), label_value


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_no_escaping_carries_a_key_through_the_parser(data: st.DataObject) -> None:
    """Any mix of \\u escapes (either case) and literal characters, anywhere in keys and
    values, with text around: the decoded answer holds neither key nor a fragment."""
    key = data.draw(st.sampled_from(KEYS))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    noise = st.text(st.characters(codec="utf-8"), max_size=20)
    written = "".join(escaped(c) if rng.random() < 0.5 else json.dumps(c)[1:-1] for c in key)
    before, after = data.draw(noise), data.draw(noise)
    text = json.dumps(before)[:-1] + written + json.dumps(after)[1:]
    item = f'{{"taskId": {text}, {text}: 1, "metrics": {{{text}: "5%"}}}}'
    body = ('{"result": {"taskList": [' + item + "]}}").encode()
    decoded = parse_json(redact_bytes(bytearray(body), KEYS), scrubber(KEYS))
    flat = json.dumps(decoded, ensure_ascii=False)
    assert not fragments(flat)
    assert REDACTED in decoded["result"]["taskList"][0]["taskId"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, len(SECRET_KEY) - 1), max_size=4), st.booleans())
def test_a_key_split_across_fields_leaves_no_long_piece_in_any(
    cuts: list[int], escape: bool
) -> None:
    """What "split across fields" can leak: a field holds at most FRAGMENT - 1 of a
    key's characters in a row (pieces that short are ordinary text, and are kept)."""
    bounds = [0, *sorted(set(cuts)), len(SECRET_KEY)]
    pieces = [SECRET_KEY[i:j] for i, j in itertools.pairwise(bounds)]
    fields = {f"f{i}": escaped(piece) if escape else piece for i, piece in enumerate(pieces)}
    body = "{" + ",".join(f'"{k}": "{v}"' for k, v in fields.items()) + "}"
    decoded = parse_json(bytearray(body.encode()), scrubber(KEYS))
    for i, piece in enumerate(pieces):
        kept = decoded[f"f{i}"]
        assert not fragments(kept)
        assert kept == (piece if len(piece) < FRAGMENT else REDACTED)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32-be", "utf-8-sig"])
def test_an_answer_in_another_unicode_encoding_is_scrubbed_too(encoding: str) -> None:
    """JSON in UTF-16 or UTF-32 (which the parser detects) hides the key from a scan
    of the bytes: the decoded strings are still scrubbed."""
    body = json.dumps({"taskName": f"run {ACCESS_KEY}", SECRET_KEY: 1}).encode(encoding)
    decoded = parse_json(redact_bytes(bytearray(body), KEYS), scrubber(KEYS))
    assert decoded == {"taskName": "run <redacted>", "<redacted>": 1}


# --- bounds on a read -------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "bound"), [("endless_listing", "MAX_PAGES"),
                                             ("endless_wide_listing", "MAX_LISTED")])
def test_an_endless_listing_downs_its_own_target_within_bounded_memory(
    kind: str, bound: str, sim: QianfanSimulator, make_exporter: Callable[..., Exporter],
) -> None:
    a = account(sim, name="a", jobs=("job-bad", "job-good"), tasks=((101, 201),))
    exporter = make_exporter(a, poll=POLL)
    sim.add_fault(kind, action="DescribeFineTuningTasks", target="job-bad")
    resettable = reset_peak_rss()
    before = status_bytes("VmRSS")
    tracemalloc.start()
    try:
        exporter.poller.poll_all()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    grown = status_bytes("VmHWM") - before
    print(f"MEASURED {kind}: traced peak {peak / MIB:.1f} MiB, peak RSS +{grown / MIB:.1f} MiB")
    assert peak < 150 * MIB  # (a 400 MB process would be far past this)
    if resettable:
        assert grown < 150 * MIB
    samples = scrape(exporter)
    assert value(samples, "qianfan_target_up", target="job-bad") == 0
    assert value(samples, "qianfan_target_up", target="job-good") == 1
    assert value(samples, "qianfan_target_up", target="101/201") == 1
    assert value(samples, "qianfan_api_request_failures_total",
                 action="DescribeFineTuningTasks", reason="invalid_response") == 1
    state = exporter.poller.snapshot.accounts["a"].targets[("v2", "job-bad")]
    assert state.reason == "invalid_response" and bound in state.error
    pages = sum(1 for entry in sim.stats.log if entry.target == "job-bad")
    assert pages <= MAX_PAGES + 1 and (kind != "endless_wide_listing" or pages == 1)


def test_an_endless_job_listing_keeps_the_configured_targets(
    sim: QianfanSimulator, make_exporter: Callable[..., Exporter],
) -> None:
    a = account(sim, name="a", jobs=("job-good",), discover=True)
    exporter = make_exporter(a, poll=POLL)
    sim.add_fault("endless_listing", action="DescribeFineTuningJobs")
    exporter.poller.poll_all()
    samples = scrape(exporter)
    assert value(samples, "qianfan_target_up", target="job-good") == 1
    assert "MAX_PAGES" in exporter.poller.accounts["a"].discovery.error


class _Fixed(BaseHTTPRequestHandler):
    body = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def _answering(body: bytes) -> Iterator[str]:
    """An HTTP server that answers every POST with ``body``; its URL."""
    handler = type("Answer", (_Fixed,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_million_checkpoints_are_refused_before_they_are_parsed(clock: ManualClock) -> None:
    """One 20 MB answer of checkpoints parsed to about 450 MB; it is now counted first
    and refused, and reading it costs about its own size."""
    checkpoint = b'{"step":1000,"trainingLoss":0.51,"perplexity":1.6}'
    body = (b'{"requestId":"r","result":{"taskId":"t","checkpointList":['
            + b",".join([checkpoint] * 400_000) + b"]}}")
    assert len(body) > 20 * 1000 * 1000
    with _answering(body) as endpoint:
        acc = Account(name="x", access_key=Secret(ACCESS_KEY), secret_key=Secret(SECRET_KEY),
                      endpoint=endpoint, jobs=("j",))
        client = QianfanClient(acc, metrics=ApiMetrics(CollectorRegistry()), clock=clock,
                               retries=0)
        tracemalloc.start()
        try:
            with pytest.raises(InvalidResponse, match="MAX_READ_VALUES") as info:
                client.describe_task("t")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            client.close()
        print(f"MEASURED 20 MB checkpoints answer: traced peak {peak / MIB:.1f} MiB")
        assert peak < 4 * len(body)  # (parsed, it took 22 times its size)
        assert not info.value.retryable


# --- per-run fan-outs -------------------------------------------------------------------------


def _run(metrics: dict[str, Any]) -> Any:
    return parse_v2_run({"taskId": "t", "runStatus": "Done", "metrics": metrics},
                        account="a", job_id="j", read_at=0.0)


def test_evaluation_series_are_bounded_distinct_and_ratios() -> None:
    many = _run({f"m{i:06d}": "50%" for i in range(100_000)})
    assert len(many.evaluation) == MAX_EVALUATION_METRICS
    assert many.evaluation[0][0] == "m000000"  # the first by name
    long = "x" * MAX_LABEL_LENGTH
    names = dict([(long + "a", "1%"), (long + "b", "2%"), ("a\ud800", "3%"),
                  ("a\udfff", "4%"), ("a\ufffd", "5%")])
    run = _run(names)
    labels = [name for name, _ in run.evaluation]
    assert len(labels) == len(set(labels)) == 5
    assert all(len(name) <= MAX_LABEL_LENGTH for name in labels)
    assert all(name.encode("utf-8") for name in labels)  # no lone surrogate left
    assert "a\ufffd" in labels  # an ordinary name is kept as it is
    odd = _run({"big": 1e300, "negative": -0.5, "over": "100.5%", "max": "100%", "zero": 0})
    assert dict(odd.evaluation) == {"max": 1.0, "zero": 0.0}
