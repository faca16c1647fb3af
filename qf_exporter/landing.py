"""The landing page at `/`: per account, reachability, targets and runs per status."""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime

from qf_exporter.models import STATUSES
from qf_exporter.snapshot import AccountState, Snapshot


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    age = max(0, int(time.time() - ts))
    stamp = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({age}s ago)"


MESSAGE_LIMIT = 300  # characters of one error message on the page


def _cut(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def landing_page(snapshot: Snapshot, *, telemetry_path: str, version: str) -> str:
    """The HTML of `/`: per account, whether Qianfan is reachable with its credentials,
    its runs per status, and every target that is down with its reason."""
    e = html.escape
    rows = []
    down_rows = []
    behind = []
    for name, state in sorted(snapshot.accounts.items()):
        rows.append(_account_row(name, state))
        down_rows.extend(_down_rows(name, state))
        behind.append(_budget_line(name, state))
    if not rows:
        rows.append(f"<tr><td colspan={len(STATUSES) + 4}>waiting for the first poll…</td></tr>")
    down_table = _down_table(down_rows)
    heads = "".join(f"<th>{s}</th>" for s in STATUSES)
    path = e(telemetry_path)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qf-exporter</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: .3em .6em; }}
td.up {{ color: #1a7f37; }} td.down, p.down {{ color: #cf222e; font-weight: bold; }}
</style></head>
<body>
<h1>qf-exporter</h1>
<p>Prometheus exporter for Baidu Qianfan fine-tuning runs, version {e(version)}.</p>
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


def _account_row(name: str, state: AccountState) -> str:
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
        + f"<td>{e(_when(state.last_success))}</td>"
        "</tr>"
    )


def _budget_line(name: str, state: AccountState) -> str:
    """One line when the account's request budget cannot hold ``poll.interval``."""
    budget = state.budget
    if budget is None or budget.needs is None or budget.holds is None:
        return ""
    return (
        f"<p class=down>{html.escape(name)}: the request budget ({budget.qps:g} requests/s) "
        f"cannot hold poll.interval: a cycle needs {budget.needs} requests, about "
        f"{budget.holds:.0f}s; targets are read up to {budget.lag:.0f}s late.</p>\n"
    )


def _down_rows(name: str, state: AccountState) -> list[str]:
    e = html.escape
    return [
        "<tr>"
        f"<td>{e(name)}</td><td>{e(target.api)}</td><td>{e(target.name)}</td>"
        f"<td class=down>{e(target.reason or 'not read yet')}</td>"
        f"<td>{e(_cut(target.error))}</td>"
        f"<td>{e(_when(target.last_success))}</td>"
        "</tr>"
        for target in state.targets_down
    ]


def _down_table(down_rows: list[str]) -> str:
    if not down_rows:
        return "<p>Every target was read by its latest poll.</p>"
    return (
        "<table>\n<tr><th>account</th><th>api</th><th>target</th><th>reason</th>"
        "<th>message</th><th>last read</th></tr>\n" + "\n".join(down_rows) + "\n</table>"
    )
