"""Logging in logfmt or JSON, with every known secret scrubbed from every line.

Fields passed with ``extra={...}`` become key=value pairs. No value can forge a line or
a field: a logfmt value is quoted when it holds a space, ``"``, ``=``, ``\\`` or any
character that is not printable, and in both formats every character that is not
printable (controls such as ESC, CR, LF, DEL and the C1 range, separators such as
U+2028, U+2029 and U+0085, format characters such as bidi overrides, lone surrogates)
is written as a JSON escape (``\\u001b``). The redaction (``REDACTOR``,
from util/secrets.py) is the last line of defence: credentials are never logged on purpose,
and if one ever reaches a message, an argument or an exception text, it leaves as
``<redacted>``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# app.py sets the secrets through this module's name for it.
from qf_exporter.util.secrets import REDACTOR as REDACTOR

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "error": logging.ERROR}

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": {"WARNING": "warn"}.get(record.levelname, record.levelname.lower()),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


def _u(char: str) -> str:
    """The JSON escape of one character (a surrogate pair beyond the BMP)."""
    code = ord(char)
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def escape_unprintable(text: str) -> str:
    """``text`` with every character that ``str.isprintable`` refuses (Unicode's
    "Other" and "Separator" categories, the ASCII space excepted) as a JSON escape.
    json.dumps escapes only C0 controls, ``"`` and ``\\``: DEL, C1 controls, U+2028,
    U+2029 and lone surrogates would leave raw (and a lone surrogate could not even be
    written to a UTF-8 stream)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _u(c) for c in text)


def logfmt_value(text: str) -> str:
    if text and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return escape_unprintable(json.dumps(text, ensure_ascii=False))


def _text(value: Any) -> str:
    try:
        return REDACTOR.scrub(str(value))
    except ValueError:  # an int past Python's 4,300-digit limit for str()
        return f"<an integer of {int(value).bit_length()} bits>"


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(
            f"{key}={logfmt_value(_text(value))}" for key, value in _fields(record).items()
        )


def _json_value(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() <= 64:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value  # NaN and infinities are not JSON: they go as text
    return _text(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {key: _json_value(value) for key, value in _fields(record).items()}
        return escape_unprintable(json.dumps(fields, ensure_ascii=False))


def setup(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    # APScheduler logs every job run at INFO; keep its warnings (overrunning polls).
    logging.getLogger("apscheduler").setLevel(max(LEVELS[level], logging.WARNING))
    logging.getLogger("urllib3").setLevel(max(LEVELS[level], logging.INFO))
