"""Serialised, coalesced configuration reloads (SIGHUP and POST /-/reload).

A reload re-reads the configuration and rebuilds pollers: seconds of CPU at 10,000 runs.
A burst of requests costs at most one reload running and one queued: every request
that arrives while a reload runs shares the queued one, whose result it gets, so a
caller never gets the result of a reload that began before it asked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

log = logging.getLogger(__name__)

Result = tuple[bool, str]


class Reloader:
    def __init__(self, reload: Callable[[], Result]) -> None:
        self._reload = reload
        self._lock = threading.Lock()
        self._running = False
        self._queued: Future[Result] | None = None

    def request(self) -> Future[Result]:
        """Ask for a reload; the future holds the result of one that starts after now."""
        with self._lock:
            if self._queued is not None:
                return self._queued
            future: Future[Result] = Future()
            if self._running:
                self._queued = future
                return future
            self._running = True
        threading.Thread(target=self._run, args=(future,), name="reload", daemon=True).start()
        return future

    def _run(self, future: Future[Result]) -> None:
        while True:
            try:
                result = self._reload()
            except Exception as exc:  # a reload must never kill the thread silently
                log.error("configuration reload failed", extra={"error": repr(exc)})
                result = (False, f"reload failed: {type(exc).__name__}")
            future.set_result(result)
            with self._lock:
                if self._queued is None:
                    self._running = False
                    return
                future, self._queued = self._queued, None
