"""Item 2: ``/metrics`` latency with concurrent keep-alive scrapers, plain and gzip,
against the exporter of ``serve.py`` and against the floor this machine sets (a bare
``http.server`` sending the same bytes), the two taking turns in rounds.

Each scraper is a process of its own (``scrape-child``) that reads answers into a
reused buffer, as Prometheus does; the floor is the ``bare-child`` process.
"""

from __future__ import annotations

import gzip
import http.client
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import (
    Settings,
    emit,
    finish,
    percentile,
    read_json,
    size_label,
    spawn_child,
    tell,
)


@dataclass
class ScrapeResult:
    latencies: list[float]
    body_bytes: int
    wall: float
    errors: list[str] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.wall


@dataclass(frozen=True)
class ScrapesResult:
    """The exporter's answers and the bare server's, each plain and gzip."""

    plain: ScrapeResult
    gzip: ScrapeResult
    bare_plain: ScrapeResult
    bare_gzip: ScrapeResult

    def mode(self, name: str) -> ScrapeResult:
        result: ScrapeResult = getattr(self, name)
        return result


class BodyReader:
    """Reads answers into one reused buffer, as Prometheus does (it pools its scrape
    buffers): a fresh 28 MB ``bytes`` per scrape would time this process's allocator."""

    def __init__(self) -> None:
        self.buf = bytearray(1 << 20)

    def read(self, resp: http.client.HTTPResponse) -> memoryview:
        n = int(resp.getheader("Content-Length") or 0)
        if len(self.buf) < n:
            self.buf = bytearray(n)
        view = memoryview(self.buf)[:n]
        got = 0
        while got < n:
            k = resp.readinto(view[got:])
            if not k:
                raise EOFError(f"answer ended after {got} of {n} bytes")
            got += k
        return view


