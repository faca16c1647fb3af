"""--web.listen-address: dual-stack by default, repeatable, a clear error when in use."""

from __future__ import annotations

import socket

import pytest
import requests

from qf_exporter.web.listen import parse_listen
from tests.daemon import Daemon
from tests.web.test_webconfig_files import run_cli


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("address", "want"),
    [
        (":9788", ("", 9788)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9100", ("::1", 9100)),
        ("[::]:9100", ("::", 9100)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_parse(address: str, want: tuple[str, int]) -> None:
    assert parse_listen(address) == want


@pytest.mark.parametrize("address", ["9788", "::1:9100", "[::1:9100", "host:", "host:99999", ""])
def test_parse_refuses(address: str) -> None:
    with pytest.raises(ValueError, match="listen-address"):
        parse_listen(address)


def test_an_empty_host_answers_on_ipv4_and_ipv6() -> None:
    running = Daemon(["--demo", "--web.listen-address=:0"])
    try:
        assert running.listening[0][0] in ("::", "0.0.0.0")
        port = running.port
        assert requests.get(f"http://127.0.0.1:{port}/-/healthy", timeout=10).ok
        if has_ipv6_loopback():
            assert running.listening[0][0] == "::"
            assert requests.get(f"http://[::1]:{port}/-/healthy", timeout=10).ok
    finally:
        code, err = running.stop()
    assert code == 0, err


def test_one_listener_per_address() -> None:
    running = Daemon(["--demo", "--web.listen-address=127.0.0.1:0",
                      "--web.listen-address=127.0.0.1:0"])
    try:
        assert len(running.listening) == 2
        ports = {port for _, port in running.listening}
        assert len(ports) == 2
        for port in ports:
            assert requests.get(f"http://127.0.0.1:{port}/-/healthy", timeout=10).ok
    finally:
        code, err = running.stop()
    assert code == 0, err


def test_a_port_in_use_is_a_clear_error_with_its_own_exit_status() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("--demo", f"--web.listen-address=127.0.0.1:{port}")
    assert result.returncode == 1  # not 2: that is an invalid configuration
    assert "Traceback" not in result.stderr
    assert "cannot listen" in result.stderr
    assert f"127.0.0.1:{port}: Address already in use" in result.stderr
