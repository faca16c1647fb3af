#!/usr/bin/env python3
"""qf-exporter benchmark: one command, every number side by side.

    python benchmarks/bench.py [--sizes 100,1000,10000] [--quick]

Against the simulated Qianfan (``fleet_world``: N jobs x 10 runs, 5 % of the jobs
with a run still training), for every size it measures

1. rendering time per snapshot: our fast renderer (``render_runs`` / ``render``)
   vs prometheus_client's generic collector path (``generate_latest`` on a
   registry holding ``GenericRunCollector``), same runs, median of a few
   repetitions, after checking that both parse to identical samples;
2. ``/metrics`` latency p50/p99 with 4 concurrent keep-alive scrapers, plain and
   gzip, against a real ``Exporter`` serving on 127.0.0.1:0 after one full poll;
3. one full poll's wall time against the quota floor (requests / qps, the requests
   being every job's list pages plus one DescribeFineTuningTask detail per running
   run, where V2 progress comes from) with 50 ms of simulated API latency and the
   simulator enforcing the budget, and how many answers were throttled;
4. API requests per hour in steady state, adaptive polling vs a fixed interval,
   on a virtual clock (no waiting an hour), detail reads counted on both sides;
5. resident memory and CPU time of one poll + render, in a fresh process.

Items 1, 2 and 5 run in a fresh child process that holds only the exporter (the
simulator stays in this process), so neither the simulator's objects nor earlier
sizes pollute them. Each scraper of item 2 is a process of its own that reads
answers into a reused buffer, as Prometheus does; item 2 also times a bare
``http.server`` sending the exporter's bytes, the floor this machine sets.

It prints one Markdown table and writes it, with the machine and the date, to
benchmarks/results.md (``--output`` to change).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import http.client
import json
import logging
import math
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNS_PER_JOB = 10
ACTIVE_FRACTION = 0.05
TARGET_RUNS = 10_000  # the size the targets of items 1, 2 and 5 are set for
ACCOUNT = "fleet"

# Targets (SPEC section 5 and the benchmark brief).
T_SPEEDUP = 15.0
T_RENDER_S = 0.25
T_P99_MS = 25.0
T_POLL_RATIO = 1.05
T_REDUCTION = 10.0
T_RSS_MB = 100.0

# Item 3: the budget must be the bottleneck: 4 workers x 50 ms = 80 req/s > 20 qps.
POLL_QPS = 20
POLL_LATENCY = 0.05
POLL_CONCURRENCY = 4

log = logging.getLogger("bench")


# --- small helpers ------------------------------------------------------------------------


def proc_status(field_name: str) -> int:
    """A ``/proc/self/status`` field in kB (VmRSS, VmHWM)."""
    with open("/proc/self/status", encoding="ascii") as f:
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


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        nproc = str(os.cpu_count())
    import prometheus_client

    try:
        from importlib.metadata import version

        pc_version = version("prometheus_client")
    except Exception:
        pc_version = getattr(prometheus_client, "__version__", "?")

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    dirty = git("status", "--porcelain", "--", "qf_exporter")
    commit = git("rev-parse", "--short", "HEAD") or "?"
    if dirty:  # the package is edited concurrently: name the exact state measured
        import hashlib

        digest = hashlib.sha256(git("diff", "HEAD", "--", "qf_exporter").encode()).hexdigest()
        commit += f" + uncommitted changes in qf_exporter/ (diff sha256 {digest[:12]})"
    return {
        "nproc": nproc,
        "cpu": model,
        "python": platform.python_version(),
        "prometheus_client": pc_version,
        "kernel": platform.release(),
        "commit": commit,
    }


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


class VirtualClock:
    """Wall time that moves only when the benchmark says so."""

    def __init__(self, start: float) -> None:
        self.now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def make_account(url: str, jobs: int, ak: str, sk: str, qps: float):
    from qf_exporter.config import Account, Secret

    return Account(
        name=ACCOUNT,
        access_key=Secret(ak),
        secret_key=Secret(sk),
        endpoint=url,
        qps=qps,
        jobs=tuple(f"job-fleet{j:05d}" for j in range(jobs)),
    )


def start_simulator(world, ak: str, sk: str, **kw: Any):
    from qf_exporter.simulator import QianfanSimulator

    return QianfanSimulator(world, {ak: sk}, **kw).start()


# --- item 1, 2 (server side) and 5: the child process ---------------------------------------


def samples_of(text: str) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append((s.name, tuple(sorted(s.labels.items())), float(s.value)))
    out.sort()
    return out


def compare_renders(fast: bytes, generic: bytes) -> dict[str, Any]:
    a, b = samples_of(fast.decode("utf-8")), samples_of(generic.decode("utf-8"))
    if a == b:
        return {"identical": True, "samples": len(a)}
    ca, cb = Counter(a), Counter(b)
    only_fast = list((ca - cb).elements())[:3]
    only_generic = list((cb - ca).elements())[:3]
    return {
        "identical": False,
        "samples": len(a),
        "generic_samples": len(b),
        "only_fast": [repr(x) for x in only_fast],
        "only_generic": [repr(x) for x in only_generic],
    }


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def render_child(url: str, jobs: int, fast_reps: int, generic_reps: int) -> None:
    """Item 1 in a fresh process: poll once, check both renderers agree, time them."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ak, sk = os.environ["QFB_AK"], os.environ["QFB_SK"]
    from prometheus_client import CollectorRegistry, generate_latest

    from qf_exporter.app import Exporter
    from qf_exporter.config import Config, Poll
    from qf_exporter.render import render_runs
    from qf_exporter.store import render
    from tests.generic_collector import GenericRunCollector

    exporter = Exporter(Config(accounts=(make_account(url, jobs, ak, sk, qps=100_000),),
                               poll=Poll(concurrency=4)))
    state = exporter.poller.poll_account(ACCOUNT, force=True)
    runs = list(exporter.poller.snapshot.runs())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GenericRunCollector(lambda: runs))
    # First the check, then the clock: both must parse to the same samples.
    check = compare_renders(render_runs(runs), generate_latest(registry))
    gc.collect()
    result = {
        "runs": len(runs),
        "targets_up": sum(1 for t in state.targets.values() if t.up),
        "targets": len(state.targets),
        "check": check,
        "fast_text_s": timed(lambda: render_runs(runs), fast_reps),
        "fast_full_s": timed(lambda: render(runs, 1), fast_reps),
        "generic_s": timed(lambda: generate_latest(registry), generic_reps),
        "plain_bytes": len(exporter.pages.rendered.text),
        "gzip_bytes": len(b"".join(exporter.pages.rendered.gzipped())),
    }
    print(json.dumps(result), flush=True)
    exporter.stop()


