"""Who is served: basic auth and the rate limit, in an order that keeps authorised
scrapers served while other clients flood the exporter with wrong passwords.

For every request, before anything else is done:

1. A password that was checked before is answered from the cache on the event loop (an
   HMAC and a lookup), never behind queued bcrypt work.
2. ``rate_limit`` is a token bucket per client: per address (an IPv6 address by its
   /64, which one host can fill), and an authorised user at an address has a bucket of
   its own, so that a flood from a shared address (a NAT, loopback) cannot use it up.
3. A password not in the cache costs a bcrypt run (tens of milliseconds). The gate runs
   before the request takes a request slot (the server's ``admit``), so a check
   waiting holds none. At most ``max_checks`` run or wait in the bcrypt pool, one at a
   time per address (so one address has at most one of the two bcrypt threads).
   - A connection's first check (``Request.connection``) waits its turn in a fair
     queue: one line per address, the addresses served in turn, each line in order of
     arrival. A connection has one request at a time, so the queue holds at most one
     entry per connection (``--web.max-connections``). So a scraper whose password is
     not cached yet is checked behind at most one check per other connection, even at
     the address of a flood that opens a new connection for every request.
   - A connection that has failed a check gets ``check_burst`` checks per address,
     refilled at one per ``check_interval`` seconds (a check that succeeds is given
     back), and only when no first check of its address waits; beyond that it is
     answered 429 at once, without a bcrypt run. So a keep-alive flood of wrong
     passwords gets one check per connection, then one a second for its address.

The tables of clients hold at most ``max_clients`` entries each, the least recently
used dropped first: a dropped bucket was full again or nearly, and a new one is full,
so a spray of source addresses costs bounded memory and makes no real client's limit
stricter. A connection dropped from the table of failed ones only gets one more
queued check, as a new connection would.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import functools
import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from qf_exporter.web.server import Request, Response
from qf_exporter.web.webconfig.schema import RateLimit, WebConfig

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_UNAUTHORIZED_HEADERS = [("WWW-Authenticate", 'Basic realm="qf-exporter", charset="UTF-8"')]


class TokenBucket:
    """exporter-toolkit's rate_limit: one token per ``interval``, at most ``burst``."""

    __slots__ = ("_at", "_clock", "_tokens", "limit")

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._at = clock()

    def allow(self) -> bool:
        now = self._clock()
        rate = 1.0 / self.limit.interval
        self._tokens = min(float(self.limit.burst), self._tokens + (now - self._at) * rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def give_back(self) -> None:
        self._tokens = min(float(self.limit.burst), self._tokens + 1.0)


class BoundedTable(Generic[K, V]):
    """At most ``size`` entries, made on first use; the least recently used goes first."""

    def __init__(self, size: int, make: Callable[[], V]) -> None:
        self.size = size
        self._make = make
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.size:
                self._entries.popitem(last=False)
            entry = self._entries[key] = self._make()
        else:
            self._entries.move_to_end(key)
        return entry

    def clear(self) -> None:
        self._entries.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


# Kept for the addresses seen last (bounded): parsing one cost the event loop about
# 30 us per request, as much as the rest of the gate's work.
@functools.lru_cache(maxsize=4096)
def client_key(address: str) -> str:
    """The address a client is counted by: IPv4 as it is (also when IPv4-mapped), IPv6
    by its /64 (one host is given a whole /64 and can use any address in it)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def credentials(request: Request) -> tuple[str, str] | None:
    """The Basic credentials of the request, or None when there are none or they are
    malformed (both refused with 401, without a bcrypt run)."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":  # the scheme is case-insensitive (RFC 7617)
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def unauthorized() -> Response:
    return Response.text(401, "Unauthorized\n", headers=list(_UNAUTHORIZED_HEADERS))


def too_many(why: str) -> Response:
    return Response.text(429, why, headers=[("Retry-After", "1")])


class Gate:
    """Decides, per request, whether it is served; see the module's docstring."""

    def __init__(
        self,
        *,
        workers: int = 2,
        max_checks: int = 4,
        check_burst: int = 10,
        check_interval: float = 1.0,
        max_clients: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # bcrypt never runs on the event loop, and at most ``workers`` at a time.
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="auth")
        self.max_checks = max_checks
        self._clock = clock
        self._rate_limit: RateLimit | None = None
        self.buckets: BoundedTable[tuple[str, str | None], TokenBucket] = BoundedTable(
            max_clients, self._new_bucket
        )
        budget = RateLimit(check_interval, check_burst)
        self.budgets: BoundedTable[str, TokenBucket] = BoundedTable(
            max_clients, lambda: TokenBucket(budget, clock)
        )
        self.checking: set[str] = set()  # addresses with a bcrypt check waiting or running
        # Connections (Request.connection) that failed a check; a dropped one only gets
        # one more queued check, as a new connection would.
        self.failed: BoundedTable[int, bool] = BoundedTable(max_clients, lambda: True)
        self.queue = _FairQueue()
        self.checks_started = 0

    def close(self, *, wait: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)

    async def admit(self, config: WebConfig, request: Request) -> Response | None:
        """None when the request is to be served, else the answer that refuses it."""
        client = client_key(request.client)
        given = credentials(request) if config.users else None
        known = config.cached(*given) if given is not None else None
        user = given[0] if known and given is not None else None
        if not self._rate_allowed(config, (client, user)):
            return too_many("Too many requests\n")
        if not config.users or user is not None:
            return None
        if given is None or known is False:
            return unauthorized()
        # 0: a request of no known connection, counted as one that failed before.
        first = request.connection != 0 and request.connection not in self.failed
        if first:
            ok = await self._queued(config, client, given)
        else:
            refused, check = self._check_now(config, client, given)
            if check is None:
                return refused
            ok = await asyncio.wrap_future(check)
            if ok:
                self.budgets.get(client).give_back()
        if ok:
            return None
        if request.connection:
            self.failed.get(request.connection)
        return unauthorized()

    def _new_bucket(self) -> TokenBucket:
        assert self._rate_limit is not None
        return TokenBucket(self._rate_limit, self._clock)

    def _rate_allowed(self, config: WebConfig, key: tuple[str, str | None]) -> bool:
        if config.rate_limit != self._rate_limit:
            self._rate_limit = config.rate_limit
            self.buckets.clear()  # a changed limit starts every client afresh
        if self._rate_limit is None:
            return True
        return self.buckets.get(key).allow()

    def _free(self, client: str) -> bool:
        return len(self.checking) < self.max_checks and client not in self.checking

    def _check_now(
        self, config: WebConfig, client: str, given: tuple[str, str]
    ) -> tuple[Response | None, concurrent.futures.Future[bool] | None]:
        """A check for a connection that failed before: now, within the address's share,
        or a refusal without a bcrypt run. Queued first checks go ahead of it."""
        if not self._free(client) or self.queue.waiting(client):
            return too_many("Too many password checks waiting, try again later\n"), None
        if not self.budgets.get(client).allow():
            return too_many("Too many failed password checks from this address\n"), None
        return None, self._start(config, client, given)

    async def _queued(self, config: WebConfig, client: str, given: tuple[str, str]) -> bool:
        """A connection's first check: it waits its turn (one connection has at most
        one request, so the queue holds at most one entry per connection)."""
        turn: asyncio.Future[concurrent.futures.Future[bool]] = (
            asyncio.get_running_loop().create_future()
        )
        self.queue.put(client, (turn, config, given))
        self._dispatch()
        # Cancelled while waiting (the client left): the entry is skipped. Once
        # started, the check keeps its place until it ends.
        return await asyncio.wrap_future(await turn)

    def _dispatch(self) -> None:
        """Start queued checks while there is room: addresses in turn, each address's
        connections in order of arrival."""
        while (entry := self.queue.take(self._free)) is not None:
            turn, config, given, client = entry
            turn.set_result(self._start(config, client, given))

    def _start(
        self, config: WebConfig, client: str, given: tuple[str, str]
    ) -> concurrent.futures.Future[bool]:
        loop = asyncio.get_running_loop()
        self.checking.add(client)
        self.checks_started += 1
        future = self._pool.submit(config.check, *given)

        def ended() -> None:
            self.checking.discard(client)
            self._dispatch()

        def done(_: concurrent.futures.Future[bool]) -> None:
            # When the check ends, not when its request does: a client that goes away
            # does not free the place of a check still queued or running.
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to free
                loop.call_soon_threadsafe(ended)

        future.add_done_callback(done)
        return future


_Entry = tuple["asyncio.Future[concurrent.futures.Future[bool]]", WebConfig, tuple[str, str]]


class _FairQueue:
    """First checks waiting for bcrypt: one line per address, served in turn, so that
    an address with many connections waiting does not starve another."""

    def __init__(self) -> None:
        self._lines: OrderedDict[str, deque[_Entry]] = OrderedDict()

    def put(self, client: str, entry: _Entry) -> None:
        self._lines.setdefault(client, deque()).append(entry)

    def waiting(self, client: str) -> bool:
        return bool(self._lines.get(client))

    def __len__(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def take(
        self, free: Callable[[str], bool]
    ) -> tuple[asyncio.Future[concurrent.futures.Future[bool]], WebConfig,
               tuple[str, str], str] | None:
        """The next entry whose address ``free`` allows, its address sent to the back of
        the turn; entries whose client left are dropped on the way."""
        for client in list(self._lines):
            line = self._lines[client]
            while line and line[0][0].done():
                line.popleft()
            if not line:
                del self._lines[client]
                continue
            if not free(client):
                continue
            turn, config, given = line.popleft()
            self._lines.move_to_end(client)
            if not line:
                del self._lines[client]
            return turn, config, given, client
        return None
