"""The landing page at `/`: per account, reachability, targets and runs per status.

Built on the event loop at the first request for each snapshot (``Landing``), then
served as it is from the server's light slots, beside health and readiness (see
``routes``), so it is capped in size: with 10,000 targets down an uncapped page was
4.2 MB and 85 ms of the event loop per request. It lists the first ``MAX_DOWN_ROWS``
targets that are down (and ``MAX_ACCOUNT_ROWS`` accounts) and counts the rest;
``qianfan_target_up`` has them all.
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime

from qf_exporter.polling.snapshot import AccountState, Snapshot, TargetState
from qf_exporter.qianfan.models import STATUSES


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    return f"{_stamp(ts)} ({max(0, int(now - ts))}s before)"


MESSAGE_LIMIT = 300  # characters of one error message on the page
MAX_DOWN_ROWS = 100  # targets down listed; the rest are counted
MAX_ACCOUNT_ROWS = 500  # accounts listed; the rest are counted


class Landing:
    """The landing page's bytes, built at the first request for each snapshot."""

    def __init__(self, *, telemetry_path: str, version: str) -> None:
        self.telemetry_path = telemetry_path
        self.version = version
        self._built: tuple[Snapshot, bytes] | None = None

    def page(self, snapshot: Snapshot) -> bytes:
        built = self._built
        if built is None or built[0] is not snapshot:
            text = landing_page(snapshot, telemetry_path=self.telemetry_path,
                                version=self.version)
            built = self._built = (snapshot, text.encode())
        return built[1]


def _cut(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def landing_page(snapshot: Snapshot, *, telemetry_path: str, version: str) -> str:
    """The HTML of `/`: per account, whether Qianfan is reachable with its credentials,
    its runs per status, and the first ``MAX_DOWN_ROWS`` targets that are down with
    their reasons (and how many more there are)."""
    e = html.escape
    now = time.time()
    accounts = sorted(snapshot.accounts.items())
    rows, behind = _accounts(accounts, now)
    down_table = _targets_down(accounts, now)
    heads = "".join(f"<th>{s}</th>" for s in STATUSES)
    path = e(telemetry_path)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qf-exporter</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: .3em .6em; }}
td.up {{ color: #1a7f37; }} td.down {{ color: #cf222e; font-weight: bold; }}
p.behind {{ color: #9a6700; }}
</style></head>
<body>
<h1>qf-exporter</h1>
<p>Prometheus exporter for Baidu Qianfan fine-tuning runs, version {e(version)}.
As of {_stamp(now)}.</p>
<ul>
<li><a href="{path}">Metrics</a></li>
<li><a href="/-/healthy">Health</a></li>
<li><a href="/-/ready">Readiness</a></li>
</ul>
<h2>Accounts</h2>
<p>Qianfan: whether the latest poll reached Qianfan with the account's credentials.</p>
<table>
<tr><th>account</th><th>Qianfan</th><th>targets up</th>{heads}
<th>last good poll</th></tr>
{"".join(rows)}
</table>
{"".join(behind)}
<h2>Targets down</h2>
{down_table}
</body></html>
"""


def _accounts(accounts: list[tuple[str, AccountState]], now: float) -> tuple[list[str], list[str]]:
    """The accounts' rows (the first ``MAX_ACCOUNT_ROWS``, the rest counted) and a line for
    each shown account whose budget cannot hold the interval."""
    shown = accounts[:MAX_ACCOUNT_ROWS]
    rows = [_account_row(name, state, now) for name, state in shown]
    behind = [_budget_line(name, state) for name, state in shown]
    if not rows:
        rows.append(f"<tr><td colspan={len(STATUSES) + 4}>waiting for the first poll…</td></tr>")
    if len(accounts) > MAX_ACCOUNT_ROWS:
        rows.append(f"<tr><td colspan={len(STATUSES) + 4}>and "
                    f"{len(accounts) - MAX_ACCOUNT_ROWS} more accounts</td></tr>")
    return rows, behind


def _targets_down(accounts: list[tuple[str, AccountState]], now: float) -> str:
    """The first ``MAX_DOWN_ROWS`` targets that are down, and how many there are."""
    rows: list[str] = []
    down = 0
    for name, state in accounts:
        targets = state.targets_down
        down += len(targets)
        rows.extend(_down_rows(name, targets[: MAX_DOWN_ROWS - len(rows)], now))
    return _down_table(rows, down)


def _account_row(name: str, state: AccountState, now: float) -> str:
    e = html.escape
    counts = state.status_counts()
    down = state.targets_down
    if state.up:
        reach = "<td class=up>reachable</td>"
    else:
        reach = f"<td class=down>DOWN: {e(_cut(state.error or 'not reached'))}</td>"
    return (
        "<tr>"
        f"<td>{e(name)}</td>"
        f"{reach}"
        f"<td>{len(state.targets) - len(down)}/{len(state.targets)}</td>"
        + "".join(f"<td>{counts[s]}</td>" for s in STATUSES)
        + f"<td>{e(_when(state.last_success, now))}</td>"
        "</tr>"
    )


def _budget_line(name: str, state: AccountState) -> str:
    """One line when the account's request budget cannot hold ``poll.interval``: the
    numbers get older, none is wrong, so it is a warning, not a failure's red."""
    budget = state.budget
    if budget is None or budget.needs is None or budget.holds is None:
        return ""
    return (
        f"<p class=behind>{html.escape(name)}: the request budget ({budget.qps:g} "
        f"requests/s) cannot hold poll.interval: a cycle needs {budget.needs} requests, "
        f"about {budget.holds:.0f}s; targets are read up to {budget.lag:.0f}s late.</p>\n"
    )


def _down_rows(name: str, targets: list[TargetState], now: float) -> list[str]:
    e = html.escape
    return [
        "<tr>"
        f"<td>{e(name)}</td><td>{e(target.api)}</td><td>{e(target.name)}</td>"
        f"<td class=down>{e(target.reason or 'not read yet')}</td>"
        f"<td>{e(_cut(target.error))}</td>"
        f"<td>{e(_when(target.last_success, now))}</td>"
        "</tr>"
        for target in targets
    ]


def _down_table(down_rows: list[str], down: int) -> str:
    if not down_rows:
        return "<p>Every target was read by its latest poll.</p>"
    more = ""
    if down > len(down_rows):
        more = (f"<p>and {down - len(down_rows)} more targets down (all {down} are in "
                "<code>qianfan_target_up</code>).</p>\n")
    return (
        "<table>\n<tr><th>account</th><th>api</th><th>target</th><th>reason</th>"
        "<th>message</th><th>last read</th></tr>\n" + "\n".join(down_rows) + "\n</table>\n"
        + more
    )
