"""The run metrics kept as pre-rendered pieces, so that a poll re-renders only what it changed.

The text format wants each family's lines together, so the page is family-major::

    for each family: its HELP/TYPE header, then its lines for bucket 0, bucket 1, ...

Runs, in key order, are split into buckets of at most ``BUCKET_RUNS`` runs (like the
leaves of a B-tree: a full bucket splits in two, an emptied one goes away). For each
bucket and family the store keeps that family's lines of the bucket's runs as bytes,
and the same bytes compressed as a deflate segment of their own (``gzipstream.py``
joins segments into one gzip stream). A poll that changes k runs marks their buckets
dirty; only those are rendered and compressed again, and the page is a new list of
references to the pieces, which a scrape writes without joining them. This is what
kube-state-metrics does with its per-object metric store, adapted to the order the
text format needs.
"""

from __future__ import annotations

import gc
import zlib
from bisect import bisect_right, insort
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from qf_exporter import gzipstream
from qf_exporter.models import Run
from qf_exporter.render import FAMILIES, HEADERS, render_families

Key = tuple[str, str, str, str]

# Runs per bucket, measured (README "How the exposition is kept"): smaller buckets make a
# poll that changes a few runs cheaper, larger ones compress better and make fewer pieces.
BUCKET_RUNS = 32


_HEADERS = tuple(HEADERS[family.name] for family in FAMILIES)
_HEADERS_DEFLATED = tuple(gzipstream.segment(header) for header in _HEADERS)


class _Bucket:
    """Up to ``BUCKET_RUNS`` runs adjacent in key order, and their rendered lines."""

    __slots__ = ("deflated", "dirty", "keys", "plain", "runs")

    def __init__(self, runs: dict[Key, Run]) -> None:
        self.runs = runs
        self.keys = sorted(runs)
        self.dirty = True
        self.plain: tuple[bytes, ...] = ()  # one piece per family, once rendered
        self.deflated: tuple[bytes, ...] = ()

    def render(self) -> None:
        """Render every family again, but compress only the pieces whose text changed.

        A run read again usually changes one or two families (its last-read time, its
        duration); compressing is a third of the cost, so the others keep their bytes and
        their segment.
        """
        old = {p: (p, z) for p, z in zip(self.plain, self.deflated, strict=True)}
        pieces = [
            old.get(piece) or (piece, gzipstream.segment(piece))
            for piece in render_families([self.runs[key] for key in self.keys])
        ]
        self.plain = tuple(p for p, _ in pieces)
        self.deflated = tuple(z for _, z in pieces)
        self.dirty = False


@dataclass(frozen=True)
class Rendered:
    """Everything a scrape serves that only a poll changes, as pieces to write in order.

    ``runs``/``runs_deflated`` are the run metrics (plain pieces, and the same pieces
    as deflate segments); ``health``/``health_deflated`` the per-account and
    per-target health. A scrape adds its own ``head`` (what prometheus_client renders
    on the spot) after them: the text format does not mind the order of families, and
    the gzip trailer's CRC then follows on from the page's, computed once.
    """

    runs: tuple[bytes, ...]
    runs_deflated: tuple[bytes, ...]
    generation: int
    health: bytes = b""
    health_deflated: bytes = b""

    @property
    def text(self) -> bytes:
        """The run metrics as one string (for ``--once`` and the tests, not for scrapes)."""
        return b"".join(self.runs)

    @cached_property
    def _crc(self) -> int:
        # At the first gzip answer for this page, not per poll: at 10,000 runs the CRC of
        # 28 MB costs a few ms, which a poll that changed one run should not pay.
        crc = 0
        for piece in self.runs:
            crc = zlib.crc32(piece, crc)
        return zlib.crc32(self.health, crc)

    @cached_property
    def _size(self) -> int:
        return sum(map(len, self.runs)) + len(self.health)

    @cached_property
    def _plain_spans(self) -> tuple[tuple[int, int], ...]:
        return _spans(self.runs)

    @cached_property
    def _deflated_spans(self) -> tuple[tuple[int, int], ...]:
        return _spans(self.runs_deflated)

    @cached_property
    def _deflated_size(self) -> int:
        return sum(map(len, self.runs_deflated)) + len(self.health_deflated)

    def plain(self, head: bytes = b"") -> Answer:
        """The answer's text, with ``head`` (rendered per scrape) last."""
        return Answer(self.runs, self._plain_spans, (self.health, head),
                      self._size + len(head))

    def gzipped(self, head: bytes = b"") -> Answer:
        """The answer as one gzip stream, with ``head`` (rendered per scrape) last."""
        crc = zlib.crc32(head, self._crc)
        tail = (
            self.health_deflated,
            gzipstream.segment(head),
            gzipstream.END,
            gzipstream.trailer(crc, self._size + len(head)),
        )
        size = len(gzipstream.HEADER) + self._deflated_size + sum(map(len, tail[1:]))
        return Answer(self.runs_deflated, self._deflated_spans, tail, size,
                      before=gzipstream.HEADER)


