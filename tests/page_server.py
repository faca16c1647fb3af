"""The exporter's HTTP server serving a fixed page of N runs, in a process of its own.

For the attack tests that measure memory: the server's resident memory is then its own,
not the test runner's. ``python -m tests.page_server RUNS [WEB_CONFIG]`` prints the
line ``tests.daemon.Daemon`` waits for, and stops on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading

from prometheus_client import CollectorRegistry

from qf_exporter.exposition.store import Page
from qf_exporter.polling.snapshot import Snapshot
from qf_exporter.qianfan.models import Run
from qf_exporter.web.listen import bind
from qf_exporter.web.routes import ExporterHTTPServer
from qf_exporter.web.webconfig.live import LiveWebConfig
from tests.exposition.pages import full_page


def page(runs: int) -> Page:
    """About 1.4 KB of text per run: 2,400 runs make the 3.4 MB page of the issue."""
    return full_page(
        [Run("a", "v2", f"job-{i % 40}", f"task-{i:05d}", "running", "Running",
             job_name="j" * 200, task_name="t" * 200, progress=0.5, last_read=float(i))
         for i in range(runs)],
        1,
    )


def serve_page(rendered: Page, **settings: object) -> ExporterHTTPServer:
    """A started server of ``rendered`` on loopback, ready, with an empty snapshot and
    registry (its other settings as keywords of ``ExporterHTTPServer``)."""
    ready = threading.Event()
    ready.set()
    server = ExporterHTTPServer(
        [bind("127.0.0.1", 0)],
        registry=CollectorRegistry(auto_describe=False),
        page=lambda: rendered,
        snapshot=Snapshot,
        ready=ready,
        version="test",
        **settings,  # type: ignore[arg-type]
    )
    server.serve_in_thread()
    return server


def main(argv: list[str]) -> int:
    web_config = LiveWebConfig(argv[1]) if len(argv) > 1 else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = serve_page(page(int(argv[0])), web_config=web_config)
    scheme = "https" if len(argv) > 1 else "http"
    print(f"listening address={scheme}://127.0.0.1:{server.port}", file=sys.stderr, flush=True)
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
