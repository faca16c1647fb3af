"""What one column of a table holds: the results of the groups that ran for it.

A group that did not run leaves its part ``None``; reading it raises ``LookupError``,
which the table shows as "–".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from benchmarks.exposition import ExpositionResult
from benchmarks.exposition_memory import SteadyMemory
from benchmarks.memory import MemoryResult
from benchmarks.quota import QuotaResult
from benchmarks.regex_engines import EngineResult, RegexResult
from benchmarks.render import RenderResult
from benchmarks.scrape import ScrapesResult
from benchmarks.serve import ServeResult
from benchmarks.steady_state import SteadyResult

T = TypeVar("T")


class NotMeasured(LookupError):
    """The group this part belongs to did not run."""


def measured(part: T | None, name: str) -> T:
    if part is None:
        raise NotMeasured(name)
    return part


@dataclass
class SizeResults:
    """Items 1-5 at one size (jobs of 10 runs)."""

    runs: int
    render_result: RenderResult | None = None
    serve_result: ServeResult | None = None
    steady_result: SteadyResult | None = None
    seconds: float = 0.0

    @property
    def render(self) -> RenderResult:
        return measured(self.render_result, "render")

    @property
    def quota(self) -> QuotaResult:
        return measured(self.serve_result, "serve").quota

    @property
    def memory(self) -> MemoryResult:
        return measured(self.serve_result, "serve").memory

    @property
    def scrapes(self) -> ScrapesResult:
        return measured(measured(self.serve_result, "serve").scrapes, "scrape")

    @property
    def steady(self) -> SteadyResult:
        return measured(self.steady_result, "steady")


@dataclass
class ExpositionSize:
    """Items 6 and 7 at one size (jobs of 50 runs)."""

    runs: int
    exposition_result: ExpositionResult | None = None
    memory_results: dict[str, SteadyMemory] = field(default_factory=dict)

    @property
    def exposition(self) -> ExpositionResult:
        return measured(self.exposition_result, "exposition")

    @property
    def memory(self) -> dict[str, SteadyMemory]:
        return measured(self.memory_results or None, "exposition_memory")


@dataclass(frozen=True)
class RegexColumn:
    """Item 8, one engine's column."""

    name: str
    all: RegexResult

    @property
    def engine(self) -> EngineResult:
        result: EngineResult = getattr(self.all, self.name)
        return result
