"""The whole metrics answer, for `--once` and for every scrape, in the format asked for.

One answer is, in order: the page, that is the run metrics and the per-account and
per-target health kept pre-rendered (``store.py``), then the head: the families
prometheus_client renders (build and reload info, shard, the API counters, process
metrics), each part kept until it changes (``Head``). The head goes last so that the
gzip answer's CRC continues from the page's, computed once (``gzipstream.py``). The
answer is a sequence of byte strings that the server writes one after another (its
Content-Length is their total size): the plain page's blocks as they are, and the
gzip page's segments as one buffer, joined once per page at its first gzip answer.

Formats are negotiated from ``Accept`` as prometheus_client's ``choose_encoder`` does:
OpenMetrics 1.0.0 when the client lists ``application/openmetrics-text``, the text
format 0.0.4 otherwise. Every pre-rendered family is a gauge with no ``"`` in its HELP,
and for such families the two formats have the same bytes; OpenMetrics only adds
``# EOF``, written last with the per-scrape part. So nothing is rendered twice or
converted per scrape: only the small registry part is rendered per format
(``tests/exposition/test_answer.py`` holds the pre-rendered bytes to that).
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from qf_exporter.exposition import gzipstream
from qf_exporter.exposition.store import Page

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Answer:
    """One reply's body as byte strings to send in order, their total ``size``, and the
    headers that describe them.

    The server writes them without joining them: a big plain-TCP answer goes to
    the kernel as it is (``web/server.py``'s ``_send_all``), so a scrape of the plain
    page copies nothing in Python; the rest goes through the event loop in slices.
    """

    parts: tuple[Sequence[bytes], ...]
    size: int
    content_type: str = TEXT
    gzipped: bool = False

    def __iter__(self) -> Iterator[bytes]:
        return itertools.chain.from_iterable(self.parts)


def plain_answer(page: Page, head: bytes = b"", content_type: str = TEXT) -> Answer:
    """The page's text, with ``head`` (``Head``'s text) last."""
    return Answer((page.runs, (page.health, head)), page.size + len(head), content_type)


def gzip_answer(page: Page, head: bytes | HeadText = b"", content_type: str = TEXT) -> Answer:
    """The page as one gzip stream, with ``head`` (``Head``'s text) last."""
    if not isinstance(head, HeadText):
        head = HeadText(head)
    size = len(head.text)
    crc = zlib.crc32(head.text, page.crc)  # the head is a few KB: a microsecond
    tail = (
        page.health_deflated,
        head.segment,
        gzipstream.END,
        gzipstream.trailer(crc, page.size + size),
    )
    body = (gzipstream.HEADER, page.deflated)
    return Answer((body, tail), sum(map(len, body)) + sum(map(len, tail)), content_type, True)


def _q(params: Sequence[str]) -> float:
    """The q-value among a media range's parameters (1 when absent, 0 when malformed)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def wants_openmetrics(accept: str | None) -> bool:
    """Whether ``Accept`` lists OpenMetrics (with q > 0), as ``choose_encoder`` decides."""
    for item in (accept or "").split(","):
        media, *params = item.split(";")
        if media.strip().lower() == "application/openmetrics-text" and _q(params) > 0:
            return True
    return False


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip: listed (or ``*``) with q > 0.

    ``gzip;q=0`` refuses gzip even when ``*`` is also listed (RFC 9110 §12.5.3).
    """
    gzip_q: float | None = None
    star_q: float | None = None
    for item in (accept_encoding or "").split(","):
        coding, *params = item.split(";")
        name = coding.strip().lower()
        if name in ("gzip", "x-gzip"):
            gzip_q = _q(params)
        elif name == "*":
            star_q = _q(params)
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


_EOF = b"# EOF\n"


# The process metrics (CPU, memory, descriptors, from /proc) are read at most once in
# each period of this many seconds, whatever the scrape rate: reading them was a third
# of the event loop's work per gzip scrape at 10,000 runs, and a second is far below
# any scrape interval.
PROCESS_EVERY = 1.0


class HeadText:
    """The head in one format, with its deflate segment made at the first gzip answer
    that needs it (then kept as long as the text is)."""

    __slots__ = ("_segment", "text")

    def __init__(self, text: bytes) -> None:
        self.text = text
        self._segment: bytes | None = None

    @property
    def segment(self) -> bytes:
        if self._segment is None:
            self._segment = gzipstream.segment(self.text)
        return self._segment


class Head:
    """What each scrape adds after the page: prometheus_client's families, in three
    parts, each rendered again only when its key moves:

    - ``counted``, the API request counters and durations (``telemetry.py``), by
      ``version()``, which moves with every change to them (during a poll). At 10,000
      runs rendering them was most of the event loop's time per scrape.
    - ``process``, the process and platform metrics, once per ``PROCESS_EVERY``.
    - ``live``, the build, reload and shard info, by ``live_version()`` (the reload
      state); at every scrape when there is none.

    The text and its gzip segment are kept per format while no key moves, so a scrape
    between changes renders and compresses nothing.
    """

    def __init__(self, live: CollectorRegistry, counted: CollectorRegistry | None = None,
                 version: Callable[[], Hashable] = lambda: 0, *,
                 process: CollectorRegistry | None = None,
                 live_version: Callable[[], Hashable] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        parts: list[tuple[CollectorRegistry, Callable[[], Hashable]]] = []
        if counted is not None:
            parts.append((counted, version))
        if process is not None:
            parts.append((process, lambda: clock() // PROCESS_EVERY))
        # Last: in OpenMetrics it ends the answer with its ``# EOF``.
        # Without a key: a new object at each call, never equal to the one before.
        parts.append((live, live_version or object))
        self._parts = tuple(parts)
        self._kept: dict[bool, tuple[tuple[Hashable, ...], HeadText]] = {}
        self._texts: dict[tuple[int, bool], tuple[Hashable, bytes]] = {}

    def text(self, openmetrics_format: bool) -> HeadText:
        """The head in the format asked for (OpenMetrics ends with ``# EOF``), the same
        object while no part changed."""
        # Keys before rendering: a change made meanwhile moves them for the next scrape.
        keys = tuple(key() for _, key in self._parts)
        kept = self._kept.get(openmetrics_format)
        if kept is not None and kept[0] == keys:
            return kept[1]
        last = len(self._parts) - 1
        text = b"".join(
            self._part(i, registry, key, openmetrics_format, i == last)
            for i, ((registry, _), key) in enumerate(zip(self._parts, keys, strict=True))
        )
        head = HeadText(text)
        self._kept[openmetrics_format] = (keys, head)
        return head

    def _part(self, i: int, registry: CollectorRegistry, key: Hashable,
              openmetrics_format: bool, last: bool) -> bytes:
        kept = self._texts.get((i, openmetrics_format))
        if kept is not None and kept[0] == key:
            return kept[1]
        text = _generate(registry, openmetrics_format)
        if not last:
            text = text.removesuffix(_EOF)
        self._texts[(i, openmetrics_format)] = (key, text)
        return text


def _generate(registry: CollectorRegistry, openmetrics_format: bool) -> bytes:
    """prometheus_client's text of ``registry`` in the format asked for."""
    if openmetrics_format:
        text: bytes = openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]
        return text
    return generate_latest(registry)


def build(
    registry: CollectorRegistry | Head,
    page: Page,
    *,
    openmetrics_format: bool = False,
    gzipped: bool = False,
) -> Answer:
    """The answer to one scrape (or to ``--once``), as byte strings to send in order:
    the page, then ``registry``'s families (rendered whole at each call unless it is a
    ``Head``, which keeps what has not changed)."""
    head_of = registry if isinstance(registry, Head) else Head(registry)
    # prometheus_client's OpenMetrics output ends with "# EOF", and it goes last.
    head = head_of.text(openmetrics_format)
    content_type = OPENMETRICS if openmetrics_format else TEXT
    if gzipped:
        return gzip_answer(page, head, content_type)
    return plain_answer(page, head.text, content_type)
