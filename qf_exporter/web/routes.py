"""The exporter's HTTP endpoints: /metrics, /-/healthy, /-/ready, /-/reload and `/`.

Routing and the lifecycle gate; basic auth and the rate limit are in ``gate``, the
connection handling in ``server`` and the metrics answer in ``exposition``. A scrape
never calls Qianfan: it serves the run metrics and health the poller already rendered,
plain or as one gzip stream of the deflate segments compressed when they were rendered,
followed by the few families prometheus_client renders on the spot. Health, readiness
and the landing page take the server's light slots, so probes never wait behind
scrapes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import ssl
import threading
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry

from qf_exporter.exposition.answer import Head, accepts_gzip, build, wants_openmetrics
from qf_exporter.exposition.store import Page
from qf_exporter.polling.snapshot import Snapshot
from qf_exporter.web.gate import Gate
from qf_exporter.web.landing import Landing
from qf_exporter.web.server import HTTPServer, Limits, Request, Response
from qf_exporter.web.webconfig.live import LiveWebConfig
from qf_exporter.web.webconfig.schema import WebConfig

ReloadResult = tuple[bool, str]
_LIGHT_PATHS = frozenset({"/-/healthy", "/-/ready", "/"})
LIFECYCLE_DISABLED = (
    "Lifecycle API is not enabled: start qf-exporter with --web.enable-lifecycle "
    "(or reload with SIGHUP)\n"
)


class ExporterHTTPServer:
    """The exporter's endpoints served by an ``HTTPServer`` on listening ``sockets``,
    with the web config's TLS, headers and client SANs, and the ``Gate`` before them."""

    def __init__(
        self,
        sockets: Sequence[socket.socket],
        *,
        registry: CollectorRegistry | Head,
        page: Callable[[], Page],
        snapshot: Callable[[], Snapshot],
        ready: threading.Event,
        telemetry_path: str = "/metrics",
        web_config: WebConfig | LiveWebConfig | None = None,
        reload: Callable[[], concurrent.futures.Future[ReloadResult]] | None = None,
        lifecycle: bool = False,
        version: str = "",
        limits: Limits | None = None,
    ) -> None:
        self.registry = registry
        self.page = page
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
        # Password checks waiting for bcrypt or running, at most a quarter of the
        # request slots (though they hold none: they are admitted before a slot).
        slots = (limits or Limits()).max_requests
        self.gate = Gate(max_checks=max(1, min(4, slots // 4)))
        self._landing = Landing(telemetry_path=telemetry_path, version=version)
        self.http = HTTPServer(
            sockets,
            self._handle,
            tls=self._tls if self.web_config.tls else None,
            peer_allowed=lambda cert: self.web_config.current().san_allowed(cert),
            extra_headers=lambda: self.web_config.current().headers,
            limits=limits,
            light=self._light,
            admit=self._admit,
        )

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port of the first listener (with port 0, the one the kernel chose)."""
        return int(self.http.sockets[0].getsockname()[1])

    def serve_in_thread(self) -> threading.Thread:
        return self.http.start()

    def shutdown(self) -> None:
        """Stop serving and close the listeners and the password checks' threads."""
        self.http.stop()
        self.gate.close()

    # --- requests -----------------------------------------------------------------------

    async def _admit(self, request: Request) -> Response | None:
        """Basic auth and the rate limit (see gate.py), before the request takes a slot:
        a check waiting for bcrypt holds none."""
        return await self.gate.admit(self.web_config.current(), request)

    def _light(self, request: Request) -> bool:
        """Whether the request takes one of the server's light slots: answers that are
        small and built ahead (health, readiness, the landing page, built once per
        snapshot and capped), so that probes never wait behind scrapes."""
        return (
            request.method in ("GET", "HEAD")
            and request.path in _LIGHT_PATHS
            and request.path != self.telemetry_path
        )

    def _tls(self) -> ssl.SSLContext | None:
        return self.web_config.current().ssl_context

    async def _handle(self, request: Request) -> Response:
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
            self.page(),
            openmetrics_format=wants_openmetrics(request.headers.get("accept")),
            gzipped=accepts_gzip(request.headers.get("accept-encoding")),
        )
        headers = [("Vary", "Accept, Accept-Encoding")]
        if answer.gzipped:
            headers.append(("Content-Encoding", "gzip"))
        return Response(200, answer, answer.content_type, headers, length=answer.size)
