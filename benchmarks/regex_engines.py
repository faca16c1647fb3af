#!/usr/bin/env python3
"""Discovery patterns: Python's ``re`` against RE2 (``google-re2``), the engine the
exporter compiles ``discovery.include``/``exclude`` with.

    python benchmarks/regex_engines.py

Prints, for both engines: compile time of typical patterns, the time to filter 10,000
job names (what a discovery listing does), and ``^(a+)+$`` against ``'a' * n + '!'``,
which backtracks exponentially in ``re`` (each extra character doubles the time).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable

from qf_exporter.patterns import compile_pattern

TYPICAL = [r"^prod-", r"-tmp$", r"(?i)^(sft|dpo)-\w+-\d{3,}$", r"ernie|qwen"]
NAMES = [f"{'prod' if i % 3 else 'dev'}-sft-chat-{i:05d}{'-tmp' if i % 7 == 0 else ''}"
         for i in range(10_000)]


def best(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    engines: dict[str, Callable[[str], object]] = {"re": re.compile, "re2": compile_pattern}
    print("| measurement | re | re2 |")
    print("|---|---|---|")

    def compile_all(engine: Callable[[str], object]) -> None:
        for pattern in TYPICAL:
            re.purge()
            engine(pattern)

    row = [best(lambda e=e: compile_all(e)) / len(TYPICAL) * 1e6 for e in engines.values()]
    print(f"| compile one typical pattern | {row[0]:.1f} µs | {row[1]:.1f} µs |")

    compiled = {name: [e(p) for p in TYPICAL] for name, e in engines.items()}

    def filter_names(patterns: list[object]) -> int:
        return sum(
            1 for n in NAMES if any(p.search(n) for p in patterns)  # type: ignore[attr-defined]
        )

    assert filter_names(compiled["re"]) == filter_names(compiled["re2"])
    row = [best(lambda ps=ps: filter_names(ps)) * 1e3 for ps in compiled.values()]
    print(f"| filter 10,000 job names through 4 patterns | {row[0]:.1f} ms | {row[1]:.1f} ms |")

    evil = {name: e(r"^(a+)+$") for name, e in engines.items()}
    for n in (16, 18, 20, 22):
        text = "a" * n + "!"
        row = [best(lambda p=p, t=text: p.search(t), repeat=1) * 1e3 for p in evil.values()]
        print(f"| `^(a+)+$` on {n + 1} characters | {row[0]:.1f} ms | {row[1]:.3f} ms |")
    growth = statistics.mean(
        best(lambda n=n: evil["re"].search("a" * (n + 1) + "!"), 1)
        / best(lambda n=n: evil["re"].search("a" * n + "!"), 1)
        for n in (18, 20)
    )
    at_28 = best(lambda: evil["re"].search("a" * 22 + "!"), 1) * growth ** 5
    re2_28 = best(lambda: evil["re2"].search("a" * 27 + "!"), 1)
    re2_long = best(lambda: evil["re2"].search("a" * 100_000 + "!"), 1)
    print(f"| `^(a+)+$` on 28 characters | ≈{at_28:.0f} s (extrapolated, ×{growth:.1f} per "
          f"character) | {re2_28 * 1e3:.3f} ms |")
    print(f"| `^(a+)+$` on 100,001 characters | never | {re2_long * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