# An answer goes out in writes of about this size: the page's thousands of small pieces
# cost a system call and a return to Python each when written one by one, and joining
# them all would copy 28 MB per scrape at 10,000 runs.
WRITE_BYTES = 1 << 20


def _spans(pieces: tuple[bytes, ...]) -> tuple[tuple[int, int], ...]:
    """Runs of consecutive pieces of about ``WRITE_BYTES`` together, as index ranges."""
    spans: list[tuple[int, int]] = []
    start = held = 0
    for i, piece in enumerate(pieces):
        if held and held + len(piece) > WRITE_BYTES:
            spans.append((start, i))
            start, held = i, 0
        held += len(piece)
    if start < len(pieces):
        spans.append((start, len(pieces)))
    return tuple(spans)


class Answer:
    """One answer as writes of about ``WRITE_BYTES``, joined only as they are sent.

    Iterating gives the bytes in order; ``size`` is their total, known without joining.
    The ranges are worked out once per page, so a scrape costs a few dozen joins, not a
    step per piece.
    """

    def __init__(self, pieces: tuple[bytes, ...], spans: tuple[tuple[int, int], ...],
                 tail: tuple[bytes, ...], size: int, *, before: bytes = b"") -> None:
        self._pieces, self._spans, self._tail, self._before = pieces, spans, tail, before
        self.size = size

    def __iter__(self) -> Iterator[bytes]:
        if self._before:
            yield self._before
        pieces = self._pieces
        for start, end in self._spans:
            yield pieces[start] if end - start == 1 else b"".join(pieces[start:end])
        yield from (part for part in self._tail if part)


def render(runs: Iterable[Run], generation: int, health: bytes = b"") -> Rendered:
    """Render ``runs`` from scratch (what the store holds after adding them all)."""
    store = RunStore()
    store.replace((), list(runs))
    return store.rendered(generation, health)