def serve_child(url: str, jobs: int, qps: float) -> None:
    """Items 3 (client side), 5 and 2 (server side) in a fresh exporter process.

    One full poll under the account's budget (which renders the snapshot once),
    then RSS and CPU, then serve ``/metrics`` for the parent's scrapers.
    """
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ak, sk = os.environ["QFB_AK"], os.environ["QFB_SK"]
    rss_start = proc_status("VmRSS")
    from qf_exporter.app import Exporter
    from qf_exporter.config import Config, Poll

    account = make_account(url, jobs, ak, sk, qps=qps)
    exporter = Exporter(Config(accounts=(account,), poll=Poll(concurrency=POLL_CONCURRENCY)))
    rss_imported = proc_status("VmRSS")
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    state = exporter.poller.poll_account(ACCOUNT, force=True)
    cpu_poll = cpu_seconds() - cpu0
    wall_poll = time.perf_counter() - wall0
    rss_after = proc_status("VmRSS")
    hwm_after = proc_status("VmHWM")
    try:  # reset VmHWM, so that the peak read after the scrapes is theirs alone
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    server = exporter.serve("127.0.0.1", 0, "/metrics", None)
    result = {
        "port": server.port,
        "runs": len(state.runs),
        "up": state.up,
        "targets_up": sum(1 for t in state.targets.values() if t.up),
        "targets": len(state.targets),
        "rss_start_kb": rss_start,
        "rss_imported_kb": rss_imported,
        "rss_after_poll_kb": rss_after,
        "hwm_after_poll_kb": hwm_after,
        "cpu_poll_s": cpu_poll,
        "wall_poll_s": wall_poll,
        "hwm_reset": hwm_reset,
    }
    print(json.dumps(result), flush=True)
    cpu_serve0 = cpu_seconds()
    for line in sys.stdin:
        if line.strip() == "stats":
            print(json.dumps({"rss_kb": proc_status("VmRSS"), "hwm_kb": proc_status("VmHWM"),
                              "cpu_serving_s": cpu_seconds() - cpu_serve0}), flush=True)
        elif line.strip() == "quit":
            break
    exporter.stop()


