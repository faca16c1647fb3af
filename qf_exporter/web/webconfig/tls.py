"""``tls_server_config``: the server's TLS context and the client certificates it asks
for, from exporter-toolkit's keys (web-configuration.md) with Go's names for versions,
cipher suites and curves (crypto/tls).

Every key is honoured or refused by name: a ``curve_preferences`` list of more than one
curve is refused (Python's ``ssl`` sets one), as are TLS 1.3 suites in
``cipher_suites`` (Go cannot choose them either). Relative paths are relative to the
web config file, as in exporter-toolkit.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

from qf_exporter.config.fields import Checker

PATH = "tls_server_config"

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
FILE_KEYS = ("cert_file", "key_file", "client_ca_file")
KEYS = frozenset({
    "cert",
    "key",
    "client_ca",
    *FILE_KEYS,
    "client_auth_type",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
})


def named_files(tls: Any, base: Path) -> list[Path]:
    """The files ``tls_server_config`` names (best effort: for change detection)."""
    if not isinstance(tls, dict):
        return []
    return [base / tls[key] for key in FILE_KEYS if isinstance(tls.get(key), str) and tls[key]]


def read_tls(
    c: Checker, value: Any, base: Path
) -> tuple[ssl.SSLContext | None, frozenset[str] | None]:
    """The server context and the client SANs allowed (None: any), or (None, None)
    with the problems in ``c``."""
    tls = c.mapping(value, PATH, set(KEYS))
    if not isinstance(value, dict):
        return None, None
    before = len(c.problems)
    _given_once(c, tls)
    cert = _file(c, tls, "cert_file", base)
    key = _file(c, tls, "key_file", base)
    ca = _file(c, tls, "client_ca_file", base)
    auth_type, sans = _client_auth(c, tls)
    versions = _versions(c, tls)
    ciphers = _ciphers(c, tls)
    curves = _curves(c, tls)
    prefer = tls.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        c.problem(f"{PATH}.prefer_server_cipher_suites", "must be true or false")
    if len(c.problems) > before:
        return None, None
    context = _context(c, versions, ciphers, curves, prefer)
    if context is None or not _load_chain(c, context, tls, cert, key):
        return None, None
    context.verify_mode = CLIENT_AUTH[auth_type]  # ask for client certificates
    if not _trust_client_ca(c, context, ca, tls.get("client_ca")):
        return None, None
    return context, frozenset(sans) if sans else None


def _file(c: Checker, tls: dict[str, Any], key: str, base: Path) -> Path | None:
    value = tls.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        c.problem(f"{PATH}.{key}", "must be a file path")
        return None
    file = base / value
    if not file.is_file():
        c.problem(f"{PATH}.{key}", f"{file} is not a readable file")
        return None
    return file


def _string_list(c: Checker, tls: dict[str, Any], key: str) -> list[str]:
    value = tls.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        c.problem(f"{PATH}.{key}", "must be a list of strings")
        return []
    return value


def _given_once(c: Checker, tls: dict[str, Any]) -> None:
    """A certificate and a key each given once (file or inline PEM), a CA at most once."""
    for inline, file_key in (("cert", "cert_file"), ("key", "key_file")):
        given = [k for k in (inline, file_key) if tls.get(k) not in (None, "")]
        if not given:
            c.problem(f"{PATH}.{file_key}", "is required")
        elif len(given) == 2:
            c.problem(f"{PATH}.{inline}", f"set either {inline} or {file_key}, not both")
    if tls.get("client_ca") not in (None, "") and tls.get("client_ca_file") not in (None, ""):
        c.problem(f"{PATH}.client_ca", "set either client_ca or client_ca_file, not both")
    for inline in ("cert", "key", "client_ca"):
        if tls.get(inline) not in (None, "") and not isinstance(tls[inline], str):
            c.problem(f"{PATH}.{inline}", "must be PEM text")


def _client_auth(c: Checker, tls: dict[str, Any]) -> tuple[Any, list[str]]:
    """The client_auth_type (checked against the CA) and the allowed client SANs."""
    has_ca = tls.get("client_ca_file") not in (None, "") or tls.get("client_ca") not in (None, "")
    auth_type = tls.get("client_auth_type") or "NoClientCert"
    if not isinstance(auth_type, str) or auth_type not in CLIENT_AUTH:
        c.problem(f"{PATH}.client_auth_type", f"must be one of {', '.join(CLIENT_AUTH)}")
    elif auth_type in _NEEDS_CA and not has_ca:
        c.problem(f"{PATH}.client_ca_file", f"is required by client_auth_type {auth_type}")
    elif auth_type == "NoClientCert" and has_ca:
        c.problem(
            f"{PATH}.client_auth_type",
            "client_ca_file is set but no client certificate is asked for; "
            "set client_auth_type: RequireAndVerifyClientCert",
        )
    sans = _string_list(c, tls, "client_allowed_sans")
    if sans and auth_type not in ("RequireAnyClientCert", "RequireAndVerifyClientCert",
                                  "RequireClientCert"):
        c.problem(
            f"{PATH}.client_allowed_sans",
            "needs client_auth_type RequireAndVerifyClientCert (or RequireAnyClientCert), "
            "so that every client shows a certificate",
        )
    return auth_type, sans


def _versions(c: Checker, tls: dict[str, Any]) -> dict[str, ssl.TLSVersion]:
    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        value = tls.get(name) or default
        if not isinstance(value, str) or value not in TLS_VERSIONS:
            c.problem(f"{PATH}.{name}", f"must be one of {', '.join(TLS_VERSIONS)}")
        else:
            versions[name] = TLS_VERSIONS[value]
    if len(versions) == 2 and versions["min_version"] > versions["max_version"]:
        c.problem(f"{PATH}.max_version", "must not be below min_version")
    return versions


def _ciphers(c: Checker, tls: dict[str, Any]) -> list[str]:
    """The OpenSSL names of the (Go-named, TLS 1.2) cipher_suites."""
    ciphers = []
    for suite in _string_list(c, tls, "cipher_suites"):
        if suite in _TLS13_SUITES:
            c.problem(
                f"{PATH}.cipher_suites",
                f"{suite} is a TLS 1.3 suite; TLS 1.3 suites cannot be chosen (nor in Go): "
                "list TLS 1.2 suites only",
            )
        elif suite not in CIPHER_SUITES:
            c.problem(f"{PATH}.cipher_suites", f"{suite} is not a Go cipher suite name known here")
        else:
            ciphers.append(CIPHER_SUITES[suite])
    return ciphers


def _curves(c: Checker, tls: dict[str, Any]) -> list[str]:
    curves = _string_list(c, tls, "curve_preferences")
    for curve in curves:
        if curve not in CURVES:
            c.problem(f"{PATH}.curve_preferences", f"{curve} is not one of {', '.join(CURVES)}")
    if len(curves) > 1:
        c.problem(
            f"{PATH}.curve_preferences",
            "Python's ssl module can restrict the handshake to one curve, not an ordered "
            "list: list exactly one",
        )
    return curves


def _context(
    c: Checker,
    versions: dict[str, ssl.TLSVersion],
    ciphers: list[str],
    curves: list[str],
    prefer: bool,
) -> ssl.SSLContext | None:
    """A server context with the checked versions, suites and curve; None if refused."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.minimum_version = versions["min_version"]
        context.maximum_version = versions["max_version"]
    except (ValueError, ssl.SSLError) as exc:
        c.problem(f"{PATH}.min_version", f"not supported here: {exc}")
        return None
    if ciphers:
        try:
            context.set_ciphers(":".join(ciphers))
        except ssl.SSLError as exc:
            c.problem(f"{PATH}.cipher_suites", f"not available in this OpenSSL: {exc}")
            return None
    if curves:
        context.set_ecdh_curve(CURVES[curves[0]])
    if prefer:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def _trust_client_ca(c: Checker, context: ssl.SSLContext, ca: Path | None, inline: Any) -> bool:
    """Trust the client CA, from its file or inline PEM."""
    try:
        if ca is not None:
            context.load_verify_locations(str(ca))
        elif inline:
            context.load_verify_locations(cadata=inline)
    except (OSError, ssl.SSLError) as exc:
        where = ca if ca is not None else "client_ca"
        c.problem(f"{PATH}.client_ca_file", f"cannot load {where}: {exc}")
        return False
    return True


def _load_chain(
    c: Checker,
    context: ssl.SSLContext,
    tls: dict[str, Any],
    cert: Path | None,
    key: Path | None,
) -> bool:
    """Load the certificate and key, from files or from inline PEM."""
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
            c.problem(f"{PATH}.cert_file",
                      f"cannot load {shown_cert} with key_file {shown_key}: {exc}")
            return False
    return True
