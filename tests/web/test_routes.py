"""The endpoints on their own: /-/reload answers only with --web.enable-lifecycle, and
only to POST and PUT."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

import pytest
import requests

from qf_exporter.web.routes import LIFECYCLE_DISABLED, ExporterHTTPServer
from tests.conftest import EmptyServer


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
