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

Parsing is bounded too: JSON nested deeper than ``MAX_JSON_DEPTH`` (or deep enough
for the parser to raise ``RecursionError``) is an ``InvalidResponse``, never an
unclassified exception. The account's credentials are scrubbed from the body before it
is parsed, so no upstream string that echoes them reaches a label, a page or a log.
"""

from __future__ import annotations

import heapq
import json
import re
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from qf_exporter.errors import InvalidResponse

CHUNK = 64 * 1024  # bytes read from the socket at a time
MAX_JSON_DEPTH = 64  # far deeper than any documented answer (at most 4 levels)
# Upstream messages put into exceptions (and so into logs and the landing page) are
# cut to this many characters: a 5 MB error message is not logged whole every poll.
MAX_UPSTREAM_MESSAGE = 300
REDACTED = "<redacted>"


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
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)  # finished in time: forget it
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
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


class _WatchedHTTPPool(HTTPConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.attach(conn)
        return conn


class _WatchedHTTPSPool(HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.attach(conn)
        return conn


def watch_pools(poolmanager: Any) -> None:
    """Make a urllib3 pool manager hand each request's connection to its watch."""
    poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


# --- the body ----------------------------------------------------------------------------


def _decoder(encoding: str) -> Any:
    """A zlib decompressor for the answer's Content-Encoding; None for identity."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if name == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped, as RFC 9110 says
    raise InvalidResponse(f"an answer in an unknown Content-Encoding {name[:40]!r}")


def read_body(raw: Any, encoding: str, watch: Watch, cap: int) -> bytes:
    """The whole decoded body of a urllib3 response (``decode_content`` off), or raise.

    Raises ``DeadlinePassed`` at the deadline and ``TooLarge`` past ``cap`` decoded bytes.
    """
    decoder = _decoder(encoding)
    out = bytearray()
    for piece in _raw_pieces(raw, watch):
        if decoder is None:
            out += piece
        else:
            out += _inflate(decoder, piece, cap - len(out) + 1)
        if len(out) > cap:
            raise TooLarge
    if decoder is not None:
        out += decoder.flush()[: cap - len(out) + 1]
        if len(out) > cap:
            raise TooLarge
    return bytes(out)


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


def _inflate(decoder: Any, data: bytes, room: int) -> bytes:
    """Inflate ``data`` into at most ``room`` bytes (more means the cap is passed)."""
    out = bytearray()
    while data and len(out) < room:
        try:
            out += decoder.decompress(data, room - len(out))
        except zlib.error:
            raise InvalidResponse("the answer's compressed body is garbled") from None
        data = decoder.unconsumed_tail
    return bytes(out)


# --- parsing -----------------------------------------------------------------------------


def scrub_bytes(body: bytes, secrets: Iterable[str]) -> bytes:
    """``body`` with every secret replaced, longest first (JSON stays valid)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        encoded = secret.encode()
        if encoded in body:
            body = body.replace(encoded, REDACTED.encode())
    return body


_OPENING = re.compile(rb"[\s\[{]*")


def too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the answer opens with more than ``limit`` nested arrays or objects.

    A cheap look at the start, before the parser, that catches the usual bomb
    (``[[[[...``); anything deeper further in makes the parser raise
    ``RecursionError``, which ``parse_json`` turns into ``ValueError`` as well.
    """
    opening = _OPENING.match(body, 0, 4 * limit)
    run = opening.group() if opening else b""
    return len(run) - len(run.translate(None, b"[{")) > limit


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``; ``ValueError`` when it is not JSON (or too deep)."""
    if too_deep(body):
        raise ValueError("nested too deeply")
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def cut_message(text: str, limit: int = MAX_UPSTREAM_MESSAGE) -> str:
    """An upstream message short enough for a log line or a page."""
    return text if len(text) <= limit else text[:limit] + "…"
