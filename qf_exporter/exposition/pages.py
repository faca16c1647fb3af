"""The page a scrape serves, kept up to date from the poller's snapshots.

``CurrentPage`` subscribes to the poller: called with the snapshot before and after
each swap (under the poller's swap lock, so calls come one at a time and in order),
it brings the ``RunStore`` up to date with the runs that changed and renders the
health metrics, then holds the latest ``Page`` for the web server. The poller itself
neither renders nor holds bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from qf_exporter.exposition.render import render_health
from qf_exporter.exposition.store import Page, RunStore
from qf_exporter.polling.snapshot import Snapshot


class CurrentPage:
    """The run store and the latest page, replaced on each publish."""

    def __init__(self, store: RunStore | None = None) -> None:
        self.store = store or RunStore()
        self.page: Page = self.store.page(0, render_health(Snapshot(), ()))

    def publish(self, before: Snapshot, after: Snapshot, accounts: Iterable[str]) -> None:
        """Bring the run store from ``before`` to ``after``, and render.

        Only the runs that changed are rendered again (``store.py``); the health
        metrics, a few lines per configured account and target, are rendered whole.
        """
        for name in before.accounts.keys() | after.accounts.keys():
            old, new = before.accounts.get(name), after.accounts.get(name)
            old_runs = old.runs if old is not None else ()
            new_runs = new.runs if new is not None else ()
            if old_runs is not new_runs:
                self.store.replace(old_runs, new_runs)
        self.page = self.store.page(after.generation, render_health(after, accounts))
