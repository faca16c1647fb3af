"""The landing page from a snapshot: every target down listed, its message bounded and
escaped, and each account's reachability.

What the page says about an account's health and budget: polling/test_reachability.py."""

from __future__ import annotations

from types import MappingProxyType

from qf_exporter.polling.snapshot import AccountState, Snapshot, TargetState
from qf_exporter.web.landing import MESSAGE_LIMIT, landing_page
from tests.helpers import account_cell, down_rows


def test_landing_page_lists_every_target_down_with_bounded_messages() -> None:
    long = "x" * 5000
    targets = {("v2", f"job-{k:02d}"): TargetState(api="v2", name=f"job-{k:02d}", up=False,
                                                   error=f"<no such job {k}> " + long,
                                                   reason="client")
               for k in range(40)}
    targets[("v1", "1/2")] = TargetState(api="v1", name="1/2", up=True, last_success=1.0)
    state = AccountState(name="team", targets=MappingProxyType(targets), up=True, polled=True,
                         last_success=2.0)
    page = landing_page(Snapshot(MappingProxyType({"team": state})),
                        telemetry_path="/metrics", version="1.2.3")
    rows = down_rows(page)
    assert [r[2] for r in rows] == [f"job-{k:02d}" for k in range(40)]
    assert all(r[3] == "client" for r in rows)
    assert all(r[4].startswith(f"<no such job {k}> ") and len(r[4]) == MESSAGE_LIMIT
               for k, r in enumerate(rows))
    assert "<no such job" not in page  # escaped
    assert account_cell(page, "team") == "reachable"

