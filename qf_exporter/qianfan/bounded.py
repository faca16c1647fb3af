"""Reading Qianfan's answers within bounds: one answer's decoded size, one read's total.

A body is read in a loop that stops at the request's deadline (``DeadlinePassed``,
checked against its ``watchdog.Watch`` between pieces) and at a cap on the *decoded*
size (``TooLarge``): gzip and deflate are inflated here, a bounded piece at a time, so a
gzip bomb costs at most the cap (``requests`` would inflate it whole).

One *read* (a listing's pages, or a target's listing and details) is bounded as a
whole by a ``ReadBudget``: at most ``MAX_READ_BYTES`` decoded bytes and, before each
answer is parsed, at most ``MAX_READ_VALUES`` JSON values in all (counted from the
bytes, so the parsed size is bounded before it exists).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

from qf_exporter.qianfan.errors import InvalidResponse
from qf_exporter.qianfan.watchdog import DeadlinePassed, Watch

CHUNK = 64 * 1024  # bytes read from the socket at a time
INFLATE_STEP = 1024 * 1024  # the most one inflate step adds (its temporary copy)
# One read's bounds, whatever its pages (see ReadBudget). Parsed, a value costs at
# most about 230 bytes (a listed item of two fields, with its Fields view), so one
# read's parsed answers stay under about 70 MB at the very worst; a real job of 1,000
# runs of 20 fields and 40 checkpoints each is 180,000 values. The bytes bound is
# poll.max_response_bytes when that is larger: one answer may always be that large.
MAX_READ_BYTES = 32 * 1024 * 1024
MAX_READ_VALUES = 300_000


class TooLarge(Exception):
    """The decoded answer is larger than the cap."""


class _Inflater:
    """Inflates a gzip or deflate body a bounded piece at a time.

    A gzip body may hold several members one after another (RFC 1952); each is
    inflated in turn, so none is silently dropped.
    """

    def __init__(self, wbits: int) -> None:
        self.wbits = wbits
        self.obj = zlib.decompressobj(wbits)

    def feed(self, data: bytes, out: bytearray, cap: int) -> None:
        """Inflate ``data`` onto ``out``, stopping once ``out`` is past ``cap``."""
        while data and len(out) <= cap:
            room = min(cap + 1 - len(out), INFLATE_STEP)
            try:
                out += self.obj.decompress(data, room)
            except zlib.error:
                raise InvalidResponse("the answer's compressed body is garbled") from None
            if self.obj.eof and self.wbits > zlib.MAX_WBITS:  # gzip: a next member?
                data = self.obj.unused_data
                self.obj = zlib.decompressobj(self.wbits)
            else:
                data = self.obj.unconsumed_tail


def _inflater(encoding: str) -> _Inflater | None:
    """The inflater for the answer's Content-Encoding; None for identity."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        return _Inflater(16 + zlib.MAX_WBITS)
    if name == "deflate":
        return _Inflater(zlib.MAX_WBITS)  # zlib-wrapped, as RFC 9110 says
    raise InvalidResponse(f"an answer in an unknown Content-Encoding {name[:40]!r}")


def read_body(raw: Any, encoding: str, watch: Watch, cap: int) -> bytearray:
    """The whole decoded body of a urllib3 response (``decode_content`` off), or raise.

    Raises ``DeadlinePassed`` at the deadline and ``TooLarge`` past ``cap`` decoded
    bytes. The body is never copied whole: at most the cap (and one piece) is held.
    """
    inflater = _inflater(encoding)
    out = bytearray()
    for piece in _raw_pieces(raw, watch):
        if inflater is None:
            out += piece
        else:
            inflater.feed(piece, out, cap)
        if len(out) > cap:
            raise TooLarge
    return out


def _raw_pieces(raw: Any, watch: Watch) -> Iterator[bytes]:
    while True:
        if watch.fired or watch.remaining() <= 0:
            raise DeadlinePassed
        watch.limit_next_read()
        piece = raw.read(CHUNK, decode_content=False)
        if watch.fired:
            raise DeadlinePassed  # the read returned because the watchdog cut it off
        if not piece:
            return
        yield piece


def json_values(body: bytes | bytearray) -> int:
    """At least as many as the JSON values in ``body`` (members of arrays and objects,
    and the top value), counted without parsing it."""
    return body.count(b",") + body.count(b"[") + body.count(b"{") + 1


class ReadBudget:
    """What the answers of one read may add up to: bytes, and JSON values."""

    def __init__(self, max_bytes: int = MAX_READ_BYTES,
                 max_values: int = MAX_READ_VALUES) -> None:
        self.max_bytes = max_bytes
        self.max_values = max_values
        self.bytes = 0
        self.values = 0

    def charge(self, action: str, body: bytes | bytearray) -> None:
        """Count one answer (before it is parsed); ``InvalidResponse`` past a bound.

        Not retryable: reading the same answer again cannot bring the read back under.
        """
        self.bytes += len(body)
        if self.bytes > self.max_bytes:
            raise final(f"{action}: one read's answers are larger than "
                         f"{self.max_bytes} bytes in all (MAX_READ_BYTES)")
        self.values += json_values(body)
        if self.values > self.max_values:
            raise final(f"{action}: one read's answers hold more than "
                         f"{self.max_values} JSON values in all (MAX_READ_VALUES)")


def final(message: str) -> InvalidResponse:
    """An invalid answer that a retry cannot help: a bound of the read is passed."""
    err = InvalidResponse(message)
    err.retryable = False
    return err
