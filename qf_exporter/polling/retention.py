"""What is exported of an account's runs, and counting what is left out once.

``retain`` is a pure function: every run of every target, less the runs that finished
more than ``finished_retention`` ago and, past the account's ``max_runs``, the oldest.
It returns the runs kept and the runs left out (with why); ``LeftOutCounter`` then
counts each left-out run in ``qianfan_runs_left_out_total`` once, however many polls
leave it out and whatever the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import Counter

from qf_exporter.polling.snapshot import RunKey, TargetKey, TargetState
from qf_exporter.qianfan.models import Run

LEFT_OUT_REASONS = ("retention", "max_runs")


@dataclass(frozen=True)
class LeftOut:
    """A run that is read but not exported, and why (one of ``LEFT_OUT_REASONS``)."""

    target: TargetKey
    run: Run
    reason: str


@dataclass(frozen=True)
class Retained:
    """The runs to export, the runs left out, and how many runs there were when the
    ``max_runs`` cap cut them (None when it did not)."""

    runs: tuple[Run, ...]
    left_out: tuple[LeftOut, ...]
    over_cap: int | None = None


def retain(
    targets: Mapping[TargetKey, TargetState],
    now: float,
    retention: float | None,
    cap: int | None,
) -> Retained:
    """Every run of every target, less what retention and ``max_runs`` leave out."""
    runs = [(key, run) for key, state in targets.items() for run in state.runs]
    left: list[LeftOut] = []
    if retention is not None:
        kept = []
        for key, run in runs:
            finished = run.finish_time if run.final else None
            if finished is not None and now - finished > retention:
                left.append(LeftOut(key, run, "retention"))
            else:
                kept.append((key, run))
        runs = kept
    over_cap = None
    if cap is not None and len(runs) > cap:
        over_cap = len(runs)
        # Newest first by start time; a run without one counts as the oldest.
        runs.sort(key=lambda kr: (kr[1].start_time or 0.0, kr[1].key), reverse=True)
        left += [LeftOut(key, run, "max_runs") for key, run in runs[cap:]]
        runs = runs[:cap]
    return Retained(tuple(run for _, run in runs), tuple(left), over_cap)


class LeftOutCounter:
    """Counts each left-out run of one account once.

    A run is forgotten when its target goes away or a good read no longer lists it.
    """

    def __init__(self, account: str, counter: Counter) -> None:
        self.account = account
        self.counter = counter
        # Runs counted so far, by target.
        self.counted: dict[TargetKey, set[RunKey]] = {}
        for reason in LEFT_OUT_REASONS:  # present at 0 from the start, for rate() and alerts
            counter.labels(account, reason)

    def adopt(self, counted: Mapping[TargetKey, set[RunKey]], keep: Mapping[TargetKey, object]
              ) -> None:
        """Take over what a previous counter counted, for the targets still kept."""
        counted = dict(counted)  # one step, even while an old poll is still running
        self.counted = {key: set(runs) for key, runs in counted.items() if key in keep}

    def count(self, targets: Mapping[TargetKey, TargetState], left: tuple[LeftOut, ...]) -> None:
        for key in list(self.counted):
            state = targets.get(key)
            if state is None:  # the target went away, and its runs with it
                del self.counted[key]
            elif state.up:  # a good read lists every run the job still has
                self.counted[key] &= {run.key for run in state.runs}
        for item in left:
            counted = self.counted.setdefault(item.target, set())
            if item.run.key not in counted:
                counted.add(item.run.key)
                self.counter.labels(self.account, item.reason).inc()
