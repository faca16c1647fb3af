"""The fault matrix: every fault the simulator has, through the whole exporter.

Each fault the simulated Qianfan can produce is injected into one target of one
account while the exporter polls (with a clock the test moves) and is scraped over
HTTP. In every case the exporter keeps serving, the target goes down with the right
``reason`` counted, every other target and account stays up, the target's last-read
runs stay until ``stale_after`` and then go (at once for an unknown job or run: that
answer is authoritative), and the next good poll brings it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from qf_exporter.app import Exporter
from qf_exporter.simulator import FAULT_KINDS, QianfanSimulator
from tests.faults.fleet import (
    A_TARGETS,
    ACTION,
    B_TARGETS,
    CREDENTIALS,
    POLL,
    REASON,
    SLOW,
    TARGET,
    Fleet,
    accounts,
    failures,
    run_labels,
)
from tests.helpers import (
    ACCESS_KEY,
    Samples,
    account,
    scrape,
    series,
    value,
)


def test_the_matrix_covers_every_fault_the_simulator_has() -> None:
    # "odd_fields" and "huge_numbers" are no failure: see
    # test_odd_field_types_are_absorbed_not_fatal and test_huge_numbers_lose_no_run;
    # nor is "escaped_keys" (tests/qianfan/test_hostile_answers.py).
    assert set(REASON) | {"odd_fields", "huge_numbers", "escaped_keys"} == set(FAULT_KINDS)



# --- 1. the fault matrix ---------------------------------------------------------------


@dataclass
class Case:
    kind: str  # a simulator fault, or "refused"
    api: str  # "v1", "v2", or "both" (the whole account)

    @property
    def reason(self) -> str:
        return "connection" if self.kind == "refused" else REASON[self.kind]

    @property
    def affected(self) -> set[tuple[str, str]]:
        return set(A_TARGETS) if self.api == "both" else {(self.api, TARGET[self.api])}


CASES = [Case(kind, api) for kind in sorted(REASON) for api in ("v1", "v2")]
CASES.append(Case("refused", "both"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.kind}-{c.api}")
def test_fault(case: Case, fleet: Fleet, make_exporter: Callable[..., Exporter]) -> None:
    world, clock, sim = fleet.world, fleet.clock, fleet.sim
    # Account "a" talks to its own gateway when the test closes that one's port.
    own = QianfanSimulator(world, CREDENTIALS, wall_clock=clock).start() \
        if case.kind == "refused" else None
    try:
        a, b = accounts(own or sim, sim)
        poll = replace(POLL, timeout=0.5) if case.kind in SLOW else POLL
        exporter = make_exporter(a, b, poll=poll)
        check_fault(case, fleet, exporter, own)
    finally:
        if own is not None:
            own.stop()


Kept = dict[frozenset[tuple[str, str]], float | None]


@dataclass
class Watch:
    """What a fault case checks on every poll: the case, the exporter, and the values
    read before the fault started."""

    case: Case
    fleet: Fleet
    exporter: Exporter
    read_at: float  # when the affected targets were last read
    kept: Kept  # the affected runs' last-read progress, which must stay while the fault lasts

    def poll(self) -> Samples:
        self.fleet.clock.advance(60)
        self.exporter.poller.poll_all(force=False)
        return scrape(self.exporter)


def check_fault(case: Case, fleet: Fleet, exporter: Exporter,
                own: QianfanSimulator | None) -> None:
    watch = read_before_the_fault(case, fleet, exporter)
    port = start_the_fault(case, fleet.sim, own)
    # A configured job or run that the API says does not exist loses its runs at once
    # (the answer is authoritative); every other failure keeps them until stale_after.
    keeps_runs = case.kind != "unknown"
    for k in range(1, 5):  # three polls within stale_after, a fourth past it
        samples = watch.poll()
        check_targets_during_the_fault(watch, samples)
        check_failures_counted(watch, samples, k)
        check_kept_runs(watch, samples, keep=keeps_runs and k <= 3, k=k)
        check_others_read_afresh(watch, samples)
    assert value(samples, "qianfan_last_successful_poll_timestamp_seconds",
                 account="a") == (watch.read_at if case.api == "both" else fleet.clock())

    # The fault ends: the next poll recovers.
    if own is not None:
        own = QianfanSimulator(fleet.world, CREDENTIALS, port=port, wall_clock=fleet.clock).start()
    else:
        fleet.sim.clear_faults()
    try:
        check_recovered(watch, watch.poll())
    finally:
        if own is not None:
            own.stop()


def read_before_the_fault(case: Case, fleet: Fleet, exporter: Exporter) -> Watch:
    exporter.poller.poll_all(force=False)
    samples = scrape(exporter)
    for api, target in A_TARGETS:
        assert value(samples, "qianfan_target_up", account="a", api=api, target=target) == 1
    kept = {
        frozenset(labels.items()): value(samples, "qianfan_finetune_run_progress_ratio",
                                         account="a", **labels)
        for api, target in case.affected for labels in run_labels(api, target, fleet.world)
    }
    assert kept and all(v is not None and 0 < v < 1 for v in kept.values())
    return Watch(case, fleet, exporter, fleet.clock(), kept)


def start_the_fault(case: Case, sim: QianfanSimulator, own: QianfanSimulator | None) -> int:
    """The fault starts; the port of the account's own gateway (0 when it has none)."""
    if own is not None:
        port = int(own.url.rsplit(":", 1)[1])
        own.stop()  # nothing listens on the port any more: connections are refused
        return port
    sim.add_fault(case.kind, target=TARGET[case.api], access_key=ACCESS_KEY,
                  seconds=60.0 if case.kind in SLOW else 0.0)
    return 0


