"""Reading one upstream answer without trusting the upstream: a deadline and a size cap.

``requests`` applies its timeout to each socket read, so an answer that drips one byte
a second, or never ends, would hold a poll far past its budget; and it inflates a gzip
answer whole. Here every request has one wall-clock deadline that covers connecting,
the headers and the whole body, and a body is read in a loop that stops

* at the deadline (``Timeout``): a watchdog shuts the connection's socket down when
  the deadline passes, so no single blocking read (a header or body drip) outlives
  it, and the loop checks the clock between chunks;
* at a cap on the *decoded* size (``InvalidResponse``): gzip and deflate are inflated
  here, a bounded piece at a time, so a gzip bomb costs at most the cap.

Parsing is bounded too: JSON that opens with more than ``MAX_JSON_DEPTH`` nested
arrays or objects, or nests deep enough anywhere for the parser to raise
``RecursionError``, is an ``InvalidResponse``, never an unclassified exception. An
integer too long for Python's int parser (over 4,300 digits) is kept as its digits
(a text, so no number), not a reason to refuse the answer.

One *read* (a listing's pages, or a target's listing and details) is bounded as a
whole by a ``ReadBudget``: at most ``MAX_READ_BYTES`` decoded bytes and, before each
answer is parsed, at most ``MAX_READ_VALUES`` JSON values in all (counted from the
bytes, so the parsed size is bounded before it exists).

The account's credentials are scrubbed twice: from the body's bytes before it is
parsed, and (``Scrubber``) from every decoded string, key or value, after, whatever
escapes carried them (``"\\u0041K..."``). There a key and any run of
``FRAGMENT`` or more of its characters become ``<redacted>``, so no upstream string
that echoes a key, or a long piece of one, reaches a label, a page or a log.
"""

from __future__ import annotations

import functools
import heapq
import json
import logging
import re
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from qf_exporter.config import patterns
from qf_exporter.qianfan.errors import InvalidResponse
from qf_exporter.util.secrets import REDACTED

CHUNK = 64 * 1024  # bytes read from the socket at a time
INFLATE_STEP = 1024 * 1024  # the most one inflate step adds (its temporary copy)
MAX_JSON_DEPTH = 64  # far deeper than any documented answer (at most 4 levels)
# Upstream messages put into exceptions (and so into logs and the landing page) are
# cut to this many characters: a 5 MB error message is not logged whole every poll.
MAX_UPSTREAM_MESSAGE = 300
MAX_WAIT = 3600.0  # the watchdog wakes at least this often, whatever the deadlines
# One read's bounds, whatever its pages (see ReadBudget). Parsed, a value costs at
# most about 230 bytes (a listed item of two fields, with its Fields view), so one
# read's parsed answers stay under about 70 MB at the very worst; a real job of 1,000
# runs of 20 fields and 40 checkpoints each is 180,000 values. The bytes bound is
# poll.max_response_bytes when that is larger: one answer may always be that large.
MAX_READ_BYTES = 32 * 1024 * 1024
MAX_READ_VALUES = 300_000
# A key's characters this many in a row, or more, are redacted from decoded strings:
# long enough that ordinary text never matches by chance (keys are random), short
# enough that a key split across fields leaves no field with much of it.
FRAGMENT = 12
MAX_INT_DIGITS = 4000  # below Python's int parsing limit (4,300 digits)

log = logging.getLogger(__name__)


class DeadlinePassed(Exception):
    """The request's deadline passed while it was under way."""


class TooLarge(Exception):
    """The decoded answer is larger than the cap."""


# --- the watchdog ------------------------------------------------------------------------


class Watch:
    """One request's deadline, and the connection it runs on (once it has one)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # time.monotonic()
        self.fired = False
        self.done = False
        self._conn: Any = None
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def attach(self, conn: Any) -> None:
        with self._lock:
            self._conn = conn
            if self.fired:
                _shutdown(conn)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            if self._conn is not None:
                _shutdown(self._conn)

    def finish(self) -> None:
        with self._lock:
            self.done = True

    def discard_connection(self) -> None:
        """Close the connection: after a cut-off answer it must not be used again."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()

    def limit_next_read(self) -> None:
        """A blocking read on the socket may last no longer than the time left."""
        with self._lock:
            sock = getattr(self._conn, "sock", None)
        if sock is not None:
            with suppress(OSError):
                sock.settimeout(max(0.001, self.remaining()))


