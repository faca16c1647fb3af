"""The web config is live: rotated certificates and passwords, headers, cipher suites,
curves, allowed SANs, rate limits and inline PEM, checked over real connections."""

from __future__ import annotations

import base64
import logging
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests

from qf_exporter.util import yamlfile
from qf_exporter.web.routes import ExporterHTTPServer
from qf_exporter.web.webconfig.live import LiveWebConfig
from tests.checks import assert_no_keys
from tests.conftest import EmptyServer
from tests.webconfig_fixtures import CA, PKI, hashpw

Live = Callable[[Path], ExporterHTTPServer]


@pytest.fixture
def live(empty_server: EmptyServer) -> Live:
    def start(path: Path) -> ExporterHTTPServer:
        return empty_server(web_config=LiveWebConfig(str(path)))

    return start


def replace(path: Path, text: str | bytes) -> None:
    """Write a new version beside the file and rename it over, as cert-manager does."""
    new = path.with_name(path.name + ".new")
    if isinstance(text, bytes):
        new.write_bytes(text)
    else:
        new.write_text(text, encoding="utf-8")
    new.replace(path)


def tls_config(cert: Path, key: Path, extra: str = "") -> str:
    return f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n{extra}"


def test_a_rotated_certificate_is_served_without_a_restart(
    pki: PKI,
    live: Live,
    tmp_path: Path,
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pki.server.cert, cert)
    shutil.copy(pki.server.key, key)
    config = tmp_path / "web.yml"
    config.write_text(tls_config(cert, key))
    server = live(config)
    url = f"https://127.0.0.1:{server.port}/metrics"
    assert requests.get(url, verify=str(pki.ca), timeout=10).status_code == 200

    # A new certificate from a new CA replaces the old one on disk (the old is gone).
    new_ca = CA(tmp_path, "rotated-ca")
    issued = new_ca.issue("rotated", server=True)
    replace(key, issued.key.read_bytes())
    replace(cert, issued.cert.read_bytes())
    assert requests.get(url, verify=str(new_ca.files.cert), timeout=10).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, verify=str(pki.ca), timeout=10)


