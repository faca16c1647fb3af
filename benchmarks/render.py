"""Item 1: rendering time per snapshot, the fast renderer against prometheus_client's
generic collector path on the same runs, after checking both parse to identical samples.

The exporter runs in a fresh child process (``render-child``) so that neither the
simulator's objects nor earlier sizes pollute the timings.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.common import (
    ACCOUNT,
    ACTIVE_FRACTION,
    RUNS_PER_JOB,
    Settings,
    child_credentials,
    emit,
    finish,
    make_account,
    read_json,
    size_label,
    spawn_child,
    start_simulator,
    timed,
)

Sample = tuple[str, tuple[tuple[str, str], ...], float]


@dataclass(frozen=True)
class RenderCheck:
    identical: bool
    samples: int
    generic_samples: int
    only_fast: list[str]
    only_generic: list[str]


@dataclass(frozen=True)
class RenderResult:
    runs: int
    targets_up: int
    targets: int
    check: RenderCheck
    fast_text_s: list[float]
    fast_full_s: list[float]
    generic_s: list[float]
    plain_bytes: int
    gzip_bytes: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RenderResult:
        return cls(**dict(d, check=RenderCheck(**d["check"])))


def samples_of(text: str) -> list[Sample]:
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append((s.name, tuple(sorted(s.labels.items())), float(s.value)))
    out.sort()
    return out


def compare_renders(fast: bytes, generic: bytes) -> RenderCheck:
    a, b = samples_of(fast.decode("utf-8")), samples_of(generic.decode("utf-8"))
    if a == b:
        return RenderCheck(True, len(a), len(b), [], [])
    ca, cb = Counter(a), Counter(b)
    only_fast = [repr(x) for x in list((ca - cb).elements())[:3]]
    only_generic = [repr(x) for x in list((cb - ca).elements())[:3]]
    return RenderCheck(False, len(a), len(b), only_fast, only_generic)


def child(url: str, jobs: int, fast_reps: int, generic_reps: int) -> None:
    """The ``render-child`` subcommand: poll once, check both renderers agree, time them."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ak, sk = child_credentials()
    from prometheus_client import CollectorRegistry, generate_latest

    from qf_exporter.app import Exporter
    from qf_exporter.config.file import Config, Poll
    from qf_exporter.exposition.answer import gzip_answer
    from tests.exposition.pages import full_page, page_text, render_runs
    from tests.generic_collector import GenericRunCollector

    exporter = Exporter(Config(accounts=(make_account(url, jobs, ak, sk, qps=100_000),),
                               poll=Poll(concurrency=4)))
    state = exporter.poller.poll_account(ACCOUNT, force=True)
    runs = list(state.runs)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GenericRunCollector(lambda: runs))
    # First the check, then the clock: both must parse to the same samples.
    check = compare_renders(render_runs(runs), generate_latest(registry))
    gc.collect()
    emit({
        "runs": len(runs),
        "targets_up": sum(1 for t in state.targets.values() if t.up),
        "targets": len(state.targets),
        "check": asdict(check),
        "fast_text_s": timed(lambda: render_runs(runs), fast_reps),
        "fast_full_s": timed(lambda: full_page(runs, 1), fast_reps),
        "generic_s": timed(lambda: generate_latest(registry), generic_reps),
        "plain_bytes": len(page_text(exporter.current_page.page)),
        "gzip_bytes": gzip_answer(exporter.current_page.page).size,
    })
    exporter.stop()


def measure(jobs: int, ak: str, sk: str, settings: Settings) -> RenderResult:
    """A fresh child polls a fast simulator (in this process) and times the renderers."""
    from qf_exporter.simulator import fleet_world

    world = fleet_world(time.time, jobs, RUNS_PER_JOB, ACTIVE_FRACTION)
    sim = start_simulator(world, ak, sk)
    proc = spawn_child("render-child", sim.url, str(jobs), str(settings.fast_reps),
                       str(settings.generic_reps), ak=ak, sk=sk)
    try:
        return RenderResult.from_json(read_json(proc))
    finally:
        finish(proc)
        sim.stop()


def notes(runs: int, r: RenderResult) -> list[str]:
    """What the rows do not show: which samples differ, targets the poll did not read."""
    out = []
    if not r.check.identical:
        out.append(f"{size_label(runs)}: fast and generic renders differ: only fast "
                   f"{r.check.only_fast}, only generic {r.check.only_generic}")
    if r.targets_up != r.targets:
        out.append(f"{size_label(runs)}: an exporter poll read only {r.targets_up} "
                   f"of {r.targets} targets")
    return out
