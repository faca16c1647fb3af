"""Discovery patterns: Python's ``re`` against RE2 (``google-re2``), the engine the
exporter compiles ``discovery.include``/``exclude`` with.

For both engines: compile time of typical patterns, the time to filter 10,000 job names
(what a discovery listing does), and ``^(a+)+$`` against ``'a' * n + '!'``, which
backtracks exponentially in ``re`` (each extra character doubles the time).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from qf_exporter.config.patterns import compile_pattern

TYPICAL = [r"^prod-", r"-tmp$", r"(?i)^(sft|dpo)-\w+-\d{3,}$", r"ernie|qwen"]
NAMES = [f"{'prod' if i % 3 else 'dev'}-sft-chat-{i:05d}{'-tmp' if i % 7 == 0 else ''}"
         for i in range(10_000)]
EVIL_LENGTHS = (16, 18, 20, 22)


class Pattern(Protocol):
    def search(self, string: str) -> object: ...


Engine = Callable[[str], Pattern]
ENGINES: dict[str, Engine] = {"re": re.compile, "re2": compile_pattern}


@dataclass(frozen=True)
class EngineResult:
    compile_us: float  # one typical pattern
    filter_ms: float  # 10,000 names through the 4 typical patterns
    evil_ms: dict[int, float]  # ``^(a+)+$`` on n + 1 characters


@dataclass(frozen=True)
class RegexResult:
    re: EngineResult
    re2: EngineResult
    re_growth: float  # how many times longer ``re`` takes per extra character
    re_28_s: float  # extrapolated
    re2_28_ms: float
    re2_long_ms: float  # on 100,001 characters


def best(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def compile_all(engine: Engine) -> None:
    for pattern in TYPICAL:
        re.purge()
        engine(pattern)


def filter_names(patterns: list[Pattern]) -> int:
    return sum(1 for n in NAMES if any(p.search(n) for p in patterns))


def engine_result(engine: Engine) -> EngineResult:
    compile_us = best(lambda: compile_all(engine)) / len(TYPICAL) * 1e6
    compiled = [engine(p) for p in TYPICAL]
    filter_ms = best(lambda: filter_names(compiled)) * 1e3
    evil = engine(r"^(a+)+$")
    evil_ms = {n: best(partial(evil.search, "a" * n + "!"), repeat=1) * 1e3
               for n in EVIL_LENGTHS}
    return EngineResult(compile_us, filter_ms, evil_ms)


def measure() -> RegexResult:
    assert filter_names([re.compile(p) for p in TYPICAL]) == filter_names(
        [compile_pattern(p) for p in TYPICAL])
    results = {name: engine_result(engine) for name, engine in ENGINES.items()}
    evil_re, evil_re2 = re.compile(r"^(a+)+$"), compile_pattern(r"^(a+)+$")

    def search_re(n: int) -> float:
        return best(lambda: evil_re.search("a" * n + "!"), 1)

    growth = statistics.mean(search_re(n + 1) / search_re(n) for n in (18, 20))
    return RegexResult(
        re=results["re"], re2=results["re2"], re_growth=growth,
        re_28_s=search_re(22) * growth ** 5,
        re2_28_ms=best(lambda: evil_re2.search("a" * 27 + "!"), 1) * 1e3,
        re2_long_ms=best(lambda: evil_re2.search("a" * 100_000 + "!"), 1) * 1e3,
    )
