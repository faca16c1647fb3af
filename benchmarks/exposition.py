#!/usr/bin/env python3
"""What the exposition costs when a poll changes a few runs, and what it holds in memory.

    python benchmarks/exposition.py [--sizes 100,1000,10000] [--duration 120] [--quick]

For every size (jobs of 50 runs, 5 % of the jobs with a run training, as in the
issue that asked for it) against the simulated Qianfan:

1. render time per poll when k = 1, 10 and 100 runs changed: the run store brought
   up to date plus the health metrics, median of 21 polls, beside a full render of
   the same runs (text and one gzip stream, what every change cost before the store);
2. the gzip answer: the store's separately compressed pieces against one gzip stream
   of the same text;
3. peak resident memory of a real exporter process sampled every second over
   ``--duration`` seconds of steady polling (``interval: 5s``) with 4 scrapers in
   processes of their own, once plain and once gzip, beside its memory right after
   the first poll.

The scrape latency against the bare-server floor is ``bench.py``'s item 2.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qf_exporter.config import Account, Config, Poll, Secret  # noqa: E402
from qf_exporter.models import Run  # noqa: E402
from qf_exporter.simulator import QianfanSimulator, fleet_world  # noqa: E402

RUNS_PER_JOB = 50
ACTIVE_FRACTION = 0.05
ACCOUNT = "fleet"
CHANGED = (1, 10, 100)
SCRAPERS = 4
# Goals at 10,000 runs (the issue's): render of 10 changed runs, peak memory, growth.
GOAL_RENDER_MS = 5.0
GOAL_PEAK_MB = 100.0
GOAL_GROWTH_MB = 15.0


def account(url: str, jobs: int, ak: str, sk: str) -> Account:
    return Account(name=ACCOUNT, access_key=Secret(ak), secret_key=Secret(sk), endpoint=url,
                   qps=100_000, jobs=tuple(f"job-fleet{j:05d}" for j in range(jobs)))


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --- 1 and 2: render time and gzip size, in this process ---------------------------------


def render_costs(jobs: int) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from qf_exporter.pages import Pages
    from qf_exporter.poller import Poller
    from qf_exporter.render import render_health, render_runs
    from qf_exporter.telemetry import ApiMetrics

    ak, sk = "AK" + secrets.token_hex(8), secrets.token_hex(16)
    sim = QianfanSimulator(fleet_world(time.time, jobs, RUNS_PER_JOB, ACTIVE_FRACTION),
                           {ak: sk}).start()
    try:
        pages = Pages()
        poller = Poller(Config(accounts=(account(sim.url, jobs, ak, sk),),
                               poll=Poll(concurrency=4)), ApiMetrics(CollectorRegistry()),
                        subscriber=pages)
        poller.poll_account(ACCOUNT, force=True)
        poller.stop()
    finally:
        sim.stop()
    snapshot, store = poller.snapshot, pages.store
    runs: tuple[Run, ...] = snapshot.accounts[ACCOUNT].runs
    text = render_runs(runs)
    started = time.perf_counter()
    render_runs(runs)
    one_stream = gzip.compress(text, compresslevel=1, mtime=0)
    full_s = time.perf_counter() - started
    answer = b"".join(pages.rendered.gzipped())
    assert gzip.decompress(answer) == b"".join(pages.rendered.plain())
    assert text == pages.rendered.text
    rng = random.Random(1)
    per_k = {}
    for k in CHANGED:
        times = []
        for _ in range(21):
            new = list(runs)
            for i in rng.sample(range(len(new)), k):
                new[i] = replace(new[i], last_read=new[i].last_read + 5.0)
            started = time.perf_counter()
            store.replace(runs, new)
            store.rendered(0, render_health(snapshot, [ACCOUNT]))
            times.append(time.perf_counter() - started)
            runs = tuple(new)
        per_k[k] = statistics.median(times) * 1000
    assert store.rendered(0).text == render_runs(runs)
    return {"runs": len(runs), "full_render_ms": full_s * 1000, "changed_ms": per_k,
            "plain_bytes": len(text), "gzip_one_stream": len(one_stream),
            "gzip_pieces": len(answer), "pieces": len(pages.rendered.runs)}


# --- 3: memory of a real exporter under steady polling and scrapes -------------------------


def exporter_child(url: str, jobs: int) -> None:
    """A real exporter: scheduled polls every 5 s, serving on loopback."""
    from qf_exporter.app import Exporter

    ak, sk = os.environ["QFE_AK"], os.environ["QFE_SK"]
    exporter = Exporter(Config(accounts=(account(url, jobs, ak, sk),),
                               poll=Poll(interval=5, finished_interval=1800, concurrency=4)))
    exporter.start()
    exporter.poller.ready.wait()
    server = exporter.serve("127.0.0.1", 0, "/metrics", None)
    print(json.dumps({"port": server.port, "rss_mb": rss_mb()}), flush=True)
    sys.stdin.readline()
    exporter.stop()


def scraper_child(port: int, encoding: str, seconds: float) -> None:
    """Scrape without pause for ``seconds``, reading each answer whole."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    end, count = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        conn.request("GET", "/metrics", headers={"Accept-Encoding": encoding})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"status {response.status}")
        if encoding == "gzip":
            gzip.decompress(body)
        count += 1
    print(json.dumps({"scrapes": count}), flush=True)


