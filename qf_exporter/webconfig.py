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
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from qf_exporter.config import ConfigError

CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Checked against unknown users so that a wrong name costs as much as a wrong password.
_DUMMY_HASH = bcrypt.hashpw(b"qf-exporter", bcrypt.gensalt(rounds=10))


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    _cache: dict[bytes, bool] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, user: str, password: str) -> bool:
        """bcrypt check, cached by a keyed digest so a scrape does not pay bcrypt's cost."""
        hashed = self.users.get(user)
        key = hashlib.sha256(
            b"\x00".join([user.encode(), password.encode(), hashed or b""])
        ).digest()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        ok = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH) and hashed is not None
        with self._lock:
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[key] = ok
        return ok

    @staticmethod
    def same(a: str, b: str) -> bool:
        return hmac.compare_digest(a.encode(), b.encode())


def load_web_config(path: str) -> WebConfig:
    problems: list[str] = []
    base = Path(path).resolve().parent
    try:
        raw: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc.strerror}"]) from None
    except yaml.YAMLError:
        raise ConfigError([f"{path}: invalid YAML"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: must be a mapping"])
    for key in raw:
        if key not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            problems.append(f"{key}: unknown key")
    config = WebConfig()
    users = raw.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        problems.append("basic_auth_users: must be a mapping of user name to bcrypt hash")
        users = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            problems.append(f"basic_auth_users.{user}: must be a bcrypt hash ($2y$...)")
            continue
        # bcrypt (the library) reads $2y$ hashes as $2b$; they are the same algorithm.
        config.users[str(user)] = ("$2b$" + hashed[4:]).encode()
    tls = raw.get("tls_server_config")
    if tls is not None:
        config.ssl_context = _tls(tls, base, problems)
    if problems:
        raise ConfigError(problems)
    return config


def _tls(tls: Any, base: Path, problems: list[str]) -> ssl.SSLContext | None:
    p = "tls_server_config"
    if not isinstance(tls, dict):
        problems.append(f"{p}: must be a mapping")
        return None
    known = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version",
             "max_version", "cipher_suites", "prefer_server_cipher_suites", "curve_preferences"}
    for key in tls:
        if key not in known:
            problems.append(f"{p}.{key}: unknown key")
    cert, key = tls.get("cert_file"), tls.get("key_file")
    if not cert or not key:
        problems.append(f"{p}: cert_file and key_file are both required")
        return None
    auth_type = tls.get("client_auth_type", "NoClientCert")
    if auth_type not in CLIENT_AUTH:
        problems.append(f"{p}.client_auth_type: must be one of {', '.join(CLIENT_AUTH)}")
        return None
    ca = tls.get("client_ca_file")
    if auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and not ca:
        problems.append(f"{p}.client_ca_file: required by client_auth_type {auth_type}")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    minimum = tls.get("min_version", "TLS12")
    if minimum not in TLS_VERSIONS:
        problems.append(f"{p}.min_version: must be one of {', '.join(TLS_VERSIONS)}")
        return None
    context.minimum_version = TLS_VERSIONS[minimum]
    try:
        context.load_cert_chain(str(base / cert), str(base / key))
    except (OSError, ssl.SSLError) as exc:
        problems.append(f"{p}.cert_file: cannot load the certificate and key: {exc}")
        return None
    context.verify_mode = CLIENT_AUTH[auth_type]
    if ca:
        try:
            context.load_verify_locations(str(base / ca))
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"{p}.client_ca_file: cannot load: {exc}")
            return None
    return context
