"""``--web.config.file``: TLS and basic auth in the Prometheus exporter-toolkit format.

```yaml
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_ca_file: ca.crt          # optional, for mutual TLS
  client_auth_type: RequireAndVerifyClientCert
  min_version: TLS12
basic_auth_users:
  alice: $2y$10$...                # bcrypt hash
```
Relative paths are relative to the web config file, as in exporter-toolkit.
``load_web_config`` raises ``ConfigError`` with one line per problem, each naming its
key (``tls_server_config.key_file: is required``); the caller adds the file's name.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt

from qf_exporter import yamlfile
from qf_exporter.config import ConfigError

# Python's ssl module verifies every client certificate it asks for against the CA
# file, so RequestClientCert (ask, never check) is served as NoClientCert (nothing here
# reads the certificate) and RequireAnyClientCert needs client_ca_file.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireClientCert": ssl.CERT_REQUIRED,  # exporter-toolkit's older name
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_NEEDS_CA = {
    "RequireAnyClientCert",
    "RequireClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TOP_KEYS = ("tls_server_config", "basic_auth_users", "http_server_config")
_HTTP_KEYS = ("http2", "headers")  # accepted for compatibility; not used here
_TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_ca_file",
    "client_auth_type",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
)
_BCRYPT = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    _cache: dict[bytes, bool] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, user: str, password: str) -> bool:
        """bcrypt check, cached by a keyed digest so a scrape does not pay bcrypt's cost.

        An unknown user is checked against a configured hash too (and refused), so a
        wrong name costs as much as a wrong password.
        """
        hashed = self.users.get(user)
        key = hashlib.sha256(
            b"\x00".join([user.encode(), password.encode(), hashed or b""])
        ).digest()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        against = hashed or next(iter(self.users.values()), None) or _dummy_hash()
        try:
            matches = bcrypt.checkpw(password.encode(), against)
        except ValueError:  # e.g. a password longer than bcrypt's 72 bytes
            matches = False
        ok = matches and hashed is not None
        with self._lock:
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[key] = ok
        return ok

    @staticmethod
    def same(a: str, b: str) -> bool:
        return hmac.compare_digest(a.encode(), b.encode())


_DUMMY: list[bytes] = []


def _dummy_hash() -> bytes:
    if not _DUMMY:
        _DUMMY.append(bcrypt.hashpw(b"qf-exporter", bcrypt.gensalt(rounds=10)))
    return _DUMMY[0]


def load_web_config(path: str) -> WebConfig:
    base = Path(path).resolve().parent
    loaded = yamlfile.load(path)  # a bounded regular file, strict and safe YAML
    if loaded.problems:
        raise ConfigError(list(loaded.problems))
    raw: Any = loaded.data
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["must be a mapping (tls_server_config, basic_auth_users)"])
    problems: list[str] = []
    for key in raw:
        if key not in _TOP_KEYS:
            problems.append(f"{key}: unknown key")
    config = WebConfig()
    users = raw.get("basic_auth_users")
    if users is None:
        users = {}
    if not isinstance(users, dict):
        problems.append("basic_auth_users: must be a mapping of user name to bcrypt hash")
        users = {}
    for user, hashed in users.items():
        name = str(user)
        if not name or ":" in name:
            problems.append(f"basic_auth_users.{name}: a user name must be non-empty, no ':'")
        elif not isinstance(hashed, str) or not _BCRYPT.match(hashed.strip()):
            problems.append(f"basic_auth_users.{name}: must be a bcrypt hash ($2y$, $2b$ or $2a$)")
        else:
            # bcrypt (the library) reads $2y$ hashes as $2b$; they are the same algorithm.
            config.users[name] = ("$2b$" + hashed.strip()[4:]).encode()
    http = raw.get("http_server_config")
    if http is not None and not isinstance(http, dict):
        problems.append("http_server_config: must be a mapping")
    elif http:
        problems.extend(
            f"http_server_config.{key}: unknown key" for key in http if key not in _HTTP_KEYS
        )
    tls = raw.get("tls_server_config")
    if tls is not None:
        config.ssl_context = _tls(tls, base, problems)
    if problems:
        raise ConfigError(problems)
    return config


def _file(tls: dict[str, Any], key: str, base: Path, problems: list[str]) -> Path | None:
    value = tls.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.append(f"tls_server_config.{key}: must be a file path")
        return None
    file = base / value
    if not file.is_file():
        problems.append(f"tls_server_config.{key}: {file} is not a readable file")
        return None
    return file


def _tls(tls: Any, base: Path, problems: list[str]) -> ssl.SSLContext | None:
    p = "tls_server_config"
    if not isinstance(tls, dict):
        problems.append(f"{p}: must be a mapping")
        return None
    before = len(problems)
    for key in tls:
        if key not in _TLS_KEYS:
            problems.append(f"{p}.{key}: unknown key")
    for key in ("cert_file", "key_file"):
        if tls.get(key) is None or tls.get(key) == "":
            problems.append(f"{p}.{key}: is required")
    cert = _file(tls, "cert_file", base, problems)
    key = _file(tls, "key_file", base, problems)
    ca = _file(tls, "client_ca_file", base, problems)
    auth_type = tls.get("client_auth_type") or "NoClientCert"
    if not isinstance(auth_type, str) or auth_type not in CLIENT_AUTH:
        problems.append(f"{p}.client_auth_type: must be one of {', '.join(CLIENT_AUTH)}")
    elif auth_type in _NEEDS_CA and tls.get("client_ca_file") in (None, ""):
        problems.append(f"{p}.client_ca_file: is required by client_auth_type {auth_type}")
    elif auth_type == "NoClientCert" and tls.get("client_ca_file") not in (None, ""):
        problems.append(
            f"{p}.client_auth_type: client_ca_file is set but no client certificate is "
            "asked for; set client_auth_type: RequireAndVerifyClientCert"
        )
    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        value = tls.get(name) or default
        if not isinstance(value, str) or value not in TLS_VERSIONS:
            problems.append(f"{p}.{name}: must be one of {', '.join(TLS_VERSIONS)}")
        else:
            versions[name] = TLS_VERSIONS[value]
    if len(versions) == 2 and versions["min_version"] > versions["max_version"]:
        problems.append(f"{p}.max_version: must not be below min_version")
    if len(problems) > before or cert is None or key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.minimum_version = versions["min_version"]
        context.maximum_version = versions["max_version"]
    except (ValueError, ssl.SSLError) as exc:
        problems.append(f"{p}.min_version: not supported here: {exc}")
        return None
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        problems.append(f"{p}.cert_file: cannot load {cert} with key_file {key}: {exc}")
        return None
    context.verify_mode = CLIENT_AUTH[auth_type]
    if ca is not None:
        try:
            context.load_verify_locations(str(ca))
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"{p}.client_ca_file: cannot load {ca}: {exc}")
            return None
    return context
