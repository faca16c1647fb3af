"""The heap settler: frozen after each publication, collected whole every FULL_EVERY."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from qf_exporter.util.heap import FULL_EVERY, HeapSettler


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process's heap as it was


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None




def test_settling_freezes_the_heap_and_collects_it_whole_every_full_every() -> None:
    now = [1000.0]
    settler = HeapSettler(clock=lambda: now[0])
    settler.settle()  # the first: a whole collection, then frozen
    assert gc.get_freeze_count() > 0
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    cycle = weakref.ref(a)
    settler.settle()
    del a, b
    # Frozen before it became garbage: the collector leaves it alone ...
    gc.collect()
    assert cycle() is not None
    now[0] += FULL_EVERY / 2
    settler.settle()
    assert cycle() is not None
    # ... until the whole heap is collected again.
    now[0] += FULL_EVERY / 2
    settler.settle()
    assert cycle() is None
    assert gc.get_freeze_count() > 0


def test_frozen_objects_are_still_freed_when_their_last_reference_goes() -> None:
    settler = HeapSettler(clock=lambda: 0.0)
    node = _Node()
    alive = weakref.ref(node)
    settler.settle()
    del node
    assert alive() is None