def check_targets_during_the_fault(watch: Watch, samples: Samples) -> None:
    case = watch.case
    for api, target in A_TARGETS:
        expected = 0 if (api, target) in case.affected else 1
        assert value(samples, "qianfan_target_up", account="a", api=api,
                     target=target) == expected, (api, target)
    for api, target in B_TARGETS:
        assert value(samples, "qianfan_target_up", account="b", api=api,
                     target=target) == 1
    # One target failing is that target's problem: account a is down only when
    # every call failed (here: its gateway refused every connection).
    assert value(samples, "qianfan_up", account="a") == (0 if case.api == "both" else 1)
    assert value(samples, "qianfan_up", account="b") == 1
    for api, target in case.affected:
        assert value(samples, "qianfan_target_error_info", account="a", api=api,
                     target=target, reason=case.reason) == 1
        assert value(samples, "qianfan_target_last_success_timestamp_seconds",
                     account="a", api=api, target=target) == watch.read_at


def check_failures_counted(watch: Watch, samples: Samples, k: int) -> None:
    """The right reason, once per failed request (no retries here), and no other."""
    case = watch.case
    per_poll = {action: sum(1 for api, _ in case.affected if ACTION[api] == action)
                for action in ACTION.values()}
    for action, count in per_poll.items():
        assert failures(samples, "a", action=action, reason=case.reason) == k * count
    assert failures(samples, "a") == k * sum(per_poll.values())
    assert failures(samples, "b") == 0


def check_kept_runs(watch: Watch, samples: Samples, keep: bool, k: int) -> None:
    """Last-read values stay (the simulator's runs moved on) until stale_after."""
    for frozen, progress in watch.kept.items():
        labels = dict(frozen)
        got = value(samples, "qianfan_finetune_run_progress_ratio", account="a", **labels)
        last = value(samples, "qianfan_finetune_run_last_read_timestamp_seconds",
                     account="a", **labels)
        if keep:
            assert got == progress and last == watch.read_at, (k, labels)
        else:
            assert got is None and last is None, (k, labels)


def check_others_read_afresh(watch: Watch, samples: Samples) -> None:
    """Everything else is read afresh."""
    world, now = watch.fleet.world, watch.fleet.clock()
    for account_name, targets in (("a", A_TARGETS - watch.case.affected), ("b", B_TARGETS)):
        for api, target in targets:
            for labels in run_labels(api, target, world):
                assert value(samples, "qianfan_finetune_run_last_read_timestamp_seconds",
                             account=account_name, **labels) == now


def check_recovered(watch: Watch, samples: Samples) -> None:
    now = watch.fleet.clock()
    for api, target in A_TARGETS:
        assert value(samples, "qianfan_target_up", account="a", api=api,
                     target=target) == 1
    assert value(samples, "qianfan_up", account="a") == 1
    assert value(samples, "qianfan_last_successful_poll_timestamp_seconds",
                 account="a") == now
    for frozen, progress in watch.kept.items():
        labels = dict(frozen)
        got = value(samples, "qianfan_finetune_run_progress_ratio", account="a", **labels)
        assert got is not None and progress is not None and got > progress
        assert value(samples, "qianfan_finetune_run_last_read_timestamp_seconds",
                     account="a", **labels) == now
    assert len(series(samples, "qianfan_finetune_run_info", account="a")) == 6


