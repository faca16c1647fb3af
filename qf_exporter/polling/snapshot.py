"""Immutable snapshots of everything the exporter knows, replaced in one step.

The poller builds a new ``Snapshot`` after each account's poll and swaps it in;
readers (rendering, the landing page, health metrics) hold a reference to one
snapshot and never see half of a poll.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from qf_exporter.qianfan.models import STATUSES, Run

# A target's key: its api and its ``target`` label, ("v2", "job-...") or ("v1", "10250/6205").
TargetKey = tuple[str, str]
# A run's key, ``Run.key``: (account, api, job_id, task_id).
RunKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class TargetState:
    """One configured (or discovered) target: a V2 job or a V1 task/job pair."""

    api: str
    name: str
    up: bool = False
    runs: tuple[Run, ...] = ()
    last_attempt: float | None = None  # start of the latest read (wall clock)
    last_success: float | None = None  # end of the latest good read
    error: str = ""  # the latest failure, already free of secrets
    reason: str = ""
    discovered: bool = False  # found by discovery, not configured
    team: str = ""  # who owns the target's runs (``targets.Targets.owner``); "" for nobody

    def owned_by(self, team: str) -> TargetState:
        """This state with ``team`` as the owner of the target and of each of its runs."""
        if self.team == team and all(run.team == team for run in self.runs):
            return self
        runs = tuple(run if run.team == team else replace(run, team=team) for run in self.runs)
        return replace(self, team=team, runs=runs)

    @property
    def active(self) -> bool:
        """Whether any run may still change (decides the polling interval)."""
        return not self.runs or any(not run.final for run in self.runs)


@dataclass(frozen=True)
class Budget:
    """An account's request budget as this replica uses it, and what its polls need.

    ``qps`` is the account's ``qps`` divided by ``--total-shards``; ``lag`` how far
    behind its schedule the most overdue target was at the latest poll
    (``cadence.lag``); ``needs`` and ``holds`` are set while the budget cannot hold
    ``poll.interval``: the requests the latest poll needed, and the interval that
    budget can actually hold.
    """

    qps: float
    lag: float = 0.0
    needs: int | None = None
    holds: float | None = None


@dataclass(frozen=True)
class AccountState:
    """One account after its latest poll.

    ``up`` says whether that poll reached Qianfan with accepted credentials (an
    authoritative answer such as "no such job" counts); a target that could not be
    read is that target's problem (its ``TargetState.up``), not the account's.
    """

    name: str
    targets: Mapping[TargetKey, TargetState] = field(
        default_factory=lambda: MappingProxyType({})
    )
    up: bool = False
    polled: bool = False
    last_success: float | None = None  # end of the latest poll that reached Qianfan
    poll_duration: float | None = None
    discovery_error: str = ""
    discovered_jobs: int | None = None  # jobs discovery adds (None: discovery is off)
    runs: tuple[Run, ...] = ()  # exported runs, after retention and max_runs
    error: str = ""  # why Qianfan could not be used, when ``up`` is false
    budget: Budget | None = None  # the request budget this replica uses, and whether it holds

    @property
    def every_target_read(self) -> bool:
        """Whether the latest poll reached Qianfan and read every target (``--once``)."""
        return (
            self.up
            and not self.discovery_error
            and all(target.up for target in self.targets.values())
        )

    @property
    def targets_down(self) -> list[TargetState]:
        """The targets whose latest read failed, in label order."""
        return [t for _, t in sorted(self.targets.items()) if not t.up]

    def status_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for run in self.runs:
            counts[run.status] += 1
        return counts


@dataclass(frozen=True)
class Snapshot:
    accounts: Mapping[str, AccountState] = field(default_factory=lambda: MappingProxyType({}))
    generation: int = 0

    def with_account(self, state: AccountState) -> Snapshot:
        accounts = dict(self.accounts)
        accounts[state.name] = state
        return replace(self, accounts=MappingProxyType(accounts), generation=self.generation + 1)

    def with_accounts(self, accounts: Mapping[str, AccountState]) -> Snapshot:
        """Every account's state replaced at once (a reload)."""
        return replace(self, accounts=MappingProxyType(dict(accounts)),
                       generation=self.generation + 1)

    @property
    def ready(self) -> bool:
        return bool(self.accounts) and all(a.polled for a in self.accounts.values())
