"""`--web.config.file` (exporter-toolkit format): TLS, mutual TLS and basic auth, checked
with real TLS connections to the real HTTP server. The certificates are made here, in a
temporary directory, with `cryptography`; nothing leaves loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import CollectorRegistry, Gauge

from qf_exporter.config import ConfigError
from qf_exporter.snapshot import Snapshot
from qf_exporter.store import render
from qf_exporter.web import ExporterHTTPServer
from qf_exporter.webconfig import WebConfig, load_web_config

ROOT = Path(__file__).resolve().parent.parent

# --- certificates ----------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    return Issued(cert_path, key_path)


class CA:
    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.files = _write(directory, name, self.cert, self.key)

    def issue(self, stem: str, *, server: bool, sans: tuple[str, ...] = ()) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(stem))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        elif sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in sans]),
                critical=False,
            )
        return _write(self.directory, stem, builder.sign(self.key, hashes.SHA256()), key)


@dataclass(frozen=True)
class PKI:
    directory: Path
    ca: Path
    server: Issued
    client: Issued
    other_ca: Path
    other_client: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca = CA(directory, "test-ca")
    other = CA(directory, "other-ca")
    return PKI(
        directory=directory,
        ca=ca.files.cert,
        server=ca.issue("server", server=True),
        client=ca.issue("client", server=False),
        other_ca=other.files.cert,
        other_client=other.issue("intruder", server=False),
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
        empty = render((), 0)
        server = ExporterHTTPServer(
            ("127.0.0.1", 0),
            registry=registry,
            rendered=lambda: empty,
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
        server.server_close()


def write_web_config(directory: Path, text: str, name: str = "web.yml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def hashpw(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


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


@pytest.fixture(scope="module")
def users() -> dict[str, str]:
    return {"alice": hashpw("wonderland"), "bob": "$2y$" + hashpw("builder")[4:]}


def basic_auth_config(users: dict[str, str], tls: str = "") -> str:
    lines = [tls, "basic_auth_users:"] + [f"  {u}: '{h}'" for u, h in users.items()]
    return "\n".join(lines) + "\n"


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


# --- invalid web config files ----------------------------------------------------------


def web_config_problems(directory: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_web_config(str(write_web_config(directory, text, "bad.yml")))
    return info.value.problems


def bad_cases(pki: PKI) -> dict[str, tuple[str, str]]:
    """name → (web config text, the start of the one problem line it must give)."""
    cert, key, ca = pki.server.cert, pki.server.key, pki.ca
    tls = f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
    return {
        "unknown-top-key": (tls + "tls_config: {}\n", "tls_config: unknown key"),
        "unknown-tls-key": (
            tls + "  client_certificate: x\n",
            "tls_server_config.client_certificate: unknown key",
        ),
        "allowed-sans-without-client-certs": (
            tls + "  client_allowed_sans: [x]\n",
            "tls_server_config.client_allowed_sans: needs client_auth_type",
        ),
        "tls13-cipher-suite": (
            tls + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "tls_server_config.cipher_suites: TLS_AES_128_GCM_SHA256 is a TLS 1.3 suite",
        ),
        "unknown-cipher-suite": (
            tls + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
            "tls_server_config.cipher_suites: TLS_RSA_WITH_RC4_128_SHA is not a Go cipher",
        ),
        "two-curves": (
            tls + "  curve_preferences: [X25519, CurveP256]\n",
            "tls_server_config.curve_preferences: Python's ssl module can restrict",
        ),
        "unknown-curve": (
            tls + "  curve_preferences: [CurveP224]\n",
            "tls_server_config.curve_preferences: CurveP224 is not one of",
        ),
        "cert-inline-and-file": (
            tls + "  cert: x\n",
            "tls_server_config.cert: set either cert or cert_file, not both",
        ),
        "http2-on": (
            "http_server_config:\n  http2: true\n",
            "http_server_config.http2: HTTP/2 is not served here",
        ),
        "header-not-settable": (
            "http_server_config:\n  headers:\n    Server: x\n",
            "http_server_config.headers.Server: not a header that can be set",
        ),
        "header-value-not-allowed": (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "http_server_config.headers.X-Frame-Options: must be one of deny, sameorigin",
        ),
        "rate-limit-unknown-key": (
            "rate_limit:\n  interval: 1s\n  burst: 5\n  per_ip: true\n",
            "rate_limit.per_ip: unknown key",
        ),
        "rate-limit-no-burst": (
            "rate_limit:\n  interval: 1s\n",
            "rate_limit.burst: must be at least 1",
        ),
        "rate-limit-bad-interval": (
            "rate_limit:\n  interval: soon\n  burst: 5\n",
            "rate_limit.interval: must be a duration",
        ),
        "missing-key-file": (
            f"tls_server_config:\n  cert_file: {cert}\n",
            "tls_server_config.key_file: is required",
        ),
        "missing-cert-file": (
            f"tls_server_config:\n  key_file: {key}\n",
            "tls_server_config.cert_file: is required",
        ),
        "cert-file-absent": (
            f"tls_server_config:\n  cert_file: {cert}.nope\n  key_file: {key}\n",
            f"tls_server_config.cert_file: {cert}.nope is not a readable file",
        ),
        "key-file-absent": (
            f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}.nope\n",
            f"tls_server_config.key_file: {key}.nope is not a readable file",
        ),
        "key-does-not-match": (
            f"tls_server_config:\n  cert_file: {cert}\n  key_file: {pki.client.key}\n",
            "tls_server_config.cert_file: cannot load",
        ),
        "cert-is-not-a-cert": (
            f"tls_server_config:\n  cert_file: {key}\n  key_file: {key}\n",
            "tls_server_config.cert_file: cannot load",
        ),
        "bad-client-auth-type": (
            tls + "  client_auth_type: RequireClientCertPlease\n",
            "tls_server_config.client_auth_type: must be one of",
        ),
        "client-auth-without-ca": (
            tls + "  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config.client_ca_file: is required by",
        ),
        "ca-without-client-auth": (
            tls + f"  client_ca_file: {ca}\n",
            "tls_server_config.client_auth_type: client_ca_file is set",
        ),
        "client-ca-absent": (
            tls + f"  client_ca_file: {ca}.nope\n  client_auth_type: RequireAndVerifyClientCert\n",
            f"tls_server_config.client_ca_file: {ca}.nope is not a readable file",
        ),
        "bad-min-version": (
            tls + "  min_version: TLS14\n",
            "tls_server_config.min_version: must be one of",
        ),
        "min-above-max": (
            tls + "  min_version: TLS13\n  max_version: TLS12\n",
            "tls_server_config.max_version: must not be below min_version",
        ),
        "tls-not-mapping": ("tls_server_config: yes\n", "tls_server_config: must be a mapping"),
        "cert-file-not-string": (
            f"tls_server_config:\n  cert_file: [a]\n  key_file: {key}\n",
            "tls_server_config.cert_file: must be a file path",
        ),
        "auth-type-not-string": (
            tls + "  client_auth_type: [x]\n",
            "tls_server_config.client_auth_type: must be one of",
        ),
        "non-bcrypt-hash": (
            "basic_auth_users:\n  alice: plaintext-password\n",
            "basic_auth_users.alice: must be a bcrypt hash",
        ),
        "md5-crypt-hash": (
            "basic_auth_users:\n  alice: '$1$abc$abcdefghijklmnopqrstuv'\n",
            "basic_auth_users.alice: must be a bcrypt hash",
        ),
        "truncated-bcrypt-hash": (
            "basic_auth_users:\n  alice: '$2y$10$short'\n",
            "basic_auth_users.alice: must be a bcrypt hash",
        ),
        "hash-not-string": (
            "basic_auth_users:\n  alice: 12345\n",
            "basic_auth_users.alice: must be a bcrypt hash",
        ),
        "unknown-http-server-key": (
            "http_server_config:\n  http2: false\n  keep_alive: false\n",
            "http_server_config.keep_alive: unknown key",
        ),
        "users-not-mapping": ("basic_auth_users: [alice]\n", "basic_auth_users: must be a mapping"),
        "user-with-colon": (
            f"basic_auth_users:\n  'a:b': '{hashpw('x')}'\n",
            "basic_auth_users.a:b: a user name must be non-empty, no ':'",
        ),
        "top-level-list": ("- tls_server_config\n", "must be a mapping"),
        "invalid-yaml": ("tls_server_config: [\n", "invalid YAML"),
    }


def test_invalid_web_configs_name_the_key(pki: PKI, tmp_path: Path) -> None:
    for name, (text, want) in bad_cases(pki).items():
        found = web_config_problems(tmp_path, text)
        assert len(found) == 1, (name, found)
        assert found[0].startswith(want), (name, found)
        assert "Traceback" not in found[0]


def test_every_web_config_problem_at_once(pki: PKI, tmp_path: Path) -> None:
    found = web_config_problems(
        tmp_path,
        "tls_server_config:\n"
        f"  cert_file: {pki.server.cert}\n"
        "  client_auth_type: Sometimes\n"
        "  min_version: SSL3\n"
        "  cipher_list: all\n"
        "basic_auth_users:\n"
        "  alice: hunter2\n"
        "extra: 1\n",
    )
    assert sorted(p.split(":", 1)[0] for p in found) == sorted(
        [
            "extra",
            "basic_auth_users.alice",
            "tls_server_config.cipher_list",
            "tls_server_config.key_file",
            "tls_server_config.client_auth_type",
            "tls_server_config.min_version",
        ]
    )


def test_missing_and_empty_web_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_web_config(str(tmp_path / "absent.yml"))
    assert info.value.problems == ["cannot read the file: No such file or directory"]
    empty = load_web_config(str(write_web_config(tmp_path, "")))
    assert empty.ssl_context is None
    assert empty.users == {}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "qf_exporter", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "name",
    [
        "missing-key-file",
        "cert-file-absent",
        "bad-client-auth-type",
        "non-bcrypt-hash",
        "unknown-top-key",
        "invalid-yaml",
    ],
)
def test_cli_refuses_a_bad_web_config(pki: PKI, tmp_path: Path, name: str) -> None:
    text, want = bad_cases(pki)[name]
    path = write_web_config(tmp_path, text, f"{name}.yml")
    result = run_cli("--demo", f"--web.config.file={path}", "--web.listen-address=127.0.0.1:0")
    assert result.returncode == 2, result
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    # The demo may log (logfmt) before the web config is read; the rest are problems.
    problem_lines = [line for line in result.stderr.splitlines() if "level=" not in line]
    assert len(problem_lines) == 1, result.stderr
    assert problem_lines[0].startswith(f"{path}: {want}"), result.stderr


def test_cli_refuses_a_missing_web_config(tmp_path: Path) -> None:
    path = tmp_path / "absent.yml"
    result = run_cli("--demo", f"--web.config.file={path}", "--web.listen-address=127.0.0.1:0")
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert f"{path}: cannot read the file: No such file or directory" in result.stderr.splitlines()


def test_cli_serves_tls_and_basic_auth(pki: PKI, tmp_path: Path, users: dict[str, str]) -> None:
    """The whole daemon (--demo) behind a web config: HTTPS and basic auth are enforced."""
    tls = f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}"
    path = write_web_config(tmp_path, basic_auth_config(users, tls))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qf_exporter",
            "--demo",
            f"--web.config.file={path}",
            "--web.listen-address=127.0.0.1:0",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = []
        port = None
        for line in proc.stderr:  # ends if the process dies before it listens
            seen.append(line)
            match = re.search(r"address=https://127\.0\.0\.1:(\d+)", line)
            if match and "listening" in line:
                port = int(match.group(1))
                break
        assert port is not None, "".join(seen)
        url = f"https://127.0.0.1:{port}"
        ca = str(pki.ca)
        response = requests.get(f"{url}/metrics", verify=ca, timeout=10)
        assert response.status_code == 401
        assert "WWW-Authenticate" in response.headers
        response = requests.get(
            f"{url}/metrics", verify=ca, auth=("alice", "wonderland"), timeout=10
        )
        assert response.status_code == 200
        assert "qianfan_exporter_build_info" in response.text
        # (Plain HTTP to this port: see test_failed_handshake_prints_no_traceback.)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in out + err