class Scraper:
    """One keep-alive connection reading ``/metrics`` into a reused buffer."""

    def __init__(self, port: int, encoding: str) -> None:
        self.encoding = encoding
        self.headers = {"Accept-Encoding": encoding, "Connection": "keep-alive"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.reader = BodyReader()
        self.errors: list[str] = []

    def get(self) -> tuple[http.client.HTTPResponse, memoryview]:
        self.conn.request("GET", "/metrics", headers=self.headers)
        r = self.conn.getresponse()
        body = self.reader.read(r)
        if r.status != 200:
            self.errors.append(f"status {r.status}")
        return r, body

    def first(self) -> None:
        """The untimed scrape, which also checks a gzip answer is one."""
        r, body = self.get()
        if self.encoding == "gzip":
            if r.getheader("Content-Encoding") != "gzip":
                self.errors.append("gzip asked for, not given")
            else:
                gzip.decompress(body)  # a valid stream (of several members)


def child(port: int, encoding: str, count: int) -> None:
    """The ``scrape-child`` subcommand: one untimed scrape, then ``count`` timed ones after
    the parent says go. A process of its own, as real scrapers are: scraper threads
    sharing one interpreter would time each other's GIL waits."""
    scraper = Scraper(port, encoding)
    latencies: list[float] = []
    size = 0
    ready = False
    try:
        scraper.first()
        emit({"ready": True})
        ready = True
        sys.stdin.readline()  # go
        for _ in range(count):
            t0 = time.perf_counter()
            _, body = scraper.get()
            latencies.append(time.perf_counter() - t0)
        size = len(body)
    except Exception as exc:
        scraper.errors.append(f"{type(exc).__name__}: {exc}")
        if not ready:  # the parent still waits for this line
            emit({"ready": False})
    finally:
        scraper.conn.close()
    emit({"latencies": latencies, "size": size, "errors": scraper.errors})


def scrape(port: int, encoding: str, scrapers: int, count: int) -> ScrapeResult:
    """``scrapers`` scraper processes, each one keep-alive connection, ``count`` scrapes
    each, all started together."""
    procs = [spawn_child("scrape-child", str(port), encoding, str(count))
             for _ in range(scrapers)]
    try:
        errors: list[str] = []
        for proc in procs:
            if not read_json(proc).get("ready"):
                errors.append("a scraper could not connect")
        t0 = time.perf_counter()
        for proc in procs:
            tell(proc, "go")
        results = [read_json(proc) for proc in procs]
        wall = time.perf_counter() - t0
    finally:
        for proc in procs:
            finish(proc)
    flat = sorted(x for r in results for x in r["latencies"])
    errors += [e for r in results for e in r["errors"]]
    return ScrapeResult(flat, max(r["size"] for r in results), wall, errors)


def bare_child(exporter_port: int) -> None:
    """The ``bare-child`` subcommand, the floor: Python's own HTTP server answering every
    scrape with bytes it fetched once from the exporter (plain, and gzip)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies = {}
    for encoding in ("identity", "gzip"):
        conn = http.client.HTTPConnection("127.0.0.1", exporter_port, timeout=60)
        conn.request("GET", "/metrics", headers={"Accept-Encoding": encoding})
        bodies[encoding] = conn.getresponse().read()
        conn.close()

    class Bare(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            gz = "gzip" in self.headers.get("Accept-Encoding", "")
            body = bodies["gzip" if gz else "identity"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            if gz:
                self.send_header("Content-Encoding", "gzip")
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Bare)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    emit({"port": server.server_address[1]})
    sys.stdin.readline()
    server.shutdown()


# Rounds the scrapes are split into, the exporter and the bare server taking turns (and
# turns at going first), so that what else the machine does meanwhile falls on both.
ROUNDS = 4


def per_round(settings: Settings) -> int:
    """Timed scrapes per scraper in each round."""
    return max(1, settings.scrapes // ROUNDS)


def served(settings: Settings) -> int:
    """Scrapes the exporter answers in ``measure``: plain and gzip, each round one
    untimed scrape per scraper and its timed ones."""
    return 2 * ROUNDS * settings.scrapers * (per_round(settings) + 1)


def measure(port: int, settings: Settings) -> ScrapesResult:
    """The exporter on ``port`` and the bare server sending the same bytes, in
    ``ROUNDS`` interleaved rounds; each mode's latencies pooled over the rounds."""
    bare = spawn_child("bare-child", str(port))
    count = per_round(settings)
    runs: dict[tuple[str, str], list[ScrapeResult]] = {}
    try:
        bare_port = read_json(bare)["port"]
        for r in range(ROUNDS):
            servers = [("exporter", port), ("bare", bare_port)]
            for encoding in ("identity", "gzip"):
                for name, at in servers if r % 2 == 0 else servers[::-1]:
                    result = scrape(at, encoding, settings.scrapers, count)
                    runs.setdefault((name, encoding), []).append(result)
    finally:
        finish(bare)
    pooled = {key: _pooled(results) for key, results in runs.items()}
    return ScrapesResult(pooled["exporter", "identity"], pooled["exporter", "gzip"],
                         pooled["bare", "identity"], pooled["bare", "gzip"])


def _pooled(results: list[ScrapeResult]) -> ScrapeResult:
    return ScrapeResult(
        sorted(x for r in results for x in r.latencies),
        max(r.body_bytes for r in results),
        sum(r.wall for r in results),
        [e for r in results for e in r.errors],
    )


def notes(runs: int, r: ScrapesResult) -> list[str]:
    """Nagle stalls and scrape errors, which the latency rows alone do not explain."""
    out = []
    for mode in ("plain", "gzip"):
        sr = r.mode(mode)
        if 35 <= sr.p50_ms <= 50 and sr.body_bytes < 65536:
            out.append(f"item 2, {size_label(runs)}: {mode} p50 {sr.p50_ms:.1f} ms for a "
                       f"{sr.body_bytes / 1024:.0f} KB answer: the size of Linux's delayed-ACK "
                       f"timer, i.e. a Nagle stall on the exporter's keep-alive socket")
        if sr.errors:
            out.append(f"{size_label(runs)} {mode} scrape errors: {sr.errors[:3]}")
    return out


def floor_note(r: ScrapesResult, mode: str) -> str:
    """The bare server's figures, beside a failed latency target."""
    floor = r.mode(f"bare_{mode}")
    return (f"a bare `http.server` sending the same bytes: p50 {floor.p50_ms:.1f} ms, "
            f"p99 {floor.p99_ms:.1f} ms")
