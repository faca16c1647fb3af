"""Credentials and keeping them out of text: ``Secret``, ``redact`` and the log redactor.

A small module of its own so that what only needs to hide a credential (the logs, the
client's error messages) does not import the configuration loader to do it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

REDACTED = "<redacted>"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``<redacted>``.

    Longest first, so that a secret containing another is replaced whole.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


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
