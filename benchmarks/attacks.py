"""Scrape latency and server memory under the HTTP attacks of issue 19, on loopback.

``python -m benchmarks.attacks [--runs 2400]``: a server of the page of ``--runs`` runs
(``tests/page_server.py``, 3.4 MB plain at 2,400) in a process of its own; a keep-alive
gzip scraper in this process measures p50/p99 while each attack runs, and the server's
resident memory is read from /proc. Prints a Markdown table (docs/security.md holds
a run of it). The tests (``tests/system/test_http_pressure.py``) run the same
attacks with wide bounds and no timings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

from benchmarks.common import ROOT

GET_PLAIN = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n"
MANY_LINES = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"a:b\r\n" * 200_000 + b"\r\n"


class Server:
    def __init__(self, runs: int, web_config: str = "") -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        args = [sys.executable, "-m", "tests.page_server", str(runs)]
        self.proc = subprocess.Popen([*args, *filter(None, [web_config])], cwd=ROOT, env=env,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        self.port = int(line.rsplit(":", 1)[1])

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise KeyError("VmRSS")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def not_reading(port: int, raw: bytes = GET_PLAIN,
                wrap: Callable[[socket.socket], socket.socket] | None = None) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # no loopback autotuning
    sock.connect(("127.0.0.1", port))
    if wrap is not None:
        sock = wrap(sock)
    sock.sendall(raw)
    return sock


def scrape_times(port: int, count: int, *, gzip: bool = True, path: str = "/metrics"
                 ) -> tuple[list[float], list[int]]:
    """Latencies in ms of ``count`` keep-alive scrapes (of ``path``), and their statuses."""
    session = requests.Session()
    headers = {} if gzip else {"Accept-Encoding": "identity"}
    times, codes = [], []
    for _ in range(count):
        start = time.perf_counter()
        response = session.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=60)
        times.append((time.perf_counter() - start) * 1000)
        codes.append(response.status_code)
    return times, codes


def p(times: list[float], q: float) -> float:
    return sorted(times)[min(len(times) - 1, int(q * len(times)))]


def summary(times: list[float], codes: list[int]) -> str:
    served = sum(c == 200 for c in codes)
    return (f"p50 / p99 {statistics.median(times):.1f} / {p(times, 0.99):.1f} ms, "
            f"{served}/{len(codes)} answered 200, the rest 503")


@contextlib.contextmanager
def while_running(attack: Callable[[threading.Event], None], threads: int) -> Iterator[None]:
    stop = threading.Event()
    workers = [threading.Thread(target=attack, args=(stop,), daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)


def many_lines(port: int) -> Callable[[threading.Event], None]:
    def attack(stop: threading.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(MANY_LINES)
                while sock.recv(1 << 16):
                    pass
    return attack


def pipelining(port: int) -> Callable[[threading.Event], None]:
    burst = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n" * 50

    def attack(stop: threading.Event) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            reader = threading.Thread(target=drain, args=(sock,), daemon=True)
            reader.start()
            while not stop.is_set():
                sock.sendall(burst)
            sock.shutdown(socket.SHUT_WR)
            reader.join(timeout=60)
    return attack


def drain(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while sock.recv(1 << 20):
            pass


def readers_row(server: Server, count: int) -> str:
    base = server.rss_mb()
    socks = [not_reading(server.port) for _ in range(count)]
    for sock in socks:
        sock.recv(1, socket.MSG_PEEK)
    held = server.rss_mb()
    start = time.perf_counter()
    code = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=60).status_code
    took = (time.perf_counter() - start) * 1000
    for sock in socks:
        sock.close()
    time.sleep(2)  # the trim runs a second after they leave
    return (f"resident {base:.0f} → {held:.0f} MB (+{held - base:.1f}), {server.rss_mb():.0f} MB "
            f"after they left; a scrape meanwhile: {code} in {took:.0f} ms")


def tls_rows(runs: int) -> list[tuple[str, str]]:
    sys.path.insert(0, str(ROOT))
    from tests.webconfig_fixtures import CA

    with tempfile.TemporaryDirectory() as directory:
        ca = CA(Path(directory), "bench-ca")
        issued = ca.issue("server", server=True)
        config = Path(directory) / "web.yml"
        config.write_text(f"tls_server_config:\n  cert_file: {issued.cert}\n"
                          f"  key_file: {issued.key}\n")
        server = Server(runs, str(config))
        context = ssl.create_default_context(cafile=str(ca.files.cert))
        try:
            def wrap(sock: socket.socket) -> socket.socket:
                return context.wrap_socket(sock, server_hostname="localhost")

            base = server.rss_mb()
            # 400: the page server's connection bound is the default 512.
            idle = [wrap(socket.create_connection(("127.0.0.1", server.port)))
                    for _ in range(400)]
            added = server.rss_mb() - base
            rows = [("400 idle TLS connections",
                     f"+{added:.1f} MB resident, {added / 400 * 1024:.0f} KB each "
                     "(before: 336 KB each)")]
            for sock in idle:
                sock.close()
            time.sleep(2)
            base = server.rss_mb()
            readers = [not_reading(server.port, wrap=wrap) for _ in range(100)]
            for sock in readers:
                sock.recv(1)
            rows.append(("100 TLS clients of the page that never read",
                         f"+{server.rss_mb() - base:.1f} MB resident"))
            for sock in readers:
                sock.close()
        finally:
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2400)
    parser.add_argument("--scrapes", type=int, default=200)
    a = parser.parse_args()
    rows: list[tuple[str, str]] = []
    server = Server(a.runs)
    try:
        rows.append(("idle: gzip scrapes", summary(*scrape_times(server.port, a.scrapes))))
        rows.append(("300 clients of the plain page that never read",
                     readers_row(server, 300)))
        with while_running(many_lines(server.port), 16):
            rows.append(("16 clients sending heads of 200,000 header lines, over and over",
                         summary(*scrape_times(server.port, a.scrapes))))
        with while_running(pipelining(server.port), 1):
            rows.append(("one client pipelining gzip scrapes back to back",
                         summary(*scrape_times(server.port, a.scrapes))))
    finally:
        server.stop()
    big = Server(a.runs * 2)  # over 4 MiB: sent from sender threads
    try:
        socks = [not_reading(big.port) for _ in range(40)]
        for sock in socks:
            sock.recv(1, socket.MSG_PEEK)
        rows.append(("a plain scrape behind 40 clients that never read (6.9 MB page)",
                     summary(*scrape_times(big.port, 20, gzip=False))))
        rows.append(("`/-/healthy` behind the same 40 (light slots of its own)",
                     summary(*scrape_times(big.port, 20, path="/-/healthy"))))
        for sock in socks:
            sock.close()
    finally:
        big.stop()
    rows.extend(tls_rows(a.runs))
    print("| attack (loopback) | measured |\n| --- | --- |")
    for label, cell in rows:
        print(f"| {label} | {cell} |")


if __name__ == "__main__":
    main()
