"""The whole metrics answer, for `--once` and for every scrape, in the format asked for.

One answer is, in order: the run metrics and the per-account and per-target health,
kept pre-rendered (``store.py``), then the families prometheus_client renders on the
spot (build and reload info, shard, the API counters, process metrics). The per-scrape
part goes last so that the gzip answer's CRC continues from the page's, computed once
(``gzipstream.py``). The answer is a sequence of byte pieces, never joined: the server
writes them one after another, and its Content-Length is the sum of their lengths.

Formats are negotiated from ``Accept`` as prometheus_client's ``choose_encoder`` does:
OpenMetrics 1.0.0 when the client lists ``application/openmetrics-text``, the text
format 0.0.4 otherwise. Every pre-rendered family is a gauge with no ``"`` in its HELP,
and for such families the two formats have the same bytes; OpenMetrics only adds
``# EOF``, written last with the per-scrape part. So nothing is rendered twice or
converted per scrape: only the small registry part is rendered per format
(``test_exposition`` holds the pre-rendered bytes to that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from qf_exporter.exposition.store import Answer, Rendered

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@dataclass(frozen=True)
class Exposition:
    """An answer's body as pieces, with the headers that describe it."""

    pieces: Answer
    content_type: str
    gzipped: bool

    def __len__(self) -> int:
        return self.pieces.size


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


def build(
    registry: CollectorRegistry,
    rendered: Rendered,
    *,
    openmetrics_format: bool = False,
    gzipped: bool = False,
) -> Exposition:
    """The answer to one scrape (or to ``--once``), as pieces to send in order."""
    if openmetrics_format:
        # prometheus_client's OpenMetrics output ends with "# EOF", and it goes last.
        head = openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]
        content_type = OPENMETRICS
    else:
        head = generate_latest(registry)
        content_type = TEXT
    pieces = rendered.gzipped(head) if gzipped else rendered.plain(head)
    return Exposition(pieces, content_type, gzipped)
