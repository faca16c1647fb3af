"""What every measurement shares: the world's shape, settings, formatting, child processes."""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# No qf_exporter import at module level: the exporter's child processes import this
# module, and their memory must hold what the exporter imports, nothing more.
if TYPE_CHECKING:
    from qf_exporter.config.file import Account
    from qf_exporter.simulator import QianfanSimulator, World

ROOT = Path(__file__).resolve().parent.parent
RUNS_PER_JOB = 10
ACTIVE_FRACTION = 0.05
TARGET_RUNS = 10_000  # the size the "at" targets are set for
ACCOUNT = "fleet"

# The groups, in the order they run and print: ``--only`` names, item numbers.
GROUPS = {"render": "1", "scrape": "2", "quota": "3", "steady": "4", "memory": "5",
          "exposition": "6", "exposition_memory": "7", "regex": "8", "freshness": "9"}


@dataclass(frozen=True)
class Settings:
    """How much of each measurement to do (``--quick`` makes it smaller)."""

    scrapes: int = 200
    scrapers: int = 4
    fast_reps: int = 5
    generic_reps: int = 3
    warmup_minutes: int = 60
    measure_minutes: int = 60
    fixed_minutes: int = 5
    duration: float = 120.0  # seconds of steady polling (the exposition's memory rows)


# --- reading this process ------------------------------------------------------------------


def proc_status(field_name: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` field in kB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def timed(fn: Callable[[], object], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


# --- formatting ---------------------------------------------------------------------------


def fmt_s(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "–"
    if x >= 10:
        return f"{x:.1f} s"
    if x >= 1:
        return f"{x:.2f} s"
    return f"{x:.3f} s"


def fmt_ms(x: float) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def fmt_int(n: float) -> str:
    return f"{round(n):,}"


def fmt_mb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB"


def size_label(runs: int) -> str:
    return f"{runs // RUNS_PER_JOB:,}×{RUNS_PER_JOB} ({runs:,} runs)"


# --- the simulated Qianfan and the exporter's account ---------------------------------------


def make_account(url: str, jobs: int, ak: str, sk: str, qps: float) -> Account:
    from qf_exporter.config.file import Account
    from qf_exporter.util.secrets import Secret

    return Account(
        name=ACCOUNT,
        access_key=Secret(ak),
        secret_key=Secret(sk),
        endpoint=url,
        qps=qps,
        jobs=tuple(f"job-fleet{j:05d}" for j in range(jobs)),
    )


def child_credentials() -> tuple[str, str]:
    """The access key pair a parent handed to its child process."""
    return os.environ["QFB_AK"], os.environ["QFB_SK"]


def start_simulator(world: World, ak: str, sk: str, **kw: Any) -> QianfanSimulator:
    from qf_exporter.simulator import QianfanSimulator

    return QianfanSimulator(world, {ak: sk}, **kw).start()


# --- child processes: ``python -m benchmarks <subcommand> ...`` -----------------------------


def spawn_child(command: str, *argv: str, ak: str = "", sk: str = "") -> subprocess.Popen[str]:
    """A child process started through the benchmark's own subcommand ``command``."""
    env = dict(os.environ, QFB_AK=ak, QFB_SK=sk)
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks", command, *argv], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )


def read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("a benchmark child process died (see its stderr above)")
    out: dict[str, Any] = json.loads(line)
    return out


def tell(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def finish(proc: subprocess.Popen[str]) -> None:
    try:
        if proc.stdin is not None and proc.poll() is None:
            tell(proc, "quit")
        proc.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def emit(result: dict[str, Any]) -> None:
    """A child's answer to its parent: one JSON line on stdout."""
    print(json.dumps(result), flush=True)
