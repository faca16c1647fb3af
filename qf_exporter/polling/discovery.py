"""Job discovery (``discover: true``): which of the account's V2 jobs to poll.

``JobDiscovery`` lists the account's jobs with ``DescribeFineTuningJobs`` every
``discovery.interval`` (not every poll), keeps those the filters want and this shard
owns, and remembers the last listing's error. A failed listing keeps the previous
list (the account reads as down until a listing works).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from qf_exporter.config.file import Account, Discovery, Poll
from qf_exporter.polling import cadence
from qf_exporter.polling.reader import bug_as_bad_answer
from qf_exporter.qianfan.budget import Deadline, NotSent
from qf_exporter.qianfan.client import QianfanClient
from qf_exporter.qianfan.errors import QianfanError
from qf_exporter.qianfan.models import Job, parse_job

log = logging.getLogger(__name__)


def wanted(job: Job, now: float, d: Discovery) -> bool:
    """Whether the discovery filters keep a listed job."""
    if d.include and not any(p.search(job.name) for p in d.include):
        return False
    if any(p.search(job.name) for p in d.exclude):
        return False
    if d.models and job.model not in d.models:
        return False
    if d.train_modes and job.train_mode not in d.train_modes:
        return False
    return not (
        d.max_age is not None
        and job.create_time is not None
        and now - job.create_time > d.max_age
    )


class JobDiscovery:
    """The jobs discovery found for one account, and the last listing's error."""

    def __init__(
        self,
        account: Account,
        poll: Poll,
        client: QianfanClient,
        owns: Callable[[str], bool],
    ) -> None:
        self.account = account
        self.poll = poll
        self.client = client
        self.owns = owns  # whether this shard owns a job
        self.jobs: frozenset[str] = frozenset()
        # The team of each listed job this shard owns whose name a discovery.teams rule
        # matches (configured jobs too), as of the last listing.
        self.teams: dict[str, str] = {}
        self.last_listed: float | None = None
        self.error = ""

    def refresh(self, now: float, deadline: Deadline) -> bool | None:
        """List the account's jobs when due: True when listed, False when the listing
        failed, None when it was not due (or a stop cut its wait for budget short)."""
        if not cadence.discovery_due(self.last_listed, now, self.account.discovery.interval,
                                      self.poll):
            return None
        try:
            raw = self.client.describe_jobs(deadline=deadline)
            jobs = [job for job in (parse_job(item) for item in raw) if job is not None]
        except QianfanError as exc:
            self._failed(str(exc), exc.reason)
            return False
        except NotSent:  # stopping: the listing never happened
            return None
        except Exception as exc:  # a bug must not stop the configured targets' reads
            err = bug_as_bad_answer(exc, log, "unexpected error in job discovery",
                                    account=self.account.name)
            self._failed(str(err), err.reason)
            return False
        self.jobs = frozenset(
            job.job_id
            for job in jobs
            if wanted(job, now, self.account.discovery) and self.owns(job.job_id)
        )
        self.teams = {
            job.job_id: team
            for job in jobs
            if (team := self.account.discovery.team_of(job.name)) is not None
            and self.owns(job.job_id)
        }
        self.last_listed = now
        self.error = ""
        log.debug("jobs discovered", extra={"account": self.account.name,
                                            "listed": len(jobs), "kept": len(self.jobs)})
        return True

    def forget(self, job_id: str) -> None:
        """A discovered job the API no longer knows: drop it now, not at the next
        listing (which adds it back should it reappear)."""
        self.jobs = self.jobs - {job_id}

    def _failed(self, error: str, reason: str) -> None:
        """Keep the previous job list; the account reads as down until a listing works."""
        self.error = error
        log.warning(
            "job discovery failed, keeping the previous job list",
            extra={"account": self.account.name, "reason": reason, "error": error},
        )
