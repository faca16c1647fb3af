"""When a running run will finish: a pure estimate from what the exporter has read.

``estimated_finish`` is exported as ``qianfan_finetune_run_estimated_finish_timestamp_seconds``.
It exists only for a run that is running with a progress ``p`` between ``MIN_PROGRESS``
and ``MAX_PROGRESS`` (both included): below 1 % there is too little to go by, above
99 % the run is about to finish. Of two ways to estimate it, the second wins when it
can be used:

1. **From the start.** The run did ``p`` of its work in the ``read_at - start`` seconds
   since it started, so at that pace it finishes at ``start + (read_at - start) / p``.
   (For V2, start is the run's creation time, so time it spent queued counts as training:
   for a run that waited this errs late.) Absent when ``read_at`` is not after ``start``.
2. **From the rate the exporter saw.** The exporter remembers (in each run's
   ``progress_history``, carried from one poll to the next) the last ``HISTORY`` times it
   saw the run's progress change: the read at which a new value was first seen, and the
   value. With two of them, ``rate = (p_n - p_1) / (t_n - t_1)`` from the oldest to the
   newest, and the estimate is ``t_n + (1 - p_n) / rate``. Measuring between reads at
   which a change was *seen* (each at most one poll after it happened) keeps whole-percent
   rounding out of the rate; the first value an exporter reads is no such change, so a
   restarted exporter uses the start for its first two changes.

Either way an estimate before ``read_at`` (a run that has not moved since its last
change for longer than the rate says is left) is raised to ``read_at``: the run has
not finished yet, so it will not finish earlier than now.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

from qf_exporter.qianfan.models import Run

MIN_PROGRESS = 0.01
MAX_PROGRESS = 0.99
HISTORY = 6  # progress changes remembered per run: the rate spans the last five steps

Transition = tuple[float, float]  # (read time at which a new progress was first seen, it)


def estimated_finish(
    *,
    status: str,
    progress: float | None,
    start: float | None,
    read_at: float,
    history: tuple[Transition, ...] = (),
) -> float | None:
    """The estimated finish (epoch seconds), or None where there is none (see above)."""
    if status != "running" or progress is None or not math.isfinite(read_at):
        return None
    if not MIN_PROGRESS <= progress <= MAX_PROGRESS:
        return None
    rate = _rate(history)
    if rate is not None:
        last_time, last_progress = history[-1]
        finish = last_time + (1.0 - last_progress) / rate
    elif start is not None and math.isfinite(start) and read_at > start:
        finish = start + (read_at - start) / progress
    else:
        return None
    if not math.isfinite(finish):
        return None
    return max(finish, read_at)


def _rate(history: tuple[Transition, ...]) -> float | None:
    """Progress per second between the oldest and newest change seen, if it is usable."""
    if len(history) < 2:
        return None
    (t1, p1), (tn, pn) = history[0], history[-1]
    if not (tn > t1 and pn > p1 and pn < 1.0):
        return None
    rate = (pn - p1) / (tn - t1)
    return rate if rate > 0 and math.isfinite(rate) else None


def next_history(previous: Run | None, run: Run) -> tuple[Transition, ...]:
    """The run's progress changes after this read, from the previous read of it.

    A change is recorded when this read shows a higher progress than the previous one;
    progress that went back (a run resumed from a checkpoint) starts the history over,
    and so does a run that is not (or was not) running. A read without progress keeps
    the history but shows no change (the previous value is unknown).
    """
    if run.status != "running":
        return ()
    if previous is None or previous.status != "running":
        return ()
    history = previous.progress_history
    if run.progress is None or previous.progress is None:
        if run.progress is not None and history and run.progress < history[-1][1]:
            return ()
        return history
    if run.progress < previous.progress:
        return ()
    if run.progress > previous.progress:
        history = (*history, (run.last_read, run.progress))[-HISTORY:]
    return history


def with_estimates(previous: Iterable[Run], runs: Iterable[Run]) -> tuple[Run, ...]:
    """``runs`` (just read) with their progress history carried over from ``previous``
    (the same target's runs as last read) and their estimated finish."""
    before = {run.key: run for run in previous}
    result = []
    for run in runs:
        history = next_history(before.get(run.key), run)
        finish = estimated_finish(status=run.status, progress=run.progress,
                                  start=run.start_time, read_at=run.last_read, history=history)
        if history == run.progress_history and finish == run.estimated_finish:
            result.append(run)  # most runs have ended: nothing to carry, no copy to make
        else:
            result.append(replace(run, progress_history=history, estimated_finish=finish))
    return tuple(result)
