"""``basic_auth_users``: the bcrypt hashes of the web config, and checking a password
against them at a cost paid once per scraper (``CheckCache``).

As exporter-toolkit (web-configuration.md): each user name maps to a bcrypt hash
(``$2y$``, ``$2b$`` or ``$2a$``), and a user not listed is refused after a bcrypt run
like any other, so that a wrong name costs as much as a wrong password.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
from collections import OrderedDict
from typing import Any

import bcrypt

from qf_exporter.config.fields import Checker, join

_BCRYPT = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
# bcrypt uses the first 72 bytes of a password. Go's CompareHashAndPassword and
# `htpasswd -B` both cut longer ones there; the bcrypt package (5.x) raises instead.
BCRYPT_MAX_PASSWORD = 72


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


def check(users: dict[str, bytes], cache: CheckCache, user: str, password: str) -> bool:
    """bcrypt check (tens of milliseconds: call it off the event loop), cached.

    An unknown user is checked against a configured hash too (and refused), so a
    wrong name costs as much as a wrong password.
    """
    hashed = users.get(user)
    key = cache.key(user, password, hashed)
    cached = cache.get(key)
    if cached is not None:
        return cached
    against = hashed or next(iter(users.values()), None) or _dummy_hash()
    try:
        secret = password.encode()[:BCRYPT_MAX_PASSWORD]
        matches = bcrypt.checkpw(secret, against)
    except (ValueError, UnicodeEncodeError):  # a NUL byte; a lone surrogate
        matches = False
    ok = matches and hashed is not None
    cache.put(key, ok)
    return ok


_DUMMY: list[bytes] = []


def _dummy_hash() -> bytes:
    if not _DUMMY:
        _DUMMY.append(bcrypt.hashpw(b"qf-exporter", bcrypt.gensalt(rounds=10)))
    return _DUMMY[0]


def read_users(c: Checker, users: Any, path: str = "basic_auth_users") -> dict[str, bytes]:
    """The users and their hashes (as the bcrypt package reads them); each user whose
    name or hash is wrong is a problem of ``c``."""
    if users is None:
        return {}
    if not isinstance(users, dict):
        c.problem(path, "must be a mapping of user name to bcrypt hash")
        return {}
    read: dict[str, bytes] = {}
    for user, hashed in users.items():
        name = str(user)
        if not name or ":" in name:
            c.problem(join(path, name), "a user name must be non-empty, no ':'")
        elif not isinstance(hashed, str) or not _BCRYPT.match(hashed.strip()):
            c.problem(join(path, name), "must be a bcrypt hash ($2y$, $2b$ or $2a$)")
        else:
            # bcrypt (the library) reads $2y$ hashes as $2b$; they are the same algorithm.
            read[name] = ("$2b$" + hashed.strip()[4:]).encode()
    return read