class RunStore:
    """The runs of every account, rendered in buckets; not thread-safe (the poller's lock)."""

    def __init__(self, bucket_runs: int = BUCKET_RUNS) -> None:
        self._size = max(2, bucket_runs)
        self._buckets: list[_Bucket] = []
        self._firsts: list[Key] = []  # each bucket's first key, for bisecting
        self._runs: dict[Key, Run] = {}
        self._plain: tuple[bytes, ...] = _HEADERS
        self._deflated: tuple[bytes, ...] = _HEADERS_DEFLATED

    def __len__(self) -> int:
        return len(self._runs)

    def replace(self, old: Sequence[Run], new: Sequence[Run]) -> int:
        """Swap the runs ``old`` (what an account had) for ``new``; returns runs changed.

        Only the buckets of added, changed and removed runs are rendered again. The
        poller keeps the runs of a target it did not read as the same objects, in the
        same order, so the usual poll costs one identity check per run and an equality
        check per run it read.
        """
        if len(old) == len(new):
            pairs = [(a, b) for a, b in zip(old, new, strict=True) if a is not b]
            if all(a.key == b.key for a, b in pairs):
                changed = [b for a, b in pairs if a != b]
                for run in changed:
                    self._put(run.key, run)
                if changed:
                    self._refresh()
                return len(changed)
        incoming = {run.key: run for run in new}
        count = 0
        for run in old:
            if run.key not in incoming and run.key in self._runs:
                self._remove(run.key)
                count += 1
        for key, run in incoming.items():
            previous = self._runs.get(key)
            if previous is run or previous == run:
                continue
            self._put(key, run)
            count += 1
        if count:
            self._refresh()
        return count

    # --- the buckets ----------------------------------------------------------------------

    def _index(self, key: Key) -> int:
        return max(0, bisect_right(self._firsts, key) - 1)

    def _put(self, key: Key, run: Run) -> None:
        if not self._buckets:
            self._buckets.append(_Bucket({}))
            self._firsts.append(key)
        i = self._index(key)
        bucket = self._buckets[i]
        if key not in bucket.runs:
            insort(bucket.keys, key)
            self._firsts[i] = bucket.keys[0]
        bucket.runs[key] = run
        self._runs[key] = run
        bucket.dirty = True
        if len(bucket.keys) > self._size:
            self._split(i)

    def _split(self, i: int) -> None:
        bucket = self._buckets[i]
        half = len(bucket.keys) // 2
        upper = _Bucket({key: bucket.runs.pop(key) for key in bucket.keys[half:]})
        del bucket.keys[half:]
        bucket.dirty = True
        self._buckets.insert(i + 1, upper)
        self._firsts.insert(i + 1, upper.keys[0])


    def _remove(self, key: Key) -> None:
        i = self._index(key)
        bucket = self._buckets[i]
        del bucket.runs[key]
        bucket.keys.remove(key)
        del self._runs[key]
        bucket.dirty = True
        if not bucket.keys:
            del self._buckets[i]
            del self._firsts[i]
        else:
            self._firsts[i] = bucket.keys[0]
            self._merge_small(i)

    def _merge_small(self, i: int) -> None:
        """Fold a bucket that fell under a quarter into its right neighbour when both fit."""
        if i + 1 >= len(self._buckets) or len(self._buckets[i].keys) * 4 >= self._size:
            return
        bucket, right = self._buckets[i], self._buckets[i + 1]
        if len(bucket.keys) + len(right.keys) > self._size:
            return
        bucket.runs.update(right.runs)
        bucket.keys.extend(right.keys)  # right's keys all sort after bucket's
        del self._buckets[i + 1]
        del self._firsts[i + 1]
        bucket.dirty = True

    def rendered(self, generation: int, health: bytes = b"") -> Rendered:
        """The page as it stands, with ``health`` (rendered per snapshot) beside it."""
        return Rendered(
            self._plain, self._deflated, generation, health, gzipstream.segment(health)
        )

    # --- the page -------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Render the dirty buckets, then list every piece in page order.

        The cyclic garbage collector is paused meanwhile: rendering makes many objects
        and no cycles, and the collections it would trigger cost ~15 % of the time.
        """
        paused = gc.isenabled()
        gc.disable()
        try:
            for bucket in self._buckets:
                if bucket.dirty:
                    bucket.render()
            plain: list[bytes] = []
            deflated: list[bytes] = []
            for header, segment, texts, segments in zip(
                _HEADERS, _HEADERS_DEFLATED, *self._columns(), strict=True
            ):
                plain.append(header)
                plain.extend(filter(None, texts))  # a family with no line in a bucket
                deflated.append(segment)
                deflated.extend(filter(None, segments))
            self._plain, self._deflated = tuple(plain), tuple(deflated)
        finally:
            if paused:
                gc.enable()

    def _columns(self) -> tuple[list[tuple[bytes, ...]], list[tuple[bytes, ...]]]:
        """The pieces family by family (plain, compressed): each bucket holds its own
        family by family, and ``zip(*...)`` turns them round in C."""
        if not self._buckets:
            return [() for _ in _HEADERS], [() for _ in _HEADERS]
        plain = list(zip(*(b.plain for b in self._buckets), strict=True))
        deflated = list(zip(*(b.deflated for b in self._buckets), strict=True))
        return plain, deflated
