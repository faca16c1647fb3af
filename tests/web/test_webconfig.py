"""`--web.config.file` (exporter-toolkit format): TLS, mutual TLS and basic auth, checked
with real TLS connections to the real HTTP server. The certificates are made in a
temporary directory (tests/webconfig_fixtures.py); nothing leaves loopback. Refused web
config files: tests/web/test_webconfig_files.py."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import requests
from prometheus_client import CollectorRegistry, Gauge

from qf_exporter.polling.snapshot import Snapshot
from qf_exporter.web.listen import bind
from qf_exporter.web.routes import ExporterHTTPServer
from qf_exporter.web.webconfig.schema import WebConfig, load_web_config
from tests.exposition.pages import full_page
from tests.webconfig_fixtures import (
    PKI,
    basic_auth_config,
    write_web_config,
)

# --- the server ------------------------------------------------------------------------


@dataclass
class Running:
    server: ExporterHTTPServer
    web_config: WebConfig

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, path: str = "/metrics", scheme: str = "https") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


Serve = Callable[[Path], Running]


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[ExporterHTTPServer] = []

    def start(web_config_file: Path) -> Running:
        web_config = load_web_config(str(web_config_file))
        registry = CollectorRegistry(auto_describe=False)
        Gauge("qf_webconfig_test_marker", "Marks this test's registry.", registry=registry).set(7)
        ready = threading.Event()
        ready.set()
        empty = full_page((), 0)
        server = ExporterHTTPServer(
            [bind("127.0.0.1", 0)],
            registry=registry,
            page=lambda: empty,
            snapshot=Snapshot,
            ready=ready,
            web_config=web_config,
            version="test",
        )
        server.serve_in_thread()
        started.append(server)
        return Running(server, web_config)

    yield start
    for server in started:
        server.shutdown()


# --- TLS -------------------------------------------------------------------------------


def test_tls_serves_metrics(pki: PKI, serve: Serve) -> None:
    running = serve(
        write_web_config(
            pki.directory,
            f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n",
        )
    )
    response = requests.get(running.url(), verify=str(pki.ca), timeout=10)
    assert response.status_code == 200
    assert "qf_webconfig_test_marker 7.0" in response.text
    assert requests.get(running.url("/-/healthy"), verify=str(pki.ca), timeout=10).ok
    # A client that does not trust the CA refuses the server.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(running.url(), verify=str(pki.other_ca), timeout=10)


def test_relative_paths_are_relative_to_the_web_config_file(
    pki: PKI,
    serve: Serve,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # not the directory that holds the files
    running = serve(
        write_web_config(
            pki.directory,
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
            "relative.yml",
        )
    )
    assert requests.get(running.url(), verify=str(pki.ca), timeout=10).status_code == 200


def test_plain_http_to_the_tls_port_fails_and_the_server_keeps_serving(
    pki: PKI,
    serve: Serve,
) -> None:
    running = serve(
        write_web_config(
            pki.directory,
            f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n",
        )
    )
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(running.url(scheme="http"), timeout=10)
    # A raw plaintext request gets no HTTP answer.
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
    assert not answer.startswith(b"HTTP/")
    assert requests.get(running.url(), verify=str(pki.ca), timeout=10).status_code == 200


def test_failed_handshake_prints_no_traceback(
    pki: PKI,
    serve: Serve,
    capsys: pytest.CaptureFixture[str],
) -> None:
    running = serve(
        write_web_config(
            pki.directory,
            f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n",
        )
    )
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            # The server closes the connection only after it handled (and reported) the
            # failure, so reading to the end waits for whatever it prints.
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert "Exception occurred" not in captured.err + captured.out


def test_min_version_tls13_refuses_tls12_clients(pki: PKI, serve: Serve) -> None:
    running = serve(
        write_web_config(
            pki.directory,
            f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n"
            "  min_version: TLS13\n",
        )
    )
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", running.port), timeout=10) as raw,
        pytest.raises(ssl.SSLError),
        context.wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass
    context = ssl.create_default_context(cafile=str(pki.ca))
    with (
        socket.create_connection(("127.0.0.1", running.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == "TLSv1.3"


# --- mutual TLS ------------------------------------------------------------------------


def mtls_config(pki: PKI, auth_type: str = "RequireAndVerifyClientCert") -> str:
    return (
        "tls_server_config:\n"
        f"  cert_file: {pki.server.cert}\n"
        f"  key_file: {pki.server.key}\n"
        f"  client_ca_file: {pki.ca}\n"
        f"  client_auth_type: {auth_type}\n"
    )


def assert_refused(url: str, ca: str, cert: tuple[str, str] | None = None) -> None:
    """The TLS handshake (or, in TLS 1.3, the first read after it) fails."""
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(url, verify=ca, cert=cert, timeout=10)


def test_mtls_requires_a_client_cert_signed_by_the_ca(pki: PKI, serve: Serve) -> None:
    running = serve(write_web_config(pki.directory, mtls_config(pki)))
    ca = str(pki.ca)
    # No client certificate: refused during the handshake (or right after it, in TLS 1.3).
    assert_refused(running.url(), ca)
    # A certificate from another CA: refused too.
    assert_refused(running.url(), ca, cert=(str(pki.other_client.cert), str(pki.other_client.key)))
    # The right one: accepted, on every endpoint.
    cert = (str(pki.client.cert), str(pki.client.key))
    for path in ("/metrics", "/-/healthy", "/"):
        response = requests.get(running.url(path), verify=ca, cert=cert, timeout=10)
        assert response.status_code == 200, path


def test_verify_client_cert_if_given(pki: PKI, serve: Serve) -> None:
    running = serve(write_web_config(pki.directory, mtls_config(pki, "VerifyClientCertIfGiven")))
    ca = str(pki.ca)
    assert requests.get(running.url(), verify=ca, timeout=10).status_code == 200
    good = (str(pki.client.cert), str(pki.client.key))
    assert requests.get(running.url(), verify=ca, cert=good, timeout=10).status_code == 200
    assert_refused(running.url(), ca, cert=(str(pki.other_client.cert), str(pki.other_client.key)))


# --- basic auth ------------------------------------------------------------------------


@pytest.mark.parametrize("with_tls", [False, True], ids=["http", "https"])
def test_basic_auth(pki: PKI, serve: Serve, users: dict[str, str], with_tls: bool) -> None:
    tls = (
        f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}"
        if with_tls
        else ""
    )
    running = serve(write_web_config(pki.directory, basic_auth_config(users, tls)))
    scheme = "https" if with_tls else "http"
    verify = str(pki.ca) if with_tls else True

    def get(path: str, auth: tuple[str, str] | None) -> requests.Response:
        return requests.get(running.url(path, scheme), auth=auth, verify=verify, timeout=10)

    for path in ("/metrics", "/-/healthy", "/", "/-/ready", "/no-such-page"):
        for auth in (
            None,
            ("alice", "wrong"),
            ("carol", "wonderland"),
            ("alice", ""),
            ("ALICE", "wonderland"),
            ("bob", "wonderland"),
            ("alice", "wonderland" * 9),
        ):
            response = get(path, auth)
            assert response.status_code == 401, (path, auth)
            assert response.headers["WWW-Authenticate"].startswith("Basic "), (path, auth)
            assert "qf_webconfig_test_marker" not in response.text
    for user, password in (("alice", "wonderland"), ("bob", "builder")):  # $2b$ and $2y$
        for path in ("/metrics", "/-/healthy", "/"):
            response = get(path, (user, password))
            assert response.status_code == 200, (user, path)
        assert "qf_webconfig_test_marker 7.0" in get("/metrics", (user, password)).text
    # A malformed Authorization header is a 401, not an error.
    for header in ("Basic !!!notbase64", "Basic " + "YWxpY2U=", "Bearer abc", "Basic"):
        response = requests.get(
            running.url("/metrics", scheme),
            headers={"Authorization": header},
            verify=verify,
            timeout=10,
        )
        assert response.status_code == 401, header


def test_basic_auth_and_mtls_together(pki: PKI, serve: Serve, users: dict[str, str]) -> None:
    running = serve(write_web_config(pki.directory, basic_auth_config(users, mtls_config(pki))))
    cert = (str(pki.client.cert), str(pki.client.key))
    ca = str(pki.ca)
    assert requests.get(running.url(), verify=ca, cert=cert, timeout=10).status_code == 401
    response = requests.get(
        running.url(), verify=ca, cert=cert, auth=("alice", "wonderland"), timeout=10
    )
    assert response.status_code == 200


def test_check_answers(users: dict[str, str], tmp_path: Path) -> None:
    config = load_web_config(str(write_web_config(tmp_path, basic_auth_config(users))))
    assert set(config.users) == {"alice", "bob"}
    # Twice each: the second answer comes from the cache and must be the same.
    for _ in range(2):
        assert config.check("alice", "wonderland") is True
        assert config.check("bob", "builder") is True
        assert config.check("alice", "builder") is False
        assert config.check("nobody", "wonderland") is False
        assert config.check("nobody", "") is False
        assert config.check("", "") is False
        assert config.check("alice", "x" * 200) is False  # longer than bcrypt's 72 bytes
        assert config.check("alice", "wonder\x00land") is False


def test_check_runs_bcrypt_for_an_unknown_user(
    users: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown user costs a bcrypt check too (timing cannot be tested: count calls)."""
    config = load_web_config(str(write_web_config(tmp_path, basic_auth_config(users))))
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    # The unknown user's password is alice's: it must still be refused.
    assert config.check("mallory", "wonderland") is False
    assert len(calls) == 1
    assert config.check("alice", "wonderland") is True
    assert len(calls) == 2
