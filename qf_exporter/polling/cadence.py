"""What is due: which targets a poll reads and in which order, how far behind the
schedule they are, when discovery lists again, and which runs are stale.

Pure functions of (state, now, settings) that return values; the poller calls them
and acts on what they return. When a poll happens is ``scheduler``'s (it fires each
account's poll every ``poll.interval``); what that poll reads is decided here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

from qf_exporter.config.file import Poll
from qf_exporter.polling.snapshot import TargetState

# The scheduler fires every ``interval`` with some jitter: a period counts as passed
# this fraction of an interval early.
JITTER = 0.1


def slack(poll: Poll) -> float:
    """How early a period may count as passed, for the scheduler's jitter."""
    return JITTER * poll.interval


def due(state: TargetState, now: float, poll: Poll) -> bool:
    """Whether a target is read at this firing.

    A target with a waiting or running run (or none yet) is due every ``interval``,
    one whose runs are all final every ``finished_interval``, one whose last read
    failed every ``interval``.
    """
    if state.last_attempt is None:
        return True
    return now - state.last_attempt >= period(state, poll) - slack(poll)


def period(state: TargetState, poll: Poll) -> float:
    """How often a target is read: ``interval`` while any of its runs may change (or
    its last read failed), ``finished_interval`` once they are all final."""
    return poll.interval if not state.up or state.active else poll.finished_interval


def read_order(state: TargetState) -> tuple[float, float]:
    """Sort key of the due targets: read longest ago (or never) first.

    When a cycle cannot fit into the interval, the targets a poll reads last are
    those the poll before read last, so none of them is always at the back: the
    start of the poll that read a target ties within one poll, and the end of its
    last good read (later for a target read later in that poll) breaks the tie.
    """
    return (
        -math.inf if state.last_attempt is None else state.last_attempt,
        -math.inf if state.last_success is None else state.last_success,
    )


def lag(states: Iterable[TargetState], now: float, poll: Poll) -> float:
    """How far behind its schedule the most overdue target is at ``now`` (seconds).

    A target is due one period after the start of the poll that last read it; one
    whose time came within the scheduler's jitter (``slack``) is on time, so the lag
    is 0 while every target is read at the firing it is due at. It grows when a poll
    runs past the next firing (the budget cannot hold the interval).
    """
    worst = 0.0
    for state in states:
        if state.last_attempt is None:
            continue
        overdue = now - state.last_attempt - period(state, poll)
        if overdue > slack(poll):
            worst = max(worst, overdue)
    return worst


def discovery_due(last_listed: float | None, now: float, interval: float, poll: Poll) -> bool:
    """Whether discovery lists the jobs again (every ``discovery.interval``)."""
    return last_listed is None or now - last_listed >= interval - slack(poll)


def expire(state: TargetState, now: float, poll: Poll) -> TargetState:
    """The target without its runs when it is down and they are older than
    ``stale_after``; otherwise the same state."""
    # Runs read by a partial read (a job's list without a run's detail) are fresh
    # although the target is down: staleness goes by when its runs were last read.
    last_read = max((run.last_read for run in state.runs), default=None)
    if (
        not state.up
        and state.runs
        and (last_read is None or now - last_read > poll.stale_after)
    ):
        return replace(state, runs=())
    return state
