"""The HTTP side: /metrics, /-/healthy, /-/ready, /-/reload and the landing page.

A scrape never calls Qianfan: it serves run metrics already rendered by the
poller (plain, or as a ready gzip member) after the few health metrics that
prometheus_client renders on the spot. Two gzip members in a row are one valid
gzip stream, so the gzip answer costs one small compression per scrape.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from qf_exporter.landing import landing_page
from qf_exporter.snapshot import Snapshot
from qf_exporter.store import Rendered
from qf_exporter.webconfig import WebConfig

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        *,
        registry: CollectorRegistry,
        rendered: Callable[[], Rendered],
        snapshot: Callable[[], Snapshot],
        ready: threading.Event,
        telemetry_path: str = "/metrics",
        web_config: WebConfig | None = None,
        reload: Callable[[], tuple[bool, str]] | None = None,
        version: str = "",
    ) -> None:
        self.registry = registry
        self.rendered = rendered
        self.snapshot = snapshot
        self.ready = ready
        self.telemetry_path = telemetry_path
        self.web_config = web_config or WebConfig()
        self.reload = reload
        self.version = version
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        if self.web_config.ssl_context is not None:
            # The handshake happens in the handler's thread (see _Handler.setup), so a
            # slow or broken client cannot stall the accept loop.
            self.socket = self.web_config.ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="http", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: ExporterHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "qf-exporter"
    timeout = 30  # an idle or slow client gives up its thread after this long
    # Headers and body go out in separate writes; without this a small answer waits for
    # the client's delayed ACK (40 ms) on every keep-alive scrape.
    disable_nagle_algorithm = True

    def handle(self) -> None:
        # The TLS handshake runs here, in this connection's own thread, with the
        # handler's timeout; a failed one is the client's problem, logged at debug.
        do_handshake = getattr(self.request, "do_handshake", None)
        if do_handshake is not None:
            try:
                do_handshake()
            except (OSError, ValueError) as exc:
                log.debug(
                    "TLS handshake failed",
                    extra={"client": self.client_address[0], "error": type(exc).__name__},
                )
                return
        with contextlib.suppress(ConnectionError, TimeoutError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(
            "http request", extra={"client": self.client_address[0], "request": format % args}
        )

    # --- routing ------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        if path == self.server.telemetry_path:
            self._metrics()
        elif path == "/-/healthy":
            self._text(200, "Healthy\n")
        elif path == "/-/ready":
            if self.server.ready.is_set():
                self._text(200, "Ready\n")
            else:
                self._text(503, "Not ready: the first poll has not finished\n")
        elif path == "/":
            page = landing_page(
                self.server.snapshot(),
                telemetry_path=self.server.telemetry_path,
                version=self.server.version,
            )
            self._send(200, page.encode(), "text/html; charset=utf-8")
        else:
            self._text(404, "Not found\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        if not self._authorized():
            return
        if self.path.split("?", 1)[0] != "/-/reload":
            self._text(405, "Method not allowed\n")
            return
        if self.server.reload is None:
            self._text(404, "Reloading is not available in this mode\n")
            return
        ok, message = self.server.reload()
        self._text(200 if ok else 500, message + "\n")

    # --- pieces -------------------------------------------------------------------------

    def _authorized(self) -> bool:
        users = self.server.web_config.users
        if not users:
            return True
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
                user, _, password = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            if self.server.web_config.check(user, password):
                return True
        body = b"Unauthorized\n"
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="qf-exporter", charset="UTF-8"')
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return False

    def _metrics(self) -> None:
        rendered = self.server.rendered()
        health = generate_latest(self.server.registry)
        accepts = self.headers.get("Accept-Encoding", "")
        if "gzip" in accepts.lower():
            parts = rendered.gzipped(health)
            self._send(200, tuple(parts), CONTENT_TYPE, {"Content-Encoding": "gzip"})
        else:
            self._send(200, tuple(rendered.plain(health)), CONTENT_TYPE)

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _send(
        self,
        status: int,
        body: bytes | tuple[bytes, ...],
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        parts = (body,) if isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(len(p) for p in parts)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            write_pieces(self.wfile.write, parts)


# Pieces are written in batches of about this many bytes: one system call per piece
# would be thousands per scrape, and joining them all would copy ~28 MB per scrape.
_BATCH = 256 * 1024


def write_pieces(write: Callable[[bytes], object], pieces: Iterable[bytes]) -> None:
    """Write ``pieces`` in order, copying at most ``_BATCH`` bytes at a time."""
    batch: list[bytes] = []
    size = 0
    for piece in pieces:
        if len(piece) >= _BATCH:
            if batch:
                write(b"".join(batch))
                batch, size = [], 0
            write(piece)
            continue
        batch.append(piece)
        size += len(piece)
        if size >= _BATCH:
            write(b"".join(batch))
            batch, size = [], 0
    if batch:
        write(b"".join(batch))
