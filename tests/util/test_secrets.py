"""Credentials never shown: ``Secret``, ``redact`` and the redactor every log line passes,
``redact_bytes``, and the ``Scrubber`` of decoded answers."""

from __future__ import annotations

import logging

import pytest

from qf_exporter import logs
from qf_exporter.util.secrets import (
    REDACTOR,
    Redactor,
    Secret,
    redact,
    redact_bytes,
    scrubber,
)
from tests.checks import assert_no_keys
from tests.helpers import ACCESS_KEY, SECRET_KEY

SK = "SKcfg-secret-do-not-print-0123456789"


def test_secret_never_shows_its_value() -> None:
    secret = Secret(SK)
    assert secret.reveal() == SK
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret!s}",
        "%s" % secret,  # noqa: UP031
        "%r" % secret,  # noqa: UP031
        "{}".format(secret),  # noqa: UP032
        "{!r}".format(secret),  # noqa: UP032
        f"{[secret]}",
        f"{secret:}",
    ]
    for text in shown:
        assert_no_keys(text, keys=(SK,))
        assert "redacted" in text
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"


def test_redact_replaces_the_longest_secret_first() -> None:
    # "abc" inside "abcdef" must not leave "def" behind.
    assert redact("key=abcdef and abc", ["abc", "abcdef"]) == (
        "key=<redacted> and <redacted>"
    )
    assert redact("nothing to hide", ["", "absent"]) == "nothing to hide"


def test_the_redactor_scrubs_what_it_was_last_given() -> None:
    redactor = Redactor()
    assert redactor.scrub(f"sk={SK}") == f"sk={SK}"
    redactor.set((SK,))
    assert redactor.scrub(f"sk={SK}") == "sk=<redacted>"
    redactor.set(("other",))  # a reload replaces the set, it does not add to it
    assert redactor.scrub(f"sk={SK} other") == f"sk={SK} <redacted>"


def test_the_log_formatters_use_the_shared_redactor(monkeypatch: pytest.MonkeyPatch) -> None:
    assert logs.REDACTOR is REDACTOR  # the one app.py keeps current on reload
    redactor = Redactor()
    redactor.set((SK,))
    monkeypatch.setattr(logs, "REDACTOR", redactor)
    record = logging.makeLogRecord({"msg": "signing with %s", "args": (SK,), "name": "t"})
    for formatter in (logs.LogfmtFormatter(), logs.JsonFormatter()):
        line = formatter.format(record)
        assert_no_keys(line, keys=(SK,))
        assert "<redacted>" in line


def test_redact_bytes_replaces_the_longest_secret_first() -> None:
    body = bytearray(b'{"name": "AKxyz-AKxyz2", "other": "AKxyz"}')
    assert redact_bytes(body, ["AKxyz", "AKxyz2", ""]) == bytearray(
        b'{"name": "<redacted>-<redacted>", "other": "<redacted>"}')


KEYS = (ACCESS_KEY, SECRET_KEY)


def test_a_plain_answer_is_checked_with_one_scan_of_its_bytes() -> None:
    scrub = scrubber(KEYS)
    assert scrub.clean(b'{"taskName": "\xe8\xae\xad\xe7\xbb\x83 run", "n": "a\\nb"}')
    assert not scrub.clean(b'{"taskName": "\\u8bad"}')  # an escape: decoded and walked
    assert not scrub.clean(b'{"taskName": "x0123456789aby"}')  # a piece: walked
    assert not scrubber(("key/with/slash-0123456789",)).clean(b"{}")
    assert scrubber(()).clean(b'{"a": "\\u0041"}')  # no keys: nothing to find


def test_lone_surrogates_and_long_texts_are_scrubbed_too() -> None:
    scrub = scrubber(KEYS)
    assert scrub.text("\ud800" + ACCESS_KEY + "\udfff") == "\ud800<redacted>\udfff"
    long = "x" * 100_000 + SECRET_KEY[:20] + "y" * 100_000
    assert scrub.text(long) == "x" * 100_000 + "<redacted>" + "y" * 100_000
    ordinary = "task_0123456789a"  # 11 characters of both keys: ordinary text
    assert scrub.text(ordinary) is ordinary
