"""When to read: which targets are due, when discovery lists again, what is stale.

Pure functions of (state, now, settings) that return values; the poller calls them
and acts on what they return.
"""

from __future__ import annotations

from dataclasses import replace

from qf_exporter.config import Poll
from qf_exporter.snapshot import TargetState

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
    period = poll.interval if not state.up or state.active else poll.finished_interval
    return now - state.last_attempt >= period - slack(poll)


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
