"""How the server writes an answer's pieces: through the event loop, joined into writes
of about 1 MiB; from a sender thread, gathered by sendmsg() as they are."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from qf_exporter.exposition.store import render
from qf_exporter.qianfan.models import Run
from qf_exporter.web.server import _coalesce, _send_all
from tests.conftest import EmptyServer


@given(st.lists(st.binary(max_size=300), max_size=60), st.integers(min_value=1, max_value=500))
def test_writes_keep_every_byte_in_order_within_the_size(pieces: list[bytes], size: int) -> None:
    writes = list(_coalesce(pieces, size))
    assert b"".join(writes) == b"".join(pieces)
    for write in writes:
        # A joined write never exceeds the size; a piece at least that big goes alone.
        assert len(write) <= size or write in pieces
    assert all(writes)


def test_thousands_of_small_pieces_are_a_few_writes() -> None:
    pieces = [b"x" * 3000] * 9400  # the run store's page at 10,000 runs
    writes = list(_coalesce(pieces, 1 << 20))
    assert len(writes) == 27 and b"".join(writes) == b"".join(pieces)


def test_a_big_plain_answer_goes_out_whole(empty_server: EmptyServer) -> None:
    # Over Limits.thread_send_bytes (4 MiB): sent from a sender thread, vectored.
    runs = [Run("a", "v2", f"job-{i % 40}", f"task-{i:05d}", "running", "Running",
                job_name="j" * 200, task_name="t" * 200, progress=0.5, last_read=float(i))
            for i in range(6000)]
    page = render(runs, 1)
    assert len(page.text) > 4 << 20
    server = empty_server(page=page)
    url = f"http://127.0.0.1:{server.port}/metrics"
    plain = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=30)
    zipped = requests.get(url, timeout=30)
    assert plain.content.startswith(page.text) and zipped.content == plain.content
    assert int(plain.headers["Content-Length"]) == len(plain.content)


def _drain(sock: socket.socket, into: bytearray) -> None:
    while chunk := sock.recv(1 << 16):
        into += chunk


@given(st.lists(st.binary(max_size=5000), max_size=2500))
@settings(max_examples=25, deadline=None)
def test_vectored_sends_keep_every_byte_in_order(pieces: list[bytes]) -> None:
    # More pieces than one sendmsg() takes, through a small socket buffer: partial
    # sends end inside pieces, and the rest must follow from there.
    sender, receiver = socket.socketpair()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    received = bytearray()
    reader = threading.Thread(target=_drain, args=(receiver, received))
    reader.start()
    with sender, receiver:
        _send_all(sender, iter(pieces), time.monotonic() + 60)
        sender.shutdown(socket.SHUT_WR)
        reader.join()
    assert bytes(received) == b"".join(pieces)


def test_a_reader_that_stops_reading_is_given_up_at_the_deadline() -> None:
    sender, receiver = socket.socketpair()
    with sender, receiver, pytest.raises(TimeoutError):
        _send_all(sender, iter([b"x" * (1 << 20)] * 64), time.monotonic() + 0.5)
