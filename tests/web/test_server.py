"""How the server writes an answer's pieces (the page's blocks of about 64 KB and the
small pieces between them), on its two paths: through the event loop in slices of half
``Limits.write_buffer`` (32 KiB), small pieces joined and blocks sliced as views; and,
for plain answers over ``Limits.thread_send_bytes`` (4 MiB), from a sender thread that
hands the pieces as they are to ``sendmsg()``."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from qf_exporter.exposition.answer import gzip_answer, plain_answer
from qf_exporter.exposition.store import Page
from qf_exporter.qianfan.models import Run
from qf_exporter.web import server as http_server
from qf_exporter.web.server import (
    Limits,
    _coalesce,
    _send_all,
    _Senders,
    _write_at_once,
    _write_through,
)
from tests.conftest import EmptyServer
from tests.exposition.pages import full_page, page_text

STEP = Limits().write_buffer // 2  # the event loop's slice: 32 KiB


def page_of(runs: int) -> Page:
    return full_page(
        [Run("a", "v2", f"job-{i % 40}", f"task-{i:05d}", "running", "Running",
             job_name="j" * 200, task_name="t" * 200, progress=0.5, last_read=float(i))
         for i in range(runs)],
        1,
    )


@given(st.lists(st.binary(max_size=300), max_size=60), st.integers(min_value=1, max_value=500))
def test_writes_keep_every_byte_in_order_within_the_size(pieces: list[bytes], size: int) -> None:
    writes = list(_coalesce(pieces, size))
    assert b"".join(writes) == b"".join(pieces)
    for write in writes:
        # A joined write never exceeds the size; a piece at least that big goes alone.
        assert len(write) <= size or write in pieces
    assert all(writes)


class _Transport:
    """What ``_write_through`` asks of a transport; ``held`` bytes after each write."""

    def __init__(self, held: int) -> None:
        self.held = held

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.held


class _Writer:
    """Records each write (a view or a joined copy) and each drain."""

    def __init__(self, held: int = 0) -> None:
        self.transport = _Transport(held)
        self.writes: list[bytes | memoryview] = []
        self.drains = 0

    def write(self, data: bytes | memoryview) -> None:
        self.writes.append(data)

    async def drain(self) -> None:
        self.drains += 1


def _through_the_loop(pieces: Iterator[bytes], held: int = 0) -> tuple[_Writer, bool]:
    writer = _Writer(held)
    slow = asyncio.run(_write_through(writer, pieces, STEP))  # type: ignore[arg-type]
    return writer, slow


def test_the_loop_writes_the_page_blocks_in_slices_of_32_kib_without_copying_them() -> None:
    page = page_of(3000)
    answer = plain_answer(page, b"# the part rendered per scrape\n")
    blocks = [piece for piece in page.runs if len(piece) >= STEP]
    assert len(blocks) > 10  # a page of blocks, not of thousands of small pieces
    writer, slow = _through_the_loop(iter(answer))
    assert not slow and writer.drains == 0
    assert b"".join(bytes(w) for w in writer.writes) == b"".join(answer)
    assert all(0 < len(w) <= STEP for w in writer.writes)
    # Each block goes out as views into it, never joined with others or copied.
    views = [w for w in writer.writes if isinstance(w, memoryview)]
    for block in blocks:
        mine = [v for v in views if v.obj is block]
        assert b"".join(bytes(v) for v in mine) == block
    # Small pieces (family headers, the health, the per-scrape part) ride together:
    # about one write per 32 KiB of the answer, not one per piece.
    assert len(writer.writes) <= answer.size // STEP + 2 * len(blocks) + 2


def test_a_slow_reader_is_waited_for_after_each_slice() -> None:
    answer = gzip_answer(page_of(300))
    writer, slow = _through_the_loop(iter(answer), held=1)
    assert slow
    assert writer.drains == len(writer.writes) > answer.size // STEP
    assert b"".join(bytes(w) for w in writer.writes) == b"".join(answer)


def test_a_big_plain_answer_goes_out_from_a_sender_thread_whole(
    empty_server: EmptyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[list[bytes]] = []
    send_within = http_server._send_within

    def recording(sock: socket.socket, pieces: Iterator[bytes], timeout: float) -> None:
        given = list(pieces)
        sent.append(given)
        send_within(sock, iter(given), timeout)

    monkeypatch.setattr(http_server, "_send_within", recording)
    page = page_of(6000)
    assert len(page_text(page)) > Limits().thread_send_bytes
    server = empty_server(page=page)
    url = f"http://127.0.0.1:{server.port}/metrics"
    plain = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=30)
    assert plain.content.startswith(page_text(page))
    assert int(plain.headers["Content-Length"]) == len(plain.content)
    # Over 4 MiB: one sender thread, handed the page's own blocks (nothing joined).
    (pieces,) = sent
    handed = {id(piece) for piece in pieces}
    assert all(id(block) in handed for block in page.runs if block)
    # The gzip answer (well under 4 MiB) goes through the event loop.
    zipped = requests.get(url, timeout=30)
    assert zipped.content == plain.content and len(sent) == 1


async def _at_once_then_through(pieces: list[bytes], sndbuf: int, queued: bytes = b""
                                ) -> tuple[int, bytes]:
    """What ``_write_at_once`` handed the kernel itself (bytes), and everything the
    other end received once the rest went through the transport."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    _, writer = await asyncio.open_connection(sock=ours)
    if queued:  # bytes an earlier answer left in the transport go first
        writer.transport._buffer.extend(queued)  # type: ignore[attr-defined]
    rest = list(_write_at_once(writer, iter(pieces)))
    direct = sum(map(len, pieces)) - sum(map(len, rest))
    reader, received = _read_to_the_end(theirs)
    if queued:
        writer.transport._buffer.clear()  # type: ignore[attr-defined]
        received += queued  # what the transport would have sent first
    await _write_through(writer, iter(rest), STEP)
    writer.close()
    await writer.wait_closed()
    reader.join()
    theirs.close()
    return direct, bytes(received)