def spawn_child(mode: str, *argv: str, ak: str, sk: str) -> subprocess.Popen[str]:
    env = dict(os.environ, QFB_AK=ak, QFB_SK=sk)
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--_child", mode, *argv],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )


def read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("a benchmark child process died (see its stderr above)")
    return json.loads(line)


def finish(proc: subprocess.Popen[str]) -> None:
    try:
        if proc.stdin is not None and proc.poll() is None:
            proc.stdin.write("quit\n")
            proc.stdin.flush()
        proc.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@dataclass
class ScrapeResult:
    latencies: list[float]
    body_bytes: int
    wall: float
    errors: list[str] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000


class BodyReader:
    """Reads answers into one reused buffer, as Prometheus does (it pools its scrape
    buffers): a fresh 28 MB ``bytes`` per scrape would time this process's allocator."""

    def __init__(self) -> None:
        self.buf = bytearray(1 << 20)

    def read(self, resp: http.client.HTTPResponse) -> memoryview:
        n = int(resp.getheader("Content-Length") or 0)
        if len(self.buf) < n:
            self.buf = bytearray(n)
        view = memoryview(self.buf)[:n]
        got = 0
        while got < n:
            k = resp.readinto(view[got:])
            if not k:
                raise EOFError(f"answer ended after {got} of {n} bytes")
            got += k
        return view


