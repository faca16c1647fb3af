"""Reading one answer: the deadline covers the headers too, inflating is bounded and
complete, pathological JSON is a ValueError, and messages are cut."""

from __future__ import annotations

import gzip
import io
import socket
import threading
import time
import zlib
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from qf_exporter.config.file import Account, Secret
from qf_exporter.qianfan import errors, upstream
from qf_exporter.qianfan.client import QianfanClient
from qf_exporter.qianfan.telemetry import ApiMetrics
from tests.helpers import ACCESS_KEY, SECRET_KEY


class _Raw:
    """Stands in for a urllib3 response: hands out the given pieces."""

    def __init__(self, data: bytes, piece: int = 7) -> None:
        self._io = io.BytesIO(data)
        self._piece = piece

    def read(self, amount: int, decode_content: bool = False) -> bytes:
        assert decode_content is False
        return self._io.read(min(amount, self._piece))


def _read(data: bytes, encoding: str = "", cap: int = 1 << 20) -> bytes:
    with upstream.watched(time.monotonic() + 600) as watch:
        return bytes(upstream.read_body(_Raw(data), encoding, watch, cap))


def test_gzip_and_deflate_are_inflated_whole_even_in_several_members() -> None:
    text = b'{"result": {"taskList": []}}'
    assert _read(gzip.compress(text), "gzip") == text
    assert _read(gzip.compress(text[:10]) + gzip.compress(text[10:]), "gzip") == text
    assert _read(zlib.compress(text), "deflate") == text
    assert _read(text, "identity") == text
    with pytest.raises(errors.InvalidResponse):
        _read(text, "br")
    with pytest.raises(errors.InvalidResponse):
        _read(b"\x1f\x8b garbage", "gzip")


def test_the_cap_counts_decoded_bytes() -> None:
    bomb = gzip.compress(b" " * (4 << 20))  # 4 MiB in a few KiB
    assert len(bomb) < 64 * 1024
    with pytest.raises(upstream.TooLarge):
        _read(bomb, "gzip", cap=1 << 20)
    assert len(_read(bomb, "gzip", cap=4 << 20)) == 4 << 20
    with pytest.raises(upstream.TooLarge):
        _read(b"x" * 101, cap=100)


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,  # not caught by the look at the start
    b" \n[" + b"[" * 70 + b"]" * 71,
])
def test_pathological_nesting_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        upstream.parse_json(body)


def test_ordinary_nesting_parses() -> None:
    assert upstream.parse_json(b'{"result": {"taskList": [{"metrics": {"a": [1]}}]}}')
    assert upstream.parse_json(b"[" * 60 + b"]" * 60)


def test_scrub_and_cut() -> None:
    body = bytearray(b'{"name": "AKxyz-AKxyz2", "other": "AKxyz"}')
    assert upstream.scrub_bytes(body, ["AKxyz", "AKxyz2", ""]) == bytearray(
        b'{"name": "<redacted>-<redacted>", "other": "<redacted>"}')
    assert upstream.cut_message("x" * 1000) == "x" * upstream.MAX_UPSTREAM_MESSAGE + "…"
    assert upstream.cut_message("short") == "short"


def test_the_deadline_covers_headers_that_drip() -> None:
    """A server that sends its status line and then one header byte a second: the
    per-read timeout never fires, the request's deadline does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    outcome: dict[str, Any] = {}
    released = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            sent = 0
            try:
                for _ in range(120):  # two minutes of header, were the client to wait
                    if released.wait(0.5):
                        break
                    conn.sendall(b"X")
                    sent += 1
            except OSError:
                outcome["client_gave_up_after"] = sent
            outcome["sent"] = sent

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    host, port = listener.getsockname()
    client = QianfanClient(
        Account(name="t", access_key=Secret(ACCESS_KEY), secret_key=Secret(SECRET_KEY),
                endpoint=f"http://{host}:{port}", qps=100, jobs=("job-1",)),
        metrics=ApiMetrics(CollectorRegistry()), timeout=1.5, retries=0,
    )
    try:
        with pytest.raises(errors.Timeout):
            client.describe_tasks("job-1")
    finally:
        client.close()
        server.join(timeout=130)
        released.set()
        listener.close()
    # The server noticed the client hang up long before its header was done.
    assert "client_gave_up_after" in outcome and outcome["sent"] < 120
