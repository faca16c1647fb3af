"""What a client on the network can do before authenticating, tried on loopback.

Each attack is bounded in count and time. Memory and CPU bounds are asserted with wide
margins (docs/security.md has the measured figures); the rest asserts
behaviour: exactly one answer or a closed connection, a real scraper still answered.
"""

from __future__ import annotations

import contextlib
import re
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
import requests

from qf_exporter.simulator import QianfanSimulator
from qf_exporter.simulator.scenario import demo_world
from qf_exporter.web.routes import ExporterHTTPServer
from qf_exporter.web.server import Limits
from tests.conftest import EmptyServer
from tests.daemon import Daemon

# --- an in-process server with small limits ----------------------------------------------


@pytest.fixture
def serve(empty_server: EmptyServer) -> Callable[..., ExporterHTTPServer]:
    def start(limits: Limits, **kw: object) -> ExporterHTTPServer:
        return empty_server(limits=limits, **kw)

    return start


def exchange(port: int, raw: bytes, timeout: float = 20) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


def statuses(answer: bytes) -> list[int]:
    """The status of every answer in the bytes (bodies here never hold "HTTP/1.")."""
    return [int(status) for status in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)]


SMUGGLED = b"GET /-/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


# --- request desync --------------------------------------------------------------------

DESYNC = {
    # name: (raw request, the one status it must get before the connection closes)
    "reload-body-holds-a-request": (
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        % (len(SMUGGLED), SMUGGLED),
        403,
    ),
    "get-with-a-body": (
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        % (len(SMUGGLED), SMUGGLED),
        200,
    ),
    "chunked-body-holds-a-request": (
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
        403,
    ),
    "chunked-and-content-length": (
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "content-length-and-chunked": (
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 4\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "two-different-content-lengths": (
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED),
        400,
    ),
    "two-equal-content-lengths": (
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLED), len(SMUGGLED), SMUGGLED),
        403,
    ),
    "negative-content-length": (
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n" + SMUGGLED,
        400,
    ),
    "signed-content-length": (
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n" + SMUGGLED,
        400,
    ),
    "unknown-transfer-coding": (
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        + SMUGGLED,
        501,
    ),
}


@pytest.mark.parametrize("name", list(DESYNC))
def test_every_desync_shape_gets_one_answer_or_a_close(serve, name: str) -> None:  # type: ignore[no-untyped-def]
    server = serve(Limits(idle_timeout=5, header_timeout=5))
    raw, want = DESYNC[name]
    answer = exchange(server.port, raw)
    got = statuses(answer)
    assert b"smuggled" not in answer
    assert got == [want], answer


