"""Reloads are serialised and coalesced; one that raises is a failed reload.

/-/reload and --web.enable-lifecycle: web/test_routes.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from qf_exporter.reloads import Reloader


def test_a_burst_costs_one_reload_running_and_one_queued() -> None:
    release = threading.Event()
    started = threading.Event()
    calls: list[int] = []

    def reload() -> tuple[bool, str]:
        calls.append(len(calls) + 1)
        started.set()
        release.wait(30)
        return True, f"reload {len(calls)}"

    reloader = Reloader(reload)
    first = reloader.request()
    assert started.wait(10)
    # While the first runs, 50 more requests (HTTP or SIGHUP) share one queued reload.
    burst = [reloader.request() for _ in range(50)]
    assert len({id(f) for f in burst}) == 1
    release.set()
    assert first.result(30) == (True, "reload 1")
    assert all(f.result(30) == (True, "reload 2") for f in burst)
    assert calls == [1, 2]
    # Idle again: the next request starts a reload of its own.
    assert reloader.request().result(30) == (True, "reload 3")


def test_a_reload_that_raises_is_a_failed_reload_not_a_dead_thread() -> None:
    outcomes: Iterator[Exception | tuple[bool, str]] = iter([RuntimeError("boom"), (True, "ok")])

    def reload() -> tuple[bool, str]:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    reloader = Reloader(reload)
    assert reloader.request().result(30) == (False, "reload failed: RuntimeError")
    assert reloader.request().result(30) == (True, "ok")


