"""Item 5: resident memory and CPU time of one full poll + render in a fresh exporter
process, and while it serves the scrapes (the process of ``serve.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.common import size_label


@dataclass(frozen=True)
class MemoryResult:
    rss_start_kb: int
    rss_imported_kb: int
    rss_after_poll_kb: int
    hwm_after_poll_kb: int
    cpu_poll_s: float
    wall_poll_s: float
    hwm_reset: bool
    targets_up: int
    targets: int
    # While serving the scrapes (None when no scrape ran):
    hwm_serving_kb: int | None = None
    cpu_serving_s: float | None = None
    scrapes_served: int = 0

    @property
    def cpu_per_scrape_ms(self) -> float:
        if self.cpu_serving_s is None or not self.scrapes_served:
            raise ValueError("no scrape was served")
        return self.cpu_serving_s * 1000 / self.scrapes_served


def notes(runs: int, m: MemoryResult) -> list[str]:
    if m.targets_up != m.targets:
        return [f"{size_label(runs)}: an exporter poll read only {m.targets_up} "
                f"of {m.targets} targets"]
    return []
