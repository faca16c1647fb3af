"""Logs that cannot be forged: whatever a value holds (from upstream, a client, a
config file), a logfmt or JSON line stays one line of printable characters whose
fields read back as they were given."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from qf_exporter import logs

HOSTILE = [
    "evil\r\x1b[2J",  # the issue's: a carriage return and a terminal escape
    "line\nlevel=error msg=forged",
    "a\u2028level=error",
    "a\u2029b",
    "a\u0085b",  # NEL
    "\x00\x07\x08\x0b\x0c\x1b\x7f",  # C0 controls and DEL
    "\x9b31m\x9d0;title\x07",  # C1 CSI and OSC
    "no\u00a0break",  # a separator that looks like a space
    "\u202eevil\u202c",  # bidi override (a format character)
    "zero\u200bwidth\ufeff",
    "lone \ud800 surrogate",
    "tag \U000e0041 and private \U000f0000",
    "tab\there",
    'quote " and \\ and =',
    "",
    "plain",
    "中文名称",  # printable text beyond ASCII stays as it is
]
PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^ ]*)(?: |$)')


def parse_logfmt(line: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = PAIR.match(line, position)
        assert match, f"not logfmt at {position}: {line!r}"
        key, value = match.groups()
        assert key not in fields, f"{key} twice in {line!r}"
        fields[key] = json.loads(value) if value.startswith('"') else value
        position = match.end()
    return fields


def record(value: object) -> logging.LogRecord:
    return logging.makeLogRecord(
        {"msg": "read failed", "name": "qf_exporter.test", "levelname": "WARNING",
         "target": value}
    )


@pytest.mark.parametrize("value", HOSTILE)
def test_a_logfmt_value_cannot_forge_a_line_or_a_field(value: str) -> None:
    line = logs.LogfmtFormatter().format(record(value))
    assert line.isprintable(), repr(line)
    fields = parse_logfmt(line)
    assert list(fields) == ["ts", "level", "logger", "msg", "target"]
    assert fields["target"] == value


@pytest.mark.parametrize("value", HOSTILE)
def test_a_json_value_cannot_forge_a_line_or_a_field(value: str) -> None:
    line = logs.JsonFormatter().format(record(value))
    assert line.isprintable(), repr(line)
    fields = json.loads(line)
    assert fields["target"] == value and fields["level"] == "warn"


def every_unprintable() -> Iterator[str]:
    """Each character below U+3000 that is not printable, and a stride of the rest."""
    for code in [*range(0x3000), *range(0x3000, 0x110000, 97)]:
        if not chr(code).isprintable():
            yield chr(code)


def test_no_unprintable_character_leaves_raw() -> None:
    logfmt, as_json = logs.LogfmtFormatter(), logs.JsonFormatter()
    for char in every_unprintable():
        value = f"a{char}b"
        line = logfmt.format(record(value))
        assert line.isprintable() and parse_logfmt(line)["target"] == value, repr(char)
        line = as_json.format(record(value))
        assert line.isprintable() and json.loads(line)["target"] == value, repr(char)


def test_odd_numbers_are_logged_as_valid_json() -> None:
    huge = 10 ** 5000  # past str()'s digit limit
    for value, shown in ((float("nan"), "nan"), (float("inf"), "inf"), (7, 7), (0.5, 0.5)):
        assert json.loads(logs.JsonFormatter().format(record(value)))["target"] == shown
    assert "bits" in json.loads(logs.JsonFormatter().format(record(huge)))["target"]
    assert "bits" in parse_logfmt(logs.LogfmtFormatter().format(record(huge)))["target"]


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_hostile_values_through_a_utf8_stream(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the daemon does: one line per record on a UTF-8 stream, no encoding error
    (a lone surrogate used to raise one), nothing on stderr."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    errors = io.StringIO()
    monkeypatch.setattr(sys, "stderr", errors)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.setup("info", fmt, stream)
        for value in HOSTILE:
            logging.getLogger("qf_exporter.test").warning(
                "target %s failed", value, extra={"target": value}
            )
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = raw.getvalue().decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == len(HOSTILE) + 1
    for line, value in zip(lines, HOSTILE, strict=False):
        fields = parse_logfmt(line) if fmt == "logfmt" else json.loads(line)
        assert fields["target"] == value
        assert fields["msg"] == f"target {value} failed"
    assert errors.getvalue() == ""
