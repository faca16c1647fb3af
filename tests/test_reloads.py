"""/-/reload is gated by --web.enable-lifecycle; reloads are serialised and coalesced."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import pytest
import requests

from qf_exporter.reloads import Reloader
from qf_exporter.web.routes import LIFECYCLE_DISABLED, ExporterHTTPServer
from tests.conftest import EmptyServer


def test_a_burst_costs_one_reload_running_and_one_queued() -> None:
    release = threading.Event()
    started = threading.Event()
    calls: list[int] = []

    def reload() -> tuple[bool, str]:
        calls.append(len(calls) + 1)
        started.set()
        release.wait(30)
        return True, f"reload {len(calls)}"

    reloader = Reloader(reload)
    first = reloader.request()
    assert started.wait(10)
    # While the first runs, 50 more requests (HTTP or SIGHUP) share one queued reload.
    burst = [reloader.request() for _ in range(50)]
    assert len({id(f) for f in burst}) == 1
    release.set()
    assert first.result(30) == (True, "reload 1")
    assert all(f.result(30) == (True, "reload 2") for f in burst)
    assert calls == [1, 2]
    # Idle again: the next request starts a reload of its own.
    assert reloader.request().result(30) == (True, "reload 3")


def test_a_reload_that_raises_is_a_failed_reload_not_a_dead_thread() -> None:
    outcomes: Iterator[Exception | tuple[bool, str]] = iter([RuntimeError("boom"), (True, "ok")])

    def reload() -> tuple[bool, str]:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    reloader = Reloader(reload)
    assert reloader.request().result(30) == (False, "reload failed: RuntimeError")
    assert reloader.request().result(30) == (True, "ok")


@pytest.fixture
def serve(empty_server: EmptyServer) -> Callable[[bool], ExporterHTTPServer]:
    def start(lifecycle: bool) -> ExporterHTTPServer:
        def reload() -> Future[tuple[bool, str]]:
            done: Future[tuple[bool, str]] = Future()
            done.set_result((True, "configuration reloaded"))
            return done

        return empty_server(reload=reload, lifecycle=lifecycle)

    return start


def test_reload_is_refused_without_the_flag(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(lifecycle=False)
    for method in ("POST", "PUT"):
        response = requests.request(method, f"http://127.0.0.1:{server.port}/-/reload",
                                    timeout=10)
        assert response.status_code == 403
        assert response.text == LIFECYCLE_DISABLED
        assert response.text.count("\n") == 1 and "--web.enable-lifecycle" in response.text


def test_reload_answers_with_the_flag(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(lifecycle=True)
    url = f"http://127.0.0.1:{server.port}/-/reload"
    for method in ("POST", "PUT"):
        response = requests.request(method, url, timeout=10)
        assert (response.status_code, response.text) == (200, "configuration reloaded\n")
    response = requests.get(url, timeout=10)
    assert response.status_code == 405 and response.headers["Allow"] == "POST, PUT"
