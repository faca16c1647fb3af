"""Regular expressions from the configuration (discovery include/exclude), in RE2.

Python's ``re`` backtracks: ``^(a+)+$`` against a 28-character job name takes minutes
and holds the GIL, so one pattern in a config file could freeze the whole process.
RE2 (Google's engine, the one Prometheus uses through Go's regexp) matches in time
linear in the input and refuses what it cannot do that way (backreferences,
lookaround). The ``google-re2`` binding has no type information; this module is the
only place the configuration touches it (util/secrets.py uses it for its byte scan).
"""

from __future__ import annotations

from typing import Any, Protocol

import re2  # type: ignore[import-not-found,unused-ignore]

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the reason goes into the problem line, not onto stderr


class Pattern(Protocol):
    """What the exporter uses of a compiled pattern (``re.Pattern`` fits too)."""

    @property
    def pattern(self) -> str: ...

    def search(self, string: str, /) -> Any: ...


class PatternError(ValueError):
    """RE2 refused the pattern; ``str()`` says why."""


def compile_pattern(text: str) -> Pattern:
    """``text`` compiled with RE2 (``PatternError`` if RE2 refuses it)."""
    try:
        compiled: Pattern = re2.compile(text, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(str(reason)) from None
    return compiled
