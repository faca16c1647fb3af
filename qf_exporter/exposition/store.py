"""The run metrics kept as pre-rendered pieces, so that a poll re-renders only what it changed.

The text format wants each family's lines together, so the page is family-major::

    for each family: its HELP/TYPE header, then its lines for bucket 0, bucket 1, ...

Runs, in key order, are split into buckets of at most ``BUCKET_RUNS`` runs (like the
leaves of a B-tree: a full bucket splits in two, an emptied one goes away). A bucket
renders each family's lines of its runs as one piece, and compresses each piece as a
deflate segment of its own (``gzipstream.py``: how segments join into one gzip stream). A
poll that changes k runs marks their buckets dirty; only those are rendered again,
and only the pieces whose text changed are compressed again.

A scrape should not handle thousands of pieces of a few KB: joining them held the GIL
for 23 ms per plain scrape at 10,000 runs, and writing them one by one cost a system
call each. So within each family, consecutive buckets' pieces are kept joined in
blocks of about ``BLOCK_BYTES`` (and their segments likewise), and a bucket's pieces
are views into its blocks, so that nothing is held twice. A changed piece has its
block joined again (a copy of ~64 KB); the page is the list of blocks, a few hundred
at 10,000 runs, which the server hands to the kernel as they are. This is what
kube-state-metrics does with its per-object metric store, adapted to the order the
text format needs.

Where blocks end: each bucket draws a fixed number u in [0, 1) from its first key,
and its first rendering ends a block after its piece of a family when
``u < len(piece) / BLOCK_BYTES`` (or ``u < 1 / BLOCK_BUCKETS``). Blocks thus hold
about ``BLOCK_BYTES`` whatever a family's line size, and where they end depends only
on the buckets around, so adding or removing a bucket changes only the blocks beside
it.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from operator import attrgetter

from qf_exporter.exposition import gzipstream
from qf_exporter.exposition.render import (
    FAMILIES,
    HEADERS,
    LAST_READ,
    gc_paused,
    render_families,
)
from qf_exporter.polling.snapshot import RunKey as Key
from qf_exporter.qianfan.models import Run

Bytes = bytes | memoryview

# Runs per bucket, measured (docs/design.md, "How the exposition is kept"): smaller
# buckets make a poll that changes a few runs cheaper, larger ones compress better and
# make fewer pieces.
BUCKET_RUNS = 32
# Bytes of text per block, measured (docs/design.md): the kernel takes blocks of 32 KiB and more,
# gathered by one sendmsg(), as fast as one buffer; smaller ones cost it per block.
BLOCK_BYTES = 64 << 10
# And about this many buckets at most, so that joining a family with short lines again
# (the few running runs' progress) does not walk every bucket.
BLOCK_BUCKETS = 64


_HEADERS = tuple(HEADERS[family.name] for family in FAMILIES)
_HEADERS_DEFLATED = tuple(gzipstream.segment(header) for header in _HEADERS)


class _Bucket:
    """Up to ``BUCKET_RUNS`` runs adjacent in key order, and their rendered lines."""

    __slots__ = ("after", "blocks", "cuts", "deflated", "dirty", "families", "keys", "plain",
                 "runs")

    def __init__(self, runs: dict[Key, Run]) -> None:
        self.runs = runs
        self.keys = sorted(runs)
        self.dirty = True
        # While dirty: the families to render again (indices into FAMILIES), None for all.
        self.families: set[int] | None = None
        # Per family, once rendered: the piece (a view into its block once joined), its
        # deflate segment, whether a block ends after it, and that block.
        self.plain: list[Bytes] = []
        self.deflated: list[Bytes] = []
        self.cuts: tuple[bool, ...] = ()
        self.blocks: list[_Block | None] = [None] * len(FAMILIES)
        # The bucket before this one when its segments were compressed: each segment
        # has the text of that bucket's piece of the family as its dictionary.
        self.after: _Bucket | None = None

    def mark(self, family: int | None = None) -> None:
        """Make the bucket dirty: ``family`` (an index into FAMILIES) to render again,
        or every family (None)."""
        if family is None:
            self.families = None
        elif not self.dirty:
            self.families = {family}
        elif self.families is not None:
            self.families.add(family)
        self.dirty = True

    def render(self, block_bytes: int) -> list[int]:
        """Render the dirty families again; returns those whose text changed."""
        only = sorted(self.families) if self.families is not None and self.cuts else None
        texts = render_families([self.runs[key] for key in self.keys], only)
        self.dirty, self.families = False, None
        if only is not None:
            changed = []
            for f, text in zip(only, texts, strict=True):
                if not _same(text, self.plain[f]):
                    self.plain[f] = text
                    changed.append(f)
            return changed
        if not self.cuts:
            u = zlib.crc32("\0".join(self.keys[0]).encode()) / 2**32
            self.plain = list(texts)
            self.deflated = [b""] * len(texts)
            self.cuts = tuple(u < max(len(text) / block_bytes, 1 / BLOCK_BUCKETS)
                              for text in texts)
            return list(range(len(texts)))
        changed = [f for f, text in enumerate(texts) if not _same(text, self.plain[f])]
        for f in changed:
            self.plain[f] = texts[f]
        return changed

    def compress(self, families: Iterable[int], after: _Bucket | None) -> None:
        """Compress the pieces of ``families`` again, to follow ``after``'s pieces.

        Compressed apart, the page was twice the size of one gzip stream (a piece is a
        few KB); with the piece before as dictionary, 1.1 times. A piece is compressed
        again only when its text or the text before it changed (compressing is a third
        of a poll's cost).
        """
        for f in families:
            before = after.plain[f] if after is not None else b""
            self.deflated[f] = gzipstream.segment(self.plain[f], before)
        self.after = after


# Every field of a run that ``==`` compares but its last read: most reads change only
# that (every run of a job is read again at each poll of it), and then only the
# last-read family's lines change, the one family rendered again. (Comparing these and
# then the last read also takes half the time of the dataclass's ``==``.)
_BUT_LAST_READ = attrgetter(*(f.name for f in fields(Run) if f.compare and f.name != "last_read"))
_LAST_READ = FAMILIES.index(LAST_READ)
_UNCHANGED = -1


def _change(old: Run | None, new: Run) -> int | None:
    """What a run's lines need: ``_UNCHANGED`` nothing, ``_LAST_READ`` that family
    alone (it was only read again), None every family (it changed, or is new)."""
    if old is None:
        return None
    if old is new:
        return _UNCHANGED
    if _BUT_LAST_READ(old) != _BUT_LAST_READ(new):
        return None
    return _LAST_READ if old.last_read != new.last_read else _UNCHANGED


def _same(text: bytes, old: Bytes) -> bool:
    # A view compared with bytes goes item by item (8 us for 5 KB); a copy and memcmp
    # take 0.2 us.
    return len(text) == len(old) and text == bytes(old)


class _Block:
    """One family's pieces of consecutive buckets, joined (text, and deflate segments)."""

    __slots__ = ("buckets", "deflated", "family", "plain", "stale")

    def __init__(self, family: int, buckets: tuple[_Bucket, ...]) -> None:
        self.family = family
        self.buckets = buckets
        self.stale = False
        self.plain = self.deflated = b""
        self.join()

    def join(self) -> None:
        """Join the buckets' pieces, then point each bucket at its part of the result."""
        f = self.family
        self.plain = b"".join([bucket.plain[f] for bucket in self.buckets])
        self.deflated = b"".join([bucket.deflated[f] for bucket in self.buckets])
        plain, deflated = memoryview(self.plain), memoryview(self.deflated)
        at = at_z = 0
        for bucket in self.buckets:
            size, size_z = len(bucket.plain[f]), len(bucket.deflated[f])
            bucket.plain[f] = plain[at : at + size]
            bucket.deflated[f] = deflated[at_z : at_z + size_z]
            bucket.blocks[f] = self
            at, at_z = at + size, at_z + size_z
        self.stale = False


@dataclass(frozen=True)
class Page:
    """What every scrape serves until the next poll: the run metrics and the health.

    ``runs``/``runs_deflated`` are the run metrics (family headers and blocks, and
    the same as deflate segments); ``health``/``health_deflated`` the per-account and
    per-target health. A scrape adds its own head (what prometheus_client renders on
    the spot) after them (``answer.py``): the text format does not mind the order of
    families, and the gzip trailer's CRC then follows on from the page's ``crc``,
    computed once.
    """

    runs: tuple[bytes, ...]
    runs_deflated: tuple[bytes, ...]
    generation: int
    health: bytes = b""
    health_deflated: bytes = b""

    @cached_property
    def crc(self) -> int:
        """The CRC-32 of the page's text."""
        # At the first gzip answer for this page, not per poll: at 10,000 runs the CRC of
        # 28 MB costs a few ms, which a poll that changed one run should not pay.
        crc = 0
        for piece in self.runs:
            crc = zlib.crc32(piece, crc)
        return zlib.crc32(self.health, crc)

    @cached_property
    def size(self) -> int:
        """The length of the page's text."""
        return sum(map(len, self.runs)) + len(self.health)

    @cached_property
    def deflated(self) -> bytes:
        """The run metrics' deflate segments, joined."""
        # The compressed page is small (1.2 MB at 10,000 runs): joined once per page, at
        # its first gzip answer, it is one buffer to send instead of ~600 segments of a
        # few KB each, which the kernel gathers at a cost per segment.
        return b"".join(self.runs_deflated)


class RunStore:
    """The runs of every account, rendered in buckets; not thread-safe (the poller's lock)."""

    def __init__(self, bucket_runs: int = BUCKET_RUNS, block_bytes: int = BLOCK_BYTES) -> None:
        self._size = max(2, bucket_runs)
        self._block_bytes = max(1, block_bytes)
        self._buckets: list[_Bucket] = []
        self._blocks: list[list[_Block]] = [[] for _ in FAMILIES]  # each family's, in order
        self._regroup = False  # buckets were added or removed since the blocks were made
        self._firsts: list[Key] = []  # each bucket's first key, for bisecting
        self._runs: dict[Key, Run] = {}
        self._plain: tuple[bytes, ...] = _HEADERS
        self._deflated: tuple[bytes, ...] = _HEADERS_DEFLATED

    def __len__(self) -> int:
        return len(self._runs)

    def replace(self, old: Sequence[Run], new: Sequence[Run]) -> int:
        """Swap the runs ``old`` (what an account had) for ``new``; returns runs changed.

        Only the buckets of added, changed and removed runs are rendered again, and of a
        run read again with only its last read changed, only that family. The poller
        keeps the runs of a target it did not read as the same objects, in the same
        order, so the usual poll costs one identity check per run and a comparison per
        run it read.
        """
        if len(old) == len(new):
            pairs = [(a, b) for a, b in zip(old, new, strict=True) if a is not b]
            if all(a.key == b.key for a, b in pairs):
                return self._apply([(b, _change(a, b)) for a, b in pairs])
        incoming = {run.key: run for run in new}
        removed = [run.key for run in old if run.key not in incoming and run.key in self._runs]
        for key in removed:
            self._remove(key)
        return self._apply([(run, _change(self._runs.get(key), run))
                            for key, run in incoming.items()], len(removed))

    def _apply(self, changes: Iterable[tuple[Run, int | None]], removed: int = 0) -> int:
        """Put each run that ``_change`` found changed; the runs changed and removed."""
        count = removed
        for run, family in changes:
            if family != _UNCHANGED:
                self._put(run.key, run, family)
                count += 1
        if count:
            self._refresh()
        return count

    # --- the buckets ----------------------------------------------------------------------

    def _index(self, key: Key) -> int:
        return max(0, bisect_right(self._firsts, key) - 1)

    def _put(self, key: Key, run: Run, family: int | None = None) -> None:
        """Add or change a run; ``family``: the one family its change shows in (the
        run was there before), None for any."""
        if not self._buckets:
            self._buckets.append(_Bucket({}))
            self._firsts.append(key)
            self._regroup = True
        i = self._index(key)
        bucket = self._buckets[i]
        if key not in bucket.runs:
            insort(bucket.keys, key)
            self._firsts[i] = bucket.keys[0]
            family = None
        bucket.runs[key] = run
        self._runs[key] = run
        bucket.mark(family)
        if len(bucket.keys) > self._size:
            self._split(i)

    def _split(self, i: int) -> None:
        bucket = self._buckets[i]
        half = len(bucket.keys) // 2
        upper = _Bucket({key: bucket.runs.pop(key) for key in bucket.keys[half:]})
        del bucket.keys[half:]
        bucket.mark()
        self._buckets.insert(i + 1, upper)
        self._firsts.insert(i + 1, upper.keys[0])
        self._regroup = True

    def _remove(self, key: Key) -> None:
        i = self._index(key)
        bucket = self._buckets[i]
        del bucket.runs[key]
        bucket.keys.remove(key)
        del self._runs[key]
        bucket.mark()
        if not bucket.keys:
            del self._buckets[i]
            del self._firsts[i]
            self._regroup = True
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
        bucket.mark()
        self._regroup = True

    def page(self, generation: int, health: bytes = b"") -> Page:
        """The page as it stands, with ``health`` (rendered per snapshot) beside it."""
        return Page(
            self._plain, self._deflated, generation, health, gzipstream.segment(health)
        )

    # --- the page -------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Bring the buckets up to date, join the blocks they changed, list the page's
        blocks (with the cyclic garbage collector paused: ``render.gc_paused``)."""
        with gc_paused():
            if self._regroup:
                self._group()
            else:
                self._rejoin()
            self._plain, self._deflated = _listing(self._blocks)

    def _update(self, bucket: _Bucket, before: _Bucket | None,
                changed_before: list[int]) -> list[int]:
        """Bring ``bucket`` up to date, ``before`` (the bucket before it) being so
        already: render it again when dirty, compress it again where its text or the
        text before it (``changed_before``, the families whose text changed in
        ``before``) changed, and mark stale the blocks holding what changed.

        Returns the families whose text changed in ``bucket``.
        """
        changed = bucket.render(self._block_bytes) if bucket.dirty else []
        redo: Iterable[int] = ()
        if bucket.after is not before:
            redo = range(len(FAMILIES))
        elif changed or changed_before:
            redo = sorted({*changed, *changed_before})
        if redo:
            bucket.compress(redo, before)
            for f in redo:
                block = bucket.blocks[f]
                if block is not None:
                    block.stale = True
        return changed

    def _rejoin(self) -> None:
        """Bring every bucket up to date in page order, then join again the blocks that
        hold what changed (no bucket came or went, so the blocks stay where they are)."""
        changed: list[int] = []
        before: _Bucket | None = None
        for bucket in self._buckets:
            changed = self._update(bucket, before, changed)
            before = bucket
        for blocks in self._blocks:
            for block in blocks:
                if block.stale:
                    block.join()

    def _group(self) -> None:
        """Bring every bucket up to date and cut every family into blocks again, after
        buckets came or went.

        A block with the same buckets as before, none of whose pieces changed, is kept
        as it is: only the blocks beside an added or removed bucket are joined again.
        Buckets are brought up to date in page order and each block is joined as soon
        as its last bucket is, so that a first poll of 10,000 runs never holds all its
        pieces beside all its blocks (the heap would keep that high-water mark).
        """
        kept = {(block.family, block.buckets): block
                for blocks in self._blocks for block in blocks}
        grouped: list[list[_Block]] = [[] for _ in FAMILIES]
        starts = [0] * len(FAMILIES)
        last = len(self._buckets) - 1
        changed: list[int] = []
        before: _Bucket | None = None
        for i, bucket in enumerate(self._buckets):
            changed = self._update(bucket, before, changed)
            before = bucket
            for f, cut in enumerate(bucket.cuts):
                if cut or i == last:
                    members = tuple(self._buckets[starts[f] : i + 1])
                    block = kept.get((f, members))
                    if block is None or block.stale:
                        block = _Block(f, members)
                    grouped[f].append(block)
                    starts[f] = i + 1
        self._blocks = grouped
        self._regroup = False


def _listing(families: list[list[_Block]]) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """The page, plain and deflated: each family's header, then its blocks (empty ones
    left out)."""
    plain: list[bytes] = []
    deflated: list[bytes] = []
    for header, segment, blocks in zip(_HEADERS, _HEADERS_DEFLATED, families, strict=True):
        plain.append(header)
        plain.extend([block.plain for block in blocks if block.plain])
        deflated.append(segment)
        deflated.extend([block.deflated for block in blocks if block.deflated])
    return tuple(plain), tuple(deflated)