def test_pipelined_requests_without_bodies_are_each_answered(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(Limits())
    raw = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n" * 2
    raw += b"GET /-/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert statuses(exchange(server.port, raw)) == [200, 200, 200]


# --- headers: size and deadline --------------------------------------------------------


def test_oversized_headers_get_431(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(Limits(max_header_bytes=64 << 10))
    raw = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * (100 << 10) + b"\r\n\r\n"
    assert statuses(exchange(server.port, raw)) == [431]


def test_stalled_headers_are_cut_at_the_deadline_while_a_scraper_is_answered(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(Limits(header_timeout=1.0))
    stalled = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        stalled.append(sock)
    try:
        for _ in range(5):
            response = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
            assert response.status_code == 200
        for sock in stalled:
            # The server gives up on the head and closes; nothing is answered.
            assert sock.recv(100) == b""
    finally:
        for sock in stalled:
            sock.close()


def test_idle_keep_alive_connections_are_closed(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(Limits(idle_timeout=0.5))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"Healthy\n" not in answer:
            answer += sock.recv(4096)
        assert statuses(answer) == [200]
        assert sock.recv(100) == b""  # closed once idle


# --- connections and requests in flight ------------------------------------------------


def test_connections_beyond_the_bound_are_closed_at_once(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(Limits(max_connections=3))
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(3)]
    try:
        for sock in held:  # each is being served: its request gets an answer
            sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            assert statuses(sock.recv(4096)) == [200]
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as extra:
            extra.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):  # closed, maybe with a reset
                assert extra.recv(100) == b""
    finally:
        for sock in held:
            sock.close()


def test_requests_beyond_the_bound_get_503(serve) -> None:  # type: ignore[no-untyped-def]
    pending: Future[tuple[bool, str]] = Future()
    called = threading.Event()

    def reload() -> Future[tuple[bool, str]]:
        called.set()
        return pending

    server = serve(Limits(max_requests=1), reload=reload, lifecycle=True)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as busy:
        busy.sendall(b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert called.wait(10)
        # The reload is in flight (it waits for `pending`): the next request is refused.
        response = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        # Health, readiness and the landing page have slots of their own.
        for path in ("/-/healthy", "/-/ready", "/"):
            assert requests.get(f"http://127.0.0.1:{server.port}{path}", timeout=10).ok
        pending.set_result((True, "configuration reloaded"))
        assert statuses(busy.recv(4096)) == [200]
    assert requests.get(f"http://127.0.0.1:{server.port}/-/healthy", timeout=10).ok


# --- the whole daemon --------------------------------------------------------------------


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    running = Daemon(["--demo", "--web.listen-address=127.0.0.1:0"])
    yield running
    code, err = running.stop()
    assert code == 0, err
    assert "Traceback" not in err


def attack_with_big_heads(port: int, connections: int) -> list[bytes]:
    """Each connection sends 98 header lines of 64 KB (6 MB) and reads what comes back."""
    line = b"X-Pad: " + b"a" * (64 << 10) + b"\r\n"
    answers: list[bytes] = []

    def one() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            try:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                for _ in range(98):
                    sock.sendall(line)
            except OSError:
                pass  # the server answered 431 and closed while we were still sending
            try:
                answers.append(sock.recv(200))
            except OSError:
                answers.append(b"")

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_big_heads_from_many_connections_cost_little_memory(daemon: Daemon) -> None:
    url = f"http://127.0.0.1:{daemon.port}/metrics"
    assert requests.get(url, timeout=10).status_code == 200
    before = daemon.status("VmRSS")
    answers = attack_with_big_heads(daemon.port, 50)
    assert len(answers) == 50
    assert all(a.startswith(b"HTTP/1.1 431 ") or a == b"" for a in answers), set(answers)
    assert sum(a.startswith(b"HTTP/1.1 431 ") for a in answers) >= 25
    # 50 x 6 MB sent; about 30 MB measured at the peak. Before: 300 MB and more.
    assert daemon.status("VmHWM") - before < 60_000, (before, daemon.status("VmHWM"))
    assert requests.get(url, timeout=10).status_code == 200


def test_hundreds_of_slow_connections_while_a_scraper_is_answered(daemon: Daemon) -> None:
    slow = []
    try:
        for _ in range(500):
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=30)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(sock)
        session = requests.Session()
        for _ in range(10):
            response = session.get(f"http://127.0.0.1:{daemon.port}/metrics", timeout=10)
            assert response.status_code == 200
            assert b"qianfan_exporter_build_info" in response.content
        assert requests.get(f"http://127.0.0.1:{daemon.port}/-/healthy", timeout=10).ok
    finally:
        for sock in slow:
            sock.close()


def test_descriptor_exhaustion_neither_spins_nor_stops_serving(tmp_path: Path) -> None:
    limit = 96

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    # Not --demo: its simulated Qianfan would run in the exporter's process, and it is
    # an http.server, whose accept loop does spin without descriptors.
    world = demo_world(time.time)
    simulator = QianfanSimulator(world, {"AKattack": "SKattack"}).start()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"accounts:\n  - name: a\n    endpoint: {simulator.url}\n    access_key: AKattack\n"
        f"    secret_key: SKattack\n    jobs: [{', '.join(sorted(world.jobs))}]\n"
    )
    config.chmod(0o600)
    # --web.max-connections above the descriptor limit, so that accept() really fails.
    try:
        running = Daemon(
            [f"--config.file={config}", "--web.listen-address=127.0.0.1:0",
             "--web.max-connections=1000"],
            preexec_fn=lower_limit,
        )
        try:
            _exhaust_descriptors(running, limit)
        finally:
            if running.proc.poll() is None:
                running.proc.kill()
                running.proc.wait(timeout=30)
    finally:
        simulator.stop()


def _exhaust_descriptors(running: Daemon, limit: int) -> None:
    held = []
    try:
        for _ in range(limit + 50):
            try:
                held.append(socket.create_connection(("127.0.0.1", running.port), timeout=30))
            except OSError as exc:
                alive = running.proc.poll() is None
                raise AssertionError(
                    f"connection {len(held) + 1} failed ({exc}); exporter alive: {alive}\n"
                    + "".join(running.lines)
                ) from None
        cpu_before = running.cpu_seconds()
        time.sleep(3)  # hold the descriptors: a spinning accept loop would burn 3 s of CPU
        cpu_used = running.cpu_seconds() - cpu_before
        assert cpu_used < 1.0, cpu_used  # measured: 0.01 s
    finally:
        for sock in held:
            sock.close()
    # Once the clients are gone, a scrape is answered (the accept loop resumed).
    response = requests.get(f"http://127.0.0.1:{running.port}/metrics", timeout=30)
    assert response.status_code == 200
    code, err = running.stop()
    assert code == 0, err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if "cannot accept connections" in line]
    assert warnings, err  # it did run out of descriptors...
    assert len(warnings) <= 10, err  # ...and backed off: about one line a second, not a flood
