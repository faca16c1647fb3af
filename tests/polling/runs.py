"""Runs for the polling tests: one made up in a line, read at a fixed ``NOW``."""

from __future__ import annotations

from qf_exporter.qianfan.models import Run

NOW = 1_000_000.0


def run(task: str, status: str = "running", start: float | None = None,
        finish: float | None = None, read: float = NOW) -> Run:
    return Run(account="a", api="v2", job_id="j", task_id=task, status=status,
               upstream_status=status, start_time=start, finish_time=finish, last_read=read)
