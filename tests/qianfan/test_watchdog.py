"""The request's deadline: it covers the headers too, whatever each read's timeout."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from qf_exporter.config.file import Account
from qf_exporter.qianfan import errors
from qf_exporter.qianfan.client import QianfanClient
from qf_exporter.qianfan.telemetry import ApiMetrics
from qf_exporter.util.secrets import Secret
from tests.helpers import ACCESS_KEY, SECRET_KEY


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
