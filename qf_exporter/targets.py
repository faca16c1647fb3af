"""An account's targets: the configured ones this replica owns, the discovered ones,
and each one's latest state.

A target's key is ``(api, name)``: ``("v2", job_id)`` or ``("v1", "task/job")``; the
name is its ``target`` label. A V1 target keeps its typed pair (``V1Target``) for
reading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace

from qf_exporter.config import Account, V1Target
from qf_exporter.retention import TargetKey
from qf_exporter.snapshot import TargetState


class Targets:
    """The target set of one account and the states of its targets."""

    def __init__(self, account: Account, owns: Callable[[str], bool]) -> None:
        self.discover = account.discover
        self.owns = owns  # whether this shard owns a target (by name)
        self.pairs = {("v1", pair.name): pair for pair in account.tasks if owns(pair.name)}
        self.configured = frozenset(
            [("v2", job) for job in account.jobs if owns(job)] + list(self.pairs)
        )
        self.states: dict[TargetKey, TargetState] = {
            key: TargetState(api=key[0], name=key[1]) for key in sorted(self.configured)
        }

    def __iter__(self) -> Iterator[TargetKey]:
        return iter(self.states)

    def pair(self, key: TargetKey) -> V1Target | None:
        """A V1 target's pair (None for a V2 job)."""
        return self.pairs.get(key)

    def sync(self, discovered: Iterable[str]) -> None:
        """Add discovered jobs, drop jobs that vanished upstream (configured ones stay)."""
        wanted = self.configured | {("v2", job) for job in discovered}
        for key in list(self.states):
            if key not in wanted:
                del self.states[key]
        for key in sorted(wanted - self.states.keys()):
            self.states[key] = TargetState(
                api=key[0], name=key[1], discovered=key not in self.configured
            )

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
        self.states.update(kept)
        return kept
