"""Shared fixtures: a clock the tests move, a simulated Qianfan and exporters.

Plain helpers (the clock itself, accounts, scraping, parsing) are in ``tests/helpers.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from qf_exporter.app import Exporter
from qf_exporter.config.file import Account, Config, Poll
from qf_exporter.exposition.store import Page
from qf_exporter.simulator import QianfanSimulator, World
from qf_exporter.web.routes import ExporterHTTPServer
from tests.exposition.pages import full_page
from tests.helpers import ACCESS_KEY, FAST_POLL, SECRET_KEY, ManualClock
from tests.page_server import serve_page
from tests.webconfig_fixtures import pki, users  # noqa: F401  (fixtures of the web tests)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def world(clock: ManualClock) -> World:
    return World(clock)


@pytest.fixture
def sim(world: World, clock: ManualClock) -> Iterator[QianfanSimulator]:
    simulator = QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}, wall_clock=clock)
    with simulator:
        yield simulator


@pytest.fixture
def make_exporter(
    clock: ManualClock,
) -> Iterator[Callable[..., Exporter]]:
    made: list[Exporter] = []

    def build(*accounts: Account, poll: Poll = FAST_POLL, **kw: object) -> Exporter:
        exporter = Exporter(Config(accounts=accounts, poll=poll), clock=clock,
                            process_metrics=False, **kw)  # type: ignore[arg-type]
        made.append(exporter)
        return exporter

    yield build
    for exporter in made:
        exporter.stop()


EmptyServer = Callable[..., ExporterHTTPServer]


@pytest.fixture
def empty_server() -> Iterator[EmptyServer]:
    """Start in-process HTTP servers with no runs on their page, or ``page`` (their
    settings as keywords of ``ExporterHTTPServer``); they are shut down after the test."""
    started: list[ExporterHTTPServer] = []
    empty = full_page((), 0)

    def start(page: Page = empty, **settings: object) -> ExporterHTTPServer:
        server = serve_page(page, **settings)
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
