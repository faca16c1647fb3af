"""Web config files that are refused: each problem names its key, every problem is
listed at once, and the daemon exits 2 with one line per problem."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from qf_exporter.config.file import ConfigError
from qf_exporter.web.webconfig.schema import load_web_config
from tests.config_text import BOMB, GOOD, assert_refused, run
from tests.webconfig_fixtures import (
    PKI,
    basic_auth_config,
    hashpw,
    write_web_config,
)

ROOT = Path(__file__).resolve().parent.parent.parent

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


def test_a_misspelt_key_gets_a_did_you_mean_at_every_level(tmp_path: Path) -> None:
    found = web_config_problems(
        tmp_path,
        "tls_server_config:\n  cert_fil: a.crt\n  key_file: a.key\n"
        "http_server_config:\n  header: {}\n"
        "rate_limit:\n  intervall: 1s\n  burst: 1\n"
        "basic_auth_user: {}\n",
    )
    assert set(found) >= {
        "basic_auth_user: unknown key (did you mean basic_auth_users?)",
        "tls_server_config.cert_fil: unknown key (did you mean cert_file?)",
        "http_server_config.header: unknown key (did you mean headers?)",
        "rate_limit.intervall: unknown key (did you mean interval?)",
    }


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


# --- the same reader as the configuration file -------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("basic_auth_users: &a {x: *a}\n", "found a recursive alias *a"),
        (BOMB, "document contains excessive aliasing"),
        ("basic_auth_users: {}\nbasic_auth_users: {}\n", "found duplicate key"),
        ("basic_auth_users: {1: x}\n", "found a key that is not a string"),
    ],
)
def test_web_config_is_read_by_the_same_reader(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_web_config(str(path))
    (line,) = info.value.problems
    assert line.startswith("invalid YAML at line") and problem in line


def test_web_config_must_be_a_small_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_web_config("/dev/zero")
    assert info.value.problems == ["not a regular file (a character device)"]
    fifo = tmp_path / "web.yml"
    os.mkfifo(fifo)
    config = tmp_path / "config.yaml"
    config.write_text(GOOD, encoding="utf-8")
    result = run(f"--config.file={config}", f"--web.config.file={fifo}", "--config.check")
    assert_refused(result, f"{fifo}: not a regular file (a FIFO)")