def test_odd_field_types_are_absorbed_not_fatal(
    fleet: Fleet, make_exporter: Callable[..., Exporter]
) -> None:
    """Fields of the wrong type inside well-formed runs: the run is read, the odd fields
    are left out (never NaN), and the target stays up."""
    world, clock, sim = fleet.world, fleet.clock, fleet.sim
    job = world.add_job("job-odd", created=clock() - 3600)
    run = world.add_run("job-odd", "task-odd", created=clock() - 600, wait=0, duration=6000)
    world.add_v1_run(103, 203, created=clock() - 600, wait=0, duration=6000)
    a = account(sim, name="a", jobs=("job-odd",), tasks=((103, 203),), qps=1000)
    exporter = make_exporter(a, poll=POLL)
    sim.add_fault("odd_fields")
    exporter.poller.poll_all()
    samples = scrape(exporter)
    assert value(samples, "qianfan_target_up", target="job-odd") == 1
    assert value(samples, "qianfan_target_up", target="103/203") == 1
    assert value(samples, "qianfan_finetune_run_status", task_id="task-odd",
                 status="unknown") == 1
    assert value(samples, "qianfan_finetune_run_status", task_id="103", status="unknown") == 1
    for name in ("qianfan_finetune_run_progress_ratio",
                 "qianfan_finetune_run_start_timestamp_seconds",
                 "qianfan_finetune_run_finish_timestamp_seconds",
                 "qianfan_finetune_run_training_loss"):
        assert value(samples, name, task_id="task-odd") is None, name
    assert value(samples, "qianfan_finetune_run_checkpoints", task_id="task-odd") == 0
    assert all(v == v for v in samples.values())  # no NaN anywhere
    assert failures(samples, "a") == 0
    sim.clear_faults()
    exporter.poller.poll_all()
    samples = scrape(exporter)
    assert value(samples, "qianfan_finetune_run_status", task_id="task-odd",
                 status=run.status(clock())) == 1
    assert job.runs and value(samples, "qianfan_finetune_run_progress_ratio",
                              task_id="task-odd") is not None


def test_huge_numbers_lose_no_run(
    fleet: Fleet, make_exporter: Callable[..., Exporter], caplog: pytest.LogCaptureFixture
) -> None:
    """Times, steps and a metric value 401 digits long (no float holds them): those
    fields are left out as missing ones would be; the runs, the targets and discovery
    stay, and nothing is logged as an error (no traceback)."""
    world, clock, sim = fleet.world, fleet.clock, fleet.sim
    world.add_job("job-huge", created=clock() - 3600)
    world.add_run("job-huge", "task-huge", created=clock() - 900, wait=0, duration=600,
                  outcome="succeeded")
    world.add_v1_run(104, 204, created=clock() - 600, wait=0, duration=6000)
    a = account(sim, name="a", jobs=("job-huge",), tasks=((104, 204),), discover=True)
    exporter = make_exporter(a, poll=POLL)
    sim.add_fault("huge_numbers")
    exporter.poller.poll_all()
    samples = scrape(exporter)
    assert value(samples, "qianfan_up", account="a") == 1  # discovery read the listing
    for target in ("job-huge", "104/204"):
        assert value(samples, "qianfan_target_up", target=target) == 1
    assert value(samples, "qianfan_finetune_run_status", task_id="task-huge",
                 status="succeeded") == 1
    assert value(samples, "qianfan_finetune_run_status", task_id="104", status="running") == 1
    for task in ("task-huge", "104"):
        assert value(samples, "qianfan_finetune_run_start_timestamp_seconds",
                     task_id=task) is None
    assert value(samples, "qianfan_finetune_run_checkpoint_step", task_id="task-huge") is None
    assert (value(samples, "qianfan_finetune_run_checkpoints", task_id="task-huge") or 0) > 0
    scores = series(samples, "qianfan_finetune_run_evaluation_ratio")
    assert scores and all(0 <= score <= 1 for score in scores.values())
    assert failures(samples, "a") == 0
    assert not [r for r in caplog.records if r.levelno >= 40 or r.exc_info]
