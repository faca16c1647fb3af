"""The estimated finish: a pure function of start, progress and the progress changes seen.

Monotone the way time works: for the same progress at the same read time, a run that
started later is faster, so it finishes no later; more progress at the same times
finishes no later; the same progress read later finishes no earlier. Never before the
read time, and absent outside running runs with 1 %..99 % progress.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from qf_exporter.app import Exporter
from qf_exporter.polling.estimate import (
    HISTORY,
    MAX_PROGRESS,
    MIN_PROGRESS,
    estimated_finish,
    next_history,
    with_estimates,
)
from qf_exporter.qianfan.models import STATUSES, Run
from qf_exporter.simulator import QianfanSimulator, World
from tests.helpers import ManualClock, account

times = st.floats(min_value=1e9, max_value=2e9, allow_nan=False)
gaps = st.floats(min_value=1.0, max_value=1e6, allow_nan=False)
progresses = st.floats(min_value=MIN_PROGRESS, max_value=MAX_PROGRESS, allow_nan=False)


def finish(progress: float | None, start: float | None, read_at: float,
           history: tuple[tuple[float, float], ...] = (), status: str = "running"
           ) -> float | None:
    return estimated_finish(status=status, progress=progress, start=start, read_at=read_at,
                            history=history)


# --- from the start ----------------------------------------------------------------------


@given(times, gaps, progresses)
def test_from_start_is_start_plus_elapsed_over_progress(start: float, elapsed: float,
                                                        p: float) -> None:
    read_at = start + elapsed
    estimate = finish(p, start, read_at)
    assert estimate is not None
    assert estimate >= read_at
    assert estimate == pytest.approx(max(start + elapsed / p, read_at), rel=1e-12)


@given(times, gaps, gaps, progresses)
def test_a_later_start_finishes_no_later(start: float, elapsed: float, shift: float,
                                         p: float) -> None:
    read_at = start + elapsed + shift
    early, late = finish(p, start, read_at), finish(p, start + shift, read_at)
    assert early is not None and late is not None
    assert late <= early


@given(times, gaps, progresses, progresses)
def test_more_progress_at_the_same_times_finishes_no_later(start: float, elapsed: float,
                                                           p: float, q: float) -> None:
    low, high = sorted((p, q))
    a, b = finish(low, start, start + elapsed), finish(high, start, start + elapsed)
    assert a is not None and b is not None
    assert b <= a


@given(times, gaps, gaps, progresses)
def test_the_same_progress_read_later_finishes_no_earlier(start: float, elapsed: float,
                                                          more: float, p: float) -> None:
    a, b = finish(p, start, start + elapsed), finish(p, start, start + elapsed + more)
    assert a is not None and b is not None
    assert b >= a


# --- from the rate seen ------------------------------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> tuple[tuple[float, float], ...]:
    """Two to HISTORY progress changes: times and progress both rising."""
    count = draw(st.integers(2, HISTORY))
    t = draw(times)
    p = draw(st.floats(0.0, 0.5))
    result = []
    for _ in range(count):
        result.append((t, p))
        t += draw(gaps)
        p += draw(st.floats(0.001, 0.1))
    assume(result[-1][1] <= MAX_PROGRESS)
    return tuple(result)


@given(histories(), gaps)
def test_from_the_rate_seen(history: tuple[tuple[float, float], ...], since: float) -> None:
    (t1, p1), (tn, pn) = history[0], history[-1]
    assume(pn >= MIN_PROGRESS)
    read_at = tn + since
    estimate = finish(pn, t1 - 1e6, read_at, history)  # the start plays no part now
    rate = (pn - p1) / (tn - t1)
    assert estimate is not None
    assert estimate >= read_at
    assert estimate == pytest.approx(max(tn + (1 - pn) / rate, read_at), rel=1e-9)


@given(histories(), gaps, st.floats(0.0, 0.2))
def test_more_progress_along_the_same_history_finishes_no_later(
        history: tuple[tuple[float, float], ...], since: float, more: float) -> None:
    higher = tuple((t, p + more) for t, p in history)
    pn = higher[-1][1]
    assume(history[-1][1] >= MIN_PROGRESS and pn <= MAX_PROGRESS)
    read_at = history[-1][0] + since
    a, b = finish(history[-1][1], None, read_at, history), finish(pn, None, read_at, higher)
    assert a is not None and b is not None
    assert b <= a


@given(histories(), gaps, gaps)
def test_a_later_read_of_the_same_history_finishes_no_earlier(
        history: tuple[tuple[float, float], ...], since: float, more: float) -> None:
    pn = history[-1][1]
    assume(pn >= MIN_PROGRESS)
    read_at = history[-1][0] + since
    a, b = finish(pn, None, read_at, history), finish(pn, None, read_at + more, history)
    assert a is not None and b is not None
    assert b >= a


def test_one_change_seen_is_no_rate_yet() -> None:
    assert finish(0.5, 1000.0, 2000.0, ((1900.0, 0.5),)) == 1000 + 1000 / 0.5


# --- absent at the edges -----------------------------------------------------------------


@given(st.sampled_from([s for s in STATUSES if s != "running"]), times, gaps, progresses,
       st.booleans())
def test_absent_unless_running(status: str, start: float, elapsed: float, p: float,
                               with_history: bool) -> None:
    history = ((start + 1, 0.01), (start + 2, 0.02)) if with_history else ()
    assert finish(p, start, start + elapsed, history, status=status) is None


@given(times, gaps,
       st.none() | st.floats(0.0, MIN_PROGRESS, exclude_max=True)
       | st.floats(MAX_PROGRESS, 1.0, exclude_min=True),
       st.booleans())
def test_absent_for_unknown_too_small_or_too_large_progress(
        start: float, elapsed: float, p: float | None, with_history: bool) -> None:
    history = ((start + 1, 0.01), (start + 2, 0.02)) if with_history else ()
    assert finish(p, start, start + elapsed, history) is None


@given(times, st.floats(0.0, 1e6), progresses)
def test_absent_without_elapsed_time_or_start(start: float, before: float, p: float) -> None:
    assert finish(p, start, start - before) is None  # read at or before the start
    assert finish(p, None, start) is None


def test_bounds_are_inclusive() -> None:
    assert finish(0.01, 0.0, 100.0) == pytest.approx(10_000.0)
    assert finish(0.99, 0.0, 99.0) == pytest.approx(100.0)
    assert finish(0.0099, 0.0, 100.0) is None and finish(0.991, 0.0, 99.0) is None


# --- the history the poller carries ------------------------------------------------------


def run(progress: float | None, read_at: float, status: str = "running",
        history: tuple[tuple[float, float], ...] = ()) -> Run:
    return Run(account="a", api="v2", job_id="job-1", task_id="task-1", status=status,
               upstream_status="Running", progress=progress, start_time=0.0,
               last_read=read_at, progress_history=history)


def test_a_change_is_recorded_when_it_is_seen() -> None:
    first = run(0.10, 60.0)
    assert next_history(None, first) == ()  # the first value read is no change seen
    second = replace(run(0.10, 120.0), progress_history=next_history(first, run(0.10, 120.0)))
    assert second.progress_history == ()
    third = run(0.11, 180.0)
    assert next_history(second, third) == ((180.0, 0.11),)


def test_history_is_bounded_and_starts_over_when_progress_goes_back_or_stops_running() -> None:
    history = tuple((60.0 * k, 0.01 * k) for k in range(1, HISTORY + 1))
    previous = run(0.01 * HISTORY, 60.0 * HISTORY, history=history)
    grown = next_history(previous, run(0.5, 1000.0))
    assert len(grown) == HISTORY and grown[-1] == (1000.0, 0.5) and grown[0] == history[1]
    assert next_history(previous, run(0.02, 1000.0)) == ()  # resumed from a checkpoint
    assert next_history(previous, run(None, 1000.0, status="succeeded")) == ()
    assert next_history(run(0.5, 0.0, status="waiting"), run(0.6, 60.0)) == ()
    # A read without progress keeps what was seen, but is no change.
    assert next_history(previous, run(None, 1000.0)) == history
    assert next_history(run(None, 1000.0, history=history), run(0.5, 1060.0)) == history


def test_with_estimates_carries_history_by_run() -> None:
    before = run(0.10, 60.0)
    other = replace(run(0.30, 60.0), task_id="task-2")
    (now, new) = with_estimates([before, other],
                                [run(0.11, 120.0), replace(run(0.30, 120.0), task_id="task-3")])
    assert now.progress_history == ((120.0, 0.11),)
    assert now.estimated_finish == pytest.approx(120.0 / 0.11)
    assert new.progress_history == () and new.estimated_finish == pytest.approx(400.0)


# --- through the poller, against the simulated Qianfan ----------------------------------


def test_the_rate_seen_corrects_for_time_spent_queued(
        world: World, sim: QianfanSimulator, clock: ManualClock,
        make_exporter: Callable[..., Exporter]) -> None:
    """A run that waited an hour, then trains 100 minutes: from its creation time alone
    the finish comes out hours late; after two changes of progress seen, it is right to
    within the rounding of the read times (one poll)."""
    now = clock()
    world.add_job("job-eta", "eta", created=now - 86400)
    sim_run = world.add_run("job-eta", "task-eta", created=now - 3600 - 1200, wait=3600,
                            duration=6000, outcome="running")
    exporter = make_exporter(account(sim, jobs=("job-eta",)))

    def estimate() -> tuple[float | None, float]:
        (got,) = exporter.poller.poll_all().accounts["default"].runs
        return got.estimated_finish, got.last_read

    first, read_at = estimate()  # 20 % after 1h20m since creation
    assert first is not None
    assert first == pytest.approx(sim_run.created + (read_at - sim_run.created) / 0.20)
    assert first - (sim_run.started + sim_run.duration) > 3 * 3600
    seen = []
    for _ in range(4):  # 60 s per percent: four polls a minute apart see two changes
        clock.advance(60)
        seen.append(estimate()[0])
    true_finish = sim_run.started + sim_run.duration
    assert seen[-1] is not None and abs(seen[-1] - true_finish) <= 60
