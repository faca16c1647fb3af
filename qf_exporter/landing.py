"""The landing page at `/`: per account, reachability, targets and runs per status."""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime

from qf_exporter.models import STATUSES
from qf_exporter.snapshot import Snapshot


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    age = max(0, int(time.time() - ts))
    stamp = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({age}s ago)"


def landing_page(snapshot: Snapshot, *, telemetry_path: str, version: str) -> str:
    """The HTML of `/`: per account, whether Qianfan is reachable, and what is down."""
    e = html.escape
    rows = []
    for name, state in sorted(snapshot.accounts.items()):
        counts = state.status_counts()
        targets_up = sum(1 for t in state.targets.values() if t.up)
        problems = sorted({t.error for t in state.targets.values() if t.error})
        if state.discovery_error:
            problems.insert(0, "discovery: " + state.discovery_error)
        rows.append(
            "<tr>"
            f"<td>{e(name)}</td>"
            f"<td class={'up' if state.up else 'down'}>{'reachable' if state.up else 'DOWN'}</td>"
            f"<td>{targets_up}/{len(state.targets)}</td>"
            + "".join(f"<td>{counts[s]}</td>" for s in STATUSES)
            + f"<td>{e(_when(state.last_success))}</td>"
            f"<td>{'<br>'.join(e(p[:300]) for p in problems[:5])}</td>"
            "</tr>"
        )
    if not rows:
        rows.append(f"<tr><td colspan={len(STATUSES) + 5}>waiting for the first poll…</td></tr>")
    heads = "".join(f"<th>{s}</th>" for s in STATUSES)
    path = e(telemetry_path)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qf-exporter</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: .3em .6em; }}
td.up {{ color: #1a7f37; }} td.down {{ color: #cf222e; font-weight: bold; }}
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
<table>
<tr><th>account</th><th>Qianfan</th><th>targets up</th>{heads}
<th>last good poll</th><th>problems</th></tr>
{"".join(rows)}
</table>
</body></html>
"""