def spawn(*argv: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, **env))


def steady_memory(jobs: int, encoding: str, seconds: float) -> dict[str, Any]:
    ak, sk = "AK" + secrets.token_hex(8), secrets.token_hex(16)
    sim = QianfanSimulator(fleet_world(time.time, jobs, RUNS_PER_JOB, ACTIVE_FRACTION),
                           {ak: sk}).start()
    child = spawn("exporter", sim.url, str(jobs), QFE_AK=ak, QFE_SK=sk)
    try:
        assert child.stdout is not None and child.stdin is not None
        started = json.loads(child.stdout.readline())
        scrapers = [spawn("scrape", str(started["port"]), encoding, str(seconds))
                    for _ in range(SCRAPERS)]
        samples = []
        while any(s.poll() is None for s in scrapers):
            samples.append(rss_mb(child.pid))
            time.sleep(1.0)  # the sampling period, not a wait for anything
        scrapes = sum(json.loads(s.communicate()[0] or '{"scrapes": 0}')["scrapes"]
                      for s in scrapers)
        child.stdin.write("quit\n")
        child.stdin.flush()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        sim.stop()
    return {"after_first_poll_mb": started["rss_mb"], "peak_mb": max(samples),
            "samples": len(samples), "scrapes": scrapes}


# --- the table ------------------------------------------------------------------------------


def table(results: dict[int, dict[str, Any]]) -> str:
    sizes = sorted(results)
    head = "| | " + " | ".join(f"{results[n]['render']['runs']:,} runs" for n in sizes) + " |"
    rows = [head, "|---" * (len(sizes) + 1) + "|"]

    def row(label: str, cell: Any) -> None:
        rows.append(f"| {label} | " + " | ".join(cell(results[n]) for n in sizes) + " |")

    row("full render, text + one gzip stream (before the store)",
        lambda r: f"{r['render']['full_render_ms']:.1f} ms")
    for k in CHANGED:
        row(f"render per poll, {k} run{'s' if k > 1 else ''} changed",
            lambda r, k=k: f"{r['render']['changed_ms'][k]:.2f} ms")
    row("pieces in the page", lambda r: f"{r['render']['pieces']:,}")
    row("plain answer", lambda r: f"{r['render']['plain_bytes'] / 1e6:.2f} MB")
    row("gzip: one compression / pieces compressed apart (ratio)",
        lambda r: f"{r['render']['gzip_one_stream'] / 1e6:.2f} / "
                  f"{r['render']['gzip_pieces'] / 1e6:.2f} MB "
                  f"({r['render']['gzip_pieces'] / r['render']['gzip_one_stream']:.2f}x)")
    for encoding in ("identity", "gzip"):
        name = "plain" if encoding == "identity" else "gzip"
        row(f"RSS after the first poll / peak, {SCRAPERS} {name} scrapers",
            lambda r, e=encoding: f"{r[e]['after_first_poll_mb']:.0f} / {r[e]['peak_mb']:.0f} MB"
                                  f" ({r[e]['scrapes']} scrapes)")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("exporter", help="(internal) the exporter process")
    child.add_argument("url")
    child.add_argument("jobs", type=int)
    scraper = sub.add_parser("scrape", help="(internal) one scraper process")
    scraper.add_argument("port", type=int)
    scraper.add_argument("encoding")
    scraper.add_argument("seconds", type=float)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="10,000 runs, 20 s of scrapes")
    args = parser.parse_args(argv)
    if args.command == "exporter":
        exporter_child(args.url, args.jobs)
        return 0
    if args.command == "scrape":
        scraper_child(args.port, args.encoding, args.seconds)
        return 0
    sizes = [10_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    duration = 20.0 if args.quick else args.duration
    results: dict[int, dict[str, Any]] = {}
    for runs in sizes:
        jobs = max(1, runs // RUNS_PER_JOB)
        results[runs] = {"render": render_costs(jobs)}
        for encoding in ("identity", "gzip"):
            results[runs][encoding] = steady_memory(jobs, encoding, duration)
        print(json.dumps({runs: results[runs]}), file=sys.stderr, flush=True)
    print(table(results))
    top = results[max(sizes)]
    if max(sizes) == 10_000:
        peak = max(top[e]["peak_mb"] for e in ("identity", "gzip"))
        growth = max(top[e]["peak_mb"] - top[e]["after_first_poll_mb"]
                     for e in ("identity", "gzip"))
        print(f"\n10 changed runs: {top['render']['changed_ms'][10]:.2f} ms "
              f"(goal < {GOAL_RENDER_MS} ms); peak {peak:.0f} MB (goal <= {GOAL_PEAK_MB:.0f}); "
              f"growth {growth:.0f} MB (goal <= {GOAL_GROWTH_MB:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
