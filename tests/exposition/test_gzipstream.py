"""The gzip answer is one gzip member, so every common client reads it whole.

Pieces compressed apart as gzip members of their own would be a valid stream too, but
curl and wget stop after the first member and urllib3 from 2.6 repeats or drops data
when it streams them: these tests read the exporter's answer the way those clients do.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.response import HTTPResponse

from qf_exporter.app import Exporter
from qf_exporter.exposition import gzipstream
from qf_exporter.exposition.store import RunStore
from qf_exporter.simulator import QianfanSimulator, World
from tests.helpers import (
    ManualClock,
    account,
    free_port,
    parse_samples,
    promql,
    require_tool,
    serve,
)

pieces = st.lists(st.binary(max_size=3000), max_size=30)


def joined(parts: list[bytes], head: bytes) -> bytes:
    crc = zlib.crc32(head, zlib.crc32(b"".join(parts)))
    size = sum(map(len, parts)) + len(head)
    body = b"".join(gzipstream.segment(p) for p in [*parts, head])
    return gzipstream.HEADER + body + gzipstream.END + gzipstream.trailer(crc, size)


@settings(max_examples=100, deadline=None)
@given(pieces, st.binary(max_size=500))
def test_segments_join_into_one_member(parts: list[bytes], head: bytes) -> None:
    answer = joined(parts, head)
    assert gzip.decompress(answer) == b"".join(parts) + head
    # One member: a reader that stops at the first member's end still gets everything.
    one = zlib.decompressobj(zlib.MAX_WBITS | 16)
    assert one.decompress(answer) == b"".join(parts) + head
    assert one.eof and one.unused_data == b""


@settings(max_examples=50, deadline=None)
@given(pieces, st.sampled_from([1024, 10 * 1024]))
def test_urllib3_streams_it_whole(parts: list[bytes], chunk: int) -> None:
    # requests reads answers with urllib3's stream(10 KiB).
    answer = joined(parts, b"")
    response = HTTPResponse(body=io.BytesIO(answer), headers={"content-encoding": "gzip"},
                            preload_content=False, decode_content=True)
    assert b"".join(response.stream(chunk)) == b"".join(parts)


@pytest.fixture
def busy_exporter(world: World, sim: QianfanSimulator, clock: ManualClock,
                  make_exporter: Callable[..., Exporter]) -> Exporter:
    """An exporter whose page has hundreds of pieces (small buckets and blocks, many runs)."""
    for j in range(6):
        world.add_job(f"job-{j}", created=clock() - 3600)
        for r in range(40):
            world.add_run(f"job-{j}", f"task-{j}-{r:02d}", created=clock() - 3000 + r,
                          wait=0, duration=600 + 100 * r)
    exporter = make_exporter(account(sim, jobs=tuple(world.jobs)))
    exporter.current_page.store = RunStore(bucket_runs=4, block_bytes=64)
    exporter.poller.poll_all()
    serve(exporter)
    assert len(exporter.current_page.page.runs) > 500
    return exporter


def _url(exporter: Exporter) -> str:
    assert exporter.server is not None
    return f"http://127.0.0.1:{exporter.server.port}/metrics"


def test_requests_reads_the_whole_answer(busy_exporter: Exporter) -> None:
    plain = requests.get(_url(busy_exporter), headers={"Accept-Encoding": "identity"},
                         timeout=10)
    zipped = requests.get(_url(busy_exporter), timeout=10)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.content == plain.content
    samples = parse_samples(zipped.content)
    assert len([k for k in samples if k[0] == "qianfan_finetune_run_info"]) == 240


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_curl_and_wget_read_the_whole_answer(busy_exporter: Exporter, tool: str) -> None:
    path = require_tool(tool)
    command = ([path, "-sS", "--compressed", _url(busy_exporter)] if tool == "curl" else
               [path, "-q", "-O", "-", "--compression=gzip", _url(busy_exporter)])
    result = subprocess.run(command, capture_output=True, timeout=30, check=True)
    plain = requests.get(_url(busy_exporter), headers={"Accept-Encoding": "identity"},
                         timeout=10)
    assert result.stdout == plain.content


def test_a_real_prometheus_reads_the_chained_segments(busy_exporter: Exporter,
                                                      tmp_path: Path) -> None:
    # Go's gzip reader, as Prometheus scrapes: hundreds of blocks whose segments each
    # take the text before them as dictionary. Every sample of the page must arrive.
    prometheus = require_tool("prometheus")
    expected = parse_samples(requests.get(
        _url(busy_exporter), headers={"Accept-Encoding": "identity"}, timeout=10).content)
    target = _url(busy_exporter).removeprefix("http://").removesuffix("/metrics")
    config = {"global": {"scrape_interval": "1s"},
              "scrape_configs": [{"job_name": "gzip", "static_configs": [
                  {"targets": [target]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (tmp_path / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            api = f"http://127.0.0.1:{port}/api/v1"

            def scraped() -> list[dict[str, Any]]:
                assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
                try:
                    return promql(api, 'scrape_samples_scraped{job="gzip"}')
                except requests.ConnectionError:
                    return []

            deadline = time.monotonic() + 60
            while not (found := scraped()):
                # Prometheus is another process: ask again, within a bound.
                assert time.monotonic() < deadline, "Prometheus did not scrape in 60 s"
                time.sleep(0.5)
            (sample,) = found
            runs = promql(api, 'count(qianfan_finetune_run_info{job="gzip"})')
            up = promql(api, 'up{job="gzip"}')
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert up[0]["value"][1] == "1"
    assert runs[0]["value"][1] == "240"
    # Everything the page holds (the per-scrape part may differ by a sample or two).
    assert abs(int(sample["value"][1]) - len(expected)) <= 5
