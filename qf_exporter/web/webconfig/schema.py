"""The web config file's keys, checked all at once into a ``WebConfig``.

The top level, ``http_server_config`` and ``rate_limit`` are read here; the TLS keys
in ``tls.py`` and the users in ``basic_auth.py``. Problems are collected by the config
package's ``Checker``, so an unknown key gets a did-you-mean as in the configuration
file; ``load_web_config`` raises ``ConfigError`` with one line per problem, each naming
its key (``tls_server_config.key_file: is required``); the caller adds the file's name.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qf_exporter.config.fields import Checker, join, parse_duration
from qf_exporter.config.file import ConfigError
from qf_exporter.util import yamlfile
from qf_exporter.web.webconfig import basic_auth, tls
from qf_exporter.web.webconfig.basic_auth import CheckCache

TOP_KEYS = frozenset({"tls_server_config", "basic_auth_users", "http_server_config",
                      "rate_limit"})
HTTP_KEYS = frozenset({"http2", "headers"})
RATE_LIMIT_KEYS = frozenset({"interval", "burst"})
# The headers exporter-toolkit lets http_server_config.headers set, with the values it
# allows where it limits them.
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}


@dataclass(frozen=True)
class RateLimit:
    """exporter-toolkit's token bucket: one request per ``interval``, bursts of ``burst``."""

    interval: float
    burst: int


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
        """bcrypt check (tens of milliseconds: call it off the event loop), cached."""
        return basic_auth.check(self.users, self.cache, user, password)

    def san_allowed(self, peer_cert: dict[str, Any] | None) -> bool:
        """Whether the (verified) client certificate names an allowed SAN."""
        if self.allowed_sans is None:
            return True
        sans = (peer_cert or {}).get("subjectAltName", ())
        return any(value in self.allowed_sans for _kind, value in sans)


@dataclass(frozen=True)
class Parsed:
    """The web config file parsed once: the files it names (the file itself first, for
    change detection, also when it is refused), and its document or its problems."""

    files: tuple[Path, ...]
    document: dict[str, Any]
    problems: tuple[str, ...] = ()


def parse_web_config(path: str) -> Parsed:
    """The file's YAML document: a bounded regular file, strict and safe YAML
    (``util/yamlfile.py``, shared with the configuration file); nothing raised."""
    files = (Path(path),)
    loaded = yamlfile.load(path)
    if loaded.problems:
        return Parsed(files, {}, loaded.problems)
    document = {} if loaded.data is None else loaded.data
    if not isinstance(document, dict):
        return Parsed(files, {}, ("must be a mapping (tls_server_config, basic_auth_users)",))
    base = Path(path).resolve().parent
    return Parsed(files + tuple(tls.named_files(document.get("tls_server_config"), base)),
                  document)


def build_web_config(parsed: Parsed) -> WebConfig:
    """The web config of a parsed file, its TLS files loaded; ConfigError with every
    problem otherwise."""
    if parsed.problems:
        raise ConfigError(list(parsed.problems))
    c = Checker({})
    config = _read(c, parsed.document, parsed.files[0].resolve().parent)
    if c.problems:
        raise ConfigError(c.problems)
    return config


def load_web_config(path: str) -> WebConfig:
    """The web config in ``path``; ConfigError with every problem otherwise."""
    return build_web_config(parse_web_config(path))


def _read(c: Checker, raw: dict[str, Any], base: Path) -> WebConfig:
    c.mapping(raw, "", set(TOP_KEYS))
    config = WebConfig()
    config.users = basic_auth.read_users(c, raw.get("basic_auth_users"))
    config.headers = _http(c, raw.get("http_server_config"))
    config.rate_limit = _rate_limit(c, raw.get("rate_limit"))
    if raw.get("tls_server_config") is not None:
        config.ssl_context, config.allowed_sans = tls.read_tls(
            c, raw["tls_server_config"], base
        )
    return config


def _http(c: Checker, value: Any) -> tuple[tuple[str, str], ...]:
    p = "http_server_config"
    http = c.mapping(value, p, set(HTTP_KEYS))
    if http.get("http2") not in (None, False):
        c.problem(f"{p}.http2",
                  "HTTP/2 is not served here (HTTP/1.1 only); set it to false or remove it")
    return _headers(c, http.get("headers"))


def _headers(c: Checker, headers: Any) -> tuple[tuple[str, str], ...]:
    p = "http_server_config.headers"
    if headers is None:
        return ()
    if not isinstance(headers, dict):
        c.problem(p, "must be a mapping of header name to value")
        return ()
    known = {h.lower(): h for h in HEADERS}
    chosen = []
    for name, value in headers.items():
        header = known.get(str(name).lower())
        where = join(p, str(name))
        if header is None:
            c.problem(where, f"not a header that can be set (one of {', '.join(HEADERS)})")
            continue
        if value is None or value == "":
            continue  # "Unset if blank", as exporter-toolkit
        allowed = HEADERS[header]
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            c.problem(where, "must be a one-line string")
        elif allowed is not None and value.lower() not in allowed:
            c.problem(where, f"must be one of {', '.join(allowed)}")
        else:
            chosen.append((header, value))
    return tuple(chosen)


def _rate_limit(c: Checker, value: Any) -> RateLimit | None:
    p = "rate_limit"
    if value is None:
        return None
    if not isinstance(value, dict):
        c.problem(p, "must be a mapping (interval, burst)")
        return None
    raw = c.mapping(value, p, set(RATE_LIMIT_KEYS))
    try:
        interval = parse_duration(raw.get("interval", 0))  # a Go duration: 100ms, 1m30s
    except ValueError:
        c.problem(f"{p}.interval", "must be a duration like 100ms or 1s")
        return None
    burst = raw.get("burst", 0)
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        c.problem(f"{p}.burst", "must be a whole number >= 0")
        return None
    if interval == 0:
        return None  # "set to 0 to disable rate limiter"
    if burst == 0:
        c.problem(f"{p}.burst", "must be at least 1, or every request is refused")
        return None
    return RateLimit(interval, burst)
