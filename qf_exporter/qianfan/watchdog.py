"""One wall-clock deadline per request to Qianfan, kept by a watchdog thread.

``requests`` applies its timeout to each socket read, so an answer that drips one byte
a second, or never ends, would hold a poll far past its budget. Here every request runs
under a ``Watch`` (``watched``): its deadline covers connecting, the headers and the
whole body. One daemon thread (``_Watchdog``) shuts a request's socket down when its
deadline passes, so no single blocking read (a header or body drip) outlives it; the
connection pools that ``watch_pools`` installs hand each new connection to the watch of
the request this thread is sending. Reading the body (``bounded``) checks the watch
between pieces and raises ``DeadlinePassed``.
"""

from __future__ import annotations

import heapq
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

MAX_WAIT = 3600.0  # the watchdog wakes at least this often, whatever the deadlines

log = logging.getLogger(__name__)


class DeadlinePassed(Exception):
    """The request's deadline passed while it was under way."""


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
