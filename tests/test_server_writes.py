"""How the server cuts an answer's pieces into writes (``server._coalesce``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qf_exporter.server import _coalesce


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
