"""Whether an account's latest poll reached Qianfan with accepted credentials.

Any authoritative answer counts, "no such job" included: a mistyped job id is that
target's problem (``qianfan_target_up`` 0), not an account outage. The account is
down only when every call of the poll failed with a connection, timeout, auth,
server or rate-limit error (or an answer that could not be read), or when the job
listing (discovery) failed. A firing with nothing due makes no call and keeps the
previous poll's answer; an account with nothing to read at all is not down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qf_exporter.polling.snapshot import AccountState, TargetState

# Failures that say nothing about Qianfan accepting the account's credentials. Any other
# outcome of a call (a good answer, "no such job", a refused request) is an authoritative
# answer from Qianfan given after it accepted them. An answer that cannot be read is no
# such evidence: when every call gets one, Qianfan cannot be used either.
UNREACHED = frozenset(
    {"connection", "timeout", "auth", "server", "rate_limited", "invalid_response"}
)


@dataclass(frozen=True)
class Outcome:
    """One call of a poll: the failure's reason and error, both "" for a good answer."""

    reason: str = ""
    error: str = ""

    @classmethod
    def of_read(cls, state: TargetState, started: float) -> Outcome:
        """A target's read in a poll that started at ``started``. A job whose list was
        read but a run's detail was not (its runs were read at this poll, the target is
        down) did reach Qianfan."""
        if state.up or any(run.last_read >= started for run in state.runs):
            return cls()
        return cls(state.reason, state.error)


class Health:
    """An account's ``qianfan_up`` and why, its last success and its last poll's duration."""

    def __init__(self) -> None:
        # Before any call nothing has failed: an account with nothing to read is not down.
        self.up = True
        self.error = ""
        self.last_success: float | None = None
        self.last_duration: float | None = None

    def adopt(self, previous: AccountState) -> None:
        """Carry on from the state a previous poller of the account published."""
        self.up, self.error = previous.up, previous.error
        self.last_success = previous.last_success
        self.last_duration = previous.poll_duration

    def update(self, outcomes: Sequence[Outcome], listing_error: str) -> None:
        """Whether this poll reached Qianfan with accepted credentials (see the module doc)."""
        if listing_error:  # the listing failed (it is retried every poll until it works)
            self.up, self.error = False, "job listing failed: " + listing_error
        elif not outcomes:  # nothing was due: the previous poll's answer stands
            return
        elif any(o.reason not in UNREACHED for o in outcomes):
            self.up, self.error = True, ""
        else:
            reasons = ", ".join(sorted({o.reason for o in outcomes}))
            self.up = False
            self.error = f"every call failed ({reasons}): {outcomes[0].error}"

    def polled(self, end: float, duration: float, read: bool) -> None:
        """A poll ended at ``end`` after ``duration`` seconds (``read``: it made a call)."""
        if self.up:
            self.last_success = end
        if read:  # a firing with nothing due is no poll: keep the last one's duration
            self.last_duration = duration
