"""The poller's pure steps as tables: what is due and what is stale (what is retained:
test_retention.py)."""

from __future__ import annotations

import pytest

from qf_exporter.config.file import Poll
from qf_exporter.polling.cadence import discovery_due, due, expire, lag, read_order
from qf_exporter.polling.snapshot import TargetState
from tests.polling.runs import NOW, run

POLL = Poll(interval=60, finished_interval=1800, stale_after=600)


RUNNING = (run("t"),)
DONE = (run("t", "succeeded", finish=NOW - 100),)


def test_the_targets_read_longest_ago_go_first() -> None:
    """Never read first; then by the poll that last read them; within one poll, the
    one whose last good read ended earliest (so the tail of an overlong poll leads
    the next one no more than it trails it)."""
    never = TargetState("v2", "never")
    old = TargetState("v2", "old", up=True, last_attempt=NOW - 120, last_success=NOW - 100)
    early = TargetState("v2", "early", up=True, last_attempt=NOW - 60, last_success=NOW - 59)
    late = TargetState("v2", "late", up=True, last_attempt=NOW - 60, last_success=NOW - 2)
    failing = TargetState("v2", "failing", last_attempt=NOW - 60)
    ordered = sorted([late, early, failing, old, never], key=read_order)
    assert [t.name for t in ordered] == ["never", "old", "failing", "early", "late"]


@pytest.mark.parametrize(("since", "expected"), [
    (None, 0.0),  # never read: nothing to be behind yet
    (60, 0.0),  # due now: on time
    (65, 0.0),  # within the jitter slack (6 s)
    (67, 7.0),
    (180, 120.0),  # the poll before ran past two firings
])
def test_lag_is_how_far_behind_the_most_overdue_target_is(
    since: float | None, expected: float
) -> None:
    behind = TargetState("v2", "behind", up=True, runs=RUNNING,
                         last_attempt=None if since is None else NOW - since)
    on_time = TargetState("v2", "on-time", up=True, runs=RUNNING, last_attempt=NOW - 30)
    finished = TargetState("v2", "done", up=True, runs=DONE, last_attempt=NOW - 600)
    assert lag([on_time, behind, finished], NOW, POLL) == expected
    assert lag([], NOW, POLL) == 0.0


@pytest.mark.parametrize(("state", "since", "expected"), [
    (TargetState("v2", "j"), None, True),  # never read
    (TargetState("v2", "j", up=True, runs=RUNNING), 60, True),
    (TargetState("v2", "j", up=True, runs=RUNNING), 54, True),  # within the jitter slack
    (TargetState("v2", "j", up=True, runs=RUNNING), 53, False),
    (TargetState("v2", "j", up=True, runs=DONE), 60, False),  # finished: every 1800 s
    (TargetState("v2", "j", up=True, runs=DONE), 1794, True),
    (TargetState("v2", "j", up=False, runs=DONE), 60, True),  # failed: retried every 60 s
    (TargetState("v2", "j", up=True), 60, True),  # no runs yet
])
def test_due(state: TargetState, since: float | None, expected: bool) -> None:
    if since is not None:
        state = TargetState(state.api, state.name, up=state.up, runs=state.runs,
                            last_attempt=NOW - since)
    assert due(state, NOW, POLL) is expected


@pytest.mark.parametrize(("last", "expected"), [
    (None, True), (NOW - 600, True), (NOW - 594, True), (NOW - 593, False),
])
def test_discovery_due(last: float | None, expected: bool) -> None:
    assert discovery_due(last, NOW, 600, POLL) is expected


@pytest.mark.parametrize(("up", "read", "expected_runs"), [
    (True, NOW - 10_000, 1),  # up: never stale
    (False, NOW - 600, 1),  # down, but read within stale_after
    (False, NOW - 601, 0),  # down and older than stale_after
])
def test_expire(up: bool, read: float, expected_runs: int) -> None:
    state = TargetState("v2", "j", up=up, runs=(run("t", read=read),))
    expired = expire(state, NOW, POLL)
    assert len(expired.runs) == expected_runs
    assert (expired is state) is (expected_runs == 1)


