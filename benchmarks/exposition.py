"""What the exposition costs when a poll changes a few runs, and the gzip answer's size.

Jobs of 50 runs, 5 % of the jobs with a run training: render time per poll when k = 1,
10 and 100 runs changed (the run store brought up to date plus the health metrics,
median of 21 polls) beside a full render of the same runs (text and one gzip stream,
what every change cost before the store); then the store's gzip answer (segments
compressed apart, each with the text before it as dictionary) against one gzip stream
of the same text, and the blocks a scrape writes. In this process.
"""

from __future__ import annotations

import gzip
import random
import secrets
import statistics
import time
from dataclasses import dataclass, replace

from benchmarks.common import ACCOUNT, ACTIVE_FRACTION
from qf_exporter.config.file import Account, Config, Poll
from qf_exporter.exposition.store import RunStore
from qf_exporter.polling.snapshot import Snapshot
from qf_exporter.qianfan.models import Run
from qf_exporter.simulator import QianfanSimulator, fleet_world
from qf_exporter.util.secrets import Secret

RUNS_PER_JOB = 50
CHANGED = (1, 10, 100)
POLLS = 21


@dataclass(frozen=True)
class ExpositionResult:
    runs: int
    full_render_ms: float
    changed_ms: dict[int, float]
    plain_bytes: int
    gzip_one_stream: int
    gzip_pieces: int
    pieces: int


def account(url: str, jobs: int, ak: str, sk: str) -> Account:
    return Account(name=ACCOUNT, access_key=Secret(ak), secret_key=Secret(sk), endpoint=url,
                   qps=100_000, jobs=tuple(f"job-fleet{j:05d}" for j in range(jobs)))


def changed_costs(store: RunStore, runs: tuple[Run, ...], snapshot: Snapshot) -> dict[int, float]:
    """Median ms per poll that changed k runs, for every k of ``CHANGED``."""
    from qf_exporter.exposition.render import render_health
    from tests.exposition.pages import page_text, render_runs

    rng = random.Random(1)
    per_k = {}
    for k in CHANGED:
        times = []
        for _ in range(POLLS):
            new = list(runs)
            for i in rng.sample(range(len(new)), k):
                new[i] = replace(new[i], last_read=new[i].last_read + 5.0)
            started = time.perf_counter()
            store.replace(runs, new)
            store.page(0, render_health(snapshot, [ACCOUNT]))
            times.append(time.perf_counter() - started)
            runs = tuple(new)
        per_k[k] = statistics.median(times) * 1000
    assert page_text(store.page(0)) == render_runs(runs)
    return per_k


def measure(jobs: int) -> ExpositionResult:
    from prometheus_client import CollectorRegistry

    from qf_exporter.exposition.answer import gzip_answer, plain_answer
    from qf_exporter.exposition.pages import CurrentPage
    from qf_exporter.polling.poller import Poller
    from qf_exporter.qianfan.telemetry import ApiMetrics
    from tests.exposition.pages import page_text, render_runs

    ak, sk = "AK" + secrets.token_hex(8), secrets.token_hex(16)
    sim = QianfanSimulator(fleet_world(time.time, jobs, RUNS_PER_JOB, ACTIVE_FRACTION),
                           {ak: sk}).start()
    try:
        current = CurrentPage()
        poller = Poller(Config(accounts=(account(sim.url, jobs, ak, sk),),
                               poll=Poll(concurrency=4)), ApiMetrics(CollectorRegistry()),
                        subscriber=current)
        poller.poll_account(ACCOUNT, force=True)
        poller.stop()
    finally:
        sim.stop()
    snapshot, store = poller.snapshot, current.store
    runs: tuple[Run, ...] = snapshot.accounts[ACCOUNT].runs
    text = render_runs(runs)
    started = time.perf_counter()
    render_runs(runs)
    one_stream = gzip.compress(text, compresslevel=1, mtime=0)
    full_s = time.perf_counter() - started
    answer = b"".join(gzip_answer(current.page))
    assert gzip.decompress(answer) == b"".join(plain_answer(current.page))
    assert text == page_text(current.page)
    return ExpositionResult(
        runs=len(runs), full_render_ms=full_s * 1000,
        changed_ms=changed_costs(store, runs, snapshot), plain_bytes=len(text),
        gzip_one_stream=len(one_stream), gzip_pieces=len(answer),
        pieces=len(current.page.runs))
