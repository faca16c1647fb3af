"""Item 9: freshness, what a user waits for.

The time from a change in the simulated Qianfan (a running run fails) to that change
on ``/metrics``, p50 and p99 over many changes, with the real daemon
(``python -m qf_exporter``) polling every 5 s against a gateway that enforces the
account's quota; and where that time went: until the gateway's next read of the run's
job, then from that read to the page. Two budgets per size: one that holds the
interval, and one of half what a cycle needs, where every target must still be read
(none down, no failure) and the lag measured at the gateway (how much later than the
interval each job was read again) must match ``qianfan_poll_lag_seconds``.

The world: jobs of ``RUNS_PER_JOB`` runs (one list page each), ``RUNNING_PER_JOB``
of them running (a detail read each), the rest finished long ago. A cycle therefore
needs ``jobs × (1 + RUNNING_PER_JOB)`` requests. The simulator runs in this process,
the exporter in its own, as the gateway and the exporter do.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from benchmarks.common import ROOT, emit, finish, percentile, read_json, spawn_child, tell

if TYPE_CHECKING:
    from qf_exporter.simulator import QianfanSimulator, World

RUNS_PER_JOB = 100
RUNNING_PER_JOB = 3
INTERVAL = 5.0
ACCOUNT = "fresh"
CHANGES_PER_SECOND = 1.0
LAG = b'\nqianfan_poll_lag_seconds{account="fresh"} '
FAILURES = re.compile(rb"^qianfan_api_request_failures_total\{[^}]*\} (\S+)$", re.M)
TARGET_UP = re.compile(rb"^qianfan_target_up\{[^}]*\} (\S+)$", re.M)


@dataclass(frozen=True)
class FreshnessRow:
    runs: int
    qps: float
    cycle_requests: int
    changes: int
    seen: int
    p50: float
    p99: float
    exported_lag: tuple[float, float]  # median and max of qianfan_poll_lag_seconds
    measured_lag: tuple[float, float]  # median and max at the gateway
    jobs_read: tuple[int, int]  # jobs read in the measured window, of all jobs
    targets_up: tuple[int, int]
    failures: float
    throttled: int
    behind_logged: bool
    to_read: tuple[float, float]  # p50 and p99: from the change to its job's next read
    read_to_page: tuple[float, float]  # p50 and p99: from that read to /metrics


def world_of(runs: int, now: float) -> World:
    from qf_exporter.simulator import World

    world = World(time.time)
    for j in range(runs // RUNS_PER_JOB):
        job = f"job-fresh{j:04d}"
        world.add_job(job, created=now - 86400)
        for r in range(RUNS_PER_JOB):
            running = r < RUNNING_PER_JOB
            world.add_run(job, f"task-{j:04d}-{r:03d}", created=now - 7200 + r, wait=0,
                          duration=3600, outcome="running" if running else "succeeded")
    return world


def fail_run(world: World, rng: random.Random) -> str | None:
    """Make one running run fail now; its task id (None when none runs any more)."""
    now = time.time()
    with world.lock:
        running = [run for job in world.jobs.values() for run in job.runs
                   if run.outcome == "running"]
        if not running:
            return None
        run = rng.choice(running)
        run.outcome, run.end_fraction = "failed", 1.0
        run.duration = max(0.001, now - run.started)
        return run.task_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(directory: Path, url: str, jobs: int, qps: float) -> Path:
    path = directory / "config.yaml"
    names = ", ".join(f"job-fresh{j:04d}" for j in range(jobs))
    path.write_text(
        f"accounts:\n  - name: {ACCOUNT}\n    endpoint: {url}\n    qps: {qps:g}\n"
        f"    jobs: [{names}]\npoll:\n  interval: {INTERVAL:g}s\n  concurrency: 8\n",
        encoding="utf-8",
    )
    path.chmod(0o600)
    return path


class Watcher:
    """Scrapes ``/metrics`` back to back and notes when each change first shows.

    It runs in a child process of its own (``watch``): in this one, decompressing and
    searching a page of 10,000 runs would hold the GIL while the simulator stamps
    arrivals, and the gateway would refuse requests that were on time.
    """

    def __init__(self, port: int) -> None:
        self.proc = spawn_child("freshness-watch-child", str(port))
        self.delays: list[float] = []
        self.lags: list[float] = []

    def changed(self, task_id: str, job_index: str, at: float) -> None:
        series = (f'qianfan_finetune_run_status{{account="{ACCOUNT}",api="v2",'
                  f'job_id="job-fresh{job_index}",task_id="{task_id}",status="failed"}} 1')
        tell(self.proc, f"{at!r} {series}")

    def stop(self, settle: float) -> None:
        """Wait up to ``settle`` seconds for the changes not seen yet, then stop."""
        tell(self.proc, f"settle {settle!r}")
        answer = read_json(self.proc)
        finish(self.proc)
        self.delays, self.lags = answer["delays"], answer["lags"]
        self.seen = answer["seen"]


def watch(port: int) -> None:
    """The ``freshness-watch-child``: changes come in on stdin (``<at> <series>``),
    ``settle <seconds>`` ends them; then one JSON line with the delays and lags."""
    pending: dict[bytes, float] = {}
    delays: list[float] = []
    lags: list[float] = []
    seen: list[tuple[str, float, float, float]] = []
    lock, settle = threading.Lock(), threading.Event()
    until = [float("inf")]

    def read_changes() -> None:
        for line in sys.stdin:
            head, _, rest = line.rstrip("\n").partition(" ")
            with lock:
                if head == "settle":
                    until[0] = time.monotonic() + float(rest)
                    settle.set()
                    return
                pending[rest.encode()] = float(head)

    threading.Thread(target=read_changes, daemon=True).start()
    url = f"http://127.0.0.1:{port}/metrics"
    with requests.Session() as session:
        while not (settle.is_set() and (not pending or time.monotonic() > until[0])):
            answer = session.get(url, timeout=30, stream=True)
            begun = time.time()  # the exporter picked its page before this
            page = answer.content
            got = time.time()
            at = page.find(LAG)
            if at >= 0:
                start = at + len(LAG)
                lags.append(float(page[start:page.index(b"\n", start)]))
            with lock:
                for series, changed in list(pending.items()):
                    if series in page:
                        delays.append(got - changed)
                        seen.append((series.decode(), changed, begun, got))
                        del pending[series]
    emit({"delays": delays, "lags": lags, "seen": seen})
    sys.stdin.readline()  # "quit"


def wait_parts(sim: QianfanSimulator, seen: list[tuple[str, float, float, float]]
               ) -> tuple[list[float], list[float]]:
    """Where each change's wait went: from the change to the gateway's next read of its
    job's list, and from that read to the first answer of ``/metrics`` that showed it
    (the exporter had picked its page when the answer began)."""
    offset = time.time() - time.monotonic()  # the gateway stamps arrivals on monotonic
    reads: dict[str, list[float]] = {}
    for entry in sim.logged():
        if entry.action == "DescribeFineTuningTasks":
            reads.setdefault(entry.target, []).append(entry.arrived + offset)
    to_read, to_page = [], []
    for series, changed, begun, _ in seen:
        job = series.partition('job_id="')[2].partition('"')[0]
        # A read that arrived just before the change may still answer with it.
        after = [t for t in reads.get(job, []) if t <= begun]
        if after:
            read = min((t for t in after if t >= changed), default=max(after))
            to_read.append(max(0.0, read - changed))
            to_page.append(begun - read)
    return sorted(to_read), sorted(to_page)


def measured_lag(sim: QianfanSimulator, since: float) -> tuple[list[float], int]:
    """Per job, how much later than the interval it was read again (every read after
    ``since``, monotonic), and how many jobs were read at all after ``since``."""
    reads: dict[str, list[float]] = {}
    for entry in sim.logged():
        if entry.action == "DescribeFineTuningTasks" and entry.arrived >= since:
            reads.setdefault(entry.target, []).append(entry.arrived)
    lags = []
    for stamps in reads.values():
        stamps.sort()
        lags += [max(0.0, b - a - INTERVAL) for a, b in itertools.pairwise(stamps)]
    return lags, len(reads)


def start_daemon(config: Path, port: int, log: Path, ak: str, sk: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    env.update(QIANFAN_ACCESS_KEY=ak, QIANFAN_SECRET_KEY=sk,
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "qf_exporter", f"--config.file={config}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=info"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=err)


def wait_ready(port: int, proc: subprocess.Popen[bytes], limit: float = 600) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("the exporter exited before it was ready")
        try:
            if requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=5).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError("the exporter was not ready in time")


@dataclass
class Observed:
    """What one row saw: the changes made, the watcher's delays and exported lags, the
    gateway's lags, the jobs it read, the last page and the exporter's log."""

    changes: int = 0
    delays: list[float] = field(default_factory=list)
    exported: list[float] = field(default_factory=list)
    gateway: list[float] = field(default_factory=list)
    jobs_read: int = 0
    page: bytes = b""
    log: bytes = b""
    parts: tuple[list[float], list[float]] = ([], [])


def measure(runs: int, share: float, duration: float, ak: str, sk: str) -> FreshnessRow:
    """One row: ``runs`` runs, a budget of ``share`` times what a cycle needs per
    interval, changes for ``duration`` seconds."""
    from qf_exporter.simulator import QianfanSimulator

    jobs = runs // RUNS_PER_JOB
    cycle = jobs * (1 + RUNNING_PER_JOB)
    qps = max(1.0, round(cycle / INTERVAL * share))
    world = world_of(runs, time.time())
    rng = random.Random(runs * 1000 + int(share * 100))
    with QianfanSimulator(world, {ak: sk}, qps=qps) as sim, \
            tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), sim.url, jobs, qps)
        seen = observe(sim, world, rng, config, duration, settle=4 * INTERVAL / min(1.0, share),
                       ak=ak, sk=sk)
        throttled = sim.stats.throttled
    delays, exported = sorted(seen.delays), sorted(seen.exported) or [0.0]
    lags = sorted(seen.gateway) or [0.0]
    ups = [float(v) for v in TARGET_UP.findall(seen.page)]
    return FreshnessRow(
        runs=runs, qps=qps, cycle_requests=cycle, changes=seen.changes, seen=len(delays),
        p50=percentile(delays, 50) if delays else float("nan"),
        p99=percentile(delays, 99) if delays else float("nan"),
        exported_lag=(percentile(exported, 50), exported[-1]),
        measured_lag=(percentile(lags, 50), lags[-1]),
        jobs_read=(seen.jobs_read, jobs), targets_up=(int(sum(ups)), len(ups)),
        failures=sum(float(v) for v in FAILURES.findall(seen.page)),
        throttled=throttled, behind_logged=b"cannot hold poll.interval" in seen.log,
        to_read=_p50_p99(seen.parts[0]), read_to_page=_p50_p99(seen.parts[1]),
    )


def _p50_p99(values: list[float]) -> tuple[float, float]:
    return percentile(values, 50), percentile(values, 99)


def observe(sim: QianfanSimulator, world: World, rng: random.Random, config: Path,
            duration: float, *, settle: float, ak: str, sk: str) -> Observed:
    """Run the daemon on ``config``, make the changes and watch them show."""
    port, log = free_port(), config.parent / "exporter.log"
    proc = start_daemon(config, port, log, ak, sk)
    seen = Observed()
    try:
        wait_ready(port, proc)
        time.sleep(INTERVAL)  # past the first poll, into the schedule
        since = time.monotonic()
        watcher = Watcher(port)
        seen.changes = _change(world, rng, watcher, duration)
        watcher.stop(settle=settle)
        seen.delays, seen.exported = watcher.delays, watcher.lags
        seen.gateway, seen.jobs_read = measured_lag(sim, since)
        seen.parts = wait_parts(sim, watcher.seen)
        seen.page = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=60).content
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    seen.log = log.read_bytes()
    return seen


def _change(world: World, rng: random.Random, watcher: Watcher, duration: float) -> int:
    """Fail a running run about every second for ``duration`` seconds; how many."""
    end, changes = time.monotonic() + duration, 0
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.5, 1.5) / CHANGES_PER_SECOND)
        task_id = fail_run(world, rng)
        if task_id is None:
            break
        watcher.changed(task_id, task_id.split("-")[1], time.time())
        changes += 1
    return changes


def markdown(rows: list[FreshnessRow]) -> str:
    head = ("| runs | qps (a cycle needs) | changes seen | change → /metrics p50 / p99 | "
            "goal p99 | of which: to the next read; read → page, p50 / p99 | "
            "lag: exported median / max | lag: at the gateway median / max | "
            "jobs read | targets up | failures | refused |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    lines = [head]
    for r in rows:
        needs = r.cycle_requests / INTERVAL
        lines.append(
            f"| {r.runs:,} | {r.qps:g} ({needs:g}/s) | {r.seen}/{r.changes} | "
            f"{r.p50:.2f} s / {r.p99:.2f} s | ≤ {INTERVAL + 1:g} s"
            f"{' (holds)' if r.qps >= needs else ' (n/a: budget short)'} | "
            f"{r.to_read[0]:.2f} / {r.to_read[1]:.2f} s; "
            f"{r.read_to_page[0]:.2f} / {r.read_to_page[1]:.2f} s | "
            f"{r.exported_lag[0]:.1f} / {r.exported_lag[1]:.1f} s | "
            f"{r.measured_lag[0]:.1f} / {r.measured_lag[1]:.1f} s | "
            f"{r.jobs_read[0]}/{r.jobs_read[1]} | {r.targets_up[0]}/{r.targets_up[1]} | "
            f"{r.failures:g} | {r.throttled} |")
    return "\n".join(lines)


def notes(rows: list[FreshnessRow]) -> list[str]:
    out = []
    for r in rows:
        short = r.qps < r.cycle_requests / INTERVAL
        if short != r.behind_logged:
            out.append(f"freshness, {r.runs:,} runs at qps {r.qps:g}: the log line "
                       f"'cannot hold poll.interval' was {'missing' if short else 'logged'}")
        if r.throttled:
            out.append(f"freshness, {r.runs:,} runs at qps {r.qps:g}: the gateway refused "
                       f"{r.throttled} requests (retried, so every read succeeded; counted "
                       f"as rate_limited): their arrivals jittered past the limiter's margin")
        if r.seen < r.changes:
            out.append(f"freshness, {r.runs:,} runs at qps {r.qps:g}: "
                       f"{r.changes - r.seen} changes never showed")
    return out