@given(st.lists(st.binary(min_size=1, max_size=40_000), min_size=1, max_size=40))
@settings(max_examples=25, deadline=None)
def test_the_first_write_takes_what_the_socket_takes_and_the_rest_follows(
    pieces: list[bytes],
) -> None:
    # A small socket buffer: the one writev ends inside a piece, and the transport
    # must go on from there.
    direct, received = asyncio.run(_at_once_then_through(pieces, 4096))
    assert received == b"".join(pieces)
    assert 0 < direct <= len(received)


def test_what_the_socket_buffer_holds_goes_to_the_kernel_in_one_write() -> None:
    answer = plain_answer(page_of(1000))
    # As big as the kernel lets it be (net.core.wmem_max): through the transport,
    # every 32 KiB of it was a write and a turn of the loop.
    direct, received = asyncio.run(_at_once_then_through(list(answer), 64 << 20))
    assert received == b"".join(answer)
    assert direct > 2 * STEP


def test_nothing_is_written_past_bytes_the_transport_still_holds() -> None:
    pieces = [b"a" * 1000, b"b" * 1000]
    direct, received = asyncio.run(_at_once_then_through(pieces, 4096, queued=b"earlier"))
    assert direct == 0 and received == b"earlier" + b"".join(pieces)


def _drain(sock: socket.socket, into: bytearray) -> None:
    while chunk := sock.recv(1 << 16):
        into += chunk


def _read_to_the_end(receiver: socket.socket) -> tuple[threading.Thread, bytearray]:
    """A thread reading ``receiver`` until its end, and what it has read."""
    received = bytearray()
    reader = threading.Thread(target=_drain, args=(receiver, received))
    reader.start()
    return reader, received


@given(st.lists(st.binary(max_size=5000), max_size=2500))
@settings(max_examples=25, deadline=None)
def test_vectored_sends_keep_every_byte_in_order(pieces: list[bytes]) -> None:
    # More pieces than one sendmsg() takes, through a small socket buffer: partial
    # sends end inside pieces, and the rest must follow from there.
    sender, receiver = socket.socketpair()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reader, received = _read_to_the_end(receiver)
    with sender, receiver:
        _send_all(sender, iter(pieces), time.monotonic() + 60)
        sender.shutdown(socket.SHUT_WR)
        reader.join()
    assert bytes(received) == b"".join(pieces)


def test_a_reader_that_stops_reading_is_given_up_at_the_deadline() -> None:
    sender, receiver = socket.socketpair()
    with sender, receiver, pytest.raises(TimeoutError):
        _send_all(sender, iter([b"x" * (1 << 20)] * 64), time.monotonic() + 0.5)


def test_sender_threads_are_reused_and_never_more_than_their_bound() -> None:
    senders = _Senders(most=2)
    answer = [b"z" * (1 << 20)] * 4

    async def send_all(count: int) -> list[bytes]:
        pairs = [socket.socketpair() for _ in range(count)]
        readers = [_read_to_the_end(receiver) for _, receiver in pairs]
        await asyncio.gather(*(senders.send(sock, iter(answer), 60) for sock, _ in pairs))
        # Each thread closed the socket it was handed, so each reader saw the end.
        assert all(sock.fileno() == -1 for sock, _ in pairs)
        for (thread, _), (_, receiver) in zip(readers, pairs, strict=True):
            thread.join()
            receiver.close()
        return [bytes(received) for _, received in readers]

    async def scenario() -> None:
        for _ in range(3):  # one after another: one thread sends them all
            assert await send_all(1) == [b"".join(answer)]
        assert len(senders.threads) == 1
        # Five at once: two threads, the other answers wait for one of them.
        assert await send_all(5) == [b"".join(answer)] * 5
        assert len(senders.threads) == 2

    try:
        asyncio.run(scenario())
    finally:
        senders.stop()
    for thread in senders.threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in senders.threads)


def test_a_failed_send_is_raised_where_its_request_waits_and_frees_its_thread() -> None:
    senders = _Senders(most=1)

    async def scenario() -> None:
        gone, peer = socket.socketpair()
        peer.close()
        with pytest.raises(OSError):
            await senders.send(gone, iter([b"x" * (1 << 20)]), 60)
        assert gone.fileno() == -1
        sock, receiver = socket.socketpair()
        reader, received = _read_to_the_end(receiver)
        await senders.send(sock, iter([b"after"]), 60)
        reader.join()
        receiver.close()
        assert bytes(received) == b"after" and len(senders.threads) == 1

    try:
        asyncio.run(scenario())
    finally:
        senders.stop()


def test_a_send_leaves_the_transports_socket_non_blocking_with_no_send_timeout() -> None:
    # The sender's duplicate shares its mode with the event loop's transport: the send
    # is blocking, and everything is as it was after it, even when it timed out.
    sender, receiver = socket.socketpair()
    sender.setblocking(False)
    reader, received = _read_to_the_end(receiver)
    with sender, receiver:
        _send_all(sender, iter([b"y" * (1 << 20)] * 8), time.monotonic() + 60)
        assert not os.get_blocking(sender.fileno()) and sender.gettimeout() == 0.0
        assert sender.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16) == bytes(16)
        sender.shutdown(socket.SHUT_WR)
        reader.join()
    assert bytes(received) == b"y" * (8 << 20)
    stalled, peer = socket.socketpair()
    stalled.setblocking(False)
    with stalled, peer:
        with pytest.raises(TimeoutError):
            _send_all(stalled, iter([b"x" * (1 << 20)] * 64), time.monotonic() + 0.5)
        assert not os.get_blocking(stalled.fileno())
