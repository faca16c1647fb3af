"""A small hardened HTTP/1.1 server: asyncio for the connections, h11 for the protocol.

Why this and not ``http.server`` (or uvicorn, hypercorn, cheroot): see "Why this HTTP
server" in docs/security.md. In short, h11 is a well-kept, strict HTTP/1.1 parser with a
header size cap, and every policy a network-facing exporter needs is a few lines here:

- request line and headers capped (``max_header_bytes`` and ``max_header_fields``, 431
  beyond), and heads larger than a scraper's share a fixed budget across all connections;
- a deadline for the headers of every request, counted from the connection's start
  (TLS handshake included) or from the first byte of a keep-alive request;
- idle keep-alive connections end after ``idle_timeout``;
- at most ``max_connections`` connections (more are closed at once) and at most
  ``max_requests`` requests being answered, from the handler until the answer is sent
  (503 beyond); requests the ``light`` callable names (small answers built ahead:
  health, the landing page) have ``light_requests`` slots of their own instead, so
  they never wait behind heavy ones, and flooding them is bounded too; an ``admit``
  coroutine (basic auth) decides before any slot is taken, so a request it keeps
  waiting holds none; one request per connection per turn of the loop;
- request bodies are never read: a request that has one gets its answer and the
  connection is closed, so nothing in a body is ever taken for the next request; what
  the client still sends is read and dropped (up to ``linger_bytes``) before closing,
  so the close does not reset the connection under the answer;
  conflicting framing (Transfer-Encoding with Content-Length, differing or invalid
  Content-Length) is a 400 and a close;
- answers are a sequence of byte pieces (the page's blocks of about 64 KB, and small
  ones between them), never joined whole: plain-TCP answers over ``thread_send_bytes``
  (4 MiB) go from a bounded pool of sender threads, the pieces gathered by ``sendmsg``
  (see ``_send_all`` and ``_plain_socket``); the rest (TLS answers, and answers up to
  4 MiB such as the gzip page of 10,000 runs) are first offered to the socket in one
  ``writev`` on plain TCP (``_write_at_once``), and what it does not take goes through
  the transport in 32 KiB slices (views of the blocks; small pieces joined), each
  written once the transport holds at most half of ``write_buffer``, so a slow reader
  holds at most that (64 KiB); an answer not taken whole within ``write_timeout`` of
  its start closes the connection, and its request slot is held until then;
- connections are closed gracefully (what is buffered sent, TLS closed with its
  close_notify), aborted only after ``close_timeout``;
- TLS is started per connection with the context current at that moment, so a rotated
  certificate is used from the next connection on; a failed handshake is one debug line.

When accept() fails for want of descriptors, accepting pauses for a second and is
tried again (it does not spin); the failure is one warning line a second.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import asyncio.sslproto
import contextlib
import ctypes
import ctypes.util
import http
import itertools
import logging
import os
import queue
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11

log = logging.getLogger(__name__)

# Python 3.11's TLS transport gives each connection a 256 KiB read buffer, filled with
# zeros at once: 1,000 idle TLS connections held 336 MB. A TLS record is at most 16 KiB
# and some bytes; two fit in this, and reading takes a few more calls at most.
asyncio.sslproto.SSLProtocol.max_size = 32 << 10
# And each read of a plain socket takes up to 256 KiB before the reader can pause it.
asyncio.selector_events._SelectorTransport.max_size = 64 << 10  # type: ignore[attr-defined]
# Bytes read ahead of the request being answered: reading pauses at twice this.
_READ_AHEAD = 32 << 10


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int = 1 << 20  # as Go's net/http (http.DefaultMaxHeaderBytes)
    # h11 parses a head's lines all at once when its blank line arrives, at about 2 us a
    # line: 200,000 lines of "a:b" in 1 MB held the loop 0.4 s. Apache's
    # LimitRequestFields is 100 too; scrapers send fewer than 10.
    max_header_fields: int = 100
    # Heads up to small_head bytes are always read; larger ones (no scraper sends them)
    # share head_budget bytes between all connections, beyond which they get a 431.
    # So 1,000 connections stalling with 1 MB heads hold 16 MB, not 1 GB.
    small_head: int = 16 << 10
    head_budget: int = 16 << 20
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    # Writing: an answer not taken whole within this long from the start of its sending
    # closes the connection (Prometheus gives up after its scrape timeout, 10 s by
    # default). Its request slot is held until then.
    write_timeout: float = 60.0
    max_connections: int = 512
    max_requests: int = 40  # as node_exporter's --web.max-requests
    # Slots of their own for light requests (see HTTPServer's ``light``): a liveness
    # probe is answered while clients that never read hold every heavy slot.
    light_requests: int = 8
    # The most an answer through the event loop holds in its connection's buffers: it
    # is written in slices of half this, each once the buffer is below the other half.
    write_buffer: int = 64 << 10
    # Closing: what the client still sends (a request body never read) is read and
    # dropped, up to this much and this long, so that closing does not reset the
    # connection under the answer; then the answer must be taken within close_timeout.
    linger_bytes: int = 1 << 20
    linger_timeout: float = 5.0
    close_timeout: float = 10.0
    # Plain-TCP answers bigger than this go out from a sender thread (see _plain_socket).
    # The gzip answer of 10,000 runs (1.2 MB, one buffer) is faster through the loop:
    # p50/p99 4.4-4.8/6.3-8.5 ms against 7.1/12.4 handed to a thread (same day).
    thread_send_bytes: int = 4 << 20


@dataclass
class Request:
    method: str
    target: str
    path: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    client: str
    peer_cert: dict[str, Any] | None = None
    # Which connection it came on: unique for the server's life, the same for every
    # request of one connection; 0 for a request made outside a server (gate.py then
    # treats it as a connection that failed before).
    connection: int = 0


@dataclass
class Response:
    status: int
    body: Iterable[bytes] = ()
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False
    length: int | None = None  # of the body, when known without reading it

    @classmethod
    def text(cls, status: int, text: str, **kw: Any) -> Response:
        return cls(status, (text.encode(),), **kw)


Handler = Callable[[Request], Awaitable[Response]]
# Called before a request takes a slot: None admits it, a Response refuses it.
Admit = Callable[[Request], Awaitable[Response | None]]
_NEXT_CONNECTION = itertools.count(1)


class HTTPServer:
    """Serves ``handler`` on already bound, listening sockets, in its own thread."""

    def __init__(
        self,
        sockets: Sequence[socket.socket],
        handler: Handler,
        *,
        tls: Callable[[], ssl.SSLContext | None] | None = None,
        peer_allowed: Callable[[dict[str, Any] | None], bool] | None = None,
        extra_headers: Callable[[], Sequence[tuple[str, str]]] = lambda: (),
        limits: Limits | None = None,
        light: Callable[[Request], bool] = lambda request: False,
        admit: Admit | None = None,
    ) -> None:
        self.sockets = list(sockets)
        self.handler = handler
        self.light = light  # whether a request takes a light slot, not a heavy one
        self.admit = admit
        self.tls = tls
        self.peer_allowed = peer_allowed
        self.extra_headers = extra_headers
        self.limits = limits or Limits()
        self.connections = 0
        self.in_flight = 0  # heavy requests being answered
        self.light_in_flight = 0
        self.head_bytes = 0  # bytes of large, unfinished request heads, all connections
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_exception_handler)
        self._last_accept_warning = -1.0
        self._stopping = False
        self._trim_pending = False
        self._tasks: set[asyncio.Task[None]] = set()
        # One per request slot: a request holds its slot while its answer is sent, so a
        # send never waits here for a thread (its deadline could pass in the queue).
        self.senders = _Senders(self.limits.max_requests + self.limits.light_requests)
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> threading.Thread:
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            for sock in self.sockets:
                self._listen(sock)
            started.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="http", daemon=True)
        self._thread.start()
        started.wait()
        return self._thread

    def stop(self) -> None:
        if self._thread is None or self.loop.is_closed():
            return

        async def close() -> None:
            self._stopping = True
            for sock in self.sockets:
                self.loop.remove_reader(sock.fileno())
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(close(), self.loop)
        self._thread.join(timeout=10)
        self.senders.stop()
        with contextlib.suppress(RuntimeError):
            self.loop.close()
        for sock in self.sockets:
            sock.close()

    # --- accepting ----------------------------------------------------------------------
    # Our own accept loop, not asyncio.start_server's: on EMFILE, Python 3.11's schedules
    # one retry per failed accept() of a burst (up to 100), and those retries re-arm the
    # listener in different loop turns. Here it is one pause of a second and one retry,
    # and connections over the bound are closed before any transport is made.

    def _listen(self, sock: socket.socket) -> None:
        self.loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(64):  # what is waiting, a bounded batch per loop turn
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self.loop.remove_reader(sock.fileno())
                self.loop.call_later(1.0, self._listen, sock)
                now = self.loop.time()
                if now - self._last_accept_warning >= 1.0:
                    self._last_accept_warning = now
                    log.warning(
                        "cannot accept connections, pausing accepts for 1 s",
                        extra={"error": _describe(exc)},
                    )
                return
            if self.connections >= self.limits.max_connections:
                conn.close()  # refused: the client sees the connection end at once
                continue
            conn.setblocking(False)
            self.connections += 1  # counted from accept() until _connected ends
            self.loop.create_task(self._adopt(conn))

    async def _adopt(self, conn: socket.socket) -> None:
        reader = asyncio.StreamReader(limit=_READ_AHEAD, loop=self.loop)
        protocol = asyncio.StreamReaderProtocol(reader, self._connected, loop=self.loop)
        try:
            await self.loop.connect_accepted_socket(lambda: protocol, sock=conn)
        except OSError:
            self.connections -= 1
            conn.close()

    # --- connections --------------------------------------------------------------------

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        connection = _Connection(self, reader, writer, client)
        try:
            await connection.serve()
        except (ConnectionError, TimeoutError, ssl.SSLError, h11.LocalProtocolError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug here must not end the server
            log.error("http connection failed", extra={"client": client, "error": repr(exc)})
        finally:
            try:
                await _close(writer, self.limits.close_timeout, graceful=not self._stopping)
            finally:
                self.connections -= 1
                self._tasks.discard(task)
                if connection.heavy:
                    self._trim_soon()

    def take_slot(self, request: Request) -> bool | None:
        """A slot for ``request``: whether it is light (the key to give it back), or
        None when every slot of its kind is taken."""
        if self.light(request):
            if self.light_in_flight >= self.limits.light_requests:
                return None
            self.light_in_flight += 1
            return True
        if self.in_flight >= self.limits.max_requests:
            return None
        self.in_flight += 1
        return False

    def give_slot(self, light: bool) -> None:
        if light:
            self.light_in_flight -= 1
        else:
            self.in_flight -= 1

    def _trim_soon(self) -> None:
        """Give the heap's free memory back to the system, at most once a second.

        Slow readers and large heads leave freed buffers that glibc keeps in its arenas
        (measured: +700 MB resident that stayed after 600 readers left, before writes
        were bounded); ``malloc_trim`` returns them.
        """
        if self._trim_pending or _MALLOC_TRIM is None:
            return
        self._trim_pending = True

        def trim() -> None:
            self._trim_pending = False
            if _MALLOC_TRIM is not None:
                _MALLOC_TRIM(0)

        self.loop.call_later(1.0, trim)


async def _close(writer: asyncio.StreamWriter, timeout: float, *, graceful: bool) -> None:
    """Close the connection after what it still has to send (for TLS, its close_notify
    too); abort it if that is not done within ``timeout``. Aborting at once would drop
    what the transport still holds: the end of the answer."""
    transport = writer.transport
    if not graceful or transport.is_closing():
        transport.abort()
        return
    transport.close()
    try:
        async with asyncio.timeout(timeout):
            await writer.wait_closed()
    except (Exception, asyncio.CancelledError):
        transport.abort()


class _Connection:
    """One accepted connection of ``server``: the TLS handshake, then its requests one
    after another, each answered before the next is read, one per turn of the loop."""

    def __init__(
        self,
        server: HTTPServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
    ) -> None:
        self.server = server
        self.limits = server.limits
        self.reader = reader
        self.writer = writer
        self.client = client
        self.peer_cert: dict[str, Any] | None = None
        self.id = next(_NEXT_CONNECTION)
        self.heavy = False  # it held more than a small answer or head: trim after it

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        deadline: float | None = loop.time() + self.limits.header_timeout
        go_on, self.peer_cert = await _handshake(self.server, self.writer, self.client)
        if not go_on:
            return
        half = self.limits.write_buffer // 2
        self.writer.transport.set_write_buffer_limits(high=half, low=half // 2)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        while True:
            try:
                event = await self._next_event(conn, deadline)
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint if exc.error_status_hint >= 400 else 400
                await self._answer_error(conn, status, str(exc))
                return
            if not isinstance(event, h11.Request):
                return  # closed, or the deadline passed
            request, problem, has_body = _request(event, self.client, self.peer_cert)
            request.connection = self.id
            if not has_body:
                # Take the request's end from h11 now, so that the connection can be reused.
                conn.next_event()
            if problem:
                await self._answer_error(conn, 400, problem)
                return
            # A body we did not read must not be read as the next request.
            await self._answer(conn, request, has_body)
            if has_body:
                await _linger(self.reader, self.writer, self.limits)
            if has_body or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            deadline = None
            # One request per connection per turn of the loop: a pipelined burst
            # already read waits its turn behind every other connection.
            await asyncio.sleep(0)

    async def _answer(self, conn: h11.Connection, request: Request, close: bool) -> None:
        """The handler's answer, sent while the request holds one of ``max_requests``
        slots (or of ``light_requests``, see ``HTTPServer.take_slot``): a client that
        does not read holds its slot until the write deadline."""
        head = request.method == "HEAD"
        server = self.server
        refused = await _admitted(server, request)
        if refused is not None:
            await self._send(conn, refused, close or refused.close, head=head)
            return
        light = server.take_slot(request)
        if light is None:
            busy = "Too many requests in flight, try again later\n"
            await self._send(conn, Response.text(503, busy, headers=[("Retry-After", "1")]),
                             close, head=head)
            return
        try:
            try:
                response = await server.handler(request)
            except Exception as exc:
                log.error(
                    "http handler failed", extra={"path": request.path, "error": repr(exc)}
                )
                response = Response.text(500, "Internal server error\n")
            await self._send(conn, response, close or response.close, head=head)
        finally:
            server.give_slot(light)

    async def _next_event(self, conn: h11.Connection, deadline: float | None) -> Any:
        loop = asyncio.get_running_loop()
        head = counted = 0
        fields = _HeadFields(self.limits.max_header_fields)
        fields.feed(conn.trailing_data[0])  # a pipelined head read with the one before
        try:
            while True:
                event = conn.next_event()
                if event is not h11.NEED_DATA:
                    return event
                timeout = (
                    self.limits.idle_timeout
                    if deadline is None
                    else max(0.0, deadline - loop.time())
                )
                try:
                    async with asyncio.timeout(timeout):
                        data = await self.reader.read(1 << 16)
                except TimeoutError:
                    return None
                if deadline is None:
                    # The first byte of a keep-alive request starts its header deadline.
                    deadline = loop.time() + self.limits.header_timeout
                head += len(data)
                counted = self._count_head(head, counted)
                fields.feed(data)  # before h11 sees the head's end and parses it whole
                conn.receive_data(data)  # b"" is the end of the stream
        finally:
            self.server.head_bytes -= counted

    def _count_head(self, head: int, counted: int) -> int:
        """Check a head of ``head`` bytes so far against the caps; what is now counted
        of it in the budget that large heads share."""
        if head > self.limits.max_header_bytes:
            raise h11.RemoteProtocolError(
                "request line and headers too large", error_status_hint=431
            )
        if head <= self.limits.small_head:
            return counted
        self.heavy = True
        if self.server.head_bytes + head - counted > self.limits.head_budget:
            raise h11.RemoteProtocolError(
                "request heads too large, all connections", error_status_hint=431
            )
        self.server.head_bytes += head - counted
        return head

    async def _answer_error(self, conn: h11.Connection, status: int, why: str) -> None:
        log.debug("bad http request", extra={"status": status, "problem": why})
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        text = {400: "Bad request", 408: "Request timeout", 431: "Request header fields too large",
                501: "Not implemented"}.get(status, "Bad request")
        await self._send(conn, Response.text(status, text + "\n"), True, head=False)
        # The rest of the head, or a body, may still be coming.
        await _linger(self.reader, self.writer, self.limits)

    async def _send(
        self,
        conn: h11.Connection,
        response: Response,
        close: bool,
        *,
        head: bool,
    ) -> None:
        length = response.length
        if length is None:
            length = sum(len(piece) for piece in response.body)
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(length)),
            *response.headers,
            *self.server.extra_headers(),
        ]
        if close:
            headers.append(("Connection", "close"))
        reason = _REASONS.get(response.status, b"")
        status_line = conn.send(h11.Response(status_code=response.status, headers=headers,
                                             reason=reason)) or b""
        body: Iterable[bytes] = ()
        if not head and length:
            # h11 is told the body's length in one event (its documented way for data it
            # does not see, see h11's "sendfile" notes): it only counts, and the pieces go
            # out as they are, never passed through it one by one.
            conn.send_with_data_passthrough(h11.Data(data=_Length(length)))  # type: ignore[arg-type]
            body = response.body
        end = conn.send(h11.EndOfMessage()) or b""
        wire = itertools.chain((status_line,), body, (end,))
        # Big answers on plain TCP go out from a sender thread (see _plain_socket), with
        # a descriptor held only while they are sent (at most --web.max-requests).
        big = length > self.limits.thread_send_bytes
        sock = _plain_socket(self.writer) if big else None
        if sock is not None:
            await self.server.senders.send(sock, wire, self.limits.write_timeout)
        else:
            await self._write(wire)

    async def _write(self, pieces: Iterator[bytes]) -> None:
        """Send ``pieces`` in order through the event loop, within ``write_timeout``
        from now."""
        timeout = self.limits.write_timeout
        rest = _write_at_once(self.writer, pieces)
        # Slices of the page's own blocks (views, not copies), each written once the
        # transport holds less than half of write_buffer: a client that does not read
        # holds at most write_buffer here, whatever the answer's size.
        async with asyncio.timeout(timeout):
            if await _write_through(self.writer, rest, self.limits.write_buffer // 2):
                self.heavy = True

async def _admitted(server: HTTPServer, request: Request) -> Response | None:
    """The server's ``admit`` (basic auth): None, or the answer that refuses the request.
    It runs before the request takes a slot, so a request waiting here (for a password
    check) holds none."""
    if server.admit is None:
        return None
    try:
        return await server.admit(request)
    except Exception as exc:
        log.error("http admission failed", extra={"path": request.path, "error": repr(exc)})
        return Response.text(500, "Internal server error\n")


class _HeadFields:
    """Counts a request head's header fields as its bytes arrive, so that a head of too
    many is refused before h11 sees its end (h11 then splits and matches every line)."""

    __slots__ = ("count", "done", "last", "most")

    def __init__(self, most: int) -> None:
        self.most = most
        self.count = 0
        self.done = False
        self.last = b""  # the end of the bytes before: a blank line may span two reads

    def feed(self, data: bytes) -> None:
        if self.done or not data:
            return
        text = self.last + data
        end = _BLANK_LINE.search(text)
        if end is not None:
            self.done = True
        # The line ends before the blank line, less those counted already: the request
        # line's end and each field's but the last (whose end starts the blank line).
        self.count += text.count(b"\n", 0, end.start() if end else len(text))
        self.count -= self.last.count(b"\n")
        self.last = text[-2:]
        # Until the blank line is seen, the last line end counted may be its start.
        if self.count > self.most + (not self.done):
            raise h11.RemoteProtocolError("too many header fields", error_status_hint=431)


_BLANK_LINE = re.compile(rb"\n\r?\n")  # where h11 ends a head


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  limits: Limits) -> None:
    """Read and drop what the client still sends, up to a bound, before closing.

    Closing a socket with unread bytes sends a reset, and a reset can destroy the
    answer before the client has read it (RFC 9112 9.6, Apache's lingering close).
    """
    if writer.can_write_eof():
        writer.write_eof()  # plain TCP: the client sees the end at once
    left = limits.linger_bytes
    with contextlib.suppress(TimeoutError, ConnectionError, ssl.SSLError):
        async with asyncio.timeout(limits.linger_timeout):
            while left > 0 and (data := await reader.read(min(left, 1 << 16))):
                left -= len(data)


async def _handshake(
    server: HTTPServer, writer: asyncio.StreamWriter, client: str
) -> tuple[bool, dict[str, Any] | None]:
    """TLS, when configured, and the client certificate's SAN: whether to go on, and
    the client's certificate."""
    context = server.tls() if server.tls is not None else None
    if context is None:
        return True, None
    # Called before any await: no byte of the ClientHello has been read yet.
    try:
        await writer.start_tls(context, ssl_handshake_timeout=server.limits.header_timeout)
    except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as exc:
        log.debug("TLS handshake failed", extra={"client": client, "error": _describe(exc)})
        return False, None
    cert = writer.get_extra_info("peercert")
    if server.peer_allowed is not None and not server.peer_allowed(cert):
        log.debug("TLS client refused: no allowed subject alternative name",
                  extra={"client": client})
        return False, None
    return True, cert


def _write_at_once(writer: asyncio.StreamWriter, pieces: Iterator[bytes]
                   ) -> Iterator[bytes | memoryview]:
    """Hand the kernel as much of ``pieces`` as the socket takes now, in one ``writev``
    on the loop; the pieces it did not take (the first perhaps in part), to write next.

    Only on plain TCP with nothing queued in the transport, so the order holds. The
    socket buffer usually takes a whole answer of a few MB (the gzip page of 10,000
    runs is 1.2 MB): through the transport in 32 KiB slices, that answer was about 40
    sends and turns of the loop per scrape, a third of the loop's time on gzip scrapes.
    Nothing is copied or held for a client that does not read: what the socket does
    not take goes on through ``_write_through``. A failed write sends nothing here; the
    transport then meets the same error and ends the connection its usual way.
    """
    if writer.get_extra_info("sslcontext") is not None or writer.transport.is_closing():
        return pieces
    if writer.transport.get_write_buffer_size():
        return pieces
    batch = next(_batches(pieces), None)
    if batch is None:
        return pieces
    try:
        sent = os.writev(writer.get_extra_info("socket").fileno(), batch)
    except OSError:  # BlockingIOError (the buffer is full), or a broken connection
        sent = 0
    return itertools.chain(_unsent(batch, sent), pieces)


def _unsent(pieces: Sequence[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """What a send of ``sent`` bytes left of ``pieces``: those after the last it took
    whole, the first of them (as a view) from where the send ended."""
    done = 0
    for piece in pieces:
        if sent < len(piece):
            break
        sent -= len(piece)
        done += 1
    rest = list(pieces[done:])
    if sent:
        rest[0] = memoryview(rest[0])[sent:]
    return rest


async def _write_through(writer: asyncio.StreamWriter, pieces: Iterator[bytes | memoryview],
                         step: int) -> bool:
    """Write ``pieces`` through the transport in slices of ``step``, each once it holds
    less than ``step``; whether the client made it hold any (then it was slow)."""
    held = False
    for piece in _coalesce(pieces, step):
        view = memoryview(piece)
        for start in range(0, len(view), step):
            if writer.transport.is_closing():
                raise ConnectionResetError("the connection was closed")
            writer.write(view[start : start + step])
            if writer.transport.get_write_buffer_size():
                held = True
                await writer.drain()
    return held


class _Length:
    """Stands for a body of ``n`` bytes when h11 is told of it (it only takes its len())."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def _request(
    event: h11.Request, client: str, peer_cert: dict[str, Any] | None
) -> tuple[Request, str, bool]:
    headers: dict[str, str] = {}
    lengths = encodings = 0
    for name, value in event.headers:
        key = name.decode("latin-1")
        lengths += key == "content-length"
        encodings += key == "transfer-encoding"
        headers[key] = value.decode("latin-1")
    target = event.target.decode("latin-1")
    request = Request(
        method=event.method.decode("latin-1"),
        target=target,
        path=target.split("?", 1)[0],
        headers=headers,
        client=client,
        peer_cert=peer_cert,
    )
    problem = ""
    if lengths and encodings:
        problem = "Transfer-Encoding and Content-Length together"
    has_body = encodings > 0 or headers.get("content-length", "0") != "0"
    return request, problem, has_body


def _coalesce(pieces: Iterable[bytes | memoryview], size: int) -> Iterator[bytes | memoryview]:
    """The pieces in writes of up to about ``size`` bytes: consecutive small ones joined
    (a copy of at most ``size``), big ones as they are (``_write_through`` then slices
    them into views).

    Used on the event loop's path. An answer's pieces are the page's blocks (about
    64 KB of text each, a few hundred at 10,000 runs; one joined buffer for the gzip
    page) with small ones between and after them: family headers, the health, the part
    rendered per scrape, the gzip header and trailer. Each write may cost a drain and a
    turn of the loop, so the small ones go out together rather than one write each.
    """
    batch: list[bytes | memoryview] = []
    held = 0
    for piece in pieces:
        if not piece:
            continue
        if held and held + len(piece) > size:
            yield b"".join(batch)
            batch, held = [], 0
        if len(piece) >= size:
            yield piece
        else:
            batch.append(piece)
            held += len(piece)
    if batch:
        yield b"".join(batch)


# Buffers per sendmsg(): Linux's IOV_MAX (sysconf(_SC_IOV_MAX)), the most one call takes.
_IOV_MAX = 1024


def _batches(pieces: Iterator[bytes]) -> Iterator[list[bytes]]:
    """The non-empty pieces in lists of up to ``_IOV_MAX``, what one ``writev`` or
    ``sendmsg`` takes, gathered without a Python loop (a plain page at 10,000 runs is
    about 650 pieces). Each list is taken from ``pieces`` only when asked for."""
    while chunk := list(itertools.islice(pieces, _IOV_MAX)):
        if batch := list(filter(None, chunk)):
            yield batch


@dataclass
class _Job:
    """A big plain answer handed to a sender thread, and how it tells the loop it ended."""

    sock: socket.socket  # the thread's to close once the answer is sent
    pieces: Iterator[bytes]
    timeout: float
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]


class _Senders:
    """The sender threads: each waits on an inbox of its own for a big plain answer,
    sends it with ``_send_within``, closes the socket it was handed, and tells the
    event loop with one ``call_soon_threadsafe``.

    Not ``concurrent.futures.ThreadPoolExecutor``: its idle workers wait on one shared
    queue, and each answer handed to it woke two of them (the second only to find the
    queue empty and wait again, taking the GIL on the way), and its end came back
    through two chained futures. With four scrapers on two cores every wake-up can
    wait for a core: from the loop reading a request to its ``sendmsg`` took p99
    7.9-9.0 ms, 6.4-6.7 ms with an inbox per thread (10,000 runs, "Scrapes against
    the floor" in docs/benchmark.md). Here an answer wakes the one thread it is given
    to.

    At most ``most`` threads, each started when an answer finds none idle, and kept
    until ``stop``. A thread counts as busy from its answer's start until the loop has
    heard of its end, so a send never finds more than ``most`` busy.
    """

    def __init__(self, most: int) -> None:
        self.most = most
        self.threads: list[threading.Thread] = []
        self._idle: list[queue.SimpleQueue[_Job | None]] = []
        self._inboxes: list[queue.SimpleQueue[_Job | None]] = []
        self._busy: asyncio.Semaphore | None = None  # made on the loop, at first use

    async def send(self, sock: socket.socket, pieces: Iterator[bytes], timeout: float) -> None:
        """Send ``pieces`` on ``sock`` from a sender thread, within ``timeout`` from when
        the thread starts; ``sock`` is the thread's from here, closed when it is done."""
        loop = asyncio.get_running_loop()
        if self._busy is None:
            self._busy = asyncio.Semaphore(self.most)
        try:
            await self._busy.acquire()
        except BaseException:
            sock.close()
            raise
        inbox = self._idle.pop() if self._idle else self._start()
        done: asyncio.Future[None] = loop.create_future()
        inbox.put(_Job(sock, pieces, timeout, loop, done))
        await done

    def stop(self) -> None:
        """Each thread ends after the answer it is sending, if any."""
        for inbox in self._inboxes:
            inbox.put(None)

    def _start(self) -> queue.SimpleQueue[_Job | None]:
        inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        thread = threading.Thread(target=self._run, args=(inbox,), daemon=True,
                                  name=f"http-send-{len(self.threads)}")
        self._inboxes.append(inbox)
        self.threads.append(thread)
        thread.start()
        return inbox

    def _run(self, inbox: queue.SimpleQueue[_Job | None]) -> None:
        while (job := inbox.get()) is not None:
            error: Exception | None = None
            try:
                _send_within(job.sock, job.pieces, job.timeout)
            except Exception as exc:  # the request's, raised where it waits
                error = exc
            finally:
                job.sock.close()
            self._idle.append(inbox)
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server stopped
                job.loop.call_soon_threadsafe(self._ended, job.done, error)

    def _ended(self, done: asyncio.Future[None], error: Exception | None) -> None:
        assert self._busy is not None
        self._busy.release()
        if done.done():  # its request was cancelled: the server is stopping
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


def _send_within(sock: socket.socket, pieces: Iterator[bytes], timeout: float) -> None:
    """``_send_all`` with its deadline counted from now, when the sender thread starts."""
    _send_all(sock, pieces, time.monotonic() + timeout)


def _send_all(sock: socket.socket, pieces: Iterator[bytes], deadline: float) -> None:
    """Blocking vectored sends in a sender thread: the kernel gathers the pieces.

    Used for plain answers over ``Limits.thread_send_bytes``: the page's blocks (a few
    hundred of about 64 KB at 10,000 runs) and the small pieces between them. Joining
    them into writes would copy the whole answer in Python, holding the GIL; one
    ``sendall`` per piece would return to Python (and wait for the GIL) after each.
    One ``sendmsg`` takes up to ``_IOV_MAX`` pieces (a whole page), the GIL free while
    the kernel copies; nothing is copied in Python. The whole answer must be sent by
    ``deadline``.

    The socket is made blocking for the send (see ``_blocking``): a non-blocking
    ``sendmsg`` returns each time the socket's buffer is full, about every 4 MB, and
    each return waits for the GIL behind the event loop and the other senders (up to
    the interpreter's 5 ms switch interval): at 10,000 runs that was a third of a plain
    scrape's p99. Blocking, the kernel takes the whole batch in one call.
    """
    with _blocking(sock):
        for batch in _batches(pieces):
            _send_vector(sock, batch, deadline)


@contextlib.contextmanager
def _blocking(sock: socket.socket) -> Iterator[None]:
    """``sock`` in blocking mode, then as it was, with no send timeout.

    The mode belongs to the descriptor's open file, which the sender's duplicate shares
    with the event loop's transport. That is safe while the answer is sent: the
    transport writes nothing to this connection meanwhile (its request is waiting for
    this send), and it reads only when the selector has said bytes are there, so a
    blocking read returns at once.
    """
    fileno = sock.fileno()
    was_blocking = os.get_blocking(fileno)
    sock.settimeout(None)
    try:
        yield
    finally:
        _set_send_timeout(sock, 0.0)
        sock.settimeout(None if was_blocking else 0.0)


def _set_send_timeout(sock: socket.socket, seconds: float) -> None:
    """The kernel's bound on one blocking send (0: none): it then returns what it sent."""
    whole = int(seconds)
    micros = min(999_999, max(0, int((seconds - whole) * 1e6)))
    if seconds > 0 and not whole and not micros:
        micros = 1  # 0 would mean no bound at all
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", whole, micros))


def _send_vector(sock: socket.socket, buffers: list[bytes], deadline: float) -> None:
    pending: Sequence[bytes | memoryview] = buffers
    total = sum(map(len, pending))
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the answer was not taken in time")
        _set_send_timeout(sock, remaining)
        try:
            sent = sock.sendmsg(pending)
        except BlockingIOError:  # the send timeout passed with nothing sent
            continue
        if sent == total:  # the usual case: a blocking send takes it all
            return
        total -= sent
        pending = _unsent(pending, sent)


def _plain_socket(writer: asyncio.StreamWriter) -> socket.socket | None:
    """A second handle on the connection's socket when it is plain TCP, else None.

    Big plain-TCP answers are sent from a sender thread with blocking ``sendmsg`` on
    this handle, straight from the answer's pieces. Through the event loop, a page of
    many MB is hundreds of 32 KiB writes, each a turn of the loop, and one loop thread
    does the kernel's copying for every connection on one core; a sender thread copies
    with the GIL free, beside the loop. asyncio lets nothing else use
    a descriptor its transport owns, hence the duplicate. The duplicate shares the
    transport's mode; ``_send_all`` makes it blocking while it sends (``_blocking``).
    When no descriptor is left, answers go through the transport.
    """
    if writer.get_extra_info("sslcontext") is not None:
        return None
    if writer.transport.get_write_buffer_size():
        return None  # bytes of an earlier answer still queued there must go first
    fileno = writer.get_extra_info("socket").fileno()
    try:
        sock = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return None
    return sock


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()

_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """One log line, never a traceback, for what asyncio reports from inside the loop."""
    exc = context.get("exception")
    message = context.get("message", "")
    level = logging.DEBUG if isinstance(exc, OSError | ssl.SSLError) else logging.ERROR
    log.log(level, "http event loop: " + message,
            extra={"error": _describe(exc) if exc else ""})
