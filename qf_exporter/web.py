"""The exporter's HTTP endpoints: /metrics, /-/healthy, /-/ready, /-/reload and `/`.

Routing, basic auth, the rate limit and the lifecycle gate; the connection handling
lives in ``server`` and the metrics answer in ``exposition``. A scrape never calls
Qianfan: it serves run metrics the poller already rendered (plain, or as a ready gzip
member) after the few families prometheus_client renders on the spot.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry

from qf_exporter.exposition import accepts_gzip, build, wants_openmetrics
from qf_exporter.landing import Landing
from qf_exporter.server import HTTPServer, Limits, Request, Response
from qf_exporter.snapshot import Snapshot
from qf_exporter.store import Rendered
from qf_exporter.webconfig import LiveWebConfig, RateLimit, WebConfig

ReloadResult = tuple[bool, str]
LIFECYCLE_DISABLED = (
    "Lifecycle API is not enabled: start qf-exporter with --web.enable-lifecycle "
    "(or reload with SIGHUP)\n"
)
_UNAUTHORIZED_HEADERS = [("WWW-Authenticate", 'Basic realm="qf-exporter", charset="UTF-8"')]


class TokenBucket:
    """exporter-toolkit's rate_limit: one token per ``interval``, at most ``burst``."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._at = clock()

    def allow(self) -> bool:
        now = self._clock()
        rate = 1.0 / self.limit.interval
        self._tokens = min(float(self.limit.burst), self._tokens + (now - self._at) * rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class ExporterHTTPServer:
    def __init__(
        self,
        address: tuple[str, int] | None = None,
        *,
        registry: CollectorRegistry,
        rendered: Callable[[], Rendered],
        snapshot: Callable[[], Snapshot],
        ready: threading.Event,
        telemetry_path: str = "/metrics",
        web_config: WebConfig | LiveWebConfig | None = None,
        reload: Callable[[], concurrent.futures.Future[ReloadResult]] | None = None,
        lifecycle: bool = False,
        version: str = "",
        sockets: Sequence[socket.socket] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.registry = registry
        self.rendered = rendered
        self.snapshot = snapshot
        self.ready = ready
        self.telemetry_path = telemetry_path
        if isinstance(web_config, LiveWebConfig):
            self.web_config = web_config
        else:
            self.web_config = LiveWebConfig.fixed(web_config or WebConfig())
        self.reload = reload
        self.lifecycle = lifecycle
        self.version = version
        self._bucket: TokenBucket | None = None
        self._landing = Landing(telemetry_path=telemetry_path, version=version)
        # bcrypt takes tens of milliseconds: never on the event loop, and at most two at a
        # time, so a flood of wrong passwords costs at most two cores' worth.
        self._auth_pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="auth")
        if sockets is None:
            from qf_exporter.listen import bind

            assert address is not None
            sockets = [bind(*address)]
        self.http = HTTPServer(
            sockets,
            self._handle,
            tls=self._tls if self.web_config.tls else None,
            peer_allowed=lambda cert: self.web_config.current().san_allowed(cert),
            extra_headers=lambda: self.web_config.current().headers,
            limits=limits,
        )

    # --- the old http.server-like surface, used by the app and the tests ----------------

    @property
    def port(self) -> int:
        return int(self.http.sockets[0].getsockname()[1])

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self.http.sockets]

    def serve_in_thread(self) -> threading.Thread:
        return self.http.start()

    def shutdown(self) -> None:
        self.http.stop()
        self._auth_pool.shutdown(wait=False, cancel_futures=True)

    def server_close(self) -> None:
        """Kept for callers of the http.server API; ``shutdown`` closed everything."""

    # --- requests -----------------------------------------------------------------------

    def _tls(self) -> ssl.SSLContext | None:
        return self.web_config.current().ssl_context

    async def _handle(self, request: Request) -> Response:
        config = self.web_config.current()
        if not self._rate_allowed(config):
            return Response.text(429, "Too many requests\n")
        if config.users and not await self._authorized(config, request):
            return Response.text(401, "Unauthorized\n", headers=list(_UNAUTHORIZED_HEADERS))
        if request.path == "/-/reload":
            return await self._reload(request)
        if request.method not in ("GET", "HEAD"):
            return Response.text(405, "Method not allowed\n", headers=[("Allow", "GET, HEAD")])
        if request.path == self.telemetry_path:
            return self._metrics(request)
        if request.path == "/-/healthy":
            return Response.text(200, "Healthy\n")
        if request.path == "/-/ready":
            if self.ready.is_set():
                return Response.text(200, "Ready\n")
            return Response.text(503, "Not ready: the first poll has not finished\n")
        if request.path == "/":
            page = self._landing.page(self.snapshot())
            return Response(200, (page,), "text/html; charset=utf-8", length=len(page))
        return Response.text(404, "Not found\n")

    def _rate_allowed(self, config: WebConfig) -> bool:
        if config.rate_limit is None:
            self._bucket = None
            return True
        if self._bucket is None or self._bucket.limit != config.rate_limit:
            self._bucket = TokenBucket(config.rate_limit)
        return self._bucket.allow()

    async def _authorized(self, config: WebConfig, request: Request) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "basic":  # the scheme is case-insensitive (RFC 7617)
            return False
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._auth_pool, config.check, user, password)

    async def _reload(self, request: Request) -> Response:
        if request.method not in ("POST", "PUT"):
            return Response.text(405, "Use POST or PUT\n", headers=[("Allow", "POST, PUT")])
        if not self.lifecycle:
            return Response.text(403, LIFECYCLE_DISABLED)
        if self.reload is None:
            return Response.text(404, "Reloading is not available in this mode\n")
        ok, message = await asyncio.wrap_future(self.reload())
        return Response.text(200 if ok else 500, message + "\n")

    def _metrics(self, request: Request) -> Response:
        answer = build(
            self.registry,
            self.rendered(),
            openmetrics_format=wants_openmetrics(request.headers.get("accept")),
            gzipped=accepts_gzip(request.headers.get("accept-encoding")),
        )
        headers = [("Vary", "Accept, Accept-Encoding")]
        if answer.gzipped:
            headers.append(("Content-Encoding", "gzip"))
        return Response(200, answer.pieces, answer.content_type, headers,
                        length=len(answer))
