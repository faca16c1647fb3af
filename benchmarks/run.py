"""Runs the chosen groups size by size and turns their results into the tables."""

from __future__ import annotations

import secrets
import sys
import time

from benchmarks import (
    exposition,
    exposition_memory,
    freshness,
    memory,
    quota,
    regex_engines,
    render,
    report,
    scrape,
    serve,
    steady_state,
    table,
)
from benchmarks.common import RUNS_PER_JOB, Settings, size_label
from benchmarks.results import ExpositionSize, RegexColumn, SizeResults


def say(what: str) -> None:
    print(what, file=sys.stderr, flush=True)


def run_size(runs: int, groups: set[str], settings: Settings, ak: str, sk: str) -> SizeResults:
    """Items 1-5 at one size: each in fresh processes, the simulator in this one."""
    jobs, label, t0 = runs // RUNS_PER_JOB, size_label(runs), time.perf_counter()
    out = SizeResults(runs)
    if "render" in groups:
        say(f"[{label}] renders (fresh process) ...")
        out.render_result = render.measure(jobs, ak, sk, settings)
    if groups & {"scrape", "quota", "memory"}:
        say(f"[{label}] full poll at qps={quota.POLL_QPS}, then scrapes (fresh process) ...")
        # The peak and CPU per scrape of item 5 are those of item 2's scrapes.
        out.serve_result = serve.measure(jobs, ak, sk, settings,
                                         with_scrapes=bool(groups & {"scrape", "memory"}))
    if "steady" in groups:
        say(f"[{label}] steady state on a virtual clock ...")
        out.steady_result = steady_state.measure(jobs, ak, sk, settings)
    out.seconds = time.perf_counter() - t0
    say(f"[{label}] done in {out.seconds:.0f} s")
    return out


def size_notes(res: dict[int, SizeResults]) -> list[str]:
    """What the rows do not show, module by module."""
    out: list[str] = []
    for runs, r in res.items():
        if r.render_result is not None:
            out += render.notes(runs, r.render_result)
        if r.serve_result is not None:
            out += quota.notes(runs, r.serve_result.quota)
            out += memory.notes(runs, r.serve_result.memory)
            if r.serve_result.scrapes is not None:
                out += scrape.notes(runs, r.serve_result.scrapes)
        if r.steady_result is not None:
            out += steady_state.notes(runs, r.steady_result)
    return out


def size_section(sizes: list[int], groups: set[str], settings: Settings) -> list[str]:
    ak, sk = "AKbench" + secrets.token_hex(6), secrets.token_hex(16)
    res = {runs: run_size(runs, groups, settings, ak, sk) for runs in sizes}
    target, at = table.at_text(sizes)
    rows = [row for row in table.SIZE_ROWS if row.group in groups]
    headers = {runs: size_label(runs) for runs in sizes}
    text, notes = table.markdown(rows, res, headers, settings, target, at)
    return table_section("Exporter: render, scrape, quota, steady state, memory", text,
                         notes + size_notes(res))


def exposition_section(sizes: list[int], groups: set[str], settings: Settings) -> list[str]:
    """Items 6 and 7: the run store's render per poll, gzip size, memory under polling."""
    res: dict[int, ExpositionSize] = {}
    for runs in sizes:
        jobs = max(1, runs // exposition.RUNS_PER_JOB)
        res[runs] = ExpositionSize(runs)
        if "exposition" in groups:
            say(f"[{runs:,} runs, jobs of 50] run store render per poll ...")
            res[runs].exposition_result = exposition.measure(jobs)
        if "exposition_memory" in groups:
            say(f"[{runs:,} runs, jobs of 50] memory under steady polling, "
                f"{settings.duration:g} s per encoding ...")
            res[runs].memory_results = exposition_memory.measure_both(jobs, settings.duration)
    target, at = table.at_text(sizes)
    rows = [row for row in table.EXPOSITION_ROWS + table.EXPOSITION_MEMORY_ROWS
            if row.group in groups]
    headers = {runs: f"{runs:,} runs" for runs in sizes}
    text, notes = table.markdown(rows, res, headers, settings, target, at)
    return table_section("Run store: exposition per poll and memory under polling", text, notes)


def regex_section(settings: Settings) -> list[str]:
    say("discovery patterns, re against re2 ...")
    result = regex_engines.measure()
    columns = {name: RegexColumn(name, result) for name in regex_engines.ENGINES}
    text, notes = table.markdown(table.REGEX_ROWS, columns, {n: n for n in columns}, settings)
    return table_section("Discovery patterns: re against re2", text, notes, targets=False)


def freshness_section(sizes: list[int], settings: Settings) -> list[str]:
    """Item 9: a change in Qianfan to /metrics, with a budget that holds the interval
    and one of half what a cycle needs."""
    ak, sk = "AKfresh" + secrets.token_hex(6), secrets.token_hex(16)
    rows = []
    for runs in sizes:
        for share in (2.0, 0.5):
            say(f"[{runs:,} runs] freshness at {share:g}× the budget a cycle needs, "
                f"{settings.duration:g} s of changes ...")
            rows.append(freshness.measure(runs, share, settings.duration, ak, sk))
    return table_section("Freshness: a change in Qianfan to /metrics, interval 5 s",
                         freshness.markdown(rows), freshness.notes(rows), targets=False)


def table_section(title: str, text: str, notes: list[str], targets: bool = True) -> list[str]:
    print(f"\n{text}", flush=True)
    return report.section(title, text, notes, targets)