def scrape_child(port: int, encoding: str, count: int) -> None:
    """One scraper: one keep-alive connection, one untimed scrape, then ``count`` timed
    ones after the parent says go. A process of its own, as real scrapers are: scraper
    threads sharing one interpreter would time each other's GIL waits."""
    import gzip

    headers = {"Accept-Encoding": encoding, "Connection": "keep-alive"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    reader = BodyReader()
    errors: list[str] = []
    latencies: list[float] = []
    size = 0

    def get() -> tuple[http.client.HTTPResponse, memoryview]:
        conn.request("GET", "/metrics", headers=headers)
        r = conn.getresponse()
        body = reader.read(r)
        if r.status != 200:
            errors.append(f"status {r.status}")
        return r, body

    ready = False
    try:
        r, body = get()
        if encoding == "gzip":
            if r.getheader("Content-Encoding") != "gzip":
                errors.append("gzip asked for, not given")
            else:
                gzip.decompress(body)  # a valid stream (of several members)
        print(json.dumps({"ready": True}), flush=True)
        ready = True
        sys.stdin.readline()  # go
        for _ in range(count):
            t0 = time.perf_counter()
            r, body = get()
            latencies.append(time.perf_counter() - t0)
        size = len(body)
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        if not ready:  # the parent still waits for this line
            print(json.dumps({"ready": False}), flush=True)
    finally:
        conn.close()
    print(json.dumps({"latencies": latencies, "size": size, "errors": errors}), flush=True)


def scrape(port: int, encoding: str, scrapers: int, count: int) -> ScrapeResult:
    """``scrapers`` scraper processes, each one keep-alive connection, ``count`` scrapes
    each, all started together."""
    procs = [spawn_child("scrape", str(port), encoding, str(count), ak="", sk="")
             for _ in range(scrapers)]
    try:
        errors: list[str] = []
        for proc in procs:
            if not read_json(proc).get("ready"):
                errors.append("a scraper could not connect")
        t0 = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [read_json(proc) for proc in procs]
        wall = time.perf_counter() - t0
    finally:
        for proc in procs:
            finish(proc)
    flat = sorted(x for r in results for x in r["latencies"])
    errors += [e for r in results for e in r["errors"]]
    return ScrapeResult(flat, max(r["size"] for r in results), wall, errors)


def bare_child(exporter_port: int) -> None:
    """The floor of item 2: Python's own HTTP server answering every scrape with bytes
    it fetched once from the exporter (plain, and gzip), with nothing else to do."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies = {}
    for encoding in ("identity", "gzip"):
        conn = http.client.HTTPConnection("127.0.0.1", exporter_port, timeout=60)
        conn.request("GET", "/metrics", headers={"Accept-Encoding": encoding})
        bodies[encoding] = conn.getresponse().read()
        conn.close()

    class Bare(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            gz = "gzip" in self.headers.get("Accept-Encoding", "")
            body = bodies["gzip" if gz else "identity"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            if gz:
                self.send_header("Content-Encoding", "gzip")
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Bare)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    sys.stdin.readline()
    server.shutdown()


def render_process(jobs: int, ak: str, sk: str, args: argparse.Namespace) -> dict[str, Any]:
    """Item 1 for one size: a fresh child polls a fast simulator and times the renderers."""
    from qf_exporter.simulator import fleet_world

    world = fleet_world(time.time, jobs, RUNS_PER_JOB, ACTIVE_FRACTION)
    sim = start_simulator(world, ak, sk)
    proc = spawn_child("render", sim.url, str(jobs), str(args.fast_reps), str(args.generic_reps),
                       ak=ak, sk=sk)
    try:
        return read_json(proc)
    finally:
        finish(proc)
        sim.stop()


def window_counts(arrivals: list[float]) -> list[int]:
    """For each arrival (sorted), how many arrivals its trailing one-second window holds."""
    out, lo = [], 0
    for hi, t in enumerate(arrivals):
        while arrivals[lo] <= t - 1.0:
            lo += 1
        out.append(hi - lo + 1)
    return out


def serve_process(jobs: int, ak: str, sk: str, args: argparse.Namespace) -> dict[str, Any]:
    """Items 2, 3 and 5 for one size.

    The simulator (here) enforces qps=20 with 50 ms latency; a fresh exporter child
    polls it once (item 3: wall time, item 5: RSS and CPU), then serves /metrics to
    the scrapers in this process (item 2). Exporter and simulator are separate
    processes, as the exporter and the gateway are: neither stalls the other.
    """
    import bisect

    from qf_exporter.simulator import fleet_world

    world = fleet_world(time.time, jobs, RUNS_PER_JOB, ACTIVE_FRACTION)
    sim = start_simulator(world, ak, sk, qps=POLL_QPS,
                          latency=POLL_LATENCY)
    # Observe (never change) the gateway's budget decisions: the arrival time it
    # stamped on each request and whether it throttled it.
    decisions: list[tuple[float, bool]] = []
    sim.on_budget = lambda arrived, throttled: decisions.append((arrived, throttled))
    proc = spawn_child("serve", sim.url, str(jobs), str(POLL_QPS), ak=ak, sk=sk)
    try:
        child = read_json(proc)
        requests = sim.request_count()
        arrivals = sorted(a for a, _ in decisions)
        counts = window_counts(arrivals)
        # A throttled answer whose trailing window, counted from the gateway's own
        # arrival stamps, held no more than qps requests is the simulator's mistake.
        false_throttles = 0
        for arrived, throttled in decisions:
            if throttled:
                n = bisect.bisect_right(arrivals, arrived) - bisect.bisect_right(
                    arrivals, arrived - 1.0)
                false_throttles += n <= POLL_QPS
        floor = requests / POLL_QPS
        child["poll"] = {
            "wall": child["wall_poll_s"],
            "requests": requests,
            "list_pages": sim.request_count("DescribeFineTuningTasks"),
            "details": sim.request_count("DescribeFineTuningTask"),
            "floor": floor,
            "ratio": child["wall_poll_s"] / floor if floor else math.nan,
            "throttled": sim.stats.throttled,
            "false_throttles": false_throttles,
            "worst_window": max(counts) if counts else 0,
            "over_windows": sum(1 for c in counts if c > POLL_QPS),
            "up": child["up"],
            "targets_up": child["targets_up"],
        }
        child["plain"] = scrape(child["port"], "identity", args.scrapers, args.scrapes)
        child["gzip"] = scrape(child["port"], "gzip", args.scrapers, args.scrapes)
        bare = spawn_child("bare", str(child["port"]), ak="", sk="")
        try:
            bare_port = read_json(bare)["port"]
            child["bare_plain"] = scrape(bare_port, "identity", args.scrapers, args.scrapes)
            child["bare_gzip"] = scrape(bare_port, "gzip", args.scrapers, args.scrapes)
        finally:
            finish(bare)
        assert proc.stdin is not None
        proc.stdin.write("stats\n")
        proc.stdin.flush()
        child["after_scrapes"] = read_json(proc)
        return child
    finally:
        finish(proc)
        sim.stop()


# --- item 4: steady state on a virtual clock ------------------------------------------------


def steady_state(jobs: int, ak: str, sk: str, args: argparse.Namespace) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from qf_exporter.config import Config, Poll
    from qf_exporter.poller import Poller
    from qf_exporter.simulator import fleet_world
    from qf_exporter.telemetry import ApiMetrics

    clock = VirtualClock(float(int(time.time())))
    world = fleet_world(clock, jobs, RUNS_PER_JOB, ACTIVE_FRACTION)
    active_jobs = sum(
        1 for job in world.jobs.values() if any(r.outcome == "running" for r in job.runs)
    )
    # Each is read through its detail too (its progress): on both sides of the comparison.
    running_runs = sum(
        1 for job in world.jobs.values() for r in job.runs if r.status(clock()) == "running"
    )
    # No budget enforcement and no latency: only the request count matters here.
    sim = start_simulator(world, ak, sk, qps=None, latency=0.0,
                          wall_clock=clock)
    account = make_account(sim.url, jobs, ak, sk, qps=100_000)
    adaptive_poll = Poll(interval=60, finished_interval=1800, concurrency=4)
    fixed_poll = Poll(interval=60, finished_interval=60, concurrency=4)
    all_up = True
    try:
        poller = Poller(Config(accounts=(account,), poll=adaptive_poll),
                        ApiMetrics(CollectorRegistry()), clock=clock)
        first = None
        for minute in range(args.warmup_minutes):  # warm-up hour: the first poll reads all
            all_up &= poller.poll_account(ACCOUNT).up
            if minute == 0:
                first = sim.request_count()
            clock.advance(60)
        base = sim.request_count()
        base_details = sim.request_count("DescribeFineTuningTask")
        per_minute = []
        for _ in range(args.measure_minutes):
            before = sim.request_count()
            all_up &= poller.poll_account(ACCOUNT).up
            per_minute.append(sim.request_count() - before)
            clock.advance(60)
        adaptive = (sim.request_count() - base) * 60.0 / args.measure_minutes
        adaptive_details = ((sim.request_count("DescribeFineTuningTask") - base_details)
                            * 60.0 / args.measure_minutes)
        poller.stop()

        # Fixed interval: computed (jobs x 60 per hour) and checked over a few minutes.
        fixed_poller = Poller(Config(accounts=(account,), poll=fixed_poll),
                              ApiMetrics(CollectorRegistry()), clock=clock)
        all_up &= fixed_poller.poll_account(ACCOUNT).up
        clock.advance(60)
        base = sim.request_count()
        for _ in range(args.fixed_minutes):
            all_up &= fixed_poller.poll_account(ACCOUNT).up
            clock.advance(60)
        fixed_measured = (sim.request_count() - base) * 60.0 / args.fixed_minutes
        fixed_poller.stop()
    finally:
        sim.stop()
    fixed = (jobs + running_runs) * 60.0  # every job's list and every running run's detail
    return {
        "active_jobs": active_jobs,
        "running_runs": running_runs,
        "adaptive_details_per_hour": adaptive_details,
        "first_poll": first,
        "adaptive_per_hour": adaptive,
        "fixed_per_hour": fixed,
        "fixed_measured_per_hour": fixed_measured,
        "reduction": fixed / adaptive if adaptive else math.inf,
        "per_minute_min": min(per_minute),
        "per_minute_max": max(per_minute),
        "all_up": all_up,
    }


# --- the table --------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def build_table(sizes: list[int], res: dict[int, dict[str, Any]], args: argparse.Namespace
                ) -> tuple[str, list[str]]:
    """The Markdown table, and the list of notes (failed targets, anomalies)."""
    target_size = TARGET_RUNS if TARGET_RUNS in sizes else max(sizes)
    at = f"at {target_size:,} runs"
    if target_size != TARGET_RUNS:
        at += f" (set for {TARGET_RUNS:,}; not measured in this run)"
    head = "| # | measure | " + " | ".join(size_label(s) for s in sizes) + " | target | result |"
    sep = "|---|---|" + "---|" * len(sizes) + "---|---|"
    rows: list[str] = [head, sep]
    notes: list[str] = []

    def row(num: str, what: str, cells: list[str], target: str = "", result: str = "") -> None:
        rows.append(f"| {num} | {what} | " + " | ".join(cells) + f" | {target} | {result} |")

    def cells(fn) -> list[str]:
        out = []
        for s in sizes:
            try:
                out.append(fn(res[s]))
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                out.append("–")
        return out

    t = res[target_size]
    med = statistics.median

    # 1. rendering
    row("1", "samples per snapshot, fast = generic (parsed)",
        cells(lambda r: ("✓ " if r["render"]["check"]["identical"] else "✗ differ ")
              + fmt_int(r["render"]["check"]["samples"])),
        "identical sample sets",
        verdict(all(res[s]["render"]["check"]["identical"] for s in sizes)))
    for s in sizes:
        c = res[s]["render"]["check"]
        if not c["identical"]:
            notes.append(f"{size_label(s)}: fast and generic renders differ: only fast "
                         f"{c['only_fast']}, only generic {c['only_generic']}")
    row("1", f"fast `render_runs`, text only (median of {args.fast_reps})",
        cells(lambda r: fmt_s(med(r["render"]["fast_text_s"]))))
    fast_full = med(t["render"]["fast_full_s"])
    ok_render = fast_full <= T_RENDER_S
    row("1", f"fast `render` per snapshot, text + gzip (median of {args.fast_reps})",
        cells(lambda r: fmt_s(med(r["render"]["fast_full_s"]))),
        f"≤ {T_RENDER_S} s {at}", verdict(ok_render))
    row("1", f"generic: `generate_latest` + `GenericRunCollector` (median of {args.generic_reps})",
        cells(lambda r: fmt_s(med(r["render"]["generic_s"]))))
    speed = med(t["render"]["generic_s"]) / med(t["render"]["fast_text_s"])
    ok_speed = speed >= T_SPEEDUP
    row("1", "speed-up, generic ÷ fast (text only, like for like)",
        cells(lambda r: f"{med(r['render']['generic_s']) / med(r['render']['fast_text_s']):.1f}×"),
        f"≥ {T_SPEEDUP:g}× {at}", verdict(ok_speed))
    row("1", "speed-up, generic ÷ fast (text + gzip)",
        cells(lambda r: f"{med(r['render']['generic_s']) / med(r['render']['fast_full_s']):.1f}×"))
    row("1", "run metrics exposition, plain / gzip",
        cells(lambda r: f"{r['render']['plain_bytes'] / 1e6:.2f} / "
                        f"{r['render']['gzip_bytes'] / 1e6:.3f} MB"))
    if not ok_speed:
        notes.append(f"item 1: speed-up {speed:.1f}× < {T_SPEEDUP:g}× {at}")
    if not ok_render:
        notes.append(f"item 1: render per snapshot {fast_full:.3f} s > {T_RENDER_S} s {at}")

    # 2. scrapes
    n = f"{args.scrapers}×{args.scrapes}"
    for mode in ("plain", "gzip"):
        p99 = t["child"][mode].p99_ms
        ok = p99 <= T_P99_MS and not t["child"][mode].errors
        row("2", f"`/metrics` {mode}, p50 / p99 ms ({n} keep-alive scrapes)",
            cells(lambda r, m=mode: f"{fmt_ms(r['child'][m].p50_ms)} / "
                                    f"{fmt_ms(r['child'][m].p99_ms)}"),
            f"p99 ≤ {T_P99_MS:g} ms {at}", verdict(ok))
        if not ok:
            floor = t["child"][f"bare_{mode}"]
            notes.append(f"item 2: {mode} p99 {p99:.1f} ms > {T_P99_MS:g} ms {at}; a bare "
                         f"`http.server` sending the same bytes: p50 {floor.p50_ms:.1f} ms, "
                         f"p99 {floor.p99_ms:.1f} ms")
        for s in sizes:
            sr = res[s]["child"][mode]
            if 35 <= sr.p50_ms <= 50 and sr.body_bytes < 65536:
                notes.append(
                    f"item 2, {size_label(s)}: {mode} p50 {sr.p50_ms:.1f} ms for a "
                    f"{sr.body_bytes / 1024:.0f} KB answer: the size of Linux's delayed-ACK "
                    f"timer, i.e. a Nagle stall on the exporter's keep-alive socket")
            if res[s]["child"][mode].errors:
                notes.append(f"{size_label(s)} {mode} scrape errors: "
                             f"{res[s]['child'][mode].errors[:3]}")
    row("2", "floor: the same bytes from a bare `http.server`, plain / gzip p99 ms",
        cells(lambda r: f"{fmt_ms(r['child']['bare_plain'].p99_ms)} / "
                        f"{fmt_ms(r['child']['bare_gzip'].p99_ms)}"))
    row("2", "scrapes per second (plain / gzip, all scrapers)",
        cells(lambda r: f"{len(r['child']['plain'].latencies) / r['child']['plain'].wall:.0f} / "
                        f"{len(r['child']['gzip'].latencies) / r['child']['gzip'].wall:.0f}"))

    # 3. full poll under the budget
    ok_poll = all(res[s]["poll"]["ratio"] <= T_POLL_RATIO for s in sizes)
    row("3", "requests in that poll: list pages + details (one per running run)",
        cells(lambda r: f"{r['poll']['list_pages']} + {r['poll']['details']} = "
                        f"{r['poll']['requests']}"))
    row("3", f"full poll wall time ÷ floor (requests ÷ qps; qps={POLL_QPS}, "
             f"{POLL_LATENCY * 1000:g} ms latency, {POLL_CONCURRENCY} workers)",
        cells(lambda r: f"{fmt_s(r['poll']['wall'])} ÷ {fmt_s(r['poll']['floor'])} = "
                        f"{r['poll']['ratio']:.3f}×"),
        f"≤ {T_POLL_RATIO}× floor (every size)", verdict(ok_poll))
    ok_thr = all(res[s]["poll"]["throttled"] == 0 for s in sizes)
    row("3", "throttled answers (`sim.stats.throttled`)",
        cells(lambda r: str(r["poll"]["throttled"])
              + (f" ({r['poll']['false_throttles']} false)" if r["poll"]["false_throttles"]
                 else "")),
        "0 (every size)", verdict(ok_thr))
    row("3", "busiest trailing 1-s window, from the gateway's arrival stamps",
        cells(lambda r: f"{r['poll']['worst_window']} ({r['poll']['over_windows']} over "
                        f"{POLL_QPS})"))
    for s in sizes:
        p = res[s]["poll"]
        if p["ratio"] > T_POLL_RATIO:
            notes.append(f"item 3, {size_label(s)}: {p['wall']:.1f} s = {p['ratio']:.3f}× the "
                         f"floor of {p['floor']:.1f} s")
        if p["throttled"]:
            notes.append(
                f"item 3, {size_label(s)}: {p['throttled']} throttled answers, "
                f"{p['false_throttles']} of them false (the trailing window of the simulator's "
                f"own arrival stamps held ≤ {POLL_QPS}); busiest window {p['worst_window']}")
        if not p["up"]:
            notes.append(f"item 3, {size_label(s)}: the poll did not read every target "
                         f"({p['targets_up']} up)")

    # 4. steady state
    row("4", "jobs with an active run",
        cells(lambda r: f"{r['steady']['active_jobs']} of {r['jobs']}"))
    row("4", "API requests / hour, adaptive (measured, virtual clock; of which details)",
        cells(lambda r: f"{fmt_int(r['steady']['adaptive_per_hour'])} "
                        f"({fmt_int(r['steady']['adaptive_details_per_hour'])})"))
    row("4", "API requests / hour, fixed 60 s ((jobs + running runs)×60; measured over "
             f"{args.fixed_minutes} min)",
        cells(lambda r: f"{fmt_int(r['steady']['fixed_per_hour'])} "
                        f"({fmt_int(r['steady']['fixed_measured_per_hour'])})"))
    ok_red = all(res[s]["steady"]["reduction"] >= T_REDUCTION for s in sizes)
    row("4", "reduction, fixed ÷ adaptive",
        cells(lambda r: f"{r['steady']['reduction']:.1f}×"),
        f"≥ {T_REDUCTION:g}× (every size)", verdict(ok_red))
    for s in sizes:
        st = res[s]["steady"]
        if st["reduction"] < T_REDUCTION:
            notes.append(f"item 4, {size_label(s)}: only {st['reduction']:.1f}× fewer requests")
        if not st["all_up"]:
            notes.append(f"item 4, {size_label(s)}: a poll did not read every target")

    # 5. memory and CPU
    scrapes = 2 * args.scrapers * (args.scrapes + 1)
    rss = t["child"]["rss_after_poll_kb"]
    ok_rss = rss / 1024 <= T_RSS_MB
    row("5", "RSS after one full poll + render (fresh process, VmRSS)",
        cells(lambda r: fmt_mb(r["child"]["rss_after_poll_kb"])),
        f"≤ {T_RSS_MB:g} MB {at}", verdict(ok_rss))
    row("5", "RSS after imports + Exporter() (baseline)",
        cells(lambda r: fmt_mb(r["child"]["rss_imported_kb"])))
    row("5", "peak RSS while serving the scrapes (VmHWM)",
        cells(lambda r: fmt_mb(r["child"]["after_scrapes"]["hwm_kb"])
              + ("" if r["child"]["hwm_reset"] else " (process peak)")))
    row("5", "CPU time (user + sys) / wall time of that poll + render",
        cells(lambda r: f"{fmt_s(r['child']['cpu_poll_s'])} / {fmt_s(r['child']['wall_poll_s'])}"))
    row("5", "exporter CPU per scrape (plain + gzip scrapes)",
        cells(lambda r: f"{r['child']['after_scrapes']['cpu_serving_s'] * 1000 / scrapes:.1f} ms"))
    if not ok_rss:
        notes.append(f"item 5: RSS {rss / 1024:.1f} MB > {T_RSS_MB:g} MB {at}")
    for s in sizes:
        for part in ("render", "child"):
            c = res[s][part]
            if c["targets_up"] != c["targets"]:
                notes.append(f"{size_label(s)}: an exporter poll read only {c['targets_up']} "
                             f"of {c['targets']} targets")
    return "\n".join(rows), notes


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_child":
        if argv[1] == "render":
            render_child(argv[2], int(argv[3]), int(argv[4]), int(argv[5]))
        elif argv[1] == "scrape":
            scrape_child(int(argv[2]), argv[3], int(argv[4]))
        elif argv[1] == "bare":
            bare_child(int(argv[2]))
        else:
            serve_child(argv[2], int(argv[3]), float(argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None,
                        help="comma-separated run counts (jobs×10), default 100,1000,10000")
    parser.add_argument("--quick", action="store_true",
                        help="100×10 only, fewer scrapes and repetitions (under a minute)")
    parser.add_argument("--scrapes", type=int, default=None, help="scrapes per scraper (200)")
    parser.add_argument("--scrapers", type=int, default=4)
    parser.add_argument("--fast-reps", type=int, default=None)
    parser.add_argument("--generic-reps", type=int, default=None)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results.md"))
    args = parser.parse_args(argv)
    sizes = [int(x) for x in (args.sizes or ("1000" if args.quick else "100,1000,10000"))
             .split(",") if x.strip()]
    if any(s < RUNS_PER_JOB or s % RUNS_PER_JOB for s in sizes):
        parser.error(f"--sizes are run counts, multiples of {RUNS_PER_JOB}")
    args.scrapes = args.scrapes or (50 if args.quick else 200)
    args.fast_reps = args.fast_reps or (3 if args.quick else 5)
    args.generic_reps = args.generic_reps or (2 if args.quick else 3)
    args.warmup_minutes = 60
    args.measure_minutes = 60
    args.fixed_minutes = 3 if args.quick else 5
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    started = time.perf_counter()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    ak = "AKbench" + secrets.token_hex(6)
    sk = secrets.token_hex(16)
    res: dict[int, dict[str, Any]] = {}
    for size in sizes:
        jobs = size // RUNS_PER_JOB
        r: dict[str, Any] = {"jobs": jobs}
        t0 = time.perf_counter()
        print(f"[{size_label(size)}] renders (fresh process) ...", file=sys.stderr, flush=True)
        r["render"] = render_process(jobs, ak, sk, args)
        print(f"[{size_label(size)}] full poll at qps={POLL_QPS}, then scrapes (fresh process) ...",
              file=sys.stderr, flush=True)
        r["child"] = serve_process(jobs, ak, sk, args)
        r["poll"] = r["child"]["poll"]
        print(f"[{size_label(size)}] steady state on a virtual clock ...",
              file=sys.stderr, flush=True)
        r["steady"] = steady_state(jobs, ak, sk, args)
        r["seconds"] = time.perf_counter() - t0
        res[size] = r
        print(f"[{size_label(size)}] done in {r['seconds']:.0f} s", file=sys.stderr, flush=True)

    table, notes = build_table(sizes, res, args)
    elapsed = time.perf_counter() - started
    command = "python benchmarks/bench.py " + " ".join(argv) if argv else \
        "python benchmarks/bench.py"
    machine_line = (f"{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
                    f"prometheus_client {info['prometheus_client']}, Linux {info['kernel']}")
    sim_line = "the shipped QianfanSimulator, in the benchmark's process"
    text = "\n".join([
        "# qf-exporter benchmark results",
        "",
        f"- command: `{command.strip()}`",
        f"- date: {when}; whole benchmark took {elapsed:.0f} s",
        f"- machine: {machine_line}",
        f"- code: {info['commit']}",
        f"- world: `fleet_world(jobs, {RUNS_PER_JOB} runs/job, active_fraction="
        f"{ACTIVE_FRACTION})`; simulator: {sim_line}",
        "",
        table,
        "",
        "Notes:" if notes else "All targets met.",
        *[f"- {n}" for n in notes],
        "",
    ])
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text, encoding="utf-8")
    print(f"(written to {args.output})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
