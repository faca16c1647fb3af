"""An account's targets: the configured ones this replica owns, the discovered ones,
and each one's latest state.

A target's key is ``(api, name)``: ``("v2", job_id)`` or ``("v1", "task/job")``; the
name is its ``target`` label. A V1 target keeps its typed pair (``V1Target``) for
reading. Each target has an owner, the ``team`` label of its health and its runs: the
team the file names for that job or pair, else the team of the first
``discovery.teams`` rule that matches the job's name, else the account's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from qf_exporter.config.file import Account, V1Target, V2Job
from qf_exporter.polling.snapshot import TargetKey, TargetState


class Targets:
    """The target set of one account and the states of its targets."""

    def __init__(self, account: Account, owns: Callable[[str], bool]) -> None:
        self.discover = account.discover
        self.owns = owns  # whether this shard owns a target (by name)
        self.pairs = {("v1", pair.name): pair for pair in account.tasks if owns(pair.name)}
        self.configured = frozenset(
            [("v2", job) for job in account.jobs if owns(job)] + list(self.pairs)
        )
        self.team = account.team
        # The teams the file names for single targets.
        self.named: dict[TargetKey, str] = {
            ("v2", job): job.team
            for job in account.jobs if isinstance(job, V2Job) and job.team is not None
        } | {key: pair.team for key, pair in self.pairs.items() if pair.team is not None}
        self.ruled = bool(account.discovery.teams)
        self.rules: Mapping[str, str] = {}  # job id -> team, from discovery.teams
        self.states: dict[TargetKey, TargetState] = {
            key: TargetState(api=key[0], name=key[1], team=self.owner(key))
            for key in sorted(self.configured)
        }

    def pair(self, key: TargetKey) -> V1Target | None:
        """A V1 target's pair (None for a V2 job)."""
        return self.pairs.get(key)

    def owner(self, key: TargetKey) -> str:
        """Who owns the target's runs (see the module's docstring)."""
        named = self.named.get(key)
        if named is not None:
            return named
        return self.rules.get(key[1], self.team) if key[0] == "v2" else self.team

    def sync(self, discovered: Iterable[str], rules: Mapping[str, str] | None = None) -> None:
        """Add discovered jobs, drop jobs that vanished upstream (configured ones stay);
        ``rules``: the teams discovery.teams gives the listed jobs, when listed."""
        if rules is not None:
            self.rules = rules
        wanted = self.configured | {("v2", job) for job in discovered}
        for key in list(self.states):
            if key not in wanted:
                del self.states[key]
        for key in sorted(wanted - self.states.keys()):
            self.states[key] = TargetState(
                api=key[0], name=key[1], discovered=key not in self.configured
            )
        for key, state in self.states.items():
            self.states[key] = state.owned_by(self.owner(key))

    def adopt(self, previous: Mapping[TargetKey, TargetState]) -> dict[TargetKey, TargetState]:
        """Keep the states of a previous poller's targets that these settings still poll
        (all due at the next poll), and return them.

        With discovery on, previously discovered jobs that this shard owns stay until
        the first listing says otherwise.
        """
        kept: dict[TargetKey, TargetState] = {}
        for key, state in previous.items():
            if key in self.configured:
                kept[key] = replace(state, discovered=False, last_attempt=None)
            elif self.discover and key[0] == "v2" and self.owns(key[1]):
                kept[key] = replace(state, discovered=True, last_attempt=None)
        if self.discover and self.ruled:
            # Until the next listing (due at once), a job keeps the team a rule gave it.
            self.rules = {name: state.team for (api, name), state in previous.items()
                          if api == "v2" and state.team and (api, name) not in self.named}
        kept = {key: state.owned_by(self.owner(key)) for key, state in kept.items()}
        self.states.update(kept)
        return kept
