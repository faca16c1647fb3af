"""Credentials and keeping them out of text: ``Secret``, and the one redaction.

Every place that hides a credential does it here: ``redact`` (a log line, an error
message), ``redact_bytes`` (an upstream answer's bytes, before they are parsed) and
``Scrubber`` (the decoded strings of an answer, where a JSON escape may have hidden a key
from the bytes, and where runs of ``FRAGMENT`` or more of a key's characters go too).
``REDACTOR`` is the set of secrets the log formatters scrub. A small module of its own,
so that what only needs to hide a credential (the logs, the client's classification)
does not import the configuration loader to do it.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Iterable
from typing import Any

import re2  # type: ignore[import-not-found,unused-ignore]

REDACTED = "<redacted>"
# A key's characters this many in a row, or more, are redacted from decoded strings:
# long enough that ordinary text never matches by chance (keys are random), short
# enough that a key split across fields leaves no field with much of it.
FRAGMENT = 12

_BYTES = re2.Options()
_BYTES.log_errors = False
_BYTES.encoding = re2.Options.Encoding.LATIN1  # byte for byte, whatever the bytes are


def _longest_first(secrets: Iterable[str]) -> list[str]:
    """The non-empty secrets, longest first: a secret containing another is replaced
    whole."""
    return sorted({s for s in secrets if s}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``<redacted>``."""
    for secret in _longest_first(secrets):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_bytes(body: bytearray, secrets: Iterable[str]) -> bytearray:
    """``body`` with every secret's UTF-8 bytes replaced by ``<redacted>`` (so a JSON
    string that held one stays valid JSON)."""
    for secret in _longest_first(secrets):
        encoded = secret.encode()
        if encoded in body:
            body = body.replace(encoded, REDACTED.encode())
    return body


class Secret:
    """A credential. Printing, logging or formatting it shows ``<redacted>``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Redactor:
    """The secrets every log line is scrubbed of; replaced whole on each reload."""

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()
        # Reloads set it from another thread than the ones logging.
        self._lock = threading.Lock()

    def set(self, secrets: tuple[str, ...]) -> None:
        with self._lock:
            self._secrets = secrets

    def scrub(self, text: str) -> str:
        return redact(text, self._secrets)


# The one the log formatters use (logs.py) and the wiring keeps current (app.py).
REDACTOR = Redactor()


class Scrubber:
    """Finds the account's keys, and runs of FRAGMENT or more of their characters, in
    decoded text, and replaces each whole run with ``<redacted>``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._keys = _longest_first(secrets)
        pieces = {key[i : i + FRAGMENT] for key in self._keys
                  for i in range(max(len(key) - FRAGMENT, 0) + 1)}
        # Python's re, not RE2: decoded JSON may hold lone surrogates, which RE2 (UTF-8
        # only) refuses; every piece is a literal, so matching stays linear.
        self._pattern = re.compile("|".join(
            re.escape(piece) for piece in sorted(pieces, key=len, reverse=True)
        )) if pieces else None
        # A key without a character JSON may write as a short escape (\" \\ \/ \n ...)
        # reads the same in the raw UTF-8 bytes as decoded, unless a \u escape is used.
        plain = pieces and not any(set(key) & _SHORT_ESCAPED for key in self._keys)
        self._raw: Any = _any_of(p.encode() for p in pieces) if plain else None

    def clean(self, body: bytes | bytearray) -> bool:
        """True when ``body`` (the answer's bytes) cannot hold a key or a piece of one
        once decoded, so that its decoded value need not be walked: UTF-8, no ``\\u``
        escape, and no piece in its bytes (one linear scan, milliseconds a megabyte)."""
        if not self._keys:
            return True
        return (self._raw is not None and b"\\u" not in body
                and json.detect_encoding(body[:4]) in ("utf-8", "utf-8-sig")
                and self._raw.search(body) is None)

    def text(self, text: str) -> str:
        """``text`` scrubbed; the same object when there was nothing to scrub."""
        match = self._pattern.search(text) if self._pattern is not None else None
        if match is None:
            return text
        out = []
        start = 0
        while match is not None:
            end = self._extend(text, match.start(), match.end())
            out += [text[start : match.start()], REDACTED]
            start = end
            match = self._pattern.search(text, end)  # type: ignore[union-attr]
        out.append(text[start:])
        return "".join(out)

    def _extend(self, text: str, begin: int, end: int) -> int:
        """The end of the longest run from ``begin`` that is still part of a key."""
        while end < len(text) and any(text[begin : end + 1] in key for key in self._keys):
            end += 1
        return end

    def value(self, data: Any) -> Any:
        """Decoded JSON with every string (keys too) scrubbed, changed in place: the
        parsed answer is this reader's own, and a copy would double its size."""
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, list):
            for i, item in enumerate(data):
                new = self.value(item)
                if new is not item:
                    data[i] = new
        elif isinstance(data, dict):
            renamed = []
            for key, item in data.items():
                new = self.value(item)
                if new is not item:
                    data[key] = new  # (a value replaced, no key added: iteration holds)
                if self.text(key) is not key:
                    renamed.append(key)
            for key in renamed:
                data[self.text(key)] = data.pop(key)
        return data


_SHORT_ESCAPED = frozenset('"\\/\b\f\n\r\t')


@functools.lru_cache(maxsize=64)
def scrubber(secrets: tuple[str, ...]) -> Scrubber:
    """The ``Scrubber`` of one account's keys (built once per set of keys)."""
    return Scrubber(secrets)


def _any_of(literals: Iterable[bytes]) -> Any:
    """A pattern that finds any of ``literals`` in bytes, in time linear in the input
    (RE2: a scan of megabytes takes milliseconds, where ``re`` takes a tenth of a
    second)."""
    return re2.compile(b"|".join(map(re.escape, literals)), _BYTES)
