"""Whole pages made in one go, for the tests and the benchmark.

The exporter never renders a page from scratch: the run store keeps it in buckets and
renders again only what a poll changed. These give what that must equal.
"""

from __future__ import annotations

from collections.abc import Iterable

from qf_exporter.exposition.render import FAMILIES, HEADERS, gc_paused, render_families
from qf_exporter.exposition.store import Page, RunStore
from qf_exporter.qianfan.models import Run

# Runs rendered at a time. A chunk's short-lived line strings (~70 KB) stay in the CPU
# cache and in memory the allocator has just freed; building all 200,000 lines of
# 10,000 runs before joining them touched ~80 MB of fresh pages and took 40 % longer.
CHUNK = 500


def render_runs(runs: Iterable[Run], chunk: int = CHUNK) -> bytes:
    """The run metrics of ``runs`` as exposition text (sorted, so output is stable):
    each family's header, then its lines, rendered ``chunk`` runs at a time."""
    ordered = sorted(runs, key=lambda run: run.key)
    with gc_paused():
        chunks = [render_families(ordered[i : i + chunk])
                  for i in range(0, len(ordered), chunk)]
        return b"".join([piece for f, family in enumerate(FAMILIES)
                         for piece in (HEADERS[family.name], *(c[f] for c in chunks))])


def full_page(runs: Iterable[Run], generation: int, health: bytes = b"") -> Page:
    """The page of ``runs`` from scratch (what the store holds after adding them all)."""
    store = RunStore()
    store.replace((), list(runs))
    return store.page(generation, health)


def page_text(page: Page) -> bytes:
    """The page's run metrics as one string."""
    return b"".join(page.runs)
