"""The scheduler thread's logging: a firing skipped while a poll runs is not a warning
each time.

An account's polls going on while another hangs, in real time:
scale_out/test_accounts.py."""

from __future__ import annotations

import logging

from qf_exporter.polling.scheduler import AccountScheduler


def test_a_firing_skipped_while_the_poll_runs_is_not_logged_each_time() -> None:
    """A poll longer than the interval skips firings; APScheduler's warning for each
    skip is dropped (the poller logs the budget's numbers once instead), others stay."""
    AccountScheduler(lambda name: None)
    logger = logging.getLogger("apscheduler.scheduler")

    def record(message: str) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message,
                                 ("poll a",), None)

    skipped = record('Execution of job "%s" skipped: maximum number of running '
                     "instances reached (1)")
    missed = record('Run time of job "%s" was missed by 0:00:05')
    assert not logger.filter(skipped)
    assert logger.filter(missed)