def _shutdown(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that fires every watch whose deadline has passed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        self._serial = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, watch: Watch) -> None:
        with self._cond:
            self._serial += 1
            heapq.heappush(self._heap, (watch.deadline, self._serial, watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="qf-upstream-watchdog",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            try:
                self._fire_due()
            except Exception:  # never let the one watchdog die: every request needs it
                log.exception("upstream watchdog error")

    def _fire_due(self) -> None:
        with self._cond:
            while self._heap and self._heap[0][2].done:
                heapq.heappop(self._heap)  # finished in time: forget it
            if not self._heap:
                self._cond.wait()
                return
            wait = self._heap[0][0] - time.monotonic()
            if wait > 0:
                self._cond.wait(min(wait, MAX_WAIT))
                return
            _, _, watch = heapq.heappop(self._heap)
        watch.fire()


_WATCHDOG = _Watchdog()
_current = threading.local()  # the watch of the request this thread is sending


@contextmanager
def watched(deadline: float) -> Iterator[Watch]:
    """Run one request under a watch: its socket is shut down at ``deadline``."""
    watch = Watch(deadline)
    _current.watch = watch
    _WATCHDOG.add(watch)
    try:
        yield watch
    finally:
        _current.watch = None
        watch.finish()


def _watched(conn: Any) -> Any:
    """``conn``, attached to the deadline watch of the request this thread is making."""
    watch = getattr(_current, "watch", None)
    if watch is not None:
        watch.attach(conn)
    return conn


class _WatchedHTTPPool(HTTPConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        return _watched(super()._get_conn(timeout))


class _WatchedHTTPSPool(HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        return _watched(super()._get_conn(timeout))


def watch_pools(poolmanager: Any) -> None:
    """Make a urllib3 pool manager hand each request's connection to its watch."""
    poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


# --- the body ----------------------------------------------------------------------------


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


# --- parsing -----------------------------------------------------------------------------


def scrub_bytes(body: bytearray, secrets: Iterable[str]) -> bytearray:
    """``body`` with every secret replaced, longest first (JSON stays valid)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        encoded = secret.encode()
        if encoded in body:
            body = body.replace(encoded, REDACTED.encode())
    return body


_OPENING = re.compile(rb"[\s\[{]*")


def too_deep(body: bytes | bytearray, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the answer opens with more than ``limit`` nested arrays or objects.

    A cheap look at the start, before the parser, that catches the usual bomb
    (``[[[[...``); anything deeper further in makes the parser raise
    ``RecursionError``, which ``parse_json`` turns into ``ValueError`` as well.
    """
    opening = _OPENING.match(body, 0, 4 * limit)
    run = opening.group() if opening else b""
    return len(run) - len(run.translate(None, b"[{")) > limit


def is_blank(body: bytes | bytearray) -> bool:
    """Empty or only whitespace (without copying a body of many megabytes)."""
    return not body or body.isspace()


def parse_json(body: bytes | bytearray, scrubber: Scrubber | None = None) -> Any:
    """The JSON value of ``body`` (its strings scrubbed by ``scrubber``); ``ValueError``
    when it is not JSON (or too deep)."""
    if too_deep(body):
        raise ValueError("nested too deeply")
    try:
        try:
            data = json.loads(body)
        except ValueError as exc:
            if "integer string conversion" not in str(exc):
                raise
            # Only an answer with such an integer pays for parsing integers in Python.
            data = json.loads(body, parse_int=_integer)
        if scrubber is None or scrubber.clean(body):
            return data
        return scrubber.value(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _integer(digits: str) -> int | str:
    """A JSON integer; past MAX_INT_DIGITS its digits as text (no number reads it)."""
    return int(digits) if len(digits) <= MAX_INT_DIGITS else digits


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


class Scrubber:
    """Finds the account's keys, and runs of FRAGMENT or more of their characters, in
    decoded text, and replaces each whole run with ``<redacted>``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._keys = sorted({s for s in secrets if s}, key=len, reverse=True)
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
        self._raw = patterns.any_of(p.encode() for p in pieces) if plain else None

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


def cut_message(text: str, limit: int = MAX_UPSTREAM_MESSAGE) -> str:
    """An upstream message short enough for a log line or a page."""
    return text if len(text) <= limit else text[:limit] + "…"
