"""Wiring: configuration → poller → registry → HTTP server, and the process lifecycle."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.registry import Collector

from qf_exporter import __version__
from qf_exporter.config.file import Config, ConfigError, load_config
from qf_exporter.exposition.answer import Head, build
from qf_exporter.exposition.info import InfoCollector, ReloadState
from qf_exporter.exposition.pages import CurrentPage
from qf_exporter.logs import REDACTOR
from qf_exporter.polling.poller import Poller
from qf_exporter.polling.shard import Shard
from qf_exporter.qianfan import telemetry
from qf_exporter.qianfan.telemetry import ApiMetrics
from qf_exporter.reloads import Reloader
from qf_exporter.util.heap import HeapSettler
from qf_exporter.web.routes import ExporterHTTPServer
from qf_exporter.web.server import Limits
from qf_exporter.web.webconfig.live import LiveWebConfig
from qf_exporter.web.webconfig.schema import WebConfig

log = logging.getLogger(__name__)


class Exporter:
    """Everything one exporter process runs."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | None = None,
        shard: Shard | None = None,
        clock: Callable[[], float] = time.time,
        process_metrics: bool = True,
        settle_heap: bool = False,
    ) -> None:
        self.config_path = config_path
        self.shard = shard or Shard()
        self.registry = CollectorRegistry(auto_describe=False)
        self.metrics = ApiMetrics(self.registry)
        self.current_page = CurrentPage()
        # The daemon's heap is frozen after each publication (util/heap.py); not in
        # tests, where it would hold every test's garbage cycles for ten minutes.
        self.poller = Poller(config, self.metrics, shard=self.shard, clock=clock,
                             subscriber=self.current_page,
                             heap=HeapSettler() if settle_heap else None)
        self.reload_state = ReloadState(successful=True, last_success=time.time())
        info = InfoCollector(__version__, self.reload_state,
                             (self.shard.index, self.shard.total))
        process: list[Collector] = (
            [PROCESS_COLLECTOR, PLATFORM_COLLECTOR] if process_metrics else [])
        # Everything in ``registry``; what each scrape renders, split into the API
        # metrics (kept until they change), the process metrics (sampled) and the info
        # (see answer.Head).
        reload_state = self.reload_state
        self.head = Head(_registry_of([info]), _registry_of(self.metrics.collectors()),
                         telemetry.version,
                         process=_registry_of(process) if process else None,
                         live_version=lambda: (reload_state.successful,
                                               reload_state.last_success))
        for collector in (info, *process):
            self.registry.register(collector)
        REDACTOR.set(config.secrets())
        self.server: ExporterHTTPServer | None = None
        self._reload_lock = threading.Lock()
        self.reloader = Reloader(self.reload)

    def exposition(self, *, openmetrics_format: bool = False) -> bytes:
        """The whole answer as one bytes object (``--once`` and tests)."""
        answer = build(self.head, self.current_page.page,
                       openmetrics_format=openmetrics_format)
        return b"".join(answer)

    def serve(
        self,
        sockets: Sequence[socket.socket],
        telemetry_path: str,
        web_config: WebConfig | LiveWebConfig | None,
        *,
        lifecycle: bool = False,
        limits: Limits | None = None,
    ) -> ExporterHTTPServer:
        """Serve on ``sockets`` (bound and listening, see ``web/listen.py``) from a
        thread of its own."""
        self.server = ExporterHTTPServer(
            sockets,
            lifecycle=lifecycle,
            limits=limits,
            registry=self.head,
            page=lambda: self.current_page.page,
            snapshot=lambda: self.poller.snapshot,
            ready=self.poller.ready,
            telemetry_path=telemetry_path,
            web_config=web_config,
            reload=self.reloader.request if self.config_path else None,
            version=__version__,
        )
        self.server.serve_in_thread()
        return self.server

    def start(self) -> None:
        self.poller.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
        self.poller.stop()

    def reload(self) -> tuple[bool, str]:
        """Re-read the config file; a bad one is refused and the old one keeps running."""
        if not self.config_path:
            return False, "no configuration file to reload"
        with self._reload_lock:
            try:
                config = load_config(self.config_path)
            except Exception as exc:  # whatever goes wrong, the old config keeps running
                err = exc if isinstance(exc, ConfigError) else ConfigError(
                    [f"{self.config_path}: cannot be loaded ({type(exc).__name__})"])
                self.reload_state.successful = False
                for problem in err.problems:
                    log.error("configuration reload refused", extra={"problem": problem})
                return False, "configuration refused, still running the previous one:\n" + str(err)
            for warning in config.warnings:
                log.warning(warning)
            REDACTOR.set(config.secrets() + self.poller.config.secrets())
            self.poller.reload(config)
            REDACTOR.set(config.secrets())
            self.reload_state.successful = True
            self.reload_state.last_success = time.time()
            log.info("configuration reloaded", extra={"accounts": len(config.accounts)})
            return True, "configuration reloaded"


def _registry_of(collectors: Sequence[Collector]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry
