"""``--web.config.file``: TLS, basic auth and HTTP headers in the exporter-toolkit format.

```yaml
tls_server_config:
  cert_file: server.crt           # or cert: / key: with the PEM inline
  key_file: server.key
  client_ca_file: ca.crt          # optional, for mutual TLS (or client_ca: inline)
  client_auth_type: RequireAndVerifyClientCert
  client_allowed_sans: [scraper.example.com]
  min_version: TLS12
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
  curve_preferences: [X25519]
http_server_config:
  headers: {Strict-Transport-Security: max-age=31536000}
basic_auth_users:
  alice: $2y$10$...                # bcrypt hash
rate_limit: {interval: 100ms, burst: 20}
```
Every key of that format is honoured or refused by name: ``http2: true`` (no HTTP/2
here) and a ``curve_preferences`` list of more than one curve (Python's ``ssl`` sets one)
are refused. Relative paths are relative to the web config file, as in exporter-toolkit.
``load_web_config`` raises ``ConfigError`` with one line per problem, each naming its
key (``tls_server_config.key_file: is required``); the caller adds the file's name.
``LiveWebConfig`` re-reads the file (and the files it names) when any of them changes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import ssl
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt

from qf_exporter.config.file import ConfigError
from qf_exporter.util import yamlfile

log = logging.getLogger(__name__)

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
# Go's names (crypto/tls.CipherSuites) → OpenSSL's. As in Go, they choose among TLS 1.2
# suites only; TLS 1.3 suites cannot be chosen.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
_TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}
# The headers exporter-toolkit lets http_server_config.headers set, with the values it
# allows where it limits them.
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
_TOP_KEYS = ("tls_server_config", "basic_auth_users", "http_server_config", "rate_limit")
_HTTP_KEYS = ("http2", "headers")
_TLS_KEYS = (
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_ca_file",
    "client_auth_type",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
)
_BCRYPT = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
# bcrypt uses the first 72 bytes of a password. Go's CompareHashAndPassword and
# `htpasswd -B` both cut longer ones there; the bcrypt package (5.x) raises instead.
BCRYPT_MAX_PASSWORD = 72


@dataclass(frozen=True)
class RateLimit:
    """exporter-toolkit's token bucket: one request per ``interval``, bursts of ``burst``."""

    interval: float
    burst: int


class CheckCache:
    """The answers of earlier bcrypt checks, so that a scraper pays bcrypt's cost once.

    Entries are keyed by an HMAC of (user, password, hash) under a key made at start, so
    none holds a password or a plain digest of one. Successes and failures are kept
    apart, each the most recently used first: a flood of fresh wrong passwords evicts
    only other failures, never a password that was right (only a right password adds a
    success, so that side cannot be flooded). A repeated wrong password (a scraper with
    an old one) is answered from the failures without a bcrypt run.
    """

    def __init__(self, successes: int = 256, failures: int = 1024) -> None:
        self._secret = os.urandom(32)
        self._sizes = {True: successes, False: failures}
        self._entries: dict[bool, OrderedDict[bytes, None]] = {True: OrderedDict(),
                                                               False: OrderedDict()}
        self._lock = threading.Lock()

    def key(self, user: str, password: str, hashed: bytes | None) -> bytes:
        parts = [user.encode(), password.encode(errors="surrogatepass"), hashed or b""]
        message = b"".join(len(part).to_bytes(4, "big") + part for part in parts)
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def get(self, key: bytes) -> bool | None:
        with self._lock:
            for ok, entries in self._entries.items():
                if key in entries:
                    entries.move_to_end(key)
                    return ok
        return None

    def put(self, key: bytes, ok: bool) -> None:
        with self._lock:
            entries = self._entries[ok]
            entries[key] = None
            entries.move_to_end(key)
            while len(entries) > self._sizes[ok]:
                entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(entries) for entries in self._entries.values())


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    # Client certificates must name one of these (exact match on any SAN), if set.
    allowed_sans: frozenset[str] | None = None
    rate_limit: RateLimit | None = None
    # Shared with the versions re-read after this one (LiveWebConfig): the hash is part
    # of each key, so a changed or removed user never matches an old answer.
    cache: CheckCache = field(default_factory=CheckCache, repr=False, compare=False)

    def cached(self, user: str, password: str) -> bool | None:
        """The answer of an earlier check of this user and password, or None: cheap
        (an HMAC and a lookup), so it is asked on the event loop before any bcrypt."""
        return self.cache.get(self.cache.key(user, password, self.users.get(user)))

    def check(self, user: str, password: str) -> bool:
        """bcrypt check (tens of milliseconds: call it off the event loop), cached.

        An unknown user is checked against a configured hash too (and refused), so a
        wrong name costs as much as a wrong password.
        """
        hashed = self.users.get(user)
        key = self.cache.key(user, password, hashed)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        against = hashed or next(iter(self.users.values()), None) or _dummy_hash()
        try:
            secret = password.encode()[:BCRYPT_MAX_PASSWORD]
            matches = bcrypt.checkpw(secret, against)
        except (ValueError, UnicodeEncodeError):  # a NUL byte; a lone surrogate
            matches = False
        ok = matches and hashed is not None
        self.cache.put(key, ok)
        return ok

    def san_allowed(self, peer_cert: dict[str, Any] | None) -> bool:
        """Whether the (verified) client certificate names an allowed SAN."""
        if self.allowed_sans is None:
            return True
        sans = (peer_cert or {}).get("subjectAltName", ())
        return any(value in self.allowed_sans for _kind, value in sans)


_DUMMY: list[bytes] = []


def _dummy_hash() -> bytes:
    if not _DUMMY:
        _DUMMY.append(bcrypt.hashpw(b"qf-exporter", bcrypt.gensalt(rounds=10)))
    return _DUMMY[0]


def read_yaml(path: str) -> Any:
    """The file's YAML document: a bounded regular file, strict and safe YAML
    (``util/yamlfile.py``, shared with the configuration file); a ConfigError otherwise."""
    loaded = yamlfile.load(path)
    if loaded.problems:
        raise ConfigError(list(loaded.problems))
    return loaded.data


def load_web_config(path: str) -> WebConfig:
    base = Path(path).resolve().parent
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["must be a mapping (tls_server_config, basic_auth_users)"])
    problems: list[str] = []
    for key in raw:
        if key not in _TOP_KEYS:
            problems.append(f"{key}: unknown key")
    config = WebConfig()
    _users(raw.get("basic_auth_users"), config, problems)
    config.headers = _http(raw.get("http_server_config"), problems)
    config.rate_limit = _rate_limit(raw.get("rate_limit"), problems)
    tls = raw.get("tls_server_config")
    if tls is not None:
        config.ssl_context, config.allowed_sans = _tls(tls, base, problems)
    if problems:
        raise ConfigError(problems)
    return config


def referenced_files(path: str) -> list[Path]:
    """The web config file and every file it names (best effort: for change detection)."""
    files = [Path(path)]
    loaded = yamlfile.load(path)  # bounded and strict, like every read of this file
    if loaded.problems:
        return files
    raw = loaded.data
    tls = raw.get("tls_server_config") if isinstance(raw, dict) else None
    if isinstance(tls, dict):
        base = Path(path).resolve().parent
        for key in ("cert_file", "key_file", "client_ca_file"):
            if isinstance(tls.get(key), str) and tls[key]:
                files.append(base / tls[key])
    return files


def _users(users: Any, config: WebConfig, problems: list[str]) -> None:
    if users is None:
        return
    if not isinstance(users, dict):
        problems.append("basic_auth_users: must be a mapping of user name to bcrypt hash")
        return
    for user, hashed in users.items():
        name = str(user)
        if not name or ":" in name:
            problems.append(f"basic_auth_users.{name}: a user name must be non-empty, no ':'")
        elif not isinstance(hashed, str) or not _BCRYPT.match(hashed.strip()):
            problems.append(f"basic_auth_users.{name}: must be a bcrypt hash ($2y$, $2b$ or $2a$)")
        else:
            # bcrypt (the library) reads $2y$ hashes as $2b$; they are the same algorithm.
            config.users[name] = ("$2b$" + hashed.strip()[4:]).encode()


def _http(http: Any, problems: list[str]) -> tuple[tuple[str, str], ...]:
    p = "http_server_config"
    if http is None:
        return ()
    if not isinstance(http, dict):
        problems.append(f"{p}: must be a mapping")
        return ()
    problems.extend(f"{p}.{key}: unknown key" for key in http if key not in _HTTP_KEYS)
    if http.get("http2") not in (None, False):
        problems.append(
            f"{p}.http2: HTTP/2 is not served here (HTTP/1.1 only); set it to false or remove it"
        )
    return _headers(http.get("headers"), problems)


def _headers(headers: Any, problems: list[str]) -> tuple[tuple[str, str], ...]:
    p = "http_server_config"
    if headers is None:
        return ()
    if not isinstance(headers, dict):
        problems.append(f"{p}.headers: must be a mapping of header name to value")
        return ()
    chosen = []
    for name, value in headers.items():
        known = {h.lower(): h for h in HEADERS}.get(str(name).lower())
        if known is None:
            problems.append(
                f"{p}.headers.{name}: not a header that can be set (one of {', '.join(HEADERS)})"
            )
            continue
        if value is None or value == "":
            continue  # "Unset if blank", as exporter-toolkit
        allowed = HEADERS[known]
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            problems.append(f"{p}.headers.{name}: must be a one-line string")
        elif allowed is not None and value.lower() not in allowed:
            problems.append(f"{p}.headers.{name}: must be one of {', '.join(allowed)}")
        else:
            chosen.append((known, value))
    return tuple(chosen)


def _go_duration(value: Any) -> float:
    """A Go duration (``100ms``, ``1m30s``) or a number of seconds."""
    from qf_exporter.config.file import parse_duration

    return parse_duration(value)


def _rate_limit(raw: Any, problems: list[str]) -> RateLimit | None:
    p = "rate_limit"
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"{p}: must be a mapping (interval, burst)")
        return None
    problems.extend(f"{p}.{key}: unknown key" for key in raw if key not in ("interval", "burst"))
    try:
        interval = _go_duration(raw.get("interval", 0))
    except ValueError:
        problems.append(f"{p}.interval: must be a duration like 100ms or 1s")
        return None
    burst = raw.get("burst", 0)
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        problems.append(f"{p}.burst: must be a whole number >= 0")
        return None
    if interval == 0:
        return None  # "set to 0 to disable rate limiter"
    if burst == 0:
        problems.append(f"{p}.burst: must be at least 1, or every request is refused")
        return None
    return RateLimit(interval, burst)


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


def _string_list(tls: dict[str, Any], key: str, problems: list[str]) -> list[str]:
    value = tls.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"tls_server_config.{key}: must be a list of strings")
        return []
    return value


def _tls(
    tls: Any, base: Path, problems: list[str]
) -> tuple[ssl.SSLContext | None, frozenset[str] | None]:
    p = "tls_server_config"
    if not isinstance(tls, dict):
        problems.append(f"{p}: must be a mapping")
        return None, None
    before = len(problems)
    _tls_keys(tls, problems)
    cert = _file(tls, "cert_file", base, problems)
    key = _file(tls, "key_file", base, problems)
    ca = _file(tls, "client_ca_file", base, problems)
    auth_type, sans = _tls_client_auth(tls, problems)
    versions = _tls_versions(tls, problems)
    ciphers = _tls_ciphers(tls, problems)
    curves = _tls_curves(tls, problems)
    prefer = tls.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        problems.append(f"{p}.prefer_server_cipher_suites: must be true or false")
    if len(problems) > before:
        return None, None
    context = _tls_context(versions, ciphers, curves, prefer, problems)
    if context is None or not _load_chain(context, tls, cert, key, problems):
        return None, None
    if not _tls_client_ca(context, tls, ca, auth_type, problems):
        return None, None
    return context, frozenset(sans) if sans else None


def _tls_keys(tls: dict[str, Any], problems: list[str]) -> None:
    """Unknown keys; a certificate and a key each given once (file or inline PEM)."""
    p = "tls_server_config"
    for key in tls:
        if key not in _TLS_KEYS:
            problems.append(f"{p}.{key}: unknown key")
    for inline, file_key in (("cert", "cert_file"), ("key", "key_file")):
        given = [k for k in (inline, file_key) if tls.get(k) not in (None, "")]
        if not given:
            problems.append(f"{p}.{file_key}: is required")
        elif len(given) == 2:
            problems.append(f"{p}.{inline}: set either {inline} or {file_key}, not both")
    if tls.get("client_ca") not in (None, "") and tls.get("client_ca_file") not in (None, ""):
        problems.append(f"{p}.client_ca: set either client_ca or client_ca_file, not both")
    for inline in ("cert", "key", "client_ca"):
        if tls.get(inline) not in (None, "") and not isinstance(tls[inline], str):
            problems.append(f"{p}.{inline}: must be PEM text")


def _tls_client_auth(tls: dict[str, Any], problems: list[str]) -> tuple[Any, list[str]]:
    """The client_auth_type (checked against the CA) and the allowed client SANs."""
    p = "tls_server_config"
    has_ca = tls.get("client_ca_file") not in (None, "") or tls.get("client_ca") not in (None, "")
    auth_type = tls.get("client_auth_type") or "NoClientCert"
    if not isinstance(auth_type, str) or auth_type not in CLIENT_AUTH:
        problems.append(f"{p}.client_auth_type: must be one of {', '.join(CLIENT_AUTH)}")
    elif auth_type in _NEEDS_CA and not has_ca:
        problems.append(f"{p}.client_ca_file: is required by client_auth_type {auth_type}")
    elif auth_type == "NoClientCert" and has_ca:
        problems.append(
            f"{p}.client_auth_type: client_ca_file is set but no client certificate is "
            "asked for; set client_auth_type: RequireAndVerifyClientCert"
        )
    sans = _string_list(tls, "client_allowed_sans", problems)
    if sans and auth_type not in ("RequireAnyClientCert", "RequireAndVerifyClientCert",
                                  "RequireClientCert"):
        problems.append(
            f"{p}.client_allowed_sans: needs client_auth_type RequireAndVerifyClientCert "
            "(or RequireAnyClientCert), so that every client shows a certificate"
        )
    return auth_type, sans


def _tls_versions(tls: dict[str, Any], problems: list[str]) -> dict[str, ssl.TLSVersion]:
    p = "tls_server_config"
    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        value = tls.get(name) or default
        if not isinstance(value, str) or value not in TLS_VERSIONS:
            problems.append(f"{p}.{name}: must be one of {', '.join(TLS_VERSIONS)}")
        else:
            versions[name] = TLS_VERSIONS[value]
    if len(versions) == 2 and versions["min_version"] > versions["max_version"]:
        problems.append(f"{p}.max_version: must not be below min_version")
    return versions


def _tls_ciphers(tls: dict[str, Any], problems: list[str]) -> list[str]:
    """The OpenSSL names of the (Go-named, TLS 1.2) cipher_suites."""
    p = "tls_server_config"
    ciphers = []
    for suite in _string_list(tls, "cipher_suites", problems):
        if suite in _TLS13_SUITES:
            problems.append(
                f"{p}.cipher_suites: {suite} is a TLS 1.3 suite; TLS 1.3 suites cannot be "
                "chosen (nor in Go): list TLS 1.2 suites only"
            )
        elif suite not in CIPHER_SUITES:
            problems.append(f"{p}.cipher_suites: {suite} is not a Go cipher suite name known here")
        else:
            ciphers.append(CIPHER_SUITES[suite])
    return ciphers


def _tls_curves(tls: dict[str, Any], problems: list[str]) -> list[str]:
    p = "tls_server_config"
    curves = _string_list(tls, "curve_preferences", problems)
    for curve in curves:
        if curve not in CURVES:
            problems.append(
                f"{p}.curve_preferences: {curve} is not one of {', '.join(CURVES)}"
            )
    if len(curves) > 1:
        problems.append(
            f"{p}.curve_preferences: Python's ssl module can restrict the handshake to one "
            "curve, not an ordered list: list exactly one"
        )
    return curves


def _tls_context(
    versions: dict[str, ssl.TLSVersion],
    ciphers: list[str],
    curves: list[str],
    prefer: bool,
    problems: list[str],
) -> ssl.SSLContext | None:
    """A server context with the checked versions, suites and curve; None if refused."""
    p = "tls_server_config"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.minimum_version = versions["min_version"]
        context.maximum_version = versions["max_version"]
    except (ValueError, ssl.SSLError) as exc:
        problems.append(f"{p}.min_version: not supported here: {exc}")
        return None
    if ciphers:
        try:
            context.set_ciphers(":".join(ciphers))
        except ssl.SSLError as exc:
            problems.append(f"{p}.cipher_suites: not available in this OpenSSL: {exc}")
            return None
    if curves:
        context.set_ecdh_curve(CURVES[curves[0]])
    if prefer:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def _tls_client_ca(
    context: ssl.SSLContext,
    tls: dict[str, Any],
    ca: Path | None,
    auth_type: str,
    problems: list[str],
) -> bool:
    """Ask for client certificates as configured and trust the client CA."""
    p = "tls_server_config"
    context.verify_mode = CLIENT_AUTH[auth_type]
    try:
        if ca is not None:
            context.load_verify_locations(str(ca))
        elif tls.get("client_ca"):
            context.load_verify_locations(cadata=tls["client_ca"])
    except (OSError, ssl.SSLError) as exc:
        where = ca if ca is not None else "client_ca"
        problems.append(f"{p}.client_ca_file: cannot load {where}: {exc}")
        return False
    return True


def _load_chain(
    context: ssl.SSLContext,
    tls: dict[str, Any],
    cert: Path | None,
    key: Path | None,
    problems: list[str],
) -> bool:
    """Load the certificate and key, from files or from inline PEM."""
    p = "tls_server_config"
    with tempfile.TemporaryDirectory(prefix="qf-exporter-tls-") as private:
        # ssl loads certificates only from files: inline PEM goes to a private temporary
        # file (mode 0600 in a 0700 directory) that is gone when loading is done.
        def path_of(given: Path | None, inline: str) -> Path | None:
            if given is not None:
                return given
            text = tls.get(inline)
            if not isinstance(text, str) or not text:
                return None
            target = Path(private) / inline
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            return target

        cert_path, key_path = path_of(cert, "cert"), path_of(key, "key")
        if cert_path is None or key_path is None:
            return False
        try:
            context.load_cert_chain(str(cert_path), str(key_path))
        except (OSError, ssl.SSLError) as exc:
            shown_cert = cert if cert is not None else "cert"
            shown_key = key if key is not None else "key"
            problems.append(
                f"{p}.cert_file: cannot load {shown_cert} with key_file {shown_key}: {exc}"
            )
            return False
    return True


def _signature(files: list[Path]) -> tuple[tuple[int, int, int, int] | None, ...]:
    """What changes when any of the files is replaced, rotated or edited."""
    out: list[tuple[int, int, int, int] | None] = []
    for file in files:
        try:
            st = os.stat(file)  # follows symlinks: a Kubernetes secret swaps ..data
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
    return tuple(out)


class LiveWebConfig:
    """The web config as it is on disk now, re-read when the file or a file it names
    changes; a broken new version is logged once and the last good one kept.

    ``current()`` is called for every new connection and every request, as
    exporter-toolkit reads its file; when nothing changed it costs a few ``stat`` calls.
    Whether the listener speaks TLS is fixed at start: a change that would switch between
    HTTP and HTTPS is refused like any other broken file (it needs a restart).
    """

    def __init__(
        self, path: str | None, loader: Callable[[str], WebConfig] = load_web_config
    ) -> None:
        self.path = path
        self._loader = loader
        self._lock = threading.Lock()
        self._config = loader(path) if path else WebConfig()
        self.tls = self._config.ssl_context is not None
        self._files = referenced_files(path) if path else []
        self._seen = _signature(self._files)

    @classmethod
    def fixed(cls, config: WebConfig) -> LiveWebConfig:
        """A web config that is never re-read (tests, embedded use)."""
        live = cls(None)
        live._config = config
        live.tls = config.ssl_context is not None
        return live

    def current(self) -> WebConfig:
        if not self.path:
            return self._config
        with self._lock:
            signature = _signature(self._files)
            if signature == self._seen:
                return self._config
            self._files = referenced_files(self.path)
            self._seen = signature = _signature(self._files)
            try:
                config = self._loader(self.path)
                if (config.ssl_context is not None) != self.tls:
                    raise ConfigError(
                        ["tls_server_config: switching between HTTP and HTTPS needs a restart"]
                    )
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error(
                        "web config change refused, keeping the last good one",
                        extra={"file": self.path, "problem": problem},
                    )
                return self._config
            config.cache = self._config.cache
            self._config = config
            log.info("web config reloaded", extra={"file": self.path})
            return config