def test_a_changed_password_takes_effect_and_a_broken_file_keeps_the_last_good(
    live: Live,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  alice: '{hashpw('old-secret')}'\n")
    server = live(config)
    url = f"http://127.0.0.1:{server.port}/metrics"
    assert requests.get(url, auth=("alice", "old-secret"), timeout=10).status_code == 200

    replace(config, f"basic_auth_users:\n  alice: '{hashpw('new-secret')}'\n")
    assert requests.get(url, auth=("alice", "old-secret"), timeout=10).status_code == 401
    assert requests.get(url, auth=("alice", "new-secret"), timeout=10).status_code == 200

    replace(config, "basic_auth_users: [\n")  # broken: logged, the last good one is kept
    assert requests.get(url, auth=("alice", "new-secret"), timeout=10).status_code == 200
    assert requests.get(url, timeout=10).status_code == 401
    refused = [r for r in caplog.records if "web config change refused" in r.getMessage()]
    assert len(refused) == 1  # logged once, not on every request
    assert_no_keys(caplog.text, keys=("new-secret", "old-secret"))


def test_a_change_parses_each_file_once(
    pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "web.yml"
    config.write_text(tls_config(pki.server.cert, pki.server.key))
    parsed: list[str] = []
    load = yamlfile.load

    def counting(path: str, *args: Any, **kwargs: Any) -> yamlfile.Loaded:
        parsed.append(str(path))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(yamlfile, "load", counting)
    web_config = LiveWebConfig(str(config))
    assert parsed == [str(config)]
    first = web_config.current()
    assert parsed == [str(config)]  # nothing changed: no parse, only stat calls
    replace(config, tls_config(pki.server.cert, pki.server.key,
                               "  min_version: TLS13\n"))
    second = web_config.current()
    assert second is not first and second.ssl_context is not None
    assert second.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert parsed == [str(config)] * 2
    web_config.current()
    assert parsed == [str(config)] * 2


def test_switching_to_https_needs_a_restart(
    pki: PKI,
    live: Live,
    tmp_path: Path,
) -> None:
    config = tmp_path / "web.yml"
    config.write_text("")
    server = live(config)
    replace(config, tls_config(pki.server.cert, pki.server.key))
    assert requests.get(f"http://127.0.0.1:{server.port}/-/healthy", timeout=10).ok


def test_headers_are_on_every_answer(live: Live, tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text(
        "http_server_config:\n  headers:\n"
        "    Strict-Transport-Security: max-age=31536000\n"
        "    X-Content-Type-Options: nosniff\n"
        "    X-Frame-Options: ''\n"  # blank: not set, as in exporter-toolkit
        f"basic_auth_users:\n  alice: '{hashpw('pw')}'\n"
    )
    server = live(config)
    base = f"http://127.0.0.1:{server.port}"
    answers = [
        requests.get(base + "/metrics", auth=("alice", "pw"), timeout=10),
        requests.get(base + "/metrics", timeout=10),  # 401
        requests.get(base + "/nowhere", auth=("alice", "pw"), timeout=10),  # 404
        requests.post(base + "/-/reload", auth=("alice", "pw"), timeout=10),  # 403
        requests.get(base + "/", headers={"X-Big": "a" * (2 << 20)}, timeout=10),  # 431
    ]
    assert [a.status_code for a in answers] == [200, 401, 404, 403, 431]
    for answer in answers:
        assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert "X-Frame-Options" not in answer.headers


def handshake(
    port: int, ca: Path, configure: Callable[[ssl.SSLContext], None]
) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca))
    configure(context)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_cipher_suites_are_applied(pki: PKI, live: Live, tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text(
        tls_config(
            pki.server.cert,
            pki.server.key,
            "  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n",
        )
    )
    server = live(config)
    with handshake(server.port, pki.ca, lambda c: None) as tls:
        cipher = tls.cipher()
        assert cipher is not None and cipher[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
    with pytest.raises(ssl.SSLError):
        handshake(server.port, pki.ca, lambda c: c.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384"))


def test_curve_preferences_are_applied(pki: PKI, live: Live, tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text(
        tls_config(pki.server.cert, pki.server.key, "  curve_preferences: [CurveP384]\n")
    )
    server = live(config)
    with handshake(server.port, pki.ca, lambda c: c.set_ecdh_curve("secp384r1")) as tls:
        assert tls.version() is not None
    with pytest.raises(ssl.SSLError):
        handshake(server.port, pki.ca, lambda c: c.set_ecdh_curve("prime256v1"))


def test_client_allowed_sans(pki: PKI, live: Live, tmp_path: Path) -> None:
    ca = CA(tmp_path, "sans-ca")
    server_cert = ca.issue("server", server=True)
    allowed = ca.issue("allowed", server=False, sans=("scraper.example",))
    other = ca.issue("other", server=False, sans=("intruder.example",))
    config = tmp_path / "web.yml"
    config.write_text(
        tls_config(
            server_cert.cert,
            server_cert.key,
            f"  client_ca_file: {ca.files.cert}\n"
            "  client_auth_type: RequireAndVerifyClientCert\n"
            "  client_allowed_sans: [scraper.example]\n",
        )
    )
    server = live(config)
    url = f"https://127.0.0.1:{server.port}/metrics"
    ok = requests.get(url, verify=str(ca.files.cert), cert=(str(allowed.cert), str(allowed.key)),
                      timeout=10)
    assert ok.status_code == 200
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(url, verify=str(ca.files.cert), cert=(str(other.cert), str(other.key)),
                     timeout=10)


def test_rate_limit(live: Live, tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text("rate_limit:\n  interval: 1h\n  burst: 2\n")
    server = live(config)
    url = f"http://127.0.0.1:{server.port}/-/healthy"
    codes = [requests.get(url, timeout=10).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_inline_certificate_and_key(pki: PKI, live: Live, tmp_path: Path) -> None:
    def block(path: Path) -> str:
        return "|\n" + "".join("    " + line + "\n" for line in path.read_text().splitlines())

    config = tmp_path / "web.yml"
    config.write_text(
        f"tls_server_config:\n  cert: {block(pki.server.cert)}  key: {block(pki.server.key)}"
    )
    server = live(config)
    response = requests.get(f"https://127.0.0.1:{server.port}/-/healthy", verify=str(pki.ca),
                            timeout=10)
    assert response.status_code == 200


# --- basic auth interop ------------------------------------------------------------------


def htpasswd_hash(password: str) -> str:
    """A hash made by Apache's `htpasswd -B` (required under CI=true)."""
    import os

    tool = shutil.which("htpasswd")
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("htpasswd is not installed (apt-get install -y apache2-utils)")
        pytest.skip("htpasswd is not installed")
    result = subprocess.run([tool, "-nbBC", "4", "u", password], capture_output=True,
                            text=True, check=True, timeout=30)
    return result.stdout.strip().split(":", 1)[1]


@pytest.mark.parametrize("length", [10, 72, 100])
def test_htpasswd_hashes_of_any_length_work(live: Live, tmp_path: Path, length: int) -> None:
    password = ("correct-horse-battery-staple-" * 4)[:length]
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  alice: '{htpasswd_hash(password)}'\n")
    server = live(config)
    url = f"http://127.0.0.1:{server.port}/metrics"
    assert requests.get(url, auth=("alice", password), timeout=10).status_code == 200
    assert requests.get(url, auth=("alice", password[:-1]), timeout=10).status_code == (
        200 if length > 72 else 401  # as Go's bcrypt: only the first 72 bytes count
    )
    if length > 71:
        assert requests.get(url, auth=("alice", password[:71]), timeout=10).status_code == 401


def test_the_basic_scheme_is_case_insensitive(live: Live, tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  alice: '{hashpw('pw')}'\n")
    server = live(config)
    token = base64.b64encode(b"alice:pw").decode()
    for scheme in ("Basic", "basic", "BASIC", "bAsIc"):
        response = requests.get(f"http://127.0.0.1:{server.port}/metrics",
                                headers={"Authorization": f"{scheme} {token}"}, timeout=10)
        assert response.status_code == 200, scheme


def test_bcrypt_truncates_like_go() -> None:
    """The bcrypt package (5.x) refuses passwords over 72 bytes; Go and htpasswd cut."""
    from qf_exporter.web.webconfig.schema import WebConfig

    long = b"x" * 100
    hashed = bcrypt.hashpw(long[:72], bcrypt.gensalt(rounds=4))
    config = WebConfig(users={"alice": hashed})
    assert config.check("alice", long.decode())
    assert not config.check("alice", "x" * 71)


def test_a_failed_handshake_is_one_debug_line(
    pki: PKI,
    live: Live,
    tmp_path: Path,
) -> None:
    config = tmp_path / "web.yml"
    config.write_text(tls_config(pki.server.cert, pki.server.key))
    server = live(config)
    records: list[logging.LogRecord] = []
    logged = threading.Event()

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            if record.getMessage() == "TLS handshake failed":
                logged.set()

    logger = logging.getLogger("qf_exporter.web.server")
    handler, level = Catch(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert logged.wait(10)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    failed = [r for r in records if r.getMessage() == "TLS handshake failed"]
    assert len(failed) == 1
    assert failed[0].levelno == logging.DEBUG and failed[0].exc_info is None
    assert failed[0].client == "127.0.0.1"  # type: ignore[attr-defined]
    assert "SSLError" in failed[0].error  # type: ignore[attr-defined]
