"""The machine, the code measured, and ``results.md`` around the tables."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version

from benchmarks.common import ACTIVE_FRACTION, ROOT, RUNS_PER_JOB


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def commit() -> str:
    """HEAD, and a digest of the package's uncommitted changes if there are any."""
    out = _git("rev-parse", "--short", "HEAD") or "?"
    if _git("status", "--porcelain", "--", "qf_exporter"):
        digest = hashlib.sha256(_git("diff", "HEAD", "--", "qf_exporter").encode()).hexdigest()
        out += f" + uncommitted changes in qf_exporter/ (diff sha256 {digest[:12]})"
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine_line() -> str:
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        nproc = str(os.cpu_count())
    try:
        pc_version = version("prometheus_client")
    except PackageNotFoundError:
        pc_version = "?"
    return (f"{nproc} CPUs ({cpu_model()}), Python {platform.python_version()}, "
            f"prometheus_client {pc_version}, Linux {platform.release()}")


def section(title: str, table: str, notes: list[str], targets: bool = True) -> list[str]:
    out = ["", f"## {title}", "", table, ""]
    if notes:
        return [*out, "Notes:", *[f"- {n}" for n in notes]]
    return [*out, "All targets met." if targets else "(No targets: figures to read.)"]


def document(command: str, when: str, code: str, elapsed: float,
             sections: list[list[str]]) -> str:
    lines = [
        "# qf-exporter benchmark results",
        "",
        f"- command: `{command}`",
        f"- date: {when}; whole benchmark took {elapsed:.0f} s",
        f"- machine: {machine_line()}",
        f"- code: {code}",
        f"- world (items 1-5): `fleet_world(jobs, {RUNS_PER_JOB} runs/job, active_fraction="
        f"{ACTIVE_FRACTION})`, items 6-7 with 50 runs/job; simulator: the shipped "
        "QianfanSimulator, in the benchmark's process",
    ]
    for s in sections:
        lines += s
    return "\n".join([*lines, ""])
